//! `palisade limits`: rate limiters, their quotas, and the "429s for a legitimate user" fixes
//! (§2.3 and "Redis down" of the operations guide).

use clap::Subcommand;
use serde_json::{Map, Value, json};

use super::{Ctx, named_items, print_snapshot};
use crate::error::CliError;
use crate::output::{Output, Table, at, text};

/// The admin path of rate limiters.
const PATH: &str = "rate-limiters";

/// Arguments of `palisade limits`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Every rate limiter: backend, quota, admitted and refused requests (the default).
    List,
    /// One rate limiter in full (keys tracked, the Redis backend's health).
    Show {
        /// The limiter's name.
        name: String,
    },
    /// Change the quota for every client (`set_quota`); each client keeps its used share of
    /// the burst.
    SetQuota {
        /// The limiter's name.
        name: String,
        /// Requests per period.
        #[arg(long)]
        rate: u64,
        /// The period: `1s`, `1m`, `1h`, or milliseconds.
        #[arg(long)]
        period: String,
        /// Requests admitted at once from a full bucket (default: the rate).
        #[arg(long)]
        burst: Option<u64>,
    },
    /// Give one client its burst back (`--key`), or every client (memory backend only).
    Reset {
        /// The limiter's name.
        name: String,
        /// The client's key (an IP address, an IPv6 /64 network, `key:<name>`).
        #[arg(long)]
        key: Option<String>,
    },
    /// What a Redis-backed limiter does while Redis is down (`set_failure_policy`).
    SetFailurePolicy {
        /// The limiter's name.
        name: String,
        /// `fail_open`, `fail_closed` or `local_fallback`.
        #[arg(value_parser = ["fail_open", "fail_closed", "local_fallback"])]
        policy: String,
    },
}

/// Runs `palisade limits …`.
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
                    &format!("rate limiter {name}"),
                    v.get("snapshot").unwrap_or(&Value::Null),
                )
            })
        }
        Cmd::SetQuota {
            name,
            rate,
            period,
            burst,
        } => {
            let mut quota = Map::new();
            quota.insert("rate".into(), Value::from(rate));
            quota.insert("period".into(), Value::from(period));
            if let Some(burst) = burst {
                quota.insert("burst".into(), Value::from(burst));
            }
            let answer = ctx
                .command(PATH, &name, "set_quota", json!({ "quota": quota }))
                .await?;
            ctx.show(&answer, |out, v| {
                out.line(&format!(
                    "rate limiter {name}: quota {}",
                    quota_text(v.pointer("/result/quota"))
                ))
            })
        }
        Cmd::Reset { name, key } => {
            let fields = match &key {
                Some(key) => json!({ "key": key }),
                None => Value::Null,
            };
            let answer = ctx.command(PATH, &name, "reset", fields).await?;
            ctx.show(&answer, |out, _| {
                out.line(&match &key {
                    Some(key) => format!("rate limiter {name}: key {key} has its burst back"),
                    None => format!("rate limiter {name}: every key has its burst back"),
                })
            })
        }
        Cmd::SetFailurePolicy { name, policy } => {
            let answer = ctx
                .command(
                    PATH,
                    &name,
                    "set_failure_policy",
                    json!({ "failure_policy": policy }),
                )
                .await?;
            ctx.show(&answer, |out, v| {
                out.line(&format!(
                    "rate limiter {name}: failure policy {} (Redis available: {})",
                    at(v, "/result/redis/failure_policy"),
                    at(v, "/result/redis/available")
                ))
            })
        }
    }
}

/// A quota as `120/60s burst 20`.
pub fn quota_text(quota: Option<&Value>) -> String {
    match quota {
        Some(q) if q.is_object() => format!(
            "{}/{} burst {}",
            at(q, "/rate"),
            at(q, "/period"),
            match q.get("burst") {
                Some(Value::Null) | None => at(q, "/rate"),
                b => text(b),
            }
        ),
        _ => "-".to_owned(),
    }
}

/// The table of limiters (`status` shows it too).
pub fn table<'a>(items: impl IntoIterator<Item = (String, &'a Value)>) -> Table {
    let mut table = Table::new([
        "NAME",
        "BACKEND",
        "QUOTA",
        "PERMITTED",
        "REJECTED",
        "KEYS",
        "REDIS",
    ]);
    for (name, s) in items {
        let redis = match s.get("redis") {
            Some(r) if r.is_object() => format!(
                "{} ({})",
                if r.get("available").and_then(Value::as_bool) == Some(false) {
                    "down"
                } else {
                    "up"
                },
                at(r, "/failure_policy")
            ),
            _ => "-".to_owned(),
        };
        table.row(vec![
            name.into(),
            at(s, "/backend").into(),
            quota_text(s.get("quota")).into(),
            at(s, "/permitted_total").into(),
            at(s, "/rejected_total").into(),
            at(s, "/keys/tracked").into(),
            redis.into(),
        ]);
    }
    table
}

fn print_list(out: &Output, list: &Value) -> Result<(), CliError> {
    out.table(&table(named_items(list)), "no rate limiters")
}
