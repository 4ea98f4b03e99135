//! Each of the five first products' main flow, on its own example catalog and on both
//! databases, through the endpoints its docs/products/ page maps its old ones onto. Money
//! moves through the local pay page (the same events Stripe's webhooks would give).

use api_tests::identity::{Key, Provider};
use api_tests::{ADMIN_KEY, Db, TestApp, WORKER_KEY, lift_rate_limits};
use serde_json::{Value, json};

use crate::quotas::track;

/// Where the local pay page says it lives; replaced by the test server's address.
const PUBLIC: &str = "http://127.0.0.1:1";

async fn product(db: Db, file: &str) -> Option<TestApp> {
    let file = format!("config/examples/{file}.toml");
    TestApp::spawn_with(db, &[file.as_str()], |loaded| {
        loaded.settings.payments.public_url = PUBLIC.into();
        lift_rate_limits(loaded);
    })
    .await
}

fn urls(mut body: Value) -> Value {
    body["success_url"] = json!("http://localhost:3000/done");
    body["cancel_url"] = json!("http://localhost:3000/pricing");
    body
}

/// Opens a checkout at `path` and pays it on the local page; returns the page's text.
async fn buy(app: &TestApp, token: &str, path: &str, body: Value) -> String {
    let (status, session) = app.post(path, Some(token), urls(body)).await;
    assert_eq!(status, 200, "{session}");
    let page = session["url"]
        .as_str()
        .unwrap()
        .replace(PUBLIC, &app.address);
    let text = app
        .client
        .get(&page)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let paid = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{page}/pay"))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 303, "{page}");
    text
}

/// Framium (seed 000): no chat before a plan; BASIC bought, its token allowance granted;
/// chat charged by the tokens used and shown in usage; preferences and saved prompts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framium_subscribes_then_chats_within_its_token_allowance() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = product(db, "framium").await else {
            continue;
        };
        let (token, _, account) = app.sign_up(&format!("framer-{db:?}@example.com")).await;
        let chat = json!({"model": "gpt-4.1", "max_tokens": 200,
                          "messages": [{"role": "user", "content": "Make the hero bolder"}]});
        // `POST /api/chat` before subscribing: the plan has no models (an OpenAI-shaped
        // error, for the OpenAI SDK the plugin uses).
        let (status, refused) = app
            .post("/v1/chat/completions", Some(&token), chat.clone())
            .await;
        assert_eq!(
            (status, &refused["error"]["code"]),
            (403, &json!("model_not_in_plan")),
            "{refused}"
        );

        // `POST /api/stripe/create-checkout`: BASIC, monthly.
        let page = buy(
            &app,
            &token,
            "/v1/checkout/subscription",
            json!({"plan": "basic", "interval": "month"}),
        )
        .await;
        assert!(page.contains("Plan `basic`: 9.00 usd per month"), "{page}");
        let (_, state) = app.get_as("/v1/subscription", &token).await;
        assert_eq!(state["plan"], "basic", "{state}");
        assert_eq!(app.available(&token).await, 50_000);

        // `POST /api/chat`: tokens used are charged one credit each.
        let (status, reply) = app.post("/v1/chat/completions", Some(&token), chat).await;
        assert_eq!(status, 200, "{reply}");
        let used = reply["usage"]["total_tokens"].as_i64().unwrap();
        assert_eq!(app.available(&token).await, 50_000 - used);
        // `GET /api/user/usage`.
        let (_, usage) = app.get_as("/v1/usage", &token).await;
        assert_eq!(usage["days"][0]["credits"], used, "{usage}");

        // `PUT /api/user/preferences`, saved prompts.
        let prefs = json!({"theme": "dark", "default_model": "gpt-4.1"});
        let response = app
            .send(
                reqwest::Method::PUT,
                "/v1/me/preferences",
                Some(&token),
                Some(prefs.clone()),
                &[],
            )
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(app.get_as("/v1/me/preferences", &token).await.1, prefs);
        let (status, saved) = app
            .post(
                "/v1/saved-items",
                Some(&token),
                json!({"kind": "prompt", "title": "Hero", "content": "Make the hero bolder"}),
            )
            .await;
        assert_eq!(status, 201, "{saved}");
        let (_, items) = app.get_as("/v1/saved-items?kind=prompt", &token).await;
        assert_eq!(items["items"][0]["title"], "Hero", "{items}");
        app.assert_ledger_sound(&account).await;
    }
}

