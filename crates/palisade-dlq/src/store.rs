//! The storage contract: what a dead-letter queue needs from Redis (or memory), as atomic
//! operations on raw entries. Every operation is one atomic step of the store (one Lua script on
//! Redis, one critical section in memory), timestamped by the store's own clock (Redis `TIME`).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::failure::FailureKind;
use crate::policy::Schedule;

/// An entry's identifier, unique within its queue, increasing with enqueue order.
pub type EntryId = u64;

/// Where an entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    /// Waiting for its next attempt (`next_attempt_ms`).
    Scheduled,
    /// Held by a worker until its lease expires.
    Leased,
    /// Retries exhausted or pointless; kept for an operator.
    Parked,
    /// Its payload no longer decodes; kept with its raw bytes for an operator.
    Quarantined,
}

impl EntryState {
    /// All states.
    pub const ALL: [EntryState; 4] = [
        EntryState::Scheduled,
        EntryState::Leased,
        EntryState::Parked,
        EntryState::Quarantined,
    ];

    /// The snake_case name used in JSON and Redis.
    pub const fn as_str(self) -> &'static str {
        match self {
            EntryState::Scheduled => "scheduled",
            EntryState::Leased => "leased",
            EntryState::Parked => "parked",
            EntryState::Quarantined => "quarantined",
        }
    }
}

impl std::str::FromStr for EntryState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        EntryState::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown state '{s}'; expected scheduled, leased, parked or quarantined")
            })
    }
}

/// One past failure of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// When it failed, in milliseconds since the Unix epoch (store time).
    pub at_ms: u64,
    /// Its kind.
    pub kind: FailureKind,
    /// Its message (truncated).
    pub error: String,
}

/// An entry as the store keeps it: the payload is opaque bytes (JSON of the queue's type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    /// Identifier.
    pub id: EntryId,
    /// The failed operation's name (`"slack.post_message"`).
    pub operation: String,
    /// The serialized payload.
    pub payload: Vec<u8>,
    /// The kind of the latest failure.
    pub kind: FailureKind,
    /// The latest failure's message.
    pub error: String,
    /// Failures so far (1 after the original failure).
    pub attempts: u32,
    /// The original failure's time (ms since the Unix epoch, store time).
    pub first_failed_ms: u64,
    /// The latest failure's time.
    pub last_failed_ms: u64,
    /// When it is due again (`scheduled`), or `None`.
    pub next_attempt_ms: Option<u64>,
    /// Where it is in its life.
    pub state: EntryState,
    /// Free-form metadata (trace id, tenant).
    pub metadata: BTreeMap<String, String>,
    /// Earlier failures, oldest first (at most [`HISTORY_LEN`]).
    pub history: Vec<FailureRecord>,
    /// For `leased`: when the lease expires.
    pub lease_until_ms: Option<u64>,
}

/// Past failures kept per entry.
pub const HISTORY_LEN: usize = 5;

/// A new entry for [`Store::enqueue`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    /// The failed operation's name.
    pub operation: String,
    /// The serialized payload.
    pub payload: Vec<u8>,
    /// The failure's kind.
    pub kind: FailureKind,
    /// Its message (already truncated).
    pub error: String,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// When to retry it, or park it at once.
    pub schedule: Schedule,
}

/// An entry claimed by a worker: only the holder of `token` may ack or fail it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The entry (state `leased`).
    pub entry: StoredEntry,
    /// The fencing token of this lease.
    pub token: u64,
    /// How many times the entry has been claimed since its last recorded outcome (a failure,
    /// or an operator's retry), this claim included. Above 1, earlier holders died with it:
    /// the worker quarantines an entry delivered more than `max_deliveries` times (poison).
    pub deliveries: u32,
}

/// Which entries an operator means. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    /// Only this failure kind.
    pub kind: Option<FailureKind>,
    /// Only this operation.
    pub operation: Option<String>,
    /// Only this state.
    pub state: Option<EntryState>,
}

impl Filter {
    /// Whether `e` matches.
    pub fn matches(&self, e: &StoredEntry) -> bool {
        self.kind.is_none_or(|k| k == e.kind)
            && self.operation.as_deref().is_none_or(|o| o == e.operation)
            && self.state.is_none_or(|s| s == e.state)
    }
}

/// A page of entries, oldest first; pass `next` back as `after` for the following page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<E> {
    /// The entries.
    pub entries: Vec<E>,
    /// The cursor for the next page, `None` at the end.
    pub next: Option<EntryId>,
}

/// Lifetime counters of a queue, kept by the store (so they survive restarts of the process).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Entries ever enqueued.
    pub enqueued: u64,
    /// Entries acknowledged (retried successfully) and removed.
    pub acked: u64,
    /// Transitions to `parked`.
    pub parked: u64,
    /// Entries an operator sent back to `scheduled`.
    pub retried: u64,
    /// Entries an operator discarded.
    pub discarded: u64,
    /// Entries quarantined.
    pub quarantined: u64,
    /// Entries removed by the time-to-live.
    pub expired: u64,
    /// Entries removed because the queue was at its maximum size.
    pub evicted: u64,
    /// Entries removed by a purge.
    pub purged: u64,
}

