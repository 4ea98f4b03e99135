//! Rate limits and the slowing of failed sign-ins, over the [`RateLimiter`] port.
//!
//! The port is counted in memory by this process ([`MemoryLimiter`], the default) or in
//! Redis so that several instances count together (the `ratelimit-redis` crate). Clients
//! are told apart by their address: the peer's, or behind a trusted proxy the one it
//! reports in `X-Forwarded-For` ([`client_ip`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use async_trait::async_trait;
use billing_core::catalog::RateLimit;
use billing_core::ports::{FailurePolicy, RateLimiter, StoreError, Verdict};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::ApiState;

// ---------------------------------------------------------------------------------------
// In memory.

/// Failure counters kept at most (past it, keys below their free failures go first, then
/// new keys are not counted until old ones are forgotten).
const MAX_FAILURE_KEYS: usize = 100_000;
/// How often idle request counters are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The port in this process's memory. Request rates use `governor` (GCRA: a rule of
/// `requests` per `per_seconds` allows a burst of `requests`, then one more every
/// `per_seconds / requests`), one sharded map per rule, whose idle keys are dropped every
/// ten seconds: memory follows the keys active within one window, and no request scans
/// or waits on a global lock. Failures are counted in a map bounded to 100,000 keys.
#[derive(Debug)]
pub struct MemoryLimiter {
    rules: RwLock<HashMap<(u32, u32), Arc<KeyedLimiter>>>,
    started: Instant,
    last_sweep_ms: AtomicU64,
    failures: Mutex<Failures>,
}

/// One rule's counters, one per key.
type KeyedLimiter = DefaultKeyedRateLimiter<String>;

#[derive(Debug, Default)]
struct Failures {
    keys: HashMap<String, Failure>,
    last_sweep: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Failure {
    count: u32,
    last: Instant,
    until: Option<Instant>,
    forget_after: Duration,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self {
            rules: RwLock::new(HashMap::new()),
            started: Instant::now(),
            last_sweep_ms: AtomicU64::new(0),
            failures: Mutex::new(Failures::default()),
        }
    }
}

impl MemoryLimiter {
    fn limiter(&self, rule: &RateLimit) -> Arc<KeyedLimiter> {
        let id = (rule.requests, rule.per_seconds);
        if let Some(found) = self
            .rules
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
        {
            return Arc::clone(found);
        }
        let burst = NonZeroU32::new(rule.requests.max(1)).unwrap_or(NonZeroU32::MIN);
        let window = Duration::from_secs(u64::from(rule.per_seconds.max(1)));
        let quota = Quota::with_period(window / burst.get())
            .unwrap_or_else(|| Quota::per_second(burst))
            .allow_burst(burst);
        let mut rules = self
            .rules
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(
            rules
                .entry(id)
                .or_insert_with(|| Arc::new(KeyedLimiter::keyed(quota))),
        )
    }

