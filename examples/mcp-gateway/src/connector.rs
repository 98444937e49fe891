//! Connectors: where a tool call goes. HTTP services, and stdio MCP servers run as supervised
//! child processes whose tools are listed at every start.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use palisade::dlq::Failure;
use palisade::health::{ProcessBuilder, ProcessSupervisor};
use parking_lot::Mutex;
use rmcp::ServiceExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock, ErrorCode, JsonObject, MetaObject,
    RequestMetaObject, Tool,
};
use rmcp::service::{RoleClient, RunningService, ServiceError};
use serde_json::Value;
use tracing::{Instrument as _, Span};

use crate::config::{ToolConfig, ToolHints};
use crate::replay::{IDEMPOTENCY_HEADER, IDEMPOTENCY_META, ReplayPolicy};

/// Longest upstream error text kept in a tool error or a dead-letter entry.
const MAX_ERROR_TEXT: usize = 512;
/// How long a child's MCP handshake and tool listing may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connector call did not produce a result ([`palisade_mcp`'s](palisade::mcp::CallError)).
pub use palisade::mcp::CallError;

/// The `tools/call` of `tool` to an MCP upstream; `key`, the call's idempotency key, and the
/// current span's W3C trace context (`traceparent`, when traces are exported) go in `_meta`
/// (stdio and remote connectors alike).
pub(crate) fn mcp_call_params(
    tool: &str,
    args: &JsonObject,
    key: Option<&str>,
) -> CallToolRequestParams {
    let mut params =
        CallToolRequestParams::new(Cow::Owned(tool.to_owned())).with_arguments(args.clone());
    let mut meta = JsonObject::new();
    if let Some(key) = key {
        meta.insert(IDEMPOTENCY_META.to_owned(), Value::from(key));
    }
    crate::telemetry::inject_meta(&mut meta);
    if !meta.is_empty() {
        params.meta = Some(RequestMetaObject(MetaObject(meta)));
    }
    params
}

/// The span of one `tools/call` of `tool` to the MCP upstream of `connector` (kind client;
/// a child of the call's span): `mcp.method.name`, `gen_ai.tool.name`,
/// `gen_ai.operation.name`, `network.transport` (`pipe` for stdio, `tcp`), `server.address`
/// and `server.port` when remote, `palisade.connector`; [`mcp_outcome`] adds how it ended.
pub(crate) fn mcp_client_span(
    connector: &str,
    tool: &str,
    transport: &str,
    server: Option<(&str, u16)>,
) -> Span {
    tracing::debug_span!(
        "tools/call",
        otel.name = %format_args!("tools/call {tool}"),
        otel.kind = "client",
        mcp.method.name = "tools/call",
        gen_ai.tool.name = tool,
        gen_ai.operation.name = "execute_tool",
        network.transport = transport,
        server.address = server.map(|s| s.0),
        server.port = server.map(|s| s.1),
        palisade.connector = connector,
        error.type = tracing::field::Empty,
        rpc.response.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    )
}

/// Runs one upstream attempt in its `span`. Dropped before it ends (the gateway's timeout or
/// a shutdown stopped waiting), the span records `error.type` `cancelled`.
pub(crate) async fn attempt<T>(span: &Span, attempt: impl std::future::Future<Output = T>) -> T {
    /// Records the cancellation unless disarmed.
    struct Unanswered(Option<Span>);
    impl Drop for Unanswered {
        fn drop(&mut self) {
            if let Some(span) = self.0.take().filter(|s| !s.is_disabled()) {
                record_error(
                    &span,
                    "cancelled",
                    "the gateway stopped waiting for the answer (its timeout, or a shutdown)",
                );
            }
        }
    }
    let mut unanswered = Unanswered(Some(span.clone()));
    let output = attempt.instrument(span.clone()).await;
    unanswered.0 = None;
    output
}

