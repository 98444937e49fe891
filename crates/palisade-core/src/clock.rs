//! Time sources.
//!
//! Every Palisade component reads time through a [`Clock`] so that tests can drive it by hand
//! ([`ManualClock`]) or follow tokio's paused clock ([`TokioClock`], feature `tokio-clock`).
//! Components store instants as [`Duration`]s since the clock's origin, which fit in an atomic
//! `u64` of nanoseconds; see [`Clock::now_nanos`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A monotonic time source plus a wall clock for timestamps.
///
/// `now` is monotonic and only meaningful relative to other readings of the *same* clock.
/// `unix_millis` is wall-clock time, used only for human-facing timestamps (events, snapshots).
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Monotonic time elapsed since this clock's origin.
    fn now(&self) -> Duration;

    /// Wall-clock time in milliseconds since the Unix epoch.
    fn unix_millis(&self) -> u64;

    /// [`Clock::now`] in nanoseconds, saturating at `u64::MAX` (about 584 years).
    fn now_nanos(&self) -> u64 {
        saturating_nanos(self.now())
    }
}

/// A shared, dynamically dispatched clock: what components hold.
pub type SharedClock = Arc<dyn Clock>;

/// Converts a duration to nanoseconds, saturating at `u64::MAX`.
pub fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn system_unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The real clock: [`std::time::Instant`] for `now`, [`SystemTime`] for timestamps.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is the moment of this call.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// A [`SharedClock`] reading real time.
    pub fn shared() -> SharedClock {
        Arc::new(Self::new())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn unix_millis(&self) -> u64 {
        system_unix_millis()
    }
}

/// A clock that reads `tokio::time::Instant`, so it stands still under `tokio::time::pause()`
/// and jumps with `tokio::time::advance()`.
#[cfg(feature = "tokio-clock")]
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
    wall_origin: u64,
}

#[cfg(feature = "tokio-clock")]
impl TokioClock {
    /// A clock whose origin is tokio's "now" at the moment of this call.
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            wall_origin: system_unix_millis(),
        }
    }

    /// A [`SharedClock`] reading tokio's time.
    pub fn shared() -> SharedClock {
        Arc::new(Self::new())
    }
}

#[cfg(feature = "tokio-clock")]
impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "tokio-clock")]
impl Clock for TokioClock {
    fn now(&self) -> Duration {
        tokio::time::Instant::now().duration_since(self.origin)
    }

    /// Wall time at creation plus tokio time elapsed since, so timestamps follow a paused clock.
    fn unix_millis(&self) -> u64 {
        let elapsed = u64::try_from(self.now().as_millis()).unwrap_or(u64::MAX);
        self.wall_origin.saturating_add(elapsed)
    }
}

/// A clock that moves only when told to. Clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use palisade_core::clock::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// assert_eq!(clock.now(), Duration::ZERO);
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(clock.now(), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

/// The wall-clock reading of a [`ManualClock`] at its origin: 2024-01-01T00:00:00Z.
pub const MANUAL_CLOCK_EPOCH_MILLIS: u64 = 1_704_067_200_000;

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = saturating_nanos(by);
        let _ = self
            .nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add(by))
            });
    }

    /// Sets the clock to `at` since its origin. Moving it backwards is allowed (to test that
    /// components tolerate it) but real monotonic clocks never do.
    pub fn set(&self, at: Duration) {
        self.nanos.store(saturating_nanos(at), Ordering::Release);
    }

    /// This clock as a [`SharedClock`] (sharing the same time).
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }

    fn unix_millis(&self) -> u64 {
        MANUAL_CLOCK_EPOCH_MILLIS.saturating_add(self.nanos.load(Ordering::Acquire) / 1_000_000)
    }

    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_time() {
        let a = ManualClock::new();
        let b = a.clone();
        a.advance(Duration::from_millis(1500));
        assert_eq!(b.now(), Duration::from_millis(1500));
        assert_eq!(b.unix_millis(), MANUAL_CLOCK_EPOCH_MILLIS + 1500);
        b.set(Duration::from_secs(1));
        assert_eq!(a.now_nanos(), 1_000_000_000);
    }

    #[test]
    fn manual_clock_saturates_instead_of_overflowing() {
        let c = ManualClock::new();
        c.advance(Duration::MAX);
        c.advance(Duration::from_secs(1));
        assert_eq!(c.now_nanos(), u64::MAX);
    }

    #[test]
    fn system_clock_is_monotonic() {
        let c = SystemClock::new();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
        assert!(c.unix_millis() > MANUAL_CLOCK_EPOCH_MILLIS);
    }

    #[cfg(feature = "tokio-clock")]
    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let c = TokioClock::new();
        let wall = c.unix_millis();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(c.now(), Duration::from_secs(30));
        assert_eq!(c.unix_millis(), wall + 30_000);
    }
}
