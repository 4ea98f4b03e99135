//! [`DieselStore`]: every persistence port of billing-core, on PostgreSQL or SQLite.

use std::sync::Arc;

use async_trait::async_trait;
use billing_core::ids::{AccountId, HoldId, PrefixedId, SubscriptionId, UserId};
use billing_core::ledger::{
    AccountSnapshot, Grant, LedgerRequest, Transaction, Violation, burn_order, verify,
};
use billing_core::ports::{
    AccountStore, ApiKeyStore, AuditStore, Clock, Conflict, IdGenerator, IdempotencyStore,
    KeyState, LedgerOutcome, LedgerStore, Pruned, QuotaStore, RetentionStore, SessionStore,
    StoreError, StoredResponse, SubscriptionStore, TrackOutcome, TrackRequest, UserDataStore,
    WebhookEventStore,
};
use billing_core::records::{
    Account, ApiKey, AuditRecord, Balance, Page, PageRequest, RefreshToken, Rotation, SavedItem,
    User, WebhookEvent, WebhookStatus,
};
use billing_core::subscription::{Expected, Subscription};
use time::OffsetDateTime;

use crate::accounts::{AccountRow, UserField, UserRow};
use crate::background::Background;
use crate::db::{self, Backend, DatabaseConfig, Pool, TxError, tx_error};
use crate::group_commit::Pending;
use crate::ledger::{GrantRow, HoldRow, attach_legs, snapshot_of};
use crate::read_cache::{AccountSlot, BalanceSlot, ReadCache, SubscriptionSlot};
use crate::records::{AuditRow, SubscriptionField, SubscriptionRow, WebhookRow, enum_text};
use crate::sql::{call, transaction_call};

/// The store: a connection pool plus the clock and id source the ledger needs.
#[derive(Clone)]
pub struct DieselStore {
    pub(crate) pool: Pool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) ids: Arc<dyn IdGenerator>,
    /// The group-commit lanes and the audit writer; `None` in the store those tasks use.
    pub(crate) background: Option<Arc<Background>>,
    /// Accounts, subscriptions and balances read recently (see [`crate::read_cache`]).
    pub(crate) cache: Arc<ReadCache>,
}

impl std::fmt::Debug for DieselStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DieselStore")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

pub(crate) fn page_limit(page: &PageRequest) -> i64 {
    i64::from(page.clamped_limit())
}

/// Builds a page: `rows` were fetched with one extra to learn whether more follow.
pub(crate) fn paged<T, F: Fn(&T) -> String>(mut items: Vec<T>, limit: i64, cursor: F) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more { items.last().map(cursor) } else { None };
    Page { items, next }
}

impl DieselStore {
    /// Connects to the database the config names (creating a SQLite file and its folder if
    /// missing) and checks that it answers.
    pub async fn connect(
        config: &DatabaseConfig,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
    ) -> Result<Self, StoreError> {
        let cannot_start =
            |e: std::io::Error| StoreError::Other(format!("cannot start the store's thread: {e}"));
        let runtime = Background::runtime().map_err(cannot_start)?;
        let pool = match Pool::connect(config, runtime.handle().clone()).await {
            Ok(pool) => pool,
            Err(err) => {
                // Dropping a runtime would block, which an async caller must not.
                runtime.shutdown_background();
                return Err(err);
            }
        };
        let lanes = match config.backend() {
            // Each lane holds at most one connection; leave the rest to everything else.
            Backend::Postgres => (config.pool_size / 2).clamp(1, 8),
            // One writer at a time: one lane groups them all.
            Backend::Sqlite => 1,
        };
        let mut store = Self {
            pool,
            clock,
            ids,
            background: None,
            cache: Arc::new(ReadCache::new(config.read_cache)),
        };
        let background = Background::start(&store, lanes, runtime).map_err(cannot_start)?;
        store.background = Some(background);
        Ok(store)
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.pool.backend()
    }

