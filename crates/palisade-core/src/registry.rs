//! One registry of named components, shared by the admin router, metrics and the event bus.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::Serialize;

use crate::component::{Component, ComponentKind, ControlError};
use crate::event::{EventBus, EventKind};

/// Why a component could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// A component of the same kind and name is already registered.
    #[error("a {kind} named '{name}' is already registered; names are unique per kind")]
    Duplicate {
        /// Kind of the component.
        kind: ComponentKind,
        /// The clashing name.
        name: String,
    },
    /// The name is empty, too long, or has characters that do not fit in a URL path segment.
    #[error("invalid {kind} name {name:?}: {NAME_RULE}")]
    InvalidName {
        /// Kind of the component.
        kind: ComponentKind,
        /// The refused name.
        name: String,
    },
}

/// The rule [`is_valid_name`] checks, as error messages state it.
pub const NAME_RULE: &str =
    "use 1 to 128 characters from A-Z a-z 0-9 - _ . : (no spaces or slashes)";

/// Returns `true` for names that are safe in admin URLs, metric labels and Redis keys.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// What component builders call: `Ok` for a valid name, else a [`ConfigError`] on field `name`.
pub fn check_name(name: &str) -> Result<(), crate::ConfigError> {
    if is_valid_name(name) {
        return Ok(());
    }
    Err(crate::ConfigError::new(
        "name",
        format!("{name:?} is not a valid name; {NAME_RULE}"),
    ))
}

/// The event bus a component built with `registry` (or without one) publishes to: the
/// registry's, or a small private bus timestamped by `clock`.
pub fn bus_for(registry: Option<&Registry>, clock: crate::SharedClock) -> EventBus {
    match registry {
        Some(r) => r.events().clone(),
        None => EventBus::with_clock(64, clock),
    }
}

/// A component's snapshot with its identity, as listed by [`Registry::snapshot_all`] (and, read
/// back, as another instance published it).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ComponentSnapshot {
    /// The component's kind.
    pub kind: ComponentKind,
    /// The component's name.
    pub name: String,
    /// Its [`Inspect::snapshot`](crate::Inspect::snapshot) as JSON.
    pub snapshot: serde_json::Value,
}

type Key = (ComponentKind, String);

struct Inner {
    components: RwLock<BTreeMap<Key, Arc<dyn Component>>>,
    events: EventBus,
}

/// Named components, an event bus, and JSON access to both. Cheap to clone (an `Arc`).
///
/// Components register themselves when built with the registry (`.registry(&registry)` on
/// their builders); the admin router then lists, inspects and controls them by kind and name.
///
/// ```
/// use palisade_core::{ComponentKind, Registry};
///
/// let registry = Registry::new();
/// assert!(registry.list(ComponentKind::CircuitBreaker).is_empty());
/// assert!(registry.get(ComponentKind::CircuitBreaker, "slack").is_none());
/// ```
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .inner
            .components
            .read()
            .keys()
            .map(|(k, n)| format!("{k}/{n}"))
            .collect();
        f.debug_struct("Registry")
            .field("components", &names)
            .finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry with an [`EventBus`] of default capacity.
    pub fn new() -> Self {
        Self::with_events(EventBus::default())
    }

    /// An empty registry publishing to `events`.
    pub fn with_events(events: EventBus) -> Self {
        Self {
            inner: Arc::new(Inner {
                components: RwLock::new(BTreeMap::new()),
                events,
            }),
        }
    }

    /// The event bus shared by every component of this registry.
    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    /// Registers `component` under its kind and name.
    pub fn register(&self, component: Arc<dyn Component>) -> Result<(), RegistryError> {
        let kind = component.kind();
        let name = component.name().to_owned();
        if !is_valid_name(&name) {
            return Err(RegistryError::InvalidName { kind, name });
        }
        let mut map = self.inner.components.write();
        let key = (kind, name);
        if map.contains_key(&key) {
            return Err(RegistryError::Duplicate { kind, name: key.1 });
        }
        let name = key.1.clone();
        map.insert(key, component);
        drop(map);
        self.inner.events.publish(
            kind,
            &name,
            EventKind::Notice {
                message: "registered".into(),
                details: serde_json::Value::Null,
            },
        );
        Ok(())
    }

    /// Removes a component; returns it if it was registered.
    pub fn deregister(&self, kind: ComponentKind, name: &str) -> Option<Arc<dyn Component>> {
        let removed = self
            .inner
            .components
            .write()
            .remove(&(kind, name.to_owned()));
        if removed.is_some() {
            self.inner.events.publish(
                kind,
                name,
                EventKind::Notice {
                    message: "deregistered".into(),
                    details: serde_json::Value::Null,
                },
            );
        }
        removed
    }

    /// The component of `kind` named `name`.
    pub fn get(&self, kind: ComponentKind, name: &str) -> Option<Arc<dyn Component>> {
        self.inner
            .components
            .read()
            .get(&(kind, name.to_owned()))
            .cloned()
    }

    /// Names of all components of `kind`, sorted.
    pub fn list(&self, kind: ComponentKind) -> Vec<String> {
        self.inner
            .components
            .read()
            .keys()
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// Every component, sorted by kind then name.
    pub fn components(&self) -> Vec<Arc<dyn Component>> {
        self.inner.components.read().values().cloned().collect()
    }

    /// The snapshot of one component.
    pub fn snapshot(
        &self,
        kind: ComponentKind,
        name: &str,
    ) -> Result<serde_json::Value, ControlError> {
        self.get(kind, name)
            .map(|c| c.snapshot_json())
            .ok_or_else(|| ControlError::NotFound {
                kind,
                name: name.to_owned(),
            })
    }

    /// Snapshots of every component (of one kind, when `kind` is given).
    pub fn snapshot_all(&self, kind: Option<ComponentKind>) -> Vec<ComponentSnapshot> {
        // Take the handles first so no snapshot runs under the registry lock.
        let handles: Vec<_> = self
            .inner
            .components
            .read()
            .iter()
            .filter(|((k, _), _)| kind.is_none_or(|want| *k == want))
            .map(|(_, c)| c.clone())
            .collect();
        handles
            .into_iter()
            .map(|c| ComponentSnapshot {
                kind: c.kind(),
                name: c.name().to_owned(),
                snapshot: c.snapshot_json(),
            })
            .collect()
    }

    /// Sends a JSON command to one component and records it as an admin action event.
    pub async fn control(
        &self,
        kind: ComponentKind,
        name: &str,
        command: serde_json::Value,
    ) -> Result<serde_json::Value, ControlError> {
        let component = self.get(kind, name).ok_or_else(|| ControlError::NotFound {
            kind,
            name: name.to_owned(),
        })?;
        let action = command
            .get("action")
            .and_then(|a| a.as_str())
            .unwrap_or("command")
            .to_owned();
        let out = component.control_json(command).await?;
        self.inner
            .events
            .publish(kind, name, EventKind::AdminAction { action });
        Ok(out)
    }

    /// Asks every component to push its figures to the `metrics` recorder.
    pub fn export_metrics(&self) {
        for c in self.components() {
            c.export_metrics();
        }
    }
}
