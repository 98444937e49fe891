//! `palisade show` and `palisade send`: any component of any kind on this instance — the way
//! to timeouts, retries, hedges and fallbacks, which have no group of their own.

use clap::Args as ClapArgs;
use serde_json::Value;

use super::{Ctx, named_items, print_snapshot};
use crate::error::CliError;
use crate::output::{Cell, Output, Style, Table, state_style};
use crate::params::{self, assignments};

/// Arguments of `palisade show`.
#[derive(Debug, ClapArgs)]
pub struct ShowArgs {
    /// The component kind: `timeout`, `retry`, `hedge`, `fallback`, `circuit_breaker`, … (its
    /// JSON name, its admin path or a short name).
    kind: String,
    /// One component's name; without it, every component of the kind.
    name: Option<String>,
}

/// Arguments of `palisade send`.
#[derive(Debug, ClapArgs)]
pub struct SendArgs {
    /// The component kind (as for `show`).
    kind: String,
    /// The component's name.
    name: String,
    /// The action (`set_deadline`, `set_budget`, `disable`, …; `-` works for `_`).
    action: String,
    /// The command's other fields (`deadline=2s`, `ratio=0.1`); values are JSON when they
    /// parse as JSON, strings otherwise; dotted keys nest.
    #[arg(value_name = "KEY=VALUE")]
    pairs: Vec<String>,
}

/// Runs `palisade show KIND [NAME]`.
pub async fn show(ctx: &Ctx, args: ShowArgs) -> Result<(), CliError> {
    let kind = params::kind(&args.kind)?;
    match args.name {
        Some(name) => {
            let one = ctx.one(kind.path, &name).await?;
            ctx.show(&one, |out, v| {
                print_snapshot(out, &format!("{} {name}", kind.json), &v["snapshot"])
            })
        }
        None => {
            let list = ctx.list(kind.path).await?;
            ctx.show(&list, print_list)
        }
    }
}

/// Every component of a list: its name and its state or status, if it has one.
fn print_list(out: &Output, list: &Value) -> Result<(), CliError> {
    let mut table = Table::new(["NAME", "STATE"]);
    for (name, snapshot) in named_items(list) {
        let state = snapshot
            .get("state")
            .or_else(|| snapshot.get("status"))
            .or_else(|| snapshot.get("enabled"))
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| "-".into());
        let style = state_style(&state);
        table.row(vec![
            Cell::styled(name, Style::Plain),
            Cell::styled(state, style),
        ]);
    }
    out.table(&table, "none")
}

/// Runs `palisade send KIND NAME ACTION [KEY=VALUE…]`.
pub async fn send(ctx: &Ctx, args: SendArgs) -> Result<(), CliError> {
    let kind = params::kind(&args.kind)?;
    let fields = assignments(&args.pairs)?;
    if fields.contains_key("action") {
        return Err(CliError::usage(
            "the action is the third argument; do not give action= as well",
        ));
    }
    let answer = ctx
        .command(
            kind.path,
            &args.name,
            &params::action(&args.action),
            Value::Object(fields),
        )
        .await?;
    ctx.show(&answer, |out, v| {
        print_snapshot(out, &format!("{} {}", kind.json, args.name), &v["result"])
    })
}
