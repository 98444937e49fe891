//! The budget's accounting, pure: no clock, no atomics, no allocation. The caller passes the
//! time (nanoseconds on any monotonic scale) and the calls seen since it last asked.
//!
//! Tokens are earned and kept in [`BUCKETS`] buckets spanning the window:
//!
//! - every bucket starts with the floor's share, `min_retries_per_second × window / BUCKETS`
//!   (a new ledger starts with every bucket full: the whole reserve is there at once);
//! - every call earns `ratio` tokens, in the newest bucket;
//! - a retry spends one token, from the **oldest** buckets first;
//! - a bucket older than the window is dropped with whatever it still holds.
//!
//! Each token is spent at most once and lives at most one window (plus a bucket) after it was
//! earned or first seen, so over any run of `T` from a fresh ledger the retries granted are at
//! most `min_retries_per_second × (window + T + window / BUCKETS) + ratio × calls`. Finagle's
//! budget (and tower's `TpsBudget`) keep the reserve constant and subtract the window's
//! withdrawals instead; over a long storm both grant the floor's rate plus `ratio` of the
//! traffic, but this form makes that bound exact.
//!
//! Calls are counted by the caller without a clock read (the first attempt's path stays a
//! counter increment) and handed over here at the next retry or snapshot. Calls that waited
//! longer than a window to be handed over are of unknown age: only the share a steady rate
//! would have put in the last window is credited.

use super::config::BudgetConfig;

/// Buckets per window.
pub(crate) const BUCKETS: u64 = 10;
/// Micro-tokens per token: one retry costs `MICRO`.
pub(crate) const MICRO: u64 = 1_000_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slot {
    epoch: u64,
    micro: u64,
}

/// Tokens earned over the last window, spent oldest first. See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Ledger {
    /// Bucket width in nanoseconds (at least 1).
    width: u64,
    /// Micro-tokens earned per call.
    per_call: u64,
    /// Micro-tokens every bucket starts with.
    per_bucket: u64,
    slots: [Slot; BUCKETS as usize],
    /// The newest bucket's epoch: `now / width + BUCKETS`, so that the oldest live epoch
    /// (`epoch - BUCKETS + 1`) never underflows.
    epoch: u64,
    /// When calls were last handed over.
    seen_at: u64,
}

/// Micro-tokens per call and per bucket, and the bucket width, for `config`.
fn rates(config: &BudgetConfig) -> (u64, u64, u64) {
    let width = u64::try_from(config.window.as_nanos() / u128::from(BUCKETS))
        .unwrap_or(u64::MAX)
        .max(1);
    // A hair over the exact product, then truncated: 0.3 × 10⁶ is 299 999.99… in binary.
    let per_call = (config.ratio * MICRO as f64 + 1e-6).floor() as u64;
    let per_second = config.min_retries_per_second * MICRO as f64;
    let per_bucket = (per_second * config.window.as_secs_f64() / BUCKETS as f64 + 1e-6).floor();
    (width, per_call, per_bucket as u64)
}

impl Ledger {
    /// A ledger at `now` with the whole reserve available.
    pub(crate) fn new(config: &BudgetConfig, now: u64) -> Ledger {
        let (width, per_call, per_bucket) = rates(config);
        let epoch = now / width + BUCKETS;
        let mut slots = [Slot::default(); BUCKETS as usize];
        for e in epoch + 1 - BUCKETS..=epoch {
            slots[(e % BUCKETS) as usize] = Slot {
                epoch: e,
                micro: per_bucket,
            };
        }
        Ledger {
            width,
            per_call,
            per_bucket,
            slots,
            epoch,
            seen_at: now,
        }
    }

    /// Applies a new config. Same window: the rates change for tokens earned from now on.
    /// Another window: the buckets start over, and the tokens held now are carried into the
    /// newest one (nothing is created; they expire one new window from now).
    pub(crate) fn reconfigure(&mut self, config: &BudgetConfig, now: u64) {
        self.settle(now, 0);
        let (width, per_call, per_bucket) = rates(config);
        if width == self.width {
            self.per_call = per_call;
            self.per_bucket = per_bucket;
            return;
        }
        let held = self.balance();
        let epoch = now.max(self.seen_at) / width + BUCKETS;
        *self = Ledger {
            width,
            per_call,
            per_bucket,
            slots: [Slot::default(); BUCKETS as usize],
            epoch,
            seen_at: now.max(self.seen_at),
        };
        self.slots[(epoch % BUCKETS) as usize] = Slot { epoch, micro: held };
    }

