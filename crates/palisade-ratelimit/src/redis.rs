//! The distributed limiter: GCRA in one Lua script on Redis, shared by every instance.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use palisade_core::redis::{ConnectionOptions, IntoRedisConfig, RedisConfig, RedisConnection};
use palisade_core::{
    BuildError, EventBus, EventKind, Registry, SharedClock, StripedCounter,
    clock::saturating_nanos, config::ConfigError,
};
use parking_lot::Mutex;
use serde::Serialize;

use crate::core::Core;
use crate::error::{RateLimitError, RateLimited};
use crate::keyed::KeyedRateLimiter;
use crate::limiter::{FailurePolicy, RedisOptions};
use crate::quota::{Decision, Gcra, Quota};

/// GCRA on Redis (the text of `src/gcra.lua`). `KEYS[1]`: the bucket. `ARGV`: emission interval
/// (µs), tolerance (µs), cells. Time comes from Redis `TIME`, so instances' clocks do not
/// matter. Returns `{allowed, remaining, retry_after_us, reset_after_us}`, as redis-cell's
/// `CL.THROTTLE`.
///
/// The bucket's value is `<tat>.<tolerance>` (µs): the theoretical arrival time and the
/// tolerance it was written under; when the quota changed since, the bucket keeps the fraction
/// of its burst it had used (see [`RedisRateLimiter::set_quota`]). A bare `<tat>` (written by
/// older versions) is taken as written under the current quota, and older versions read
/// `<tat>.<tolerance>` as the TAT. An admission stores the new state with an expiry at which
/// the bucket is full again (idle keys vanish); a denial writes nothing, unless it rescaled the
/// bucket to a new quota.
pub const GCRA_SCRIPT: &str = include_str!("gcra.lua");

/// Keys longer than this are replaced by a stable 64-bit hash (the same on every instance).
const MAX_KEY_LEN: usize = 200;
/// Bound on the local deny cache.
const DENY_CACHE_MAX: usize = 10_000;

/// A keyed GCRA limiter whose buckets live in Redis, so that every instance behind a load
/// balancer shares one limit.
///
/// - One `EVALSHA` round trip per decision (the script is reloaded by itself after a Redis
///   restart or `SCRIPT FLUSH`); time comes from Redis `TIME`; a denial writes nothing
///   (unless it is the first decision on a bucket since a quota change, which rescales it).
/// - Keys are `<prefix>:<limiter>:{<key>}`: the hash tag makes them valid on Redis Cluster.
///   Each holds `<tat>.<tolerance>` (see [`GCRA_SCRIPT`]), so a quota change carries every
///   client's used fraction of the burst over.
/// - One multiplexed, auto-reconnecting connection is shared by all callers; concurrent
///   decisions pipeline over it.
/// - A key Redis refused until T is refused locally until T, without asking Redis.
/// - When Redis fails or is slower than `timeout`, the [`FailurePolicy`] decides, and the
///   limiter goes back to Redis by itself once it answers.
///
/// ```no_run
/// use palisade_ratelimit::{Quota, RedisRateLimiter};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = RedisRateLimiter::builder("per-client", "redis://127.0.0.1:6379")
///     .quota(Quota::per_minute(100))
///     .build()?;
/// let decision = limiter.decide("10.0.0.1", 1).await?;
/// println!("allowed {} remaining {}", decision.allowed, decision.remaining);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisRateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    core: Core,
    conn: RedisConnection,
    script: redis::Script,
    prefix: String,
    options: Mutex<RedisOptions>,
    policy: AtomicU8,
    timeout_nanos: AtomicU64,
    retry_interval_nanos: AtomicU64,
    /// While `now < down_until`, Redis is skipped; 0 when Redis is believed up.
    down_until: AtomicU64,
    fallback: KeyedRateLimiter<String>,
    deny_cache: DenyCache,
    backend_errors: StripedCounter,
    fallback_decisions: StripedCounter,
    deny_cache_hits: StripedCounter,
}

impl fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("name", &self.inner.core.name)
            .field("quota", &self.inner.core.quota())
            .field("options", &*self.inner.options.lock())
            .finish_non_exhaustive()
    }
}

