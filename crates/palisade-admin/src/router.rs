//! [`AdminRouter`] and its builder: the routes, the token, the optional monitor and exporter.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode, Uri};
use axum::response::Html;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusHandle, PrometheusRecorder};
use palisade_core::{Env, Registry};
use tokio::sync::watch;

use crate::auth::{FILE_SUFFIX, TOKEN_ENV, VIEWER_TOKEN_ENV};
use crate::components::{self, KIND_PATHS};
use crate::error::ApiError;
use crate::history::{self, History};
use crate::host::{DEFAULT_ALLOWED_HOSTS, HostPolicy, check_host};
use crate::serve::{AdminServer, ServeError};
use crate::state::{AppState, MetricsSource, Shared};
use crate::{events, health, prometheus};

/// Largest request body accepted by default (64 KiB); a larger one is refused with 413.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Interval of the keep-alive comments on the event stream by default.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Tokens shorter than this are accepted with a warning.
const SHORT_TOKEN: usize = 16;

/// The admin API over a [`Registry`], as an [`axum::Router`]; see [`AdminRouter::builder`]
/// and the [crate documentation](crate) for the routes.
#[derive(Debug, Clone, Copy)]
pub struct AdminRouter;

impl AdminRouter {
    /// Starts building the admin router over `registry`.
    ///
    /// ```
    /// use palisade_admin::AdminRouter;
    /// use palisade_core::Registry;
    ///
    /// let registry = Registry::new();
    /// let app: axum::Router = AdminRouter::builder(&registry).token("a-long-random-secret").build();
    /// # let _ = app;
    /// ```
    pub fn builder(registry: &Registry) -> AdminRouterBuilder {
        AdminRouterBuilder {
            registry: registry.clone(),
            #[cfg(feature = "health")]
            health: None,
            token: TokenSource::ProcessEnv,
            viewer: TokenSource::ProcessEnv,
            hosts: HostPolicy::Only(
                DEFAULT_ALLOWED_HOSTS
                    .iter()
                    .map(|h| (*h).to_owned())
                    .collect(),
            ),
            protect_reads: true,
            metrics_need_token: true,
            metrics: MetricsSource::None,
            body_limit: DEFAULT_BODY_LIMIT,
            keep_alive: DEFAULT_KEEP_ALIVE,
            allow_non_loopback: false,
            extensions: Vec::new(),
            history: History::new(registry),
        }
    }
}

enum TokenSource {
    /// Read the variable (or the file its `_FILE` variable names) from the process
    /// environment when building.
    ProcessEnv,
    /// Given (or read from an [`Env`]) already; `None` disables mutations.
    Fixed(Option<String>),
}

/// Configures an admin router; finish with [`build`](Self::build) or [`serve`](Self::serve).
#[must_use]
pub struct AdminRouterBuilder {
    registry: Registry,
    #[cfg(feature = "health")]
    health: Option<palisade_health::HealthMonitor>,
    token: TokenSource,
    viewer: TokenSource,
    hosts: HostPolicy,
    protect_reads: bool,
    metrics_need_token: bool,
    metrics: MetricsSource,
    body_limit: usize,
    keep_alive: Duration,
    allow_non_loopback: bool,
    extensions: Vec<Router>,
    history: History,
}

impl fmt::Debug for AdminRouterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token itself.
        let token = match &self.token {
            TokenSource::ProcessEnv => "from PALISADE_ADMIN_TOKEN",
            TokenSource::Fixed(Some(_)) => "set",
            TokenSource::Fixed(None) => "none (mutations disabled)",
        };
        let metrics = match &self.metrics {
            MetricsSource::None => "none",
            MetricsSource::Handle(_) => "prometheus handle",
            MetricsSource::Recorder(_) => "prometheus recorder",
        };
        let mut d = f.debug_struct("AdminRouterBuilder");
        d.field("registry", &self.registry).field("token", &token);
        #[cfg(feature = "health")]
        d.field("health", &self.health.is_some());
        d.field("hosts", &self.hosts)
            .field("protect_reads", &self.protect_reads)
            .field("metrics", &metrics)
            .field("body_limit", &self.body_limit)
            .field("keep_alive", &self.keep_alive)
            .field("allow_non_loopback", &self.allow_non_loopback)
            .finish()
    }
}

fn clean_token(token: Option<String>) -> Option<String> {
    let token = token?.trim().to_owned();
    (!token.is_empty()).then_some(token)
}

