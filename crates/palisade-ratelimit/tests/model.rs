//! The local limiters against a model: a bucket of "debt" (how far ahead of now the bucket's
//! schedule runs) that drains with time, and that a quota change rescales to the same fraction
//! of the new burst. Random interleavings of time, requests and quota changes must give the
//! same verdicts, waits and remaining counts, and never admit more than the unused share of the
//! burst plus `elapsed / interval` cells.
//!
//! Then the carry-over's promises, from what the limiter itself reports: after a raise a
//! client waits no longer than before it (and not at all when the new burst has a cell left at
//! its used fraction); after a lowering it gets at most the unused share of the new burst, in
//! any window.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use palisade_core::ManualClock;
use palisade_ratelimit::{KeyedRateLimiter, Quota, RateLimitError, RateLimiter};
use proptest::prelude::*;

const KEYS: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Request { key: usize, n: u32 },
    SetQuota { rate: u32, burst: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..1_500).prop_map(Op::Advance),
        6 => (0..KEYS, 0u32..7).prop_map(|(key, n)| Op::Request { key, n }),
        1 => (1u32..20, 1u32..10).prop_map(|(rate, burst)| Op::SetQuota { rate, burst }),
    ]
}

struct Model {
    interval: u64,
    burst: u32,
    debt: [u64; KEYS],
}

impl Model {
    fn new(rate: u32, burst: u32) -> Self {
        Model {
            interval: 1_000_000_000 / u64::from(rate),
            burst,
            debt: [0; KEYS],
        }
    }

    fn cap(&self) -> u64 {
        self.interval * u64::from(self.burst)
    }

    /// (allowed, retry_after_ns, remaining)
    fn request(&mut self, key: usize, n: u32) -> Option<(bool, u64, u32)> {
        let cap = self.cap();
        let cost = self.interval * u64::from(n);
        if cost > cap {
            return None;
        }
        let debt = &mut self.debt[key];
        if *debt + cost <= cap {
            *debt += cost;
            let remaining = (cap - *debt) / self.interval;
            Some((true, 0, remaining as u32))
        } else {
            let remaining = (cap - (*debt).min(cap)) / self.interval;
            Some((false, *debt + cost - cap, remaining as u32))
        }
    }

