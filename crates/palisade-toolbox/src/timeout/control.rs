//! Snapshots, operator commands and metrics: the timeout as a registry component.

use std::time::Duration;

use palisade_core::config::duration;
use palisade_core::{ComponentKind, Control, ControlError, Inspect, Managed, async_trait};
use serde::{Deserialize, Serialize};

use super::config::{CountAs, TimeoutConfig};
use super::handle::Timeout;

/// `palisade_timeout_waited_total{name}`: calls that had to wait (not ready at once).
pub const TIMEOUT_WAITED_TOTAL: &str = "palisade_timeout_waited_total";
/// `palisade_timeout_elapsed_total{name}`: calls whose deadline ran out.
pub const TIMEOUT_ELAPSED_TOTAL: &str = "palisade_timeout_elapsed_total";

/// Operator commands, as sent to `POST /admin/timeouts/{name}`:
/// `{"action": "set_deadline", "deadline": "2s"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum TimeoutCommand {
    /// Change the deadline (`"2s"`, `"250ms"` or milliseconds).
    SetDeadline {
        /// The new deadline.
        #[serde(with = "duration")]
        deadline: Duration,
    },
    /// Replace the whole config; fields it leaves out take the defaults.
    SetConfig {
        /// The new config.
        config: TimeoutConfig,
    },
    /// Change the named fields and keep the others:
    /// `{"action": "update_config", "config": {"count_as": "slow"}}`.
    UpdateConfig {
        /// The fields to change.
        config: serde_json::Map<String, serde_json::Value>,
    },
}

/// What an operator sees of a timeout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeoutSnapshot {
    /// The timeout's name.
    pub name: String,
    /// The deadline in force, in milliseconds.
    pub deadline_ms: u64,
    /// How a breaker counts an elapsed deadline.
    pub count_as: CountAs,
    /// Calls that had to wait (not ready at their first poll): a call ready at once costs the
    /// timeout nothing and is not counted.
    pub waited_total: u64,
    /// Calls whose deadline ran out.
    pub timeouts_total: u64,
    /// How long the calls that waited took (cumulative counts by bucket; a timed-out call
    /// counts at its deadline).
    pub latency: super::latency::LatencySnapshot,
    /// The config in force.
    pub config: TimeoutConfig,
}

impl Timeout {
    /// A snapshot of the deadline and the counters.
    pub fn snapshot(&self) -> TimeoutSnapshot {
        let config = self.config();
        TimeoutSnapshot {
            name: self.name().to_owned(),
            deadline_ms: u64::try_from(config.deadline.as_millis()).unwrap_or(u64::MAX),
            count_as: config.count_as,
            waited_total: self.shared.waited.get(),
            timeouts_total: self.shared.timeouts.get(),
            latency: self.shared.latencies.snapshot(),
            config,
        }
    }

    /// Applies an operator command; returns the snapshot after it.
    pub fn apply(&self, command: TimeoutCommand) -> Result<TimeoutSnapshot, ControlError> {
        match command {
            TimeoutCommand::SetDeadline { deadline } => self.set_deadline(deadline)?,
            TimeoutCommand::SetConfig { config } => self.set_config(config)?,
            TimeoutCommand::UpdateConfig { config } => {
                self.set_config(palisade_core::config::merge_config(&self.config(), config)?)?
            }
        }
        Ok(self.snapshot())
    }
}

impl Inspect for Timeout {
    type Snapshot = TimeoutSnapshot;

    fn snapshot(&self) -> TimeoutSnapshot {
        Timeout::snapshot(self)
    }
}

#[async_trait]
impl Control for Timeout {
    type Command = TimeoutCommand;
    type Output = TimeoutSnapshot;

    async fn control(&self, command: TimeoutCommand) -> Result<TimeoutSnapshot, ControlError> {
        self.apply(command)
    }
}

impl Managed for Timeout {
    const KIND: ComponentKind = ComponentKind::Timeout;

    fn name(&self) -> &str {
        Timeout::name(self)
    }

    fn export_metrics(&self) {
        let name = self.name().to_owned();
        metrics::counter!(TIMEOUT_WAITED_TOTAL, "name" => name.clone())
            .absolute(self.shared.waited.get());
        metrics::counter!(TIMEOUT_ELAPSED_TOTAL, "name" => name)
            .absolute(self.shared.timeouts.get());
    }
}
