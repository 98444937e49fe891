//! Snapshots, operator commands and metrics export: the queue as a registry component.

use palisade_core::{
    ComponentKind, Control, ControlError, Inspect, Managed, async_trait, metrics as names,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::DlqConfig;
use crate::failure::FailureKind;
use crate::queue::{self, DeadLetterQueue, DlqError, Stats};
use crate::store::{EntryId, EntryState, Filter};
use crate::worker::WorkerSnapshot;

/// Operator commands, as sent to `POST /admin/dlq/{queue}`:
/// `{"action": "retry", "kind": "timeout"}` or `{"action": "discard", "id": 42}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum DlqCommand {
    /// Entries matching the filter, oldest first, after the cursor `after`.
    List {
        /// Only this kind.
        #[serde(default)]
        kind: Option<FailureKind>,
        /// Only this operation.
        #[serde(default)]
        operation: Option<String>,
        /// Only this state.
        #[serde(default)]
        state: Option<EntryState>,
        /// The cursor returned as `next` by the previous page.
        #[serde(default)]
        after: Option<EntryId>,
        /// Page size (1 to 1000). Default 50.
        #[serde(default)]
        limit: Option<usize>,
    },
    /// One entry.
    Get {
        /// Its id.
        id: EntryId,
    },
    /// Make one entry (`id`) or every entry matching the filter due now; returns
    /// `{retried, failed}`.
    Retry {
        /// One entry.
        #[serde(default)]
        id: Option<EntryId>,
        /// Only this kind.
        #[serde(default)]
        kind: Option<FailureKind>,
        /// Only this operation.
        #[serde(default)]
        operation: Option<String>,
        /// Only this state.
        #[serde(default)]
        state: Option<EntryState>,
    },
    /// Remove one entry (`id`) or every entry matching the filter. A discard by filter needs
    /// at least one filter field; use `purge` to remove everything.
    Discard {
        /// One entry.
        #[serde(default)]
        id: Option<EntryId>,
        /// Only this kind.
        #[serde(default)]
        kind: Option<FailureKind>,
        /// Only this operation.
        #[serde(default)]
        operation: Option<String>,
        /// Only this state.
        #[serde(default)]
        state: Option<EntryState>,
    },
    /// Remove every entry.
    Purge,
    /// Fresh counts and counters.
    Stats,
    /// Apply retention now.
    Trim,
}

/// What an operator sees of a queue without asking the store: the counts as of the last
/// `stats` (refreshed by the worker every `trim_interval`, and by every command), the worker's
/// counters and config.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DlqSnapshot {
    /// The queue's name.
    pub name: String,
    /// `redis` or `memory`.
    pub backend: &'static str,
    /// Counts, counters and threshold level, as of `stats.now_ms`.
    pub stats: Option<Stats>,
    /// The retry worker, if one was started.
    pub worker: Option<WorkerSnapshot>,
    /// The config in force.
    pub config: DlqConfig,
}