/// Builds a [`RedisRateLimiter`]; see [`RedisRateLimiter::builder`].
#[must_use]
pub struct Builder {
    name: String,
    redis: Result<RedisConfig, ConfigError>,
    quota: Quota,
    options: RedisOptions,
    registry: Option<Registry>,
    clock: Option<SharedClock>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password: never print it.
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("quota", &self.quota)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// The quota of each key, shared by all instances. Default 100 per minute.
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = quota;
        self
    }

    /// Replaces all the Redis options (call it before the single-option setters below, which
    /// change one field of whatever is set).
    pub fn options(mut self, options: RedisOptions) -> Self {
        self.options = options;
        self
    }

    /// What to do when Redis fails. Default `local_fallback`.
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.options.failure_policy = policy;
        self
    }

    /// The longest a decision waits for Redis. Default 50 ms.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = timeout;
        self
    }

    /// How many instances share the quota (`local_fallback` gives each `quota / instances`).
    pub fn instances(mut self, instances: u32) -> Self {
        self.options.instances = instances;
        self
    }

    /// Prefix of every key. Default `palisade:rl`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.options.key_prefix = prefix.into();
        self
    }

    /// Registers the limiter in `registry`.
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// Reads local time (deny cache, retry interval, fallback) from `clock`.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates and builds the limiter. Connects lazily: building succeeds while Redis is
    /// down (decisions then follow the failure policy). Call inside a tokio runtime.
    pub fn build(self) -> Result<RedisRateLimiter, BuildError> {
        let registry = self.registry.clone();
        let limiter = self.build_unregistered()?;
        if let Some(registry) = registry {
            registry.register(Arc::new(limiter.clone()))?;
        }
        Ok(limiter)
    }

    pub(crate) fn build_unregistered(self) -> Result<RedisRateLimiter, ConfigError> {
        self.options.validate()?;
        check_resolution(&self.quota)?;
        let core = Core::new(
            self.name,
            self.quota,
            self.registry.as_ref(),
            self.clock.clone(),
        )?;
        let conn = RedisConnection::open(&self.redis?, ConnectionOptions::default())?;
        let fallback = {
            let b = KeyedRateLimiter::<String>::builder(format!("{}.fallback", core.name))
                .quota(self.quota.share(self.options.instances));
            match self.clock {
                Some(c) => b.clock(c),
                None => b,
            }
        }
        .build_unregistered()?;
        let prefix = format!("{}:{}:", self.options.key_prefix, core.name);
        // Connect now, in the background, so that the first decision does not pay for the
        // connection (a TLS handshake, a Sentinel lookup, a cluster's slot map) inside its
        // time budget.
        {
            let mut conn = conn.clone();
            tokio::spawn(async move {
                let _ = redis::cmd("PING").query_async::<String>(&mut conn).await;
            });
        }
        Ok(RedisRateLimiter {
            inner: Arc::new(Inner {
                core,
                conn,
                script: redis::Script::new(GCRA_SCRIPT),
                prefix,
                policy: AtomicU8::new(self.options.failure_policy.to_u8()),
                timeout_nanos: AtomicU64::new(saturating_nanos(self.options.timeout)),
                retry_interval_nanos: AtomicU64::new(saturating_nanos(self.options.retry_interval)),
                options: Mutex::new(self.options),
                down_until: AtomicU64::new(0),
                fallback,
                deny_cache: DenyCache::default(),
                backend_errors: StripedCounter::new(),
                fallback_decisions: StripedCounter::new(),
                deny_cache_hits: StripedCounter::new(),
            }),
        })
    }
}

/// What the snapshot shows of the Redis side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RedisStatus {
    /// The policy applied when Redis fails.
    pub failure_policy: FailurePolicy,
    /// Whether the last attempt reached Redis.
    pub available: bool,
    /// The decision budget, in milliseconds.
    pub timeout_ms: u64,
    /// Redis errors and timeouts so far.
    pub backend_errors_total: u64,
    /// Decisions taken by the failure policy instead of Redis.
    pub fallback_decisions_total: u64,
    /// Denials answered from the local deny cache.
    pub deny_cache_hits_total: u64,
    /// Keys in the deny cache now.
    pub deny_cache_entries: usize,
}

