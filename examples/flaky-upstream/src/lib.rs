//! # flaky-upstream
//!
//! An upstream that fails on command, for exercising Palisade (and the `mcp-gateway` example)
//! against real processes. Three modes:
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
//! curl -s -X POST localhost:8081/control/crash                     # exit(3)
//! curl -s localhost:8081/health                                    # 503 while failure_rate is 1
//! ```
//!
//! It prints `flaky-upstream listening on http://127.0.0.1:<port>` once it accepts connections.
//! `GET /control` also reports the last calls that carried an `Idempotency-Key`
//! (`idempotency_keys`: `{tool, key, ok}`) or W3C trace context (`traceparents`:
//! `{tool, traceparent}`, from the `traceparent` header; in `--mcp` mode from
//! `params._meta.traceparent`), 64 of each at most, oldest first.
//!
//! **streamable-HTTP MCP server** (`--mcp`): an MCP server at `http://127.0.0.1:<port>/mcp`
//! (rmcp, stateful sessions), for benchmarks and the gateway's MCP connectors. It prints
//! `flaky-upstream MCP endpoint http://127.0.0.1:<port>/mcp` once it accepts connections, and
//! serves, beside `/mcp` on the same port, the HTTP mode's `/control`, `/control/crash` and
//! `/health`:
//!
//! - tools: those of the stdio server (below), plus `get.forecast` and `search docs` (names a
//!   gateway must rename; both answer like `echo_json`; `--no-odd-names` leaves them out), plus
//!   the extra echo tools (`--tools-file`, or `extra_tools` at runtime);
//! - every tool call waits `latency_ms`, then fails with probability `failure_rate` as a
//!   JSON-RPC internal error (code -32603, message `injected failure: ...`; `status` is only in
//!   its `data`), not as a tool result;
//! - a resource `flaky://status` (the behaviour as JSON) and a prompt `greet` (argument `name`;
//!   one user message `Hello, <name>`); `ping` is answered;
//! - `GET /control` adds to the HTTP mode's report `tools` (`{name: {ok, failed}}`: calls
//!   answered and failed on purpose), `extra_tools` and `sessions` (sessions that finished
//!   their handshake, and so get notifications);
//! - `POST /control` also takes `extra_tools` (a list of names), which replaces the extra
//!   echo tools and sends `notifications/tools/list_changed` to every session (each time it is
//!   given); its answer then also carries `notified`, how many sessions were told.
//!
//! ```text
//! flaky-upstream --mcp --port 8082 &
//! curl -s -X POST localhost:8082/control -d '{"failure_rate": 1}'         # tool calls fail
//! curl -s -X POST localhost:8082/control -d '{"extra_tools": ["a", "b"]}' # list_changed
//! ```
//!
//! **stdio MCP server** (`--stdio`): tools `echo`, `add`, `pid`, `echo_json` (the HTTP mode's
//! answer) and `crash` (which exits the process), over newline-delimited JSON-RPC on
//! stdin/stdout; `--crash-at-start` exits with status 2 before serving, like a server with a
//! broken config; `--tools-file PATH` adds one echo tool per line of the file, read at start
//! (so the list can change between starts); `--odd-names` adds `get.forecast` and
//! `search docs`. It never fails on purpose and has no resources or prompts.
//!
//! Flags:
//! - `--mcp`, `--stdio` (or `--http`, the default): the mode;
//! - HTTP and `--mcp`: `--port N` (0 picks one), `--failure-rate F` (0–1), `--latency-ms N`,
//!   `--status N` (400–599, default 503);
//! - MCP modes: `--tools-file PATH`; `--odd-names` / `--no-odd-names` (the odd names are on by
//!   default with `--mcp`, off with `--stdio`);
//! - `--stdio`: `--crash-at-start`.
//!
//! A test of `--mcp` waits for the `MCP endpoint` line, connects its clients, and polls
//! `GET /control` until `sessions` counts them before it changes `extra_tools`: a session that
//! has not finished its handshake is not told.
#![allow(clippy::print_stdout)] // an example program talks to its user

