//! Assembly: builds every Palisade component from the config, starts the connectors, the retry
//! worker and the health monitor, and serves MCP and the admin router.

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use palisade::admin::AdminRouter;
use palisade::breaker::CircuitBreaker;
use palisade::bulkhead::Bulkhead;
use palisade::core::redis::RedisConfig;
use palisade::core::{BuildError, ConfigError, Registry};
use palisade::dlq::{DeadLetterQueue, Worker};
use palisade::health::checks::{HttpCheck, RedisCheck, TcpCheck};
use palisade::health::{HealthMonitor, MonitorConfig, ProcessSupervisor};
use palisade::toolbox::Timeout;
use palisade::toolbox::retry::Retry;
use palisade::tower::ratelimit::ClientIp;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use thiserror::Error;

use crate::config::{
    ConnectorConfig, ConnectorKind, DEFAULT_PARTITION, GatewayConfig, PORT_TOKEN, PartitionConfig,
    SELF_TOKEN,
};
use crate::connector::{Backend, HttpBackend, StdioBackend, process_builder};
use crate::gateway::{Connector, DeadCall, Gateway};
use crate::remote::{RemoteBackend, RemoteCheck, UpstreamHeaders};
use crate::sessions::{Sessions, refuse_when_full, track_responses};
use palisade::mcp::{KeyBy, RateLimit, ToolPolicy};

/// The name of the per-client rate limiter in the admin API.
pub const RATE_LIMITER: &str = "mcp-clients";
/// The name of the dead-letter queue of failed calls in the admin API.
pub const DLQ: &str = "gateway-calls";
/// With Redis, the name of the in-memory queue that holds failed calls while Redis is down is
/// the Redis queue's name with this suffix (`gateway-calls-local`).
pub const LOCAL_SUFFIX: &str = "-local";
/// The health component of Redis (when `REDIS_URL` is set).
pub const REDIS_COMPONENT: &str = "redis";
/// How long start-up waits for each connector to answer before serving anyway.
const STARTUP_WAIT: Duration = Duration::from_secs(10);

/// Why the gateway could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A component could not be built.
    #[error("cannot build a component: {0}")]
    Build(#[from] BuildError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The admin router could not be served.
    #[error("cannot serve the admin router: {0}")]
    Admin(#[from] palisade::admin::ServeError),
    /// Something else in the environment is missing.
    #[error("{0}")]
    Environment(String),
}

/// What the caller may set besides the config file.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Redis (`REDIS_URL` and the `REDIS_SENTINEL_*` / `REDIS_TLS_*` variables; one node,
    /// Sentinel or Cluster): the dead-letter queue is kept in Redis (and a Redis health check
    /// added); the rate limiter uses it when its backend is `redis`.
    pub redis: Option<RedisConfig>,
    /// The admin token; `None` refuses every admin mutation.
    pub admin_token: Option<String>,
    /// The Prometheus handle for `/metrics`, when a recorder is installed.
    pub prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The queue name of the dead-letter queue in Redis (default [`DLQ`]).
    pub dlq_queue: Option<String>,
    /// How a client's address is found (`TRUSTED_PROXIES`); default: the peer address.
    pub client_ip: Option<ClientIp>,
    /// With Redis: this instance's id in its fleet (`PALISADE_INSTANCE_ID`; default
    /// `<host name>-<MCP port>`). Keep it stable across restarts so a restarted instance
    /// catches up on the fleet commands it missed.
    pub instance_id: Option<String>,
    /// With Redis: the fleet's name (`PALISADE_FLEET`; default `mcp-gateway`).
    pub fleet: Option<String>,
}

