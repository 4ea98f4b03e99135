//! Money in: what a payment provider reports, in domain terms, and the pure rules that turn
//! it into credits and plans.
//!
//! A provider's adapter maps its wire events into [`PaymentEvent`]s; the use cases in
//! `usecases::payments` apply them. Every rule here is written so that events may arrive in
//! any order and any number of times:
//!
//! * what a payment bought is granted once, under the payment's business key
//!   (`payment:<id>`), which the database keeps unique;
//! * a subscription keeps the newest state it has seen ([`SyncVersion`]), so an older
//!   event never rolls it back;
//! * a charge's refunds and disputes are kept as cumulative state ([`ChargeState`]) and the
//!   credits a payment must give back are recomputed from it ([`credits_withheld`]), so the
//!   ledger moves by the difference, whichever event comes last.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::catalog::Interval;
use crate::ids::{AccountId, PaymentId, UserId};
use crate::ledger::Credits;
use crate::money::Currency;
use crate::quota::Window;
use crate::subscription::SubscriptionStatus;

/// The payment provider a record came from.
pub const STRIPE: &str = "stripe";

/// Who an event is about, as the provider names them. Resolved in this order: the account
/// Tollgate put in the metadata, the user it put there, the provider's customer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayerRef {
    /// `metadata.account_id` (or the checkout's `client_reference_id`).
    pub account: Option<AccountId>,
    /// `metadata.user_id`.
    pub user: Option<UserId>,
    /// The provider's customer (`cus_…`).
    pub customer: Option<String>,
}

/// Something a payment provider reported, in domain terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentEvent {
    /// A credit pack was paid for (a Checkout session or a PaymentIntent).
    PackPaid(PackPayment),
    /// A subscription as the provider now has it (created, updated or deleted).
    SubscriptionSynced(SubscriptionSnapshot),
    /// An invoice of a subscription was paid.
    InvoicePaid(InvoicePayment),
    /// An invoice payment failed.
    InvoiceFailed(InvoiceFailure),
    /// A trial ends soon.
    TrialWillEnd {
        /// The provider's subscription id.
        subscription: String,
        /// When.
        trial_end: Option<OffsetDateTime>,
    },
    /// A charge's refunds or disputes changed.
    ChargeChanged(ChargeState),
    /// The provider named an account's customer (a subscription's checkout completed):
    /// events about that customer can now be placed.
    CustomerLinked(PayerRef),
}

impl PaymentEvent {
    /// The provider customer this event ties to a Tollgate account, if it does: events
    /// about that customer that were ignored as unknown can be applied now.
    pub fn linked_customer(&self) -> Option<&str> {
        let payer = match self {
            Self::PackPaid(p) => &p.payer,
            Self::SubscriptionSynced(s) => &s.payer,
            Self::InvoicePaid(i) => &i.payer,
            Self::CustomerLinked(p) => p,
            _ => return None,
        };
        (payer.account.is_some() || payer.user.is_some())
            .then_some(payer.customer.as_deref())
            .flatten()
    }
}

/// A paid credit pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackPayment {
    /// Who paid.
    pub payer: PayerRef,
    /// The pack id.
    pub pack: String,
    /// The provider's payment id (checkout session or payment intent): the grant's key.
    pub payment_id: String,
    /// The payment intent that moved the money (to match refunds and disputes).
    pub payment_intent: Option<String>,
    /// What was paid, in minor units, if the event says.
    pub amount_minor: Option<i64>,
    /// In this currency.
    pub currency: Option<Currency>,
}

