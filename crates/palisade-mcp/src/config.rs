//! Tool policies from a config file (TOML, JSON), built against a [`Registry`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use palisade_breaker::{BreakerConfig, CircuitBreaker};
use palisade_bulkhead::{Bulkhead, BulkheadConfig};
use palisade_core::config::{ConfigError, check_duration, duration};
use palisade_core::registry::{NAME_RULE, is_valid_name};
use palisade_core::{BuildError, ComponentKind, Registry};
use palisade_dlq::DeadLetterQueue;
use palisade_ratelimit::{MAX_PERIOD, Quota, RateLimitConfig};
use rmcp::model::Tool;
use serde::{Deserialize, Serialize};

use crate::deadletter::DeadCall;
use crate::limit::{KeyBy, RateLimit};
use crate::policies::ToolPolicies;
use crate::policy::ToolPolicy;
use crate::replay::ReplayPolicy;

/// Longest accepted call timeout: one day.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The policies of a server's tools, as configured: per tool by name, a default for every
/// other tool, and the partitions (bulkheads) tools share.
///
/// [`build`](Self::build) registers each tool's components under the tool's name (see
/// [`component_name`]): its breaker and rate limiter; a partition's bulkhead under the
/// partition's. The default's breaker and rate limiter are made per tool, at the first call of
/// each tool the server lists, and registered the same way; its partition is shared. Errors
/// name the field (`tools.search.timeout`).
///
/// ```
/// use palisade_core::{ComponentKind, Registry};
/// use palisade_mcp::ToolPoliciesConfig;
///
/// let config: ToolPoliciesConfig = toml::from_str(r#"
///     [default]
///     timeout = "30s"
///
///     [tools.search]
///     timeout = "5s"
///     quota = { rate = 60, period = "1m", key = ["identity", "tool"] }
///     breaker = { consecutive_failures = 5, wait_duration = "30s" }
///     partition = "index"
///
///     [tools.delete_page]
///     replay = "park"
///
///     [partitions.index]
///     max_concurrent = 8
///     max_wait = "100ms"
/// "#).unwrap();
///
/// let registry = Registry::new();
/// let policies = config.build(&registry, None).unwrap();
/// assert!(policies.get("search").unwrap().breaker().is_some());
/// assert_eq!(registry.list(ComponentKind::CircuitBreaker), vec!["search"]);
/// assert_eq!(registry.list(ComponentKind::Bulkhead), vec!["index"]);
///
/// let bad: ToolPoliciesConfig = toml::from_str(r#"
///     [tools.search]
///     timeout = "0s"
/// "#).unwrap();
/// assert_eq!(bad.validate().unwrap_err().field, "tools.search.timeout");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolPoliciesConfig {
    /// The policy of every tool not named in `tools`.
    pub default: ToolPolicyConfig,
    /// Policies by tool name.
    pub tools: BTreeMap<String, ToolPolicyConfig>,
    /// Bulkheads by partition name; a tool joins one with `partition`.
    pub partitions: BTreeMap<String, BulkheadConfig>,
}

/// The policy of one tool, as configured. Every field is optional; an unset field guards
/// nothing (and an unset `replay` follows the tool's annotations).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolPolicyConfig {
    /// Calls that take longer are abandoned (a breaker failure). `"10s"`, `"500ms"`, or
    /// integer milliseconds; more than 0, at most a day.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// A rate limit on the tool's calls (in memory, per process).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaConfig>,
    /// What becomes of failed calls (`never`, `park`, `idempotent`, `always`). Default: from
    /// the tool's annotations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayPolicy>,
    /// The partition (under `partitions`) whose bulkhead the tool's calls run in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// A circuit breaker of the tool's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerConfig>,
}

/// A tool's rate limit: `rate` calls per `period`, in bursts of up to `burst`, per `key`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Calls admitted per `period` (1 to 10⁹).
    pub rate: u32,
    /// The period, as `"1s"`, `"1m"` or milliseconds. Default 1 s.
    #[serde(with = "duration", default = "one_second")]
    pub period: Duration,
    /// Calls admitted at once from a full bucket. Default: `rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// What the buckets are per: `identity` (default), `ip`, `tool`, or a list of them.
    #[serde(default)]
    pub key: KeyBy,
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

impl QuotaConfig {
    /// The quota.
    pub fn quota(&self) -> Quota {
        Quota {
            rate: self.rate,
            period: self.period,
            burst: self.burst,
        }
    }
}

