//! Users who sign in with an external identity provider (Clerk, Supabase): the provider
//! vouches for a subject, and the first request of a subject Tollgate has not seen creates
//! its user and account, exactly as a sign-up would (default plan, welcome credits, the
//! period's allowance).
//!
//! Provisioning is idempotent under concurrent first requests: the subject is unique in the
//! store, so of two requests racing to create it one wins, and the other finds the winner's
//! user and uses it. Nothing the loser did survives (its account and user are one insert).

use super::{Billing, BillingError, SignUp};
use crate::ledger::Fingerprint;
use crate::ports::{Conflict, StoreError};
use crate::records::User;

/// The domain of the placeholder address given to a subject whose token carries no email.
/// `.invalid` is reserved (RFC 2606): no mail can ever be delivered there.
pub const PLACEHOLDER_EMAIL_DOMAIN: &str = "identity.invalid";

/// What an external provider's verified token says about its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// The provider's issuer (`iss`).
    pub issuer: String,
    /// The provider's user id (`sub`).
    pub subject: String,
    /// The email address the token carries, if any.
    pub email: Option<String>,
    /// Whether the provider says it verified that address.
    pub email_verified: bool,
    /// The display name the token carries, if any.
    pub name: Option<String>,
}

impl ExternalIdentity {
    /// How the store keys the identity: `issuer#subject`, since two providers may hand out
    /// the same subject.
    pub fn qualified_subject(&self) -> String {
        format!("{}#{}", self.issuer, self.subject)
    }
}

/// The address a subject without an email gets: unique per identity, never deliverable.
pub fn placeholder_email(qualified_subject: &str) -> String {
    let digest = Fingerprint::of_bytes(qualified_subject.as_bytes());
    let short: String = digest.as_str().chars().take(32).collect();
    format!("ext-{short}@{PLACEHOLDER_EMAIL_DOMAIN}")
}

/// Whether mail can be sent to the user's address (it is not a placeholder).
pub fn has_mailbox(user: &User) -> bool {
    user.email
        .rsplit_once('@')
        .is_none_or(|(_, domain)| domain != PLACEHOLDER_EMAIL_DOMAIN)
}

impl Billing {
    /// The user of an external identity, created with its account on first sight, and
    /// whether this call created it.
    ///
    /// Errors: `EmailTaken` when the token's address belongs to another user (a password
    /// sign-up, or another provider's subject): accounts are never merged by address.
    pub async fn provision_external(
        &self,
        identity: ExternalIdentity,
    ) -> Result<(User, bool), BillingError> {
        let subject = identity.qualified_subject();
        if let Some(user) = self.accounts.user_by_subject(&subject).await? {
            return Ok((user, false));
        }
        let email = identity
            .email
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| placeholder_email(&subject));
        let created = self
            .sign_up(SignUp {
                email,
                name: identity.name,
                password_hash: None,
                external_subject: Some(subject.clone()),
                email_verified: identity.email_verified,
            })
            .await;
        match created {
            Ok(signed_up) => Ok((signed_up.user, true)),
            // A concurrent first request created it (the subject's or the address's unique
            // index refused this one, whichever PostgreSQL or SQLite checked first).
            Err(
                BillingError::EmailTaken
                | BillingError::Store(StoreError::Conflict(Conflict::ExternalSubject)),
            ) => self
                .accounts
                .user_by_subject(&subject)
                .await?
                .map(|user| (user, false))
                .ok_or(BillingError::EmailTaken),
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::records::Role;
    use crate::usecases::tests::{Mocks, seen};

    fn identity(email: Option<&str>) -> ExternalIdentity {
        ExternalIdentity {
            issuer: "https://clerk.example.com".into(),
            subject: "user_2abc".into(),
            email: email.map(str::to_owned),
            email_verified: true,
            name: Some("Ada".into()),
        }
    }

    fn user_of(account: &crate::records::Account, user: &User) -> User {
        User {
            account: account.id.clone(),
            ..user.clone()
        }
    }

    #[test]
    fn placeholders_are_unique_per_identity_and_never_a_mailbox() {
        let a = placeholder_email("https://a#user_1");
        let b = placeholder_email("https://b#user_1");
        assert_ne!(a, b);
        assert!(a.ends_with("@identity.invalid"));
        assert!(super::super::normalize_email(&a).is_ok(), "{a}");
    }

    #[tokio::test]
    async fn a_new_subject_signs_up_once_with_a_verified_address() {
        let requests = seen();
        let mut mocks = Mocks::new().with_book(requests.clone());
        let stored: Arc<Mutex<Option<User>>> = Arc::default();
        let found = stored.clone();
        mocks
            .accounts
            .expect_user_by_subject()
            .withf(|s| s == "https://clerk.example.com#user_2abc")
            .returning(move |_| Ok(found.lock().unwrap().clone()));
        let keep = stored.clone();
        mocks
            .accounts
            .expect_create()
            .times(1)
            .returning(move |account, user| {
                *keep.lock().unwrap() = Some(user_of(&account, &user));
                Ok(())
            });
        let billing = mocks.billing();
        let (user, created) = billing
            .provision_external(identity(Some("Ada@Example.com")))
            .await
            .unwrap();
        assert!(created);
        assert_eq!(user.email, "ada@example.com");
        assert!(user.email_verified);
        assert!(user.password_hash.is_none());
        assert_eq!(user.role, Role::User);
        let (again, created) = billing
            .provision_external(identity(Some("ada@example.com")))
            .await
            .unwrap();
        assert_eq!(
            again.id, user.id,
            "the second request finds the first's user"
        );
        assert!(!created);
        assert!(
            requests
                .lock()
                .unwrap()
                .iter()
                .any(|r| r.key.as_str().starts_with("welcome:")),
            "welcome credits were granted"
        );
    }

    #[tokio::test]
    async fn losing_the_race_returns_the_winner_and_a_foreign_address_is_refused() {
        let mut mocks = Mocks::new();
        let winner = Arc::new(Mutex::new(None::<User>));
        let calls = Arc::new(Mutex::new(0));
        let (w, c) = (winner.clone(), calls.clone());
        mocks.accounts.expect_user_by_subject().returning(move |_| {
            let mut n = c.lock().unwrap();
            *n += 1;
            // Not there at first; there once the other request has committed.
            Ok(if *n > 1 {
                w.lock().unwrap().clone()
            } else {
                None
            })
        });
        let w = winner.clone();
        mocks
            .accounts
            .expect_create()
            .returning(move |account, user| {
                if user.email.starts_with("ext-") {
                    *w.lock().unwrap() = Some(user_of(&account, &user));
                    Err(StoreError::Conflict(Conflict::ExternalSubject))
                } else {
                    Err(StoreError::Conflict(Conflict::Email))
                }
            });
        let billing = mocks.billing();
        let (user, created) = billing.provision_external(identity(None)).await.unwrap();
        assert!(!created, "the other request created it");
        assert!(user.email.ends_with("@identity.invalid"));
        assert!(!has_mailbox(&user));
        *calls.lock().unwrap() = 0;
        *winner.lock().unwrap() = None;
        assert_eq!(
            billing
                .provision_external(identity(Some("taken@example.com")))
                .await,
            Err(BillingError::EmailTaken)
        );
    }
}
