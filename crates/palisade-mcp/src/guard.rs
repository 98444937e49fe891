//! The engine: one tool call through its policy's rate limits, breaker, bulkhead and timeout,
//! and its outcome classified once.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use palisade_breaker::RejectReason;
use palisade_dlq::{Failure, FailureKind};
use palisade_toolbox::retry::Decision;
use palisade_toolbox::{CountAs, TimeoutError};
use rmcp::model::CallToolResult;

pub use palisade_breaker::Outcome as Verdict;

/// The `tracing` target of this crate's events.
pub(crate) const TARGET: &str = "palisade::mcp";

use crate::caller::Caller;
use crate::policy::ToolPolicy;
use crate::refusal::{Refusal, millis};

/// Why a tool call did not produce a result: what the call itself reports to [`run`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The upstream refused this input (HTTP 4xx other than 429, JSON-RPC invalid params):
    /// the caller has to change the call; retrying it as is will not help. Not a breaker
    /// failure.
    #[error("rejected: {0}")]
    Rejected(String),
    /// A failure that may pass (timeout, 5xx, 429, unreachable, a server not running). A
    /// breaker failure, except [`FailureKind::RateLimited`] (the upstream is alive, only busy).
    #[error("{}: {}", .0.kind, .0.message)]
    Failed(Failure),
    /// The call reached a server that then went away: it may have run, and it may be what
    /// crashed the server, so it must not be replayed. A breaker failure.
    #[error("lost ({}): {}", .0.kind, .0.message)]
    Lost(Failure),
}

/// What became of one call.
///
/// `T` is what the call returns when it answers: a [`CallToolResult`] by default (what
/// [`into_result`](Outcome::into_result) turns every outcome into).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outcome<T = CallToolResult> {
    /// The tool answered (possibly with a tool error of its own).
    Done(T),
    /// The upstream refused the input.
    Rejected(String),
    /// Palisade refused the call before it reached the tool.
    Refused(Refusal),
    /// The call failed and may succeed later (a timeout is one: its [`Failure::kind`] is
    /// [`FailureKind::Timeout`]).
    Failed(Failure),
    /// The server went away during the call: never replayed (it may be what crashed it).
    Lost(Failure),
}

impl<T> Outcome<T> {
    /// Whether the tool answered.
    pub fn is_done(&self) -> bool {
        matches!(self, Outcome::Done(_))
    }

    /// A short code for the outcome, as traces and logs name it: `done`, `rejected`, the
    /// refusal's [code](Refusal::code) (`breaker_open`, …), or the failure's kind (`timeout`,
    /// `server_error`, …; `lost` for a lost server).
    pub fn code(&self) -> &'static str {
        match self {
            Outcome::Done(_) => "done",
            Outcome::Rejected(_) => "rejected",
            Outcome::Refused(refusal) => refusal.code(),
            Outcome::Failed(failure) => failure.kind.as_str(),
            Outcome::Lost(_) => "lost",
        }
    }

    /// The outcome of a replay of a dead-lettered call of `tool`, as the dead-letter worker's
    /// handler returns it: the answer acknowledges the entry; a refusal or a failure
    /// reschedules it under its kind's policy; a rejection or a lost server parks it (a client
    /// error is parked at once by default: the call may be what crashes the server).
    pub fn into_replay(self, tool: &str) -> Result<T, Failure> {
        match self {
            Outcome::Done(answer) => Ok(answer),
            Outcome::Rejected(message) => Err(Failure::client_error(message)),
            Outcome::Refused(refusal) => Err(refusal.into_failure(tool)),
            Outcome::Failed(failure) => Err(failure),
            Outcome::Lost(failure) => Err(Failure::client_error(format!(
                "parked: the server went away during the replay, so this call may be what crashes it ({})",
                failure.message
            ))),
        }
    }
}