/// The name a tool's components are registered under: the tool's name when it is a valid
/// component name (1–128 characters of `A-Z a-z 0-9 - _ . :`; MCP tool names with dots are),
/// else with every other character replaced by `_`, and cut to 128 characters ending in a
/// hash of the full name when longer.
///
/// ```
/// use palisade_mcp::component_name;
///
/// assert_eq!(component_name("github.create_issue"), "github.create_issue");
/// assert_eq!(component_name("search docs/v2"), "search_docs_v2");
/// assert_eq!(component_name(&"x".repeat(300)).len(), 128);
/// ```
pub fn component_name(tool: &str) -> Cow<'_, str> {
    if is_valid_name(tool) {
        return Cow::Borrowed(tool);
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    let mut name: String = tool
        .chars()
        .map(|c| if valid(c) { c } else { '_' })
        .collect();
    if name.is_empty() {
        name.push_str("tool");
    }
    if name.len() > 128 {
        let hash = tool.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        let suffix = format!("-{:08x}", hash & 0xffff_ffff);
        // ASCII after the mapping: every index is a character boundary.
        name.truncate(128 - suffix.len());
        name.push_str(&suffix);
    }
    Cow::Owned(name)
}

impl ToolPolicyConfig {
    /// Checks every field against `partitions`; the error names the first invalid one
    /// (relative to this struct: `timeout`, `quota.rate`, `breaker.wait_duration`,
    /// `partition`).
    pub fn validate(
        &self,
        partitions: &BTreeMap<String, BulkheadConfig>,
    ) -> Result<(), ConfigError> {
        if let Some(timeout) = self.timeout {
            check_duration("timeout", timeout, Duration::from_millis(1), MAX_TIMEOUT)?;
        }
        if let Some(quota) = &self.quota {
            quota.quota().validate().map_err(|e| e.within("quota"))?;
            if quota.period > MAX_PERIOD {
                return Err(ConfigError::new("quota.period", "at most a week"));
            }
        }
        if let Some(breaker) = &self.breaker {
            breaker.validate().map_err(|e| e.within("breaker"))?;
        }
        if let Some(partition) = &self.partition
            && !partitions.contains_key(partition)
        {
            let known: Vec<&str> = partitions.keys().map(String::as_str).collect();
            return Err(ConfigError::new(
                "partition",
                format!(
                    "no partition named {partition:?} (define it under [partitions]; defined: {known:?})"
                ),
            ));
        }
        Ok(())
    }
}

/// What one build registered, to undo it when a later step fails.
#[derive(Default)]
struct Registered {
    components: Vec<(ComponentKind, String)>,
}

impl Registered {
    fn undo(self, registry: &Registry) {
        for (kind, name) in self.components {
            registry.deregister(kind, &name);
        }
    }
}

/// A build error as a config error naming `field`.
fn named(field: &str, e: BuildError) -> ConfigError {
    match e {
        BuildError::InvalidConfig(e) => e.within(field),
        BuildError::Registry(e) => ConfigError::new(field, e.to_string()),
    }
}

/// The components of one tool's policy, built from `config` and registered under `name`
/// (when `registry` is given).
fn build_policy(
    config: &ToolPolicyConfig,
    name: &str,
    registry: Option<&Registry>,
    partitions: &BTreeMap<String, Bulkhead>,
    dlq: Option<&DeadLetterQueue<DeadCall>>,
    registered: &mut Registered,
) -> Result<ToolPolicy, ConfigError> {
    let mut policy = ToolPolicy::builder();
    if let Some(breaker) = &config.breaker {
        let mut b = CircuitBreaker::builder(name).config(breaker.clone());
        if let Some(r) = registry {
            b = b.registry(r);
        }
        policy = policy.breaker(b.build().map_err(|e| named("breaker", e))?);
        if registry.is_some() {
            registered
                .components
                .push((ComponentKind::CircuitBreaker, name.to_owned()));
        }
    }
    if let Some(quota) = &config.quota {
        let mut b = RateLimitConfig {
            quota: quota.quota(),
            ..Default::default()
        }
        .build(name);
        if let Some(r) = registry {
            b = b.registry(r);
        }
        let limiter = b.finish().map_err(|e| named("quota", e))?;
        if registry.is_some() {
            registered
                .components
                .push((ComponentKind::RateLimiter, name.to_owned()));
        }
        policy = policy.rate_limit(RateLimit::new(limiter).key_by(quota.key));
    }
    if let Some(partition) = &config.partition {
        let Some(bulkhead) = partitions.get(partition) else {
            return Err(ConfigError::new(
                "partition",
                format!("no partition named {partition:?}"),
            ));
        };
        policy = policy.bulkhead(bulkhead.clone());
    }
    if let Some(timeout) = config.timeout {
        policy = policy.timeout(timeout);
    }
    if let Some(replay) = config.replay {
        policy = policy.replay(replay);
    }
    if let Some(dlq) = dlq {
        policy = policy.dead_letter(dlq.clone());
    }
    Ok(policy.build())
}