    /// Checks that the database answers (for `/ready`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.pool.ping().await
    }

    /// Runs a transaction-wrapped query again while it fails for a retryable reason.
    pub(crate) async fn retrying<T, F, Fut>(&self, mut attempt_once: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, TxError>>,
    {
        let mut attempt = 1;
        loop {
            match attempt_once().await {
                Ok(value) => return Ok(value),
                Err(TxError::Db(err)) if db::is_retryable(&err) && attempt < db::MAX_ATTEMPTS => {
                    tracing::debug!(attempt, error = %err, "retrying transaction");
                    db::backoff(attempt).await;
                    attempt += 1;
                }
                Err(err) => return Err(tx_error(err)),
            }
        }
    }

    pub(crate) async fn execute_now(
        &self,
        request: LedgerRequest,
    ) -> Result<LedgerOutcome, StoreError> {
        let fingerprint = request.fingerprint();
        let _writer = self.pool.write_guard().await;
        let outcome = self
            .retrying(|| {
                let request = request.clone();
                let fingerprint = fingerprint.clone();
                let ids = self.ids.clone();
                let now = self.clock.now();
                async move {
                    let mut conn = self.pool.get().await.map_err(TxError::Store)?;
                    transaction_call!(conn, ledger_execute(request, fingerprint, now, ids))
                }
            })
            .await;
        // Even after a failure: a commit whose answer was lost may have changed it.
        self.cache.balance_changed(request.account.as_str());
        outcome
    }

    /// Verifies every account's ledger against its journal (see
    /// [`billing_core::ledger::verify`]); `overdraft_of` gives each plan's overdraft limit.
    /// Returns the accounts checked and those that fail, with why.
    /// One subscription found by `field`, read from the database (never cached).
    async fn subscription_by(
        &self,
        field: SubscriptionField,
        value: String,
    ) -> Result<Option<Subscription>, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(conn, subscription_by(field, value))
            .map_err(tx_error)?
            .map(SubscriptionRow::into_domain)
            .transpose()
    }

    pub async fn verify_ledger(
        &self,
        overdraft_of: impl Fn(&str) -> u64,
    ) -> Result<(usize, Vec<(AccountId, Vec<Violation>)>), StoreError> {
        let mut after: Option<String> = None;
        let mut checked = 0;
        let mut failures = Vec::new();
        loop {
            let mut conn = self.pool.get().await?;
            let batch: Vec<(String, String)> =
                call!(conn, account_ids(after.clone(), 500)).map_err(tx_error)?;
            drop(conn);
            let Some((last, _)) = batch.last() else { break };
            after = Some(last.clone());
            for (id, plan) in batch {
                let account: AccountId = db::parse_id(&id)?;
                let snapshot = self.snapshot(&account).await?;
                let violations = verify(&snapshot, overdraft_of(&plan));
                checked += 1;
                if !violations.is_empty() {
                    failures.push((account, violations));
                }
            }
        }
        Ok((checked, failures))
    }
}

#[async_trait]
impl LedgerStore for DieselStore {
    async fn execute(&self, request: LedgerRequest) -> Result<LedgerOutcome, StoreError> {
        // Either way the transaction runs to completion even if the caller goes away: it is
        // never abandoned half way by a dropped request.
        let Some(background) = &self.background else {
            let store = self.clone();
            return tokio::spawn(async move { store.execute_now(request).await })
                .await
                .map_err(|e| StoreError::Other(format!("ledger task failed: {e}")))?;
        };
        let (reply, outcome) = tokio::sync::oneshot::channel();
        background
            .lane(&request.account)
            .send(Pending { request, reply })
            .map_err(|_| StoreError::Unavailable("the ledger's writer has stopped".into()))?;
        outcome.await.map_err(|_| {
            StoreError::Unavailable("the ledger's writer stopped before answering".into())
        })?
    }

