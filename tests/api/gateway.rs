//! The metered gateway over HTTP, on the mock provider: the budget holds under 200
//! concurrent calls, a client that disconnects mid-stream is charged what was generated
//! and no more than the hold, and usage adds up — on both databases.

use std::time::Duration;

use api_tests::{ADMIN_KEY, Db, TestApp, lift_rate_limits};
use billing_core::ports::UsageStore;
use serde_json::{Value, json};

/// A server whose mock answers slowly enough to be interrupted (`chunk_delay_ms`).
async fn app(db: Db, chunk_delay_ms: u64) -> Option<TestApp> {
    TestApp::spawn_with(db, &[], move |loaded| {
        lift_rate_limits(loaded);
        loaded.settings.llm.mock_chunk_words = 1;
        loaded.settings.llm.mock_chunk_delay_ms = chunk_delay_ms;
    })
    .await
}

async fn available(app: &TestApp, token: &str) -> (i64, i64) {
    let (_, credits) = app.get_as("/v1/credits", token).await;
    (
        credits["available"].as_i64().unwrap(),
        credits["held"].as_i64().unwrap(),
    )
}

/// Puts the account on `pro` (every model) with exactly `credits` available.
async fn fund(app: &TestApp, token: &str, account: &str, credits: i64) {
    app.set_plan(account, "pro").await;
    let (now, _) = available(app, token).await;
    let delta = credits - now;
    if delta != 0 {
        let (status, body) = app
            .post(
                &format!("/v1/admin/accounts/{account}/credits"),
                Some(ADMIN_KEY),
                json!({"delta": delta, "reason": "gateway test"}),
            )
            .await;
        assert!(status < 300, "{body}");
    }
    assert_eq!(available(app, token).await.0, credits);
}