    /// Drops idle request counters, at most once per [`SWEEP_EVERY`].
    fn sweep(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        let every = u64::try_from(SWEEP_EVERY.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(last) < every
            || self
                .last_sweep_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.drop_idle();
    }

    /// Drops the request counters that have fully recovered (indistinguishable from new).
    fn drop_idle(&self) {
        let limiters: Vec<_> = self
            .rules
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for limiter in limiters {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Request counters held now (for tests and metrics).
    pub fn tracked_keys(&self) -> usize {
        self.rules
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|l| l.len())
            .sum()
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Failures {
    /// Makes room for one more key if it can: forgets stale keys (at most once a second),
    /// then keys still below their free failures.
    fn room(&mut self, free: u32) -> bool {
        if self.keys.len() < MAX_FAILURE_KEYS {
            return true;
        }
        let now = Instant::now();
        if self
            .last_sweep
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            self.last_sweep = Some(now);
            self.keys.retain(|_, f| f.last.elapsed() < f.forget_after);
            if self.keys.len() >= MAX_FAILURE_KEYS {
                self.keys.retain(|_, f| f.count >= free);
            }
        }
        self.keys.len() < MAX_FAILURE_KEYS
    }
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn hit(&self, key: &str, rule: &RateLimit) -> Result<Verdict, StoreError> {
        self.sweep();
        let limiter = self.limiter(rule);
        Ok(match limiter.check_key(&key.to_owned()) {
            Ok(()) => Verdict::Allowed,
            Err(not_until) => {
                let wait = not_until.wait_time_from(limiter.clock().now());
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Verdict::Wait {
                    seconds: seconds.max(1),
                }
            }
        })
    }

    async fn fail(&self, key: &str, policy: FailurePolicy) -> Result<(), StoreError> {
        let forget_after = Duration::from_secs(policy.forget_after_seconds.max(1));
        let now = Instant::now();
        let mut failures = self.failures();
        if !failures.keys.contains_key(key) && !failures.room(policy.free) {
            tracing::warn!("failed sign-ins are not counted: the table is full");
            return Ok(());
        }
        let entry = failures.keys.entry(key.to_owned()).or_insert(Failure {
            count: 0,
            last: now,
            until: None,
            forget_after,
        });
        if entry.last.elapsed() >= forget_after {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        entry.forget_after = forget_after;
        if entry.count >= policy.free {
            let doubling = (entry.count - policy.free).min(20);
            entry.until = Some(now + Duration::from_secs(1u64 << doubling).min(forget_after));
        }
        Ok(())
    }

    async fn wait(&self, key: &str) -> Result<Verdict, StoreError> {
        let failures = self.failures();
        let until = failures.keys.get(key).and_then(|f| f.until);
        Ok(match until {
            Some(until) if until > Instant::now() => Verdict::Wait {
                seconds: until
                    .saturating_duration_since(Instant::now())
                    .as_secs()
                    .max(1),
            },
            _ => Verdict::Allowed,
        })
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        self.failures().keys.remove(key);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Clients behind proxies.

/// An address range (`10.0.0.0/8`, `::1/128`, or a single address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    base: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for IpRange {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let base: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not an address or range"))?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix must be 0 to {max}"))?,
        };
        Ok(Self { base, prefix })
    }
}

impl IpRange {
    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => (u128::from(v4.to_bits()), 32u32),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (u128::from(v4.to_bits()), 32),
                None => (v6.to_bits(), 128),
            },
        };
        let ((base, width), (addr, addr_width)) = (bits(self.base), bits(ip));
        if width != addr_width {
            return false;
        }
        let prefix = u32::from(self.prefix).min(width);
        if prefix == 0 {
            return true;
        }
        let shift = width - prefix;
        (base >> shift) == (addr >> shift)
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy; then the
/// right-most address of `X-Forwarded-For` that is not itself a trusted proxy (addresses
/// left of it were written by the client and prove nothing).
pub fn client_ip(req: &HttpRequest, trusted: &[IpRange]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|range| range.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| part.trim().parse().ok())
        .collect();
    Some(
        forwarded
            .iter()
            .rev()
            .copied()
            .find(|ip| !is_trusted(*ip))
            .or_else(|| forwarded.first().copied())
            .unwrap_or(peer),
    )
}

// ---------------------------------------------------------------------------------------
// The limits.

/// Failed sign-ins allowed per email, then per address, before waiting.
const LOGIN_FAILURES: FailurePolicy = FailurePolicy {
    free: 5,
    forget_after_seconds: 15 * 60,
};
const LOGIN_FAILURES_PER_IP: FailurePolicy = FailurePolicy {
    free: 20,
    forget_after_seconds: 15 * 60,
};

/// Limits and where they are counted.
pub struct Limits {
    /// Per address, for requests without credentials.
    pub anonymous: Option<RateLimit>,
    /// Per user, when their plan sets none.
    pub default_user: Option<RateLimit>,
    /// The counters.
    pub limiter: Arc<dyn RateLimiter>,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpRange>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("anonymous", &self.anonymous)
            .field("default_user", &self.default_user)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish_non_exhaustive()
    }
}

/// A limiter that cannot answer lets the request through: limits protect capacity, and an
/// outage of their store must not take the API down with it.
fn or_allow(verdict: Result<Verdict, StoreError>) -> Verdict {
    verdict.unwrap_or_else(|err| {
        tracing::warn!(error = %err, "rate limiter unavailable; allowing");
        Verdict::Allowed
    })
}

impl Limits {
    /// The client's address for this request.
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        client_ip(req, &self.trusted_proxies)
    }

    /// `Err(seconds)` if this email or address must wait after failed sign-ins.
    pub async fn login_allowed(&self, email: &str, ip: Option<IpAddr>) -> Result<(), u64> {
        let by_email = or_allow(self.limiter.wait(&format!("login:email:{email}")).await);
        let by_ip = match ip {
            Some(ip) => or_allow(self.limiter.wait(&format!("login:ip:{ip}")).await),
            None => Verdict::Allowed,
        };
        let seconds = [by_email, by_ip]
            .into_iter()
            .filter_map(|v| match v {
                Verdict::Wait { seconds } => Some(seconds),
                Verdict::Allowed => None,
            })
            .max();
        seconds.map_or(Ok(()), Err)
    }

    /// Counts a failed sign-in for the email and the address.
    pub async fn login_failed(&self, email: &str, ip: Option<IpAddr>) {
        let mut results = vec![
            self.limiter
                .fail(&format!("login:email:{email}"), LOGIN_FAILURES)
                .await,
        ];
        if let Some(ip) = ip {
            results.push(
                self.limiter
                    .fail(&format!("login:ip:{ip}"), LOGIN_FAILURES_PER_IP)
                    .await,
            );
        }
        for err in results.into_iter().filter_map(Result::err) {
            tracing::warn!(error = %err, "could not count a failed sign-in");
        }
    }

    /// A success clears the email's failures.
    pub async fn login_succeeded(&self, email: &str) {
        if let Err(err) = self.limiter.clear(&format!("login:email:{email}")).await {
            tracing::warn!(error = %err, "could not clear failed sign-ins");
        }
    }
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