    async fn balance(&self, account: &AccountId) -> Result<Balance, StoreError> {
        let (debt, grants, holds) = self
            .cache
            .get_or_load::<BalanceSlot, _, _>(account.as_str(), async {
                let mut conn = self.pool.get().await?;
                call!(conn, ledger_balance(account.to_string()))
                    .map_err(tx_error)?
                    .ok_or(StoreError::NotFound)
            })
            .await?;
        let now = self.clock.now();
        let mut grants: Vec<Grant> = grants
            .into_iter()
            .map(GrantRow::into_domain)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|g| !g.is_expired(now))
            .collect();
        grants.sort_by(burn_order);
        let holds = holds
            .into_iter()
            .map(HoldRow::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        let live: u64 = grants.iter().map(|g| g.remaining).sum();
        Ok(Balance {
            available: db::signed(live) - debt,
            held: holds.iter().map(|h| h.amount).sum(),
            grants,
            holds,
        })
    }

    async fn journal(
        &self,
        account: &AccountId,
        page: PageRequest,
    ) -> Result<Page<Transaction>, StoreError> {
        let limit = page_limit(&page);
        let mut conn = self.pool.get().await?;
        let (rows, legs) = call!(
            conn,
            ledger_journal(account.to_string(), page.after.clone(), limit + 1)
        )
        .map_err(tx_error)?;
        Ok(paged(attach_legs(rows, legs)?, limit, |t| t.id.to_string()))
    }

    async fn snapshot(&self, account: &AccountId) -> Result<AccountSnapshot, StoreError> {
        let mut conn = self.pool.get().await?;
        let Some((debt, grants, holds, txns, legs)) =
            call!(conn, ledger_snapshot(account.to_string())).map_err(tx_error)?
        else {
            return Err(StoreError::NotFound);
        };
        snapshot_of(account.clone(), debt, grants, holds, txns, legs)
    }

    async fn expired_holds(
        &self,
        now: OffsetDateTime,
        after: Option<HoldId>,
        limit: u32,
    ) -> Result<Vec<(AccountId, HoldId)>, StoreError> {
        let mut conn = self.pool.get().await?;
        let after = after.map(|id| id.to_string());
        call!(
            conn,
            ledger_expired_holds(db::ts(now), after, i64::from(limit))
        )
        .map_err(tx_error)
    }
}

#[async_trait]
impl AccountStore for DieselStore {
    async fn create(&self, account: Account, user: User) -> Result<(), StoreError> {
        let account_row = AccountRow {
            id: account.id.to_string(),
            plan: account.plan.clone(),
            debt: 0,
            created_at: db::ts(account.created_at),
        };
        let user_row = UserRow::from_domain(&user);
        let _writer = self.pool.write_guard().await;
        self.retrying(|| {
            let (a, u) = (account_row.clone(), user_row.clone());
            async move {
                let mut conn = self.pool.get().await.map_err(TxError::Store)?;
                transaction_call!(conn, account_create(a, u))
            }
        })
        .await
        .inspect(|()| self.cache.changed(account.id.as_str()))
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        self.cache
            .get_or_load::<AccountSlot, _, _>(id.as_str(), async {
                let mut conn = self.pool.get().await?;
                call!(conn, account_get(id.to_string()))
                    .map_err(tx_error)?
                    .map(AccountRow::into_domain)
                    .transpose()
            })
            .await
    }

    async fn set_plan(&self, id: &AccountId, plan: &str) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let changed = call!(conn, account_set_plan(id.to_string(), plan.to_owned()));
        self.cache.changed(id.as_str());
        match changed.map_err(tx_error)? {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(conn, user_by(UserField::Id, id.to_string()))
            .map_err(tx_error)?
            .map(UserRow::into_domain)
            .transpose()
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(conn, user_by(UserField::Email, email.to_owned()))
            .map_err(tx_error)?
            .map(UserRow::into_domain)
            .transpose()
    }

