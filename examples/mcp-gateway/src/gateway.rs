//! The MCP server: every tool call passes the client's rate limit, its connector's circuit
//! breaker and its partition's bulkhead; retryable failures go to the dead-letter queue.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use palisade::dlq::{DeadLetterQueue, DlqError, Entry, Failure, StoreError};
use palisade::mcp::{
    DeadLetter, Kept, KeyBy, KeyPart, Outcome, PolicySource, RateLimit, Refusal, Replay,
    ToolPolicy, keep,
};
use palisade::ratelimit::Limiter;
use palisade::tower::ratelimit::ClientIp;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, GetPromptRequestParams,
    GetPromptResponse, GetPromptResult, Implementation, JsonObject, ListPromptsResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, Prompt,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{NotificationContext, Peer, RequestContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument as _;

use crate::config::QuotaRule;
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
    /// The W3C `traceparent` of the call's span, when traces are exported: a replay's span
    /// links to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// Who made a call ([`palisade_mcp`'s](palisade::mcp::Caller)): its address, its address's
/// rate-limit key (IPv6: its network) and its key (its authenticated identity, `sub:<subject>`,
/// when it has one, else the address key).
pub use palisade::mcp::Caller;

/// One connector: its backend, and the policy of its tools (its breaker, its partition's
/// bulkhead, its call timeout), per tool where `tool_settings` says so.
#[derive(Debug)]
pub struct Connector {
    /// Its name: tools are served as `{name}{separator}{tool}` ([`crate::names`]).
    pub name: String,
    /// Where calls go.
    pub backend: Backend,
    /// The policy of its tools: its breaker (named like the connector), the bulkhead of its
    /// partition (shared with the partition's other connectors), its call timeout.
    pub policy: ToolPolicy,
    /// Tools with settings of their own (`tool_settings`: timeout, partition, quota), by the
    /// tool's name at the connector.
    pub tool_policies: BTreeMap<String, ToolPolicy>,
    /// The replay policy of all its tools (`replay`, or `never` with `dead_letter = false`),
    /// when set: it overrides the tools' annotations.
    pub replay: Option<ReplayPolicy>,
    /// Per-tool replay policies (`tool_replay`, `tool_settings.<tool>.replay`), overriding
    /// everything else.
    pub tool_replay: BTreeMap<String, ReplayPolicy>,
    /// Its fault injector (named like the connector), when `[fault_injection] allowed`: off
    /// until an operator switches it on for a time-to-live.
    pub faults: Option<palisade::chaos::FaultInjector>,
}

impl Connector {
    /// The replay policy of `tool`: `tool_replay`, else the connector's `replay`, else the
    /// default of the tool's MCP annotations; and where it came from.
    pub fn replay_policy(&self, tool: &str) -> (ReplayPolicy, PolicySource) {
        if let Some(policy) = self.tool_replay.get(tool) {
            return (*policy, PolicySource::Configured);
        }
        if let Some(policy) = self.replay {
            return (policy, PolicySource::Configured);
        }
        (self.backend.default_replay(tool), PolicySource::Annotations)
    }

    /// Whether calls of `tool` may be repeated (and so retried): its configured replay policy
    /// is `idempotent` or `always`, or its annotations say read-only or idempotent.
    pub fn idempotent(&self, tool: &str) -> bool {
        match self.replay_policy(tool) {
            (ReplayPolicy::Idempotent | ReplayPolicy::Always, _) => true,
            _ => self.backend.idempotent(tool),
        }
    }

    /// The policy `tool` runs under.
    pub fn policy(&self, tool: &str) -> &ToolPolicy {
        self.tool_policies.get(tool).unwrap_or(&self.policy)
    }

    /// Runs one call of `tool` (served as `served`) under its policy: breaker, then bulkhead,
    /// then the backend under the timeout, retried if the policy has a retry and the tool is
    /// [idempotent](Self::idempotent) ([`palisade::mcp::invoke_retrying`]). `key` is the call's
    /// idempotency key, passed to the upstream.
    pub async fn invoke(
        &self,
        served: &str,
        tool: &str,
        args: &JsonObject,
        key: Option<&str>,
    ) -> Outcome {
        // Looked up only when there is a retry to allow (a stdio backend locks its tool list).
        let idempotent = self.policy(tool).retry().is_some() && self.idempotent(tool);
        palisade::mcp::invoke_retrying(self.policy(tool), served, idempotent, || async {
            // An injected fault stands in for the upstream's answer (latency delays the call,
            // inside its timeout).
            if let Some(faults) = &self.faults {
                inject(faults).await?;
            }
            self.backend.call(tool, args, key).await
        })
        .await
    }
}

/// Asks `faults` whether to fault this call: an injected delay is waited out, an injected
/// error or refusal becomes the failure it imitates. Each injected fault is a
/// `palisade.fault.injected` event (a span event of the call's trace).
async fn inject(faults: &palisade::chaos::FaultInjector) -> Result<(), CallError> {
    use std::future::Future as _;
    let mut decision = std::pin::pin!(faults.inject());
    // Only an injected delay leaves the decision pending; the clock is read only then.
    let mut delayed = None;
    let result = std::future::poll_fn(|cx| {
        let poll = decision.as_mut().poll(cx);
        if poll.is_pending() && delayed.is_none() {
            delayed = Some(tokio::time::Instant::now());
        }
        poll
    })
    .await;
    match (&result, delayed) {
        (Ok(()), None) => {}
        (Ok(()), Some(since)) => tracing::event!(
            tracing::Level::DEBUG,
            palisade.fault_injector.name = faults.name(),
            palisade.fault = "latency",
            palisade.fault.delay_ms = since.elapsed().as_secs_f64() * 1000.0,
            "palisade.fault.injected"
        ),
        (Err(fault), _) => tracing::event!(
            tracing::Level::DEBUG,
            palisade.fault_injector.name = faults.name(),
            palisade.fault = if fault.is_refusal() {
                "refusal"
            } else {
                "error"
            },
            "palisade.fault.injected"
        ),
    }
    result.map_err(injected)
}

/// An injected fault as the upstream failure it imitates: an error is a server error, a
/// refusal an unavailable upstream that says when to retry.
fn injected(fault: palisade::chaos::Injected) -> palisade::mcp::CallError {
    let message = fault.to_string();
    match fault {
        palisade::chaos::Injected::Refused { retry_after, .. } => {
            palisade::mcp::CallError::Failed(palisade::dlq::Failure {
                retry_after: Some(retry_after),
                ..palisade::dlq::Failure::unavailable(message)
            })
        }
        _ => palisade::mcp::CallError::Failed(palisade::dlq::Failure::server_error(message)),
    }
}

/// The gateway: cheap to clone (one per MCP session).
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    connectors: BTreeMap<String, Arc<Connector>>,
    /// Every client's limit, by its key.
    limit: RateLimit,
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
    /// The `[[quotas]]` rules and their limits.
    quotas: std::sync::OnceLock<Vec<(QuotaRule, RateLimit)>>,
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
                limit: RateLimit::new(limiter),
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
        let limits = quotas
            .into_iter()
            .map(|(rule, limiter)| {
                let parts: Vec<KeyPart> = rule.key.iter().map(|k| k.part()).collect();
                // The config refuses an empty key; identity is the safe default regardless.
                let key = KeyBy::new(&parts).unwrap_or_default();
                let limit = RateLimit::new(limiter).key_by(key).rule(rule.name.clone());
                (rule, limit)
            })
            .collect();
        self.inner.quotas.set(limits).is_ok()
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
    async fn resolve<'a>(
        &self,
        name: &'a str,
    ) -> Option<(&Arc<Connector>, std::borrow::Cow<'a, str>)> {
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
            return Ok(Refusal::ShuttingDown.to_result(name));
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
        if let Err(refusal) = self.inner.limit.check(name, client).await {
            return Ok(refusal.to_result(name));
        }
        if let Some(quotas) = self.inner.quotas.get() {
            for (rule, limit) in quotas {
                if !rule.applies_to(name) {
                    continue;
                }
                if let Err(refusal) = limit.check(name, client).await {
                    return Ok(refusal.to_result(name));
                }
            }
        }
        let Some((connector, tool)) = self.resolve(name).await else {
            let connector = &self.inner.connectors[connector_name.as_str()];
            if connector.backend.tools().is_empty() {
                // A stdio server that never finished starting: its tools are not known yet.
                return Ok(palisade::mcp::tool_error(
                    format!(
                        "Connector {connector_name} is not running, so its tools are unknown; its health status says why. Retry later."
                    ),
                    json!({"error": "connector_unavailable", "tool": name, "connector": connector_name}),
                ));
            }
            return Err(unknown());
        };
        let tool = tool.as_ref();
        // The tool's own quota (`tool_settings.<tool>.quota`), if it has one.
        if let Err(refusal) = connector.policy(tool).check_rate(name, client).await {
            return Ok(refusal.to_result(name));
        }
        let (policy, source) = connector.replay_policy(tool);
        // Every call that may be replayed carries a key from its first attempt on, so the
        // upstream can tell a replay from a new call.
        let key = policy.queues().then(idempotency_key);
        let outcome = tokio::select! {
            outcome = connector.invoke(name, tool, &args, key.as_deref()) => outcome,
            () = self.inner.cut.cancelled() => Outcome::Failed(Failure::timeout(format!(
                "{name}: the gateway shut down before the upstream answered (the call may have run)"
            ))),
        };
        let replay = Replay {
            policy,
            source,
            idempotency_key: key.as_deref(),
        };
        // The replay policy's decision, for the trace (`keep` below says where it was kept).
        let source_name = || match source {
            PolicySource::Configured => "configured",
            _ => "annotations",
        };
        if matches!(outcome, Outcome::Failed(_)) && !policy.queues() {
            tracing::event!(
                tracing::Level::DEBUG,
                palisade.replay.policy = policy.as_str(),
                palisade.replay.source = source_name(),
                "palisade.dead_letter.skipped"
            );
        }
        let key_for_dlq = key.clone();
        let result = outcome
            .into_result(name, replay, |letter| async move {
                let parked = letter.park;
                let kind = letter.failure.kind;
                let call = DeadCall {
                    connector: connector.name.clone(),
                    tool: tool.to_owned(),
                    arguments: args,
                    client: client.address.clone(),
                    idempotency_key: key_for_dlq,
                    traceparent: crate::telemetry::current_traceparent(),
                };
                let kept = self.keep(name, call, letter).await;
                match &kept {
                    Ok(Kept { queue, id }) => tracing::event!(
                        tracing::Level::DEBUG,
                        palisade.dlq.queue = queue.as_str(),
                        palisade.dlq.entry_id = *id,
                        palisade.dlq.parked = parked,
                        palisade.replay.policy = policy.as_str(),
                        palisade.replay.source = source_name(),
                        palisade.failure.kind = kind.as_str(),
                        "palisade.dead_letter"
                    ),
                    Err(e) => tracing::event!(
                        tracing::Level::DEBUG,
                        palisade.replay.policy = policy.as_str(),
                        palisade.reason = %e,
                        "palisade.dead_letter.failed"
                    ),
                }
                kept
            })
            .await;
        Ok(result)
    }

    /// Keeps a failed call in the dead-letter queue, or, while its store (Redis) is
    /// unavailable, in the in-memory one.
    async fn keep(&self, name: &str, call: DeadCall, letter: DeadLetter) -> Result<Kept, DlqError> {
        match keep(&self.inner.dlq, name, &call, letter.clone()).await {
            Err(
                e @ DlqError::Store {
                    source: StoreError::Unavailable(_),
                    ..
                },
            ) => match &self.inner.local {
                Some(local) => {
                    tracing::warn!(tool = name, error = %e, "dead-letter store unavailable; keeping the call in memory");
                    keep(local, name, &call, letter).await
                }
                None => Err(e),
            },
            other => other,
        }
    }

    /// The resources of every remote MCP connector, as the upstreams list them (URIs are
    /// passed through; when two upstreams list one URI, the first connector by name serves it).
    pub fn resources(&self) -> Vec<Resource> {
        let mut seen = std::collections::HashSet::new();
        let mut all = Vec::new();
        for connector in self.inner.connectors.values() {
            if let Backend::Remote(remote) = &connector.backend {
                for r in remote.resources() {
                    if seen.insert(r.uri.clone()) {
                        all.push(r);
                    }
                }
            }
        }
        all
    }

    /// The prompts of every remote MCP connector, named like tools
    /// (`{connector}{separator}{prompt}`).
    pub fn prompts(&self) -> Vec<Prompt> {
        let mut all = Vec::new();
        for (name, connector) in &self.inner.connectors {
            if let Backend::Remote(remote) = &connector.backend {
                for mut p in remote.prompts() {
                    p.name = crate::names::served(name, &self.inner.separator, &p.name);
                    all.push(p);
                }
            }
        }
        all
    }

    /// Reads `uri` from the connector that lists it, under the client's rate limit and the
    /// connector's breaker, bulkhead and timeout.
    pub async fn read_resource_for(
        &self,
        client: &Caller,
        uri: &str,
    ) -> Result<ReadResourceResult, McpError> {
        let found = self
            .inner
            .connectors
            .values()
            .find_map(|c| match &c.backend {
                Backend::Remote(r) if r.resources().iter().any(|x| x.uri == uri) => Some((c, r)),
                _ => None,
            });
        let Some((connector, remote)) = found else {
            return Err(McpError::resource_not_found(
                format!("no upstream lists the resource {uri:?}; see resources/list"),
                None,
            ));
        };
        if let Err(refusal) = self.inner.limit.check(uri, client).await {
            return Err(refusal_error(uri, &refusal));
        }
        let outcome =
            palisade::mcp::invoke(&connector.policy, uri, || remote.read_resource(uri)).await;
        outcome_to_error(uri, outcome)
    }

    /// Gets the prompt served as `name` from its connector, under the same policies as a
    /// resource read.
    pub async fn get_prompt_for(
        &self,
        client: &Caller,
        name: &str,
        arguments: Option<JsonObject>,
    ) -> Result<GetPromptResult, McpError> {
        let sep = self.inner.separator.as_str();
        let found = self
            .inner
            .connectors
            .iter()
            .find_map(|(cname, c)| match &c.backend {
                Backend::Remote(r) => r
                    .prompts()
                    .into_iter()
                    .find(|p| crate::names::is_served_as(name, cname, sep, &p.name))
                    .map(|p| (c, r, p.name)),
                _ => None,
            });
        let Some((connector, remote, upstream_name)) = found else {
            return Err(McpError::invalid_params(
                format!("unknown prompt {name:?}; see prompts/list"),
                None,
            ));
        };
        if let Err(refusal) = self.inner.limit.check(name, client).await {
            return Err(refusal_error(name, &refusal));
        }
        let outcome = palisade::mcp::invoke(&connector.policy, name, || {
            remote.get_prompt(&upstream_name, arguments)
        })
        .await;
        outcome_to_error(name, outcome)
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
        let served = crate::names::served(&call.connector, &self.inner.separator, &call.tool);
        // A trace of its own, linked to the failed call's.
        let span = tracing::debug_span!(
            parent: None,
            "palisade.replay",
            otel.name = %format_args!("replay {served}"),
            otel.kind = "internal",
            mcp.method.name = "tools/call",
            gen_ai.tool.name = served.as_str(),
            gen_ai.operation.name = "execute_tool",
            palisade.dlq.entry_id = entry.id,
            palisade.dlq.attempt = entry.attempts + 1,
            palisade.outcome = tracing::field::Empty,
            error.type = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        );
        if let Some(traceparent) = &call.traceparent {
            crate::telemetry::link(&span, traceparent);
        }
        let outcome = connector
            .invoke(
                &served,
                &call.tool,
                &call.arguments,
                call.idempotency_key.as_deref(),
            )
            .instrument(span.clone())
            .await;
        span.record("palisade.outcome", outcome.code());
        if !outcome.is_done() {
            span.record("error.type", outcome.code());
            span.record(
                "otel.status_description",
                "the replay did not get an answer",
            );
        }
        outcome.into_replay(&served).map(|_| {
            tracing::info!(connector = %call.connector, tool = %call.tool, "replayed a dead-lettered call");
        })
    }
}

