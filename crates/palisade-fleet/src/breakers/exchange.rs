//! The exchange: every publish interval, one script call sends this instance's counts of all
//! its shared breakers and brings back the fleet's numbers; the verdicts are then applied
//! locally. Nothing here is on a call's path.

use std::sync::Arc;
use std::time::Duration;

use palisade_breaker::{CircuitBreaker, SharingSnapshot, SharingStatus};
use parking_lot::Mutex;

use super::mode::ShareMode;
use super::verdict::{FleetNumbers, Tracker, verdict};
use crate::error::FleetError;
use crate::fleet::Shared;

/// Reports hold for this many publish intervals: an instance that stops exchanging stops
/// counting (as a member, and as open) after it.
const HOLD_INTERVALS: u32 = 3;

/// One shared breaker.
pub(crate) struct Entry {
    pub(crate) breaker: CircuitBreaker,
    pub(crate) mode: ShareMode,
    pub(crate) tracker: Tracker,
}

/// The shared breakers of one instance.
#[derive(Default)]
pub(crate) struct Breakers {
    pub(crate) entries: Mutex<Vec<Entry>>,
}

/// How long a report holds at `interval`.
pub(crate) fn hold(interval: Duration) -> Duration {
    interval.saturating_mul(HOLD_INTERVALS)
}

fn sharing(
    shared: &Shared,
    mode: &ShareMode,
    status: SharingStatus,
    detail: String,
) -> SharingSnapshot {
    SharingSnapshot {
        scope: format!("fleet {}", shared.config.fleet),
        mode: mode.as_str().to_owned(),
        status,
        detail,
        fleet_calls: None,
        fleet_failures: None,
        instances_open: None,
        instances: None,
        last_exchange_unix_ms: None,
    }
}

/// What a breaker shows before its first exchange.
pub(crate) fn pending(shared: &Shared, mode: &ShareMode) -> SharingSnapshot {
    sharing(
        shared,
        mode,
        SharingStatus::Local,
        "no exchange with the fleet yet; deciding on this instance's calls".to_owned(),
    )
}

/// One exchange of every shared breaker; returns how many were exchanged. On a Redis error,
/// every shared breaker says in its snapshot that it decides locally (its counts of this
/// interval are not sent later: a late burst would distort the fleet's window).
pub(crate) async fn exchange(shared: &Shared) -> Result<usize, FleetError> {
    let batch: Vec<(String, [u64; 5])> = {
        let mut entries = shared.breakers.entries.lock();
        entries
            .iter_mut()
            .map(|e| {
                let r = e.tracker.observe(&e.breaker.snapshot());
                let window = crate::config::millis(e.mode.window());
                let name = e.breaker.name().to_owned();
                (
                    name,
                    [
                        window,
                        r.calls,
                        r.failures,
                        u64::from(r.open_on_its_own),
                        u64::from(r.closed),
                    ],
                )
            })
            .collect()
    };
    if batch.is_empty() {
        return Ok(0);
    }
    let result = shared
        .store
        .exchange_breakers(hold(shared.config.publish_interval), &batch)
        .await;
    let mut entries = shared.breakers.entries.lock();
    let (now, numbers) = match result {
        Ok(answer) => answer,
        Err(e) => {
            for entry in entries.iter() {
                entry.breaker.report_sharing(Some(sharing(
                    shared,
                    &entry.mode,
                    SharingStatus::Local,
                    format!("cannot reach the fleet ({e}); deciding on this instance's calls"),
                )));
            }
            return Err(e);
        }
    };
    for ((name, _), [calls, failures, instances, open]) in batch.iter().zip(numbers) {
        // Shared or unshared meanwhile: apply to the breaker of that name, if still shared.
        let Some(entry) = entries.iter_mut().find(|e| e.breaker.name() == name) else {
            continue;
        };
        let n = FleetNumbers {
            calls,
            failures,
            instances: u32::try_from(instances).unwrap_or(u32::MAX),
            open: u32::try_from(open).unwrap_or(u32::MAX),
        };
        let why = verdict(&entry.mode, &n);
        if let Some(why) = why
            && entry.breaker.trip_shared(why)
        {
            entry.tracker.opened_by_fleet = true;
            tracing::warn!(
                target: "palisade::fleet", fleet = %shared.config.fleet,
                instance = %shared.config.instance_id, breaker = %name, reason = %why,
                "breaker opened on the fleet's word"
            );
        }
        let detail = match &entry.mode {
            ShareMode::FailureRate { window, .. } => format!(
                "fleet window ({} s): {calls} calls, {failures} failed, from {instances} instances",
                window.as_secs()
            ),
            ShareMode::Quorum { quorum } => {
                format!("{open} of {instances} instances open on their own (quorum {quorum})")
            }
        };
        entry.breaker.report_sharing(Some(SharingSnapshot {
            fleet_calls: Some(calls),
            fleet_failures: Some(failures),
            instances_open: Some(n.open),
            instances: Some(n.instances),
            last_exchange_unix_ms: Some(now),
            ..sharing(shared, &entry.mode, SharingStatus::Shared, detail)
        }));
    }
    Ok(batch.len())
}

/// Exchanges every `publish_interval` until aborted; logs once per outage and once when the
/// fleet answers again.
pub(crate) async fn run(shared: Arc<Shared>) {
    // The first exchange one interval after joining (none at once: nothing is counted yet).
    let period = shared.config.publish_interval;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let (fleet, id) = (&shared.config.fleet, &shared.config.instance_id);
    loop {
        ticks.tick().await;
        match exchange(&shared).await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!(
                    target: "palisade::fleet", fleet = %fleet, instance = %id,
                    "shared breakers reach the fleet again"
                );
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(
                    target: "palisade::fleet", fleet = %fleet, instance = %id, error = %e,
                    "shared breakers cannot reach the fleet; each decides on this instance's \
                     calls until Redis answers"
                );
            }
            Err(e) => tracing::debug!(
                target: "palisade::fleet", fleet = %fleet, instance = %id, error = %e,
                "shared breakers still cannot reach the fleet"
            ),
        }
    }
}