/// A subscription as the provider reports it at `observed_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSnapshot {
    /// The provider's id (`sub_…`).
    pub external_id: String,
    /// Who subscribes.
    pub payer: PayerRef,
    /// The provider's price id of the subscribed item.
    pub price: Option<String>,
    /// The plan Tollgate put in the metadata (used when the price is not in the catalog).
    pub plan: Option<String>,
    /// Billed monthly or yearly, if the price says.
    pub interval: Option<Interval>,
    /// Where it stands.
    pub status: SubscriptionStatus,
    /// The current period.
    pub period: Option<Window>,
    /// When the trial ends.
    pub trial_end: Option<OffsetDateTime>,
    /// Ends at the period's end.
    pub cancel_at_period_end: bool,
    /// When it was created at the provider.
    pub created_at: Option<OffsetDateTime>,
    /// When it ended.
    pub canceled_at: Option<OffsetDateTime>,
    /// When the provider produced this state (the event's time).
    pub observed_at: OffsetDateTime,
}

/// A paid invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoicePayment {
    /// The invoice (`in_…`): the grant's key.
    pub invoice_id: String,
    /// The subscription it bills, if any.
    pub subscription: Option<String>,
    /// Who paid.
    pub payer: PayerRef,
    /// The price of its subscription line.
    pub price: Option<String>,
    /// The plan in the subscription's metadata.
    pub plan: Option<String>,
    /// The period its subscription line pays for.
    pub period: Option<Window>,
    /// Whether it starts or renews a period (its allowance is granted); a proration or
    /// manual invoice does not.
    pub renews: bool,
    /// Paid, in minor units.
    pub amount_minor: i64,
    /// In this currency.
    pub currency: Option<Currency>,
    /// The payment intent that paid it, if the event says.
    pub payment_intent: Option<String>,
    /// When the provider produced it (the event's time).
    pub observed_at: OffsetDateTime,
}

/// A failed invoice payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceFailure {
    /// The invoice.
    pub invoice_id: String,
    /// The subscription it bills.
    pub subscription: Option<String>,
    /// No automatic retry remains.
    pub final_attempt: bool,
    /// When the provider produced it.
    pub observed_at: OffsetDateTime,
}

/// Where a charge's dispute stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeStatus {
    /// Opened and not decided: the payment's credits are frozen.
    Open,
    /// Decided for the merchant: the credits come back.
    Won,
    /// Decided for the customer: the money is gone and so are the credits.
    Lost,
}

impl DisputeStatus {
    /// The snake_case name used in storage and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Won => "won",
            Self::Lost => "lost",
        }
    }

    /// Reads the name back.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "open" => Self::Open,
            "won" => Self::Won,
            "lost" => Self::Lost,
            _ => return None,
        })
    }

    fn is_final(self) -> bool {
        matches!(self, Self::Won | Self::Lost)
    }

    /// Breaks ties between observations made at the same time.
    fn rank(self) -> u8 {
        match self {
            Self::Open => 0,
            Self::Won => 1,
            Self::Lost => 2,
        }
    }
}

/// What is known about one charge's refunds and dispute: cumulative, so that merging any
/// two observations in any order gives the same state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeState {
    /// The provider's charge id (`ch_…`).
    pub charge: String,
    /// The payment intent it belongs to (how it is matched to a payment).
    pub payment_intent: Option<String>,
    /// The charge's amount, in minor units.
    pub amount_minor: i64,
    /// Refunded so far, in minor units (cumulative, never decreases).
    pub refunded_minor: i64,
    /// The dispute, if one was opened.
    pub dispute: Option<DisputeStatus>,
    /// When the dispute state was observed (orders dispute updates).
    pub dispute_observed_at: Option<OffsetDateTime>,
}

