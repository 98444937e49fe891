//! Snapshots, operator commands and metrics: the fallback as a registry component.

use std::collections::BTreeMap;

use palisade_core::{ComponentKind, Control, ControlError, Inspect, Managed, async_trait};
use serde::{Deserialize, Serialize};

use super::handle::Fallback;
use super::kind::FailureKind;

/// `palisade_fallback_used_total{name, kind}`: errors a fallback answered.
pub const FALLBACK_USED_TOTAL: &str = "palisade_fallback_used_total";
/// `palisade_fallback_passed_total{name}`: errors it let through.
pub const FALLBACK_PASSED_TOTAL: &str = "palisade_fallback_passed_total";

/// Operator commands, as sent to `POST /admin/fallbacks/{name}`: `{"action": "disable"}` lets
/// every error through (to see the real failures), `{"action": "enable"}` answers them again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum FallbackCommand {
    /// Answer errors again.
    Enable,
    /// Let every error through.
    Disable,
}

/// What an operator sees of a fallback.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FallbackSnapshot {
    /// The fallback's name.
    pub name: String,
    /// Whether it answers errors now.
    pub enabled: bool,
    /// The kinds it answers.
    pub kinds: Vec<FailureKind>,
    /// Errors it answered.
    pub used_total: u64,
    /// Errors it answered, by kind (kinds never used left out).
    pub used_by_kind: BTreeMap<FailureKind, u64>,
    /// Errors it let through.
    pub passed_total: u64,
}

impl<T: Clone, E> Fallback<T, E> {
    /// A snapshot of its kinds and counters.
    pub fn snapshot(&self) -> FallbackSnapshot {
        let s = &*self.shared;
        let used_by_kind: BTreeMap<FailureKind, u64> = FailureKind::ALL
            .into_iter()
            .map(|k| (k, s.used[k.index()].get()))
            .filter(|(_, n)| *n > 0)
            .collect();
        FallbackSnapshot {
            name: s.name.to_string(),
            enabled: self.enabled(),
            kinds: s.kinds(),
            used_total: used_by_kind.values().sum(),
            used_by_kind,
            passed_total: s.passed.get(),
        }
    }

    /// Applies an operator command; returns the snapshot after it.
    pub fn apply_command(&self, command: FallbackCommand) -> FallbackSnapshot {
        match command {
            FallbackCommand::Enable => self.set_enabled(true),
            FallbackCommand::Disable => self.set_enabled(false),
        }
        self.snapshot()
    }
}

impl<T: Clone + Send + Sync + 'static, E: Send + Sync + 'static> Inspect for Fallback<T, E> {
    type Snapshot = FallbackSnapshot;

    fn snapshot(&self) -> FallbackSnapshot {
        Fallback::snapshot(self)
    }
}

#[async_trait]
impl<T: Clone + Send + Sync + 'static, E: Send + Sync + 'static> Control for Fallback<T, E> {
    type Command = FallbackCommand;
    type Output = FallbackSnapshot;

    async fn control(&self, command: FallbackCommand) -> Result<FallbackSnapshot, ControlError> {
        Ok(self.apply_command(command))
    }
}

impl<T: Clone + Send + Sync + 'static, E: Send + Sync + 'static> Managed for Fallback<T, E> {
    const KIND: ComponentKind = ComponentKind::Fallback;

    fn name(&self) -> &str {
        Fallback::name(self)
    }

    fn export_metrics(&self) {
        let snap = self.snapshot();
        for (kind, n) in &snap.used_by_kind {
            metrics::counter!(FALLBACK_USED_TOTAL, "name" => snap.name.clone(), "kind" => kind.as_str())
                .absolute(*n);
        }
        metrics::counter!(FALLBACK_PASSED_TOTAL, "name" => snap.name).absolute(snap.passed_total);
    }
}
