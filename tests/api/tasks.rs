//! Asynchronous tasks over HTTP, on both databases: an `llm` task run by the server's own
//! workers is charged its exact cost; an external worker claims, completes and fails tasks
//! with the worker key; cancel and failure refund the exact hold; a cancel racing a
//! completion resolves once; leases that run out are retried and then failed; a task past
//! its deadline is failed and refunded; finished tasks are announced by a signed webhook.

use std::time::Duration;

use api_tests::{ADMIN_KEY, Db, TASK_WEBHOOK_SECRET, TestApp, WORKER_KEY, lift_rate_limits};
use billing_core::catalog::{TaskRun, TaskType};
use billing_core::ids::AccountId;
use billing_core::ledger::verify;
use billing_core::ports::LedgerStore;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

fn external(action: &str, timeout: u32, attempts: u32) -> TaskType {
    TaskType {
        run: TaskRun::External,
        action: Some(action.into()),
        feature: None,
        timeout_seconds: timeout,
        max_attempts: attempts,
        lease_seconds: 60,
        model: None,
        prompt: None,
        max_output_tokens: None,
    }
}

/// A server with extra task types: `quick` (times out after 1 s), `flaky` (2 attempts),
/// `research` (needs the `tasks` feature, which the free plan lacks).
async fn app_with(db: Db, tweak: impl FnOnce(&mut app::settings::Loaded)) -> Option<TestApp> {
    TestApp::spawn_with(db, &[], |loaded| {
        lift_rate_limits(loaded);
        let tasks = &mut loaded.catalog.tasks;
        tasks.insert("quick".into(), external("short_chat", 1, 3));
        tasks.insert("flaky".into(), external("long_chat", 600, 2));
        let mut research = external("long_chat", 600, 3);
        research.feature = Some("tasks".into());
        tasks.insert("research".into(), research);
        tweak(loaded);
    })
    .await
}

async fn app(db: Db) -> Option<TestApp> {
    app_with(db, |_| {}).await
}

async fn available(app: &TestApp, token: &str) -> (i64, i64) {
    let (_, credits) = app.get_as("/v1/credits", token).await;
    (
        credits["available"].as_i64().unwrap(),
        credits["held"].as_i64().unwrap(),
    )
}

/// Gives the account exactly `credits` available.
async fn fund(app: &TestApp, token: &str, account: &str, credits: i64) {
    let (now, _) = available(app, token).await;
    let delta = credits - now;
    if delta != 0 {
        let (status, body) = app
            .post(
                &format!("/v1/admin/accounts/{account}/credits"),
                Some(ADMIN_KEY),
                json!({"delta": delta, "reason": "task test"}),
            )
            .await;
        assert!(status < 300, "{body}");
    }
    assert_eq!(available(app, token).await.0, credits);
}

async fn create(app: &TestApp, token: &str, kind: &str, input: Value) -> (u16, Value) {
    app.post(
        "/v1/tasks",
        Some(token),
        json!({"type": kind, "input": input}),
    )
    .await
}

async fn worker(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    app.post(path, Some(WORKER_KEY), body).await
}

async fn claim(app: &TestApp, kinds: &[&str], limit: u32, lease: Option<u32>) -> Vec<Value> {
    let mut body = json!({"worker": "w1", "types": kinds, "limit": limit});
    if let Some(lease) = lease {
        body["lease_seconds"] = json!(lease);
    }
    let (status, claimed) = worker(app, "/v1/worker/tasks/claim", body).await;
    assert_eq!(status, 200, "{claimed}");
    claimed["tasks"].as_array().unwrap().clone()
}

