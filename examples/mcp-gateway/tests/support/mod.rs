//! Real processes for the end-to-end tests: gateways and flaky upstreams started from the
//! `mcp-gateway` binary, an rmcp client over streamable HTTP, and the admin API over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

#[allow(unused_imports)] // not every test binary polls (otel.rs without its feature)
pub use palisade_testkit::{eventually, unique};

/// The admin token every test gateway runs with.
pub const TOKEN: &str = "e2e-admin-token-0123456789abcdef";
/// How long a process may take to print its address (a cold CI machine is slow).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The gateway binary (which also runs flaky-upstream as `mcp-gateway flaky-upstream ...`).
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mcp-gateway")
}

/// A child process that is asked to stop (SIGTERM) when dropped, so a gateway still stops the
/// processes it started even when a test fails half way.
pub struct Proc {
    child: Child,
    /// Kept open: a closed pipe would make the process's next `println!` fail.
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Proc {
    async fn spawn(mut cmd: Command, ready: &str) -> (Proc, String) {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn");
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = String::new();
        let line = tokio::time::timeout(START_TIMEOUT, async {
            loop {
                match stdout.next_line().await.unwrap() {
                    Some(line) if line.contains(ready) => return line,
                    Some(line) => {
                        seen.push_str(&line);
                        seen.push('\n');
                    }
                    None => {
                        panic!("the process exited before printing {ready:?}; it printed:\n{seen}")
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {ready:?} within {START_TIMEOUT:?}"));
        (Proc { child, stdout }, line)
    }

    /// The next line the process prints containing `needle`.
    pub async fn line_containing(&mut self, needle: &str) -> String {
        loop {
            match self.stdout.next_line().await.unwrap() {
                Some(line) if line.contains(needle) => return line,
                Some(_) => {}
                None => panic!("the process exited before printing {needle:?}"),
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Stops the process with SIGTERM and waits for it.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        signal(self.pid(), "-TERM");
        tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("the process did not stop within 15 s of SIGTERM")
            .unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait()
            && let Some(pid) = self.child.id()
        {
            signal(pid, "-TERM");
        }
    }
}

/// Sends `sig` (`-TERM`, `-KILL`) to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid} failed");
}

#[allow(unused_imports)] // not every test binary checks processes
pub use palisade_testkit::running;

/// A flaky-upstream HTTP server started by the test, so the test can steer it.
pub struct Upstream {
    pub proc: Proc,
    pub url: String,
}

impl Upstream {
    /// Starts one on a free port with extra `args`.
    pub async fn start(args: &[&str]) -> Upstream {
        let mut cmd = Command::new(bin());
        cmd.args(["flaky-upstream", "--port", "0"]).args(args);
        let (proc, line) = Proc::spawn(cmd, "listening on ").await;
        let url = line.rsplit(' ').next().unwrap().to_owned();
        Upstream { proc, url }
    }

    /// Starts `flaky-upstream --mcp` (a streamable-HTTP MCP server) with extra `args`; `url`
    /// is its base (for `/control`), the second value its MCP endpoint (`…/mcp`).
    #[allow(dead_code)] // not every test binary fronts an MCP upstream
    pub async fn start_mcp(args: &[&str]) -> (Upstream, String) {
        let mut cmd = Command::new(bin());
        cmd.args(["flaky-upstream", "--mcp"]);
        if !args.contains(&"--port") {
            cmd.args(["--port", "0"]);
        }
        cmd.args(args);
        let (proc, line) = Proc::spawn(cmd, "MCP endpoint ").await;
        let endpoint = line.rsplit(' ').next().unwrap().to_owned();
        let url = endpoint.trim_end_matches("/mcp").to_owned();
        (Upstream { proc, url }, endpoint)
    }

    /// `POST /control` with `body`; the new behaviour and counts.
    pub async fn control(&self, body: Value) -> Value {
        let response = reqwest::Client::new()
            .post(format!("{}/control", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "control {body}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    /// `GET /control`: its behaviour, call counts and keyed calls.
    async fn report(&self) -> Value {
        reqwest::get(format!("{}/control", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The calls that carried an `Idempotency-Key`, oldest first: `{tool, key, ok}`.
    pub async fn keyed_calls(&self) -> Vec<Value> {
        self.report().await["idempotency_keys"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// The calls that carried W3C trace context, oldest first: `{tool, traceparent}` (the
    /// HTTP mode's `traceparent` header, the `--mcp` mode's `params._meta.traceparent`).
    pub async fn traceparents(&self) -> Vec<Value> {
        self.report().await["traceparents"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// How many calls it answered successfully.
    pub async fn calls_ok(&self) -> u64 {
        self.report().await["calls"]["ok"].as_u64().unwrap()
    }
}

/// A gateway process.
pub struct Gateway {
    pub proc: Proc,
    pub mcp: String,
    pub admin: String,
    config: PathBuf,
}

impl Gateway {
    /// Starts `mcp-gateway --config <config>` with `env` (and without the test command's
    /// `REDIS_URL`, unless `env` sets it).
    pub async fn start(config: &str, env: &[(&str, &str)]) -> Gateway {
        let path = std::env::temp_dir().join(format!("{}.toml", unique("mcp-gateway-e2e")));
        // Tests that are not about authentication let any client in, explicitly.
        let config = if config.contains("[auth]") {
            config.to_owned()
        } else {
            format!("{config}\n[auth]\nmode = \"none\"\n")
        };
        std::fs::write(&path, config).unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg("--config")
            .arg(&path)
            .env_remove("REDIS_URL")
            .env_remove("RATE_LIMIT_BACKEND")
            .env("PALISADE_ADMIN_TOKEN", TOKEN)
            .env("LOG_LEVEL", "info")
            .envs(env.iter().copied());
        let (mut proc, mcp_line) = Proc::spawn(cmd, "MCP endpoint:").await;
        let mcp = mcp_line.rsplit(' ').next().unwrap().to_owned();
        let admin_line = proc.line_containing("admin API:").await;
        let admin = admin_line.rsplit(' ').next().unwrap().to_owned();
        Gateway {
            proc,
            mcp,
            admin,
            config: path,
        }
    }

    /// An MCP client session (rmcp over streamable HTTP).
    pub async fn client(&self) -> RunningService<RoleClient, ()> {
        ().serve(StreamableHttpClientTransport::from_uri(self.mcp.clone()))
            .await
            .expect("MCP handshake with the gateway")
    }

    /// An MCP client session whose requests carry `X-Forwarded-For: {forwarded_for}`.
    pub async fn client_via_proxy(&self, forwarded_for: &str) -> RunningService<RoleClient, ()> {
        use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
        let mut headers = std::collections::HashMap::new();
        headers.insert(
            http::HeaderName::from_static("x-forwarded-for"),
            http::HeaderValue::from_str(forwarded_for).unwrap(),
        );
        let config =
            StreamableHttpClientTransportConfig::with_uri(self.mcp.clone()).custom_headers(headers);
        ().serve(StreamableHttpClientTransport::from_config(config))
            .await
            .expect("MCP handshake with the gateway")
    }

    /// An MCP client session whose every HTTP request carries `headers` (a `traceparent`).
    pub async fn client_with_headers(
        &self,
        headers: &[(&str, &str)],
    ) -> RunningService<RoleClient, ()> {
        use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
        let headers = headers
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect();
        let config =
            StreamableHttpClientTransportConfig::with_uri(self.mcp.clone()).custom_headers(headers);
        ().serve(StreamableHttpClientTransport::from_config(config))
            .await
            .expect("MCP handshake with the gateway")
    }

    /// A bare `initialize` POST (no `initialized` notification, no SSE stream, never closed):
    /// what a client that leaks sessions sends. The status, `Retry-After` and body.
    pub async fn raw_initialize(&self) -> (u16, Option<String>, String) {
        self.raw_initialize_as(None).await
    }

    /// [`raw_initialize`](Self::raw_initialize) with this `Host` header.
    pub async fn raw_initialize_as(&self, host: Option<&str>) -> (u16, Option<String>, String) {
        let body = serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "raw", "version": "0"}},
        });
        let mut request = reqwest::Client::new()
            .post(&self.mcp)
            .header("accept", "application/json, text/event-stream");
        if let Some(host) = host {
            request = request.header("host", host);
        }
        let response = request.json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, retry_after, response.text().await.unwrap())
    }

    /// `GET {admin}{path}` as JSON.
    pub async fn get(&self, path: &str) -> Value {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.admin))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    /// `POST {admin}{path}` with `body` and the bearer `token`; the status and JSON body.
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{}{path}", self.admin))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A breaker's state in the admin JSON.
    pub async fn breaker_state(&self, name: &str) -> String {
        let v = self.get(&format!("/circuit-breakers/{name}")).await;
        v["snapshot"]["state"].as_str().unwrap().to_owned()
    }

    /// A health component's snapshot in the admin JSON.
    pub async fn health(&self, name: &str) -> Value {
        self.get(&format!("/health/components/{name}")).await["snapshot"].clone()
    }

    /// Stops it (SIGTERM: it stops its children) and removes its config file.
    pub async fn stop(self) {
        let status = self.proc.stop().await;
        let _ = std::fs::remove_file(&self.config);
        assert!(
            status.success(),
            "the gateway exited with {status} on SIGTERM"
        );
    }
}

/// Calls `name` with `args`; the tool result (a protocol error fails the test).
pub async fn call<H: rmcp::ClientHandler>(
    client: &RunningService<RoleClient, H>,
    name: &str,
    args: Value,
) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    client
        .call_tool(CallToolRequestParams::new(name.to_owned()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("tools/call {name}: {e}"))
}

/// A tool error's `error` code (`None` for a success).
pub fn error_code(result: &CallToolResult) -> Option<String> {
    if result.is_error != Some(true) {
        return None;
    }
    Some(
        result
            .structured_content
            .as_ref()
            .expect("structured error")["error"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

/// The text of a result's first content block.
pub fn text(result: &CallToolResult) -> String {
    result
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .unwrap_or_default()
}

/// An HTTP connector section for `url` with one tool `forecast`.
pub fn http_connector(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[connectors]]\nname = \"{name}\"\nkind = \"http\"\nurl = \"{url}\"\nhealth_path = \"/health\"\ntools = [{{ name = \"forecast\", description = \"a forecast\" }}]\n{extra}\n"
    )
}

/// A stdio connector section running flaky-upstream `--stdio` with extra `args`.
pub fn stdio_connector(name: &str, args: &[&str], extra: &str) -> String {
    let args: Vec<String> = ["flaky-upstream", "--stdio"]
        .iter()
        .chain(args)
        .map(|a| format!("\"{a}\""))
        .collect();
    format!(
        "[[connectors]]\nname = \"{name}\"\nkind = \"stdio\"\ncommand = \"{{self}}\"\nargs = [{}]\n{extra}\n",
        args.join(", ")
    )
}

/// The `[server]` section on free loopback ports.
pub const SERVER: &str =
    "[server]\nmcp_addr = \"127.0.0.1:0\"\nadmin_addr = \"127.0.0.1:0\"\ncall_timeout = \"5s\"\n";