/// AI Flirt Studio (seed 001): welcome and daily credits, actions charged at their price
/// until a 402, a pack bought, replies saved, and the admin's view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flirt_studio_spends_actions_buys_a_pack_and_the_admin_sees_it() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = product(db, "flirt-studio").await else {
            continue;
        };
        let email = format!("flirt-{db:?}@example.com").to_lowercase();
        let (token, _, account) = app.sign_up(&email).await;
        // `GET /api/user/credits`: 100 welcome + 25 for today.
        assert_eq!(app.available(&token).await, 125);
        // `POST /api/user/action`: six long chats (20 each), then a 402 saying what is short.
        for _ in 0..6 {
            assert_eq!(app.spend(&token, "long_chat", None).await.status(), 200);
        }
        let short = app.spend(&token, "long_chat", None).await;
        assert_eq!(short.status(), 402);
        let short: Value = short.json().await.unwrap();
        assert_eq!(
            (&short["code"], &short["required"], &short["balance"]),
            (&json!("insufficient_credits"), &json!(20), &json!(5)),
            "{short}"
        );
        // `POST /api/user/buy_pack`: the medium pack, 500 + 50 bonus.
        buy(&app, &token, "/v1/checkout/pack", json!({"pack": "medium"})).await;
        assert_eq!(app.available(&token).await, 5 + 550);
        let (_, history) = app.get_as("/v1/billing/history", &token).await;
        assert_eq!(history["items"][0]["amount"], "19.99", "{history}");

        // `POST /api/user/save_reply`, `GET /api/user/saved_replies`.
        let (status, _) = app
            .post(
                "/v1/saved-items",
                Some(&token),
                json!({"kind": "reply", "content": "Only if you lead the way."}),
            )
            .await;
        assert_eq!(status, 201);
        let (_, replies) = app.get_as("/v1/saved-items?kind=reply", &token).await;
        assert_eq!(replies["items"].as_array().unwrap().len(), 1, "{replies}");

        // The admin: users, an adjustment, the business view.
        let (_, users) = app
            .get_as(&format!("/v1/admin/users?search={email}"), ADMIN_KEY)
            .await;
        assert_eq!(users["items"][0]["email"], email, "{users}");
        let (status, _) = app
            .post(
                &format!("/v1/admin/accounts/{account}/credits"),
                Some(ADMIN_KEY),
                json!({"delta": 45, "reason": "apology for downtime"}),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(app.available(&token).await, 600);
        let (_, metrics) = app.get_as("/v1/admin/metrics", ADMIN_KEY).await;
        assert_eq!(
            metrics["revenue"],
            json!([{"kind": "pack", "currency": "usd", "payments": 1, "gross": "19.99",
                    "refunded": "0.00", "net": "19.99"}])
        );
        assert_eq!(metrics["days"][0]["by_action"]["long_chat"]["count"], 6);
        assert_eq!(metrics["liability"], 550);
        app.assert_ledger_sound(&account).await;
    }
}