/// Records on an upstream call's span that it failed: `error.type` and the error status with
/// `description`.
pub(crate) fn record_error(span: &Span, error_type: &str, description: &str) {
    span.record("error.type", error_type);
    span.record("otel.status_description", description);
}

/// How an MCP upstream's answer to `tools/call` ends its span: a tool error is `tool_error`;
/// a JSON-RPC error its code (also `rpc.response.status_code`); a broken session the failure's
/// kind. The answer as a call result.
pub(crate) fn mcp_outcome(
    span: &Span,
    connector: &str,
    answer: Result<CallToolResult, ServiceError>,
    broken: impl FnOnce(&ServiceError) -> CallError,
) -> Result<CallToolResult, CallError> {
    match answer {
        Ok(result) => {
            if result.is_error == Some(true) {
                record_error(span, "tool_error", "the tool answered an error");
            }
            Ok(result)
        }
        Err(ServiceError::McpError(e)) => {
            let code = e.code.0.to_string();
            span.record("rpc.response.status_code", code.as_str());
            record_error(span, &code, &e.message);
            Err(mcp_error(connector, &e))
        }
        Err(e) => {
            let error = broken(&e);
            let kind = match &error {
                CallError::Failed(f) | CallError::Lost(f) => f.kind.as_str(),
                _ => "client_error",
            };
            record_error(span, kind, &error.to_string());
            Err(error)
        }
    }
}

/// A JSON-RPC error an MCP upstream answered: bad input (invalid params, unknown method) is
/// the caller's to fix; anything else is the server's failure.
pub(crate) fn mcp_error(connector: &str, e: &rmcp::ErrorData) -> CallError {
    if e.code == ErrorCode::INVALID_PARAMS || e.code == ErrorCode::METHOD_NOT_FOUND {
        CallError::Rejected(format!("{connector}: {}", clip(&e.message)))
    } else {
        CallError::Failed(Failure::server_error(format!(
            "{connector}: the server answered error {}: {}",
            e.code.0,
            clip(&e.message)
        )))
    }
}

