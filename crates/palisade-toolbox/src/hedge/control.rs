//! Snapshots, operator commands and metrics export: the hedge as a registry component.

use std::sync::atomic::Ordering;
use std::time::Duration;

use palisade_core::config::duration;
use palisade_core::{ComponentKind, Control, ControlError, Inspect, Managed, async_trait};
use serde::{Deserialize, Serialize};

use super::config::{HedgeConfig, HedgeDelay};
use super::hedge::Hedge;
use super::names;
use crate::budget::{BudgetSnapshot, patch};
use crate::retry::{reset_budget, set_budget_fields};

/// Operator commands, as sent to `POST /admin/hedges/{name}`.
///
/// | command | effect |
/// | --- | --- |
/// | `{"action": "set_enabled", "enabled": false}` | stops (or resumes) hedging: idempotent calls run once |
/// | `{"action": "set_delay", "delay": {"fixed": "80ms"}}` | changes the delay (`{"percentile": {…}}` for a tracked one) |
/// | `{"action": "set_config", "config": {…}}` | replaces the whole config (fields left out take the defaults) |
/// | `{"action": "update_config", "config": {"budget": {"ratio": 0.05}}}` | changes the fields named (a `budget` object changes only the budget fields it names) |
/// | `{"action": "set_budget", "ratio": 0.05}` | changes the budget fields given (`ratio`, `min_retries_per_second`, `window`) |
/// | `{"action": "reset_budget"}` | the budget's whole reserve available again |
///
/// Every change is validated first; an invalid value is refused naming the field, and nothing
/// changes.
///
/// ```
/// use palisade_toolbox::hedge::HedgeCommand;
///
/// let cmd: HedgeCommand = serde_json::from_str(r#"{"action": "set_enabled", "enabled": false}"#).unwrap();
/// assert_eq!(cmd, HedgeCommand::SetEnabled { enabled: false });
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum HedgeCommand {
    /// Switch hedging on or off.
    SetEnabled {
        /// On or off.
        enabled: bool,
    },
    /// Change the delay.
    SetDelay {
        /// The new delay.
        delay: HedgeDelay,
    },
    /// Replace the whole config (validated first).
    SetConfig {
        /// The new config.
        config: HedgeConfig,
    },
    /// Change the named top-level fields and keep the others; a `budget` object changes only
    /// the budget fields it names.
    UpdateConfig {
        /// The fields to change.
        config: serde_json::Map<String, serde_json::Value>,
    },
    /// Change some of the budget's settings.
    SetBudget {
        /// Hedges (and retries) per call over the window.
        #[serde(default)]
        ratio: Option<f64>,
        /// Hedges (and retries) per second whatever the traffic.
        #[serde(default)]
        min_retries_per_second: Option<f64>,
        /// The window, as `"10s"` or milliseconds.
        #[serde(default, with = "duration::option")]
        window: Option<Duration>,
    },
    /// Make the budget's whole reserve available again and forget earlier calls' tokens.
    ResetBudget,
}

/// What an operator sees of a hedge.
///
/// ```
/// use std::time::Duration;
/// use palisade_toolbox::hedge::Hedge;
///
/// let hedge = Hedge::builder("search").fixed_delay(Duration::from_millis(25)).build().unwrap();
/// let snap = hedge.snapshot();
/// assert_eq!(snap.current_delay_ms, 25.0);
/// assert!(snap.enabled);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HedgeSnapshot {
    /// The component's name.
    pub name: String,
    /// Whether idempotent calls are hedged.
    pub enabled: bool,
    /// Calls made, hedgeable or not.
    pub calls_total: u64,
    /// Calls made with `call_idempotent` (or found idempotent by the layer's predicate).
    pub idempotent_calls_total: u64,
    /// Second attempts sent.
    pub hedges_sent_total: u64,
    /// Calls the second attempt answered first.
    pub hedges_won_total: u64,
    /// Attempts still running when the other one answered, cancelled (their futures dropped).
    pub cancelled_losers_total: u64,
    /// Hedges not sent because the budget refused them.
    pub budget_denied_total: u64,
    /// The delay in force, in milliseconds.
    pub current_delay_ms: f64,
    /// Latencies held for the percentile delay, sampled (see
    /// [`PercentileDelay`](super::PercentileDelay)); 0 with a fixed delay.
    pub latency_samples: u64,
    /// The budget (its counters include every component sharing it).
    pub budget: BudgetSnapshot,
    /// The config in force.
    pub config: HedgeConfig,
}

