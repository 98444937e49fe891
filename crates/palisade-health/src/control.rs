//! Operator commands and metrics: each monitored component as a registry component.

use palisade_core::{
    ComponentKind, Control, ControlError, EventKind, Inspect, Managed, async_trait,
    metrics as names,
};
use serde::{Deserialize, Serialize};

use crate::check::Status;
use crate::monitor::{ComponentHandle, ComponentSnapshot};

/// Operator commands, as sent to `POST /admin/health/components/{name}`:
/// `{"action": "restart"}`, `{"action": "reset_crash_loop"}`,
/// `{"action": "set_auto_restart", "enabled": false}`, `{"action": "check"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum HealthCommand {
    /// Restart it now (whatever its backoff or crash loop).
    Restart,
    /// Leave crash-loop protection; restarts and backoff start over.
    ResetCrashLoop,
    /// Turn its auto-restart on or off.
    SetAutoRestart {
        /// On or off.
        enabled: bool,
    },
    /// Run its check now.
    Check,
}

impl ComponentHandle {
    /// Applies an operator command; returns the snapshot after it.
    pub async fn apply(&self, command: HealthCommand) -> Result<ComponentSnapshot, ControlError> {
        match command {
            HealthCommand::Restart => {
                self.restart()
                    .await
                    .map_err(|reason| ControlError::Rejected {
                        action: "restart".into(),
                        reason,
                    })?;
                // Answer with the component as it is after the restart, not before it.
                return Ok(self.check_now().await);
            }
            HealthCommand::ResetCrashLoop => self.reset_crash_loop(),
            HealthCommand::SetAutoRestart { enabled } => self.set_auto_restart(enabled),
            HealthCommand::Check => {
                self.state.publish(EventKind::AdminAction {
                    action: "check".into(),
                });
                return Ok(self.check_now().await);
            }
        }
        Ok(self.snapshot())
    }
}

impl Inspect for ComponentHandle {
    type Snapshot = ComponentSnapshot;

    fn snapshot(&self) -> ComponentSnapshot {
        ComponentHandle::snapshot(self)
    }
}

#[async_trait]
impl Control for ComponentHandle {
    type Command = HealthCommand;
    type Output = ComponentSnapshot;

    async fn control(&self, command: HealthCommand) -> Result<ComponentSnapshot, ControlError> {
        self.apply(command).await
    }
}

impl Managed for ComponentHandle {
    const KIND: ComponentKind = ComponentKind::Health;

    fn name(&self) -> &str {
        ComponentHandle::name(self)
    }

    fn export_metrics(&self) {
        let snap = ComponentHandle::snapshot(self);
        let name = snap.name;
        for st in [Status::Healthy, Status::Degraded, Status::Unhealthy] {
            metrics::gauge!(names::HEALTH_STATUS, "name" => name.clone(), "status" => st.as_str())
                .set(if snap.status == Some(st) { 1.0 } else { 0.0 });
        }
        metrics::counter!(names::HEALTH_RESTARTS_TOTAL, "name" => name.clone())
            .absolute(snap.restart_count);
        metrics::gauge!(names::HEALTH_CRASH_LOOP, "name" => name).set(if snap.crash_loop {
            1.0
        } else {
            0.0
        });
    }
}
