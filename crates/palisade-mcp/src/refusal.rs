//! Why Palisade stopped a tool call, and the tool result that tells the client.
//!
//! Every refusal reaches an MCP client as a tool result, never as a protocol error or a dropped
//! session: `isError: true`, one sentence a model can act on in `content`, and the same facts
//! in `structuredContent` (`error`, `tool`, `retry_after_ms`, …) for programs.

use std::time::Duration;

use palisade_breaker::State;
use palisade_dlq::Failure;
use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{Value, json};

/// What a client is told to wait when the server is shutting down: another instance, or this
/// one restarted, answers soon.
pub const SHUTDOWN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a call was stopped: refused before it reached the tool (the client may retry, after
/// `retry_after` when given), or abandoned when it took too long.
///
/// ```
/// use std::time::Duration;
/// use palisade_mcp::Refusal;
///
/// let refused = Refusal::RateLimited { retry_after: Duration::from_millis(1500), rule: None };
/// let result = refused.to_result("search");
/// assert_eq!(result.is_error, Some(true));
/// let facts = result.structured_content.unwrap();
/// assert_eq!(facts["error"], "rate_limited");
/// assert_eq!(facts["retry_after_ms"], 1500);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The caller's rate limit is used up.
    #[error("rate limited{}; retry after {} ms", rule_suffix(.rule.as_deref()), millis(*.retry_after))]
    RateLimited {
        /// When the next call is admitted.
        retry_after: Duration,
        /// The named quota rule that refused, when it was one (`None`: the caller's limit).
        rule: Option<String>,
    },
    /// The tool's breaker is open (or half-open with every trial slot taken).
    #[error("circuit breaker is {state}{}", retry_suffix(*.retry_after))]
    BreakerOpen {
        /// The breaker's state (`open`, `forced_open`, `half_open`).
        state: State,
        /// When it lets a trial call through, when known.
        retry_after: Option<Duration>,
    },
    /// Every slot of the tool's partition is busy.
    #[error("{message}")]
    PartitionFull {
        /// The partition (the bulkhead's name).
        partition: String,
        /// The bulkhead's explanation.
        message: String,
    },
    /// The call got no answer within `after` and was abandoned; it may still have run.
    #[error("no answer within {} ms", millis(*.after))]
    TimedOut {
        /// The tool's timeout.
        after: Duration,
    },
    /// The server is shutting down and takes no new calls.
    #[error("shutting down; retry in {} ms", millis(SHUTDOWN_RETRY_AFTER))]
    ShuttingDown,
}

fn rule_suffix(rule: Option<&str>) -> String {
    rule.map(|r| format!(" by the quota {r:?}"))
        .unwrap_or_default()
}

fn retry_suffix(retry_after: Option<Duration>) -> String {
    retry_after
        .map(|d| format!("; retry after {} ms", millis(d)))
        .unwrap_or_default()
}

/// Milliseconds, rounded up: a client told "retry after N ms" must not come back too early.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// A tool error: `message` (a sentence for the model) in `content`, `details` (the same facts
/// for programs) in `structuredContent`, and `isError: true`.
///
/// ```
/// use palisade_mcp::tool_error;
///
/// let r = tool_error("Not allowed: search needs the scope \"docs\".", serde_json::json!({"error": "insufficient_scope"}));
/// assert_eq!(r.is_error, Some(true));
/// assert_eq!(r.content[0].as_text().unwrap().text, "Not allowed: search needs the scope \"docs\".");
/// assert_eq!(r.structured_content.unwrap()["error"], "insufficient_scope");
/// ```
pub fn tool_error(message: impl Into<String>, details: Value) -> CallToolResult {
    let mut result = CallToolResult::structured_error(details);
    result.content = vec![ContentBlock::text(message.into())];
    result
}

