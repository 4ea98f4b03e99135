//! Use cases: the operations the API and workers call, composed from the ports.
//!
//! Each moves credits only through [`LedgerStore::execute`] with an idempotency key, so a
//! retried request, a replayed webhook or a re-run worker never moves credits twice.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use crate::catalog::{Cadence, Catalog, Plan};
use crate::entitlements::{Denial, action_denial};
use crate::ids::{AccountId, HoldId, PrefixedId, TxnId, UserId};
use crate::ledger::{
    Credits, Fingerprint, GrantSource, IdempotencyKey, LedgerCommand, LedgerError, LedgerPolicy,
    LedgerRequest, Receipt,
};
use crate::ports::{
    AccountStore, Clock, Conflict, IdGenerator, LedgerOutcome, LedgerStore, PaymentStore,
    StoreError, SubscriptionStore,
};
use crate::quota::Window;
use crate::records::{Account, Role, User};
use crate::subscription::SubscriptionError;

mod checkout;
mod gateway;
mod identity;
mod payments;
mod reconcile;
mod reports;
mod rewards;
mod tasks;

pub use checkout::ReturnUrls;
pub use gateway::{AdmittedCall, CallEnd, FinishedCall};
pub use identity::{ExternalIdentity, PLACEHOLDER_EMAIL_DOMAIN, has_mailbox, placeholder_email};
pub use payments::{Applied, Notice};
pub use reconcile::{Drift, Reconciliation};
pub use tasks::{CreateTask, HOLD_GRACE, MAX_LEASE_SECONDS, TaskSweep, Tasks};

/// Why a use case did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillingError {
    /// A field is invalid; names it.
    #[error("invalid `{field}`: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No such account.
    #[error("account not found")]
    AccountNotFound,
    /// No such subscription.
    #[error("subscription not found")]
    SubscriptionNotFound,
    /// The catalog has no such action.
    #[error("unknown action `{0}`")]
    UnknownAction(String),
    /// The catalog has no such pack.
    #[error("unknown pack `{0}`")]
    UnknownPack(String),
    /// The catalog has no such task type.
    #[error("unknown task type `{0}`")]
    UnknownTaskType(String),
    /// No such task (or another account's).
    #[error("task not found")]
    TaskNotFound,
    /// The task is no longer in a state (or the worker's claim) that allows this: it was
    /// cancelled, timed out, finished or claimed again.
    #[error("the task is {} (claim {attempt})", status.as_str())]
    TaskState {
        /// Where it stands.
        status: crate::tasks::TaskStatus,
        /// Its current claim.
        attempt: u32,
    },
    /// The catalog has no such model.
    #[error("unknown model `{0}`")]
    UnknownModel(String),
    /// The model cannot be priced in credits (no credit value for cost-based charging).
    #[error("model `{0}` cannot be priced: no credit value is configured")]
    UnpricedModel(String),
    /// The email address is already registered.
    #[error("email already registered")]
    EmailTaken,
    /// The catalog has no such reward.
    #[error("unknown reward `{0}`")]
    UnknownReward(String),
    /// The account may not claim the reward now.
    #[error("the reward cannot be claimed now: {0:?}")]
    RewardIneligible(crate::rewards::Ineligible),
    /// No such reward claim.
    #[error("reward claim not found")]
    ClaimNotFound,
    /// The claim was already decided.
    #[error("the claim is already {}", .0.as_str())]
    ClaimDecided(crate::rewards::ClaimStatus),
    /// The plan in force does not include it (the same denial the entitlement check gives).
    #[error("not included in the plan")]
    NotEntitled(Denial),
    /// The ledger refused.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The idempotency key was used for a different request.
    #[error("idempotency key reused with different parameters")]
    IdempotencyConflict,
    /// The payment's credits were granted already (a late duplicate).
    #[error("payment {0} was granted already")]
    AlreadyGranted(String),
    /// The subscription cannot do that.
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
    /// The account has a live subscription (to this plan) already; change it instead.
    #[error("already subscribed to `{0}`")]
    AlreadySubscribed(String),
    /// The payment provider refused or could not be reached.
    #[error(transparent)]
    Payment(#[from] crate::ports::PaymentError),
    /// A store failed; nothing happened.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A ledger result with whether it was a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// What the ledger did (the first time).
    pub receipt: Receipt,
    /// `true` when this was a replay of an earlier request with the same key.
    pub replayed: bool,
}

/// A new sign-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignUp {
    /// Email address.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// An argon2id PHC string (hashed by the caller), or `None` for external identities.
    pub password_hash: Option<String>,
    /// The external identity's subject (Clerk), if any.
    pub external_subject: Option<String>,
    /// Whether the address is already verified (an external provider vouched for it).
    pub email_verified: bool,
}