impl ChargeState {
    /// The state of all a payment intent's charges, as one: refunds add up, the gravest
    /// dispute counts, and the amount is the payment's (`amount_minor`), else the charges'.
    pub fn combined(charges: &[ChargeState], amount_minor: i64) -> ChargeState {
        let grave = |d: Option<DisputeStatus>| match d {
            None => 0,
            Some(DisputeStatus::Won) => 1,
            Some(DisputeStatus::Open) => 2,
            Some(DisputeStatus::Lost) => 3,
        };
        let total: i64 = charges.iter().map(|c| c.amount_minor).sum();
        ChargeState {
            charge: String::new(),
            payment_intent: None,
            amount_minor: if amount_minor > 0 {
                amount_minor
            } else {
                total
            },
            refunded_minor: charges.iter().map(|c| c.refunded_minor).sum(),
            dispute: charges
                .iter()
                .map(|c| c.dispute)
                .max_by_key(|d| grave(*d))
                .flatten(),
            dispute_observed_at: None,
        }
    }
    /// Combines two observations of the same charge: the larger refund total wins (refunds
    /// only accumulate); a decided dispute is final; otherwise the later observation wins.
    pub fn merge(&self, other: &ChargeState) -> ChargeState {
        let key = |c: &ChargeState| {
            c.dispute
                .map(|d| (d.is_final(), c.dispute_observed_at, d.rank()))
        };
        let newer = if key(other) > key(self) { other } else { self };
        ChargeState {
            charge: self.charge.clone(),
            payment_intent: self
                .payment_intent
                .clone()
                .or_else(|| other.payment_intent.clone()),
            amount_minor: self.amount_minor.max(other.amount_minor),
            refunded_minor: self.refunded_minor.max(other.refunded_minor),
            dispute: newer.dispute,
            dispute_observed_at: newer.dispute_observed_at,
        }
    }
}

/// How many of the `credits` a payment bought must be withheld from the customer, given
/// what happened to the money: all of them while a dispute is open or after it is lost;
/// otherwise the share refunded (`credits × refunded / amount`, rounded down, so a partial
/// refund never takes a credit the customer still paid for).
pub fn credits_withheld(credits: Credits, charge: &ChargeState) -> Credits {
    if matches!(
        charge.dispute,
        Some(DisputeStatus::Open | DisputeStatus::Lost)
    ) {
        return credits;
    }
    if charge.amount_minor <= 0 || charge.refunded_minor <= 0 {
        return 0;
    }
    let refunded = charge.refunded_minor.min(charge.amount_minor);
    let share = u128::from(credits) * u128::try_from(refunded).unwrap_or(0)
        / u128::try_from(charge.amount_minor).unwrap_or(1);
    Credits::try_from(share).unwrap_or(credits)
}

/// What a payment is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKind {
    /// A credit pack.
    Pack,
    /// A subscription invoice.
    Invoice,
}

impl PaymentKind {
    /// The snake_case name used in storage and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pack => "pack",
            Self::Invoice => "invoice",
        }
    }
}

/// A payment Tollgate received, and what it did with the credits the payment bought.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// Tollgate's id.
    pub id: PaymentId,
    /// The paying account.
    pub account: AccountId,
    /// Pack or invoice.
    pub kind: PaymentKind,
    /// The provider's id of what was paid (`cs_…`, `pi_…`, `in_…`), unique.
    pub external_id: String,
    /// The payment intent that moved the money, if known.
    pub payment_intent: Option<String>,
    /// The pack or plan bought.
    pub item: String,
    /// Paid, in minor units.
    pub amount_minor: i64,
    /// In this currency.
    pub currency: Currency,
    /// Credits the payment granted.
    pub credits: Credits,
    /// Credits taken back so far because of refunds or a dispute.
    pub withheld: Credits,
    /// When the credits it bought expire (credits a won dispute returns expire then too).
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When it was recorded.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl Payment {
    /// The reference of the grants the payment bought.
    pub fn grant_reference(&self) -> String {
        grant_reference(&self.external_id)
    }
}

/// The reference of the grants a payment bought: `payment:<id>`.
pub fn grant_reference(external_id: &str) -> String {
    format!("payment:{external_id}")
}

/// The order of a subscription's states: the time the provider produced the state, then
/// how far along it is, so that of two states observed in the same second the one further
/// along wins. Stored as one integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SyncVersion(pub i64);