    async fn user_by_subject(&self, subject: &str) -> Result<Option<User>, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(conn, user_by(UserField::Subject, subject.to_owned()))
            .map_err(tx_error)?
            .map(UserRow::into_domain)
            .transpose()
    }

    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        match call!(conn, user_update(UserRow::from_domain(user))).map_err(tx_error)? {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    async fn replace_password_hash(
        &self,
        user: &UserId,
        expected: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await?;
        let changed = call!(
            conn,
            user_password_swap(user.to_string(), expected.to_owned(), new.to_owned())
        )
        .map_err(tx_error)?;
        Ok(changed == 1)
    }

    async fn account_users(&self, account: &AccountId) -> Result<Vec<User>, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(conn, users_of_account(account.to_string()))
            .map_err(tx_error)?
            .into_iter()
            .map(UserRow::into_domain)
            .collect()
    }

    async fn list_users(
        &self,
        search: Option<String>,
        page: PageRequest,
    ) -> Result<Page<User>, StoreError> {
        let limit = page_limit(&page);
        let mut conn = self.pool.get().await?;
        let rows =
            call!(conn, users_list(search, page.after.clone(), limit + 1)).map_err(tx_error)?;
        let users = rows
            .into_iter()
            .map(UserRow::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paged(users, limit, |u| u.id.to_string()))
    }

    async fn accounts_due_allowance(
        &self,
        plan: String,
        reference: String,
        after: Option<AccountId>,
        limit: u32,
    ) -> Result<Vec<AccountId>, StoreError> {
        let mut conn = self.pool.get().await?;
        let after = after.map(|a| a.to_string());
        let ids = call!(
            conn,
            accounts_due_allowance(plan, reference, after, i64::from(limit))
        )
        .map_err(tx_error)?;
        ids.iter().map(|id| db::parse_id(id)).collect()
    }
}

#[async_trait]
impl QuotaStore for DieselStore {
    async fn usage(
        &self,
        account: &AccountId,
        meter: &str,
        window_start: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let mut conn = self.pool.get().await?;
        let used = call!(
            conn,
            quota_usage_get(account.to_string(), meter.to_owned(), db::ts(window_start))
        )
        .map_err(tx_error)?;
        Ok(db::credits(used))
    }

    async fn track(&self, request: TrackRequest) -> Result<TrackOutcome, StoreError> {
        self.track_many(vec![request])
            .await?
            .pop()
            .ok_or_else(|| StoreError::Other("a batch of one gave no outcome".into()))
    }

    async fn track_many(
        &self,
        requests: Vec<TrackRequest>,
    ) -> Result<Vec<TrackOutcome>, StoreError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let _writer = self.pool.write_guard().await;
        self.retrying(|| {
            let requests = requests.clone();
            let now = db::ts(self.clock.now());
            async move {
                let mut conn = self.pool.get().await.map_err(TxError::Store)?;
                transaction_call!(conn, quota_track_many(requests, now))
            }
        })
        .await
    }
}

#[async_trait]
impl SubscriptionStore for DieselStore {
    async fn current(&self, account: &AccountId) -> Result<Option<Subscription>, StoreError> {
        self.cache
            .get_or_load::<SubscriptionSlot, _, _>(account.as_str(), self.current_uncached(account))
            .await
    }

    async fn current_uncached(
        &self,
        account: &AccountId,
    ) -> Result<Option<Subscription>, StoreError> {
        self.subscription_by(SubscriptionField::LiveForAccount, account.to_string())
            .await
    }

