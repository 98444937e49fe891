//! # palisade-core
//!
//! The shared vocabulary of Palisade. Every component (circuit breaker, bulkhead, rate limiter,
//! dead-letter queue, health monitor) uses these pieces the same way, so one admin router, one
//! metrics exporter and one event stream serve them all:
//!
//! - [`Clock`]: monotonic time plus wall-clock timestamps; [`SystemClock`] in production,
//!   [`ManualClock`] in tests, `TokioClock` (feature `tokio-clock`) to follow tokio's paused clock.
//! - [`Registry`]: components registered under a unique name per [`ComponentKind`].
//! - [`Inspect`] / [`Control`] / [`Managed`]: a serde snapshot and typed control commands; any
//!   `Managed` type is a [`Component`], the JSON-speaking form the registry stores.
//! - [`EventBus`] and [`Event`]: timestamped state transitions, config changes, admin actions.
//! - [`ConfigError`]: an invalid config value, naming the field.
//! - [`StripedCounter`] and [`metrics`] names for hot-path counting and Prometheus export.
//!
//! ## Example: a component of your own
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use palisade_core::{async_trait, ComponentKind, Control, ControlError, Inspect, Managed, Registry};
//!
//! struct Dial { name: String, level: AtomicU32 }
//!
//! #[derive(serde::Deserialize)]
//! #[serde(tag = "action", rename_all = "snake_case")]
//! enum DialCommand { Set { level: u32 } }
//!
//! impl Inspect for Dial {
//!     type Snapshot = serde_json::Value;
//!     fn snapshot(&self) -> serde_json::Value {
//!         serde_json::json!({ "level": self.level.load(Ordering::Relaxed) })
//!     }
//! }
//!
//! #[async_trait]
//! impl Control for Dial {
//!     type Command = DialCommand;
//!     type Output = serde_json::Value;
//!     async fn control(&self, cmd: DialCommand) -> Result<serde_json::Value, ControlError> {
//!         let DialCommand::Set { level } = cmd;
//!         self.level.store(level, Ordering::Relaxed);
//!         Ok(self.snapshot())
//!     }
//! }
//!
//! impl Managed for Dial {
//!     const KIND: ComponentKind = ComponentKind::Bulkhead;
//!     fn name(&self) -> &str { &self.name }
//! }
//!
//! # tokio_test_block_on(async {
//! let registry = Registry::new();
//! registry.register(Arc::new(Dial { name: "database".into(), level: AtomicU32::new(1) })).unwrap();
//! let out = registry
//!     .control(ComponentKind::Bulkhead, "database", serde_json::json!({"action": "set", "level": 5}))
//!     .await
//!     .unwrap();
//! assert_eq!(out["level"], 5);
//! // Malformed commands are refused with a reason, and nothing changes.
//! let err = registry
//!     .control(ComponentKind::Bulkhead, "database", serde_json::json!({"action": "explode"}))
//!     .await
//!     .unwrap_err();
//! assert!(err.to_string().contains("malformed command"));
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

pub mod clock;
pub mod component;
pub mod config;
pub mod counter;
pub mod event;
pub mod metrics;
#[cfg(feature = "redis")]
pub mod redis;
pub mod registry;

pub use async_trait::async_trait;
#[cfg(feature = "tokio-clock")]
pub use clock::TokioClock;
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use component::{Component, ComponentKind, Control, ControlError, Inspect, Managed};
pub use config::{ConfigError, Env};
pub use counter::StripedCounter;
pub use event::{Event, EventBus, EventFilter, EventKind};
pub use registry::{ComponentSnapshot, Registry, RegistryError};

/// Why a component could not be built: an invalid config or a registration clash.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuildError {
    /// A config value is invalid; the error names the field.
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    /// The registry refused the component (duplicate or invalid name).
    #[error(transparent)]
    Registry(#[from] RegistryError),
}