impl RedisRateLimiter {
    /// A builder for a limiter named `name` on the Redis `redis` points at: a URL
    /// (`redis://[:password@]host:port[/db]`, `rediss://…`, `redis+sentinel://…/<master>`,
    /// `redis+cluster://…`) or a [`RedisConfig`]. A URL that does not parse is reported by
    /// `build`, naming `redis_url`.
    pub fn builder(name: impl Into<String>, redis: impl IntoRedisConfig) -> Builder {
        Builder {
            name: name.into(),
            redis: redis.into_redis_config(),
            quota: Quota::default(),
            options: RedisOptions::default(),
            registry: None,
            clock: None,
        }
    }

    /// Admits one request of `key`, or refuses it with the time to wait. The `Decision` of an
    /// admission carries `remaining` and `reset_after` for `RateLimit-*` headers.
    pub async fn check(&self, key: &str) -> Result<Decision, RateLimited> {
        match self.decide(key, 1).await {
            Ok(d) => self.inner.core.result(d).map(|()| d),
            Err(e) => Err(self.inner.core.refusal(e)),
        }
    }

    /// Decides on `n` requests of `key`: one round trip to Redis, or the deny cache, or the
    /// failure policy when Redis is down. Errors only when `n` exceeds the burst.
    pub async fn decide(&self, key: &str, n: u32) -> Result<Decision, RateLimitError> {
        let s = &*self.inner;
        let g = s.core.gcra();
        if let Some(e) = s.core.over_capacity(g, n) {
            return Err(e);
        }
        let now = s.core.time.now();
        if let Some(d) = s.cached_denial(key, now, g) {
            s.deny_cache_hits.incr();
            s.core.rejected.add(u64::from(n));
            return Ok(d);
        }
        let down_until = s.down_until.load(Ordering::Relaxed);
        if down_until != 0 && now < down_until {
            return s.fallback(key, n, g, down_until - now);
        }
        let budget = Duration::from_nanos(s.timeout_nanos.load(Ordering::Relaxed));
        match tokio::time::timeout(budget, s.eval(key, n, g)).await {
            Ok(Ok(d)) => {
                s.backend_up();
                if d.allowed {
                    s.core.permitted.add(u64::from(n));
                } else {
                    s.core.rejected.add(u64::from(n));
                    s.cache_denial(key, now, d.retry_after);
                }
                Ok(d)
            }
            Ok(Err(e)) => {
                s.backend_down(now, &e.to_string());
                s.fallback(key, n, g, s.retry_interval())
            }
            Err(_) => {
                s.backend_down(now, &format!("no answer within {budget:?}"));
                s.fallback(key, n, g, s.retry_interval())
            }
        }
    }

    /// The quota of each key.
    pub fn quota(&self) -> Quota {
        self.inner.core.quota()
    }

    /// Changes rate and burst on this instance (other instances keep theirs until told).
    /// Clears the deny cache, so a raise takes effect at once.
    ///
    /// Each bucket keeps the fraction of its burst it has used: the script stores the tolerance
    /// a bucket was written under beside its TAT, and the first decision under another
    /// tolerance rescales the bucket (from the fraction used at that moment) and stores it. So
    /// raising the quota helps limited clients at once, and lowering it leaves each client the
    /// unused share of the new burst, never more than the new burst. Instances still on the
    /// old quota rescale a bucket back the same way, so mixed quotas stay consistent.
    pub fn set_quota(&self, quota: Quota) -> Result<(), ConfigError> {
        let s = &*self.inner;
        check_resolution(&quota)?;
        // The buckets live in Redis: the script carries them over.
        s.core.set_quota(quota, |_, _, _| {})?;
        let instances = s.options.lock().instances;
        s.fallback.set_quota(quota.share(instances))?;
        s.deny_cache.clear();
        Ok(())
    }

    /// Changes the failure policy while running.
    pub fn set_failure_policy(&self, policy: FailurePolicy) {
        let s = &*self.inner;
        let old = FailurePolicy::from_u8(s.policy.swap(policy.to_u8(), Ordering::Relaxed));
        s.options.lock().failure_policy = policy;
        if old != policy {
            s.core.publish(EventKind::ConfigChanged {
                change: format!("failure_policy {} -> {}", old.as_str(), policy.as_str()),
            });
        }
    }

    /// The policy applied when Redis fails.
    pub fn failure_policy(&self) -> FailurePolicy {
        FailurePolicy::from_u8(self.inner.policy.load(Ordering::Relaxed))
    }

