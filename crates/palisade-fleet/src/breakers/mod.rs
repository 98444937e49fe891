//! Shared breakers: one breaker per upstream, the same on every instance, that learns from
//! the whole fleet. The rules are in the crate documentation ("Shared breakers").

mod exchange;
mod mode;
mod verdict;

pub use mode::{MAX_SHARE_WINDOW, ShareMode};

pub(crate) use exchange::{Breakers, run};

use palisade_breaker::CircuitBreaker;

use crate::error::FleetError;
use crate::fleet::Fleet;

impl Fleet {
    /// Shares `breaker` with the fleet under `mode` (see [the rules]); a breaker
    /// of the same name shared before is replaced. Every instance that shares a breaker of this
    /// name takes part. Fails with [`FleetError::Config`] for an invalid mode, naming the
    /// field.
    ///
    /// [the rules]: crate#shared-breakers
    pub fn share_breaker(
        &self,
        breaker: &CircuitBreaker,
        mode: ShareMode,
    ) -> Result<(), FleetError> {
        mode.validate().map_err(|e| e.within("shared_breaker"))?;
        let shared = self.shared();
        breaker.report_sharing(Some(exchange::pending(shared, &mode)));
        let mut entries = shared.breakers.entries.lock();
        entries.retain(|e| e.breaker.name() != breaker.name());
        // Counts from here on are the breaker's contribution.
        let mut tracker = verdict::Tracker::default();
        tracker.observe(&breaker.snapshot());
        entries.push(exchange::Entry {
            breaker: breaker.clone(),
            mode,
            tracker,
        });
        Ok(())
    }

    /// Stops sharing the breaker named `name`: it is a local breaker again (its snapshot loses
    /// `shared`). Returns whether it was shared.
    pub fn unshare_breaker(&self, name: &str) -> bool {
        let mut entries = self.shared().breakers.entries.lock();
        let before = entries.len();
        entries.retain(|e| {
            let keep = e.breaker.name() != name;
            if !keep {
                e.breaker.report_sharing(None);
            }
            keep
        });
        entries.len() != before
    }

    /// The names of the breakers this instance shares, in the order they were shared.
    pub fn shared_breakers(&self) -> Vec<String> {
        let entries = self.shared().breakers.entries.lock();
        entries
            .iter()
            .map(|e| e.breaker.name().to_owned())
            .collect()
    }

    /// Exchanges with the fleet now, as the background task does every publish interval: one
    /// Redis command for all shared breakers. Returns how many were exchanged. On
    /// [`FleetError::Unavailable`] every shared breaker reports itself local.
    pub async fn exchange_breakers(&self) -> Result<usize, FleetError> {
        exchange::exchange(self.shared()).await
    }
}
