//! What guards one tool: its breaker, bulkhead, rate limits, timeout and replay policy.

use std::time::Duration;

use palisade_breaker::CircuitBreaker;
use palisade_bulkhead::Bulkhead;
use palisade_dlq::DeadLetterQueue;
use palisade_toolbox::Timeout;
use palisade_toolbox::retry::Retry;
use rmcp::model::ToolAnnotations;

use crate::caller::Caller;
use crate::deadletter::DeadCall;
use crate::limit::RateLimit;
use crate::refusal::Refusal;
use crate::replay::{PolicySource, ReplayPolicy};

/// What guards the calls of one tool. Every part is optional: the default policy guards
/// nothing. Cheap to clone (the components are shared handles).
///
/// A call passes, in order: the [rate limits](ToolPolicyBuilder::rate_limit), the
/// [breaker](ToolPolicyBuilder::breaker) (an open breaker refuses before any wait), the
/// [bulkhead](ToolPolicyBuilder::bulkhead) (a bounded wait), then runs under the
/// [timeout](ToolPolicyBuilder::timeout); see [`run`](crate::run).
///
/// ```
/// use std::time::Duration;
/// use palisade_breaker::CircuitBreaker;
/// use palisade_bulkhead::Bulkhead;
/// use palisade_mcp::{ReplayPolicy, ToolPolicy};
///
/// let policy = ToolPolicy::builder()
///     .breaker(CircuitBreaker::builder("github").consecutive_failures(5).build()?)
///     .bulkhead(Bulkhead::builder("github").max_concurrent(8).build()?)
///     .timeout(Duration::from_secs(20))
///     .replay(ReplayPolicy::Park)
///     .build();
/// assert_eq!(policy.timeout(), Some(Duration::from_secs(20)));
/// # Ok::<(), palisade_core::BuildError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ToolPolicy {
    breaker: Option<CircuitBreaker>,
    bulkhead: Option<Bulkhead>,
    rate_limits: Vec<RateLimit>,
    timeout: Option<Duration>,
    deadline: Option<Timeout>,
    retry: Option<Retry>,
    replay: Option<ReplayPolicy>,
    dead_letter: Option<DeadLetterQueue<DeadCall>>,
}

/// Builds a [`ToolPolicy`]; see [`ToolPolicy::builder`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ToolPolicyBuilder {
    policy: ToolPolicy,
}

impl ToolPolicyBuilder {
    /// Guards the tool with `breaker` (several tools may share one: one upstream, one breaker).
    pub fn breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.policy.breaker = Some(breaker);
        self
    }

    /// Runs its calls in `bulkhead`'s partition (shared with the partition's other tools).
    pub fn bulkhead(mut self, bulkhead: Bulkhead) -> Self {
        self.policy.bulkhead = Some(bulkhead);
        self
    }

    /// Adds a rate limit; a call must pass every one, in the order added.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.policy.rate_limits.push(limit);
        self
    }

    /// Abandons a call that has not answered within `timeout` (a breaker failure; the call is
    /// dead-lettered under the replay policy). Default: no timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.policy.deadline = None;
        self.policy.timeout = Some(timeout);
        self
    }

    /// Runs calls under `timeout`, a named [`Timeout`] component: operators see its timeouts
    /// and change its deadline at runtime, and its `count_as` says whether the breaker counts
    /// an elapsed deadline as a failure or a slow call. Replaces [`timeout`](Self::timeout).
    pub fn deadline(mut self, timeout: Timeout) -> Self {
        self.policy.timeout = None;
        self.policy.deadline = Some(timeout);
        self
    }

    /// Retries failed calls of **idempotent** tools (read-only or `idempotentHint`, or a
    /// configured `idempotent`/`always` replay policy) with `retry`'s backoff and budget; see
    /// [`invoke_retrying`](crate::invoke_retrying). Other tools' calls are never retried.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.policy.retry = Some(retry);
        self
    }

    /// What becomes of failed calls, overriding the default of the tool's annotations
    /// ([`ReplayPolicy::from_annotations`]).
    pub fn replay(mut self, replay: ReplayPolicy) -> Self {
        self.policy.replay = Some(replay);
        self
    }

    /// Keeps failed calls in `dlq` under the replay policy. Without a queue a failed call is
    /// reported to the client and forgotten.
    pub fn dead_letter(mut self, dlq: DeadLetterQueue<DeadCall>) -> Self {
        self.policy.dead_letter = Some(dlq);
        self
    }

    /// The policy.
    #[must_use]
    pub fn build(self) -> ToolPolicy {
        self.policy
    }
}

