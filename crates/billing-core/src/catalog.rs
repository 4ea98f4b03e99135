//! The catalog: plans, credit packs, action costs, meters, models and rewards — everything a
//! product configures rather than codes.
//!
//! [`Catalog::validate`] checks the whole catalog and names the exact key of each problem
//! (`catalog.packs.starter.plans[0]`), so an operator can fix a file without guessing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ledger::Credits;
use crate::money::{Currency, Money, decimal_text};
use crate::quota::{QuotaPeriod, Timezone};

/// Every configurable product fact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Currency of prices that do not name one.
    #[serde(default = "default_currency")]
    pub currency: Currency,
    /// IANA time zone in which days and months (quotas, daily and monthly allowances) begin.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// The plan of an account without a subscription.
    pub default_plan: String,
    /// What one credit is worth, for models charged by cost; a plan may override it.
    #[serde(default)]
    pub credit_value: Option<Money>,
    /// Plans by id.
    #[serde(default)]
    pub plans: BTreeMap<String, Plan>,
    /// Credit packs by id.
    #[serde(default)]
    pub packs: BTreeMap<String, Pack>,
    /// The credit cost of each named action (`short_chat = 5`).
    #[serde(default)]
    pub actions: BTreeMap<String, Credits>,
    /// Usage meters by id (messages, exports, tokens…).
    #[serde(default)]
    pub meters: BTreeMap<String, Meter>,
    /// LLM models by the id clients use.
    #[serde(default)]
    pub models: BTreeMap<String, Model>,
    /// Rewards (credits for an engagement) by id.
    #[serde(default)]
    pub rewards: BTreeMap<String, Reward>,
    /// What happens when a renewal is not paid.
    #[serde(default)]
    pub dunning: Dunning,
    /// When a subscriber's move to another plan takes effect.
    #[serde(default)]
    pub plan_changes: PlanChanges,
    /// Asynchronous task types by id.
    #[serde(default)]
    pub tasks: BTreeMap<String, TaskType>,
}

/// How a task type runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskRun {
    /// Tollgate runs it: one call of `model` with the prompt `prompt` filled from the input.
    Llm,
    /// The product's own worker claims it over HTTP and reports the result.
    External,
}

/// A type of asynchronous task.
///
/// Its price: with an `action`, that action's cost is held and charged (an external worker
/// may report a lower actual cost); an `llm` task without one holds the call's worst case
/// (the gateway's rule) and is charged the call's exact cost. The plan in force must
/// include `feature` (and the action's feature, by the action rule) and, for `llm`, the
/// model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskType {
    /// How it runs.
    pub run: TaskRun,
    /// The action whose cost it holds and charges.
    #[serde(default)]
    pub action: Option<String>,
    /// The plan feature it needs.
    #[serde(default)]
    pub feature: Option<String>,
    /// Seconds from creation after which an unfinished task fails and is refunded.
    #[serde(default = "default_task_timeout")]
    pub timeout_seconds: u32,
    /// The most times it is claimed (an expired lease or a retryable failure claims again).
    #[serde(default = "default_task_attempts")]
    pub max_attempts: u32,
    /// A claim's lease in seconds when the worker does not ask for another; a worker
    /// extends it by heartbeats.
    #[serde(default = "default_task_lease")]
    pub lease_seconds: u32,
    /// For `llm`: the catalog model to call.
    #[serde(default)]
    pub model: Option<String>,
    /// For `llm`: the prompt, with `{{field}}` taken from the input (`{{input}}`: all of it).
    #[serde(default)]
    pub prompt: Option<String>,
    /// For `llm`: the output cap (the plan's or the model's default if omitted).
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
}

fn default_task_timeout() -> u32 {
    600
}

fn default_task_attempts() -> u32 {
    3
}

fn default_task_lease() -> u32 {
    60
}

/// The dunning policy: after a renewal payment fails, the plan stays in force for
/// `grace_days` (the provider keeps retrying meanwhile); then the account has the default
/// plan's entitlements until a payment succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dunning {
    /// Days of access after the first failed renewal.
    #[serde(default = "seven")]
    pub grace_days: u32,
}

impl Default for Dunning {
    fn default() -> Self {
        Self { grace_days: 7 }
    }
}

/// When a plan change takes effect: an upgrade (a higher `tier`, or on equal tiers a higher
/// price) and a downgrade each at once (the prorated difference billed now) or at the end
/// of the period already paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanChanges {
    /// Default: `now`.
    #[serde(default = "ChangeTiming::now")]
    pub upgrade: ChangeTiming,
    /// Default: `period_end`.
    #[serde(default = "ChangeTiming::period_end")]
    pub downgrade: ChangeTiming,
}

impl Default for PlanChanges {
    fn default() -> Self {
        Self {
            upgrade: ChangeTiming::Now,
            downgrade: ChangeTiming::PeriodEnd,
        }
    }
}

