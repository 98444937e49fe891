//! Timestamped events: state transitions, config changes, admin actions and their audit trail.
//!
//! An [`EventBus`] keeps the most recent events in a bounded ring (for `GET /admin/events`) and
//! broadcasts each one to live subscribers (for server-sent events). Publishing also emits a
//! `tracing` event, so every change is logged the same way whatever the component.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::clock::{SharedClock, SystemClock};
use crate::component::ComponentKind;

/// What happened, without the who and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The component moved from one state to another (`closed` → `open`).
    StateTransition {
        /// Previous state.
        from: String,
        /// New state.
        to: String,
        /// Why: `"3 consecutive failures"`, `"wait duration elapsed"`, `"admin: reset"`.
        reason: String,
    },
    /// The component's configuration was replaced or one setting changed.
    ConfigChanged {
        /// What changed, in words an operator reads (`"max_concurrent 10 -> 5"`).
        change: String,
    },
    /// An operator command was applied (whether or not it changed the state).
    AdminAction {
        /// The command, as named in the admin API (`"force_open"`).
        action: String,
    },
    /// A component-specific occurrence worth recording (a restart, a quarantined entry).
    Notice {
        /// Short description.
        message: String,
        /// Structured details.
        #[serde(default)]
        details: serde_json::Value,
    },
    /// An operator's mutation through the admin API: who sent it, what it was, and the
    /// component's state before and after (`{"type": "audit", ...}`).
    Audit {
        /// Who sent it: the self-declared `X-Palisade-Actor` (sanitized) or `"admin-token"`,
        /// followed by ` from <peer address>` when the peer is known.
        actor: String,
        /// The command, as named in the admin API (`"force_open"`, `"set_auto_restart"`).
        action: String,
        /// The component's snapshot before the command.
        #[serde(default)]
        before: serde_json::Value,
        /// The component's snapshot after the command.
        #[serde(default)]
        after: serde_json::Value,
    },
}