impl ToolPolicy {
    /// A builder of a policy that guards nothing yet.
    pub fn builder() -> ToolPolicyBuilder {
        ToolPolicyBuilder::default()
    }

    /// A builder that starts from this policy (to change one part of a shared default).
    pub fn to_builder(&self) -> ToolPolicyBuilder {
        ToolPolicyBuilder {
            policy: self.clone(),
        }
    }

    /// The circuit breaker, if any.
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.breaker.as_ref()
    }

    /// The bulkhead, if any.
    pub fn bulkhead(&self) -> Option<&Bulkhead> {
        self.bulkhead.as_ref()
    }

    /// The rate limits, in the order they are checked.
    pub fn rate_limits(&self) -> &[RateLimit] {
        &self.rate_limits
    }

    /// The call timeout in force, if any (a [`deadline`](ToolPolicyBuilder::deadline)
    /// component's current deadline, or a plain [`timeout`](ToolPolicyBuilder::timeout)).
    pub fn timeout(&self) -> Option<Duration> {
        self.deadline
            .as_ref()
            .map(Timeout::deadline)
            .or(self.timeout)
    }

    /// The [`Timeout`] component, if the policy has one.
    pub fn deadline(&self) -> Option<&Timeout> {
        self.deadline.as_ref()
    }

    /// The retry of idempotent calls, if any.
    pub fn retry(&self) -> Option<&Retry> {
        self.retry.as_ref()
    }

    /// The configured replay policy (`None`: the tool's annotations decide).
    pub fn replay(&self) -> Option<ReplayPolicy> {
        self.replay
    }

    /// The dead-letter queue, if any.
    pub fn dead_letter(&self) -> Option<&DeadLetterQueue<DeadCall>> {
        self.dead_letter.as_ref()
    }

    /// The replay policy for a tool with `annotations`: the configured one, else the
    /// annotations' default; and where it came from.
    ///
    /// ```
    /// use palisade_mcp::{PolicySource, ReplayPolicy, ToolPolicy};
    /// use rmcp::model::ToolAnnotations;
    ///
    /// let destructive = ToolAnnotations::new().destructive(true);
    /// let default = ToolPolicy::default();
    /// assert_eq!(default.replay_for(Some(&destructive)), (ReplayPolicy::Park, PolicySource::Annotations));
    /// let always = ToolPolicy::builder().replay(ReplayPolicy::Always).build();
    /// assert_eq!(always.replay_for(Some(&destructive)), (ReplayPolicy::Always, PolicySource::Configured));
    /// ```
    pub fn replay_for(
        &self,
        annotations: Option<&ToolAnnotations>,
    ) -> (ReplayPolicy, PolicySource) {
        match self.replay {
            Some(policy) => (policy, PolicySource::Configured),
            None => (
                ReplayPolicy::from_annotations(annotations),
                PolicySource::Annotations,
            ),
        }
    }

    /// Whether running a call needs to know its [`Caller`] (for rate limits or dead letters).
    pub fn needs_caller(&self) -> bool {
        !self.rate_limits.is_empty() || self.dead_letter.is_some()
    }

    /// Checks every rate limit for a call of `tool` by `caller`, in order; the first refusal.
    pub async fn check_rate(&self, tool: &str, caller: &Caller) -> Result<(), Refusal> {
        for limit in &self.rate_limits {
            limit.check(tool, caller).await?;
        }
        Ok(())
    }
}
