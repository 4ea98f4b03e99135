//! How a ledger request runs inside its transaction, alone or in a group.
//!
//! A request takes three steps, each one round trip on PostgreSQL: lock the account row;
//! read what the decision needs (the idempotency record, the live grants, the hold or the
//! refunded transaction), sent together; then write the decision and its idempotency record,
//! also sent together. PostgreSQL runs pipelined statements one after the other, but their
//! order on the wire is not guaranteed (a statement that must be prepared first goes out
//! later), which is why the ledger's foreign keys are checked at COMMIT (migration
//! `deferred_ledger_keys`) and why the lock is its own step: every read must see the
//! account as it is once locked. SQLite sends the same statements one by one.
//!
//! A group (see [`crate::group_commit`]) locks all its accounts at once, in id order. If no
//! request in it resolves a hold or refunds, it reads every account's grants and every
//! idempotency record once, decides each request in memory against what the ones before it
//! left ([`BatchView`]), and writes everything at once ([`Write::coalesce`]; on PostgreSQL
//! the rows of each kind in one statement, see [`Bulk`]); otherwise it
//! runs each request's reads and writes in turn. Either way each request sees the ones
//! before it, exactly as if they had committed one by one.

use billing_core::ids::GrantId;
use billing_core::ledger::{Decision, Fingerprint, LedgerError, LedgerRequest, Receipt};
use billing_core::ports::{LedgerOutcome, StoreError};

use crate::db::{signed, ts};
use crate::ledger::{GrantRow, HoldRow, LegRow, TxnRow};

/// What one request reads once its account is locked.
pub(crate) struct ReadArgs {
    pub account: String,
    pub key: String,
    /// The hold the command resolves.
    pub hold: Option<String>,
    /// The transaction the command refunds.
    pub refund: Option<String>,
    /// Whether to read the debt too: in a group, the lock was taken before earlier requests
    /// changed it.
    pub with_debt: bool,
}

/// What [`ReadArgs`] asked for.
pub(crate) struct LedgerReads {
    pub debt: Option<i64>,
    /// The idempotency record: fingerprint and outcome.
    pub stored: Option<(String, String)>,
    pub grants: Vec<GrantRow>,
    pub hold: Option<HoldRow>,
    pub refund: Option<TxnRow>,
}

/// One statement of a decision's writes.
#[derive(Debug)]
pub(crate) enum Write {
    Grant(GrantRow),
    Hold(HoldRow),
    /// A pending hold's resolution (exactly one pending row must change).
    ResolveHold {
        id: String,
        status: &'static str,
        captured: i64,
        resolved_at: Option<i64>,
    },
    Txn(TxnRow),
    Leg(LegRow),
    /// `remaining += delta` on an existing grant of the account (exactly one row).
    GrantDelta {
        id: String,
        account: String,
        delta: i64,
    },
    /// `debt += delta`.
    Debt {
        account: String,
        delta: i64,
    },
    /// `refunded += amount` on a journal entry.
    Refunded {
        txn: String,
        amount: i64,
    },
    /// The idempotency record.
    Outcome {
        account: String,
        key: String,
        fingerprint: String,
        outcome: String,
        at: i64,
    },
}

/// The changes a decision makes to grants that existed before it (a new grant is written
/// with its final `remaining`, so its own legs are not applied again).
fn existing_grant_deltas(d: &Decision) -> impl Iterator<Item = (GrantId, i64)> + '_ {
    d.grant_deltas()
        .into_iter()
        .filter(|(grant, delta)| *delta != 0 && !d.new_grants.iter().any(|g| &g.id == grant))
}

/// What a stored idempotency record means for a request with this fingerprint: the same
/// request again replays its outcome; another under the same key is a conflict.
pub(crate) fn replay(
    stored_fingerprint: &str,
    stored_outcome: &str,
    fingerprint: &Fingerprint,
) -> Result<LedgerOutcome, StoreError> {
    if stored_fingerprint != fingerprint.as_str() {
        return Ok(LedgerOutcome::Conflict);
    }
    let outcome: Result<Receipt, LedgerError> = serde_json::from_str(stored_outcome)
        .map_err(|e| StoreError::Other(format!("stored outcome: {e}")))?;
    Ok(LedgerOutcome::Replayed(outcome))
}

