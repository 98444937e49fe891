//! Fleet commands: [`Fleet::send`] appends a command to the fleet's stream, every instance's
//! command loop applies it, and the answer gathers each instance's outcome.
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `palisade:fleet:{f}:commands` | stream | one entry per command, field `cmd`: `{"kind", "name", "command", "persist", "actor", "origin"}`; capped with `MAXLEN ~ 10000` |
//! | `palisade:fleet:{f}:results:<stream id>` | hash | instance id → outcome (`{"status": "applied", "result"}` or `{"status": "refused", "reason", "error"}`); expires after `catch_up` |
//!
//! The send script appends the command (`XADD`, the stream id is the command's id and its
//! Redis time) and reads the instances live at that moment; the answer lists those instances
//! (plus any other that answered before the deadline) with their outcome, or `no_answer`.

use std::time::Duration;

use palisade_core::ComponentKind;
use palisade_core::registry::{NAME_RULE, is_valid_name};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::FleetError;
use crate::fleet::Fleet;
use crate::overrides::{self, Persistence};

/// Largest command accepted (its JSON, bytes).
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// A command for one component on every instance of the fleet.
///
/// ```
/// use palisade_core::ComponentKind;
/// use palisade_fleet::FleetCommand;
///
/// let command = FleetCommand::new(
///     ComponentKind::CircuitBreaker,
///     "github",
///     serde_json::json!({"action": "force_open"}),
/// )
/// .persist(true)
/// .actor("alice");
/// assert!(command.persist);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetCommand {
    /// The component's kind.
    pub kind: ComponentKind,
    /// The component's name.
    pub name: String,
    /// The component's command, as its admin route takes it (`{"action": "force_open"}`).
    pub command: Value,
    /// Whether to keep it as an override that instances joining later apply too (see the
    /// [crate documentation](crate#durable-overrides) for the rules). Default false.
    #[serde(default)]
    pub persist: bool,
    /// Who sent it, for the audit trail. Default `admin-token`.
    #[serde(default = "default_actor")]
    pub actor: String,
}

fn default_actor() -> String {
    "admin-token".to_owned()
}

impl FleetCommand {
    /// A command, not persisted, from actor `admin-token` (the admin router's default).
    pub fn new(kind: ComponentKind, name: impl Into<String>, command: Value) -> Self {
        FleetCommand {
            kind,
            name: name.into(),
            command,
            persist: false,
            actor: default_actor(),
        }
    }

    /// The same command, persisted or not.
    pub fn persist(mut self, persist: bool) -> Self {
        self.persist = persist;
        self
    }

    /// The same command from `actor`.
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = actor.into();
        self
    }
}

/// What one instance did with a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// The instance's registry applied it; `result` is the component's answer.
    Applied {
        /// The component's answer (often its new snapshot).
        result: Value,
    },
    /// The instance's registry refused it (nothing changed there).
    Refused {
        /// Why, as the registry says it (`no circuit_breaker named 'x' is registered`).
        reason: String,
        /// The registry's error as JSON (`{"error": "not_found", ...}`), as the admin API
        /// returns it.
        #[serde(default)]
        error: Value,
    },
    /// The instance was live when the command was sent but had not answered by the deadline
    /// (it may still apply it: see [`Fleet::send`]).
    NoAnswer,
}

impl Outcome {
    /// `applied`, `refused` or `no_answer`.
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::Refused { .. } => "refused",
            Outcome::NoAnswer => "no_answer",
        }
    }
}

/// One instance's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceAnswer {
    /// The instance id.
    pub instance: String,
    /// What it did.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The fleet's answer to a command: each instance's outcome, sorted by instance id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetAnswer {
    /// The command's id (its stream id, `<Redis ms>-<seq>`).
    pub id: String,
    /// The component's kind.
    pub kind: ComponentKind,
    /// The component's name.
    pub name: String,
    /// The command's `action`, if it has one.
    pub action: Option<String>,
    /// Whether it was persisted (stored, or an override removed, as the rules say).
    pub persisted: bool,
    /// Each instance's outcome.
    pub answers: Vec<InstanceAnswer>,
}

impl FleetAnswer {
    fn count(&self, status: &str) -> usize {
        self.answers
            .iter()
            .filter(|a| a.outcome.status() == status)
            .count()
    }

    /// How many instances applied it.
    pub fn applied(&self) -> usize {
        self.count("applied")
    }

    /// How many refused it.
    pub fn refused(&self) -> usize {
        self.count("refused")
    }

    /// How many did not answer in time.
    pub fn no_answer(&self) -> usize {
        self.count("no_answer")
    }

    /// The outcome of instance `instance`.
    pub fn get(&self, instance: &str) -> Option<&Outcome> {
        self.answers
            .iter()
            .find(|a| a.instance == instance)
            .map(|a| &a.outcome)
    }
}

/// A command as it travels in the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub(crate) kind: ComponentKind,
    pub(crate) name: String,
    pub(crate) command: Value,
    #[serde(default)]
    pub(crate) persist: bool,
    #[serde(default)]
    pub(crate) actor: String,
    /// The instance that sent it.
    #[serde(default)]
    pub(crate) origin: String,
}

/// The `action` of a JSON command, if it has one.
pub(crate) fn action_of(command: &Value) -> Option<&str> {
    command.get("action").and_then(Value::as_str)
}

/// Delays between reads of the results while waiting: from 5 ms, doubling to 100 ms.
const POLL_MIN: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(100);

