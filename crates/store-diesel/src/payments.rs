//! Payments, the charges behind them, and provider customers: the [`PaymentStore`] port.

use async_trait::async_trait;
use billing_core::ids::{AccountId, PaymentId};
use billing_core::ledger::Credits;
use billing_core::payments::{ChargeState, DisputeStatus, Payment};
use billing_core::ports::{PaymentStore, StoreError};
use billing_core::records::{Page, PageRequest};
use diesel::prelude::*;

use crate::db::{TxError, credits, from_ts, parse_enum, parse_id, signed, ts, tx_error};
use crate::schema::{payment_charges, payments};
use crate::sql::{call, transaction_call};
use crate::store::{DieselStore, page_limit, paged};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = payments, treat_none_as_default_value = false)]
pub(crate) struct PaymentRow {
    pub id: String,
    pub account_id: String,
    pub kind: String,
    pub external_id: String,
    pub payment_intent: Option<String>,
    pub item: String,
    pub amount_minor: i64,
    pub currency: String,
    pub credits: i64,
    pub withheld: i64,
    pub expires_at: Option<i64>,
    pub created_at: i64,
}

impl PaymentRow {
    fn from_domain(p: &Payment) -> Self {
        Self {
            id: p.id.to_string(),
            account_id: p.account.to_string(),
            kind: p.kind.as_str().to_owned(),
            external_id: p.external_id.clone(),
            payment_intent: p.payment_intent.clone(),
            item: p.item.clone(),
            amount_minor: p.amount_minor,
            currency: p.currency.code().to_owned(),
            credits: signed(p.credits),
            withheld: signed(p.withheld),
            expires_at: p.expires_at.map(ts),
            created_at: ts(p.created_at),
        }
    }

