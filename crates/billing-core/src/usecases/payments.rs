//! Applying what a payment provider reported: packs, subscriptions, invoices, refunds and
//! disputes. Every step may run again (a duplicate delivery, a retry after a crash, a second
//! instance) and events may come in any order; see [`crate::payments`] for the rules that
//! make that safe.

use time::{Duration, OffsetDateTime};

use super::{Billing, BillingError, PurchaseCompleted, key};
use crate::catalog::{Cadence, Interval};
use crate::ids::{AccountId, PaymentId, PrefixedId, SubscriptionId};
use crate::ledger::{Credits, GrantSource, LedgerCommand, LedgerPolicy};
use crate::payments::{
    ChargeState, InvoiceFailure, InvoicePayment, PackPayment, PayerRef, Payment, PaymentEvent,
    PaymentKind, STRIPE, SubscriptionSnapshot, SyncVersion, credits_withheld, grant_reference,
};
use crate::ports::{Conflict, StoreError};
use crate::quota::Window;
use crate::subscription::{Subscription, SubscriptionStatus};

/// What applying a payment event came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Applied (or found applied already); the messages to send the customer.
    Done(Vec<Notice>),
    /// Nothing to do, and why (an unknown customer, a stale state…).
    Ignored(String),
}

/// A message for an account's users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A renewal payment failed.
    PaymentFailed {
        /// The account.
        account: AccountId,
        /// No automatic retry remains.
        final_attempt: bool,
    },
    /// The trial ends soon.
    TrialEnding {
        /// The account.
        account: AccountId,
        /// When.
        trial_end: Option<OffsetDateTime>,
    },
}

fn ignored(why: impl Into<String>) -> Result<Applied, BillingError> {
    Ok(Applied::Ignored(why.into()))
}

fn done() -> Result<Applied, BillingError> {
    Ok(Applied::Done(Vec::new()))
}

/// Whether `period` is a later period than the subscription's current one.
fn advances(sub: &Subscription, period: Option<Window>) -> bool {
    match (sub.current_period, period) {
        (Some(current), Some(next)) => next.start > current.start,
        (None, Some(_)) => true,
        _ => false,
    }
}

impl Billing {
    /// Applies what a payment provider reported (verified and mapped by its adapter). When
    /// another worker changed the same record meanwhile (a second instance applying a
    /// related event), it reads again and retries: every step is idempotent.
    pub async fn apply_payment_event(&self, event: PaymentEvent) -> Result<Applied, BillingError> {
        let mut attempts = 0;
        loop {
            match self.apply_once(event.clone()).await {
                Err(BillingError::Store(StoreError::Conflict(Conflict::ChangedMeanwhile)))
                    if attempts < 4 =>
                {
                    attempts += 1;
                }
                other => return other,
            }
        }
    }

    async fn apply_once(&self, event: PaymentEvent) -> Result<Applied, BillingError> {
        match event {
            PaymentEvent::PackPaid(pack) => self.pack_paid(pack).await,
            PaymentEvent::SubscriptionSynced(snapshot) => self.subscription_synced(snapshot).await,
            PaymentEvent::InvoicePaid(invoice) => self.invoice_paid(invoice).await,
            PaymentEvent::InvoiceFailed(failure) => self.invoice_failed(failure).await,
            PaymentEvent::TrialWillEnd {
                subscription,
                trial_end,
            } => match self.subscriptions.by_external_id(&subscription).await? {
                Some(sub) if sub.status == SubscriptionStatus::Trialing => {
                    Ok(Applied::Done(vec![Notice::TrialEnding {
                        account: sub.account,
                        trial_end: trial_end.or(sub.trial_end),
                    }]))
                }
                Some(_) => ignored("the subscription is not trialing"),
                None => ignored("unknown subscription"),
            },
            PaymentEvent::ChargeChanged(charge) => self.charge_changed(charge).await,
            PaymentEvent::CustomerLinked(payer) => match self.payer(&payer).await? {
                Some(_) => done(),
                None => ignored("unknown account"),
            },
        }
    }

