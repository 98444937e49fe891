//! `palisade fleet`: the replicas of a service on one Redis, commands to all of them, durable
//! overrides, and every component as the fleet sees it (§4 "One fleet, one command").

use std::time::Duration;

use clap::Subcommand;
use serde_json::{Value, json};

use super::Ctx;
use crate::confirm::confirm;
use crate::error::CliError;
use crate::output::{Cell, Output, Table, ago_at, at, items, now_ms, state_style, text};
use crate::params::{self, assignments};

/// Arguments of `palisade fleet`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The live instances: id, version, addresses, last heartbeat (the default).
    List,
    /// Send a command to every instance and show each one's answer:
    /// `send breaker weather force-open --persist`, `send limiter mcp-clients set_quota
    /// quota.rate=600 quota.period=1m`.
    Send {
        /// The component kind: `circuit_breaker` (or `breaker`), `bulkhead`, `rate_limiter`
        /// (or `limiter`), `health`, `fault_injector` (or `fault`), …
        kind: String,
        /// The component's name.
        name: String,
        /// The action (`reset`, `force_open`, `set_max_concurrent`, …; `-` works for `_`).
        action: String,
        /// The command's other fields; values are JSON when they parse as JSON, strings
        /// otherwise; dotted keys nest.
        #[arg(value_name = "KEY=VALUE")]
        pairs: Vec<String>,
        /// Also store it as an override, re-applied by every instance at start.
        #[arg(long)]
        persist: bool,
        /// How long to wait for the instances' answers (at most 60 s).
        #[arg(long, value_parser = params::duration, default_value = "5s")]
        deadline: Duration,
    },
    /// The stored overrides, or clear them.
    Overrides {
        #[command(subcommand)]
        cmd: Option<OverridesCmd>,
    },
    /// Every component across the fleet: the worst state and each instance's.
    Resilience,
}

#[derive(Debug, Subcommand)]
enum OverridesCmd {
    /// Every stored override (the default).
    List,
    /// Remove one component's overrides, or every override (asks first); the running
    /// instances keep their state.
    Clear {
        /// The component kind (with NAME).
        #[arg(requires = "name")]
        kind: Option<String>,
        /// The component's name.
        name: Option<String>,
    },
}

/// Runs `palisade fleet …`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    match args.cmd.unwrap_or(Cmd::List) {
        Cmd::List => {
            let fleet = ctx.client.get(&["admin", "fleet"], &[]).await?;
            ctx.show(&fleet, print_instances)
        }
        Cmd::Send {
            kind,
            name,
            action,
            pairs,
            persist,
            deadline,
        } => {
            let kind = params::kind(&kind)?;
            let mut command = assignments(&pairs)?;
            if command.contains_key("action") {
                return Err(CliError::usage(
                    "the action is the third argument; do not give action= as well",
                ));
            }
            command.insert("action".into(), Value::from(params::action(&action)));
            let deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
            let body = json!({
                "kind": kind.json,
                "name": name,
                "command": command,
                "persist": persist,
                "deadline_ms": deadline_ms,
            });
            let answer = ctx
                .client
                .post_within(
                    &["admin", "fleet", "commands"],
                    &body,
                    deadline.saturating_add(Duration::from_secs(5)),
                )
                .await?;
            ctx.show(&answer, print_answer)?;
            let refused = items(&answer, "/answers")
                .iter()
                .filter(|a| at(a, "/status") != "applied")
                .count();
            if refused > 0 {
                return Err(CliError::NotDone(format!(
                    "{refused} of {} instances did not apply it",
                    items(&answer, "/answers").len()
                )));
            }
            Ok(())
        }
        Cmd::Overrides { cmd } => match cmd.unwrap_or(OverridesCmd::List) {
            OverridesCmd::List => {
                let list = ctx
                    .client
                    .get(&["admin", "fleet", "overrides"], &[])
                    .await?;
                ctx.show(&list, print_overrides)
            }
            OverridesCmd::Clear {
                kind: Some(kind),
                name: Some(name),
            } => {
                let kind = params::kind(&kind)?;
                let answer = ctx
                    .client
                    .delete(&["admin", "fleet", "overrides", kind.json, &name])
                    .await?;
                ctx.show(&answer, |out, v| {
                    out.line(&format!(
                        "fleet: {} override(s) of {} {name} removed",
                        at(v, "/removed"),
                        kind.json
                    ))
                })
            }
            OverridesCmd::Clear { .. } => {
                confirm("Remove every override of the fleet", ctx.yes)?;
                let answer = ctx.client.delete(&["admin", "fleet", "overrides"]).await?;
                ctx.show(&answer, |out, v| {
                    out.line(&format!("fleet: {} override(s) removed", at(v, "/removed")))
                })
            }
        },
        Cmd::Resilience => {
            let view = ctx
                .client
                .get(&["admin", "fleet", "resilience"], &[])
                .await?;
            ctx.show(&view, print_resilience)
        }
    }
}

