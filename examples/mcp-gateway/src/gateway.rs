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

use crate::config::{QuotaKey, QuotaRule};
use crate::connector::{Backend, CallError};
use crate::replay::{ReplayPolicy, idempotency_key};

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
    /// The key the first attempt carried; every replay carries it too, so the upstream can
    /// deduplicate (`Idempotency-Key` header, or `_meta` for MCP upstreams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Who made a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The client's IP address (kept in dead-letter entries).
    pub address: String,
    /// Its address's rate-limit key (IPv6: its network), whatever its identity.
    pub ip_key: String,
    /// Its rate-limit key: its authenticated identity (`sub:<subject>` of its bearer token)
    /// when it has one, so clients behind one address have their own quotas and one client
    /// across addresses shares one; else the address, or for IPv6 its network
    /// (`CLIENT_IPV6_PREFIX`, default /64).
    pub key: String,
}

impl Caller {
    /// A caller whose key is its address.
    pub fn new(address: impl Into<String>) -> Caller {
        let address = address.into();
        Caller {
            key: address.clone(),
            ip_key: address.clone(),
            address,
        }
    }
}

/// One connector with its breaker, its partition's bulkhead and its backend.
#[derive(Debug)]
pub struct Connector {
    /// Its name: tools are served as `{name}{separator}{tool}` ([`crate::names`]).
    pub name: String,
    /// Its circuit breaker (named like the connector).
    pub breaker: CircuitBreaker,
    /// The bulkhead of its partition (shared with the partition's other connectors).
    pub bulkhead: Bulkhead,
    /// Where calls go.
    pub backend: Backend,
    /// The longest a call may take.
    pub timeout: Duration,
    /// The replay policy of all its tools (`replay`, or `never` with `dead_letter = false`),
    /// when set: it overrides the tools' annotations.
    pub replay: Option<ReplayPolicy>,
    /// Per-tool replay policies (`tool_replay`), overriding everything else.
    pub tool_replay: BTreeMap<String, ReplayPolicy>,
}

