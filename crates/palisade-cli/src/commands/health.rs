//! `palisade health`: the health monitor, its components, restarts, crash loops and the
//! auto-restart switches (§2.2 and §2.7 of the operations guide).

use clap::Subcommand;
use serde_json::{Value, json};

use super::{Ctx, named_items, print_snapshot, segments};
use crate::error::CliError;
use crate::output::{Cell, Output, Style, Table, ago_at, at, state_style};

/// The admin path of health components.
const PATH: &str = "health/components";

/// Arguments of `palisade health`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The monitor's verdict and every component: status, crash loop, restarts, last check
    /// (the default).
    List,
    /// One component in full.
    Show {
        /// The component's name.
        name: String,
    },
    /// Restart a process component now, whatever its backoff or crash loop.
    Restart {
        /// The component's name.
        name: String,
    },
    /// Take a component out of crash-loop protection: restarts and backoff start over.
    ResetCrashLoop {
        /// The component's name.
        name: String,
    },
    /// Switch auto-restart on or off for one component, or for the whole monitor.
    AutoRestart {
        /// `on` or `off`.
        #[arg(value_enum)]
        switch: Switch,
        /// The component (default: the monitor's global switch).
        name: Option<String>,
    },
    /// Run one component's check now, or every check.
    Check {
        /// The component (default: all of them).
        name: Option<String>,
    },
}

/// Runs `palisade health …`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    match args.cmd.unwrap_or(Cmd::List) {
        Cmd::List => match ctx.client.get(&["admin", "health"], &[]).await {
            Ok(report) => ctx.show(&report, print_report),
            // No monitor attached: the registry's health components, if any.
            Err(CliError::Refused { body, .. })
                if body
                    .as_ref()
                    .and_then(|b| b.get("error"))
                    .and_then(Value::as_str)
                    == Some("no_health_monitor") =>
            {
                let list = ctx.list(PATH).await?;
                ctx.show(&list, |out, v| {
                    out.line("no health monitor is attached to this admin API")?;
                    out.table(&table(named_items(v)), "no health components")
                })
            }
            Err(e) => Err(e),
        },
        Cmd::Show { name } => {
            let one = ctx.one(PATH, &name).await?;
            ctx.show(&one, |out, v| {
                print_snapshot(
                    out,
                    &format!("health component {name}"),
                    v.get("snapshot").unwrap_or(&Value::Null),
                )
            })
        }
        Cmd::Restart { name } => component_command(ctx, &name, "restart", Value::Null).await,
        Cmd::ResetCrashLoop { name } => {
            component_command(ctx, &name, "reset_crash_loop", Value::Null).await
        }
        Cmd::AutoRestart { switch, name } => {
            let enabled = switch == Switch::On;
            match name {
                Some(name) => {
                    component_command(
                        ctx,
                        &name,
                        "set_auto_restart",
                        json!({ "enabled": enabled }),
                    )
                    .await
                }
                None => {
                    let answer = ctx
                        .client
                        .post(
                            &segments("health", None),
                            &json!({ "action": "set_auto_restart", "enabled": enabled }),
                        )
                        .await?;
                    ctx.show(&answer, |out, v| {
                        out.line(&format!(
                            "health monitor: auto-restart {} for every component (each \
                             component's own switch still applies)",
                            on_off(v.pointer("/result/auto_restart"))
                        ))
                    })
                }
            }
        }
        Cmd::Check { name: Some(name) } => {
            component_command(ctx, &name, "check", Value::Null).await
        }
        Cmd::Check { name: None } => {
            let answer = ctx
                .client
                .post(&segments("health", None), &json!({ "action": "check_all" }))
                .await?;
            ctx.show(&answer, |out, v| {
                print_report(out, v.get("result").unwrap_or(&Value::Null))
            })
        }
    }
}

/// A command to one component; prints the component afterwards.
async fn component_command(
    ctx: &Ctx,
    name: &str,
    action: &str,
    fields: Value,
) -> Result<(), CliError> {
    let answer = ctx.command(PATH, name, action, fields).await?;
    ctx.show(&answer, |out, v| {
        let s = v.get("result").unwrap_or(&Value::Null);
        let status = status_word(s);
        out.line(&format!(
            "health component {name}: {action} applied; {} · restarts {} · auto-restart {} · {}",
            out.paint(&status, state_style(&status)),
            at(s, "/restart_count"),
            on_off(s.get("auto_restart")),
            at(s, "/message")
        ))
    })
}

/// `on` / `off` for a boolean.
fn on_off(v: Option<&Value>) -> &'static str {
    match v.and_then(Value::as_bool) {
        Some(true) => "on",
        Some(false) => "off",
        None => "-",
    }
}

/// A component's status word: `crash loop`, its status, or `not checked`.
pub fn status_word(s: &Value) -> String {
    if s.get("crash_loop").and_then(Value::as_bool) == Some(true) {
        return "crash loop".to_owned();
    }
    match s.get("status").and_then(Value::as_str) {
        Some(status) => status.to_owned(),
        None => "not checked".to_owned(),
    }
}

/// The monitor's one-line verdict: `degraded · ready · live · auto-restart on`.
pub fn verdict(out: &Output, report: &Value) -> String {
    let status = at(report, "/status");
    let flag = |ptr: &str, yes: &str, no: &str| match report.pointer(ptr).and_then(Value::as_bool) {
        Some(true) => out.paint(yes, Style::Good),
        Some(false) => out.paint(no, Style::Bad),
        None => "-".to_owned(),
    };
    format!(
        "{} · {} · {} · auto-restart {}",
        out.paint(&status, state_style(&status)),
        flag("/ready", "ready", "not ready"),
        flag("/live", "live", "not live"),
        on_off(report.get("auto_restart"))
    )
}

/// The table of components (`status` shows the troubled ones with it).
pub fn table<'a>(items: impl IntoIterator<Item = (String, &'a Value)>) -> Table {
    let now = crate::output::now_ms();
    let mut table = Table::new([
        "NAME",
        "STATUS",
        "RESTARTS",
        "AUTO-RESTART",
        "CRITICAL",
        "CHECKED",
        "MESSAGE",
    ]);
    for (name, s) in items {
        table.row(vec![
            name.into(),
            Cell::state(status_word(s)),
            at(s, "/restart_count").into(),
            on_off(s.get("auto_restart")).into(),
            at(s, "/critical").into(),
            ago_at(s, "/last_check_ms", now).into(),
            at(s, "/message").into(),
        ]);
    }
    table
}

fn print_report(out: &Output, report: &Value) -> Result<(), CliError> {
    out.line(&format!("health monitor: {}", verdict(out, report)))?;
    let components: Vec<(String, &Value)> = report
        .get("components")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v)).collect())
        .unwrap_or_default();
    out.table(&table(components), "no components")
}
