//! The ports: what billing-core needs from the outside world, as traits adapters implement.
//!
//! Every async port is an `#[async_trait]` trait; with the `mock` feature each has a mockall
//! mock (`MockLedgerStore`, …). Each trait states its error contract: which failures come
//! back as values and which as [`StoreError`] (or the port's own error type).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::catalog::TokenUsage;
use crate::ids::{AccountId, PaymentId, SubscriptionId, TaskId, Ulid, UserId};
use crate::ledger::{AccountSnapshot, Credits, LedgerError, LedgerRequest, Receipt, Transaction};
use crate::money::Money;
use crate::payments::{ChargeState, Payment, PaymentEvent};
use crate::quota::{QuotaCheck, QuotaError, Window};
use crate::records::{
    Account, ApiKey, AuditRecord, Balance, Page, PageRequest, RefreshToken, Rotation, SavedItem,
    User, WebhookEvent, WebhookStatus,
};
use crate::subscription::Subscription;
use crate::tasks::{Task, TaskStatus};

/// Which rule a write would have broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// The email is already registered.
    #[error("email")]
    Email,
    /// The external identity's subject is already linked.
    #[error("external_subject")]
    ExternalSubject,
    /// The provider's id (subscription, webhook event) is already recorded.
    #[error("external_id")]
    ExternalId,
    /// The account already has an allowance grant for that period.
    #[error("one_period_allowance")]
    PeriodAllowance,
    /// The account already has a live subscription.
    #[error("one_live_subscription")]
    LiveSubscription,
    /// A payment's credits were granted already (one purchase grant per payment).
    #[error("one_purchase_per_payment")]
    PaymentGranted,
    /// The record changed meanwhile (an optimistic check failed).
    #[error("changed meanwhile")]
    ChangedMeanwhile,
    /// Another uniqueness rule, named by the database.
    #[error("{0}")]
    Other(String),
}

/// A failure of a store itself (not a refusal by the domain).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The record does not exist (only where a method says it returns this rather than
    /// `None`).
    #[error("not found")]
    NotFound,
    /// A uniqueness rule would be broken (an email already registered, say), or the record
    /// changed meanwhile; says which.
    #[error("conflict: {0}")]
    Conflict(Conflict),
    /// The database cannot be reached or timed out; the operation did not happen and may be
    /// retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else; the operation did not happen.
    #[error("store failure: {0}")]
    Other(String),
}

/// The time. Adapters read the system clock; tests fix it.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait Clock: Send + Sync {
    /// Now, in UTC.
    fn now(&self) -> OffsetDateTime;
}

/// Fresh ULIDs for ids. Must be unique; should be monotonic within a process.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait IdGenerator: Send + Sync {
    /// A new ULID.
    fn ulid(&self) -> Ulid;
}

/// What a ledger request came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "result", rename_all = "snake_case")]
pub enum LedgerOutcome {
    /// Decided and (if `Ok`) applied now.
    Executed(Result<Receipt, LedgerError>),
    /// The key was seen with the same command: the first outcome, unchanged.
    Replayed(Result<Receipt, LedgerError>),
    /// The key was seen with a different command; nothing happened.
    Conflict,
}

impl LedgerOutcome {
    /// The receipt or refusal, whether fresh or replayed; `None` for a conflict.
    pub fn result(&self) -> Option<&Result<Receipt, LedgerError>> {
        match self {
            Self::Executed(r) | Self::Replayed(r) => Some(r),
            Self::Conflict => None,
        }
    }
}

/// The credit ledger's storage.
///
/// Contract: [`execute`](LedgerStore::execute) is atomic and serializable per account. In one
/// database transaction it looks the idempotency key up (same command → `Replayed` with the
/// stored result; other command → `Conflict`), loads the [`LedgerView`](crate::ledger::LedgerView)
/// with the account locked, calls [`decide`](crate::ledger::decide), applies the decision and
/// stores the outcome — refusals included — under the key. Domain refusals are values inside
/// the outcome, never `Err`; `Err` means nothing happened. Concurrent requests on one account
/// must never overspend; deadlocks and serialization failures are retried inside the store.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// Runs one request atomically and idempotently.
    async fn execute(&self, request: LedgerRequest) -> Result<LedgerOutcome, StoreError>;
    /// Balance, live grants and pending holds.
    async fn balance(&self, account: &AccountId) -> Result<Balance, StoreError>;
    /// The journal, newest first.
    async fn journal(
        &self,
        account: &AccountId,
        page: PageRequest,
    ) -> Result<Page<Transaction>, StoreError>;
    /// Everything [`verify`](crate::ledger::verify) checks, for one account.
    async fn snapshot(&self, account: &AccountId) -> Result<AccountSnapshot, StoreError>;
    /// Pending holds whose time is up, by id, after the `after` cursor, for the expiry
    /// worker (a cursor, so that a hold the worker cannot release never hides later ones).
    async fn expired_holds(
        &self,
        now: OffsetDateTime,
        after: Option<crate::ids::HoldId>,
        limit: u32,
    ) -> Result<Vec<(AccountId, crate::ids::HoldId)>, StoreError>;
}

