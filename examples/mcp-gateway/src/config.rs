//! The gateway's configuration: a TOML file (or the embedded demo), then the environment.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use palisade::breaker::BreakerConfig;
use palisade::core::ConfigError;
use palisade::core::config::duration;
use palisade::dlq::DlqConfig;
use palisade::health::CheckConfig;
use palisade::ratelimit::RateLimitConfig;
use palisade::toolbox::CountAs;
use palisade::toolbox::retry::RetryConfig;
use serde::Deserialize;

use crate::replay::ReplayPolicy;

/// The embedded demo configuration: what `cargo run -p mcp-gateway` serves with no `--config`.
pub const DEMO_CONFIG: &str = include_str!("../demo.toml");

/// Stand-in for the gateway's own executable in connector commands (the demo's connectors run
/// `{self} flaky-upstream ...`, so nothing else has to be built or installed).
pub const SELF_TOKEN: &str = "{self}";
/// Stand-in, in a connector's `url` and `args`, for a free loopback port picked at start.
pub const PORT_TOKEN: &str = "{port}";

/// The whole configuration. Unknown keys are errors, so a typo never goes unnoticed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Listen addresses and the per-call timeout.
    #[serde(default)]
    pub server: ServerConfig,
    /// The per-client rate limit (`[rate_limit]`, palisade's `RateLimitConfig`); the key is the
    /// client's IP address. `RATE_LIMIT_BACKEND` and `REDIS_URL` override the file.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Every connector's circuit breaker, unless the connector has its own `breaker` table.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Share every connector's breaker with the fleet (with Redis; see `palisade_fleet`'s
    /// shared breakers), unless the connector has its own `shared_breaker` table:
    /// `{ mode = "failure_rate", failure_rate_threshold = 50, minimum_calls = 20, window = "30s" }`
    /// or `{ mode = "quorum", quorum = 2 }`. Default: not shared.
    #[serde(default)]
    pub shared_breaker: Option<palisade_fleet::ShareMode>,
    /// The dead-letter queue of failed calls and its retry worker (`[dlq]`).
    #[serde(default)]
    pub dlq: DlqConfig,
    /// How connectors and Redis are checked, and how crashed child processes are restarted
    /// (`[health]`, palisade's `CheckConfig`: `interval`, `timeout`, `failure_threshold`,
    /// `auto_restart`, `[health.restart]` with the backoff and crash-loop limits).
    #[serde(default)]
    pub health: CheckConfig,
    /// Restart crashed child processes at all: the monitor's global switch. Default true;
    /// `HEALTH_MONITOR_AUTO_RESTART=false` turns it off at start.
    #[serde(skip)]
    pub auto_restart: bool,
    /// Bulkhead partitions (`[[partitions]]`); a connector names one (default `default`,
    /// created with 16 slots when not listed).
    #[serde(default)]
    pub partitions: Vec<PartitionConfig>,
    /// The connectors (`[[connectors]]`) whose tools the gateway serves.
    #[serde(default)]
    pub connectors: Vec<ConnectorConfig>,
    /// How MCP clients are authenticated (`[auth]`). Required: `mode = "jwt"`, or
    /// `mode = "none"` written out (the demo does, and says so at start).
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Fault injection (`[fault_injection]`): with `allowed = true`, every connector gets a
    /// fault injector named like it (`/admin/fault-injectors/<connector>`), off until an
    /// operator switches it on for a time-to-live (at most `max_ttl`). Default: not allowed,
    /// and no injector exists.
    #[serde(default)]
    pub fault_injection: FaultInjectionConfig,
    /// More quotas on tool calls (`[[quotas]]`), each with its own key and quota, on top of
    /// `[rate_limit]`; every rule that applies to a call must admit it, and a refusal names
    /// the rule. Same backend as `[rate_limit]` (memory or Redis).
    #[serde(default)]
    pub quotas: Vec<QuotaRule>,
}

/// `[fault_injection]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultInjectionConfig {
    /// Whether operators may switch fault injection on. Default false.
    #[serde(default)]
    pub allowed: bool,
    /// The longest time-to-live an operator may give (default 1 h, the most there is).
    #[serde(default = "default_fault_ttl", with = "duration")]
    pub max_ttl: Duration,
}

impl Default for FaultInjectionConfig {
    fn default() -> Self {
        FaultInjectionConfig {
            allowed: false,
            max_ttl: default_fault_ttl(),
        }
    }
}

fn default_fault_ttl() -> Duration {
    palisade::chaos::MAX_TTL
}

/// What a quota rule's bucket is per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaKey {
    /// The caller's identity (its token's subject, an API key's name), or its address when
    /// it has none.
    Identity,
    /// The caller's address (IPv6: its network).
    Ip,
    /// The tool called (its served name, `<connector>_<tool>`).
    Tool,
}

impl QuotaKey {
    /// The same part of a key in `palisade-mcp`'s terms.
    pub fn part(self) -> palisade::mcp::KeyPart {
        match self {
            QuotaKey::Identity => palisade::mcp::KeyPart::Identity,
            QuotaKey::Ip => palisade::mcp::KeyPart::Ip,
            QuotaKey::Tool => palisade::mcp::KeyPart::Tool,
        }
    }
}

