//! A short-lived cache of the reads that decide: an account (its plan), its current
//! subscription and its balance rows, so that an entitlement check or a rate-limit lookup
//! costs no database round trip when nothing changed.
//!
//! The rule: this instance's own changes are seen at once, another instance's within the
//! TTL (`database.read_cache_ms`; 0 turns the cache off).
//!
//! * Every write path of this store that can change what is cached drops the account's
//!   entry: a task's hold or settlement, a plan change, a subscription saved, an account
//!   created. A ledger request moves only the balance, so it drops only the balance: the
//!   plan and subscription stay cached while an account spends.
//! * A read that started before such a change never stores what it read: each entry has
//!   versions that every change bumps (the balance's own, for a ledger request), and a read
//!   stores its result only if the version is still the one it saw when it started.
//! * The balance is cached as rows (grants, holds, debt) and computed at each read with the
//!   current time, so a grant that expires is never counted after its expiry.
//!
//! No decision about money trusts this cache: the ledger reads and locks the account inside
//! its own transaction. What the cache may get wrong for at most the TTL, and only after a
//! change made by another instance, is an advisory answer (an entitlement check, a balance
//! shown).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use billing_core::records::Account;
use billing_core::subscription::Subscription;

use crate::ledger::{GrantRow, HoldRow};

/// Past this many accounts the cache starts over, so that it cannot grow without bound.
const MAX_ACCOUNTS: usize = 100_000;

/// An account's balance as stored: debt, live grants, pending holds.
pub(crate) type BalanceRows = (i64, Vec<GrantRow>, Vec<HoldRow>);

/// What may be cached about one account, each with when it was read.
#[derive(Default)]
pub(crate) struct Entry {
    /// Bumped by every change.
    version: u64,
    /// Bumped as well when only the balance changed.
    balance_version: u64,
    account: Option<(Instant, Option<Account>)>,
    subscription: Option<(Instant, Option<Subscription>)>,
    balance: Option<(Instant, BalanceRows)>,
}

struct Inner {
    /// Bumped when the whole cache is dropped, so that no read started before stores.
    generation: u64,
    entries: HashMap<String, Entry>,
}

/// What a read saw before going to the database; it stores its result only if nothing
/// changed meanwhile.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    generation: u64,
    version: u64,
}

