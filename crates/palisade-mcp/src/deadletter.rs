//! Failed calls into the dead-letter queue under their replay policy, and every outcome into
//! the tool result the client sees.

use std::future::Future;

use palisade_dlq::{DeadLetterQueue, DlqError, EntryId, Failure, StoreError};
use rmcp::model::{CallToolResult, JsonObject};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::guard::Outcome;
use crate::refusal::tool_error;
use crate::replay::{PolicySource, ReplayPolicy};

/// A failed call of a [`Guarded`](crate::Guarded) server's tool, as kept in its dead-letter
/// queue: everything needed to run it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadCall {
    /// The tool's name.
    pub tool: String,
    /// The call's arguments.
    pub arguments: JsonObject,
    /// Who called ([`Caller::address`](crate::Caller::address)).
    pub client: String,
    /// The key the first attempt carried (in `_meta` as
    /// [`IDEMPOTENCY_META`](crate::IDEMPOTENCY_META)); a replay must carry it too, so the
    /// tool can tell a replay from a new call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// How a failed call is to be kept: what [`Outcome::into_result`] hands its `keep` function.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Why the call failed.
    pub failure: Failure,
    /// `true`: keep it parked for an operator ([`DeadLetterQueue::park`]); `false`: schedule
    /// it for the retry worker ([`DeadLetterQueue::push`]).
    pub park: bool,
}

/// Where a failed call was kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The queue's name.
    pub queue: String,
    /// The entry.
    pub id: EntryId,
}

/// The replay policy a failed call is kept under, and the idempotency key it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replay<'a> {
    /// The tool's replay policy.
    pub policy: ReplayPolicy,
    /// Where it came from (it changes what the client is told when a call is not queued).
    pub source: PolicySource,
    /// The call's idempotency key, when it has one.
    pub idempotency_key: Option<&'a str>,
}

/// Keeps `payload` in `dlq` as `letter` says: parked for an operator, or scheduled for the
/// retry worker; `operation` names it in the queue (the tool).
///
/// ```
/// use palisade_dlq::{DeadLetterQueue, EntryState, Failure};
/// use palisade_mcp::{Outcome, PolicySource, Replay, ReplayPolicy, keep};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dlq = DeadLetterQueue::<String>::builder("calls").build()?;
/// let call = "to: ops@example.com".to_owned(); // the payload: whatever replays the call
/// let outcome: Outcome = Outcome::Failed(Failure::timeout("send_email: no answer within 10000 ms"));
/// let replay = Replay { policy: ReplayPolicy::Park, source: PolicySource::Annotations, idempotency_key: None };
/// let result = outcome
///     .into_result("send_email", replay, |letter| keep(&dlq, "send_email", &call, letter))
///     .await;
/// let facts = result.structured_content.unwrap();
/// assert_eq!(facts["replay"], "parked");
/// let id = facts["queued"]["id"].as_u64().unwrap();
/// assert_eq!(dlq.get(id).await?.unwrap().state, EntryState::Parked);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub async fn keep<T>(
    dlq: &DeadLetterQueue<T>,
    operation: &str,
    payload: &T,
    letter: DeadLetter,
) -> Result<Kept, DlqError>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let id = if letter.park {
        dlq.park(operation, payload, letter.failure).await?
    } else {
        dlq.push(operation, payload, letter.failure).await?
    };
    Ok(Kept {
        queue: dlq.name().to_owned(),
        id,
    })
}

fn rejected(tool: &str, message: &str) -> CallToolResult {
    tool_error(
        format!(
            "The upstream rejected the call: {message}. Change the arguments; retrying as is will fail again."
        ),
        json!({"error": "rejected_by_upstream", "tool": tool, "message": message}),
    )
}

fn lost(tool: &str, failure: &Failure) -> CallToolResult {
    tool_error(
        format!(
            "The server went away while handling the call: {}. It was not queued for replay, because it may have run or may be what crashed the server; check before calling again.",
            failure.message
        ),
        json!({"error": "upstream_lost", "tool": tool, "message": failure.message}),
    )
}

/// The facts of a failed call in `structuredContent`.
fn facts(tool: &str, failure: &Failure, key: Option<&str>, replay: &str, queued: Value) -> Value {
    json!({
        "error": "upstream_failed",
        "tool": tool,
        "kind": failure.kind.as_str(),
        "message": failure.message,
        "replay": replay,
        "queued": queued,
        "idempotency_key": key,
    })
}

impl Outcome<CallToolResult> {
    /// The tool result the client sees, with a failed call kept by `keep` under `replay`'s
    /// policy (`keep` is only called for a failure the policy queues): the answer as it came;
    /// refusals as [`Refusal::to_result`](crate::Refusal::to_result); a rejection as
    /// `rejected_by_upstream`; a lost server as `upstream_lost`; a failure as
    /// `upstream_failed`, saying in plain words whether it will be replayed (`replay`: `none`,
    /// `parked` or `automatic`; `queued`: the queue and entry id).
    ///
    /// `keep` stores the call and says where ([`keep`] into one queue; a gateway may fall back
    /// to a second queue when the first one's store is unavailable). A store error is
    /// reported to the client (and logged) as "not queued"; an entry on a Redis primary that no
    /// replica confirmed is reported as stored, with the risk named.
    pub async fn into_result<K, Fut>(
        self,
        tool: &str,
        replay: Replay<'_>,
        keep: K,
    ) -> CallToolResult
    where
        K: FnOnce(DeadLetter) -> Fut,
        Fut: Future<Output = Result<Kept, DlqError>>,
    {
        match self {
            Outcome::Failed(failure) => dead_letter(tool, replay, failure, keep).await,
            other => other.into_result_unqueued(tool),
        }
    }