/// Runs one call of `tool` by `caller` under `policy`: its rate limits, then [`invoke`].
///
/// `call` is only called (and its arguments only built) when every check admits it. Nothing
/// is allocated on the admitted path beyond what `call` does; formatting happens only for a
/// refusal or a failure.
///
/// ```
/// use std::time::Duration;
/// use palisade_breaker::CircuitBreaker;
/// use palisade_mcp::{CallError, Caller, Outcome, ToolPolicy};
/// use palisade_dlq::Failure;
/// use rmcp::model::{CallToolResult, ContentBlock};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let policy = ToolPolicy::builder()
///     .breaker(CircuitBreaker::builder("weather").consecutive_failures(1).build()?)
///     .timeout(Duration::from_secs(5))
///     .build();
/// let caller = Caller::new("10.0.0.1");
///
/// let ok = palisade_mcp::run(&policy, "forecast", &caller, || async {
///     Ok(CallToolResult::success(vec![ContentBlock::text("sunny")]))
/// }).await;
/// assert!(ok.is_done());
///
/// let failed = palisade_mcp::run(&policy, "forecast", &caller, || async {
///     Err::<CallToolResult, _>(CallError::Failed(Failure::server_error("503")))
/// }).await;
/// assert!(matches!(failed, Outcome::Failed(_)));
///
/// // One failure opened the breaker: the next call is refused without running.
/// let refused: Outcome = palisade_mcp::run(&policy, "forecast", &caller, || async {
///     unreachable!("not called while the breaker is open")
/// }).await;
/// let Outcome::Refused(refusal) = refused else { panic!() };
/// assert_eq!(refusal.to_result("forecast").structured_content.unwrap()["error"], "breaker_open");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub async fn run<T, F, Fut>(policy: &ToolPolicy, tool: &str, caller: &Caller, call: F) -> Outcome<T>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    if let Err(refusal) = policy.check_rate(tool, caller).await {
        return Outcome::Refused(refusal);
    }
    invoke(policy, tool, call).await
}

/// Runs one call of `tool` under `policy`'s breaker, bulkhead and timeout (not its rate
/// limits: what a dead-letter replay does). Every answer is a breaker success; see
/// [`invoke_classified`].
pub async fn invoke<T, F, Fut>(policy: &ToolPolicy, tool: &str, call: F) -> Outcome<T>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    invoke_classified(policy, tool, |_| Verdict::Success, call).await
}