fn print_instances(out: &Output, fleet: &Value) -> Result<(), CliError> {
    let now = now_ms();
    out.line(&format!(
        "fleet {}: {} instances (this one: {})",
        at(fleet, "/fleet"),
        at(fleet, "/count"),
        at(fleet, "/instance")
    ))?;
    let mut table = Table::new(["ID", "VERSION", "ADDRESSES", "STARTED", "LAST SEEN"]);
    for i in items(fleet, "/instances") {
        let addresses: Vec<String> = items(i, "/addresses")
            .iter()
            .map(|a| text(Some(a)))
            .collect();
        table.row(vec![
            at(i, "/id").into(),
            at(i, "/version").into(),
            if addresses.is_empty() {
                "-".to_owned()
            } else {
                addresses.join(", ")
            }
            .into(),
            ago_at(i, "/started_at_ms", now).into(),
            ago_at(i, "/last_seen_ms", now).into(),
        ]);
    }
    out.table(&table, "no live instances")
}

fn print_answer(out: &Output, answer: &Value) -> Result<(), CliError> {
    let answers = items(answer, "/answers");
    let applied = answers
        .iter()
        .filter(|a| at(a, "/status") == "applied")
        .count();
    out.line(&format!(
        "{} on {} {}{}: {applied} of {} instances applied it",
        at(answer, "/action"),
        at(answer, "/kind"),
        at(answer, "/name"),
        if answer.get("persisted").and_then(Value::as_bool) == Some(true) {
            " (persisted)"
        } else {
            ""
        },
        answers.len()
    ))?;
    let mut table = Table::new(["INSTANCE", "STATUS", "DETAIL"]);
    for a in answers {
        let status = at(a, "/status");
        let detail = match status.as_str() {
            "applied" => {
                let result = a.get("result").unwrap_or(&Value::Null);
                ["/state", "/status"]
                    .iter()
                    .find_map(|p| result.pointer(p).and_then(Value::as_str))
                    .map_or_else(|| "-".to_owned(), |s| format!("now {s}"))
            }
            "refused" => at(a, "/reason"),
            "no_answer" => "no answer before the deadline (it may still apply it)".to_owned(),
            _ => "-".to_owned(),
        };
        table.row(vec![
            at(a, "/instance").into(),
            Cell::state(status),
            detail.into(),
        ]);
    }
    out.table(&table, "no instance was live")
}

fn print_overrides(out: &Output, list: &Value) -> Result<(), CliError> {
    let now = now_ms();
    let mut table = Table::new(["KIND", "NAME", "SLOT", "COMMAND", "BY", "SENT"]);
    for o in items(list, "/overrides") {
        table.row(vec![
            at(o, "/kind").into(),
            at(o, "/name").into(),
            at(o, "/slot").into(),
            at(o, "/command").into(),
            at(o, "/actor").into(),
            ago_at(o, "/sent_at_ms", now).into(),
        ]);
    }
    out.table(&table, "no overrides")
}

/// One instance's view of a component in a word: its state or status, else its occupancy
/// (`3/8`), refusals or entries.
fn instance_summary(s: &Value) -> String {
    if let Some(state) = s
        .get("state")
        .or_else(|| s.get("status"))
        .filter(|v| !v.is_null())
    {
        return text(Some(state));
    }
    if let Some(on) = s.get("enabled").and_then(Value::as_bool) {
        return if on { "on" } else { "off" }.to_owned();
    }
    if let (Some(active), Some(max)) = (s.get("active"), s.get("max_concurrent")) {
        return format!("{}/{}", text(Some(active)), text(Some(max)));
    }
    if let Some(rejected) = s.get("rejected_total") {
        return format!("{} refused", text(Some(rejected)));
    }
    if let Some(total) = s.pointer("/stats/total") {
        return format!("{} entries", text(Some(total)));
    }
    "-".to_owned()
}

fn print_resilience(out: &Output, view: &Value) -> Result<(), CliError> {
    let mut table = Table::new(["KIND", "NAME", "WORST", "INSTANCES"]);
    for c in items(view, "/components") {
        let per_instance: Vec<String> = c
            .get("instances")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(id, s)| format!("{id}={}", instance_summary(s)))
                    .collect()
            })
            .unwrap_or_default();
        let worst = at(c, "/worst");
        table.row(vec![
            at(c, "/kind").into(),
            at(c, "/name").into(),
            Cell::styled(worst.clone(), state_style(&worst)),
            per_instance.join(" ").into(),
        ]);
    }
    out.line(&format!(
        "fleet {}: {} instances",
        at(view, "/fleet"),
        items(view, "/instances").len()
    ))?;
    out.table(&table, "no components")
}