/// When a change takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeTiming {
    /// At once.
    Now,
    /// When the period already paid ends.
    PeriodEnd,
}

impl ChangeTiming {
    fn now() -> Self {
        Self::Now
    }

    fn period_end() -> Self {
        Self::PeriodEnd
    }
}

fn seven() -> u32 {
    7
}

fn default_currency() -> Currency {
    Currency::USD
}

fn default_timezone() -> String {
    "UTC".to_owned()
}

fn default_true() -> bool {
    true
}

/// A plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Display name.
    pub name: String,
    /// Display description.
    #[serde(default)]
    pub description: Option<String>,
    /// Prices by billing interval; a plan without prices is free.
    #[serde(default)]
    pub prices: BTreeMap<Interval, Price>,
    /// Days of free trial when subscribing.
    #[serde(default)]
    pub trial_days: u32,
    /// Credits granted once at sign-up to accounts that start on this plan.
    #[serde(default)]
    pub welcome_credits: Credits,
    /// Credits granted every period.
    #[serde(default)]
    pub allowance: Option<Allowance>,
    /// Usage limits by meter id; a meter a plan does not list is not limited on it.
    #[serde(default)]
    pub quotas: BTreeMap<String, QuotaRule>,
    /// Model ids the plan may use; `["*"]` for all.
    #[serde(default)]
    pub models: Vec<String>,
    /// Feature flags the plan turns on.
    #[serde(default)]
    pub features: BTreeSet<String>,
    /// Requests per window for a signed-in user on this plan.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// How far below zero the balance may go.
    #[serde(default)]
    pub overdraft: Credits,
    /// Overrides the catalog's credit value for this plan.
    #[serde(default)]
    pub credit_value: Option<Money>,
    /// The output cap of a model call that names none (`max_tokens`), within the model's
    /// own `max_output_tokens`; omitted, the model's.
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    /// Upgrade order: moving to a higher tier is an upgrade (applied at once), to a lower
    /// one a downgrade (applied at the period's end).
    #[serde(default)]
    pub tier: u32,
    /// Whether the public plan list shows it.
    #[serde(default = "default_true")]
    pub public: bool,
}

impl Plan {
    /// Whether the plan may use `model`.
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == "*" || m == model)
    }

    /// Whether the plan costs money (and so is sold as a subscription).
    pub fn is_paid(&self) -> bool {
        !self.prices.is_empty()
    }
}

/// A billing interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    /// Monthly.
    Month,
    /// Yearly.
    Year,
}

impl Interval {
    /// `month` or `year`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Month => "month",
            Self::Year => "year",
        }
    }
}

/// A price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// The amount in major units, as a string (`"9.99"`).
    #[serde(with = "decimal_text")]
    pub amount: Decimal,
    /// The currency (the catalog's if omitted).
    #[serde(default)]
    pub currency: Option<Currency>,
    /// The Stripe Price this corresponds to.
    #[serde(default)]
    pub stripe_price_id: Option<String>,
}

impl Price {
    /// The price as money, in its own or the catalog's currency.
    pub fn money(&self, catalog_currency: Currency) -> Money {
        Money::new(self.amount, self.currency.unwrap_or(catalog_currency))
    }
}

/// How often an allowance is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cadence {
    /// Every day (in the catalog's time zone).
    Day,
    /// Every calendar month (in the catalog's time zone).
    Month,
    /// Every billing period of the subscription (paid plans).
    BillingPeriod,
}

/// Credits granted every period; they expire at the period's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allowance {
    /// Credits per period.
    pub credits: Credits,
    /// How often.
    pub cadence: Cadence,
    /// How much of what is left at a period's end carries into the next (0: none).
    #[serde(default)]
    pub rollover_cap: Credits,
}

/// A plan's limit on one meter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRule {
    /// Units per period; omitted means unlimited (but still counted).
    #[serde(default)]
    pub limit: Option<u64>,
    /// The period the limit applies to: required for a counter, omitted for a gauge (which
    /// never resets).
    #[serde(default)]
    pub period: Option<QuotaPeriod>,
}

/// A request rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub requests: u32,
    /// The window in seconds.
    #[serde(default = "sixty")]
    pub per_seconds: u32,
}

fn sixty() -> u32 {
    60
}

/// A credit pack for sale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pack {
    /// Display name.
    pub name: String,
    /// Credits bought.
    pub credits: Credits,
    /// Extra credits given with it.
    #[serde(default)]
    pub bonus_credits: Credits,
    /// What it costs.
    pub price: Price,
    /// Plans whose accounts may buy it; omitted means every plan.
    #[serde(default)]
    pub plans: Option<Vec<String>>,
    /// Days until purchased credits expire; omitted means never.
    #[serde(default)]
    pub expires_after_days: Option<u32>,
}