/// What a limiter answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Allowed,
    /// Not before this many seconds (at least 1).
    Wait {
        /// Seconds to wait.
        seconds: u64,
    },
}

/// How failures of one key (failed sign-ins of an email or an address) slow it down: after
/// `free` failures within `forget_after_seconds`, each further failure makes the key wait
/// twice as long as the one before (1, 2, 4… seconds, at most `forget_after_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailurePolicy {
    /// Failures allowed before waiting.
    pub free: u32,
    /// After this long without a failure, the count starts again.
    pub forget_after_seconds: u64,
}

/// The counters behind rate limits and the slowing of failed sign-ins. In memory for one
/// instance; in a shared store (Redis) so that several instances count together.
///
/// Contract: `hit` counts the request and answers for it; `fail` counts a failure under the
/// policy; `wait` answers whether a key must wait after its failures, counting nothing;
/// `clear` forgets a key's failures. A key is any text the caller chooses.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Counts one request of `key` against `rule`.
    async fn hit(&self, key: &str, rule: &crate::catalog::RateLimit)
    -> Result<Verdict, StoreError>;
    /// Counts one failure of `key`.
    async fn fail(&self, key: &str, policy: FailurePolicy) -> Result<(), StoreError>;
    /// Whether `key` must wait after its failures.
    async fn wait(&self, key: &str) -> Result<Verdict, StoreError>;
    /// Forgets `key`'s failures (a success).
    async fn clear(&self, key: &str) -> Result<(), StoreError>;
}

/// How many idempotency records a pruning removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Ledger idempotency keys.
    pub ledger_keys: usize,
    /// API idempotency keys.
    pub api_keys: usize,
    /// Quota tracking events.
    pub quota_events: usize,
}

/// Keeping the idempotency tables from growing forever.
///
/// Contract: removes the ledger's and the API's idempotency records and the quota tracking
/// events created before `before`, and nothing else (grants, journal and usage totals stay).
/// A key older than that is forgotten: sent again, it is a new request.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait RetentionStore: Send + Sync {
    /// Prunes records created before `before`.
    async fn prune_idempotency(&self, before: OffsetDateTime) -> Result<Pruned, StoreError>;
}

/// One run of a scheduled job, as recorded by the instance that ran it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    /// The job (`expire_holds`, `renew_allowances`…).
    pub job: String,
    /// When the period it ran for began.
    pub period: OffsetDateTime,
    /// The instance that ran it.
    pub instance: String,
    /// When it started.
    pub started_at: OffsetDateTime,
}

/// How much work waits in one of the background queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStat {
    /// `tasks` (queued tasks), `task_webhooks` (deliveries not yet made) or
    /// `payment_events` (stored provider events not yet applied, or failed and due again).
    pub queue: String,
    /// Items waiting.
    pub depth: u64,
    /// When the oldest waiting item arrived; `None` when none waits.
    pub oldest: Option<OffsetDateTime>,
}

/// Scheduled jobs shared by several instances on one database.
///
/// Contract: of every `claim_run` for the same job and period, across every instance, exactly
/// one returns `true`; the winner's run is recorded. `prune_runs` removes records of periods
/// that began before `before`.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Claims `job`'s run for the period beginning at `period` for `instance`.
    async fn claim_run(
        &self,
        job: &str,
        period: OffsetDateTime,
        instance: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// The most recent runs, newest period first; of one job if `job` is given.
    async fn recent_runs(&self, job: Option<String>, limit: u32)
    -> Result<Vec<JobRun>, StoreError>;
    /// Forgets runs of periods that began before `before`; how many.
    async fn prune_runs(&self, before: OffsetDateTime) -> Result<usize, StoreError>;
    /// The depth and oldest item of each background queue.
    async fn queues(&self) -> Result<Vec<QueueStat>, StoreError>;
}

/// Accounts and their users.
///
/// Contract: emails are stored lowercased and unique (a duplicate is
/// `StoreError::Conflict("email")`); lookups return `Ok(None)` when absent.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates an account with its first user, atomically.
    async fn create(&self, account: Account, user: User) -> Result<(), StoreError>;
    /// An account by id.
    async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError>;
    /// Sets the plan in force.
    async fn set_plan(&self, id: &AccountId, plan: &str) -> Result<(), StoreError>;
    /// A user by id.
    async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError>;
    /// A user by email (case-insensitive).
    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;
    /// A user by external identity subject.
    async fn user_by_subject(&self, subject: &str) -> Result<Option<User>, StoreError>;
    /// Replaces a user's mutable fields (name, role, verification, password hash).
    async fn update_user(&self, user: &User) -> Result<(), StoreError>;
    /// Replaces a user's password hash only if it is still `expected` (a rehash must not
    /// undo a password change made meanwhile); whether it did.
    async fn replace_password_hash(
        &self,
        user: &UserId,
        expected: &str,
        new: &str,
    ) -> Result<bool, StoreError>;
    /// The users of an account, oldest first.
    async fn account_users(&self, account: &AccountId) -> Result<Vec<User>, StoreError>;
    /// Users whose email or name contains `search`, newest first.
    async fn list_users(
        &self,
        search: Option<String>,
        page: PageRequest,
    ) -> Result<Page<User>, StoreError>;
    /// Accounts on `plan` that have no period-allowance grant with `reference` yet (the
    /// ones a period reset still has to serve), by id after `after`.
    async fn accounts_due_allowance(
        &self,
        plan: String,
        reference: String,
        after: Option<AccountId>,
        limit: u32,
    ) -> Result<Vec<AccountId>, StoreError>;
}