impl ToolPoliciesConfig {
    /// Checks every field; the error names the first invalid one with its full path
    /// (`tools.search.timeout`, `partitions.db.max_concurrent`, `default.quota.rate`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, partition) in &self.partitions {
            let field = format!("partitions.{name}");
            if !is_valid_name(name) {
                return Err(ConfigError::new(
                    field,
                    format!("{name:?} is not a valid partition name; {NAME_RULE}"),
                ));
            }
            partition.validate().map_err(|e| e.within(&field))?;
        }
        self.default
            .validate(&self.partitions)
            .map_err(|e| e.within("default"))?;
        let mut owners: BTreeMap<Cow<'_, str>, &str> = BTreeMap::new();
        for (tool, config) in &self.tools {
            let field = format!("tools.{tool}");
            config
                .validate(&self.partitions)
                .map_err(|e| e.within(&field))?;
            if config.breaker.is_none() && config.quota.is_none() {
                continue;
            }
            let name = component_name(tool);
            if let Some(other) = owners.insert(name.clone(), tool) {
                return Err(ConfigError::new(
                    field,
                    format!("its components would be named {name:?}, like those of tool {other:?}"),
                ));
            }
        }
        Ok(())
    }

    /// Validates the config, then builds the policies: components registered in `registry`
    /// (see [`ToolPoliciesConfig`]), failed calls kept in `dlq` when given. When a component
    /// cannot be registered (its name is taken), nothing this call registered stays
    /// registered, and the error names the tool's field.
    pub fn build(
        &self,
        registry: &Registry,
        dlq: Option<&DeadLetterQueue<DeadCall>>,
    ) -> Result<ToolPolicies, ConfigError> {
        self.validate()?;
        let mut registered = Registered::default();
        match self.build_registered(registry, dlq, &mut registered) {
            Ok(policies) => Ok(policies),
            Err(e) => {
                registered.undo(registry);
                Err(e)
            }
        }
    }

    fn build_registered(
        &self,
        registry: &Registry,
        dlq: Option<&DeadLetterQueue<DeadCall>>,
        registered: &mut Registered,
    ) -> Result<ToolPolicies, ConfigError> {
        let mut partitions = BTreeMap::new();
        for (name, config) in &self.partitions {
            let bulkhead = Bulkhead::builder(name.clone())
                .config(config.clone())
                .registry(registry)
                .build()
                .map_err(|e| named(&format!("partitions.{name}"), e))?;
            registered
                .components
                .push((ComponentKind::Bulkhead, name.clone()));
            partitions.insert(name.clone(), bulkhead);
        }
        let mut policies = ToolPolicies::new();
        for (tool, config) in &self.tools {
            let name = component_name(tool);
            let policy = build_policy(config, &name, Some(registry), &partitions, dlq, registered)
                .map_err(|e| e.within(&format!("tools.{tool}")))?;
            policies.insert(tool.clone(), policy);
        }
        let default = &self.default;
        let shared = build_policy(
            &ToolPolicyConfig {
                breaker: None,
                quota: None,
                ..default.clone()
            },
            "default",
            None,
            &partitions,
            dlq,
            registered,
        )
        .map_err(|e| e.within("default"))?;
        policies = policies.default_policy(shared);
        if default.breaker.is_some() || default.quota.is_some() {
            let default = default.clone();
            let registry = registry.clone();
            let partitions = Arc::new(partitions);
            let dlq = dlq.cloned();
            policies = policies.per_tool(move |tool: &Tool| {
                per_tool_policy(&default, tool, &registry, &partitions, dlq.as_ref())
            });
        }
        Ok(policies)
    }
}

