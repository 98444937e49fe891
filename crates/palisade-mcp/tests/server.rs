//! `Guarded` around a real rmcp server, served over streamable HTTP on loopback and called by a
//! real rmcp client: rate limits, breakers, timeouts and dead letters as clients see them.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::serve::Listener;
use palisade_breaker::CircuitBreaker;
use palisade_core::{ComponentKind, Registry};
use palisade_dlq::{DeadLetterQueue, EntryState};
use palisade_mcp::{
    DeadCall, Guarded, IDEMPOTENCY_META, Identity, KeyBy, RateLimit, ToolPolicies,
    ToolPoliciesConfig, ToolPolicy,
};
use palisade_ratelimit::{Quota, RateLimitConfig};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode,
    ListToolsResult, MetaObject, PaginatedRequestParams, RequestMetaObject, ServerCapabilities,
    ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::{RequestContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{
    ErrorData as McpError, RoleClient, RoleServer, ServerHandler, ServiceError, ServiceExt,
};
use serde_json::{Value, json};

/// What the tools saw: each call's tool and idempotency key (from `_meta`).
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// The inner server: `search` and `echo` answer, `flaky` and the three page tools fail,
/// `slow` never answers, anything else is unknown (invalid params).
#[derive(Clone, Default)]
struct Tools {
    seen: Seen,
}

fn tool(name: &'static str, annotations: Option<ToolAnnotations>) -> Tool {
    let schema = json!({"type": "object"}).as_object().unwrap().clone();
    let mut t = Tool::new(name, "a test tool", Arc::new(schema));
    t.annotations = annotations;
    t
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let a = ToolAnnotations::new;
        Ok(ListToolsResult::with_all_items(vec![
            tool("search", Some(a().read_only(true))),
            tool("echo", None),
            tool("flaky", None),
            tool("slow", None),
            tool("delete_page", Some(a().destructive(true))),
            tool("lookup", Some(a().read_only(false).idempotent(true))),
            tool("read_page", Some(a().read_only(true))),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let key = context
            .meta
            .get(IDEMPOTENCY_META)
            .and_then(Value::as_str)
            .map(str::to_owned);
        self.seen
            .lock()
            .unwrap()
            .push((request.name.to_string(), key));
        match &*request.name {
            "search" | "echo" => Ok(CallToolResult::success(vec![ContentBlock::text("ok")]).into()),
            "flaky" | "delete_page" | "lookup" | "read_page" => {
                Err(McpError::internal_error("backend down", None))
            }
            "slow" => std::future::pending().await,
            other => Err(McpError::invalid_params(
                format!("unknown tool {other}"),
                None,
            )),
        }
    }
}

impl Tools {
    fn calls_of(&self, tool: &str) -> Vec<Option<String>> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(t, _)| t == tool)
            .map(|(_, k)| k.clone())
            .collect()
    }
}

/// Takes an `x-user` header as the caller's authenticated identity (what auth middleware does).
async fn identity(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let user = request
        .headers()
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .map(|u| format!("sub:{u}"));
    if let Some(user) = user {
        request.extensions_mut().insert(Identity(user));
    }
    next.run(request).await
}

/// Serves `server` over streamable HTTP on loopback; its MCP endpoint.
async fn serve<S: ServerHandler + Clone>(server: Guarded<S>) -> String {
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let listener = palisade_admin::bind_nodelay(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(identity));
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    format!("http://{addr}/mcp")
}

type Client = RunningService<RoleClient, ()>;

async fn client(url: &str) -> Client {
    ().serve(StreamableHttpClientTransport::from_uri(url.to_owned()))
        .await
        .unwrap()
}

async fn client_as(url: &str, user: &str) -> Client {
    let mut headers = HashMap::new();
    headers.insert(
        http::HeaderName::from_static("x-user"),
        http::HeaderValue::from_str(user).unwrap(),
    );
    let config =
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).custom_headers(headers);
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
        .unwrap()
}

async fn try_call(
    client: &Client,
    name: &str,
    meta: Option<Value>,
) -> Result<CallToolResult, ServiceError> {
    let mut params = CallToolRequestParams::new(name.to_owned())
        .with_arguments(json!({"page": 7}).as_object().unwrap().clone());
    if let Some(Value::Object(meta)) = meta {
        params.meta = Some(RequestMetaObject(MetaObject(meta)));
    }
    client.call_tool(params).await
}

async fn call(client: &Client, name: &str) -> CallToolResult {
    try_call(client, name, None).await.unwrap()
}

