//! The restart policy, pure: given the restart history, the policy, the time and a random
//! number, whether a failing component is restarted now, later, or not at all (crash loop).
//! No clock, no runtime, no lock: the monitor passes `now` and `rand` in, and tests do too.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RestartPolicy;

/// One component's restart history.
#[derive(Debug, Default)]
pub(crate) struct Restarts {
    /// When each restart within the crash-loop window happened, oldest first.
    times: VecDeque<Instant>,
    /// The wait required after the last restart before another.
    pub backoff: Duration,
    /// The last automatic restart (cleared once the component stays healthy long enough).
    pub last: Option<Instant>,
    /// Crash-loop protection is on: no automatic restart until an operator resets it.
    pub crash_loop: bool,
    /// Restarts so far (automatic and an operator's).
    pub count: u64,
}

/// What to do about a failing component now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Its backoff is not over: ask again at this instant.
    WaitUntil(Instant),
    /// Too many restarts within the window: crash-loop protection turned on just now.
    CrashLoop {
        /// Restarts within the window.
        restarts: usize,
    },
    /// Crash-loop protection is already on: do nothing.
    Braked,
    /// Restart it now: the `attempt`-th restart, with `backoff` before the next one.
    Restart {
        /// The restart count, this one included.
        attempt: u64,
        /// The wait before another restart is allowed.
        backoff: Duration,
    },
}

impl Restarts {
    /// Decides about a failing component at `now`; on `Restart` the restart is recorded.
    /// `rand` in `[0, 1)` spreads the backoff by the policy's jitter.
    pub fn decide(&mut self, policy: &RestartPolicy, now: Instant, rand: f64) -> Decision {
        if self.crash_loop {
            return Decision::Braked;
        }
        if let Some(last) = self.last {
            let allowed = last + self.backoff;
            if now < allowed {
                return Decision::WaitUntil(allowed);
            }
        }
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.window)
        {
            self.times.pop_front();
        }
        if self.times.len() >= policy.max_restarts as usize {
            self.crash_loop = true;
            return Decision::CrashLoop {
                restarts: self.times.len(),
            };
        }
        let base = if self.last.is_none() {
            policy.initial_backoff
        } else {
            self.backoff.mul_f64(policy.factor).min(policy.max_backoff)
        };
        let spread = base.mul_f64(policy.jitter * rand.clamp(0.0, 1.0));
        self.backoff = base.saturating_add(spread).min(policy.max_backoff);
        self.last = Some(now);
        self.times.push_back(now);
        self.count += 1;
        Decision::Restart {
            attempt: self.count,
            backoff: self.backoff,
        }
    }

    /// The component has been healthy since `healthy_since`: after `reset_after` of that, the
    /// backoff starts over.
    pub fn healthy(&mut self, policy: &RestartPolicy, healthy_since: Instant, now: Instant) {
        if self.last.is_some() && now.duration_since(healthy_since) >= policy.reset_after {
            self.last = None;
            self.backoff = Duration::ZERO;
        }
    }

    /// An operator's reset: out of crash-loop protection, history and backoff start over.
    /// Returns whether protection was on.
    pub fn reset(&mut self) -> bool {
        let was = self.crash_loop;
        self.crash_loop = false;
        self.times.clear();
        self.last = None;
        self.backoff = Duration::ZERO;
        was
    }
}

/// `interval` spread by `± jitter` (a fraction) using `rand` in `[0, 1)`; at least 1 ms.
pub(crate) fn jittered(interval: Duration, jitter: f64, rand: f64) -> Duration {
    let factor = 1.0 + jitter.clamp(0.0, 1.0) * (2.0 * rand - 1.0);
    Duration::try_from_secs_f64(interval.as_secs_f64() * factor)
        .unwrap_or(interval)
        .max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            initial_backoff: Duration::from_secs(1),
            factor: 2.0,
            max_backoff: Duration::from_secs(8),
            jitter: 0.0,
            max_restarts: 3,
            window: Duration::from_secs(60),
            reset_after: Duration::from_secs(30),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_then_the_crash_loop_brakes() {
        let (p, t0) = (policy(), Instant::now());
        let mut r = Restarts::default();
        assert_eq!(
            r.decide(&p, t0, 0.5),
            Decision::Restart {
                attempt: 1,
                backoff: secs(1)
            }
        );
        // Within the backoff: wait until it is over.
        assert_eq!(r.decide(&p, t0, 0.5), Decision::WaitUntil(t0 + secs(1)));
        assert_eq!(
            r.decide(&p, t0 + secs(1), 0.5),
            Decision::Restart {
                attempt: 2,
                backoff: secs(2)
            }
        );
        assert_eq!(
            r.decide(&p, t0 + secs(3), 0.5),
            Decision::Restart {
                attempt: 3,
                backoff: secs(4)
            }
        );
        // A fourth within the 60 s window: crash loop, and then nothing until a reset.
        assert_eq!(
            r.decide(&p, t0 + secs(7), 0.5),
            Decision::CrashLoop { restarts: 3 }
        );
        assert_eq!(r.decide(&p, t0 + secs(100), 0.5), Decision::Braked);
        assert!(r.reset());
        assert_eq!(
            r.decide(&p, t0 + secs(100), 0.5),
            Decision::Restart {
                attempt: 4,
                backoff: secs(1)
            }
        );
    }

    #[test]
    fn restarts_older_than_the_window_do_not_count() {
        let (p, t0) = (policy(), Instant::now());
        let mut r = Restarts::default();
        for i in 0..3 {
            // One restart every 61 s: never three within 60 s.
            assert!(matches!(
                r.decide(&p, t0 + secs(61 * i), 0.0),
                Decision::Restart { .. }
            ));
        }
        assert!(matches!(
            r.decide(&p, t0 + secs(183), 0.0),
            Decision::Restart { .. }
        ));
        assert!(!r.crash_loop);
    }

    #[test]
    fn the_backoff_starts_over_after_a_stable_period_and_jitter_only_adds() {
        let (mut p, t0) = (policy(), Instant::now());
        let mut r = Restarts::default();
        r.decide(&p, t0, 0.0);
        r.decide(&p, t0 + secs(1), 0.0);
        assert_eq!(r.backoff, secs(2));
        r.healthy(&p, t0 + secs(2), t0 + secs(20)); // healthy for 18 s: not yet
        assert_eq!(r.backoff, secs(2));
        r.healthy(&p, t0 + secs(2), t0 + secs(32)); // 30 s: start over
        assert_eq!((r.backoff, r.last), (Duration::ZERO, None));
        p.jitter = 0.5;
        let mut j = Restarts::default();
        let Decision::Restart { backoff, .. } = j.decide(&p, t0, 0.999) else {
            panic!("a first restart is never delayed");
        };
        assert!(
            backoff >= secs(1) && backoff <= Duration::from_millis(1500),
            "{backoff:?}"
        );
    }

    #[test]
    fn jitter_spreads_both_ways_and_never_panics() {
        let i = Duration::from_secs(10);
        assert_eq!(jittered(i, 0.1, 0.0), Duration::from_secs(9));
        assert_eq!(jittered(i, 0.1, 0.5), i);
        assert!(jittered(i, 0.1, 0.999_999) <= Duration::from_secs(11));
        assert_eq!(jittered(i, 1.0, 0.0), Duration::from_millis(1));
        assert_eq!(jittered(i, 0.0, 0.3), i);
    }
}
