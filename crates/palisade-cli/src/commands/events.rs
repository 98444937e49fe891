//! `palisade events`: the recent events (state transitions, config changes, admin actions,
//! notices, audit), or `--follow` for the live stream (server-sent events).

use serde_json::Value;

use super::Ctx;
use crate::error::CliError;
use crate::output::{Cell, Output, Style, Table, ago_at, at, items, note, now_ms, state_style};
use crate::params;
use crate::sse::SseParser;

/// Arguments of `palisade events`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep printing events as they happen (the server-sent event stream) until interrupted.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Only events of this component kind (`circuit_breaker`, `breaker`, `dlq`, `health`, …).
    #[arg(long)]
    kind: Option<String>,
    /// Only events of this component (its name).
    #[arg(long)]
    component: Option<String>,
    /// Only events of this type: `state_transition`, `config_changed`, `admin_action`,
    /// `notice`, `audit`.
    #[arg(long = "type", value_name = "TYPE")]
    event_type: Option<String>,
    /// At most this many, the newest (recent events only; the server's default is 100).
    #[arg(long, conflicts_with = "follow")]
    limit: Option<u64>,
    /// Only events after this sequence number (with `--follow`, the kept ones are replayed
    /// first).
    #[arg(long)]
    since_seq: Option<u64>,
}

impl Args {
    fn query(&self) -> Result<Vec<(&'static str, String)>, CliError> {
        let mut q = Vec::new();
        if let Some(kind) = &self.kind {
            q.push(("kind", params::kind(kind)?.json.to_owned()));
        }
        if let Some(c) = &self.component {
            q.push(("component", c.clone()));
        }
        if let Some(t) = &self.event_type {
            q.push(("type", t.clone()));
        }
        if let Some(limit) = self.limit {
            q.push(("limit", limit.to_string()));
        }
        if let Some(seq) = self.since_seq {
            q.push(("since_seq", seq.to_string()));
        }
        Ok(q)
    }
}

/// Runs `palisade events …`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    let query = args.query()?;
    if !args.follow {
        let recent = ctx.client.get(&["admin", "events"], &query).await?;
        return ctx.show(&recent, print_recent);
    }
    let url = ctx.client.url(&["admin", "events", "stream"], &query);
    let mut response = ctx
        .client
        .stream(&["admin", "events", "stream"], &query)
        .await?;
    let mut parser = SseParser::new();
    if !ctx.out.json() {
        note(&format!(
            "following events from {} (Ctrl-C to stop)",
            ctx.client.base_text()
        ));
    }
    loop {
        match response.chunk().await {
            Ok(Some(bytes)) => {
                for event in parser.push(&bytes) {
                    if event.event == "lagged" {
                        let missed = serde_json::from_str::<Value>(&event.data)
                            .ok()
                            .map(|v| at(&v, "/missed"))
                            .unwrap_or_else(|| "some".into());
                        note(&format!(
                            "missed {missed} events: this client read too slowly for the stream"
                        ));
                        continue;
                    }
                    let Ok(e) = serde_json::from_str::<Value>(&event.data) else {
                        note(&format!(
                            "skipped an event that is not JSON: {}",
                            event.data
                        ));
                        continue;
                    };
                    if ctx.out.json() {
                        ctx.out.print_json_line(&e)?;
                    } else {
                        ctx.out.line(&line(&ctx.out, &e, now_ms()))?;
                    }
                }
            }
            Ok(None) => {
                note("the event stream ended (the service stopped or restarted)");
                return Ok(());
            }
            Err(e) => return Err(ctx.client.transport(&e, &url)),
        }
    }
}

/// What happened, in words: `closed → open: 3 consecutive failures`, `alice …: force_open`.
pub fn detail(e: &Value) -> String {
    match e.get("type").and_then(Value::as_str) {
        Some("state_transition") => format!(
            "{} → {}: {}",
            at(e, "/from"),
            at(e, "/to"),
            at(e, "/reason")
        ),
        Some("config_changed") => at(e, "/change"),
        Some("admin_action") => at(e, "/action"),
        Some("notice") => at(e, "/message"),
        Some("audit") => format!("{} by {}", at(e, "/action"), at(e, "/actor")),
        _ => "-".to_owned(),
    }
}

fn type_cell(e: &Value) -> Cell {
    let t = at(e, "/type");
    let style = match t.as_str() {
        "state_transition" => state_style(&at(e, "/to")),
        "audit" | "admin_action" => Style::Bold,
        _ => Style::Plain,
    };
    Cell::styled(t, style)
}

/// One event on one line (the stream).
fn line(out: &Output, e: &Value, now: u64) -> String {
    let t = type_cell(e);
    let pad = 16usize.saturating_sub(t.text.chars().count());
    format!(
        "#{:<6} {:<10} {:<32} {}{} {}",
        at(e, "/seq"),
        ago_at(e, "/at_unix_ms", now),
        format!("{}/{}", at(e, "/component_kind"), at(e, "/component")),
        out.paint(&t.text, t.style),
        " ".repeat(pad),
        detail(e)
    )
}

fn print_recent(out: &Output, recent: &Value) -> Result<(), CliError> {
    let now = now_ms();
    let mut table = Table::new(["SEQ", "WHEN", "COMPONENT", "TYPE", "WHAT"]);
    for e in items(recent, "/events") {
        table.row(vec![
            at(e, "/seq").into(),
            ago_at(e, "/at_unix_ms", now).into(),
            format!("{}/{}", at(e, "/component_kind"), at(e, "/component")).into(),
            type_cell(e),
            detail(e).into(),
        ]);
    }
    out.table(&table, "no events")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn events_read_as_sentences() {
        let t = json!({"type": "state_transition", "from": "closed", "to": "open", "reason": "3 consecutive failures"});
        assert_eq!(detail(&t), "closed → open: 3 consecutive failures");
        let a = json!({"type": "audit", "action": "force_open", "actor": "alice from 127.0.0.1:5"});
        assert_eq!(detail(&a), "force_open by alice from 127.0.0.1:5");
        let e = json!({"seq": 7, "at_unix_ms": 1000, "component_kind": "circuit_breaker",
                       "component": "weather", "type": "admin_action", "action": "reset"});
        let out = Output::new(false, crate::output::ColorChoice::Never);
        let l = line(&out, &e, 13_000);
        assert!(l.starts_with("#7      12 s ago"), "{l}");
        assert!(l.ends_with("admin_action     reset"), "{l}");
    }
}
