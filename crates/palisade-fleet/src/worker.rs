//! The command loop: reads the fleet's stream in order, applies each command to the local
//! registry and records the outcome and the instance's cursor.
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `palisade:fleet:{f}:cursor:<instance>` | string | the last stream id this instance handled; kept `max(catch_up, 24 h)` past its last write or heartbeat |
//!
//! At start (in [`Fleet::join`](crate::Fleet::join), or as soon as Redis answers) one script
//! reads the instance's cursor and every override: the overrides are re-applied, then the loop
//! reads from the cursor — or, for an instance id without a cursor, from the stream's last
//! entry, so a new instance does not replay commands sent before it existed (the overrides are
//! how the fleet's durable state reaches it). Commands whose id (Redis time) is older than
//! `catch_up` are skipped, with a log line and no outcome.

use std::sync::Arc;
use std::time::Duration;

use palisade_core::redis::RedisConnection;

use crate::apply::apply;
use crate::backoff::Backoff;
use crate::command::{Envelope, Outcome};
use crate::config::millis;
use crate::error::FleetError;
use crate::fleet::{RETRY_MAX, RETRY_MIN, Shared};
use crate::overrides;
use crate::reply::{StreamEntry, stream_id};

/// How long one blocking stream read waits for a command.
pub(crate) const BLOCK: Duration = Duration::from_secs(5);

/// The command loop of one instance.
pub(crate) struct Worker {
    shared: Arc<Shared>,
    /// The connection of the blocking reads (a blocked read holds its connection).
    reader: RedisConnection,
    /// The last stream id handled; `None` until the start script ran.
    position: Option<String>,
    /// A command handled whose outcome and cursor are not yet in Redis: stream id, outcome.
    pending: Option<(String, Option<String>)>,
}

impl Worker {
    pub(crate) fn new(shared: Arc<Shared>, reader: RedisConnection) -> Self {
        Worker {
            shared,
            reader,
            position: None,
            pending: None,
        }
    }

    /// Reads the starting point and the overrides, and re-applies the overrides.
    pub(crate) async fn start(&mut self) -> Result<(), FleetError> {
        let s = &self.shared;
        let sync = s.store.sync(s.config.cursor_retention()).await?;
        let applied = overrides::reapply(s, &sync.overrides).await;
        tracing::info!(
            target: "palisade::fleet", fleet = %s.config.fleet, instance = %s.config.instance_id,
            overrides = sync.overrides.len(), overrides_applied = applied, resumed = sync.resumed,
            from = %sync.start, redis_time_ms = sync.now_ms,
            "overrides re-applied; reading fleet commands"
        );
        self.position = Some(sync.start);
        Ok(())
    }

    /// Handles every command already in the stream after the position, without waiting for
    /// new ones; returns how many.
    pub(crate) async fn catch_up(&mut self) -> Result<usize, FleetError> {
        let mut total = 0;
        loop {
            self.flush().await?;
            let Some(position) = self.position.clone() else {
                return Ok(total);
            };
            let batch = self
                .shared
                .store
                .read(&self.reader, &position, None)
                .await?;
            if batch.is_empty() {
                return Ok(total);
            }
            total += self.handle(batch).await?;
        }
    }

