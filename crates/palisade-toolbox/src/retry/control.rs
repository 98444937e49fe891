//! Snapshots, operator commands and metrics export: the retry as a registry component.

use std::sync::atomic::Ordering;
use std::time::Duration;

use palisade_core::config::duration;
use palisade_core::{
    ComponentKind, Control, ControlError, EventKind, Inspect, Managed, async_trait,
};
use serde::{Deserialize, Serialize};

use super::config::RetryConfig;
use super::names;
use super::retry::Retry;
use crate::budget::{BudgetConfig, BudgetSnapshot, RetryBudget, patch};

/// Operator commands, as sent to `POST /admin/retries/{name}`.
///
/// | command | effect |
/// | --- | --- |
/// | `{"action": "set_config", "config": {…}}` | replaces the whole config (fields left out take the defaults) |
/// | `{"action": "update_config", "config": {"max_attempts": 2, "budget": {"ratio": 0.1}}}` | changes the fields named (a `budget` object changes only the budget fields it names) |
/// | `{"action": "set_budget", "ratio": 0.1, "min_retries_per_second": 5, "window": "20s"}` | changes the budget fields given (any of the three) |
/// | `{"action": "reset_budget"}` | the budget's whole reserve available again, earlier tokens forgotten |
///
/// Every change is validated first; an invalid value is refused naming the field, and nothing
/// changes. A budget shared with other components changes for all of them.
///
/// ```
/// use palisade_toolbox::retry::RetryCommand;
///
/// let cmd: RetryCommand = serde_json::from_str(r#"{"action": "set_budget", "ratio": 0.1}"#).unwrap();
/// assert!(matches!(cmd, RetryCommand::SetBudget { ratio: Some(r), .. } if r == 0.1));
/// assert!(serde_json::from_str::<RetryCommand>(r#"{"action": "set_budget", "ratoi": 1}"#).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum RetryCommand {
    /// Replace the whole config (validated first). Fields it leaves out take the library
    /// defaults: to change a few, use `update_config`.
    SetConfig {
        /// The new config.
        config: RetryConfig,
    },
    /// Change the named top-level fields and keep the others; a `budget` object changes only
    /// the budget fields it names.
    UpdateConfig {
        /// The fields to change.
        config: serde_json::Map<String, serde_json::Value>,
    },
    /// Change some of the budget's settings.
    SetBudget {
        /// Retries per call over the window.
        #[serde(default)]
        ratio: Option<f64>,
        /// Retries per second whatever the traffic.
        #[serde(default)]
        min_retries_per_second: Option<f64>,
        /// The window, as `"10s"` or milliseconds.
        #[serde(default, with = "duration::option")]
        window: Option<Duration>,
    },
    /// Make the budget's whole reserve available again and forget earlier calls' tokens.
    ResetBudget,
}

/// What an operator sees of a retry.
///
/// ```
/// use palisade_toolbox::retry::Retry;
///
/// let retry = Retry::builder("db").build().unwrap();
/// let snap = retry.snapshot();
/// assert_eq!(snap.calls_total, 0);
/// assert_eq!(snap.budget.tokens, 100.0);
/// assert_eq!(serde_json::to_value(&snap).unwrap()["config"]["max_attempts"], 3);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrySnapshot {
    /// The component's name.
    pub name: String,
    /// Calls made (first attempts).
    pub calls_total: u64,
    /// Retries made (attempts after the first).
    pub retries_total: u64,
    /// Calls whose result was returned (the classifier's `Return`) after at least one retry.
    pub returned_after_retry_total: u64,
    /// Calls that ended on a retryable result because every attempt was used.
    pub exhausted_total: u64,
    /// Calls that ended on a retryable result because the budget refused the retry.
    pub budget_denied_total: u64,
    /// Retries that waited for a `Retry-After` hint rather than the backoff.
    pub retry_after_honoured_total: u64,
    /// Calls that ended because a `Retry-After` hint was beyond `max_retry_after`.
    pub retry_after_too_long_total: u64,
    /// The budget (its counters include every component sharing it).
    pub budget: BudgetSnapshot,
    /// The config in force.
    pub config: RetryConfig,
}