async fn task(app: &TestApp, token: &str, id: &str) -> Value {
    let (status, body) = app.get_as(&format!("/v1/tasks/{id}"), token).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until the task reaches `status` (20 s at most).
async fn until_status(app: &TestApp, token: &str, id: &str, status: &str) -> Value {
    for _ in 0..400 {
        let body = task(app, token, id).await;
        if body["status"] == status {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{id} never reached {status}: {}",
        task(app, token, id).await
    );
}

async fn verified(app: &TestApp, account: &str) {
    let id: AccountId = account.parse().unwrap();
    let snapshot = app.store.snapshot(&id).await.unwrap();
    assert_eq!(verify(&snapshot, 0), vec![], "ledger verify");
}

fn statuses(detail: &Value) -> Vec<String> {
    detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap().to_owned())
        .collect()
}

async fn an_llm_task_is_run_by_the_server_and_charged_its_exact_cost(db: Db) {
    let Some(app) = app(db).await else { return };
    let (token, _, account) = app.sign_up("llm-task@example.com").await;
    fund(&app, &token, &account, 10_000).await;
    let (status, created) = create(
        &app,
        &token,
        "summarize",
        json!({"text": "Tollgate holds the worst case and charges the exact cost."}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "queued");
    let reserved = created["credits_reserved"].as_i64().unwrap();
    assert!(reserved > 0);
    let id = created["id"].as_str().unwrap();
    let done = until_status(&app, &token, id, "succeeded").await;
    let charged = done["credits_charged"].as_i64().unwrap();
    assert!(charged >= 1 && charged <= reserved, "{done}");
    assert!(
        done["output"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{done}"
    );
    assert!(done["output"]["usage"]["output"].as_u64().unwrap() > 0);
    assert_eq!(statuses(&done), ["queued", "running", "succeeded"]);
    assert!(
        done["history"][1]["actor"]
            .as_str()
            .unwrap()
            .starts_with("worker:"),
        "{done}"
    );
    assert_eq!(available(&app, &token).await, (10_000 - charged, 0));
    // The call is in the caller's usage, at the credits charged.
    let (_, usage) = app.get_as("/v1/usage", &token).await;
    assert_eq!(usage["days"][0]["model"], "gpt-4o-mini", "{usage}");
    assert_eq!(
        usage["days"][0]["credits"].as_i64(),
        Some(charged),
        "{usage}"
    );
    verified(&app, &account).await;
}

async fn external_workers_claim_complete_and_fail_with_the_worker_key(db: Db) {
    let Some(app) = app(db).await else { return };
    let (token, _, account) = app.sign_up("external@example.com").await;
    fund(&app, &token, &account, 1_000).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, created) = create(
            &app,
            &token,
            "image_analysis",
            json!({"image": format!("{n}.png")}),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["credits_reserved"], 50);
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(available(&app, &token).await, (850, 150));

    // A user's token and no token are not the worker key.
    let body = json!({"worker": "w1"});
    let (status, refused) = app
        .post("/v1/worker/tasks/claim", Some(&token), body.clone())
        .await;
    assert_eq!((status, refused["code"].as_str()), (403, Some("forbidden")));
    let (status, _) = app.post("/v1/worker/tasks/claim", None, body).await;
    assert_eq!(status, 401);
    // The worker key has no account.
    let (status, _) = app.get_as("/v1/tasks", WORKER_KEY).await;
    assert_eq!(status, 403);

    let claimed = claim(&app, &["image_analysis"], 2, Some(30)).await;
    assert_eq!(claimed.len(), 2);
    assert_eq!(claimed[0]["id"], ids[0].as_str(), "oldest first");
    assert_eq!(claimed[0]["status"], "running");
    assert_eq!(claimed[0]["attempts"], 1);
    assert!(claimed[0]["lease_until"].is_string());

    // Heartbeat, then complete for less than the hold: the rest returns.
    let (status, beat) = worker(
        &app,
        &format!("/v1/worker/tasks/{}/heartbeat", ids[0]),
        json!({"attempt": 1, "lease_seconds": 120}),
    )
    .await;
    assert_eq!(status, 200, "{beat}");
    let path = format!("/v1/worker/tasks/{}/complete", ids[0]);
    let (status, refused) = worker(&app, &path, json!({"attempt": 1, "cost": 51})).await;
    assert_eq!((status, refused["field"].as_str()), (422, Some("cost")));
    let (status, done) = worker(
        &app,
        &path,
        json!({"attempt": 1, "output": {"labels": ["cat"]}, "cost": 30}),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        (done["status"].as_str(), done["credits_charged"].as_i64()),
        (Some("succeeded"), Some(30))
    );
    // A repeated completion answers the task and charges nothing more.
    let (status, again) = worker(&app, &path, json!({"attempt": 1, "cost": 30})).await;
    assert_eq!((status, again["credits_charged"].as_i64()), (200, Some(30)));
    // The wrong claim is refused.
    let (status, stale) = worker(
        &app,
        &format!("/v1/worker/tasks/{}/complete", ids[1]),
        json!({"attempt": 7}),
    )
    .await;
    assert_eq!((status, stale["code"].as_str()), (409, Some("task_state")));

    // A failure refunds the exact hold.
    let (status, failed) = worker(
        &app,
        &format!("/v1/worker/tasks/{}/fail", ids[1]),
        json!({"attempt": 1, "error": "the image is unreadable"}),
    )
    .await;
    assert_eq!(status, 200, "{failed}");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"], "the image is unreadable");
    assert_eq!(failed["credits_charged"], 0);

    // The owner cancels the queued one: refunded; again: the same answer.
    let path = format!("/v1/tasks/{}/cancel", ids[2]);
    let (status, canceled) = app.post(&path, Some(&token), json!({})).await;
    assert_eq!(
        (status, canceled["status"].as_str()),
        (200, Some("canceled"))
    );
    let (status, _) = app.post(&path, Some(&token), json!({})).await;
    assert_eq!(status, 200);
    let (status, refused) = app
        .post(
            &format!("/v1/tasks/{}/cancel", ids[0]),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (409, Some("task_state"))
    );
    assert_eq!(refused["task_status"], "succeeded");

    assert_eq!(available(&app, &token).await, (970, 0));
    let detail = task(&app, &token, &ids[0]).await;
    assert_eq!(statuses(&detail), ["queued", "running", "succeeded"]);
    assert_eq!(detail["history"][1]["actor"], "worker:w1");

    // The list filters by state and type, newest first.
    let (_, page) = app.get_as("/v1/tasks?status=failed", &token).await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], ids[1].as_str());
    let (_, page) = app
        .get_as("/v1/tasks?type=image_analysis&limit=2", &token)
        .await;
    assert_eq!(page["items"][0]["id"], ids[2].as_str());
    assert!(page["next"].is_string());
    // Another account sees none of it.
    let (other, _, _) = app.sign_up("other@example.com").await;
    let (status, _) = app.get_as(&format!("/v1/tasks/{}", ids[0]), &other).await;
    assert_eq!(status, 404);
    let (status, _) = app
        .post(
            &format!("/v1/tasks/{}/cancel", ids[0]),
            Some(&other),
            json!({}),
        )
        .await;
    assert_eq!(status, 404);
    verified(&app, &account).await;
}