/// A running gateway.
pub struct Running {
    /// The MCP endpoint's address (`http://{mcp_addr}/mcp`).
    pub mcp_addr: SocketAddr,
    /// The admin router's address (`http://{admin_addr}/admin`).
    pub admin_addr: SocketAddr,
    /// The registry of every component.
    pub registry: Registry,
    /// The health monitor.
    pub monitor: HealthMonitor,
    /// The gateway.
    pub gateway: Gateway,
    /// The open MCP sessions.
    pub sessions: Arc<Sessions>,
    /// This instance in its fleet (with Redis).
    pub fleet: Option<palisade_fleet::Fleet>,
    workers: Vec<Worker>,
    admin: palisade::admin::AdminServer,
    mcp: tokio::task::JoinHandle<()>,
    processes: Vec<ProcessSupervisor>,
    cancel: tokio_util::sync::CancellationToken,
    shutdown_grace: Duration,
    probes: Option<palisade::admin::AdminServer>,
    /// Where the probes listener listens, when configured (`[server] probes_addr`).
    pub probes_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("mcp_addr", &self.mcp_addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// Shuts down: refuses new tool calls, gives the calls in flight `[server] shutdown_grace`
    /// to finish (dead-lettering, under their replay policy, those still waiting then), stops
    /// serving, lets the retry workers finish their calls and stops every child process.
    pub async fn shutdown(self) {
        if let Some(fleet) = &self.fleet
            && let Err(e) = fleet.leave().await
        {
            tracing::warn!(error = %e, "could not leave the fleet; it drops this instance at its ttl");
        }
        self.gateway.drain();
        let in_flight = self.gateway.calls_in_flight();
        if in_flight > 0 {
            tracing::info!(
                calls = in_flight,
                grace = ?self.shutdown_grace,
                "shutting down: waiting for the calls in flight"
            );
        }
        let cut = self.gateway.drained(self.shutdown_grace).await;
        if cut > 0 {
            tracing::warn!(
                calls = cut,
                "shutdown grace over: calls still in flight were cut and dead-lettered under their replay policy"
            );
        }
        self.cancel.cancel();
        self.mcp.abort();
        self.monitor.shutdown();
        for worker in self.workers {
            worker.shutdown(Duration::from_secs(5)).await;
        }
        if let Some(probes) = self.probes
            && let Err(e) = probes.shutdown().await
        {
            tracing::warn!(error = %e, "probes server did not shut down cleanly");
        }
        if let Err(e) = self.admin.shutdown().await {
            tracing::warn!(error = %e, "admin server did not shut down cleanly");
        }
        for p in &self.processes {
            p.stop().await;
        }
    }
}

fn free_port() -> Result<u16, StartError> {
    StdTcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| StartError::Environment(format!("cannot pick a free port: {e}")))
}

/// `{self}` and `{port}` replaced in a connector's command, arguments and URL.
struct Resolved {
    command: Option<String>,
    args: Vec<String>,
    url: Option<String>,
}

fn resolve(c: &ConnectorConfig, self_exe: &str) -> Result<Resolved, StartError> {
    let uses_port = c.url.as_deref().is_some_and(|u| u.contains(PORT_TOKEN))
        || c.args.iter().any(|a| a.contains(PORT_TOKEN));
    let port = if uses_port {
        free_port()?.to_string()
    } else {
        String::new()
    };
    let fill = |s: &str| s.replace(SELF_TOKEN, self_exe).replace(PORT_TOKEN, &port);
    Ok(Resolved {
        command: c.command.as_deref().map(fill),
        args: c.args.iter().map(|a| fill(a)).collect(),
        url: c.url.as_deref().map(fill),
    })
}

fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    if authority.contains(':') {
        authority.to_owned()
    } else if url.starts_with("https://") {
        format!("{authority}:443")
    } else {
        format!("{authority}:80")
    }
}

