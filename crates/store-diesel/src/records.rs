//! Quotas, subscriptions, API idempotency, webhook events and the audit log.

use billing_core::catalog::Interval;
use billing_core::ports::StoreError;
use billing_core::quota::Window;
use billing_core::records::{AuditRecord, WebhookEvent};
use billing_core::subscription::{Subscription, SubscriptionStatus};
use diesel::prelude::*;

use crate::db::{from_ts, parse_enum, parse_id, ts};
use crate::schema::{audit_log, subscriptions, webhook_events};

fn json_text(value: &serde_json::Value) -> String {
    value.to_string()
}

fn json_value(text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Other(format!("corrupt JSON: {e}")))
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = subscriptions, treat_none_as_default_value = false, treat_none_as_null = true)]
pub(crate) struct SubscriptionRow {
    pub id: String,
    pub account_id: String,
    pub plan: String,
    pub billing_interval: String,
    pub status: String,
    pub period_start: Option<i64>,
    pub period_end: Option<i64>,
    pub trial_end: Option<i64>,
    pub cancel_at_period_end: bool,
    pub pending_plan: Option<String>,
    pub external_id: Option<String>,
    pub created_at: i64,
    pub canceled_at: Option<i64>,
    pub version: i64,
    pub past_due_since: Option<i64>,
}

impl SubscriptionRow {
    pub(crate) fn from_domain(s: &Subscription) -> Self {
        Self {
            id: s.id.to_string(),
            account_id: s.account.to_string(),
            plan: s.plan.clone(),
            billing_interval: s.interval.as_str().to_owned(),
            status: s.status.as_str().to_owned(),
            period_start: s.current_period.map(|p| ts(p.start)),
            period_end: s.current_period.map(|p| ts(p.end)),
            trial_end: s.trial_end.map(ts),
            cancel_at_period_end: s.cancel_at_period_end,
            pending_plan: s.pending_plan.clone(),
            external_id: s.external_id.clone(),
            created_at: ts(s.created_at),
            canceled_at: s.canceled_at.map(ts),
            version: s.version,
            past_due_since: s.past_due_since.map(ts),
        }
    }

    pub(crate) fn into_domain(self) -> Result<Subscription, StoreError> {
        let current_period = match (self.period_start, self.period_end) {
            (Some(start), Some(end)) => Some(Window {
                start: from_ts(start),
                end: from_ts(end),
            }),
            _ => None,
        };
        Ok(Subscription {
            id: parse_id(&self.id)?,
            account: parse_id(&self.account_id)?,
            plan: self.plan,
            interval: parse_enum::<Interval>(&self.billing_interval)?,
            status: parse_enum::<SubscriptionStatus>(&self.status)?,
            current_period,
            trial_end: self.trial_end.map(from_ts),
            cancel_at_period_end: self.cancel_at_period_end,
            pending_plan: self.pending_plan,
            external_id: self.external_id,
            created_at: from_ts(self.created_at),
            canceled_at: self.canceled_at.map(from_ts),
            version: self.version,
            past_due_since: self.past_due_since.map(from_ts),
        })
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = webhook_events, treat_none_as_default_value = false)]
pub(crate) struct WebhookRow {
    pub id: String,
    pub external_id: String,
    pub kind: String,
    pub payload: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub received_at: i64,
    pub next_attempt_at: Option<i64>,
}

impl WebhookRow {
    pub(crate) fn from_domain(e: &WebhookEvent) -> Result<Self, StoreError> {
        Ok(Self {
            id: e.id.to_string(),
            external_id: e.external_id.clone(),
            kind: e.kind.clone(),
            payload: json_text(&e.payload),
            status: enum_text(e.status),
            attempts: i32::try_from(e.attempts).unwrap_or(i32::MAX),
            last_error: e.last_error.clone(),
            received_at: ts(e.received_at),
            next_attempt_at: None,
        })
    }

    pub(crate) fn into_domain(self) -> Result<WebhookEvent, StoreError> {
        Ok(WebhookEvent {
            id: parse_id(&self.id)?,
            external_id: self.external_id,
            kind: self.kind,
            payload: json_value(&self.payload)?,
            status: parse_enum(&self.status)?,
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            last_error: self.last_error,
            received_at: from_ts(self.received_at),
        })
    }
}

pub(crate) fn enum_text<T: serde::Serialize>(value: T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_log, treat_none_as_default_value = false)]
pub(crate) struct AuditRow {
    pub id: String,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub request_id: Option<String>,
    pub details: String,
    pub at: i64,
}

impl AuditRow {
    pub(crate) fn from_domain(r: &AuditRecord) -> Self {
        Self {
            id: r.id.to_string(),
            actor: r.actor.clone(),
            action: r.action.clone(),
            target: r.target.clone(),
            request_id: r.request_id.clone(),
            details: json_text(&r.details),
            at: ts(r.at),
        }
    }

    pub(crate) fn into_domain(self) -> Result<AuditRecord, StoreError> {
        Ok(AuditRecord {
            id: parse_id(&self.id)?,
            actor: self.actor,
            action: self.action,
            target: self.target,
            request_id: self.request_id,
            details: json_value(&self.details)?,
            at: from_ts(self.at),
        })
    }
}