/// A usage record to add to a meter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackRequest {
    /// The account.
    pub account: AccountId,
    /// The meter.
    pub meter: String,
    /// Units to add (≥ 1), or, for a gauge, to release (≤ -1).
    pub amount: i64,
    /// The period it counts in.
    pub window: Window,
    /// The limit to enforce atomically; `None` records without a limit.
    pub limit: Option<u64>,
    /// The same key again records nothing more.
    pub key: String,
}

/// What tracking came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TrackOutcome {
    /// Recorded; the period's new total.
    Recorded {
        /// Units used in the period now.
        used: u64,
    },
    /// The key was already recorded with the same amount; the total then.
    Replayed {
        /// Units used in the period when it was first recorded.
        used: u64,
    },
    /// Refused; nothing recorded.
    Rejected {
        /// Why.
        error: QuotaError,
    },
    /// The key was used for another meter or amount.
    Conflict,
}

/// Sign-in sessions: rotating refresh tokens, stored hashed.
///
/// Contract: `rotate` is atomic — of two concurrent presentations of one token, exactly one
/// gets `Rotated`; the other gets `Reused` and the family is revoked (the safe answer to a
/// stolen token).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new token (the first of a family, at sign-in).
    async fn issue(&self, token: &RefreshToken) -> Result<(), StoreError>;
    /// Uses up the token with `presented_hash` and stores `next` in its family.
    async fn rotate(
        &self,
        presented_hash: &str,
        next: &RefreshToken,
        now: OffsetDateTime,
    ) -> Result<Rotation, StoreError>;
    /// Revokes the family of the token with this hash (logout); the family, or `None` if
    /// the token is unknown.
    async fn revoke_family_of(
        &self,
        token_hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError>;
    /// Revokes every token of a user (password change).
    async fn revoke_user(&self, user: &UserId, now: OffsetDateTime) -> Result<(), StoreError>;
    /// The user and current role of a sign-in (refresh-token family) that is still live;
    /// `None` once it is revoked (logout, reuse, password change or reset).
    async fn live_session(
        &self,
        family: &str,
    ) -> Result<Option<(UserId, crate::records::Role)>, StoreError>;
    /// Uses up every outstanding single-use token of a user for `purpose` (after a
    /// password reset or change, no older reset code works).
    async fn revoke_one_time(
        &self,
        user: &UserId,
        purpose: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Stores a single-use token (by its hash) for `purpose`, valid until `expires_at`.
    async fn issue_one_time(
        &self,
        user: &UserId,
        purpose: &str,
        token_hash: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Uses up a single-use token: its user if it exists for `purpose`, is unexpired and
    /// unused (atomically: of two concurrent uses one succeeds).
    async fn consume_one_time(
        &self,
        token_hash: &str,
        purpose: &str,
        now: OffsetDateTime,
    ) -> Result<Option<UserId>, StoreError>;
}

/// A user's own data: preferences and saved items.
///
/// Contract: every read and delete names the owner; another user's item is `None` / `false`,
/// exactly as if it did not exist.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait UserDataStore: Send + Sync {
    /// The user's preferences (a JSON object; `None` if never set).
    async fn preferences(&self, user: &UserId) -> Result<Option<serde_json::Value>, StoreError>;
    /// Replaces the user's preferences.
    async fn set_preferences(
        &self,
        user: &UserId,
        preferences: serde_json::Value,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Saves an item.
    async fn save_item(&self, item: &SavedItem) -> Result<(), StoreError>;
    /// The owner's items of a kind (all kinds if `None`), newest first.
    async fn items(
        &self,
        user: &UserId,
        kind: Option<String>,
        page: PageRequest,
    ) -> Result<Page<SavedItem>, StoreError>;
    /// One of the owner's items.
    async fn item(&self, user: &UserId, id: &str) -> Result<Option<SavedItem>, StoreError>;
    /// Deletes one of the owner's items; `false` if the owner has no such item.
    async fn delete_item(&self, user: &UserId, id: &str) -> Result<bool, StoreError>;
}

/// API keys, stored hashed.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// Stores a new key.
    async fn create_key(&self, key: &ApiKey) -> Result<(), StoreError>;
    /// The user's keys, newest first, revoked ones included.
    async fn keys(&self, user: &UserId) -> Result<Vec<ApiKey>, StoreError>;
    /// The live (not revoked) key with this hash.
    async fn live_key(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError>;
    /// Revokes one of the user's keys; `false` if the user has no such live key.
    async fn revoke_key(
        &self,
        user: &UserId,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Revokes every API key of a user (password change or reset); how many.
    async fn revoke_user_keys(
        &self,
        user: &UserId,
        now: OffsetDateTime,
    ) -> Result<usize, StoreError>;
}

/// Quota meters' storage.
///
/// Contract: [`track`](QuotaStore::track) checks the limit and records in one atomic step
/// (using [`decide_track`](crate::quota::decide_track)), so concurrent tracking never passes a
/// limit; keys are unique per account.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait QuotaStore: Send + Sync {
    /// Units of `meter` used in the window that starts at `window_start`.
    async fn usage(
        &self,
        account: &AccountId,
        meter: &str,
        window_start: OffsetDateTime,
    ) -> Result<u64, StoreError>;
    /// Records usage idempotently, enforcing the limit.
    async fn track(&self, request: TrackRequest) -> Result<TrackOutcome, StoreError>;
    /// Records many events, each decided as [`track`](QuotaStore::track) would decide it had
    /// they been tracked one after another in this order (a later event sees the units an
    /// earlier one recorded; a key repeated in the batch replays). One outcome per request,
    /// in order. A store may commit the batch in one transaction; this default tracks them
    /// one by one.
    async fn track_many(
        &self,
        requests: Vec<TrackRequest>,
    ) -> Result<Vec<TrackOutcome>, StoreError> {
        let mut outcomes = Vec::with_capacity(requests.len());
        for request in requests {
            outcomes.push(self.track(request).await?);
        }
        Ok(outcomes)
    }
}

/// Subscriptions' storage.
///
/// Contract: one live (not canceled) subscription per account (a second is a
/// `Conflict(LiveSubscription)`); `save` with `expected: None` inserts, else replaces the
/// record whole only if its stored status and version are still `expected`, failing with
/// `Conflict(ChangedMeanwhile)` otherwise (optimistic concurrency between webhooks and
/// instances).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait SubscriptionStore: Send + Sync {
    /// The account's live subscription, if any. May be answered from a read cache, so
    /// another instance's change can be up to its TTL late: for showing and checking.
    async fn current(&self, account: &AccountId) -> Result<Option<Subscription>, StoreError>;
    /// The same, read from the database past any cache: for deciding (the plan an account
    /// is put on), where another instance's change must count.
    async fn current_uncached(
        &self,
        account: &AccountId,
    ) -> Result<Option<Subscription>, StoreError>;
    /// Whether the account ever had a trial (a trial is given once per account).
    async fn trialed(&self, account: &AccountId) -> Result<bool, StoreError>;
    /// A subscription by id.
    async fn get(&self, id: &SubscriptionId) -> Result<Option<Subscription>, StoreError>;
    /// A subscription by the payment provider's id.
    async fn by_external_id(&self, external_id: &str) -> Result<Option<Subscription>, StoreError>;
    /// Creates or replaces a subscription.
    async fn save(
        &self,
        subscription: &Subscription,
        expected: Option<crate::subscription::Expected>,
    ) -> Result<(), StoreError>;
    /// Past-due subscriptions that fell past due before `before` (for the dunning sweep).
    async fn past_due_before(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Subscription>, StoreError>;
}

/// A stored HTTP response, for idempotent replays at the API edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// Response body.
    pub body: String,
}

/// What an idempotency key holds at the API edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum KeyState {
    /// Unseen: claimed now for this request.
    Claimed,
    /// Seen with the same request and finished: replay this.
    Completed {
        /// The stored response.
        response: StoredResponse,
    },
    /// Seen with the same request, still running.
    InProgress,
    /// Seen with a different request.
    Conflict,
}

