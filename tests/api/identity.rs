//! External identity (Clerk, Supabase): tokens signed by a provider whose JWKS the test
//! serves sign users in, provision them once, follow key rotation and refuse forgeries.

use api_tests::identity::{Key, Provider, sign};
use api_tests::{ADMIN_KEY, Db, TestApp, lift_rate_limits};
use serde_json::{Value, json};

/// A server on `db` accepting `provider`'s tokens as `clerk`, its settings adjusted by `tweak`.
async fn server(
    db: Db,
    provider: &Provider,
    tweak: impl FnOnce(&mut app::settings::IdentityProviderSettings),
) -> Option<TestApp> {
    let mut settings = provider.settings();
    tweak(&mut settings);
    TestApp::spawn_with(db, &[], |loaded| {
        lift_rate_limits(loaded);
        loaded
            .settings
            .auth
            .identity
            .insert("clerk".into(), settings);
    })
    .await
}

async fn me(app: &TestApp, token: &str) -> (u16, Value) {
    app.get_as("/v1/me", token).await
}

/// What a password sign-up starts with on the default plan (welcome credits and the
/// period's allowance): an external user must start with the same.
async fn starting_balance(app: &TestApp) -> i64 {
    let (token, _, _) = app.sign_up("reference@example.com").await;
    me(app, &token).await.1["balance"].as_i64().unwrap()
}