impl Retry {
    /// Counters, budget and config.
    ///
    /// ```
    /// use palisade_toolbox::retry::Retry;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let retry = Retry::builder("db").build().unwrap();
    /// retry.call(|| async { Ok::<_, ()>(()) }).await.unwrap();
    /// let snap = retry.snapshot();
    /// assert_eq!((snap.calls_total, snap.retries_total), (1, 0));
    /// assert_eq!(snap.budget.deposits_total, 1);
    /// # });
    /// ```
    pub fn snapshot(&self) -> RetrySnapshot {
        let s = &*self.shared;
        let c = &s.counters;
        RetrySnapshot {
            name: s.name.to_string(),
            calls_total: c.calls.get(),
            retries_total: c.retries.load(Ordering::Relaxed),
            returned_after_retry_total: c.returned_after_retry.load(Ordering::Relaxed),
            exhausted_total: c.exhausted.load(Ordering::Relaxed),
            budget_denied_total: c.budget_denied.load(Ordering::Relaxed),
            retry_after_honoured_total: c.retry_after_honoured.load(Ordering::Relaxed),
            retry_after_too_long_total: c.retry_after_too_long.load(Ordering::Relaxed),
            budget: s.budget.snapshot(),
            config: self.config(),
        }
    }

    /// Applies an operator command; returns the snapshot after it.
    ///
    /// ```
    /// use palisade_toolbox::retry::{Retry, RetryCommand};
    ///
    /// let retry = Retry::builder("db").build().unwrap();
    /// let cmd = serde_json::from_value(serde_json::json!(
    ///     {"action": "update_config", "config": {"budget": {"ratio": -1}}}
    /// )).unwrap();
    /// let err = retry.apply(cmd).unwrap_err();
    /// assert!(err.to_string().contains("budget.ratio"), "{err}");
    /// ```
    pub fn apply(&self, command: RetryCommand) -> Result<RetrySnapshot, ControlError> {
        match command {
            RetryCommand::SetConfig { config } => self.set_config(config)?,
            RetryCommand::UpdateConfig { config } => {
                self.set_config(patch::merge_patch(&self.config(), config)?)?
            }
            RetryCommand::SetBudget {
                ratio,
                min_retries_per_second,
                window,
            } => {
                let mut config = self.config();
                set_budget_fields(&mut config.budget, ratio, min_retries_per_second, window);
                self.set_config(config)?
            }
            RetryCommand::ResetBudget => reset_budget(
                &self.shared.budget,
                ComponentKind::Retry,
                self.name(),
                self.events(),
            ),
        }
        Ok(self.snapshot())
    }
}

/// Applies `set_budget`'s optional fields.
pub(crate) fn set_budget_fields(
    budget: &mut BudgetConfig,
    ratio: Option<f64>,
    min_retries_per_second: Option<f64>,
    window: Option<Duration>,
) {
    if let Some(r) = ratio {
        budget.ratio = r;
    }
    if let Some(m) = min_retries_per_second {
        budget.min_retries_per_second = m;
    }
    if let Some(w) = window {
        budget.window = w;
    }
}

/// `reset_budget`, with its event.
pub(crate) fn reset_budget(
    budget: &RetryBudget,
    kind: ComponentKind,
    name: &str,
    events: &palisade_core::EventBus,
) {
    budget.reset();
    events.publish(
        kind,
        name,
        EventKind::AdminAction {
            action: "reset_budget".into(),
        },
    );
}

impl Inspect for Retry {
    type Snapshot = RetrySnapshot;

    fn snapshot(&self) -> RetrySnapshot {
        Retry::snapshot(self)
    }
}

#[async_trait]
impl Control for Retry {
    type Command = RetryCommand;
    type Output = RetrySnapshot;

    async fn control(&self, command: RetryCommand) -> Result<RetrySnapshot, ControlError> {
        self.apply(command)
    }
}

impl Managed for Retry {
    const KIND: ComponentKind = ComponentKind::Retry;

    fn name(&self) -> &str {
        Retry::name(self)
    }

    fn export_metrics(&self) {
        let snap = self.snapshot();
        names::export(&snap);
        crate::budget::names::export("retry", &snap.name, &snap.budget);
    }
}
