//! Snapshots, operator commands and metrics export: the injector as a registry component.

use std::sync::atomic::Ordering;
use std::time::Duration;

use palisade_core::config::{ConfigError, duration};
use palisade_core::{ComponentKind, Control, ControlError, Inspect, Managed, async_trait};
use serde::{Deserialize, Serialize};

use crate::decide::ceil_millis;
use crate::fault::{Fault, FaultMode};
use crate::injector::FaultInjector;
use crate::metric_names as names;

/// Operator commands, as sent to `POST /admin/fault-injectors/{name}`:
///
/// - `{"action": "enable", "mode": "latency", "latency_ms": 200, "rate": 0.5, "ttl": "5m"}`
///   (`latency_max_ms` makes the delay a uniform pick from `latency_ms` to `latency_max_ms`),
/// - `{"action": "enable", "mode": "error", "rate": 1, "ttl": "30s"}`,
/// - `{"action": "enable", "mode": "refuse", "rate": 0.2, "ttl": "10m", "retry_after_ms": 5000}`
///   (`retry_after_ms` defaults to 1000),
/// - `{"action": "disable"}`.
///
/// `ttl` is required (`"30s"`, `"5m"`, or milliseconds), more than zero and at most the
/// injector's `max_ttl` (1 h by default). A bad value is refused naming the field.
///
/// ```
/// use palisade_chaos::{FaultCommand, FaultMode};
///
/// let cmd: FaultCommand = serde_json::from_str(
///     r#"{"action": "enable", "mode": "latency", "latency_ms": 200, "rate": 0.5, "ttl": "5m"}"#,
/// ).unwrap();
/// assert!(matches!(cmd, FaultCommand::Enable { mode: FaultMode::Latency, latency_ms: Some(200), .. }));
/// let off: FaultCommand = serde_json::from_str(r#"{"action": "disable"}"#).unwrap();
/// assert_eq!(off, FaultCommand::Disable);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum FaultCommand {
    /// Switch injection on (replacing one already on) for `ttl`.
    Enable {
        /// `latency`, `error` or `refuse`.
        mode: FaultMode,
        /// The share of calls to fault, 0 to 1.
        rate: f64,
        /// How long until it switches itself off (required; at most `max_ttl`).
        #[serde(default, with = "duration::option")]
        ttl: Option<Duration>,
        /// Mode `latency`: the delay in milliseconds (required), or the shortest of a range.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        latency_ms: Option<u64>,
        /// Mode `latency`: the longest delay of a range, in milliseconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        latency_max_ms: Option<u64>,
        /// Mode `refuse`: what the refusal tells callers to wait, in milliseconds (default 1000).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// Switch injection off now.
    Disable,
}

/// The last time an injector was switched on or off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FaultTransition {
    /// `"off"` or `"on"`.
    pub from: String,
    /// `"on"` or `"off"`.
    pub to: String,
    /// Why: `"enabled: error at rate 0.5 for 30s"`, `"ttl of 30s elapsed"`, `"disabled"`.
    pub reason: String,
    /// When (milliseconds since the Unix epoch).
    pub at_unix_ms: u64,
}

/// What an operator sees of a fault injector. The injection's fields are `null` while it is
/// off.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultSnapshot {
    /// The injector's name.
    pub name: String,
    /// Whether this instance's config allows switching it on (`enabled_in_config`).
    pub allowed: bool,
    /// Whether faults are being injected now (a time-to-live that ran out is applied first).
    pub enabled: bool,
    /// `latency`, `error` or `refuse`.
    pub mode: Option<FaultMode>,
    /// The share of calls faulted, 0 to 1.
    pub rate: Option<f64>,
    /// Mode `latency`: the delay, or the shortest of its range, in milliseconds.
    pub latency_ms: Option<u64>,
    /// Mode `latency`: the longest delay, in milliseconds (equal to `latency_ms` when fixed).
    pub latency_max_ms: Option<u64>,
    /// Mode `refuse`: what refusals tell callers to wait, in milliseconds.
    pub retry_after_ms: Option<u64>,
    /// The time-to-live it was switched on for, in milliseconds.
    pub ttl_ms: Option<u64>,
    /// Milliseconds until it switches itself off (rounded up).
    pub remaining_ttl_ms: Option<u64>,
    /// When it was switched on (milliseconds since the Unix epoch).
    pub enabled_at_unix_ms: Option<u64>,
    /// When it switches itself off (milliseconds since the Unix epoch).
    pub expires_at_unix_ms: Option<u64>,
    /// Who switched it on, as the admin API's audit event names them (`"alice from
    /// 127.0.0.1:51234"`); `null` when unknown (switched on without the admin API).
    pub enabled_by: Option<String>,
    /// The longest time-to-live this injector accepts, in milliseconds.
    pub max_ttl_ms: u64,
    /// Calls that passed while it was on.
    pub calls_while_enabled_total: u64,
    /// Calls delayed.
    pub injected_latency_total: u64,
    /// Calls failed with an injected error.
    pub injected_errors_total: u64,
    /// Calls refused.
    pub injected_refusals_total: u64,
    /// The last time it was switched on or off.
    pub last_transition: Option<FaultTransition>,
}

