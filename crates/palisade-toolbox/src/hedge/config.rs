//! Hedging configuration.

use std::time::Duration;

use palisade_core::config::{ConfigError, check_duration, check_range, duration};
use serde::{Deserialize, Serialize};

use crate::budget::BudgetConfig;

/// Longest accepted hedging delay (fixed, floor or ceiling).
pub const MAX_HEDGE_DELAY: Duration = Duration::from_secs(3600);

/// How a [`Hedge`](crate::hedge::Hedge) hedges: whether it does, after how long, and its
/// [budget](BudgetConfig) (every hedge sent spends one retry token).
///
/// ```
/// use std::time::Duration;
/// use palisade_toolbox::hedge::{HedgeConfig, HedgeDelay};
///
/// let cfg: HedgeConfig = serde_json::from_str(r#"{"delay": {"fixed": "40ms"}}"#).unwrap();
/// cfg.validate().unwrap();
/// assert_eq!(cfg.delay, HedgeDelay::Fixed(Duration::from_millis(40)));
///
/// let cfg: HedgeConfig = serde_json::from_str(r#"{"delay": {"percentile": {"percentile": 99, "floor": "5ms"}}}"#).unwrap();
/// cfg.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HedgeConfig {
    /// Whether idempotent calls are hedged at all (off: every call runs once). Default true.
    pub enabled: bool,
    /// When the second attempt is sent. Default: the 95th percentile of recent successful
    /// calls, at least 10 ms.
    pub delay: HedgeDelay,
    /// The hedges' budget. With a budget shared between components, this is the shared
    /// budget's config, and changing it changes it for all of them.
    pub budget: BudgetConfig,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            delay: HedgeDelay::default(),
            budget: BudgetConfig::default(),
        }
    }
}

/// How long an idempotent call runs alone before its hedge is sent.
///
/// In JSON: `{"fixed": "50ms"}` or `{"percentile": {"percentile": 95, "floor": "10ms"}}`.
///
/// ```
/// use palisade_toolbox::hedge::{HedgeDelay, PercentileDelay};
///
/// assert_eq!(HedgeDelay::default(), HedgeDelay::Percentile(PercentileDelay::default()));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HedgeDelay {
    /// Always this long (zero sends both attempts at once).
    Fixed(#[serde(with = "duration")] Duration),
    /// A percentile of the latencies of recent successful calls, tracked by the component.
    Percentile(PercentileDelay),
}

impl Default for HedgeDelay {
    fn default() -> Self {
        HedgeDelay::Percentile(PercentileDelay::default())
    }
}

/// A hedging delay that follows the upstream's latency ("The Tail at Scale": hedge after the
/// 95th percentile, and the hedges cost about 5 % more calls).
///
/// Latencies of successful calls (calls through the hedge, hedged or not) are kept in a
/// histogram with 8 buckets per power of two (the delay is the upper edge of the percentile's
/// bucket: at most 12.5 % above the exact value), over a sliding `window` made of two halves.
/// Every call is timed while the newer half holds fewer than 256 latencies, then one call in
/// 16 (per thread): a busy upstream is sampled, a quiet one measured in full. Until the window
/// holds `min_samples` latencies the delay is `ceiling`.
///
/// ```
/// use std::time::Duration;
/// use palisade_toolbox::hedge::PercentileDelay;
///
/// let p = PercentileDelay { percentile: 99.0, ..Default::default() };
/// p.validate().unwrap();
/// let bad = PercentileDelay { floor: Duration::from_secs(2), ceiling: Duration::from_secs(1), ..p };
/// assert_eq!(bad.validate().unwrap_err().field, "ceiling");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PercentileDelay {
    /// The percentile, 50 to 99.99. Default 95.
    pub percentile: f64,
    /// The shortest delay, whatever the latencies (0 to 1 h). Default 10 ms.
    #[serde(with = "duration")]
    pub floor: Duration,
    /// The longest delay, and the delay until enough latencies are known (`floor` to 1 h).
    /// Default 1 s.
    #[serde(with = "duration")]
    pub ceiling: Duration,
    /// Latencies needed in the window before the percentile is used, 1 to 1 000 000. Default 20.
    pub min_samples: u32,
    /// How far back latencies count, 2 s to 1 h. Default 30 s.
    #[serde(with = "duration")]
    pub window: Duration,
}