impl Write {
    /// The idempotency record of a request's outcome, and the outcome as stored.
    pub(crate) fn outcome(
        request: &LedgerRequest,
        fingerprint: &Fingerprint,
        outcome: &Result<Receipt, LedgerError>,
        now: time::OffsetDateTime,
    ) -> Result<(Self, String), StoreError> {
        let json = serde_json::to_string(outcome)
            .map_err(|e| StoreError::Other(format!("outcome: {e}")))?;
        let write = Self::Outcome {
            account: request.account.to_string(),
            key: request.key.as_str().to_owned(),
            fingerprint: fingerprint.as_str().to_owned(),
            outcome: json.clone(),
            at: ts(now),
        };
        Ok((write, json))
    }

    /// The statements that apply a decision, in the order `Decision` documents.
    pub(crate) fn of(d: &Decision, account: &str) -> Result<Vec<Self>, StoreError> {
        let mut writes: Vec<Self> = d
            .new_grants
            .iter()
            .map(|g| Self::Grant(GrantRow::from_domain(g)))
            .collect();
        if let Some(hold) = &d.new_hold {
            writes.push(Self::Hold(HoldRow::from_domain(hold)?));
        }
        if let Some(hold) = &d.resolved_hold {
            writes.push(Self::ResolveHold {
                id: hold.id.to_string(),
                status: hold.status.as_str(),
                captured: signed(hold.captured),
                resolved_at: hold.resolved_at.map(ts),
            });
        }
        for txn in &d.transactions {
            writes.push(Self::Txn(TxnRow::from_domain(txn)));
        }
        for txn in &d.transactions {
            for (i, leg) in txn.legs.iter().enumerate() {
                writes.push(Self::Leg(LegRow {
                    txn_id: txn.id.to_string(),
                    position: i32::try_from(i).unwrap_or(i32::MAX),
                    account_id: txn.account.to_string(),
                    grant_id: leg.grant.as_ref().map(ToString::to_string),
                    delta: leg.delta,
                }));
            }
        }
        for (grant, delta) in existing_grant_deltas(d) {
            writes.push(Self::GrantDelta {
                id: grant.to_string(),
                account: account.to_owned(),
                delta,
            });
        }
        let debt = d.debt_delta();
        if debt != 0 {
            writes.push(Self::Debt {
                account: account.to_owned(),
                delta: debt,
            });
        }
        if let Some((txn, amount)) = &d.refunded {
            writes.push(Self::Refunded {
                txn: txn.to_string(),
                amount: signed(*amount),
            });
        }
        Ok(writes)
    }
}

impl Write {
    /// A batch's writes with the changes to one row merged: one `remaining` update per grant
    /// and one debt update per account, however many requests moved them, and a grant both
    /// created and spent in the batch inserted with what is left of it. Fewer statements,
    /// and none that updates a row whose insert is in the same pipeline.
    pub(crate) fn coalesce(writes: Vec<Self>) -> Vec<Self> {
        use std::collections::BTreeMap;
        let mut grants: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut debts: BTreeMap<String, i64> = BTreeMap::new();
        let mut merged = Vec::with_capacity(writes.len());
        for write in writes {
            match write {
                Self::GrantDelta { id, account, delta } => {
                    *grants.entry((id, account)).or_default() += delta;
                }
                Self::Debt { account, delta } => *debts.entry(account).or_default() += delta,
                other => merged.push(other),
            }
        }
        for write in &mut merged {
            if let Self::Grant(row) = write
                && let Some(delta) = grants.remove(&(row.id.clone(), row.account_id.clone()))
            {
                row.remaining += delta;
            }
        }
        merged.extend(
            grants
                .into_iter()
                .filter(|(_, delta)| *delta != 0)
                .map(|((id, account), delta)| Self::GrantDelta { id, account, delta }),
        );
        merged.extend(
            debts
                .into_iter()
                .filter(|(_, delta)| *delta != 0)
                .map(|(account, delta)| Self::Debt { account, delta }),
        );
        merged
    }
}

