//! `palisade bulkheads`: partitions, their occupancy, and resizing them (§2.6 of the
//! operations guide).

use clap::Subcommand;
use serde_json::{Value, json};

use super::{Ctx, named_items, print_snapshot};
use crate::error::CliError;
use crate::output::{Cell, Output, Style, Table, at, duration_at, num};

/// The admin path of bulkheads.
const PATH: &str = "bulkheads";

/// Arguments of `palisade bulkheads`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Every partition: slots in use, limit, callers waiting, refusals (the default).
    List,
    /// One partition in full.
    Show {
        /// The partition's name.
        name: String,
    },
    /// Resize a partition while it runs (`set_max_concurrent`); running calls are never
    /// interrupted.
    SetLimit {
        /// The partition's name.
        name: String,
        /// The new number of slots.
        max_concurrent: u32,
    },
}

/// Runs `palisade bulkheads …`.
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
                    &format!("bulkhead {name}"),
                    v.get("snapshot").unwrap_or(&Value::Null),
                )
            })
        }
        Cmd::SetLimit {
            name,
            max_concurrent,
        } => {
            let answer = ctx
                .command(
                    PATH,
                    &name,
                    "set_max_concurrent",
                    json!({ "max_concurrent": max_concurrent }),
                )
                .await?;
            ctx.show(&answer, |out, v| {
                out.line(&format!(
                    "bulkhead {name}: max_concurrent {} (active {}, waiting {})",
                    at(v, "/result/max_concurrent"),
                    at(v, "/result/active"),
                    at(v, "/result/waiting")
                ))
            })
        }
    }
}

/// Whether a partition's snapshot says it is full: every slot taken, or callers waiting.
pub fn saturated(s: &Value) -> bool {
    let active = num(s, "/active").unwrap_or(0);
    let max = num(s, "/max_concurrent").unwrap_or(u64::MAX);
    active >= max || num(s, "/waiting").unwrap_or(0) > 0
}

/// The table of partitions (`status` shows the saturated ones with it).
pub fn table<'a>(items: impl IntoIterator<Item = (String, &'a Value)>) -> Table {
    let mut table = Table::new([
        "NAME", "ACTIVE", "MAX", "WAITING", "TIMEOUTS", "REJECTED", "MAX WAIT", "ADAPTIVE", "",
    ]);
    for (name, s) in items {
        let flag = if saturated(s) {
            Cell::styled("full", Style::Bad)
        } else {
            Cell::from("")
        };
        table.row(vec![
            name.into(),
            at(s, "/active").into(),
            at(s, "/max_concurrent").into(),
            at(s, "/waiting").into(),
            at(s, "/timeouts_total").into(),
            at(s, "/rejected_total").into(),
            duration_at(s, "/max_wait_ms").into(),
            at(s, "/adaptive").into(),
            flag,
        ]);
    }
    table
}

fn print_list(out: &Output, list: &Value) -> Result<(), CliError> {
    out.table(&table(named_items(list)), "no bulkheads")
}