/// A call both APIs accept (OpenAI's and Anthropic's request shapes share these fields).
fn call(max_tokens: u32) -> Value {
    json!({"model": "claude-sonnet-4", "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": "What does the ledger hold?"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_calls_never_overspend() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = app(db, 0).await else {
            continue;
        };
        let (token, _, account) = app.sign_up(&format!("race-{db:?}@example.com")).await;
        // The worst case of one call, as the 402 of an empty account reports it.
        fund(&app, &token, &account, 0).await;
        let (status, refused) = app
            .post("/v1/chat/completions", Some(&token), call(4096))
            .await;
        assert_eq!(status, 402, "{refused}");
        let worst = refused["error"]["reserved"].as_i64().unwrap();
        assert!(worst > 10, "a worst case well above the real cost: {worst}");
        let budget = 100 * worst;
        fund(&app, &token, &account, budget).await;

        let calls = (0..200).map(|i| {
            let client = app.client.clone();
            let url = format!("{}/v1/messages", app.address);
            let token = token.clone();
            async move {
                let mut body = call(4096);
                body["stream"] = json!(i % 2 == 0);
                let response = client
                    .post(url)
                    .header("x-api-key", token)
                    .header("anthropic-version", "2023-06-01")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let _ = response.bytes().await;
                status
            }
        });
        let statuses = futures_util::future::join_all(calls).await;
        let ok = statuses.iter().filter(|s| **s == 200).count();
        let refused = statuses.iter().filter(|s| **s == 402).count();
        assert_eq!(ok + refused, 200, "{statuses:?}");
        assert!(
            ok >= 100,
            "each admitted call fits its hold: {ok} of 200 ran"
        );

        let (left, held) = available(&app, &token).await;
        assert_eq!(held, 0, "every hold resolved");
        assert!(left >= 0, "never overspent: {left}");
        let (_, usage) = app.get_as("/v1/usage", &token).await;
        let days = usage["days"].as_array().unwrap();
        let charged: i64 = days.iter().map(|d| d["credits"].as_i64().unwrap()).sum();
        let recorded: u64 = days.iter().map(|d| d["calls"].as_u64().unwrap()).sum();
        assert_eq!(
            recorded,
            u64::try_from(ok).unwrap(),
            "every call that ran is recorded"
        );
        assert_eq!(
            charged,
            budget - left,
            "usage adds up to what the ledger took"
        );
        app.assert_ledger_sound(&account).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_is_charged_what_was_generated() {
    for db in [Db::Sqlite, Db::Postgres] {
        // One word every 100 ms: the client leaves after the first few.
        let Some(app) = app(db, 100).await else {
            continue;
        };
        let (token, _, account) = app.sign_up(&format!("gone-{db:?}@example.com")).await;
        fund(&app, &token, &account, 100_000).await;
        // The whole answer, for comparison (not streamed: no delay).
        let (status, whole) = app
            .post("/v1/chat/completions", Some(&token), call(4096))
            .await;
        assert_eq!(status, 200, "{whole}");
        let whole_output = whole["usage"]["completion_tokens"].as_u64().unwrap();
        assert!(whole_output >= 8);

        let mut body = call(4096);
        body["stream"] = json!(true);
        let mut response = app
            .client
            .post(format!("{}/v1/chat/completions", app.address))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let first = response.chunk().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).starts_with("data: "));
        drop(response);

        // The task notices, stops the provider's stream and settles.
        let mut settled = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let (_, held) = available(&app, &token).await;
            let (_, usage) = app.get_as("/v1/usage", &token).await;
            let calls: u64 = usage["days"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["calls"].as_u64().unwrap())
                .sum();
            if held == 0 && calls == 2 {
                settled = Some(usage);
                break;
            }
        }
        let usage = settled.expect("the disconnected call settled");
        let day = &usage["days"][0];
        let output = day["usage"]["output_tokens"].as_u64().unwrap() - whole_output;
        assert!(
            output >= 1 && output < whole_output,
            "charged for what was relayed, not the whole answer: {output} of {whole_output}"
        );
        let stored = app
            .store
            .calls_between(
                &account.parse().unwrap(),
                time::OffsetDateTime::UNIX_EPOCH,
                time::OffsetDateTime::now_utc() + time::Duration::hours(1),
            )
            .await
            .unwrap();
        assert_eq!(
            stored
                .iter()
                .map(|c| c.outcome.as_str())
                .collect::<Vec<_>>(),
            ["ok", "disconnected"]
        );
        app.assert_ledger_sound(&account).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_failures_come_back_in_each_apis_shape_and_cost_nothing() {
    let app = app(Db::Sqlite, 0).await.unwrap();
    let (token, _, account) = app.sign_up("failures@example.com").await;
    fund(&app, &token, &account, 10_000).await;
    let asking = |what: &str| {
        json!({"model": "gpt-4o-mini", "max_tokens": 50,
               "messages": [{"role": "user", "content": format!("please mock:error={what}")}]})
    };
    // OpenAI's shape: 429 with Retry-After after Tollgate's own retries, 502, 400.
    for (what, status, kind) in [
        ("429", 429, "rate_limit_error"),
        ("500", 502, "upstream_error"),
        ("400", 400, "invalid_request_error"),
    ] {
        let response = app
            .client
            .post(format!("{}/v1/chat/completions", app.address))
            .bearer_auth(&token)
            .json(&asking(what))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status);
        if status == 429 {
            assert!(response.headers().contains_key("retry-after"));
        }
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], kind, "{body}");
    }
    // Anthropic's shape, streamed: the refusal comes before any event.
    let response = app
        .client
        .post(format!("{}/v1/messages", app.address))
        .header("x-api-key", &token)
        .json(&{
            let mut body = asking("500");
            body["stream"] = json!(true);
            body
        })
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (&body["type"], &body["error"]["type"]),
        (&json!("error"), &json!("api_error"))
    );
    // Nothing charged, nothing held; the failures are recorded.
    assert_eq!(available(&app, &token).await, (10_000, 0));
    let (_, usage) = app.get_as("/v1/usage", &token).await;
    assert_eq!(usage["days"][0]["calls"], 4, "{usage}");
    assert_eq!(usage["days"][0]["credits"], 0, "{usage}");
    app.assert_ledger_sound(&account).await;
}

/// The real OpenAI provider, over HTTP, against `tollgate mock-llm` (the mock as an
/// OpenAI-compatible server): the same answers and usage as the in-process mock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_provider_reaches_an_openai_compatible_upstream() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(app::mock_llm::serve(listener).unwrap());
    let direct = app(Db::Sqlite, 0).await.unwrap();
    let proxied = TestApp::spawn_with(Db::Sqlite, &[], move |loaded| {
        loaded.settings.llm.openai_api_key = Some("sk-any".to_owned().into());
        loaded.settings.llm.openai_base_url = upstream;
    })
    .await
    .unwrap();
    let mut answers = Vec::new();
    for server in [&direct, &proxied] {
        let (token, _, _) = server.sign_up("upstream@example.com").await;
        let body = json!({"model": "gpt-4o-mini", "max_tokens": 30,
                          "messages": [{"role": "user", "content": "Same question"}]});
        let (status, whole) = server
            .post("/v1/chat/completions", Some(&token), body.clone())
            .await;
        assert_eq!(status, 200, "{whole}");
        let mut streamed = body;
        streamed["stream"] = json!(true);
        streamed["stream_options"] = json!({"include_usage": true});
        let text = server
            .client
            .post(format!("{}/v1/chat/completions", server.address))
            .bearer_auth(&token)
            .json(&streamed)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        let (_, usage) = server.get_as("/v1/usage", &token).await;
        answers.push((
            whole["choices"][0]["message"]["content"].clone(),
            whole["usage"].clone(),
            usage["days"][0]["calls"].clone(),
        ));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[1].2, 2);
}