async fn provisioned(app: &TestApp, account: &str) -> usize {
    let (status, page) = app
        .get_as(&format!("/v1/admin/audit?target={account}"), ADMIN_KEY)
        .await;
    assert_eq!(status, 200, "{page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "identity.provision")
        .count()
}

#[tokio::test]
async fn a_clerk_token_signs_a_new_user_in_once_on_both_databases() {
    for db in [Db::Sqlite, Db::Postgres] {
        let provider = Provider::start(&[(Key::RsaA, "ins_1")]).await;
        let Some(app) = server(db, &provider, |_| {}).await else {
            continue;
        };
        let expected = starting_balance(&app).await;
        let token = provider.token(
            Key::RsaA,
            "ins_1",
            "user_2NNEqL2nrIRdJ194ndJqAHwEfxC",
            json!({"email": "Ada@Example.com", "email_verified": true}),
        );
        let (status, first) = me(&app, &token).await;
        assert_eq!(status, 200, "{db:?}: {first}");
        assert_eq!(first["user"]["email"], "ada@example.com");
        assert_eq!(first["user"]["email_verified"], true);
        assert_eq!(first["account"]["plan"], "free");
        assert_eq!(
            first["balance"].as_i64(),
            Some(expected),
            "{db:?}: welcome credits"
        );
        let (status, again) = me(&app, &token).await;
        assert_eq!(status, 200);
        assert_eq!(again["user"]["id"], first["user"]["id"], "the same user");
        let account = first["account"]["id"].as_str().unwrap();
        assert_eq!(provisioned(&app, account).await, 1, "{db:?}");
        // The account works like any other: spend from it with the provider's token.
        let spent = app
            .send(
                reqwest::Method::POST,
                "/v1/credits/spend",
                Some(&token),
                Some(json!({"action": "short_chat"})),
                &[("Idempotency-Key", "first-spend")],
            )
            .await;
        assert_eq!(spent.status(), 200, "{db:?}");
        assert_eq!(provider.fetches().await, 1, "keys are cached");
    }
}

#[tokio::test]
async fn concurrent_first_requests_provision_one_user_on_both_databases() {
    for db in [Db::Sqlite, Db::Postgres] {
        let provider = Provider::start(&[(Key::EcA, "ec_1")]).await;
        let Some(app) = server(db, &provider, |_| {}).await else {
            continue;
        };
        let expected = starting_balance(&app).await;
        // An ES256 token without an email (Clerk's default session token).
        let token = provider.token(Key::EcA, "ec_1", "user_race", json!({}));
        let answers = futures_util::future::join_all((0..16).map(|_| me(&app, &token))).await;
        let mut accounts: Vec<String> = answers
            .iter()
            .map(|(status, body)| {
                assert_eq!(*status, 200, "{db:?}: {body}");
                body["account"]["id"].as_str().unwrap().to_owned()
            })
            .collect();
        accounts.dedup();
        assert_eq!(
            accounts.len(),
            1,
            "{db:?}: one account for 16 first requests"
        );
        let (_, now) = me(&app, &token).await;
        assert_eq!(
            now["balance"].as_i64(),
            Some(expected),
            "{db:?}: welcome credits granted once"
        );
        assert!(
            now["user"]["email"]
                .as_str()
                .unwrap()
                .ends_with("@identity.invalid"),
            "{now}"
        );
        assert_eq!(provisioned(&app, &accounts[0]).await, 1, "{db:?}");
    }
}

#[tokio::test]
async fn keys_rotate_and_forgeries_are_refused() {
    let provider = Provider::start(&[(Key::RsaA, "k1")]).await;
    let app = server(Db::Sqlite, &provider, |_| {}).await.unwrap();
    let before = provider.token(Key::RsaA, "k1", "user_rot", json!({}));
    let (status, user) = me(&app, &before).await;
    assert_eq!(status, 200, "{user}");

    // The provider rotates: k2 replaces k1.
    provider.publish(&[(Key::RsaB, "k2")]).await;
    let after = provider.token(Key::RsaB, "k2", "user_rot", json!({}));
    let (status, again) = me(&app, &after).await;
    assert_eq!(status, 200, "a new kid fetches the keys again: {again}");
    assert_eq!(again["user"]["id"], user["user"]["id"]);
    let fresh = provider.token(Key::RsaA, "k1", "user_rot", json!({}));
    let (status, body) = me(&app, &fresh).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_token")),
        "a retired key is refused: {body}"
    );

    // A token signed with a key the provider never published, under its real kid and
    // under an invented one.
    for kid in ["k2", "forged"] {
        let forged = provider.token(Key::Forged, kid, "user_rot", json!({}));
        let (status, body) = me(&app, &forged).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("invalid_token")),
            "{kid}: {body}"
        );
    }
    // Right key, wrong issuer; expired; not yet valid; an ES256 header on an RSA key.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = |iss: &str, nbf: i64, exp: i64| json!({"iss": iss, "sub": "user_rot", "nbf": nbf, "iat": now, "exp": exp});
    let issuer = provider.issuer();
    for (token, code) in [
        (
            sign(
                Key::RsaB,
                "k2",
                &claims("https://evil.example", now - 5, now + 60),
            ),
            "invalid_token",
        ),
        (
            sign(Key::RsaB, "k2", &claims(&issuer, now - 120, now - 60)),
            "token_expired",
        ),
        (
            sign(Key::RsaB, "k2", &claims(&issuer, now + 60, now + 120)),
            "invalid_token",
        ),
        (
            sign(Key::EcA, "k2", &claims(&issuer, now - 5, now + 60)),
            "invalid_token",
        ),
    ] {
        let (status, body) = me(&app, &token).await;
        assert_eq!((status, body["code"].as_str()), (401, Some(code)), "{body}");
    }
    // Tollgate's own tokens still work beside the provider's.
    let (own, _, _) = app.sign_up("own@example.com").await;
    assert_eq!(me(&app, &own).await.0, 200);
}

#[tokio::test]
async fn invented_kids_cost_at_most_one_fetch_per_cooldown() {
    let provider = Provider::start(&[(Key::RsaA, "k1")]).await;
    let app = server(Db::Sqlite, &provider, |p| p.refresh_cooldown_seconds = 300)
        .await
        .unwrap();
    let good = provider.token(Key::RsaA, "k1", "user_storm", json!({}));
    assert_eq!(me(&app, &good).await.0, 200);
    for n in 0..20 {
        let forged = provider.token(Key::Forged, &format!("kid-{n}"), "user_storm", json!({}));
        assert_eq!(me(&app, &forged).await.0, 401);
    }
    assert_eq!(provider.fetches().await, 1, "no fetch within the cooldown");
}

