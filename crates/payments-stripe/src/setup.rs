//! `tollgate stripe setup`: the catalog's products and prices at Stripe.
//!
//! Each plan and each pack is a Stripe product with a fixed id (`tollgate_plan_pro`,
//! `tollgate_pack_small`); each price (plan × interval, pack) carries a lookup key
//! (`tollgate_plan_pro_month`, `tollgate_pack_small`) by which it is found again. A price
//! that is already right is kept; one whose amount, currency or interval differ from the
//! catalog is replaced by a new price that takes over the lookup key (Stripe's prices
//! cannot change amount; the old one stays for the subscriptions that use it). The
//! outcome is the `stripe_price_id` of every catalog price, to put in the configuration.
//! A dry run reads only.

use std::collections::HashMap;

use billing_core::catalog::{Catalog, Interval};
use billing_core::ports::PaymentError;
use stripe::{StripeError, StripeRequest};
use stripe_product::price::{
    CreatePrice, CreatePriceRecurring, CreatePriceRecurringInterval, ListPrice, RetrievePrice,
};
use stripe_product::product::{CreateProduct, RetrieveProduct};
use stripe_shared::RecurringInterval;

use crate::gateway::{StripePayments, classify};

/// One price of the catalog, as Stripe should have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogPrice {
    /// Where its id goes in the configuration (`catalog.plans.pro.prices.month`).
    pub config_key: String,
    /// The Stripe product's id (`tollgate_plan_pro`).
    pub product_id: String,
    /// The product's name.
    pub product_name: String,
    /// The price's lookup key (`tollgate_plan_pro_month`).
    pub lookup_key: String,
    /// Amount in the currency's minor units.
    pub amount_minor: i64,
    /// Lowercase ISO currency.
    pub currency: String,
    /// Billed every month or year; `None` for a one-time price (a pack).
    pub interval: Option<Interval>,
    /// The `stripe_price_id` the catalog already names.
    pub configured: Option<String>,
}

/// Every price the catalog sells (plans with prices, packs), in a stable order.
pub fn catalog_prices(catalog: &Catalog) -> Result<Vec<CatalogPrice>, String> {
    let mut out = Vec::new();
    for (id, plan) in &catalog.plans {
        for (interval, price) in &plan.prices {
            let money = price.money(catalog.currency);
            out.push(CatalogPrice {
                config_key: format!("catalog.plans.{id}.prices.{}", interval.as_str()),
                product_id: format!("tollgate_plan_{id}"),
                product_name: plan.name.clone(),
                lookup_key: format!("tollgate_plan_{id}_{}", interval.as_str()),
                amount_minor: money
                    .to_minor_units()
                    .map_err(|e| format!("plan `{id}` {}: {e}", interval.as_str()))?,
                currency: money.currency.code().to_ascii_lowercase(),
                interval: Some(*interval),
                configured: price.stripe_price_id.clone(),
            });
        }
    }
    for (id, pack) in &catalog.packs {
        let money = pack.price.money(catalog.currency);
        out.push(CatalogPrice {
            config_key: format!("catalog.packs.{id}.price"),
            product_id: format!("tollgate_pack_{id}"),
            product_name: pack.name.clone(),
            lookup_key: format!("tollgate_pack_{id}"),
            amount_minor: money
                .to_minor_units()
                .map_err(|e| format!("pack `{id}`: {e}"))?,
            currency: money.currency.code().to_ascii_lowercase(),
            interval: None,
            configured: pack.price.stripe_price_id.clone(),
        });
    }
    Ok(out)
}

/// What setup did (or, in a dry run, would do) for one price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceOutcome {
    /// The catalog's price.
    pub price: CatalogPrice,
    /// The Stripe price id to configure (`None`: a dry run that would create one).
    pub stripe_price_id: Option<String>,
    /// What happened, in a line.
    pub note: String,
}

/// The outcome of setup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupReport {
    /// Products created (or to create).
    pub products_created: Vec<String>,
    /// Per price.
    pub prices: Vec<PriceOutcome>,
}

impl SetupReport {
    /// The configuration that names every price, as TOML lines.
    pub fn config_lines(&self) -> Vec<String> {
        self.prices
            .iter()
            .filter_map(|p| {
                p.stripe_price_id
                    .as_ref()
                    .map(|id| format!("{}.stripe_price_id = \"{id}\"", p.price.config_key))
            })
            .collect()
    }
}

/// Why a Stripe price does not match the catalog's (`None`: it does).
fn mismatch(want: &CatalogPrice, have: &stripe_shared::Price) -> Option<String> {
    let interval = have
        .recurring
        .as_ref()
        .map(|r| match r.interval {
            RecurringInterval::Month => "month",
            RecurringInterval::Year => "year",
            _ => "other",
        })
        .unwrap_or("once");
    let want_interval = want.interval.map_or("once", Interval::as_str);
    let mut why = Vec::new();
    let currency = have.currency.to_string();
    if have.unit_amount != Some(want.amount_minor) || currency != want.currency {
        why.push(format!(
            "Stripe has {} {}, the catalog {} {}",
            have.unit_amount
                .map_or_else(|| "no amount".into(), |a| a.to_string()),
            currency,
            want.amount_minor,
            want.currency
        ));
    }
    if interval != want_interval {
        why.push(format!(
            "Stripe bills {interval}, the catalog {want_interval}"
        ));
    }
    if !have.active {
        why.push("the Stripe price is archived".into());
    }
    (!why.is_empty()).then(|| why.join("; "))
}

