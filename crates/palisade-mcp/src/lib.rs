#![doc = include_str!("../README.md")]
//!
//! # Modules at a glance
//!
//! | item | what |
//! | --- | --- |
//! | [`Guarded`] | wraps any rmcp [`ServerHandler`](rmcp::ServerHandler): tool calls under their [`ToolPolicy`], everything else passed through |
//! | [`ToolPolicy`], [`ToolPolicies`] | what guards one tool (breaker, bulkhead, [`RateLimit`]s, timeout, [`ReplayPolicy`], dead-letter queue); policies by tool name with a default |
//! | [`run`], [`invoke`], [`Outcome`], [`CallError`] | the engine, for servers that dispatch calls themselves (a gateway) |
//! | [`Refusal`], [`tool_error`] | refusals as tool results a model can act on |
//! | [`Outcome::into_result`], [`keep`], [`DeadCall`] | failed calls into a dead-letter queue under their replay policy |
//! | [`Caller`], [`Identity`] | who called: the key rate limits count under |
//! | [`ToolPoliciesConfig`] | the same from TOML or JSON, built against a [`Registry`](palisade_core::Registry) |

mod caller;
mod config;
mod deadletter;
mod guard;
mod limit;
mod policies;
mod policy;
mod refusal;
mod replay;
mod server;

pub use caller::{Caller, IPV6_PREFIX, Identity};
pub use config::{MAX_TIMEOUT, QuotaConfig, ToolPoliciesConfig, ToolPolicyConfig, component_name};
pub use deadletter::{DeadCall, DeadLetter, Kept, Replay, keep};
pub use guard::{CallError, Outcome, Verdict, invoke, invoke_classified, invoke_retrying, run};
pub use limit::{KeyBy, KeyPart, RateLimit};
pub use policies::{PolicyFactory, ToolPolicies};
pub use policy::{ToolPolicy, ToolPolicyBuilder};
pub use refusal::{Refusal, SHUTDOWN_RETRY_AFTER, tool_error};
pub use replay::{
    IDEMPOTENCY_HEADER, IDEMPOTENCY_META, PolicySource, ReplayPolicy, idempotency_key,
};
pub use server::{CallerOf, Guarded, ResultClassifier};

#[cfg(test)]
mod readme {
    /// The top-level README shows the same example as this crate's README (the doc-tested one).
    #[test]
    fn the_workspace_readme_shows_the_tested_example() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
        let Ok(workspace) = std::fs::read_to_string(path) else {
            return; // built outside the workspace (a published crate)
        };
        let ours = include_str!("../README.md");
        let example = |readme: &str| -> Option<String> {
            let start = readme.find("```rust\n")?;
            let end = readme[start..].find("\n```")? + start;
            Some(readme[start..end].to_owned())
        };
        let section = workspace
            .split("## MCP servers: palisade-mcp")
            .nth(1)
            .expect("the README has the section");
        assert_eq!(
            example(section),
            example(ours),
            "README.md's example differs from crates/palisade-mcp/README.md's"
        );
    }
}
