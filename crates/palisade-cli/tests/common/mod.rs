//! A real service for the CLI to talk to: a registry with one component of each kind the CLI
//! commands, served by palisade-admin on loopback; and a runner for the built binary.
#![allow(dead_code)] // each test file uses part of it
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use palisade_admin::{AdminRouter, AdminServer};
use palisade_breaker::CircuitBreaker;
use palisade_bulkhead::Bulkhead;
use palisade_chaos::FaultInjector;
use palisade_core::{Event, EventFilter, EventKind, Registry, async_trait};
use palisade_dlq::{DeadLetterQueue, Failure, MemoryStore};
use palisade_health::{
    CheckConfig, CheckResult, HealthMonitor, RestartPolicy, Restartable, check_fn,
};
use palisade_ratelimit::{KeyedRateLimiter, Quota};
use serde_json::{Value, json};

/// The operator's token.
pub const TOKEN: &str = "cli-test-token-0123456789abcdef";
/// A viewer's token (reads only).
pub const VIEWER: &str = "cli-viewer-token-0123456789abcdef";

/// A service with one component of each kind, and its admin API on loopback.
pub struct Service {
    pub registry: Registry,
    /// Circuit breaker `weather` (3 consecutive failures, 60 s wait).
    pub breaker: CircuitBreaker,
    /// Bulkhead `web` (2 slots, fail fast).
    pub bulkhead: Bulkhead,
    /// Keyed rate limiter `mcp-clients` (120 a minute, burst 20).
    pub limiter: KeyedRateLimiter<String>,
    /// Memory dead-letter queue `gateway-calls`: two timeouts (scheduled), one client error
    /// (parked).
    pub dlq: DeadLetterQueue<Value>,
    pub entry_ids: Vec<u64>,
    /// The monitor: `upstream` (a check, not restartable), `worker` (restartable, counts
    /// restarts) and `crasher` (fails while `crashing` is set, restartable once in 10 min:
    /// it enters crash-loop protection).
    pub monitor: HealthMonitor,
    pub restarts: Arc<AtomicU64>,
    pub upstream_down: Arc<AtomicBool>,
    pub crashing: Arc<AtomicBool>,
    /// Fault injector `weather`, allowed.
    pub injector: FaultInjector,
    /// Timeout `weather` (5 s).
    pub timeout: palisade_toolbox::Timeout,
    pub server: AdminServer,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

struct Counter(Arc<AtomicU64>);

#[async_trait]
impl Restartable for Counter {
    async fn restart(&self) -> Result<(), String> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Starts the service.
pub async fn service() -> Service {
    let registry = Registry::new();
    let breaker = CircuitBreaker::builder("weather")
        .consecutive_failures(3)
        .wait_duration(Duration::from_secs(60))
        .registry(&registry)
        .build()
        .unwrap();
    let bulkhead = Bulkhead::builder("web")
        .max_concurrent(2)
        .max_wait(Duration::ZERO)
        .registry(&registry)
        .build()
        .unwrap();
    let limiter = KeyedRateLimiter::<String>::builder("mcp-clients")
        .quota(Quota::per_minute(120).with_burst(20))
        .registry(&registry)
        .build()
        .unwrap();
    let dlq = DeadLetterQueue::<Value>::builder("gateway-calls")
        .store(Arc::new(MemoryStore::new()))
        .registry(&registry)
        .build()
        .unwrap();
    let mut entry_ids = Vec::new();
    for (op, failure) in [
        (
            "weather_forecast",
            Failure::timeout("no answer within 5000 ms"),
        ),
        (
            "weather_alerts",
            Failure::timeout("no answer within 5000 ms"),
        ),
        (
            "search_query",
            Failure::client_error("422 the query is empty"),
        ),
    ] {
        entry_ids.push(
            dlq.push(op, &json!({"city": "Lyon"}), failure)
                .await
                .unwrap(),
        );
    }
    dlq.stats().await.unwrap();

    let monitor = HealthMonitor::builder()
        .registry(&registry)
        .build()
        .unwrap();
    let upstream_down = Arc::new(AtomicBool::new(false));
    let down = upstream_down.clone();
    monitor
        .add(
            "upstream",
            check_fn(move || {
                let down = down.load(Ordering::Relaxed);
                async move {
                    if down {
                        CheckResult::unhealthy("GET /health returned 503")
                    } else {
                        CheckResult::healthy("200 OK")
                    }
                }
            }),
        )
        .config(CheckConfig {
            interval: Duration::from_secs(3600),
            failure_threshold: 1,
            ..CheckConfig::default()
        })
        .start()
        .unwrap();
    let restarts = Arc::new(AtomicU64::new(0));
    monitor
        .add(
            "worker",
            check_fn(|| async { CheckResult::healthy("running (pid 4242)") }),
        )
        .config(CheckConfig {
            interval: Duration::from_secs(3600),
            critical: false,
            ..CheckConfig::default()
        })
        .restartable(Arc::new(Counter(restarts.clone())))
        .start()
        .unwrap();
    let crashing = Arc::new(AtomicBool::new(false));
    let crash = crashing.clone();
    monitor
        .add(
            "crasher",
            check_fn(move || {
                let crash = crash.load(Ordering::Relaxed);
                async move {
                    if crash {
                        CheckResult::unhealthy("exited with status 3")
                    } else {
                        CheckResult::healthy("running")
                    }
                }
            }),
        )
        .config(CheckConfig {
            interval: Duration::from_millis(50),
            jitter: 0.0,
            failure_threshold: 1,
            critical: false,
            restart: RestartPolicy {
                initial_backoff: Duration::from_millis(10),
                factor: 1.0,
                max_backoff: Duration::from_millis(10),
                jitter: 0.0,
                max_restarts: 1,
                window: Duration::from_secs(600),
                ..RestartPolicy::default()
            },
            ..CheckConfig::default()
        })
        .restartable(Arc::new(Counter(Arc::new(AtomicU64::new(0)))))
        .start()
        .unwrap();
    monitor.check_all().await;

    let injector = FaultInjector::builder("weather")
        .allow(true)
        .registry(&registry)
        .build()
        .unwrap();

    let timeout = palisade_toolbox::Timeout::builder("weather")
        .deadline(std::time::Duration::from_secs(5))
        .registry(&registry)
        .build()
        .unwrap();

    let server = AdminRouter::builder(&registry)
        .health(&monitor)
        .token(TOKEN)
        .viewer_token(VIEWER)
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{}", server.local_addr());
    Service {
        registry,
        breaker,
        bulkhead,
        limiter,
        dlq,
        entry_ids,
        monitor,
        restarts,
        upstream_down,
        crashing,
        injector,
        timeout,
        server,
        url,
    }
}

impl Service {
    /// Runs `palisade` against this service with the operator's token (in
    /// `PALISADE_ADMIN_TOKEN`) and `PALISADE_ADMIN_URL` set.
    pub async fn run(&self, args: &[&str]) -> Run {
        palisade(
            &[
                ("PALISADE_ADMIN_URL", self.url.as_str()),
                ("PALISADE_ADMIN_TOKEN", TOKEN),
            ],
            args,
        )
        .await
    }

