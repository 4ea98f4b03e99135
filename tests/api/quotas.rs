use api_tests::{Db, TestApp};
use reqwest::Method;
use serde_json::{Value, json};

/// `POST /v1/quotas/{meter}/track` with `key`: status, body, `Retry-After`, whether replayed.
pub(crate) async fn track(
    app: &TestApp,
    token: &str,
    meter: &str,
    amount: i64,
    key: &str,
) -> (u16, Value, Option<String>, bool) {
    let response = app
        .send(
            Method::POST,
            &format!("/v1/quotas/{meter}/track"),
            Some(token),
            Some(json!({"amount": amount})),
            &[("Idempotency-Key", key)],
        )
        .await;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let replayed = response.headers().contains_key("idempotent-replayed");
    (
        status,
        response.json().await.unwrap(),
        retry_after,
        replayed,
    )
}

#[tokio::test]
async fn usage_is_tracked_idempotently_up_to_the_plans_limit() {
    let app = TestApp::spawn(&[]).await;
    let (token, _, _) = app.sign_up("meter@example.com").await;
    let (status, quotas) = app.get_as("/v1/quotas", &token).await;
    assert_eq!(status, 200, "{quotas}");
    let exports = quotas
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["meter"] == "exports")
        .unwrap();
    assert_eq!(
        (exports["limit"].as_u64(), exports["used"].as_u64()),
        (Some(2), Some(0))
    );

    let (status, body, _, _) = track(&app, &token, "exports", 1, "e1").await;
    assert_eq!(
        (status, body["used"].as_u64(), body["remaining"].as_u64()),
        (200, Some(1), Some(1))
    );
    let (status, body, _, replayed) = track(&app, &token, "exports", 1, "e1").await;
    assert_eq!(
        (status, body["used"].as_u64(), replayed),
        (200, Some(1), true),
        "a replay records nothing"
    );
    let (status, body, _, _) = track(&app, &token, "exports", 2, "e1").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("idempotency_conflict"))
    );
    let (status, _, _, _) = track(&app, &token, "exports", 1, "e2").await;
    assert_eq!(status, 200);
    let (status, body, retry_after, _) = track(&app, &token, "exports", 1, "e3").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("quota_exceeded")),
        "{body}"
    );
    assert!(retry_after.unwrap().parse::<u64>().unwrap() > 0);
    let (status, _, _, _) = track(&app, &token, "teleports", 1, "e4").await;
    assert_eq!(status, 404);
    let (_, quotas) = app.get_as("/v1/quotas", &token).await;
    let exports = quotas
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["meter"] == "exports")
        .unwrap();
    assert_eq!(exports["used"], 2, "the refused request recorded nothing");
}

async fn track_batch(app: &TestApp, token: &str, events: Value) -> (u16, Value) {
    app.post("/v1/quotas/track", Some(token), json!({ "events": events }))
        .await
}

fn statuses(body: &Value) -> Vec<&str> {
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_batch_of_events_is_decided_in_order_each_by_its_own_key() {
    for db in [Db::Sqlite, Db::Postgres] {
        if let Some(app) = TestApp::spawn_on(db, &[]).await {
            batch_in_order(&app).await;
        }
    }
}

async fn batch_in_order(app: &TestApp) {
    let (token, _, _) = app.sign_up("ingest@example.com").await;
    let events = json!([
        {"meter": "chat_messages", "key": "m1", "amount": 30},
        {"meter": "exports", "key": "x1"},
        {"meter": "chat_messages", "key": "m2", "amount": 20},
        {"meter": "chat_messages", "key": "m3"},
        {"meter": "exports", "key": "x1"},
        {"meter": "exports", "key": "x2"},
        {"meter": "exports", "key": "x1", "amount": 2},
    ]);
    let (status, body) = track_batch(app, &token, events.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        statuses(&body),
        [
            "recorded", "recorded", "recorded", "rejected", "replayed", "recorded", "conflict"
        ]
    );
    let results = &body["results"];
    assert_eq!(
        (
            results[2]["used"].as_u64(),
            results[2]["remaining"].as_u64()
        ),
        (Some(50), Some(0)),
        "the day's 50 messages are used up by the third event"
    );
    assert_eq!(
        (results[3]["code"].as_str(), results[3]["used"].as_u64()),
        (Some("quota_exceeded"), Some(50))
    );
    assert_eq!(results[6]["code"], "idempotency_conflict");
    assert_eq!(
        (
            body["recorded"].as_u64(),
            body["replayed"].as_u64(),
            body["rejected"].as_u64(),
            body["conflicts"].as_u64()
        ),
        (Some(4), Some(1), Some(1), Some(1))
    );

    // The same batch again counts nothing more.
    let (status, again) = track_batch(app, &token, events).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        statuses(&again),
        [
            "replayed", "replayed", "replayed", "rejected", "replayed", "replayed", "conflict"
        ]
    );
    // An event key is the single route's Idempotency-Key.
    let (status, body, _, replayed) = track(app, &token, "exports", 1, "x2").await;
    assert_eq!(
        (status, body["used"].as_u64(), replayed),
        (200, Some(2), true)
    );

    let (_, quotas) = app.get_as("/v1/quotas", &token).await;
    let used = |meter: &str| {
        quotas
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["meter"] == meter)
            .unwrap()["used"]
            .as_u64()
    };
    assert_eq!(
        (used("chat_messages"), used("exports")),
        (Some(50), Some(2))
    );
}

