//! Which sign-ins are still live, remembered briefly so that an access token costs no
//! database round trip on every request. External identities (a provider's subject, keyed
//! `external:{issuer}#{subject}`) are remembered here too, under the same rule.
//!
//! The rule: a sign-in found live is trusted for `ttl`; a revocation made by this process
//! (logout, refresh-token reuse, password change or reset) forgets it at once, so on one
//! instance it takes effect on the next request. Another instance sees it within `ttl`
//! (`auth.session_check_seconds`; `0` asks the database on every request). A revoked
//! sign-in is never remembered: it is looked up again, and refused again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use billing_core::ids::{AccountId, UserId};
use billing_core::records::Role;

/// At most this many live sign-ins are remembered; past it, stale entries go first and,
/// if every entry is fresh, all of them (they are only a cache).
const MAX_ENTRIES: usize = 50_000;

/// Recently checked live sign-ins.
#[derive(Debug)]
pub struct SessionCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug, Clone)]
struct Entry {
    user: UserId,
    account: AccountId,
    role: Role,
    checked: Instant,
}

impl SessionCache {
    /// A cache trusting a check for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The user, account and role of a sign-in checked live less than `ttl` ago.
    pub fn get(&self, family: &str) -> Option<(UserId, AccountId, Role)> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.lock();
        let entry = entries.get(family)?;
        (entry.checked.elapsed() < self.ttl)
            .then(|| (entry.user.clone(), entry.account.clone(), entry.role))
    }

    /// Remembers a sign-in just found live.
    pub fn put(&self, family: &str, user: UserId, account: AccountId, role: Role) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, e| e.checked.elapsed() < ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            family.to_owned(),
            Entry {
                user,
                account,
                role,
                checked: Instant::now(),
            },
        );
    }

    /// Forgets one sign-in (logout, refresh-token reuse).
    pub fn forget(&self, family: &str) {
        self.lock().remove(family);
    }

    /// Forgets every sign-in of a user (password change or reset, role change).
    pub fn forget_user(&self, user: &UserId) {
        self.lock().retain(|_, e| &e.user != user);
    }
}

#[cfg(test)]
mod tests {
    use billing_core::ids::{PrefixedId, Ulid};

    use super::*;

    #[test]
    fn remembers_for_the_ttl_and_forgets_on_revocation() {
        let cache = SessionCache::new(Duration::from_secs(60));
        let ada = UserId::from_ulid(Ulid(1));
        let books = AccountId::from_ulid(Ulid(3));
        cache.put("fam_a", ada.clone(), books.clone(), Role::User);
        cache.put("fam_b", ada.clone(), books.clone(), Role::User);
        cache.put(
            "fam_c",
            UserId::from_ulid(Ulid(2)),
            books.clone(),
            Role::Admin,
        );
        assert_eq!(
            cache.get("fam_a"),
            Some((ada.clone(), books.clone(), Role::User))
        );
        cache.forget("fam_a");
        assert_eq!(cache.get("fam_a"), None);
        cache.forget_user(&ada);
        assert_eq!(cache.get("fam_b"), None);
        assert!(cache.get("fam_c").is_some());
        let off = SessionCache::new(Duration::ZERO);
        off.put("fam_a", ada, books, Role::User);
        assert_eq!(off.get("fam_a"), None, "a zero ttl asks every time");
    }
}