impl FaultInjector {
    /// A snapshot of state, counters and config (also available as [`Inspect::snapshot`]).
    ///
    /// ```
    /// let snap = palisade_chaos::FaultInjector::builder("github").build().unwrap().snapshot();
    /// assert!(!snap.enabled && !snap.allowed);
    /// assert_eq!(snap.mode, None);
    /// ```
    pub fn snapshot(&self) -> FaultSnapshot {
        let s = &*self.shared;
        let now = s.clock.now_nanos();
        s.expire_if_due(now);
        s.find_enabled_by();
        let unix_now = s.clock.unix_millis();
        let st = s.state.lock();
        let active = st.active.as_ref().filter(|a| !a.lease.expired(now));
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (latency_ms, latency_max_ms, retry_after_ms) = match active.map(|a| a.fault) {
            Some(Fault::Latency { min, max }) => (Some(ms(min)), Some(ms(max)), None),
            Some(Fault::Refuse { retry_after }) => (None, None, Some(ms(retry_after))),
            _ => (None, None, None),
        };
        let remaining = active.map(|a| ceil_millis(a.lease.remaining(now)));
        FaultSnapshot {
            name: s.name.to_string(),
            allowed: s.config.enabled_in_config,
            enabled: active.is_some(),
            mode: active.map(|a| a.fault.mode()),
            rate: active.map(|a| a.rate),
            latency_ms,
            latency_max_ms,
            retry_after_ms,
            ttl_ms: active.map(|a| ceil_millis(a.lease.ttl())),
            remaining_ttl_ms: remaining,
            enabled_at_unix_ms: active.map(|a| a.enabled_at_unix_ms),
            expires_at_unix_ms: remaining.map(|r| unix_now.saturating_add(r)),
            enabled_by: active.and_then(|a| a.enabled_by.clone()),
            max_ttl_ms: ms(s.config.max_ttl),
            calls_while_enabled_total: s.calls.load(Ordering::Relaxed),
            injected_latency_total: s.injected_latency.load(Ordering::Relaxed),
            injected_errors_total: s.injected_errors.load(Ordering::Relaxed),
            injected_refusals_total: s.injected_refusals.load(Ordering::Relaxed),
            last_transition: st.last_transition.as_ref().map(|t| FaultTransition {
                from: t.from.to_owned(),
                to: t.to.to_owned(),
                reason: t.reason.clone(),
                at_unix_ms: t.at_unix_ms,
            }),
        }
    }

    /// Applies an operator command; returns the snapshot after it.
    ///
    /// ```
    /// use palisade_chaos::{FaultCommand, FaultInjector, FaultMode};
    /// use std::time::Duration;
    ///
    /// let github = FaultInjector::builder("github").allow(true).build().unwrap();
    /// let snap = github.apply(FaultCommand::Enable {
    ///     mode: FaultMode::Error, rate: 0.25, ttl: Some(Duration::from_secs(30)),
    ///     latency_ms: None, latency_max_ms: None, retry_after_ms: None,
    /// }).unwrap();
    /// assert!(snap.enabled);
    /// assert_eq!(snap.rate, Some(0.25));
    /// assert!(!github.apply(FaultCommand::Disable).unwrap().enabled);
    /// ```
    pub fn apply(&self, command: FaultCommand) -> Result<FaultSnapshot, ControlError> {
        match command {
            FaultCommand::Enable {
                mode,
                rate,
                ttl,
                latency_ms,
                latency_max_ms,
                retry_after_ms,
            } => {
                if !self.is_allowed() {
                    // Refused before anything else: nothing about the command matters here.
                    return Err(crate::injector::not_allowed(self.name()));
                }
                let fault = Fault::from_fields(mode, latency_ms, latency_max_ms, retry_after_ms)?;
                let ttl = ttl.ok_or_else(|| {
                    ConfigError::new(
                        "ttl",
                        format!(
                            "is required: fault injection always switches itself off; give a \
                             ttl such as \"5m\" (at most {})",
                            palisade_core::config::format_duration(self.config().max_ttl)
                        ),
                    )
                })?;
                self.enable(fault, rate, ttl)?;
            }
            FaultCommand::Disable => {
                self.disable();
            }
        }
        Ok(self.snapshot())
    }
}

impl Inspect for FaultInjector {
    type Snapshot = FaultSnapshot;

    fn snapshot(&self) -> FaultSnapshot {
        FaultInjector::snapshot(self)
    }
}

#[async_trait]
impl Control for FaultInjector {
    type Command = FaultCommand;
    type Output = FaultSnapshot;

    async fn control(&self, command: FaultCommand) -> Result<FaultSnapshot, ControlError> {
        self.apply(command)
    }
}

impl Managed for FaultInjector {
    const KIND: ComponentKind = ComponentKind::FaultInjector;

    fn name(&self) -> &str {
        FaultInjector::name(self)
    }

    fn export_metrics(&self) {
        let snap = self.snapshot();
        let name = snap.name;
        metrics::gauge!(names::ENABLED, "name" => name.clone()).set(if snap.enabled {
            1.0
        } else {
            0.0
        });
        metrics::gauge!(names::REMAINING_TTL_SECONDS, "name" => name.clone())
            .set(snap.remaining_ttl_ms.map_or(0.0, |ms| ms as f64 / 1000.0));
        metrics::counter!(names::CALLS_TOTAL, "name" => name.clone())
            .absolute(snap.calls_while_enabled_total);
        for (fault, n) in [
            (FaultMode::Latency, snap.injected_latency_total),
            (FaultMode::Error, snap.injected_errors_total),
            (FaultMode::Refuse, snap.injected_refusals_total),
        ] {
            metrics::counter!(names::INJECTED_TOTAL, "name" => name.clone(), "fault" => fault.as_str())
                .absolute(n);
        }
    }
}