/// `var` from `env`, or else the contents of the file `var_FILE` names. A file that cannot be
/// read is logged (naming the variable and path, never the contents) and counts as no token.
fn token_from<F: Fn(&str) -> Option<String>>(env: &Env<F>, var: &str) -> Option<String> {
    if let Some(token) = clean_token(env.get(var)) {
        return Some(token);
    }
    let file_var = format!("{var}{FILE_SUFFIX}");
    let path = clean_token(env.get(&file_var))?;
    match std::fs::read_to_string(&path) {
        Ok(text) => clean_token(Some(text)),
        Err(e) => {
            tracing::error!(target: "palisade::admin", variable = %file_var, path = %path, error = %e, "cannot read the token file; no token from it");
            None
        }
    }
}

impl AdminRouterBuilder {
    /// Serves `/livez`, `/readyz`, `/health` and `/admin/health` from `monitor`. Without a
    /// monitor the probes answer 200 and `/admin/health` 404. (Its components are registry
    /// components anyway when the monitor was built with the same registry.)
    #[cfg(feature = "health")]
    pub fn health(mut self, monitor: &palisade_health::HealthMonitor) -> Self {
        self.health = Some(monitor.clone());
        self
    }

    /// The bearer token that mutations (`POST`) need. Default: the value of
    /// `PALISADE_ADMIN_TOKEN` when [`build`](Self::build) runs; without one, mutations are
    /// refused with 403. A blank token counts as none. Use a long random value.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = TokenSource::Fixed(clean_token(Some(token.into())));
        self
    }

    /// Reads the tokens from `env` (tests pass an [`Env::from_fn`]): the operator's from
    /// `PALISADE_ADMIN_TOKEN` or the file `PALISADE_ADMIN_TOKEN_FILE` names, the viewer's
    /// from `PALISADE_VIEWER_TOKEN` or `PALISADE_VIEWER_TOKEN_FILE`.
    pub fn token_from_env<F: Fn(&str) -> Option<String>>(mut self, env: &Env<F>) -> Self {
        self.token = TokenSource::Fixed(token_from(env, TOKEN_ENV));
        self.viewer = TokenSource::Fixed(token_from(env, VIEWER_TOKEN_ENV));
        self
    }

    /// A token for reads only (the *viewer* role): with it, every `GET` answers when reads
    /// need a token, and every command is refused with 403. Default: `PALISADE_VIEWER_TOKEN`
    /// (or the file `PALISADE_VIEWER_TOKEN_FILE` names) when [`build`](Self::build) runs.
    pub fn viewer_token(mut self, token: impl Into<String>) -> Self {
        self.viewer = TokenSource::Fixed(clean_token(Some(token.into())));
        self
    }

    /// The names the admin API answers to in `Host` (and, from browsers, `Origin`); any
    /// other is refused with 403 `host_not_allowed`, so a web page cannot reach it through
    /// DNS rebinding. Default: `localhost`, `127.0.0.1`, `::1`, and the address
    /// [`serve`](Self::serve) listens on. Names are matched without port, case-insensitively.
    ///
    /// ```
    /// # let registry = palisade_core::Registry::new();
    /// let app = palisade_admin::AdminRouter::builder(&registry)
    ///     .allowed_hosts(["localhost", "admin.internal.example"])
    ///     .build();
    /// # let _ = app;
    /// ```
    pub fn allowed_hosts<I, S>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut policy = HostPolicy::Only(Vec::new());
        for h in hosts {
            policy.add(h.as_ref());
        }
        self.hosts = policy;
        self
    }

    /// Answers whatever the `Host` (when the application in front checks it).
    pub fn allow_any_host(mut self) -> Self {
        self.hosts = HostPolicy::Any;
        self
    }

    /// No token, whatever the environment says: every mutation is refused with 403.
    pub fn without_token(mut self) -> Self {
        self.token = TokenSource::Fixed(None);
        self
    }

    /// Whether reads (`GET /admin/...`) need a token, the operator's or the viewer's. The
    /// probes (`/livez`, `/readyz`, `/health`) and the dashboard page (which asks for the
    /// token) never do. Default: on: snapshots, events and dead-letter entries tell a lot.
    /// Turn it off only behind an authenticating proxy.
    pub fn require_token_for_reads(mut self, required: bool) -> Self {
        self.protect_reads = required;
        self
    }

    /// Whether `GET /metrics` needs a token when reads do (default: yes; Prometheus sends one
    /// with `authorization: {credentials: …}`). Off serves it to any scraper that can reach
    /// the listener.
    pub fn metrics_need_token(mut self, required: bool) -> Self {
        self.metrics_need_token = required;
        self
    }

    /// Serves `GET /metrics` from the handle of a recorder installed as the global `metrics`
    /// recorder (`PrometheusBuilder::new().install_recorder()`); each scrape first calls
    /// [`Registry::export_metrics`]. Without an exporter, `/metrics` answers 404.
    pub fn prometheus(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = MetricsSource::Handle(handle);
        self
    }

    /// Serves `GET /metrics` from a recorder that is *not* installed globally
    /// (`PrometheusBuilder::new().build_recorder()`): each scrape runs
    /// [`Registry::export_metrics`] with it as the thread's local recorder, then renders it.
    /// Only what components export appears: figures they record elsewhere go to the global
    /// recorder.
    pub fn prometheus_recorder(mut self, recorder: PrometheusRecorder) -> Self {
        self.metrics = MetricsSource::Recorder(Arc::new(recorder));
        self
    }

    /// The largest request body accepted (default [`DEFAULT_BODY_LIMIT`]); larger ones get 413.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// How often the event stream sends a keep-alive comment (default [`DEFAULT_KEEP_ALIVE`]).
    pub fn sse_keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval;
        self
    }

    /// Lets [`serve`](Self::serve) bind an address other than loopback. Name the host clients
    /// use in [`allowed_hosts`](Self::allowed_hosts), and terminate TLS in front: tokens are
    /// bearer secrets.
    pub fn allow_non_loopback(mut self, allow: bool) -> Self {
        self.allow_non_loopback = allow;
        self
    }

    fn state(self) -> (AppState, usize, bool, HostPolicy) {
        let token = match self.token {
            TokenSource::ProcessEnv => token_from(&Env::process(), TOKEN_ENV),
            TokenSource::Fixed(t) => t,
        };
        let viewer = match self.viewer {
            TokenSource::ProcessEnv => token_from(&Env::process(), VIEWER_TOKEN_ENV),
            TokenSource::Fixed(t) => t,
        };
        match &token {
            None => tracing::info!(
                target: "palisade::admin",
                "admin mutations are disabled: set {TOKEN_ENV} to enable them"
            ),
            Some(t) if t.len() < SHORT_TOKEN => tracing::warn!(
                target: "palisade::admin",
                "the admin token is shorter than {SHORT_TOKEN} characters; use a long random value"
            ),
            Some(_) => {}
        }
        let (shutdown, _) = watch::channel(false);
        let state = AppState {
            inner: Arc::new(Shared {
                registry: self.registry,
                #[cfg(feature = "health")]
                health: self.health,
                token,
                viewer,
                protect_reads: self.protect_reads,
                metrics_need_token: self.metrics_need_token,
                metrics: self.metrics,
                keep_alive: self.keep_alive,
                shutdown: Arc::new(shutdown),
                history: self.history,
            }),
        };
        (state, self.body_limit, self.allow_non_loopback, self.hosts)
    }

    /// Keeps the per-second history (`GET /admin/history`, the dashboard's charts) in
    /// `history`, built over the same registry: to choose its clock, capacity or sampling.
    /// By default the router has one of its own ([`History::new`]); get it with
    /// [`history_handle`](Self::history_handle).
    ///
    /// ```
    /// use palisade_admin::{AdminRouter, History};
    ///
    /// let registry = palisade_core::Registry::new();
    /// let history = History::builder(&registry).sample_when_served(false).build()?;
    /// let app = AdminRouter::builder(&registry).history(history.clone()).build();
    /// history.sample_now(); // a test takes its samples itself
    /// # let _ = app;
    /// # Ok::<(), palisade_core::ConfigError>(())
    /// ```
    pub fn history(mut self, history: History) -> Self {
        self.history = history;
        self
    }

    /// The history the router will serve (a handle to the same rings), for
    /// [`History::sample_now`] and [`History::spawn_sampler`].
    pub fn history_handle(&self) -> History {
        self.history.clone()
    }

    /// Serves `routes` (an application's own admin routes, such as
    /// `palisade_fleet::fleet_router`'s) beside the built-in ones, behind the same rules:
    /// the `Host`/`Origin` check, a reader's token for `GET` and `HEAD` (when reads need one),
    /// the operator token for every other method; the body limit; and `X-Palisade-Actor`
    /// replaced by the audit trail's actor of the authenticated caller.
    pub fn extension(mut self, routes: Router) -> Self {
        self.extensions.push(routes);
        self
    }

    /// The router. Nest or merge it into an application's router, or serve it alone with
    /// [`serve`](Self::serve).
    pub fn build(mut self) -> Router {
        let extensions = std::mem::take(&mut self.extensions);
        let (state, body_limit, _, hosts) = self.state();
        with_extensions(
            routes(state.clone(), body_limit, hosts.clone()),
            extensions,
            state,
            body_limit,
            hosts,
        )
    }

    /// Serves the router on its own listener at `addr` (port 0 picks a free port; see
    /// [`AdminServer::local_addr`]). Refuses an address that is not loopback unless
    /// [`allow_non_loopback`](Self::allow_non_loopback) was set. Must run inside a tokio
    /// runtime. The audit trail gets each caller's address. Starts the history's sampler
    /// (unless [`HistoryBuilder::sample_when_served`](crate::HistoryBuilder::sample_when_served)
    /// is off), which stops with the server.
    pub async fn serve(mut self, addr: SocketAddr) -> Result<AdminServer, ServeError> {
        let extensions = std::mem::take(&mut self.extensions);
        let (state, body_limit, allow_non_loopback, mut hosts) = self.state();
        if !allow_non_loopback && !addr.ip().to_canonical().is_loopback() {
            return Err(ServeError::NotLoopback { addr });
        }
        if !addr.ip().is_unspecified() {
            hosts.add(&addr.ip().to_string());
        }
        let shutdown = state.inner.shutdown.clone();
        let history = state.history().clone();
        let router = with_extensions(
            routes(state.clone(), body_limit, hosts.clone()),
            extensions,
            state,
            body_limit,
            hosts,
        );
        let server = AdminServer::start(router, addr, shutdown.clone()).await?;
        if history.sample_when_served() {
            history::spawn_sampler(&history, shutdown.subscribe());
        }
        Ok(server)
    }
}

