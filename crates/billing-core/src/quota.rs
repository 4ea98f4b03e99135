//! Usage quotas: meters counted per period, checked against a plan's limits.
//!
//! Days and months begin at local midnight in the catalog's time zone (an IANA name, with
//! daylight-saving changes honoured). A billing-period quota follows the subscription's
//! current period; an account without one counts by calendar month.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::{Date, Duration, Month, OffsetDateTime, UtcOffset};
use time_tz::{OffsetDateTimeExt, PrimitiveDateTimeExt, Tz};

use crate::catalog::{MeterKind, QuotaRule};

/// An IANA time zone.
#[derive(Clone, Copy)]
pub struct Timezone(&'static Tz);

impl Timezone {
    /// Looks a zone up by its IANA name (`Europe/Berlin`, `UTC`).
    pub fn parse(name: &str) -> Result<Self, String> {
        time_tz::timezones::get_by_name(name)
            .map(Self)
            .ok_or_else(|| format!("`{name}` is not an IANA time zone name"))
    }

    /// UTC.
    pub fn utc() -> Self {
        // The bundled database always has UTC.
        Self(time_tz::timezones::db::UTC)
    }

    /// The zone's IANA name.
    pub fn name(&self) -> &str {
        time_tz::TimeZone::name(self.0)
    }

    /// The local calendar date of an instant.
    pub fn local_date(&self, instant: OffsetDateTime) -> Date {
        instant.to_timezone(self.0).date()
    }

    /// The instant a local date begins: its midnight, or the first hour that exists when a
    /// daylight-saving change skips midnight; the earlier of two when it repeats.
    pub fn start_of(&self, date: Date) -> OffsetDateTime {
        for hour in 0..4 {
            let Ok(local) = date.with_hms(hour, 0, 0) else {
                continue;
            };
            if let Some(at) = local.assume_timezone(self.0).take_first() {
                return at.to_offset(UtcOffset::UTC);
            }
        }
        date.midnight().assume_utc()
    }
}

impl fmt::Debug for Timezone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The period a quota limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaPeriod {
    /// A local day.
    Day,
    /// A local calendar month.
    Month,
    /// The subscription's current billing period.
    BillingPeriod,
}

/// A half-open span of time `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Window {
    /// First instant inside.
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// First instant after.
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
}

impl Window {
    /// Whether `at` falls inside.
    pub fn contains(&self, at: OffsetDateTime) -> bool {
        self.start <= at && at < self.end
    }

    /// The local day containing `now`.
    pub fn day(now: OffsetDateTime, tz: Timezone) -> Self {
        let date = tz.local_date(now);
        let next = date.next_day().unwrap_or(date);
        Self {
            start: tz.start_of(date),
            end: tz.start_of(next),
        }
    }

    /// The local calendar month containing `now`.
    pub fn month(now: OffsetDateTime, tz: Timezone) -> Self {
        let date = tz.local_date(now);
        let first = date.replace_day(1).unwrap_or(date);
        let (year, month) = match date.month() {
            Month::December => (date.year() + 1, Month::January),
            m => (date.year(), m.next()),
        };
        let next = Date::from_calendar_date(year, month, 1).unwrap_or(first + Duration::days(31));
        Self {
            start: tz.start_of(first),
            end: tz.start_of(next),
        }
    }

    /// All time: the window of a gauge, which never resets.
    pub fn forever() -> Self {
        Self {
            start: OffsetDateTime::UNIX_EPOCH,
            end: time::macros::datetime!(9999-12-31 00:00 UTC),
        }
    }

    /// Whether this is [`Window::forever`].
    pub fn is_forever(&self) -> bool {
        *self == Self::forever()
    }

    /// The window that counts a meter of `kind` under `rule` at `now`: all time for a gauge,
    /// else the rule's period (a month when no rule limits the meter).
    pub fn for_meter(
        kind: MeterKind,
        rule: Option<&QuotaRule>,
        now: OffsetDateTime,
        tz: Timezone,
        billing: Option<Window>,
    ) -> Self {
        match kind {
            MeterKind::Gauge => Self::forever(),
            MeterKind::Counter => {
                let period = rule.and_then(|r| r.period).unwrap_or(QuotaPeriod::Month);
                Self::of(period, now, tz, billing)
            }
        }
    }

    /// The window of `period` containing `now`. `billing` is the subscription's current
    /// period, if there is one; without it a billing-period window is the calendar month.
    pub fn of(
        period: QuotaPeriod,
        now: OffsetDateTime,
        tz: Timezone,
        billing: Option<Window>,
    ) -> Self {
        match (period, billing) {
            (QuotaPeriod::Day, _) => Self::day(now, tz),
            (QuotaPeriod::Month, _) | (QuotaPeriod::BillingPeriod, None) => Self::month(now, tz),
            (QuotaPeriod::BillingPeriod, Some(window)) => window,
        }
    }
}

/// The answer to "may this account use `requested` more units of `meter`?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaCheck {
    /// The meter.
    pub meter: String,
    /// The limit for the period; `None` is unlimited.
    pub limit: Option<u64>,
    /// Units used so far in the period.
    pub used: u64,
    /// Units asked for.
    pub requested: u64,
    /// Whether they fit.
    pub allowed: bool,
    /// Units left before the request; `None` is unlimited.
    pub remaining: Option<u64>,
    /// The current period.
    pub window: Window,
}

/// Checks a request against a plan's rule for a meter (`None`: the plan does not limit it).
pub fn check(
    meter: &str,
    rule: Option<&QuotaRule>,
    used: u64,
    requested: u64,
    window: Window,
) -> QuotaCheck {
    let limit = rule.and_then(|r| r.limit);
    let remaining = limit.map(|l| l.saturating_sub(used));
    QuotaCheck {
        meter: meter.to_owned(),
        limit,
        used,
        requested,
        allowed: remaining.is_none_or(|r| requested <= r),
        remaining,
        window,
    }
}