    /// The new quota; every debt becomes the same fraction of the new tolerance, rounded up.
    fn set_quota(&mut self, rate: u32, burst: u32) {
        let old_cap = self.cap();
        self.interval = 1_000_000_000 / u64::from(rate);
        self.burst = burst;
        let new_cap = self.cap();
        for debt in &mut self.debt {
            let used = u128::from((*debt).min(old_cap));
            *debt =
                u64::try_from((used * u128::from(new_cap)).div_ceil(u128::from(old_cap))).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn direct_and_keyed_limiters_match_the_model(ops in prop::collection::vec(op(), 1..150)) {
        let clock = ManualClock::new();
        let direct = RateLimiter::builder("model")
            .quota(Quota::per_second(5).with_burst(3))
            .clock(clock.shared())
            .build()
            .unwrap();
        let keyed = KeyedRateLimiter::<String>::builder("model-keyed")
            .quota(Quota::per_second(5).with_burst(3))
            // Room for every key in any shard: no key is evicted (that would forgive its debt).
            .max_keys(64 * 64)
            .clock(clock.shared())
            .build()
            .unwrap();
        let mut model = Model::new(5, 3);
        // Per key: cells admitted (in ns of the interval) since the last quota change, and what
        // may be admitted: the unused share of the burst at the change, plus the time since.
        let mut admitted = [0u64; KEYS];
        let mut budget = [model.cap(); KEYS];
        for op in ops {
            match op {
                Op::Advance(ms) => {
                    clock.advance(Duration::from_millis(ms));
                    for (debt, budget) in model.debt.iter_mut().zip(&mut budget) {
                        *debt = debt.saturating_sub(ms * 1_000_000);
                        *budget += ms * 1_000_000;
                    }
                }
                Op::SetQuota { rate, burst } => {
                    let q = Quota::per_second(rate).with_burst(burst);
                    direct.set_quota(q).unwrap();
                    keyed.set_quota(q).unwrap();
                    model.set_quota(rate, burst);
                    // A new quota is a new contract: the admission bound restarts from the
                    // unused share of the new burst (never more than the new burst).
                    for key in 0..KEYS {
                        prop_assert!(model.debt[key] <= model.cap());
                        admitted[key] = 0;
                        budget[key] = model.cap() - model.debt[key];
                    }
                }
                Op::Request { key, n } => {
                    let want = model.request(key, n);
                    let got_keyed = keyed.decide_key(format!("k{key}").as_str(), n);
                    // The one-bucket limiter follows key 0.
                    let got = if key == 0 { direct.decide(n) } else { got_keyed.clone() };
                    match (want, got, got_keyed) {
                        (None, Err(RateLimitError::InsufficientCapacity { .. }),
                               Err(RateLimitError::InsufficientCapacity { .. })) => {}
                        (Some((allowed, retry, remaining)), Ok(d), Ok(k)) => {
                            prop_assert_eq!(d.allowed, allowed);
                            prop_assert_eq!(d.retry_after, Duration::from_nanos(retry));
                            prop_assert_eq!(d.remaining, remaining);
                            prop_assert_eq!(d, k);
                            if allowed {
                                admitted[key] += u64::from(n) * model.interval;
                            }
                        }
                        (want, got, got_keyed) => prop_assert!(false,
                            "model {:?}, direct {:?}, keyed {:?}", want, got, got_keyed),
                    }
                    prop_assert!(admitted[key] <= budget[key],
                        "key {}: admitted {} ns of cells with a budget of {}",
                        key, admitted[key], budget[key]);
                }
            }
        }
    }
}

/// A quota of `rate` per second with `burst`.
fn quota(rate: u32, burst: u32) -> Quota {
    Quota::per_second(rate).with_burst(burst)
}

/// Emission interval and tolerance of a quota, in ns.
fn gcra(q: Quota) -> (u64, u64) {
    let t = u64::try_from(q.emission_interval().as_nanos()).unwrap();
    (t, t * u64::from(q.burst()))
}

/// A limiter on `clock` used by `uses` (cells, then ms of time), as a client would.
fn used(q: Quota, uses: &[(u32, u64)], clock: &ManualClock) -> RateLimiter {
    let l = RateLimiter::builder("carry-model")
        .quota(q)
        .clock(clock.shared())
        .build()
        .unwrap();
    for &(n, ms) in uses {
        let _ = l.check_n(n.min(q.burst()));
        clock.advance(Duration::from_millis(ms));
    }
    l
}

fn uses() -> impl Strategy<Value = Vec<(u32, u64)>> {
    prop::collection::vec((0u32..40, 0u64..400), 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// After a raise (rate and burst no lower), the next request waits no longer than it would
    /// have, and is admitted at once when the used fraction leaves a cell of the new burst.
    #[test]
    fn a_raise_never_makes_a_client_wait_longer(
        (rate, burst) in (1u32..200, 1u32..40),
        (more_rate, more_burst) in (0u32..10_000, 0u32..10_000),
        uses in uses(),
    ) {
        let clock = ManualClock::new();
        let old = quota(rate, burst);
        let l = used(old, &uses, &clock);
        let (t_old, tol_old) = gcra(old);
        // What the limiter reports: the time until its bucket is full is the used tolerance.
        let used_ns = u64::try_from(l.decide(0).unwrap().reset_after.as_nanos()).unwrap();
        let wait_before = (used_ns + t_old).saturating_sub(tol_old);

        let new = quota(rate + more_rate, burst + more_burst);
        let (t_new, tol_new) = gcra(new);
        l.set_quota(new).unwrap();
        let d = l.decide(1).unwrap();
        prop_assert!(d.retry_after <= Duration::from_nanos(wait_before) + Duration::from_nanos(1),
            "waits {:?} after the raise, {} ns before", d.retry_after, wait_before);
        // Used fraction f = used / tol_old; a cell is left when f × tol_new + t_new ≤ tol_new.
        let carried = (u128::from(used_ns) * u128::from(tol_new)).div_ceil(u128::from(tol_old));
        let cell_left = carried + u128::from(t_new) <= u128::from(tol_new);
        prop_assert_eq!(d.allowed, cell_left, "used {} of {} ns", used_ns, tol_old);
        if used_ns + t_old <= tol_old {
            // A client that was not limited is not limited after a raise.
            prop_assert!(d.allowed);
        }
    }

    /// After a lowering (rate and burst no higher), a client gets at most the unused share of
    /// the new burst at once, and in any window after, at most that plus the new rate's cells.
    #[test]
    fn a_lowering_never_gives_more_than_the_new_burst(
        (rate, burst) in (2u32..200, 2u32..40),
        (rate_div, burst_div) in (1u32..20, 1u32..20),
        uses in uses(),
        windows in prop::collection::vec(0u64..3_000, 1..6),
    ) {
        let clock = ManualClock::new();
        let old = quota(rate, burst);
        let l = used(old, &uses, &clock);
        let (_, tol_old) = gcra(old);
        let used_ns = u64::try_from(l.decide(0).unwrap().reset_after.as_nanos()).unwrap();

        let new = quota((rate / rate_div).max(1), (burst / burst_div).max(1));
        let (t_new, tol_new) = gcra(new);
        l.set_quota(new).unwrap();
        let carried = u64::try_from(
            (u128::from(used_ns) * u128::from(tol_new)).div_ceil(u128::from(tol_old)),
        ).unwrap();
        let share = (tol_new - carried) / t_new;
        let mut admitted = 0u64;
        while l.check().is_ok() {
            admitted += 1;
            prop_assert!(admitted <= u64::from(new.burst()));
        }
        prop_assert_eq!(admitted, share);
        let mut elapsed = 0;
        for ms in windows {
            clock.advance(Duration::from_millis(ms));
            elapsed += ms * 1_000_000;
            while l.check().is_ok() {
                admitted += 1;
            }
            prop_assert!(admitted * t_new <= tol_new - carried + elapsed,
                "{} admitted in {} ns after the change", admitted, elapsed);
        }
    }
}