/// `text`, cut to [`MAX_ERROR_TEXT`] bytes (at a character boundary).
pub(crate) fn clip(text: &str) -> String {
    if text.len() <= MAX_ERROR_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_ERROR_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The tool calls of one connector, HTTP or stdio.
#[derive(Debug)]
pub enum Backend {
    /// An HTTP service.
    Http(HttpBackend),
    /// A stdio MCP server in a child process.
    Stdio(StdioBackend),
    /// A remote MCP server over streamable HTTP.
    Remote(crate::remote::RemoteBackend),
}

impl Backend {
    /// The connector's tools, by their names at the connector.
    pub fn tools(&self) -> Vec<Tool> {
        match self {
            Backend::Http(h) => h.tools.clone(),
            Backend::Stdio(s) => s.tools(),
            Backend::Remote(r) => r.tools(),
        }
    }

    /// The upstream name of the tool clients call `served` (`{connector}{separator}{tool}`,
    /// see [`names`](crate::names)), if the connector has it; a stdio server is asked again
    /// when the name is unknown (its list may have changed since the last start).
    /// Borrowed from `served` when the upstream name is the tail of it (no allocation on the
    /// call path for the usual, portable names).
    pub async fn resolve<'a>(
        &self,
        served: &'a str,
        connector: &str,
        separator: &str,
    ) -> Option<Cow<'a, str>> {
        let tail = served
            .get(connector.len() + separator.len()..)
            .unwrap_or_default();
        let find = |tools: &[Tool]| {
            tools
                .iter()
                .find(|t| crate::names::is_served_as(served, connector, separator, &t.name))
                .map(|t| {
                    if t.name == tail {
                        Cow::Borrowed(tail)
                    } else {
                        Cow::Owned(t.name.to_string())
                    }
                })
        };
        match self {
            Backend::Http(h) => find(&h.tools),
            Backend::Stdio(s) => {
                if let Some(found) = find(&s.slot.lock().tools) {
                    return Some(found);
                }
                s.relist().await;
                find(&s.slot.lock().tools)
            }
            Backend::Remote(r) => {
                if let Some(found) = r.find_tool(find) {
                    return Some(found);
                }
                r.relist().await;
                r.find_tool(find)
            }
        }
    }

    /// Whether `tool`'s MCP annotations say read-only or idempotent (HTTP: from the config;
    /// stdio and MCP: as the server lists them). Read in place: nothing is copied.
    pub fn idempotent(&self, tool: &str) -> bool {
        let find = |tools: &[Tool]| {
            tools
                .iter()
                .find(|t| t.name == tool)
                .and_then(|t| t.annotations.as_ref())
                .is_some_and(|a| a.read_only_hint == Some(true) || a.idempotent_hint == Some(true))
        };
        match self {
            Backend::Http(h) => find(&h.tools),
            Backend::Stdio(s) => find(&s.slot.lock().tools),
            Backend::Remote(r) => r.find_tool(find),
        }
    }

    /// The replay policy `tool`'s MCP annotations give (HTTP: from the config; stdio: as the
    /// server lists them). Read in place: nothing is copied on the call path.
    pub fn default_replay(&self, tool: &str) -> ReplayPolicy {
        let find = |tools: &[Tool]| {
            ReplayPolicy::from_annotations(
                tools
                    .iter()
                    .find(|t| t.name == tool)
                    .and_then(|t| t.annotations.as_ref()),
            )
        };
        match self {
            Backend::Http(h) => find(&h.tools),
            Backend::Stdio(s) => find(&s.slot.lock().tools),
            Backend::Remote(r) => r.find_tool(find),
        }
    }

    /// Calls `tool` with `args`; `key`, the call's idempotency key, goes along (HTTP header
    /// `Idempotency-Key`, or `_meta` for an MCP server).
    pub async fn call(
        &self,
        tool: &str,
        args: &JsonObject,
        key: Option<&str>,
    ) -> Result<CallToolResult, CallError> {
        match self {
            Backend::Http(h) => h.call(tool, args, key).await,
            Backend::Stdio(s) => s.call(tool, args, key).await,
            Backend::Remote(r) => r.call(tool, args, key).await,
        }
    }
}

/// An HTTP connector: `POST {base}/tools/{tool}` with the arguments as a JSON object.
#[derive(Debug)]
pub struct HttpBackend {
    name: String,
    base: String,
    /// `base` without credentials, host and port: what its spans show.
    public_base: String,
    host: String,
    port: u16,
    client: reqwest::Client,
    tools: Vec<Tool>,
    /// `{base}/tools/{tool}` of each tool, parsed once (not on every call).
    urls: std::collections::HashMap<String, reqwest::Url>,
}

