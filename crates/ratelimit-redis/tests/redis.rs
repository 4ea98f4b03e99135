//! The port against a real Redis: `TOLLGATE_TEST_REDIS_URL` (CI sets it to
//! redis://127.0.0.1:6379). Without it these tests say so and pass, unless
//! `TOLLGATE_REQUIRE_REDIS=1`, which makes a missing Redis a failure.

use std::io::Write;
use std::sync::Arc;

use billing_core::catalog::RateLimit;
use billing_core::ports::{FailurePolicy, RateLimiter, Verdict};
use ratelimit_redis::RedisLimiter;

/// Two limiters — two Tollgate instances — on one Redis, under a prefix of this test's own.
async fn two_instances(test: &str) -> Option<(RedisLimiter, RedisLimiter)> {
    let Ok(url) = std::env::var("TOLLGATE_TEST_REDIS_URL") else {
        assert!(
            std::env::var("TOLLGATE_REQUIRE_REDIS").is_err(),
            "TOLLGATE_REQUIRE_REDIS is set but TOLLGATE_TEST_REDIS_URL is not"
        );
        let _ = writeln!(
            std::io::stderr(),
            "NOTE: Redis limiter test SKIPPED: TOLLGATE_TEST_REDIS_URL is not set"
        );
        return None;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("tollgate-test:{test}:{}:{nanos}:", std::process::id());
    let a = RedisLimiter::connect(&url, &prefix)
        .await
        .expect("reach Redis");
    let b = RedisLimiter::connect(&url, &prefix)
        .await
        .expect("reach Redis");
    Some((a, b))
}

#[tokio::test]
async fn two_instances_share_one_limit() {
    let Some((a, b)) = two_instances("share").await else {
        return;
    };
    let rule = RateLimit {
        requests: 5,
        per_seconds: 60,
    };
    for limiter in [&a, &a, &a, &b, &b] {
        assert_eq!(limiter.hit("ip:1", &rule).await.unwrap(), Verdict::Allowed);
    }
    for limiter in [&a, &b] {
        match limiter.hit("ip:1", &rule).await.unwrap() {
            Verdict::Wait { seconds } => assert!((1..=60).contains(&seconds), "{seconds}"),
            Verdict::Allowed => panic!("the sixth request in the window was allowed"),
        }
    }
    assert_eq!(
        b.hit("ip:2", &rule).await.unwrap(),
        Verdict::Allowed,
        "another key has its own count"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_hits_are_counted_exactly() {
    let Some((a, b)) = two_instances("race").await else {
        return;
    };
    let (a, b) = (Arc::new(a), Arc::new(b));
    let rule = RateLimit {
        requests: 20,
        per_seconds: 60,
    };
    let mut tasks = Vec::new();
    for i in 0..100 {
        let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
        let rule = rule.clone();
        tasks.push(tokio::spawn(async move {
            limiter.hit("user:hot", &rule).await.unwrap()
        }));
    }
    let mut allowed = 0;
    for task in tasks {
        if task.await.unwrap() == Verdict::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 20, "exactly the limit, across both instances");
}

#[tokio::test]
async fn failures_slow_a_key_on_every_instance_until_cleared() {
    let Some((a, b)) = two_instances("fail").await else {
        return;
    };
    let policy = FailurePolicy {
        free: 3,
        forget_after_seconds: 900,
    };
    a.fail("login:email:eve@example.com", policy).await.unwrap();
    b.fail("login:email:eve@example.com", policy).await.unwrap();
    assert_eq!(
        a.wait("login:email:eve@example.com").await.unwrap(),
        Verdict::Allowed
    );
    a.fail("login:email:eve@example.com", policy).await.unwrap();
    assert!(matches!(
        b.wait("login:email:eve@example.com").await.unwrap(),
        Verdict::Wait { seconds: 1 }
    ));
    b.fail("login:email:eve@example.com", policy).await.unwrap();
    assert!(matches!(
        a.wait("login:email:eve@example.com").await.unwrap(),
        Verdict::Wait { seconds: 2 }
    ));
    b.clear("login:email:eve@example.com").await.unwrap();
    assert_eq!(
        a.wait("login:email:eve@example.com").await.unwrap(),
        Verdict::Allowed
    );
}

#[tokio::test]
async fn an_unreachable_redis_is_unavailable_not_a_panic() {
    if std::env::var("TOLLGATE_TEST_REDIS_URL").is_err() {
        return;
    }
    let err = RedisLimiter::connect("redis://127.0.0.1:1/", "x:")
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        billing_core::ports::StoreError::Unavailable(_)
    ));
}