/// Settings of one tool of a connector, over the connector's
/// (`[connectors.tool_settings.<tool>]`, by the tool's name at the connector).
///
/// ```toml
/// [connectors.tool_settings.forecast]
/// timeout = "2s"            # instead of the connector's timeout
/// partition = "slow"        # its own bulkhead partition (a [[partitions]] entry)
/// replay = "idempotent"     # its replay policy (as tool_replay)
/// quota = { rate = 10, period = "1m" }   # a quota of its own, on [rate_limit]'s backend
/// quota_key = ["identity"]  # what that quota's bucket is per (default: the caller's identity)
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSettings {
    /// Its call timeout.
    #[serde(default, with = "duration::option")]
    pub timeout: Option<Duration>,
    /// The bulkhead partition its calls run in.
    #[serde(default)]
    pub partition: Option<String>,
    /// Its replay policy.
    #[serde(default)]
    pub replay: Option<ReplayPolicy>,
    /// A quota of its own, checked after the client's limit and the `[[quotas]]` rules.
    #[serde(default)]
    pub quota: Option<palisade::ratelimit::Quota>,
    /// What that quota's bucket is per. Default: the caller's identity.
    #[serde(default = "default_quota_key")]
    pub quota_key: Vec<QuotaKey>,
    /// Retries of its failed calls, if it is idempotent (palisade's `RetryConfig`), instead of
    /// the connector's `retry`; its own component and budget (`<connector>-<tool>`).
    #[serde(default)]
    pub retry: Option<RetryConfig>,
}

fn default_quota_key() -> Vec<QuotaKey> {
    vec![QuotaKey::Identity]
}

/// One `[[quotas]]` rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRule {
    /// Its name: in refusals, and its limiter's (`quota-<name>`) in the admin API.
    pub name: String,
    /// What a bucket is per: one or more of `identity`, `ip`, `tool`.
    pub key: Vec<QuotaKey>,
    /// The tools it applies to, by served name: exact names, or a prefix ending in `*`
    /// (`weather_*`: every tool of the connector `weather` with the default separator).
    /// Default: all.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Its quota.
    pub quota: palisade::ratelimit::Quota,
}

impl QuotaRule {
    /// Whether the rule applies to a call of `tool`.
    pub fn applies_to(&self, tool: &str) -> bool {
        self.tools.is_empty()
            || self.tools.iter().any(|t| match t.strip_suffix('*') {
                Some(prefix) => tool.starts_with(prefix),
                None => t == tool,
            })
    }
}

/// `[auth]`: how MCP clients are authenticated.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum AuthConfig {
    /// Every client is let in (a demo, or a gateway behind an authenticating proxy).
    None,
    /// Bearer JWTs checked against an issuer's JWKS.
    Jwt(JwtConfig),
}

/// `[auth] mode = "jwt"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The issuer (`iss`), also named in the protected-resource metadata.
    pub issuer: String,
    /// Where the issuer's keys are (`https://issuer/.well-known/jwks.json`).
    pub jwks_url: String,
    /// This gateway's resource URI (`https://tools.example.com/mcp`): the audience (`aud`)
    /// tokens must name (RFC 8707).
    pub resource: String,
    /// A scope every token must carry (`scope` or `scp`), when set.
    #[serde(default)]
    pub required_scope: Option<String>,
    /// The scope each listed tool needs (`tool_scopes = { "notes_add" = "notes:write" }`):
    /// a token without it does not see the tool in `tools/list` and is refused on
    /// `tools/call`. Tools not listed need only `required_scope`.
    #[serde(default)]
    pub tool_scopes: std::collections::BTreeMap<String, String>,
    /// Clock skew allowed on `exp` and `nbf`. Default 30 s; at most 5 minutes.
    #[serde(default = "default_leeway", with = "duration")]
    pub leeway: Duration,
    /// Static API keys for machine clients (`[[auth.api_keys]]`), sent as
    /// `Authorization: Bearer <key>` instead of a JWT. Only their SHA-256 is in the config.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
}

/// One `[[auth.api_keys]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Who holds it: the identity its calls are rate-limited and audited by (`key:<name>`).
    pub name: String,
    /// The key's SHA-256, 64 hex digits (`printf %s "$KEY" | sha256sum`).
    pub sha256: String,
    /// Its scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where the MCP endpoint (`/mcp`, streamable HTTP) listens. Default `127.0.0.1:8080`.
    pub mcp_addr: SocketAddr,
    /// Where the admin router and dashboard listen (loopback only). Default `127.0.0.1:9090`.
    pub admin_addr: SocketAddr,
    /// The longest a connector call may take before it counts as a timeout. Default 10 s.
    #[serde(with = "duration")]
    pub call_timeout: Duration,
    /// The most MCP sessions open at once. Past it, a new session (`initialize`) is refused
    /// with `503` and a `Retry-After`; open sessions keep working. Default 2 000: an idle
    /// session holds about 110 KiB (rmcp's session task and channels), so the default bounds
    /// what a client leaking sessions can take to about 220 MiB.
    pub max_sessions: usize,
    /// An MCP session with no request for this long is closed (its client gets `404` and
    /// starts a new one). Default 5 minutes.
    #[serde(with = "duration")]
    pub session_idle_timeout: Duration,
    /// Threads that run the gateway (tokio workers); `0` means one per CPU core. Default 1:
    /// a gateway mostly waits on sockets, and on a small machine (2 cores, shared with its
    /// upstreams) one thread gave both the lowest latency and the highest throughput, because
    /// every hand-over between worker threads costs a wake-up (docs/benchmarks.md, "Gateway").
    /// Raise it when one core is saturated.
    pub worker_threads: usize,
    /// On `SIGTERM` (or Ctrl-C) the gateway refuses new tool calls and gives the calls in
    /// flight this long to finish; those still waiting then are dead-lettered under their
    /// tool's replay policy. Default 10 s; at most 10 minutes.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// Where `/livez`, `/readyz`, `/health` (and, with `probes_metrics`, `/metrics`) are served
    /// without a token, on any address, for a kubelet or Prometheus, while the admin API stays
    /// on loopback. Default: none (the probes are on the admin listener only).
    pub probes_addr: Option<SocketAddr>,
    /// Serve `/metrics` on `probes_addr` too. Default true.
    pub probes_metrics: bool,
    /// The `Host` names the MCP endpoint answers to, besides the loopback names and the
    /// address it listens on (a gateway behind an ingress lists the public name); `["*"]`
    /// answers to any. Others get 403, against DNS rebinding. Default: none more.
    pub allowed_hosts: Vec<String>,
    /// What joins a connector's name and its tool's in the names clients see
    /// (`weather_forecast`). One of `_` (default), `__`, `-`, `--`, or `.` (valid MCP, but
    /// LLM function-calling APIs such as OpenAI's refuse dots, and many clients pass tool
    /// names to them). Served names always fit `^[a-zA-Z0-9_-]{1,64}$` otherwise: other
    /// characters of an upstream's tool name become `_`.
    pub tool_separator: String,
}

