//! # palisade-chaos
//!
//! Fault injection: injected latency, errors or refusals at a rate, per component, switched on
//! through the admin API with a time-to-live after which it switches itself off.
//!
//! - One [`FaultInjector`] per upstream or tool, registered like every Palisade component
//!   (kind `fault_injector`, served at `/admin/fault-injectors/{name}`): a snapshot, typed
//!   commands ([`FaultCommand`]), events on the registry's bus, metrics by pull.
//! - Faults ([`Fault`]): a fixed or ranged **latency**, an **error**
//!   ([`Injected::Error`]) or a **refusal** with a `retry_after` ([`Injected::Refused`]),
//!   each at a rate from 0 to 1.
//! - **Safe by default**: this crate is only in a build that asks for it (the facade's feature
//!   `chaos`, not in `full`), and an injector refuses every `enable` unless its config says
//!   `enabled_in_config = true` ([`Builder::allow`]). An injection always has a time-to-live
//!   (at most 1 h) and switches itself off when it runs out, checked lazily against the
//!   injector's [`Clock`](palisade_core::Clock): the next call or snapshot applies it.
//! - **Audited**: the admin router publishes an `audit` event naming who sent each command,
//!   and the snapshot's `enabled_by` shows who switched the injection on.
//! - Plain API: [`FaultInjector::inject`] before the real call, or [`FaultInjector::call`]
//!   around it; a tower [`FaultLayer`] with feature `tower`.
//!
//! A switched-off injector costs one atomic load per call.
//!
//! ```
//! use std::time::Duration;
//! use palisade_chaos::{FaultInjector, Injected};
//! use palisade_core::{ComponentKind, ManualClock, Registry};
//! use serde_json::json;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let registry = Registry::new();
//! let clock = ManualClock::new();
//! let github = FaultInjector::builder("github")
//!     .allow(true) // config: enabled_in_config = true
//!     .clock(clock.shared())
//!     .registry(&registry)
//!     .build()?;
//!
//! // What `POST /admin/fault-injectors/github` does with the operator's command:
//! registry
//!     .control(ComponentKind::FaultInjector, "github",
//!              json!({"action": "enable", "mode": "refuse", "rate": 1, "ttl": "30s"}))
//!     .await?;
//!
//! // The caller's code, before each real call to GitHub:
//! match github.inject().await {
//!     Ok(()) => { /* make the real call */ }
//!     Err(Injected::Refused { retry_after, .. }) => assert_eq!(retry_after, Duration::from_secs(1)),
//!     Err(other) => panic!("{other}"),
//! }
//!
//! // Thirty seconds later it is off by itself.
//! clock.advance(Duration::from_secs(30));
//! let snap = registry.snapshot(ComponentKind::FaultInjector, "github")?;
//! assert_eq!(snap["enabled"], false);
//! assert_eq!(snap["injected_refusals_total"], 1);
//!
//! // Bad commands are refused, naming the field.
//! let err = registry
//!     .control(ComponentKind::FaultInjector, "github",
//!              json!({"action": "enable", "mode": "error", "rate": 1.5, "ttl": "30s"}))
//!     .await
//!     .unwrap_err();
//! assert!(err.to_string().contains("`rate`"), "{err}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod config;
mod control;
mod decide;
mod error;
mod fault;
mod injector;
#[cfg(feature = "tower")]
mod layer;
pub mod metric_names;
mod random;

pub use config::{FaultInjectorConfig, MAX_TTL, MIN_TTL};
pub use control::{FaultCommand, FaultSnapshot, FaultTransition};
pub use error::Injected;
pub use fault::{DEFAULT_RETRY_AFTER, Fault, FaultMode, MAX_LATENCY, MAX_RETRY_AFTER};
pub use injector::{Builder, Call, FaultInjector, Inject};
#[cfg(feature = "tower")]
pub use layer::{FaultLayer, FaultService, ResponseFuture};
pub use random::{RandomSource, SeededRandom};
