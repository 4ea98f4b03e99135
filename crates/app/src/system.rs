//! The real clock and id generator.

use std::sync::Mutex;

use billing_core::ids::Ulid;
use billing_core::ports::{Clock, IdGenerator};
use time::OffsetDateTime;

/// The system clock, in UTC.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// ULIDs from the system clock and 80 random bits, monotonic within the process: within
/// one millisecond each id is the previous one plus one, so ids sort in creation order.
#[derive(Debug, Default)]
pub struct UlidGenerator {
    last: Mutex<Option<(u64, u128)>>,
}

const RANDOM_MASK: u128 = (1 << 80) - 1;

impl IdGenerator for UlidGenerator {
    fn ulid(&self) -> Ulid {
        let now = u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
            .unwrap_or(0);
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (millis, random) = match *last {
            Some((millis, random)) if millis >= now => {
                if random >= RANDOM_MASK {
                    (millis + 1, rand::random::<u128>() & RANDOM_MASK >> 1)
                } else {
                    (millis, random + 1)
                }
            }
            _ => (now, rand::random::<u128>() & RANDOM_MASK >> 1),
        };
        *last = Some((millis, random));
        Ulid::from_parts(millis, random)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_increasing() {
        let ids = UlidGenerator::default();
        let mut previous = ids.ulid();
        for _ in 0..10_000 {
            let next = ids.ulid();
            assert!(next > previous);
            assert!(
                next.encode() > previous.encode(),
                "the text sorts the same way"
            );
            previous = next;
        }
    }
}