impl Pack {
    /// Credits the pack grants, bonus included.
    pub fn total_credits(&self) -> Credits {
        self.credits.saturating_add(self.bonus_credits)
    }
}

/// A usage meter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meter {
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// What one unit is (a message, an export, a token…).
    #[serde(default)]
    pub unit: Option<String>,
    /// A counter (usage per period, starting again at each period) or a gauge (a level
    /// that goes up and down and never resets: seats, storage).
    #[serde(default)]
    pub kind: MeterKind,
}

/// What a meter counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterKind {
    /// Units used per period; only goes up, and starts again from zero each period.
    #[default]
    Counter,
    /// A level that goes up and down (units added and released) and never resets.
    Gauge,
}

impl MeterKind {
    /// `counter` or `gauge`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
        }
    }
}

/// An LLM provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// OpenAI.
    Openai,
    /// Anthropic.
    Anthropic,
    /// Google Gemini.
    Gemini,
    /// The deterministic mock provider.
    Mock,
}

/// An LLM model as clients name it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Who serves it.
    pub provider: Provider,
    /// The provider's model name.
    pub upstream: String,
    /// Price per million input tokens.
    #[serde(with = "decimal_text")]
    pub input_per_mtok: Decimal,
    /// Price per million output tokens.
    #[serde(with = "decimal_text")]
    pub output_per_mtok: Decimal,
    /// Price per million cached input tokens (the input price if omitted).
    #[serde(default, with = "decimal_text::option")]
    pub cached_input_per_mtok: Option<Decimal>,
    /// Currency of the token prices (the catalog's if omitted).
    #[serde(default)]
    pub currency: Option<Currency>,
    /// How a call's usage becomes credits.
    #[serde(default)]
    pub charge: Charge,
    /// The most output tokens a call may ask for (a client's `max_tokens` is capped to it,
    /// and a call that names none gets it): the output side of the worst case held.
    #[serde(default = "default_max_output_tokens")]
    pub max_output_tokens: u32,
    /// Models (of this catalog) to try in turn when this one's provider is rate limiting or
    /// failing before it answers; the call is charged at the prices of the one that served.
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

fn default_max_output_tokens() -> u32 {
    crate::gateway::DEFAULT_MAX_OUTPUT_TOKENS
}

/// How a model call's usage converts to credits. Results round up to whole credits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Charge {
    /// Credits = cost × markup ÷ credit value.
    Cost {
        /// Multiplier on the provider's cost.
        #[serde(default = "one", with = "decimal_text")]
        markup: Decimal,
    },
    /// Credits = input tokens × input weight + output tokens × output weight (for plans
    /// whose allowance is counted in tokens).
    Tokens {
        /// Credits per input token.
        #[serde(default = "one", with = "decimal_text")]
        input_weight: Decimal,
        /// Credits per output token.
        #[serde(default = "one", with = "decimal_text")]
        output_weight: Decimal,
    },
}

impl Default for Charge {
    fn default() -> Self {
        Self::Cost { markup: one() }
    }
}

fn one() -> Decimal {
    Decimal::ONE
}

/// Tokens a model call used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Input tokens not served from cache.
    pub input: u64,
    /// Input tokens served from the provider's cache.
    pub cached_input: u64,
    /// Output tokens, reasoning included (they are billed as output).
    pub output: u64,
    /// Of the output tokens, those spent reasoning (recorded, not billed separately).
    #[serde(default)]
    pub reasoning: u64,
}

impl Model {
    /// What the call cost at the provider's prices.
    pub fn cost(&self, usage: TokenUsage, catalog_currency: Currency) -> Money {
        let per_million = Decimal::from(1_000_000u32);
        let cached_price = self.cached_input_per_mtok.unwrap_or(self.input_per_mtok);
        let amount = (Decimal::from(usage.input) * self.input_per_mtok
            + Decimal::from(usage.cached_input) * cached_price
            + Decimal::from(usage.output) * self.output_per_mtok)
            / per_million;
        Money::new(amount, self.currency.unwrap_or(catalog_currency))
    }

    /// The credits to charge for a call, rounded up. `credit_value` is what one credit is
    /// worth; it is needed (and validated to exist) for cost-based charging.
    pub fn credits_for(
        &self,
        usage: TokenUsage,
        catalog_currency: Currency,
        credit_value: Option<&Money>,
    ) -> Result<Credits, PricingError> {
        let raw = match &self.charge {
            Charge::Cost { markup } => {
                let value = credit_value.ok_or(PricingError::NoCreditValue)?;
                let cost = self.cost(usage, catalog_currency);
                if value.currency != cost.currency {
                    return Err(PricingError::CurrencyMismatch);
                }
                if value.amount <= Decimal::ZERO {
                    return Err(PricingError::NoCreditValue);
                }
                cost.amount * *markup / value.amount
            }
            Charge::Tokens {
                input_weight,
                output_weight,
            } => {
                Decimal::from(usage.input + usage.cached_input) * *input_weight
                    + Decimal::from(usage.output) * *output_weight
            }
        };
        Credits::try_from(raw.ceil()).map_err(|_| PricingError::OutOfRange)
    }
}

