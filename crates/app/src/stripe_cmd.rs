//! `tollgate stripe setup` and `tollgate stripe sync`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use app::settings::Loaded;
use app::system::SystemClock;
use payments_stripe::{StripeConfig, StripePayments};

fn gateway(loaded: &Loaded) -> Result<StripePayments, ExitCode> {
    use secrecy::ExposeSecret;
    let payments = &loaded.settings.payments;
    let Some(key) = &payments.stripe_secret_key else {
        eprintln!("error: set STRIPE_SECRET_KEY (or TOLLGATE__PAYMENTS__STRIPE_SECRET_KEY)");
        return Err(ExitCode::FAILURE);
    };
    StripePayments::new(
        &StripeConfig {
            secret_key: key.expose_secret().to_owned(),
            api_base: payments.stripe_api_base.clone(),
            timeout: Duration::from_secs(payments.stripe_timeout_seconds),
        },
        Arc::new(SystemClock),
    )
    .map_err(|err| {
        eprintln!("error: {err}");
        ExitCode::FAILURE
    })
}

/// Creates or checks the catalog's products and prices; prints the configuration lines
/// that name them (stdout) and what was done (stderr).
#[expect(
    clippy::print_stdout,
    reason = "the configuration to paste is the command's output"
)]
pub async fn setup(loaded: Loaded, dry_run: bool) -> ExitCode {
    let stripe = match gateway(&loaded) {
        Ok(stripe) => stripe,
        Err(code) => return code,
    };
    let prices = match payments_stripe::setup::catalog_prices(&loaded.catalog) {
        Ok(prices) => prices,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    if prices.is_empty() {
        eprintln!("the catalog sells nothing (no plan has prices, no packs)");
        return ExitCode::SUCCESS;
    }
    let report = match stripe.setup(&prices, dry_run).await {
        Ok(report) => report,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let verb = if dry_run { "would create" } else { "created" };
    for product in &report.products_created {
        eprintln!("product {product}: {verb}");
    }
    for outcome in &report.prices {
        eprintln!(
            "{} ({}): {}",
            outcome.price.config_key, outcome.price.lookup_key, outcome.note
        );
    }
    let lines = report.config_lines();
    if !lines.is_empty() {
        eprintln!("put these in your configuration (catalog file):");
        for line in lines {
            println!("{line}");
        }
    }
    let changed = report.products_created.len()
        + report
            .prices
            .iter()
            .filter(|p| p.price.configured.as_ref() != p.stripe_price_id.as_ref())
            .count();
    if changed == 0 {
        eprintln!("Stripe matches the catalog");
    } else if dry_run {
        eprintln!("dry run: nothing was changed at Stripe");
    }
    ExitCode::SUCCESS
}

/// Compares every Stripe subscription with Tollgate's and (unless `dry_run`) applies
/// Stripe's state where they differ. Exits 1 if a drift could not be repaired.
#[expect(
    clippy::print_stdout,
    reason = "the list of drifted subscriptions is the command's output"
)]
pub async fn sync(loaded: Loaded, dry_run: bool) -> ExitCode {
    let stripe = match gateway(&loaded) {
        Ok(stripe) => stripe,
        Err(code) => return code,
    };
    let store = match crate::open_store(&loaded).await {
        Ok(store) => Arc::new(store),
        Err(code) => return code,
    };
    let billing = app::server::billing(
        &loaded.settings,
        loaded.catalog.clone(),
        store,
        Arc::new(SystemClock),
    );
    let subscriptions = match stripe.list_subscriptions().await {
        Ok(subscriptions) => subscriptions,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let report = match billing
        .reconcile_subscriptions(subscriptions, !dry_run)
        .await
    {
        Ok(report) => report,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut unrepaired = 0;
    for drift in &report.drifted {
        let outcome = match &drift.repair {
            None => "not repaired (dry run)".to_owned(),
            Some(Ok(())) => "repaired".to_owned(),
            Some(Err(why)) => {
                unrepaired += 1;
                format!("NOT repaired: {why}")
            }
        };
        let account = drift
            .account
            .as_ref()
            .map_or_else(|| "-".to_owned(), ToString::to_string);
        println!(
            "{} {account}: {}; {outcome}",
            drift.external_id,
            drift.differences.join(", ")
        );
    }
    for id in &report.unknown {
        println!("{id} -: names no Tollgate account; left alone");
    }
    eprintln!(
        "{} subscription(s) at Stripe: {} in step, {} drifted, {} unknown",
        report.checked,
        report.in_step,
        report.drifted.len(),
        report.unknown.len()
    );
    if unrepaired > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