/// Sixteen clients send batches at once, two of them each event: every key counts once and
/// the day's limit holds exactly, on both databases.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_count_each_key_once_up_to_the_limit() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = TestApp::spawn_on(db, &[]).await else {
            continue;
        };
        let app = std::sync::Arc::new(app);
        let (token, _, _) = app.sign_up("many@example.com").await;
        let clients: Vec<_> = (0..16)
            .map(|client| {
                let app = app.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    let events: Vec<Value> = (0..10)
                        .map(|i| json!({"meter": "chat_messages", "key": format!("c{}-{i}", client % 8)}))
                        .collect();
                    let (status, body) = track_batch(&app, &token, json!(events)).await;
                    assert_eq!(status, 200, "{body}");
                    body["recorded"].as_u64().unwrap()
                })
            })
            .collect();
        let mut recorded = 0;
        for client in clients {
            recorded += client.await.unwrap();
        }
        assert_eq!(recorded, 50, "80 distinct keys, 50 allowed a day");
        let (_, quotas) = app.get_as("/v1/quotas", &token).await;
        let chat = quotas
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["meter"] == "chat_messages")
            .unwrap();
        assert_eq!(chat["used"], 50);
    }
}

#[tokio::test]
async fn a_malformed_batch_is_refused_whole() {
    let app = TestApp::spawn(&[]).await;
    let (token, _, _) = app.sign_up("bad-batch@example.com").await;
    let good = json!({"meter": "exports", "key": "ok"});
    let too_many: Vec<Value> = (0..501)
        .map(|i| json!({"meter": "chat_messages", "key": format!("k{i}")}))
        .collect();
    for (events, field) in [
        (
            json!([good, {"meter": "teleports", "key": "t"}]),
            "events[1].meter",
        ),
        (
            json!([good, {"meter": "exports", "key": "z", "amount": 0}]),
            "events[1].amount",
        ),
        (
            json!([good, {"meter": "exports", "key": ""}]),
            "events[1].key",
        ),
        (
            json!([good, {"meter": "exports", "key": "é"}]),
            "events[1].key",
        ),
        (json!([]), "events"),
        (json!(too_many), "events"),
    ] {
        let (status, body) = track_batch(&app, &token, events).await;
        assert_eq!(
            (status, body["code"].as_str(), body["field"].as_str()),
            (422, Some("invalid_field"), Some(field)),
            "{body}"
        );
    }
    let (_, quotas) = app.get_as("/v1/quotas", &token).await;
    assert!(
        quotas.as_array().unwrap().iter().all(|q| q["used"] == 0),
        "nothing was recorded: {quotas}"
    );
}

#[tokio::test]
async fn entitlements_answer_with_the_reason_and_what_remains() {
    let app = TestApp::spawn(&[]).await;
    let (token, _, _) = app.sign_up("may-i@example.com").await;
    let ask = |kind: &str, name: &str| json!({"kind": kind, "name": name});
    let (status, yes) = app
        .post(
            "/v1/entitlements/check",
            Some(&token),
            ask("action", "long_chat"),
        )
        .await;
    assert_eq!(status, 200, "{yes}");
    assert_eq!(
        (yes["allowed"].as_bool(), yes["remaining"]["after"].as_i64()),
        (Some(true), Some(530))
    );
    let (_, no) = app
        .post(
            "/v1/entitlements/check",
            Some(&token),
            ask("model", "gpt-4o"),
        )
        .await;
    assert_eq!(
        (no["allowed"].as_bool(), no["denial"]["code"].as_str()),
        (Some(false), Some("not_in_plan"))
    );
    let (_, yes) = app
        .post(
            "/v1/entitlements/check",
            Some(&token),
            ask("model", "gpt-4o-mini"),
        )
        .await;
    assert_eq!(yes["allowed"], true);
    let (_, yes) = app
        .post(
            "/v1/entitlements/check",
            Some(&token),
            ask("feature", "saved_prompts"),
        )
        .await;
    assert_eq!(yes["allowed"], true);
    let (_, no) = app
        .post(
            "/v1/entitlements/check",
            Some(&token),
            ask("feature", "tasks"),
        )
        .await;
    assert_eq!(no["denial"]["code"], "not_in_plan");
    track(&app, &token, "exports", 2, "both").await;
    let (_, no) = app
        .post(
            "/v1/entitlements/check",
            Some(&token),
            ask("meter", "exports"),
        )
        .await;
    assert_eq!(no["denial"]["code"], "quota_exceeded", "{no}");
    let (status, problem) = app
        .post("/v1/entitlements/check", Some(&token), ask("wish", "pony"))
        .await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("kind")));
}