/// Applies the rate limits: per address without credentials (or with invalid ones), per
/// user by plan with them; the admin key is not limited. Health checks are never limited.
pub async fn rate_limit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    // Health checks, and the payment provider's webhooks (signed; refusing them would only
    // make the provider retry) are never limited.
    let exempt =
        matches!(req.path(), "/health" | "/ready") || req.path().starts_with("/v1/webhooks/");
    if let (false, Some(state)) = (
        exempt,
        req.app_data::<actix_web::web::Data<ApiState>>().cloned(),
    ) {
        let headers = req.headers();
        let caller = if headers.contains_key(actix_web::http::header::AUTHORIZATION)
            || headers.contains_key(crate::auth::X_API_KEY)
        {
            crate::auth::caller(req.request()).await.ok()
        } else {
            None
        };
        let limits = &state.limits;
        let verdict = match &caller {
            Some(Caller::AdminKey | Caller::Worker) => Verdict::Allowed,
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
                match plan_rule.or_else(|| limits.default_user.clone()) {
                    Some(rule) => {
                        or_allow(limits.limiter.hit(&format!("user:{user}"), &rule).await)
                    }
                    None => Verdict::Allowed,
                }
            }
            None => match (&limits.anonymous, limits.client_ip(req.request())) {
                (Some(rule), Some(ip)) => {
                    or_allow(limits.limiter.hit(&format!("ip:{ip}"), rule).await)
                }
                _ => Verdict::Allowed,
            },
        };
        if let Verdict::Wait { seconds } = verdict {
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

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn ranges(list: &[&str]) -> Vec<IpRange> {
        list.iter().map(|r| r.parse().unwrap()).collect()
    }

    #[test]
    fn ranges_parse_and_match() {
        let r: IpRange = "10.0.0.0/8".parse().unwrap();
        assert!(r.contains("10.200.3.4".parse().unwrap()));
        assert!(!r.contains("11.0.0.1".parse().unwrap()));
        assert!(
            r.contains("::ffff:10.1.1.1".parse().unwrap()),
            "IPv4-mapped IPv6"
        );
        let one: IpRange = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpRange>().is_err());
        assert!("proxy".parse::<IpRange>().is_err());
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let trusted = ranges(&["127.0.0.1", "10.0.0.0/8"]);
        let via_proxy = TestRequest::default()
            .peer_addr("127.0.0.1:5000".parse().unwrap())
            .insert_header(("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.1.2.3"))
            .to_http_request();
        assert_eq!(
            client_ip(&via_proxy, &trusted),
            Some("203.0.113.9".parse().unwrap()),
            "the right-most untrusted address; the spoofable left part is ignored"
        );
        let direct = TestRequest::default()
            .peer_addr("198.51.100.7:5000".parse().unwrap())
            .insert_header(("x-forwarded-for", "1.2.3.4"))
            .to_http_request();
        assert_eq!(
            client_ip(&direct, &trusted),
            Some("198.51.100.7".parse().unwrap()),
            "a client that is not a trusted proxy cannot name another address"
        );
        assert_eq!(
            client_ip(&via_proxy, &[]),
            Some("127.0.0.1".parse().unwrap()),
            "no trusted proxies: the peer"
        );
    }

    #[tokio::test]
    async fn memory_limiter_limits_per_key_and_forgets_idle_keys() {
        let limiter = MemoryLimiter::default();
        let rule = RateLimit {
            requests: 3,
            per_seconds: 60,
        };
        for _ in 0..3 {
            assert_eq!(limiter.hit("a", &rule).await.unwrap(), Verdict::Allowed);
        }
        match limiter.hit("a", &rule).await.unwrap() {
            Verdict::Wait { seconds } => assert!((1..=20).contains(&seconds), "{seconds}"),
            Verdict::Allowed => panic!("a fourth request within the window"),
        }
        assert_eq!(limiter.hit("b", &rule).await.unwrap(), Verdict::Allowed);
        // Keys that have fully recovered are dropped by the sweep.
        let quick = RateLimit {
            requests: 1000,
            per_seconds: 1,
        };
        for i in 0..5_000 {
            limiter.hit(&format!("ip:{i}"), &quick).await.unwrap();
        }
        assert!(limiter.tracked_keys() >= 5_000);
        std::thread::sleep(Duration::from_millis(1100));
        limiter.drop_idle();
        assert!(
            limiter.tracked_keys() < 100,
            "idle keys are forgotten: {}",
            limiter.tracked_keys()
        );
    }

    #[tokio::test]
    async fn failures_slow_a_key_down_after_the_free_ones() {
        let limiter = MemoryLimiter::default();
        let policy = FailurePolicy {
            free: 2,
            forget_after_seconds: 900,
        };
        limiter.fail("k", policy).await.unwrap();
        assert_eq!(limiter.wait("k").await.unwrap(), Verdict::Allowed);
        limiter.fail("k", policy).await.unwrap();
        assert!(matches!(
            limiter.wait("k").await.unwrap(),
            Verdict::Wait { .. }
        ));
        limiter.clear("k").await.unwrap();
        assert_eq!(limiter.wait("k").await.unwrap(), Verdict::Allowed);
    }
}