/// The default policy of `tool`, its components registered under its name; unregistered
/// when the name is taken (logged), so the tool is still guarded.
fn per_tool_policy(
    default: &ToolPolicyConfig,
    tool: &Tool,
    registry: &Registry,
    partitions: &BTreeMap<String, Bulkhead>,
    dlq: Option<&DeadLetterQueue<DeadCall>>,
) -> ToolPolicy {
    let name = component_name(&tool.name);
    let mut registered = Registered::default();
    match build_policy(
        default,
        &name,
        Some(registry),
        partitions,
        dlq,
        &mut registered,
    ) {
        Ok(policy) => policy,
        Err(e) => {
            registered.undo(registry);
            tracing::warn!(target: crate::guard::TARGET, tool = %tool.name, error = %e,
                "could not register the default policy's components of a tool; using unregistered ones");
            build_policy(
                default,
                &name,
                None,
                partitions,
                dlq,
                &mut Registered::default(),
            )
            .unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> ToolPoliciesConfig {
        toml::from_str(toml).unwrap()
    }

    fn field(toml: &str) -> String {
        parse(toml).validate().unwrap_err().field
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field("[tools.search]\ntimeout = 0"), "tools.search.timeout");
        assert_eq!(
            field("[tools.search]\ntimeout = \"2d\""),
            "tools.search.timeout"
        );
        assert_eq!(
            field("[tools.search]\nquota = { rate = 0 }"),
            "tools.search.quota.rate"
        );
        assert_eq!(
            field("[tools.search]\nbreaker = { half_open_max_calls = 0 }"),
            "tools.search.breaker.half_open_max_calls"
        );
        assert_eq!(
            field("[tools.search]\npartition = \"nope\""),
            "tools.search.partition"
        );
        assert_eq!(
            field("[partitions.db]\nmax_concurrent = 0"),
            "partitions.db.max_concurrent"
        );
        assert_eq!(field("[partitions.\"a b\"]"), "partitions.a b");
        assert_eq!(field("[default]\ntimeout = 0"), "default.timeout");
        assert_eq!(
            field("[tools.\"a/b\"]\nbreaker = {}\n[tools.a_b]\nbreaker = {}"),
            "tools.a_b"
        );
        let err =
            toml::from_str::<ToolPoliciesConfig>("[tools.search]\ntimout = \"1s\"").unwrap_err();
        assert!(err.to_string().contains("timout"), "{err}");
        let err =
            toml::from_str::<ToolPoliciesConfig>("[tools.search]\nreplay = \"twice\"").unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }

    #[test]
    fn builds_and_registers_under_tool_names() {
        let config = parse(
            r#"
            [default]
            timeout = "30s"
            breaker = { consecutive_failures = 2 }
            [tools."docs/search"]
            quota = { rate = 2, period = "1m", key = "ip" }
            breaker = {}
            partition = "db"
            replay = "always"
            [partitions.db]
            max_concurrent = 3
            "#,
        );
        let registry = Registry::new();
        let dlq = DeadLetterQueue::<DeadCall>::builder("calls")
            .build()
            .unwrap();
        let policies = config.build(&registry, Some(&dlq)).unwrap();
        let search = policies.get("docs/search").unwrap();
        assert_eq!(search.breaker().unwrap().name(), "docs_search");
        assert_eq!(search.bulkhead().unwrap().name(), "db");
        assert_eq!(search.rate_limits()[0].key(), KeyBy::IP);
        assert_eq!(search.replay(), Some(ReplayPolicy::Always));
        assert!(search.dead_letter().is_some());
        assert_eq!(
            registry.list(ComponentKind::RateLimiter),
            vec!["docs_search"]
        );

        // The default: shared parts now, a breaker per listed tool at its first call.
        assert_eq!(policies.fallback().timeout(), Some(Duration::from_secs(30)));
        assert!(policies.fallback().breaker().is_none());
        let tool = Tool::new("fetch", "", Arc::new(serde_json::Map::new()));
        let fetch = policies.resolve("fetch", Some(&tool));
        assert_eq!(fetch.breaker().unwrap().name(), "fetch");
        assert_eq!(fetch.timeout(), Some(Duration::from_secs(30)));
        let mut breakers = registry.list(ComponentKind::CircuitBreaker);
        breakers.sort();
        assert_eq!(breakers, vec!["docs_search", "fetch"]);
    }

    #[test]
    fn a_taken_name_undoes_the_build() {
        let registry = Registry::new();
        CircuitBreaker::builder("b")
            .registry(&registry)
            .build()
            .unwrap();
        let config = parse("[tools.a]\nbreaker = {}\n[tools.b]\nbreaker = {}\n[partitions.p]\n");
        let err = config.build(&registry, None).unwrap_err();
        assert_eq!(err.field, "tools.b.breaker");
        assert_eq!(registry.list(ComponentKind::CircuitBreaker), vec!["b"]);
        assert!(registry.list(ComponentKind::Bulkhead).is_empty());
    }
}