/// The cache. Cheap to share; every operation holds the lock only to copy a value.
pub(crate) struct ReadCache {
    ttl: Duration,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Which of an entry's values.
pub(crate) trait Slot {
    type Value: Clone;
    fn get(entry: &Entry) -> &Option<(Instant, Self::Value)>;
    fn set(entry: &mut Entry, value: Option<(Instant, Self::Value)>);
    /// The version a read of this value must still see to store what it read.
    fn version(entry: &Entry) -> u64 {
        entry.version
    }
}

/// The account row.
pub(crate) struct AccountSlot;
/// The current subscription.
pub(crate) struct SubscriptionSlot;
/// The balance rows.
pub(crate) struct BalanceSlot;

impl Slot for AccountSlot {
    type Value = Option<Account>;
    fn get(entry: &Entry) -> &Option<(Instant, Self::Value)> {
        &entry.account
    }
    fn set(entry: &mut Entry, value: Option<(Instant, Self::Value)>) {
        entry.account = value;
    }
}

impl Slot for SubscriptionSlot {
    type Value = Option<Subscription>;
    fn get(entry: &Entry) -> &Option<(Instant, Self::Value)> {
        &entry.subscription
    }
    fn set(entry: &mut Entry, value: Option<(Instant, Self::Value)>) {
        entry.subscription = value;
    }
}

impl Slot for BalanceSlot {
    type Value = BalanceRows;
    fn get(entry: &Entry) -> &Option<(Instant, Self::Value)> {
        &entry.balance
    }
    fn set(entry: &mut Entry, value: Option<(Instant, Self::Value)>) {
        entry.balance = value;
    }
    fn version(entry: &Entry) -> u64 {
        entry.version + entry.balance_version
    }
}

impl ReadCache {
    /// A cache keeping values for `ttl`; zero keeps nothing.
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            inner: Mutex::new(Inner {
                generation: 0,
                entries: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves nothing half-done worth refusing over.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A fresh cached value, or the ticket to store the value about to be read.
    pub(crate) fn get<S: Slot>(&self, account: &str) -> Result<S::Value, Ticket> {
        let inner = self.lock();
        let entry = inner.entries.get(account);
        if let Some((at, value)) = entry.and_then(|e| S::get(e).as_ref())
            && at.elapsed() < self.ttl
        {
            return Ok(value.clone());
        }
        Err(Ticket {
            generation: inner.generation,
            version: entry.map_or(0, S::version),
        })
    }

    /// Stores what a read found, unless the account changed since its ticket was taken.
    pub(crate) fn put<S: Slot>(&self, account: &str, ticket: Ticket, value: &S::Value) {
        if self.ttl.is_zero() {
            return;
        }
        let mut inner = self.lock();
        if inner.generation != ticket.generation {
            return;
        }
        if inner.entries.len() >= MAX_ACCOUNTS && !inner.entries.contains_key(account) {
            inner.entries.clear();
            inner.generation += 1;
            return;
        }
        let entry = inner.entries.entry(account.to_owned()).or_default();
        if S::version(entry) == ticket.version {
            S::set(entry, Some((Instant::now(), value.clone())));
        }
    }

    /// The cached value, or what `load` reads, stored for next time unless the account
    /// changed meanwhile.
    pub(crate) async fn get_or_load<S, E, F>(&self, account: &str, load: F) -> Result<S::Value, E>
    where
        S: Slot,
        F: Future<Output = Result<S::Value, E>>,
    {
        let ticket = match self.get::<S>(account) {
            Ok(cached) => return Ok(cached),
            Err(ticket) => ticket,
        };
        let value = load.await?;
        self.put::<S>(account, ticket, &value);
        Ok(value)
    }

    /// The account changed: forget what is cached about it, and keep any read that
    /// started before from storing.
    pub(crate) fn changed(&self, account: &str) {
        if self.ttl.is_zero() {
            return;
        }
        let mut inner = self.lock();
        let entry = inner.entries.entry(account.to_owned()).or_default();
        *entry = Entry {
            version: entry.version + 1,
            balance_version: entry.balance_version,
            ..Entry::default()
        };
    }

    /// Only the account's balance changed (a ledger request): forget the balance, and keep
    /// any balance read that started before from storing. Its plan and subscription stay.
    pub(crate) fn balance_changed(&self, account: &str) {
        if self.ttl.is_zero() {
            return;
        }
        let mut inner = self.lock();
        let entry = inner.entries.entry(account.to_owned()).or_default();
        entry.balance_version += 1;
        entry.balance = None;
    }

    /// Something changed whose accounts are not known here: forget everything.
    pub(crate) fn changed_all(&self) {
        if self.ttl.is_zero() {
            return;
        }
        let mut inner = self.lock();
        inner.entries.clear();
        inner.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use billing_core::ids::PrefixedId;

    use super::*;

    fn rows(debt: i64) -> BalanceRows {
        (debt, Vec::new(), Vec::new())
    }

    #[test]
    fn a_change_during_a_read_keeps_the_read_from_storing() {
        let cache = ReadCache::new(Duration::from_secs(60));
        let ticket = cache.get::<BalanceSlot>("acc_1").unwrap_err();
        cache.changed("acc_1");
        cache.put::<BalanceSlot>("acc_1", ticket, &rows(5));
        assert!(cache.get::<BalanceSlot>("acc_1").is_err());
        let ticket = cache.get::<BalanceSlot>("acc_1").unwrap_err();
        cache.put::<BalanceSlot>("acc_1", ticket, &rows(7));
        assert_eq!(cache.get::<BalanceSlot>("acc_1").unwrap().0, 7);
    }

    #[test]
    fn a_change_forgets_the_account_and_only_it() {
        let cache = ReadCache::new(Duration::from_secs(60));
        for account in ["acc_1", "acc_2"] {
            let ticket = cache.get::<BalanceSlot>(account).unwrap_err();
            cache.put::<BalanceSlot>(account, ticket, &rows(1));
        }
        cache.changed("acc_1");
        assert!(cache.get::<BalanceSlot>("acc_1").is_err());
        assert!(cache.get::<BalanceSlot>("acc_2").is_ok());
        let ticket = cache.get::<BalanceSlot>("acc_3").unwrap_err();
        cache.changed_all();
        assert!(cache.get::<BalanceSlot>("acc_2").is_err());
        cache.put::<BalanceSlot>("acc_3", ticket, &rows(3));
        assert!(cache.get::<BalanceSlot>("acc_3").is_err());
    }

    #[test]
    fn a_balance_change_keeps_the_plan_and_stops_only_balance_reads_in_flight() {
        let cache = ReadCache::new(Duration::from_secs(60));
        let account = Account {
            id: billing_core::ids::AccountId::from_ulid(billing_core::ids::Ulid::from_parts(1, 1)),
            plan: "pro".into(),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        let ticket = cache.get::<AccountSlot>("acc_1").unwrap_err();
        cache.put::<AccountSlot>("acc_1", ticket, &Some(account));
        let ticket = cache.get::<BalanceSlot>("acc_1").unwrap_err();
        cache.put::<BalanceSlot>("acc_1", ticket, &rows(1));
        let balance_read = cache.get::<BalanceSlot>("acc_2").unwrap_err();
        let plan_read = cache.get::<AccountSlot>("acc_2").unwrap_err();
        cache.balance_changed("acc_1");
        assert!(cache.get::<BalanceSlot>("acc_1").is_err());
        assert_eq!(
            cache.get::<AccountSlot>("acc_1").unwrap().map(|a| a.plan),
            Some("pro".to_owned())
        );
        let ticket = cache.get::<BalanceSlot>("acc_1").unwrap_err();
        cache.balance_changed("acc_1");
        cache.put::<BalanceSlot>("acc_1", ticket, &rows(2));
        assert!(cache.get::<BalanceSlot>("acc_1").is_err());
        // A full change after a balance change still stops a balance read begun before it.
        let ticket = cache.get::<BalanceSlot>("acc_1").unwrap_err();
        cache.changed("acc_1");
        cache.put::<BalanceSlot>("acc_1", ticket, &rows(3));
        assert!(cache.get::<BalanceSlot>("acc_1").is_err());
        // An account with nothing cached yet: its balance read in flight may not store, its
        // plan read may.
        cache.balance_changed("acc_2");
        cache.put::<BalanceSlot>("acc_2", balance_read, &rows(4));
        cache.put::<AccountSlot>("acc_2", plan_read, &None);
        assert!(cache.get::<BalanceSlot>("acc_2").is_err());
        assert_eq!(cache.get::<AccountSlot>("acc_2").unwrap(), None);
    }

    #[test]
    fn a_zero_ttl_keeps_nothing_and_values_age_out() {
        let off = ReadCache::new(Duration::ZERO);
        let ticket = off.get::<BalanceSlot>("acc_1").unwrap_err();
        off.put::<BalanceSlot>("acc_1", ticket, &rows(1));
        assert!(off.get::<BalanceSlot>("acc_1").is_err());
        let short = ReadCache::new(Duration::from_millis(1));
        let ticket = short.get::<BalanceSlot>("acc_1").unwrap_err();
        short.put::<BalanceSlot>("acc_1", ticket, &rows(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(short.get::<BalanceSlot>("acc_1").is_err());
    }
}