impl HttpBackend {
    /// A connector named `name` for the service at `base` serving `tools`, sending `headers`
    /// with every call.
    pub fn new(
        name: &str,
        base: &str,
        tools: &[ToolConfig],
        headers: &[(String, String)],
    ) -> HttpBackend {
        let tools: Vec<Tool> = tools
            .iter()
            .map(|t| {
                let schema = match &t.input_schema {
                    Some(Value::Object(map)) => map.clone(),
                    _ => {
                        let mut map = JsonObject::new();
                        map.insert("type".into(), Value::from("object"));
                        map
                    }
                };
                let mut tool = Tool::new(t.name.clone(), t.description.clone(), Arc::new(schema));
                tool.annotations = t.annotations.as_ref().map(ToolHints::to_annotations);
                tool
            })
            .collect();
        let base = base.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base).ok();
        let host = parsed
            .as_ref()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let port = parsed
            .as_ref()
            .and_then(reqwest::Url::port_or_known_default)
            .unwrap_or(80);
        let public_base = parsed
            .map(|mut u| {
                // Credentials in the URL stay out of traces.
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.as_str().trim_end_matches('/').to_owned()
            })
            .unwrap_or_else(|| base.clone());
        let urls = tools
            .iter()
            .filter_map(|t| {
                let url = reqwest::Url::parse(&format!("{base}/tools/{}", t.name)).ok()?;
                Some((t.name.to_string(), url))
            })
            .collect();
        HttpBackend {
            name: name.to_owned(),
            base,
            public_base,
            host,
            port,
            urls,
            // Connections are pooled per connector; the gateway's call timeout bounds each call.
            // TCP_NODELAY is reqwest's default; stated here because a request sent in two
            // writes would otherwise wait ~40 ms for the upstream's delayed ACK.
            client: reqwest::Client::builder()
                .tcp_nodelay(true)
                .default_headers(
                    headers
                        .iter()
                        .filter_map(|(k, v)| {
                            Some((
                                reqwest::header::HeaderName::from_bytes(k.as_bytes()).ok()?,
                                reqwest::header::HeaderValue::from_str(v).ok()?,
                            ))
                        })
                        .collect(),
                )
                .build()
                .unwrap_or_default(),
            tools,
        }
    }

    /// One attempt of a call, in a span of its own (kind client; a child of the call's span)
    /// whose W3C trace context the request carries (`traceparent` header): `POST`, with
    /// `http.request.method`, `url.full` (without credentials), `server.address`,
    /// `server.port`, `palisade.connector`, `gen_ai.tool.name`, and
    /// `http.response.status_code`, or `error.type` and the error status.
    async fn call(
        &self,
        tool: &str,
        args: &JsonObject,
        key: Option<&str>,
    ) -> Result<CallToolResult, CallError> {
        let span = tracing::debug_span!(
            "POST",
            otel.kind = "client",
            http.request.method = "POST",
            url.full = %format_args!("{}/tools/{tool}", self.public_base),
            server.address = self.host.as_str(),
            server.port = self.port,
            palisade.connector = self.name.as_str(),
            gen_ai.tool.name = tool,
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        );
        attempt(&span, self.send(tool, args, key)).await
    }

    async fn send(
        &self,
        tool: &str,
        args: &JsonObject,
        key: Option<&str>,
    ) -> Result<CallToolResult, CallError> {
        let mut request = match self.urls.get(tool) {
            Some(url) => self.client.post(url.clone()),
            None => self.client.post(format!("{}/tools/{tool}", self.base)),
        };
        if let Some(key) = key {
            request = request.header(IDEMPOTENCY_HEADER, key);
        }
        for (name, value) in crate::telemetry::outgoing() {
            request = request.header(name, value);
        }
        // For messages only: formatted when a call fails, not on every call.
        let url = || format!("{}/tools/{tool}", self.base);
        let span = Span::current();
        let response = request.json(args).send().await.map_err(|e| {
            let message = format!("{}: cannot reach {}: {e}", self.name, url());
            let failure = if e.is_timeout() {
                Failure::timeout(message)
            } else {
                Failure::unavailable(message)
            };
            record_error(&span, failure.kind.as_str(), &failure.message);
            CallError::Failed(failure)
        })?;
        let status = response.status();
        span.record("http.response.status_code", status.as_u16());
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.text().await.map_err(|e| {
            let failure = Failure::unavailable(format!(
                "{}: the answer from {} broke off: {e}",
                self.name,
                url()
            ));
            record_error(&span, failure.kind.as_str(), &failure.message);
            CallError::Failed(failure)
        })?;
        if status.is_success() {
            // A JSON object is the structured result; its text is the body as it came (what
            // `CallToolResult::structured` would serialize again).
            let structured = match serde_json::from_str::<Value>(&body) {
                Ok(value @ Value::Object(_)) => Some(value),
                _ => None,
            };
            let mut result = CallToolResult::success(vec![ContentBlock::text(body)]);
            result.structured_content = structured;
            return Ok(result);
        }
        let message = format!(
            "{}: {} answered {status}: {}",
            self.name,
            url(),
            clip(&body)
        );
        record_error(&span, status.as_str(), &message);
        Err(match status.as_u16() {
            429 => CallError::Failed(Failure::rate_limited(
                message,
                retry_after.unwrap_or(Duration::from_secs(1)),
            )),
            400..=499 => CallError::Rejected(message),
            _ => CallError::Failed(Failure::server_error(message)),
        })
    }
}