    /// The account an event names, linking the provider's customer to it on the way.
    async fn payer(&self, payer: &PayerRef) -> Result<Option<AccountId>, BillingError> {
        let mut found = None;
        if let Some(account) = &payer.account
            && self.accounts.account(account).await?.is_some()
        {
            found = Some(account.clone());
        }
        if found.is_none()
            && let Some(user) = &payer.user
        {
            found = self.accounts.user(user).await?.map(|u| u.account);
        }
        match (&found, &payer.customer) {
            (Some(account), Some(customer)) => {
                self.payments
                    .link_customer(STRIPE, customer, account)
                    .await?;
            }
            (None, Some(customer)) => {
                found = self.payments.customer_account(STRIPE, customer).await?;
            }
            _ => {}
        }
        Ok(found)
    }

    /// The plan a price (or, failing that, the metadata) names.
    pub(super) fn plan_for(
        &self,
        price: Option<&str>,
        plan: Option<&str>,
        interval: Option<Interval>,
    ) -> Option<(String, Interval)> {
        if let Some((id, interval)) = price.and_then(|p| self.catalog.plan_by_price(p)) {
            return Some((id.to_owned(), interval));
        }
        let id = plan?;
        let found = self.catalog.plan(id)?;
        let interval = interval
            .filter(|i| found.prices.contains_key(i))
            .or_else(|| found.prices.keys().next().copied())?;
        Some((id.to_owned(), interval))
    }

    /// The plan a subscription puts in force now: its own while trialing, active, or past
    /// due within the dunning grace; else the default plan.
    pub fn plan_in_force(&self, sub: &Subscription, now: OffsetDateTime) -> String {
        let grace = Duration::days(i64::from(self.catalog.dunning.grace_days));
        let in_force = match sub.status {
            SubscriptionStatus::Trialing | SubscriptionStatus::Active => true,
            SubscriptionStatus::PastDue => sub.past_due_since.is_none_or(|at| now < at + grace),
            _ => false,
        };
        if in_force {
            sub.plan.clone()
        } else {
            self.catalog.default_plan.clone()
        }
    }

    /// Sets the account's plan from its live subscription (the default plan without one).
    /// Both are read and written past the read cache: another instance may have just
    /// changed either, and a plan decided from a cached subscription (or skipped because a
    /// cached plan already matched) would stand until the next change.
    pub async fn refresh_plan(&self, account: &AccountId) -> Result<String, BillingError> {
        let now = self.clock.now();
        let plan = match self.subscriptions.current_uncached(account).await? {
            Some(sub) => self.plan_in_force(&sub, now),
            None => self.catalog.default_plan.clone(),
        };
        self.accounts.set_plan(account, &plan).await?;
        Ok(plan)
    }

    /// Saves a subscription; a provider subscription that meets a live one without a
    /// provider (a comp) ends the comp and takes its place.
    async fn save_subscription(
        &self,
        sub: &Subscription,
        expected: Option<&Subscription>,
    ) -> Result<(), BillingError> {
        match self
            .subscriptions
            .save(sub, expected.map(Subscription::expected))
            .await
        {
            Err(StoreError::Conflict(Conflict::LiveSubscription)) if sub.external_id.is_some() => {
                // The live one the database just named, not a cached copy.
                let Some(live) = self.subscriptions.current_uncached(&sub.account).await? else {
                    return Err(StoreError::Conflict(Conflict::ChangedMeanwhile).into());
                };
                if live.external_id.is_some() {
                    // Another provider subscription is live; its end is on its way.
                    return Err(StoreError::Conflict(Conflict::LiveSubscription).into());
                }
                let mut ended = live.clone();
                ended.status = SubscriptionStatus::Canceled;
                ended.canceled_at = Some(self.clock.now());
                self.subscriptions
                    .save(&ended, Some(live.expected()))
                    .await?;
                self.subscriptions
                    .save(sub, expected.map(Subscription::expected))
                    .await?;
                Ok(())
            }
            other => Ok(other?),
        }
    }