/// Idempotency records for API requests (scope: the caller).
///
/// Contract: `claim` is atomic: of concurrent claims of one key, exactly one gets `Claimed`.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims a key for a request with this fingerprint, or reports what it holds.
    async fn claim(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
    ) -> Result<KeyState, StoreError>;
    /// Stores the response of a claimed key.
    async fn complete(
        &self,
        scope: &str,
        key: &str,
        response: StoredResponse,
    ) -> Result<(), StoreError>;
    /// Releases a claimed key whose request failed before doing anything.
    async fn release(&self, scope: &str, key: &str) -> Result<(), StoreError>;
}

/// Received webhook events (verify, store, map, apply).
///
/// Contract: `record` is idempotent on the provider's event id: a second delivery returns
/// `false` and stores nothing.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait WebhookEventStore: Send + Sync {
    /// Stores a verified event; `false` if it was already stored.
    async fn record(&self, event: WebhookEvent) -> Result<bool, StoreError>;
    /// Marks how applying it went, counting the attempt; a failed event is tried again
    /// from `retry_at`.
    async fn mark(
        &self,
        external_id: &str,
        status: WebhookStatus,
        error: Option<String>,
        retry_at: Option<OffsetDateTime>,
    ) -> Result<(), StoreError>;
    /// One event by the provider's id.
    async fn event(&self, external_id: &str) -> Result<Option<WebhookEvent>, StoreError>;
    /// Queues a failed or ignored event to be applied again (an admin's retry); `false` if
    /// there is no such event in either state.
    async fn retry(&self, external_id: &str) -> Result<bool, StoreError>;
    /// Queues again every ignored event whose payload mentions `needle` (a provider id,
    /// such as a customer just linked to an account); returns how many.
    async fn requeue_ignored_mentioning(&self, needle: &str) -> Result<usize, StoreError>;
    /// Events to apply now, oldest first: received ones, and failed ones whose retry time
    /// has come and that have had fewer than `max_attempts`.
    async fn due(
        &self,
        now: OffsetDateTime,
        max_attempts: u32,
        limit: u32,
    ) -> Result<Vec<WebhookEvent>, StoreError>;
    /// Events with a status, oldest first (failed ones, for retry).
    async fn with_status(
        &self,
        status: WebhookStatus,
        page: PageRequest,
    ) -> Result<Page<WebhookEvent>, StoreError>;
}

