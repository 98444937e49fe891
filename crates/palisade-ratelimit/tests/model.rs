//! The local limiters against a model: a bucket of "debt" (how far ahead of now the bucket's
//! schedule runs) that drains with time. Random interleavings of time, requests and quota
//! changes must give the same verdicts, waits and remaining counts, and never admit more than
//! `burst + elapsed / interval` cells.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use palisade_core::ManualClock;
use palisade_ratelimit::{KeyedRateLimiter, Quota, RateLimitError, RateLimiter};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Request(u32),
    SetQuota { rate: u32, burst: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..1_500).prop_map(Op::Advance),
        6 => (0u32..7).prop_map(Op::Request),
        1 => (1u32..20, 1u32..10).prop_map(|(rate, burst)| Op::SetQuota { rate, burst }),
    ]
}

struct Model {
    interval: u64,
    burst: u32,
    debt: u64,
}

impl Model {
    fn new(rate: u32, burst: u32) -> Self {
        Model {
            interval: 1_000_000_000 / u64::from(rate),
            burst,
            debt: 0,
        }
    }

    /// (allowed, retry_after_ns, remaining)
    fn request(&mut self, n: u32) -> Option<(bool, u64, u32)> {
        let cap = self.interval * u64::from(self.burst);
        let cost = self.interval * u64::from(n);
        if cost > cap {
            return None;
        }
        if self.debt + cost <= cap {
            self.debt += cost;
            let remaining = (cap - self.debt) / self.interval;
            Some((true, 0, remaining as u32))
        } else {
            let remaining = (cap - self.debt.min(cap)) / self.interval;
            Some((false, self.debt + cost - cap, remaining as u32))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn direct_and_keyed_limiters_match_the_model(ops in prop::collection::vec(op(), 1..120)) {
        let clock = ManualClock::new();
        let direct = RateLimiter::builder("model")
            .quota(Quota::per_second(5).with_burst(3))
            .clock(clock.shared())
            .build()
            .unwrap();
        let keyed = KeyedRateLimiter::<String>::builder("model-keyed")
            .quota(Quota::per_second(5).with_burst(3))
            .max_keys(64)
            .clock(clock.shared())
            .build()
            .unwrap();
        let mut model = Model::new(5, 3);
        let mut admitted_cells = 0u64;
        let mut budget = 3u64 * model.interval; // burst + elapsed, in nanoseconds of cells
        for op in ops {
            match op {
                Op::Advance(ms) => {
                    clock.advance(Duration::from_millis(ms));
                    model.debt = model.debt.saturating_sub(ms * 1_000_000);
                    budget += ms * 1_000_000;
                }
                Op::SetQuota { rate, burst } => {
                    let q = Quota::per_second(rate).with_burst(burst);
                    direct.set_quota(q).unwrap();
                    keyed.set_quota(q).unwrap();
                    model.interval = 1_000_000_000 / u64::from(rate);
                    model.burst = burst;
                    // A new quota is a new contract: the admission bound restarts from it.
                    admitted_cells = 0;
                    budget = u64::from(burst) * model.interval + model.interval;
                }
                Op::Request(n) => {
                    let want = model.request(n);
                    let got = direct.decide(n);
                    let got_keyed = keyed.decide_key("k", n);
                    match (want, got, got_keyed) {
                        (None, Err(RateLimitError::InsufficientCapacity { .. }),
                               Err(RateLimitError::InsufficientCapacity { .. })) => {}
                        (Some((allowed, retry, remaining)), Ok(d), Ok(k)) => {
                            prop_assert_eq!(d.allowed, allowed);
                            prop_assert_eq!(d.retry_after, Duration::from_nanos(retry));
                            prop_assert_eq!(d.remaining, remaining);
                            prop_assert_eq!(d, k);
                            if allowed {
                                admitted_cells += u64::from(n) * model.interval;
                            }
                        }
                        (want, got, got_keyed) => prop_assert!(false,
                            "model {:?}, direct {:?}, keyed {:?}", want, got, got_keyed),
                    }
                    prop_assert!(admitted_cells <= budget,
                        "admitted {} ns of cells with a budget of {}", admitted_cells, budget);
                }
            }
        }
    }
}