/// A decision's (or a group's) writes as PostgreSQL sends them: the rows of each kind
/// that come in numbers in one statement (see [`crate::bulk`]), the rest one by one.
/// Statements go out in this order: the ones in `first`, journal transactions, legs, grant
/// changes, debt changes, the ones in `last`, idempotency records. Nothing here reads what
/// an earlier statement of the same writes changed, and the journal's foreign keys are
/// checked at COMMIT, so the order is only the natural one.
#[derive(Default)]
pub(crate) struct Bulk {
    /// New grants and holds, and hold resolutions.
    pub first: Vec<Write>,
    pub txns: crate::bulk::InsertTxns,
    pub legs: crate::bulk::InsertLegs,
    pub grants: crate::bulk::MoveGrants,
    pub debts: crate::bulk::MoveDebts,
    /// Refunded amounts.
    pub last: Vec<Write>,
    pub outcomes: crate::bulk::InsertOutcomes,
}

impl Bulk {
    /// Sorts the writes into their statements, moving each row's values, not copying them.
    pub(crate) fn of(writes: Vec<Write>) -> Self {
        let mut bulk = Self::default();
        for write in writes {
            match write {
                Write::Grant(_) | Write::Hold(_) | Write::ResolveHold { .. } => {
                    bulk.first.push(write);
                }
                Write::Txn(row) => bulk.txns.push(row),
                Write::Leg(row) => bulk.legs.push(row),
                Write::GrantDelta { id, account, delta } => bulk.grants.push(id, account, delta),
                Write::Debt { account, delta } => bulk.debts.push(account, delta),
                Write::Refunded { .. } => bulk.last.push(write),
                Write::Outcome {
                    account,
                    key,
                    fingerprint,
                    outcome,
                    at,
                } => bulk.outcomes.push(account, key, fingerprint, outcome, at),
            }
        }
        bulk
    }
}

/// An account as a batch sees it: its debt and live grants, kept up to date in memory as
/// each request of the batch is decided.
pub(crate) struct BatchView {
    pub debt: i64,
    pub grants: Vec<billing_core::ledger::Grant>,
}

impl BatchView {
    /// What the decision changes, as the database will have it once its writes are applied:
    /// grants' remaining moved by their legs, new grants added (with their final remaining),
    /// spent grants dropped, the debt moved. `None` if the decision names a grant the view
    /// does not hold (the batch then gives way to one request at a time).
    pub(crate) fn apply(&mut self, d: &Decision) -> Option<()> {
        for (grant, delta) in existing_grant_deltas(d) {
            let live = self.grants.iter_mut().find(|g| g.id == grant)?;
            live.remaining = u64::try_from(signed(live.remaining).checked_add(delta)?).ok()?;
        }
        self.grants.extend(d.new_grants.iter().cloned());
        self.grants.retain(|g| g.remaining > 0);
        self.debt = self.debt.checked_add(d.debt_delta())?;
        Some(())
    }
}

/// Of the errors of statements sent together, the one to report: after the first failure
/// PostgreSQL refuses the rest with "current transaction is aborted", which says nothing.
pub(crate) fn first_cause(errors: Vec<crate::db::TxError>) -> Option<crate::db::TxError> {
    let aborted = |e: &crate::db::TxError| {
        matches!(e, crate::db::TxError::Db(diesel::result::Error::DatabaseError(_, info))
            if info.message().contains("current transaction is aborted"))
    };
    let mut fallback = None;
    for err in errors {
        if !aborted(&err) {
            return Some(err);
        }
        fallback.get_or_insert(err);
    }
    fallback
}