    /// Moves the ledger to `now` (dropping buckets older than the window, opening new ones
    /// with the floor's share) and credits `calls` calls made since the last settle.
    pub(crate) fn settle(&mut self, now: u64, calls: u64) {
        // A clock that went backwards is taken as standing still.
        let now = now.max(self.seen_at);
        let elapsed = now - self.seen_at;
        let window = self.width.saturating_mul(BUCKETS);
        let credited = if elapsed > window {
            // Calls of unknown age: keep the share a steady rate puts in the last window.
            u64::try_from(u128::from(calls) * u128::from(window) / u128::from(elapsed))
                .unwrap_or(u64::MAX)
        } else {
            calls
        };
        self.seen_at = now;
        let epoch = now / self.width + BUCKETS;
        if epoch > self.epoch {
            let first = (self.epoch + 1).max(epoch + 1 - BUCKETS);
            for e in first..=epoch {
                self.slots[(e % BUCKETS) as usize] = Slot {
                    epoch: e,
                    micro: self.per_bucket,
                };
            }
            self.epoch = epoch;
        }
        let newest = &mut self.slots[(self.epoch % BUCKETS) as usize];
        newest.micro = newest
            .micro
            .saturating_add(credited.saturating_mul(self.per_call));
    }

    /// Micro-tokens available now (after [`settle`](Self::settle)).
    pub(crate) fn balance(&self) -> u64 {
        self.slots
            .iter()
            .fold(0u64, |sum, s| sum.saturating_add(s.micro))
    }

    /// Spends one token, oldest first; `false` (and nothing spent) if there is not a whole one.
    pub(crate) fn withdraw(&mut self) -> bool {
        if self.balance() < MICRO {
            return false;
        }
        let mut need = MICRO;
        for e in self.epoch + 1 - BUCKETS..=self.epoch {
            let slot = &mut self.slots[(e % BUCKETS) as usize];
            let take = slot.micro.min(need);
            slot.micro -= take;
            need -= take;
            if need == 0 {
                break;
            }
        }
        true
    }

