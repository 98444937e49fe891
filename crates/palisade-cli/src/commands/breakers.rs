//! `palisade breakers`: list, inspect and command circuit breakers (§2.1 of the operations
//! guide).

use clap::Subcommand;
use serde_json::Value;

use super::{Ctx, named_items, print_snapshot};
use crate::error::CliError;
use crate::output::{Cell, Output, Table, ago_at, at, duration_at, now_ms, num};
use crate::params::assignments;

/// The admin path of circuit breakers.
const PATH: &str = "circuit-breakers";

/// Arguments of `palisade breakers`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Every breaker: state, time to the next trial, failures, calls, last transition (the
    /// default).
    List,
    /// One breaker in full: state, counters, last transition, config.
    Show {
        /// The breaker's name.
        name: String,
    },
    /// Close the breaker and clear its counts (repair the upstream first).
    Reset {
        /// The breaker's name.
        name: String,
    },
    /// Force the breaker open: every call is refused until `reset` (maintenance).
    Open {
        /// The breaker's name.
        name: String,
    },
    /// Disable the breaker: every call is admitted and nothing recorded, until `reset`.
    Disable {
        /// The breaker's name.
        name: String,
    },
    /// Metrics only: every call is admitted and recorded, the breaker never trips, until
    /// `reset`.
    MetricsOnly {
        /// The breaker's name.
        name: String,
    },
    /// Change config fields, keep the others (`update_config`): `set weather
    /// wait_duration=30s consecutive_failures=5`. Values are JSON when they parse as JSON,
    /// strings otherwise.
    Set {
        /// The breaker's name.
        name: String,
        /// The fields to change.
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
}

/// Runs `palisade breakers …`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    match args.cmd.unwrap_or(Cmd::List) {
        Cmd::List => {
            let list = ctx.list(PATH).await?;
            ctx.show(&list, print_list)
        }
        Cmd::Show { name } => {
            let one = ctx.one(PATH, &name).await?;
            ctx.show(&one, |out, v| {
                print_snapshot(
                    out,
                    &format!("circuit breaker {name}"),
                    v.get("snapshot").unwrap_or(&Value::Null),
                )
            })
        }
        Cmd::Reset { name } => state_command(ctx, &name, "reset").await,
        Cmd::Open { name } => state_command(ctx, &name, "force_open").await,
        Cmd::Disable { name } => state_command(ctx, &name, "disable").await,
        Cmd::MetricsOnly { name } => state_command(ctx, &name, "metrics_only").await,
        Cmd::Set { name, pairs } => {
            let config = assignments(&pairs)?;
            // The fields in the order given (the map sorts them).
            let mut keys: Vec<String> = Vec::new();
            for pair in &pairs {
                let key = pair.split(['=', '.']).next().unwrap_or_default().trim();
                if !keys.iter().any(|k| k == key) {
                    keys.push(key.to_owned());
                }
            }
            let answer = ctx
                .command(
                    PATH,
                    &name,
                    "update_config",
                    serde_json::json!({ "config": config }),
                )
                .await?;
            ctx.show(&answer, |out, v| {
                let changed: Vec<String> = keys
                    .iter()
                    .map(|k| format!("{k}={}", at(v, &format!("/result/config/{k}"))))
                    .collect();
                out.line(&format!(
                    "circuit breaker {name}: config updated: {} (state {})",
                    changed.join(" "),
                    at(v, "/result/state")
                ))
            })
        }
    }
}

/// A command that moves the breaker's state; prints the state it is in afterwards.
async fn state_command(ctx: &Ctx, name: &str, action: &str) -> Result<(), CliError> {
    let answer = ctx.command(PATH, name, action, Value::Null).await?;
    ctx.show(&answer, |out, v| {
        let state = at(v, "/result/state");
        out.line(&format!(
            "circuit breaker {name}: {action} applied; state {}",
            out.paint(&state, crate::output::state_style(&state))
        ))
    })
}

/// A breaker's last transition: `closed → open: 3 consecutive failures, 12 s ago`.
pub fn transition(snapshot: &Value, now: u64) -> String {
    match snapshot.get("last_transition") {
        Some(t) if t.is_object() => format!(
            "{} → {}: {}, {}",
            at(t, "/from"),
            at(t, "/to"),
            at(t, "/reason"),
            ago_at(t, "/at_unix_ms", now)
        ),
        _ => "-".to_owned(),
    }
}

fn print_list(out: &Output, list: &Value) -> Result<(), CliError> {
    let now = now_ms();
    let mut table = Table::new([
        "NAME",
        "STATE",
        "RETRY IN",
        "FAILURES",
        "CALLS OK/FAILED/REFUSED",
        "LAST TRANSITION",
    ]);
    for (name, s) in named_items(list) {
        let calls = format!(
            "{}/{}/{}",
            num(s, "/calls/successful").unwrap_or(0),
            num(s, "/calls/failed").unwrap_or(0),
            num(s, "/calls/not_permitted").unwrap_or(0)
        );
        table.row(vec![
            name.into(),
            Cell::state(at(s, "/state")),
            duration_at(s, "/retry_after_ms").into(),
            at(s, "/consecutive_failures").into(),
            calls.into(),
            transition(s, now).into(),
        ]);
    }
    out.table(&table, "no circuit breakers")
}
