//! Remote MCP servers over streamable HTTP (`kind = "mcp"`): the gateway is an MCP client of
//! each (rmcp's), lists its tools, resources and prompts, and routes calls to it.
//!
//! - **Sessions.** One MCP session per upstream, opened on first use and again after it
//!   breaks (connection refused, the upstream gone). When the upstream forgets the session
//!   (HTTP 404 after a restart), rmcp's client re-initializes by itself and resends the call.
//! - **Tool list.** Read at every new session, again when the upstream says it changed
//!   (`notifications/tools/list_changed`, relayed to the gateway's clients), when a client
//!   calls a name the gateway does not know, and at every health check.
//! - **Health.** An MCP `ping` on the session (opening one if needed).
//! - **Credentials.** `Authorization` and other headers from the config, the environment or a
//!   file, read once at start; never in `Debug` output, logs or errors.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use palisade::core::async_trait;
use palisade::dlq::Failure;
use palisade::health::{CheckResult, HealthCheck};
use parking_lot::Mutex;
use rmcp::ServiceExt;
use rmcp::model::{
    CallToolResult, ClientRequest, GetPromptRequestParams, GetPromptResult, JsonObject,
    PingRequest, Prompt, ReadResourceRequestParams, ReadResourceResult, Resource, Tool,
};
use rmcp::service::{NotificationContext, RoleClient, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

use crate::connector::{CallError, OnToolsChanged, clip, mcp_call_params};

/// How long opening a session (initialize and the first listings) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the gateway lists of an upstream.
#[derive(Default)]
struct Lists {
    tools: Vec<Tool>,
    resources: Vec<Resource>,
    prompts: Vec<Prompt>,
}

struct State {
    generation: u64,
    session: Option<(u64, Arc<RunningService<RoleClient, Listener>>)>,
    lists: Lists,
}

/// The client side of a session: hears `list_changed` and re-lists.
#[derive(Clone)]
struct Listener {
    state: Arc<Mutex<State>>,
    on_change: Arc<OnceLock<OnToolsChanged>>,
    name: Arc<str>,
}

impl rmcp::ClientHandler for Listener {
    async fn on_tool_list_changed(&self, context: NotificationContext<RoleClient>) {
        match context.peer.list_all_tools().await {
            Ok(tools) => store_tools(&self.state, &self.on_change, tools),
            Err(e) => {
                tracing::warn!(connector = %self.name, error = %e, "re-listing tools failed")
            }
        }
    }

    async fn on_resource_list_changed(&self, context: NotificationContext<RoleClient>) {
        if let Ok(resources) = context.peer.list_all_resources().await {
            self.state.lock().lists.resources = resources;
        }
    }

    async fn on_prompt_list_changed(&self, context: NotificationContext<RoleClient>) {
        if let Ok(prompts) = context.peer.list_all_prompts().await {
            self.state.lock().lists.prompts = prompts;
        }
    }
}

/// Stores `tools` and calls `on_change` when the names differ from the previous list.
fn store_tools(state: &Mutex<State>, on_change: &OnceLock<OnToolsChanged>, tools: Vec<Tool>) {
    let changed = {
        let mut s = state.lock();
        let names = |list: &[Tool]| {
            let mut n: Vec<&str> = list.iter().map(|t| t.name.as_ref()).collect();
            n.sort_unstable();
            n.into_iter().map(str::to_owned).collect::<Vec<_>>()
        };
        let changed = names(&s.lists.tools) != names(&tools);
        s.lists.tools = tools;
        changed
    };
    if changed && let Some(notify) = on_change.get() {
        notify();
    }
}

/// Headers sent with every request to the upstream; values may be secrets.
#[derive(Clone, Default)]
pub struct UpstreamHeaders {
    /// The `Authorization` value (`Bearer …`).
    pub authorization: Option<String>,
    /// Other headers.
    pub other: Vec<(String, String)>,
}

/// A remote MCP server over streamable HTTP.
#[derive(Clone)]
pub struct RemoteBackend {
    name: Arc<str>,
    url: Arc<str>,
    /// The upstream's host and port (`server.address`, `server.port` of its spans).
    server: Arc<(String, u16)>,
    http: reqwest::Client,
    headers: Arc<UpstreamHeaders>,
    state: Arc<Mutex<State>>,
    connecting: Arc<tokio::sync::Mutex<()>>,
    on_change: Arc<OnceLock<OnToolsChanged>>,
}

impl std::fmt::Debug for RemoteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL and the header names only: values may be credentials.
        f.debug_struct("RemoteBackend")
            .field("name", &self.name)
            .field("url", &self.url)
            .field(
                "headers",
                &self
                    .headers
                    .other
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .chain(self.headers.authorization.as_ref().map(|_| "authorization"))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl RemoteBackend {
    /// A backend for the MCP endpoint `url` (`http://host:port/mcp`), sending `headers`;
    /// nothing is connected until [`connect`](Self::connect) or the first call.
    pub fn new(name: &str, url: &str, headers: UpstreamHeaders) -> RemoteBackend {
        let parsed = reqwest::Url::parse(url).ok();
        let server = (
            parsed
                .as_ref()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default(),
            parsed
                .as_ref()
                .and_then(reqwest::Url::port_or_known_default)
                .unwrap_or(80),
        );
        RemoteBackend {
            name: Arc::from(name),
            url: Arc::from(url),
            server: Arc::new(server),
            // TCP_NODELAY: an MCP POST goes out in more than one write.
            http: reqwest::Client::builder()
                .tcp_nodelay(true)
                .build()
                .unwrap_or_default(),
            headers: Arc::new(headers),
            state: Arc::new(Mutex::new(State {
                generation: 0,
                session: None,
                lists: Lists::default(),
            })),
            connecting: Arc::new(tokio::sync::Mutex::new(())),
            on_change: Arc::default(),
        }
    }

    /// Calls `f` whenever the upstream's tool list changes (one callback; later ones are
    /// ignored).
    pub fn on_tools_changed(&self, f: OnToolsChanged) {
        let _ = self.on_change.set(f);
    }

    /// The tools of the last listing.
    pub fn tools(&self) -> Vec<Tool> {
        self.state.lock().lists.tools.clone()
    }

    /// Finds a tool of the last listing, in place.
    pub fn find_tool<R>(&self, f: impl FnOnce(&[Tool]) -> R) -> R {
        f(&self.state.lock().lists.tools)
    }

    /// The resources of the last listing.
    pub fn resources(&self) -> Vec<Resource> {
        self.state.lock().lists.resources.clone()
    }

    /// The prompts of the last listing.
    pub fn prompts(&self) -> Vec<Prompt> {
        self.state.lock().lists.prompts.clone()
    }

    fn session(&self) -> Option<(u64, Arc<RunningService<RoleClient, Listener>>)> {
        self.state
            .lock()
            .session
            .as_ref()
            .filter(|(_, s)| !s.is_transport_closed())
            .map(|(g, s)| (*g, Arc::clone(s)))
    }

    /// Forgets the session of `generation` (not a newer one): the next call opens another.
    fn forget(&self, generation: u64) {
        let mut s = self.state.lock();
        if s.session.as_ref().is_some_and(|(g, _)| *g == generation) {
            s.session = None;
        }
    }

    /// The current session, or a new one (initialize, then list tools, resources, prompts).
    async fn connect(&self) -> Result<(u64, Arc<RunningService<RoleClient, Listener>>), String> {
        if let Some(session) = self.session() {
            return Ok(session);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(session) = self.session() {
            return Ok(session);
        }
        let mut config = StreamableHttpClientTransportConfig::with_uri(self.url.as_ref());
        if let Some(auth) = &self.headers.authorization {
            // rmcp sends it as `Authorization: Bearer <value>`.
            config = config.auth_header(auth.trim_start_matches("Bearer ").to_owned());
        }
        let mut custom = HashMap::new();
        for (k, v) in &self.headers.other {
            if let (Ok(k), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                reqwest::header::HeaderValue::from_str(v),
            ) {
                custom.insert(k, v);
            }
        }
        let config = config.custom_headers(custom);
        let transport = StreamableHttpClientTransport::with_client(self.http.clone(), config);
        let listener = Listener {
            state: Arc::clone(&self.state),
            on_change: Arc::clone(&self.on_change),
            name: Arc::clone(&self.name),
        };
        let open = async {
            let client = listener
                .serve(transport)
                .await
                .map_err(|e| format!("cannot open an MCP session with {}: {e}", self.url))?;
            let tools = client
                .list_all_tools()
                .await
                .map_err(|e| format!("tools/list failed: {e}"))?;
            let caps = client.peer_info().map(|i| i.capabilities.clone());
            let resources = match caps.as_ref().and_then(|c| c.resources.as_ref()) {
                Some(_) => client.list_all_resources().await.unwrap_or_default(),
                None => Vec::new(),
            };
            let prompts = match caps.as_ref().and_then(|c| c.prompts.as_ref()) {
                Some(_) => client.list_all_prompts().await.unwrap_or_default(),
                None => Vec::new(),
            };
            Ok::<_, String>((client, tools, resources, prompts))
        };
        let (client, tools, resources, prompts) = tokio::time::timeout(CONNECT_TIMEOUT, open)
            .await
            .map_err(|_| {
                format!(
                    "no MCP session with {} within {CONNECT_TIMEOUT:?}",
                    self.url
                )
            })??;
        let client = Arc::new(client);
        let generation = {
            let mut s = self.state.lock();
            s.generation += 1;
            s.session = Some((s.generation, Arc::clone(&client)));
            s.lists.resources = resources;
            s.lists.prompts = prompts;
            s.generation
        };
        store_tools(&self.state, &self.on_change, tools);
        tracing::info!(connector = %self.name, generation, "MCP session with the upstream open");
        Ok((generation, client))
    }

    /// Lists the tools again (after a client called an unknown name).
    pub async fn relist(&self) {
        if let Ok((generation, client)) = self.connect().await {
            match client.list_all_tools().await {
                Ok(tools) => store_tools(&self.state, &self.on_change, tools),
                Err(e) => {
                    self.forget(generation);
                    tracing::warn!(connector = %self.name, error = %e, "re-listing tools failed");
                }
            }
        }
    }

    fn unavailable(&self, what: &str, e: &dyn std::fmt::Display) -> CallError {
        CallError::Failed(Failure::unavailable(format!(
            "{}: {what}: {}",
            self.name,
            clip(&e.to_string())
        )))
    }

    /// Calls `tool`; `key`, the call's idempotency key, goes in `_meta`.
    pub async fn call(
        &self,
        tool: &str,
        args: &JsonObject,
        key: Option<&str>,
    ) -> Result<CallToolResult, CallError> {
        let (generation, client) = self
            .connect()
            .await
            .map_err(|e| self.unavailable("the upstream is unreachable", &e))?;
        // The attempt's span (kind client), whose trace context goes in `_meta`.
        let span = crate::connector::mcp_client_span(
            &self.name,
            tool,
            "tcp",
            Some((&self.server.0, self.server.1)),
        );
        let answer = crate::connector::attempt(&span, async {
            client.call_tool(mcp_call_params(tool, args, key)).await
        })
        .await;
        crate::connector::mcp_outcome(&span, &self.name, answer, |e| {
            // The session broke (the upstream went away): the next call opens another.
            self.forget(generation);
            self.unavailable("the MCP session broke", e)
        })
    }

    /// Reads a resource of the upstream.
    pub async fn read_resource(&self, uri: &str) -> Result<ReadResourceResult, CallError> {
        let (generation, client) = self
            .connect()
            .await
            .map_err(|e| self.unavailable("the upstream is unreachable", &e))?;
        match client
            .read_resource(ReadResourceRequestParams::new(uri))
            .await
        {
            Ok(r) => Ok(r),
            Err(ServiceError::McpError(e)) => Err(CallError::Rejected(format!(
                "{}: {}",
                self.name,
                clip(&e.message)
            ))),
            Err(e) => {
                self.forget(generation);
                Err(self.unavailable("the MCP session broke", &e))
            }
        }
    }

    /// Gets a prompt of the upstream.
    pub async fn get_prompt(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
    ) -> Result<GetPromptResult, CallError> {
        let (generation, client) = self
            .connect()
            .await
            .map_err(|e| self.unavailable("the upstream is unreachable", &e))?;
        let mut params = GetPromptRequestParams::new(name);
        if let Some(args) = arguments {
            params = params.with_arguments(args);
        }
        match client.get_prompt(params).await {
            Ok(r) => Ok(r),
            Err(ServiceError::McpError(e)) => Err(CallError::Rejected(format!(
                "{}: {}",
                self.name,
                clip(&e.message)
            ))),
            Err(e) => {
                self.forget(generation);
                Err(self.unavailable("the MCP session broke", &e))
            }
        }
    }
}

/// The health check of a remote MCP server: an MCP `ping` on its session (opened if needed),
/// then a fresh tool listing (so a change is seen even without a notification).
#[derive(Debug, Clone)]
pub struct RemoteCheck(pub RemoteBackend);

#[async_trait]
impl HealthCheck for RemoteCheck {
    async fn check(&self) -> CheckResult {
        let backend = &self.0;
        let started = Instant::now();
        let (generation, client) = match backend.connect().await {
            Ok(s) => s,
            Err(e) => return CheckResult::unhealthy(e),
        };
        match client
            .send_request(ClientRequest::PingRequest(PingRequest::default()))
            .await
        {
            Ok(_) => {
                let took = started.elapsed();
                if let Ok(tools) = client.list_all_tools().await {
                    store_tools(&backend.state, &backend.on_change, tools);
                }
                CheckResult::healthy(format!(
                    "MCP ping answered in {:.2} ms",
                    took.as_secs_f64() * 1000.0
                ))
            }
            Err(e) => {
                backend.forget(generation);
                CheckResult::unhealthy(format!("MCP ping failed: {}", clip(&e.to_string())))
            }
        }
    }
}
