//! Changing a running breaker's config: validate, describe the change, update the hot copies,
//! and re-check the half-open invariants so that no change can strand the breaker.

use std::sync::atomic::Ordering;

use palisade_core::{ConfigError, EventKind};

use crate::breaker::CircuitBreaker;
use crate::config::BreakerConfig;
use crate::machine;
use crate::shared::{SLOW_OFF, Shared};
use crate::state::Word;
use crate::window::Window;

impl CircuitBreaker {
    /// Replaces the config as a whole after validating it; an invalid config is refused with
    /// an error naming the field and nothing changes. The state is kept: an open breaker keeps
    /// its current wait; a changed window starts empty.
    ///
    /// A half-open breaker is re-checked against the new values at once, so a change can never
    /// leave it refusing every call with no trial outcome to come: if the trials that already
    /// succeeded reach a lowered `half_open_max_calls`, it closes; if trials in flight have
    /// already gone a lowered `max_wait_in_half_open` without news, it re-opens.
    pub fn set_config(&self, config: BreakerConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let s = &*self.shared;
        let mut ctl = s.ctl.lock();
        // What fell due under the old config happened first.
        s.settle(&mut ctl);
        let change = describe_change(&ctl.config, &config);
        s.apply_hot_config(&config, Some(&ctl.config));
        ctl.config = config;
        if let Some(change) = change {
            s.publish(EventKind::ConfigChanged { change });
        }
        // A read-modify-write, not a load: a trial success swapped into the word after this
        // reads the new limit (this write releases it), and one swapped in before is seen here.
        // So a concurrent success and a lowered limit can never both miss closing.
        let w = Word(s.word.fetch_add(0, Ordering::AcqRel));
        if let Some(m) = machine::after_config(w, &s.inputs()) {
            s.transition(&mut ctl, w, m);
        }
        Ok(())
    }
}

/// The fields that differ, as `field=new_value` pairs (JSON values), for the config event.
pub(crate) fn describe_change(old: &BreakerConfig, new: &BreakerConfig) -> Option<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Some("config replaced".into());
    };
    let changed: Vec<String> = b
        .iter()
        .filter(|(k, v)| a.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    (!changed.is_empty()).then(|| changed.join(", "))
}

impl Shared {
    /// Copies the fields the call path reads into atomics; rebuilds the window if its config
    /// changed (`old` is `None` when building).
    pub(crate) fn apply_hot_config(&self, cfg: &BreakerConfig, old: Option<&BreakerConfig>) {
        self.threshold
            .store(cfg.consecutive_failures, Ordering::Relaxed);
        self.half_open_max
            .store(cfg.half_open_max_calls, Ordering::Release);
        self.half_open_wait.store(
            palisade_core::clock::saturating_nanos(cfg.max_wait_in_half_open),
            Ordering::Relaxed,
        );
        let slow = cfg
            .failure_rate
            .as_ref()
            .and_then(|r| r.slow_call_duration)
            .map_or(SLOW_OFF, palisade_core::clock::saturating_nanos);
        self.slow_nanos.store(slow, Ordering::Relaxed);
        self.timing.store(cfg.timing_needed(), Ordering::Relaxed);
        let window_changed = old.is_none_or(|o| o.failure_rate != cfg.failure_rate);
        if window_changed {
            *self.window.lock() = cfg.failure_rate.as_ref().map(Window::new);
            self.has_window
                .store(cfg.failure_rate.is_some(), Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn describes_only_the_fields_that_changed() {
        let old = BreakerConfig::default();
        assert_eq!(describe_change(&old, &old), None);
        let new = BreakerConfig {
            half_open_max_calls: 2,
            max_wait_in_half_open: Duration::from_secs(5),
            ..old.clone()
        };
        assert_eq!(
            describe_change(&old, &new).as_deref(),
            Some(r#"half_open_max_calls=2, max_wait_in_half_open="5s""#)
        );
    }
}
