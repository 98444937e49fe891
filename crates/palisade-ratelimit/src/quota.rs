//! Quotas and the GCRA arithmetic shared by every limiter (local, keyed and Redis).
//!
//! GCRA (the generic cell rate algorithm, as in governor and redis-cell) keeps one number per
//! bucket: the *theoretical arrival time* (TAT). A quota of `rate` requests per `period` with a
//! `burst` gives an emission interval `T = period / rate` and a tolerance `τ = burst × T`. A
//! request for `n` cells at time `now` is allowed when `max(TAT, now) + n·T − now ≤ τ`, and then
//! `TAT` becomes `max(TAT, now) + n·T`. A denial changes nothing.
//!
//! A quota change carries each bucket's *used fraction of the burst* over: at `now`, a bucket
//! has used `clamp((TAT − now) / τ, 0, 1)` of its burst, and under a new tolerance `τ'` its TAT
//! becomes `now + fraction × τ'` ([`Gcra::carry`]). So raising a quota helps a limited client
//! at once (its debt is not measured in the old quota's time), and lowering one leaves a client
//! the unused share of the new burst, never more than the new burst.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::config::{ConfigError, check_duration, check_range, duration};
use serde::{Deserialize, Serialize};

/// Largest accepted `rate` and `burst`.
pub const MAX_RATE: u32 = 1_000_000_000;
/// Longest accepted `period`.
pub const MAX_PERIOD: Duration = Duration::from_secs(7 * 24 * 3600);

/// How many requests a limiter admits: `rate` per `period`, with bursts of up to `burst`.
///
/// ```
/// use std::time::Duration;
/// use palisade_ratelimit::Quota;
///
/// let q = Quota::per_minute(60).with_burst(10);
/// assert_eq!(q.emission_interval(), Duration::from_secs(1));
/// q.validate().unwrap();
///
/// // From JSON or TOML config, `burst` defaults to `rate`.
/// let q: Quota = serde_json::from_str(r#"{"rate": 100, "period": "1m"}"#).unwrap();
/// assert_eq!(q.burst(), 100);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Requests admitted per `period` in the long run (1 to 10⁹).
    pub rate: u32,
    /// The period `rate` is measured over, as `"1s"`, `"1m"` or milliseconds. Default 1 s.
    #[serde(with = "duration", default = "one_second")]
    pub period: Duration,
    /// Requests admitted at once from a full bucket (1 to 10⁹). Default: `rate`.
    #[serde(default)]
    pub burst: Option<u32>,
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

impl Default for Quota {
    /// 100 requests per minute, bursts of 100.
    fn default() -> Self {
        Quota::per_minute(100)
    }
}

impl Quota {
    /// `rate` requests per second, bursts of `rate`.
    pub const fn per_second(rate: u32) -> Self {
        Quota::new(rate, Duration::from_secs(1))
    }

    /// `rate` requests per minute, bursts of `rate`.
    pub const fn per_minute(rate: u32) -> Self {
        Quota::new(rate, Duration::from_secs(60))
    }

    /// `rate` requests per `period`, bursts of `rate`.
    pub const fn new(rate: u32, period: Duration) -> Self {
        Quota {
            rate,
            period,
            burst: None,
        }
    }

    /// The same quota with bursts of `burst`.
    pub const fn with_burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Requests admitted at once from a full bucket.
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.rate)
    }

    /// The time one request "costs": `period / rate`.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.gcra().interval)
    }

    /// Checks every field; the error names the offending one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("rate", self.rate, 1, MAX_RATE)?;
        check_range("burst", self.burst(), 1, MAX_RATE)?;
        check_duration("period", self.period, Duration::from_millis(1), MAX_PERIOD)?;
        if self.period.as_nanos() < u128::from(self.rate) {
            return Err(ConfigError::new(
                "rate",
                format!(
                    "{} requests per {:?} is more than one per nanosecond",
                    self.rate, self.period
                ),
            ));
        }
        Ok(())
    }

    /// This quota split between `instances` (for a local fallback): rate and burst divided,
    /// at least 1 each.
    pub fn share(&self, instances: u32) -> Quota {
        let instances = instances.max(1);
        Quota {
            rate: (self.rate / instances).max(1),
            period: self.period,
            burst: Some((self.burst() / instances).max(1)),
        }
    }

    pub(crate) fn gcra(&self) -> Gcra {
        let interval = u64::try_from(self.period.as_nanos() / u128::from(self.rate.max(1)))
            .unwrap_or(u64::MAX)
            .max(1);
        Gcra {
            interval,
            tolerance: interval.saturating_mul(u64::from(self.burst())),
        }
    }
}

