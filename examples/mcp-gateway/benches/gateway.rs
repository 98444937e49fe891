//! The gateway end to end, as users run it: `mcp-load` (in this process) against
//! (a) an rmcp streamable-HTTP echo server directly, (b) the gateway in front of an HTTP echo
//! upstream with every component on the path (rate limit, breaker, bulkhead, dead-letter capture
//! armed), (c) the same with the Redis rate limiter and dead-letter queue, at 1 and 32 calls in
//! flight; then the gateway's RSS with 0, 1 000 and 10 000 idle sessions.
//!
//! ```text
//! cargo bench -p mcp-gateway --bench gateway            # 10 000 measured calls per run
//! GATEWAY_BENCH_CALLS=2000 GATEWAY_BENCH_ROUNDS=1 cargo bench -p mcp-gateway --bench gateway
//! ```
//!
//! Each row is run `GATEWAY_BENCH_ROUNDS` times (default 3), the targets alternating, and the
//! run of median calls/s is shown: on a small VM one run can land on a noisy neighbour.
//!
//! Needs `redis-server` on the PATH (a private one is started on a spare port, so the Redis
//! commands per call are counted without other traffic). The results are written up in
//! docs/benchmarks.md, "Gateway".
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mcp_load::{ArgsTemplate, LoadConfig, Report, Stop};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const WARMUP: u64 = 1000;
/// Calls of the run that counts Redis round trips.
const COUNTED_CALLS: u64 = 2000;

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

/// Starts `cmd` and returns it with the first stdout line containing `marker`; the rest of its
/// stdout is drained in the background.
async fn spawn(mut cmd: Command, marker: &str) -> (Proc, String) {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("exited before ready");
            if line.contains(marker) {
                return line;
            }
        }
    })
    .await
    .expect("not ready within 60 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (Proc(child), line)
}

fn last_word(line: &str) -> String {
    line.rsplit(' ').next().unwrap().to_owned()
}

fn gateway_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mcp-gateway")
}

/// A gateway with one HTTP echo connector (a flaky-upstream it starts itself), the rate limit
/// raised out of the way but on the path, and room for `max_sessions`.
async fn gateway(redis: Option<&str>, max_sessions: usize) -> (Proc, String, PathBuf) {
    let config = format!(
        r#"
[server]
mcp_addr = "127.0.0.1:0"
admin_addr = "127.0.0.1:0"
call_timeout = "5s"
max_sessions = {max_sessions}

[auth]
mode = "none"

[rate_limit]
quota = {{ rate = 1000000, period = "1s", burst = 1000000 }}

[[partitions]]
name = "bench"
max_concurrent = 64

[[connectors]]
name = "bench"
kind = "http"
partition = "bench"
url = "http://127.0.0.1:{{port}}"
command = "{{self}}"
args = ["flaky-upstream", "--port", "{{port}}"]
tools = [{{ name = "echo", description = "Echoes its arguments." }}]
"#
    );
    let tag = if redis.is_some() { "redis" } else { "memory" };
    let path =
        std::env::temp_dir().join(format!("gateway-bench-{tag}-{}.toml", std::process::id()));
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(gateway_bin());
    cmd.arg("--config")
        .arg(&path)
        .env("PALISADE_ADMIN_TOKEN", "bench")
        .env("LOG_LEVEL", "warn")
        .env_remove("REDIS_URL")
        .env_remove("RATE_LIMIT_BACKEND");
    if let Some(url) = redis {
        cmd.env("REDIS_URL", url).env("RATE_LIMIT_BACKEND", "redis");
    }
    let (proc, line) = spawn(cmd, "MCP endpoint:").await;
    (proc, last_word(&line), path)
}

