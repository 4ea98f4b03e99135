//! The query code, written once and stamped into one module per backend.
//!
//! Each store file defines a `*_queries!` macro holding its query functions, written
//! against a connection type named `Conn`. The `pg` and `sqlite` modules below each define
//! `Conn` and the few dialect-specific functions, then invoke every macro; the compiler
//! checks each query against both backends. [`call!`] and [`transaction_call!`] pick the
//! module that matches a pooled connection.

use billing_core::ids::PrefixedId;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::TxError;
use crate::schema::accounts;

/// PostgreSQL.
pub(crate) mod pg {
    use super::*;

    pub(crate) type Conn = diesel_async::AsyncPgConnection;
    type Db = diesel::pg::Pg;

    /// Locks the account row for the rest of the transaction and returns its debt; every
    /// ledger transaction takes this one lock first, so they serialize per account and
    /// cannot deadlock. `FOR NO KEY UPDATE`: the transaction updates the debt, never the
    /// key, so rows that reference the account (grants, holds, journal) can still be
    /// inserted by others meanwhile, which `FOR UPDATE` would block.
    pub(crate) async fn lock_account(c: &mut Conn, id: &str) -> Result<Option<i64>, TxError> {
        Ok(accounts::table
            .find(id)
            .select(accounts::debt)
            .for_no_key_update()
            .first::<i64>(c)
            .await
            .optional()?)
    }

    /// Locks a charge's row for the rest of the transaction.
    pub(crate) async fn lock_charge(c: &mut Conn, charge: &str) -> Result<ChargeRow, TxError> {
        use crate::schema::payment_charges;
        Ok(payment_charges::table
            .find(charge)
            .select(ChargeRow::as_select())
            .for_update()
            .first(c)
            .await?)
    }

    /// New quota events in multi-row inserts.
    pub(crate) async fn insert_quota_events(
        c: &mut Conn,
        rows: &[crate::quotas::QuotaEventRow],
    ) -> Result<(), TxError> {
        for chunk in rows.chunks(crate::quotas::INSERT_CHUNK) {
            diesel::insert_into(crate::schema::quota_events::table)
                .values(chunk)
                .execute(c)
                .await?;
        }
        Ok(())
    }

    /// Audit rows, all in one statement (see [`crate::bulk`]), not one round trip per row.
    pub(crate) async fn insert_audit_rows(c: &mut Conn, rows: &[AuditRow]) -> Result<(), TxError> {
        crate::bulk::InsertAudit::of(rows).execute(c).await?;
        Ok(())
    }

    crate::ledger::ledger_queries!();
    crate::ledger_exec::ledger_exec!();
    crate::ledger_exec::ledger_pipelined_io!();
    use crate::accounts::UserField;
    crate::accounts::account_queries!();
    use crate::records::SubscriptionField;
    crate::records::record_queries!();
    crate::sessions::session_queries!();
    crate::userdata::userdata_queries!();
    crate::payments::payment_queries!();
    crate::usage::usage_queries!();
    crate::usage::spent_queries!();
    crate::quotas::quota_queries!();
    crate::jobs::job_queries!();
    crate::rewards::reward_queries!();
    crate::reports::report_queries!();
    /// The oldest queued tasks of the kinds, locked for this transaction; rows another
    /// claimer holds are skipped rather than waited for.
    pub(crate) async fn claim_candidates(
        c: &mut Conn,
        args: &ClaimArgs,
    ) -> Result<Vec<String>, TxError> {
        use crate::schema::tasks;
        Ok(tasks::table
            .filter(tasks::status.eq("queued"))
            .filter(tasks::kind.eq_any(&args.kinds))
            .filter(tasks::deadline.gt(args.now))
            .order(tasks::id.asc())
            .limit(args.limit)
            .select(tasks::id)
            .for_update()
            .skip_locked()
            .load(c)
            .await?)
    }

    /// Due pending deliveries, locked; rows another sender holds are skipped.
    pub(crate) async fn delivery_candidates(
        c: &mut Conn,
        now: i64,
        limit: i64,
    ) -> Result<Vec<String>, TxError> {
        use crate::schema::task_deliveries;
        Ok(task_deliveries::table
            .filter(task_deliveries::status.eq("pending"))
            .filter(task_deliveries::next_attempt_at.le(now))
            .order(task_deliveries::next_attempt_at.asc())
            .limit(limit)
            .select(task_deliveries::id)
            .for_update()
            .skip_locked()
            .load(c)
            .await?)
    }

    crate::tasks::task_queries!();
}

/// SQLite.
pub(crate) mod sqlite {
    use super::*;

    pub(crate) type Conn = crate::db::SqliteConn;
    type Db = diesel::sqlite::Sqlite;

    /// SQLite has no row locks: `BEGIN IMMEDIATE` already holds the database's write lock,
    /// so a plain read is enough.
    pub(crate) async fn lock_account(c: &mut Conn, id: &str) -> Result<Option<i64>, TxError> {
        Ok(accounts::table
            .find(id)
            .select(accounts::debt)
            .first::<i64>(c)
            .await
            .optional()?)
    }

