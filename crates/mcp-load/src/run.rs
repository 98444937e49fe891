//! Running a load: sessions, workers, and what each call came to.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{Peer, RoleClient, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

use crate::{ArgsTemplate, KeepAliveClient, LoadError, Percentiles, Report};

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stop {
    /// After this many measured calls (warm-up calls not included).
    Calls(u64),
    /// After this long (calls in flight then still complete and count).
    Duration(Duration),
}

/// What to run: `sessions` MCP sessions, each with `concurrency` calls in flight, all calling
/// one tool.
///
/// ```no_run
/// use std::time::Duration;
/// use mcp_load::{ArgsTemplate, LoadConfig, Stop};
///
/// # async fn demo() -> Result<(), mcp_load::LoadError> {
/// let mut config = LoadConfig::new("http://127.0.0.1:8080/mcp", "weather_forecast");
/// config.args = ArgsTemplate::parse(r#"{"city": "city-{i}"}"#)?;
/// config.sessions = 2;
/// config.concurrency = 16;
/// config.stop = Stop::Duration(Duration::from_secs(10));
/// let report = mcp_load::run(&config).await?;
/// println!("{}", report.table());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadConfig {
    /// The MCP endpoint (`http://host:port/mcp`).
    pub url: String,
    /// The tool every call names.
    pub tool: String,
    /// The arguments of every call (`{i}` becomes the call number).
    pub args: ArgsTemplate,
    /// MCP sessions opened (1 or more).
    pub sessions: usize,
    /// Calls in flight per session (1 or more).
    pub concurrency: usize,
    /// When the measured part ends.
    pub stop: Stop,
    /// Calls made before measuring starts (to warm connections and caches); not reported.
    pub warmup: u64,
    /// The longest one call may take before it counts as an error of kind `timeout`.
    pub timeout: Duration,
    /// Extra HTTP headers on every request (`Authorization`, for one).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Reuse TCP connections between calls, as browsers and the TypeScript SDK do (the
    /// default); `false` opens one per call, as rmcp's own client does (see
    /// [`KeepAliveClient`](crate::KeepAliveClient)).
    pub keep_alive: bool,
}

impl LoadConfig {
    /// One session, one call in flight, 1000 calls of `tool` with no arguments, no warm-up,
    /// 30 s per call.
    pub fn new(url: impl Into<String>, tool: impl Into<String>) -> LoadConfig {
        LoadConfig {
            url: url.into(),
            tool: tool.into(),
            args: ArgsTemplate::default(),
            sessions: 1,
            concurrency: 1,
            stop: Stop::Calls(1000),
            warmup: 0,
            timeout: Duration::from_secs(30),
            headers: Vec::new(),
            keep_alive: true,
        }
    }

    fn validate(&self) -> Result<(), LoadError> {
        let bad = |m: &str| Err(LoadError::Config(m.to_owned()));
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return bad("the URL must start with http:// or https://");
        }
        if self.tool.is_empty() {
            return bad("a tool name is needed");
        }
        if self.sessions == 0 || self.concurrency == 0 {
            return bad("sessions and concurrency must be at least 1");
        }
        if self.sessions.saturating_mul(self.concurrency) > 100_000 {
            return bad("at most 100000 calls in flight (sessions x concurrency)");
        }
        match self.stop {
            Stop::Calls(0) => bad("the number of calls must be at least 1"),
            Stop::Duration(d) if d.is_zero() => bad("the duration must be longer than 0"),
            _ if self.timeout.is_zero() => bad("the call timeout must be longer than 0"),
            _ => Ok(()),
        }
    }
}

/// One open MCP session.
pub(crate) type Session = RunningService<RoleClient, ()>;

/// Opens one MCP session to `config.url` with its headers.
pub(crate) async fn open_session(config: &LoadConfig) -> Result<Session, LoadError> {
    let mut transport = StreamableHttpClientTransportConfig::with_uri(config.url.as_str())
        .custom_headers(config.headers.iter().cloned().collect::<HashMap<_, _>>());
    // rmcp's client sends at most this many POSTs at once per session (16 by default).
    transport.max_concurrent_requests = config.concurrency;
    if config.keep_alive {
        let client = KeepAliveClient::new()
            .map_err(|e| LoadError::Session(format!("cannot build an HTTP client: {e}")))?;
        let transport = StreamableHttpClientTransport::with_client(client, transport);
        handshake(().serve(transport), config.timeout).await
    } else {
        let transport = StreamableHttpClientTransport::from_config(transport);
        handshake(().serve(transport), config.timeout).await
    }
}

