//! The typed queue: what services and operators call.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use palisade_core::{
    BuildError, ComponentKind, EventBus, EventKind, Registry, SharedClock, SystemClock,
    config::ConfigError,
};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::DlqConfig;
use crate::failure::{Failure, FailureKind, truncate};
use crate::memory::MemoryStore;
use crate::policy::Schedule;
use crate::store::{
    EntryId, EntryState, FailureRecord, Filter, NewEntry, Page, Store, StoreError, StoreStats,
    StoredEntry, Trimmed,
};

/// An entry with its payload decoded: what a retry handler receives and what `get` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry<T> {
    /// Identifier.
    pub id: EntryId,
    /// The failed operation's name.
    pub operation: String,
    /// The payload.
    pub payload: T,
    /// The latest failure's kind.
    pub kind: FailureKind,
    /// The latest failure's message (truncated).
    pub error: String,
    /// Failures so far (1 after the original failure; 0 after an operator's retry).
    pub attempts: u32,
    /// The original failure's time (ms since the Unix epoch).
    pub first_failed_ms: u64,
    /// The latest failure's time.
    pub last_failed_ms: u64,
    /// When it is due again, if scheduled.
    pub next_attempt_ms: Option<u64>,
    /// Where it is in its life.
    pub state: EntryState,
    /// Free-form metadata (trace id, tenant).
    pub metadata: BTreeMap<String, String>,
    /// Earlier failures, oldest first.
    pub history: Vec<FailureRecord>,
}

/// An entry as operators list it: the payload as JSON whatever the queue's type (or, for bytes
/// that are not JSON, their lossy UTF-8 text).
pub type EntryView = Entry<serde_json::Value>;

impl<T> Entry<T> {
    fn from_stored(e: StoredEntry, payload: T) -> Self {
        Entry {
            id: e.id,
            operation: e.operation,
            payload,
            kind: e.kind,
            error: e.error,
            attempts: e.attempts,
            first_failed_ms: e.first_failed_ms,
            last_failed_ms: e.last_failed_ms,
            next_attempt_ms: e.next_attempt_ms,
            state: e.state,
            metadata: e.metadata,
            history: e.history,
        }
    }
}

pub(crate) fn view(e: StoredEntry) -> EntryView {
    let payload = serde_json::from_slice(&e.payload)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&e.payload).into()));
    Entry::from_stored(e, payload)
}

/// What went wrong with a queue operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DlqError {
    /// The store failed (Redis down, corrupt entry); see the inner error.
    #[error("dead-letter queue '{queue}': {source}")]
    Store {
        /// The queue.
        queue: Arc<str>,
        /// What the store said.
        source: StoreError,
    },
    /// The payload is larger than `max_payload_bytes`; nothing was stored.
    #[error(
        "dead-letter queue '{queue}' refused a payload of {size} bytes: the limit is {max} (max_payload_bytes)"
    )]
    PayloadTooLarge {
        /// The queue.
        queue: Arc<str>,
        /// The payload's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The payload could not be serialized; nothing was stored.
    #[error("dead-letter queue '{queue}' could not serialize a payload: {reason}")]
    Encode {
        /// The queue.
        queue: Arc<str>,
        /// The serializer's message.
        reason: String,
    },
    /// A stored payload no longer decodes as the queue's type (schema drift, corruption).
    /// The entry is untouched; workers quarantine such entries.
    #[error("dead-letter queue '{queue}': entry {id} does not decode: {reason}")]
    Decode {
        /// The queue.
        queue: Arc<str>,
        /// The entry.
        id: EntryId,
        /// The deserializer's message.
        reason: String,
    },
}

/// Operator retry result, as in the runbooks' `retry_failed`: entries sent back for another
/// attempt, and entries that matched but could not be (held by a worker right now, or
/// quarantined).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetryReport {
    /// Entries made due now.
    pub retried: u64,
    /// Entries that matched but were not retried.
    pub failed: u64,
}

/// How full the queue is against its thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Below `warn_threshold`.
    Ok,
    /// At or above `warn_threshold`.
    Warn,
    /// At or above `critical_threshold`.
    Critical,
}

/// Contents, counters and thresholds of a queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Counts and lifetime counters from the store.
    #[serde(flatten)]
    pub store: StoreStats,
    /// Age of the oldest entry in milliseconds.
    pub oldest_age_ms: Option<u64>,
    /// The level against the thresholds (for health checks).
    pub level: Level,
    /// Entries at which the level is `warn`.
    pub warn_threshold: u64,
    /// Entries at which the level is `critical`.
    pub critical_threshold: u64,
}

