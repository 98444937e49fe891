//! The policies of a server's tools: by name, with a default for the rest.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use rmcp::model::Tool;

use crate::policy::ToolPolicy;

/// Makes the policy of a tool the server lists, at its first call (its own breaker, named like
/// the tool, say). Given the tool as the server lists it, annotations included.
pub type PolicyFactory = Arc<dyn Fn(&Tool) -> ToolPolicy + Send + Sync>;

/// The policies of a server's tools: one per tool name, and a default for every other tool.
///
/// The default is either one shared [`ToolPolicy`] ([`default_policy`](Self::default_policy))
/// or one made per tool at its first call ([`per_tool`](Self::per_tool)), for tools the server
/// lists; a name no listing knows always gets the shared default, so clients cannot make
/// components by calling made-up tools. A replay policy the default leaves unset follows each
/// tool's annotations ([`ReplayPolicy::from_annotations`](crate::ReplayPolicy::from_annotations):
/// `readOnlyHint` → never replayed, `idempotentHint` → replayed automatically,
/// `destructiveHint` or nothing → parked for an operator).
///
/// Cheap to clone: clones share the policies made per tool.
///
/// ```
/// use std::time::Duration;
/// use palisade_breaker::CircuitBreaker;
/// use palisade_mcp::{ToolPolicies, ToolPolicy};
///
/// let policies = ToolPolicies::new()
///     .tool("search", ToolPolicy::builder().timeout(Duration::from_secs(5)).build())
///     .per_tool(|tool| {
///         let breaker = CircuitBreaker::builder(tool.name.to_string()).build();
///         let builder = ToolPolicy::builder().timeout(Duration::from_secs(30));
///         match breaker {
///             Ok(b) => builder.breaker(b).build(),
///             Err(_) => builder.build(),
///         }
///     });
/// assert_eq!(policies.get("search").unwrap().timeout(), Some(Duration::from_secs(5)));
/// assert!(policies.get("fetch").is_none());
/// ```
#[derive(Clone, Default)]
pub struct ToolPolicies {
    tools: HashMap<String, Arc<ToolPolicy>>,
    default: Arc<ToolPolicy>,
    per_tool: Option<PerTool>,
}

#[derive(Clone)]
struct PerTool {
    make: PolicyFactory,
    made: Arc<RwLock<HashMap<String, Arc<ToolPolicy>>>>,
}

impl fmt::Debug for ToolPolicies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut tools: Vec<&str> = self.tools.keys().map(String::as_str).collect();
        tools.sort_unstable();
        f.debug_struct("ToolPolicies")
            .field("tools", &tools)
            .field("default", &self.default)
            .field("per_tool", &self.per_tool.is_some())
            .finish()
    }
}

impl ToolPolicies {
    /// No policies yet: every tool gets the default, which guards nothing.
    pub fn new() -> ToolPolicies {
        ToolPolicies::default()
    }

    /// Sets `tool`'s policy.
    #[must_use]
    pub fn tool(mut self, tool: impl Into<String>, policy: ToolPolicy) -> ToolPolicies {
        self.insert(tool, policy);
        self
    }

    /// Sets `tool`'s policy (in place).
    pub fn insert(&mut self, tool: impl Into<String>, policy: ToolPolicy) {
        self.tools.insert(tool.into(), Arc::new(policy));
    }

    /// Sets the policy of every tool without its own (shared by them all).
    #[must_use]
    pub fn default_policy(mut self, policy: ToolPolicy) -> ToolPolicies {
        self.default = Arc::new(policy);
        self
    }

    /// Makes the policy of each listed tool without its own with `make`, at its first call,
    /// and keeps it. Replaces policies made by an earlier factory.
    #[must_use]
    pub fn per_tool(
        mut self,
        make: impl Fn(&Tool) -> ToolPolicy + Send + Sync + 'static,
    ) -> ToolPolicies {
        self.per_tool = Some(PerTool {
            make: Arc::new(make),
            made: Arc::default(),
        });
        self
    }