/// Seats, a gauge: taken and released, capped by the plan at any one time, never below
/// zero, never reset — a plan change keeps the level and only moves the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gauge_goes_up_and_down_within_the_plans_cap_and_never_resets() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = TestApp::spawn_on(db, &[]).await else {
            continue;
        };
        let (token, _, account) = app.sign_up(&format!("seats-{db:?}@example.com")).await;
        let seats = |quotas: &Value| {
            quotas
                .as_array()
                .unwrap()
                .iter()
                .find(|q| q["meter"] == "seats")
                .cloned()
                .unwrap()
        };
        let (_, quotas) = app.get_as("/v1/quotas", &token).await;
        assert_eq!(
            seats(&quotas),
            json!({"meter": "seats", "kind": "gauge", "limit": 1, "used": 0, "remaining": 1,
                   "period_start": null, "resets_at": null})
        );

        let (status, body, _, _) = track(&app, &token, "seats", 1, "invite-ann").await;
        assert_eq!((status, &body["used"]), (200, &json!(1)), "{body}");
        // Full: refused, and with no Retry-After, since waiting frees nothing.
        let (status, body, retry_after, _) = track(&app, &token, "seats", 1, "invite-bob").await;
        assert_eq!(
            (status, &body["code"]),
            (429, &json!("quota_exceeded")),
            "{body}"
        );
        assert_eq!(retry_after, None);
        assert_eq!(body["resets_at"], Value::Null);

        let (status, body, _, _) = track(&app, &token, "seats", -1, "remove-ann").await;
        assert_eq!((status, &body["used"]), (200, &json!(0)), "{body}");
        let (status, body, _, replayed) = track(&app, &token, "seats", -1, "remove-ann").await;
        assert_eq!((status, &body["used"], replayed), (200, &json!(0), true));
        // Releasing what is not held changes nothing.
        let (status, body, _, _) = track(&app, &token, "seats", -1, "remove-ghost").await;
        assert_eq!(
            (status, &body["code"]),
            (409, &json!("gauge_below_zero")),
            "{body}"
        );
        // A counter takes no release.
        let (status, body, _, _) = track(&app, &token, "exports", -1, "unexport").await;
        assert_eq!(
            (status, &body["code"], &body["field"]),
            (422, &json!("invalid_field"), &json!("amount")),
            "{body}"
        );

        // In a batch: each decided in order against the running level.
        let (status, batch) = track_batch(
            &app,
            &token,
            json!([{"meter": "seats", "amount": 1, "key": "b-take"},
                   {"meter": "seats", "amount": -1, "key": "b-give"},
                   {"meter": "seats", "amount": -1, "key": "b-give-again"}]),
        )
        .await;
        assert_eq!(status, 200, "{batch}");
        let outcome: Vec<(&Value, &Value)> = batch["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (&r["status"], &r["code"]))
            .collect();
        assert_eq!(
            outcome,
            [
                (&json!("recorded"), &Value::Null),
                (&json!("recorded"), &Value::Null),
                (&json!("rejected"), &json!("gauge_below_zero")),
            ]
        );
        assert_eq!(batch["results"][0]["resets_at"], Value::Null);
        // A release of a counter in a batch refuses the whole batch.
        let (status, body) = track_batch(
            &app,
            &token,
            json!([{"meter": "seats", "amount": 1, "key": "c-take"},
                   {"meter": "exports", "amount": -2, "key": "c-unexport"}]),
        )
        .await;
        assert_eq!((status, &body["field"]), (422, &json!("events[1].amount")));

        // Two seats on team (cap 25); back on free, the level stays and blocks more.
        app.set_plan(&account, "team").await;
        for key in ["t1", "t2"] {
            let (status, body, _, _) = track(&app, &token, "seats", 1, key).await;
            assert_eq!(status, 200, "{body}");
        }
        app.set_plan(&account, "free").await;
        let (_, quotas) = app.get_as("/v1/quotas", &token).await;
        assert_eq!(seats(&quotas)["used"], 2, "{quotas}");
        assert_eq!(seats(&quotas)["remaining"], 0);
        let (_, check) = app
            .post(
                "/v1/entitlements/check",
                Some(&token),
                json!({"kind": "meter", "name": "seats", "amount": 1}),
            )
            .await;
        assert_eq!(check["allowed"], false, "{check}");
        let catalog: Value = app.get("/v1/catalog").await.json().await.unwrap();
        let meters = catalog["meters"].as_array().unwrap();
        assert!(
            meters
                .iter()
                .any(|m| m["id"] == "seats" && m["kind"] == "gauge"),
            "{catalog}"
        );
    }
}
