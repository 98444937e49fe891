//! The MCP server: every tool call passes the client's rate limit, its connector's circuit
//! breaker and its partition's bulkhead; retryable failures go to the dead-letter queue.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use palisade::breaker::CircuitBreaker;
use palisade::bulkhead::Bulkhead;
use palisade::dlq::{DeadLetterQueue, DlqError, Entry, Failure, FailureKind, StoreError};
use palisade::ratelimit::Limiter;
use palisade::tower::ratelimit::ClientIp;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{NotificationContext, Peer, RequestContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::connector::{Backend, CallError};

/// A call that failed in a way that may pass, as kept in the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadCall {
    /// The connector's name.
    pub connector: String,
    /// The tool's name at the connector.
    pub tool: String,
    /// The call's arguments.
    pub arguments: JsonObject,
    /// Who called (the client's IP address).
    pub client: String,
}

/// One connector with its breaker, its partition's bulkhead and its backend.
#[derive(Debug)]
pub struct Connector {
    /// Its name: tools are served as `{name}.{tool}`.
    pub name: String,
    /// Its circuit breaker (named like the connector).
    pub breaker: CircuitBreaker,
    /// The bulkhead of its partition (shared with the partition's other connectors).
    pub bulkhead: Bulkhead,
    /// Where calls go.
    pub backend: Backend,
    /// The longest a call may take.
    pub timeout: Duration,
    /// Whether retryable failures are dead-lettered.
    pub dead_letter: bool,
}

/// Why a call was not attempted; the client may retry (after `retry_after` when given).
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The client's rate limit is used up.
    RateLimited {
        /// When the next call is admitted.
        retry_after: Duration,
    },
    /// The connector's breaker is open (or half-open with every trial slot taken).
    BreakerOpen {
        /// The breaker's state (`open`, `forced_open`, `half_open`).
        state: String,
        /// When it lets a trial call through, when known.
        retry_after: Option<Duration>,
    },
    /// Every slot of the connector's partition is busy.
    PartitionFull {
        /// The partition.
        partition: String,
        /// The bulkhead's explanation.
        message: String,
    },
}

/// What became of one call through a connector.
#[derive(Debug)]
pub enum Outcome {
    /// The connector answered (possibly with a tool error of its own).
    Done(CallToolResult),
    /// The connector refused the input.
    Rejected(String),
    /// Palisade refused the call before it reached the connector.
    Refused(Refusal),
    /// The call failed and may succeed later.
    Failed(Failure),
    /// The server went away during the call: never replayed (it may be what crashed it).
    Lost(Failure),
}

impl Connector {
    /// Runs one call: breaker, then bulkhead, then the backend under the call timeout.
    pub async fn invoke(&self, tool: &str, args: &JsonObject) -> Outcome {
        let permit = match self.breaker.try_acquire() {
            Ok(permit) => permit,
            Err(rejected) => {
                return Outcome::Refused(Refusal::BreakerOpen {
                    state: self.breaker.state().as_str().to_owned(),
                    retry_after: rejected.retry_after(),
                });
            }
        };
        let _slot = match self.bulkhead.acquire().await {
            Ok(slot) => slot,
            Err(e) => {
                // Dropping the breaker permit unrecorded gives a trial slot back.
                return Outcome::Refused(Refusal::PartitionFull {
                    partition: self.bulkhead.name().to_owned(),
                    message: e.to_string(),
                });
            }
        };
        match tokio::time::timeout(self.timeout, self.backend.call(tool, args)).await {
            Err(_) => {
                permit.failure();
                Outcome::Failed(Failure::timeout(format!(
                    "{}.{tool}: no answer within {} ms",
                    self.name,
                    self.timeout.as_millis()
                )))
            }
            Ok(Ok(result)) => {
                permit.success();
                Outcome::Done(result)
            }
            Ok(Err(CallError::Rejected(message))) => {
                // A caller's bad input says nothing about the upstream's health.
                permit.ignore();
                Outcome::Rejected(message)
            }
            Ok(Err(CallError::Failed(failure))) => {
                if failure.kind == FailureKind::RateLimited {
                    permit.ignore(); // the upstream is alive, only busy
                } else {
                    permit.failure();
                }
                Outcome::Failed(failure)
            }
            Ok(Err(CallError::Lost(failure))) => {
                permit.failure();
                Outcome::Lost(failure)
            }
        }
    }
}

