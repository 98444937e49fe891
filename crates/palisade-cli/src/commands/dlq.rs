//! `palisade dlq`: dead-letter queues, their entries, and retry, discard, purge (§2.4 and §2.5
//! of the operations guide).

use clap::Subcommand;
use serde_json::{Map, Value, json};

use super::{Ctx, named_items, print_snapshot, segments};
use crate::confirm::confirm;
use crate::error::CliError;
use crate::output::{Cell, Output, Table, ago_at, at, counts, duration_at, items, now_ms, num};

/// The admin path of dead-letter queues.
const PATH: &str = "dlq";

/// The server's largest page of entries.
const MAX_PAGE: u64 = 1000;

/// Arguments of `palisade dlq`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

/// Which entries: the filters of the entries route and of `retry` / `discard`.
#[derive(Debug, Default, clap::Args)]
struct Filter {
    /// Only entries whose latest failure is of this kind (`timeout`, `rate_limited`,
    /// `unavailable`, `server_error`, `client_error`, `other`).
    #[arg(long)]
    kind: Option<String>,
    /// Only entries in this state (`scheduled`, `leased`, `parked`, `quarantined`).
    #[arg(long)]
    state: Option<String>,
    /// Only entries of this operation (a tool name such as `weather_forecast`).
    #[arg(long)]
    operation: Option<String>,
}

impl Filter {
    /// The filters given, as `(name, value)` (the same names in the query string and in
    /// commands).
    fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("kind", &self.kind),
            ("state", &self.state),
            ("operation", &self.operation),
        ]
        .into_iter()
        .filter_map(|(key, value)| {
            let v = value.as_deref().map(str::trim).filter(|v| !v.is_empty())?;
            Some((key, v.to_owned()))
        })
        .collect()
    }

    /// The filters given, as a command's fields.
    fn fields(&self) -> Map<String, Value> {
        self.pairs()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::from(v)))
            .collect()
    }

    fn describe(&self) -> String {
        let pairs = self.pairs();
        if pairs.is_empty() {
            return "every entry".to_owned();
        }
        let parts: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("the entries with {}", parts.join(", "))
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Every queue: entries by state, threshold level, oldest entry (the default).
    List,
    /// A queue's entries (filtered, a page at a time), or one entry in full with its payload
    /// and history.
    Show {
        /// The queue.
        queue: String,
        /// One entry's id.
        id: Option<u64>,
        #[command(flatten)]
        filter: Filter,
        /// Entries per page (1 to 1000; the server's default is 50).
        #[arg(long)]
        limit: Option<u64>,
        /// The page after this entry id (the `next` of the previous page).
        #[arg(long)]
        after: Option<u64>,
    },
    /// Make entries due now: one (`--id`), those matching the filters, or all; `--max`
    /// retries at most that many, oldest first.
    Retry {
        /// The queue.
        queue: String,
        /// One entry's id.
        #[arg(long, conflicts_with_all = ["kind", "state", "operation", "max"])]
        id: Option<u64>,
        #[command(flatten)]
        filter: Filter,
        /// At most this many entries, oldest first.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        max: Option<u64>,
    },
    /// Remove one entry by id, or every entry matching the filters (asks first).
    Discard {
        /// The queue.
        queue: String,
        /// The entry's id.
        #[arg(conflicts_with_all = ["kind", "state", "operation"])]
        id: Option<u64>,
        #[command(flatten)]
        filter: Filter,
    },
    /// Remove every entry of the queue (asks first).
    Purge {
        /// The queue.
        queue: String,
    },
    /// Fresh counts: entries by state and kind, oldest entry, level, lifetime counters.
    Stats {
        /// The queue.
        queue: String,
    },
}

