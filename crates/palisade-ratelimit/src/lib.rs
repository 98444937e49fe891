//! # palisade-ratelimit
//!
//! Rate limiting for services in front of AI agents: local and lock-free, or shared by every
//! instance through Redis.
//!
//! - [`RateLimiter`]: one GCRA bucket in one `AtomicU64` (the algorithm of governor and
//!   redis-cell): `check()`, `check_n(n)`, `until_ready().await`; a denial carries the exact
//!   `retry_after`.
//! - [`KeyedRateLimiter`]: one bucket per key (client IP, tenant, tool) with bounded memory.
//! - [`RedisRateLimiter`] (feature `redis`, on by default): GCRA in one Lua script per decision,
//!   shared by all instances, with a local deny cache and an explicit [`FailurePolicy`] for when
//!   Redis is down or slow.
//! - [`Limiter`] and [`RateLimitConfig`]: the backend operators choose
//!   (`RATE_LIMIT_BACKEND=memory|redis`), behind one type.
//! - Quotas change at runtime ([`RateLimiter::set_quota`], or the `set_quota` admin command),
//!   validated; every bucket keeps the fraction of its burst it had used, so a raise helps
//!   limited clients at once and a lowering never gives a client more than the new burst.
//!   Snapshots, events and metrics go through [`palisade_core`].
//!
//! ```
//! use palisade_core::{ComponentKind, Registry};
//! use palisade_ratelimit::{KeyedRateLimiter, Quota};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let registry = Registry::new();
//! let per_tool = KeyedRateLimiter::<String>::builder("per-tool")
//!     .quota(Quota::per_second(5).with_burst(1))
//!     .registry(&registry)
//!     .build()?;
//!
//! assert!(per_tool.check_key("search").is_ok());
//! let refused = per_tool.check_key("search").unwrap_err();
//! assert!(refused.retry_after.as_millis() <= 200); // one cell every 200 ms
//!
//! // An operator raises the quota with one admin request.
//! registry
//!     .control(ComponentKind::RateLimiter, "per-tool",
//!              serde_json::json!({"action": "set_quota", "quota": {"rate": 50, "burst": 10}}))
//!     .await?;
//! assert_eq!(per_tool.quota().burst(), 10);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod control;
mod core;
mod error;
mod keyed;
mod limiter;
mod local;
mod quota;
#[cfg(feature = "redis")]
mod redis;
mod time;

pub use control::{KeysStatus, RateLimiterCommand, RateLimiterSnapshot};
pub use error::{RateLimitError, RateLimited};
pub use keyed::{Builder as KeyedBuilder, DEFAULT_MAX_KEYS, KeyedRateLimiter, MAX_KEYS};
pub use limiter::{Backend, FailurePolicy, Limiter, LimiterBuilder, RateLimitConfig, RedisOptions};
pub use local::{Builder, RateLimiter};
pub use quota::{Decision, MAX_PERIOD, MAX_RATE, Quota};
#[cfg(feature = "redis")]
pub use redis::{Builder as RedisBuilder, GCRA_SCRIPT, RedisRateLimiter, RedisStatus};