impl Default for PercentileDelay {
    fn default() -> Self {
        Self {
            percentile: 95.0,
            floor: Duration::from_millis(10),
            ceiling: Duration::from_secs(1),
            min_samples: 20,
            window: Duration::from_secs(30),
        }
    }
}

impl PercentileDelay {
    /// Checks every field; the error names the first invalid one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.percentile.is_finite() {
            return Err(ConfigError::new("percentile", "must be a finite number"));
        }
        check_range("percentile", self.percentile, 50.0, 99.99)?;
        check_duration("floor", self.floor, Duration::ZERO, MAX_HEDGE_DELAY)?;
        if self.ceiling < self.floor {
            return Err(ConfigError::new(
                "ceiling",
                format!(
                    "{:?} is shorter than floor ({:?}); the ceiling must be at least the floor",
                    self.ceiling, self.floor
                ),
            ));
        }
        check_duration("ceiling", self.ceiling, Duration::ZERO, MAX_HEDGE_DELAY)?;
        check_range("min_samples", self.min_samples, 1, 1_000_000)?;
        check_duration(
            "window",
            self.window,
            Duration::from_secs(2),
            Duration::from_secs(3600),
        )
    }
}

impl HedgeConfig {
    /// Checks every field; the error names the first invalid one (`delay.percentile.floor`,
    /// `delay.fixed`, `budget.ratio`).
    ///
    /// ```
    /// use palisade_toolbox::hedge::{HedgeConfig, HedgeDelay, PercentileDelay};
    ///
    /// let cfg = HedgeConfig {
    ///     delay: HedgeDelay::Percentile(PercentileDelay { percentile: 120.0, ..Default::default() }),
    ///     ..Default::default()
    /// };
    /// assert_eq!(cfg.validate().unwrap_err().field, "delay.percentile.percentile");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.delay {
            HedgeDelay::Fixed(d) => {
                check_duration("delay.fixed", *d, Duration::ZERO, MAX_HEDGE_DELAY)?
            }
            HedgeDelay::Percentile(p) => p.validate().map_err(|e| e.within("delay.percentile"))?,
        }
        self.budget.validate().map_err(|e| e.within("budget"))
    }
}

impl crate::budget::patch::BudgetedConfig for HedgeConfig {
    fn budget_mut(&mut self) -> &mut crate::budget::BudgetConfig {
        &mut self.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_field_is_named() {
        let p = PercentileDelay::default();
        let cases = [
            (HedgeDelay::Fixed(Duration::from_secs(7200)), "delay.fixed"),
            (
                HedgeDelay::Percentile(PercentileDelay {
                    percentile: 30.0,
                    ..p.clone()
                }),
                "delay.percentile.percentile",
            ),
            (
                HedgeDelay::Percentile(PercentileDelay {
                    ceiling: Duration::from_millis(1),
                    ..p.clone()
                }),
                "delay.percentile.ceiling",
            ),
            (
                HedgeDelay::Percentile(PercentileDelay {
                    min_samples: 0,
                    ..p.clone()
                }),
                "delay.percentile.min_samples",
            ),
            (
                HedgeDelay::Percentile(PercentileDelay {
                    window: Duration::from_secs(1),
                    ..p.clone()
                }),
                "delay.percentile.window",
            ),
        ];
        for (delay, field) in cases {
            let cfg = HedgeConfig {
                delay,
                ..Default::default()
            };
            assert_eq!(cfg.validate().unwrap_err().field, field, "{cfg:?}");
        }
        HedgeConfig::default().validate().unwrap();
    }

    #[test]
    fn json_shapes() {
        let cfg = HedgeConfig {
            delay: HedgeDelay::Fixed(Duration::from_millis(50)),
            ..Default::default()
        };
        let v = serde_json::to_value(&cfg).unwrap();
        assert_eq!(v["delay"]["fixed"], "50ms");
        let back: HedgeConfig = serde_json::from_value(v).unwrap();
        assert_eq!(back, cfg);
        let v = serde_json::to_value(HedgeConfig::default()).unwrap();
        assert_eq!(v["delay"]["percentile"]["floor"], "10ms");
    }
}