/// The result of a sign-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedUp {
    /// The user.
    pub user: User,
    /// Their account.
    pub account: Account,
    /// The welcome grant, if the plan gives one.
    pub welcome: Option<Receipt>,
    /// The first period's allowance, if the plan gives one by day or month.
    pub allowance: Option<Receipt>,
}

/// The current period of a calendar (daily or monthly) allowance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarPeriod {
    /// The day or month now.
    pub window: Window,
    /// When the next one ends (where rolled-over credits expire).
    pub next_end: OffsetDateTime,
    /// The reference of its grant: `{plan}:{start}`.
    pub reference: String,
}

/// A completed purchase of a credit pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseCompleted {
    /// The buyer.
    pub account: AccountId,
    /// The pack id.
    pub pack: String,
    /// The provider's payment id (checkout session or payment intent); the grant's key.
    pub payment_id: String,
}

/// The billing use cases, over injected ports.
#[derive(Clone)]
pub struct Billing {
    /// The catalog.
    pub catalog: Arc<Catalog>,
    /// Accounts and users.
    pub accounts: Arc<dyn AccountStore>,
    /// The ledger.
    pub ledger: Arc<dyn LedgerStore>,
    /// Subscriptions.
    pub subscriptions: Arc<dyn SubscriptionStore>,
    /// Payments, charges and provider customers.
    pub payments: Arc<dyn PaymentStore>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Id generation.
    pub ids: Arc<dyn IdGenerator>,
    /// How long a hold lasts when the caller does not say.
    pub default_hold_ttl: Duration,
}

impl std::fmt::Debug for Billing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Billing").finish_non_exhaustive()
    }
}

fn key(text: String) -> Result<IdempotencyKey, BillingError> {
    IdempotencyKey::new(text).map_err(|e| BillingError::Invalid {
        field: "idempotency_key",
        message: e.to_string(),
    })
}

fn moved(outcome: LedgerOutcome) -> Result<Moved, BillingError> {
    match outcome {
        LedgerOutcome::Executed(result) => Ok(Moved {
            receipt: result?,
            replayed: false,
        }),
        LedgerOutcome::Replayed(result) => Ok(Moved {
            receipt: result?,
            replayed: true,
        }),
        LedgerOutcome::Conflict => Err(BillingError::IdempotencyConflict),
    }
}

/// The one form an email address is stored and compared in: Unicode NFKC, then lowercase,
/// so that look-alikes (full-width `ｅve@`, `EVE@`) are the same address and one account.
/// It must then be a plain RFC 5322 `addr-spec` (checked by the `email_address` crate:
/// no display text, no domain literal, a domain with a dot), at most 254 characters, with
/// no quoted local part and no control, format or bidirectional character (a right-to-left
/// override would make one address look like another). The address itself is proven by
/// verification, not by syntax.
pub fn normalize_email(email: &str) -> Result<String, BillingError> {
    use unicode_normalization::UnicodeNormalization;
    let invalid = |message: &str| BillingError::Invalid {
        field: "email",
        message: message.into(),
    };
    let email: String = email.trim().nfkc().collect::<String>().to_lowercase();
    if email.chars().count() > 254 {
        return Err(invalid("must be at most 254 characters"));
    }
    if email.chars().any(|c| c.is_control() || is_format_char(c)) {
        return Err(invalid("must not contain control or formatting characters"));
    }
    if email.contains(['"', ' ']) {
        return Err(invalid("must not contain quotes or spaces"));
    }
    let options = email_address::Options::default()
        .without_display_text()
        .without_domain_literal()
        .with_required_tld();
    if email_address::EmailAddress::parse_with_options(&email, options).is_err() {
        return Err(invalid("is not an email address"));
    }
    Ok(email)
}