    async fn pack_paid(&self, paid: PackPayment) -> Result<Applied, BillingError> {
        let Some(account) = self.payer(&paid.payer).await? else {
            return ignored("unknown buyer");
        };
        let Some(pack) = self.catalog.packs.get(&paid.pack) else {
            return ignored(format!("unknown pack `{}`", paid.pack));
        };
        let now = self.clock.now();
        let price = pack.price.money(self.catalog.currency);
        let payment = self
            .payments
            .record_payment(&Payment {
                id: PaymentId::from_ulid(self.ids.ulid()),
                account: account.clone(),
                kind: PaymentKind::Pack,
                external_id: paid.payment_id.clone(),
                payment_intent: paid.payment_intent.clone(),
                item: paid.pack.clone(),
                amount_minor: paid
                    .amount_minor
                    .or_else(|| price.to_minor_units().ok())
                    .unwrap_or(0),
                currency: paid.currency.unwrap_or(price.currency),
                credits: pack.total_credits(),
                withheld: 0,
                expires_at: pack
                    .expires_after_days
                    .map(|days| now + Duration::days(i64::from(days))),
                created_at: now,
            })
            .await?;
        let purchase = PurchaseCompleted {
            account: payment.account.clone(),
            pack: paid.pack,
            payment_id: payment.external_id.clone(),
        };
        match self.purchase_completed(purchase).await {
            Ok(_) | Err(BillingError::AlreadyGranted(_)) => {}
            Err(err) => return Err(err),
        }
        self.settle_withheld(payment).await?;
        done()
    }

    async fn subscription_synced(
        &self,
        snap: SubscriptionSnapshot,
    ) -> Result<Applied, BillingError> {
        let stored = self.subscriptions.by_external_id(&snap.external_id).await?;
        let account = match &stored {
            Some(sub) => sub.account.clone(),
            None => match self.payer(&snap.payer).await? {
                Some(account) => account,
                None => return ignored("unknown customer"),
            },
        };
        let version = SyncVersion::of(snap.observed_at, snap.status).0;
        if let Some(sub) = &stored {
            if sub.status == SubscriptionStatus::Canceled {
                return ignored("the subscription has ended");
            }
            if sub.version >= version {
                return ignored("stale: a newer state is applied");
            }
        }
        let Some((plan, interval)) = self
            .plan_for(snap.price.as_deref(), snap.plan.as_deref(), snap.interval)
            .or_else(|| stored.as_ref().map(|s| (s.plan.clone(), s.interval)))
        else {
            return ignored("the subscription's price is not in the catalog");
        };
        // A change waiting for the period's end: the provider already bills the new price
        // for the next period, but the plan paid for stays in force until it begins.
        let (plan, pending_plan) = match &stored {
            Some(s)
                if s.pending_plan.as_deref() == Some(plan.as_str())
                    && !advances(s, snap.period) =>
            {
                (s.plan.clone(), s.pending_plan.clone())
            }
            Some(s) => {
                let pending = s.pending_plan.clone().filter(|pending| *pending != plan);
                (plan, pending)
            }
            None => (plan, None),
        };
        let now = self.clock.now();
        let past_due_since = (snap.status == SubscriptionStatus::PastDue).then(|| {
            stored
                .as_ref()
                .and_then(|s| s.past_due_since)
                .unwrap_or(snap.observed_at)
        });
        let next = Subscription {
            id: stored.as_ref().map_or_else(
                || SubscriptionId::from_ulid(self.ids.ulid()),
                |s| s.id.clone(),
            ),
            account: account.clone(),
            pending_plan,
            plan,
            interval,
            status: snap.status,
            current_period: snap
                .period
                .or_else(|| stored.as_ref().and_then(|s| s.current_period)),
            trial_end: snap.trial_end,
            cancel_at_period_end: snap.cancel_at_period_end,
            external_id: Some(snap.external_id),
            created_at: stored
                .as_ref()
                .map(|s| s.created_at)
                .or(snap.created_at)
                .unwrap_or(now),
            canceled_at: (snap.status == SubscriptionStatus::Canceled)
                .then(|| snap.canceled_at.unwrap_or(snap.observed_at)),
            version,
            past_due_since,
        };
        self.save_subscription(&next, stored.as_ref()).await?;
        self.refresh_plan(&account).await?;
        done()
    }