/// The MCP client session with the current child process.
struct Session {
    generation: u64,
    client: Arc<RunningService<RoleClient, ()>>,
}

#[derive(Default)]
struct Slot {
    generation: u64,
    session: Option<Session>,
    /// The tools the last successful listing returned (kept while the child restarts, so
    /// clients still see them and get an "unavailable" error they can act on).
    tools: Vec<Tool>,
}

/// What to do when a stdio server's tool list changes (the gateway tells its MCP clients).
pub type OnToolsChanged = Arc<dyn Fn() + Send + Sync>;

/// A stdio MCP server run by a [`ProcessSupervisor`]: at every start the gateway speaks MCP over
/// the child's stdin/stdout, lists its tools and routes calls to it. The health monitor restarts
/// the child when it exits.
#[derive(Clone)]
pub struct StdioBackend {
    name: String,
    supervisor: ProcessSupervisor,
    slot: Arc<Mutex<Slot>>,
    ready: Arc<tokio::sync::Notify>,
    on_change: Arc<std::sync::OnceLock<OnToolsChanged>>,
}

/// Stores `tools` as the list of `generation` (unless a newer child exists) and calls
/// `on_change` when the names differ from the previous list.
fn store_tools(
    slot: &Mutex<Slot>,
    generation: u64,
    tools: Vec<Tool>,
    on_change: &std::sync::OnceLock<OnToolsChanged>,
) {
    let changed = {
        let mut s = slot.lock();
        if s.generation != generation {
            return;
        }
        let names = |list: &[Tool]| {
            let mut n: Vec<String> = list.iter().map(|t| t.name.to_string()).collect();
            n.sort();
            n
        };
        let changed = names(&s.tools) != names(&tools);
        s.tools = tools;
        changed
    };
    if changed && let Some(notify) = on_change.get() {
        notify();
    }
}

/// The supervisor of `program args` with the extra environment `env`, named `name`, whose
/// process group gets `stop_grace` between `SIGTERM` and `SIGKILL` when stopped.
pub fn process_builder(
    name: &str,
    program: &str,
    args: &[String],
    env: &std::collections::BTreeMap<String, String>,
    stop_grace: Duration,
) -> ProcessBuilder {
    env.iter().fold(
        ProcessSupervisor::builder(name, program)
            .args(args)
            .stop_grace(stop_grace),
        |b, (k, v)| b.env(k, v),
    )
}

impl std::fmt::Debug for StdioBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioBackend")
            .field("name", &self.name)
            .field("supervisor", &self.supervisor)
            .finish_non_exhaustive()
    }
}