/// The gateway: cheap to clone (one per MCP session).
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    connectors: BTreeMap<String, Arc<Connector>>,
    limiter: Limiter,
    dlq: DeadLetterQueue<DeadCall>,
    /// Where failed calls go while `dlq`'s store (Redis) is unavailable.
    local: Option<DeadLetterQueue<DeadCall>>,
    client_ip: ClientIp,
    /// The MCP sessions to tell when the tool list changes.
    peers: parking_lot::Mutex<Vec<Peer<RoleServer>>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field(
                "connectors",
                &self.inner.connectors.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A tool error: a sentence for the model in `content`, the same facts in `structuredContent`.
fn tool_error(message: String, details: Value) -> CallToolResult {
    let mut result = CallToolResult::structured_error(details);
    result.content = vec![ContentBlock::text(message)];
    result
}

fn refusal_result(tool: &str, refusal: &Refusal) -> CallToolResult {
    match refusal {
        Refusal::RateLimited { retry_after } => tool_error(
            format!(
                "Rate limited: this client has used up its quota of tool calls. Retry after {} ms.",
                millis(*retry_after)
            ),
            json!({"error": "rate_limited", "tool": tool, "retry_after_ms": millis(*retry_after)}),
        ),
        Refusal::BreakerOpen { state, retry_after } => {
            let when = retry_after.map_or_else(
                || "when an operator resets it".to_owned(),
                |d| format!("after {} ms", millis(d)),
            );
            tool_error(
                format!(
                    "The upstream of {tool} is failing, so its circuit breaker is {state} and the call was not sent. Retry {when}."
                ),
                json!({
                    "error": "breaker_open",
                    "tool": tool,
                    "state": state,
                    "retry_after_ms": retry_after.map(millis),
                }),
            )
        }
        Refusal::PartitionFull { partition, message } => tool_error(
            format!("Too many calls in flight: {message}. Retry in a moment."),
            json!({"error": "partition_full", "tool": tool, "partition": partition, "message": message}),
        ),
    }
}

impl Gateway {
    /// A gateway over `connectors`, limiting clients with `limiter` (keyed by the address
    /// `client_ip` resolves), dead-lettering to `dlq`, or to `local` while `dlq`'s store is
    /// unavailable.
    pub fn new(
        connectors: Vec<Arc<Connector>>,
        limiter: Limiter,
        dlq: DeadLetterQueue<DeadCall>,
        local: Option<DeadLetterQueue<DeadCall>>,
        client_ip: ClientIp,
    ) -> Gateway {
        let gateway = Gateway {
            inner: Arc::new(Inner {
                connectors: connectors
                    .into_iter()
                    .map(|c| (c.name.clone(), c))
                    .collect(),
                limiter,
                dlq,
                local,
                client_ip,
                peers: parking_lot::Mutex::new(Vec::new()),
            }),
        };
        for connector in gateway.inner.connectors.values() {
            if let Backend::Stdio(stdio) = &connector.backend {
                let weak = Arc::downgrade(&gateway.inner);
                stdio.on_tools_changed(Arc::new(move || {
                    if let Some(inner) = weak.upgrade() {
                        Gateway { inner }.tools_changed();
                    }
                }));
            }
        }
        gateway
    }

    /// Tells every connected MCP client that the tool list changed
    /// (`notifications/tools/list_changed`), forgetting the sessions that have closed.
    pub fn tools_changed(&self) {
        let peers: Vec<Peer<RoleServer>> = {
            let mut peers = self.inner.peers.lock();
            peers.retain(|p| !p.is_transport_closed());
            peers.clone()
        };
        tracing::info!(
            clients = peers.len(),
            "tool list changed; notifying MCP clients"
        );
        for peer in peers {
            tokio::spawn(async move {
                if let Err(e) = peer.notify_tool_list_changed().await {
                    tracing::debug!(error = %e, "could not notify an MCP client");
                }
            });
        }
    }

    /// The connector named `name`.
    pub fn connector(&self, name: &str) -> Option<&Arc<Connector>> {
        self.inner.connectors.get(name)
    }

    /// Every tool of every connector, named `{connector}.{tool}`.
    pub fn tools(&self) -> Vec<Tool> {
        let mut all = Vec::new();
        for (name, connector) in &self.inner.connectors {
            for mut tool in connector.backend.tools() {
                tool.name = format!("{name}.{}", tool.name).into();
                all.push(tool);
            }
        }
        all
    }

    /// Handles one `tools/call` from `client`.
    pub async fn call(
        &self,
        client: &str,
        name: &str,
        args: JsonObject,
    ) -> Result<CallToolResult, McpError> {
        let unknown = || {
            McpError::invalid_params(
                format!(
                    "unknown tool {name:?}: tools are named <connector>.<tool>; see tools/list"
                ),
                None,
            )
        };
        let (connector_name, tool) = name.split_once('.').ok_or_else(unknown)?;
        let connector = self
            .inner
            .connectors
            .get(connector_name)
            .ok_or_else(unknown)?;
        if let Err(limited) = self.inner.limiter.check(client).await {
            return Ok(refusal_result(
                name,
                &Refusal::RateLimited {
                    retry_after: limited.retry_after,
                },
            ));
        }
        if !connector.backend.has_tool(tool).await {
            if connector.backend.tools().is_empty() {
                // A stdio server that never finished starting: its tools are not known yet.
                return Ok(tool_error(
                    format!(
                        "Connector {connector_name} is not running, so its tools are unknown; its health status says why. Retry later."
                    ),
                    json!({"error": "connector_unavailable", "tool": name, "connector": connector_name}),
                ));
            }
            return Err(unknown());
        }
        match connector.invoke(tool, &args).await {
            Outcome::Done(result) => Ok(result),
            Outcome::Rejected(message) => Ok(tool_error(
                format!(
                    "The upstream rejected the call: {message}. Change the arguments; retrying as is will fail again."
                ),
                json!({"error": "rejected_by_upstream", "tool": name, "message": message}),
            )),
            Outcome::Refused(refusal) => Ok(refusal_result(name, &refusal)),
            Outcome::Failed(failure) => Ok(self
                .dead_letter(connector, tool, name, args, client, failure)
                .await),
            Outcome::Lost(failure) => Ok(tool_error(
                format!(
                    "The server went away while handling the call: {}. It was not queued for replay, because it may have run or may be what crashed the server; check before calling again.",
                    failure.message
                ),
                json!({"error": "upstream_lost", "tool": name, "message": failure.message}),
            )),
        }
    }

    async fn dead_letter(
        &self,
        connector: &Connector,
        tool: &str,
        name: &str,
        arguments: JsonObject,
        client: &str,
        failure: Failure,
    ) -> CallToolResult {
        let kind = failure.kind.as_str();
        let message = failure.message.clone();
        if !connector.dead_letter {
            return tool_error(
                format!("The call failed ({kind}): {message}. It may succeed if retried later."),
                json!({"error": "upstream_failed", "tool": name, "kind": kind, "message": message}),
            );
        }
        let call = DeadCall {
            connector: connector.name.clone(),
            tool: tool.to_owned(),
            arguments,
            client: client.to_owned(),
        };
        let main = &self.inner.dlq;
        let pushed = match (
            main.push(name, &call, failure.clone()).await,
            &self.inner.local,
        ) {
            (Ok(id), _) => Ok((main.name(), id)),
            (
                Err(
                    e @ DlqError::Store {
                        source: StoreError::Unavailable(_),
                        ..
                    },
                ),
                Some(local),
            ) => {
                tracing::warn!(tool = name, error = %e, "dead-letter store unavailable; keeping the call in memory");
                local
                    .push(name, &call, failure)
                    .await
                    .map(|id| (local.name(), id))
            }
            (Err(e), _) => Err(e),
        };
        match pushed {
            Ok((queue, id)) => tool_error(
                format!(
                    "The call failed ({kind}): {message}. It was queued as dead-letter entry {id} and will be replayed when the upstream recovers; do not retry it yourself."
                ),
                json!({
                    "error": "upstream_failed",
                    "tool": name,
                    "kind": kind,
                    "message": message,
                    "queued": {"queue": queue, "id": id},
                }),
            ),
            Err(e) => {
                tracing::error!(tool = name, error = %e, "could not dead-letter a failed call");
                tool_error(
                    format!(
                        "The call failed ({kind}): {message}. It could not be queued for replay ({e}); retry it later."
                    ),
                    json!({"error": "upstream_failed", "tool": name, "kind": kind, "message": message, "queued": null}),
                )
            }
        }
    }

    /// Replays a dead-lettered call (the retry worker's handler): success acknowledges the
    /// entry; a refusal or failure reschedules it under its kind's policy.
    pub async fn replay(&self, entry: Entry<DeadCall>) -> Result<(), Failure> {
        let call = entry.payload;
        let Some(connector) = self.inner.connectors.get(&call.connector) else {
            return Err(Failure::client_error(format!(
                "connector {:?} is no longer configured",
                call.connector
            )));
        };
        match connector.invoke(&call.tool, &call.arguments).await {
            Outcome::Done(_) => {
                tracing::info!(connector = %call.connector, tool = %call.tool, "replayed a dead-lettered call");
                Ok(())
            }
            Outcome::Rejected(message) => Err(Failure::client_error(message)),
            Outcome::Refused(Refusal::BreakerOpen { state, retry_after }) => Err(Failure {
                retry_after,
                ..Failure::unavailable(format!("breaker of {} is {state}", call.connector))
            }),
            Outcome::Refused(Refusal::PartitionFull { message, .. }) => {
                Err(Failure::unavailable(message))
            }
            Outcome::Refused(Refusal::RateLimited { retry_after }) => Err(Failure::rate_limited(
                "rate limited".to_owned(),
                retry_after,
            )),
            Outcome::Failed(failure) => Err(failure),
            // The server died during the replay: park it (it may be a poison call).
            Outcome::Lost(failure) => Err(Failure::client_error(format!(
                "parked: the server went away during the replay, so this call may be what crashes it ({})",
                failure.message
            ))),
        }
    }
}

/// The client's IP address, from the HTTP request rmcp hands to the handler: the peer address,
/// or behind a trusted proxy (`TRUSTED_PROXIES`) the right-most untrusted `X-Forwarded-For` entry.
fn client_of(client_ip: &ClientIp, context: &RequestContext<RoleServer>) -> String {
    let Some(parts) = context.extensions.get::<axum::http::request::Parts>() else {
        return "unknown".to_owned();
    };
    match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(peer)) => client_ip.resolve(peer.ip(), &parts.headers).to_string(),
        None => "unknown".to_owned(),
    }
}

impl ServerHandler for Gateway {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new(
            "palisade-mcp-gateway",
            env!("CARGO_PKG_VERSION"),
        ))
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let mut peers = self.inner.peers.lock();
        peers.retain(|p| !p.is_transport_closed());
        peers.push(context.peer);
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
        let client = client_of(&self.inner.client_ip, &context);
        let args = request.arguments.unwrap_or_default();
        self.call(&client, &request.name, args)
            .await
            .map(Into::into)
    }
}