/// Why usage was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum QuotaError {
    /// The amount must be at least 1.
    #[error("the amount must be at least 1")]
    InvalidAmount,
    /// Recording it would pass the limit.
    #[error("quota for `{meter}` exceeded: {used} of {limit} used, {requested} requested")]
    QuotaExceeded {
        /// The meter.
        meter: String,
        /// The limit.
        limit: u64,
        /// Units used so far.
        used: u64,
        /// Units asked for.
        requested: u64,
        /// When the period ends.
        #[serde(with = "time::serde::rfc3339")]
        resets_at: OffsetDateTime,
    },
    /// Releasing more units of a gauge than it holds.
    #[error("`{meter}` holds {used}; {released} cannot be released")]
    BelowZero {
        /// The meter.
        meter: String,
        /// Units it holds.
        used: u64,
        /// Units asked to be released.
        released: u64,
    },
}

/// Decides a release of `amount` units of a gauge holding `used`: the new level, or why
/// not (never below zero).
pub fn decide_release(meter: &str, used: u64, amount: u64) -> Result<u64, QuotaError> {
    if amount == 0 {
        return Err(QuotaError::InvalidAmount);
    }
    used.checked_sub(amount)
        .ok_or_else(|| QuotaError::BelowZero {
            meter: meter.to_owned(),
            used,
            released: amount,
        })
}

/// Decides whether to record `amount` more units given what the period has used: the new
/// total, or why not. Stores call it inside the transaction that records the usage.
pub fn decide_track(check: &QuotaCheck) -> Result<u64, QuotaError> {
    if check.requested == 0 {
        return Err(QuotaError::InvalidAmount);
    }
    match check.limit {
        Some(limit) if !check.allowed => Err(QuotaError::QuotaExceeded {
            meter: check.meter.clone(),
            limit,
            used: check.used,
            requested: check.requested,
            resets_at: check.window.end,
        }),
        _ => Ok(check.used.saturating_add(check.requested)),
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn days_begin_at_local_midnight() {
        let berlin = Timezone::parse("Europe/Berlin").unwrap();
        // 23:30 UTC on 14 Jan is 00:30 on 15 Jan in Berlin.
        let w = Window::day(datetime!(2026-01-14 23:30 UTC), berlin);
        assert_eq!(w.start, datetime!(2026-01-14 23:00 UTC));
        assert_eq!(w.end, datetime!(2026-01-15 23:00 UTC));
    }

    #[test]
    fn a_daylight_saving_day_is_23_hours() {
        let ny = Timezone::parse("America/New_York").unwrap();
        let w = Window::day(datetime!(2026-03-08 12:00 UTC), ny);
        assert_eq!(w.end - w.start, Duration::hours(23));
    }

    #[test]
    fn months_roll_over_the_year() {
        let w = Window::month(datetime!(2026-12-31 12:00 UTC), Timezone::utc());
        assert_eq!(w.start, datetime!(2026-12-01 0:00 UTC));
        assert_eq!(w.end, datetime!(2027-01-01 0:00 UTC));
    }

    #[test]
    fn billing_period_falls_back_to_the_month() {
        let now = datetime!(2026-05-10 12:00 UTC);
        let billing = Window {
            start: datetime!(2026-05-03 0:00 UTC),
            end: datetime!(2026-06-03 0:00 UTC),
        };
        let tz = Timezone::utc();
        assert_eq!(
            Window::of(QuotaPeriod::BillingPeriod, now, tz, Some(billing)),
            billing
        );
        assert_eq!(
            Window::of(QuotaPeriod::BillingPeriod, now, tz, None),
            Window::month(now, tz)
        );
    }

    #[test]
    fn unknown_zones_are_refused() {
        assert!(Timezone::parse("Europe/Atlantis").is_err());
    }

    #[test]
    fn check_and_track_respect_the_limit() {
        let window = Window::month(datetime!(2026-05-10 12:00 UTC), Timezone::utc());
        let rule = QuotaRule {
            limit: Some(10),
            period: Some(QuotaPeriod::Month),
        };
        let ok = check("exports", Some(&rule), 8, 2, window);
        assert!(ok.allowed);
        assert_eq!(ok.remaining, Some(2));
        assert_eq!(decide_track(&ok), Ok(10));
        let over = check("exports", Some(&rule), 8, 3, window);
        assert!(!over.allowed);
        assert!(matches!(
            decide_track(&over),
            Err(QuotaError::QuotaExceeded { used: 8, .. })
        ));
        let unlimited = check("exports", None, 1_000_000, 5, window);
        assert!(unlimited.allowed);
        assert_eq!(unlimited.remaining, None);
        assert_eq!(
            decide_track(&check("exports", None, 0, 0, window)),
            Err(QuotaError::InvalidAmount)
        );
    }

    #[test]
    fn a_gauge_goes_down_to_zero_and_no_further() {
        assert_eq!(decide_release("seats", 3, 2), Ok(1));
        assert_eq!(decide_release("seats", 3, 3), Ok(0));
        assert_eq!(
            decide_release("seats", 3, 4),
            Err(QuotaError::BelowZero {
                meter: "seats".into(),
                used: 3,
                released: 4
            })
        );
        assert_eq!(
            decide_release("seats", 3, 0),
            Err(QuotaError::InvalidAmount)
        );
        let gauge = Window::for_meter(
            MeterKind::Gauge,
            None,
            datetime!(2026-05-10 12:00 UTC),
            Timezone::utc(),
            None,
        );
        assert!(gauge.is_forever());
        assert!(gauge.contains(datetime!(2126-05-10 12:00 UTC)));
    }
}
