//! mcp-load against a real rmcp streamable-HTTP server on loopback: the library and the binary.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::serve::Listener;
use mcp_load::{ArgsTemplate, LoadConfig, LoadError, Stop};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Value, json};

/// The texts the server received, shared by every session.
type Recorded = Arc<std::sync::Mutex<Vec<String>>>;

/// One tool, `record`: keeps its `text`, and fails (a tool error) when `n` is a multiple of 4.
#[derive(Clone)]
struct Recorder {
    seen: Recorded,
}

impl ServerHandler for Recorder {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let schema = json!({"type": "object"}).as_object().unwrap().clone();
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            "record",
            "Keeps its text.",
            Arc::new(schema),
        )]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if request.name != "record" {
            return Err(McpError::invalid_params(
                format!("unknown tool {}", request.name),
                None,
            ));
        }
        let args = request.arguments.unwrap_or_default();
        let text = args
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        self.seen.lock().unwrap().push(text);
        let n = args.get("n").and_then(Value::as_u64).unwrap_or(1);
        let result = if n.is_multiple_of(4) {
            let mut r = CallToolResult::structured_error(json!({"error": "every_fourth"}));
            r.content = vec![ContentBlock::text("refused: a multiple of four")];
            r
        } else {
            CallToolResult::success(vec![ContentBlock::text("ok")])
        };
        Ok(result.into())
    }
}

struct Server {
    url: String,
    seen: Recorded,
    sessions: Arc<AtomicUsize>,
}

async fn server() -> Server {
    let seen = Recorded::default();
    let sessions = Arc::new(AtomicUsize::new(0));
    let service = {
        let (seen, sessions) = (seen.clone(), sessions.clone());
        StreamableHttpService::new(
            move || {
                sessions.fetch_add(1, Ordering::SeqCst);
                Ok(Recorder { seen: seen.clone() })
            },
            Arc::new(LocalSessionManager::default()),
            StreamableHttpServerConfig::default(),
        )
    };
    let listener = palisade_admin::bind_nodelay(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().nest_service("/mcp", service);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        url: format!("http://{addr}/mcp"),
        seen,
        sessions,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn makes_every_call_once_with_its_number_and_counts_errors_by_kind() {
    let server = server().await;
    let mut config = LoadConfig::new(server.url.clone(), "record");
    config.args = ArgsTemplate::parse(r#"{"text": "call-{i}", "n": "{i}"}"#).unwrap();
    config.sessions = 2;
    config.concurrency = 3;
    config.warmup = 8;
    config.stop = Stop::Calls(40);
    let report = mcp_load::run(&config).await.unwrap();

    assert_eq!(report.calls, 40);
    // Measured calls are numbered 8..48: 10 of them are multiples of 4.
    assert_eq!(report.ok, 30);
    assert_eq!(report.errors.get("tool_error:every_fourth"), Some(&10));
    assert_eq!(report.failed(), 10);
    assert_eq!(
        report.error_samples["tool_error:every_fourth"],
        "refused: a multiple of four"
    );
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 48, "warm-up and measured calls, each once");
    let distinct: BTreeSet<String> = seen.into_iter().collect();
    let expected: BTreeSet<String> = (0..48).map(|i| format!("call-{i}")).collect();
    assert_eq!(distinct, expected);
    assert_eq!(server.sessions.load(Ordering::SeqCst), 2);

    let l = report.latency_us;
    assert!(l.min > 0.0);
    assert!(l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99);
    assert!(l.p99 <= l.p999 && l.p999 <= l.max);
    assert!(report.calls_per_sec > 0.0);
    let table = report.table();
    assert!(table.contains("tool_error:every_fourth"), "{table}");
    assert!(table.contains("p99.9"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duration_run_stops_and_an_unknown_tool_is_a_jsonrpc_error() {
    let server = server().await;
    let mut config = LoadConfig::new(server.url.clone(), "nope");
    config.stop = Stop::Duration(std::time::Duration::from_millis(200));
    let report = mcp_load::run(&config).await.unwrap();
    assert!(report.calls > 0);
    assert_eq!(report.ok, 0);
    assert_eq!(report.failed(), report.calls);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    let kind = report.errors.keys().next().unwrap();
    assert!(
        kind.starts_with("tool_error") || kind.starts_with("jsonrpc:"),
        "{kind}"
    );
}

#[tokio::test]
async fn refuses_bad_configs_and_unreachable_servers_by_name() {
    let mut config = LoadConfig::new("ftp://x/mcp", "t");
    assert!(
        matches!(mcp_load::run(&config).await, Err(LoadError::Config(m)) if m.contains("http://"))
    );
    config.url = "http://127.0.0.1:9/mcp".into();
    config.concurrency = 0;
    assert!(
        matches!(mcp_load::run(&config).await, Err(LoadError::Config(m)) if m.contains("at least 1"))
    );
    config.concurrency = 1;
    config.timeout = std::time::Duration::from_secs(5);
    let err = mcp_load::run(&config).await.unwrap_err();
    assert!(matches!(err, LoadError::Session(_)), "{err}");
}

fn mcp_load(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mcp-load"))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_json_lists_tools_and_names_bad_flags() {
    let server = server().await;
    let url = server.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        mcp_load(&[
            &url,
            "--tool",
            "record",
            "--args",
            r#"{"n": "{i}"}"#,
            "-c",
            "4",
            "-n",
            "20",
            "--json",
        ])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["calls"], 20);
    assert_eq!(report["ok"], 15);
    assert_eq!(report["errors"]["tool_error:every_fourth"], 5);
    assert_eq!(report["concurrency"], 4);
    for p in ["p50", "p90", "p99", "p999", "max"] {
        assert!(report["latency_us"][p].as_f64().unwrap() > 0.0, "{p}");
    }

    let url = server.url.clone();
    let out = tokio::task::spawn_blocking(move || mcp_load(&[&url, "--list-tools"]))
        .await
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("record\tKeeps its text."));

    let url = server.url.clone();
    let out =
        tokio::task::spawn_blocking(move || mcp_load(&[&url, "-t", "record", "--args", "[1]"]))
            .await
            .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid --args") && stderr.contains("JSON object"),
        "{stderr}"
    );
}