    /// The tool result the client sees when no dead-letter queue keeps failed calls: like
    /// [`into_result`](Self::into_result), with a failure reported as not queued.
    pub fn into_result_unqueued(self, tool: &str) -> CallToolResult {
        match self {
            Outcome::Done(result) => result,
            Outcome::Rejected(message) => rejected(tool, &message),
            Outcome::Refused(refusal) => refusal.to_result(tool),
            Outcome::Lost(failure) => lost(tool, &failure),
            Outcome::Failed(failure) => {
                let kind = failure.kind.as_str();
                tool_error(
                    format!(
                        "The call failed ({kind}): {}. It will not be replayed (no dead-letter queue keeps this tool's failed calls); call it again if you still need the result.",
                        failure.message
                    ),
                    facts(tool, &failure, None, "none", Value::Null),
                )
            }
        }
    }
}

/// Keeps a failed call under its replay policy and tells the client, in plain words, whether
/// it will be replayed.
async fn dead_letter<K, Fut>(
    tool: &str,
    replay: Replay<'_>,
    failure: Failure,
    keep: K,
) -> CallToolResult
where
    K: FnOnce(DeadLetter) -> Fut,
    Fut: Future<Output = Result<Kept, DlqError>>,
{
    let kind = failure.kind.as_str();
    let key = replay.idempotency_key;
    if !replay.policy.queues() {
        let why = match replay.source {
            PolicySource::Configured => "its replay policy is never",
            PolicySource::Annotations => {
                "it is read-only, so nobody would receive a replayed result"
            }
        };
        return tool_error(
            format!(
                "The call failed ({kind}): {}. It will not be replayed ({why}); call it again if you still need the result.",
                failure.message
            ),
            facts(tool, &failure, key, "none", Value::Null),
        );
    }
    let park = !replay.policy.replays_by_itself();
    let letter = DeadLetter {
        failure: failure.clone(),
        park,
    };
    let message = &failure.message;
    match keep(letter).await {
        Ok(Kept { queue, id }) if park => tool_error(
            format!(
                "The call failed ({kind}): {message}. It was kept as dead-letter entry {id} for an operator and will NOT be replayed automatically, because the tool is not marked idempotent and may have run. Do not retry it yourself unless you know it did not run."
            ),
            facts(
                tool,
                &failure,
                key,
                "parked",
                json!({"queue": queue, "id": id}),
            ),
        ),
        Ok(Kept { queue, id }) => tool_error(
            format!(
                "The call failed ({kind}): {message}. It was queued as dead-letter entry {id} and will be replayed automatically when the upstream recovers, with the same idempotency key; do not retry it yourself."
            ),
            facts(
                tool,
                &failure,
                key,
                "automatic",
                json!({"queue": queue, "id": id}),
            ),
        ),
        // With `wait_for_replicas`: the entry is on the Redis primary, no replica confirmed it.
        Err(
            e @ DlqError::Store {
                source: StoreError::NotReplicated { .. },
                ..
            },
        ) => {
            tracing::warn!(target: crate::guard::TARGET, tool, error = %e, "dead letter stored on the Redis primary only");
            let queue = match &e {
                DlqError::Store { queue, .. } => queue.to_string(),
                _ => String::new(),
            };
            tool_error(
                format!(
                    "The call failed ({kind}): {message}. It was stored for {} on the Redis primary, but no replica confirmed it in time, so it is lost if Redis fails over before they catch up. Do not retry it yourself unless an operator finds it missing.",
                    if park {
                        "an operator"
                    } else {
                        "automatic replay"
                    }
                ),
                facts(
                    tool,
                    &failure,
                    key,
                    if park { "parked" } else { "automatic" },
                    json!({"queue": queue, "id": null, "replicated": false}),
                ),
            )
        }
        Err(e) => {
            tracing::error!(target: crate::guard::TARGET, tool, error = %e, "could not dead-letter a failed call");
            tool_error(
                format!(
                    "The call failed ({kind}): {message}. It could not be queued for replay ({e}), so it will not be replayed; retry it later."
                ),
                facts(tool, &failure, key, "none", Value::Null),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use palisade_dlq::EntryState;
    use rmcp::model::ContentBlock;

    use super::*;
    use crate::refusal::Refusal;

    fn text(r: &CallToolResult) -> &str {
        &r.content[0].as_text().unwrap().text
    }

    fn replay(policy: ReplayPolicy, source: PolicySource) -> Replay<'static> {
        Replay {
            policy,
            source,
            idempotency_key: Some("k1"),
        }
    }

    async fn never_called(_: DeadLetter) -> Result<Kept, DlqError> {
        panic!("not queued")
    }

    #[tokio::test]
    async fn failures_are_kept_as_their_policy_says() {
        let dlq = DeadLetterQueue::<String>::builder("calls").build().unwrap();
        let payload = "args".to_owned();
        let failed = || Outcome::Failed(Failure::server_error("503 from upstream"));

        let r = failed()
            .into_result(
                "create",
                replay(ReplayPolicy::Park, PolicySource::Annotations),
                |l| keep(&dlq, "create", &payload, l),
            )
            .await;
        assert!(
            text(&r).contains("will NOT be replayed automatically"),
            "{}",
            text(&r)
        );
        let facts = r.structured_content.unwrap();
        assert_eq!(facts["error"], "upstream_failed");
        assert_eq!(facts["kind"], "server_error");
        assert_eq!(facts["replay"], "parked");
        assert_eq!(facts["idempotency_key"], "k1");
        assert_eq!(facts["queued"]["queue"], "calls");
        let id = facts["queued"]["id"].as_u64().unwrap();
        assert_eq!(
            dlq.get(id).await.unwrap().unwrap().state,
            EntryState::Parked
        );

        let r = failed()
            .into_result(
                "lookup",
                replay(ReplayPolicy::Idempotent, PolicySource::Annotations),
                |l| keep(&dlq, "lookup", &payload, l),
            )
            .await;
        assert!(
            text(&r).contains("will be replayed automatically"),
            "{}",
            text(&r)
        );
        let id = r.structured_content.unwrap()["queued"]["id"]
            .as_u64()
            .unwrap();
        assert_ne!(
            dlq.get(id).await.unwrap().unwrap().state,
            EntryState::Parked
        );

        let r = failed()
            .into_result(
                "read",
                replay(ReplayPolicy::Never, PolicySource::Annotations),
                never_called,
            )
            .await;
        assert_eq!(
            text(&r),
            "The call failed (server_error): 503 from upstream. It will not be replayed (it is read-only, so nobody would receive a replayed result); call it again if you still need the result."
        );
        assert_eq!(r.structured_content.unwrap()["queued"], Value::Null);
        let r = failed()
            .into_result(
                "read",
                replay(ReplayPolicy::Never, PolicySource::Configured),
                never_called,
            )
            .await;
        assert!(
            text(&r).contains("(its replay policy is never)"),
            "{}",
            text(&r)
        );
        assert_eq!(dlq.stats().await.unwrap().store.total, 2);
    }

    #[tokio::test]
    async fn a_store_error_is_reported_as_not_queued() {
        let unavailable = |_: DeadLetter| async {
            Err(DlqError::Store {
                queue: Arc::from("calls"),
                source: StoreError::Unavailable("connection refused".into()),
            })
        };
        let r = Outcome::Failed(Failure::timeout("t: no answer within 5 ms"))
            .into_result(
                "t",
                replay(ReplayPolicy::Always, PolicySource::Configured),
                unavailable,
            )
            .await;
        assert!(text(&r).contains("could not be queued"), "{}", text(&r));
        assert_eq!(r.structured_content.unwrap()["replay"], "none");

        let unreplicated = |_: DeadLetter| async {
            Err(DlqError::Store {
                queue: Arc::from("calls"),
                source: StoreError::NotReplicated {
                    acked: 0,
                    wanted: 1,
                },
            })
        };
        let r = Outcome::Failed(Failure::timeout("t: no answer within 5 ms"))
            .into_result(
                "t",
                replay(ReplayPolicy::Park, PolicySource::Configured),
                unreplicated,
            )
            .await;
        let facts = r.structured_content.unwrap();
        assert_eq!(facts["replay"], "parked");
        assert_eq!(
            facts["queued"],
            json!({"queue": "calls", "id": null, "replicated": false})
        );
    }

    #[test]
    fn other_outcomes_need_no_queue() {
        let answer = CallToolResult::success(vec![ContentBlock::text("hi")]);
        assert_eq!(
            Outcome::Done(answer.clone()).into_result_unqueued("t"),
            answer
        );
        let r = Outcome::Rejected("t: missing field city".into()).into_result_unqueued("t");
        assert_eq!(
            text(&r),
            "The upstream rejected the call: t: missing field city. Change the arguments; retrying as is will fail again."
        );
        assert_eq!(
            r.structured_content.unwrap()["error"],
            "rejected_by_upstream"
        );
        let r = Outcome::Lost(Failure::unavailable("child exited")).into_result_unqueued("t");
        assert_eq!(r.structured_content.unwrap()["error"], "upstream_lost");
        let r = Outcome::Refused(Refusal::ShuttingDown).into_result_unqueued("t");
        assert_eq!(r.structured_content.unwrap()["error"], "shutting_down");
        let r = Outcome::Failed(Failure::server_error("boom")).into_result_unqueued("t");
        assert!(text(&r).contains("no dead-letter queue"), "{}", text(&r));
        assert_eq!(r.structured_content.unwrap()["replay"], "none");
    }
}
