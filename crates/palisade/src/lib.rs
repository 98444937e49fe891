//! # Palisade
//!
//! Resilience for services that sit between AI agents and the outside world (MCP backends,
//! gateways, tool servers), with runtime control and introspection of every component.
//!
//! One dependency, components behind feature flags:
//!
//! | feature | module | what |
//! | --- | --- | --- |
//! | (always) | [`core`] | clock, registry, snapshots, control commands, events |
//! | `breaker` (default) | [`breaker`] | circuit breakers with half-open recovery |
//! | `bulkhead` (default) | [`bulkhead`] | semaphore bulkheads: named partitions, bounded waits, live resize |
//! | `ratelimit` (default) | [`ratelimit`] | local GCRA rate limiters, direct and keyed |
//! | `ratelimit-redis` | [`ratelimit`] | plus the Redis-backed distributed limiter |
//! | `dlq` (default) | [`dlq`] | dead-letter queues with typed retry (in-memory store) |
//! | `dlq-redis` | [`dlq`] | plus the Redis store |
//! | `health` (default) | [`health`] | health monitors, auto-restart, crash-loop protection, process supervisor |
//! | `health-redis` | [`health`] | plus the Redis check |
//! | `tower` | [`tower`] | tower layers for every component, axum refusal responses |
//! | `admin` | [`admin`] | the axum admin router and dashboard |
//! | `mcp` | [`mcp`] | any rmcp MCP server with every tool call guarded (Rust 1.88) |
//! | `toolbox` | [`toolbox`] | retries with a retry budget, hedging, timeouts, fallbacks |
//! | `chaos` | [`chaos`] | fault injection switched on for a time-to-live (not in `full`) |
//! | `fleet` | [`fleet`] | replicas over Redis: fleet commands, durable overrides, shared breakers, fleet view |
//!
//! ```
//! # #[cfg(feature = "breaker")] {
//! use palisade::breaker::{CircuitBreaker, State};
//! use palisade::core::Registry;
//!
//! let registry = Registry::new();
//! let slack = CircuitBreaker::builder("slack")
//!     .consecutive_failures(3)
//!     .registry(&registry)
//!     .build()
//!     .unwrap();
//! assert_eq!(slack.state(), State::Closed);
//! assert_eq!(registry.list(palisade::core::ComponentKind::CircuitBreaker), vec!["slack"]);
//! # }
//! ```

pub use palisade_core as core;

#[cfg(feature = "breaker")]
pub use palisade_breaker as breaker;

#[cfg(feature = "admin")]
pub use palisade_admin as admin;
#[cfg(feature = "bulkhead")]
pub use palisade_bulkhead as bulkhead;
#[cfg(feature = "chaos")]
pub use palisade_chaos as chaos;
#[cfg(feature = "dlq")]
pub use palisade_dlq as dlq;
#[cfg(feature = "fleet")]
pub use palisade_fleet as fleet;
#[cfg(feature = "health")]
pub use palisade_health as health;
#[cfg(feature = "mcp")]
pub use palisade_mcp as mcp;
#[cfg(feature = "ratelimit")]
pub use palisade_ratelimit as ratelimit;
#[cfg(feature = "toolbox")]
pub use palisade_toolbox as toolbox;
#[cfg(feature = "tower")]
pub use palisade_tower as tower;