    fn into_domain(self) -> Result<Payment, StoreError> {
        Ok(Payment {
            id: parse_id(&self.id)?,
            account: parse_id(&self.account_id)?,
            kind: parse_enum(&self.kind)?,
            external_id: self.external_id,
            payment_intent: self.payment_intent,
            item: self.item,
            amount_minor: self.amount_minor,
            currency: self
                .currency
                .parse()
                .map_err(|e| StoreError::Other(format!("corrupt currency: {e}")))?,
            credits: credits(self.credits),
            withheld: credits(self.withheld),
            expires_at: self.expires_at.map(from_ts),
            created_at: from_ts(self.created_at),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = payment_charges, treat_none_as_default_value = false, treat_none_as_null = true)]
pub(crate) struct ChargeRow {
    pub charge: String,
    pub payment_intent: Option<String>,
    pub amount_minor: i64,
    pub refunded_minor: i64,
    pub dispute: Option<String>,
    pub dispute_observed_at: Option<i64>,
}

impl ChargeRow {
    pub(crate) fn from_domain(c: &ChargeState) -> Self {
        Self {
            charge: c.charge.clone(),
            payment_intent: c.payment_intent.clone(),
            amount_minor: c.amount_minor,
            refunded_minor: c.refunded_minor,
            dispute: c.dispute.map(|d| d.as_str().to_owned()),
            dispute_observed_at: c.dispute_observed_at.map(ts),
        }
    }

    pub(crate) fn into_domain(self) -> Result<ChargeState, StoreError> {
        let dispute = match self.dispute {
            None => None,
            Some(text) => Some(
                DisputeStatus::parse(&text)
                    .ok_or_else(|| StoreError::Other(format!("corrupt dispute status `{text}`")))?,
            ),
        };
        Ok(ChargeState {
            charge: self.charge,
            payment_intent: self.payment_intent,
            amount_minor: self.amount_minor,
            refunded_minor: self.refunded_minor,
            dispute,
            dispute_observed_at: self.dispute_observed_at.map(from_ts),
        })
    }
}

/// Which column payments are looked up by.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PaymentField {
    External,
    Intent,
}

/// The payment queries; stamped into `sql::pg` and `sql::sqlite`.
macro_rules! payment_queries {
    () => {
        use crate::payments::{ChargeRow, PaymentField, PaymentRow};
        use crate::schema::{payment_charges, payment_customers, payments};

        pub(crate) async fn payment_insert(
            c: &mut Conn,
            row: PaymentRow,
        ) -> Result<Vec<PaymentRow>, TxError> {
            diesel::insert_into(payments::table)
                .values(&row)
                .on_conflict_do_nothing()
                .execute(c)
                .await?;
            payments_by(c, PaymentField::External, row.external_id).await
        }

        pub(crate) async fn payments_by(
            c: &mut Conn,
            field: PaymentField,
            value: String,
        ) -> Result<Vec<PaymentRow>, TxError> {
            let query = payments::table.select(PaymentRow::as_select()).into_boxed();
            let query = match field {
                PaymentField::External => query.filter(payments::external_id.eq(value)),
                PaymentField::Intent => query.filter(payments::payment_intent.eq(value)),
            };
            Ok(query.order(payments::id.asc()).load(c).await?)
        }

        pub(crate) async fn payment_set_withheld(
            c: &mut Conn,
            id: String,
            from: i64,
            to: i64,
        ) -> Result<bool, TxError> {
            let changed =
                diesel::update(payments::table.find(id).filter(payments::withheld.eq(from)))
                    .set(payments::withheld.eq(to))
                    .execute(c)
                    .await?;
            Ok(changed == 1)
        }

        pub(crate) async fn payments_list(
            c: &mut Conn,
            account: String,
            after: Option<String>,
            limit: i64,
        ) -> Result<Vec<PaymentRow>, TxError> {
            let mut query = payments::table
                .filter(payments::account_id.eq(account))
                .select(PaymentRow::as_select())
                .into_boxed();
            if let Some(after) = after {
                query = query.filter(payments::id.lt(after));
            }
            Ok(query
                .order(payments::id.desc())
                .limit(limit)
                .load(c)
                .await?)
        }

        pub(crate) async fn charges_by(
            c: &mut Conn,
            charge: Option<String>,
            intent: Option<String>,
        ) -> Result<Vec<ChargeRow>, TxError> {
            let mut query = payment_charges::table
                .select(ChargeRow::as_select())
                .into_boxed();
            if let Some(charge) = charge {
                query = query.filter(payment_charges::charge.eq(charge));
            }
            if let Some(intent) = intent {
                query = query.filter(payment_charges::payment_intent.eq(intent));
            }
            Ok(query.order(payment_charges::charge.asc()).load(c).await?)
        }

        /// Merges an observation into the stored charge (inside a transaction, the row
        /// locked) and returns the result.
        pub(crate) async fn charge_merge(
            c: &mut Conn,
            row: ChargeRow,
        ) -> Result<ChargeRow, TxError> {
            let inserted = diesel::insert_into(payment_charges::table)
                .values(&row)
                .on_conflict_do_nothing()
                .execute(c)
                .await?;
            if inserted == 1 {
                return Ok(row);
            }
            let stored = lock_charge(c, &row.charge).await?;
            let merged =
                ChargeRow::from_domain(&stored.into_domain()?.merge(&row.clone().into_domain()?));
            diesel::update(payment_charges::table.find(&merged.charge))
                .set(&merged)
                .execute(c)
                .await?;
            Ok(merged)
        }

        pub(crate) async fn customer_link(
            c: &mut Conn,
            provider: String,
            customer: String,
            account: String,
        ) -> Result<(), TxError> {
            diesel::insert_into(payment_customers::table)
                .values((
                    payment_customers::provider.eq(provider),
                    payment_customers::customer.eq(customer),
                    payment_customers::account_id.eq(account),
                ))
                .on_conflict_do_nothing()
                .execute(c)
                .await?;
            Ok(())
        }

        pub(crate) async fn customer_lookup(
            c: &mut Conn,
            provider: String,
            customer: Option<String>,
            account: Option<String>,
        ) -> Result<Option<(String, String)>, TxError> {
            let mut query = payment_customers::table
                .filter(payment_customers::provider.eq(provider))
                .select((payment_customers::customer, payment_customers::account_id))
                .into_boxed();
            if let Some(customer) = customer {
                query = query.filter(payment_customers::customer.eq(customer));
            }
            if let Some(account) = account {
                query = query.filter(payment_customers::account_id.eq(account));
            }
            Ok(query.first(c).await.optional()?)
        }
    };
}
pub(crate) use payment_queries;

#[async_trait]
impl PaymentStore for DieselStore {
    async fn record_payment(&self, payment: &Payment) -> Result<Payment, StoreError> {
        let _writer = self.pool.write_guard().await;
        let mut conn = self.pool.get().await?;
        call!(conn, payment_insert(PaymentRow::from_domain(payment)))
            .map_err(tx_error)?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Other("payment not stored".into()))?
            .into_domain()
    }