use std::collections::BTreeMap;
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
use parking_lot::{Mutex, RwLock};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestMethod,
    GetPromptRequestParams, GetPromptResponse, GetPromptResult, Implementation, JsonObject,
    ListPromptsRequestMethod, ListPromptsResult, ListResourcesRequestMethod, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, Prompt, PromptArgument, PromptMessage,
    ReadResourceRequestMethod, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    Resource, ResourceContents, Role, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::{NotificationContext, Peer, RequestContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Exit status of `--crash-at-start`.
pub const CRASH_AT_START_STATUS: u8 = 2;
/// Exit status of the stdio `crash` tool and of `POST /control/crash`.
pub const CRASH_STATUS: i32 = 3;

/// How the HTTP tool server (and the `--mcp` server) answers; changed at runtime through
/// `POST /control`.
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
    /// MCP modes: a file naming extra tools, one per line, read at start (each echoes `text`).
    pub tools_file: Option<String>,
    /// MCP modes: serve [`ODD_TOOL_NAMES`] (`--odd-names` / `--no-odd-names`); `None` is the
    /// mode's default, see [`Options::serves_odd_names`].
    pub odd_names: Option<bool>,
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
                "--odd-names" => opts.odd_names = Some(true),
                "--no-odd-names" => opts.odd_names = Some(false),
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

    /// Whether the MCP server serves [`ODD_TOOL_NAMES`]: as asked, else only with `--mcp`.
    pub fn serves_odd_names(&self) -> bool {
        self.odd_names.unwrap_or(self.mode == Mode::Mcp)
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

const USAGE: &str = "\
usage: flaky-upstream [--port N] [--failure-rate F] [--latency-ms N] [--status N]
       flaky-upstream --mcp [--port N] [--failure-rate F] [--latency-ms N] [--status N]
                      [--tools-file PATH] [--no-odd-names]
       flaky-upstream --stdio [--crash-at-start] [--tools-file PATH] [--odd-names]

HTTP mode: POST /tools/{tool}; GET/POST /control, POST /control/crash, GET /health.
--mcp: MCP at /mcp beside the same /control (also {\"extra_tools\": [...]}), /control/crash
and /health; tool calls fail (JSON-RPC error) with probability F after N ms; extra tools
get.forecast and \"search docs\" unless --no-odd-names; resource flaky://status, prompt greet.
--stdio: MCP over stdin/stdout; never fails on purpose; --odd-names adds the odd tools.";

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
            Mode::Stdio => serve_stdio(&opts).await,
            Mode::Http => serve_http(opts.port, opts.behaviour.clone()).await,
            Mode::Mcp => serve_mcp(&opts).await,
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

/// The shared state of the HTTP server and of the `--mcp` server: behaviour and call counts.
#[derive(Debug, Default)]
pub struct Control {
    behaviour: Mutex<Behaviour>,
    ok: AtomicU64,
    failed: AtomicU64,
    /// The last calls that carried an `Idempotency-Key`: `{tool, key, ok}`, oldest first.
    keyed: Mutex<std::collections::VecDeque<Value>>,
    /// The last calls that carried W3C trace context: `{tool, traceparent}`, oldest first.
    traced: Mutex<std::collections::VecDeque<Value>>,
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
            "traceparents": *self.traced.lock(),
        })
    }

    /// Keeps the W3C `traceparent` a call carried (the HTTP mode's header, the `--mcp` mode's
    /// `params._meta.traceparent`), so a test can check that a gateway propagates its trace.
    fn record_traceparent(&self, tool: &str, traceparent: Option<&str>) {
        let Some(traceparent) = traceparent else {
            return;
        };
        let mut traced = self.traced.lock();
        if traced.len() == KEYED_CALLS_KEPT {
            traced.pop_front();
        }
        traced.push_back(json!({"tool": tool, "traceparent": traceparent}));
    }

    /// Keeps a call that carried an idempotency `key` (the HTTP mode's `Idempotency-Key`
    /// header, the `--mcp` mode's [`IDEMPOTENCY_META`]).
    fn record_key(&self, tool: &str, key: Option<&str>, ok: bool) {
        let Some(key) = key else {
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
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
    control.record_traceparent(
        &tool,
        headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()),
    );
    if behaviour.failure_rate > 0.0 && fastrand::f64() < behaviour.failure_rate {
        control.record_key(&tool, key, false);
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
    control.record_key(&tool, key, true);
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

/// The tools `--odd-names` adds (on by default with `--mcp`): names a gateway must rename, one
/// with a dot and one with a space. Both answer like `echo_json`.
pub const ODD_TOOL_NAMES: [&str; 2] = ["get.forecast", "search docs"];
/// The URI of the `--mcp` server's one resource: its behaviour as JSON.
pub const STATUS_RESOURCE: &str = "flaky://status";
/// The name of the `--mcp` server's one prompt: argument `name`, one user message `Hello, <name>`.
pub const GREET_PROMPT: &str = "greet";

/// The built-in tools, whose names extra tools may not take.
const BUILTIN_TOOLS: [&str; 5] = ["echo", "add", "pid", "echo_json", "crash"];
/// The longest tool name `extra_tools` accepts (the MCP spec's limit).
const MAX_TOOL_NAME: usize = 128;
/// How long `POST /control` waits for one session's `notifications/tools/list_changed`.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(2);

async fn serve_mcp(opts: &Options) -> Result<(), String> {
    let extra = read_tools_file(opts.tools_file.as_deref())?;
    let (listener, local) = listen(opts.port).await?;
    let control = Control::new(opts.behaviour.clone());
    let tools = McpTools::streamable(control.clone(), extra, opts.serves_odd_names());
    let app = mcp_router(tools, control);
    println!("flaky-upstream MCP endpoint http://{local}/mcp");
    axum::serve(listener, app)
        .await
        .map_err(|e| format!("server failed: {e}"))
}

/// The `--mcp` routes: the MCP endpoint `/mcp` beside `/control` (GET, POST),
/// `/control/crash` and `/health`, which act as in the HTTP mode.
fn mcp_router(tools: McpTools, control: Arc<Control>) -> axum::Router {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let service = {
        let tools = tools.clone();
        StreamableHttpService::new(
            move || Ok(tools.clone()),
            Arc::new(LocalSessionManager::default()),
            StreamableHttpServerConfig::default(),
        )
    };
    axum::Router::new()
        .route("/control", get(get_mcp_control).post(set_mcp_control))
        .with_state(tools)
        .merge(
            axum::Router::new()
                .route("/control/crash", post(crash))
                .route("/health", get(health))
                .with_state(control),
        )
        .nest_service("/mcp", service)
}

async fn get_mcp_control(State(tools): State<McpTools>) -> Json<Value> {
    Json(tools.report())
}

/// `POST /control` of `--mcp`: the HTTP mode's fields, plus `extra_tools` (a list of names)
/// which replaces the extra echo tools and tells every session the tool list changed.
async fn set_mcp_control(State(tools): State<McpTools>, body: axum::body::Bytes) -> Response {
    let malformed = |message: String| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "malformed_control", "message": message})),
        )
            .into_response()
    };
    let invalid = |message: String| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "invalid_control", "message": message})),
        )
            .into_response()
    };
    let mut fields = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(fields)) => fields,
        Ok(other) => return malformed(format!("expected a JSON object, got {other}")),
        Err(e) => return malformed(e.to_string()),
    };
    let extra = match fields
        .remove("extra_tools")
        .map(serde_json::from_value::<Vec<String>>)
    {
        None => None,
        Some(Ok(names)) => Some(names),
        Some(Err(e)) => return malformed(format!("extra_tools: {e}")),
    };
    let update: BehaviourUpdate = match serde_json::from_value(Value::Object(fields)) {
        Ok(u) => u,
        Err(e) => return malformed(e.to_string()),
    };
    if let Some(names) = &extra
        && let Err(message) = tools.check_extra(names)
    {
        return invalid(message);
    }
    let Some(steering) = tools.shared.steering.as_ref() else {
        return invalid("this server cannot be steered".to_owned());
    };
    if let Err(message) = steering.control.behaviour.lock().apply(&update) {
        return invalid(message);
    }
    let notified = match extra {
        Some(names) => Some(tools.replace_extra(names).await),
        None => None,
    };
    let mut report = tools.report();
    if let Some(n) = notified {
        report["notified"] = json!(n);
    }
    Json(report).into_response()
}