/// The ledger's execution, stamped into `sql::pg` and `sql::sqlite` beside their own
/// `lock_account`, `lock_accounts`, `ledger_reads` and `ledger_writes`.
macro_rules! ledger_exec {
    () => {
        use crate::ledger_exec::{LedgerReads, ReadArgs, Write};

        fn ledger_corrupt(what: &str, err: impl std::fmt::Display) -> TxError {
            TxError::Store(billing_core::ports::StoreError::Other(format!(
                "{what}: {err}"
            )))
        }

        /// The statements [`ledger_reads`] sends, each on any connection of this backend
        /// (a shared PostgreSQL connection pipelines them).
        mod read {
            use super::*;
            use crate::schema::{grants, holds, ledger_idempotency, ledger_transactions};
            use diesel_async::AsyncConnectionCore;

            pub(super) async fn debt<C>(c: &mut C, account: &str) -> QueryResult<Option<i64>>
            where
                C: AsyncConnectionCore<Backend = Db> + Send,
            {
                accounts::table
                    .find(account.to_owned())
                    .select(accounts::debt)
                    .first::<i64>(c)
                    .await
                    .optional()
            }

            pub(super) async fn stored<C>(
                c: &mut C,
                account: &str,
                key: &str,
            ) -> QueryResult<Option<(String, String)>>
            where
                C: AsyncConnectionCore<Backend = Db> + Send,
            {
                ledger_idempotency::table
                    .find((account.to_owned(), key.to_owned()))
                    .select((ledger_idempotency::fingerprint, ledger_idempotency::outcome))
                    .first(c)
                    .await
                    .optional()
            }

            pub(super) async fn hold<C>(
                c: &mut C,
                account: &str,
                hold: Option<&str>,
            ) -> QueryResult<Option<HoldRow>>
            where
                C: AsyncConnectionCore<Backend = Db> + Send,
            {
                let Some(hold) = hold else { return Ok(None) };
                holds::table
                    .find(hold.to_owned())
                    .filter(holds::account_id.eq(account.to_owned()))
                    .select(HoldRow::as_select())
                    .first(c)
                    .await
                    .optional()
            }

            /// The live grants of several accounts.
            pub(super) async fn grants_of<C>(
                c: &mut C,
                accounts: &[String],
            ) -> QueryResult<Vec<GrantRow>>
            where
                C: AsyncConnectionCore<Backend = Db> + Send,
            {
                grants::table
                    .filter(grants::account_id.eq_any(accounts.to_vec()))
                    .filter(grants::remaining.gt(0))
                    .select(GrantRow::as_select())
                    .load(c)
                    .await
            }

            pub(super) async fn refund<C>(
                c: &mut C,
                account: &str,
                txn: Option<&str>,
            ) -> QueryResult<Option<TxnRow>>
            where
                C: AsyncConnectionCore<Backend = Db> + Send,
            {
                let Some(txn) = txn else { return Ok(None) };
                ledger_transactions::table
                    .find(txn.to_owned())
                    .filter(ledger_transactions::account_id.eq(account.to_owned()))
                    .select(TxnRow::as_select())
                    .first(c)
                    .await
                    .optional()
            }
        }

        /// One write of a decision, on any connection of this backend.
        async fn ledger_write_one<C>(c: &mut C, write: &Write) -> Result<(), TxError>
        where
            C: diesel_async::AsyncConnectionCore<Backend = Db> + Send,
        {
            use crate::schema::{
                grants, holds, ledger_idempotency, ledger_legs, ledger_transactions,
            };
            match write {
                Write::Grant(row) => {
                    diesel::insert_into(grants::table)
                        .values(row.clone())
                        .execute(c)
                        .await?;
                }
                Write::Hold(row) => {
                    diesel::insert_into(holds::table)
                        .values(row.clone())
                        .execute(c)
                        .await?;
                }
                Write::ResolveHold {
                    id,
                    status,
                    captured,
                    resolved_at,
                } => {
                    let changed = diesel::update(
                        holds::table
                            .find(id.clone())
                            .filter(holds::status.eq("pending")),
                    )
                    .set((
                        holds::status.eq(*status),
                        holds::captured.eq(*captured),
                        holds::resolved_at.eq(*resolved_at),
                    ))
                    .execute(c)
                    .await?;
                    if changed != 1 {
                        return Err(ledger_corrupt(
                            "hold",
                            format!("{id} was resolved concurrently"),
                        ));
                    }
                }
                Write::Txn(row) => {
                    diesel::insert_into(ledger_transactions::table)
                        .values(row.clone())
                        .execute(c)
                        .await?;
                }
                Write::Leg(row) => {
                    diesel::insert_into(ledger_legs::table)
                        .values(row.clone())
                        .execute(c)
                        .await?;
                }
                Write::GrantDelta { id, account, delta } => {
                    let changed = diesel::update(
                        grants::table
                            .find(id.clone())
                            .filter(grants::account_id.eq(account.clone())),
                    )
                    .set(grants::remaining.eq(grants::remaining + *delta))
                    .execute(c)
                    .await?;
                    if changed != 1 {
                        return Err(ledger_corrupt("grant", format!("{id} is missing")));
                    }
                }
                Write::Debt { account, delta } => {
                    diesel::update(accounts::table.find(account.clone()))
                        .set(accounts::debt.eq(accounts::debt + *delta))
                        .execute(c)
                        .await?;
                }
                Write::Refunded { txn, amount } => {
                    diesel::update(ledger_transactions::table.find(txn.clone()))
                        .set(
                            ledger_transactions::refunded
                                .eq(ledger_transactions::refunded + *amount),
                        )
                        .execute(c)
                        .await?;
                }
                Write::Outcome {
                    account,
                    key,
                    fingerprint,
                    outcome,
                    at,
                } => {
                    diesel::insert_into(ledger_idempotency::table)
                        .values((
                            ledger_idempotency::account_id.eq(account.clone()),
                            ledger_idempotency::key.eq(key.clone()),
                            ledger_idempotency::fingerprint.eq(fingerprint.clone()),
                            ledger_idempotency::outcome.eq(outcome.clone()),
                            ledger_idempotency::created_at.eq(*at),
                        ))
                        .execute(c)
                        .await?;
                }
            }
            Ok(())
        }

        /// The whole of one ledger request, inside the caller's transaction.
        pub(crate) async fn ledger_execute(
            c: &mut Conn,
            request: billing_core::ledger::LedgerRequest,
            fingerprint: billing_core::ledger::Fingerprint,
            now: time::OffsetDateTime,
            ids: std::sync::Arc<dyn billing_core::ports::IdGenerator>,
        ) -> Result<billing_core::ports::LedgerOutcome, TxError> {
            ledger_execute_in(c, &request, &fingerprint, now, &*ids, false).await
        }

        /// Several ledger requests in one transaction: every account locked first, in id
        /// order, then each request in turn. One failure fails them all (the caller then
        /// runs each alone).
        pub(crate) async fn ledger_execute_group(
            c: &mut Conn,
            requests: Vec<(
                billing_core::ledger::LedgerRequest,
                billing_core::ledger::Fingerprint,
            )>,
            now: time::OffsetDateTime,
            ids: std::sync::Arc<dyn billing_core::ports::IdGenerator>,
        ) -> Result<Vec<billing_core::ports::LedgerOutcome>, TxError> {
            let mut accounts: Vec<String> = requests
                .iter()
                .map(|(r, _)| r.account.to_string())
                .collect();
            accounts.sort();
            accounts.dedup();
            let debts = lock_accounts(c, &accounts).await?;
            let simple = requests
                .iter()
                .all(|(r, _)| r.command.hold().is_none() && r.command.refund_target().is_none());
            if simple {
                return ledger_execute_batch(c, &requests, debts, now, &*ids).await;
            }
            let mut outcomes = Vec::with_capacity(requests.len());
            for (request, fingerprint) in &requests {
                outcomes.push(ledger_execute_in(c, request, fingerprint, now, &*ids, true).await?);
            }
            Ok(outcomes)
        }

        /// A group in which no request resolves a hold or refunds: each account's grants and
        /// every request's idempotency record are read once, all together; each request is
        /// decided in turn against the view the ones before it left (in memory, exactly as
        /// the database will have it); then every write goes out at once. Two round trips
        /// after the lock, however many requests.
        async fn ledger_execute_batch(
            c: &mut Conn,
            requests: &[(
                billing_core::ledger::LedgerRequest,
                billing_core::ledger::Fingerprint,
            )],
            debts: Vec<(String, i64)>,
            now: time::OffsetDateTime,
            ids: &dyn billing_core::ports::IdGenerator,
        ) -> Result<Vec<billing_core::ports::LedgerOutcome>, TxError> {
            use crate::ledger_exec::BatchView;
            use billing_core::ledger::{LedgerView, decide};
            use billing_core::ports::{LedgerOutcome, StoreError};
            use std::collections::HashMap;
            let accounts: Vec<String> = debts.iter().map(|(a, _)| a.clone()).collect();
            let keys: Vec<(String, String)> = requests
                .iter()
                .map(|(r, _)| (r.account.to_string(), r.key.as_str().to_owned()))
                .collect();
            let (grant_rows, stored_rows) = ledger_batch_reads(c, &accounts, &keys).await?;
            let mut views: HashMap<String, BatchView> = debts
                .into_iter()
                .map(|(account, debt)| {
                    (
                        account,
                        BatchView {
                            debt,
                            grants: Vec::new(),
                        },
                    )
                })
                .collect();
            for row in grant_rows {
                let grant = row.into_domain()?;
                if let Some(view) = views.get_mut(grant.account.as_str()) {
                    view.grants.push(grant);
                }
            }
            // (account, key) → (fingerprint, outcome): stored ones, then this batch's own.
            let mut seen: HashMap<(String, String), (String, String)> = keys
                .into_iter()
                .zip(stored_rows)
                .filter_map(|(key, stored)| stored.map(|found| (key, found)))
                .collect();
            let mut writes = Vec::new();
            let mut outcomes = Vec::with_capacity(requests.len());
            for (request, fingerprint) in requests {
                let account = request.account.to_string();
                let key = (account.clone(), request.key.as_str().to_owned());
                if let Some((stored_fingerprint, outcome)) = seen.get(&key) {
                    outcomes.push(crate::ledger_exec::replay(
                        stored_fingerprint,
                        outcome,
                        fingerprint,
                    )?);
                    continue;
                }
                let Some(view) = views.get_mut(&account) else {
                    return Err(TxError::Store(StoreError::NotFound));
                };
                let ledger_view = LedgerView {
                    account: request.account.clone(),
                    grants: view.grants.clone(),
                    debt: crate::db::credits(view.debt),
                    hold: None,
                    refund_target: None,
                    hold_sources: Vec::new(),
                };
                let outcome = match decide(&ledger_view, &request.command, request.policy, now, ids)
                {
                    Ok(decision) => {
                        writes.extend(Write::of(&decision, &account)?);
                        if view.apply(&decision).is_none() {
                            return Err(ledger_corrupt(
                                "batch",
                                "a decision left the batch's view",
                            ));
                        }
                        Ok(decision.receipt)
                    }
                    Err(refusal) => Err(refusal),
                };
                let (record, json) = Write::outcome(request, fingerprint, &outcome, now)?;
                writes.push(record);
                seen.insert(key, (fingerprint.as_str().to_owned(), json));
                outcomes.push(LedgerOutcome::Executed(outcome));
            }
            ledger_writes(c, Write::coalesce(writes)).await?;
            Ok(outcomes)
        }

        /// One request: lock (unless `locked`), read, decide, write.
        async fn ledger_execute_in(
            c: &mut Conn,
            request: &billing_core::ledger::LedgerRequest,
            fingerprint: &billing_core::ledger::Fingerprint,
            now: time::OffsetDateTime,
            ids: &dyn billing_core::ports::IdGenerator,
            locked: bool,
        ) -> Result<billing_core::ports::LedgerOutcome, TxError> {
            use billing_core::ledger::{LedgerView, decide};
            use billing_core::ports::{LedgerOutcome, StoreError};
            let account = request.account.as_str();
            let debt = if locked {
                None
            } else {
                match lock_account(c, account).await? {
                    Some(debt) => Some(debt),
                    None => return Err(TxError::Store(StoreError::NotFound)),
                }
            };
            let reads = ledger_reads(
                c,
                &ReadArgs {
                    account: account.to_owned(),
                    key: request.key.as_str().to_owned(),
                    hold: request.command.hold().map(ToString::to_string),
                    refund: request.command.refund_target().map(ToString::to_string),
                    with_debt: locked,
                },
            )
            .await?;
            let Some(debt) = debt.or(reads.debt) else {
                return Err(TxError::Store(StoreError::NotFound));
            };
            if let Some((stored_fingerprint, outcome)) = reads.stored {
                return Ok(crate::ledger_exec::replay(
                    &stored_fingerprint,
                    &outcome,
                    fingerprint,
                )?);
            }
            let hold = reads.hold.map(HoldRow::into_domain).transpose()?;
            let hold_sources = match &hold {
                Some(hold) => load_hold_sources(c, account, hold).await?,
                None => Vec::new(),
            };
            let view = LedgerView {
                account: request.account.clone(),
                grants: reads
                    .grants
                    .into_iter()
                    .map(GrantRow::into_domain)
                    .collect::<Result<_, _>>()?,
                debt: crate::db::credits(debt),
                hold,
                refund_target: reads
                    .refund
                    .map(|row| row.into_domain(Vec::new()))
                    .transpose()?,
                hold_sources,
            };
            let (outcome, mut writes) =
                match decide(&view, &request.command, request.policy, now, ids) {
                    Ok(decision) => {
                        let writes = Write::of(&decision, account)?;
                        (Ok(decision.receipt), writes)
                    }
                    Err(refusal) => (Err(refusal), Vec::new()),
                };
            writes.push(Write::outcome(request, fingerprint, &outcome, now)?.0);
            ledger_writes(c, writes).await?;
            Ok(LedgerOutcome::Executed(outcome))
        }
    };
}
pub(crate) use ledger_exec;