async fn refusals_change_nothing_and_keys_replay(db: Db) {
    let Some(app) = app(db).await else { return };
    let (token, _, account) = app.sign_up("refusals@example.com").await;
    fund(&app, &token, &account, 60).await;
    let send = |key: &'static str, input: Value| {
        let app = &app;
        let token = token.clone();
        async move {
            let response = app
                .send(
                    Method::POST,
                    "/v1/tasks",
                    Some(&token),
                    Some(json!({"type": "image_analysis", "input": input})),
                    &[("Idempotency-Key", key)],
                )
                .await;
            let status = response.status().as_u16();
            let replayed = response.headers().contains_key("idempotent-replayed");
            (status, replayed, response.json::<Value>().await.unwrap())
        }
    };
    let (status, replayed, first) = send("k-1", json!({"image": "a.png"})).await;
    assert_eq!((status, replayed), (201, false), "{first}");
    let (status, replayed, again) = send("k-1", json!({"image": "a.png"})).await;
    assert_eq!((status, replayed), (200, true));
    assert_eq!(again["id"], first["id"]);
    let (status, _, conflict) = send("k-1", json!({"image": "b.png"})).await;
    assert_eq!(
        (status, conflict["code"].as_str()),
        (409, Some("idempotency_conflict"))
    );
    // 10 credits left: a second task is short.
    let (status, _, short) = send("k-2", json!({"image": "b.png"})).await;
    assert_eq!(status, 402, "{short}");
    assert_eq!(
        (short["balance"].as_i64(), short["required"].as_i64()),
        (Some(10), Some(50))
    );
    let (status, unknown) = create(&app, &token, "nope", json!({})).await;
    assert_eq!(
        (status, unknown["code"].as_str()),
        (422, Some("unknown_task_type"))
    );
    let (status, bad) = app
        .post(
            "/v1/tasks",
            Some(&token),
            json!({"type": "quick", "input": [1]}),
        )
        .await;
    assert_eq!((status, bad["field"].as_str()), (422, Some("input")));
    let (status, missing) = create(&app, &token, "summarize", json!({"txt": "typo"})).await;
    assert_eq!(
        (status, missing["field"].as_str()),
        (422, Some("input")),
        "{missing}"
    );
    let (status, denied) = create(&app, &token, "research", json!({})).await;
    assert_eq!(
        (status, denied["code"].as_str()),
        (403, Some("not_in_plan")),
        "{denied}"
    );
    let (_, page) = app.get_as("/v1/tasks", &token).await;
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        1,
        "only the first task"
    );
    assert_eq!(available(&app, &token).await, (10, 50));
    verified(&app, &account).await;
}

