//! The sampler: one [`History::sample`] per interval, in a task that ends when the history is
//! dropped or the server stops.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{History, Inner};

/// Clears the history's "a sampler runs" flag when the task ends, however it ends.
struct Running(Weak<Inner>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.sampling.store(false, Ordering::Release);
        }
    }
}

/// Starts sampling `history` now and every interval, until every handle of it is dropped or
/// `stop` turns `true` (or its sender is gone). `None` when a sampler runs for it already.
pub(crate) fn spawn(
    history: &History,
    stop: Option<watch::Receiver<bool>>,
) -> Option<JoinHandle<()>> {
    if history.inner.sampling.swap(true, Ordering::AcqRel) {
        return None;
    }
    let weak = Arc::downgrade(&history.inner);
    let period = history.inner.interval;
    let mut stop = stop;
    Some(tokio::spawn(async move {
        let _running = Running(weak.clone());
        let mut next = Instant::now();
        loop {
            // A strong handle only while sampling: the task never keeps the history alive.
            let Some(inner) = weak.upgrade() else { return };
            History { inner }.sample().await;
            next += period;
            let now = Instant::now();
            if next <= now {
                // Late (a slow sample, a suspended process): skip the missed ticks.
                next = now + period;
            }
            match stop.as_mut() {
                // Done when told to stop, or when the sender is gone.
                Some(stop) => {
                    if tokio::time::timeout_at(next, stop.wait_for(|s| *s))
                        .await
                        .is_ok()
                    {
                        return;
                    }
                }
                None => tokio::time::sleep_until(next).await,
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use palisade_breaker::CircuitBreaker;
    use palisade_core::{ComponentKind, Registry};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn samples_every_interval_until_stopped() {
        let registry = Registry::new();
        let _b = CircuitBreaker::builder("b")
            .registry(&registry)
            .build()
            .unwrap();
        let history = History::new(&registry);
        let (tx, rx) = watch::channel(false);
        let task = spawn(&history, Some(rx)).unwrap();
        assert!(spawn(&history, None).is_none(), "one sampler per history");
        tokio::time::sleep(Duration::from_millis(4_500)).await;
        assert_eq!(history.points(ComponentKind::CircuitBreaker, "b"), 5);
        tx.send_replace(true);
        task.await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(history.points(ComponentKind::CircuitBreaker, "b"), 5);
        assert!(spawn(&history, None).is_some(), "may start again");
    }

    #[tokio::test(start_paused = true)]
    async fn ends_when_the_history_is_dropped() {
        let registry = Registry::new();
        let history = History::new(&registry);
        let task = history.spawn_sampler().unwrap();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        drop(history);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