    async fn trialed(&self, account: &AccountId) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(conn, subscription_trialed(account.to_string())).map_err(tx_error)
    }

    async fn get(&self, id: &SubscriptionId) -> Result<Option<Subscription>, StoreError> {
        self.subscription_by(SubscriptionField::Id, id.to_string())
            .await
    }

    async fn by_external_id(&self, external_id: &str) -> Result<Option<Subscription>, StoreError> {
        self.subscription_by(SubscriptionField::External, external_id.to_owned())
            .await
    }

    async fn save(
        &self,
        subscription: &Subscription,
        expected: Option<Expected>,
    ) -> Result<(), StoreError> {
        let row = SubscriptionRow::from_domain(subscription);
        let expected = expected.map(|e| (e.status.as_str().to_owned(), e.version));
        let _writer = self.pool.write_guard().await;
        let mut conn = self.pool.get().await?;
        let saved = call!(conn, subscription_save(row, expected));
        self.cache.changed(subscription.account.as_str());
        if saved.map_err(tx_error)? {
            Ok(())
        } else {
            Err(StoreError::Conflict(Conflict::ChangedMeanwhile))
        }
    }

    async fn past_due_before(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Subscription>, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(
            conn,
            subscriptions_past_due(db::ts(before), i64::from(limit))
        )
        .map_err(tx_error)?
        .into_iter()
        .map(SubscriptionRow::into_domain)
        .collect()
    }
}

#[async_trait]
impl RetentionStore for DieselStore {
    async fn prune_idempotency(&self, before: OffsetDateTime) -> Result<Pruned, StoreError> {
        let _writer = self.pool.write_guard().await;
        let mut conn = self.pool.get().await?;
        let (ledger_keys, api_keys, quota_events) =
            call!(conn, prune_idempotency(db::ts(before))).map_err(tx_error)?;
        Ok(Pruned {
            ledger_keys,
            api_keys,
            quota_events,
        })
    }
}

#[async_trait]
impl IdempotencyStore for DieselStore {
    async fn claim(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
    ) -> Result<KeyState, StoreError> {
        let now = db::ts(self.clock.now());
        let mut conn = self.pool.get().await?;
        let held = call!(
            conn,
            api_key_claim(
                scope.to_owned(),
                key.to_owned(),
                fingerprint.to_owned(),
                now
            )
        )
        .map_err(tx_error)?;
        Ok(match held {
            None => KeyState::Claimed,
            Some((stored, _, _)) if stored != fingerprint => KeyState::Conflict,
            Some((_, Some(status), Some(body))) => KeyState::Completed {
                response: StoredResponse {
                    status: u16::try_from(status).unwrap_or(500),
                    body,
                },
            },
            Some(_) => KeyState::InProgress,
        })
    }

    async fn complete(
        &self,
        scope: &str,
        key: &str,
        response: StoredResponse,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let changed = call!(
            conn,
            api_key_complete(
                scope.to_owned(),
                key.to_owned(),
                i32::from(response.status),
                response.body
            )
        )
        .map_err(tx_error)?;
        if changed == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    async fn release(&self, scope: &str, key: &str) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        call!(conn, api_key_release(scope.to_owned(), key.to_owned())).map_err(tx_error)?;
        Ok(())
    }
}

#[async_trait]
impl WebhookEventStore for DieselStore {
    async fn record(&self, event: WebhookEvent) -> Result<bool, StoreError> {
        let row = WebhookRow::from_domain(&event)?;
        let mut conn = self.pool.get().await?;
        call!(conn, webhook_record(row)).map_err(tx_error)
    }