/// Queries for the records above; stamped into `sql::pg` and `sql::sqlite`.
macro_rules! record_queries {
    () => {
        /// Deletes idempotency records created before `before` (indexed by `created_at`).
        pub(crate) async fn prune_idempotency(
            c: &mut Conn,
            before: i64,
        ) -> Result<(usize, usize, usize), TxError> {
            use crate::schema::ledger_idempotency;
            let ledger = diesel::delete(
                ledger_idempotency::table.filter(ledger_idempotency::created_at.lt(before)),
            )
            .execute(c)
            .await?;
            let api = diesel::delete(
                crate::schema::api_idempotency::table
                    .filter(crate::schema::api_idempotency::created_at.lt(before)),
            )
            .execute(c)
            .await?;
            let events = diesel::delete(
                crate::schema::quota_events::table
                    .filter(crate::schema::quota_events::created_at.lt(before)),
            )
            .execute(c)
            .await?;
            Ok((ledger, api, events))
        }

        use crate::records::{AuditRow, SubscriptionRow, WebhookRow};
        use crate::schema::{api_idempotency, audit_log, subscriptions, webhook_events};

        pub(crate) async fn subscription_by(
            c: &mut Conn,
            field: SubscriptionField,
            value: String,
        ) -> Result<Option<SubscriptionRow>, TxError> {
            let query = subscriptions::table
                .select(SubscriptionRow::as_select())
                .into_boxed();
            let query = match field {
                SubscriptionField::Id => query.filter(subscriptions::id.eq(value)),
                SubscriptionField::External => query.filter(subscriptions::external_id.eq(value)),
                SubscriptionField::LiveForAccount => query
                    .filter(subscriptions::account_id.eq(value))
                    .filter(subscriptions::status.ne("canceled")),
            };
            Ok(query.first(c).await.optional()?)
        }

        /// Inserts, or replaces if the stored status is still `expected`; `false` if it is not.
        pub(crate) async fn subscription_save(
            c: &mut Conn,
            row: SubscriptionRow,
            expected: Option<(String, i64)>,
        ) -> Result<bool, TxError> {
            match expected {
                None => {
                    diesel::insert_into(subscriptions::table)
                        .values(&row)
                        .execute(c)
                        .await?;
                    Ok(true)
                }
                Some((status, version)) => {
                    let changed = diesel::update(
                        subscriptions::table
                            .find(row.id.clone())
                            .filter(subscriptions::status.eq(status))
                            .filter(subscriptions::version.eq(version)),
                    )
                    .set(&row)
                    .execute(c)
                    .await?;
                    Ok(changed == 1)
                }
            }
        }

        pub(crate) async fn subscription_trialed(
            c: &mut Conn,
            account: String,
        ) -> Result<bool, TxError> {
            let found: Option<String> = subscriptions::table
                .filter(subscriptions::account_id.eq(account))
                .filter(subscriptions::trial_end.is_not_null())
                .select(subscriptions::id)
                .first(c)
                .await
                .optional()?;
            Ok(found.is_some())
        }

        pub(crate) async fn subscriptions_past_due(
            c: &mut Conn,
            before: i64,
            limit: i64,
        ) -> Result<Vec<SubscriptionRow>, TxError> {
            Ok(subscriptions::table
                .filter(subscriptions::status.eq("past_due"))
                .filter(subscriptions::past_due_since.lt(before))
                .select(SubscriptionRow::as_select())
                .order(subscriptions::past_due_since.asc())
                .limit(limit)
                .load(c)
                .await?)
        }

        /// Claims a key: `None` if newly claimed, else what it holds.
        pub(crate) async fn api_key_claim(
            c: &mut Conn,
            scope: String,
            key: String,
            fingerprint: String,
            now: i64,
        ) -> Result<Option<(String, Option<i32>, Option<String>)>, TxError> {
            let inserted = diesel::insert_into(api_idempotency::table)
                .values((
                    api_idempotency::scope.eq(&scope),
                    api_idempotency::key.eq(&key),
                    api_idempotency::fingerprint.eq(&fingerprint),
                    api_idempotency::created_at.eq(now),
                ))
                .on_conflict_do_nothing()
                .execute(c)
                .await?;
            if inserted == 1 {
                return Ok(None);
            }
            Ok(Some(
                api_idempotency::table
                    .find((scope, key))
                    .select((
                        api_idempotency::fingerprint,
                        api_idempotency::status,
                        api_idempotency::body,
                    ))
                    .first(c)
                    .await?,
            ))
        }

        pub(crate) async fn api_key_complete(
            c: &mut Conn,
            scope: String,
            key: String,
            status: i32,
            body: String,
        ) -> Result<usize, TxError> {
            Ok(diesel::update(api_idempotency::table.find((scope, key)))
                .set((
                    api_idempotency::status.eq(Some(status)),
                    api_idempotency::body.eq(Some(body)),
                ))
                .execute(c)
                .await?)
        }

        pub(crate) async fn api_key_release(
            c: &mut Conn,
            scope: String,
            key: String,
        ) -> Result<usize, TxError> {
            Ok(diesel::delete(
                api_idempotency::table
                    .find((scope, key))
                    .filter(api_idempotency::status.is_null()),
            )
            .execute(c)
            .await?)
        }

        pub(crate) async fn webhook_record(c: &mut Conn, row: WebhookRow) -> Result<bool, TxError> {
            let inserted = diesel::insert_into(webhook_events::table)
                .values(&row)
                .on_conflict_do_nothing()
                .execute(c)
                .await?;
            Ok(inserted == 1)
        }

        pub(crate) async fn webhook_mark(
            c: &mut Conn,
            external_id: String,
            status: String,
            error: Option<String>,
            retry_at: Option<i64>,
        ) -> Result<usize, TxError> {
            Ok(diesel::update(
                webhook_events::table.filter(webhook_events::external_id.eq(external_id)),
            )
            .set((
                webhook_events::status.eq(status),
                webhook_events::last_error.eq(error),
                webhook_events::attempts.eq(webhook_events::attempts + 1),
                webhook_events::next_attempt_at.eq(retry_at),
            ))
            .execute(c)
            .await?)
        }

        pub(crate) async fn webhook_by_external_id(
            c: &mut Conn,
            external_id: String,
        ) -> Result<Option<WebhookRow>, TxError> {
            Ok(webhook_events::table
                .filter(webhook_events::external_id.eq(external_id))
                .select(WebhookRow::as_select())
                .first(c)
                .await
                .optional()?)
        }

        pub(crate) async fn webhook_retry(
            c: &mut Conn,
            external_id: String,
        ) -> Result<usize, TxError> {
            Ok(diesel::update(
                webhook_events::table
                    .filter(webhook_events::external_id.eq(external_id))
                    .filter(webhook_events::status.eq_any(["failed", "ignored"])),
            )
            .set((
                webhook_events::status.eq("received"),
                webhook_events::next_attempt_at.eq(None::<i64>),
            ))
            .execute(c)
            .await?)
        }

        pub(crate) async fn webhook_requeue_mentioning(
            c: &mut Conn,
            pattern: String,
        ) -> Result<usize, TxError> {
            Ok(diesel::update(
                webhook_events::table
                    .filter(webhook_events::status.eq("ignored"))
                    .filter(webhook_events::payload.like(pattern).escape('\\')),
            )
            .set((
                webhook_events::status.eq("received"),
                webhook_events::next_attempt_at.eq(None::<i64>),
            ))
            .execute(c)
            .await?)
        }

        /// Received events, and failed ones whose retry time has come, oldest first.
        pub(crate) async fn webhooks_due(
            c: &mut Conn,
            now: i64,
            max_attempts: i32,
            limit: i64,
        ) -> Result<Vec<WebhookRow>, TxError> {
            Ok(webhook_events::table
                .filter(
                    webhook_events::status
                        .eq("received")
                        .or(webhook_events::status
                            .eq("failed")
                            .and(webhook_events::attempts.lt(max_attempts))
                            .and(webhook_events::next_attempt_at.le(now))),
                )
                .order(webhook_events::id.asc())
                .limit(limit)
                .select(WebhookRow::as_select())
                .load(c)
                .await?)
        }

        pub(crate) async fn webhooks_with_status(
            c: &mut Conn,
            status: String,
            after: Option<String>,
            limit: i64,
        ) -> Result<Vec<WebhookRow>, TxError> {
            let mut query = webhook_events::table
                .filter(webhook_events::status.eq(status))
                .select(WebhookRow::as_select())
                .into_boxed();
            if let Some(after) = after {
                query = query.filter(webhook_events::id.gt(after));
            }
            Ok(query
                .order(webhook_events::id.asc())
                .limit(limit)
                .load(c)
                .await?)
        }

        pub(crate) async fn audit_append(c: &mut Conn, row: AuditRow) -> Result<(), TxError> {
            diesel::insert_into(audit_log::table)
                .values(&row)
                .execute(c)
                .await?;
            Ok(())
        }

        /// Several audit records, inside the caller's transaction.
        pub(crate) async fn audit_append_many(
            c: &mut Conn,
            rows: Vec<AuditRow>,
        ) -> Result<(), TxError> {
            insert_audit_rows(c, &rows).await
        }

        pub(crate) async fn audit_list(
            c: &mut Conn,
            target: Option<String>,
            after: Option<String>,
            limit: i64,
        ) -> Result<Vec<AuditRow>, TxError> {
            let mut query = audit_log::table.select(AuditRow::as_select()).into_boxed();
            if let Some(target) = target {
                query = query.filter(audit_log::target.eq(target));
            }
            if let Some(after) = after {
                query = query.filter(audit_log::id.lt(after));
            }
            Ok(query
                .order(audit_log::id.desc())
                .limit(limit)
                .load(c)
                .await?)
        }
    };
}
pub(crate) use record_queries;

/// Which column a subscription is looked up by.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SubscriptionField {
    Id,
    External,
    LiveForAccount,
}