/// AI Audio Studio Pro (seed 002): tokens used by priced actions, a token pack, tokens
/// earned by a social engagement, analytics, and a Creator subscription with its trial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_studio_uses_buys_and_earns_tokens_and_subscribes() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = product(db, "audio-studio").await else {
            continue;
        };
        let (token, _, account) = app.sign_up(&format!("audio-{db:?}@example.com")).await;
        // `GET /api/tokens/balance`: 50 welcome + 20 for the month.
        assert_eq!(app.available(&token).await, 70);
        // `GET /api/tokens/packs`, `POST /api/tokens/purchase`.
        let (_, packs) = app.get_as("/v1/packs", &token).await;
        assert_eq!(packs.as_array().unwrap().len(), 3, "{packs}");
        buy(
            &app,
            &token,
            "/v1/checkout/pack",
            json!({"pack": "tokens_100"}),
        )
        .await;
        assert_eq!(app.available(&token).await, 170);
        // `POST /api/tokens/use`: a transcription (3) and a mastering (10).
        for action in ["transcription", "audio_mastering"] {
            assert_eq!(app.spend(&token, action, None).await.status(), 200);
        }
        assert_eq!(app.available(&token).await, 157);
        // `POST /api/tokens/social`: following on X, once.
        let (status, claimed) = app
            .post(
                "/v1/rewards/follow_x/claim",
                Some(&token),
                json!({"evidence": {"handle": "@studio_fan"}}),
            )
            .await;
        assert_eq!(status, 201, "{claimed}");
        let (status, again) = app
            .post(
                "/v1/rewards/follow_x/claim",
                Some(&token),
                json!({"evidence": {"handle": "@studio_fan"}}),
            )
            .await;
        assert_eq!((status, &again["code"]), (409, &json!("reward_claimed")));
        assert_eq!(app.available(&token).await, 167);
        // `GET /api/tokens/transactions`, `GET /api/tokens/analytics`.
        let (_, journal) = app.get_as("/v1/credits/journal", &token).await;
        assert!(journal["items"].as_array().unwrap().len() >= 5, "{journal}");
        let (_, analytics) = app.get_as("/v1/credits/analytics", &token).await;
        assert_eq!(analytics["total"], 13, "{analytics}");
        assert_eq!(
            analytics["days"][0]["by_action"]["audio_mastering"],
            json!({"credits": 10, "count": 1})
        );
        // `POST /api/subscriptions/checkout`: Creator, yearly, with its 7-day trial.
        let page = buy(
            &app,
            &token,
            "/v1/checkout/subscription",
            json!({"plan": "creator", "interval": "year"}),
        )
        .await;
        assert!(page.contains("7-day free trial"), "{page}");
        let (_, state) = app.get_as("/v1/subscription", &token).await;
        assert_eq!(
            (
                &state["plan"],
                &state["subscription"]["status"],
                &state["subscription"]["interval"]
            ),
            (&json!("creator"), &json!("trialing"), &json!("year")),
            "{state}"
        );
        // `POST /api/subscriptions/cancel`: at the period's end.
        let (status, canceled) = app
            .post("/v1/subscription/cancel", Some(&token), json!({}))
            .await;
        assert_eq!(status, 200, "{canceled}");
        let (_, state) = app.get_as("/v1/subscription", &token).await;
        assert_eq!(
            state["subscription"]["cancel_at_period_end"], true,
            "{state}"
        );
        app.assert_ledger_sound(&account).await;
    }
}

/// StudioX (seed 003): a Clerk user's first request provisions the account with the free
/// plan's 10 credits; a task holds its credits, a cancel refunds them, a finished one is
/// charged; credits bought.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn studiox_signs_in_with_clerk_runs_tasks_and_buys_credits() {
    for db in [Db::Sqlite, Db::Postgres] {
        let provider = Provider::start(&[(Key::RsaA, "ins_studiox")]).await;
        let Some(app) = TestApp::spawn_with(db, &["config/examples/studiox.toml"], |loaded| {
            loaded.settings.payments.public_url = PUBLIC.into();
            lift_rate_limits(loaded);
            loaded
                .settings
                .auth
                .identity
                .insert("clerk".into(), provider.settings());
        })
        .await
        else {
            continue;
        };
        // `GET /api/billing/plans`: public.
        let catalog: Value = app.get("/v1/catalog").await.json().await.unwrap();
        let plans: Vec<&str> = catalog["plans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        assert_eq!(plans, ["free", "pro", "enterprise"]);
        // `POST /api/users/initialize` + `GET /api/users/me`: the first request does both.
        let token = provider.token(
            Key::RsaA,
            "ins_studiox",
            "user_2studiox",
            json!({"email": "maker@studiox.example", "email_verified": true}),
        );
        let (status, me) = app.get_as("/v1/me", &token).await;
        assert_eq!(status, 200, "{me}");
        assert_eq!(me["user"]["email"], "maker@studiox.example", "{me}");
        // `GET /api/users/credits`.
        assert_eq!(app.available(&token).await, 10);

        // `POST /api/tasks/create`: held at once; cancelled, refunded.
        let task = json!({"type": "image_analysis", "input": {"image_url": "https://x/y.png"}});
        let (status, queued) = app.post("/v1/tasks", Some(&token), task.clone()).await;
        assert_eq!(status, 201, "{queued}");
        assert_eq!(app.available(&token).await, 9);
        let id = queued["id"].as_str().unwrap();
        let (status, _) = app
            .post(&format!("/v1/tasks/{id}/cancel"), Some(&token), json!({}))
            .await;
        assert_eq!(status, 200);
        assert_eq!(app.available(&token).await, 10);
        // Another, run by StudioX's own worker, is charged when it completes.
        let (_, queued) = app.post("/v1/tasks", Some(&token), task).await;
        let id = queued["id"].as_str().unwrap();
        let (status, claimed) = app
            .post(
                "/v1/worker/tasks/claim",
                Some(WORKER_KEY),
                json!({"worker": "studiox-vision", "types": ["image_analysis"]}),
            )
            .await;
        assert_eq!(status, 200, "{claimed}");
        assert_eq!(claimed["tasks"][0]["id"], id, "{claimed}");
        let (status, done) = app
            .post(
                &format!("/v1/worker/tasks/{id}/complete"),
                Some(WORKER_KEY),
                json!({"attempt": 1, "output": {"labels": ["cat"]}}),
            )
            .await;
        assert_eq!(status, 200, "{done}");
        // `GET /api/tasks`.
        let (_, tasks) = app.get_as("/v1/tasks", &token).await;
        assert_eq!(tasks["items"][0]["status"], "succeeded", "{tasks}");
        assert_eq!(app.available(&token).await, 9);

        // `POST /api/billing/purchase-credits`: 250 + 25 bonus.
        buy(
            &app,
            &token,
            "/v1/checkout/pack",
            json!({"pack": "credits_250"}),
        )
        .await;
        assert_eq!(app.available(&token).await, 9 + 275);
        let account = me["account"]["id"].as_str().unwrap().to_owned();
        app.assert_ledger_sound(&account).await;
    }
}