    async fn mark(
        &self,
        external_id: &str,
        status: WebhookStatus,
        error: Option<String>,
        retry_at: Option<OffsetDateTime>,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let retry_at = retry_at.map(db::ts);
        match call!(
            conn,
            webhook_mark(external_id.to_owned(), enum_text(status), error, retry_at)
        )
        .map_err(tx_error)?
        {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    async fn event(&self, external_id: &str) -> Result<Option<WebhookEvent>, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(conn, webhook_by_external_id(external_id.to_owned()))
            .map_err(tx_error)?
            .map(WebhookRow::into_domain)
            .transpose()
    }

    async fn requeue_ignored_mentioning(&self, needle: &str) -> Result<usize, StoreError> {
        let escaped: String = needle
            .chars()
            .flat_map(|c| match c {
                '%' | '_' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        let _writer = self.pool.write_guard().await;
        let mut conn = self.pool.get().await?;
        call!(conn, webhook_requeue_mentioning(format!("%\"{escaped}\"%"))).map_err(tx_error)
    }

    async fn retry(&self, external_id: &str) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await?;
        Ok(call!(conn, webhook_retry(external_id.to_owned())).map_err(tx_error)? == 1)
    }

    async fn due(
        &self,
        now: OffsetDateTime,
        max_attempts: u32,
        limit: u32,
    ) -> Result<Vec<WebhookEvent>, StoreError> {
        let mut conn = self.pool.get().await?;
        let max_attempts = i32::try_from(max_attempts).unwrap_or(i32::MAX);
        call!(
            conn,
            webhooks_due(db::ts(now), max_attempts, i64::from(limit))
        )
        .map_err(tx_error)?
        .into_iter()
        .map(WebhookRow::into_domain)
        .collect()
    }

    async fn with_status(
        &self,
        status: WebhookStatus,
        page: PageRequest,
    ) -> Result<Page<WebhookEvent>, StoreError> {
        let limit = page_limit(&page);
        let mut conn = self.pool.get().await?;
        let rows = call!(
            conn,
            webhooks_with_status(enum_text(status), page.after.clone(), limit + 1)
        )
        .map_err(tx_error)?;
        let events = rows
            .into_iter()
            .map(WebhookRow::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paged(events, limit, |e| e.id.to_string()))
    }
}

#[async_trait]
impl AuditStore for DieselStore {
    /// Queued for the audit writer: see [`crate::audit_writer`].
    async fn append(&self, record: &AuditRecord) -> Result<(), StoreError> {
        self.queue_audit(record).await
    }

    async fn list(
        &self,
        target: Option<String>,
        page: PageRequest,
    ) -> Result<Page<AuditRecord>, StoreError> {
        self.flush_audit().await;
        let limit = page_limit(&page);
        let mut conn = self.pool.get().await?;
        let rows =
            call!(conn, audit_list(target, page.after.clone(), limit + 1)).map_err(tx_error)?;
        let records = rows
            .into_iter()
            .map(AuditRow::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paged(records, limit, |r| r.id.to_string()))
    }
}

#[async_trait]
impl SessionStore for DieselStore {
    async fn issue(&self, token: &RefreshToken) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        call!(conn, session_issue(token.clone())).map_err(tx_error)
    }

    async fn rotate(
        &self,
        presented_hash: &str,
        next: &RefreshToken,
        now: OffsetDateTime,
    ) -> Result<Rotation, StoreError> {
        let _writer = self.pool.write_guard().await;
        self.retrying(|| {
            let (hash, next) = (presented_hash.to_owned(), next.clone());
            async move {
                let mut conn = self.pool.get().await.map_err(TxError::Store)?;
                transaction_call!(conn, session_rotate(hash, next, db::ts(now)))
            }
        })
        .await
    }

    async fn revoke_family_of(
        &self,
        token_hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(
            conn,
            session_revoke_family_of(token_hash.to_owned(), db::ts(now))
        )
        .map_err(tx_error)
    }

    async fn revoke_user(&self, user: &UserId, now: OffsetDateTime) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        call!(conn, session_revoke_user(user.to_string(), db::ts(now))).map_err(tx_error)
    }

    async fn live_session(
        &self,
        family: &str,
    ) -> Result<Option<(UserId, billing_core::records::Role)>, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(conn, session_live(family.to_owned()))
            .map_err(tx_error)?
            .map(|(user, role)| Ok((db::parse_id(&user)?, db::parse_enum(&role)?)))
            .transpose()
    }

    async fn revoke_one_time(
        &self,
        user: &UserId,
        purpose: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        call!(
            conn,
            one_time_revoke(user.to_string(), purpose.to_owned(), db::ts(now))
        )
        .map_err(tx_error)
    }

    async fn issue_one_time(
        &self,
        user: &UserId,
        purpose: &str,
        token_hash: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let id = format!("ott_{}", self.ids.ulid().encode());
        let mut conn = self.pool.get().await?;
        call!(
            conn,
            one_time_issue(
                id,
                user.to_string(),
                purpose.to_owned(),
                token_hash.to_owned(),
                db::ts(expires_at),
                db::ts(now)
            )
        )
        .map_err(tx_error)
    }

    async fn consume_one_time(
        &self,
        token_hash: &str,
        purpose: &str,
        now: OffsetDateTime,
    ) -> Result<Option<UserId>, StoreError> {
        let _writer = self.pool.write_guard().await;
        let user = self
            .retrying(|| {
                let (hash, purpose) = (token_hash.to_owned(), purpose.to_owned());
                async move {
                    let mut conn = self.pool.get().await.map_err(TxError::Store)?;
                    transaction_call!(conn, one_time_consume(hash, purpose, db::ts(now)))
                }
            })
            .await?;
        user.as_deref().map(db::parse_id).transpose()
    }
}