/// A task to create with the hold that pays for it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// The task (its `hold` is filled in from the reserve).
    pub task: Task,
    /// The reserve, keyed by the client's idempotency key (or the task id).
    pub hold: LedgerRequest,
    /// Who created it, for its history.
    pub actor: String,
}

/// What creating a task came to.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskCreated {
    /// Created now, with its hold.
    Created(Task),
    /// The idempotency key was used before for the same task: that task, as it is now.
    Replayed(Task),
    /// The ledger refused the hold (now, or the first time this key was used); nothing
    /// was created.
    Refused(LedgerError),
    /// The idempotency key was used for a different task; nothing happened.
    Conflict,
}

/// A conditional move of a task and the ledger operation that goes with it: both happen,
/// in one transaction, or neither.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskChange {
    /// The task.
    pub task: TaskId,
    /// It moves only from one of these states…
    pub from: Vec<TaskStatus>,
    /// …and, when set, only in this claim (the worker's lease).
    pub attempt: Option<u32>,
    /// The state it moves to. To `queued` the lease is dropped; to a final state it is
    /// `finished_at` now.
    pub to: TaskStatus,
    /// The output (for `succeeded`).
    pub output: Option<serde_json::Value>,
    /// Why (for `failed`).
    pub error: Option<String>,
    /// Credits charged (for a final state).
    pub credits_charged: Option<Credits>,
    /// Who moves it, for its history.
    pub actor: String,
    /// A note for its history.
    pub note: Option<String>,
    /// The capture or void of its hold.
    pub settle: Option<LedgerRequest>,
    /// A webhook delivery to queue (its id), for a final state.
    pub delivery: Option<String>,
    /// Now.
    pub now: OffsetDateTime,
}

/// What a [`TaskChange`] came to.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskMoved {
    /// Moved, and the ledger with it.
    Moved(Task),
    /// It was not in an expected state or claim: nothing happened; the task as it is.
    Stale(Task),
    /// The ledger refused the settlement: nothing happened; the task as it is.
    Refused(Task, LedgerError),
    /// No such task.
    NotFound,
}

/// A worker's request for tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    /// Task types it runs.
    pub kinds: Vec<String>,
    /// Who it is.
    pub worker: String,
    /// The most tasks to take.
    pub limit: u32,
    /// Until when the lease lasts.
    pub lease_until: OffsetDateTime,
    /// Now.
    pub now: OffsetDateTime,
}

/// Tasks, their history and the webhooks that announce their end.
///
/// Contract: `create` runs the hold and the insert in one transaction. `claim` takes the
/// oldest queued tasks of the kinds whose deadline has not passed, atomically: two
/// concurrent claims never take one task (PostgreSQL `FOR UPDATE SKIP LOCKED`; SQLite's
/// single writer); each claim counts an attempt and is journaled. `change` applies a
/// [`TaskChange`] only if the task is still as expected, with its ledger operation in the
/// same transaction. `claim_deliveries` leases due deliveries so that two senders do not
/// send one at once.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Creates a task and its hold.
    async fn create(&self, new: NewTask) -> Result<TaskCreated, StoreError>;
    /// A task by id.
    async fn get(&self, id: &TaskId) -> Result<Option<Task>, StoreError>;
    /// An account's tasks, newest first.
    async fn list(
        &self,
        account: &AccountId,
        filter: crate::tasks::TaskFilter,
        page: PageRequest,
    ) -> Result<Page<Task>, StoreError>;
    /// A task's history, oldest first.
    async fn events(&self, id: &TaskId) -> Result<Vec<crate::tasks::TaskEvent>, StoreError>;
    /// Claims queued tasks for a worker.
    async fn claim_tasks(&self, request: ClaimRequest) -> Result<Vec<Task>, StoreError>;
    /// Extends a running task's lease, if it is still in claim `attempt`.
    async fn heartbeat(
        &self,
        id: &TaskId,
        attempt: u32,
        lease_until: OffsetDateTime,
    ) -> Result<Option<Task>, StoreError>;
    /// Moves a task (see [`TaskChange`]).
    async fn change(&self, change: TaskChange) -> Result<TaskMoved, StoreError>;
    /// Tasks that need the sweeper: running with an expired lease, or unfinished past their
    /// deadline; by id after `after`.
    async fn due_tasks(
        &self,
        now: OffsetDateTime,
        after: Option<TaskId>,
        limit: u32,
    ) -> Result<Vec<Task>, StoreError>;
    /// Leases up to `limit` pending deliveries that are due, until `until`.
    async fn claim_deliveries(
        &self,
        now: OffsetDateTime,
        until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<crate::tasks::Delivery>, StoreError>;
    /// Records an attempt's result (status, attempts, next attempt, last answer).
    async fn delivery_attempted(&self, delivery: &crate::tasks::Delivery)
    -> Result<(), StoreError>;
    /// Deliveries, newest first, of one task or all, in one status or all.
    async fn deliveries(
        &self,
        task: Option<TaskId>,
        status: Option<crate::tasks::DeliveryStatus>,
        page: PageRequest,
    ) -> Result<Page<crate::tasks::Delivery>, StoreError>;
}

