//! The task flows of the products that run background AI work, each on its own example
//! catalog: Flirt Studio's analysis queue, StudioX's tasks that refund on cancel, Framium's
//! agent tasks charged by the tokens used.

use std::time::Duration;

use api_tests::{ADMIN_KEY, Db, TestApp, WORKER_KEY};
use serde_json::{Value, json};

async fn product(file: &str) -> TestApp {
    TestApp::spawn_on(Db::Sqlite, &[file])
        .await
        .expect("sqlite is always there")
}

async fn balance(app: &TestApp, token: &str) -> (i64, i64) {
    let (_, credits) = app.get_as("/v1/credits", token).await;
    (
        credits["available"].as_i64().unwrap(),
        credits["held"].as_i64().unwrap(),
    )
}

async fn set_plan(app: &TestApp, account: &str, plan: &str) {
    let (status, body) = app
        .post(
            &format!("/v1/admin/accounts/{account}/plan"),
            Some(ADMIN_KEY),
            json!({"plan": plan}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn until_final(app: &TestApp, token: &str, id: &str) -> Value {
    for _ in 0..400 {
        let (_, task) = app.get_as(&format!("/v1/tasks/{id}"), token).await;
        if matches!(
            task["status"].as_str(),
            Some("succeeded" | "failed" | "canceled")
        ) {
            return task;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{id} did not finish");
}

/// Flirt Studio: an analysis answers its id at once, runs in the background, is charged
/// its action's price; the screenshot analysis is for Pro and above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flirt_studio_queues_analyses_and_charges_their_action() {
    let app = product("config/examples/flirt-studio.toml").await;
    let (token, _, account) = app.sign_up("flirty@example.com").await;
    let (before, _) = balance(&app, &token).await;
    let (status, queued) = app
        .post(
            "/v1/tasks",
            Some(&token),
            json!({"type": "short_analysis", "input": {"message": "Do you like hiking?"}}),
        )
        .await;
    assert_eq!(status, 201, "{queued}");
    assert_eq!(queued["credits_reserved"], 5);
    let id = queued["id"].as_str().unwrap();
    let done = until_final(&app, &token, id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["credits_charged"], 5, "the action's price");
    assert!(
        done["output"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    assert_eq!(balance(&app, &token).await, (before - 5, 0));
    // History: the analyses, newest first.
    let (_, history) = app.get_as("/v1/tasks?status=succeeded", &token).await;
    assert_eq!(history["items"][0]["id"], id);

    let screenshot = json!({"type": "image_analysis", "input": {"image_url": "https://x/y.png"}});
    let (status, denied) = app
        .post("/v1/tasks", Some(&token), screenshot.clone())
        .await;
    assert_eq!(
        (status, denied["code"].as_str()),
        (403, Some("not_in_plan"))
    );
    set_plan(&app, &account, "pro").await;
    let (status, queued) = app.post("/v1/tasks", Some(&token), screenshot).await;
    assert_eq!(status, 201, "{queued}");
    assert_eq!(queued["credits_reserved"], 50);
}

/// StudioX: creating a task takes its credits, cancelling gives them back; its own worker
/// claims video generation and reports it done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn studiox_tasks_deduct_and_refund_on_cancel() {
    let app = product("config/examples/studiox.toml").await;
    let (token, _, account) = app.sign_up("creator@example.com").await;
    assert_eq!(
        balance(&app, &token).await,
        (10, 0),
        "the free monthly credits"
    );
    let image = json!({"type": "image_analysis", "input": {"asset": "a1"}});
    let (status, task) = app.post("/v1/tasks", Some(&token), image).await;
    assert_eq!(status, 201, "{task}");
    assert_eq!(balance(&app, &token).await, (9, 1));
    let id = task["id"].as_str().unwrap();
    let (status, canceled) = app
        .post(&format!("/v1/tasks/{id}/cancel"), Some(&token), json!({}))
        .await;
    assert_eq!(
        (status, canceled["status"].as_str()),
        (200, Some("canceled"))
    );
    assert_eq!(balance(&app, &token).await, (10, 0), "refunded");

    let video = json!({"type": "video_generation", "input": {"prompt": "a sunrise"}});
    let (status, denied) = app.post("/v1/tasks", Some(&token), video.clone()).await;
    assert_eq!(
        (status, denied["code"].as_str()),
        (403, Some("not_in_plan"))
    );
    set_plan(&app, &account, "pro").await;
    let (status, task) = app.post("/v1/tasks", Some(&token), video).await;
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_str().unwrap();
    let (status, claimed) = app
        .post(
            "/v1/worker/tasks/claim",
            Some(WORKER_KEY),
            json!({"worker": "studiox-renderer", "types": ["video_generation"]}),
        )
        .await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(claimed["tasks"][0]["id"], id);
    let (status, done) = app
        .post(
            &format!("/v1/worker/tasks/{id}/complete"),
            Some(WORKER_KEY),
            json!({"attempt": 1, "output": {"video_url": "https://cdn/x.mp4"}}),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["credits_charged"], 5);
    let (available, held) = balance(&app, &token).await;
    assert_eq!(held, 0);
    assert!(available >= 5, "{available}");
}

/// Framium: agent tasks need a plan with `tasks` and are charged the tokens they used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framium_agent_tasks_are_charged_by_tokens() {
    let app = product("config/examples/framium.toml").await;
    let (token, _, account) = app.sign_up("designer@example.com").await;
    let agent = json!({"type": "agent_task", "input": {"instructions": "Add a pricing section"}});
    let (status, denied) = app.post("/v1/tasks", Some(&token), agent.clone()).await;
    assert_eq!(
        (status, denied["code"].as_str()),
        (403, Some("not_in_plan"))
    );
    set_plan(&app, &account, "basic").await;
    let (status, body) = app
        .post(
            &format!("/v1/admin/accounts/{account}/credits"),
            Some(ADMIN_KEY),
            json!({"delta": 50_000, "reason": "a month of tokens"}),
        )
        .await;
    assert!(status < 300, "{body}");
    let (before, _) = balance(&app, &token).await;
    let (status, task) = app.post("/v1/tasks", Some(&token), agent).await;
    assert_eq!(status, 201, "{task}");
    let done = until_final(&app, &token, task["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let usage = &done["output"]["usage"];
    let tokens = usage["input"].as_i64().unwrap()
        + usage["cached_input"].as_i64().unwrap()
        + usage["output"].as_i64().unwrap();
    assert_eq!(
        done["credits_charged"].as_i64(),
        Some(tokens),
        "one credit per token"
    );
    assert_eq!(balance(&app, &token).await, (before - tokens, 0));
}