/// One event: a sequence number, a timestamp, the component and what happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Increasing per bus, starting at 1; gaps mean events were evicted from the ring.
    pub seq: u64,
    /// Wall-clock time in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Kind of the component that emitted it.
    pub component_kind: ComponentKind,
    /// Name of the component that emitted it.
    pub component: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Filter for [`EventBus::recent`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EventFilter {
    /// Only events of this component kind.
    pub kind: Option<ComponentKind>,
    /// Only events of this component name.
    pub component: Option<String>,
    /// Only events with `seq` greater than this (for polling).
    pub since_seq: Option<u64>,
    /// At most this many (the newest), default all that are kept.
    pub limit: Option<usize>,
}

impl EventFilter {
    fn matches(&self, e: &Event) -> bool {
        self.kind.is_none_or(|k| k == e.component_kind)
            && self.component.as_deref().is_none_or(|c| c == e.component)
            && self.since_seq.is_none_or(|s| e.seq > s)
    }
}

struct BusInner {
    clock: SharedClock,
    seq: AtomicU64,
    capacity: usize,
    ring: Mutex<VecDeque<Event>>,
    tx: broadcast::Sender<Event>,
}

/// A cheap-to-clone handle on an event stream shared by every component of a registry.
///
/// ```
/// use palisade_core::{ComponentKind, EventBus, EventKind};
///
/// let bus = EventBus::new(100);
/// bus.publish(ComponentKind::CircuitBreaker, "slack", EventKind::AdminAction { action: "reset".into() });
/// let recent = bus.recent(&Default::default());
/// assert_eq!(recent.len(), 1);
/// assert_eq!(recent[0].component, "slack");
/// ```
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("capacity", &self.inner.capacity)
            .field("published", &self.inner.seq.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl EventBus {
    /// Events kept for [`EventBus::recent`] by default.
    pub const DEFAULT_CAPACITY: usize = 1000;

    /// A bus keeping the newest `capacity` events (at least 1), timestamped by the system clock.
    pub fn new(capacity: usize) -> Self {
        Self::with_clock(capacity, SystemClock::shared())
    }

    /// A bus timestamping events with `clock`.
    pub fn with_clock(capacity: usize, clock: SharedClock) -> Self {
        let capacity = capacity.max(1);
        let (tx, _) = broadcast::channel(capacity.min(4096));
        Self {
            inner: Arc::new(BusInner {
                clock,
                seq: AtomicU64::new(0),
                capacity,
                ring: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
                tx,
            }),
        }
    }

    /// Records an event, logs it through `tracing`, and sends it to subscribers. Returns it.
    pub fn publish(
        &self,
        component_kind: ComponentKind,
        component: &str,
        kind: EventKind,
    ) -> Event {
        let mut ring = self.inner.ring.lock();
        // Sequence numbers are taken under the ring lock so the ring stays ordered.
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let event = Event {
            seq,
            at_unix_ms: self.inner.clock.unix_millis(),
            component_kind,
            component: component.to_owned(),
            kind,
        };
        if ring.len() == self.inner.capacity {
            ring.pop_front();
        }
        ring.push_back(event.clone());
        drop(ring);
        trace_event(&event);
        // No subscriber is fine: the ring still has it.
        let _ = self.inner.tx.send(event.clone());
        event
    }

    /// The kept events matching `filter`, oldest first.
    pub fn recent(&self, filter: &EventFilter) -> Vec<Event> {
        let ring = self.inner.ring.lock();
        let mut out: Vec<Event> = ring.iter().filter(|e| filter.matches(e)).cloned().collect();
        if let Some(limit) = filter.limit {
            let skip = out.len().saturating_sub(limit);
            out.drain(..skip);
        }
        out
    }

    /// A live subscription to events published from now on. A subscriber that falls more than
    /// the channel capacity behind gets `RecvError::Lagged` and continues with newer events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.tx.subscribe()
    }

    /// How many events were published in total.
    pub fn published(&self) -> u64 {
        self.inner.seq.load(Ordering::Relaxed)
    }
}

fn trace_event(e: &Event) {
    let kind = e.component_kind.as_str();
    match &e.kind {
        EventKind::StateTransition { from, to, reason } => tracing::info!(
            target: "palisade::core",
            component_kind = kind, component = %e.component, from = %from, to = %to, reason = %reason,
            "state transition"
        ),
        EventKind::ConfigChanged { change } => tracing::info!(
            target: "palisade::core",
            component_kind = kind, component = %e.component, change = %change,
            "config changed"
        ),
        EventKind::AdminAction { action } => tracing::info!(
            target: "palisade::core",
            component_kind = kind, component = %e.component, action = %action,
            "admin action"
        ),
        EventKind::Notice { message, details } => tracing::info!(
            target: "palisade::core",
            component_kind = kind, component = %e.component, details = %details,
            "{message}"
        ),
        // Before/after snapshots stay out of the log line (they are in the event itself).
        EventKind::Audit { actor, action, .. } => tracing::info!(
            target: "palisade::core",
            component_kind = kind, component = %e.component, actor = %actor, action = %action,
            "audit"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn action(a: &str) -> EventKind {
        EventKind::AdminAction { action: a.into() }
    }

    #[test]
    fn ring_keeps_newest_and_filters() {
        let clock = ManualClock::new();
        let bus = EventBus::with_clock(3, clock.shared());
        for i in 0..5 {
            clock.advance(std::time::Duration::from_millis(10));
            let name = if i % 2 == 0 { "a" } else { "b" };
            bus.publish(
                ComponentKind::CircuitBreaker,
                name,
                action(&format!("x{i}")),
            );
        }
        let all = bus.recent(&EventFilter::default());
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(
            all[0].at_unix_ms,
            crate::clock::MANUAL_CLOCK_EPOCH_MILLIS + 30
        );
        let only_a = bus.recent(&EventFilter {
            component: Some("a".into()),
            ..Default::default()
        });
        assert_eq!(only_a.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 5]);
        let since = bus.recent(&EventFilter {
            since_seq: Some(4),
            ..Default::default()
        });
        assert_eq!(since.len(), 1);
        let last = bus.recent(&EventFilter {
            limit: Some(2),
            ..Default::default()
        });
        assert_eq!(last.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
        let bulkheads = bus.recent(&EventFilter {
            kind: Some(ComponentKind::Bulkhead),
            ..Default::default()
        });
        assert!(bulkheads.is_empty());
        assert_eq!(bus.published(), 5);
    }

    #[tokio::test]
    async fn subscribers_receive_events() {
        let bus = EventBus::new(10);
        let mut rx = bus.subscribe();
        bus.publish(ComponentKind::CircuitBreaker, "slack", action("reset"));
        let e = rx.recv().await.unwrap();
        assert_eq!(e.component, "slack");
        assert_eq!(e.kind, action("reset"));
    }

    #[test]
    fn event_json_shape_is_flat() {
        let bus = EventBus::with_clock(10, ManualClock::new().shared());
        let e = bus.publish(
            ComponentKind::CircuitBreaker,
            "slack",
            EventKind::StateTransition {
                from: "closed".into(),
                to: "open".into(),
                reason: "3 consecutive failures".into(),
            },
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "state_transition");
        assert_eq!(v["component_kind"], "circuit_breaker");
        assert_eq!(v["to"], "open");
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn audit_events_are_tagged_audit_and_round_trip() {
        let bus = EventBus::with_clock(10, ManualClock::new().shared());
        let e = bus.publish(
            ComponentKind::Bulkhead,
            "db",
            EventKind::Audit {
                actor: "alice from 127.0.0.1:5000".into(),
                action: "set_max_concurrent".into(),
                before: serde_json::json!({"max_concurrent": 10}),
                after: serde_json::json!({"max_concurrent": 5}),
            },
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "audit");
        assert_eq!(v["component"], "db");
        assert_eq!(v["actor"], "alice from 127.0.0.1:5000");
        assert_eq!(v["before"]["max_concurrent"], 10);
        assert_eq!(v["after"]["max_concurrent"], 5);
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