impl StripePayments {
    async fn product_exists(&self, id: &str) -> Result<bool, PaymentError> {
        let request = RetrieveProduct::new(id);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match request.customize().send(&self.client).await {
                Ok(_) => return Ok(true),
                Err(StripeError::Stripe(_, 404)) => return Ok(false),
                Err(err) => match classify(err) {
                    PaymentError::Unavailable(_) if attempt < 3 => {}
                    other => return Err(other),
                },
            }
        }
    }

    async fn price(&self, id: &str) -> Result<Option<stripe_shared::Price>, PaymentError> {
        let request = RetrievePrice::new(id);
        match request.customize().send(&self.client).await {
            Ok(price) => Ok(Some(price)),
            Err(StripeError::Stripe(_, 404)) => Ok(None),
            Err(err) => Err(classify(err)),
        }
    }

    async fn price_by_lookup_key(
        &self,
        key: &str,
    ) -> Result<Option<stripe_shared::Price>, PaymentError> {
        let request = ListPrice::new().lookup_keys(vec![key.to_owned()]).limit(1);
        let page = self
            .call(None, |s| {
                request.customize().request_strategy(s).send(&self.client)
            })
            .await?;
        Ok(page.data.into_iter().next())
    }

    async fn create_price(&self, want: &CatalogPrice) -> Result<String, PaymentError> {
        let currency: stripe_types::Currency = want.currency.parse().unwrap_or_else(|n| match n {});
        let mut request = CreatePrice::new(currency)
            .product(want.product_id.clone())
            .unit_amount(want.amount_minor)
            .lookup_key(want.lookup_key.clone())
            .transfer_lookup_key(true)
            .nickname(want.config_key.clone())
            .metadata(HashMap::from([(
                "tollgate".to_owned(),
                want.config_key.clone(),
            )]));
        if let Some(interval) = want.interval {
            request = request.recurring(CreatePriceRecurring::new(match interval {
                Interval::Month => CreatePriceRecurringInterval::Month,
                Interval::Year => CreatePriceRecurringInterval::Year,
            }));
        }
        // The same catalog price creates one Stripe price, however often setup runs.
        let key = format!(
            "tollgate:setup:{}:{}:{}:{}",
            want.lookup_key,
            want.amount_minor,
            want.currency,
            want.interval.map_or("once", Interval::as_str)
        );
        let price = self
            .call(Some(&key), |s| {
                request.customize().request_strategy(s).send(&self.client)
            })
            .await?;
        Ok(price.id.as_str().to_owned())
    }

    /// Creates or checks the catalog's products and prices at Stripe (with `dry_run`, only
    /// reads and says what it would do).
    pub async fn setup(
        &self,
        prices: &[CatalogPrice],
        dry_run: bool,
    ) -> Result<SetupReport, PaymentError> {
        let mut report = SetupReport::default();
        let mut checked: HashMap<String, bool> = HashMap::new();
        for want in prices {
            if !checked.contains_key(&want.product_id) {
                let exists = self.product_exists(&want.product_id).await?;
                if !exists {
                    if !dry_run {
                        let request = CreateProduct::new(want.product_name.clone())
                            .id(want.product_id.clone())
                            .metadata(HashMap::from([("tollgate".to_owned(), "1".to_owned())]));
                        let key = format!("tollgate:setup:product:{}", want.product_id);
                        self.call(Some(&key), |s| {
                            request.customize().request_strategy(s).send(&self.client)
                        })
                        .await?;
                    }
                    report.products_created.push(want.product_id.clone());
                }
                checked.insert(want.product_id.clone(), exists);
            }
            // The configured price if it is right, else the one under the lookup key.
            let configured = match &want.configured {
                Some(id) => self.price(id).await?.map(|p| (id.clone(), p)),
                None => None,
            };
            let found = match configured {
                Some(found) => Some(found),
                None => self
                    .price_by_lookup_key(&want.lookup_key)
                    .await?
                    .map(|p| (p.id.as_str().to_owned(), p)),
            };
            let outcome = match found {
                Some((id, price)) => match mismatch(want, &price) {
                    None => PriceOutcome {
                        note: if want.configured.as_deref() == Some(id.as_str()) {
                            "as configured".into()
                        } else {
                            "found at Stripe".into()
                        },
                        stripe_price_id: Some(id),
                        price: want.clone(),
                    },
                    Some(why) if dry_run => PriceOutcome {
                        note: format!("would replace {id}: {why}"),
                        stripe_price_id: None,
                        price: want.clone(),
                    },
                    Some(why) => PriceOutcome {
                        note: format!("replaced {id}: {why}"),
                        stripe_price_id: Some(self.create_price(want).await?),
                        price: want.clone(),
                    },
                },
                None if dry_run => PriceOutcome {
                    note: match &want.configured {
                        Some(id) => format!("would create (the configured {id} is not at Stripe)"),
                        None => "would create".into(),
                    },
                    stripe_price_id: None,
                    price: want.clone(),
                },
                None => PriceOutcome {
                    note: "created".into(),
                    stripe_price_id: Some(self.create_price(want).await?),
                    price: want.clone(),
                },
            };
            report.prices.push(outcome);
        }
        Ok(report)
    }
}
