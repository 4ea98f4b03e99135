//! Taking money: checkouts for packs and plans, quick buys, subscription changes, comps.
//! The provider (Stripe, or the local stand-in) is passed in; what it reports back is
//! applied through [`Billing::apply_payment_event`], the same path its webhooks take.

use super::{Billing, BillingError, key};
use crate::catalog::Interval;
use crate::ids::{AccountId, PrefixedId, SubscriptionId};
use crate::ledger::{GrantSource, LedgerCommand, LedgerPolicy};
use crate::ports::{
    CheckoutItem, CheckoutRequest, CheckoutSession, Conflict, PaymentGateway, PlanChange, QuickBuy,
    StoreError,
};
use crate::subscription::{Subscription, SubscriptionEffect, SubscriptionStatus};

/// Where the provider sends the customer back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnUrls {
    /// After paying.
    pub success_url: String,
    /// After giving up.
    pub cancel_url: String,
}

impl Billing {
    /// The account's customer at the provider, created (once) if the provider keeps them.
    async fn customer_for(
        &self,
        gateway: &dyn PaymentGateway,
        account: &AccountId,
    ) -> Result<Option<String>, BillingError> {
        let provider = gateway.provider();
        if let Some(customer) = self.payments.customer_of(provider, account).await? {
            return Ok(Some(customer));
        }
        let email = self
            .accounts
            .account_users(account)
            .await?
            .into_iter()
            .find(super::identity::has_mailbox)
            .map(|u| u.email)
            .unwrap_or_default();
        let created = gateway
            .create_customer(account, &email, format!("customer:{account}"))
            .await?;
        if let Some(customer) = &created {
            self.payments
                .link_customer(provider, customer, account)
                .await?;
        }
        // Two racing first checkouts: the first link wins, and both use it.
        Ok(match created {
            Some(_) => self.payments.customer_of(provider, account).await?,
            None => None,
        })
    }

    fn pack_item(&self, account_plan: &str, pack_id: &str) -> Result<CheckoutItem, BillingError> {
        let pack = self
            .catalog
            .packs
            .get(pack_id)
            .ok_or_else(|| BillingError::UnknownPack(pack_id.to_owned()))?;
        if pack
            .plans
            .as_ref()
            .is_some_and(|plans| !plans.iter().any(|p| p == account_plan))
        {
            return Err(BillingError::NotEntitled(
                crate::entitlements::Denial::NotInPlan {
                    plan: account_plan.to_owned(),
                },
            ));
        }
        Ok(CheckoutItem::Pack {
            pack: pack_id.to_owned(),
            price: pack.price.money(self.catalog.currency),
            provider_price: pack.price.stripe_price_id.clone(),
        })
    }

    /// Starts a hosted checkout for a credit pack.
    pub async fn checkout_pack(
        &self,
        gateway: &dyn PaymentGateway,
        account: &AccountId,
        pack: &str,
        urls: ReturnUrls,
        idempotency_key: &str,
    ) -> Result<CheckoutSession, BillingError> {
        let current = self.account(account).await?;
        let item = self.pack_item(&current.plan, pack)?;
        gateway.can_sell(&item, false)?;
        let customer = self.customer_for(gateway, account).await?;
        let request = CheckoutRequest {
            account: account.clone(),
            customer,
            item,
            success_url: urls.success_url,
            cancel_url: urls.cancel_url,
        };
        Ok(gateway
            .create_checkout(request, format!("checkout:{account}:{idempotency_key}"))
            .await?)
    }

    /// Starts a pack payment confirmed in the product's own page (a quick buy).
    pub async fn quick_buy(
        &self,
        gateway: &dyn PaymentGateway,
        account: &AccountId,
        pack: &str,
        idempotency_key: &str,
    ) -> Result<QuickBuy, BillingError> {
        let current = self.account(account).await?;
        let item = self.pack_item(&current.plan, pack)?;
        gateway.can_sell(&item, true)?;
        let customer = self.customer_for(gateway, account).await?;
        let request = CheckoutRequest {
            account: account.clone(),
            customer,
            item,
            success_url: String::new(),
            cancel_url: String::new(),
        };
        Ok(gateway
            .quick_buy(request, format!("quick-buy:{account}:{idempotency_key}"))
            .await?)
    }

    /// Starts a hosted checkout for a plan: its trial only if the account never had one,
    /// promotion codes allowed; refused if a live subscription exists (change it instead).
    pub async fn checkout_subscription(
        &self,
        gateway: &dyn PaymentGateway,
        account: &AccountId,
        plan_id: &str,
        interval: Interval,
        urls: ReturnUrls,
        idempotency_key: &str,
    ) -> Result<CheckoutSession, BillingError> {
        self.account(account).await?;
        let plan = self.catalog.plan(plan_id).ok_or_else(|| {
            crate::subscription::SubscriptionError::UnknownPlan {
                plan: plan_id.to_owned(),
            }
        })?;
        let price = plan.prices.get(&interval).ok_or_else(|| {
            crate::subscription::SubscriptionError::NotForSale {
                plan: plan_id.to_owned(),
                interval,
            }
        })?;
        if let Some(live) = self.subscriptions.current(account).await? {
            return Err(BillingError::AlreadySubscribed(live.plan));
        }
        let trial_days = if self.subscriptions.trialed(account).await? {
            0
        } else {
            plan.trial_days
        };
        let item = CheckoutItem::Subscription {
            plan: plan_id.to_owned(),
            interval,
            price: price.money(self.catalog.currency),
            provider_price: price.stripe_price_id.clone(),
            trial_days,
            allow_promotion_codes: true,
        };
        gateway.can_sell(&item, false)?;
        let customer = self.customer_for(gateway, account).await?;
        let request = CheckoutRequest {
            account: account.clone(),
            customer,
            item,
            success_url: urls.success_url,
            cancel_url: urls.cancel_url,
        };
        Ok(gateway
            .create_checkout(request, format!("checkout:{account}:{idempotency_key}"))
            .await?)
    }

