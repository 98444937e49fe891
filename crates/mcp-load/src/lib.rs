//! # mcp-load
//!
//! A load generator for any MCP server over streamable HTTP, on rmcp's client: `S` sessions ×
//! `C` calls in flight, a fixed count of calls or a duration, one tool with fixed or templated
//! arguments (`{i}` becomes the call number). It reports calls per second, latency percentiles
//! (p50, p90, p99, p99.9, max) and failed calls by kind, as a table or as JSON.
//!
//! ```text
//! mcp-load http://127.0.0.1:8080/mcp --list-tools
//! mcp-load http://127.0.0.1:8080/mcp --tool weather_forecast --args '{"city": "c{i}"}' \
//!     --sessions 2 --concurrency 16 --duration 10s --warmup 200
//! mcp-load http://127.0.0.1:8080/mcp --tool notes_echo --args '{"text": "{i}"}' --calls 10000 --json
//! ```
//!
//! Failed calls are counted by kind, never fatal: `tool_error:<error>` (a tool result with
//! `isError: true`; `<error>` is its `structuredContent.error`, such as the gateway's
//! `rate_limited`), `jsonrpc:<code>`, `timeout` (past `--timeout`), `transport`, `other`.
//! The run itself fails only on invalid flags or a session that cannot be opened.
//!
//! Connections are kept alive between calls (as browsers and the TypeScript SDK do);
//! `--new-connection-per-call` opens one per call instead, as rmcp's own client does.
//!
//! The library does the same from code ([`run`] with a [`LoadConfig`]); the gateway benchmark
//! (`cargo bench -p mcp-gateway --bench gateway`) uses it.

mod keepalive;
mod report;
mod run;
mod stats;
mod template;

pub use keepalive::KeepAliveClient;
pub use report::Report;
pub use run::{LoadConfig, Stop, list_tools, run};
pub use stats::Percentiles;
pub use template::{ArgsTemplate, CALL_NUMBER};

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The tool arguments are not a JSON object.
    #[error("invalid --args: {0}")]
    Args(String),
    /// An MCP session could not be opened.
    #[error("cannot open an MCP session: {0}")]
    Session(String),
}
