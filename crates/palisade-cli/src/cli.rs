//! The command line: global options and the command groups (each group's own arguments live
//! in its module under `commands`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::commands::{
    breakers, bulkheads, completions, component, dlq, events, faults, fleet, health, limits,
};
use crate::output::ColorChoice;
use crate::params;

/// What `--help` ends with.
const AFTER_HELP: &str = "\
Environment:
  PALISADE_ADMIN_URL         the admin API (default http://127.0.0.1:9090)
  PALISADE_ADMIN_TOKEN       the bearer token (or PALISADE_ADMIN_TOKEN_FILE, or --token-file)
  NO_COLOR                   no colour, even on a terminal

Exit codes:
  0  done
  1  refused: the server refused the command (400, 404, 409, 422) or its backend failed (503);
     its message is printed
  2  usage: a bad argument, or a destructive command without --yes where it cannot ask
  3  unreachable: connection refused, unknown host, timeout
  4  auth: the token is missing, wrong, or only a viewer's (401, 403)";

/// `palisade`: the runbook procedures of a Palisade service from a shell, over its admin API.
#[derive(Debug, Parser)]
#[command(
    name = "palisade",
    version,
    about = "Inspect and control a Palisade service (breakers, bulkheads, rate limits, dead \
             letters, health, events, fleet, fault injection) through its admin API",
    after_help = AFTER_HELP,
    propagate_version = true
)]
pub struct Cli {
    /// The admin API [env: PALISADE_ADMIN_URL; default http://127.0.0.1:9090].
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "URL"
    )]
    pub url: Option<String>,
    /// A file holding the admin token (whitespace trimmed) [else PALISADE_ADMIN_TOKEN, or the
    /// file PALISADE_ADMIN_TOKEN_FILE names].
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "PATH"
    )]
    pub token_file: Option<PathBuf>,
    /// Your name in the audit trail (X-Palisade-Actor) [default: $USER].
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "NAME"
    )]
    pub actor: Option<String>,
    /// Print the server's JSON instead of tables (for scripts).
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,
    /// Go ahead with destructive commands (purge, discard by filter, clearing every override)
    /// without asking.
    #[arg(long, short = 'y', global = true, help_heading = "Global options")]
    pub yes: bool,
    /// When to colour the output: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        hide_possible_values = true,
        value_enum,
        default_value = "auto",
        value_name = "WHEN"
    )]
    pub color: ColorChoice,
    /// How long to wait for an answer (`30s`, `500ms`, `2m`).
    #[arg(long, global = true, help_heading = "Global options", value_parser = params::duration, default_value = "30s", value_name = "DURATION")]
    pub timeout: Duration,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The command groups.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The whole service on one screen: health, breakers not closed, saturated partitions,
    /// limiters, dead letters, crash loops, fault injectors switched on.
    Status,
    /// Circuit breakers: list, show, reset, open, disable, metrics-only, set.
    #[command(visible_alias = "breaker")]
    Breakers(breakers::Args),
    /// Bulkhead partitions: list, show, set-limit.
    #[command(visible_alias = "bulkhead")]
    Bulkheads(bulkheads::Args),
    /// Rate limiters: list, show, set-quota, reset, set-failure-policy.
    #[command(visible_alias = "limiters")]
    Limits(limits::Args),
    /// Dead-letter queues: list, show, retry, discard, purge, stats.
    Dlq(dlq::Args),
    /// The health monitor: list, show, restart, reset-crash-loop, auto-restart, check.
    Health(health::Args),
    /// Recent events, or the live stream with --follow.
    Events(events::Args),
    /// The fleet of replicas: list, send, overrides, resilience.
    Fleet(fleet::Args),
    /// Fault injectors: list, show, enable, disable.
    #[command(visible_alias = "fault")]
    Faults(faults::Args),
    /// Any component of any kind on this instance (timeouts, retries, hedges, fallbacks, …):
    /// every one of a kind, or one snapshot.
    Show(component::ShowArgs),
    /// Send any command to one component of this instance:
    /// `send timeout weather set_deadline deadline=2s`, `send retry weather set_budget ratio=0.1`.
    Send(component::SendArgs),
    /// Print a shell's completion script.
    Completions(completions::Args),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli =
            Cli::try_parse_from(["palisade", "dlq", "purge", "q", "--yes", "--json"]).unwrap();
        assert!(cli.yes && cli.json);
        let cli = Cli::try_parse_from(["palisade", "--timeout", "2s", "status"]).unwrap();
        assert_eq!(cli.timeout, Duration::from_secs(2));
    }
}