    /// Ends the account's subscription at the period's end (or now), or takes a pending end
    /// back (`resume`). A comp (no provider) ends at once whatever is asked.
    pub async fn set_cancellation(
        &self,
        gateway: &dyn PaymentGateway,
        account: &AccountId,
        at_period_end: bool,
        resume: bool,
    ) -> Result<Subscription, BillingError> {
        let sub = self
            .subscriptions
            .current(account)
            .await?
            .ok_or(BillingError::SubscriptionNotFound)?;
        if sub.external_id.is_none() {
            if resume {
                return Ok(sub);
            }
            let mut ended = sub.clone();
            ended.status = SubscriptionStatus::Canceled;
            ended.canceled_at = Some(self.clock.now());
            self.subscriptions
                .save(&ended, Some(sub.expected()))
                .await?;
            self.refresh_plan(account).await?;
            return Ok(ended);
        }
        let events = gateway
            .set_cancellation(&sub, at_period_end, resume)
            .await?;
        for event in events {
            self.apply_payment_event(event).await?;
        }
        self.subscriptions
            .get(&sub.id)
            .await?
            .ok_or(BillingError::SubscriptionNotFound)
    }

    /// Moves the account's subscription to another plan, at once or at the period's end as
    /// the catalog's `plan_changes` says (see [`crate::subscription::change_plan`]); asking
    /// for the plan in force takes back a pending change. The provider bills the change
    /// (at once: the prorated difference now); what it reports back is applied as its
    /// webhooks would be. A comp's plan is an admin's to change.
    pub async fn change_plan(
        &self,
        gateway: &dyn PaymentGateway,
        account: &AccountId,
        to: &str,
        idempotency_key: &str,
    ) -> Result<Subscription, BillingError> {
        let sub = self
            .subscriptions
            .current(account)
            .await?
            .ok_or(BillingError::SubscriptionNotFound)?;
        let transition = crate::subscription::change_plan(&sub, to, &self.catalog)?;
        if sub.external_id.is_none() {
            return Err(BillingError::Invalid {
                field: "plan",
                message: "this plan was given by an admin; ask them to change it".into(),
            });
        }
        let immediately = transition.subscription.plan != sub.plan;
        let provider_price = self
            .catalog
            .plan(to)
            .and_then(|p| p.prices.get(&sub.interval))
            .and_then(|p| p.stripe_price_id.clone());
        let events = gateway
            .change_plan(
                &sub,
                PlanChange {
                    plan: to.to_owned(),
                    interval: sub.interval,
                    provider_price,
                    immediately,
                },
                format!("change-plan:{account}:{idempotency_key}"),
            )
            .await?;
        // Ours first (the plan, or the pending one), then the provider's report, which
        // agrees with it.
        self.subscriptions
            .save(&transition.subscription, Some(sub.expected()))
            .await?;
        for effect in transition.effects {
            match effect {
                SubscriptionEffect::GrantAllowance {
                    account,
                    credits,
                    rollover_cap,
                    period,
                    key: reference,
                } => {
                    let command = LedgerCommand::Grant {
                        amount: credits,
                        source: GrantSource::PeriodAllowance,
                        priority: 0,
                        expires_at: Some(period.end),
                        rollover_cap,
                        rollover_until: None,
                        memo: Some(format!(
                            "upgrade to `{to}`: the rest of the period's allowance"
                        )),
                        reference: Some(reference.clone()),
                    };
                    match self
                        .run(&account, key(reference)?, command, LedgerPolicy::default())
                        .await
                    {
                        Ok(_)
                        | Err(BillingError::Store(StoreError::Conflict(
                            Conflict::PeriodAllowance,
                        ))) => {}
                        Err(err) => return Err(err),
                    }
                }
                SubscriptionEffect::SetAccountPlan { .. } => {}
            }
        }
        for event in events {
            self.apply_payment_event(event).await?;
        }
        self.refresh_plan(account).await?;
        self.subscriptions
            .get(&sub.id)
            .await?
            .ok_or(BillingError::SubscriptionNotFound)
    }

    /// Puts an account on a plan without payment (a comp), until an admin ends it or a paid
    /// subscription takes its place. Refused while a paid subscription is live.
    pub async fn comp(
        &self,
        account: &AccountId,
        plan_id: &str,
    ) -> Result<Subscription, BillingError> {
        self.account(account).await?;
        if self.catalog.plan(plan_id).is_none() {
            return Err(crate::subscription::SubscriptionError::UnknownPlan {
                plan: plan_id.to_owned(),
            }
            .into());
        }
        let live = self.subscriptions.current(account).await?;
        if let Some(sub) = &live
            && sub.external_id.is_some()
        {
            return Err(BillingError::AlreadySubscribed(sub.plan.clone()));
        }
        let now = self.clock.now();
        let comp = match &live {
            Some(sub) => Subscription {
                plan: plan_id.to_owned(),
                ..sub.clone()
            },
            None => Subscription {
                id: SubscriptionId::from_ulid(self.ids.ulid()),
                account: account.clone(),
                plan: plan_id.to_owned(),
                interval: Interval::Month,
                status: SubscriptionStatus::Active,
                current_period: None,
                trial_end: None,
                cancel_at_period_end: false,
                pending_plan: None,
                external_id: None,
                created_at: now,
                canceled_at: None,
                version: 0,
                past_due_since: None,
            },
        };
        self.subscriptions
            .save(&comp, live.as_ref().map(Subscription::expected))
            .await?;
        self.refresh_plan(account).await?;
        Ok(comp)
    }
}