/// Runs one call of `tool` under `policy`'s breaker, bulkhead and timeout, counting an answer
/// as `classify` says (a tool error may count as a failure).
///
/// In order:
///
/// 1. the breaker's [`try_acquire`](palisade_breaker::CircuitBreaker::try_acquire): an open
///    breaker refuses before any wait ([`Refusal::BreakerOpen`]);
/// 2. the bulkhead's bounded wait for a slot ([`Refusal::PartitionFull`]; the breaker permit is
///    dropped unrecorded, which gives a half-open trial slot back);
/// 3. `call()` under the timeout; then the outcome, classified once:
///
/// | the call | breaker | outcome |
/// | --- | --- | --- |
/// | answers | `classify(answer)` (default success) | [`Outcome::Done`] |
/// | [`CallError::Rejected`] | ignored | [`Outcome::Rejected`] |
/// | [`CallError::Failed`], kind `rate_limited` | ignored | [`Outcome::Failed`] |
/// | [`CallError::Failed`], other kinds | failure | [`Outcome::Failed`] |
/// | [`CallError::Lost`] | failure | [`Outcome::Lost`] |
/// | no answer within the timeout | failure | [`Outcome::Failed`] with [`Failure::timeout`] |
///
/// An adaptive bulkhead is fed each call's latency and whether it failed. If the returned
/// future is dropped, nothing is recorded and both slots are given back.
///
/// Every decision is also a `tracing` event (target `palisade::mcp`, level debug; its fields
/// are computed only when something listens), so the span of the call, if the caller made
/// one, gets them as span events: `palisade.breaker.admitted` / `palisade.breaker.rejected`
/// (`palisade.breaker.name`, `.state`), `palisade.bulkhead.acquired` /
/// `palisade.bulkhead.rejected` (`palisade.bulkhead.name`, `.wait_ms`) and `palisade.timeout`
/// (`palisade.timeout_ms`); [`invoke_retrying`] adds `palisade.retry.attempt` and a
/// [`RateLimit`](crate::RateLimit) refusal is `palisade.rate_limited`.
pub async fn invoke_classified<T, C, F, Fut>(
    policy: &ToolPolicy,
    tool: &str,
    classify: C,
    call: F,
) -> Outcome<T>
where
    C: FnOnce(&T) -> Verdict,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    // Every decision below is also a `tracing` event (target `palisade::mcp`, level debug):
    // the span of the call, when there is one, gets them as span events. Their fields are only
    // computed when something listens.
    let permit = match policy.breaker().map(|b| (b, b.try_acquire())) {
        None => None,
        Some((breaker, Ok(permit))) => {
            tracing::event!(
                target: TARGET,
                tracing::Level::DEBUG,
                palisade.breaker.name = breaker.name(),
                palisade.breaker.state = breaker.state().as_str(),
                "palisade.breaker.admitted"
            );
            Some(permit)
        }
        Some((breaker, Err(rejected))) => {
            let state = match rejected.reason() {
                RejectReason::Open => palisade_breaker::State::Open,
                RejectReason::ForcedOpen => palisade_breaker::State::ForcedOpen,
                RejectReason::HalfOpenFull => palisade_breaker::State::HalfOpen,
            };
            tracing::event!(
                target: TARGET,
                tracing::Level::DEBUG,
                palisade.breaker.name = breaker.name(),
                palisade.breaker.state = state.as_str(),
                palisade.retry_after_ms = rejected.retry_after().map(millis),
                "palisade.breaker.rejected"
            );
            return Outcome::Refused(Refusal::BreakerOpen {
                state,
                retry_after: rejected.retry_after(),
            });
        }
    };
    let (_slot, started) = match policy.bulkhead() {
        None => (None, None),
        Some(bulkhead) => {
            // The clock is read before the wait only for the event.
            let asked = tracing::enabled!(target: TARGET, tracing::Level::DEBUG)
                .then(tokio::time::Instant::now);
            let waited = || asked.map(|t| t.elapsed().as_secs_f64() * 1000.0);
            match bulkhead.acquire().await {
                Ok(slot) => {
                    tracing::event!(
                        target: TARGET,
                        tracing::Level::DEBUG,
                        palisade.bulkhead.name = bulkhead.name(),
                        palisade.bulkhead.wait_ms = waited(),
                        "palisade.bulkhead.acquired"
                    );
                    (Some(slot), Some(tokio::time::Instant::now()))
                }
                Err(refused) => {
                    tracing::event!(
                        target: TARGET,
                        tracing::Level::DEBUG,
                        palisade.bulkhead.name = bulkhead.name(),
                        palisade.bulkhead.wait_ms = waited(),
                        palisade.reason = %refused,
                        "palisade.bulkhead.rejected"
                    );
                    // Dropping the breaker permit unrecorded gives a trial slot back.
                    return Outcome::Refused(Refusal::PartitionFull {
                        partition: bulkhead.name().to_owned(),
                        message: refused.to_string(),
                    });
                }
            }
        }
    };
    // An elapsed deadline the timeout component counts as slow: `Verdict::Slow` below.
    let mut slow = false;
    let result = match (policy.deadline(), policy.timeout()) {
        (Some(timeout), _) => match timeout.call(call()).await {
            Ok(answer) => Ok(answer),
            Err(TimeoutError::Inner(e)) => Err(e),
            Err(TimeoutError::Elapsed { after, .. }) => {
                slow = timeout.count_as() == CountAs::Slow;
                tracing::event!(
                    target: TARGET,
                    tracing::Level::DEBUG,
                    palisade.timeout.name = timeout.name(),
                    palisade.timeout_ms = millis(after),
                    palisade.timeout.counts_as = if slow { "slow" } else { "failure" },
                    "palisade.timeout"
                );
                Err(CallError::Failed(Failure::timeout(format!(
                    "{tool}: no answer within {} ms",
                    millis(after)
                ))))
            }
            Err(other) => Err(CallError::Failed(Failure::timeout(format!(
                "{tool}: {other}"
            )))),
        },
        (None, Some(limit)) => match tokio::time::timeout(limit, call()).await {
            Ok(result) => result,
            Err(_) => {
                tracing::event!(
                    target: TARGET,
                    tracing::Level::DEBUG,
                    palisade.timeout_ms = millis(limit),
                    palisade.timeout.counts_as = "failure",
                    "palisade.timeout"
                );
                Err(CallError::Failed(Failure::timeout(format!(
                    "{tool}: no answer within {} ms",
                    millis(limit)
                ))))
            }
        },
        (None, None) => call().await,
    };
    let (verdict, outcome) = match result {
        Ok(answer) => (classify(&answer), Outcome::Done(answer)),
        // A caller's bad input says nothing about the upstream's health.
        Err(CallError::Rejected(message)) => (Verdict::Ignored, Outcome::Rejected(message)),
        // A 429: the upstream is alive, only busy.
        Err(CallError::Failed(f)) if f.kind == FailureKind::RateLimited => {
            (Verdict::Ignored, Outcome::Failed(f))
        }
        Err(CallError::Failed(f)) if slow => (Verdict::Slow, Outcome::Failed(f)),
        Err(CallError::Failed(f)) => (Verdict::Failure, Outcome::Failed(f)),
        Err(CallError::Lost(f)) => (Verdict::Failure, Outcome::Lost(f)),
    };
    if let (Some(bulkhead), Some(started)) = (policy.bulkhead(), started) {
        bulkhead.observe(started.elapsed(), verdict != Verdict::Failure);
    }
    if let Some(permit) = permit {
        permit.record(verdict);
    }
    outcome
}