    /// Forgets `key`'s bucket in Redis (and locally): its next `burst` requests pass.
    pub async fn reset_key(&self, key: &str) -> Result<(), redis::RedisError> {
        let s = &*self.inner;
        let mut conn = s.conn.clone();
        let _: () = redis::cmd("DEL")
            .arg(s.redis_key(key))
            .query_async(&mut conn)
            .await?;
        s.deny_cache.remove(key);
        s.fallback.reset_key(key);
        s.core.publish(EventKind::AdminAction {
            action: format!("reset key {key}"),
        });
        Ok(())
    }

    /// The Redis key holding `key`'s bucket (`<prefix>:<limiter>:{<key>}`).
    pub fn redis_key(&self, key: &str) -> String {
        self.inner.redis_key(key)
    }

    /// The Redis side as the snapshot shows it.
    pub fn redis_status(&self) -> RedisStatus {
        let s = &*self.inner;
        let options = s.options.lock().clone();
        RedisStatus {
            failure_policy: self.failure_policy(),
            available: s.down_until.load(Ordering::Relaxed) == 0,
            timeout_ms: u64::try_from(options.timeout.as_millis()).unwrap_or(u64::MAX),
            backend_errors_total: s.backend_errors.get(),
            fallback_decisions_total: s.fallback_decisions.get(),
            deny_cache_hits_total: s.deny_cache_hits.get(),
            deny_cache_entries: s.deny_cache.len(),
        }
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.inner.core.name
    }

    /// The event bus this limiter publishes to.
    pub fn events(&self) -> &EventBus {
        &self.inner.core.events
    }

    pub(crate) fn core(&self) -> &Core {
        &self.inner.core
    }
}

impl Inner {
    fn redis_key(&self, key: &str) -> String {
        if key.len() <= MAX_KEY_LEN {
            format!("{}{{{key}}}", self.prefix)
        } else {
            format!("{}{{h:{:016x}}}", self.prefix, fnv1a(key.as_bytes()))
        }
    }

    async fn eval(&self, key: &str, n: u32, g: Gcra) -> Result<Decision, redis::RedisError> {
        let (interval_us, tolerance_us) = micros(g);
        let mut conn = self.conn.clone();
        let (allowed, remaining, retry_us, reset_us): (i64, i64, i64, i64) = self
            .script
            .key(self.redis_key(key))
            .arg(interval_us)
            .arg(tolerance_us)
            .arg(n)
            .invoke_async(&mut conn)
            .await?;
        let us = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        Ok(Decision {
            allowed: allowed == 1,
            limit: g.burst(),
            remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
            retry_after: us(retry_us),
            reset_after: us(reset_us),
        })
    }

    fn retry_interval(&self) -> u64 {
        self.retry_interval_nanos.load(Ordering::Relaxed)
    }

    fn cached_denial(&self, key: &str, now: u64, g: Gcra) -> Option<Decision> {
        let wait = Duration::from_nanos(self.deny_cache.until(key, now)? - now);
        Some(Decision {
            allowed: false,
            limit: g.burst(),
            remaining: 0,
            retry_after: wait,
            reset_after: wait,
        })
    }

    fn cache_denial(&self, key: &str, now: u64, retry_after: Duration) {
        self.deny_cache
            .insert(key, now.saturating_add(saturating_nanos(retry_after)), now);
    }

    fn backend_up(&self) {
        if self.down_until.swap(0, Ordering::Relaxed) != 0 {
            self.core.publish(EventKind::StateTransition {
                from: FailurePolicy::from_u8(self.policy.load(Ordering::Relaxed))
                    .as_str()
                    .into(),
                to: "redis".into(),
                reason: "Redis answered again".into(),
            });
        }
    }

    fn backend_down(&self, now: u64, error: &str) {
        self.backend_errors.incr();
        let until = now.saturating_add(self.retry_interval()).max(1);
        if self.down_until.swap(until, Ordering::Relaxed) == 0 {
            let policy = FailurePolicy::from_u8(self.policy.load(Ordering::Relaxed));
            tracing::warn!(target: "palisade::ratelimit", limiter = %self.core.name, error, policy = policy.as_str(),
                "Redis unavailable; rate limiting by the failure policy");
            self.core.publish(EventKind::StateTransition {
                from: "redis".into(),
                to: policy.as_str().into(),
                reason: format!("Redis unavailable: {error}"),
            });
        }
    }

