//! `palisade faults`: fault injectors: switch injected latency, errors or refusals on for a
//! while, and off ("Break things on purpose" in the operations guide).

use clap::Subcommand;
use serde_json::{Map, Value};

use super::{Ctx, named_items, print_snapshot};
use crate::error::CliError;
use crate::output::{Cell, Output, Style, Table, at, duration_at, num};

/// The admin path of fault injectors.
const PATH: &str = "fault-injectors";

/// Arguments of `palisade faults`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Every injector: allowed, on or off, mode, rate, time left, who switched it on (the
    /// default).
    List,
    /// One injector in full.
    Show {
        /// The injector's name.
        name: String,
    },
    /// Switch injection on for `--ttl` (it switches itself off then).
    Enable {
        /// The injector's name.
        name: String,
        /// `error` (a server error, the upstream is not called), `refuse` (the upstream
        /// seems unavailable) or `latency` (the call is delayed).
        #[arg(long, value_parser = ["error", "refuse", "latency"])]
        mode: String,
        /// The share of calls to fault, 0 to 1.
        #[arg(long)]
        rate: f64,
        /// How long until it switches itself off: `30s`, `5m`, or milliseconds.
        #[arg(long)]
        ttl: String,
        /// Mode `latency`: the delay in milliseconds, or the shortest of a range.
        #[arg(long)]
        latency_ms: Option<u64>,
        /// Mode `latency`: the longest delay of a range, in milliseconds.
        #[arg(long)]
        latency_max_ms: Option<u64>,
        /// Mode `refuse`: what refusals tell callers to wait, in milliseconds (default 1000).
        #[arg(long)]
        retry_after_ms: Option<u64>,
    },
    /// Switch injection off now.
    Disable {
        /// The injector's name.
        name: String,
    },
}

/// Runs `palisade faults …`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    match args.cmd.unwrap_or(Cmd::List) {
        Cmd::List => {
            let list = ctx.list(PATH).await?;
            ctx.show(&list, |out, v| {
                out.table(&table(named_items(v)), "no fault injectors")
            })
        }
        Cmd::Show { name } => {
            let one = ctx.one(PATH, &name).await?;
            ctx.show(&one, |out, v| {
                print_snapshot(
                    out,
                    &format!("fault injector {name}"),
                    v.get("snapshot").unwrap_or(&Value::Null),
                )
            })
        }
        Cmd::Enable {
            name,
            mode,
            rate,
            ttl,
            latency_ms,
            latency_max_ms,
            retry_after_ms,
        } => {
            let mut fields = Map::new();
            fields.insert("mode".into(), Value::from(mode));
            fields.insert("rate".into(), Value::from(rate));
            fields.insert("ttl".into(), Value::from(ttl));
            for (key, value) in [
                ("latency_ms", latency_ms),
                ("latency_max_ms", latency_max_ms),
                ("retry_after_ms", retry_after_ms),
            ] {
                if let Some(v) = value {
                    fields.insert(key.into(), Value::from(v));
                }
            }
            let answer = ctx
                .command(PATH, &name, "enable", Value::Object(fields))
                .await?;
            ctx.show(&answer, |out, v| {
                out.line(&format!(
                    "fault injector {name}: {} on {} of calls for {}",
                    at(v, "/result/mode"),
                    at(v, "/result/rate"),
                    duration_at(v, "/result/remaining_ttl_ms"),
                ))
            })
        }
        Cmd::Disable { name } => {
            let answer = ctx.command(PATH, &name, "disable", Value::Null).await?;
            ctx.show(&answer, |out: &Output, _| {
                out.line(&format!("fault injector {name}: off"))
            })
        }
    }
}

/// Whether an injector's snapshot says it is on.
pub fn enabled(s: &Value) -> bool {
    s.get("enabled").and_then(Value::as_bool) == Some(true)
}

/// The table of injectors (`status` shows those switched on).
pub fn table<'a>(items: impl IntoIterator<Item = (String, &'a Value)>) -> Table {
    let mut table = Table::new([
        "NAME",
        "ALLOWED",
        "STATE",
        "MODE",
        "RATE",
        "TIME LEFT",
        "BY",
        "INJECTED",
    ]);
    for (name, s) in items {
        let state = if enabled(s) {
            Cell::styled("on", Style::Bad)
        } else {
            Cell::styled("off", Style::Dim)
        };
        let injected = [
            "/injected_errors_total",
            "/injected_refusals_total",
            "/injected_latency_total",
        ]
        .iter()
        .map(|p| num(s, p).unwrap_or(0))
        .sum::<u64>();
        table.row(vec![
            name.into(),
            at(s, "/allowed").into(),
            state,
            at(s, "/mode").into(),
            at(s, "/rate").into(),
            duration_at(s, "/remaining_ttl_ms").into(),
            at(s, "/enabled_by").into(),
            injected.to_string().into(),
        ]);
    }
    table
}