async fn handshake<E: std::fmt::Display>(
    serving: impl std::future::Future<Output = Result<Session, E>>,
    timeout: Duration,
) -> Result<Session, LoadError> {
    match tokio::time::timeout(timeout, serving).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(e)) => Err(LoadError::Session(e.to_string())),
        Err(_) => Err(LoadError::Session(format!(
            "no answer to initialize within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// What became of one call: `Ok`, or the error's kind and message.
type CallOutcome = Result<(), (String, String)>;

/// The kind of a failed call, as reported: `timeout`, `transport`, `jsonrpc:<code>`,
/// `tool_error:<structuredContent.error>` (`tool_error` when the tool gave no `error` field),
/// `other`.
fn classify(
    result: Result<Result<CallToolResult, ServiceError>, tokio::time::error::Elapsed>,
) -> CallOutcome {
    match result {
        Ok(Ok(result)) if result.is_error == Some(true) => {
            let code = result
                .structured_content
                .as_ref()
                .and_then(|s| s.get("error"))
                .and_then(|e| e.as_str());
            let kind = code.map_or_else(|| "tool_error".to_owned(), |c| format!("tool_error:{c}"));
            let message = result
                .content
                .first()
                .and_then(|c| c.as_text())
                .map_or_else(String::new, |t| t.text.clone());
            Err((kind, message))
        }
        Ok(Ok(_)) => Ok(()),
        Ok(Err(ServiceError::McpError(e))) => {
            Err((format!("jsonrpc:{}", e.code.0), e.message.to_string()))
        }
        Ok(Err(e @ ServiceError::Timeout { .. })) | Ok(Err(e @ ServiceError::Cancelled { .. })) => {
            Err(("timeout".to_owned(), e.to_string()))
        }
        Ok(Err(e @ (ServiceError::TransportSend(_) | ServiceError::TransportClosed))) => {
            Err(("transport".to_owned(), e.to_string()))
        }
        Ok(Err(e)) => Err(("other".to_owned(), e.to_string())),
        Err(elapsed) => Err(("timeout".to_owned(), elapsed.to_string())),
    }
}

/// What one worker saw.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    ok: u64,
    errors: BTreeMap<String, (u64, String)>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.ok += other.ok;
        for (kind, (n, sample)) in other.errors {
            let entry = self.errors.entry(kind).or_insert((0, sample));
            entry.0 += n;
        }
    }
}

/// The next call number, shared by every worker of a phase.
struct Phase {
    next: AtomicU64,
    /// Call numbers below this are made (the end of a fixed count).
    end: u64,
    /// No call starts after this.
    deadline: Option<Instant>,
}

impl Phase {
    fn claim(&self) -> Option<u64> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.end).then_some(i)
    }
}

async fn worker(peer: Peer<RoleClient>, config: Arc<LoadConfig>, phase: Arc<Phase>) -> Tally {
    let mut tally = Tally::default();
    while let Some(i) = phase.claim() {
        let params =
            CallToolRequestParams::new(config.tool.clone()).with_arguments(config.args.render(i));
        let started = Instant::now();
        let result = tokio::time::timeout(config.timeout, peer.call_tool(params)).await;
        tally.latencies.push(started.elapsed());
        match classify(result) {
            Ok(()) => tally.ok += 1,
            Err((kind, message)) => tally.errors.entry(kind).or_insert((0, message)).0 += 1,
        }
    }
    tally
}

/// Runs every worker of every session through `phase`.
async fn run_phase(sessions: &[Session], config: &Arc<LoadConfig>, phase: Phase) -> Tally {
    let phase = Arc::new(phase);
    let mut tasks = tokio::task::JoinSet::new();
    for session in sessions {
        for _ in 0..config.concurrency {
            tasks.spawn(worker(
                session.peer().clone(),
                config.clone(),
                phase.clone(),
            ));
        }
    }
    let mut total = Tally::default();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(tally) => total.merge(tally),
            Err(e) => {
                total
                    .errors
                    .entry("other".to_owned())
                    .or_insert((0, format!("a worker failed: {e}")))
                    .0 += 1;
            }
        }
    }
    total
}

/// Opens the sessions, makes the warm-up calls, then the measured ones, closes the sessions and
/// reports. Fails only when the configuration is invalid or a session cannot be opened; failed
/// calls are counted by kind in the report.
pub async fn run(config: &LoadConfig) -> Result<Report, LoadError> {
    config.validate()?;
    let config = Arc::new(config.clone());
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..config.sessions {
        let config = config.clone();
        opening.spawn(async move { open_session(&config).await });
    }
    let mut sessions = Vec::with_capacity(config.sessions);
    while let Some(opened) = opening.join_next().await {
        match opened {
            Ok(Ok(session)) => sessions.push(session),
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                return Err(LoadError::Session(format!(
                    "the handshake task failed: {e}"
                )));
            }
        }
    }

    if config.warmup > 0 {
        let warm = Phase {
            next: AtomicU64::new(0),
            end: config.warmup,
            deadline: None,
        };
        run_phase(&sessions, &config, warm).await;
    }
    let (end, deadline) = match config.stop {
        Stop::Calls(n) => (config.warmup.saturating_add(n), None),
        Stop::Duration(d) => (u64::MAX, Some(Instant::now() + d)),
    };
    let measured = Phase {
        next: AtomicU64::new(config.warmup),
        end,
        deadline,
    };
    let started = Instant::now();
    let tally = run_phase(&sessions, &config, measured).await;
    let elapsed = started.elapsed();

    for session in sessions {
        // Ends the session at the server too (HTTP DELETE); a failure here changes no figure.
        let _ = session.cancel().await;
    }
    let calls = tally.latencies.len() as u64;
    Ok(Report {
        url: config.url.clone(),
        tool: config.tool.clone(),
        sessions: config.sessions,
        concurrency: config.concurrency,
        calls,
        ok: tally.ok,
        errors: tally
            .errors
            .iter()
            .map(|(k, (n, _))| (k.clone(), *n))
            .collect(),
        error_samples: tally.errors.into_iter().map(|(k, (_, m))| (k, m)).collect(),
        elapsed_s: elapsed.as_secs_f64(),
        calls_per_sec: if elapsed.is_zero() {
            0.0
        } else {
            calls as f64 / elapsed.as_secs_f64()
        },
        latency_us: Percentiles::of(tally.latencies),
    })
}

/// Lists the tools of the server at `config.url` (name and description), for `--list-tools`.
pub async fn list_tools(config: &LoadConfig) -> Result<Vec<(String, String)>, LoadError> {
    let session = open_session(config).await?;
    let tools = session
        .list_all_tools()
        .await
        .map_err(|e| LoadError::Session(format!("tools/list failed: {e}")))?;
    let _ = session.cancel().await;
    Ok(tools
        .into_iter()
        .map(|t| {
            (
                t.name.to_string(),
                t.description.map(|d| d.to_string()).unwrap_or_default(),
            )
        })
        .collect())
}
