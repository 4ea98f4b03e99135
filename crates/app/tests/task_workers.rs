//! `tollgate worker` processes against one database, on SQLite and PostgreSQL:
//!
//! * two workers side by side never run a task twice (every task claimed once);
//! * workers killed with `kill -9` in the middle of their tasks lose nothing: every task
//!   still finishes exactly once, no credit is charged twice or lost, `ledger verify` passes.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const WORKER_KEY: &str = "crash-test-worker-key-0123456789";
const WELCOME: i64 = 1_000_000;

/// A catalog whose one task type calls the mock model and leases for 2 s, so that a killed
/// worker's tasks come back quickly.
const CATALOG: &str = r#"
[catalog]
currency = "usd"
default_plan = "free"
credit_value = { amount = "0.001", currency = "usd" }

[catalog.plans.free]
name = "Free"
welcome_credits = 1000000
models = ["*"]

[catalog.models.mock]
provider = "mock"
upstream = "mock-writer"
input_per_mtok = "1000"
output_per_mtok = "2000"

[catalog.tasks.write]
run = "llm"
model = "mock"
prompt = "Write about {{topic}}"
max_output_tokens = 64
lease_seconds = 2
max_attempts = 10
timeout_seconds = 600
"#;

struct Setup {
    _dir: tempfile::TempDir,
    _schema: Option<PgSchema>,
    catalog: std::path::PathBuf,
    url: String,
}

fn setup(postgres: bool, label: &str) -> Option<Setup> {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.toml");
    std::fs::write(&catalog, CATALOG).unwrap();
    let (schema, url) = if postgres {
        let Some(schema) = PgSchema::new(label) else {
            assert!(
                !std::env::var("TOLLGATE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1"),
                "TOLLGATE_REQUIRE_POSTGRES=1 but TOLLGATE_TEST_DATABASE_URL is not set"
            );
            eprintln!(
                "NOTE: the PostgreSQL worker test was SKIPPED: TOLLGATE_TEST_DATABASE_URL is not set"
            );
            return None;
        };
        let url = schema.url.clone();
        (Some(schema), url)
    } else {
        let url = format!("sqlite://{}", dir.path().join("tasks.db").display());
        (None, url)
    };
    Some(Setup {
        _dir: dir,
        _schema: schema,
        catalog,
        url,
    })
}

impl Setup {
    fn command(&self) -> Command {
        let mut cmd = bare_tollgate();
        cmd.arg("--config")
            .arg(&self.catalog)
            .env("TOLLGATE__DATABASE__URL", &self.url)
            .env("TOLLGATE__DATABASE__AUTO_MIGRATE", "true")
            .env("TOLLGATE__TASKS__WORKER_KEY", WORKER_KEY)
            .env("TOLLGATE__LLM__MOCK_LATENCY_MS", "40")
            .env("TOLLGATE__HTTP__USER_RATE_LIMIT__REQUESTS", "1000000");
        cmd
    }

    /// The API, with no task workers of its own (the sweeper still runs); its log is
    /// drained so that the server never blocks on a full pipe.
    fn serve(&self) -> (String, Child) {
        let mut cmd = self.command();
        cmd.env("TOLLGATE__TASKS__WORKERS", "0");
        let (address, child, lines) = start_serving(cmd);
        std::thread::spawn(move || lines.for_each(drop));
        (address, child)
    }