    /// The events published so far.
    pub fn events(&self) -> Vec<Event> {
        self.registry.events().recent(&EventFilter::default())
    }

    /// The audit events' `(actor, action)`.
    pub fn audits(&self) -> Vec<(String, String)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Audit { actor, action, .. } => Some((actor, action)),
                _ => None,
            })
            .collect()
    }
}

/// What a run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts exit code 0 and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "{self:#?}");
        assert!(
            !self.stdout.contains('\x1b'),
            "no colour into a pipe: {self:#?}"
        );
        &self.stdout
    }

    /// Asserts exit code `code`.
    #[track_caller]
    pub fn exits(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "{self:#?}");
        self
    }

    /// Stdout as JSON (asserting it parses).
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// Runs the built `palisade` with `args`, stdin closed (not a terminal), `USER=tester`, no
/// colour settings and no `PALISADE_*` variables but `env`.
pub async fn palisade(env: &[(&str, &str)], args: &[&str]) -> Run {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade"));
        for var in [
            "PALISADE_ADMIN_URL",
            "PALISADE_ADMIN_TOKEN",
            "PALISADE_ADMIN_TOKEN_FILE",
            "NO_COLOR",
            "LOGNAME",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("USER", "tester")
            .envs(env)
            .args(&args)
            .stdin(Stdio::null());
        let out = cmd.output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

/// A loopback address nothing listens on.
pub fn dead_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// Waits up to 10 s for `done`.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