impl Hedge {
    /// Counters, delay, budget and config (the delay is recomputed first).
    ///
    /// ```
    /// use palisade_toolbox::hedge::Hedge;
    ///
    /// let hedge = Hedge::builder("search").build().unwrap();
    /// assert_eq!(hedge.snapshot().hedges_sent_total, 0);
    /// ```
    pub fn snapshot(&self) -> HedgeSnapshot {
        let s = &*self.shared;
        s.recompute_delay();
        let c = &s.counters;
        let config = self.config();
        HedgeSnapshot {
            name: s.name.to_string(),
            enabled: config.enabled,
            calls_total: c.calls.get(),
            idempotent_calls_total: c.idempotent.get(),
            hedges_sent_total: c.sent.load(Ordering::Relaxed),
            hedges_won_total: c.won.load(Ordering::Relaxed),
            cancelled_losers_total: c.cancelled.load(Ordering::Relaxed),
            budget_denied_total: c.denied.load(Ordering::Relaxed),
            current_delay_ms: s.delay().as_secs_f64() * 1000.0,
            latency_samples: match config.delay {
                HedgeDelay::Percentile(_) => s.latency_samples(),
                HedgeDelay::Fixed(_) => 0,
            },
            budget: s.budget.snapshot(),
            config,
        }
    }

    /// Applies an operator command; returns the snapshot after it.
    ///
    /// ```
    /// use palisade_toolbox::hedge::{Hedge, HedgeCommand};
    ///
    /// let hedge = Hedge::builder("search").build().unwrap();
    /// let cmd = serde_json::from_value(serde_json::json!(
    ///     {"action": "set_delay", "delay": {"percentile": {"percentile": 101}}}
    /// )).unwrap();
    /// let err = hedge.apply(cmd).unwrap_err();
    /// assert!(err.to_string().contains("delay.percentile.percentile"), "{err}");
    /// ```
    pub fn apply(&self, command: HedgeCommand) -> Result<HedgeSnapshot, ControlError> {
        match command {
            HedgeCommand::SetEnabled { enabled } => self.set_enabled(enabled)?,
            HedgeCommand::SetDelay { delay } => self.set_delay(delay)?,
            HedgeCommand::SetConfig { config } => self.set_config(config)?,
            HedgeCommand::UpdateConfig { config } => {
                self.set_config(patch::merge_patch(&self.config(), config)?)?
            }
            HedgeCommand::SetBudget {
                ratio,
                min_retries_per_second,
                window,
            } => {
                let mut config = self.config();
                set_budget_fields(&mut config.budget, ratio, min_retries_per_second, window);
                self.set_config(config)?
            }
            HedgeCommand::ResetBudget => reset_budget(
                &self.shared.budget,
                ComponentKind::Hedge,
                self.name(),
                self.events(),
            ),
        }
        Ok(self.snapshot())
    }
}

impl Inspect for Hedge {
    type Snapshot = HedgeSnapshot;

    fn snapshot(&self) -> HedgeSnapshot {
        Hedge::snapshot(self)
    }
}

#[async_trait]
impl Control for Hedge {
    type Command = HedgeCommand;
    type Output = HedgeSnapshot;

    async fn control(&self, command: HedgeCommand) -> Result<HedgeSnapshot, ControlError> {
        self.apply(command)
    }
}

impl Managed for Hedge {
    const KIND: ComponentKind = ComponentKind::Hedge;

    fn name(&self) -> &str {
        Hedge::name(self)
    }

    fn export_metrics(&self) {
        let snap = self.snapshot();
        names::export(&snap);
        crate::budget::names::export("hedge", &snap.name, &snap.budget);
    }
}