    async fn invoice_paid(&self, invoice: InvoicePayment) -> Result<Applied, BillingError> {
        let stored = match &invoice.subscription {
            Some(id) => self.subscriptions.by_external_id(id).await?,
            None => None,
        };
        let account = match &stored {
            Some(sub) => sub.account.clone(),
            None => match self.payer(&invoice.payer).await? {
                Some(account) => account,
                None => return ignored("unknown customer"),
            },
        };
        let Some((plan, interval)) = self
            .plan_for(invoice.price.as_deref(), invoice.plan.as_deref(), None)
            .or_else(|| stored.as_ref().map(|s| (s.plan.clone(), s.interval)))
        else {
            return ignored("the invoice's price is not in the catalog");
        };
        // What the invoice says about the subscription, unless a newer state is applied.
        self.advance_subscription(&account, &plan, interval, &invoice, stored)
            .await?;
        let now = self.clock.now();
        let allowance = self
            .catalog
            .plan(&plan)
            .and_then(|p| p.allowance.as_ref())
            .filter(|a| a.cadence == Cadence::BillingPeriod && a.credits > 0);
        let grant = match (allowance, invoice.period) {
            (Some(a), Some(period)) if invoice.renews && period.end > now => Some((a, period)),
            _ => None,
        };
        let payment = self
            .payments
            .record_payment(&Payment {
                id: PaymentId::from_ulid(self.ids.ulid()),
                account: account.clone(),
                kind: PaymentKind::Invoice,
                external_id: invoice.invoice_id.clone(),
                payment_intent: invoice.payment_intent.clone(),
                item: plan.clone(),
                amount_minor: invoice.amount_minor,
                currency: invoice.currency.unwrap_or(self.catalog.currency),
                credits: grant.map_or(0, |(a, _)| a.credits),
                withheld: 0,
                expires_at: grant.map(|(_, period)| period.end),
                created_at: now,
            })
            .await?;
        if let Some((allowance, period)) = grant
            && payment.credits > 0
        {
            let command = LedgerCommand::Grant {
                amount: payment.credits,
                source: GrantSource::PeriodAllowance,
                priority: 0,
                expires_at: Some(period.end),
                rollover_cap: allowance.rollover_cap,
                // Carried over into the next billing period, as long as this one.
                rollover_until: Some(period.end + (period.end - period.start)),
                reference: Some(payment.grant_reference()),
                memo: Some(format!(
                    "`{plan}` allowance, invoice {}",
                    invoice.invoice_id
                )),
            };
            let k = key(format!("invoice:{}", invoice.invoice_id))?;
            match self
                .run(&account, k, command, LedgerPolicy::default())
                .await
            {
                Ok(_)
                | Err(BillingError::Store(StoreError::Conflict(Conflict::PeriodAllowance))) => {}
                Err(err) => return Err(err),
            }
        }
        self.settle_withheld(payment).await?;
        self.refresh_plan(&account).await?;
        done()
    }

    /// A paid invoice moves its subscription into the period it paid for, and out of
    /// arrears; a first invoice creates the subscription if its own event is still on the
    /// way. Nothing changes if a newer state is applied already.
    async fn advance_subscription(
        &self,
        account: &AccountId,
        plan: &str,
        interval: Interval,
        invoice: &InvoicePayment,
        stored: Option<Subscription>,
    ) -> Result<(), BillingError> {
        let (Some(external_id), Some(period)) = (&invoice.subscription, invoice.period) else {
            return Ok(());
        };
        let status = match stored.as_ref().map(|s| s.status) {
            Some(SubscriptionStatus::Canceled) => return Ok(()),
            Some(SubscriptionStatus::Trialing) | None if invoice.amount_minor == 0 => {
                SubscriptionStatus::Trialing
            }
            _ => SubscriptionStatus::Active,
        };
        let version = SyncVersion::of(invoice.observed_at, status).0;
        if stored.as_ref().is_some_and(|s| s.version >= version) {
            return Ok(());
        }
        let next = match &stored {
            Some(sub) => {
                let mut next = sub.clone();
                if sub.pending_plan.as_deref() == Some(plan) && advances(sub, Some(period)) {
                    // The change that waited for this period takes effect.
                    next.plan = plan.to_owned();
                    next.pending_plan = None;
                }
                if sub.current_period.is_none_or(|p| period.start >= p.start) {
                    next.current_period = Some(period);
                }
                next.status = status;
                next.past_due_since = None;
                next.version = version;
                next
            }
            None => Subscription {
                id: SubscriptionId::from_ulid(self.ids.ulid()),
                account: account.clone(),
                plan: plan.to_owned(),
                interval,
                status,
                current_period: Some(period),
                trial_end: (status == SubscriptionStatus::Trialing).then_some(period.end),
                cancel_at_period_end: false,
                pending_plan: None,
                external_id: Some(external_id.to_owned()),
                created_at: self.clock.now(),
                canceled_at: None,
                version,
                past_due_since: None,
            },
        };
        self.save_subscription(&next, stored.as_ref()).await
    }