/// The audit log. Append-only.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends a record.
    async fn append(&self, record: &AuditRecord) -> Result<(), StoreError>;
    /// Records, newest first, optionally only those about `target`.
    async fn list(
        &self,
        target: Option<String>,
        page: PageRequest,
    ) -> Result<Page<AuditRecord>, StoreError>;
}

/// Payments received, the charges behind them, and which provider customer is which
/// account.
///
/// Contract: `record_payment` inserts a payment unless one with the same `external_id` exists and
/// returns the stored one either way (so two deliveries of one payment record it once);
/// `set_withheld` changes a row only if it still holds what the caller read (`false`
/// otherwise: read again and retry); `merge_charge` merges atomically
/// ([`ChargeState::merge`]), so concurrent observations of one charge all count.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait PaymentStore: Send + Sync {
    /// Records a payment once; returns the stored record.
    async fn record_payment(&self, payment: &Payment) -> Result<Payment, StoreError>;
    /// The payments made with a payment intent.
    async fn by_intent(&self, payment_intent: &str) -> Result<Vec<Payment>, StoreError>;
    /// Sets the credits withheld from `from` to `to`; `false` if it no longer was `from`.
    async fn set_withheld(
        &self,
        id: &PaymentId,
        from: Credits,
        to: Credits,
    ) -> Result<bool, StoreError>;
    /// An account's payments, newest first.
    async fn payments(
        &self,
        account: &AccountId,
        page: PageRequest,
    ) -> Result<Page<Payment>, StoreError>;
    /// A charge's state.
    async fn charge(&self, charge: &str) -> Result<Option<ChargeState>, StoreError>;
    /// The charges of a payment intent.
    async fn charges_for(&self, payment_intent: &str) -> Result<Vec<ChargeState>, StoreError>;
    /// Merges an observation of a charge into its stored state; returns the result.
    async fn merge_charge(&self, seen: &ChargeState) -> Result<ChargeState, StoreError>;
    /// Remembers that the provider's `customer` is `account` (first link wins).
    async fn link_customer(
        &self,
        provider: &str,
        customer: &str,
        account: &AccountId,
    ) -> Result<(), StoreError>;
    /// The account of a provider's customer.
    async fn customer_account(
        &self,
        provider: &str,
        customer: &str,
    ) -> Result<Option<AccountId>, StoreError>;
    /// The provider's customer of an account.
    async fn customer_of(
        &self,
        provider: &str,
        account: &AccountId,
    ) -> Result<Option<String>, StoreError>;
}

/// A hosted checkout to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutRequest {
    /// The paying account.
    pub account: AccountId,
    /// The provider's customer for the account, if it has one.
    pub customer: Option<String>,
    /// What is bought.
    pub item: CheckoutItem,
    /// Where the provider sends the customer after paying.
    pub success_url: String,
    /// Where it sends them if they give up.
    pub cancel_url: String,
}

/// What a checkout sells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CheckoutItem {
    /// A credit pack, paid once.
    Pack {
        /// Pack id.
        pack: String,
        /// Its price.
        price: Money,
        /// The provider's price id, if configured.
        provider_price: Option<String>,
    },
    /// A subscription.
    Subscription {
        /// Plan id.
        plan: String,
        /// Billed monthly or yearly.
        interval: crate::catalog::Interval,
        /// Its price.
        price: Money,
        /// The provider's price id, if configured.
        provider_price: Option<String>,
        /// Trial days (0: none; a second subscription of an account gets none).
        trial_days: u32,
        /// Let the customer enter a promotion code.
        allow_promotion_codes: bool,
    },
}

/// A started checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutSession {
    /// The provider's session id.
    pub id: String,
    /// Where to send the customer.
    pub url: String,
}

/// A payment to confirm in the product's own page (Stripe Elements): a quick buy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuickBuy {
    /// The provider's payment id (`pi_…`).
    pub id: String,
    /// What the front end confirms the payment with.
    pub client_secret: String,
    /// A page that completes it without a front end (the local adapter's), if any.
    pub url: Option<String>,
}

