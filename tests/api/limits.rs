use api_tests::{ADMIN_KEY, Db, TestApp};
use billing_core::catalog::RateLimit;
use reqwest::Method;
use serde_json::json;

async fn limited_app() -> TestApp {
    TestApp::spawn_with(Db::Sqlite, &[], |loaded| {
        loaded.settings.http.anonymous_rate_limit = Some(RateLimit {
            requests: 5,
            per_seconds: 60,
        });
        loaded.settings.http.user_rate_limit = None;
        for plan in loaded.catalog.plans.values_mut() {
            plan.rate_limit = Some(RateLimit {
                requests: 4,
                per_seconds: 60,
            });
        }
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn anonymous_callers_are_limited_per_address_with_retry_after() {
    let app = limited_app().await;
    for _ in 0..5 {
        assert_eq!(app.get("/v1/plans").await.status(), 200);
    }
    let refused = app.get("/v1/plans").await;
    assert_eq!(refused.status(), 429);
    assert!(
        refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert!(refused.headers().contains_key("x-request-id"));
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "rate_limited");
    assert_eq!(
        app.get("/health").await.status(),
        200,
        "health checks are never limited"
    );
}

#[tokio::test]
async fn users_are_limited_by_their_plan_and_the_admin_key_is_not() {
    let app = limited_app().await;
    // The sign-up itself is anonymous (1 of 5).
    let (token, _, _) = app.sign_up("busy@example.com").await;
    for _ in 0..4 {
        assert_eq!(app.get_as("/v1/credits", &token).await.0, 200);
    }
    let (status, problem) = app.get_as("/v1/credits", &token).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (429, Some("rate_limited"))
    );
    for _ in 0..8 {
        assert_eq!(app.get_as("/v1/admin/users", ADMIN_KEY).await.0, 200);
    }
}

#[tokio::test]
async fn repeated_failed_sign_ins_are_slowed_for_that_email() {
    let app = TestApp::spawn(&[]).await;
    app.sign_up("target@example.com").await;
    app.sign_up("bystander@example.com").await;
    for _ in 0..5 {
        let (status, _) = app
            .post(
                "/v1/auth/login",
                None,
                json!({"email": "target@example.com", "password": "wrong password!"}),
            )
            .await;
        assert_eq!(status, 401);
    }
    // Even the right password must wait now.
    let response = app
        .send(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"email": "target@example.com", "password": "correct horse battery"})),
            &[],
        )
        .await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let (status, _) = app
        .post(
            "/v1/auth/login",
            None,
            json!({"email": "bystander@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(status, 200, "another account is not slowed");
}

#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let app = TestApp::spawn_with(Db::Sqlite, &[], |loaded| {
        loaded.settings.http.cors_allowed_origins = vec!["https://app.example.com".into()];
    })
    .await
    .unwrap();
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, format!("{}/v1/credits/spend", app.address))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,idempotency-key",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

fn anonymous_limit(loaded: &mut app::settings::Loaded, requests: u32) {
    loaded.settings.http.anonymous_rate_limit = Some(RateLimit {
        requests,
        per_seconds: 60,
    });
}

async fn plans_from(app: &TestApp, forwarded_for: Option<&str>) -> u16 {
    let headers: Vec<(&str, &str)> = forwarded_for
        .map(|ip| vec![("x-forwarded-for", ip)])
        .unwrap_or_default();
    app.send(Method::GET, "/v1/plans", None, None, &headers)
        .await
        .status()
        .as_u16()
}

async fn failed_login(app: &TestApp, n: usize) -> u16 {
    let ip = format!("198.51.100.{n}");
    app.send(
        Method::POST,
        "/v1/auth/login",
        None,
        Some(json!({"email": "shared@example.com", "password": "wrong password!"})),
        &[("x-forwarded-for", ip.as_str())],
    )
    .await
    .status()
    .as_u16()
}