#[tokio::test]
async fn audiences_and_parties_are_checked_and_addresses_never_merged() {
    let provider = Provider::start(&[(Key::RsaA, "k1")]).await;
    let app = server(Db::Sqlite, &provider, |p| {
        p.audiences = vec!["authenticated".into()];
        p.authorized_parties = vec!["http://localhost:5173".into()];
    })
    .await
    .unwrap();
    // Supabase-shaped: `aud: authenticated`, with an address it has not verified, which is
    // not taken (anyone may type any address into a sign-up form).
    let supabase = json!({"aud": "authenticated", "email": "grace@example.com"});
    let ok = provider.token(Key::RsaA, "k1", "0b7a3c1e-uuid", supabase.clone());
    let (status, grace) = me(&app, &ok).await;
    assert_eq!(status, 200);
    assert!(
        grace["user"]["email"]
            .as_str()
            .unwrap()
            .ends_with("@identity.invalid"),
        "{grace}"
    );
    let no_aud = provider.token(Key::RsaA, "k1", "0b7a3c1e-uuid", json!({}));
    assert_eq!(me(&app, &no_aud).await.0, 401);
    let other_party = provider.token(
        Key::RsaA,
        "k1",
        "0b7a3c1e-uuid",
        json!({"aud": "authenticated", "azp": "https://evil.example"}),
    );
    assert_eq!(me(&app, &other_party).await.0, 401);

    // An address already held by a password user is not taken over by a new subject.
    app.sign_up("linus@example.com").await;
    let claimant = provider.token(
        Key::RsaA,
        "k1",
        "user_claimant",
        json!({"aud": "authenticated", "email": "linus@example.com", "email_verified": true}),
    );
    let (status, body) = me(&app, &claimant).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("email_taken")),
        "{body}"
    );
}

#[tokio::test]
async fn a_provider_trusted_with_addresses_needs_no_email_verified_claim() {
    let provider = Provider::start(&[(Key::RsaA, "k1")]).await;
    let app = server(Db::Sqlite, &provider, |p| p.trust_email = true)
        .await
        .unwrap();
    // Clerk's session-token template adds `email` (a primary address, always verified).
    let token = provider.token(
        Key::RsaA,
        "k1",
        "user_trusted",
        json!({"email": "ada@example.com"}),
    );
    let (status, body) = me(&app, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["user"]["email"], &body["user"]["email_verified"]),
        (&json!("ada@example.com"), &json!(true))
    );
}

#[tokio::test]
async fn racing_first_sights_create_one_user_on_both_databases() {
    use billing_core::usecases::ExternalIdentity;
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = TestApp::spawn_on(db, &[]).await else {
            continue;
        };
        let billing = app.billing();
        // With an address and without one: the address's unique index or the subject's
        // may be the one that refuses the losers.
        for email in [Some("race@example.com"), None] {
            let identity = ExternalIdentity {
                issuer: "https://clerk.example.com".into(),
                subject: format!("user_{}", email.is_some()),
                email: email.map(str::to_owned),
                email_verified: false,
                name: None,
            };
            let racers = (0..16).map(|_| {
                let (billing, identity) = (billing.clone(), identity.clone());
                tokio::spawn(async move { billing.provision_external(identity).await })
            });
            let mut users = Vec::new();
            let mut created = 0;
            for result in futures_util::future::join_all(racers).await {
                let (user, new) = result.unwrap().unwrap_or_else(|e| panic!("{db:?}: {e}"));
                users.push(user.id);
                created += usize::from(new);
            }
            users.dedup();
            assert_eq!((users.len(), created), (1, 1), "{db:?} {email:?}");
        }
    }
}