    /// The decision of the failure policy. `wait` is how long Redis will be skipped.
    fn fallback(&self, key: &str, n: u32, g: Gcra, wait: u64) -> Result<Decision, RateLimitError> {
        self.fallback_decisions.incr();
        let d = match FailurePolicy::from_u8(self.policy.load(Ordering::Relaxed)) {
            FailurePolicy::FailOpen => Decision {
                allowed: true,
                limit: g.burst(),
                remaining: g.burst().saturating_sub(n),
                retry_after: Duration::ZERO,
                reset_after: Duration::ZERO,
            },
            FailurePolicy::FailClosed => Decision {
                allowed: false,
                limit: g.burst(),
                remaining: 0,
                retry_after: Duration::from_nanos(wait),
                reset_after: Duration::from_nanos(wait),
            },
            FailurePolicy::LocalFallback => self.fallback.decide_key(key, n)?,
        };
        if d.allowed {
            self.core.permitted.add(u64::from(n));
        } else {
            self.core.rejected.add(u64::from(n));
        }
        Ok(d)
    }
}

/// Keys Redis refused, with the local time until which they stay refused. Bounded; the common
/// case (no refused key) costs one atomic load, not a lock.
#[derive(Default)]
struct DenyCache {
    map: Mutex<HashMap<String, u64>>,
    len: AtomicUsize,
}

impl DenyCache {
    /// Until when `key` is refused, if it still is at `now`.
    fn until(&self, key: &str, now: u64) -> Option<u64> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut map = self.map.lock();
        let until = *map.get(key)?;
        if until > now {
            return Some(until);
        }
        map.remove(key);
        self.len.store(map.len(), Ordering::Relaxed);
        None
    }

    fn insert(&self, key: &str, until: u64, now: u64) {
        let mut map = self.map.lock();
        if map.len() >= DENY_CACHE_MAX {
            map.retain(|_, u| *u > now);
            if map.len() >= DENY_CACHE_MAX {
                return;
            }
        }
        map.insert(key.to_owned(), until);
        self.len.store(map.len(), Ordering::Relaxed);
    }

    fn remove(&self, key: &str) {
        let mut map = self.map.lock();
        map.remove(key);
        self.len.store(map.len(), Ordering::Relaxed);
    }

    fn clear(&self) {
        self.map.lock().clear();
        self.len.store(0, Ordering::Relaxed);
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

/// The script's arguments: emission interval and tolerance in whole microseconds (Redis `TIME`
/// has microsecond resolution), the interval rounded to the nearest microsecond and the
/// tolerance kept an exact multiple of it, so the burst is exact.
fn micros(g: Gcra) -> (u64, u64) {
    let interval = (g.interval.saturating_add(500) / 1000).max(1);
    (interval, interval.saturating_mul(u64::from(g.burst())))
}

/// Refuses quotas that microsecond resolution would distort by more than 1%.
fn check_resolution(quota: &Quota) -> Result<(), ConfigError> {
    quota.validate().map_err(|e| e.within("quota"))?;
    let g = quota.gcra();
    let exact = g.interval as f64;
    let rounded = (micros(g).0 * 1000) as f64;
    if (rounded - exact).abs() > exact * 0.01 {
        return Err(ConfigError::new(
            "quota.rate",
            format!(
                "{} per {:?} is one request every {} ns per key; Redis decisions have microsecond \
                 resolution, which would change that rate by more than 1% (at most one request \
                 every 50 µs per key is exact to 1%)",
                quota.rate, quota.period, g.interval
            ),
        ));
    }
    Ok(())
}

/// FNV-1a, 64 bits: a stable hash for over-long keys (the same on every instance and build).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::GCRA_SCRIPT;

    /// The script compiles as Redis's Lua 5.1 (`luac5.1 -p`, from `apt-get install -y lua5.1`,
    /// which scripts/test runs), and touches only the key it declares.
    #[test]
    fn the_script_is_valid_lua_and_declares_its_key() {
        palisade_testkit::assert_lua_compiles("src/gcra.lua", GCRA_SCRIPT);
        // Every redis.call names KEYS[1] or no key at all (TIME).
        for line in GCRA_SCRIPT.lines().filter(|l| l.contains("redis.call(")) {
            assert!(
                line.contains("redis.call('TIME')") || line.contains("KEYS[1]"),
                "{line}"
            );
        }
    }
}
