//! The business view's aggregates: the [`ReportStore`] port.
//!
//! The journal, calls, sign-ups and payments are summed by the database, per UTC day, in
//! plain SQL that PostgreSQL and SQLite read alike (`created_at / 86400000000` is a day
//! number, since timestamps are microseconds; sums are cast back to BIGINT because
//! PostgreSQL's `SUM(bigint)` is NUMERIC). Only subscriptions come back row by row: there
//! is at most a handful per customer, and the figures need their history.
//!
//! The three bounds are integers formatted into the SQL, never text from a request.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use billing_core::business::{
    BusinessFacts, ModelGroup, Outstanding, RevenueGroup, SourceGroup, SpentGroup, SubscriptionFact,
};
use billing_core::ports::{ReportStore, StoreError};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use time::{Date, Duration, OffsetDateTime};

use crate::db::{credits, from_ts, parse_enum, parse_id, ts, tx_error};
use crate::schema::subscriptions;
use crate::sql::call;
use crate::store::DieselStore;

/// Microseconds in a day.
const DAY: i64 = 86_400_000_000;

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = subscriptions)]
pub(crate) struct SubscriptionFactRow {
    account_id: String,
    plan: String,
    billing_interval: String,
    status: String,
    created_at: i64,
    canceled_at: Option<i64>,
    trial_end: Option<i64>,
}

#[derive(Debug, QueryableByName)]
pub(crate) struct AccountRow {
    #[diesel(sql_type = Text)]
    account: String,
}

#[derive(Debug, QueryableByName)]
pub(crate) struct SpentRow {
    #[diesel(sql_type = BigInt)]
    day: i64,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Nullable<Text>)]
    reference: Option<String>,
    #[diesel(sql_type = BigInt)]
    credits: i64,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(Debug, QueryableByName)]
pub(crate) struct SourceRow {
    #[diesel(sql_type = BigInt)]
    day: i64,
    #[diesel(sql_type = Nullable<Text>)]
    source: Option<String>,
    #[diesel(sql_type = BigInt)]
    credits: i64,
}

#[derive(Debug, QueryableByName)]
pub(crate) struct ModelRow {
    #[diesel(sql_type = BigInt)]
    day: i64,
    #[diesel(sql_type = Text)]
    model: String,
    #[diesel(sql_type = BigInt)]
    credits: i64,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(Debug, QueryableByName)]
pub(crate) struct CountRow {
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(Debug, QueryableByName)]
pub(crate) struct DayCountRow {
    #[diesel(sql_type = BigInt)]
    day: i64,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(Debug, QueryableByName)]
pub(crate) struct RevenueRow {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    currency: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = BigInt)]
    gross: i64,
    #[diesel(sql_type = BigInt)]
    refunded: i64,
}

