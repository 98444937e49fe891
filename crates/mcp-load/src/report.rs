//! What a run measured: a table for people, JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::Percentiles;

/// The figures of one run (JSON with `--json`, the same field names).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// The MCP endpoint.
    pub url: String,
    /// The tool called.
    pub tool: String,
    /// MCP sessions.
    pub sessions: usize,
    /// Calls in flight per session.
    pub concurrency: usize,
    /// Measured calls (answered or failed).
    pub calls: u64,
    /// Calls answered without error.
    pub ok: u64,
    /// Failed calls by kind (`timeout`, `transport`, `jsonrpc:<code>`, `tool_error:<error>`).
    pub errors: BTreeMap<String, u64>,
    /// The message of the first failure of each kind.
    pub error_samples: BTreeMap<String, String>,
    /// How long the measured calls took, in seconds.
    pub elapsed_s: f64,
    /// Measured calls per second.
    pub calls_per_sec: f64,
    /// Latency of every measured call, in microseconds.
    pub latency_us: Percentiles,
}

impl Report {
    /// Failed calls, all kinds together.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The report as an aligned text table.
    pub fn table(&self) -> String {
        let l = &self.latency_us;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} tool {} - {} session(s) x {} in flight",
            self.url, self.tool, self.sessions, self.concurrency
        );
        let _ = writeln!(
            out,
            "{:>10} {:>10} {:>10} {:>10} {:>12}",
            "calls", "ok", "errors", "elapsed s", "calls/s"
        );
        let _ = writeln!(
            out,
            "{:>10} {:>10} {:>10} {:>10.2} {:>12.1}",
            self.calls,
            self.ok,
            self.failed(),
            self.elapsed_s,
            self.calls_per_sec
        );
        let _ = writeln!(
            out,
            "{:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "latency", "mean", "p50", "p90", "p99", "p99.9", "max"
        );
        let _ = writeln!(
            out,
            "{:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "(µs)",
            format!("{:.0}", l.mean),
            format!("{:.0}", l.p50),
            format!("{:.0}", l.p90),
            format!("{:.0}", l.p99),
            format!("{:.0}", l.p999),
            format!("{:.0}", l.max)
        );
        if !self.errors.is_empty() {
            let _ = writeln!(out, "errors by kind:");
            for (kind, n) in &self.errors {
                let sample = self.error_samples.get(kind).map_or("", String::as_str);
                let _ = writeln!(out, "{n:>10}  {kind}  (first: {sample})");
            }
        }
        out
    }
}