async fn wait_for_tcp(addr: &str, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// The headers of an http or mcp connector: `headers`, `header_env` (read now) and the bearer
/// token of `auth_token_env` or `auth_token_file`. A variable that is unset, or a file that
/// cannot be read, stops the start, naming the field (never the value).
fn upstream_headers(c: &ConnectorConfig) -> Result<UpstreamHeaders, ConfigError> {
    let at = |f: &str| format!("connectors.{}.{f}", c.name);
    let mut headers = UpstreamHeaders {
        authorization: None,
        other: c
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    for (header, var) in &c.header_env {
        let value = std::env::var(var).map_err(|_| {
            ConfigError::new(
                at(&format!("header_env.{header}")),
                format!("the environment variable {var} is not set"),
            )
        })?;
        headers.other.push((header.clone(), value));
    }
    let token = match (&c.auth_token_env, &c.auth_token_file) {
        (Some(var), _) => Some(std::env::var(var).map_err(|_| {
            ConfigError::new(
                at("auth_token_env"),
                format!("the environment variable {var} is not set"),
            )
        })?),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| {
                    ConfigError::new(
                        at("auth_token_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?
                .trim_end()
                .to_owned(),
        ),
        (None, None) => None,
    };
    headers.authorization = token.map(|t| format!("Bearer {t}"));
    for (k, v) in &headers.other {
        if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err()
            || reqwest::header::HeaderValue::from_str(v).is_err()
        {
            return Err(ConfigError::new(
                at(&format!("headers.{k}")),
                "not a valid HTTP header name and value",
            ));
        }
    }
    Ok(headers)
}

/// Starts and supervises the process an http or mcp connector runs for its upstream (the
/// demo's), when its config has a `command`, as the health component `<name>-process`.
async fn start_upstream(
    monitor: &HealthMonitor,
    c: &ConnectorConfig,
    resolved: &Resolved,
) -> Result<Option<ProcessSupervisor>, StartError> {
    let Some(program) = &resolved.command else {
        return Ok(None);
    };
    let name = format!("{}-process", c.name);
    let process = process_builder(&name, program, &resolved.args, &c.env, c.stop_grace).build();
    process.start().await.map_err(StartError::Environment)?;
    supervise(monitor, &name, &process)?;
    Ok(Some(process))
}

/// Watches `process` as the health component `name`: an exit is unhealthy at once (one failure,
/// not a threshold), and the monitor restarts it with backoff and crash-loop protection. Not
/// critical: one connector down leaves the gateway ready.
fn supervise(
    monitor: &HealthMonitor,
    name: &str,
    process: &ProcessSupervisor,
) -> Result<(), BuildError> {
    monitor
        .add(name, process.clone())
        .failure_threshold(1)
        .critical(false)
        .restartable(Arc::new(process.clone()))
        .start()?;
    Ok(())
}

/// Builds and starts the gateway described by `config`.
pub async fn start(config: GatewayConfig, options: StartOptions) -> Result<Running, StartError> {
    config.validate()?;
    let self_exe: PathBuf = std::env::current_exe().map_err(|e| {
        StartError::Environment(format!("cannot find the gateway's executable: {e}"))
    })?;
    let self_exe = self_exe.to_string_lossy().into_owned();
    let registry = Registry::new();
    let monitor = HealthMonitor::builder()
        .config(MonitorConfig {
            auto_restart: config.auto_restart,
            defaults: config.health.clone(),
        })
        .registry(&registry)
        .build()?;

    // Partitions: one bulkhead each, plus `default` when a connector uses it unlisted.
    let unlisted_default = (config
        .connectors
        .iter()
        .any(|c| c.partition == DEFAULT_PARTITION)
        && !config
            .partitions
            .iter()
            .any(|p| p.name == DEFAULT_PARTITION))
    .then(|| PartitionConfig::named(DEFAULT_PARTITION));
    let mut bulkheads = std::collections::BTreeMap::new();
    for p in config.partitions.iter().chain(unlisted_default.as_ref()) {
        let b = Bulkhead::builder(&p.name)
            .max_concurrent(p.max_concurrent)
            .max_wait(p.max_wait)
            .registry(&registry)
            .build()?;
        bulkheads.insert(p.name.clone(), b);
    }

    let mut rate_limit = config.rate_limit.clone();
    if rate_limit.redis_server.is_none() {
        rate_limit.redis_server = options.redis.clone();
    }
    let mut connectors = Vec::new();
    let mut to_share = Vec::new();
    let mut processes = Vec::new();
    let mut stdio_backends = Vec::new();
    let mut remote_backends = Vec::new();
    let mut http_waits = Vec::new();
    let mut http_checks = Vec::new();
    let unlisted = |name: &str| ConfigError::new("partition", format!("no partition {name:?}"));
    for c in &config.connectors {
        let resolved = resolve(c, &self_exe)?;
        let breaker = CircuitBreaker::builder(&c.name)
            .config(c.breaker.clone().unwrap_or_else(|| config.breaker.clone()))
            .registry(&registry)
            .build()?;
        if let Some(mode) = c.shared_breaker.as_ref().or(config.shared_breaker.as_ref()) {
            to_share.push((breaker.clone(), mode.clone()));
        }
        let bulkhead = bulkheads
            .get(&c.partition)
            .cloned()
            .ok_or_else(|| unlisted(&c.partition))?;
        let backend = match c.kind {
            ConnectorKind::Http => {
                let url = resolved.url.clone().unwrap_or_default();
                if let Some(process) = start_upstream(&monitor, c, &resolved).await? {
                    processes.push(process);
                    http_waits.push(host_port(&url));
                }
                // Added once the upstream listens (below), so it does not start out unhealthy.
                http_checks.push((c.name.clone(), url.clone(), c.health_path.clone()));
                Backend::Http(HttpBackend::new(
                    &c.name,
                    &url,
                    &c.tools,
                    &upstream_headers(c)?.other,
                ))
            }
            ConnectorKind::Mcp => {
                let url = resolved.url.clone().unwrap_or_default();
                if let Some(process) = start_upstream(&monitor, c, &resolved).await? {
                    processes.push(process);
                    http_waits.push(host_port(&url));
                }
                let remote = RemoteBackend::new(&c.name, &url, upstream_headers(c)?);
                remote_backends.push((c.name.clone(), remote.clone()));
                Backend::Remote(remote)
            }
            ConnectorKind::Stdio => {
                let program = resolved.command.clone().unwrap_or_default();
                let stdio =
                    StdioBackend::new(&c.name, &program, &resolved.args, &c.env, c.stop_grace);
                let process = stdio.supervisor().clone();
                if let Err(e) = process.start().await {
                    // Not fatal: the monitor restarts it (or reports the crash loop).
                    tracing::error!(connector = %c.name, error = %e, "stdio server did not start");
                }
                supervise(&monitor, &c.name, &process)?;
                processes.push(process);
                stdio_backends.push(stdio.clone());
                Backend::Stdio(stdio)
            }
        };
        // The connector's timeout and retry are components: operators see their counters
        // and change them at runtime (`/admin/timeouts/<name>`, `/admin/retries/<name>`).
        let deadline = Timeout::builder(&c.name)
            .deadline(c.timeout.unwrap_or(config.server.call_timeout))
            .count_as(c.timeout_counts_as)
            .registry(&registry)
            .build()?;
        let mut policy = ToolPolicy::builder()
            .breaker(breaker)
            .bulkhead(bulkhead)
            .deadline(deadline);
        if let Some(retry) = &c.retry {
            policy = policy.retry(
                Retry::builder(&c.name)
                    .config(retry.clone())
                    .registry(&registry)
                    .build()?,
            );
        }
        let policy = policy.build();
        let mut tool_policies = std::collections::BTreeMap::new();
        let mut tool_replay = c.tool_replay.clone();
        for (tool, settings) in &c.tool_settings {
            let mut b = policy.to_builder();
            let own = format!("{}-{}", c.name, crate::names::sanitize(tool));
            if let Some(timeout) = settings.timeout {
                b = b.deadline(
                    Timeout::builder(&own)
                        .deadline(timeout)
                        .count_as(c.timeout_counts_as)
                        .registry(&registry)
                        .build()?,
                );
            }
            if let Some(retry) = &settings.retry {
                b = b.retry(
                    Retry::builder(&own)
                        .config(retry.clone())
                        .registry(&registry)
                        .build()?,
                );
            }
            if let Some(p) = &settings.partition {
                b = b.bulkhead(bulkheads.get(p).cloned().ok_or_else(|| unlisted(p))?);
            }
            if let Some(quota) = settings.quota {
                let mut quota_config = rate_limit.clone();
                quota_config.quota = quota;
                let limiter = quota_config
                    .build(format!("quota-{}-{}", c.name, crate::names::sanitize(tool)))
                    .registry(&registry)
                    .finish()?;
                let parts: Vec<_> = settings.quota_key.iter().map(|k| k.part()).collect();
                let key = KeyBy::new(&parts)?;
                b = b.rate_limit(
                    RateLimit::new(limiter)
                        .key_by(key)
                        .rule(format!("{}.{tool}", c.name)),
                );
            }
            if let Some(replay) = settings.replay {
                tool_replay.insert(tool.clone(), replay);
            }
            tool_policies.insert(tool.clone(), b.build());
        }
        let faults = if config.fault_injection.allowed {
            Some(
                palisade::chaos::FaultInjector::builder(&c.name)
                    .allow(true)
                    .max_ttl(config.fault_injection.max_ttl)
                    .registry(&registry)
                    .build()?,
            )
        } else {
            None
        };
        connectors.push(Arc::new(Connector {
            name: c.name.clone(),
            backend,
            policy,
            tool_policies,
            replay: c.replay_policy(),
            tool_replay,
            faults,
        }));
    }

    let limiter = rate_limit
        .build(RATE_LIMITER)
        .registry(&registry)
        .finish()?;

    let queue = options.dlq_queue.as_deref().unwrap_or(DLQ);
    let mut dlq = DeadLetterQueue::<DeadCall>::builder(queue)
        .config(config.dlq.clone())
        .registry(&registry);
    if let Some(redis) = &options.redis {
        dlq = dlq.redis(redis)?;
        monitor
            .add(REDIS_COMPONENT, RedisCheck::new(redis)?)
            .critical(false)
            .start()?;
    }
    let dlq = dlq.build()?;
    // With Redis, a second queue in memory keeps the calls that fail while Redis is down (they
    // are lost only if this process also dies before they are replayed).
    let local = match &options.redis {
        Some(_) => Some(
            DeadLetterQueue::<DeadCall>::builder(format!("{queue}{LOCAL_SUFFIX}"))
                .config(config.dlq.clone())
                .registry(&registry)
                .build()?,
        ),
        None => None,
    };

    let client_ip = options
        .client_ip
        .clone()
        .unwrap_or_else(ClientIp::peer_only);
    let gateway = Gateway::new(
        connectors,
        limiter,
        dlq.clone(),
        local.clone(),
        client_ip,
        &config.server.tool_separator,
    );
    if let Some(crate::config::AuthConfig::Jwt(jwt)) = &config.auth {
        gateway.set_tool_scopes(jwt.tool_scopes.clone());
    }
    let mut quotas = Vec::new();
    for rule in &config.quotas {
        let mut quota_config = rate_limit.clone();
        quota_config.quota = rule.quota;
        let limiter = quota_config
            .build(format!("quota-{}", rule.name))
            .registry(&registry)
            .finish()?;
        quotas.push((rule.clone(), limiter));
    }
    gateway.set_quotas(quotas);
    let workers = std::iter::once(&dlq)
        .chain(local.as_ref())
        .map(|queue| {
            let gateway = gateway.clone();
            queue.worker(move |entry| {
                let gateway = gateway.clone();
                async move { gateway.replay(entry).await }
            })
        })
        .collect();

    // Serve only once the connectors answer, so the first calls do not fail needlessly.
    for addr in &http_waits {
        if !wait_for_tcp(addr, STARTUP_WAIT).await {
            tracing::warn!(%addr, "an upstream process did not start listening in time");
        }
    }
    for (name, url, health_path) in http_checks {
        let check = match health_path {
            Some(path) => monitor.add(&name, HttpCheck::new(&format!("{url}{path}"))?),
            None => monitor.add(&name, TcpCheck::new(host_port(&url))),
        };
        check.critical(false).start()?;
    }
    for (name, remote) in remote_backends {
        // The first session and tool listing (not fatal: the health check and the first
        // call try again).
        remote.relist().await;
        monitor
            .add(&name, RemoteCheck(remote))
            .critical(false)
            .start()?;
    }
    for stdio in &stdio_backends {
        if !stdio.wait_ready(Duration::from_secs(3)).await {
            tracing::warn!(connector = ?stdio, "a stdio server is not ready yet; serving without its tools");
        }
    }

    let cancel = tokio_util::sync::CancellationToken::new();
    let sessions = Arc::new(Sessions::new(
        config.server.max_sessions,
        config.server.session_idle_timeout,
    ));
    let mcp_service = {
        let gateway = gateway.clone();
        StreamableHttpService::new(
            move || Ok(gateway.clone()),
            sessions.clone(),
            mcp_server_config(&config.server, cancel.child_token()),
        )
    };
    let mut app = axum::Router::new()
        .nest_service("/mcp", mcp_service)
        .layer(axum::middleware::from_fn_with_state(
            sessions.clone(),
            refuse_when_full,
        ))
        .layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            track_responses,
        ));
    if let Some(crate::config::AuthConfig::Jwt(jwt)) = &config.auth {
        let verifier = Arc::new(crate::auth::JwtVerifier::new(jwt.clone()));
        app = app
            .layer(axum::middleware::from_fn_with_state(
                verifier.clone(),
                crate::auth::require_bearer,
            ))
            .merge(
                axum::Router::new()
                    .route(
                        crate::auth::METADATA_PATH,
                        axum::routing::get(crate::auth::metadata),
                    )
                    .with_state(verifier),
            );
    }
    let addr = config.server.mcp_addr;
    let listener = palisade::admin::bind_nodelay(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let mcp_addr = listener
        .local_addr()
        .map_err(|source| StartError::Listen { addr, source })?;
    let mcp = tokio::spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the MCP server stopped");
        }
    });

    // With Redis, this instance joins its fleet: fleet commands, the instance list and the
    // durable overrides (re-applied now, before the admin API opens).
    let fleet = match &options.redis {
        Some(redis) => {
            let id = options.instance_id.clone().unwrap_or_else(|| {
                let host = std::fs::read_to_string("/etc/hostname")
                    .map(|h| h.trim().to_owned())
                    .ok()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "gateway".to_owned());
                format!("{host}-{}", mcp_addr.port())
            });
            let fleet_config = palisade_fleet::FleetConfig {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                addresses: vec![format!("http://{mcp_addr}/mcp")],
                ..palisade_fleet::FleetConfig::new(
                    options.fleet.as_deref().unwrap_or("mcp-gateway"),
                    &id,
                )
            };
            Some(
                palisade_fleet::Fleet::join(redis, fleet_config, &registry)
                    .await
                    .map_err(|e| StartError::Environment(format!("cannot join the fleet: {e}")))?,
            )
        }
        None => None,
    };
    match &fleet {
        Some(fleet) => {
            for (breaker, mode) in to_share {
                fleet.share_breaker(&breaker, mode).map_err(|e| {
                    StartError::Environment(format!(
                        "cannot share breaker {:?}: {e}",
                        breaker.name()
                    ))
                })?;
            }
        }
        None if !to_share.is_empty() => tracing::warn!(
            breakers = to_share.len(),
            "shared_breaker is set but there is no Redis (REDIS_URL): the breakers decide \
             on this instance's calls only"
        ),
        None => {}
    }
    let mut admin = AdminRouter::builder(&registry).health(&monitor);
    if let Some(fleet) = &fleet {
        admin = admin.extension(palisade_fleet::fleet_router(fleet.clone()));
    }
    admin = match &options.admin_token {
        Some(token) => admin.token(token.clone()),
        None => admin.without_token(),
    };
    if let Some(handle) = options.prometheus.clone() {
        admin = admin.prometheus(handle);
    }
    let admin = admin.serve(config.server.admin_addr).await?;
    let admin_addr = admin.local_addr();
    let probes = match config.server.probes_addr {
        Some(addr) => {
            let mut probes = AdminRouter::builder(&registry).health(&monitor);
            if let Some(handle) = options.prometheus.clone() {
                probes = probes.prometheus(handle);
            }
            Some(
                probes
                    .serve_probes(addr, config.server.probes_metrics)
                    .await?,
            )
        }
        None => None,
    };
    let probes_addr = probes
        .as_ref()
        .map(palisade::admin::AdminServer::local_addr);

    Ok(Running {
        mcp_addr,
        admin_addr,
        registry,
        monitor,
        gateway,
        sessions,
        fleet,
        workers,
        admin,
        mcp,
        processes,
        cancel,
        shutdown_grace: config.server.shutdown_grace,
        probes,
        probes_addr,
    })
}

/// rmcp's server config: the cancellation token, and the `Host` names it answers to (the
/// loopback names, the listen address, and `[server] allowed_hosts`; `*` for any).
fn mcp_server_config(
    server: &crate::config::ServerConfig,
    cancel: tokio_util::sync::CancellationToken,
) -> StreamableHttpServerConfig {
    let config = StreamableHttpServerConfig::default().with_cancellation_token(cancel);
    if server.allowed_hosts.iter().any(|h| h.trim() == "*") {
        return config.disable_allowed_hosts();
    }
    let mut hosts: Vec<String> = palisade::admin::DEFAULT_ALLOWED_HOSTS
        .into_iter()
        .map(str::to_owned)
        .collect();
    let ip = server.mcp_addr.ip();
    if !ip.is_unspecified() {
        hosts.push(ip.to_string());
    }
    hosts.extend(server.allowed_hosts.iter().map(|h| h.trim().to_owned()));
    config.with_allowed_hosts(hosts)
}
