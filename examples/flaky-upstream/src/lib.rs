//! # flaky-upstream
//!
//! An upstream that fails on command, for exercising Palisade (and the `mcp-gateway` example)
//! against real processes. Two modes:
//!
//! **HTTP tool server** (the default): `POST /tools/{tool}` with a JSON object of arguments
//! answers `200 {"tool", "arguments", "pid", "call"}`, or — with probability `failure_rate`,
//! after `latency_ms` — the configured error `status`. Its behaviour changes while it runs:
//!
//! ```text
//! flaky-upstream --port 8081 &
//! curl -s localhost:8081/control                                   # behaviour and call counts
//! curl -s -X POST localhost:8081/control -d '{"failure_rate": 1}'  # every call fails (503)
//! curl -s -X POST localhost:8081/control -d '{"failure_rate": 0, "latency_ms": 2000}'
//! curl -s -X POST localhost:8081/control/crash                     # exit(1)
//! curl -s localhost:8081/health                                    # 503 while failure_rate is 1
//! ```
//!
//! **streamable-HTTP MCP server** (`--mcp`): the same tools as the stdio server (below) at
//! `http://127.0.0.1:<port>/mcp`, for benchmarks and MCP connectors; it prints
//! `flaky-upstream MCP endpoint http://127.0.0.1:<port>/mcp` once it accepts connections.
//!
//! **stdio MCP server** (`--stdio`): tools `echo`, `add`, `pid`, `echo_json` (the HTTP mode's
//! answer) and `crash` (which exits the process), over newline-delimited JSON-RPC on stdin/stdout; `--crash-at-start` exits with
//! status 2 before serving, like a server with a broken config; `--tools-file PATH` adds one
//! echo tool per line of the file, read at start (so the list can change between starts).
//!
//! Flags: `--port N` (HTTP and `--mcp`; 0 picks one), `--failure-rate F` (0–1), `--latency-ms N`,
//! `--status N` (400–599, default 503), `--stdio`, `--crash-at-start`. The HTTP mode prints
//! `flaky-upstream listening on http://127.0.0.1:<port>` on stdout once it accepts connections.
#![allow(clippy::print_stdout)] // an example program talks to its user

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::Listener;
use palisade_admin::NoDelayListener;
use parking_lot::Mutex;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Exit status of `--crash-at-start`.
pub const CRASH_AT_START_STATUS: u8 = 2;
/// Exit status of the stdio `crash` tool and of `POST /control/crash`.
pub const CRASH_STATUS: i32 = 3;

/// How the HTTP tool server answers; changed at runtime through `POST /control`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Behaviour {
    /// Probability (0–1) that a call fails with `status`.
    pub failure_rate: f64,
    /// Delay before every answer, in milliseconds.
    pub latency_ms: u64,
    /// Status of a failed call (400–599).
    pub status: u16,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            failure_rate: 0.0,
            latency_ms: 0,
            status: 503,
        }
    }
}

/// A partial update of [`Behaviour`]: the body of `POST /control`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BehaviourUpdate {
    /// New failure rate (0–1).
    pub failure_rate: Option<f64>,
    /// New latency in milliseconds (at most 60 000).
    pub latency_ms: Option<u64>,
    /// New failure status (400–599).
    pub status: Option<u16>,
}

impl Behaviour {
    /// Applies `update`, or names the first invalid field and changes nothing.
    pub fn apply(&mut self, update: &BehaviourUpdate) -> Result<(), String> {
        let mut next = self.clone();
        if let Some(rate) = update.failure_rate {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("failure_rate must be within 0..=1, got {rate}"));
            }
            next.failure_rate = rate;
        }
        if let Some(ms) = update.latency_ms {
            if ms > 60_000 {
                return Err(format!("latency_ms must be at most 60000, got {ms}"));
            }
            next.latency_ms = ms;
        }
        if let Some(status) = update.status {
            if !(400..=599).contains(&status) {
                return Err(format!("status must be within 400..=599, got {status}"));
            }
            next.status = status;
        }
        *self = next;
        Ok(())
    }
}

/// What the process serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// The HTTP tool server (`POST /tools/{tool}`), steered through `/control`.
    #[default]
    Http,
    /// An MCP server over stdio.
    Stdio,
    /// An MCP server over streamable HTTP (`/mcp`).
    Mcp,
}