/// Runs `palisade dlq …`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    match args.cmd.unwrap_or(Cmd::List) {
        Cmd::List => {
            let list = ctx.list(PATH).await?;
            ctx.show(&list, print_queues)
        }
        Cmd::Show {
            queue,
            id: Some(id),
            ..
        } => {
            let id = id.to_string();
            let entry = ctx
                .client
                .get(&["admin", PATH, &queue, "entries", &id], &[])
                .await?;
            ctx.show(&entry, |out, v| {
                print_snapshot(out, &format!("dead letter {id} of queue {queue}"), v)
            })
        }
        Cmd::Show {
            queue,
            id: None,
            filter,
            limit,
            after,
        } => {
            let mut query = filter.pairs();
            if let Some(limit) = limit {
                query.push(("limit", limit.to_string()));
            }
            if let Some(after) = after {
                query.push(("after", after.to_string()));
            }
            let page = ctx.client.get(&entries_path(&queue), &query).await?;
            ctx.show(&page, |out, v| print_entries(out, &queue, v))
        }
        Cmd::Retry {
            queue,
            id,
            filter,
            max,
        } => match (id, max) {
            (Some(id), _) => {
                let answer = ctx
                    .command(PATH, &queue, "retry", json!({ "id": id }))
                    .await?;
                ctx.show(&answer, |out, v| print_retry(out, &queue, &v["result"]))
            }
            (None, Some(max)) => retry_at_most(ctx, &queue, &filter, max).await,
            (None, None) => {
                let answer = ctx
                    .command(PATH, &queue, "retry", Value::Object(filter.fields()))
                    .await?;
                ctx.show(&answer, |out, v| print_retry(out, &queue, &v["result"]))
            }
        },
        Cmd::Discard { queue, id, filter } => {
            let fields = match id {
                Some(id) => json!({ "id": id }),
                None => {
                    let fields = filter.fields();
                    if fields.is_empty() {
                        return Err(CliError::usage(format!(
                            "give an entry id or a filter (--kind, --state, --operation); to \
                             remove every entry, use `palisade dlq purge {queue}`"
                        )));
                    }
                    confirm(
                        &format!("Discard {} of queue {queue}", filter.describe()),
                        ctx.yes,
                    )?;
                    Value::Object(fields)
                }
            };
            let answer = ctx.command(PATH, &queue, "discard", fields).await?;
            ctx.show(&answer, |out, v| {
                out.line(&format!(
                    "queue {queue}: {} discarded",
                    plural(num(v, "/result/discarded").unwrap_or(0), "entry", "entries")
                ))
            })
        }
        Cmd::Purge { queue } => {
            confirm(&format!("Purge every entry of queue {queue}"), ctx.yes)?;
            let answer = ctx.command(PATH, &queue, "purge", Value::Null).await?;
            ctx.show(&answer, |out, v| {
                out.line(&format!(
                    "queue {queue}: {} purged",
                    plural(num(v, "/result/purged").unwrap_or(0), "entry", "entries")
                ))
            })
        }
        Cmd::Stats { queue } => {
            let answer = ctx.command(PATH, &queue, "stats", Value::Null).await?;
            ctx.show(&answer, |out, v| {
                print_snapshot(out, &format!("queue {queue}"), &v["result"])
            })
        }
    }
}

