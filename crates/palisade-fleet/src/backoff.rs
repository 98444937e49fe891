//! [`Backoff`]: the delays between retries of the background tasks while Redis is down, and
//! the log lines that go with them (one warning per outage, not one per attempt).

use std::time::Duration;

/// Doubling delays from `min` to `max`, and whether the current outage was already reported.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    failures: u32,
}

impl Backoff {
    /// Delays from `min`, doubling up to `max`.
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        Backoff {
            min,
            max,
            next: min,
            failures: 0,
        }
    }

    /// Records a failure; returns the delay before the next attempt and whether this is the
    /// first failure of an outage (to be logged as a warning; later ones at debug level).
    pub(crate) fn fail(&mut self) -> (Duration, bool) {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        self.failures = self.failures.saturating_add(1);
        (delay, self.failures == 1)
    }

    /// Records a success; returns how many failures it ends (0: there was no outage).
    pub(crate) fn succeed(&mut self) -> u32 {
        self.next = self.min;
        std::mem::take(&mut self.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(350));
        assert_eq!(b.fail(), (ms(100), true));
        assert_eq!(b.fail(), (ms(200), false));
        assert_eq!(b.fail(), (ms(350), false));
        assert_eq!(b.fail(), (ms(350), false));
        assert_eq!(b.succeed(), 4);
        assert_eq!(b.succeed(), 0);
        assert_eq!(b.fail(), (ms(100), true));
    }
}
