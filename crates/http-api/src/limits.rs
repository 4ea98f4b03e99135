//! Rate limits and the slowing of failed sign-ins, kept in memory by this process.
//!
//! Fixed windows: each key (an IP, a user, an email) may make `requests` requests per
//! `per_seconds`; the next is refused with 429 and `Retry-After` until its window ends. With
//! several Tollgate processes behind a balancer each process counts on its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use billing_core::catalog::RateLimit;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::ApiState;

/// Counters of requests per key and window.
#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

/// Entries kept before old windows are swept.
const SWEEP_ABOVE: usize = 50_000;

impl RateLimiter {
    /// Counts a request for `key` under `rule`; `Err(seconds)` if it is over the limit.
    pub fn hit(&self, key: &str, rule: &RateLimit) -> Result<(), u64> {
        let window = Duration::from_secs(u64::from(rule.per_seconds.max(1)));
        let now = Instant::now();
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if windows.len() > SWEEP_ABOVE {
            windows.retain(|_, (start, _)| {
                now.duration_since(*start) < window.max(Duration::from_secs(3600))
            });
        }
        let entry = windows.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        if entry.1 >= rule.requests {
            let left = window.saturating_sub(now.duration_since(entry.0));
            return Err(left.as_secs().max(1));
        }
        entry.1 += 1;
        Ok(())
    }
}

/// Failed sign-ins per email and per IP; past a threshold each further attempt must wait,
/// twice as long after each failure (up to 15 minutes).
#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

/// Failures allowed before waiting is required.
const FREE_FAILURES_PER_ACCOUNT: u32 = 5;
const FREE_FAILURES_PER_IP: u32 = 20;
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

impl LoginThrottle {
    fn wait(&self, key: &str, free: u32) -> Option<u64> {
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (count, last) = failures.get(key)?;
        if *count < free || last.elapsed() >= FORGET_AFTER {
            return None;
        }
        let delay = Duration::from_secs(1u64 << (count - free).min(10)).min(FORGET_AFTER);
        let elapsed = last.elapsed();
        (elapsed < delay).then(|| (delay - elapsed).as_secs().max(1))
    }

    /// `Err(seconds)` if this email or IP must wait before trying again.
    pub fn check(&self, email: &str, ip: Option<IpAddr>) -> Result<(), u64> {
        let by_email = self.wait(&format!("email:{email}"), FREE_FAILURES_PER_ACCOUNT);
        let by_ip = ip.and_then(|ip| self.wait(&format!("ip:{ip}"), FREE_FAILURES_PER_IP));
        match by_email.max(by_ip) {
            Some(seconds) => Err(seconds),
            None => Ok(()),
        }
    }

    /// Records a failure for the email and the IP.
    pub fn failed(&self, email: &str, ip: Option<IpAddr>) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if failures.len() > SWEEP_ABOVE {
            failures.retain(|_, (_, last)| last.elapsed() < FORGET_AFTER);
        }
        let mut bump = |key: String| {
            let entry = failures.entry(key).or_insert((0, now));
            if entry.1.elapsed() >= FORGET_AFTER {
                entry.0 = 0;
            }
            entry.0 += 1;
            entry.1 = now;
        };
        bump(format!("email:{email}"));
        if let Some(ip) = ip {
            bump(format!("ip:{ip}"));
        }
    }

    /// A success clears the email's failures.
    pub fn succeeded(&self, email: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&format!("email:{email}"));
    }
}

/// Limits and their counters.
#[derive(Debug)]
pub struct Limits {
    /// Per IP, for requests without credentials.
    pub anonymous: Option<RateLimit>,
    /// Per user, when their plan sets none.
    pub default_user: Option<RateLimit>,
    /// The counters.
    pub limiter: RateLimiter,
    /// Failed sign-ins.
    pub logins: LoginThrottle,
}

/// A 429 with `Retry-After`.
pub fn too_many(seconds: u64, detail: &str) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "Too many requests",
        detail.to_owned(),
    )
    .with("retry_after", seconds)
}

/// Applies the rate limits: per IP without credentials (or with invalid ones), per user by
/// plan with them; the admin key is not limited. Health checks are never limited.
pub async fn rate_limit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let exempt = matches!(req.path(), "/health" | "/ready");
    if let (false, Some(state)) = (
        exempt,
        req.app_data::<actix_web::web::Data<ApiState>>().cloned(),
    ) {
        let caller = if req
            .headers()
            .contains_key(actix_web::http::header::AUTHORIZATION)
        {
            crate::auth::caller(req.request()).await.ok()
        } else {
            None
        };
        let verdict = match &caller {
            Some(Caller::AdminKey) => Ok(()),
            Some(Caller::User { user, account, .. }) => {
                let plan_rule = state
                    .billing
                    .accounts
                    .account(account)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|a| {
                        state
                            .billing
                            .catalog
                            .plan(&a.plan)
                            .and_then(|p| p.rate_limit.clone())
                    });
                match plan_rule.or_else(|| state.limits.default_user.clone()) {
                    Some(rule) => state.limits.limiter.hit(&format!("user:{user}"), &rule),
                    None => Ok(()),
                }
            }
            None => match (&state.limits.anonymous, req.peer_addr()) {
                (Some(rule), Some(peer)) => {
                    state.limits.limiter.hit(&format!("ip:{}", peer.ip()), rule)
                }
                _ => Ok(()),
            },
        };
        if let Err(seconds) = verdict {
            let problem = too_many(
                seconds,
                "too many requests; wait for the time in Retry-After",
            );
            let response = actix_web::ResponseError::error_response(&problem);
            return Ok(req.into_response(response).map_into_right_body());
        }
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}