impl GatewayConfig {
    /// The separator is one of [`names::SEPARATORS`](crate::names::SEPARATORS), and the tools
    /// the config declares (http connectors) are served under names that fit 64 characters
    /// and are all different: two tools that would be served under one name are refused,
    /// naming both.
    fn check_tool_names(&self) -> Result<(), ConfigError> {
        let sep = self.server.tool_separator.as_str();
        if !crate::names::SEPARATORS.contains(&sep) {
            return Err(ConfigError::new(
                "server.tool_separator",
                format!("{sep:?} is not one of {:?}", crate::names::SEPARATORS),
            ));
        }
        let mut served: std::collections::BTreeMap<String, (String, String)> =
            std::collections::BTreeMap::new();
        for (i, c) in self.connectors.iter().enumerate() {
            for (j, t) in c.tools.iter().enumerate() {
                let name = format!("{}{sep}{}", c.name, crate::names::sanitize(&t.name));
                if name.len() > crate::names::MAX_LEN {
                    return Err(ConfigError::new(
                        format!("connectors[{i}].tools[{j}].name"),
                        format!(
                            "served as {name:?}, longer than {} characters; shorten the connector or tool name",
                            crate::names::MAX_LEN
                        ),
                    ));
                }
                if let Some((other_connector, other_tool)) =
                    served.insert(name.clone(), (c.name.clone(), t.name.clone()))
                {
                    return Err(ConfigError::new(
                        format!("connectors[{i}].tools[{j}].name"),
                        format!(
                            "tool {:?} of connector {:?} and tool {other_tool:?} of connector {other_connector:?} would both be served as {name:?}; rename one, or choose another server.tool_separator",
                            t.name, c.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The most MCP sessions the config accepts (`server.max_sessions`).
pub const MAX_SESSIONS_LIMIT: usize = 1_000_000;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            mcp_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 9090)),
            call_timeout: Duration::from_secs(10),
            max_sessions: 2_000,
            session_idle_timeout: Duration::from_secs(300),
            worker_threads: 1,
            shutdown_grace: Duration::from_secs(10),
            probes_addr: None,
            probes_metrics: true,
            allowed_hosts: Vec::new(),
            tool_separator: crate::names::DEFAULT_SEPARATOR.to_owned(),
        }
    }
}

/// One `[[partitions]]` entry: a bulkhead shared by the connectors that name it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionConfig {
    /// The partition's name (its bulkhead's name in the admin API).
    pub name: String,
    /// Calls running at once. Default 16.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: u32,
    /// How long a call waits for a slot before it is refused. Default 100 ms.
    #[serde(default = "default_max_wait", with = "duration")]
    pub max_wait: Duration,
}

impl PartitionConfig {
    /// A partition named `name` with the default limit and wait.
    pub fn named(name: &str) -> PartitionConfig {
        PartitionConfig {
            name: name.to_owned(),
            max_concurrent: default_max_concurrent(),
            max_wait: default_max_wait(),
        }
    }
}

fn default_max_concurrent() -> u32 {
    16
}

fn default_max_wait() -> Duration {
    Duration::from_millis(100)
}

/// The partition connectors use when they name none.
pub const DEFAULT_PARTITION: &str = "default";

/// What kind of server a connector talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorKind {
    /// An HTTP service: a tool call is `POST {url}/tools/{tool}` with the arguments as JSON.
    Http,
    /// A stdio MCP server run as a child process; its tools are listed at every start.
    Stdio,
    /// A remote MCP server over streamable HTTP at `url` (`http://host:port/mcp`); its tools,
    /// resources and prompts are listed from it.
    Mcp,
}

/// One `[[connectors]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// The connector's name: its tools are served as `{name}_{tool}` (see
    /// `server.tool_separator`), and its breaker and health component carry the name.
    pub name: String,
    /// `http` or `stdio`.
    pub kind: ConnectorKind,
    /// The bulkhead partition its calls run in. Default `default`.
    #[serde(default = "default_partition")]
    pub partition: String,
    /// HTTP: the base URL (`{port}` is replaced by a free port picked at start).
    #[serde(default)]
    pub url: Option<String>,
    /// HTTP: the path checked for health (`GET`, 2xx healthy). Default: a TCP connect.
    #[serde(default)]
    pub health_path: Option<String>,
    /// HTTP and MCP: headers sent with every request (not secrets: the config file is not a
    /// secret store; use `header_env` or `auth_token_*` for those).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// HTTP and MCP: headers whose values come from environment variables (`{ "X-Api-Key" =
    /// "WEATHER_API_KEY" }`), read at start; a variable that is unset stops the start.
    #[serde(default)]
    pub header_env: std::collections::BTreeMap<String, String>,
    /// MCP: the environment variable holding a bearer token for the upstream
    /// (`Authorization: Bearer <token>`). Never logged.
    #[serde(default)]
    pub auth_token_env: Option<String>,
    /// MCP: a file holding that token (trailing whitespace ignored), for secrets mounted as
    /// files. Never logged.
    #[serde(default)]
    pub auth_token_file: Option<std::path::PathBuf>,
    /// HTTP: the tools it serves.
    #[serde(default)]
    pub tools: Vec<ToolConfig>,
    /// The program to run: the stdio server, or (HTTP) a process the gateway starts and
    /// supervises. `{self}` is the gateway's own executable.
    #[serde(default)]
    pub command: Option<String>,
    /// Its arguments (`{port}` as in `url`).
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables of the process.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// When the gateway stops or restarts the process: how long its process group has between
    /// `SIGTERM` and `SIGKILL`. Default 5 s; at most 10 minutes.
    #[serde(default = "default_stop_grace", with = "duration")]
    pub stop_grace: Duration,
    /// This connector's breaker, instead of the global `[breaker]`.
    #[serde(default)]
    pub breaker: Option<BreakerConfig>,
    /// How its breaker is shared with the fleet, instead of the global `[shared_breaker]`.
    #[serde(default)]
    pub shared_breaker: Option<palisade_fleet::ShareMode>,
    /// Its call timeout, instead of `server.call_timeout`: a timeout component named like the
    /// connector (`/admin/timeouts/<name>`), whose deadline operators can change at runtime.
    #[serde(default, with = "duration::option")]
    pub timeout: Option<Duration>,
    /// How its breaker counts a call that ran out of time: `failure` (default) or `slow` (the
    /// slow-call rate only).
    #[serde(default)]
    pub timeout_counts_as: CountAs,
    /// Retries of its **idempotent** tools' failed calls (read-only or `idempotentHint`
    /// annotations, or a configured `idempotent`/`always` replay policy):
    /// `retry = { max_attempts = 3, base_delay = "100ms", max_delay = "2s" }` (palisade's
    /// `RetryConfig`: exponential backoff with full jitter, `Retry-After` honoured, and a retry
    /// budget shared by the connector's tools, `budget = { ratio = 0.2 }`). A retry component
    /// named like the connector (`/admin/retries/<name>`). Default: no retry. Other tools'
    /// calls are never retried.
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// Failed calls that may succeed later (timeouts, 5xx, unavailable) go to the dead-letter
    /// queue under each tool's replay policy. Default true; `false` is `replay = "never"` for
    /// every tool (set one or the other).
    #[serde(default = "yes")]
    pub dead_letter: bool,
    /// The replay policy of all its tools (`never`, `park`, `idempotent`, `always`), instead
    /// of the default each tool's MCP annotations give (read-only: `never`; idempotent:
    /// `idempotent`; otherwise `park`). See `mcp_gateway::replay::ReplayPolicy`.
    #[serde(default)]
    pub replay: Option<ReplayPolicy>,
    /// Per-tool replay policies (`tool_replay = { send_email = "never" }`), by the tool's name
    /// at the connector; they override `replay` and the annotations.
    #[serde(default)]
    pub tool_replay: std::collections::BTreeMap<String, ReplayPolicy>,
    /// Per-tool settings (timeout, partition, replay policy, quota), by the tool's name at the
    /// connector; see [`ToolSettings`].
    #[serde(default)]
    pub tool_settings: std::collections::BTreeMap<String, ToolSettings>,
}

