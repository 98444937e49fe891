//! Registry behaviour with a minimal component: uniqueness per kind, JSON control routing,
//! typed errors, and admin-action events.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use palisade_core::{
    ComponentKind, Control, ControlError, EventFilter, EventKind, Inspect, Managed, Registry,
    RegistryError, async_trait,
};
use serde_json::json;

struct Dial {
    name: String,
    level: AtomicU32,
}

#[derive(serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum DialCommand {
    Set { level: u32 },
    Fail,
}

impl Inspect for Dial {
    type Snapshot = serde_json::Value;
    fn snapshot(&self) -> serde_json::Value {
        json!({ "level": self.level.load(Ordering::Relaxed) })
    }
}

#[async_trait]
impl Control for Dial {
    type Command = DialCommand;
    type Output = serde_json::Value;
    async fn control(&self, cmd: DialCommand) -> Result<serde_json::Value, ControlError> {
        match cmd {
            DialCommand::Set { level } => {
                palisade_core::config::check_range("level", level, 1, 10)?;
                self.level.store(level, Ordering::Relaxed);
                Ok(self.snapshot())
            }
            DialCommand::Fail => Err(ControlError::Rejected {
                action: "fail".into(),
                reason: "always".into(),
            }),
        }
    }
}

impl Managed for Dial {
    const KIND: ComponentKind = ComponentKind::Bulkhead;
    fn name(&self) -> &str {
        &self.name
    }
}

fn dial(name: &str) -> Arc<Dial> {
    Arc::new(Dial {
        name: name.into(),
        level: AtomicU32::new(1),
    })
}

#[test]
fn names_are_unique_per_kind_and_validated() {
    let r = Registry::new();
    r.register(dial("database")).unwrap();
    assert_eq!(
        r.register(dial("database")),
        Err(RegistryError::Duplicate {
            kind: ComponentKind::Bulkhead,
            name: "database".into()
        })
    );
    for bad in ["", "has space", "a/b", &"x".repeat(129)] {
        assert!(
            matches!(
                r.register(dial(bad)),
                Err(RegistryError::InvalidName { .. })
            ),
            "{bad:?} should be refused"
        );
    }
    r.register(dial("cost")).unwrap();
    assert_eq!(r.list(ComponentKind::Bulkhead), vec!["cost", "database"]);
    assert!(r.list(ComponentKind::CircuitBreaker).is_empty());
    assert!(r.deregister(ComponentKind::Bulkhead, "cost").is_some());
    assert!(r.deregister(ComponentKind::Bulkhead, "cost").is_none());
    assert_eq!(r.list(ComponentKind::Bulkhead), vec!["database"]);
}

#[tokio::test]
async fn control_routes_json_and_reports_typed_errors() {
    let r = Registry::new();
    let d = dial("database");
    r.register(d.clone()).unwrap();

    let out = r
        .control(
            ComponentKind::Bulkhead,
            "database",
            json!({"action": "set", "level": 7}),
        )
        .await
        .unwrap();
    assert_eq!(out, json!({"level": 7}));
    assert_eq!(d.level.load(Ordering::Relaxed), 7);

    // Invalid value: refused, names the field, nothing changes.
    let err = r
        .control(
            ComponentKind::Bulkhead,
            "database",
            json!({"action": "set", "level": 99}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ControlError::InvalidConfig(c) if c.field == "level"),
        "{err}"
    );
    assert_eq!(d.level.load(Ordering::Relaxed), 7);

    // Malformed: unknown action, wrong type.
    for bad in [
        json!({"action": "explode"}),
        json!({"action": "set", "level": "x"}),
        json!(3),
    ] {
        let err = r
            .control(ComponentKind::Bulkhead, "database", bad)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ControlError::MalformedCommand { .. }),
            "{err}"
        );
    }
    let err = r
        .control(
            ComponentKind::Bulkhead,
            "nope",
            json!({"action": "set", "level": 1}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no bulkhead named 'nope' is registered");
    let err = r
        .control(
            ComponentKind::Bulkhead,
            "database",
            json!({"action": "fail"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "cannot fail: always");

    // Only the applied command became an admin-action event.
    let actions: Vec<_> = r
        .events()
        .recent(&EventFilter::default())
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::AdminAction { action } => Some(action),
            _ => None,
        })
        .collect();
    assert_eq!(actions, vec!["set"]);
}

#[test]
fn snapshot_all_lists_every_component() {
    let r = Registry::new();
    r.register(dial("a")).unwrap();
    r.register(dial("b")).unwrap();
    let all = r.snapshot_all(None);
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].name, "a");
    assert_eq!(all[0].snapshot, json!({"level": 1}));
    assert!(r.snapshot_all(Some(ComponentKind::RateLimiter)).is_empty());
    assert!(matches!(
        r.snapshot(ComponentKind::Bulkhead, "zz"),
        Err(ControlError::NotFound { .. })
    ));
}