impl Fleet {
    /// Sends `command` to every instance of the fleet and waits up to `deadline` for their
    /// outcomes (returning as soon as every instance live at sending has answered).
    ///
    /// Each instance applies it through its registry ([`Registry::control`]) and records
    /// `applied` with the component's answer or `refused` with the registry's reason; live
    /// instances that did not answer by the deadline are `no_answer` — they apply it when their
    /// command loop gets to it (an instance whose Redis connection failed, one stopped with the
    /// same id, when it joins again), and their outcome is kept in Redis for `catch_up`.
    /// Commands are applied in the order they were sent, at least once (an instance that dies
    /// between applying a command and recording it applies it again when it comes back).
    ///
    /// Fails without sending anything with [`FleetError::InvalidCommand`] (an invalid component
    /// name, a command over 64 KiB, a persisted command without an `action`),
    /// [`FleetError::NotPersistable`] (see the [override rules](crate#durable-overrides)) or
    /// [`FleetError::Unavailable`] when Redis cannot be reached. Once sent, Redis failures
    /// while waiting only turn into `no_answer`.
    ///
    /// [`Registry::control`]: palisade_core::Registry::control
    pub async fn send(
        &self,
        command: FleetCommand,
        deadline: Duration,
    ) -> Result<FleetAnswer, FleetError> {
        let FleetCommand {
            kind,
            name,
            command,
            persist,
            actor,
        } = command;
        if !is_valid_name(&name) {
            return Err(FleetError::invalid(format!(
                "{name:?} is not a valid {kind} name; {NAME_RULE}"
            )));
        }
        let persistence = if persist {
            Some(overrides::persistence(kind, &name, &command)?)
        } else {
            None
        };
        let action = action_of(&command).map(str::to_owned);
        let envelope = Envelope {
            kind,
            name,
            command,
            persist,
            actor,
            origin: self.instance_id().to_owned(),
        };
        let payload = serde_json::to_string(&envelope)
            .map_err(|e| FleetError::invalid(format!("not representable as JSON: {e}")))?;
        if payload.len() > MAX_COMMAND_BYTES {
            return Err(FleetError::invalid(format!(
                "the command is {} bytes of JSON; at most {MAX_COMMAND_BYTES}",
                payload.len()
            )));
        }
        let stored = match &persistence {
            Some(Persistence::Store { .. }) => overrides::stored_value(&envelope),
            _ => String::new(),
        };
        let over = persistence.as_ref().map(|p| match p {
            Persistence::Store { field } => (field.as_str(), stored.as_str(), false),
            Persistence::Remove { field } => (field.as_str(), "", true),
        });
        let store = &self.shared().store;
        let (id, live) = store.send(&payload, over).await?;
        tracing::info!(
            target: "palisade::fleet", fleet = %self.name(), id = %id,
            component_kind = kind.as_str(), component = %envelope.name,
            action = action.as_deref().unwrap_or("command"), actor = %envelope.actor,
            persist, instances = live.len(), "fleet command sent"
        );
        let answers = self.wait_for(&id, &live, deadline).await;
        Ok(FleetAnswer {
            id,
            kind,
            name: envelope.name,
            action,
            persisted: persist,
            answers,
        })
    }

    /// Reads the outcomes of command `id` until each of `live` answered or `deadline`.
    async fn wait_for(&self, id: &str, live: &[String], deadline: Duration) -> Vec<InstanceAnswer> {
        let store = &self.shared().store;
        let end = tokio::time::Instant::now() + deadline;
        let mut poll = POLL_MIN;
        let mut results = Vec::new();
        loop {
            match store.results(id).await {
                Ok(r) => results = r,
                Err(e) => tracing::debug!(
                    target: "palisade::fleet", fleet = %self.name(), id = %id, error = %e,
                    "cannot read the outcomes yet"
                ),
            }
            let complete = live.iter().all(|i| results.iter().any(|(r, _)| r == i));
            let now = tokio::time::Instant::now();
            if complete || now >= end {
                break;
            }
            tokio::time::sleep(poll.min(end - now)).await;
            poll = (poll * 2).min(POLL_MAX);
        }
        let mut answers: Vec<InstanceAnswer> = results
            .into_iter()
            .map(|(instance, json)| {
                let outcome = serde_json::from_str(&json).unwrap_or_else(|e| Outcome::Refused {
                    reason: format!("unreadable outcome recorded in Redis: {e}"),
                    error: Value::Null,
                });
                InstanceAnswer { instance, outcome }
            })
            .collect();
        for instance in live {
            if !answers.iter().any(|a| &a.instance == instance) {
                answers.push(InstanceAnswer {
                    instance: instance.clone(),
                    outcome: Outcome::NoAnswer,
                });
            }
        }
        answers.sort_by(|a, b| a.instance.cmp(&b.instance));
        answers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_tagged_by_status() {
        let answer = InstanceAnswer {
            instance: "a".into(),
            outcome: Outcome::Refused {
                reason: "no".into(),
                error: serde_json::json!({"error": "not_found"}),
            },
        };
        let v = serde_json::to_value(&answer).unwrap();
        assert_eq!(v["status"], "refused");
        assert_eq!(v["instance"], "a");
        assert_eq!(v["error"]["error"], "not_found");
        let back: InstanceAnswer = serde_json::from_value(v).unwrap();
        assert_eq!(back, answer);
        let none = serde_json::to_value(InstanceAnswer {
            instance: "b".into(),
            outcome: Outcome::NoAnswer,
        })
        .unwrap();
        assert_eq!(
            none,
            serde_json::json!({"instance": "b", "status": "no_answer"})
        );
    }
}