/// The outcome of one decision, with the fields of redis-cell's `CL.THROTTLE`; enough to fill
/// `RateLimit-*` and `Retry-After` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Whether the request was admitted.
    pub allowed: bool,
    /// The burst size (requests admitted at once from a full bucket).
    pub limit: u32,
    /// Requests that would still be admitted right now.
    pub remaining: u32,
    /// When denied, how long until the same request would be admitted; zero when allowed.
    #[serde(serialize_with = "ser_ms")]
    pub retry_after: Duration,
    /// How long until the bucket is full again (all of `limit` available).
    #[serde(serialize_with = "ser_ms")]
    pub reset_after: Duration,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// GCRA parameters in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// Emission interval `T`.
    pub interval: u64,
    /// Tolerance `τ = burst × T`.
    pub tolerance: u64,
}

/// What [`Gcra::decide`] concluded: the new TAT to store, or how long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Admit, and store this TAT.
    Allow(u64),
    /// Refuse; admissible after this many nanoseconds.
    Deny(u64),
}

impl Gcra {
    /// The burst size, rounded down.
    pub fn burst(&self) -> u32 {
        u32::try_from(self.tolerance / self.interval).unwrap_or(u32::MAX)
    }

    /// The verdict for `n` cells at `now`, given the stored `tat` (0 for a full bucket).
    #[inline]
    pub fn decide(&self, tat: u64, now: u64, n: u32) -> Verdict {
        let base = tat.max(now);
        let new_tat = base.saturating_add(self.interval.saturating_mul(u64::from(n)));
        let diff = new_tat - now;
        if diff <= self.tolerance {
            Verdict::Allow(new_tat)
        } else {
            Verdict::Deny(diff - self.tolerance)
        }
    }

    /// The TAT that gives a bucket, at `now`, the same used fraction of this tolerance as
    /// `tat` gave it of `old`'s: `now + clamp((tat − now) / τ_old, 0, 1) × τ`, rounded up to
    /// the nanosecond (rounding never frees a cell). An idle bucket (`tat ≤ now`) stays as it is.
    pub fn carry(&self, old: Gcra, tat: u64, now: u64) -> u64 {
        if tat <= now || old.tolerance == self.tolerance {
            return tat;
        }
        let used = u128::from((tat - now).min(old.tolerance));
        let carried =
            (used * u128::from(self.tolerance)).div_ceil(u128::from(old.tolerance.max(1)));
        now.saturating_add(u64::try_from(carried).unwrap_or(u64::MAX))
    }

    /// The full decision for a verdict reached from `tat` at `now`.
    pub fn decision(&self, tat: u64, now: u64, verdict: Verdict) -> Decision {
        let (allowed, after, retry_after) = match verdict {
            Verdict::Allow(new_tat) => (true, new_tat, 0),
            Verdict::Deny(wait) => (false, tat.max(now), wait),
        };
        let used = after.saturating_sub(now);
        let remaining = self.tolerance.saturating_sub(used) / self.interval;
        Decision {
            allowed,
            limit: self.burst(),
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            retry_after: Duration::from_nanos(retry_after),
            reset_after: Duration::from_nanos(used),
        }
    }
}

/// Decides on `n` cells of the bucket in `tat_cell` and stores an admission (one CAS loop).
/// Returns the parameters and the TAT the verdict was reached from, `now`, and the verdict.
///
/// `gcra` is read again on every attempt: a CAS that fails because a quota change rescaled the
/// bucket retries under the new quota.
#[inline]
pub(crate) fn admit(
    tat_cell: &AtomicU64,
    gcra: impl Fn() -> Gcra,
    now: u64,
    n: u32,
) -> (Gcra, u64, u64, Verdict) {
    let mut tat = tat_cell.load(Ordering::Acquire);
    loop {
        let g = gcra();
        let verdict = g.decide(tat, now, n);
        match verdict {
            Verdict::Allow(new) if n > 0 => {
                match tat_cell.compare_exchange_weak(tat, new, Ordering::Relaxed, Ordering::Acquire)
                {
                    Ok(_) => return (g, tat, now, verdict),
                    Err(actual) => tat = actual,
                }
            }
            _ => return (g, tat, now, verdict),
        }
    }
}