#[async_trait]
impl UserDataStore for DieselStore {
    async fn preferences(&self, user: &UserId) -> Result<Option<serde_json::Value>, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(conn, preferences_get(user.to_string()))
            .map_err(tx_error)?
            .map(|text| serde_json::from_str(&text).map_err(|e| StoreError::Other(e.to_string())))
            .transpose()
    }

    async fn set_preferences(
        &self,
        user: &UserId,
        preferences: serde_json::Value,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let _writer = self.pool.write_guard().await;
        self.retrying(|| {
            let (user, data) = (user.to_string(), preferences.to_string());
            async move {
                let mut conn = self.pool.get().await.map_err(TxError::Store)?;
                transaction_call!(conn, preferences_set(user, data, db::ts(now)))
            }
        })
        .await
    }

    async fn save_item(&self, item: &SavedItem) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        call!(
            conn,
            item_save(crate::userdata::SavedItemRow::from_domain(item))
        )
        .map_err(tx_error)
    }

    async fn items(
        &self,
        user: &UserId,
        kind: Option<String>,
        page: PageRequest,
    ) -> Result<Page<SavedItem>, StoreError> {
        let limit = page_limit(&page);
        let mut conn = self.pool.get().await?;
        let rows = call!(
            conn,
            items_list(user.to_string(), kind, page.after.clone(), limit + 1)
        )
        .map_err(tx_error)?;
        let items = rows
            .into_iter()
            .map(crate::userdata::SavedItemRow::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paged(items, limit, |i| i.id.clone()))
    }

    async fn item(&self, user: &UserId, id: &str) -> Result<Option<SavedItem>, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(conn, item_get(user.to_string(), id.to_owned()))
            .map_err(tx_error)?
            .map(crate::userdata::SavedItemRow::into_domain)
            .transpose()
    }

    async fn delete_item(&self, user: &UserId, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await?;
        Ok(call!(conn, item_delete(user.to_string(), id.to_owned())).map_err(tx_error)? == 1)
    }
}

#[async_trait]
impl ApiKeyStore for DieselStore {
    async fn create_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        call!(
            conn,
            key_create(crate::userdata::ApiKeyRow::from_domain(key))
        )
        .map_err(tx_error)
    }

    async fn keys(&self, user: &UserId) -> Result<Vec<ApiKey>, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(conn, keys_list(user.to_string()))
            .map_err(tx_error)?
            .into_iter()
            .map(crate::userdata::ApiKeyRow::into_domain)
            .collect()
    }

    async fn live_key(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(conn, key_live(key_hash.to_owned()))
            .map_err(tx_error)?
            .map(crate::userdata::ApiKeyRow::into_domain)
            .transpose()
    }

    async fn revoke_user_keys(
        &self,
        user: &UserId,
        now: OffsetDateTime,
    ) -> Result<usize, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(conn, keys_revoke_user(user.to_string(), db::ts(now))).map_err(tx_error)
    }

    async fn revoke_key(
        &self,
        user: &UserId,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await?;
        Ok(call!(
            conn,
            key_revoke(user.to_string(), id.to_owned(), db::ts(now))
        )
        .map_err(tx_error)?
            == 1)
    }
}