    /// Audit rows, a row at a time (see `insert_quota_events`).
    pub(crate) async fn insert_audit_rows(c: &mut Conn, rows: &[AuditRow]) -> Result<(), TxError> {
        for row in rows {
            diesel::insert_into(audit_log::table)
                .values(row)
                .execute(c)
                .await?;
        }
        Ok(())
    }

    /// New quota events, a row at a time: diesel has no multi-row insert for SQLite
    /// through diesel-async, and inside the write transaction each is a local call.
    pub(crate) async fn insert_quota_events(
        c: &mut Conn,
        rows: &[crate::quotas::QuotaEventRow],
    ) -> Result<(), TxError> {
        for row in rows {
            diesel::insert_into(crate::schema::quota_events::table)
                .values(row)
                .execute(c)
                .await?;
        }
        Ok(())
    }

    crate::ledger::ledger_queries!();
    crate::ledger_exec::ledger_exec!();
    crate::ledger_exec::ledger_sequential_io!();
    use crate::accounts::UserField;
    crate::accounts::account_queries!();
    use crate::records::SubscriptionField;
    crate::records::record_queries!();
    /// `BEGIN IMMEDIATE` holds the write lock already.
    pub(crate) async fn lock_charge(c: &mut Conn, charge: &str) -> Result<ChargeRow, TxError> {
        use crate::schema::payment_charges;
        Ok(payment_charges::table
            .find(charge)
            .select(ChargeRow::as_select())
            .first(c)
            .await?)
    }

    crate::sessions::session_queries!();
    crate::userdata::userdata_queries!();
    crate::payments::payment_queries!();
    crate::usage::usage_queries!();
    crate::usage::spent_queries!();
    crate::quotas::quota_queries!();
    crate::jobs::job_queries!();
    crate::rewards::reward_queries!();
    crate::reports::report_queries!();
    /// `BEGIN IMMEDIATE` holds the write lock: no other claimer runs meanwhile.
    pub(crate) async fn claim_candidates(
        c: &mut Conn,
        args: &ClaimArgs,
    ) -> Result<Vec<String>, TxError> {
        use crate::schema::tasks;
        Ok(tasks::table
            .filter(tasks::status.eq("queued"))
            .filter(tasks::kind.eq_any(&args.kinds))
            .filter(tasks::deadline.gt(args.now))
            .order(tasks::id.asc())
            .limit(args.limit)
            .select(tasks::id)
            .load(c)
            .await?)
    }

    /// `BEGIN IMMEDIATE` holds the write lock.
    pub(crate) async fn delivery_candidates(
        c: &mut Conn,
        now: i64,
        limit: i64,
    ) -> Result<Vec<String>, TxError> {
        use crate::schema::task_deliveries;
        Ok(task_deliveries::table
            .filter(task_deliveries::status.eq("pending"))
            .filter(task_deliveries::next_attempt_at.le(now))
            .order(task_deliveries::next_attempt_at.asc())
            .limit(limit)
            .select(task_deliveries::id)
            .load(c)
            .await?)
    }

    crate::tasks::task_queries!();
}

/// Calls `$module::$func(conn, args…)` on the pooled connection's backend.
macro_rules! call {
    ($conn:expr, $func:ident ( $($arg:expr),* $(,)? )) => {
        match $conn {
            $crate::db::Conn::Pg(ref mut object) => {
                $crate::sql::pg::$func(&mut *object, $($arg),*).await
            }
            $crate::db::Conn::Sqlite(ref mut object) => {
                $crate::sql::sqlite::$func(&mut *object, $($arg),*).await
            }
        }
    };
}
pub(crate) use call;

/// Like [`call!`], inside one transaction (PostgreSQL `BEGIN`, SQLite `BEGIN IMMEDIATE`).
macro_rules! transaction_call {
    ($conn:expr, $func:ident ( $($arg:expr),* $(,)? )) => {{
        use diesel_async::AsyncConnection as _;
        match $conn {
            $crate::db::Conn::Pg(ref mut object) => {
                let pg: &mut diesel_async::AsyncPgConnection = &mut *object;
                pg.transaction::<_, $crate::db::TxError, _>(async move |c| {
                    $crate::sql::pg::$func(c, $($arg),*).await
                })
                .await
            }
            $crate::db::Conn::Sqlite(ref mut object) => {
                let c: &mut $crate::db::SqliteConn = &mut *object;
                match $crate::db::sqlite_begin_immediate(c).await {
                    Err(err) => Err(err),
                    Ok(()) => {
                        let result = $crate::sql::sqlite::$func(c, $($arg),*).await;
                        $crate::db::sqlite_finish(c, result).await
                    }
                }
            }
        }
    }};
}
pub(crate) use transaction_call;