/// `1 entry`, `3 entries`.
fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `retry --max N`: the oldest N retryable entries matching the filter, one by one (the
/// server's `retry` takes an id or a filter, not a count).
async fn retry_at_most(ctx: &Ctx, queue: &str, filter: &Filter, max: u64) -> Result<(), CliError> {
    let mut ids = Vec::new();
    let mut after: Option<u64> = None;
    while (ids.len() as u64) < max {
        let mut query = filter.pairs();
        query.push(("limit", max.min(MAX_PAGE).to_string()));
        if let Some(after) = after {
            query.push(("after", after.to_string()));
        }
        let page = ctx.client.get(&entries_path(queue), &query).await?;
        for entry in items(&page, "/entries") {
            // Leased entries are being replayed now; quarantined ones need a look first.
            let state = at(entry, "/state");
            let retryable = state == "scheduled" || state == "parked";
            match num(entry, "/id") {
                Some(id) if retryable && (ids.len() as u64) < max => ids.push(id),
                _ => {}
            }
        }
        match num(&page, "/next") {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let (mut retried, mut failed) = (0u64, 0u64);
    let mut refusals = Vec::new();
    for id in &ids {
        match ctx.command(PATH, queue, "retry", json!({ "id": id })).await {
            Ok(answer) => {
                retried += num(&answer, "/result/retried").unwrap_or(0);
                failed += num(&answer, "/result/failed").unwrap_or(0);
            }
            // Taken by a worker meanwhile, or gone: counted, as the server's filter retry does.
            Err(CliError::Refused { message, .. }) => {
                failed += 1;
                refusals.push(json!({ "id": id, "message": message }));
            }
            Err(e) => return Err(e),
        }
    }
    let result = json!({ "retried": retried, "failed": failed, "ids": ids, "refusals": refusals });
    ctx.show(&result, |out, v| {
        print_retry(out, queue, v)?;
        for r in items(v, "/refusals") {
            out.line(&format!("  entry {}: {}", at(r, "/id"), at(r, "/message")))?;
        }
        Ok(())
    })
}

fn print_retry(out: &Output, queue: &str, result: &Value) -> Result<(), CliError> {
    out.line(&format!(
        "queue {queue}: {} retried (due now), {} could not be",
        at(result, "/retried"),
        at(result, "/failed")
    ))
}

fn print_queues(out: &Output, list: &Value) -> Result<(), CliError> {
    out.table(&table(named_items(list)), "no dead-letter queues")
}

/// The table of queues (`status` shows it too).
pub fn table<'a>(items: impl IntoIterator<Item = (String, &'a Value)>) -> Table {
    let now = now_ms();
    let mut table = Table::new([
        "QUEUE", "BACKEND", "TOTAL", "BY STATE", "LEVEL", "OLDEST", "COUNTED",
    ]);
    for (name, s) in items {
        let stats = s.get("stats").filter(|v| v.is_object());
        let (total, by_state, level, oldest, counted) = match stats {
            Some(st) => (
                at(st, "/total"),
                counts(st.get("by_state")),
                Cell::state(at(st, "/level")),
                duration_at(st, "/oldest_age_ms"),
                ago_at(st, "/now_ms", now),
            ),
            None => (
                "-".into(),
                "-".into(),
                Cell::from("-"),
                "-".into(),
                "not yet".into(),
            ),
        };
        table.row(vec![
            name.into(),
            at(s, "/backend").into(),
            total.into(),
            by_state.into(),
            level,
            oldest.into(),
            counted.into(),
        ]);
    }
    table
}

fn print_entries(out: &Output, queue: &str, page: &Value) -> Result<(), CliError> {
    let now = now_ms();
    let mut table = Table::new([
        "ID",
        "STATE",
        "KIND",
        "OPERATION",
        "ATTEMPTS",
        "FIRST FAILED",
        "NEXT ATTEMPT",
        "ERROR",
    ]);
    for e in items(page, "/entries") {
        let state = at(e, "/state");
        table.row(vec![
            at(e, "/id").into(),
            Cell::styled(
                state.clone(),
                match state.as_str() {
                    "parked" | "quarantined" => crate::output::Style::Warn,
                    _ => crate::output::Style::Plain,
                },
            ),
            at(e, "/kind").into(),
            at(e, "/operation").into(),
            at(e, "/attempts").into(),
            ago_at(e, "/first_failed_ms", now).into(),
            ago_at(e, "/next_attempt_ms", now).into(),
            shorten(&at(e, "/error"), 80).into(),
        ]);
    }
    out.table(&table, &format!("no entries in queue {queue} match"))?;
    if let Some(next) = num(page, "/next") {
        out.line(&out.paint(
            &format!("more: palisade dlq show {queue} --after {next}"),
            crate::output::Style::Dim,
        ))?;
    }
    Ok(())
}

/// `text` cut to `max` characters, with `…`.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    }
}

/// The segments of a queue's entries route.
fn entries_path(queue: &str) -> Vec<&str> {
    let mut s = segments(PATH, Some(queue));
    s.push("entries");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_describe_themselves() {
        let f = Filter {
            kind: Some("timeout".into()),
            state: None,
            operation: Some(" ".into()),
        };
        assert_eq!(f.describe(), "the entries with kind=timeout");
        assert_eq!(Filter::default().describe(), "every entry");
        assert_eq!(entries_path("q"), ["admin", "dlq", "q", "entries"]);
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(plural(1, "entry", "entries"), "1 entry");
    }
}
