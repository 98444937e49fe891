//! [`FleetError`]: why a fleet operation failed.

use palisade_core::{ComponentKind, ConfigError};

/// Why a fleet operation failed. Nothing was sent or changed when one is returned, except as
/// each variant says.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The fleet's configuration is invalid (a name, a duration, the Redis URL); the error names
    /// the field. Only [`Fleet::join`](crate::Fleet::join) returns it.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Redis could not be reached or failed; retrying may succeed. `operation` says what was
    /// attempted (`send`, `instances`, ...).
    #[error("Redis is unavailable for fleet '{fleet}' ({operation}): {reason}")]
    Unavailable {
        /// The fleet's name.
        fleet: String,
        /// What was attempted.
        operation: &'static str,
        /// What Redis (or the connection) said.
        reason: String,
    },
    /// The command cannot be sent as it is: an invalid component name, a body too large, or a
    /// persisted command without an `action`.
    #[error("invalid fleet command: {reason}")]
    InvalidCommand {
        /// What is wrong.
        reason: String,
    },
    /// The command is valid but must not be persisted: it is a one-off action (a restart, a
    /// read) or it acts on state that is already shared in Redis. Send it without `persist`.
    #[error("{kind} command '{action}' cannot be persisted: {reason}")]
    NotPersistable {
        /// The component's kind.
        kind: ComponentKind,
        /// The command's action.
        action: String,
        /// Why not.
        reason: String,
    },
    /// Data read from Redis does not have the shape this crate writes (a foreign or corrupt
    /// key); the message names the key.
    #[error("unreadable fleet data in Redis ({what}): {reason}")]
    Corrupt {
        /// The key (or field) read.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl FleetError {
    /// An [`Unavailable`](FleetError::Unavailable) error from a Redis error.
    pub(crate) fn unavailable(
        fleet: &str,
        operation: &'static str,
        error: impl std::fmt::Display,
    ) -> Self {
        FleetError::Unavailable {
            fleet: fleet.to_owned(),
            operation,
            reason: error.to_string(),
        }
    }

    /// A [`Corrupt`](FleetError::Corrupt) error.
    pub(crate) fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Self {
        FleetError::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// An [`InvalidCommand`](FleetError::InvalidCommand) error.
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        FleetError::InvalidCommand {
            reason: reason.into(),
        }
    }
}
