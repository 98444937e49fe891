//! The traits every component implements so that it is inspected and controlled the same way.
//!
//! A component implements two typed traits:
//! - [`Inspect`]: a serde snapshot of its state, config and counters;
//! - [`Control`]: typed commands (an enum of its own) returning a typed output or a
//!   [`ControlError`];
//!
//! plus [`Managed`] (its kind and name). Every `Managed` type is then a [`Component`]: the
//! object-safe, JSON-speaking form the [`Registry`](crate::Registry) stores and the admin
//! router calls, without knowing any component's internals.

use std::fmt;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// The kinds of component Palisade knows. Names are unique per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ComponentKind {
    /// A circuit breaker (`palisade-breaker`).
    CircuitBreaker,
    /// A semaphore bulkhead partition (`palisade-bulkhead`).
    Bulkhead,
    /// A rate limiter (`palisade-ratelimit`).
    RateLimiter,
    /// A dead-letter queue (`palisade-dlq`).
    DeadLetterQueue,
    /// A health-monitored component (`palisade-health`).
    Health,
    /// A retry policy with its retry budget (`palisade-toolbox`).
    Retry,
    /// A hedging policy: a second attempt after a delay, the first answer wins
    /// (`palisade-toolbox`).
    Hedge,
    /// A per-call deadline (`palisade-toolbox`).
    Timeout,
    /// A fallback used on refusal or failure (`palisade-toolbox`).
    Fallback,
    /// Injected latency, errors or refusals, switched on for a while (`palisade-chaos`).
    FaultInjector,
}

impl ComponentKind {
    /// All kinds, in display order.
    pub const ALL: [ComponentKind; 10] = [
        ComponentKind::CircuitBreaker,
        ComponentKind::Bulkhead,
        ComponentKind::RateLimiter,
        ComponentKind::DeadLetterQueue,
        ComponentKind::Health,
        ComponentKind::Retry,
        ComponentKind::Hedge,
        ComponentKind::Timeout,
        ComponentKind::Fallback,
        ComponentKind::FaultInjector,
    ];

    /// The snake_case name used in JSON, metrics labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            ComponentKind::CircuitBreaker => "circuit_breaker",
            ComponentKind::Bulkhead => "bulkhead",
            ComponentKind::RateLimiter => "rate_limiter",
            ComponentKind::DeadLetterQueue => "dead_letter_queue",
            ComponentKind::Health => "health",
            ComponentKind::Retry => "retry",
            ComponentKind::Hedge => "hedge",
            ComponentKind::Timeout => "timeout",
            ComponentKind::Fallback => "fallback",
            ComponentKind::FaultInjector => "fault_injector",
        }
    }
}

impl fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a control command was refused. Nothing changed when one of these is returned.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum ControlError {
    /// No component of that kind and name is registered.
    #[error("no {kind} named '{name}' is registered")]
    NotFound {
        /// Kind asked for.
        kind: ComponentKind,
        /// Name asked for.
        name: String,
    },
    /// The command could not be read (malformed JSON, unknown action, missing field).
    #[error("malformed command for {kind} '{name}': {reason}")]
    MalformedCommand {
        /// Kind of the target.
        kind: ComponentKind,
        /// Name of the target.
        name: String,
        /// What is wrong, as reported by the parser.
        reason: String,
    },
    /// The command carried an invalid config value; the error names the field.
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    /// The command is valid but cannot be applied in the component's current state.
    #[error("cannot {action}: {reason}")]
    Rejected {
        /// The command.
        action: String,
        /// Why not, and what to do instead.
        reason: String,
    },
    /// A backend the component depends on (Redis) failed; retrying may succeed.
    #[error("backend error: {reason}")]
    Backend {
        /// What the backend said.
        reason: String,
    },
}

/// A serde snapshot of a component: state, config and counters, as operators see them.
pub trait Inspect {
    /// The snapshot type.
    type Snapshot: Serialize;

    /// The component's current, true state. Lazy transitions that are due (an open breaker whose
    /// wait has elapsed) are applied first, so a snapshot never shows a stale state.
    fn snapshot(&self) -> Self::Snapshot;
}

/// Typed runtime control.
#[async_trait]
pub trait Control {
    /// The component's commands, usually an enum tagged by `"action"`.
    type Command: DeserializeOwned + Send;
    /// What a command returns on success (often the new snapshot).
    type Output: Serialize;

    /// Applies `command`, or refuses it and changes nothing.
    async fn control(&self, command: Self::Command) -> Result<Self::Output, ControlError>;
}

/// A component that can be registered: it has a kind and a name, and is inspectable and
/// controllable. Implementing this makes the type a [`Component`].
pub trait Managed: Inspect + Control + Send + Sync + 'static {
    /// The component's kind.
    const KIND: ComponentKind;

    /// The component's name, unique within its kind in one registry.
    fn name(&self) -> &str;

    /// Pushes the component's counters and gauges to the `metrics` recorder. Components keep
    /// their counts in their own atomics (so hot paths never touch the recorder) and publish
    /// them here; the admin `/metrics` handler calls it before rendering.
    fn export_metrics(&self) {}
}

/// The object-safe form of a component, speaking JSON. Implemented for every [`Managed`] type.
#[async_trait]
pub trait Component: Send + Sync + 'static {
    /// The component's kind.
    fn kind(&self) -> ComponentKind;
    /// The component's name.
    fn name(&self) -> &str;
    /// [`Inspect::snapshot`] as JSON.
    fn snapshot_json(&self) -> serde_json::Value;
    /// Parses a JSON command into the component's own command type and applies it.
    async fn control_json(
        &self,
        command: serde_json::Value,
    ) -> Result<serde_json::Value, ControlError>;
    /// [`Managed::export_metrics`].
    fn export_metrics(&self);
}

fn to_json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_else(|e| {
        // Snapshots are plain data; this is unreachable unless a map has non-string keys.
        tracing::error!(target: "palisade::core", error = %e, "snapshot is not representable as JSON");
        serde_json::json!({ "error": format!("snapshot is not representable as JSON: {e}") })
    })
}

#[async_trait]
impl<T: Managed> Component for T
where
    T::Output: Send,
{
    fn kind(&self) -> ComponentKind {
        T::KIND
    }

    fn name(&self) -> &str {
        Managed::name(self)
    }

    fn snapshot_json(&self) -> serde_json::Value {
        to_json(&Inspect::snapshot(self))
    }

    async fn control_json(
        &self,
        command: serde_json::Value,
    ) -> Result<serde_json::Value, ControlError> {
        let command: T::Command =
            serde_json::from_value(command).map_err(|e| ControlError::MalformedCommand {
                kind: T::KIND,
                name: Managed::name(self).to_owned(),
                reason: e.to_string(),
            })?;
        let out = Control::control(self, command).await?;
        Ok(to_json(&out))
    }

    fn export_metrics(&self) {
        Managed::export_metrics(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_error_serializes() {
        let errors = [
            ControlError::NotFound {
                kind: ComponentKind::Bulkhead,
                name: "db".into(),
            },
            ControlError::MalformedCommand {
                kind: ComponentKind::Bulkhead,
                name: "db".into(),
                reason: "missing field".into(),
            },
            ControlError::InvalidConfig(ConfigError::new("max_concurrent", "0 is out of range")),
            ControlError::Rejected {
                action: "reset".into(),
                reason: "not now".into(),
            },
            ControlError::Backend {
                reason: "connection refused".into(),
            },
        ];
        for e in errors {
            let v = serde_json::to_value(&e).unwrap();
            assert!(v["error"].is_string(), "{v}");
        }
    }
}
