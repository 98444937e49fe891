//! Redis connections, opened the same way by every Redis-backed component (feature `redis`):
//! the rate limiter, the dead-letter store and the health check.
//!
//! A [`RedisConfig`] says where Redis is — one node, a Sentinel group or a Cluster — and how to
//! reach it (credentials, database, TLS with a CA and a client certificate). It parses from a
//! URL (`redis://`, `rediss://`, `redis+sentinel://…/<master>`, `redis+cluster://…`) or from the
//! environment ([`RedisConfig::from_env`]: `REDIS_URL` and `REDIS_SENTINEL_*` / `REDIS_TLS_*`).
//! [`RedisConnection::open`] turns it into one multiplexed, reconnecting connection that
//! follows Sentinel failovers and cluster redirections. TLS needs the `redis-tls` feature.
//!
//! ```
//! use palisade_core::redis::{RedisConfig, Topology};
//!
//! let config: RedisConfig = "rediss+cluster://:secret@n1:7000,n2:7000".parse()?;
//! assert_eq!(config.topology(), &Topology::Cluster);
//! assert_eq!(config.to_string(), "rediss+cluster://n1:7000,n2:7000"); // no password
//! # Ok::<(), palisade_core::ConfigError>(())
//! ```

mod config;
mod connection;
mod sentinel;
mod slot;
mod state;
mod tls;

pub use config::{ENV_VARS, IntoRedisConfig, RedisConfig, TlsOptions, Topology};
pub use connection::{ConnectionOptions, RedisConnection};
pub use slot::key_slot;
pub use state::{ClusterState, ServerState};