/// Runs one call of `tool` under `policy` like [`invoke`], retrying failed attempts with
/// the policy's [`Retry`](palisade_toolbox::retry::Retry) (backoff with full jitter, its
/// budget, `Retry-After` hints) when the tool is `idempotent`; otherwise exactly [`invoke`].
/// Each attempt goes through the breaker, the bulkhead and the timeout again.
///
/// What is retried: failures that may pass (timeouts, unavailable, 5xx; a 429 after its
/// `retry_after`), a full partition, and a breaker that says when it admits again (after
/// that wait, if the retry's `max_retry_after` allows it). Never retried: answers,
/// rejections (the input is wrong), a lost server (the call may be what crashed it), a
/// forced-open breaker.
pub async fn invoke_retrying<T, F, Fut>(
    policy: &ToolPolicy,
    tool: &str,
    idempotent: bool,
    call: F,
) -> Outcome<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    let Some(retry) = policy.retry().filter(|_| idempotent) else {
        return invoke(policy, tool, call).await;
    };
    let call = &call;
    // For the `palisade.retry.attempt` events: attempts made, and when and how the last one
    // failed (the clock is read on failures only).
    let attempts = AtomicU32::new(0);
    let failed: Mutex<Option<(tokio::time::Instant, &'static str)>> = Mutex::new(None);
    let (attempts, failed) = (&attempts, &failed);
    let result = retry
        .call_classified(retry_decision::<T>, || async move {
            let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
            if attempt > 1 {
                let last = failed.lock().ok().and_then(|mut f| f.take());
                tracing::event!(
                    target: TARGET,
                    tracing::Level::DEBUG,
                    palisade.retry.name = retry.name(),
                    palisade.retry.attempt = attempt,
                    palisade.retry.delay_ms =
                        last.map(|(at, _)| at.elapsed().as_secs_f64() * 1000.0),
                    palisade.retry.previous = last.map(|(_, why)| why),
                    "palisade.retry.attempt"
                );
            }
            match invoke(policy, tool, call).await {
                Outcome::Done(answer) => Ok(answer),
                other => {
                    if let Ok(mut f) = failed.lock() {
                        *f = Some((tokio::time::Instant::now(), other.code()));
                    }
                    Err(other)
                }
            }
        })
        .await;
    match result {
        Ok(answer) => Outcome::Done(answer),
        Err(outcome) => outcome,
    }
}