/// A dead-letter queue of operations whose payload is a `T`: failed operations are pushed with
/// a typed [`Failure`], retried by a [`worker`](DeadLetterQueue::worker) under the retry policy
/// of their kind, and inspected, retried or discarded by operators.
///
/// Cloning is cheap; clones share the queue.
///
/// ```
/// use palisade_dlq::{DeadLetterQueue, Failure, FailureKind, Filter};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct SlackPost { channel: String, text: String }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// // In memory (the default when REDIS_URL is unset); `.redis(url)` for the Redis store.
/// let dlq = DeadLetterQueue::<SlackPost>::builder("slack").build()?;
/// let post = SlackPost { channel: "#ops".into(), text: "deploy done".into() };
/// let id = dlq.push("slack.post_message", &post, Failure::timeout("no answer in 10 s")).await?;
///
/// let entry = dlq.get(id).await?.unwrap();
/// assert_eq!((entry.kind, entry.attempts), (FailureKind::Timeout, 1));
///
/// // The runbook's `retry_failed(failure_types=[TIMEOUT])`, typed:
/// let report = dlq.retry_matching(&Filter { kind: Some(FailureKind::Timeout), ..Default::default() }).await?;
/// assert_eq!(report.retried, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct DeadLetterQueue<T> {
    pub(crate) inner: Arc<Inner>,
    _payload: PhantomData<fn() -> T>,
}

impl<T> Clone for DeadLetterQueue<T> {
    fn clone(&self) -> Self {
        DeadLetterQueue {
            inner: Arc::clone(&self.inner),
            _payload: PhantomData,
        }
    }
}

impl<T> fmt::Debug for DeadLetterQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterQueue")
            .field("name", &self.inner.name)
            .field("backend", &self.inner.store.backend())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub name: Arc<str>,
    pub store: Arc<dyn Store>,
    /// Shared, so the worker's loop and every push read it without copying the policies.
    pub config: Mutex<Arc<DlqConfig>>,
    pub events: EventBus,
    pub cached: Mutex<Option<Stats>>,
    pub worker: Mutex<Option<Arc<crate::worker::WorkerState>>>,
}

impl Inner {
    pub fn config(&self) -> Arc<DlqConfig> {
        Arc::clone(&self.config.lock())
    }

    pub fn store_err(&self, source: StoreError) -> DlqError {
        DlqError::Store {
            queue: Arc::clone(&self.name),
            source,
        }
    }

    pub fn publish(&self, kind: EventKind) {
        self.events
            .publish(ComponentKind::DeadLetterQueue, &self.name, kind);
    }

    pub fn notice(&self, message: String, details: serde_json::Value) {
        self.publish(EventKind::Notice { message, details });
    }

    pub async fn trim(&self) -> Result<Trimmed, DlqError> {
        let cfg = self.config();
        let t = self
            .store
            .trim(cfg.retention, cfg.max_entries)
            .await
            .map_err(|e| self.store_err(e))?;
        if t.expired + t.evicted > 0 {
            tracing::info!(target: "palisade::dlq", queue = %self.name, expired = t.expired, evicted = t.evicted,
                "dead-letter retention removed entries");
            self.notice(
                format!(
                    "retention removed {} expired and {} evicted entries",
                    t.expired, t.evicted
                ),
                serde_json::json!({"expired": t.expired, "evicted": t.evicted}),
            );
        }
        Ok(t)
    }
}

/// Builds a [`DeadLetterQueue`]; see [`DeadLetterQueue::builder`].
#[must_use]
pub struct Builder<T> {
    name: String,
    config: DlqConfig,
    store: Option<Arc<dyn Store>>,
    /// Set by [`Builder::redis`]; the config's `wait_for_replicas` is applied at `build`.
    #[cfg(feature = "redis")]
    redis: Option<crate::redis_store::RedisStore>,
    registry: Option<Registry>,
    clock: Option<SharedClock>,
    _payload: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Builder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<T> Builder<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Replaces the config.
    pub fn config(mut self, config: DlqConfig) -> Self {
        self.config = config;
        self
    }

