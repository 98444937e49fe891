//! Which failed calls are replayed by themselves, and the idempotency key every attempt of one
//! call carries.
//!
//! A failed call's outcome is often unknown (a timeout may have run the tool), so replaying
//! `send_email` could send it twice. Each tool therefore has a [`ReplayPolicy`]: from the
//! config ([`ToolPolicy`](crate::ToolPolicy)'s `replay`), or else from the tool's MCP
//! annotations ([`ReplayPolicy::from_annotations`]).

use rmcp::model::ToolAnnotations;
use serde::{Deserialize, Serialize};

/// HTTP header carrying a call's idempotency key to HTTP upstreams.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// `_meta` key carrying a call's idempotency key to MCP servers.
pub const IDEMPOTENCY_META: &str = "palisade/idempotency-key";

/// What becomes of a call of a tool that failed in a way that may pass (timeout, 5xx, 429,
/// unreachable).
///
/// ```
/// use palisade_mcp::ReplayPolicy;
/// use rmcp::model::ToolAnnotations;
///
/// let read_only = ToolAnnotations::new().read_only(true);
/// assert_eq!(ReplayPolicy::from_annotations(Some(&read_only)), ReplayPolicy::Never);
/// assert_eq!(ReplayPolicy::from_annotations(None), ReplayPolicy::Park);
/// let policy: ReplayPolicy = serde_json::from_str(r#""idempotent""#).unwrap();
/// assert!(policy.replays_by_itself());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReplayPolicy {
    /// Not queued: the client is told the call failed and will not be replayed. The default
    /// of read-only tools (`readOnlyHint`): nobody receives a replayed result.
    Never,
    /// Queued as `parked`: kept for an operator to replay (or discard), never replayed by
    /// itself. The default of tools that do not say they are idempotent (a `destructiveHint`
    /// tool, or one without annotations).
    Park,
    /// Queued and replayed automatically when the upstream recovers, with the same idempotency
    /// key as the first attempt. The default of tools with `idempotentHint`.
    Idempotent,
    /// Queued and replayed automatically, like `idempotent`, for a tool that does not say it
    /// is idempotent: set it only when running the call twice is acceptable.
    Always,
}

impl ReplayPolicy {
    /// The default for a tool with `annotations`: read-only → `never`, idempotent →
    /// `idempotent`, otherwise (including no annotations) `park`. A read-only hint wins: the
    /// result of a replayed read reaches nobody.
    pub fn from_annotations(annotations: Option<&ToolAnnotations>) -> ReplayPolicy {
        let hint = |h: Option<bool>| h == Some(true);
        match annotations {
            Some(a) if hint(a.read_only_hint) => ReplayPolicy::Never,
            Some(a) if hint(a.idempotent_hint) => ReplayPolicy::Idempotent,
            _ => ReplayPolicy::Park,
        }
    }

    /// Whether a failed call is kept in the dead-letter queue at all.
    pub fn queues(self) -> bool {
        self != ReplayPolicy::Never
    }

    /// Whether the retry worker replays it without an operator.
    pub fn replays_by_itself(self) -> bool {
        matches!(self, ReplayPolicy::Idempotent | ReplayPolicy::Always)
    }

    /// The config name (`never`, `park`, `idempotent`, `always`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayPolicy::Never => "never",
            ReplayPolicy::Park => "park",
            ReplayPolicy::Idempotent => "idempotent",
            ReplayPolicy::Always => "always",
        }
    }
}

impl std::fmt::Display for ReplayPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a tool's [`ReplayPolicy`] came from; it changes what the client is told when a call
/// is not replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PolicySource {
    /// Set by the operator (config or builder).
    Configured,
    /// The default of the tool's MCP annotations ([`ReplayPolicy::from_annotations`]).
    Annotations,
}

/// A fresh idempotency key: 128 random bits as 32 hex digits. Unique enough for an upstream
/// to deduplicate on; not a secret.
///
/// ```
/// let key = palisade_mcp::idempotency_key();
/// assert_eq!(key.len(), 32);
/// ```
pub fn idempotency_key() -> String {
    format!("{:032x}", fastrand::u128(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(read_only: Option<bool>, idempotent: Option<bool>) -> ToolAnnotations {
        let mut a = ToolAnnotations::new();
        if let Some(r) = read_only {
            a = a.read_only(r);
        }
        if let Some(i) = idempotent {
            a = a.idempotent(i);
        }
        a
    }

    #[test]
    fn defaults_follow_the_annotations() {
        use ReplayPolicy::*;
        let of = |a: ToolAnnotations| ReplayPolicy::from_annotations(Some(&a));
        assert_eq!(of(annotations(Some(true), None)), Never);
        assert_eq!(of(annotations(Some(true), Some(true))), Never);
        assert_eq!(of(annotations(None, Some(true))), Idempotent);
        assert_eq!(of(annotations(Some(false), Some(true))), Idempotent);
        assert_eq!(of(annotations(None, Some(false))), Park);
        assert_eq!(of(annotations(None, None)), Park);
        assert_eq!(of(ToolAnnotations::new().destructive(true)), Park);
        assert_eq!(
            of(ToolAnnotations::new().destructive(true).idempotent(true)),
            Idempotent
        );
        assert_eq!(ReplayPolicy::from_annotations(None), Park);
        assert!(!Never.queues() && Park.queues() && !Park.replays_by_itself());
        assert!(Idempotent.replays_by_itself() && Always.replays_by_itself());
    }

    #[test]
    fn serde_names_are_the_config_names() {
        for p in [
            ReplayPolicy::Never,
            ReplayPolicy::Park,
            ReplayPolicy::Idempotent,
            ReplayPolicy::Always,
        ] {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
            assert_eq!(serde_json::from_str::<ReplayPolicy>(&json).unwrap(), p);
        }
        assert!(serde_json::from_str::<ReplayPolicy>(r#""sometimes""#).is_err());
    }

    #[test]
    fn keys_are_32_hex_digits_and_differ() {
        let (a, b) = (idempotency_key(), idempotency_key());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