/// A change of a subscription's plan, as the provider is asked to make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanChange {
    /// The plan to move to.
    pub plan: String,
    /// The subscription's billing interval (unchanged).
    pub interval: crate::catalog::Interval,
    /// The provider's price for `plan` × `interval` (`price_…` at Stripe).
    pub provider_price: Option<String>,
    /// Now, billing the prorated difference at once; else from the next period, with
    /// nothing prorated (the current period stays paid at the old price).
    pub immediately: bool,
}

/// A failure of the payment provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// A webhook's signature is missing, malformed, wrong or too old.
    #[error("invalid webhook signature: {0}")]
    InvalidSignature(String),
    /// A genuine delivery that is not an event (no id or type, not JSON).
    #[error("malformed event: {0}")]
    MalformedEvent(String),
    /// The provider refused the request (names why, without secrets).
    #[error("payment provider refused: {0}")]
    Rejected(String),
    /// The provider could not be reached; nothing is known to have happened.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
    /// The catalog lacks what the provider needs (a price id); names it.
    #[error("not configured for payments: {0}")]
    NotConfigured(String),
}

/// The payment provider: Stripe, or the local stand-in that needs no keys.
///
/// Contract: requests carry an idempotency key derived from the caller's, so a retried call
/// creates nothing twice; secrets never appear in errors. A call that changes a
/// subscription returns what the provider now reports as [`PaymentEvent`]s, which the
/// caller applies as it would the provider's webhooks (a later webhook for the same state
/// changes nothing).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait PaymentGateway: Send + Sync {
    /// The provider's name (`stripe`, `local`), under which its customers are linked.
    fn provider(&self) -> &'static str;
    /// Whether the provider can sell `item` as configured (a hosted checkout, or with
    /// `quick` a quick buy), before anything is created there; names what is missing.
    fn can_sell(&self, item: &CheckoutItem, quick: bool) -> Result<(), PaymentError>;
    /// Creates the provider's customer for an account (`None`: the provider has none).
    async fn create_customer(
        &self,
        account: &AccountId,
        email: &str,
        idempotency_key: String,
    ) -> Result<Option<String>, PaymentError>;
    /// Starts a hosted checkout.
    async fn create_checkout(
        &self,
        request: CheckoutRequest,
        idempotency_key: String,
    ) -> Result<CheckoutSession, PaymentError>;
    /// Starts a pack payment the product confirms in its own page.
    async fn quick_buy(
        &self,
        request: CheckoutRequest,
        idempotency_key: String,
    ) -> Result<QuickBuy, PaymentError>;
    /// A link to the provider's customer portal.
    async fn portal_url(&self, customer: &str, return_url: String) -> Result<String, PaymentError>;
    /// Ends a subscription now, or at the period's end (`at_period_end`), or (with
    /// `resume`) takes back a pending end.
    async fn set_cancellation(
        &self,
        subscription: &Subscription,
        at_period_end: bool,
        resume: bool,
    ) -> Result<Vec<PaymentEvent>, PaymentError>;
    /// Moves a subscription to another plan (see [`PlanChange`]).
    async fn change_plan(
        &self,
        subscription: &Subscription,
        change: PlanChange,
        idempotency_key: String,
    ) -> Result<Vec<PaymentEvent>, PaymentError>;
}

/// A webhook delivery the provider is proven to have sent.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedWebhook {
    /// The provider's event id, unique per event.
    pub id: String,
    /// The event type.
    pub kind: String,
    /// The whole event.
    pub payload: serde_json::Value,
}

/// Checks that a webhook came from the payment provider and reads its envelope.
///
/// Contract: `Ok` only when `signature` signs exactly `payload` with one of the configured
/// secrets and is recent enough at `now` (else `InvalidSignature`), and the payload is an
/// event with an id and a type (else `MalformedEvent`); errors never contain a secret.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait WebhookIntake: Send + Sync {
    /// Verifies one delivery.
    fn verify(
        &self,
        payload: &[u8],
        signature: &str,
        now: OffsetDateTime,
    ) -> Result<VerifiedWebhook, PaymentError>;
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// A chat call to a provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The provider's model name.
    pub upstream_model: String,
    /// The conversation (system messages included, in order).
    pub messages: Vec<ChatMessage>,
    /// The most output tokens the provider may produce: always sent, so that the hold
    /// taken for the call is a true worst case.
    pub max_output_tokens: u32,
}

/// A provider's whole answer with what it used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The reply.
    pub content: String,
    /// Tokens used, as the provider reports them.
    pub usage: TokenUsage,
    /// Why it stopped: `stop` (done) or `length` (the output cap).
    pub finish_reason: String,
}

/// One piece of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatChunk {
    /// More of the reply.
    Text(String),
    /// The usage so far, as the provider reports it: each report replaces the previous one
    /// (providers report cumulative figures).
    Usage(TokenUsage),
    /// The reply is complete, and why it stopped (`stop`, `length`).
    Finish(String),
}