/// Whether a failed attempt is worth another (see [`invoke_retrying`]).
fn retry_decision<T>(result: &Result<T, Outcome<T>>) -> Decision {
    let Err(outcome) = result else {
        return Decision::Return;
    };
    match outcome {
        Outcome::Failed(f) => match (f.kind, f.retry_after) {
            (FailureKind::ClientError, _) => Decision::Return,
            (_, Some(after)) => Decision::RetryAfter(after),
            _ => Decision::Retry,
        },
        Outcome::Refused(Refusal::PartitionFull { .. }) => Decision::Retry,
        Outcome::Refused(Refusal::BreakerOpen {
            retry_after: Some(after),
            ..
        }) => Decision::RetryAfter(*after),
        _ => Decision::Return,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use palisade_breaker::{CircuitBreaker, State};
    use palisade_bulkhead::Bulkhead;
    use palisade_core::TokioClock;
    use palisade_ratelimit::{Quota, RateLimitConfig};
    use rmcp::model::ContentBlock;

    use super::*;
    use crate::limit::RateLimit;

    fn ok() -> Result<CallToolResult, CallError> {
        Ok(CallToolResult::success(vec![ContentBlock::text("ok")]))
    }

    fn breaker(failures: u32) -> CircuitBreaker {
        CircuitBreaker::builder("b")
            .consecutive_failures(failures)
            .wait_duration(Duration::from_secs(30))
            .clock(TokioClock::shared())
            .build()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_is_a_breaker_failure_at_its_deadline() {
        let policy = ToolPolicy::builder()
            .breaker(breaker(2))
            .timeout(Duration::from_secs(10))
            .build();
        let start = tokio::time::Instant::now();
        let outcome: Outcome = invoke(&policy, "slow", std::future::pending).await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        let Outcome::Failed(failure) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(failure.kind, FailureKind::Timeout);
        assert_eq!(failure.message, "slow: no answer within 10000 ms");
        assert_eq!(policy.breaker().unwrap().state(), State::Closed);
        let _: Outcome = invoke(&policy, "slow", std::future::pending).await;
        assert_eq!(policy.breaker().unwrap().state(), State::Open);
        // An answer just inside the limit passes.
        let policy = ToolPolicy::builder()
            .timeout(Duration::from_secs(10))
            .build();
        let outcome = invoke(&policy, "t", || async {
            tokio::time::sleep(Duration::from_millis(9_999)).await;
            ok()
        })
        .await;
        assert!(outcome.is_done());
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_component_counts_as_its_config_says_and_changes_at_runtime() {
        let timeout = palisade_toolbox::Timeout::builder("t")
            .deadline(Duration::from_secs(2))
            .count_as(CountAs::Slow)
            .build()
            .unwrap();
        let policy = ToolPolicy::builder()
            .breaker(breaker(1))
            .deadline(timeout.clone())
            .build();
        assert_eq!(policy.timeout(), Some(Duration::from_secs(2)));
        let start = tokio::time::Instant::now();
        let outcome: Outcome = invoke(&policy, "slow", std::future::pending).await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert!(matches!(&outcome, Outcome::Failed(f) if f.kind == FailureKind::Timeout));
        let calls = policy.breaker().unwrap().snapshot().calls;
        assert_eq!(
            (calls.slow, calls.failed),
            (1, 0),
            "a slow call, not a failure"
        );
        assert_eq!(timeout.snapshot().timeouts_total, 1);
        // The operator shortens the deadline: the next call uses it.
        timeout.set_deadline(Duration::from_millis(500)).unwrap();
        let start = tokio::time::Instant::now();
        let _: Outcome = invoke(&policy, "slow", std::future::pending).await;
        assert_eq!(start.elapsed(), Duration::from_millis(500));
    }

    fn retrying(attempts: u32) -> palisade_toolbox::retry::Retry {
        palisade_toolbox::retry::Retry::builder("r")
            .max_attempts(attempts)
            .backoff(Duration::from_millis(100), Duration::from_secs(1))
            .clock(TokioClock::shared())
            .build()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn idempotent_calls_are_retried_and_others_never() {
        let policy = ToolPolicy::builder().retry(retrying(3)).build();
        let calls = AtomicUsize::new(0);
        let flaky = || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(CallError::Failed(Failure::unavailable("503")))
            } else {
                ok()
            }
        };
        let outcome = invoke_retrying(&policy, "read", true, flaky).await;
        assert!(outcome.is_done(), "{outcome:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Not idempotent: one attempt, whatever the retry says.
        calls.store(0, Ordering::SeqCst);
        let outcome = invoke_retrying(&policy, "send", false, flaky).await;
        assert!(matches!(outcome, Outcome::Failed(_)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Bad input and lost servers are not retried.
        let rejected = AtomicUsize::new(0);
        let outcome: Outcome = invoke_retrying(&policy, "read", true, || async {
            rejected.fetch_add(1, Ordering::SeqCst);
            Err(CallError::Rejected("bad city".into()))
        })
        .await;
        assert!(matches!(outcome, Outcome::Rejected(_)));
        let lost = AtomicUsize::new(0);
        let _: Outcome = invoke_retrying(&policy, "read", true, || async {
            lost.fetch_add(1, Ordering::SeqCst);
            Err(CallError::Lost(Failure::unavailable("exited")))
        })
        .await;
        assert_eq!(
            (rejected.load(Ordering::SeqCst), lost.load(Ordering::SeqCst)),
            (1, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_waits_for_a_hinted_retry_after() {
        let policy = ToolPolicy::builder().retry(retrying(2)).build();
        let calls = AtomicUsize::new(0);
        let start = tokio::time::Instant::now();
        let outcome = invoke_retrying(&policy, "read", true, || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(CallError::Failed(Failure::rate_limited(
                    "429",
                    Duration::from_millis(700),
                )))
            } else {
                ok()
            }
        })
        .await;
        assert!(outcome.is_done());
        assert_eq!(start.elapsed(), Duration::from_millis(700));
    }

    #[tokio::test(start_paused = true)]
    async fn outcomes_are_classified_once() {
        let policy = ToolPolicy::builder().breaker(breaker(1)).build();
        let b = policy.breaker().unwrap().clone();
        // Bad input and a busy upstream do not count.
        let r: Outcome = invoke(&policy, "t", || async {
            Err(CallError::Rejected("no".into()))
        })
        .await;
        assert_eq!(r, Outcome::Rejected("no".into()));
        let busy = Failure::rate_limited("429", Duration::from_secs(1));
        let r: Outcome = invoke(&policy, "t", || async { Err(CallError::Failed(busy)) }).await;
        assert!(matches!(r, Outcome::Failed(f) if f.kind == FailureKind::RateLimited));
        assert_eq!(b.state(), State::Closed);
        // A tool error counts only when the classifier says so.
        let r = invoke_classified(&policy, "t", |_| Verdict::Failure, || async { ok() }).await;
        assert!(r.is_done());
        assert_eq!(b.state(), State::Open);
        b.reset();
        let lost = Failure::unavailable("child exited");
        let r: Outcome = invoke(&policy, "t", || async { Err(CallError::Lost(lost)) }).await;
        assert!(matches!(r, Outcome::Lost(_)));
        assert_eq!(b.state(), State::Open);
        // Open: refused without calling, with the time until a trial.
        let called = AtomicUsize::new(0);
        let r = invoke(&policy, "t", || async {
            called.fetch_add(1, Ordering::SeqCst);
            ok()
        })
        .await;
        assert_eq!(called.load(Ordering::SeqCst), 0);
        assert_eq!(
            r,
            Outcome::Refused(Refusal::BreakerOpen {
                state: State::Open,
                retry_after: Some(Duration::from_secs(30)),
            })
        );
        b.force_open();
        let r: Outcome = invoke(&policy, "t", || async { ok() }).await;
        assert!(matches!(
            r,
            Outcome::Refused(Refusal::BreakerOpen {
                state: State::ForcedOpen,
                retry_after: None
            })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_partition_refuses_and_gives_the_trial_slot_back() {
        let bulkhead = Bulkhead::builder("db")
            .max_concurrent(1)
            .max_wait(Duration::from_millis(50))
            .build()
            .unwrap();
        let b = breaker(1);
        let policy = Arc::new(
            ToolPolicy::builder()
                .breaker(b.clone())
                .bulkhead(bulkhead.clone())
                .build(),
        );
        let (release, hold) = tokio::sync::oneshot::channel::<()>();
        let running = {
            let policy = Arc::clone(&policy);
            tokio::spawn(async move {
                let r: Outcome = invoke(&policy, "t", || async {
                    let _ = hold.await;
                    ok()
                })
                .await;
                r
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(bulkhead.active(), 1);
        let start = tokio::time::Instant::now();
        let r: Outcome = invoke(&policy, "t", || async { ok() }).await;
        assert_eq!(start.elapsed(), Duration::from_millis(50));
        let Outcome::Refused(Refusal::PartitionFull { partition, message }) = r else {
            panic!("{r:?}")
        };
        assert_eq!(partition, "db");
        assert!(message.contains("timed out"), "{message}");
        release.send(()).unwrap();
        assert!(running.await.unwrap().is_done());
        assert_eq!(bulkhead.active(), 0);
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test]
    async fn rate_limits_refuse_before_anything_runs() {
        let limiter = RateLimitConfig {
            quota: Quota::per_minute(1),
            ..Default::default()
        }
        .build("per-caller")
        .finish()
        .unwrap();
        let policy = ToolPolicy::builder()
            .rate_limit(RateLimit::new(limiter).rule("tenant"))
            .build();
        let caller = Caller::new("10.0.0.1");
        assert!(
            run(&policy, "t", &caller, || async { ok() })
                .await
                .is_done()
        );
        let r = run(&policy, "t", &caller, || async { ok() }).await;
        let Outcome::Refused(Refusal::RateLimited { retry_after, rule }) = r else {
            panic!("{r:?}")
        };
        assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(60));
        assert_eq!(rule.as_deref(), Some("tenant"));
        let other = Caller::new("10.0.0.2");
        assert!(run(&policy, "t", &other, || async { ok() }).await.is_done());
    }

    #[test]
    fn replays_map_outcomes_to_failures() {
        let done: Outcome<u8> = Outcome::Done(1);
        assert_eq!(done.into_replay("t"), Ok(1));
        let lost: Outcome<u8> = Outcome::Lost(Failure::unavailable("gone"));
        let f = lost.into_replay("t").unwrap_err();
        assert_eq!(f.kind, FailureKind::ClientError);
        assert!(f.message.starts_with("parked"));
        let rejected: Outcome<u8> = Outcome::Rejected("bad".into());
        assert_eq!(
            rejected.into_replay("t").unwrap_err().kind,
            FailureKind::ClientError
        );
    }
}