/// Reads and writes sent together on one PostgreSQL connection.
macro_rules! ledger_pipelined_io {
    () => {
        /// Locks a group's accounts, in id order, and returns their debts; any missing one
        /// fails the group.
        pub(crate) async fn lock_accounts(
            c: &mut Conn,
            ids: &[String],
        ) -> Result<Vec<(String, i64)>, TxError> {
            let found: Vec<(String, i64)> = accounts::table
                .filter(accounts::id.eq_any(ids))
                .order(accounts::id.asc())
                .select((accounts::id, accounts::debt))
                .for_no_key_update()
                .load(c)
                .await?;
            if found.len() != ids.len() {
                return Err(TxError::Store(billing_core::ports::StoreError::NotFound));
            }
            Ok(found)
        }

        /// A batch's reads, pipelined: the accounts' live grants, and the idempotency
        /// records of the (account, key) pairs in one statement, each pair an exact
        /// primary-key lookup.
        #[allow(clippy::type_complexity)]
        pub(crate) async fn ledger_batch_reads(
            c: &mut Conn,
            accounts: &[String],
            keys: &[(String, String)],
        ) -> Result<(Vec<GrantRow>, Vec<Option<(String, String)>>), TxError> {
            let conn: &Conn = c;
            let grants = async move { read::grants_of(&mut { conn }, accounts).await };
            let stored = async move {
                crate::bulk::StoredOutcomes::new(keys)
                    .load::<(String, String, String, String)>(&mut { conn })
                    .await
            };
            let (grants, stored) = futures_util::future::join(grants, stored).await;
            let mut errors = Vec::new();
            let grants = grants.map_err(|e| errors.push(TxError::Db(e))).ok();
            let found: std::collections::HashMap<(String, String), (String, String)> = stored
                .map_err(|e| errors.push(TxError::Db(e)))
                .ok()
                .unwrap_or_default()
                .into_iter()
                .map(|(account, key, fingerprint, outcome)| {
                    ((account, key), (fingerprint, outcome))
                })
                .collect();
            if let Some(err) = crate::ledger_exec::first_cause(errors) {
                return Err(err);
            }
            // A pair asked twice (a key replayed within the group) gets its record twice.
            let stored = keys.iter().map(|pair| found.get(pair).cloned()).collect();
            Ok((grants.unwrap_or_default(), stored))
        }

        /// A request's reads, pipelined.
        pub(crate) async fn ledger_reads(
            c: &mut Conn,
            args: &ReadArgs,
        ) -> Result<LedgerReads, TxError> {
            let conn: &Conn = c;
            let account = args.account.as_str();
            let debt = async move {
                if args.with_debt {
                    read::debt(&mut { conn }, account).await
                } else {
                    Ok(None)
                }
            };
            let stored = async move { read::stored(&mut { conn }, account, &args.key).await };
            let grants = async move {
                read::grants_of(&mut { conn }, std::slice::from_ref(&args.account)).await
            };
            let hold =
                async move { read::hold(&mut { conn }, account, args.hold.as_deref()).await };
            let refund =
                async move { read::refund(&mut { conn }, account, args.refund.as_deref()).await };
            let (debt, stored, grants, hold, refund) =
                futures_util::future::join5(debt, stored, grants, hold, refund).await;
            let mut errors = Vec::new();
            let mut keep = |e: diesel::result::Error| errors.push(TxError::Db(e));
            let reads = LedgerReads {
                debt: debt.map_err(&mut keep).ok().flatten(),
                stored: stored.map_err(&mut keep).ok().flatten(),
                grants: grants.map_err(&mut keep).ok().unwrap_or_default(),
                hold: hold.map_err(&mut keep).ok().flatten(),
                refund: refund.map_err(&mut keep).ok().flatten(),
            };
            match crate::ledger_exec::first_cause(errors) {
                Some(err) => Err(err),
                None => Ok(reads),
            }
        }

        /// A decision's (or a group's) writes, pipelined, the rows of each kind in one
        /// statement (see [`crate::ledger_exec::Bulk`]).
        pub(crate) async fn ledger_writes(c: &mut Conn, writes: Vec<Write>) -> Result<(), TxError> {
            use futures_util::future::BoxFuture;
            let crate::ledger_exec::Bulk {
                first,
                txns,
                legs,
                grants,
                debts,
                last,
                outcomes,
            } = crate::ledger_exec::Bulk::of(writes);
            let conn: &Conn = c;
            fn one<'a>(conn: &'a Conn, w: &'a Write) -> BoxFuture<'a, Result<(), TxError>> {
                Box::pin(async move { ledger_write_one(&mut { conn }, w).await })
            }
            let mut statements: Vec<BoxFuture<'_, Result<(), TxError>>> =
                first.iter().map(|w| one(conn, w)).collect();
            if !txns.is_empty() {
                statements.push(Box::pin(async move {
                    txns.execute(&mut { conn }).await?;
                    Ok(())
                }));
            }
            if !legs.is_empty() {
                statements.push(Box::pin(async move {
                    legs.execute(&mut { conn }).await?;
                    Ok(())
                }));
            }
            if !grants.is_empty() {
                statements.push(Box::pin(async move {
                    let expected = grants.len();
                    let changed = grants.execute(&mut { conn }).await?;
                    if changed != expected {
                        return Err(ledger_corrupt(
                            "grant",
                            format!("{changed} of {expected} grants to move were found"),
                        ));
                    }
                    Ok(())
                }));
            }
            if !debts.is_empty() {
                statements.push(Box::pin(async move {
                    debts.execute(&mut { conn }).await?;
                    Ok(())
                }));
            }
            statements.extend(last.iter().map(|w| one(conn, w)));
            if !outcomes.is_empty() {
                statements.push(Box::pin(async move {
                    outcomes.execute(&mut { conn }).await?;
                    Ok(())
                }));
            }
            let results = futures_util::future::join_all(statements).await;
            let errors: Vec<TxError> = results.into_iter().filter_map(Result::err).collect();
            match crate::ledger_exec::first_cause(errors) {
                Some(err) => Err(err),
                None => Ok(()),
            }
        }
    };
}
pub(crate) use ledger_pipelined_io;