/// The names listed in `--tools-file` (none without it): one per non-blank line.
fn read_tools_file(tools_file: Option<&str>) -> Result<Vec<String>, String> {
    let Some(path) = tools_file else {
        return Ok(Vec::new());
    };
    Ok(std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --tools-file {path}: {e}"))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

async fn serve_stdio(opts: &Options) -> Result<(), String> {
    let extra = read_tools_file(opts.tools_file.as_deref())?;
    let service = McpTools::stdio(extra, opts.serves_odd_names())
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

/// The W3C Trace Context key: the HTTP header of tool calls, and the `params._meta` key of MCP
/// tool calls, that `GET /control` reports (`traceparents`).
pub const TRACEPARENT: &str = "traceparent";

/// The MCP server (stdio and streamable HTTP), one value shared by every session of a server.
///
/// Tools: `echo`, `add`, `pid`, `crash` and `echo_json`; with odd names also
/// [`ODD_TOOL_NAMES`]; and extra ones that echo `text` (from `--tools-file`, and with `--mcp`
/// replaced at runtime by `POST /control {"extra_tools": [...]}`).
///
/// `echo_json` (and the odd-named tools) answer what the HTTP mode answers,
/// `{"tool", "arguments", "pid", "call"}` plus `idempotency_key`, as structured content: the
/// gateway benchmark's direct baseline returns the same payload as a call through the gateway
/// to an HTTP upstream. `call` counts the answers of these tools.
///
/// The streamable-HTTP server ([`McpTools::streamable`]) also obeys its [`Control`]: every
/// tool call waits `latency_ms`, then fails with probability `failure_rate` as a JSON-RPC
/// internal error (not a tool result); calls are counted per tool; it serves the resource
/// [`STATUS_RESOURCE`] and the prompt [`GREET_PROMPT`], and keeps every session's peer so it
/// can send `notifications/tools/list_changed`.
#[derive(Debug, Clone, Default)]
pub struct McpTools {
    shared: Arc<McpShared>,
}

#[derive(Debug, Default)]
struct McpShared {
    /// Names of the extra echo tools.
    extra: RwLock<Vec<String>>,
    /// Whether [`ODD_TOOL_NAMES`] are served.
    odd_names: bool,
    /// Answers of the `echo_json`-like tools (their `call`).
    echo_calls: AtomicU64,
    /// The streamable-HTTP server's control; `None` over stdio.
    steering: Option<Steering>,
}

/// What only the streamable-HTTP server has.
#[derive(Debug)]
struct Steering {
    control: Arc<Control>,
    /// Calls per tool.
    per_tool: Mutex<BTreeMap<String, ToolCalls>>,
    /// The peers of the sessions that sent `notifications/initialized`.
    peers: Mutex<Vec<Peer<RoleServer>>>,
}

/// One tool's calls in the `--mcp` control report.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct ToolCalls {
    /// Answered with a tool result.
    ok: u64,
    /// Failed on purpose (`failure_rate`).
    failed: u64,
}

impl McpTools {
    /// The stdio server: the built-in tools, `extra` echo tools and, with `odd_names`,
    /// [`ODD_TOOL_NAMES`]; no failures, resources or prompts.
    pub fn stdio(extra: Vec<String>, odd_names: bool) -> McpTools {
        McpTools {
            shared: Arc::new(McpShared {
                extra: RwLock::new(extra),
                odd_names,
                ..McpShared::default()
            }),
        }
    }

    /// The streamable-HTTP server, steered by `control` (which `/control` changes).
    pub fn streamable(control: Arc<Control>, extra: Vec<String>, odd_names: bool) -> McpTools {
        McpTools {
            shared: Arc::new(McpShared {
                extra: RwLock::new(extra),
                odd_names,
                echo_calls: AtomicU64::new(0),
                steering: Some(Steering {
                    control,
                    per_tool: Mutex::default(),
                    peers: Mutex::default(),
                }),
            }),
        }
    }

    /// The names of the tools served now, in `tools/list` order.
    pub fn tool_names(&self) -> Vec<String> {
        self.tools()
            .into_iter()
            .map(|t| t.name.into_owned())
            .collect()
    }

    fn tools(&self) -> Vec<Tool> {
        tools(&self.shared.extra.read(), self.shared.odd_names)
    }

    fn is_echo_json(&self, name: &str) -> bool {
        name == "echo_json" || (self.shared.odd_names && ODD_TOOL_NAMES.contains(&name))
    }

    fn is_extra(&self, name: &str) -> bool {
        self.shared.extra.read().iter().any(|t| t == name)
    }

    fn knows(&self, name: &str) -> bool {
        BUILTIN_TOOLS.contains(&name) || self.is_echo_json(name) || self.is_extra(name)
    }

    /// Why `names` cannot be the extra tools, if they cannot: an empty or over-long name, a
    /// built-in or odd one, or one listed twice.
    fn check_extra(&self, names: &[String]) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for name in names {
            if name.is_empty() || name.len() > MAX_TOOL_NAME {
                return Err(format!(
                    "extra_tools: a name must have 1 to {MAX_TOOL_NAME} bytes, got {name:?}"
                ));
            }
            if BUILTIN_TOOLS.contains(&name.as_str()) || self.is_echo_json(name) {
                return Err(format!("extra_tools: {name:?} is a built-in tool"));
            }
            if !seen.insert(name.as_str()) {
                return Err(format!("extra_tools: {name:?} is listed twice"));
            }
        }
        Ok(())
    }

    /// Replaces the extra tools and sends `notifications/tools/list_changed` to every live
    /// session; how many were sent.
    async fn replace_extra(&self, names: Vec<String>) -> usize {
        *self.shared.extra.write() = names;
        let sending: Vec<_> = self
            .live_peers()
            .into_iter()
            .map(|peer| {
                tokio::spawn(async move {
                    matches!(
                        tokio::time::timeout(NOTIFY_TIMEOUT, peer.notify_tool_list_changed()).await,
                        Ok(Ok(()))
                    )
                })
            })
            .collect();
        let mut sent = 0;
        for handle in sending {
            if matches!(handle.await, Ok(true)) {
                sent += 1;
            }
        }
        sent
    }

    /// The peers of the open sessions (forgetting the closed ones).
    fn live_peers(&self) -> Vec<Peer<RoleServer>> {
        let Some(steering) = &self.shared.steering else {
            return Vec::new();
        };
        let mut peers = steering.peers.lock();
        peers.retain(|p| !p.is_transport_closed());
        peers.clone()
    }

    /// Counts a call of `tool` (and its idempotency key, if any).
    fn count(&self, tool: &str, key: Option<&str>, ok: bool) {
        let Some(steering) = &self.shared.steering else {
            return;
        };
        {
            let mut per_tool = steering.per_tool.lock();
            if !per_tool.contains_key(tool) {
                per_tool.insert(tool.to_owned(), ToolCalls::default());
            }
            if let Some(calls) = per_tool.get_mut(tool) {
                if ok {
                    calls.ok += 1;
                } else {
                    calls.failed += 1;
                }
            }
        }
        let total = if ok {
            &steering.control.ok
        } else {
            &steering.control.failed
        };
        total.fetch_add(1, Ordering::Relaxed);
        steering.control.record_key(tool, key, ok);
    }

    /// `GET /control` of `--mcp`: the HTTP mode's report plus `tools` (calls per tool),
    /// `extra_tools` and `sessions` (the open sessions that finished their handshake).
    fn report(&self) -> Value {
        let Some(steering) = &self.shared.steering else {
            return Value::Null;
        };
        let mut report = steering.control.report();
        report["tools"] = json!(*steering.per_tool.lock());
        report["extra_tools"] = json!(*self.shared.extra.read());
        report["sessions"] = json!(self.live_peers().len());
        report
    }

    fn behaviour(&self) -> Option<Behaviour> {
        self.shared
            .steering
            .as_ref()
            .map(|s| s.control.behaviour.lock().clone())
    }
}

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

fn tools(extra: &[String], odd_names: bool) -> Vec<Tool> {
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
    if odd_names {
        all.extend(ODD_TOOL_NAMES.map(|name| {
            Tool::new(
                name,
                "Returns `{tool, arguments, pid, call}`, like `echo_json`; its name needs renaming.",
                schema(json!({"type": "object"})),
            )
        }));
    }
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
        let capabilities = if self.shared.steering.is_some() {
            ServerCapabilities::builder()
                .enable_prompts()
                .enable_resources()
                .enable_tools()
                .enable_tool_list_changed()
                .build()
        } else {
            ServerCapabilities::builder().enable_tools().build()
        };
        ServerConfig::new(capabilities).with_server_info(Implementation::new(
            "flaky-upstream",
            env!("CARGO_PKG_VERSION"),
        ))
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        if let Some(steering) = &self.shared.steering {
            let mut peers = steering.peers.lock();
            peers.retain(|p| !p.is_transport_closed());
            peers.push(context.peer);
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.tools()))
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
        let key_text = key.as_ref().and_then(Value::as_str);
        // The W3C trace context a gateway sends in `_meta` (unprefixed, as the MCP semantic
        // conventions say).
        let traceparent = request
            .meta
            .as_ref()
            .and_then(|m| m.get(TRACEPARENT).cloned())
            .or_else(|| context.meta.get(TRACEPARENT).cloned());
        let args = request.arguments.unwrap_or_default();
        let name = request.name.as_ref();
        if let Some(steering) = &self.shared.steering {
            steering
                .control
                .record_traceparent(name, traceparent.as_ref().and_then(Value::as_str));
        }
        if !self.knows(name) {
            return Err(McpError::invalid_params(
                format!("unknown tool {name:?}"),
                None,
            ));
        }
        if let Some(behaviour) = self.behaviour() {
            if behaviour.latency_ms > 0 {
                tokio::time::sleep(Duration::from_millis(behaviour.latency_ms)).await;
            }
            if behaviour.failure_rate > 0.0 && fastrand::f64() < behaviour.failure_rate {
                self.count(name, key_text, false);
                return Err(McpError::internal_error(
                    format!(
                        "injected failure: flaky-upstream fails {name:?} (failure_rate {})",
                        behaviour.failure_rate
                    ),
                    Some(json!({"injected": true, "tool": name, "status": behaviour.status})),
                ));
            }
        }
        let result = match name {
            _ if name == "echo" || self.is_extra(name) => {
                let text = args
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| McpError::invalid_params("`text` must be a string", None))?;
                CallToolResult::success(vec![ContentBlock::text(text)])
            }
            _ if self.is_echo_json(name) => CallToolResult::structured(json!({
                "tool": name,
                "arguments": args,
                "pid": std::process::id(),
                "call": self.shared.echo_calls.fetch_add(1, Ordering::Relaxed) + 1,
                "idempotency_key": key,
            })),
            "add" => {
                let sum = number(&args, "a")? + number(&args, "b")?;
                CallToolResult::structured(json!({"sum": sum}))
            }
            "pid" => CallToolResult::structured(json!({"pid": std::process::id()})),
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
        self.count(name, key_text, true);
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        if self.shared.steering.is_none() {
            return Err(McpError::method_not_found::<ListResourcesRequestMethod>());
        }
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new(STATUS_RESOURCE, "status")
                .with_description("This server's behaviour (failure_rate, latency_ms, status).")
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let Some(behaviour) = self.behaviour() else {
            return Err(McpError::method_not_found::<ReadResourceRequestMethod>());
        };
        if request.uri != STATUS_RESOURCE {
            return Err(McpError::resource_not_found(
                format!("no resource {:?}", request.uri),
                None,
            ));
        }
        let text = serde_json::to_string(&behaviour)
            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(text, STATUS_RESOURCE).with_mime_type("application/json"),
        ])
        .into())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        if self.shared.steering.is_none() {
            return Err(McpError::method_not_found::<ListPromptsRequestMethod>());
        }
        Ok(ListPromptsResult::with_all_items(vec![Prompt::new(
            GREET_PROMPT,
            Some("Greets `name`."),
            Some(vec![
                PromptArgument::new("name")
                    .with_description("Who to greet.")
                    .with_required(true),
            ]),
        )]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        if self.shared.steering.is_none() {
            return Err(McpError::method_not_found::<GetPromptRequestMethod>());
        }
        if request.name != GREET_PROMPT {
            return Err(McpError::invalid_params(
                format!("unknown prompt {:?}", request.name),
                None,
            ));
        }
        let name = request
            .arguments
            .as_ref()
            .and_then(|args| args.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| McpError::invalid_params("`name` must be a string", None))?;
        Ok(GetPromptResult::new(vec![PromptMessage::new_text(
            Role::User,
            format!("Hello, {name}"),
        )])
        .with_description("A greeting.")
        .into())
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
    fn odd_names_are_on_with_mcp_and_off_with_stdio_unless_asked() {
        let parse = |args: &[&str]| Options::parse(args.iter().map(|a| (*a).to_owned())).unwrap();
        assert!(parse(&["--mcp"]).serves_odd_names());
        assert!(!parse(&["--mcp", "--no-odd-names"]).serves_odd_names());
        assert!(!parse(&["--stdio"]).serves_odd_names());
        assert!(parse(&["--stdio", "--odd-names"]).serves_odd_names());
    }

    #[test]
    fn the_stdio_server_keeps_its_tools_and_capabilities() {
        let stdio = McpTools::stdio(vec!["alpha".to_owned()], false);
        assert_eq!(
            stdio.tool_names(),
            ["echo", "add", "pid", "echo_json", "crash", "alpha"]
        );
        let capabilities = stdio.get_info().capabilities;
        assert_eq!(
            capabilities,
            ServerCapabilities::builder().enable_tools().build()
        );
        let odd = McpTools::stdio(Vec::new(), true);
        assert!(
            odd.tool_names()
                .ends_with(&ODD_TOOL_NAMES.map(String::from))
        );
    }

    #[test]
    fn extra_tool_names_must_be_new_distinct_and_short() {
        let tools = McpTools::streamable(Control::new(Behaviour::default()), Vec::new(), true);
        let check = |names: &[&str]| {
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            tools.check_extra(&names)
        };
        assert!(check(&["a", "b c", "d.e"]).is_ok());
        assert!(check(&[]).is_ok());
        assert!(check(&["echo"]).unwrap_err().contains("built-in"));
        assert!(check(&["search docs"]).unwrap_err().contains("built-in"));
        assert!(check(&["a", "a"]).unwrap_err().contains("twice"));
        assert!(check(&[""]).is_err());
        assert!(check(&[&"x".repeat(129)]).is_err());
        let plain = McpTools::streamable(Control::new(Behaviour::default()), Vec::new(), false);
        assert!(plain.check_extra(&["get.forecast".to_owned()]).is_ok());
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
