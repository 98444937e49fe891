//! Cross-crate flow through the facade: a breaker registered in a registry is listed, inspected,
//! controlled with JSON commands (as the admin router does), and its transitions arrive as events.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::time::Duration;

use palisade::breaker::{CircuitBreaker, State};
use palisade::core::{ComponentKind, ControlError, EventFilter, EventKind, ManualClock, Registry};
use serde_json::json;

#[tokio::test]
async fn operator_runbook_as_registry_calls() {
    let clock = ManualClock::new();
    let registry = Registry::new();
    let slack = CircuitBreaker::builder("slack")
        .consecutive_failures(3)
        .wait_duration(Duration::from_secs(25))
        .clock(clock.shared())
        .registry(&registry)
        .build()
        .unwrap();
    let mut live = registry.events().subscribe();

    // The upstream fails three times: the breaker opens.
    for _ in 0..3 {
        let _ = slack.call(async { Err::<(), _>("timeout") }).await;
    }
    // "Identify which breaker is open" (runbook 003, issue 3): one registry query.
    let open: Vec<String> = registry
        .snapshot_all(Some(ComponentKind::CircuitBreaker))
        .into_iter()
        .filter(|c| c.snapshot["state"] == "open")
        .map(|c| c.name)
        .collect();
    assert_eq!(open, vec!["slack"]);
    let snap = registry
        .snapshot(ComponentKind::CircuitBreaker, "slack")
        .unwrap();
    assert_eq!(snap["retry_after_ms"], 25_000);
    assert_eq!(snap["calls"]["failed"], 3);

    // "Manual reset: restart the backend instance" becomes one command.
    let out = registry
        .control(
            ComponentKind::CircuitBreaker,
            "slack",
            json!({"action": "reset"}),
        )
        .await
        .unwrap();
    assert_eq!(out["state"], "closed");
    assert_eq!(slack.state(), State::Closed);

    // A config with a bad field is refused, named, and changes nothing.
    let err = registry
        .control(
            ComponentKind::CircuitBreaker,
            "slack",
            json!({"action": "set_config", "config": {"half_open_max_calls": 0}}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ControlError::InvalidConfig(e) if e.field == "half_open_max_calls"),
        "{err}"
    );
    assert_eq!(slack.config().half_open_max_calls, 1);

    // The transitions arrived on the live stream and in the recent-events ring.
    let mut transitions = Vec::new();
    while let Ok(e) = live.try_recv() {
        if let EventKind::StateTransition { from, to, .. } = e.kind {
            transitions.push(format!("{from}->{to}"));
        }
    }
    assert_eq!(transitions, vec!["closed->open", "open->closed"]);
    let admin: Vec<_> = registry
        .events()
        .recent(&EventFilter {
            component: Some("slack".into()),
            ..Default::default()
        })
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::AdminAction { .. }))
        .collect();
    assert_eq!(admin.len(), 1, "only the applied reset is an admin action");
}

#[test]
fn duplicate_breaker_names_are_refused() {
    let registry = Registry::new();
    CircuitBreaker::builder("github")
        .registry(&registry)
        .build()
        .unwrap();
    let err = CircuitBreaker::builder("github")
        .registry(&registry)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "a circuit_breaker named 'github' is already registered; names are unique per kind"
    );
    let err = CircuitBreaker::builder("bad name").build().unwrap_err();
    assert!(err.to_string().contains("invalid config `name`"), "{err}");
}
