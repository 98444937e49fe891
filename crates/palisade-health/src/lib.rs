//! # palisade-health
//!
//! Health monitoring with auto-restart and crash-loop protection.
//!
//! - [`HealthCheck`] (async, cancelled after a per-component timeout) returns healthy,
//!   degraded or unhealthy with a message; [`Restartable`] components can be restarted.
//! - [`HealthMonitor`] runs each check on its own interval (with jitter), turns
//!   `failure_threshold` failures in a row into unhealthy and `success_threshold` passes back
//!   into healthy, and aggregates overall status, liveness and readiness. An open circuit
//!   breaker ([`checks::BreakerCheck`]) is a degraded dependency and never fails liveness.
//! - Auto-restart of failing restartable components with growing backoff ([`RestartPolicy`]),
//!   and crash-loop protection when restarts exceed `max_restarts` within `window`; switchable
//!   per component and globally (`HEALTH_MONITOR_AUTO_RESTART=false`) at runtime.
//! - [`ProcessSupervisor`] runs a command (a stdio MCP server), notices exits at once and keeps
//!   the tail of its stderr; [`checks`] has Redis, TCP, HTTP and breaker checks.
//! - Each component is a registry component (kind `health`) with the commands `restart`,
//!   `reset_crash_loop`, `set_auto_restart` and `check`.
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::{ComponentKind, Registry};
//! use palisade_health::{CheckResult, HealthMonitor, MonitorConfig, check_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let registry = Registry::new();
//! let monitor = HealthMonitor::builder()
//!     .config(MonitorConfig::from_env()?)     // HEALTH_CHECK_INTERVAL, HEALTH_MONITOR_AUTO_RESTART
//!     .registry(&registry)
//!     .build()?;
//! monitor
//!     .add("billing-db", check_fn(|| async { CheckResult::degraded("replica lag 4 s") }))
//!     .start()?;
//!
//! let report = monitor.check_all().await;
//! assert_eq!(report.summary.degraded, 1);
//! assert!(report.ready, "degraded still serves traffic");
//!
//! // Operators switch a component's auto-restart off with one admin request.
//! registry
//!     .control(ComponentKind::Health, "billing-db",
//!              serde_json::json!({"action": "set_auto_restart", "enabled": false}))
//!     .await?;
//! assert!(!monitor.component("billing-db").unwrap().snapshot().auto_restart);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod check;
pub mod checks;
mod config;
mod control;
mod monitor;
mod process;
mod restart;
mod tree;

pub use async_trait::async_trait;
pub use check::{CheckResult, FnCheck, HealthCheck, Restartable, Status, check_fn, format_latency};
pub use config::{CheckConfig, MonitorConfig, RestartPolicy};
pub use control::HealthCommand;
pub use monitor::{
    CRASH_LOOP_MESSAGE, ComponentBuilder, ComponentHandle, ComponentSnapshot, HealthMonitor,
    HealthReport, MonitorBuilder, Summary,
};
pub use process::{DEFAULT_STOP_GRACE, ProcessBuilder, ProcessSupervisor};