/// Why a model call could not be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    /// The catalog (or plan) has no positive credit value for cost-based charging.
    #[error("no credit value is configured for cost-based charging")]
    NoCreditValue,
    /// The model's prices and the credit value are in different currencies.
    #[error("the model's currency differs from the credit value's")]
    CurrencyMismatch,
    /// The result does not fit.
    #[error("charge out of range")]
    OutOfRange,
}

/// Credits for an engagement (following an account, sharing a post…).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reward {
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Credits granted.
    pub credits: Credits,
    /// How many times one account may earn it; omitted means once.
    #[serde(default = "once")]
    pub max_per_account: u32,
    /// Hours an account waits after one claim before the next (with `max_per_account` above
    /// one); omitted: no wait.
    #[serde(default)]
    pub cooldown_hours: u32,
    /// Whether an admin approves each claim before its credits are granted.
    #[serde(default)]
    pub approval: bool,
}

fn once() -> u32 {
    1
}

/// One problem in a catalog, with the key it is at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatalogError {
    /// The full key (`catalog.plans.basic.prices.month.amount`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

struct Problems {
    root: String,
    list: Vec<CatalogError>,
}

impl Problems {
    fn add(&mut self, key: impl fmt::Display, message: impl Into<String>) {
        self.list.push(CatalogError {
            key: format!("{}.{key}", self.root),
            message: message.into(),
        });
    }
}

/// Ids are keys in TOML and parts of URLs: letters, digits, `_`, `-` and `.`, at most 64.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Quotes a map key that would not read back as one TOML bare key.
fn key_part(id: &str) -> String {
    if id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    {
        id.to_owned()
    } else {
        format!("\"{id}\"")
    }
}

impl Catalog {
    /// The plan with this id.
    pub fn plan(&self, id: &str) -> Option<&Plan> {
        self.plans.get(id)
    }

    /// The plan and interval a provider price id is configured for.
    pub fn plan_by_price(&self, price_id: &str) -> Option<(&str, Interval)> {
        self.plans.iter().find_map(|(id, plan)| {
            plan.prices
                .iter()
                .find(|(_, p)| p.stripe_price_id.as_deref() == Some(price_id))
                .map(|(interval, _)| (id.as_str(), *interval))
        })
    }

    /// The default plan (validated to exist).
    pub fn default_plan(&self) -> Option<&Plan> {
        self.plans.get(&self.default_plan)
    }

    /// The cost of an action.
    pub fn action_cost(&self, action: &str) -> Option<Credits> {
        self.actions.get(action).copied()
    }

