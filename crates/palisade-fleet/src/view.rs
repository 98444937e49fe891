//! The fleet's components as one (`GET /admin/fleet/resilience`): every instance publishes its
//! components' snapshots with its heartbeat, and any instance sums them up. Pure aggregation
//! ([`aggregate`]) is tested without Redis.

use std::collections::BTreeMap;

use palisade_core::{ComponentKind, ComponentSnapshot};
use serde::Serialize;
use serde_json::Value;

use crate::error::FleetError;
use crate::fleet::Fleet;

/// One component (kind and name) across the fleet.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct FleetComponent {
    /// Its kind.
    pub kind: ComponentKind,
    /// Its name.
    pub name: String,
    /// The worst `state` or `status` any instance reports (`forced_open` over `open` over
    /// `half_open` over `closed`; `unhealthy` over `degraded` over `healthy`), when the
    /// snapshots have one.
    pub worst: Option<String>,
    /// Every top-level counter ending in `_total`, and a breaker's call counters
    /// (`calls.successful`, `calls.failed`, ...), summed over the instances.
    pub totals: BTreeMap<String, u64>,
    /// Each instance's snapshot, by instance id.
    pub instances: BTreeMap<String, Value>,
}

/// The fleet's components as one.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct FleetResilience {
    /// The fleet.
    pub fleet: String,
    /// The instances whose snapshots were summed.
    pub instances: Vec<String>,
    /// Every component any instance has, by kind then name.
    pub components: Vec<FleetComponent>,
}

/// How bad a `state` or `status` is (higher is worse); unknown values rank in the middle.
fn severity(state: &str) -> u8 {
    match state {
        "closed" | "healthy" | "ok" => 0,
        "metrics_only" | "disabled" => 1,
        "half_open" | "degraded" | "warn" => 3,
        "open" | "unhealthy" | "critical" => 4,
        "forced_open" => 5,
        _ => 2,
    }
}

/// Sums `snapshots` (instance id → that instance's components) into one view per component.
pub fn aggregate(fleet: &str, snapshots: Vec<(String, Vec<ComponentSnapshot>)>) -> FleetResilience {
    let mut components: BTreeMap<(ComponentKind, String), FleetComponent> = BTreeMap::new();
    let mut instances = Vec::with_capacity(snapshots.len());
    for (instance, list) in snapshots {
        for c in list {
            let entry = components
                .entry((c.kind, c.name.clone()))
                .or_insert_with(|| FleetComponent {
                    kind: c.kind,
                    name: c.name.clone(),
                    worst: None,
                    totals: BTreeMap::new(),
                    instances: BTreeMap::new(),
                });
            if let Value::Object(fields) = &c.snapshot {
                for (k, v) in fields {
                    if let (true, Some(n)) = (k.ends_with("_total"), v.as_u64()) {
                        *entry.totals.entry(k.clone()).or_default() += n;
                    }
                    // A breaker's call counters: `calls.failed`, ...
                    if let (true, Value::Object(inner)) = (k == "calls", v) {
                        for (k2, v2) in inner {
                            if let Some(n) = v2.as_u64() {
                                *entry.totals.entry(format!("calls.{k2}")).or_default() += n;
                            }
                        }
                    }
                }
                let state = fields
                    .get("state")
                    .or_else(|| fields.get("status"))
                    .and_then(Value::as_str);
                if let Some(state) = state
                    && entry
                        .worst
                        .as_deref()
                        .is_none_or(|w| severity(state) > severity(w))
                {
                    entry.worst = Some(state.to_owned());
                }
            }
            entry.instances.insert(instance.clone(), c.snapshot);
        }
        instances.push(instance);
    }
    instances.sort();
    FleetResilience {
        fleet: fleet.to_owned(),
        instances,
        components: components.into_values().collect(),
    }
}

impl Fleet {
    /// The live instances' components as one: counters summed, the worst state, and each
    /// instance's snapshot as of its last heartbeat. A snapshot that does not parse is left
    /// out, with a warning.
    pub async fn resilience(&self) -> Result<FleetResilience, FleetError> {
        let live: std::collections::HashSet<String> =
            self.instances().await?.into_iter().map(|i| i.id).collect();
        let raw = self.shared().store.snapshots().await?;
        let mut parsed = Vec::new();
        for (instance, text) in raw {
            if !live.contains(&instance) {
                continue;
            }
            match serde_json::from_str::<Vec<ComponentSnapshot>>(&text) {
                Ok(list) => parsed.push((instance, list)),
                Err(e) => tracing::warn!(
                    target: "palisade::fleet", instance = %instance, error = %e,
                    "an instance's published snapshots do not parse; left out"
                ),
            }
        }
        Ok(aggregate(self.name(), parsed))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn breaker(state: &str, failures: u64) -> ComponentSnapshot {
        ComponentSnapshot {
            kind: ComponentKind::CircuitBreaker,
            name: "weather".into(),
            snapshot: json!({"state": state, "failures_total": failures, "rejected_total": 1, "name": "weather", "calls": {"failed": failures, "note": "x"}}),
        }
    }

    #[test]
    fn counters_sum_and_the_worst_state_wins() {
        let view = aggregate(
            "f",
            vec![
                ("b".into(), vec![breaker("open", 4)]),
                ("a".into(), vec![breaker("closed", 1)]),
                ("c".into(), vec![breaker("half_open", 2)]),
            ],
        );
        assert_eq!(view.instances, ["a", "b", "c"]);
        let c = &view.components[0];
        assert_eq!(c.worst.as_deref(), Some("open"));
        assert_eq!(c.totals["failures_total"], 7);
        assert_eq!(c.totals["rejected_total"], 3);
        assert_eq!(c.totals["calls.failed"], 7);
        assert!(!c.totals.contains_key("calls.note"));
        assert_eq!(c.instances.len(), 3);
        assert_eq!(c.instances["b"]["state"], "open");
        let forced = aggregate(
            "f",
            vec![
                ("a".into(), vec![breaker("forced_open", 0)]),
                ("b".into(), vec![breaker("open", 0)]),
            ],
        );
        assert_eq!(forced.components[0].worst.as_deref(), Some("forced_open"));
    }
}
