//! The instance registry: who is in the fleet, kept alive by heartbeats.
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `palisade:fleet:{f}:instances` | sorted set | instance id, scored by its registration's expiry (Redis time, ms) |
//! | `palisade:fleet:{f}:info` | hash | instance id → `{"id", "version", "addresses", "started_at_ms", "ttl_ms"}` |
//!
//! A heartbeat (one script, every `heartbeat`) sets the instance's expiry to Redis `TIME` +
//! `ttl` and its details, so the instances' own clocks never matter; it and every listing drop
//! the instances whose expiry has passed (at most 100 a call). An instance that stops
//! heartbeating (killed, frozen, cut off from Redis) therefore leaves the list within its ttl;
//! [`Fleet::leave`](crate::Fleet::leave) removes it at once. `last_seen_ms` is the expiry minus
//! the ttl: the Redis time of the last heartbeat.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::config::{FleetConfig, millis};
use crate::error::FleetError;
use crate::fleet::{Fleet, RETRY_MIN, Shared};

/// A live instance of the fleet, as [`Fleet::instances`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Its instance id.
    pub id: String,
    /// The version it runs.
    pub version: String,
    /// Where it can be reached.
    pub addresses: Vec<String>,
    /// When it joined (its own wall clock, ms since the Unix epoch).
    pub started_at_ms: u64,
    /// Its last heartbeat (Redis time, ms since the Unix epoch).
    pub last_seen_ms: u64,
}

/// What a heartbeat writes in the `info` hash.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Details {
    id: String,
    version: String,
    addresses: Vec<String>,
    started_at_ms: u64,
    ttl_ms: u64,
}

impl Details {
    /// The details of the instance `config` describes, started now.
    pub(crate) fn of(config: &FleetConfig) -> Self {
        let started_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Details {
            id: config.instance_id.clone(),
            version: config.version.clone(),
            addresses: config.addresses.clone(),
            started_at_ms,
            ttl_ms: millis(config.ttl),
        }
    }

    /// As JSON.
    pub(crate) fn to_json(&self) -> String {
        // Plain strings and numbers: serializing cannot fail; an empty object is the fallback.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// The listing's view of instance `id`, from its stored details and expiry.
    fn into_info(self, id: String, expiry_ms: u64) -> InstanceInfo {
        InstanceInfo {
            id,
            version: self.version,
            addresses: self.addresses,
            started_at_ms: self.started_at_ms,
            last_seen_ms: expiry_ms.saturating_sub(self.ttl_ms),
        }
    }
}

/// One heartbeat.
pub(crate) async fn beat(shared: &Shared) -> Result<(), FleetError> {
    let c = &shared.config;
    // The components' snapshots ride along in the same script call: one Redis command per
    // instance per heartbeat, whatever the call rate.
    let snapshots = serde_json::to_string(&shared.registry.snapshot_all(None)).unwrap_or_default();
    shared
        .store
        .heartbeat(&shared.details, c.ttl, c.cursor_retention(), &snapshots)
        .await
        .map(drop)
}

/// Heartbeats every `heartbeat` until aborted; while Redis fails, retries sooner (from
/// 100 ms, doubling up to the interval) and logs once per outage.
pub(crate) async fn heartbeat_loop(shared: Arc<Shared>) {
    let interval = shared.config.heartbeat;
    let mut backoff = Backoff::new(RETRY_MIN.min(interval), interval);
    let (fleet, id) = (&shared.config.fleet, &shared.config.instance_id);
    loop {
        tokio::time::sleep(interval).await;
        loop {
            match beat(&shared).await {
                Ok(()) => {
                    let failures = backoff.succeed();
                    if failures > 0 {
                        tracing::info!(
                            target: "palisade::fleet", fleet = %fleet, instance = %id, failures,
                            "heartbeats reach Redis again"
                        );
                    }
                    break;
                }
                Err(e) => {
                    let (delay, first) = backoff.fail();
                    if first {
                        tracing::warn!(
                            target: "palisade::fleet", fleet = %fleet, instance = %id, error = %e,
                            "heartbeat failed; retrying (the instance leaves the fleet's list \
                             if this lasts longer than its ttl)"
                        );
                    } else {
                        tracing::debug!(
                            target: "palisade::fleet", fleet = %fleet, instance = %id, error = %e,
                            "heartbeat failed again"
                        );
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

impl Fleet {
    /// The live instances of the fleet (this one included, unless it left), sorted by id.
    /// Registrations that expired are dropped from Redis on the way.
    pub async fn instances(&self) -> Result<Vec<InstanceInfo>, FleetError> {
        let (_now, live) = self.shared().store.list().await?;
        let mut out: Vec<InstanceInfo> = live
            .into_iter()
            .map(|(id, expiry, details)| {
                let details: Details = serde_json::from_str(&details).unwrap_or_else(|e| {
                    tracing::warn!(
                        target: "palisade::fleet", fleet = %self.name(), instance = %id,
                        error = %e, "unreadable instance details; listed without them"
                    );
                    Details::default()
                });
                details.into_info(id, expiry)
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}
