//! Running several instances: scheduled jobs run once per period across them, and
//! `/metrics` tells an operator what each instance did.

use std::collections::{BTreeMap, BTreeSet};

use api_tests::{ADMIN_KEY, Db, TestApp};
use billing_core::ports::JobStore;

const JOBS: [&str; 5] = [
    "expire_holds",
    "renew_allowances",
    "apply_payment_events",
    "sweep_tasks",
    "prune_idempotency",
];

async fn metrics(app: &TestApp, token: Option<&str>) -> (u16, String) {
    let mut request = app.client.get(format!("{}/metrics", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The value of a sample line `name{labels} value`, whose labels include every one given.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Runs of `job` this instance made (ok or failed) and periods it left to another.
fn runs(text: &str, job: &str) -> (u64, u64) {
    let count = |outcome| {
        sample(
            text,
            "tollgate_job_runs_total",
            &[("job", job), ("outcome", outcome)],
        )
        .unwrap_or(0)
    };
    (count("ok") + count("failed"), count("skipped"))
}

#[tokio::test]
async fn two_instances_run_each_scheduled_period_once_on_both_databases() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(first) = TestApp::spawn_with(db, &[], |loaded| {
            loaded.settings.ledger.hold_sweep_seconds = 1;
            loaded.settings.tasks.sweep_seconds = 1;
            loaded.settings.payments.webhook_sweep_ms = 500;
        })
        .await
        else {
            continue;
        };
        let second = first.twin().await;
        tokio::time::sleep(std::time::Duration::from_millis(3_600)).await;

        let before = first.store.recent_runs(None, 1_000).await.unwrap();
        let (_, one) = metrics(&first, Some(ADMIN_KEY)).await;
        let (_, two) = metrics(&second, Some(ADMIN_KEY)).await;
        let after = first.store.recent_runs(None, 1_000).await.unwrap();

        let count = |rows: &[billing_core::ports::JobRun], job: &str| {
            u64::try_from(rows.iter().filter(|r| r.job == job).count()).unwrap()
        };
        let instances: BTreeSet<_> = after.iter().map(|r| r.instance.clone()).collect();
        assert!(instances.len() <= 2, "{db:?}: {instances:?}");
        for job in JOBS {
            let (ran_one, skipped_one) = runs(&one, job);
            let (ran_two, skipped_two) = runs(&two, job);
            let ran = ran_one + ran_two;
            // Each period was claimed by one instance and run by it alone: the runs the
            // instances report add up to the periods recorded (give or take a run under
            // way while the figures were read), never to twice as many.
            assert!(
                ran <= count(&after, job) && ran + 2 >= count(&before, job),
                "{db:?} {job}: ran {ran_one} + {ran_two}, recorded {} to {}",
                count(&before, job),
                count(&after, job)
            );
            assert!(ran >= 1, "{db:?} {job}: never ran");
            assert!(
                skipped_one + skipped_two >= 1,
                "{db:?} {job}: no instance ever yielded a period"
            );
        }
        // The fast jobs ran every period of the 3.6 s; the periods are distinct.
        let mut periods: BTreeMap<&str, Vec<_>> = BTreeMap::new();
        for run in &after {
            periods
                .entry(run.job.as_str())
                .or_default()
                .push(run.period);
        }
        for (job, list) in &periods {
            let distinct: BTreeSet<_> = list.iter().collect();
            assert_eq!(distinct.len(), list.len(), "{db:?} {job}");
        }
        assert!(periods["expire_holds"].len() >= 3, "{db:?}: {periods:?}");

        // The operator's view, from either instance: the same runs, newest first (a run may
        // start between the reads, so the view lies between the store before and after).
        let stored_before = first
            .store
            .recent_runs(Some("expire_holds".into()), 200)
            .await
            .unwrap();
        let (status, view) = second
            .get_as("/v1/admin/jobs?job=expire_holds&limit=200", ADMIN_KEY)
            .await;
        assert_eq!(status, 200, "{view}");
        let listed: Vec<(&str, &str)> = view["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["job"].as_str().unwrap(), r["instance"].as_str().unwrap()))
            .collect();
        let stored = first
            .store
            .recent_runs(Some("expire_holds".into()), 200)
            .await
            .unwrap();
        assert!(
            (stored_before.len()..=stored.len()).contains(&listed.len()),
            "{db:?}: {view}"
        );
        assert!(
            listed
                .iter()
                .rev()
                .zip(stored.iter().rev())
                .all(|(l, s)| *l == ("expire_holds", s.instance.as_str())),
            "{db:?}: {view}"
        );
        let queues: BTreeSet<&str> = view["queues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["queue"].as_str().unwrap())
            .collect();
        assert_eq!(
            queues,
            BTreeSet::from(["payment_events", "task_webhooks", "tasks"]),
            "{db:?}"
        );
        let (token, _, _) = first.sign_up(&format!("nosy-{db:?}@example.com")).await;
        assert_eq!(first.get_as("/v1/admin/jobs", &token).await.0, 403);
    }
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_ledger_operations_by_outcome() {
    let app = TestApp::spawn(&[]).await;
    assert_eq!(metrics(&app, None).await.0, 401);
    assert_eq!(metrics(&app, Some("not-the-key")).await.0, 401);
    let (token, _, _) = app.sign_up("metered@example.com").await;
    for (n, action) in ["short_chat", "short_chat", "image_analysis"]
        .iter()
        .enumerate()
    {
        let key = format!("m-{n}");
        assert_eq!(app.spend(&token, action, Some(&key)).await.status(), 200);
    }
    // The same key again: a replay.
    app.spend(&token, "short_chat", Some("m-0")).await;
    for id in ["tsk_a", "tsk_b"] {
        app.get_as(&format!("/v1/tasks/{id}"), &token).await;
    }
    let (status, text) = metrics(&app, Some(ADMIN_KEY)).await;
    assert_eq!(status, 200, "{text}");
    let spend = [
        ("method", "POST"),
        ("route", "/v1/credits/spend"),
        ("status", "200"),
    ];
    assert_eq!(
        sample(&text, "tollgate_http_requests_total", &spend),
        Some(4)
    );
    // Two ids, one series: the route template, not the path.
    let task = [("route", "/v1/tasks/{task_id}"), ("status", "404")];
    assert_eq!(
        sample(&text, "tollgate_http_requests_total", &task),
        Some(2)
    );
    assert_eq!(
        sample(
            &text,
            "tollgate_http_request_duration_seconds_count",
            &spend[..2]
        ),
        Some(4)
    );
    let debit = |outcome| [("operation", "debit"), ("outcome", outcome)];
    assert_eq!(
        sample(
            &text,
            "tollgate_ledger_operations_total",
            &debit("executed")
        ),
        Some(3)
    );
    assert_eq!(
        sample(
            &text,
            "tollgate_ledger_operations_total",
            &debit("replayed")
        ),
        Some(1)
    );
    // Welcome credits at sign-up.
    assert!(
        sample(
            &text,
            "tollgate_ledger_operations_total",
            &[("operation", "grant")]
        )
        .is_some()
    );
    assert_eq!(
        sample(&text, "tollgate_queue_depth", &[("queue", "tasks")]),
        Some(0)
    );
    assert!(sample(&text, "tollgate_db_pool_connections", &[("state", "max")]).unwrap() >= 1);
    assert!(text.ends_with("# EOF\n"));
}