impl ConnectorConfig {
    /// The replay policy of all its tools, when the config sets one (`replay`, or `never`
    /// with `dead_letter = false`).
    pub fn replay_policy(&self) -> Option<ReplayPolicy> {
        if self.dead_letter {
            self.replay
        } else {
            Some(ReplayPolicy::Never)
        }
    }
}

fn default_stop_grace() -> Duration {
    palisade::health::DEFAULT_STOP_GRACE
}

fn default_partition() -> String {
    DEFAULT_PARTITION.to_owned()
}

fn yes() -> bool {
    true
}

/// A tool of an HTTP connector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    /// The tool's name at the connector.
    pub name: String,
    /// What it does (shown to the model).
    #[serde(default)]
    pub description: String,
    /// Its input JSON schema. Default: any object.
    #[serde(default)]
    pub input_schema: Option<serde_json::Value>,
    /// Its MCP annotations, shown to clients in `tools/list` and deciding its default replay
    /// policy: `annotations = { readOnlyHint = true }`.
    #[serde(default)]
    pub annotations: Option<ToolHints>,
}

/// A tool's MCP annotations (hints), as written in the config, with the MCP names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ToolHints {
    /// A title for people.
    #[serde(default)]
    pub title: Option<String>,
    /// It changes nothing (`readOnlyHint`): a failed call is never replayed.
    #[serde(default)]
    pub read_only_hint: Option<bool>,
    /// It may destroy or overwrite data (`destructiveHint`).
    #[serde(default)]
    pub destructive_hint: Option<bool>,
    /// Calling it twice with the same arguments does what calling it once does
    /// (`idempotentHint`): a failed call is replayed.
    #[serde(default)]
    pub idempotent_hint: Option<bool>,
    /// It reaches outside systems (`openWorldHint`).
    #[serde(default)]
    pub open_world_hint: Option<bool>,
}