/// Pain tracker (seed 004): no credits; a Basic yearly subscription with its 14-day trial,
/// monthly quotas on entries and exports, storage held as a gauge, and features by plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pain_tracker_subscribes_with_a_trial_and_counts_what_its_plan_allows() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = product(db, "pain-tracker").await else {
            continue;
        };
        let (token, _, _) = app.sign_up(&format!("pain-{db:?}@example.com")).await;
        let feature = |name: &str| json!({"kind": "feature", "name": name});
        let (_, check) = app
            .post(
                "/v1/entitlements/check",
                Some(&token),
                feature("pdf_export"),
            )
            .await;
        assert_eq!(check["allowed"], false, "{check}");
        // The free plan allows one export a month.
        assert_eq!(track(&app, &token, "export", 1, "x1").await.0, 200);
        let (status, full, _, _) = track(&app, &token, "export", 1, "x2").await;
        assert_eq!(
            (status, &full["code"]),
            (429, &json!("quota_exceeded")),
            "{full}"
        );
        // Storage: 40 MB uploaded, 15 deleted, 30 more would pass the free 50.
        assert_eq!(
            track(&app, &token, "storage", 40, "up-1").await.1["used"],
            40
        );
        assert_eq!(
            track(&app, &token, "storage", -15, "rm-1").await.1["used"],
            25
        );
        assert_eq!(track(&app, &token, "storage", 30, "up-2").await.0, 429);

        // `POST /api/stripe/create-checkout-session`: Basic, yearly, 14-day trial.
        let page = buy(
            &app,
            &token,
            "/v1/checkout/subscription",
            json!({"plan": "basic", "interval": "year"}),
        )
        .await;
        assert!(
            page.contains("14-day free trial") && page.contains("per year"),
            "{page}"
        );
        let (_, state) = app.get_as("/v1/subscription", &token).await;
        assert_eq!(
            (&state["plan"], &state["subscription"]["status"]),
            (&json!("basic"), &json!("trialing")),
            "{state}"
        );
        // Basic: PDF export on, ten exports, and room for the upload (cap 500).
        let (_, check) = app
            .post(
                "/v1/entitlements/check",
                Some(&token),
                feature("pdf_export"),
            )
            .await;
        assert_eq!(check["allowed"], true, "{check}");
        assert_eq!(
            track(&app, &token, "storage", 30, "up-2").await.1["used"],
            55
        );
        let (_, quotas) = app.get_as("/v1/quotas", &token).await;
        let export = quotas
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["meter"] == "export")
            .unwrap();
        assert_eq!(export["limit"], 10, "{quotas}");
        // The pricing page shows Pro's longer trial.
        let (_, catalog) = app.get_as("/v1/catalog", &token).await;
        let pro = catalog["plans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == "pro")
            .unwrap();
        assert_eq!(pro["trial_days"], 30, "{pro}");
    }
}