/// Rescales the bucket in `tat_cell` from `old` to `new` parameters ([`Gcra::carry`]), unless
/// a decision changes it meanwhile (then again, from what that decision stored).
pub(crate) fn carry_cell(tat_cell: &AtomicU64, old: Gcra, new: Gcra, now: u64) {
    let _ = tat_cell.fetch_update(Ordering::Release, Ordering::Acquire, |tat| {
        let carried = new.carry(old, tat, now);
        (carried != tat).then_some(carried)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_one_per_interval() {
        let g = Quota::per_second(1).with_burst(3).gcra();
        let s = 1_000_000_000;
        let mut tat = 0;
        for i in 0..3 {
            match g.decide(tat, 10 * s, 1) {
                Verdict::Allow(t) => {
                    assert_eq!(g.decision(tat, 10 * s, Verdict::Allow(t)).remaining, 2 - i);
                    tat = t;
                }
                Verdict::Deny(_) => panic!("request {i} of the burst was refused"),
            }
        }
        assert_eq!(g.decide(tat, 10 * s, 1), Verdict::Deny(s));
        assert!(matches!(g.decide(tat, 11 * s, 1), Verdict::Allow(_)));
        assert_eq!(g.decide(0, 0, 4), Verdict::Deny(s));
    }

    #[test]
    fn carry_keeps_the_used_fraction_rounded_up() {
        let s = 1_000_000_000;
        let old = Quota::per_second(1).with_burst(10).gcra(); // τ = 10 s
        let new = Quota::per_second(1).with_burst(4).gcra(); // τ = 4 s
        // 2.5 s of 10 s used: a quarter, so 1 s of 4 s.
        assert_eq!(new.carry(old, 100 * s + 5 * s / 2, 100 * s), 101 * s);
        // Rounded up: a third of 10 s is 3.333… s, a third of 4 s is 1.333… s.
        assert_eq!(new.carry(old, 10 * s / 3, 0), 4 * s / 3 + 1);
        // Idle buckets stay idle; a full one stays full; more than full is full.
        assert_eq!(new.carry(old, 5 * s, 7 * s), 5 * s);
        assert_eq!(new.carry(old, 10 * s, 0), 4 * s);
        assert_eq!(new.carry(old, 30 * s, 0), 4 * s);
        // The same tolerance (rate and burst changed in proportion): the same fraction.
        let same = Quota::per_second(2).with_burst(20).gcra();
        assert_eq!(same.carry(old, 3 * s, 0), 3 * s);
        // And back: a raise then the same lowering ends where it started, give or take a ns.
        let up = Quota::per_second(1_000).with_burst(1_000_000).gcra();
        let there = up.carry(old, 7 * s, 0);
        assert!(old.carry(up, there, 0) - 7 * s <= 1);
    }

    #[test]
    fn invalid_quotas_name_the_field() {
        assert_eq!(Quota::per_second(0).validate().unwrap_err().field, "rate");
        assert_eq!(
            Quota::per_second(5)
                .with_burst(0)
                .validate()
                .unwrap_err()
                .field,
            "burst"
        );
        assert_eq!(
            Quota::new(5, Duration::ZERO).validate().unwrap_err().field,
            "period"
        );
        let err: Result<Quota, _> = serde_json::from_str(r#"{"rate": 5, "perid": "1s"}"#);
        assert!(err.unwrap_err().to_string().contains("perid"));
    }

    #[test]
    fn share_divides_rate_and_burst() {
        let q = Quota::per_second(100).with_burst(40).share(4);
        assert_eq!((q.rate, q.burst()), (25, 10));
        assert_eq!(Quota::per_second(2).share(8).burst(), 1);
    }
}