async fn a_cancel_racing_a_completion_resolves_once(db: Db) {
    let Some(app) = app(db).await else { return };
    let (token, _, account) = app.sign_up("race@example.com").await;
    fund(&app, &token, &account, 2_000).await;
    for n in 0..40 {
        let (status, _) = create(&app, &token, "image_analysis", json!({"n": n})).await;
        assert_eq!(status, 201);
    }
    let claimed = claim(&app, &["image_analysis"], 40, None).await;
    assert_eq!(claimed.len(), 40);
    let mut races = Vec::new();
    for t in &claimed {
        let id = t["id"].as_str().unwrap().to_owned();
        let (a, b) = (app.client.clone(), app.client.clone());
        let address = app.address.clone();
        let token = token.clone();
        races.push(tokio::spawn(async move {
            let complete = a
                .post(format!("{address}/v1/worker/tasks/{id}/complete"))
                .bearer_auth(WORKER_KEY)
                .json(&json!({"attempt": 1, "cost": 20}))
                .send();
            let cancel = b
                .post(format!("{address}/v1/tasks/{id}/cancel"))
                .bearer_auth(&token)
                .json(&json!({}))
                .send();
            let (x, y) = tokio::join!(complete, cancel);
            (x.unwrap().status().as_u16(), y.unwrap().status().as_u16())
        }));
    }
    let mut charged = 0;
    for (race, t) in races.into_iter().zip(&claimed) {
        let (complete, cancel) = race.await.unwrap();
        let done = task(&app, &token, t["id"].as_str().unwrap()).await;
        match done["status"].as_str().unwrap() {
            "succeeded" => {
                assert_eq!((complete, cancel), (200, 409));
                charged += done["credits_charged"].as_i64().unwrap();
            }
            "canceled" => assert_eq!((complete, cancel), (409, 200)),
            other => panic!("{other}"),
        }
        assert_eq!(statuses(&done).len(), 3, "one final move: {done}");
    }
    assert_eq!(available(&app, &token).await, (2_000 - charged, 0));
    verified(&app, &account).await;
}