impl AdminRouterBuilder {
    /// Serves only the probes (`/livez`, `/readyz`, `/health`) and, with `metrics`, `GET
    /// /metrics` (without a token) on a listener of their own at `addr`, any address: what a
    /// kubelet or Prometheus needs, while the admin API stays on loopback. Nothing on it can
    /// change anything or read a component's details.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let registry = palisade_core::Registry::new();
    /// let probes = palisade_admin::AdminRouter::builder(&registry)
    ///     .serve_probes("127.0.0.1:0".parse()?, false)
    ///     .await?;
    /// # probes.shutdown().await?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn serve_probes(
        self,
        addr: SocketAddr,
        metrics: bool,
    ) -> Result<AdminServer, ServeError> {
        let (state, _, _, _) = self.state();
        let shutdown = state.inner.shutdown.clone();
        let mut router = Router::new()
            .route("/livez", get(health::livez))
            .route("/readyz", get(health::readyz))
            .route("/health", get(health::health));
        if metrics {
            router = router.route("/metrics", get(prometheus::open_metrics));
        }
        let router = router
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(state);
        AdminServer::start(router, addr, shutdown).await
    }
}

/// Paths that stay open when [`AdminRouterBuilder::require_token_for_reads`] is on.
pub(crate) const OPEN_PATHS: [&str; 4] = ["/livez", "/readyz", "/health", "/admin/dashboard"];

