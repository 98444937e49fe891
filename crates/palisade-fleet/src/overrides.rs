//! Durable overrides: commands sent with `persist`, re-applied by every instance that joins.
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `palisade:fleet:{f}:overrides` | hash | `<kind>/<name>/<slot>` → `<stream id> {"kind", "name", "command", "actor", "origin"}` |
//!
//! The send script stores (or removes) the override in the same atomic step that appends the
//! command to the stream, and a joining instance reads the overrides and its starting point in
//! the stream in one script, so no command falls between the two. The rules are in the
//! [crate documentation](crate#durable-overrides).

use palisade_core::ComponentKind;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::apply::apply;
use crate::command::{Envelope, Outcome, action_of};
use crate::error::FleetError;
use crate::fleet::{Fleet, Shared};
use crate::reply::{cmp_ids, stream_id};

/// A persisted command, as [`Fleet::overrides`] lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Override {
    /// The component's kind.
    pub kind: ComponentKind,
    /// The component's name.
    pub name: String,
    /// What it sets: `state` for a circuit breaker's `force_open`, `disable` and
    /// `metrics_only`; `update_config:<fields>` for a partial config update; else the action.
    /// A later persisted command for the same slot replaces it.
    pub slot: String,
    /// The command, as sent.
    pub command: Value,
    /// Who sent it.
    pub actor: String,
    /// The instance it was sent from.
    pub origin: String,
    /// The command's id (stream id); overrides are re-applied in this order.
    pub id: String,
    /// When it was sent (Redis time, ms since the Unix epoch).
    pub sent_at_ms: u64,
}

/// What persisting a command does to the overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Persistence {
    /// Store it under `field`, replacing what was there.
    Store {
        /// `<kind>/<name>/<slot>`.
        field: String,
    },
    /// Remove `field`: the command returns the slot to its default.
    Remove {
        /// `<kind>/<name>/<slot>`.
        field: String,
    },
}

fn field(kind: ComponentKind, name: &str, slot: &str) -> String {
    format!("{}/{name}/{slot}", kind.as_str())
}

/// What persisting `command` for component `kind`/`name` does, or why it cannot be persisted.
pub(crate) fn persistence(
    kind: ComponentKind,
    name: &str,
    command: &Value,
) -> Result<Persistence, FleetError> {
    let Some(action) = action_of(command) else {
        return Err(FleetError::invalid(
            "a persisted command needs an \"action\" (it names the override)",
        ));
    };
    let refuse = |reason: &str| FleetError::NotPersistable {
        kind,
        action: action.to_owned(),
        reason: reason.to_owned(),
    };
    match (kind, action) {
        (ComponentKind::DeadLetterQueue, _) => Err(refuse(
            "a dead-letter queue's entries live in its store, not in each instance; send \
             the command once, without persist",
        )),
        (ComponentKind::Health, "restart" | "check" | "reset_crash_loop")
        | (ComponentKind::RateLimiter, "reset") => Err(refuse(
            "it is a one-off action, not a setting; send it without persist",
        )),
        (ComponentKind::CircuitBreaker, "reset" | "close") => Ok(Persistence::Remove {
            field: field(kind, name, "state"),
        }),
        (ComponentKind::CircuitBreaker, "force_open" | "disable" | "metrics_only") => {
            Ok(Persistence::Store {
                field: field(kind, name, "state"),
            })
        }
        (_, "update_config") => {
            let mut fields: Vec<&str> = command
                .get("config")
                .and_then(Value::as_object)
                .map(|c| c.keys().map(String::as_str).collect())
                .unwrap_or_default();
            fields.sort_unstable();
            Ok(Persistence::Store {
                field: field(kind, name, &format!("update_config:{}", fields.join(","))),
            })
        }
        (_, action) => Ok(Persistence::Store {
            field: field(kind, name, action),
        }),
    }
}

/// What is stored for an override (the send script puts the stream id in front).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    kind: ComponentKind,
    name: String,
    command: Value,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    origin: String,
}

/// The JSON stored for the persisted command `envelope`.
pub(crate) fn stored_value(envelope: &Envelope) -> String {
    let stored = Stored {
        kind: envelope.kind,
        name: envelope.name.clone(),
        command: envelope.command.clone(),
        actor: envelope.actor.clone(),
        origin: envelope.origin.clone(),
    };
    // A JSON value and strings: cannot fail (the command was serialized already).
    serde_json::to_string(&stored).unwrap_or_default()
}

/// An override from its field and stored value.
fn parse(field: &str, value: &str) -> Result<Override, String> {
    let (id, json) = value
        .split_once(' ')
        .ok_or("no stream id in front of the JSON")?;
    let (ms, _) = stream_id(id).ok_or_else(|| format!("{id:?} is not a stream id"))?;
    let stored: Stored = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let prefix = format!("{}/{}/", stored.kind.as_str(), stored.name);
    let slot = field
        .strip_prefix(&prefix)
        .ok_or_else(|| format!("the field does not start with {prefix:?}"))?;
    Ok(Override {
        kind: stored.kind,
        name: stored.name,
        slot: slot.to_owned(),
        command: stored.command,
        actor: stored.actor,
        origin: stored.origin,
        id: id.to_owned(),
        sent_at_ms: ms,
    })
}

/// The readable overrides among `raw` (field, value), in the order they were sent; the
/// unreadable ones are logged and left out.
fn parse_all(fleet: &str, raw: &[(String, String)]) -> Vec<Override> {
    let mut out: Vec<Override> = raw
        .iter()
        .filter_map(|(field, value)| {
            parse(field, value)
                .map_err(|e| {
                    tracing::warn!(
                        target: "palisade::fleet", fleet = %fleet, field = %field, error = %e,
                        "unreadable override left out"
                    );
                })
                .ok()
        })
        .collect();
    out.sort_by(|a, b| cmp_ids(&a.id, &b.id));
    out
}