impl SyncVersion {
    /// The version of `status` observed at `at`.
    pub fn of(at: OffsetDateTime, status: SubscriptionStatus) -> Self {
        let rank = match status {
            SubscriptionStatus::Incomplete => 0,
            SubscriptionStatus::Trialing => 1,
            SubscriptionStatus::Active => 2,
            SubscriptionStatus::PastDue => 3,
            SubscriptionStatus::Unpaid => 4,
            SubscriptionStatus::Paused => 5,
            SubscriptionStatus::Canceled => 7,
        };
        Self(at.unix_timestamp().saturating_mul(8).saturating_add(rank))
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn charge(amount: i64, refunded: i64, dispute: Option<DisputeStatus>) -> ChargeState {
        ChargeState {
            charge: "ch_1".into(),
            payment_intent: Some("pi_1".into()),
            amount_minor: amount,
            refunded_minor: refunded,
            dispute,
            dispute_observed_at: dispute.map(|_| datetime!(2026-05-01 0:00 UTC)),
        }
    }

    #[test]
    fn credits_follow_the_share_of_money_refunded() {
        assert_eq!(credits_withheld(1000, &charge(999, 0, None)), 0);
        assert_eq!(credits_withheld(1000, &charge(1000, 250, None)), 250);
        // Rounded down: the customer keeps what they still paid for.
        assert_eq!(credits_withheld(1000, &charge(999, 333, None)), 333);
        assert_eq!(credits_withheld(100, &charge(300, 1, None)), 0);
        assert_eq!(credits_withheld(1000, &charge(999, 999, None)), 1000);
        assert_eq!(credits_withheld(1000, &charge(999, 5000, None)), 1000);
        assert_eq!(
            credits_withheld(1000, &charge(999, 0, Some(DisputeStatus::Open))),
            1000
        );
        assert_eq!(
            credits_withheld(1000, &charge(999, 0, Some(DisputeStatus::Lost))),
            1000
        );
        assert_eq!(
            credits_withheld(1000, &charge(1000, 100, Some(DisputeStatus::Won))),
            100
        );
        assert_eq!(
            credits_withheld(u64::MAX, &charge(2, 1, None)),
            u64::MAX / 2
        );
    }

    #[test]
    fn charge_observations_merge_the_same_in_any_order() {
        let later = |mut c: ChargeState| {
            c.dispute_observed_at = Some(datetime!(2026-06-01 0:00 UTC));
            c
        };
        let states = [
            charge(1000, 0, None),
            charge(1000, 300, None),
            charge(1000, 700, None),
            charge(1000, 0, Some(DisputeStatus::Open)),
            later(charge(1000, 0, Some(DisputeStatus::Won))),
        ];
        let mut orders = vec![vec![0, 1, 2, 3, 4]];
        orders.push(vec![4, 3, 2, 1, 0]);
        orders.push(vec![2, 4, 0, 3, 1]);
        orders.push(vec![3, 4, 3, 1, 2, 0, 4]);
        let results: Vec<ChargeState> = orders
            .iter()
            .map(|order| {
                order
                    .iter()
                    .fold(states[0].clone(), |acc, &i| acc.merge(&states[i]))
            })
            .collect();
        for r in &results {
            assert_eq!(r.refunded_minor, 700);
            assert_eq!(r.dispute, Some(DisputeStatus::Won));
            assert_eq!(r, &results[0]);
        }
        // A decided dispute is final even against a later "open".
        let reopened = later(charge(1000, 0, Some(DisputeStatus::Open)));
        let lost = charge(1000, 0, Some(DisputeStatus::Lost));
        assert_eq!(lost.merge(&reopened).dispute, Some(DisputeStatus::Lost));
        assert_eq!(reopened.merge(&lost).dispute, Some(DisputeStatus::Lost));
    }

    #[test]
    fn a_later_or_further_state_has_the_higher_version() {
        let t = datetime!(2026-05-01 0:00 UTC);
        use SubscriptionStatus::*;
        assert!(SyncVersion::of(t, Active) > SyncVersion::of(t, Incomplete));
        assert!(SyncVersion::of(t, Canceled) > SyncVersion::of(t, PastDue));
        assert!(
            SyncVersion::of(t + time::Duration::seconds(1), Incomplete)
                > SyncVersion::of(t, Canceled)
        );
    }
}