    /// The feature an action needs: an action that shares its name with a feature some
    /// plan lists (flirt-studio's `image_analysis`, studiox's `video_generation`) is only
    /// for plans with that feature. `None`: every plan may perform it.
    pub fn action_feature<'a>(&self, action: &'a str) -> Option<&'a str> {
        self.plans
            .values()
            .any(|plan| plan.features.contains(action))
            .then_some(action)
    }

    /// The credit value that applies to a plan.
    pub fn credit_value_for<'a>(&'a self, plan: &'a Plan) -> Option<&'a Money> {
        plan.credit_value.as_ref().or(self.credit_value.as_ref())
    }

    /// The catalog's time zone (validated to exist).
    pub fn tz(&self) -> Result<Timezone, String> {
        Timezone::parse(&self.timezone)
    }

    /// Checks everything and names each problem's key, relative to `root` (the key the
    /// catalog is under, usually `catalog`).
    pub fn validate(&self, root: &str) -> Result<(), Vec<CatalogError>> {
        let mut p = Problems {
            root: root.to_owned(),
            list: Vec::new(),
        };
        if let Err(message) = Timezone::parse(&self.timezone) {
            p.add("timezone", message);
        }
        if !self.plans.contains_key(&self.default_plan) {
            p.add(
                "default_plan",
                format!("unknown plan `{}`", self.default_plan),
            );
        }
        if let Some(value) = &self.credit_value {
            check_credit_value(&mut p, "credit_value", value);
        }
        for (id, plan) in &self.plans {
            self.validate_plan(&mut p, id, plan);
        }
        for (id, pack) in &self.packs {
            let key = format!("packs.{}", key_part(id));
            check_id(&mut p, &key, id);
            if pack.name.trim().is_empty() {
                p.add(format!("{key}.name"), "must not be empty");
            }
            if pack.credits == 0 {
                p.add(format!("{key}.credits"), "must be at least 1");
            }
            check_price(
                &mut p,
                &format!("{key}.price"),
                &pack.price,
                self.currency,
                true,
            );
            for (i, plan) in pack.plans.iter().flatten().enumerate() {
                if !self.plans.contains_key(plan) {
                    p.add(
                        format!("{key}.plans[{i}]"),
                        format!("unknown plan `{plan}`"),
                    );
                }
            }
            if pack.expires_after_days == Some(0) {
                p.add(format!("{key}.expires_after_days"), "must be at least 1");
            }
        }
        for (id, cost) in &self.actions {
            let key = format!("actions.{}", key_part(id));
            check_id(&mut p, &key, id);
            if *cost == 0 {
                p.add(key, "an action must cost at least 1 credit");
            }
        }
        for id in self.meters.keys() {
            check_id(&mut p, &format!("meters.{}", key_part(id)), id);
        }
        for (id, model) in &self.models {
            self.validate_model(&mut p, id, model);
        }
        for (id, task) in &self.tasks {
            self.validate_task(&mut p, id, task);
        }
        for (id, reward) in &self.rewards {
            let key = format!("rewards.{}", key_part(id));
            check_id(&mut p, &key, id);
            if reward.credits == 0 {
                p.add(format!("{key}.credits"), "must be at least 1");
            }
            if reward.max_per_account == 0 {
                p.add(format!("{key}.max_per_account"), "must be at least 1");
            }
        }
        if p.list.is_empty() {
            Ok(())
        } else {
            Err(p.list)
        }
    }

    fn validate_plan(&self, p: &mut Problems, id: &str, plan: &Plan) {
        let key = format!("plans.{}", key_part(id));
        check_id(p, &key, id);
        if plan.name.trim().is_empty() {
            p.add(format!("{key}.name"), "must not be empty");
        }
        if plan.max_output_tokens == Some(0) {
            p.add(format!("{key}.max_output_tokens"), "must be at least 1");
        }
        for (interval, price) in &plan.prices {
            check_price(
                p,
                &format!("{key}.prices.{}", interval.as_str()),
                price,
                self.currency,
                false,
            );
        }
        if plan.trial_days > 730 {
            p.add(format!("{key}.trial_days"), "must be at most 730");
        }
        if plan.trial_days > 0 && !plan.is_paid() {
            p.add(format!("{key}.trial_days"), "a free plan has no trial");
        }
        if let Some(allowance) = &plan.allowance {
            if allowance.credits == 0 {
                p.add(format!("{key}.allowance.credits"), "must be at least 1");
            }
            if allowance.rollover_cap > allowance.credits {
                p.add(
                    format!("{key}.allowance.rollover_cap"),
                    "must not exceed the allowance's credits",
                );
            }
            if allowance.cadence == Cadence::BillingPeriod && !plan.is_paid() {
                p.add(
                    format!("{key}.allowance.cadence"),
                    "`billing_period` needs a plan with prices; use `day` or `month`",
                );
            }
        }
        for (meter, rule) in &plan.quotas {
            let qkey = format!("{key}.quotas.{}", key_part(meter));
            if !self.meters.contains_key(meter) {
                p.add(&qkey, format!("unknown meter `{meter}`"));
            }
            let gauge = self
                .meters
                .get(meter)
                .is_some_and(|m| m.kind == MeterKind::Gauge);
            match rule.period {
                Some(_) if gauge => p.add(
                    format!("{qkey}.period"),
                    "a gauge never resets; remove `period`",
                ),
                None if !gauge => p.add(
                    format!("{qkey}.period"),
                    "required: `day`, `month` or `billing_period`",
                ),
                Some(QuotaPeriod::BillingPeriod) if !plan.is_paid() => p.add(
                    format!("{qkey}.period"),
                    "`billing_period` needs a plan with prices; use `day` or `month`",
                ),
                _ => {}
            }
        }
        for (i, model) in plan.models.iter().enumerate() {
            if model != "*" && !self.models.contains_key(model) {
                p.add(
                    format!("{key}.models[{i}]"),
                    format!("unknown model `{model}`"),
                );
            }
        }
        for feature in &plan.features {
            if !valid_id(feature) {
                p.add(
                    format!("{key}.features"),
                    format!("`{feature}` is not a valid feature name"),
                );
            }
        }
        if let Some(limit) = &plan.rate_limit {
            if limit.requests == 0 {
                p.add(format!("{key}.rate_limit.requests"), "must be at least 1");
            }
            if limit.per_seconds == 0 {
                p.add(
                    format!("{key}.rate_limit.per_seconds"),
                    "must be at least 1",
                );
            }
        }
        if let Some(value) = &plan.credit_value {
            check_credit_value(p, &format!("{key}.credit_value"), value);
        }
        let charges_by_cost = plan.models.iter().any(|m| {
            let uses = |model: &Model| matches!(model.charge, Charge::Cost { .. });
            if m == "*" {
                self.models.values().any(uses)
            } else {
                self.models.get(m).is_some_and(uses)
            }
        });
        if charges_by_cost && self.credit_value_for(plan).is_none() {
            p.add(
                format!("{key}.credit_value"),
                "the plan uses models charged by cost, so a credit value is needed (here or at the catalog's `credit_value`)",
            );
        }
    }

    fn validate_task(&self, p: &mut Problems, id: &str, task: &TaskType) {
        let key = format!("tasks.{}", key_part(id));
        check_id(p, &key, id);
        if let Some(action) = &task.action
            && !self.actions.contains_key(action)
        {
            p.add(
                format!("{key}.action"),
                format!("unknown action `{action}`"),
            );
        }
        if let Some(feature) = &task.feature
            && !self
                .plans
                .values()
                .any(|plan| plan.features.contains(feature))
        {
            p.add(
                format!("{key}.feature"),
                format!("no plan includes `{feature}`, so no one could run it"),
            );
        }
        if task.timeout_seconds == 0 {
            p.add(format!("{key}.timeout_seconds"), "must be at least 1");
        }
        if task.max_attempts == 0 {
            p.add(format!("{key}.max_attempts"), "must be at least 1");
        }
        if task.lease_seconds == 0 {
            p.add(format!("{key}.lease_seconds"), "must be at least 1");
        }
        match task.run {
            TaskRun::External => {
                if task.action.is_none() {
                    p.add(
                        format!("{key}.action"),
                        "an external task needs an action to price it",
                    );
                }
                for (field, set) in [
                    ("model", task.model.is_some()),
                    ("prompt", task.prompt.is_some()),
                    ("max_output_tokens", task.max_output_tokens.is_some()),
                ] {
                    if set {
                        p.add(format!("{key}.{field}"), "only for `run = \"llm\"`");
                    }
                }
            }
            TaskRun::Llm => {
                match &task.model {
                    None => p.add(format!("{key}.model"), "an llm task needs a model"),
                    Some(model) if !self.models.contains_key(model) => {
                        p.add(format!("{key}.model"), format!("unknown model `{model}`"));
                    }
                    Some(_) => {}
                }
                match &task.prompt {
                    Some(prompt) if !prompt.trim().is_empty() => {}
                    _ => p.add(format!("{key}.prompt"), "an llm task needs a prompt"),
                }
                if task.max_output_tokens == Some(0) {
                    p.add(format!("{key}.max_output_tokens"), "must be at least 1");
                }
            }
        }
    }

    fn validate_model(&self, p: &mut Problems, id: &str, model: &Model) {
        let key = format!("models.{}", key_part(id));
        check_id(p, &key, id);
        if model.upstream.trim().is_empty() {
            p.add(format!("{key}.upstream"), "must not be empty");
        }
        for (i, fallback) in model.fallbacks.iter().enumerate() {
            if fallback == id || !self.models.contains_key(fallback) {
                p.add(
                    format!("{key}.fallbacks[{i}]"),
                    format!("`{fallback}` is not another model of the catalog"),
                );
            }
        }
        if model.max_output_tokens == 0 {
            p.add(format!("{key}.max_output_tokens"), "must be at least 1");
        }
        let prices = [
            ("input_per_mtok", Some(model.input_per_mtok)),
            ("output_per_mtok", Some(model.output_per_mtok)),
            ("cached_input_per_mtok", model.cached_input_per_mtok),
        ];
        for (field, price) in prices {
            if price.is_some_and(|v| v.is_sign_negative() && !v.is_zero()) {
                p.add(format!("{key}.{field}"), "must not be negative");
            }
        }
        match &model.charge {
            Charge::Cost { markup } => {
                if *markup <= Decimal::ZERO {
                    p.add(format!("{key}.charge.markup"), "must be greater than zero");
                }
                let currency = model.currency.unwrap_or(self.currency);
                if let Some(value) = &self.credit_value
                    && value.currency != currency
                {
                    p.add(
                        format!("{key}.currency"),
                        format!(
                            "the model is priced in {currency} but a credit is valued in {}",
                            value.currency
                        ),
                    );
                }
            }
            Charge::Tokens {
                input_weight,
                output_weight,
            } => {
                if input_weight.is_sign_negative() && !input_weight.is_zero() {
                    p.add(format!("{key}.charge.input_weight"), "must not be negative");
                }
                if output_weight.is_sign_negative() && !output_weight.is_zero() {
                    p.add(
                        format!("{key}.charge.output_weight"),
                        "must not be negative",
                    );
                }
                if input_weight.is_zero() && output_weight.is_zero() {
                    p.add(
                        format!("{key}.charge"),
                        "at least one weight must be positive",
                    );
                }
            }
        }
    }
}