impl Refusal {
    /// The `error` code of the tool result (`rate_limited`, `breaker_open`, `partition_full`,
    /// `timed_out`, `shutting_down`).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::RateLimited { .. } => "rate_limited",
            Refusal::BreakerOpen { .. } => "breaker_open",
            Refusal::PartitionFull { .. } => "partition_full",
            Refusal::TimedOut { .. } => "timed_out",
            Refusal::ShuttingDown => "shutting_down",
        }
    }

    /// How long the client should wait before calling again, when that is known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Refusal::RateLimited { retry_after, .. } => Some(*retry_after),
            Refusal::BreakerOpen { retry_after, .. } => *retry_after,
            Refusal::ShuttingDown => Some(SHUTDOWN_RETRY_AFTER),
            Refusal::PartitionFull { .. } | Refusal::TimedOut { .. } => None,
        }
    }

    /// The tool result a client sees for this refusal of a call of `tool`: `isError: true`,
    /// one sentence in `content`, and `structuredContent` with `error`, `tool`,
    /// `retry_after_ms` (milliseconds rounded up, `null` when unknown) and the refusal's other
    /// facts (`rule`, `state`, `partition`, `message`, `timeout_ms`).
    pub fn to_result(&self, tool: &str) -> CallToolResult {
        let retry_ms = self.retry_after().map(millis);
        match self {
            Refusal::RateLimited {
                retry_after,
                rule: None,
            } => tool_error(
                format!(
                    "Rate limited: this client has used up its quota of tool calls. Retry after {} ms.",
                    millis(*retry_after)
                ),
                json!({"error": "rate_limited", "tool": tool, "retry_after_ms": retry_ms}),
            ),
            Refusal::RateLimited {
                retry_after,
                rule: Some(rule),
            } => tool_error(
                format!(
                    "Rate limited by the quota {rule:?}: its calls are used up for now. Retry after {} ms.",
                    millis(*retry_after)
                ),
                json!({"error": "rate_limited", "tool": tool, "rule": rule, "retry_after_ms": retry_ms}),
            ),
            Refusal::BreakerOpen { state, retry_after } => {
                let when = match (retry_after, state) {
                    (Some(d), _) => format!("after {} ms", millis(*d)),
                    (None, State::HalfOpen) => {
                        "in a moment: trial calls are testing whether it recovered".to_owned()
                    }
                    (None, _) => "when an operator resets it".to_owned(),
                };
                tool_error(
                    format!(
                        "The upstream of {tool} is failing, so its circuit breaker is {state} and the call was not sent. Retry {when}."
                    ),
                    json!({
                        "error": "breaker_open",
                        "tool": tool,
                        "state": state.as_str(),
                        "retry_after_ms": retry_ms,
                    }),
                )
            }
            Refusal::PartitionFull { partition, message } => tool_error(
                format!("Too many calls in flight: {message}. Retry in a moment."),
                json!({
                    "error": "partition_full",
                    "tool": tool,
                    "partition": partition,
                    "message": message,
                    "retry_after_ms": retry_ms,
                }),
            ),
            Refusal::TimedOut { after } => tool_error(
                format!(
                    "{tool} got no answer within {} ms, so the call was abandoned; it may still have run. Check before calling it again.",
                    millis(*after)
                ),
                json!({
                    "error": "timed_out",
                    "tool": tool,
                    "timeout_ms": millis(*after),
                    "retry_after_ms": retry_ms,
                }),
            ),
            Refusal::ShuttingDown => tool_error(
                "The server is shutting down and takes no new calls. Retry in a moment: another instance, or this one restarted, will answer.",
                json!({"error": "shutting_down", "tool": tool, "retry_after_ms": retry_ms}),
            ),
        }
    }

    /// The refusal as the [`Failure`] of a replay of a dead-lettered call of `tool`, so the
    /// queue reschedules it under its kind's policy (a breaker's retry time is kept).
    pub fn into_failure(self, tool: &str) -> Failure {
        match self {
            Refusal::RateLimited { retry_after, .. } => {
                Failure::rate_limited(format!("{tool}: rate limited"), retry_after)
            }
            Refusal::BreakerOpen { state, retry_after } => Failure {
                retry_after,
                ..Failure::unavailable(format!("{tool}: circuit breaker is {state}"))
            },
            Refusal::PartitionFull { message, .. } => Failure::unavailable(message),
            Refusal::TimedOut { after } => {
                Failure::timeout(format!("{tool}: no answer within {} ms", millis(after)))
            }
            Refusal::ShuttingDown => Failure {
                retry_after: Some(SHUTDOWN_RETRY_AFTER),
                ..Failure::unavailable(format!("{tool}: the server is shutting down"))
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &CallToolResult) -> &str {
        &r.content[0].as_text().unwrap().text
    }

    #[test]
    fn rate_limits_say_when_and_name_the_rule() {
        let r = Refusal::RateLimited {
            retry_after: Duration::from_micros(2_500_100),
            rule: None,
        }
        .to_result("search");
        assert_eq!(r.is_error, Some(true));
        assert_eq!(
            text(&r),
            "Rate limited: this client has used up its quota of tool calls. Retry after 2501 ms."
        );
        assert_eq!(
            r.structured_content.unwrap(),
            json!({"error": "rate_limited", "tool": "search", "retry_after_ms": 2501})
        );

        let r = Refusal::RateLimited {
            retry_after: Duration::from_secs(3),
            rule: Some("per-tenant".into()),
        }
        .to_result("search");
        assert_eq!(
            text(&r),
            "Rate limited by the quota \"per-tenant\": its calls are used up for now. Retry after 3000 ms."
        );
        assert_eq!(
            r.structured_content.unwrap(),
            json!({"error": "rate_limited", "tool": "search", "rule": "per-tenant", "retry_after_ms": 3000})
        );
    }

    #[test]
    fn open_breakers_say_when_a_trial_goes_through() {
        let open = Refusal::BreakerOpen {
            state: State::Open,
            retry_after: Some(Duration::from_millis(25_000)),
        };
        let r = open.to_result("github_create_issue");
        assert_eq!(
            text(&r),
            "The upstream of github_create_issue is failing, so its circuit breaker is open and the call was not sent. Retry after 25000 ms."
        );
        assert_eq!(
            r.structured_content.unwrap(),
            json!({"error": "breaker_open", "tool": "github_create_issue", "state": "open", "retry_after_ms": 25000})
        );
        assert_eq!(
            open.to_string(),
            "circuit breaker is open; retry after 25000 ms"
        );

        let forced = Refusal::BreakerOpen {
            state: State::ForcedOpen,
            retry_after: None,
        }
        .to_result("t");
        assert!(
            text(&forced).ends_with("Retry when an operator resets it."),
            "{}",
            text(&forced)
        );
        assert_eq!(
            forced.structured_content.unwrap()["retry_after_ms"],
            Value::Null
        );

        let trials = Refusal::BreakerOpen {
            state: State::HalfOpen,
            retry_after: None,
        }
        .to_result("t");
        assert!(text(&trials).contains("half_open"), "{}", text(&trials));
        assert!(
            text(&trials).contains("Retry in a moment"),
            "{}",
            text(&trials)
        );
    }

    #[test]
    fn full_partitions_timeouts_and_shutdowns() {
        let r = Refusal::PartitionFull {
            partition: "db".into(),
            message: "bulkhead 'db' is full: 2 calls running; retry later or raise its limit"
                .into(),
        }
        .to_result("query");
        assert_eq!(
            text(&r),
            "Too many calls in flight: bulkhead 'db' is full: 2 calls running; retry later or raise its limit. Retry in a moment."
        );
        let facts = r.structured_content.unwrap();
        assert_eq!(facts["error"], "partition_full");
        assert_eq!(facts["partition"], "db");
        assert_eq!(facts["retry_after_ms"], Value::Null);

        let r = Refusal::TimedOut {
            after: Duration::from_secs(10),
        }
        .to_result("slow");
        assert_eq!(
            text(&r),
            "slow got no answer within 10000 ms, so the call was abandoned; it may still have run. Check before calling it again."
        );
        assert_eq!(
            r.structured_content.unwrap(),
            json!({"error": "timed_out", "tool": "slow", "timeout_ms": 10000, "retry_after_ms": null})
        );

        let r = Refusal::ShuttingDown.to_result("t");
        assert!(text(&r).contains("shutting down"));
        assert_eq!(
            r.structured_content.unwrap(),
            json!({"error": "shutting_down", "tool": "t", "retry_after_ms": 1000})
        );
    }

    #[test]
    fn refusals_become_failures_for_replays() {
        let f = Refusal::BreakerOpen {
            state: State::Open,
            retry_after: Some(Duration::from_secs(5)),
        }
        .into_failure("t");
        assert_eq!(f.kind, palisade_dlq::FailureKind::Unavailable);
        assert_eq!(f.retry_after, Some(Duration::from_secs(5)));
        let f = Refusal::RateLimited {
            retry_after: Duration::from_secs(2),
            rule: None,
        }
        .into_failure("t");
        assert_eq!(f.kind, palisade_dlq::FailureKind::RateLimited);
        assert_eq!(
            Refusal::TimedOut {
                after: Duration::from_secs(1)
            }
            .into_failure("t")
            .kind,
            palisade_dlq::FailureKind::Timeout
        );
    }

    #[test]
    fn millis_round_up() {
        assert_eq!(millis(Duration::ZERO), 0);
        assert_eq!(millis(Duration::from_nanos(1)), 1);
        assert_eq!(millis(Duration::from_millis(7)), 7);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