async fn expired_leases_are_retried_then_failed_and_late_tasks_refunded(db: Db) {
    let Some(app) = app(db).await else { return };
    let (token, _, account) = app.sign_up("leases@example.com").await;
    fund(&app, &token, &account, 100).await;
    let (_, flaky) = create(&app, &token, "flaky", json!({})).await;
    let flaky = flaky["id"].as_str().unwrap().to_owned();
    let (_, quick) = create(&app, &token, "quick", json!({})).await;
    let quick = quick["id"].as_str().unwrap().to_owned();
    assert_eq!(available(&app, &token).await, (75, 25));

    // Nobody claims `quick`: past its 1 s deadline it fails and is refunded.
    let late = until_status(&app, &token, &quick, "failed").await;
    assert_eq!(late["error"], "timed out");
    assert_eq!(late["history"][1]["actor"], "system");

    // `flaky`'s first lease runs out: back in the queue; its second too: failed.
    assert_eq!(claim(&app, &["flaky"], 1, Some(1)).await.len(), 1);
    let requeued = until_status(&app, &token, &flaky, "queued").await;
    assert_eq!(requeued["attempts"], 1);
    assert_eq!(requeued["history"][2]["note"], "lease expired");
    let second = claim(&app, &["flaky"], 1, Some(1)).await;
    assert_eq!(second[0]["attempts"], 2);
    let failed = until_status(&app, &token, &flaky, "failed").await;
    assert_eq!(
        statuses(&failed),
        ["queued", "running", "queued", "running", "failed"]
    );
    // The worker that lost its lease cannot complete it.
    let (status, _) = worker(
        &app,
        &format!("/v1/worker/tasks/{flaky}/complete"),
        json!({"attempt": 2}),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(available(&app, &token).await, (100, 0));
    verified(&app, &account).await;
}

/// A webhook receiver that records what it was sent, answering 500 to the first `fail`.
async fn receiver(
    fail: u64,
) -> (
    wiremock::MockServer,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    let server = wiremock::MockServer::start().await;
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let calls = Arc::new(AtomicU64::new(0));
    let (log, count) = (seen.clone(), calls.clone());
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(move |req: &wiremock::Request| {
            let signature = req
                .headers
                .get("tollgate-signature")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            log.lock()
                .unwrap()
                .push((signature, String::from_utf8_lossy(&req.body).into_owned()));
            if count.fetch_add(1, Ordering::SeqCst) < fail {
                wiremock::ResponseTemplate::new(500)
            } else {
                wiremock::ResponseTemplate::new(204)
            }
        })
        .mount(&server)
        .await;
    (server, seen)
}

fn signed_by_the_secret(signature: &str, body: &str) -> bool {
    let Some((t, v1)) = signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(TASK_WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expected == v1
}

async fn finished_tasks_are_announced_by_signed_webhooks(db: Db) {
    let (server, seen) = receiver(1).await;
    let url = format!("{}/hooks", server.uri());
    let Some(app) = app_with(db, move |loaded| {
        loaded.settings.tasks.webhook_url = Some(url);
        loaded.settings.tasks.webhook_secret = Some(TASK_WEBHOOK_SECRET.to_owned().into());
    })
    .await
    else {
        return;
    };
    let (token, _, account) = app.sign_up("hooks@example.com").await;
    fund(&app, &token, &account, 500).await;
    let (_, created) = create(&app, &token, "image_analysis", json!({"image": "x"})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    claim(&app, &["image_analysis"], 1, None).await;
    let (status, _) = worker(
        &app,
        &format!("/v1/worker/tasks/{id}/complete"),
        json!({"attempt": 1, "output": {"ok": true}}),
    )
    .await;
    assert_eq!(status, 200);
    // The first attempt is answered 500; the sender tries again after its backoff (10 s).
    let mut delivered = Value::Null;
    for _ in 0..300 {
        let (_, page) = app
            .get_as(
                &format!("/v1/admin/task-deliveries?task_id={id}"),
                ADMIN_KEY,
            )
            .await;
        if page["items"][0]["status"] == "delivered" {
            delivered = page["items"][0].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(delivered["status"], "delivered", "never delivered");
    assert_eq!(delivered["attempts"], 2);
    assert_eq!(delivered["event"], "task.succeeded");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for (signature, body) in &seen {
        assert!(signed_by_the_secret(signature, body), "{signature}");
        let event: Value = serde_json::from_str(body).unwrap();
        assert_eq!(event["type"], "task.succeeded");
        assert_eq!(event["id"], delivered["id"]);
        assert_eq!(event["data"]["task"]["id"], id.as_str());
        assert_eq!(event["data"]["task"]["output"], json!({"ok": true}));
        assert_eq!(event["data"]["task"]["credits_charged"], 50);
    }
    assert!(
        !signed_by_the_secret(&seen[0].0, "{}"),
        "the signature covers the body"
    );
    let (status, _) = app.get_as("/v1/admin/task-deliveries", &token).await;
    assert_eq!(status, 403, "admins only");
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(api_tests::Db::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(api_tests::Db::Postgres).await })*
        }
    };
}

on_both!(
    an_llm_task_is_run_by_the_server_and_charged_its_exact_cost,
    external_workers_claim_complete_and_fail_with_the_worker_key,
    refusals_change_nothing_and_keys_replay,
    a_cancel_racing_a_completion_resolves_once,
    expired_leases_are_retried_then_failed_and_late_tasks_refunded,
    finished_tasks_are_announced_by_signed_webhooks,
);
