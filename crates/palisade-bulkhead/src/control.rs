//! Snapshots, operator commands and metrics export: the bulkhead as a registry component.

use std::time::Duration;

use palisade_core::{
    ComponentKind, Control, ControlError, Inspect, Managed, async_trait, config::duration,
    metrics as names,
};
use serde::{Deserialize, Serialize};

use crate::bulkhead::Bulkhead;
use crate::config::BulkheadConfig;

/// Operator commands, as sent to `POST /admin/bulkheads/{name}`:
/// `{"action": "set_max_concurrent", "max_concurrent": 5}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum BulkheadCommand {
    /// Resize the partition while it runs.
    SetMaxConcurrent {
        /// The new limit.
        max_concurrent: u32,
    },
    /// Change how long callers may wait (zero: fail fast).
    SetMaxWait {
        /// The new wait, as `"250ms"` or milliseconds.
        #[serde(with = "duration")]
        max_wait: Duration,
    },
    /// Switch the adaptive limit on or off (bounds from `config.adaptive`).
    SetAdaptive {
        /// On or off.
        enabled: bool,
    },
    /// Replace the whole config; fields it leaves out take the library defaults.
    SetConfig {
        /// The new config.
        config: BulkheadConfig,
    },
    /// Change the named top-level fields and keep the others:
    /// `{"action": "update_config", "config": {"max_wait": "250ms"}}` (validated first).
    UpdateConfig {
        /// The fields to change.
        config: serde_json::Map<String, serde_json::Value>,
    },
}

/// What an operator sees of a partition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BulkheadSnapshot {
    /// The partition's name.
    pub name: String,
    /// Calls holding a slot. May exceed `max_concurrent` right after a shrink, until running
    /// calls finish.
    pub active: u32,
    /// The limit in force.
    pub max_concurrent: u32,
    /// Callers waiting for a slot.
    pub waiting: u32,
    /// Calls refused because the partition was full.
    pub rejected_total: u64,
    /// Calls that gave up waiting.
    pub timeouts_total: u64,
    /// The longest a caller waits, in milliseconds.
    pub max_wait_ms: u64,
    /// Whether the limit adapts to latency and errors.
    pub adaptive: bool,
    /// Changes the adaptive mode made to the limit.
    pub adaptive_adjustments_total: u64,
    /// The config in force.
    pub config: BulkheadConfig,
}

impl Bulkhead {
    /// A snapshot of occupancy, counters and config.
    pub fn snapshot(&self) -> BulkheadSnapshot {
        let s = &*self.shared;
        let config = self.config();
        BulkheadSnapshot {
            name: s.name.to_string(),
            active: s.active(),
            max_concurrent: config.max_concurrent,
            waiting: self.waiting(),
            rejected_total: s.rejected.get(),
            timeouts_total: s.timeouts.get(),
            max_wait_ms: u64::try_from(config.max_wait.as_millis()).unwrap_or(u64::MAX),
            adaptive: config.adaptive.enabled,
            adaptive_adjustments_total: s.adjustments.load(std::sync::atomic::Ordering::Relaxed),
            config,
        }
    }

    /// Applies an operator command; returns the snapshot after it.
    pub fn apply(&self, command: BulkheadCommand) -> Result<BulkheadSnapshot, ControlError> {
        match command {
            BulkheadCommand::SetMaxConcurrent { max_concurrent } => {
                self.set_max_concurrent(max_concurrent)?
            }
            BulkheadCommand::SetMaxWait { max_wait } => self.set_max_wait(max_wait)?,
            BulkheadCommand::SetAdaptive { enabled } => self.set_adaptive(enabled)?,
            BulkheadCommand::SetConfig { config } => self.set_config(config)?,
            BulkheadCommand::UpdateConfig { config } => {
                self.set_config(palisade_core::config::merge_config(&self.config(), config)?)?
            }
        }
        Ok(self.snapshot())
    }
}

impl Inspect for Bulkhead {
    type Snapshot = BulkheadSnapshot;

    fn snapshot(&self) -> BulkheadSnapshot {
        Bulkhead::snapshot(self)
    }
}

#[async_trait]
impl Control for Bulkhead {
    type Command = BulkheadCommand;
    type Output = BulkheadSnapshot;

    async fn control(&self, command: BulkheadCommand) -> Result<BulkheadSnapshot, ControlError> {
        self.apply(command)
    }
}

impl Managed for Bulkhead {
    const KIND: ComponentKind = ComponentKind::Bulkhead;

    fn name(&self) -> &str {
        Bulkhead::name(self)
    }

    fn export_metrics(&self) {
        let snap = self.snapshot();
        let name = snap.name;
        metrics::gauge!(names::BULKHEAD_ACTIVE, "name" => name.clone()).set(f64::from(snap.active));
        metrics::gauge!(names::BULKHEAD_MAX_CONCURRENT, "name" => name.clone())
            .set(f64::from(snap.max_concurrent));
        metrics::gauge!(names::BULKHEAD_WAITING, "name" => name.clone())
            .set(f64::from(snap.waiting));
        metrics::counter!(names::BULKHEAD_REJECTED_TOTAL, "name" => name.clone())
            .absolute(snap.rejected_total);
        metrics::counter!(names::BULKHEAD_TIMEOUTS_TOTAL, "name" => name)
            .absolute(snap.timeouts_total);
    }
}