    /// Keeps entries in `store`. Default: a [`MemoryStore`].
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        #[cfg(feature = "redis")]
        {
            self.redis = None;
        }
        self
    }

    /// Keeps entries in the Redis `redis` points at (a URL of any topology, or a
    /// [`RedisConfig`](palisade_core::redis::RedisConfig)), connecting lazily, in a queue named
    /// like this one. Call inside a tokio runtime: it also starts a check of Redis's
    /// `maxmemory-policy` in the background, which warns (through `tracing`) unless it is
    /// `noeviction`. With [`DlqConfig::wait_for_replicas`] set, every write waits for that
    /// many replicas (see [`RedisStore::wait_for_replicas`](crate::RedisStore::wait_for_replicas)).
    #[cfg(feature = "redis")]
    pub fn redis(
        mut self,
        redis: impl palisade_core::redis::IntoRedisConfig,
    ) -> Result<Self, ConfigError> {
        let store = crate::redis_store::RedisStore::new(redis, &self.name)?;
        let check = store.clone();
        tokio::spawn(async move {
            if let Err(e) = check.check_config().await {
                tracing::warn!(target: "palisade::dlq", error = %e, "could not check Redis's maxmemory-policy");
            }
        });
        self.redis = Some(store);
        Ok(self)
    }

    /// Registers the queue in `registry` and publishes its events on the registry's bus.
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// Times the default in-memory store and events with `clock` (tests: `TokioClock`).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates and builds the queue (registering it, if asked).
    pub fn build(self) -> Result<DeadLetterQueue<T>, BuildError> {
        palisade_core::registry::check_name(&self.name)?;
        self.config.validate()?;
        let clock = self.clock.unwrap_or_else(SystemClock::shared);
        #[cfg(feature = "redis")]
        let store = match self.redis {
            Some(redis) => Some(Arc::new(match self.config.wait_for_replicas {
                Some(w) => redis.wait_for_replicas(w.replicas, w.timeout),
                None => redis,
            }) as Arc<dyn Store>),
            None => self.store,
        };
        #[cfg(not(feature = "redis"))]
        let store = self.store;
        let store = store.unwrap_or_else(|| Arc::new(MemoryStore::with_clock(clock.clone())));
        let dlq = DeadLetterQueue {
            inner: Arc::new(Inner {
                name: Arc::from(self.name),
                store,
                config: Mutex::new(Arc::new(self.config)),
                events: palisade_core::registry::bus_for(self.registry.as_ref(), clock),
                cached: Mutex::new(None),
                worker: Mutex::new(None),
            }),
            _payload: PhantomData,
        };
        if let Some(registry) = self.registry {
            registry.register(Arc::new(dlq.clone()))?;
        }
        Ok(dlq)
    }
}

/// Entries scanned per page when an operation walks a filter.
const PAGE: usize = 500;