/// Command-line options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// What to serve.
    pub mode: Mode,
    /// Exit with [`CRASH_AT_START_STATUS`] before serving.
    pub crash_at_start: bool,
    /// stdio: a file naming extra tools, one per line, read at start (each echoes `text`).
    pub tools_file: Option<String>,
    /// HTTP port (0 picks a free one).
    pub port: u16,
    /// The initial behaviour.
    pub behaviour: Behaviour,
}

impl Options {
    /// Parses the flags listed in the crate documentation; the error names the bad flag.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut opts = Options::default();
        let mut update = BehaviourUpdate::default();
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
            match flag.as_str() {
                "--stdio" => opts.mode = Mode::Stdio,
                "--http" => opts.mode = Mode::Http,
                "--mcp" => opts.mode = Mode::Mcp,
                "--crash-at-start" => opts.crash_at_start = true,
                "--tools-file" => opts.tools_file = Some(value("--tools-file")?),
                "--port" => opts.port = parse_flag("--port", &value("--port")?)?,
                "--failure-rate" => {
                    update.failure_rate =
                        Some(parse_flag("--failure-rate", &value("--failure-rate")?)?)
                }
                "--latency-ms" => {
                    update.latency_ms = Some(parse_flag("--latency-ms", &value("--latency-ms")?)?)
                }
                "--status" => update.status = Some(parse_flag("--status", &value("--status")?)?),
                other => return Err(format!("unknown flag {other:?} (see --help)")),
            }
        }
        opts.behaviour.apply(&update)?;
        Ok(opts)
    }
}

fn parse_flag<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| format!("{flag}: cannot parse {value:?}: {e}"))
}

const USAGE: &str = "usage: flaky-upstream [--port N] [--failure-rate F] [--latency-ms N] [--status N]\n       flaky-upstream --mcp [--port N]\n       flaky-upstream --stdio [--crash-at-start] [--tools-file PATH]";

/// Runs the program with `args` (without the program name) and returns its exit status.
pub fn main_with_args(args: impl IntoIterator<Item = String>) -> ExitCode {
    let args: Vec<String> = args.into_iter().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let opts = match Options::parse(args) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("flaky-upstream: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    if opts.crash_at_start {
        eprintln!("flaky-upstream: crashing at start, as asked (--crash-at-start)");
        return ExitCode::from(CRASH_AT_START_STATUS);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flaky-upstream: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match opts.mode {
            Mode::Stdio => serve_stdio(opts.tools_file.as_deref()).await,
            Mode::Http => serve_http(opts.port, opts.behaviour).await,
            Mode::Mcp => serve_mcp(opts.port).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flaky-upstream: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP tool server

/// The HTTP server's shared state.
#[derive(Debug, Default)]
pub struct Control {
    behaviour: Mutex<Behaviour>,
    ok: AtomicU64,
    failed: AtomicU64,
    /// The last calls that carried an `Idempotency-Key`: `{tool, key, ok}`, oldest first.
    keyed: Mutex<std::collections::VecDeque<Value>>,
}

/// How many keyed calls `GET /control` reports.
const KEYED_CALLS_KEPT: usize = 64;

impl Control {
    /// A control starting with `behaviour`.
    pub fn new(behaviour: Behaviour) -> Arc<Control> {
        Arc::new(Control {
            behaviour: Mutex::new(behaviour),
            ..Control::default()
        })
    }

    fn report(&self) -> Value {
        json!({
            "behaviour": *self.behaviour.lock(),
            "calls": {
                "ok": self.ok.load(Ordering::Relaxed),
                "failed": self.failed.load(Ordering::Relaxed),
            },
            "pid": std::process::id(),
            "idempotency_keys": *self.keyed.lock(),
        })
    }

    fn record_key(&self, tool: &str, headers: &HeaderMap, ok: bool) {
        let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) else {
            return;
        };
        let mut keyed = self.keyed.lock();
        if keyed.len() == KEYED_CALLS_KEPT {
            keyed.pop_front();
        }
        keyed.push_back(json!({"tool": tool, "key": key, "ok": ok}));
    }
}

/// The HTTP tool server's routes over `control`.
pub fn router(control: Arc<Control>) -> axum::Router {
    axum::Router::new()
        .route("/tools/{tool}", post(call_tool))
        .route("/control", get(get_control).post(set_control))
        .route("/control/crash", post(crash))
        .route("/health", get(health))
        .with_state(control)
}

async fn serve_http(port: u16, behaviour: Behaviour) -> Result<(), String> {
    let (listener, local) = listen(port).await?;
    println!("flaky-upstream listening on http://{local}");
    axum::serve(listener, router(Control::new(behaviour)))
        .await
        .map_err(|e| format!("server failed: {e}"))
}

/// A loopback listener on `port` (0 picks one) whose connections have `TCP_NODELAY`.
async fn listen(port: u16) -> Result<(NoDelayListener, SocketAddr), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = palisade_admin::bind_nodelay(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    Ok((listener, local))
}

async fn call_tool(
    State(control): State<Arc<Control>>,
    Path(tool): Path<String>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Response {
    let behaviour = control.behaviour.lock().clone();
    if behaviour.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(behaviour.latency_ms)).await;
    }
    let arguments = body.map(|Json(v)| v).unwrap_or(Value::Null);
    if behaviour.failure_rate > 0.0 && fastrand::f64() < behaviour.failure_rate {
        control.record_key(&tool, &headers, false);
        let n = control.failed.fetch_add(1, Ordering::Relaxed) + 1;
        let status =
            StatusCode::from_u16(behaviour.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut response = (
            status,
            Json(json!({"error": "injected failure", "status": status.as_u16(), "failed": n})),
        )
            .into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        return response;
    }
    control.record_key(&tool, &headers, true);
    let call = control.ok.fetch_add(1, Ordering::Relaxed) + 1;
    Json(json!({
        "tool": tool,
        "arguments": arguments,
        "pid": std::process::id(),
        "call": call,
    }))
    .into_response()
}

async fn get_control(State(control): State<Arc<Control>>) -> Json<Value> {
    Json(control.report())
}

async fn set_control(State(control): State<Arc<Control>>, body: axum::body::Bytes) -> Response {
    let update: BehaviourUpdate = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "malformed_control", "message": e.to_string()})),
            )
                .into_response();
        }
    };
    let applied = control.behaviour.lock().apply(&update);
    match applied {
        Ok(()) => Json(control.report()).into_response(),
        Err(message) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "invalid_control", "message": message})),
        )
            .into_response(),
    }
}