/// A queue's contents and counters, from the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Entries per state.
    pub by_state: BTreeMap<EntryState, u64>,
    /// Entries per failure kind (latest failure).
    pub by_kind: BTreeMap<FailureKind, u64>,
    /// Entries in all.
    pub total: u64,
    /// The oldest entry's original failure time (ms since the Unix epoch), if any.
    pub oldest_first_failed_ms: Option<u64>,
    /// The store's clock now (ms since the Unix epoch).
    pub now_ms: u64,
    /// Lifetime counters.
    pub totals: Totals,
}

/// What [`Store::trim`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Trimmed {
    /// Older than the time to live.
    pub expired: u64,
    /// Over the maximum size (oldest first).
    pub evicted: u64,
}

/// Why a store operation failed. Nothing was changed when one is returned, except where the
/// variant says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend (Redis) failed or could not be reached; retrying may succeed.
    #[error("dead-letter store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read (a corrupt or foreign Redis entry); the message names the
    /// entry and field. The entry is left where it is for an operator to inspect or discard (a
    /// worker's claim moves it to the quarantine instead of handing it out).
    #[error("corrupt dead-letter entry: {0}")]
    Corrupt(String),
    /// The write **was applied** on the Redis primary, but fewer replicas than asked
    /// acknowledged it before the timeout (see
    /// [`RedisStore::wait_for_replicas`](crate::RedisStore::wait_for_replicas)). The change is
    /// not undone: it stands on the primary and is lost only if the primary fails over before
    /// a replica has it, so the caller cannot know whether it survives a failover. Retrying an
    /// enqueue may store the entry twice but never loses it.
    #[error(
        "dead-letter write reached the Redis primary but only {acked} of {wanted} replicas \
         acknowledged it in time: it may be lost at failover"
    )]
    NotReplicated {
        /// Replicas that acknowledged the write (Redis `WAIT`'s reply).
        acked: u32,
        /// Replicas asked for.
        wanted: u32,
    },
}

/// Atomic operations on a queue's entries. Implemented by [`RedisStore`](crate::RedisStore) and
/// [`MemoryStore`](crate::MemoryStore); both pass the same behavioural test suite.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The backend's name (`"redis"`, `"memory"`).
    fn backend(&self) -> &'static str;

    /// Adds an entry (attempts 1, first and last failure now), scheduled or parked. When the
    /// queue holds `max_entries` already, the oldest entries are evicted (counted) first.
    async fn enqueue(&self, entry: NewEntry, max_entries: u64) -> Result<EntryId, StoreError>;

    /// Claims up to `max` due entries for `lease`. Entries whose lease has expired are due
    /// again first (a worker died holding them). Each claim call gets a fresh fencing token
    /// (the entries of one call may share it): an entry claimed again later always gets a
    /// different one.
    async fn claim(&self, max: usize, lease: Duration) -> Result<Vec<Lease>, StoreError>;

    /// Acknowledges a leased entry (removes it). `false` when `token` is not the current
    /// lease's (the lease expired and someone else holds the entry, or it was discarded).
    async fn ack(&self, id: EntryId, token: u64) -> Result<bool, StoreError>;

    /// Extends a lease to `lease` from now, while a handler still works on the entry. `false`
    /// when `token` is not the current lease's any more (the lease expired and another worker
    /// claimed the entry, or it was discarded or retried): the caller must stop working on it.
    async fn extend(&self, id: EntryId, token: u64, lease: Duration) -> Result<bool, StoreError>;

    /// Acknowledges several leased entries in one step (one script on Redis); for each, whether
    /// its token was current. The default acks one by one.
    async fn ack_many(&self, acks: &[(EntryId, u64)]) -> Result<Vec<bool>, StoreError> {
        let mut out = Vec::with_capacity(acks.len());
        for &(id, token) in acks {
            out.push(self.ack(id, token).await?);
        }
        Ok(out)
    }

    /// Records another failure of a leased entry: attempts + 1, the previous failure moves to
    /// the history, and the entry is rescheduled or parked. `false` when `token` is stale.
    async fn fail(
        &self,
        id: EntryId,
        token: u64,
        kind: FailureKind,
        error: &str,
        schedule: Schedule,
    ) -> Result<bool, StoreError>;

    /// Moves an entry whose payload does not decode to the quarantine (raw bytes kept). With a
    /// token, only if that lease is current.
    async fn quarantine(
        &self,
        id: EntryId,
        token: Option<u64>,
        reason: &str,
    ) -> Result<bool, StoreError>;

    /// One entry.
    async fn get(&self, id: EntryId) -> Result<Option<StoredEntry>, StoreError>;

    /// Up to `limit` entries matching `filter` with ids greater than `after`, oldest first.
    async fn list(
        &self,
        filter: &Filter,
        after: Option<EntryId>,
        limit: usize,
    ) -> Result<Page<StoredEntry>, StoreError>;

    /// Makes a scheduled or parked entry due now with a fresh attempt budget (attempts 0).
    /// `false` for a leased or quarantined entry, or an unknown id.
    async fn retry(&self, id: EntryId) -> Result<bool, StoreError>;

    /// Removes an entry in any state. `false` for an unknown id.
    async fn discard(&self, id: EntryId) -> Result<bool, StoreError>;

    /// Removes entries older than `ttl` (by original failure) and, oldest first, entries over
    /// `max_entries`; counts both.
    async fn trim(&self, ttl: Duration, max_entries: u64) -> Result<Trimmed, StoreError>;

    /// Removes every entry; returns how many.
    async fn purge(&self) -> Result<u64, StoreError>;

    /// Counts per state and kind, the oldest entry, lifetime counters.
    async fn stats(&self) -> Result<StoreStats, StoreError>;
}