/// Reads and writes one after the other (SQLite).
macro_rules! ledger_sequential_io {
    () => {
        /// `BEGIN IMMEDIATE` holds the write lock; read the debts, and check that every
        /// account exists.
        pub(crate) async fn lock_accounts(
            c: &mut Conn,
            ids: &[String],
        ) -> Result<Vec<(String, i64)>, TxError> {
            let found: Vec<(String, i64)> = accounts::table
                .filter(accounts::id.eq_any(ids))
                .order(accounts::id.asc())
                .select((accounts::id, accounts::debt))
                .load(c)
                .await?;
            if found.len() != ids.len() {
                return Err(TxError::Store(billing_core::ports::StoreError::NotFound));
            }
            Ok(found)
        }

        /// A batch's reads: the accounts' live grants, and the idempotency record of each
        /// (account, key).
        #[allow(clippy::type_complexity)]
        pub(crate) async fn ledger_batch_reads(
            c: &mut Conn,
            accounts: &[String],
            keys: &[(String, String)],
        ) -> Result<(Vec<GrantRow>, Vec<Option<(String, String)>>), TxError> {
            let grants = read::grants_of(c, accounts).await?;
            let mut stored = Vec::with_capacity(keys.len());
            for (account, key) in keys {
                stored.push(read::stored(c, account, key).await?);
            }
            Ok((grants, stored))
        }

        /// A request's reads.
        pub(crate) async fn ledger_reads(
            c: &mut Conn,
            args: &ReadArgs,
        ) -> Result<LedgerReads, TxError> {
            let account = args.account.as_str();
            Ok(LedgerReads {
                debt: if args.with_debt {
                    read::debt(c, account).await?
                } else {
                    None
                },
                stored: read::stored(c, account, &args.key).await?,
                grants: read::grants_of(c, std::slice::from_ref(&args.account)).await?,
                hold: read::hold(c, account, args.hold.as_deref()).await?,
                refund: read::refund(c, account, args.refund.as_deref()).await?,
            })
        }

        /// A decision's writes.
        pub(crate) async fn ledger_writes(c: &mut Conn, writes: Vec<Write>) -> Result<(), TxError> {
            for write in &writes {
                ledger_write_one(c, write).await?;
            }
            Ok(())
        }
    };
}
pub(crate) use ledger_sequential_io;