async fn crash() -> impl IntoResponse {
    tokio::spawn(async {
        // Long enough for the 202 to leave; then die like a crashed server.
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::process::exit(CRASH_STATUS);
    });
    (StatusCode::ACCEPTED, Json(json!({"crashing": true})))
}

async fn health(State(control): State<Arc<Control>>) -> Response {
    if control.behaviour.lock().failure_rate >= 1.0 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "failing", "reason": "failure_rate is 1"})),
        )
            .into_response()
    } else {
        Json(json!({"status": "ok"})).into_response()
    }
}

// ---------------------------------------------------------------------------------------------
// MCP servers (stdio and streamable HTTP)

async fn serve_mcp(port: u16) -> Result<(), String> {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let (listener, local) = listen(port).await?;
    let tools = McpTools::default();
    let service = StreamableHttpService::new(
        move || Ok(tools.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let app = axum::Router::new().nest_service("/mcp", service);
    println!("flaky-upstream MCP endpoint http://{local}/mcp");
    axum::serve(listener, app)
        .await
        .map_err(|e| format!("server failed: {e}"))
}

async fn serve_stdio(tools_file: Option<&str>) -> Result<(), String> {
    let extra = match tools_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --tools-file {path}: {e}"))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        None => Vec::new(),
    };
    let service = McpTools {
        extra,
        ..McpTools::default()
    }
    .serve(rmcp::transport::stdio())
    .await
    .map_err(|e| format!("MCP handshake failed: {e}"))?;
    service
        .waiting()
        .await
        .map_err(|e| format!("MCP session ended with an error: {e}"))?;
    Ok(())
}

/// The `_meta` key under which `echo_json` looks for an idempotency key (the gateway's).
pub const IDEMPOTENCY_META: &str = "palisade/idempotency-key";

/// The MCP server's tools (stdio and streamable HTTP): `echo`, `add`, `pid`, `crash` and
/// `echo_json`, plus `extra` ones that echo `text` (from `--tools-file`, so a test can change
/// the list between starts).
///
/// `echo_json` answers what the HTTP mode answers, `{"tool", "arguments", "pid", "call"}`, as
/// structured content: the gateway benchmark's direct baseline returns the same payload as a
/// call through the gateway to an HTTP upstream.
#[derive(Debug, Clone, Default)]
pub struct McpTools {
    /// Names of the extra echo tools.
    pub extra: Vec<String>,
    /// `echo_json` calls answered, shared by every session of one server.
    pub calls: Arc<AtomicU64>,
}

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

fn tools(extra: &[String]) -> Vec<Tool> {
    let echo_schema = || {
        schema(
            json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
        )
    };
    let read_only = || ToolAnnotations::new().read_only(true);
    let mut all = vec![
        Tool::new("echo", "Returns its `text` argument.", echo_schema()).annotate(read_only()),
        Tool::new(
            "add",
            "Adds the numbers `a` and `b`.",
            schema(
                json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}),
            ),
        )
        .annotate(read_only()),
        Tool::new(
            "pid",
            "Returns this server's process id.",
            schema(json!({"type": "object", "properties": {}})),
        )
        .annotate(read_only()),
        Tool::new(
            "echo_json",
            "Returns `{tool, arguments, pid, call}`, as the HTTP mode does.",
            schema(json!({"type": "object"})),
        ),
        Tool::new(
            "crash",
            "Exits the server process at once (status 3), as a crash would.",
            schema(json!({"type": "object", "properties": {}})),
        ),
    ];
    all.extend(
        extra
            .iter()
            .map(|name| Tool::new(name.clone(), "Returns its `text` argument.", echo_schema())),
    );
    all
}