/// Unicode format characters (category Cf) that can hide in an address: bidirectional
/// controls, zero-width characters, the soft hyphen, the byte-order mark.
fn is_format_char(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

impl Billing {
    fn plan_of(&self, account: &Account) -> Result<&Plan, BillingError> {
        self.catalog
            .plan(&account.plan)
            .or_else(|| self.catalog.default_plan())
            .ok_or(BillingError::AccountNotFound)
    }

    async fn account(&self, id: &AccountId) -> Result<Account, BillingError> {
        self.accounts
            .account(id)
            .await?
            .ok_or(BillingError::AccountNotFound)
    }

    async fn policy(&self, id: &AccountId) -> Result<LedgerPolicy, BillingError> {
        let account = self.account(id).await?;
        Ok(LedgerPolicy {
            overdraft_limit: self.plan_of(&account)?.overdraft,
        })
    }

    async fn run(
        &self,
        account: &AccountId,
        key: IdempotencyKey,
        command: LedgerCommand,
        policy: LedgerPolicy,
    ) -> Result<Moved, BillingError> {
        self.run_intended(account, key, command, policy, None).await
    }

    /// [`Self::run`] for a command that holds values computed from the clock: `intent` is
    /// what the caller asked for, which the idempotency fingerprint covers instead.
    async fn run_intended(
        &self,
        account: &AccountId,
        key: IdempotencyKey,
        command: LedgerCommand,
        policy: LedgerPolicy,
        intent: Option<Fingerprint>,
    ) -> Result<Moved, BillingError> {
        let request = LedgerRequest {
            account: account.clone(),
            key,
            command,
            policy,
            intent,
        };
        moved(self.ledger.execute(request).await?)
    }

    /// Signs a user up on the default plan, grants the plan's welcome credits (once, keyed by
    /// the account) and, for a daily or monthly allowance, the current period's.
    pub async fn sign_up(&self, input: SignUp) -> Result<SignedUp, BillingError> {
        let email = normalize_email(&input.email)?;
        let now = self.clock.now();
        let account = Account {
            id: AccountId::from_ulid(self.ids.ulid()),
            plan: self.catalog.default_plan.clone(),
            created_at: now,
        };
        let user = User {
            id: UserId::from_ulid(self.ids.ulid()),
            account: account.id.clone(),
            email,
            name: input
                .name
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty()),
            role: Role::User,
            email_verified: input.email_verified,
            password_hash: input.password_hash,
            external_subject: input.external_subject,
            created_at: now,
        };
        match self.accounts.create(account.clone(), user.clone()).await {
            Err(StoreError::Conflict(Conflict::Email)) => {
                return Err(BillingError::EmailTaken);
            }
            other => other?,
        }
        let plan = self.plan_of(&account)?;
        let welcome = if plan.welcome_credits > 0 {
            let command = LedgerCommand::Grant {
                amount: plan.welcome_credits,
                source: GrantSource::Welcome,
                priority: 0,
                expires_at: None,
                rollover_cap: 0,
                rollover_until: None,
                reference: Some("welcome".into()),
                memo: Some("welcome credits".into()),
            };
            let k = key(format!("welcome:{}", account.id))?;
            Some(
                self.run(&account.id, k, command, LedgerPolicy::default())
                    .await?
                    .receipt,
            )
        } else {
            None
        };
        let allowance = self
            .grant_calendar_allowance(&account)
            .await?
            .map(|m| m.receipt);
        Ok(SignedUp {
            user,
            account,
            welcome,
            allowance,
        })
    }

    /// Grants the current day's or month's allowance of the account's plan, once per plan
    /// and period (keyed by account, plan and period start, so an account that changes plan
    /// inside a period receives the new plan's allowance too). `None` if the plan has no
    /// such allowance.
    pub async fn grant_calendar_allowance(
        &self,
        account: &Account,
    ) -> Result<Option<Moved>, BillingError> {
        let plan = self.plan_of(account)?;
        let Some(allowance) = &plan.allowance else {
            return Ok(None);
        };
        let Some(CalendarPeriod {
            window,
            next_end,
            reference,
        }) = self.calendar_period(&account.plan)?
        else {
            return Ok(None);
        };
        let command = LedgerCommand::Grant {
            amount: allowance.credits,
            source: GrantSource::PeriodAllowance,
            priority: 0,
            expires_at: Some(window.end),
            rollover_cap: allowance.rollover_cap,
            rollover_until: Some(next_end),
            reference: Some(reference),
            memo: Some(format!("{} allowance", account.plan)),
        };
        let k = key(format!(
            "allowance:{}:{}:{}",
            account.id,
            account.plan,
            window.start.unix_timestamp()
        ))?;
        self.run(&account.id, k, command, LedgerPolicy::default())
            .await
            .map(Some)
    }

    /// The current day or month of a plan's calendar allowance (in the catalog's time zone)
    /// and the reference its grant carries (`{plan}:{period start}`), which tells a granted
    /// period from a due one. `None` for a plan without a daily or monthly allowance.
    pub fn calendar_period(&self, plan: &str) -> Result<Option<CalendarPeriod>, BillingError> {
        let Some(allowance) = self.catalog.plan(plan).and_then(|p| p.allowance.as_ref()) else {
            return Ok(None);
        };
        let tz = self.catalog.tz().map_err(|message| BillingError::Invalid {
            field: "timezone",
            message,
        })?;
        let period = |at| match allowance.cadence {
            Cadence::Day => Some(Window::day(at, tz)),
            Cadence::Month => Some(Window::month(at, tz)),
            Cadence::BillingPeriod => None,
        };
        let Some(window) = period(self.clock.now()) else {
            return Ok(None);
        };
        let next_end = period(window.end).map_or(window.end, |next| next.end);
        Ok(Some(CalendarPeriod {
            reference: format!("{plan}:{}", window.start.unix_timestamp()),
            window,
            next_end,
        }))
    }

    /// The period reset for one account (run by a scheduler at each day or month start, and
    /// safe to run any number of times).
    pub async fn period_reset(&self, account: &AccountId) -> Result<Option<Moved>, BillingError> {
        let account = self.account(account).await?;
        self.grant_calendar_allowance(&account).await
    }

    /// Spends an action's configured cost, if the plan in force includes the action (the
    /// rule of [`action_denial`], as the entitlement check applies it). Insufficient credits
    /// come back as `BillingError::Ledger(LedgerError::InsufficientCredits { .. })` with the
    /// balance.
    pub async fn spend_action(
        &self,
        account: &AccountId,
        action: &str,
        idempotency_key: &str,
    ) -> Result<Moved, BillingError> {
        let cost = self
            .catalog
            .action_cost(action)
            .ok_or_else(|| BillingError::UnknownAction(action.to_owned()))?;
        let record = self.account(account).await?;
        let plan = self.plan_of(&record)?;
        let policy = LedgerPolicy {
            overdraft_limit: plan.overdraft,
        };
        if self.catalog.action_feature(action).is_some() {
            let subscription = self.subscriptions.current(account).await?;
            let sub = subscription.as_ref().map(|s| (s.plan.as_str(), s.status));
            if let Some(denial) = action_denial(&self.catalog, &record.plan, sub, action) {
                return Err(BillingError::NotEntitled(denial));
            }
        }
        let command = LedgerCommand::Debit {
            amount: cost,
            reference: Some(action.to_owned()),
            memo: None,
        };
        self.run(
            account,
            key(format!("spend:{idempotency_key}"))?,
            command,
            policy,
        )
        .await
    }

    /// Reserves credits for work whose cost is known later; the hold lapses after `ttl`
    /// (the default if `None`).
    pub async fn reserve(
        &self,
        account: &AccountId,
        amount: Credits,
        reference: Option<String>,
        ttl: Option<Duration>,
        idempotency_key: &str,
    ) -> Result<Moved, BillingError> {
        let policy = self.policy(account).await?;
        let ttl = ttl.unwrap_or(self.default_hold_ttl);
        let intent = Fingerprint::of(&("reserve", amount, &reference, ttl.whole_seconds()));
        let command = LedgerCommand::Reserve {
            amount,
            expires_at: self.clock.now() + ttl,
            reference,
            memo: None,
        };
        self.run_intended(
            account,
            key(format!("reserve:{idempotency_key}"))?,
            command,
            policy,
            Some(intent),
        )
        .await
    }

    /// Settles a hold: captures `Some(cost)` (≤ the reserve; the rest returns) or voids
    /// with `None`.
    pub async fn settle(
        &self,
        account: &AccountId,
        hold: &HoldId,
        cost: Option<Credits>,
        idempotency_key: &str,
    ) -> Result<Moved, BillingError> {
        let command = match cost {
            Some(amount) => LedgerCommand::Capture {
                hold: hold.clone(),
                amount,
                memo: None,
            },
            None => LedgerCommand::Void {
                hold: hold.clone(),
                memo: None,
            },
        };
        self.run(
            account,
            key(format!("settle:{idempotency_key}"))?,
            command,
            LedgerPolicy::default(),
        )
        .await
    }

    /// Gives back credits for an earlier debit or capture.
    pub async fn refund(
        &self,
        account: &AccountId,
        txn: &TxnId,
        amount: Credits,
        reason: Option<String>,
        idempotency_key: &str,
    ) -> Result<Moved, BillingError> {
        let command = LedgerCommand::Refund {
            txn: txn.clone(),
            amount,
            memo: reason,
        };
        self.run(
            account,
            key(format!("refund:{idempotency_key}"))?,
            command,
            LedgerPolicy::default(),
        )
        .await
    }

    /// An admin's manual adjustment: a positive delta grants (never expiring), a negative one
    /// debits (never into an overdraft the plan does not allow). The reason is required.
    pub async fn adjust(
        &self,
        account: &AccountId,
        delta: i64,
        reason: &str,
        idempotency_key: &str,
    ) -> Result<Moved, BillingError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(BillingError::Invalid {
                field: "reason",
                message: "an adjustment needs a reason".into(),
            });
        }
        let amount = delta.unsigned_abs();
        let command = if delta > 0 {
            LedgerCommand::Grant {
                amount,
                source: GrantSource::Adjustment,
                priority: 0,
                expires_at: None,
                rollover_cap: 0,
                rollover_until: None,
                reference: Some("adjustment".into()),
                memo: Some(reason.to_owned()),
            }
        } else {
            LedgerCommand::Debit {
                amount,
                reference: Some("adjustment".into()),
                memo: Some(reason.to_owned()),
            }
        };
        let policy = self.policy(account).await?;
        self.run(
            account,
            key(format!("adjust:{idempotency_key}"))?,
            command,
            policy,
        )
        .await
    }

    /// A pack was paid for: grant its credits and bonus once per payment.
    pub async fn purchase_completed(
        &self,
        purchase: PurchaseCompleted,
    ) -> Result<Moved, BillingError> {
        let pack = self
            .catalog
            .packs
            .get(&purchase.pack)
            .ok_or_else(|| BillingError::UnknownPack(purchase.pack.clone()))?;
        self.account(&purchase.account).await?;
        let expires_at = pack
            .expires_after_days
            .map(|days| self.clock.now() + Duration::days(i64::from(days)));
        let command = LedgerCommand::Grant {
            amount: pack.total_credits(),
            source: GrantSource::Purchase,
            priority: 0,
            expires_at,
            rollover_cap: 0,
            rollover_until: None,
            // The payment is the grant's business key: the database grants it once, however
            // late a duplicate delivery comes (after the idempotency key is long pruned).
            reference: Some(format!("payment:{}", purchase.payment_id)),
            memo: Some(format!(
                "{} pack `{}` ({} + {} bonus)",
                pack.name, purchase.pack, pack.credits, pack.bonus_credits
            )),
        };
        let k = key(format!("purchase:{}", purchase.payment_id))?;
        let intent = Fingerprint::of(&("purchase", &purchase.pack));
        match self
            .run_intended(
                &purchase.account,
                k,
                command,
                LedgerPolicy::default(),
                Some(intent),
            )
            .await
        {
            Err(BillingError::Store(StoreError::Conflict(Conflict::PaymentGranted))) => {
                Err(BillingError::AlreadyGranted(purchase.payment_id))
            }
            other => other,
        }
    }

    /// When the next day or month begins for an account's calendar allowance (for
    /// schedulers).
    pub fn next_reset(&self, plan: &Plan, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let tz = self.catalog.tz().ok()?;
        match plan.allowance.as_ref()?.cadence {
            Cadence::Day => Some(Window::day(now, tz).end),
            Cadence::Month => Some(Window::month(now, tz).end),
            Cadence::BillingPeriod => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use time::macros::datetime;

    use super::*;
    use crate::ids::Ulid;
    use crate::ledger::{AccountBook, TxnKind};
    use crate::ports::{
        MockAccountStore, MockLedgerStore, MockPaymentStore, MockSubscriptionStore,
    };
    use crate::testing::{FixedClock, SequentialIds, sample_catalog};

    const NOW: OffsetDateTime = datetime!(2026-04-10 15:00 UTC);

    fn account(plan: &str) -> Account {
        Account {
            id: AccountId::from_ulid(Ulid(42)),
            plan: plan.into(),
            created_at: NOW,
        }
    }

    pub(crate) struct Mocks {
        pub(crate) accounts: MockAccountStore,
        ledger: MockLedgerStore,
        subscriptions: MockSubscriptionStore,
        payments: MockPaymentStore,
    }

    impl Mocks {
        pub(crate) fn new() -> Self {
            Self {
                accounts: MockAccountStore::new(),
                ledger: MockLedgerStore::new(),
                subscriptions: MockSubscriptionStore::new(),
                payments: MockPaymentStore::new(),
            }
        }

        /// The account exists on `plan`.
        fn with_account(mut self, plan: &'static str) -> Self {
            self.accounts
                .expect_account()
                .returning(move |_| Ok(Some(account(plan))));
            self
        }

        /// The ledger mock forwards to a real in-memory book and records every request.
        pub(crate) fn with_book(mut self, seen: Arc<Mutex<Vec<LedgerRequest>>>) -> Self {
            let book = Mutex::new(AccountBook::new(account("free").id));
            let ids = SequentialIds::default();
            self.ledger.expect_execute().returning(move |request| {
                seen.lock().unwrap().push(request.clone());
                Ok(book.lock().unwrap().execute(&request, NOW, &ids))
            });
            self
        }

        pub(crate) fn billing(self) -> Billing {
            Billing {
                catalog: Arc::new(sample_catalog()),
                accounts: Arc::new(self.accounts),
                ledger: Arc::new(self.ledger),
                subscriptions: Arc::new(self.subscriptions),
                payments: Arc::new(self.payments),
                clock: Arc::new(FixedClock::new(NOW)),
                ids: Arc::new(SequentialIds::default()),
                default_hold_ttl: Duration::minutes(10),
            }
        }
    }

    pub(crate) fn seen() -> Arc<Mutex<Vec<LedgerRequest>>> {
        Arc::new(Mutex::new(Vec::new()))
    }

    #[tokio::test]
    async fn sign_up_creates_the_account_and_grants_welcome_and_todays_allowance_once() {
        let requests = seen();
        let mut mocks = Mocks::new().with_book(requests.clone());
        mocks
            .accounts
            .expect_create()
            .withf(|account, user| {
                account.plan == "free"
                    && user.email == "ada@example.com"
                    && user.account == account.id
            })
            .times(1)
            .returning(|_, _| Ok(()));
        let billing = mocks.billing();
        let out = billing
            .sign_up(SignUp {
                email: "  Ada@Example.com ".into(),
                name: Some("Ada".into()),
                password_hash: Some("$argon2id$…".into()),
                external_subject: None,
                email_verified: false,
            })
            .await
            .unwrap();
        assert_eq!(out.welcome.unwrap().amount, 50);
        let allowance = out.allowance.unwrap();
        assert_eq!(allowance.amount, 20);
        assert_eq!(allowance.balance, 70);
        let requests = requests.lock().unwrap();
        assert_eq!(
            requests[0].key.as_str(),
            format!("welcome:{}", out.account.id)
        );
        let day_start = datetime!(2026-04-10 0:00 UTC).unix_timestamp();
        assert_eq!(
            requests[1].key.as_str(),
            format!("allowance:{}:free:{day_start}", out.account.id)
        );
        // Today's allowance expires at midnight; what rolls over lasts until the next one.
        assert!(matches!(
            requests[1].command,
            LedgerCommand::Grant {
                source: GrantSource::PeriodAllowance,
                expires_at: Some(e),
                rollover_until: Some(r),
                ..
            } if e == datetime!(2026-04-11 0:00 UTC) && r == datetime!(2026-04-12 0:00 UTC)
        ));
    }

    /// Found by black-box testing: these were accepted, and the full-width one made a
    /// second account that looks like `eve@example.com`.
    #[test]
    fn emails_are_validated_and_normalised() {
        for bad in [
            "eve@@example.com",
            "<script>@x.io",
            "eve\u{202E}moc.elpmaxe@example.com",
            "e\u{200B}ve@example.com",
            "\"eve\"@example.com",
            "Eve <eve@example.com>",
            "eve@[127.0.0.1]",
            "eve@localhost",
            "eve@example.com\u{0}",
            "not-an-email",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            normalize_email("\u{FF45}ve@example.com").unwrap(),
            "eve@example.com",
            "full-width letters fold to the address they look like"
        );
        assert_eq!(
            normalize_email("  Eve.Smith+tag@Example.COM ").unwrap(),
            "eve.smith+tag@example.com"
        );
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[tokio::test]
    async fn sign_up_refuses_a_taken_email_and_a_malformed_one() {
        let mut mocks = Mocks::new();
        mocks
            .accounts
            .expect_create()
            .returning(|_, _| Err(StoreError::Conflict(Conflict::Email)));
        let billing = mocks.billing();
        let input = |email: &str| SignUp {
            email: email.into(),
            name: None,
            password_hash: None,
            external_subject: Some("user_2abc".into()),
            email_verified: false,
        };
        assert_eq!(
            billing.sign_up(input("ada@example.com")).await,
            Err(BillingError::EmailTaken)
        );
        assert!(matches!(
            billing.sign_up(input("not-an-email")).await,
            Err(BillingError::Invalid { field: "email", .. })
        ));
    }

    #[tokio::test]
    async fn spending_an_action_debits_its_cost_with_the_plans_overdraft() {
        let mut mocks = Mocks::new().with_account("max");
        mocks
            .ledger
            .expect_execute()
            .withf(|r| {
                r.key.as_str() == "spend:req-1"
                    && r.policy.overdraft_limit == 100
                    && matches!(&r.command, LedgerCommand::Debit { amount: 20, reference: Some(a), .. } if a == "long_chat")
            })
            .times(1)
            .returning(|_| {
                Ok(LedgerOutcome::Executed(Err(LedgerError::InsufficientCredits {
                    balance: -90,
                    required: 20,
                })))
            });
        let billing = mocks.billing();
        let id = account("max").id;
        assert_eq!(
            billing.spend_action(&id, "long_chat", "req-1").await,
            Err(BillingError::Ledger(LedgerError::InsufficientCredits {
                balance: -90,
                required: 20
            }))
        );
        // An unknown action never reaches the ledger (the mock allows one call only).
        assert_eq!(
            billing.spend_action(&id, "teleport", "req-2").await,
            Err(BillingError::UnknownAction("teleport".into()))
        );
    }

    #[tokio::test]
    async fn replays_and_conflicts_surface_as_such() {
        let mut mocks = Mocks::new().with_account("free");
        let mut n = 0;
        mocks.ledger.expect_execute().returning(move |_| {
            n += 1;
            Ok(if n == 1 {
                LedgerOutcome::Replayed(Ok(Receipt {
                    txn: None,
                    kind: Some(TxnKind::Debit),
                    amount: 5,
                    balance: 10,
                    hold: None,
                    grant: None,
                    at: NOW,
                }))
            } else {
                LedgerOutcome::Conflict
            })
        });
        let billing = mocks.billing();
        let id = account("free").id;
        assert!(
            billing
                .spend_action(&id, "short_chat", "k")
                .await
                .unwrap()
                .replayed
        );
        assert_eq!(
            billing.spend_action(&id, "short_chat", "k").await,
            Err(BillingError::IdempotencyConflict)
        );
    }

    #[tokio::test]
    async fn reserve_then_settle_captures_the_real_cost() {
        let requests = seen();
        let billing = Mocks::new()
            .with_account("free")
            .with_book(requests.clone())
            .billing();
        let id = account("free").id;
        billing.adjust(&id, 100, "goodwill", "adj-1").await.unwrap();
        let hold = billing
            .reserve(&id, 40, Some("task".into()), None, "r1")
            .await
            .unwrap();
        assert_eq!(hold.receipt.balance, 60);
        let hold_id = hold.receipt.hold.unwrap();
        let captured = billing.settle(&id, &hold_id, Some(15), "s1").await.unwrap();
        assert_eq!(captured.receipt.balance, 85);
        let requests = requests.lock().unwrap();
        assert!(matches!(
            requests[1].command,
            LedgerCommand::Reserve { amount: 40, expires_at, .. } if expires_at == NOW + Duration::minutes(10)
        ));
    }

    /// A retry a minute later carries the same request: it replays, even though the hold's
    /// expiry and the pack's expiry are computed from a clock that has moved.
    #[tokio::test]
    async fn a_retry_after_the_clock_moved_replays_instead_of_conflicting() {
        let clock = Arc::new(FixedClock::new(NOW));
        let book = Arc::new(Mutex::new(AccountBook::new(account("free").id)));
        let mut mocks = Mocks::new().with_account("free");
        let (ledger_clock, ledger_book) = (clock.clone(), book.clone());
        let ids = SequentialIds::default();
        mocks.ledger.expect_execute().returning(move |request| {
            Ok(ledger_book
                .lock()
                .unwrap()
                .execute(&request, ledger_clock.now(), &ids))
        });
        let billing = Billing {
            clock: clock.clone(),
            ..mocks.billing()
        };
        let id = account("free").id;
        billing.adjust(&id, 100, "seed", "a").await.unwrap();
        let first = billing
            .reserve(&id, 40, Some("task".into()), None, "r1")
            .await
            .unwrap();
        let purchase = PurchaseCompleted {
            account: id.clone(),
            pack: "starter".into(),
            payment_id: "pi_1".into(),
        };
        let bought = billing.purchase_completed(purchase.clone()).await.unwrap();
        clock.set(NOW + Duration::minutes(1));
        let again = billing
            .reserve(&id, 40, Some("task".into()), None, "r1")
            .await
            .unwrap();
        assert!(again.replayed);
        assert_eq!(again.receipt, first.receipt);
        let rebought = billing.purchase_completed(purchase).await.unwrap();
        assert!(rebought.replayed);
        assert_eq!(rebought.receipt, bought.receipt);
        // A different request under the same key is still a conflict.
        assert_eq!(
            billing
                .reserve(&id, 41, Some("task".into()), None, "r1")
                .await,
            Err(BillingError::IdempotencyConflict)
        );
        assert_eq!(book.lock().unwrap().balance(), 170);
    }

    #[tokio::test]
    async fn adjustments_need_a_reason_and_negative_ones_debit() {
        let requests = seen();
        let billing = Mocks::new()
            .with_account("free")
            .with_book(requests.clone())
            .billing();
        let id = account("free").id;
        assert!(matches!(
            billing.adjust(&id, 5, "  ", "a0").await,
            Err(BillingError::Invalid {
                field: "reason",
                ..
            })
        ));
        billing
            .adjust(&id, 30, "support ticket 12", "a1")
            .await
            .unwrap();
        let down = billing.adjust(&id, -10, "clawback", "a2").await.unwrap();
        assert_eq!(down.receipt.kind, Some(TxnKind::Debit));
        assert_eq!(down.receipt.balance, 20);
        assert_eq!(requests.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_completed_purchase_grants_pack_and_bonus_once_per_payment() {
        let requests = seen();
        let billing = Mocks::new()
            .with_account("free")
            .with_book(requests.clone())
            .billing();
        let purchase = PurchaseCompleted {
            account: account("free").id,
            pack: "starter".into(),
            payment_id: "cs_test_1".into(),
        };
        let first = billing.purchase_completed(purchase.clone()).await.unwrap();
        assert_eq!(first.receipt.amount, 110);
        let again = billing.purchase_completed(purchase).await.unwrap();
        assert!(again.replayed);
        assert_eq!(again.receipt, first.receipt);
        {
            let requests = requests.lock().unwrap();
            assert_eq!(requests[0].key.as_str(), "purchase:cs_test_1");
            assert!(matches!(
                requests[0].command,
                LedgerCommand::Grant { source: GrantSource::Purchase, expires_at: Some(e), .. } if e == NOW + Duration::days(365)
            ));
        }
        let unknown = PurchaseCompleted {
            account: account("free").id,
            pack: "mega".into(),
            payment_id: "cs_2".into(),
        };
        drop(requests);
        assert_eq!(
            billing.purchase_completed(unknown).await,
            Err(BillingError::UnknownPack("mega".into()))
        );
    }

    #[tokio::test]
    async fn the_period_reset_grants_each_day_once() {
        let requests = seen();
        let billing = Mocks::new()
            .with_account("free")
            .with_book(requests.clone())
            .billing();
        let id = account("free").id;
        let first = billing.period_reset(&id).await.unwrap().unwrap();
        let second = billing.period_reset(&id).await.unwrap().unwrap();
        assert!(!first.replayed);
        assert!(second.replayed);
        assert_eq!(second.receipt.balance, 20);
        // A plan without a calendar allowance has nothing to reset.
        let none = Mocks::new().with_account("pro").billing();
        assert_eq!(none.period_reset(&id).await, Ok(None));
        assert_eq!(
            billing.next_reset(&billing.catalog.plans["free"], NOW),
            Some(datetime!(2026-04-11 0:00 UTC))
        );
    }

    /// Found by black-box testing: the allowance key left the plan out, so after a change to
    /// another plan with a daily allowance the new plan's was never granted that day (and
    /// every worker pass logged a conflict).
    #[tokio::test]
    async fn a_plan_change_inside_a_day_grants_the_new_plans_allowance_once() {
        let plan = Arc::new(Mutex::new("free"));
        let mut mocks = Mocks::new().with_book(seen());
        let current = plan.clone();
        mocks
            .accounts
            .expect_account()
            .returning(move |_| Ok(Some(account(*current.lock().unwrap()))));
        let mut catalog = sample_catalog();
        catalog.plans.get_mut("pro").unwrap().allowance = Some(crate::catalog::Allowance {
            credits: 70,
            cadence: Cadence::Day,
            rollover_cap: 0,
        });
        let billing = Billing {
            catalog: Arc::new(catalog),
            ..mocks.billing()
        };
        let id = account("free").id;
        let free = billing.period_reset(&id).await.unwrap().unwrap();
        assert_eq!(free.receipt.amount, 20);
        *plan.lock().unwrap() = "pro";
        let pro = billing.period_reset(&id).await.unwrap().unwrap();
        assert!(!pro.replayed);
        assert_eq!((pro.receipt.amount, pro.receipt.balance), (70, 90));
        let again = billing.period_reset(&id).await.unwrap().unwrap();
        assert!(again.replayed, "once per plan and day");
    }

    #[tokio::test]
    async fn refunds_go_through_the_ledger_with_their_key() {
        let requests = seen();
        let billing = Mocks::new()
            .with_account("free")
            .with_book(requests.clone())
            .billing();
        let id = account("free").id;
        billing.adjust(&id, 50, "seed", "a").await.unwrap();
        let spend = billing.spend_action(&id, "long_chat", "s").await.unwrap();
        let txn = spend.receipt.txn.unwrap();
        let refund = billing
            .refund(&id, &txn, 20, Some("task canceled".into()), "task-1")
            .await
            .unwrap();
        assert_eq!(refund.receipt.kind, Some(TxnKind::Refund));
        assert_eq!(refund.receipt.balance, 50);
        assert_eq!(
            requests.lock().unwrap().last().unwrap().key.as_str(),
            "refund:task-1"
        );
    }
}
