//! billing-core's [`RateLimiter`] port in Redis, so that several Tollgate instances behind a
//! load balancer count rate limits and failed sign-ins together.
//!
//! Each operation is one Lua script, so it is atomic however many instances call it:
//!
//! * `hit`: a fixed window per key and rule (`INCR`, with the window's expiry set by the
//!   first request); past `requests` in the window the answer is to wait for what is left
//!   of it.
//! * `fail`: a failure counter that is forgotten `forget_after` after the last failure;
//!   from the `free`-th failure on, a wait marker that expires 1, 2, 4… seconds later.
//! * `wait`: the wait marker's time to live. `clear`: both keys deleted.
//!
//! Keys live under a prefix (`tollgate:` by default). The connection is a
//! [`redis::aio::ConnectionManager`], which reconnects by itself; a call waits at most
//! 500 ms for an answer, and while Redis is down the calls fail with
//! [`StoreError::Unavailable`] and the HTTP layer lets requests through.

use async_trait::async_trait;
use billing_core::catalog::RateLimit;
use billing_core::ports::{FailurePolicy, RateLimiter, StoreError, Verdict};
use redis::Script;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// `KEYS[1]` the counter; `ARGV[1]` the window in ms. Returns the count and the ms left.
const HIT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
";

/// `KEYS[1]` the failure counter, `KEYS[2]` the wait marker; `ARGV[1]` free failures,
/// `ARGV[2]` forget-after in ms.
const FAIL: &str = r"
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local free = tonumber(ARGV[1])
if n >= free then
  local doubling = math.min(n - free, 20)
  local wait = math.min(1000 * (2 ^ doubling), tonumber(ARGV[2]))
  redis.call('SET', KEYS[2], '1', 'PX', math.floor(wait))
end
return n
";

/// The port on one Redis server.
#[derive(Clone)]
pub struct RedisLimiter {
    connection: ConnectionManager,
    prefix: String,
    hit: Script,
    fail: Script,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never print it.
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(err: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {}", err.category()))
}

impl RedisLimiter {
    /// Connects to `url` (`redis://[:password@]host:port[/db]`), keys under `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        // A slow or lost Redis must cost a request little: the limits then let it through.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_millis(500)));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unavailable)?;
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
            hit: Script::new(HIT),
            fail: Script::new(FAIL),
        })
    }

    fn key(&self, kind: &str, key: &str) -> String {
        format!("{}{kind}:{key}", self.prefix)
    }
}

/// Whole seconds, rounded up, at least 1.
fn seconds(ms: i64) -> u64 {
    u64::try_from(ms.max(1)).unwrap_or(1).div_ceil(1000).max(1)
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn hit(&self, key: &str, rule: &RateLimit) -> Result<Verdict, StoreError> {
        let window_ms = u64::from(rule.per_seconds.max(1)) * 1000;
        let counter = self.key(&format!("rl:{}/{}", rule.requests, rule.per_seconds), key);
        let (count, left_ms): (u64, i64) = self
            .hit
            .key(counter)
            .arg(window_ms)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(if count > u64::from(rule.requests) {
            Verdict::Wait {
                seconds: seconds(left_ms),
            }
        } else {
            Verdict::Allowed
        })
    }

    async fn fail(&self, key: &str, policy: FailurePolicy) -> Result<(), StoreError> {
        let forget_ms = policy.forget_after_seconds.max(1) * 1000;
        let _: u64 = self
            .fail
            .key(self.key("fail", key))
            .key(self.key("wait", key))
            .arg(policy.free)
            .arg(forget_ms)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn wait(&self, key: &str) -> Result<Verdict, StoreError> {
        let left_ms: i64 = redis::cmd("PTTL")
            .arg(self.key("wait", key))
            .query_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(if left_ms > 0 {
            Verdict::Wait {
                seconds: seconds(left_ms),
            }
        } else {
            Verdict::Allowed
        })
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        let _: u64 = redis::cmd("DEL")
            .arg(self.key("fail", key))
            .arg(self.key("wait", key))
            .query_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