    fn worker(&self) -> Child {
        self.command()
            .args(["worker", "--workers", "3"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }
}

fn terminate(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "a clean stop");
}

fn kill9(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = child.wait();
}

async fn sign_up(client: &reqwest::Client, base: &str) -> String {
    let body: Value = client
        .post(format!("{base}/v1/auth/signup"))
        .json(&json!({"email": "crash@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["tokens"]["access_token"].as_str().unwrap().to_owned()
}

async fn create_tasks(client: &reqwest::Client, base: &str, token: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(25) {
        let sends = chunk.iter().map(|i| {
            client
                .post(format!("{base}/v1/tasks"))
                .bearer_auth(token)
                .header("Idempotency-Key", format!("task-{i}"))
                .json(&json!({"type": "write", "input": {"topic": format!("topic {i}")}}))
                .send()
        });
        for response in futures_util::future::join_all(sends).await {
            assert_eq!(response.unwrap().status(), 201);
        }
    }
}

/// A GET with the caller's token, answered in JSON.
async fn get_json(client: &reqwest::Client, url: String, token: &str) -> Value {
    client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every task of the account, with its history.
async fn all_tasks(client: &reqwest::Client, base: &str, token: &str) -> Vec<Value> {
    let mut tasks = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/tasks?limit=200");
        if let Some(cursor) = &after {
            url.push_str(&format!("&after={cursor}"));
        }
        let page = get_json(client, url, token).await;
        tasks.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return tasks,
        }
    }
}

async fn wait_all_final(client: &reqwest::Client, base: &str, token: &str, n: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let tasks = all_tasks(client, base, token).await;
        assert_eq!(tasks.len(), n);
        let open = tasks
            .iter()
            .filter(|t| matches!(t["status"].as_str(), Some("queued" | "running")))
            .count();
        if open == 0 {
            return tasks;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{open} tasks still open"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn history(client: &reqwest::Client, base: &str, token: &str, id: &str) -> Vec<Value> {
    let detail = get_json(client, format!("{base}/v1/tasks/{id}"), token).await;
    detail["history"].as_array().unwrap().clone()
}

/// Checks every task and every credit: each task succeeded once; the balance is the
/// welcome grant less exactly what the tasks were charged; nothing is held; the ledger
/// verifies. Returns how many tasks were claimed more than once.
async fn check_everything(setup: &Setup, base: &str, token: &str, tasks: &[Value]) -> usize {
    let client = reqwest::Client::new();
    let mut charged = 0;
    let mut retried = 0;
    for task in tasks {
        assert_eq!(task["status"], "succeeded", "{task}");
        let id = task["id"].as_str().unwrap();
        let events = history(&client, base, token, id).await;
        let finals = events.iter().filter(|e| e["status"] == "succeeded").count();
        assert_eq!(finals, 1, "{id} finished once: {events:?}");
        let claims = events.iter().filter(|e| e["status"] == "running").count();
        assert_eq!(claims as u64, task["attempts"].as_u64().unwrap());
        if claims > 1 {
            retried += 1;
        }
        let cost = task["credits_charged"].as_i64().unwrap();
        assert!(cost >= 1 && cost <= task["credits_reserved"].as_i64().unwrap());
        charged += cost;
    }
    let credits = get_json(&client, format!("{base}/v1/credits"), token).await;
    assert_eq!(credits["held"], 0, "{credits}");
    assert_eq!(
        credits["available"].as_i64(),
        Some(WELCOME - charged),
        "{credits}"
    );
    let verify = setup.command().args(["ledger", "verify"]).output().unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    retried
}

async fn two_workers_never_run_a_task_twice(setup: Setup) -> Setup {
    let (address, server) = setup.serve();
    let base = format!("http://{address}");
    let client = reqwest::Client::new();
    let token = sign_up(&client, &base).await;
    create_tasks(&client, &base, &token, 150).await;
    let mut workers = [setup.worker(), setup.worker()];
    let tasks = wait_all_final(&client, &base, &token, 150).await;
    for worker in &mut workers {
        kill9(worker);
    }
    let retried = check_everything(&setup, &base, &token, &tasks).await;
    assert_eq!(retried, 0, "no lease ran out, so no task was claimed twice");
    terminate(server);
    setup
}

/// Tasks in the kill test: 300, or `TOLLGATE_CRASH_TASKS` for a longer run.
fn tasks_to_run() -> usize {
    std::env::var("TOLLGATE_CRASH_TASKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300)
}

async fn killed_workers_lose_no_task_and_no_credit(setup: Setup) -> Setup {
    let (address, server) = setup.serve();
    let base = format!("http://{address}");
    let client = reqwest::Client::new();
    let token = sign_up(&client, &base).await;
    let n = tasks_to_run();
    create_tasks(&client, &base, &token, n).await;
    // Two workers start; each is killed mid-work and replaced, twice.
    let mut a = setup.worker();
    let mut b = setup.worker();
    tokio::time::sleep(Duration::from_millis(700)).await;
    kill9(&mut a);
    let mut c = setup.worker();
    tokio::time::sleep(Duration::from_millis(500)).await;
    kill9(&mut b);
    let mut d = setup.worker();
    let tasks = wait_all_final(&client, &base, &token, n).await;
    kill9(&mut c);
    kill9(&mut d);
    let retried = check_everything(&setup, &base, &token, &tasks).await;
    eprintln!("{n} tasks, {retried} claimed again after a kill");
    assert!(
        retried > 0,
        "the kills interrupted tasks in hand, which were claimed again"
    );
    terminate(server);
    setup
}

/// Runs `scenario` on a fresh database (skipped on PostgreSQL when none is configured).
/// The setup comes back so that it is dropped (its schema too) outside the runtime.
fn run<F: Future<Output = Setup>>(postgres: bool, label: &str, scenario: impl FnOnce(Setup) -> F) {
    let Some(setup) = setup(postgres, label) else {
        return;
    };
    let setup = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(scenario(setup));
    drop(setup);
}

#[test]
fn two_workers_on_sqlite_never_run_a_task_twice() {
    run(false, "two", two_workers_never_run_a_task_twice);
}

#[test]
fn two_workers_on_postgres_never_run_a_task_twice() {
    run(true, "two", two_workers_never_run_a_task_twice);
}

#[test]
fn killed_workers_on_sqlite_lose_no_task_and_no_credit() {
    run(false, "kill", killed_workers_lose_no_task_and_no_credit);
}

#[test]
fn killed_workers_on_postgres_lose_no_task_and_no_credit() {
    run(true, "kill", killed_workers_lose_no_task_and_no_credit);
}