    /// The policy set for `tool` by name, if any.
    pub fn get(&self, tool: &str) -> Option<&Arc<ToolPolicy>> {
        self.tools.get(tool)
    }

    /// The shared default policy.
    pub fn fallback(&self) -> &Arc<ToolPolicy> {
        &self.default
    }

    /// Whether defaults are made per tool ([`per_tool`](Self::per_tool)).
    pub fn makes_per_tool(&self) -> bool {
        self.per_tool.is_some()
    }

    /// The names with a policy of their own (not those made per tool).
    pub fn tools(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }

    /// The policy of `tool` when known without its listing: its own, or one made for it
    /// before; `None` when the default decides.
    pub fn lookup(&self, tool: &str) -> Option<Arc<ToolPolicy>> {
        if let Some(policy) = self.tools.get(tool) {
            return Some(Arc::clone(policy));
        }
        let per_tool = self.per_tool.as_ref()?;
        let made = per_tool.made.read().unwrap_or_else(PoisonError::into_inner);
        made.get(tool).map(Arc::clone)
    }

    /// The policy of a call of `tool`, given the tool as the server lists it (`None`: not
    /// listed): its own; else, with [`per_tool`](Self::per_tool), the one made for it (made
    /// now if it is listed); else the shared default.
    pub fn resolve(&self, tool: &str, listed: Option<&Tool>) -> Arc<ToolPolicy> {
        if let Some(policy) = self.lookup(tool) {
            return policy;
        }
        match (&self.per_tool, listed) {
            (Some(per_tool), Some(listed)) => {
                let mut made = per_tool
                    .made
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                // Made once, under the lock: a factory that registers components must not run
                // twice for one tool.
                Arc::clone(
                    made.entry(tool.to_owned())
                        .or_insert_with(|| Arc::new((per_tool.make)(listed))),
                )
            }
            _ => Arc::clone(&self.default),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn tool(name: &'static str) -> Tool {
        Tool::new(name, "a tool", Arc::new(serde_json::Map::new()))
    }

    #[test]
    fn named_policies_then_made_ones_then_the_default() {
        let made = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&made);
        let policies = ToolPolicies::new()
            .tool(
                "a",
                ToolPolicy::builder()
                    .timeout(Duration::from_secs(1))
                    .build(),
            )
            .default_policy(
                ToolPolicy::builder()
                    .timeout(Duration::from_secs(9))
                    .build(),
            )
            .per_tool(move |t| {
                count.fetch_add(1, Ordering::SeqCst);
                let secs = t.name.len() as u64;
                ToolPolicy::builder()
                    .timeout(Duration::from_secs(secs))
                    .build()
            });
        let timeout = |p: Arc<ToolPolicy>| p.timeout().unwrap().as_secs();
        assert_eq!(timeout(policies.resolve("a", Some(&tool("a")))), 1);
        assert!(policies.lookup("bbb").is_none());
        assert_eq!(timeout(policies.resolve("bbb", Some(&tool("bbb")))), 3);
        assert_eq!(timeout(policies.resolve("bbb", None)), 3);
        assert_eq!(timeout(policies.lookup("bbb").unwrap()), 3);
        assert_eq!(made.load(Ordering::SeqCst), 1, "made once");
        // Not listed: the shared default, nothing made.
        assert_eq!(timeout(policies.resolve("zz", None)), 9);
        assert_eq!(made.load(Ordering::SeqCst), 1);
        // Clones share what was made.
        let clone = policies.clone();
        assert_eq!(timeout(clone.lookup("bbb").unwrap()), 3);
    }

    #[test]
    fn without_a_factory_every_other_tool_gets_the_default() {
        let policies = ToolPolicies::new();
        assert!(policies.resolve("x", Some(&tool("x"))).timeout().is_none());
        assert!(!policies.makes_per_tool());
        assert_eq!(policies.tools().count(), 0);
    }
}
