//! # palisade-dlq
//!
//! Dead-letter queues for failed operations, with typed retry and nothing lost.
//!
//! - [`DeadLetterQueue<T>`] for any serde payload `T`, over a [`Store`]: [`RedisStore`]
//!   (feature `redis`, on by default) or [`MemoryStore`] (the embedded default when
//!   `REDIS_URL` is unset; same behaviour, same tests).
//! - Each entry keeps its operation, payload, [`FailureKind`], error (bounded), attempts, first
//!   and last failure, next attempt, metadata and a short failure history.
//! - A retry policy per kind ([`Policies`]): attempts and exponential or fixed backoff;
//!   client errors are parked at once by default.
//! - [`DeadLetterQueue::worker`]: claims due entries under a lease with a concurrency bound;
//!   acks and fails are fenced by the lease's token, so a worker whose lease expired cannot
//!   ack an entry someone else now holds; a dead worker's entries are delivered again.
//! - Operator API: list with filters and a cursor, get, retry (one or by filter, returning
//!   `{retried, failed}`), discard, purge, stats with warn/critical thresholds; retention by
//!   age and size, every removal counted. Entries whose payload no longer decodes are
//!   quarantined with their raw bytes.
//! - Snapshots, events, metrics and admin commands through [`palisade_core`].
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::{ComponentKind, Registry};
//! use palisade_dlq::{DeadLetterQueue, Failure};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let registry = Registry::new();
//! let dlq = DeadLetterQueue::<serde_json::Value>::builder("tool-calls")
//!     .registry(&registry)
//!     .build()?;
//! dlq.push("github.create_issue", &serde_json::json!({"title": "flaky"}),
//!          Failure::client_error("422 validation failed")).await?;
//!
//! // Operators list parked entries and discard one with admin requests.
//! let page = registry
//!     .control(ComponentKind::DeadLetterQueue, "tool-calls",
//!              serde_json::json!({"action": "list", "state": "parked"}))
//!     .await?;
//! let id = page["entries"][0]["id"].as_u64().unwrap();
//! registry
//!     .control(ComponentKind::DeadLetterQueue, "tool-calls",
//!              serde_json::json!({"action": "discard", "id": id}))
//!     .await?;
//! assert_eq!(dlq.stats().await?.store.total, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod config;
mod control;
mod failure;
mod memory;
mod policy;
mod queue;
#[cfg(feature = "redis")]
mod redis_store;
mod store;
mod worker;

pub use config::{DlqConfig, ReplicaWait};
pub use control::{DlqCommand, DlqSnapshot};
pub use failure::{Failure, FailureKind};
pub use memory::MemoryStore;
pub use policy::{Backoff, MAX_BACKOFF, Policies, RetryPolicy, Schedule};
pub use queue::{Builder, DeadLetterQueue, DlqError, Entry, EntryView, Level, RetryReport, Stats};
#[cfg(feature = "redis")]
pub use redis_store::RedisStore;
pub use store::{
    EntryId, EntryState, FailureRecord, Filter, HISTORY_LEN, Lease, NewEntry, Page, Store,
    StoreError, StoreStats, StoredEntry, Totals, Trimmed,
};
pub use worker::{Worker, WorkerSnapshot};
