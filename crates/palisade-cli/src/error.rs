//! What can go wrong, and the exit code each failure maps to.

use std::io;

use serde_json::Value;

/// The command did what it was asked.
pub const EXIT_OK: u8 = 0;
/// The server answered with an error: it refused the command (400, 404, 409, 422), or its
/// backend failed (503). The server's message is printed.
pub const EXIT_REFUSED: u8 = 1;
/// The command line is wrong (clap's errors too), or a destructive command was not confirmed
/// where it could not ask.
pub const EXIT_USAGE: u8 = 2;
/// The admin API could not be reached: connection refused, unknown host, timeout.
pub const EXIT_UNREACHABLE: u8 = 3;
/// The token was missing, wrong, or not allowed to do this (401, 403).
pub const EXIT_AUTH: u8 = 4;

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A bad argument, flag or environment value.
    #[error("{0}")]
    Usage(String),
    /// The server answered with an error status (not 401/403).
    #[error("{message}")]
    Refused {
        /// What to tell the operator: the server's message and code.
        message: String,
        /// The server's JSON error body, printed on stdout with `--json`.
        body: Option<Value>,
    },
    /// The operator answered no to a confirmation, or some instances refused a fleet command
    /// (already shown): nothing more to say than the message.
    #[error("{0}")]
    NotDone(String),
    /// The admin API could not be reached.
    #[error("{0}")]
    Unreachable(String),
    /// 401 or 403.
    #[error("{message}")]
    Auth {
        /// What to tell the operator.
        message: String,
        /// The server's JSON error body, printed on stdout with `--json`.
        body: Option<Value>,
    },
    /// Stdout was closed (`palisade events | head`): stop quietly.
    #[error("stdout closed")]
    Closed,
    /// Writing the output failed otherwise.
    #[error("cannot write the output: {0}")]
    Output(io::Error),
}

impl CliError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Refused { .. } | CliError::NotDone(_) | CliError::Output(_) => EXIT_REFUSED,
            CliError::Unreachable(_) => EXIT_UNREACHABLE,
            CliError::Auth { .. } => EXIT_AUTH,
            CliError::Closed => EXIT_OK,
        }
    }

    /// The server's error body, when there was one.
    pub fn body(&self) -> Option<&Value> {
        match self {
            CliError::Refused { body, .. } | CliError::Auth { body, .. } => body.as_ref(),
            _ => None,
        }
    }

    /// A usage error.
    pub fn usage(message: impl Into<String>) -> Self {
        CliError::Usage(message.into())
    }
}

impl From<io::Error> for CliError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            CliError::Closed
        } else {
            CliError::Output(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_exit_code() {
        assert_eq!(CliError::usage("x").exit_code(), 2);
        let refused = CliError::Refused {
            message: "m".into(),
            body: None,
        };
        assert_eq!(refused.exit_code(), 1);
        assert_eq!(CliError::Unreachable("x".into()).exit_code(), 3);
        let auth = CliError::Auth {
            message: "m".into(),
            body: None,
        };
        assert_eq!(auth.exit_code(), 4);
        let closed: CliError = io::Error::from(io::ErrorKind::BrokenPipe).into();
        assert_eq!(closed.exit_code(), 0);
    }
}