async fn load(url: &str, tool: &str, in_flight: usize, calls: u64) -> Report {
    let mut config = LoadConfig::new(url, tool);
    config.args = ArgsTemplate::parse(r#"{"text": "call {i}"}"#).unwrap();
    config.concurrency = in_flight;
    config.warmup = WARMUP;
    config.stop = Stop::Calls(calls);
    mcp_load::run(&config).await.expect("load run")
}

/// A private redis-server on a spare port.
struct Redis {
    _proc: Proc,
    url: String,
}

impl Redis {
    async fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server on the PATH (apt-get install redis-server)");
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url.as_str()).unwrap();
        for _ in 0..100 {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
                if pong.is_ok() {
                    return Redis {
                        _proc: Proc(child),
                        url,
                    };
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start");
    }

    /// Counts what clients send from now on, through `MONITOR` (which also shows the commands
    /// scripts run inside Redis; those are not round trips and are not counted).
    async fn monitor(&self) -> Monitor {
        let addr = self.url.trim_start_matches("redis://").to_owned();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"MONITOR\r\n")
            .await
            .unwrap();
        let counts = Counts::default();
        let mut lines = BufReader::new(stream).lines();
        let task_counts = counts.clone();
        let task = tokio::spawn(async move {
            let counts = task_counts;
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains(" [") && !line.contains(" lua]") {
                    counts.sent.fetch_add(1, Ordering::Relaxed);
                    if line.contains("palisade:rl:") {
                        counts.limiter.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Monitor { counts, task }
    }
}

/// Commands clients sent to Redis (one round trip each), and of them the rate limiter's.
#[derive(Clone, Default)]
struct Counts {
    sent: Arc<AtomicU64>,
    limiter: Arc<AtomicU64>,
}

/// A `MONITOR` connection, closed when dropped.
struct Monitor {
    counts: Counts,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    /// Commands sent by clients, and by the rate limiter, so far.
    fn counts(&self) -> (u64, u64) {
        (
            self.counts.sent.load(Ordering::Relaxed),
            self.counts.limiter.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Opens `n` sessions the way a leaking client does: `initialize` and `initialized`, never
/// closed.
async fn open_idle_sessions(url: &str, n: usize) {
    let client = reqwest::Client::new();
    let init = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "idle", "version": "0"}},
    });
    let initialized = serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let mut tasks = tokio::task::JoinSet::new();
    let per_task = n.div_ceil(16);
    for t in 0..16 {
        let (client, url, init, initialized) = (
            client.clone(),
            url.to_owned(),
            init.clone(),
            initialized.clone(),
        );
        let count = per_task.min(n.saturating_sub(t * per_task));
        tasks.spawn(async move {
            for _ in 0..count {
                let response = client
                    .post(&url)
                    .header("accept", "application/json, text/event-stream")
                    .json(&init)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200, "initialize");
                let id = response.headers()["mcp-session-id"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                let _ = response.bytes().await.unwrap();
                let response = client
                    .post(&url)
                    .header("accept", "application/json, text/event-stream")
                    .header("mcp-session-id", id)
                    .header("mcp-protocol-version", "2025-06-18")
                    .json(&initialized)
                    .send()
                    .await
                    .unwrap();
                assert!(
                    response.status().is_success(),
                    "initialized: {}",
                    response.status()
                );
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

fn row(target: &str, r: &Report) {
    let l = &r.latency_us;
    println!(
        "| {target} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
        r.concurrency,
        r.calls_per_sec,
        l.p50,
        l.p90,
        l.p99,
        l.p999,
        l.max,
        r.failed()
    );
    for (kind, n) in &r.errors {
        println!(
            "|   error {kind}: {n} ({}) | | | | | | | | |",
            r.error_samples[kind]
        );
    }
}

/// The run of median throughput among `runs`.
fn median(mut runs: Vec<Report>) -> Report {
    runs.sort_by(|a, b| a.calls_per_sec.total_cmp(&b.calls_per_sec));
    runs.swap_remove(runs.len() / 2)
}

async fn bench() {
    let calls: u64 = env_or("GATEWAY_BENCH_CALLS", 10_000);
    let rounds: usize = env_or("GATEWAY_BENCH_ROUNDS", 3).max(1);
    println!(
        "gateway benchmark: {calls} measured calls per run after {WARMUP} warm-up calls, {rounds} rounds \
         alternating the targets, the run of median calls/s shown; mcp-load in this process on one worker thread\n"
    );

    // (a) direct
    let mut cmd = Command::new(gateway_bin());
    cmd.args(["flaky-upstream", "--mcp", "--port", "0"]);
    let (direct_proc, line) = spawn(cmd, "MCP endpoint").await;
    let direct_url = last_word(&line);
    // (b) memory backends
    let (memory_proc, memory_url, memory_config) = gateway(None, 20_000).await;
    // (c) Redis backends
    let redis = Redis::start().await;
    let (redis_proc, redis_url, redis_config) = gateway(Some(&redis.url), 20_000).await;

    println!(
        "| target | in flight | calls/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | errors |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut results = Vec::new();
    for in_flight in [1, 32] {
        let (mut direct, mut memory, mut with_redis) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            direct.push(load(&direct_url, "echo_json", in_flight, calls).await);
            memory.push(load(&memory_url, "bench_echo", in_flight, calls).await);
            with_redis.push(load(&redis_url, "bench_echo", in_flight, calls).await);
        }
        // Round trips are counted in a run of their own: MONITOR costs Redis and this process
        // CPU time, which the timed runs should not pay.
        let monitor = redis.monitor().await;
        let counted = load(&redis_url, "bench_echo", in_flight, COUNTED_CALLS).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (sent, limiter) = monitor.counts();
        drop(monitor);
        let (direct, memory, with_redis) = (median(direct), median(memory), median(with_redis));
        row("(a) rmcp echo server, direct", &direct);
        row("(b) gateway, memory backends", &memory);
        row("(c) gateway, Redis backends", &with_redis);
        // Warm-up calls reach Redis too.
        let made = (counted.calls + WARMUP) as f64;
        let per_call = (sent as f64 / made, limiter as f64 / made);
        results.push((in_flight, direct, memory, with_redis, per_call));
    }
    println!();
    for (in_flight, direct, memory, with_redis, per_call) in &results {
        let (d, m, r) = (
            &direct.latency_us,
            &memory.latency_us,
            &with_redis.latency_us,
        );
        println!(
            "in flight {in_flight}: gateway over direct: p50 +{:.0} µs (Redis +{:.0} µs), p99.9 +{:.0} µs (Redis +{:.0} µs); throughput {:.2}x (Redis {:.2}x) of direct",
            m.p50 - d.p50,
            r.p50 - d.p50,
            m.p999 - d.p999,
            r.p999 - d.p999,
            memory.calls_per_sec / direct.calls_per_sec,
            with_redis.calls_per_sec / direct.calls_per_sec,
        );
        println!(
            "in flight {in_flight}: Redis round trips per call: {:.3} by the rate limiter, {:.3} in all (the dead-letter worker polls 4 times a second)",
            per_call.1, per_call.0
        );
    }
    drop((direct_proc, redis_proc, memory_proc));
    let _ = std::fs::remove_file(redis_config);
    let _ = std::fs::remove_file(memory_config);

    // Idle sessions: RSS of a fresh memory-backed gateway.
    let (fresh, url, config) = gateway(None, 20_000).await;
    let pid = fresh.0.id().unwrap();
    let base = rss_kib(pid);
    println!("\n| idle sessions | gateway RSS KiB | KiB per session over 0 sessions |");
    println!("| --- | --- | --- |");
    println!("| 0 | {base} | |");
    let mut open = 0;
    for target in [1_000, 10_000] {
        open_idle_sessions(&url, target - open).await;
        open = target;
        let rss = rss_kib(pid);
        println!(
            "| {target} | {rss} | {:.1} |",
            (rss.saturating_sub(base)) as f64 / target as f64
        );
    }
    drop(fresh);
    let _ = std::fs::remove_file(config);
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects nothing here. One worker
    // thread, as the mcp-load binary runs by default, so the machine's other core is left to
    // the servers. (A current-thread runtime instead tripled the gateway rows' p99.9.)
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}