impl ToolHints {
    /// The MCP form.
    pub fn to_annotations(&self) -> rmcp::model::ToolAnnotations {
        let mut a = match &self.title {
            Some(title) => rmcp::model::ToolAnnotations::with_title(title.clone()),
            None => rmcp::model::ToolAnnotations::new(),
        };
        a.read_only_hint = self.read_only_hint;
        a.destructive_hint = self.destructive_hint;
        a.idempotent_hint = self.idempotent_hint;
        a.open_world_hint = self.open_world_hint;
        a
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A name that is valid and not taken yet (among `seen`, of `what`s).
fn check_name<'a>(
    field: String,
    name: &'a str,
    seen: &mut HashSet<&'a str>,
    what: &str,
) -> Result<(), ConfigError> {
    if !valid_name(name) {
        return Err(ConfigError::new(field, "1-64 letters, digits, '-' or '_'"));
    }
    if !seen.insert(name) {
        return Err(ConfigError::new(
            field,
            format!("duplicate {what} {name:?}"),
        ));
    }
    Ok(())
}

fn check_timeout(field: &str, timeout: Duration) -> Result<(), ConfigError> {
    if timeout.is_zero() || timeout > Duration::from_secs(600) {
        return Err(ConfigError::new(field, "must be within 1ms..=600s"));
    }
    Ok(())
}

impl GatewayConfig {
    /// Parses TOML and validates it; the error names the offending key.
    pub fn from_toml(text: &str) -> Result<GatewayConfig, ConfigError> {
        let mut config: GatewayConfig =
            toml::from_str(text).map_err(|e| ConfigError::new("config", e.to_string()))?;
        config.auto_restart = true;
        config.validate()?;
        Ok(config)
    }

    /// The embedded demo configuration.
    pub fn demo() -> Result<GatewayConfig, ConfigError> {
        GatewayConfig::from_toml(DEMO_CONFIG)
    }

