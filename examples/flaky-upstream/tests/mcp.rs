//! `flaky-upstream --mcp` as the gateway's end-to-end tests use it: the binary on a free port,
//! a real rmcp client over streamable HTTP, and `/control` beside `/mcp` to steer it.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientRequest, ErrorCode, GetPromptRequestParams,
    PingRequest, ReadResourceRequestParams, ResourceContents, Role, ServerResult,
};
use rmcp::service::{NotificationContext, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// The line `--mcp` prints once it accepts connections; the endpoint URL follows it.
const READY: &str = "flaky-upstream MCP endpoint ";
/// How long anything the tests wait for may take (a loaded CI machine is slow, never stuck).
const DEADLINE: Duration = Duration::from_secs(30);

/// A `flaky-upstream --mcp --port 0` process, killed on drop.
struct Server {
    child: Child,
    /// The MCP endpoint, `http://127.0.0.1:<port>/mcp`.
    mcp: String,
    /// `http://127.0.0.1:<port>`, for `/control` and `/health`.
    base: String,
    /// Kept open so the server never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Server {
    async fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flaky-upstream"))
            .args(["--mcp", "--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let mcp = tokio::time::timeout(DEADLINE, async {
            loop {
                line.clear();
                let n = stdout.read_line(&mut line).await.unwrap();
                assert!(n > 0, "flaky-upstream exited before it was ready");
                if let Some(url) = line.trim().strip_prefix(READY) {
                    return url.to_owned();
                }
            }
        })
        .await
        .expect("flaky-upstream prints its MCP endpoint");
        let base = mcp.strip_suffix("/mcp").unwrap().to_owned();
        Server {
            child,
            mcp,
            base,
            _stdout: stdout,
        }
    }

    async fn client<H: ClientHandler>(&self, handler: H) -> RunningService<RoleClient, H> {
        handler
            .serve(StreamableHttpClientTransport::from_uri(self.mcp.clone()))
            .await
            .unwrap()
    }

    /// `POST /control` with `body`: the status and the JSON answer.
    async fn post_control(&self, body: Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/control", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// `POST /control` that must succeed: the report.
    async fn control(&self, body: Value) -> Value {
        let (status, report) = self.post_control(body.clone()).await;
        assert_eq!(status, 200, "control {body}: {report}");
        report
    }

    /// `GET {path}`: the status and the JSON answer.
    async fn get(&self, path: &str) -> (u16, Value) {
        let response = reqwest::get(format!("{}{path}", self.base)).await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

/// Polls `cond` until it holds, failing the test after [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + DEADLINE;
    while !cond().await {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn params(name: &str, args: Value) -> CallToolRequestParams {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    CallToolRequestParams::new(name.to_owned()).with_arguments(args)
}

async fn call<H: ClientHandler>(
    client: &RunningService<RoleClient, H>,
    name: &str,
    args: Value,
) -> Result<CallToolResult, ServiceError> {
    client.call_tool(params(name, args)).await
}

async fn tool_names<H: ClientHandler>(client: &RunningService<RoleClient, H>) -> Vec<String> {
    client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect()
}

fn text(result: &CallToolResult) -> String {
    result.content[0].as_text().unwrap().text.clone()
}

/// An MCP client handler that counts `notifications/tools/list_changed`.
#[derive(Clone, Default)]
struct ListWatcher(Arc<AtomicUsize>);

impl ClientHandler for ListWatcher {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_answer_and_fail_on_command_with_a_jsonrpc_error() {
    let server = Server::start(&[]).await;
    let client = server.client(()).await;

    let names = tool_names(&client).await;
    for name in [
        "echo",
        "add",
        "pid",
        "echo_json",
        "crash",
        "get.forecast",
        "search docs",
    ] {
        assert!(names.contains(&name.to_owned()), "{name} in {names:?}");
    }

    let echoed = call(&client, "echo", json!({"text": "hi"})).await.unwrap();
    assert_eq!(text(&echoed), "hi");
    for name in ["echo_json", "get.forecast", "search docs"] {
        let answer = call(&client, name, json!({"city": "Oslo"})).await.unwrap();
        let answer = answer.structured_content.unwrap();
        assert_eq!(answer["tool"], name);
        assert_eq!(answer["arguments"], json!({"city": "Oslo"}));
        assert_eq!(answer["pid"], server.child.id().unwrap());
    }

    // ping is answered.
    let pong = client
        .send_request(ClientRequest::PingRequest(PingRequest {
            method: Default::default(),
            extensions: Default::default(),
        }))
        .await
        .unwrap();
    assert!(matches!(pong, ServerResult::EmptyResult(_)), "{pong:?}");

    // Every call fails now, as a JSON-RPC error (not a tool result).
    let report = server.control(json!({"failure_rate": 1})).await;
    assert_eq!(report["behaviour"]["failure_rate"], 1.0);
    let err = call(&client, "echo_json", json!({})).await.unwrap_err();
    let ServiceError::McpError(err) = err else {
        panic!("expected a JSON-RPC error, got {err:?}")
    };
    assert_eq!(err.code, ErrorCode::INTERNAL_ERROR);
    assert!(err.message.contains("injected failure"), "{}", err.message);
    assert_eq!(server.get("/health").await.0, 503);

    let (_, report) = server.get("/control").await;
    assert_eq!(report["calls"], json!({"ok": 4, "failed": 1}), "{report}");
    assert_eq!(report["tools"]["echo_json"], json!({"ok": 1, "failed": 1}));
    assert_eq!(
        report["tools"]["get.forecast"],
        json!({"ok": 1, "failed": 0})
    );
    assert_eq!(report["tools"]["echo"], json!({"ok": 1, "failed": 0}));
    assert_eq!(report["sessions"], 1);

    // Healthy again, but slow: an answer takes latency_ms at least.
    server
        .control(json!({"failure_rate": 0, "latency_ms": 300}))
        .await;
    assert_eq!(server.get("/health").await.0, 200);
    let started = Instant::now();
    let sum = call(&client, "add", json!({"a": 2, "b": 3})).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(sum.structured_content.unwrap()["sum"], 5.0);

    // An unknown tool is an invalid-params error, not counted.
    let err = call(&client, "nope", json!({})).await.unwrap_err();
    assert!(
        matches!(&err, ServiceError::McpError(e) if e.code == ErrorCode::INVALID_PARAMS),
        "{err:?}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_set_the_starting_behaviour_and_crash_exits() {
    let mut server = Server::start(&["--failure-rate", "1", "--no-odd-names"]).await;
    let client = server.client(()).await;
    let names = tool_names(&client).await;
    assert_eq!(names, ["echo", "add", "pid", "echo_json", "crash"]);
    let err = call(&client, "echo", json!({"text": "x"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ServiceError::McpError(e) if e.code == ErrorCode::INTERNAL_ERROR),
        "{err:?}"
    );
    let (status, report) = server.get("/control").await;
    assert_eq!(status, 200);
    assert_eq!(report["behaviour"]["failure_rate"], 1.0);
    assert_eq!(report["tools"]["echo"], json!({"ok": 0, "failed": 1}));

    let response = reqwest::Client::new()
        .post(format!("{}/control/crash", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let status = tokio::time::timeout(DEADLINE, server.child.wait())
        .await
        .expect("the server exits")
        .unwrap();
    assert_eq!(status.code(), Some(flaky_upstream::CRASH_STATUS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_status_resource_and_a_greet_prompt() {
    let server = Server::start(&["--latency-ms", "5"]).await;
    let client = server.client(()).await;
    let info = client.peer_info().unwrap();
    assert!(info.capabilities.resources.is_some());
    assert!(info.capabilities.prompts.is_some());

    let resources = client.list_all_resources().await.unwrap();
    assert_eq!(resources.len(), 1);
    assert_eq!(resources[0].uri, flaky_upstream::STATUS_RESOURCE);
    let read_status = || async {
        let read = client
            .read_resource(ReadResourceRequestParams::new(
                flaky_upstream::STATUS_RESOURCE,
            ))
            .await
            .unwrap();
        assert_eq!(read.contents.len(), 1);
        let ResourceContents::TextResourceContents { text, .. } = &read.contents[0] else {
            panic!("expected text, got {:?}", read.contents[0])
        };
        serde_json::from_str::<Value>(text).unwrap()
    };
    assert_eq!(
        read_status().await,
        json!({"failure_rate": 0.0, "latency_ms": 5, "status": 503})
    );
    server
        .control(json!({"failure_rate": 0.5, "status": 500}))
        .await;
    assert_eq!(
        read_status().await,
        json!({"failure_rate": 0.5, "latency_ms": 5, "status": 500})
    );
    let missing = client
        .read_resource(ReadResourceRequestParams::new("flaky://nope"))
        .await
        .unwrap_err();
    assert!(matches!(missing, ServiceError::McpError(_)), "{missing:?}");

    let prompts = client.list_all_prompts().await.unwrap();
    assert_eq!(prompts.len(), 1);
    assert_eq!(prompts[0].name, flaky_upstream::GREET_PROMPT);
    let args = prompts[0].arguments.as_ref().unwrap();
    assert_eq!(args[0].name, "name");
    assert_eq!(args[0].required, Some(true));
    let Value::Object(name) = json!({"name": "Ada"}) else {
        unreachable!()
    };
    let greeting = client
        .get_prompt(GetPromptRequestParams::new(flaky_upstream::GREET_PROMPT).with_arguments(name))
        .await
        .unwrap();
    assert_eq!(greeting.messages.len(), 1);
    assert_eq!(greeting.messages[0].role, Role::User);
    assert_eq!(
        greeting.messages[0].content.as_text().unwrap().text,
        "Hello, Ada"
    );
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_tools_replace_the_list_and_every_session_is_told() {
    let server = Server::start(&[]).await;
    let (first, second) = (ListWatcher::default(), ListWatcher::default());
    let a = server.client(first.clone()).await;
    let b = server.client(second.clone()).await;
    // A session gets notifications once the server has its `notifications/initialized`.
    eventually("both sessions are registered", || async {
        server.get("/control").await.1["sessions"] == 2
    })
    .await;

    let report = server
        .control(json!({"extra_tools": ["alpha", "beta"]}))
        .await;
    assert_eq!(report["notified"], 2, "{report}");
    assert_eq!(report["extra_tools"], json!(["alpha", "beta"]));
    eventually("both clients are told the tool list changed", || async {
        first.0.load(Ordering::SeqCst) >= 1 && second.0.load(Ordering::SeqCst) >= 1
    })
    .await;
    let names = tool_names(&a).await;
    assert!(
        names.ends_with(&["alpha".to_owned(), "beta".to_owned()]),
        "{names:?}"
    );
    let echoed = call(&b, "beta", json!({"text": "b"})).await.unwrap();
    assert_eq!(text(&echoed), "b");

    let told = first.0.load(Ordering::SeqCst);
    server.control(json!({"extra_tools": ["gamma"]})).await;
    eventually("the first client is told again", || async {
        first.0.load(Ordering::SeqCst) > told
    })
    .await;
    let names = tool_names(&b).await;
    assert!(names.contains(&"gamma".to_owned()), "{names:?}");
    assert!(!names.contains(&"alpha".to_owned()), "{names:?}");
    let gone = call(&a, "alpha", json!({"text": "a"})).await.unwrap_err();
    assert!(
        matches!(&gone, ServiceError::McpError(e) if e.code == ErrorCode::INVALID_PARAMS),
        "{gone:?}"
    );

    // Bad lists change nothing.
    for (body, status) in [
        (json!({"extra_tools": ["echo"]}), 422),
        (json!({"extra_tools": ["get.forecast"]}), 422),
        (json!({"extra_tools": ["x", "x"]}), 422),
        (json!({"extra_tools": [""]}), 422),
        (json!({"extra_tools": ["ok"], "failure_rate": 2}), 422),
        (json!({"extra_tools": "x"}), 400),
        (json!({"extra_tools": ["ok"], "bogus": 1}), 400),
    ] {
        let (got, answer) = server.post_control(body.clone()).await;
        assert_eq!(got, status, "{body}: {answer}");
    }
    let (_, report) = server.get("/control").await;
    assert_eq!(report["extra_tools"], json!(["gamma"]));
    assert_eq!(report["behaviour"]["failure_rate"], 0.0);

    // A closed session is forgotten.
    a.cancel().await.unwrap();
    eventually("the closed session is forgotten", || async {
        server.get("/control").await.1["sessions"] == 1
    })
    .await;
    b.cancel().await.unwrap();
}