    /// The floor's full reserve, in micro-tokens.
    pub(crate) fn reserve(&self) -> u64 {
        self.per_bucket.saturating_mul(BUCKETS)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn config(ratio: f64, floor: f64, window_secs: u64) -> BudgetConfig {
        BudgetConfig {
            ratio,
            min_retries_per_second: floor,
            window: Duration::from_secs(window_secs),
        }
    }

    fn tokens(l: &Ledger) -> f64 {
        l.balance() as f64 / MICRO as f64
    }

    #[test]
    fn a_new_ledger_holds_the_whole_reserve() {
        let l = Ledger::new(&config(0.2, 10.0, 10), 0);
        assert_eq!(tokens(&l), 100.0);
        assert_eq!(l.reserve(), 100 * MICRO);
    }

    #[test]
    fn calls_earn_ratio_tokens_and_retries_spend_one() {
        let mut l = Ledger::new(&config(0.5, 0.0, 10), 0);
        assert!(!l.withdraw(), "no floor, no calls: nothing to spend");
        l.settle(SEC, 3);
        assert_eq!(tokens(&l), 1.5);
        assert!(l.withdraw());
        assert_eq!(tokens(&l), 0.5);
        assert!(!l.withdraw(), "half a token is not a retry");
        assert_eq!(tokens(&l), 0.5, "a refused withdrawal spends nothing");
    }

    #[test]
    fn earned_tokens_expire_after_the_window() {
        let mut l = Ledger::new(&config(1.0, 0.0, 10), 0);
        l.settle(0, 4);
        l.settle(9 * SEC, 0);
        assert_eq!(tokens(&l), 4.0, "still inside the window");
        l.settle(10 * SEC, 0);
        assert_eq!(tokens(&l), 0.0, "the bucket of t=0 left the window");
    }

    #[test]
    fn the_oldest_tokens_are_spent_first() {
        let mut l = Ledger::new(&config(1.0, 0.0, 10), 0);
        l.settle(0, 1); // expires at 10 s
        l.settle(5 * SEC, 1); // expires at 15 s
        assert!(l.withdraw());
        l.settle(10 * SEC, 0);
        assert_eq!(
            tokens(&l),
            1.0,
            "the token that was about to expire was the one spent"
        );
    }

    #[test]
    fn the_floor_refills_bucket_by_bucket() {
        let mut l = Ledger::new(&config(0.0, 1.0, 10), 0);
        for _ in 0..10 {
            assert!(l.withdraw());
        }
        assert!(!l.withdraw());
        l.settle(SEC, 0);
        assert_eq!(tokens(&l), 1.0, "one bucket of one second at one a second");
        l.settle(60 * SEC, 0);
        assert_eq!(tokens(&l), 10.0, "never more than the reserve");
    }

    #[test]
    fn calls_handed_over_late_count_at_a_steady_rate() {
        let mut l = Ledger::new(&config(1.0, 0.0, 10), 0);
        // 600 calls over 60 s, seen only now: a steady rate puts 100 in the last 10 s.
        l.settle(60 * SEC, 600);
        assert_eq!(tokens(&l), 100.0);
    }

    #[test]
    fn a_clock_going_backwards_stands_still() {
        let mut l = Ledger::new(&config(1.0, 0.0, 10), 10 * SEC);
        l.settle(5 * SEC, 2);
        assert_eq!(tokens(&l), 2.0);
    }

    #[test]
    fn reconfiguring_keeps_tokens_and_creates_none() {
        let mut l = Ledger::new(&config(0.2, 1.0, 10), 0);
        for _ in 0..7 {
            assert!(l.withdraw());
        }
        // Same window: new rates from now on.
        l.reconfigure(&config(1.0, 1.0, 10), 0);
        assert_eq!(tokens(&l), 3.0);
        l.settle(0, 2);
        assert_eq!(tokens(&l), 5.0);
        // Another window: the 5 tokens are carried over, no new reserve appears.
        l.reconfigure(&config(1.0, 100.0, 20), 0);
        assert_eq!(tokens(&l), 5.0);
        l.settle(2 * SEC, 0);
        assert_eq!(tokens(&l), 205.0, "one new 2 s bucket at 100 a second");
    }

    #[test]
    fn fractional_ratios_are_not_rounded_down_by_binary_floats() {
        let mut l = Ledger::new(&config(0.3, 0.0, 10), 0);
        l.settle(0, 10);
        assert_eq!(tokens(&l), 3.0);
    }

    proptest! {
        /// Whatever the sequence of calls, retries and pauses: retries granted never exceed
        /// the reserve, the floor over the time elapsed (plus a bucket) and `ratio` × calls.
        #[test]
        fn grants_never_exceed_the_bound(
            ratio in 0.0f64..3.0,
            floor in 0.0f64..20.0,
            window in 1u64..30,
            steps in proptest::collection::vec((0u64..3_000, 0u64..20, 0u64..40), 1..200),
        ) {
            let cfg = config(ratio, floor, window);
            let start = 123_456_789;
            let mut l = Ledger::new(&cfg, start);
            let (mut now, mut calls, mut granted) = (start, 0u64, 0u64);
            for (advance_ms, new_calls, retries) in steps {
                now += advance_ms * 1_000_000;
                calls += new_calls;
                l.settle(now, new_calls);
                for _ in 0..retries {
                    if l.withdraw() {
                        granted += 1;
                    }
                }
            }
            let elapsed = (now - start) as f64 / SEC as f64;
            let window = window as f64;
            let bound = floor * (window + elapsed + window / BUCKETS as f64) + ratio * calls as f64;
            prop_assert!(granted as f64 <= bound + 1e-9, "granted {granted} > bound {bound}");
        }
    }
}
