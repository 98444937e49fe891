//! Applying one command to the local registry: the component's answer or the registry's
//! refusal, and the audit event of an applied command.

use std::time::Duration;

use palisade_core::{ComponentKind, EventKind};
use serde_json::Value;

use crate::command::{Outcome, action_of};
use crate::fleet::Shared;

/// Longest a component may take to apply a fleet command; past it the command is reported
/// refused (timed out) and the loop goes on, so one stuck component cannot stall the fleet's
/// commands on this instance.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Applies `command` to component `kind`/`name` of the local registry. On success, publishes
/// an [`EventKind::Audit`] with `actor` and the component's snapshots before and after (the
/// registry itself publishes its `admin_action` event).
pub(crate) async fn apply(
    shared: &Shared,
    kind: ComponentKind,
    name: &str,
    command: Value,
    actor: String,
) -> Outcome {
    let registry = &shared.registry;
    let action = action_of(&command).unwrap_or("command").to_owned();
    let before = registry.snapshot(kind, name).unwrap_or(Value::Null);
    match tokio::time::timeout(APPLY_TIMEOUT, registry.control(kind, name, command)).await {
        Ok(Ok(result)) => {
            let after = registry.snapshot(kind, name).unwrap_or(Value::Null);
            registry.events().publish(
                kind,
                name,
                EventKind::Audit {
                    actor,
                    action,
                    before,
                    after,
                },
            );
            Outcome::Applied { result }
        }
        Ok(Err(e)) => Outcome::Refused {
            reason: e.to_string(),
            error: serde_json::to_value(&e).unwrap_or(Value::Null),
        },
        Err(_) => Outcome::Refused {
            reason: format!(
                "the {kind} '{name}' did not complete '{action}' within {} s on this instance",
                APPLY_TIMEOUT.as_secs()
            ),
            error: serde_json::json!({"error": "timeout"}),
        },
    }
}