impl<T> DeadLetterQueue<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// The snapshot (no store round trip).
    pub fn snapshot(&self) -> DlqSnapshot {
        let s = &*self.inner;
        DlqSnapshot {
            name: s.name.to_string(),
            backend: s.store.backend(),
            stats: s.cached.lock().clone(),
            worker: s.worker.lock().as_ref().map(|w| w.snapshot()),
            config: DlqConfig::clone(&s.config()),
        }
    }

    /// Applies an operator command; returns its result as JSON.
    pub async fn apply(&self, command: DlqCommand) -> Result<serde_json::Value, ControlError> {
        let s = &*self.inner;
        let backend = |e: DlqError| ControlError::Backend {
            reason: e.to_string(),
        };
        let out = match command {
            DlqCommand::List {
                kind,
                operation,
                state,
                after,
                limit,
            } => {
                let filter = Filter {
                    kind,
                    operation,
                    state,
                };
                to_json(
                    &queue::list(s, &filter, after, limit.unwrap_or(50))
                        .await
                        .map_err(backend)?,
                )
            }
            DlqCommand::Get { id } => {
                let page = s.store.get(id).await.map_err(|e| backend(s.store_err(e)))?;
                match page {
                    Some(e) => to_json(&queue::view(e)),
                    None => {
                        return Err(ControlError::Rejected {
                            action: "get".into(),
                            reason: format!("no entry {id} in queue '{}'", s.name),
                        });
                    }
                }
            }
            DlqCommand::Retry {
                id: Some(id),
                kind: None,
                operation: None,
                state: None,
            } => {
                if queue::retry_one(s, id).await.map_err(backend)? {
                    serde_json::json!({"retried": 1, "failed": 0})
                } else {
                    // Say why: an unknown id is the operator's mistake, a leased entry is not.
                    let entry = s.store.get(id).await.map_err(|e| backend(s.store_err(e)))?;
                    let reason = match entry {
                        None => format!("no entry {id} in queue '{}'", s.name),
                        Some(e) => format!(
                            "entry {id} is {}: only scheduled or parked entries can be retried",
                            e.state.as_str()
                        ),
                    };
                    return Err(ControlError::Rejected {
                        action: "retry".into(),
                        reason,
                    });
                }
            }
            DlqCommand::Retry {
                id: None,
                kind,
                operation,
                state,
            } => to_json(
                &queue::retry_matching(
                    s,
                    &Filter {
                        kind,
                        operation,
                        state,
                    },
                )
                .await
                .map_err(backend)?,
            ),
            DlqCommand::Discard {
                id: Some(id),
                kind: None,
                operation: None,
                state: None,
            } => {
                let ok = queue::discard_one(s, id).await.map_err(backend)?;
                serde_json::json!({"discarded": u64::from(ok)})
            }
            DlqCommand::Discard {
                id: None,
                kind,
                operation,
                state,
            } => {
                if kind.is_none() && operation.is_none() && state.is_none() {
                    return Err(ControlError::Rejected {
                        action: "discard".into(),
                        reason: "give an id or at least one of kind, operation, state; \
                                 use purge to remove everything"
                            .into(),
                    });
                }
                let n = queue::discard_matching(
                    s,
                    &Filter {
                        kind,
                        operation,
                        state,
                    },
                )
                .await
                .map_err(backend)?;
                serde_json::json!({"discarded": n})
            }
            DlqCommand::Retry { .. } | DlqCommand::Discard { .. } => {
                return Err(ControlError::Rejected {
                    action: "retry/discard".into(),
                    reason: "give either an id or a filter, not both".into(),
                });
            }
            DlqCommand::Purge => {
                serde_json::json!({"purged": queue::purge(s).await.map_err(backend)?})
            }
            DlqCommand::Stats => to_json(&queue::stats(s).await.map_err(backend)?),
            DlqCommand::Trim => to_json(&s.trim().await.map_err(backend)?),
        };
        // Keep the snapshot's counts fresh after every command.
        if let Err(e) = queue::stats(s).await {
            tracing::debug!(target: "palisade::dlq", queue = %s.name, error = %e, "stats refresh failed");
        }
        Ok(out)
    }
}

/// A result as JSON (serialization of these plain types cannot fail; if it did, the error is
/// reported in the JSON rather than as a panic).
fn to_json<S: Serialize>(v: &S) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_else(|e| serde_json::json!({"error": e.to_string()}))
}

impl<T> Inspect for DeadLetterQueue<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Snapshot = DlqSnapshot;

    fn snapshot(&self) -> DlqSnapshot {
        DeadLetterQueue::snapshot(self)
    }
}

#[async_trait]
impl<T> Control for DeadLetterQueue<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Command = DlqCommand;
    type Output = serde_json::Value;

    async fn control(&self, command: DlqCommand) -> Result<serde_json::Value, ControlError> {
        self.apply(command).await
    }
}

impl<T> Managed for DeadLetterQueue<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    const KIND: ComponentKind = ComponentKind::DeadLetterQueue;

    fn name(&self) -> &str {
        DeadLetterQueue::name(self)
    }

    fn export_metrics(&self) {
        let snap = DeadLetterQueue::snapshot(self);
        let name = snap.name;
        let Some(stats) = snap.stats else { return };
        for state in EntryState::ALL {
            let n = stats.store.by_state.get(&state).copied().unwrap_or(0);
            metrics::gauge!(names::DLQ_ENTRIES, "name" => name.clone(), "state" => state.as_str())
                .set(n as f64);
        }
        let t = &stats.store.totals;
        metrics::counter!(names::DLQ_ENQUEUED_TOTAL, "name" => name.clone()).absolute(t.enqueued);
        metrics::counter!(names::DLQ_ACKED_TOTAL, "name" => name.clone()).absolute(t.acked);
        metrics::counter!(names::DLQ_PARKED_TOTAL, "name" => name.clone()).absolute(t.parked);
        metrics::counter!(names::DLQ_QUARANTINED_TOTAL, "name" => name.clone())
            .absolute(t.quarantined);
        metrics::counter!(names::DLQ_REMOVED_TOTAL, "name" => name.clone(), "reason" => "expired")
            .absolute(t.expired);
        metrics::counter!(names::DLQ_REMOVED_TOTAL, "name" => name.clone(), "reason" => "evicted")
            .absolute(t.evicted);
        metrics::gauge!(names::DLQ_OLDEST_AGE_SECONDS, "name" => name)
            .set(stats.oldest_age_ms.unwrap_or(0) as f64 / 1000.0);
    }
}