/// Found by black-box testing: behind a proxy every client shared one limit (the peer
/// address is the proxy's). A trusted proxy's `X-Forwarded-For` now names the client; an
/// untrusted peer cannot name another address to dodge its limit.
#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_limit() {
    let app = TestApp::spawn_with(Db::Sqlite, &[], |loaded| {
        anonymous_limit(loaded, 2);
        loaded.settings.http.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await
    .unwrap();
    for _ in 0..2 {
        assert_eq!(plans_from(&app, Some("203.0.113.1")).await, 200);
    }
    assert_eq!(plans_from(&app, Some("203.0.113.1")).await, 429);
    assert_eq!(
        plans_from(&app, Some("203.0.113.2")).await,
        200,
        "another client behind the same proxy has its own limit"
    );
    // A spoofed left-most entry does not help: the proxy appended the real address.
    assert_eq!(
        plans_from(&app, Some("198.51.100.9, 203.0.113.1")).await,
        429
    );

    let untrusting = TestApp::spawn_with(Db::Sqlite, &[], |loaded| anonymous_limit(loaded, 2))
        .await
        .unwrap();
    assert_eq!(plans_from(&untrusting, Some("203.0.113.1")).await, 200);
    assert_eq!(plans_from(&untrusting, Some("203.0.113.2")).await, 200);
    assert_eq!(
        plans_from(&untrusting, Some("203.0.113.3")).await,
        429,
        "without trusted proxies the header is ignored"
    );
}

/// With `limits.store = "redis"`, two instances count one limit together (and failed
/// sign-ins too). Runs where `TOLLGATE_TEST_REDIS_URL` is set (CI).
#[tokio::test]
async fn two_instances_on_redis_share_rate_limits_and_sign_in_slowing() {
    let Ok(url) = std::env::var("TOLLGATE_TEST_REDIS_URL") else {
        assert!(std::env::var("TOLLGATE_REQUIRE_REDIS").is_err());
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"NOTE: Redis API test SKIPPED: TOLLGATE_TEST_REDIS_URL is not set\n",
        );
        return;
    };
    let prefix = format!(
        "tollgate-api-test:{}:{}:",
        std::process::id(),
        time::OffsetDateTime::now_utc().unix_timestamp_nanos()
    );
    let redis = |loaded: &mut app::settings::Loaded| {
        anonymous_limit(loaded, 3);
        loaded.settings.http.trusted_proxies = vec!["127.0.0.1".into()];
        loaded.settings.limits.store = app::settings::LimitStore::Redis;
        loaded.settings.limits.redis_url = Some(url.clone().into());
        loaded.settings.limits.redis_prefix = prefix.clone();
    };
    let one = TestApp::spawn_with(Db::Sqlite, &[], redis).await.unwrap();
    let two = TestApp::spawn_with(Db::Sqlite, &[], redis).await.unwrap();
    let client = Some("203.0.113.50");
    assert_eq!(plans_from(&one, client).await, 200);
    assert_eq!(plans_from(&two, client).await, 200);
    assert_eq!(plans_from(&one, client).await, 200);
    assert_eq!(
        plans_from(&two, client).await,
        429,
        "the fourth, on either instance"
    );
    assert_eq!(plans_from(&one, client).await, 429);
    // Five failed sign-ins for one email, spread over both instances (and addresses)...
    for n in 0..5 {
        let app = if n % 2 == 0 { &one } else { &two };
        assert_eq!(failed_login(app, n).await, 401);
    }
    // ...slow that email down on both.
    assert_eq!(failed_login(&one, 10).await, 429);
    assert_eq!(failed_login(&two, 11).await, 429);
}

/// Found by black-box testing: password hashing ran with no bound (19 MiB a hash; 200
/// sign-ups took the server to 1 GB). Hashes now run a few at a time and a request waits at
/// most the queue timeout: with one hashing thread and no queue, a burst of sign-ups gets
/// some `503 busy` with `Retry-After`, never an error, and each one that is let in works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_sign_ups_queues_for_the_bounded_hashing_pool() {
    let app = TestApp::spawn_with(Db::Sqlite, &[], |loaded| {
        loaded.settings.http.anonymous_rate_limit = None;
        loaded.settings.auth.hashing_threads = 1;
        loaded.settings.auth.hashing_queue_seconds = 0;
    })
    .await
    .unwrap();
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let response = app
                .send(
                    Method::POST,
                    "/v1/auth/signup",
                    None,
                    Some(json!({"email": format!("burst{i}@example.com"), "password": "correct horse battery"})),
                    &[],
                )
                .await;
            let retry = response.headers().get("retry-after").is_some();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap();
            (status, body["code"].as_str().map(str::to_owned), retry)
        }));
    }
    let mut created = 0;
    let mut busy = 0;
    for task in tasks {
        match task.await.unwrap() {
            (201, _, _) => created += 1,
            (503, Some(code), true) if code == "busy" => busy += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(created >= 1, "the pool serves someone");
    assert!(
        busy >= 1,
        "24 at once cannot all get the one hashing thread at once"
    );
    assert_eq!(created + busy, 24);
}