fn check_id(p: &mut Problems, key: &str, id: &str) {
    if !valid_id(id) {
        p.add(
            key,
            format!("`{id}` is not a valid id (letters, digits, `_`, `-`, `.`; at most 64)"),
        );
    }
}

fn check_price(p: &mut Problems, key: &str, price: &Price, currency: Currency, positive: bool) {
    if price.amount.is_sign_negative() && !price.amount.is_zero() {
        p.add(format!("{key}.amount"), "must not be negative");
    } else if positive && price.amount.is_zero() {
        p.add(format!("{key}.amount"), "must be greater than zero");
    } else if let Err(err) = price.money(currency).to_minor_units() {
        p.add(format!("{key}.amount"), err.to_string());
    }
    if price
        .stripe_price_id
        .as_deref()
        .is_some_and(|id| !id.starts_with("price_"))
    {
        p.add(
            format!("{key}.stripe_price_id"),
            "a Stripe price id starts with `price_`",
        );
    }
}

fn check_credit_value(p: &mut Problems, key: &str, value: &Money) {
    if value.amount <= Decimal::ZERO {
        p.add(format!("{key}.amount"), "must be greater than zero");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(toml_like_json: &str) -> Catalog {
        serde_json::from_str(toml_like_json).unwrap()
    }

    fn base() -> Catalog {
        catalog(
            r#"{
            "default_plan": "free",
            "credit_value": {"amount": "0.01", "currency": "usd"},
            "plans": {
                "free": {"name": "Free", "welcome_credits": 50, "models": ["gpt-4o-mini"],
                         "allowance": {"credits": 20, "cadence": "day"}},
                "pro": {"name": "Pro", "prices": {"month": {"amount": "9.99"}},
                        "models": ["*"], "quotas": {"exports": {"limit": 10, "period": "month"}}}
            },
            "packs": {"starter": {"name": "Starter", "credits": 100, "price": {"amount": "4.99"}}},
            "actions": {"short_chat": 5},
            "meters": {"exports": {}},
            "models": {"gpt-4o-mini": {"provider": "openai", "upstream": "gpt-4o-mini",
                       "input_per_mtok": "0.15", "output_per_mtok": "0.60"}}
        }"#,
        )
    }

    fn keys(result: Result<(), Vec<CatalogError>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|e| e.key).collect()
    }

    #[test]
    fn a_sound_catalog_validates() {
        assert_eq!(base().validate("catalog"), Ok(()));
    }

    #[test]
    fn a_gauge_takes_no_period_and_a_counter_needs_one() {
        let mut c = base();
        for (id, kind) in [("seats", MeterKind::Gauge), ("pages", MeterKind::Counter)] {
            c.meters.insert(
                id.into(),
                Meter {
                    name: None,
                    unit: None,
                    kind,
                },
            );
        }
        let free = c.plans.get_mut("free").unwrap();
        let rule = |period| QuotaRule {
            limit: Some(3),
            period,
        };
        free.quotas.insert("seats".into(), rule(None));
        free.quotas
            .insert("pages".into(), rule(Some(QuotaPeriod::Day)));
        assert_eq!(c.validate("catalog"), Ok(()));
        let free = c.plans.get_mut("free").unwrap();
        free.quotas
            .insert("seats".into(), rule(Some(QuotaPeriod::Month)));
        free.quotas.insert("pages".into(), rule(None));
        assert_eq!(
            keys(c.validate("catalog")),
            [
                "catalog.plans.free.quotas.pages.period",
                "catalog.plans.free.quotas.seats.period"
            ]
        );
    }

    #[test]
    fn an_unknown_plan_in_a_pack_is_named() {
        let mut c = base();
        c.packs.get_mut("starter").unwrap().plans = Some(vec!["pro".into(), "gold".into()]);
        assert_eq!(
            keys(c.validate("catalog")),
            ["catalog.packs.starter.plans[1]"]
        );
    }

    #[test]
    fn a_negative_price_is_named() {
        let mut c = base();
        c.plans
            .get_mut("pro")
            .unwrap()
            .prices
            .get_mut(&Interval::Month)
            .unwrap()
            .amount = Decimal::from(-5);
        assert_eq!(
            keys(c.validate("catalog")),
            ["catalog.plans.pro.prices.month.amount"]
        );
    }

    #[test]
    fn task_types_name_what_they_run_and_what_prices_them() {
        let mut c = base();
        let task = |run: &str, extra: serde_json::Value| -> TaskType {
            let mut v = serde_json::json!({"run": run});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value(v).unwrap()
        };
        c.tasks.insert(
            "ok_llm".into(),
            task(
                "llm",
                serde_json::json!({"model": "gpt-4o-mini", "prompt": "{{text}}"}),
            ),
        );
        c.tasks.insert(
            "ok_ext".into(),
            task("external", serde_json::json!({"action": "short_chat"})),
        );
        assert!(c.validate("catalog").is_ok(), "{:?}", c.validate("catalog"));
        assert_eq!(c.tasks["ok_ext"].max_attempts, 3);
        assert_eq!(c.tasks["ok_ext"].timeout_seconds, 600);
        c.tasks
            .insert("no_price".into(), task("external", serde_json::json!({})));
        c.tasks.insert(
            "bad_llm".into(),
            task(
                "llm",
                serde_json::json!({"model": "gpt-9", "max_attempts": 0}),
            ),
        );
        c.tasks.insert(
            "bad_ext".into(),
            task(
                "external",
                serde_json::json!({"action": "nope", "feature": "warp", "model": "gpt-4o-mini"}),
            ),
        );
        let mut found = keys(c.validate("catalog"));
        found.sort();
        assert_eq!(
            found,
            [
                "catalog.tasks.bad_ext.action",
                "catalog.tasks.bad_ext.feature",
                "catalog.tasks.bad_ext.model",
                "catalog.tasks.bad_llm.max_attempts",
                "catalog.tasks.bad_llm.model",
                "catalog.tasks.bad_llm.prompt",
                "catalog.tasks.no_price.action",
            ]
        );
    }

    #[test]
    fn references_and_amounts_are_checked_everywhere() {
        let mut c = base();
        c.default_plan = "nope".into();
        c.actions.insert("free_lunch".into(), 0);
        c.plans.get_mut("free").unwrap().models.push("gpt-9".into());
        c.plans.get_mut("free").unwrap().quotas.insert(
            "pages".into(),
            QuotaRule {
                limit: Some(1),
                period: Some(QuotaPeriod::Day),
            },
        );
        c.timezone = "Mars/Olympus".into();
        let mut found = keys(c.validate("catalog"));
        found.sort();
        assert_eq!(
            found,
            [
                "catalog.actions.free_lunch",
                "catalog.default_plan",
                "catalog.plans.free.models[1]",
                "catalog.plans.free.quotas.pages",
                "catalog.timezone",
            ]
        );
    }

    #[test]
    fn cost_charging_needs_a_credit_value() {
        let mut c = base();
        c.credit_value = None;
        assert_eq!(
            keys(c.validate("catalog")),
            [
                "catalog.plans.free.credit_value",
                "catalog.plans.pro.credit_value"
            ]
        );
    }

    #[test]
    fn sub_cent_prices_are_refused() {
        let mut c = base();
        c.packs.get_mut("starter").unwrap().price.amount = Decimal::new(4999, 3);
        assert_eq!(
            keys(c.validate("catalog")),
            ["catalog.packs.starter.price.amount"]
        );
    }

    #[test]
    fn model_ids_with_dots_are_quoted_in_keys() {
        let mut c = base();
        let mut model = c.models["gpt-4o-mini"].clone();
        model.upstream = String::new();
        c.models.insert("gpt-4.1".into(), model);
        assert_eq!(
            keys(c.validate("catalog")),
            ["catalog.models.\"gpt-4.1\".upstream"]
        );
    }

    #[test]
    fn cost_charge_rounds_up_to_whole_credits() {
        let c = base();
        let model = &c.models["gpt-4o-mini"];
        let usage = TokenUsage {
            input: 1000,
            cached_input: 0,
            output: 1000,
            reasoning: 0,
        };
        // 1000 × 0.15/1M + 1000 × 0.60/1M = 0.00075 USD; one credit is 0.01 → 0.075 → 1.
        let cost = model.cost(usage, Currency::USD);
        assert_eq!(cost.amount, Decimal::new(75, 5));
        assert_eq!(
            model.credits_for(usage, Currency::USD, c.credit_value.as_ref()),
            Ok(1)
        );
        let big = TokenUsage {
            input: 1_000_000,
            cached_input: 0,
            output: 1_000_000,
            reasoning: 0,
        };
        assert_eq!(
            model.credits_for(big, Currency::USD, c.credit_value.as_ref()),
            Ok(75)
        );
    }

    #[test]
    fn token_charge_counts_weighted_tokens() {
        let model = Model {
            provider: Provider::Anthropic,
            upstream: "claude".into(),
            input_per_mtok: Decimal::from(3),
            output_per_mtok: Decimal::from(15),
            cached_input_per_mtok: None,
            currency: None,
            charge: Charge::Tokens {
                input_weight: Decimal::ONE,
                output_weight: Decimal::new(15, 1),
            },
            max_output_tokens: 4096,
            fallbacks: Vec::new(),
        };
        let usage = TokenUsage {
            input: 100,
            cached_input: 10,
            output: 11,
            reasoning: 0,
        };
        // 110 + 16.5 → 127 (rounded up).
        assert_eq!(model.credits_for(usage, Currency::USD, None), Ok(127));
    }
}