    /// Applies `RATE_LIMIT_BACKEND`, `REDIS_URL` (with `REDIS_SENTINEL_*` and `REDIS_TLS_*`) and
    /// `HEALTH_MONITOR_AUTO_RESTART` from `env`,
    /// then validates again.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("RATE_LIMIT_BACKEND") {
            self.rate_limit.backend = v.parse().map_err(|_| {
                ConfigError::new(
                    "RATE_LIMIT_BACKEND",
                    format!("expected memory or redis, got {v:?}"),
                )
            })?;
        }
        if let Some(redis) =
            palisade::core::redis::RedisConfig::from_env_with(&palisade::core::Env::from_fn(&env))?
        {
            // A missing or unreadable TLS file stops the start here, naming its variable.
            redis.check_files().map_err(|e| {
                ConfigError::new(
                    palisade::core::redis::RedisConfig::env_field(&e.field),
                    e.reason,
                )
            })?;
            self.rate_limit.redis_server = Some(redis);
        }
        if let Some(v) = env("HEALTH_MONITOR_AUTO_RESTART") {
            self.auto_restart = match v.trim() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => {
                    return Err(ConfigError::new(
                        "HEALTH_MONITOR_AUTO_RESTART",
                        format!("expected true or false, got {v:?}"),
                    ));
                }
            };
        }
        self.validate()
    }

    /// Checks every section; the error names the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.rate_limit
            .validate()
            .map_err(|e| e.within("rate_limit"))?;
        self.breaker.validate().map_err(|e| e.within("breaker"))?;
        let ttl = self.fault_injection.max_ttl;
        if ttl < palisade::chaos::MIN_TTL || ttl > palisade::chaos::MAX_TTL {
            return Err(ConfigError::new(
                "fault_injection.max_ttl",
                format!("{ttl:?} is outside 1 ms to 1 h"),
            ));
        }
        if let Some(mode) = &self.shared_breaker {
            mode.validate().map_err(|e| e.within("shared_breaker"))?;
        }
        self.dlq.validate().map_err(|e| e.within("dlq"))?;
        self.health.validate().map_err(|e| e.within("health"))?;
        check_timeout("server.call_timeout", self.server.call_timeout)?;
        if self.server.max_sessions == 0 || self.server.max_sessions > MAX_SESSIONS_LIMIT {
            return Err(ConfigError::new(
                "server.max_sessions",
                format!("must be within 1..={MAX_SESSIONS_LIMIT}"),
            ));
        }
        if self.server.worker_threads > 1024 {
            return Err(ConfigError::new(
                "server.worker_threads",
                "must be within 0..=1024 (0: one per CPU core)",
            ));
        }
        if self.server.shutdown_grace > Duration::from_secs(600) {
            return Err(ConfigError::new(
                "server.shutdown_grace",
                "must be at most 600s",
            ));
        }
        let idle = self.server.session_idle_timeout;
        if idle < Duration::from_secs(1) || idle > Duration::from_secs(86_400) {
            return Err(ConfigError::new(
                "server.session_idle_timeout",
                "must be within 1s..=24h",
            ));
        }
        let mut partitions = HashSet::new();
        for (i, p) in self.partitions.iter().enumerate() {
            let at = |field: &str| format!("partitions[{i}].{field}");
            check_name(at("name"), &p.name, &mut partitions, "partition")?;
            if p.max_concurrent == 0 || p.max_concurrent > palisade::bulkhead::MAX_LIMIT {
                return Err(ConfigError::new(
                    at("max_concurrent"),
                    format!("must be within 1..={}", palisade::bulkhead::MAX_LIMIT),
                ));
            }
            if p.max_wait > palisade::bulkhead::MAX_WAIT {
                return Err(ConfigError::new(at("max_wait"), "too long"));
            }
        }
        if self.connectors.is_empty() {
            return Err(ConfigError::new(
                "connectors",
                "at least one connector is needed",
            ));
        }
        let mut names = HashSet::new();
        for (i, c) in self.connectors.iter().enumerate() {
            let at = |field: &str| format!("connectors[{i}].{field}");
            check_name(at("name"), &c.name, &mut names, "connector")?;
            if c.partition != DEFAULT_PARTITION && !partitions.contains(c.partition.as_str()) {
                return Err(ConfigError::new(
                    at("partition"),
                    format!("no partition named {:?} in [[partitions]]", c.partition),
                ));
            }
            if let Some(retry) = &c.retry {
                retry.validate().map_err(|e| e.within(&at("retry")))?;
            }
            for (tool, settings) in &c.tool_settings {
                if let Some(retry) = &settings.retry {
                    retry
                        .validate()
                        .map_err(|e| e.within(&at(&format!("tool_settings.{tool}.retry"))))?;
                }
            }
            if let Some(mode) = &c.shared_breaker {
                mode.validate()
                    .map_err(|e| e.within(&at("shared_breaker")))?;
            }
            if let Some(b) = &c.breaker {
                b.validate().map_err(|e| e.within(&at("breaker")))?;
            }
            if let Some(t) = c.timeout {
                check_timeout(&at("timeout"), t)?;
            }
            if c.stop_grace > Duration::from_secs(600) {
                return Err(ConfigError::new(at("stop_grace"), "must be at most 600s"));
            }
            if !c.dead_letter && (c.replay.is_some() || !c.tool_replay.is_empty()) {
                return Err(ConfigError::new(
                    at("dead_letter"),
                    "dead_letter = false means replay = \"never\" for every tool; set either it or replay/tool_replay",
                ));
            }
            if c.kind == ConnectorKind::Http {
                let unknown = |name: &&String| !c.tools.iter().any(|t| &t.name == *name);
                if let Some(tool) = c.tool_replay.keys().find(unknown) {
                    return Err(ConfigError::new(
                        at(&format!("tool_replay.{tool}")),
                        "no tool of this connector has that name",
                    ));
                }
                if let Some(tool) = c.tool_settings.keys().find(unknown) {
                    return Err(ConfigError::new(
                        at(&format!("tool_settings.{tool}")),
                        "no tool of this connector has that name",
                    ));
                }
            }
            for (tool, t) in &c.tool_settings {
                let at = |f: &str| at(&format!("tool_settings.{tool}.{f}"));
                if let Some(timeout) = t.timeout {
                    check_timeout(&at("timeout"), timeout)?;
                }
                if t.replay.is_some() && c.tool_replay.contains_key(tool) {
                    return Err(ConfigError::new(
                        at("replay"),
                        "set the tool's replay policy here or in tool_replay, not both",
                    ));
                }
                if t.replay.is_some() && !c.dead_letter {
                    return Err(ConfigError::new(
                        at("replay"),
                        "dead_letter = false means replay = \"never\" for every tool",
                    ));
                }
                if let Some(q) = &t.quota {
                    q.validate().map_err(|e| e.within(&at("quota")))?;
                }
                if t.quota_key.is_empty() {
                    return Err(ConfigError::new(
                        at("quota_key"),
                        "one or more of identity, ip, tool",
                    ));
                }
                if let Some(p) = &t.partition
                    && p != DEFAULT_PARTITION
                    && !self.partitions.iter().any(|x| &x.name == p)
                {
                    return Err(ConfigError::new(
                        at("partition"),
                        format!("no [[partitions]] entry is named {p:?}"),
                    ));
                }
            }
            match c.kind {
                ConnectorKind::Http => {
                    let url = c.url.as_deref().unwrap_or_default();
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(ConfigError::new(
                            at("url"),
                            "an http:// or https:// URL is needed",
                        ));
                    }
                    if c.tools.is_empty() {
                        return Err(ConfigError::new(
                            at("tools"),
                            "an http connector lists its tools",
                        ));
                    }
                    for (j, t) in c.tools.iter().enumerate() {
                        if !valid_name(&t.name) {
                            return Err(ConfigError::new(
                                at(&format!("tools[{j}].name")),
                                "1-64 letters, digits, '-' or '_'",
                            ));
                        }
                        if let Some(s) = &t.input_schema
                            && !s.is_object()
                        {
                            return Err(ConfigError::new(
                                at(&format!("tools[{j}].input_schema")),
                                "must be a JSON schema object",
                            ));
                        }
                    }
                    if let Some(p) = &c.health_path
                        && !p.starts_with('/')
                    {
                        return Err(ConfigError::new(at("health_path"), "must start with '/'"));
                    }
                }
                ConnectorKind::Mcp => {
                    let url = c.url.as_deref().unwrap_or_default();
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(ConfigError::new(
                            at("url"),
                            "the MCP endpoint's http:// or https:// URL is needed (for example http://127.0.0.1:7001/mcp)",
                        ));
                    }
                    if !c.tools.is_empty() || c.health_path.is_some() {
                        return Err(ConfigError::new(
                            at("kind"),
                            "an mcp connector lists the upstream's own tools and checks its health by MCP ping: tools and health_path are for http connectors",
                        ));
                    }
                    if c.auth_token_env.is_some() && c.auth_token_file.is_some() {
                        return Err(ConfigError::new(
                            at("auth_token_file"),
                            "set auth_token_env or auth_token_file, not both",
                        ));
                    }
                }
                ConnectorKind::Stdio => {
                    if c.command.as_deref().is_none_or(str::is_empty) {
                        return Err(ConfigError::new(
                            at("command"),
                            "a stdio connector needs a command",
                        ));
                    }
                    if c.url.is_some()
                        || !c.tools.is_empty()
                        || c.health_path.is_some()
                        || !c.headers.is_empty()
                        || !c.header_env.is_empty()
                        || c.auth_token_env.is_some()
                        || c.auth_token_file.is_some()
                    {
                        return Err(ConfigError::new(
                            at("kind"),
                            "url, tools, health_path, headers and tokens are for http and mcp connectors (a stdio server lists its own tools)",
                        ));
                    }
                }
            }
        }
        self.check_tool_names()?;
        let mut rules = HashSet::new();
        for (i, rule) in self.quotas.iter().enumerate() {
            check_name(
                format!("quotas[{i}].name"),
                &rule.name,
                &mut rules,
                "quota rule",
            )?;
            if rule.key.is_empty() {
                return Err(ConfigError::new(
                    format!("quotas[{i}].key"),
                    "one or more of identity, ip, tool",
                ));
            }
            rule.quota
                .validate()
                .map_err(|e| e.within(&format!("quotas[{i}].quota")))?;
        }
        match &self.auth {
            None => {
                return Err(ConfigError::new(
                    "auth",
                    "say how MCP clients are authenticated: [auth] mode = \"jwt\" (with issuer, \
                     jwks_url and resource), or mode = \"none\" to let any client in",
                ));
            }
            Some(AuthConfig::None) => {}
            Some(AuthConfig::Jwt(jwt)) => {
                for (field, url) in [
                    ("auth.jwks_url", &jwt.jwks_url),
                    ("auth.resource", &jwt.resource),
                ] {
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        return Err(ConfigError::new(
                            field,
                            "an http:// or https:// URL is needed",
                        ));
                    }
                }
                if jwt.issuer.trim().is_empty() {
                    return Err(ConfigError::new("auth.issuer", "the issuer is needed"));
                }
                if jwt.leeway > Duration::from_secs(300) {
                    return Err(ConfigError::new("auth.leeway", "must be at most 300s"));
                }
                let mut names = HashSet::new();
                for (i, key) in jwt.api_keys.iter().enumerate() {
                    check_name(
                        format!("auth.api_keys[{i}].name"),
                        &key.name,
                        &mut names,
                        "API key",
                    )?;
                    if key.sha256.len() != 64 || !key.sha256.bytes().all(|b| b.is_ascii_hexdigit())
                    {
                        return Err(ConfigError::new(
                            format!("auth.api_keys[{i}].sha256"),
                            "64 hex digits: the key's SHA-256 (printf %s \"$KEY\" | sha256sum), never the key",
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_is_valid() {
        let demo = GatewayConfig::demo().unwrap();
        assert!(demo.connectors.len() >= 3);
        assert!(
            demo.connectors
                .iter()
                .any(|c| c.kind == ConnectorKind::Stdio)
        );
    }

    fn err(text: &str) -> ConfigError {
        GatewayConfig::from_toml(text).unwrap_err()
    }

    #[test]
    fn bad_configs_name_the_key() {
        let http = "[auth]\nmode = \"none\"\n[[connectors]]\nname = \"w\"\nkind = \"http\"\nurl = \"http://x\"\ntools = [{name = \"t\"}]\n";
        assert!(GatewayConfig::from_toml(http).is_ok());
        assert_eq!(err("").field, "connectors");
        assert!(err("[bogus]\n").reason.contains("bogus"));
        assert_eq!(
            err(&http.replace("http://x", "ftp://x")).field,
            "connectors[0].url"
        );
        let again = http.trim_start_matches("[auth]\nmode = \"none\"\n");
        assert_eq!(err(&format!("{http}{again}")).field, "connectors[1].name");
        let no_auth = err(again);
        assert_eq!(no_auth.field, "auth");
        assert!(no_auth.reason.contains("mode = \"none\""), "{no_auth}");
        let jwt = |extra: &str| {
            format!(
                "{again}[auth]\nmode = \"jwt\"\nissuer = \"https://i\"\njwks_url = \"https://i/jwks\"\nresource = \"https://t/mcp\"\n{extra}"
            )
        };
        assert!(GatewayConfig::from_toml(&jwt("")).is_ok());
        assert_eq!(err(&jwt("leeway = \"1h\"\n")).field, "auth.leeway");
        let key = |sha: &str| {
            jwt(&format!(
                "[[auth.api_keys]]\nname = \"bot\"\nsha256 = \"{sha}\"\n"
            ))
        };
        assert!(GatewayConfig::from_toml(&key(&"ab".repeat(32))).is_ok());
        let rule = |key: &str| {
            format!(
                "{http}[[quotas]]\nname = \"q\"\nkey = {key}\nquota = {{ rate = 1, period = \"1m\", burst = 1 }}\n"
            )
        };
        assert!(GatewayConfig::from_toml(&rule("[\"identity\", \"tool\"]")).is_ok());
        assert_eq!(err(&rule("[]")).field, "quotas[0].key");
        assert!(err(&rule("[\"country\"]")).reason.contains("country"));
        let plain = err(&key("sk-the-key-itself"));
        assert_eq!(plain.field, "auth.api_keys[0].sha256");
        assert!(plain.reason.contains("never the key"), "{plain}");
        assert!(err(&jwt("audience = \"x\"\n")).reason.contains("audience"));
        assert_eq!(
            err(&format!("{http}partition = \"nope\"\n")).field,
            "connectors[0].partition"
        );
        assert_eq!(
            err("[[connectors]]\nname = \"s\"\nkind = \"stdio\"\n").field,
            "connectors[0].command"
        );
        assert_eq!(
            err(&format!("[breaker]\nhalf_open_max_calls = 0\n{http}")).field,
            "breaker.half_open_max_calls"
        );
        assert_eq!(
            err(&format!("[server]\nmax_sessions = 0\n{http}")).field,
            "server.max_sessions"
        );
        assert_eq!(
            err(&format!("{http}dead_letter = false\nreplay = \"always\"\n")).field,
            "connectors[0].dead_letter"
        );
        assert_eq!(
            err(&format!("{http}tool_replay = {{ nope = \"never\" }}\n")).field,
            "connectors[0].tool_replay.nope"
        );
        assert!(
            err(&format!("{http}replay = \"sometimes\"\n"))
                .reason
                .contains("sometimes")
        );
        let typo = http.replace(
            "{name = \"t\"}",
            "{name = \"t\", annotations = { readOnly = true }}",
        );
        assert!(err(&typo).reason.contains("readOnly"), "{}", err(&typo));
        let hinted = http.replace(
            "{name = \"t\"}",
            "{name = \"t\", annotations = { readOnlyHint = true }}",
        );
        let config =
            GatewayConfig::from_toml(&format!("{hinted}tool_replay = {{ t = \"park\" }}\n"))
                .unwrap();
        assert_eq!(
            config.connectors[0].tools[0]
                .annotations
                .as_ref()
                .unwrap()
                .read_only_hint,
            Some(true)
        );
        assert_eq!(config.connectors[0].tool_replay["t"], ReplayPolicy::Park);
        assert_eq!(
            err(&format!(
                "[server]\nsession_idle_timeout = \"10ms\"\n{http}"
            ))
            .field,
            "server.session_idle_timeout"
        );
        assert_eq!(
            err(&format!("[server]\nworker_threads = 5000\n{http}")).field,
            "server.worker_threads"
        );
        let mut ok = GatewayConfig::from_toml(http).unwrap();
        assert_eq!(
            ok.apply_env(|k| (k == "RATE_LIMIT_BACKEND").then(|| "redis".into()))
                .unwrap_err()
                .field,
            "rate_limit.redis_url"
        );
    }

    #[test]
    fn served_names_fit_function_calling_apis_and_collisions_are_refused() {
        let auth = "[auth]\nmode = \"none\"\n";
        let connector = |name: &str, tool: &str| {
            format!(
                "[[connectors]]\nname = \"{name}\"\nkind = \"http\"\nurl = \"http://x\"\ntools = [{{name = \"{tool}\"}}]\n"
            )
        };
        let both = format!("{auth}{}{}", connector("a", "b_c"), connector("a_b", "c"));
        let err = GatewayConfig::from_toml(&both).unwrap_err();
        assert_eq!(err.field, "connectors[1].tools[0].name", "{err}");
        for part in [
            "\"c\" of connector \"a_b\"",
            "\"b_c\" of connector \"a\"",
            "\"a_b_c\"",
        ] {
            assert!(err.reason.contains(part), "{part} not in {err}");
        }
        // Another separator tells them apart.
        GatewayConfig::from_toml(&format!("[server]\ntool_separator = \"__\"\n{both}")).unwrap();
        let err = GatewayConfig::from_toml(&format!("[server]\ntool_separator = \"/\"\n{both}"))
            .unwrap_err();
        assert_eq!(err.field, "server.tool_separator");
        let long = format!("{auth}{}", connector(&"c".repeat(40), &"t".repeat(30)));
        let err = GatewayConfig::from_toml(&long).unwrap_err();
        assert!(err.reason.contains("longer than 64"), "{err}");
    }

    #[test]
    fn tool_settings_are_checked_naming_the_field() {
        let base = "[auth]\nmode = \"none\"\n[[connectors]]\nname = \"w\"\nkind = \"http\"\nurl = \"http://x\"\ntools = [{name = \"t\"}]\n";
        let err = |extra: &str| GatewayConfig::from_toml(&format!("{base}{extra}")).unwrap_err();
        assert_eq!(
            err("[connectors.tool_settings.nope]\ntimeout = \"1s\"\n").field,
            "connectors[0].tool_settings.nope"
        );
        assert_eq!(
            err("[connectors.tool_settings.t]\ntimeout = \"0s\"\n").field,
            "connectors[0].tool_settings.t.timeout"
        );
        assert_eq!(
            err("[connectors.tool_settings.t]\npartition = \"gone\"\n").field,
            "connectors[0].tool_settings.t.partition"
        );
        assert_eq!(
            err(
                "tool_replay = { t = \"never\" }\n[connectors.tool_settings.t]\nreplay = \"park\"\n"
            )
            .field,
            "connectors[0].tool_settings.t.replay"
        );
        assert_eq!(
            err("[connectors.tool_settings.t]\nquota = { rate = 0, period = \"1m\" }\n").field,
            "connectors[0].tool_settings.t.quota.rate"
        );
        GatewayConfig::from_toml(&format!(
            "{base}[connectors.tool_settings.t]\ntimeout = \"1s\"\nquota = {{ rate = 5, period = \"1m\" }}\nquota_key = [\"ip\", \"tool\"]\n"
        ))
        .unwrap();
    }
}
