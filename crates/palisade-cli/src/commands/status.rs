//! `palisade status`: the whole service on one screen, from `GET /admin/resilience`: health,
//! breakers not closed, saturated partitions, limiters, dead letters, troubled health
//! components and crash loops, fault injectors switched on.

use serde_json::Value;

use super::{Ctx, breakers, bulkheads, dlq, faults, health, limits};
use crate::error::CliError;
use crate::output::{Cell, Output, Style, Table, at, duration_at, items, now_ms, num};

/// Runs `palisade status`.
pub async fn run(ctx: &Ctx) -> Result<(), CliError> {
    let doc = ctx.client.get(&["admin", "resilience"], &[]).await?;
    ctx.show(&doc, |out, doc| print(out, ctx.client.base_text(), doc))
}

/// The `(name, snapshot)` pairs of one kind in the resilience document.
fn group<'a>(doc: &'a Value, kind: &str) -> Vec<(String, &'a Value)> {
    items(doc, &format!("/components/{kind}"))
        .iter()
        .map(|c| (at(c, "/name"), c.get("snapshot").unwrap_or(&Value::Null)))
        .collect()
}

/// `1 queue`, `3 queues`.
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn section(out: &Output, title: &str, summary: &str) -> Result<(), CliError> {
    out.line(&format!("{} {}", out.paint(title, Style::Bold), summary))
}

fn indented(out: &Output, table: &Table) -> Result<(), CliError> {
    out.table_indented(table, "  ")
}

fn print(out: &Output, base: &str, doc: &Value) -> Result<(), CliError> {
    let now = now_ms();
    out.line(&format!(
        "{} {} · {} components",
        out.paint("palisade", Style::Bold),
        base,
        at(doc, "/total")
    ))?;

    // Health.
    match doc.get("health").filter(|h| h.is_object()) {
        Some(h) => {
            let counts: Vec<String> = [
                ("healthy", "/summary/healthy"),
                ("degraded", "/summary/degraded"),
                ("unhealthy", "/summary/unhealthy"),
                ("not checked", "/summary/unknown"),
                ("crash looping", "/summary/crash_looping"),
            ]
            .iter()
            .filter_map(|(word, ptr)| {
                num(h, ptr)
                    .filter(|n| *n > 0)
                    .map(|n| format!("{n} {word}"))
            })
            .collect();
            section(
                out,
                "Health:",
                &format!(
                    "{} · {} components{}{}",
                    health::verdict(out, h),
                    at(h, "/summary/total"),
                    if counts.is_empty() { "" } else { ": " },
                    counts.join(", ")
                ),
            )?;
        }
        None => section(out, "Health:", "no health monitor attached")?,
    }
    let troubled: Vec<(String, &Value)> = group(doc, "health")
        .into_iter()
        .filter(|(_, s)| health::status_word(s) != "healthy")
        .collect();
    if !troubled.is_empty() {
        indented(out, &health::table(troubled))?;
    }

    // Breakers not closed.
    let all = group(doc, "circuit_breaker");
    let open: Vec<(String, &Value)> = all
        .iter()
        .filter(|(_, s)| at(s, "/state") != "closed")
        .cloned()
        .collect();
    if open.is_empty() {
        section(out, "Breakers:", &format!("all {} closed", all.len()))?;
    } else {
        section(
            out,
            "Breakers:",
            &format!("{} of {} not closed", open.len(), all.len()),
        )?;
        let mut table = Table::new(["NAME", "STATE", "RETRY IN", "LAST TRANSITION"]);
        for (name, s) in open {
            table.row(vec![
                name.into(),
                Cell::state(at(s, "/state")),
                duration_at(s, "/retry_after_ms").into(),
                breakers::transition(s, now).into(),
            ]);
        }
        indented(out, &table)?;
    }

    // Saturated partitions.
    let all = group(doc, "bulkhead");
    let full: Vec<(String, &Value)> = all
        .iter()
        .filter(|(_, s)| bulkheads::saturated(s))
        .cloned()
        .collect();
    if full.is_empty() {
        section(
            out,
            "Partitions:",
            &format!("none of {} saturated", all.len()),
        )?;
    } else {
        section(
            out,
            "Partitions:",
            &format!("{} of {} saturated", full.len(), all.len()),
        )?;
        indented(out, &bulkheads::table(full))?;
    }

    // Limiters.
    let all = group(doc, "rate_limiter");
    let rejected: u64 = all
        .iter()
        .map(|(_, s)| num(s, "/rejected_total").unwrap_or(0))
        .sum();
    section(
        out,
        "Rate limiters:",
        &format!("{}, {rejected} requests refused in all", all.len()),
    )?;
    if !all.is_empty() {
        indented(out, &limits::table(all))?;
    }

    // Dead letters.
    let all = group(doc, "dead_letter_queue");
    let entries: u64 = all
        .iter()
        .map(|(_, s)| num(s, "/stats/total").unwrap_or(0))
        .sum();
    section(
        out,
        "Dead letters:",
        &format!(
            "{entries} in {} (as last counted)",
            plural(all.len(), "queue", "queues")
        ),
    )?;
    if !all.is_empty() {
        indented(out, &dlq::table(all))?;
    }

    // Fault injectors switched on.
    let all = group(doc, "fault_injector");
    let on: Vec<(String, &Value)> = all
        .iter()
        .filter(|(_, s)| faults::enabled(s))
        .cloned()
        .collect();
    if on.is_empty() {
        section(
            out,
            "Fault injectors:",
            &format!("none of {} on", all.len()),
        )?;
    } else {
        section(
            out,
            "Fault injectors:",
            &format!("{} of {} ON", on.len(), all.len()),
        )?;
        indented(out, &faults::table(on))?;
    }
    Ok(())
}