/// A model whose provider fails before answering falls back to the next of its catalog
/// `fallbacks`, which is charged at its own prices; with none left, the failure stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_provider_falls_back_to_the_next_model() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let failing = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&failing)
        .await;
    let upstream = format!("{}/v1", failing.uri());
    let app = TestApp::spawn_with(Db::Sqlite, &[], move |loaded| {
        loaded.settings.llm.openai_api_key = Some("sk-any".to_owned().into());
        loaded.settings.llm.openai_base_url = upstream;
        loaded.settings.llm.attempts = 2;
        loaded.settings.llm.backoff_ms = 1;
        let models = &mut loaded.catalog.models;
        models.get_mut("gpt-4o-mini").unwrap().fallbacks = vec!["claude-3-5-haiku".into()];
    })
    .await
    .unwrap();
    let (token, _, account) = app.sign_up("fallback@example.com").await;
    let ask = |model: &str| {
        json!({"model": model, "max_tokens": 20,
               "messages": [{"role": "user", "content": "Anyone there?"}]})
    };
    let (status, answer) = app
        .post("/v1/chat/completions", Some(&token), ask("gpt-4o-mini"))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        failing.received_requests().await.unwrap().len(),
        2,
        "retried, then fell back"
    );
    // gpt-4o (no fallbacks) is outside the free plan; comp the account onto pro to reach it.
    app.post(
        &format!("/v1/admin/accounts/{account}/plan"),
        Some(ADMIN_KEY),
        json!({"plan": "pro"}),
    )
    .await;
    let (status, failure) = app
        .post("/v1/chat/completions", Some(&token), ask("gpt-4o"))
        .await;
    assert_eq!(
        (status, &failure["error"]["type"]),
        (502, &json!("upstream_error"))
    );
    let stored = app
        .store
        .calls_between(
            &account.parse().unwrap(),
            time::OffsetDateTime::UNIX_EPOCH,
            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        )
        .await
        .unwrap();
    let seen: Vec<_> = stored
        .iter()
        .map(|c| {
            (
                c.model.as_str(),
                c.provider.as_str(),
                c.outcome.as_str(),
                c.credits > 0,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("claude-3-5-haiku", "mock", "ok", true),
            ("gpt-4o", "openai", "error", false)
        ]
    );
    assert_eq!(available(&app, &token).await.1, 0);
    app.assert_ledger_sound(&account).await;
}

/// A client that gives up on a call that is not streamed does not cancel it: the provider
/// answers (and bills) in full, so the call is charged and recorded as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_on_a_whole_answer_is_charged_for_it() {
    let app = TestApp::spawn_with(Db::Sqlite, &[], |loaded| {
        // The polling below may pass the free plan's 30 requests a minute on a slow machine.
        lift_rate_limits(loaded);
        loaded.settings.llm.mock_latency_ms = 300;
    })
    .await
    .unwrap();
    let (token, _, account) = app.sign_up("impatient@example.com").await;
    let gave_up = app
        .client
        .post(format!("{}/v1/chat/completions", app.address))
        .bearer_auth(&token)
        .timeout(Duration::from_millis(50))
        .json(&json!({"model": "gpt-4o-mini", "max_tokens": 20,
                      "messages": [{"role": "user", "content": "Slowly, please mock:words=30"}]}))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client timed out");
    let mut recorded = Value::Null;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (_, usage) = app.get_as("/v1/usage", &token).await;
        if usage["days"][0]["calls"] == 1 {
            recorded = usage;
            break;
        }
    }
    assert_eq!(
        recorded["days"][0]["usage"]["output_tokens"], 20,
        "{recorded}"
    );
    assert_eq!(available(&app, &token).await.1, 0, "no hold left");
    app.assert_ledger_sound(&account).await;
}