impl<T> DeadLetterQueue<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// A builder for a queue named `name` (1–128 characters of `A-Z a-z 0-9 - _ . :`).
    pub fn builder(name: impl Into<String>) -> Builder<T> {
        Builder {
            name: name.into(),
            config: DlqConfig::default(),
            store: None,
            #[cfg(feature = "redis")]
            redis: None,
            registry: None,
            clock: None,
            _payload: PhantomData,
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The store's backend (`"redis"` or `"memory"`).
    pub fn backend(&self) -> &'static str {
        self.inner.store.backend()
    }

    /// The event bus the queue publishes to.
    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    /// The config in force.
    pub fn config(&self) -> DlqConfig {
        DlqConfig::clone(&self.inner.config())
    }

    /// Replaces the config (validated first; a running worker picks it up on its next claim).
    pub fn set_config(&self, config: DlqConfig) -> Result<(), ConfigError> {
        config.validate()?;
        *self.inner.config.lock() = Arc::new(config);
        self.inner.publish(EventKind::ConfigChanged {
            change: "config replaced".into(),
        });
        Ok(())
    }

    /// Records a failed operation; it is retried under its kind's policy, or parked at once when
    /// that policy allows no retry.
    pub async fn push(
        &self,
        operation: &str,
        payload: &T,
        failure: Failure,
    ) -> Result<EntryId, DlqError> {
        self.push_with(operation, payload, failure, BTreeMap::new())
            .await
    }

    /// [`push`](Self::push) with metadata (trace id, tenant, …).
    pub async fn push_with(
        &self,
        operation: &str,
        payload: &T,
        failure: Failure,
        metadata: BTreeMap<String, String>,
    ) -> Result<EntryId, DlqError> {
        self.enqueue(operation, payload, failure, metadata, false)
            .await
    }

    /// Records a failed operation as `parked` at once: kept for an operator, never retried by
    /// the worker until someone asks ([`retry`](Self::retry), `retry_matching`, or the admin
    /// API's `retry`). For operations that must not run twice by themselves, such as a call
    /// that timed out (its outcome is unknown) to a tool that is not idempotent.
    ///
    /// ```
    /// # use palisade_dlq::{DeadLetterQueue, Failure, EntryState};
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let dlq = DeadLetterQueue::<String>::builder("emails").build()?;
    /// let id = dlq.park("send_email", &"to: ops@example.com".to_owned(), Failure::timeout("no answer in 10 s")).await?;
    /// assert_eq!(dlq.get(id).await?.unwrap().state, EntryState::Parked);
    /// dlq.retry(id).await?; // an operator decided it did not run: replay it
    /// # Ok(()) }
    /// ```
    pub async fn park(
        &self,
        operation: &str,
        payload: &T,
        failure: Failure,
    ) -> Result<EntryId, DlqError> {
        self.enqueue(operation, payload, failure, BTreeMap::new(), true)
            .await
    }

    async fn enqueue(
        &self,
        operation: &str,
        payload: &T,
        failure: Failure,
        metadata: BTreeMap<String, String>,
        park: bool,
    ) -> Result<EntryId, DlqError> {
        let s = &*self.inner;
        let cfg = s.config();
        let bytes = serde_json::to_vec(payload).map_err(|e| DlqError::Encode {
            queue: Arc::clone(&s.name),
            reason: e.to_string(),
        })?;
        if bytes.len() > cfg.max_payload_bytes {
            return Err(DlqError::PayloadTooLarge {
                queue: Arc::clone(&s.name),
                size: bytes.len(),
                max: cfg.max_payload_bytes,
            });
        }
        let schedule = if park {
            Schedule::Park
        } else {
            cfg.policies.schedule(1, &failure, fastrand::f64())
        };
        let id = s
            .store
            .enqueue(
                NewEntry {
                    operation: truncate(operation, 256),
                    payload: bytes,
                    kind: failure.kind,
                    error: truncate(&failure.message, cfg.max_error_len),
                    metadata,
                    schedule,
                },
                cfg.max_entries,
            )
            .await
            .map_err(|e| s.store_err(e))?;
        tracing::debug!(target: "palisade::dlq", queue = %s.name, id, operation, kind = %failure.kind, "dead-lettered");
        Ok(id)
    }

    /// One entry, payload decoded. [`DlqError::Decode`] when the payload no longer decodes.
    pub async fn get(&self, id: EntryId) -> Result<Option<Entry<T>>, DlqError> {
        let s = &*self.inner;
        let Some(e) = s.store.get(id).await.map_err(|e| s.store_err(e))? else {
            return Ok(None);
        };
        let payload = serde_json::from_slice(&e.payload).map_err(|err| DlqError::Decode {
            queue: Arc::clone(&s.name),
            id,
            reason: err.to_string(),
        })?;
        Ok(Some(Entry::from_stored(e, payload)))
    }

    /// Up to `limit` entries matching `filter` after the cursor `after`, oldest first, with
    /// their payloads as JSON (so undecodable entries can be listed too).
    pub async fn list(
        &self,
        filter: &Filter,
        after: Option<EntryId>,
        limit: usize,
    ) -> Result<Page<EntryView>, DlqError> {
        list(&self.inner, filter, after, limit).await
    }

    /// Makes one entry due now with a fresh attempt budget. `false` when it is held by a worker,
    /// quarantined or unknown.
    pub async fn retry(&self, id: EntryId) -> Result<bool, DlqError> {
        retry_one(&self.inner, id).await
    }

    /// Makes every scheduled or parked entry matching `filter` due now (the runbook's
    /// `retry_failed(failure_types=[...])`).
    pub async fn retry_matching(&self, filter: &Filter) -> Result<RetryReport, DlqError> {
        retry_matching(&self.inner, filter).await
    }

    /// Removes one entry. `false` for an unknown id.
    pub async fn discard(&self, id: EntryId) -> Result<bool, DlqError> {
        discard_one(&self.inner, id).await
    }

    /// Removes every entry matching `filter`; returns how many.
    pub async fn discard_matching(&self, filter: &Filter) -> Result<u64, DlqError> {
        discard_matching(&self.inner, filter).await
    }

    /// Removes every entry; returns how many.
    pub async fn purge(&self) -> Result<u64, DlqError> {
        purge(&self.inner).await
    }

    /// Applies retention now (the worker also does, every `trim_interval`).
    pub async fn trim(&self) -> Result<Trimmed, DlqError> {
        self.inner.trim().await
    }

    /// Counts per state and kind, oldest entry, lifetime counters, threshold level.
    pub async fn stats(&self) -> Result<Stats, DlqError> {
        stats(&self.inner).await
    }
}