/// Why a call was not attempted; the client may retry (after `retry_after` when given).
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The client's rate limit is used up.
    RateLimited {
        /// When the next call is admitted.
        retry_after: Duration,
        /// The `[[quotas]]` rule that refused, when it was one (else `[rate_limit]`).
        rule: Option<String>,
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
    /// The replay policy of `tool`: `tool_replay`, else the connector's `replay`, else the
    /// default of the tool's MCP annotations; and whether it came from the config.
    pub fn replay_policy(&self, tool: &str) -> (ReplayPolicy, bool) {
        if let Some(policy) = self.tool_replay.get(tool) {
            return (*policy, true);
        }
        if let Some(policy) = self.replay {
            return (policy, true);
        }
        (self.backend.default_replay(tool), false)
    }

    /// Runs one call: breaker, then bulkhead, then the backend under the call timeout.
    /// `key` is the call's idempotency key, passed to the upstream.
    pub async fn invoke(&self, tool: &str, args: &JsonObject, key: Option<&str>) -> Outcome {
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
        match tokio::time::timeout(self.timeout, self.backend.call(tool, args, key)).await {
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
    /// Between a connector's name and its tool's in served names (`server.tool_separator`).
    separator: String,
    /// The MCP sessions to tell when the tool list changes.
    peers: parking_lot::Mutex<Vec<Peer<RoleServer>>>,
    /// Tool calls in flight, and `POST` responses not yet sent (a shutdown waits for them).
    calls: tokio_util::task::TaskTracker,
    /// Set when the gateway shuts down: new calls are refused.
    draining: std::sync::atomic::AtomicBool,
    /// Cancelled when the shutdown grace is over: calls still waiting on an upstream stop
    /// waiting and are dead-lettered under their tool's replay policy.
    cut: tokio_util::sync::CancellationToken,
    /// The scope each listed tool needs (`[auth] tool_scopes`), by its served name.
    tool_scopes: std::sync::OnceLock<BTreeMap<String, String>>,
    /// The `[[quotas]]` rules and their limiters.
    quotas: std::sync::OnceLock<Vec<(QuotaRule, Limiter)>>,
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
        Refusal::RateLimited {
            retry_after,
            rule: None,
        } => tool_error(
            format!(
                "Rate limited: this client has used up its quota of tool calls. Retry after {} ms.",
                millis(*retry_after)
            ),
            json!({"error": "rate_limited", "tool": tool, "retry_after_ms": millis(*retry_after)}),
        ),
        Refusal::RateLimited {
            retry_after,
            rule: Some(rule),
        } => tool_error(
            format!(
                "Rate limited by the quota {rule:?}: its calls are used up for now. Retry after {} ms.",
                millis(*retry_after)
            ),
            json!({"error": "rate_limited", "tool": tool, "rule": rule, "retry_after_ms": millis(*retry_after)}),
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
        separator: &str,
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
                separator: separator.to_owned(),
                peers: parking_lot::Mutex::new(Vec::new()),
                calls: tokio_util::task::TaskTracker::new(),
                tool_scopes: std::sync::OnceLock::new(),
                quotas: std::sync::OnceLock::new(),
                draining: std::sync::atomic::AtomicBool::new(false),
                cut: tokio_util::sync::CancellationToken::new(),
            }),
        };
        for connector in gateway.inner.connectors.values() {
            let weak = Arc::downgrade(&gateway.inner);
            let notify: crate::connector::OnToolsChanged = Arc::new(move || {
                if let Some(inner) = weak.upgrade() {
                    Gateway { inner }.tools_changed();
                }
            });
            match &connector.backend {
                Backend::Stdio(stdio) => stdio.on_tools_changed(notify),
                Backend::Remote(remote) => remote.on_tools_changed(notify),
                Backend::Http(_) => {}
            }
        }
        gateway
    }

    /// Sets the scope each tool needs (`[auth] tool_scopes`), once, before serving; `false`
    /// if they were set already (nothing changes then).
    pub fn set_tool_scopes(&self, scopes: BTreeMap<String, String>) -> bool {
        self.inner.tool_scopes.set(scopes).is_ok()
    }

    /// Sets the `[[quotas]]` rules, once, before serving; `false` if they were set already.
    pub fn set_quotas(&self, quotas: Vec<(QuotaRule, Limiter)>) -> bool {
        self.inner.quotas.set(quotas).is_ok()
    }

    /// The scope `tool` needs that `claims` lack, if any (none without authentication).
    fn missing_scope(&self, tool: &str, claims: Option<&crate::auth::Claims>) -> Option<&str> {
        let scope = self.inner.tool_scopes.get()?.get(tool)?;
        match claims {
            Some(c) if c.has_scope(scope) => None,
            _ => Some(scope),
        }
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

    /// Every tool of every connector, named `{connector}{separator}{tool}` within
    /// `^[a-zA-Z0-9_-]{1,64}$` ([`crate::names`]). Should two discovered tools map to one
    /// name, the first (by connector name) is served and the other left out, with a warning.
    pub fn tools(&self) -> Vec<Tool> {
        let mut all = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (name, connector) in &self.inner.connectors {
            for mut tool in connector.backend.tools() {
                let served = crate::names::served(name, &self.inner.separator, &tool.name);
                if !seen.insert(served.clone()) {
                    tracing::warn!(connector = %name, tool = %tool.name, served = %served, "two tools map to one served name; this one is left out");
                    continue;
                }
                tool.name = served.into();
                all.push(tool);
            }
        }
        all
    }

    /// The connector and upstream tool name behind the served name `name`.
    async fn resolve(&self, name: &str) -> Option<(&Arc<Connector>, String)> {
        let sep = self.inner.separator.as_str();
        for (connector_name, connector) in &self.inner.connectors {
            if !name
                .strip_prefix(connector_name.as_str())
                .is_some_and(|rest| rest.starts_with(sep))
            {
                continue;
            }
            if let Some(tool) = connector.backend.resolve(name, connector_name, sep).await {
                return Some((connector, tool));
            }
        }
        None
    }

    /// Starts a shutdown: from now on new tool calls are refused (a tool error saying the
    /// gateway is shutting down); calls in flight go on.
    pub fn drain(&self) {
        self.inner
            .draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.calls.close();
    }

    /// Tool calls in flight now, and `POST` responses not yet sent.
    pub fn calls_in_flight(&self) -> usize {
        self.inner.calls.len()
    }

    /// A token a shutdown waits for: held by an MCP `POST` until its response is sent
    /// ([`track_responses`](crate::sessions::track_responses)).
    pub fn track_response(&self) -> tokio_util::task::task_tracker::TaskTrackerToken {
        self.inner.calls.token()
    }

    /// After [`drain`](Self::drain): waits up to `grace` for the calls in flight to finish and
    /// their answers to be sent; then cuts the calls still waiting on an upstream (they are
    /// dead-lettered under their tool's replay policy, and their clients told so) and waits
    /// up to 5 s more for those answers. Returns how many calls or answers were cut.
    pub async fn drained(&self, grace: Duration) -> usize {
        if tokio::time::timeout(grace, self.inner.calls.wait())
            .await
            .is_ok()
        {
            return 0;
        }
        let cut = self.inner.calls.len();
        self.inner.cut.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.inner.calls.wait()).await;
        cut
    }

    /// Handles one `tools/call` from `client`.
    pub async fn call(
        &self,
        client: &Caller,
        name: &str,
        args: JsonObject,
    ) -> Result<CallToolResult, McpError> {
        if self
            .inner
            .draining
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(tool_error(
                "The gateway is shutting down and takes no new calls. Retry in a moment: another instance, or this one restarted, will answer.".to_owned(),
                json!({"error": "shutting_down", "tool": name, "retry_after_ms": 1000}),
            ));
        }
        self.inner
            .calls
            .track_future(self.dispatch(client, name, args))
            .await
    }

    async fn dispatch(
        &self,
        client: &Caller,
        name: &str,
        args: JsonObject,
    ) -> Result<CallToolResult, McpError> {
        let sep = self.inner.separator.as_str();
        let unknown = || {
            McpError::invalid_params(
                format!(
                    "unknown tool {name:?}: tools are named <connector>{sep}<tool>; see tools/list"
                ),
                None,
            )
        };
        // A connector the name starts with (for the not-running message below).
        let prefixed = self.inner.connectors.iter().find(|(c, _)| {
            name.strip_prefix(c.as_str())
                .is_some_and(|rest| rest.starts_with(sep))
        });
        let Some((connector_name, _)) = prefixed else {
            return Err(unknown());
        };
        if let Err(limited) = self.inner.limiter.check(&client.key).await {
            return Ok(refusal_result(
                name,
                &Refusal::RateLimited {
                    retry_after: limited.retry_after,
                    rule: None,
                },
            ));
        }
        if let Some(quotas) = self.inner.quotas.get() {
            for (rule, limiter) in quotas {
                if !rule.applies_to(name) {
                    continue;
                }
                let key = rule
                    .key
                    .iter()
                    .map(|k| match k {
                        QuotaKey::Identity => client.key.as_str(),
                        QuotaKey::Ip => client.ip_key.as_str(),
                        QuotaKey::Tool => name,
                    })
                    .collect::<Vec<_>>()
                    .join("|");
                if let Err(limited) = limiter.check(&key).await {
                    return Ok(refusal_result(
                        name,
                        &Refusal::RateLimited {
                            retry_after: limited.retry_after,
                            rule: Some(rule.name.clone()),
                        },
                    ));
                }
            }
        }
        let Some((connector, tool)) = self.resolve(name).await else {
            let connector = &self.inner.connectors[connector_name.as_str()];
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
        };
        let tool = tool.as_str();
        let (policy, configured) = connector.replay_policy(tool);
        // Every call that may be replayed carries a key from its first attempt on, so the
        // upstream can tell a replay from a new call.
        let key = policy.queues().then(idempotency_key);
        let outcome = tokio::select! {
            outcome = connector.invoke(tool, &args, key.as_deref()) => outcome,
            () = self.inner.cut.cancelled() => Outcome::Failed(Failure::timeout(format!(
                "{name}: the gateway shut down before the upstream answered (the call may have run)"
            ))),
        };
        match outcome {
            Outcome::Done(result) => Ok(result),
            Outcome::Rejected(message) => Ok(tool_error(
                format!(
                    "The upstream rejected the call: {message}. Change the arguments; retrying as is will fail again."
                ),
                json!({"error": "rejected_by_upstream", "tool": name, "message": message}),
            )),
            Outcome::Refused(refusal) => Ok(refusal_result(name, &refusal)),
            Outcome::Failed(failure) => {
                let call = DeadCall {
                    connector: connector.name.clone(),
                    tool: tool.to_owned(),
                    arguments: args,
                    client: client.address.clone(),
                    idempotency_key: key,
                };
                Ok(self
                    .dead_letter(name, call, policy, configured, failure)
                    .await)
            }
            Outcome::Lost(failure) => Ok(tool_error(
                format!(
                    "The server went away while handling the call: {}. It was not queued for replay, because it may have run or may be what crashed the server; check before calling again.",
                    failure.message
                ),
                json!({"error": "upstream_lost", "tool": name, "message": failure.message}),
            )),
        }
    }

    /// Keeps a failed call under its tool's replay policy and tells the client, in plain words,
    /// whether it will be replayed.
    async fn dead_letter(
        &self,
        name: &str,
        call: DeadCall,
        policy: ReplayPolicy,
        configured: bool,
        failure: Failure,
    ) -> CallToolResult {
        let kind = failure.kind.as_str();
        let message = failure.message.clone();
        let facts = |replay: &str, queued: Value| {
            json!({
                "error": "upstream_failed",
                "tool": name,
                "kind": kind,
                "message": message,
                "replay": replay,
                "queued": queued,
                "idempotency_key": call.idempotency_key,
            })
        };
        if !policy.queues() {
            let why = if configured {
                "its replay policy is never"
            } else {
                "it is read-only, so nobody would receive a replayed result"
            };
            return tool_error(
                format!(
                    "The call failed ({kind}): {message}. It will not be replayed ({why}); call it again if you still need the result."
                ),
                facts("none", Value::Null),
            );
        }
        let park = !policy.replays_by_itself();
        let main = &self.inner.dlq;
        let pushed = match (
            store(main, name, &call, &failure, park).await,
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
                store(local, name, &call, &failure, park)
                    .await
                    .map(|id| (local.name(), id))
            }
            (Err(e), _) => Err(e),
        };
        match pushed {
            Ok((queue, id)) if park => tool_error(
                format!(
                    "The call failed ({kind}): {message}. It was kept as dead-letter entry {id} for an operator and will NOT be replayed automatically, because the tool is not marked idempotent and may have run. Do not retry it yourself unless you know it did not run."
                ),
                facts("parked", json!({"queue": queue, "id": id})),
            ),
            Ok((queue, id)) => tool_error(
                format!(
                    "The call failed ({kind}): {message}. It was queued as dead-letter entry {id} and will be replayed automatically when the upstream recovers, with the same idempotency key; do not retry it yourself."
                ),
                facts("automatic", json!({"queue": queue, "id": id})),
            ),
            // With `wait_for_replicas`: the entry is on the Redis primary, no replica confirmed it.
            Err(
                e @ DlqError::Store {
                    source: StoreError::NotReplicated { .. },
                    ..
                },
            ) => {
                tracing::warn!(tool = name, error = %e, "dead letter stored on the Redis primary only");
                tool_error(
                    format!(
                        "The call failed ({kind}): {message}. It was stored for {} on the Redis primary, but no replica confirmed it in time, so it is lost if Redis fails over before they catch up. Do not retry it yourself unless an operator finds it missing.",
                        if park {
                            "an operator"
                        } else {
                            "automatic replay"
                        }
                    ),
                    facts(
                        if park { "parked" } else { "automatic" },
                        json!({"queue": main.name(), "id": null, "replicated": false}),
                    ),
                )
            }
            Err(e) => {
                tracing::error!(tool = name, error = %e, "could not dead-letter a failed call");
                tool_error(
                    format!(
                        "The call failed ({kind}): {message}. It could not be queued for replay ({e}), so it will not be replayed; retry it later."
                    ),
                    facts("none", Value::Null),
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
        match connector
            .invoke(&call.tool, &call.arguments, call.idempotency_key.as_deref())
            .await
        {
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
            Outcome::Refused(Refusal::RateLimited { retry_after, .. }) => Err(
                Failure::rate_limited("rate limited".to_owned(), retry_after),
            ),
            Outcome::Failed(failure) => Err(failure),
            // The server died during the replay: park it (it may be a poison call).
            Outcome::Lost(failure) => Err(Failure::client_error(format!(
                "parked: the server went away during the replay, so this call may be what crashes it ({})",
                failure.message
            ))),
        }
    }
}

/// The authenticated client's claims, from the HTTP request rmcp hands to the handler.
fn claims_of(context: &RequestContext<RoleServer>) -> Option<&crate::auth::Claims> {
    context
        .extensions
        .get::<axum::http::request::Parts>()?
        .extensions
        .get::<crate::auth::Claims>()
}

/// Records `call` in `dlq`: parked for an operator, or scheduled for the retry worker.
async fn store(
    dlq: &DeadLetterQueue<DeadCall>,
    name: &str,
    call: &DeadCall,
    failure: &Failure,
    park: bool,
) -> Result<palisade::dlq::EntryId, DlqError> {
    if park {
        dlq.park(name, call, failure.clone()).await
    } else {
        dlq.push(name, call, failure.clone()).await
    }
}

/// The client, from the HTTP request rmcp hands to the handler: the peer address, or behind a
/// trusted proxy (`TRUSTED_PROXIES`) the right-most untrusted `X-Forwarded-For` entry; keyed by
/// its address, or its IPv6 network.
fn client_of(client_ip: &ClientIp, context: &RequestContext<RoleServer>) -> Caller {
    let Some(parts) = context.extensions.get::<axum::http::request::Parts>() else {
        return Caller::new("unknown");
    };
    match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(peer)) => {
            let ip = client_ip.resolve(peer.ip(), &parts.headers);
            let ip_key = client_ip.key_of(ip).to_string();
            let key = match parts
                .extensions
                .get::<crate::auth::Claims>()
                .and_then(|c| c.sub.as_deref())
            {
                Some(subject) => format!("sub:{subject}"),
                None => ip_key.clone(),
            };
            Caller {
                address: ip.to_string(),
                ip_key,
                key,
            }
        }
        None => Caller::new("unknown"),
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
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let mut tools = self.tools();
        if self.inner.tool_scopes.get().is_some_and(|s| !s.is_empty()) {
            let claims = claims_of(&context);
            tools.retain(|t| self.missing_scope(&t.name, claims).is_none());
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if let Some(scope) = self.missing_scope(&request.name, claims_of(&context)) {
            return Ok(tool_error(
                format!(
                    "Not allowed: {} needs the scope {scope:?}, which this client's token does not carry.",
                    request.name
                ),
                json!({"error": "insufficient_scope", "tool": request.name, "scope": scope}),
            )
            .into());
        }
        let client = client_of(&self.inner.client_ip, &context);
        let args = request.arguments.unwrap_or_default();
        self.call(&client, &request.name, args)
            .await
            .map(Into::into)
    }
}
