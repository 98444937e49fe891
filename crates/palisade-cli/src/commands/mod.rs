//! One module per command group, each with its clap arguments and its `run`; what they share
//! is here: the context and the helpers that print a server answer.

pub mod breakers;
pub mod bulkheads;
pub mod completions;
pub mod component;
pub mod dlq;
pub mod events;
pub mod faults;
pub mod fleet;
pub mod health;
pub mod limits;
pub mod status;

use serde_json::{Value, json};

use crate::client::Client;
use crate::error::CliError;
use crate::output::{Cell, Output, Style, state_style};

/// What every command runs with.
#[derive(Debug)]
pub struct Ctx {
    /// The admin API.
    pub client: Client,
    /// Where and how to print.
    pub out: Output,
    /// `--yes`: destructive commands go ahead without asking.
    pub yes: bool,
}

impl Ctx {
    /// Prints `value` as JSON with `--json`, else through `human`.
    pub fn show(
        &self,
        value: &Value,
        human: impl FnOnce(&Output, &Value) -> Result<(), CliError>,
    ) -> Result<(), CliError> {
        if self.out.json() {
            self.out.print_json(value)
        } else {
            human(&self.out, value)
        }
    }

    /// `POST /admin/<path>/<name>` with `{"action": action, ...fields}`: the admin API's answer
    /// (`{"kind", "name", "action", "result"}`).
    pub async fn command(
        &self,
        path: &str,
        name: &str,
        action: &str,
        fields: Value,
    ) -> Result<Value, CliError> {
        let mut body = json!({ "action": action });
        if let (Some(body), Value::Object(fields)) = (body.as_object_mut(), fields) {
            body.extend(fields);
        }
        self.client.post(&segments(path, Some(name)), &body).await
    }

    /// `GET /admin/<path>`: a kind's list (`{"kind", "count", "items": [{"name", "snapshot"}]}`).
    pub async fn list(&self, path: &str) -> Result<Value, CliError> {
        self.client.get(&segments(path, None), &[]).await
    }

    /// `GET /admin/<path>/<name>`: one component (`{"kind", "name", "snapshot"}`).
    pub async fn one(&self, path: &str, name: &str) -> Result<Value, CliError> {
        self.client.get(&segments(path, Some(name)), &[]).await
    }
}

/// `admin`, the segments of `path` (`health/components`), then `name`.
pub fn segments<'a>(path: &'a str, name: Option<&'a str>) -> Vec<&'a str> {
    std::iter::once("admin")
        .chain(path.split('/'))
        .chain(name)
        .collect()
}

/// A component's snapshot as aligned `field: value` lines (state and status words coloured).
pub fn print_snapshot(out: &Output, title: &str, snapshot: &Value) -> Result<(), CliError> {
    out.heading(title)?;
    let now = crate::output::now_ms();
    let fields: Vec<(String, Cell)> = crate::output::flatten(snapshot)
        .into_iter()
        .map(|(k, v)| {
            let v = annotate(&k, v, now);
            let leaf = k.rsplit('.').next().unwrap_or(&k);
            let style = match leaf {
                "state" | "status" | "level" | "to" | "from" => state_style(&v),
                _ if v == "-" => Style::Dim,
                _ => Style::Plain,
            };
            (k, Cell::styled(v, style))
        })
        .collect();
    out.fields(&fields)
}

/// Milliseconds said for people too: a field ending in `_ms` holds a moment (ms since the
/// Unix epoch, `1796670639085 (12 s ago)`) or a length of time (`60000 (60 s)`).
fn annotate(key: &str, value: String, now: u64) -> String {
    /// 2001-09-09 in ms since the Unix epoch: larger values are moments, not lengths.
    const EPOCH_LIKE: u64 = 1_000_000_000_000;
    match value.parse::<u64>() {
        Ok(ms) if key.ends_with("_ms") && ms >= EPOCH_LIKE => {
            format!("{value} ({})", crate::output::ago(ms, now))
        }
        Ok(ms) if key.ends_with("_ms") && ms >= 1_000 => {
            format!("{value} ({})", crate::output::duration_ms(ms))
        }
        _ => value,
    }
}

/// `name` (in a kind's list) with its snapshot: `(name, snapshot)` for each item.
pub fn named_items(list: &Value) -> Vec<(String, &Value)> {
    crate::output::items(list, "/items")
        .iter()
        .map(|item| {
            (
                crate::output::at(item, "/name"),
                item.get("snapshot").unwrap_or(&Value::Null),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_are_annotated() {
        assert_eq!(annotate("open_wait_ms", "60000".into(), 0), "60000 (60 s)");
        assert_eq!(
            annotate("at_unix_ms", "1796670639085".into(), 1_796_670_651_085),
            "1796670639085 (12 s ago)"
        );
        assert_eq!(annotate("max_wait_ms", "250".into(), 0), "250");
        assert_eq!(annotate("total", "60000".into(), 0), "60000");
        assert_eq!(annotate("next_attempt_ms", "-".into(), 0), "-");
    }

    #[test]
    fn paths_split_into_segments() {
        assert_eq!(
            segments("health/components", Some("a/b")),
            ["admin", "health", "components", "a/b"]
        );
        assert_eq!(segments("dlq", None), ["admin", "dlq"]);
    }
}