/// A tool error's `error` code (`None` for a success).
fn error(result: &CallToolResult) -> Option<String> {
    if result.is_error != Some(true) {
        return None;
    }
    let facts = result
        .structured_content
        .as_ref()
        .expect("structured facts");
    Some(facts["error"].as_str().unwrap().to_owned())
}

fn facts(result: &CallToolResult) -> &Value {
    result.structured_content.as_ref().unwrap()
}

fn text(result: &CallToolResult) -> &str {
    &result.content[0].as_text().unwrap().text
}

fn per_minute(n: u32, name: &str, registry: &Registry) -> palisade_ratelimit::Limiter {
    RateLimitConfig {
        quota: Quota::per_minute(n),
        ..Default::default()
    }
    .build(name)
    .registry(registry)
    .finish()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tools_quota_refuses_its_third_call_and_leaves_other_tools_alone() {
    let registry = Registry::new();
    let search = ToolPolicy::builder()
        .rate_limit(RateLimit::new(per_minute(2, "search", &registry)).key_by(KeyBy::IDENTITY))
        .build();
    let url = serve(Guarded::new(Tools::default()).tool("search", search)).await;
    let anonymous = client(&url).await;

    assert_eq!(error(&call(&anonymous, "search").await), None);
    assert_eq!(error(&call(&anonymous, "search").await), None);
    let refused = call(&anonymous, "search").await;
    assert_eq!(error(&refused).as_deref(), Some("rate_limited"));
    assert_eq!(refused.is_error, Some(true));
    let retry = facts(&refused)["retry_after_ms"].as_u64().unwrap();
    assert!((1..=30_000).contains(&retry), "retry after {retry} ms");
    assert!(
        text(&refused).starts_with("Rate limited: this client has used up its quota"),
        "{}",
        text(&refused)
    );
    assert_eq!(facts(&refused)["tool"], "search");

    // Another tool is unaffected.
    assert_eq!(error(&call(&anonymous, "echo").await), None);
    // An authenticated caller has its own bucket; an anonymous one shares its address's.
    let bob = client_as(&url, "bob").await;
    assert_eq!(error(&call(&bob, "search").await), None);
    let same_address = client(&url).await;
    assert_eq!(
        error(&call(&same_address, "search").await).as_deref(),
        Some("rate_limited")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_tool_opens_its_breaker_and_bad_input_does_not() {
    let registry = Registry::new();
    let config: ToolPoliciesConfig = toml::from_str(
        r#"
        [tools.flaky]
        breaker = { consecutive_failures = 2, wait_duration = "60s" }
        [tools.nope]
        breaker = { consecutive_failures = 1 }
        "#,
    )
    .unwrap();
    let tools = Tools::default();
    let url =
        serve(Guarded::new(tools.clone()).policies(config.build(&registry, None).unwrap())).await;
    let client = client(&url).await;

    for _ in 0..2 {
        let failed = call(&client, "flaky").await;
        assert_eq!(
            error(&failed).as_deref(),
            Some("upstream_failed"),
            "{failed:?}"
        );
        assert_eq!(facts(&failed)["kind"], "server_error");
        assert_eq!(facts(&failed)["replay"], "none");
        assert!(text(&failed).contains("backend down"), "{}", text(&failed));
    }
    let refused = call(&client, "flaky").await;
    assert_eq!(error(&refused).as_deref(), Some("breaker_open"));
    assert_eq!(facts(&refused)["state"], "open");
    let retry = facts(&refused)["retry_after_ms"].as_u64().unwrap();
    assert!((1..=60_000).contains(&retry), "retry after {retry} ms");
    assert_eq!(
        tools.calls_of("flaky").len(),
        2,
        "an open breaker sends nothing"
    );
    let snapshot = registry
        .snapshot(ComponentKind::CircuitBreaker, "flaky")
        .unwrap();
    assert_eq!(snapshot["state"], "open");

    // Bad input comes back as the server's own error, and never trips a breaker.
    for _ in 0..3 {
        let err = try_call(&client, "nope", None).await.unwrap_err();
        let ServiceError::McpError(e) = err else {
            panic!("{err}")
        };
        assert_eq!(e.code, ErrorCode::INVALID_PARAMS);
        assert!(e.message.contains("unknown tool nope"), "{}", e.message);
    }
    assert_eq!(tools.calls_of("nope").len(), 3);
    let snapshot = registry
        .snapshot(ComponentKind::CircuitBreaker, "nope")
        .unwrap();
    assert_eq!(snapshot["state"], "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_timeout_is_abandoned_and_counts_as_a_failure() {
    let slow = ToolPolicy::builder()
        .breaker(
            CircuitBreaker::builder("slow")
                .consecutive_failures(1)
                .build()
                .unwrap(),
        )
        .timeout(Duration::from_millis(200))
        .build();
    let url = serve(Guarded::new(Tools::default()).tool("slow", slow)).await;
    let client = client(&url).await;

    let start = Instant::now();
    let timed_out = call(&client, "slow").await;
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_eq!(
        error(&timed_out).as_deref(),
        Some("timed_out"),
        "{timed_out:?}"
    );
    assert_eq!(facts(&timed_out)["timeout_ms"], 200);
    assert!(
        text(&timed_out).contains("may still have run"),
        "{}",
        text(&timed_out)
    );
    // The timeout was a breaker failure: the next call is refused at once.
    let refused = call(&client, "slow").await;
    assert_eq!(error(&refused).as_deref(), Some("breaker_open"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_calls_are_parked_queued_or_dropped_as_their_annotations_say() {
    let dlq = DeadLetterQueue::<DeadCall>::builder("tool-calls")
        .build()
        .unwrap();
    let tools = Tools::default();
    let server = Guarded::new(tools.clone())
        .default_policy(ToolPolicy::builder().dead_letter(dlq.clone()).build());
    let url = serve(server).await;
    let client = client(&url).await;

    // destructiveHint: parked for an operator, never replayed by itself.
    let deleted = call(&client, "delete_page").await;
    assert_eq!(error(&deleted).as_deref(), Some("upstream_failed"));
    assert_eq!(facts(&deleted)["replay"], "parked");
    assert!(
        text(&deleted).contains("will NOT be replayed automatically"),
        "{}",
        text(&deleted)
    );
    let id = facts(&deleted)["queued"]["id"].as_u64().unwrap();
    assert_eq!(facts(&deleted)["queued"]["queue"], "tool-calls");
    let entry = dlq.get(id).await.unwrap().unwrap();
    assert_eq!(entry.state, EntryState::Parked);
    assert_eq!(entry.operation, "delete_page");
    assert_eq!(entry.payload.tool, "delete_page");
    assert_eq!(entry.payload.arguments["page"], 7);
    assert_eq!(entry.payload.client, "127.0.0.1");
    let key = entry.payload.idempotency_key.clone().unwrap();
    assert_eq!(facts(&deleted)["idempotency_key"], key.as_str());
    // The server saw the key the entry keeps.
    assert_eq!(tools.calls_of("delete_page"), vec![Some(key)]);

    // idempotentHint: queued for automatic replay, with the client's own key when it sent one.
    let looked_up = try_call(
        &client,
        "lookup",
        Some(json!({(IDEMPOTENCY_META): "client-key-1"})),
    )
    .await
    .unwrap();
    assert_eq!(facts(&looked_up)["replay"], "automatic");
    let id = facts(&looked_up)["queued"]["id"].as_u64().unwrap();
    let entry = dlq.get(id).await.unwrap().unwrap();
    assert_eq!(entry.state, EntryState::Scheduled);
    assert_eq!(
        entry.payload.idempotency_key.as_deref(),
        Some("client-key-1")
    );
    assert_eq!(
        tools.calls_of("lookup"),
        vec![Some("client-key-1".to_owned())]
    );

    // readOnlyHint: not kept (a replayed read reaches nobody); no key needed.
    let read = call(&client, "read_page").await;
    assert_eq!(facts(&read)["replay"], "none");
    assert_eq!(facts(&read)["queued"], Value::Null);
    assert!(text(&read).contains("it is read-only"), "{}", text(&read));
    assert_eq!(tools.calls_of("read_page"), vec![None]);

    assert_eq!(dlq.stats().await.unwrap().store.total, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_are_made_per_listed_tool_and_listing_passes_through() {
    let registry = Registry::new();
    let policies = {
        let registry = registry.clone();
        ToolPolicies::new().per_tool(move |tool| {
            let breaker = CircuitBreaker::builder(tool.name.to_string())
                .registry(&registry)
                .build()
                .unwrap();
            ToolPolicy::builder().breaker(breaker).build()
        })
    };
    let url = serve(Guarded::new(Tools::default()).policies(policies)).await;
    let client = client(&url).await;

    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 7);
    let lookup = tools.iter().find(|t| t.name == "lookup").unwrap();
    assert_eq!(
        lookup.annotations.as_ref().unwrap().idempotent_hint,
        Some(true)
    );

    assert_eq!(error(&call(&client, "echo").await), None);
    assert_eq!(error(&call(&client, "echo").await), None);
    assert!(try_call(&client, "made_up", None).await.is_err());
    // One breaker for the listed tool; none for a name the server does not list.
    assert_eq!(registry.list(ComponentKind::CircuitBreaker), vec!["echo"]);
}