pub(crate) async fn list(
    s: &Inner,
    filter: &Filter,
    after: Option<EntryId>,
    limit: usize,
) -> Result<Page<EntryView>, DlqError> {
    let page = s
        .store
        .list(filter, after, limit.clamp(1, 1000))
        .await
        .map_err(|e| s.store_err(e))?;
    Ok(Page {
        entries: page.entries.into_iter().map(view).collect(),
        next: page.next,
    })
}

pub(crate) async fn retry_one(s: &Inner, id: EntryId) -> Result<bool, DlqError> {
    let ok = s.store.retry(id).await.map_err(|e| s.store_err(e))?;
    if ok {
        s.publish(EventKind::AdminAction {
            action: format!("retry {id}"),
        });
    }
    Ok(ok)
}

/// Ids of every entry matching `filter`, walked page by page.
async fn matching_ids(s: &Inner, filter: &Filter) -> Result<Vec<StoredEntry>, DlqError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .store
            .list(filter, after, PAGE)
            .await
            .map_err(|e| s.store_err(e))?;
        out.extend(page.entries);
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

pub(crate) async fn retry_matching(s: &Inner, filter: &Filter) -> Result<RetryReport, DlqError> {
    let mut report = RetryReport::default();
    for e in matching_ids(s, filter).await? {
        if s.store.retry(e.id).await.map_err(|err| s.store_err(err))? {
            report.retried += 1;
        } else {
            report.failed += 1;
        }
    }
    s.publish(EventKind::AdminAction {
        action: format!(
            "retry {} (retried {}, failed {})",
            describe(filter),
            report.retried,
            report.failed
        ),
    });
    Ok(report)
}

pub(crate) async fn discard_one(s: &Inner, id: EntryId) -> Result<bool, DlqError> {
    let ok = s.store.discard(id).await.map_err(|e| s.store_err(e))?;
    if ok {
        s.publish(EventKind::AdminAction {
            action: format!("discard {id}"),
        });
    }
    Ok(ok)
}

pub(crate) async fn discard_matching(s: &Inner, filter: &Filter) -> Result<u64, DlqError> {
    let mut n = 0;
    for e in matching_ids(s, filter).await? {
        if s.store
            .discard(e.id)
            .await
            .map_err(|err| s.store_err(err))?
        {
            n += 1;
        }
    }
    s.publish(EventKind::AdminAction {
        action: format!("discard {} ({n} entries)", describe(filter)),
    });
    Ok(n)
}

pub(crate) async fn purge(s: &Inner) -> Result<u64, DlqError> {
    let n = s.store.purge().await.map_err(|e| s.store_err(e))?;
    s.publish(EventKind::AdminAction {
        action: format!("purge ({n} entries)"),
    });
    Ok(n)
}

pub(crate) async fn stats(s: &Inner) -> Result<Stats, DlqError> {
    let store = s.store.stats().await.map_err(|e| s.store_err(e))?;
    let cfg = s.config();
    let level = if store.total >= cfg.critical_threshold {
        Level::Critical
    } else if store.total >= cfg.warn_threshold {
        Level::Warn
    } else {
        Level::Ok
    };
    let stats = Stats {
        oldest_age_ms: store
            .oldest_first_failed_ms
            .map(|t| store.now_ms.saturating_sub(t)),
        store,
        level,
        warn_threshold: cfg.warn_threshold,
        critical_threshold: cfg.critical_threshold,
    };
    *s.cached.lock() = Some(stats.clone());
    Ok(stats)
}

fn describe(f: &Filter) -> String {
    let mut parts = Vec::new();
    if let Some(k) = f.kind {
        parts.push(format!("kind={k}"));
    }
    if let Some(o) = &f.operation {
        parts.push(format!("operation={o}"));
    }
    if let Some(st) = f.state {
        parts.push(format!("state={}", st.as_str()));
    }
    if parts.is_empty() {
        "all".into()
    } else {
        parts.join(",")
    }
}