#[derive(Debug, QueryableByName)]
pub(crate) struct OutstandingRow {
    #[diesel(sql_type = Text)]
    source: String,
    #[diesel(sql_type = BigInt)]
    credits: i64,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The report queries; stamped into `sql::pg` and `sql::sqlite`.
macro_rules! report_queries {
    () => {
        /// Subscriptions not ended before `from`.
        pub(crate) async fn report_subscriptions(
            c: &mut Conn,
            from: i64,
        ) -> Result<Vec<crate::reports::SubscriptionFactRow>, TxError> {
            use crate::schema::subscriptions as s;
            Ok(s::table
                .filter(s::canceled_at.is_null().or(s::canceled_at.ge(from)))
                .select(crate::reports::SubscriptionFactRow::as_select())
                .order((s::created_at.asc(), s::id.asc()))
                .load(c)
                .await?)
        }

        /// The rows of an aggregate written in SQL both backends read alike.
        pub(crate) async fn report_rows<T>(c: &mut Conn, sql: String) -> Result<Vec<T>, TxError>
        where
            T: diesel::QueryableByName<Db> + Send + 'static,
        {
            Ok(diesel::sql_query(sql).load::<T>(c).await?)
        }
    };
}
pub(crate) use report_queries;

/// Day number → date (UTC).
fn date(day: i64) -> Date {
    (OffsetDateTime::UNIX_EPOCH + Duration::days(day)).date()
}

fn count(n: i64) -> u64 {
    credits(n)
}

#[async_trait]
impl ReportStore for DieselStore {
    async fn business_facts(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<BusinessFacts, StoreError> {
        let (f, t, n) = (ts(from), ts(to), ts(now));
        let mut conn = self.pool.get().await?;

        let subs: Vec<SubscriptionFactRow> =
            call!(conn, report_subscriptions(f)).map_err(tx_error)?;
        let subscriptions = subs
            .into_iter()
            .map(|r| {
                Ok(SubscriptionFact {
                    account: parse_id(&r.account_id)?,
                    plan: r.plan,
                    interval: parse_enum(&r.billing_interval)?,
                    status: parse_enum(&r.status)?,
                    created_at: from_ts(r.created_at),
                    canceled_at: r.canceled_at.map(from_ts),
                    trial_end: r.trial_end.map(from_ts),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;

        let lapsed: Vec<AccountRow> = call!(
            conn,
            report_rows(format!(
                "SELECT DISTINCT account_id AS account FROM subscriptions \
                 WHERE canceled_at < {f} AND account_id IN \
                 (SELECT account_id FROM subscriptions WHERE created_at >= {f} AND created_at < {t})"
            ))
        )
        .map_err(tx_error)?;
        let lapsed_accounts = lapsed
            .iter()
            .map(|r| parse_id(&r.account))
            .collect::<Result<BTreeSet<_>, _>>()?;

        let spent: Vec<SpentRow> = call!(
            conn,
            report_rows(format!(
                "SELECT created_at / {DAY} AS day, kind, \
                 CASE WHEN kind = 'debit' THEN reference END AS reference, \
                 CAST(SUM(amount - refunded) AS BIGINT) AS credits, COUNT(*) AS n \
                 FROM ledger_transactions \
                 WHERE kind IN ('debit', 'capture') AND created_at >= {f} AND created_at < {t} \
                 GROUP BY 1, 2, 3"
            ))
        )
        .map_err(tx_error)?;
        let spent = spent
            .into_iter()
            .map(|r| {
                Ok(SpentGroup {
                    day: date(r.day),
                    kind: parse_enum(&r.kind)?,
                    reference: r.reference,
                    credits: credits(r.credits),
                    count: count(r.n),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;

        let by_source: Vec<SourceRow> = call!(
            conn,
            report_rows(format!(
                "SELECT t.created_at / {DAY} AS day, g.source AS source, \
                 CAST(-SUM(l.delta) AS BIGINT) AS credits \
                 FROM ledger_legs l JOIN ledger_transactions t ON t.id = l.txn_id \
                 LEFT JOIN grants g ON g.id = l.grant_id \
                 WHERE t.kind IN ('debit', 'reserve', 'capture', 'void', 'hold_expiry') \
                 AND t.created_at >= {f} AND t.created_at < {t} \
                 GROUP BY 1, 2"
            ))
        )
        .map_err(tx_error)?;
        let by_source = by_source
            .into_iter()
            .map(|r| {
                Ok(SourceGroup {
                    day: date(r.day),
                    source: r.source.as_deref().map(parse_enum).transpose()?,
                    credits: r.credits,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;

        let calls =
            format!("FROM llm_calls WHERE credits > 0 AND created_at >= {f} AND created_at < {t}");
        let by_model: Vec<ModelRow> = call!(
            conn,
            report_rows(format!(
                "SELECT created_at / {DAY} AS day, model, \
                 CAST(SUM(credits) AS BIGINT) AS credits, COUNT(*) AS n {calls} GROUP BY 1, 2"
            ))
        )
        .map_err(tx_error)?;
        let model_accounts: Vec<CountRow> = call!(
            conn,
            report_rows(format!(
                "SELECT model AS key, COUNT(DISTINCT account_id) AS n {calls} GROUP BY 1"
            ))
        )
        .map_err(tx_error)?;

        let signups: Vec<DayCountRow> = call!(
            conn,
            report_rows(format!(
                "SELECT created_at / {DAY} AS day, COUNT(*) AS n FROM users \
                 WHERE created_at >= {f} AND created_at < {t} GROUP BY 1"
            ))
        )
        .map_err(tx_error)?;

        let revenue: Vec<RevenueRow> = call!(
            conn,
            report_rows(format!(
                "SELECT p.kind AS kind, p.currency AS currency, COUNT(*) AS n, \
                 CAST(SUM(p.amount_minor) AS BIGINT) AS gross, \
                 CAST(COALESCE(SUM(r.refunded), 0) AS BIGINT) AS refunded \
                 FROM payments p LEFT JOIN \
                 (SELECT payment_intent, SUM(refunded_minor) AS refunded \
                  FROM payment_charges WHERE payment_intent IS NOT NULL GROUP BY payment_intent) r \
                 ON r.payment_intent = p.payment_intent \
                 WHERE p.created_at >= {f} AND p.created_at < {t} GROUP BY 1, 2"
            ))
        )
        .map_err(tx_error)?;
        let revenue = revenue
            .into_iter()
            .map(|r| {
                Ok(RevenueGroup {
                    kind: parse_enum(&r.kind)?,
                    currency: r
                        .currency
                        .parse()
                        .map_err(|e| StoreError::Other(format!("corrupt currency: {e}")))?,
                    payments: count(r.n),
                    gross_minor: r.gross,
                    refunded_minor: r.refunded,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;

        let outstanding: Vec<OutstandingRow> = call!(
            conn,
            report_rows(format!(
                "SELECT source, CAST(SUM(remaining) AS BIGINT) AS credits, COUNT(*) AS n \
                 FROM grants WHERE remaining > 0 AND (expires_at IS NULL OR expires_at > {n}) \
                 GROUP BY 1"
            ))
        )
        .map_err(tx_error)?;
        let outstanding = outstanding
            .into_iter()
            .map(|r| {
                Ok(Outstanding {
                    source: parse_enum(&r.source)?,
                    credits: credits(r.credits),
                    grants: count(r.n),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;

        Ok(BusinessFacts {
            subscriptions,
            lapsed_accounts,
            spent,
            by_source,
            by_model: by_model
                .into_iter()
                .map(|r| ModelGroup {
                    day: date(r.day),
                    model: r.model,
                    credits: credits(r.credits),
                    calls: count(r.n),
                })
                .collect(),
            model_accounts: model_accounts
                .into_iter()
                .map(|r| (r.key, count(r.n)))
                .collect::<BTreeMap<_, _>>(),
            signups: signups
                .into_iter()
                .map(|r| (date(r.day), count(r.n)))
                .collect(),
            revenue,
            outstanding,
        })
    }
}