    /// Runs until aborted: starts if it has not yet, then reads (blocking up to [`BLOCK`]) and
    /// handles commands; retries with backoff while Redis fails, one warning per outage.
    pub(crate) async fn run(mut self) {
        let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
        loop {
            match self.step().await {
                Ok(()) => {
                    let failures = backoff.succeed();
                    if failures > 0 {
                        tracing::info!(
                            target: "palisade::fleet", fleet = %self.shared.config.fleet,
                            instance = %self.shared.config.instance_id, failures,
                            "fleet commands reach this instance again"
                        );
                    }
                }
                Err(e) => {
                    let (delay, first) = backoff.fail();
                    if first {
                        tracing::warn!(
                            target: "palisade::fleet", fleet = %self.shared.config.fleet,
                            instance = %self.shared.config.instance_id, error = %e,
                            "cannot read fleet commands; retrying with backoff"
                        );
                    } else {
                        tracing::debug!(
                            target: "palisade::fleet", fleet = %self.shared.config.fleet,
                            instance = %self.shared.config.instance_id, error = %e,
                            "cannot read fleet commands yet"
                        );
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn step(&mut self) -> Result<(), FleetError> {
        let Some(position) = self.position.clone() else {
            return self.start().await;
        };
        self.flush().await?;
        let batch = self
            .shared
            .store
            .read(&self.reader, &position, Some(BLOCK))
            .await?;
        self.handle(batch).await.map(drop)
    }

    /// Applies (or skips, when older than `catch_up`) each command of `batch` in order and
    /// records it; returns how many were handled.
    async fn handle(&mut self, batch: Vec<StreamEntry>) -> Result<usize, FleetError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let now = self.shared.store.time_ms().await?;
        let cutoff = now.saturating_sub(millis(self.shared.config.catch_up));
        let count = batch.len();
        for entry in batch {
            let too_old = stream_id(&entry.id).is_some_and(|(ms, _)| ms < cutoff);
            let outcome = if too_old {
                tracing::info!(
                    target: "palisade::fleet", fleet = %self.shared.config.fleet,
                    instance = %self.shared.config.instance_id, id = %entry.id,
                    "fleet command older than the catch-up window skipped"
                );
                None
            } else {
                let outcome = self.apply(&entry).await;
                Some(serde_json::to_string(&outcome).unwrap_or_else(|_| {
                    r#"{"status":"refused","reason":"unserializable outcome"}"#.to_owned()
                }))
            };
            self.position = Some(entry.id.clone());
            self.pending = Some((entry.id, outcome));
            self.flush().await?;
        }
        Ok(count)
    }

    /// Records the pending outcome and cursor, if any.
    async fn flush(&mut self) -> Result<(), FleetError> {
        if let Some((id, outcome)) = &self.pending {
            let c = &self.shared.config;
            self.shared
                .store
                .record(id, outcome.as_deref(), c.catch_up, c.cursor_retention())
                .await?;
            self.pending = None;
        }
        Ok(())
    }

    async fn apply(&self, entry: &StreamEntry) -> Outcome {
        let s = &self.shared;
        let (fleet, instance) = (&s.config.fleet, &s.config.instance_id);
        let envelope = entry
            .cmd
            .as_deref()
            .ok_or_else(|| "the entry has no `cmd` field".to_owned())
            .and_then(|cmd| serde_json::from_str::<Envelope>(cmd).map_err(|e| e.to_string()));
        let envelope = match envelope {
            Ok(e) => e,
            Err(reason) => {
                tracing::warn!(
                    target: "palisade::fleet", fleet = %fleet, instance = %instance,
                    id = %entry.id, reason = %reason, "unreadable fleet command refused"
                );
                return Outcome::Refused {
                    reason: format!("unreadable fleet command: {reason}"),
                    error: serde_json::json!({"error": "unreadable_command"}),
                };
            }
        };
        let actor = format!(
            "{} via fleet {fleet} (command {}, sent from {}, applied on {instance})",
            envelope.actor, entry.id, envelope.origin
        );
        let (kind, name) = (envelope.kind, envelope.name);
        let outcome = apply(s, kind, &name, envelope.command, actor).await;
        match &outcome {
            Outcome::Refused { reason, .. } => tracing::info!(
                target: "palisade::fleet", fleet = %fleet, instance = %instance, id = %entry.id,
                component_kind = kind.as_str(), component = %name, reason = %reason,
                "fleet command refused"
            ),
            _ => tracing::info!(
                target: "palisade::fleet", fleet = %fleet, instance = %instance, id = %entry.id,
                component_kind = kind.as_str(), component = %name, actor = %envelope.actor,
                "fleet command applied"
            ),
        }
        outcome
    }
}