fn routes(state: AppState, body_limit: usize, hosts: HostPolicy) -> Router {
    let mut router = Router::new()
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/health", get(health::health))
        .route("/metrics", get(prometheus::metrics))
        .route("/admin", get(components::index))
        .route("/admin/dashboard", get(dashboard))
        .route("/admin/resilience", get(components::resilience))
        .route(
            "/admin/health",
            get(health::monitor_report).post(health::monitor_command),
        )
        .route("/admin/events", get(events::recent))
        .route("/admin/events/stream", get(events::stream))
        .route("/admin/history", get(history::route::get_history))
        .route("/admin/dlq/{name}/entries", get(components::dlq_entries))
        .route("/admin/dlq/{name}/entries/{id}", get(components::dlq_entry));
    for (kind, base) in KIND_PATHS {
        router = router.merge(components::kind_router(kind, base));
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(hosts),
            check_host,
        ))
        .with_state(state)
}

/// `router` with the application's `extensions` merged in, each behind the token rules
/// ([`AdminRouterBuilder::extension`]).
fn with_extensions(
    router: Router,
    extensions: Vec<Router>,
    state: AppState,
    body_limit: usize,
    hosts: HostPolicy,
) -> Router {
    let hosts = Arc::new(hosts);
    extensions.into_iter().fold(router, |router, extension| {
        router.merge(
            extension
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    crate::auth::guard_extension,
                ))
                .layer(DefaultBodyLimit::max(body_limit))
                .layer(axum::middleware::from_fn_with_state(
                    Arc::clone(&hosts),
                    check_host,
                )),
        )
    })
}

/// The dashboard page (static; its data comes from the JSON routes).
async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route for {method} {}; GET /admin lists the routes",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{method} is not allowed on {}; GET /admin lists the routes",
            uri.path()
        ),
    )
}