/// Applies every override of `raw` to the local registry, in the order they were sent;
/// returns how many were applied. An override for a component this instance does not have is
/// skipped (logged at debug level); one the registry refuses is logged as a warning.
pub(crate) async fn reapply(shared: &Shared, raw: &[(String, String)]) -> usize {
    let (fleet, instance) = (&shared.config.fleet, &shared.config.instance_id);
    let mut applied = 0;
    for o in parse_all(fleet, raw) {
        let actor = format!(
            "{} via fleet {fleet} (override {}, re-applied on {instance} at join)",
            o.actor, o.id
        );
        match apply(shared, o.kind, &o.name, o.command, actor).await {
            Outcome::Applied { .. } => applied += 1,
            Outcome::Refused { reason, error } => {
                if error.get("error").and_then(Value::as_str) == Some("not_found") {
                    tracing::debug!(
                        target: "palisade::fleet", fleet = %fleet, instance = %instance,
                        component_kind = o.kind.as_str(), component = %o.name, "override for a \
                        component this instance does not have"
                    );
                } else {
                    tracing::warn!(
                        target: "palisade::fleet", fleet = %fleet, instance = %instance,
                        component_kind = o.kind.as_str(), component = %o.name, reason = %reason,
                        "override refused by the local registry"
                    );
                }
            }
            Outcome::NoAnswer => {}
        }
    }
    applied
}

impl Fleet {
    /// Every stored override, in the order they were sent (the order joining instances
    /// re-apply them).
    pub async fn overrides(&self) -> Result<Vec<Override>, FleetError> {
        let raw = self.shared().store.overrides().await?;
        Ok(parse_all(self.name(), &raw))
    }

    /// Removes every override of component `kind`/`name`; returns how many there were. The
    /// running instances keep their state: to change it, send a command (a persisted
    /// breaker `reset` both closes the breakers and removes their `state` override).
    pub async fn clear_override(&self, kind: ComponentKind, name: &str) -> Result<u64, FleetError> {
        let removed = self
            .shared()
            .store
            .clear(&format!("{}/{name}/", kind.as_str()))
            .await?;
        tracing::info!(
            target: "palisade::fleet", fleet = %self.name(), component_kind = kind.as_str(),
            component = %name, removed, "overrides cleared"
        );
        Ok(removed)
    }

    /// Removes every override of the fleet; returns how many there were. The running
    /// instances keep their state.
    pub async fn clear_all(&self) -> Result<u64, FleetError> {
        let removed = self.shared().store.clear("").await?;
        tracing::info!(
            target: "palisade::fleet", fleet = %self.name(), removed, "all overrides cleared"
        );
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CB: ComponentKind = ComponentKind::CircuitBreaker;

    fn stored(f: &str) -> Persistence {
        Persistence::Store { field: f.into() }
    }

    #[test]
    fn breaker_states_share_one_slot_and_reset_removes_it() {
        for action in ["force_open", "disable", "metrics_only"] {
            assert_eq!(
                persistence(CB, "gh", &json!({"action": action})).unwrap(),
                stored("circuit_breaker/gh/state")
            );
        }
        for action in ["reset", "close"] {
            assert_eq!(
                persistence(CB, "gh", &json!({"action": action})).unwrap(),
                Persistence::Remove {
                    field: "circuit_breaker/gh/state".into()
                }
            );
        }
    }

    #[test]
    fn other_actions_are_their_own_slot_and_updates_name_their_fields() {
        assert_eq!(
            persistence(
                ComponentKind::Bulkhead,
                "db",
                &json!({"action": "set_max_concurrent", "max_concurrent": 4})
            )
            .unwrap(),
            stored("bulkhead/db/set_max_concurrent")
        );
        assert_eq!(
            persistence(
                CB,
                "gh",
                &json!({"action": "update_config", "config": {"wait_duration": "5s", "consecutive_failures": 2}})
            )
            .unwrap(),
            stored("circuit_breaker/gh/update_config:consecutive_failures,wait_duration")
        );
    }

    #[test]
    fn one_off_actions_and_queues_are_not_persisted() {
        for (kind, action) in [
            (ComponentKind::DeadLetterQueue, "purge"),
            (ComponentKind::Health, "restart"),
            (ComponentKind::RateLimiter, "reset"),
        ] {
            let err = persistence(kind, "x", &json!({"action": action})).unwrap_err();
            assert!(matches!(err, FleetError::NotPersistable { .. }), "{err}");
        }
        let err = persistence(CB, "x", &json!({"no": "action"})).unwrap_err();
        assert!(matches!(err, FleetError::InvalidCommand { .. }), "{err}");
    }

    #[test]
    fn overrides_parse_and_sort_by_id() {
        let value = |id: &str, action: &str| {
            format!(
                "{id} {}",
                json!({"kind": "circuit_breaker", "name": "gh", "command": {"action": action},
                       "actor": "alice", "origin": "a"})
            )
        };
        let raw = vec![
            (
                "circuit_breaker/gh/state".to_owned(),
                value("20-0", "disable"),
            ),
            (
                "circuit_breaker/gh/set_config".to_owned(),
                value("9-1", "set_config"),
            ),
            ("circuit_breaker/gh/bad".to_owned(), "garbage".to_owned()),
        ];
        let all = parse_all("f", &raw);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].slot, "set_config");
        assert_eq!(all[0].sent_at_ms, 9);
        assert_eq!(all[1].slot, "state");
        assert_eq!(all[1].command, json!({"action": "disable"}));
        assert_eq!(all[1].actor, "alice");
    }
}