    async fn by_intent(&self, payment_intent: &str) -> Result<Vec<Payment>, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(
            conn,
            payments_by(PaymentField::Intent, payment_intent.to_owned())
        )
        .map_err(tx_error)?
        .into_iter()
        .map(PaymentRow::into_domain)
        .collect()
    }

    async fn set_withheld(
        &self,
        id: &PaymentId,
        from: Credits,
        to: Credits,
    ) -> Result<bool, StoreError> {
        let _writer = self.pool.write_guard().await;
        let mut conn = self.pool.get().await?;
        call!(
            conn,
            payment_set_withheld(id.to_string(), signed(from), signed(to))
        )
        .map_err(tx_error)
    }

    async fn payments(
        &self,
        account: &AccountId,
        page: PageRequest,
    ) -> Result<Page<Payment>, StoreError> {
        let limit = page_limit(&page);
        let mut conn = self.pool.get().await?;
        let rows = call!(
            conn,
            payments_list(account.to_string(), page.after.clone(), limit + 1)
        )
        .map_err(tx_error)?;
        let items = rows
            .into_iter()
            .map(PaymentRow::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paged(items, limit, |p| p.id.to_string()))
    }

    async fn charge(&self, charge: &str) -> Result<Option<ChargeState>, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(conn, charges_by(Some(charge.to_owned()), None))
            .map_err(tx_error)?
            .into_iter()
            .next()
            .map(ChargeRow::into_domain)
            .transpose()
    }

    async fn charges_for(&self, payment_intent: &str) -> Result<Vec<ChargeState>, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(conn, charges_by(None, Some(payment_intent.to_owned())))
            .map_err(tx_error)?
            .into_iter()
            .map(ChargeRow::into_domain)
            .collect()
    }

    async fn merge_charge(&self, seen: &ChargeState) -> Result<ChargeState, StoreError> {
        let _writer = self.pool.write_guard().await;
        self.retrying(|| {
            let row = ChargeRow::from_domain(seen);
            async move {
                let mut conn = self.pool.get().await.map_err(TxError::Store)?;
                transaction_call!(conn, charge_merge(row))
            }
        })
        .await?
        .into_domain()
    }

    async fn link_customer(
        &self,
        provider: &str,
        customer: &str,
        account: &AccountId,
    ) -> Result<(), StoreError> {
        let _writer = self.pool.write_guard().await;
        let mut conn = self.pool.get().await?;
        call!(
            conn,
            customer_link(
                provider.to_owned(),
                customer.to_owned(),
                account.to_string()
            )
        )
        .map_err(tx_error)
    }

    async fn customer_account(
        &self,
        provider: &str,
        customer: &str,
    ) -> Result<Option<AccountId>, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(
            conn,
            customer_lookup(provider.to_owned(), Some(customer.to_owned()), None)
        )
        .map_err(tx_error)?
        .map(|(_, account)| parse_id(&account))
        .transpose()
    }

    async fn customer_of(
        &self,
        provider: &str,
        account: &AccountId,
    ) -> Result<Option<String>, StoreError> {
        let mut conn = self.pool.get().await?;
        Ok(call!(
            conn,
            customer_lookup(provider.to_owned(), None, Some(account.to_string()))
        )
        .map_err(tx_error)?
        .map(|(customer, _)| customer))
    }
}