impl StdioBackend {
    /// A backend for the stdio server `program args` with `env` (stopped with `stop_grace`
    /// between `SIGTERM` and `SIGKILL`); not started yet.
    pub fn new(
        name: &str,
        program: &str,
        args: &[String],
        env: &std::collections::BTreeMap<String, String>,
        stop_grace: Duration,
    ) -> StdioBackend {
        let slot = Arc::new(Mutex::new(Slot::default()));
        let ready = Arc::new(tokio::sync::Notify::new());
        let on_change: Arc<std::sync::OnceLock<OnToolsChanged>> = Arc::default();
        let on_spawn = {
            let slot = Arc::clone(&slot);
            let ready = Arc::clone(&ready);
            let on_change = Arc::clone(&on_change);
            let name = name.to_owned();
            move |child: &mut tokio::process::Child| {
                let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                    tracing::error!(connector = %name, "child started without stdio pipes");
                    return;
                };
                let generation = {
                    let mut s = slot.lock();
                    s.generation += 1;
                    s.session = None; // the old child is gone: its session too
                    s.generation
                };
                let slot = Arc::clone(&slot);
                let ready = Arc::clone(&ready);
                let on_change = Arc::clone(&on_change);
                let name = name.clone();
                tokio::spawn(async move {
                    let connect = async {
                        let client = ().serve((stdout, stdin)).await.map_err(|e| e.to_string())?;
                        let tools = client.list_all_tools().await.map_err(|e| e.to_string())?;
                        Ok::<_, String>((client, tools))
                    };
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, connect).await {
                        Ok(Ok((client, tools))) => {
                            tracing::info!(connector = %name, tools = tools.len(), "stdio server ready");
                            {
                                let mut s = slot.lock();
                                if s.generation == generation {
                                    s.session = Some(Session {
                                        generation,
                                        client: Arc::new(client),
                                    });
                                }
                            }
                            store_tools(&slot, generation, tools, &on_change);
                            ready.notify_waiters();
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(connector = %name, error = %e, "stdio server handshake failed")
                        }
                        Err(_) => tracing::warn!(
                            connector = %name,
                            "stdio server did not finish its handshake within {HANDSHAKE_TIMEOUT:?}"
                        ),
                    }
                });
            }
        };
        let supervisor = process_builder(name, program, args, env, stop_grace)
            .stdin_piped(true)
            .stdout_piped(true)
            .on_spawn(on_spawn)
            .build();
        StdioBackend {
            name: name.to_owned(),
            supervisor,
            slot,
            ready,
            on_change,
        }
    }

    /// Calls `f` whenever the server's tool list changes (at most one callback; later ones are
    /// ignored).
    pub fn on_tools_changed(&self, f: OnToolsChanged) {
        let _ = self.on_change.set(f);
    }

    /// The supervisor of the child process (a health check and restartable).
    pub fn supervisor(&self) -> &ProcessSupervisor {
        &self.supervisor
    }

    /// Waits up to `limit` for the current child to finish its handshake; false if it did not.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.ready.notified();
            if self.slot.lock().session.is_some() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.slot.lock().session.is_some();
            }
        }
    }

    fn tools(&self) -> Vec<Tool> {
        self.slot.lock().tools.clone()
    }

    fn session(&self) -> Option<(u64, Arc<RunningService<RoleClient, ()>>)> {
        self.slot
            .lock()
            .session
            .as_ref()
            .map(|s| (s.generation, Arc::clone(&s.client)))
    }

    /// Lists the tools of the running child again.
    pub async fn relist(&self) {
        let Some((generation, client)) = self.session() else {
            return;
        };
        match client.list_all_tools().await {
            Ok(tools) => store_tools(&self.slot, generation, tools, &self.on_change),
            Err(e) => tracing::warn!(connector = %self.name, error = %e, "re-listing tools failed"),
        }
    }

    async fn call(
        &self,
        tool: &str,
        args: &JsonObject,
        key: Option<&str>,
    ) -> Result<CallToolResult, CallError> {
        let Some((_, client)) = self.session() else {
            return Err(CallError::Failed(Failure::unavailable(format!(
                "{}: the stdio server is not running (starting or restarting)",
                self.name
            ))));
        };
        let span = mcp_client_span(&self.name, tool, "pipe", None);
        let answer = attempt(&span, async {
            client.call_tool(mcp_call_params(tool, args, key)).await
        })
        .await;
        mcp_outcome(&span, &self.name, answer, |e| {
            CallError::Lost(Failure::unavailable(format!(
                "{}: the stdio server went away during the call: {}",
                self.name,
                clip(&e.to_string())
            )))
        })
    }
}