/// A refusal of a resource read or prompt (which have no tool-error form): a JSON-RPC error
/// whose `data` carries the same facts as a refused tool call (`error`, `retry_after_ms`).
fn refusal_error(what: &str, refusal: &Refusal) -> McpError {
    let result = refusal.to_result(what);
    let message = result
        .content
        .first()
        .and_then(|c| c.as_text())
        .map_or_else(|| refusal.code().to_owned(), |t| t.text.clone());
    McpError::internal_error(message, result.structured_content)
}

/// A resource read's or prompt's outcome as the client sees it.
fn outcome_to_error<T>(what: &str, outcome: Outcome<T>) -> Result<T, McpError> {
    match outcome {
        Outcome::Done(value) => Ok(value),
        Outcome::Refused(refusal) => Err(refusal_error(what, &refusal)),
        Outcome::Rejected(message) => Err(McpError::invalid_params(message, None)),
        Outcome::Failed(failure) | Outcome::Lost(failure) => Err(McpError::internal_error(
            format!("{what}: the upstream failed: {}", failure.message),
            Some(json!({"error": "upstream_failed", "kind": failure.kind.as_str()})),
        )),
        // `Outcome` may grow.
        #[allow(unreachable_patterns)]
        _ => Err(McpError::internal_error(
            format!("{what}: not answered"),
            None,
        )),
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
                .enable_resources()
                .enable_prompts()
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

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(self.resources()))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let client = client_of(&self.inner.client_ip, &context);
        self.read_resource_for(&client, &request.uri)
            .await
            .map(Into::into)
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        Ok(ListPromptsResult::with_all_items(self.prompts()))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let client = client_of(&self.inner.client_ip, &context);
        self.get_prompt_for(&client, &request.name, request.arguments)
            .await
            .map(Into::into)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let client = client_of(&self.inner.client_ip, &context);
        // The call's span (a trace of its own unless the caller sent trace context); every
        // decision on its path is an event of it, every upstream attempt a child.
        let span = crate::telemetry::tool_call_span(&request.name, &context, &client);
        crate::telemetry::set_remote_parent(&span, request.meta.as_ref().map(|m| &m.0.0), &context);
        let result = async {
            if let Some(scope) = self.missing_scope(&request.name, claims_of(&context)) {
                return Ok(palisade::mcp::tool_error(
                    format!(
                        "Not allowed: {} needs the scope {scope:?}, which this client's token does not carry.",
                        request.name
                    ),
                    json!({"error": "insufficient_scope", "tool": request.name, "scope": scope}),
                ));
            }
            let args = request.arguments.unwrap_or_default();
            self.call(&client, &request.name, args).await
        }
        .instrument(span.clone())
        .await;
        crate::telemetry::record_result(&span, &result);
        result.map(Into::into)
    }
}