/// A streamed answer. Dropping it stops the provider's stream.
pub type ChatStream =
    std::pin::Pin<Box<dyn futures_core::Stream<Item = Result<ChatChunk, LlmError>> + Send>>;

/// A failure of an LLM provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// The provider refused the request as invalid (HTTP 400-class); names why.
    #[error("provider rejected the request: {0}")]
    Rejected(String),
    /// The provider is rate limiting; retry after the given seconds.
    #[error("provider rate limited")]
    RateLimited {
        /// Seconds to wait, if the provider said.
        retry_after: Option<u64>,
    },
    /// The provider could not be reached or failed; no usage is known.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The provider is not configured (no key); names which.
    #[error("provider not configured: {0}")]
    NotConfigured(String),
}

/// An LLM provider.
///
/// Contract: on `Ok` the usage is what the provider billed; on `Err` before any output,
/// the provider billed nothing that Tollgate knows of (the caller voids its hold). A
/// stream's last `Usage` chunk is the provider's final report; a stream that ends without
/// one (a broken connection) leaves the caller to estimate, by its documented policy.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait LlmProvider: Send + Sync {
    /// The provider's name (`openai`, `anthropic`, `gemini`, `mock`), for usage records.
    fn name(&self) -> &'static str;
    /// Sends a chat call and waits for the whole answer.
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, LlmError>;
    /// Sends a chat call and streams the answer.
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream, LlmError>;
}

/// Counts tokens the way a model's provider does, where an exact tokenizer is known.
pub trait TokenCounter: Send + Sync {
    /// The tokens of `text` for `model`, or `None` when no exact tokenizer is known (the
    /// gateway then bounds the count by the text's bytes).
    fn count_tokens(&self, model: &crate::catalog::Model, text: &str) -> Option<u64>;
}

/// Which provider serves a catalog model's provider (a real one, or the mock standing in).
pub trait LlmRouter: TokenCounter + Send + Sync {
    /// The provider for `provider`.
    fn route(&self, provider: crate::catalog::Provider) -> std::sync::Arc<dyn LlmProvider>;
}

/// Claims of catalog rewards.
///
/// Contract: a claim whose (account, reward, seq) is already taken is refused with
/// `StoreError::Conflict`; `move_claim` changes a claim's status only from `from`, and says
/// whether it did.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait RewardStore: Send + Sync {
    /// Records a new claim.
    async fn insert_claim(&self, claim: &crate::rewards::RewardClaim) -> Result<(), StoreError>;
    /// The account's claims, of one reward if given, oldest first.
    async fn claims_of(
        &self,
        account: &AccountId,
        reward: Option<String>,
    ) -> Result<Vec<crate::rewards::RewardClaim>, StoreError>;
    /// One claim.
    async fn claim(
        &self,
        id: &crate::ids::ClaimId,
    ) -> Result<Option<crate::rewards::RewardClaim>, StoreError>;
    /// Moves a claim from `from` to `to`, noting when and by whom.
    async fn move_claim(
        &self,
        id: &crate::ids::ClaimId,
        from: crate::rewards::ClaimStatus,
        to: crate::rewards::ClaimStatus,
        at: OffsetDateTime,
        by: Option<String>,
    ) -> Result<bool, StoreError>;
    /// Claims with `status` (any if `None`), oldest first, at most `limit`.
    async fn claims_with(
        &self,
        status: Option<crate::rewards::ClaimStatus>,
        limit: u32,
    ) -> Result<Vec<crate::rewards::RewardClaim>, StoreError>;
}

/// The record of metered LLM calls.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Records a call (once: its id is unique).
    async fn record_call(&self, call: &crate::gateway::LlmCall) -> Result<(), StoreError>;
    /// An account's calls that began in `[from, to)`, oldest first.
    async fn calls_between(
        &self,
        account: &AccountId,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<crate::gateway::LlmCall>, StoreError>;
    /// An account's debits and captures made in `[from, to)`, each less what was refunded
    /// for it, oldest first.
    async fn spent_between(
        &self,
        account: &AccountId,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<crate::analytics::Spent>, StoreError>;
}

/// Aggregates for the operator's business view.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait ReportStore: Send + Sync {
    /// The facts behind [`crate::business::business_metrics`] for `[from, to)`, with grants
    /// outstanding as of `now`. Days are UTC.
    async fn business_facts(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<crate::business::BusinessFacts, StoreError>;
}

/// An email to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mail {
    /// Recipient.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

/// Sends email. Contract: `Err` means it was not sent; the caller decides whether to retry.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Sends one message.
    async fn send(&self, mail: Mail) -> Result<(), StoreError>;
}

/// A quota check with the store's current usage (helper for use cases and the API).
pub async fn quota_status(
    store: &dyn QuotaStore,
    account: &AccountId,
    meter: &str,
    rule: Option<&crate::catalog::QuotaRule>,
    requested: u64,
    window: Window,
) -> Result<QuotaCheck, StoreError> {
    let used = store.usage(account, meter, window.start).await?;
    Ok(crate::quota::check(meter, rule, used, requested, window))
}