    async fn invoice_failed(&self, failure: InvoiceFailure) -> Result<Applied, BillingError> {
        let Some(id) = &failure.subscription else {
            return ignored("not a subscription's invoice");
        };
        let Some(sub) = self.subscriptions.by_external_id(id).await? else {
            return ignored("unknown subscription");
        };
        let version = SyncVersion::of(failure.observed_at, SubscriptionStatus::PastDue).0;
        let notice = Notice::PaymentFailed {
            account: sub.account.clone(),
            final_attempt: failure.final_attempt,
        };
        if sub.version >= version {
            return ignored("stale: a newer state is applied");
        }
        if matches!(
            sub.status,
            SubscriptionStatus::Active | SubscriptionStatus::Trialing | SubscriptionStatus::PastDue
        ) {
            let mut next = sub.clone();
            next.status = SubscriptionStatus::PastDue;
            next.past_due_since = sub.past_due_since.or(Some(failure.observed_at));
            next.version = version;
            self.save_subscription(&next, Some(&sub)).await?;
            self.refresh_plan(&sub.account).await?;
        }
        Ok(Applied::Done(vec![notice]))
    }

    async fn charge_changed(&self, seen: ChargeState) -> Result<Applied, BillingError> {
        let merged = self.payments.merge_charge(&seen).await?;
        let Some(intent) = &merged.payment_intent else {
            return ignored("the charge names no payment intent");
        };
        let payments = self.payments.by_intent(intent).await?;
        if payments.is_empty() {
            // Kept: the payment's own event may come later, and will settle against it.
            return ignored("no payment for this charge yet; its state is kept");
        }
        for payment in payments {
            self.settle_withheld(payment).await?;
        }
        done()
    }

    /// Brings the credits withheld from a payment's grants to what its charges' refunds
    /// and dispute call for: takes back (what is unspent of) more, or returns what a won
    /// dispute released. The ledger key names the step (`from → to`), so a repeat replays.
    async fn settle_withheld(&self, payment: Payment) -> Result<(), BillingError> {
        let Some(intent) = payment.payment_intent.clone() else {
            return Ok(());
        };
        let mut payment = payment;
        for _ in 0..5 {
            let charges = self.payments.charges_for(&intent).await?;
            if charges.is_empty() {
                return Ok(());
            }
            let target = credits_withheld(
                payment.credits,
                &ChargeState::combined(&charges, payment.amount_minor),
            );
            let from = payment.withheld;
            let to = self.move_withheld(&payment, from, target).await?;
            if to == from || self.payments.set_withheld(&payment.id, from, to).await? {
                return Ok(());
            }
            // Another worker moved it meanwhile: read again.
            match self
                .payments
                .by_intent(&intent)
                .await?
                .into_iter()
                .find(|p| p.id == payment.id)
            {
                Some(fresh) => payment = fresh,
                None => return Ok(()),
            }
        }
        Err(StoreError::Conflict(Conflict::ChangedMeanwhile).into())
    }

    /// Moves a payment's withheld credits from `from` towards `target`; returns where it
    /// got (a clawback takes only what is unspent).
    async fn move_withheld(
        &self,
        payment: &Payment,
        from: Credits,
        target: Credits,
    ) -> Result<Credits, BillingError> {
        let reference = grant_reference(&payment.external_id);
        let step = format!("{}:{from}:{target}", payment.external_id);
        if target > from {
            let command = LedgerCommand::Clawback {
                reference,
                amount: target - from,
                memo: Some("the payment was refunded or disputed".into()),
            };
            let moved = self
                .run(
                    &payment.account,
                    key(format!("clawback:{step}"))?,
                    command,
                    LedgerPolicy::default(),
                )
                .await?;
            return Ok(from + moved.receipt.amount);
        }
        if target < from {
            let now = self.clock.now();
            if payment.expires_at.is_none_or(|at| at > now) {
                let command = LedgerCommand::Grant {
                    amount: from - target,
                    source: GrantSource::Returned,
                    priority: 0,
                    expires_at: payment.expires_at,
                    rollover_cap: 0,
                    rollover_until: None,
                    reference: Some(reference),
                    memo: Some("a dispute was decided for the payment".into()),
                };
                self.run(
                    &payment.account,
                    key(format!("return:{step}"))?,
                    command,
                    LedgerPolicy::default(),
                )
                .await?;
            }
            return Ok(target);
        }
        Ok(from)
    }
}