fn number(args: &JsonObject, name: &str) -> Result<f64, McpError> {
    args.get(name)
        .and_then(Value::as_f64)
        .ok_or_else(|| McpError::invalid_params(format!("`{name}` must be a number"), None))
}

impl ServerHandler for McpTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_server_info(
            Implementation::new("flaky-upstream", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools(&self.extra)))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        // The idempotency key a gateway sends in `_meta` (rmcp moves `_meta` to the context).
        let key = request
            .meta
            .as_ref()
            .and_then(|m| m.get(IDEMPOTENCY_META).cloned())
            .or_else(|| context.meta.get(IDEMPOTENCY_META).cloned());
        let args = request.arguments.unwrap_or_default();
        let name = request.name.as_ref();
        let result = match name {
            _ if name == "echo" || self.extra.iter().any(|t| t == name) => {
                let text = args
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| McpError::invalid_params("`text` must be a string", None))?;
                CallToolResult::success(vec![ContentBlock::text(text)])
            }
            "add" => {
                let sum = number(&args, "a")? + number(&args, "b")?;
                CallToolResult::structured(json!({"sum": sum}))
            }
            "pid" => CallToolResult::structured(json!({"pid": std::process::id()})),
            "echo_json" => CallToolResult::structured(json!({
                "tool": name,
                "arguments": args,
                "pid": std::process::id(),
                "call": self.calls.fetch_add(1, Ordering::Relaxed) + 1,
                "idempotency_key": key,
            })),
            "crash" => {
                eprintln!("flaky-upstream: crashing, as asked (crash tool)");
                std::process::exit(CRASH_STATUS);
            }
            other => {
                return Err(McpError::invalid_params(
                    format!("unknown tool {other:?}"),
                    None,
                ));
            }
        };
        Ok(result.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_bad_ones_are_named() {
        let opts = Options::parse(
            ["--port", "0", "--failure-rate", "0.5", "--status", "500"].map(String::from),
        )
        .unwrap();
        assert_eq!(opts.behaviour.failure_rate, 0.5);
        assert_eq!(opts.behaviour.status, 500);
        let stdio = Options::parse(["--stdio", "--crash-at-start"].map(String::from)).unwrap();
        assert!(stdio.crash_at_start);
        assert_eq!(stdio.mode, Mode::Stdio);
        let mcp = Options::parse(["--mcp", "--port", "7"].map(String::from)).unwrap();
        assert_eq!((mcp.mode, mcp.port), (Mode::Mcp, 7));
        let err = Options::parse(["--failure-rate", "2"].map(String::from)).unwrap_err();
        assert!(err.contains("failure_rate"), "{err}");
        let err = Options::parse(["--port"].map(String::from)).unwrap_err();
        assert!(err.contains("--port needs a value"), "{err}");
        let err = Options::parse(["--bogus"].map(String::from)).unwrap_err();
        assert!(err.contains("--bogus"), "{err}");
    }

    #[test]
    fn an_invalid_update_changes_nothing() {
        let mut b = Behaviour::default();
        let bad = BehaviourUpdate {
            failure_rate: Some(1.0),
            status: Some(200),
            ..Default::default()
        };
        assert!(b.apply(&bad).unwrap_err().contains("status"));
        assert_eq!(b, Behaviour::default());
    }
}
