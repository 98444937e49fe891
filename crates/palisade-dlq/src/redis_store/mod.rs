//! The Redis store: every state change is one Lua script (`EVALSHA`, reloaded by itself after a
//! Redis restart or `SCRIPT FLUSH`), timed by Redis `TIME`, so that any number of processes can
//! share a queue and their clocks do not matter. Same behaviour as [`MemoryStore`]; the
//! differences that bounded work forces are listed on [`RedisStore`].
//!
//! # Key layout
//!
//! All keys of queue `q` share the hash tag `{q}`, so they live in one Redis Cluster slot, and
//! every script receives in `KEYS` each key it touches (it builds no key name): the scripts are
//! valid on Redis Cluster and on Dragonfly's default settings.
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `palisade:dlq:{q}:entries` | hash | zero-padded id → one entry (below) |
//! | `palisade:dlq:{q}:due` | sorted set | scheduled entries by next attempt, leased by lease end |
//! | `palisade:dlq:{q}:leases` | hash | leased entry id → `<token> <kind>` (its current lease) |
//! | `palisade:dlq:{q}:parked` | sorted set | parked entries, scored by id |
//! | `palisade:dlq:{q}:quarantined` | sorted set | quarantined entries, scored by id |
//! | `palisade:dlq:{q}:all` | sorted set | every entry, scored by id (enqueue order) |
//! | `palisade:dlq:{q}:dlv` | hash | entry id → claims since its last outcome (deliveries) |
//! | `palisade:dlq:{q}:seq` | string | the last id (`INCR`): the count of entries ever enqueued |
//! | `palisade:dlq:{q}:tok` | string | the last fencing token (`INCR`, once per claim call) |
//! | `palisade:dlq:{q}:stats` | hash | lifetime counters ([`Totals`]) but `enqueued` (`seq`) |
//! | `palisade:dlq:{q}:kinds` | hash | failure kind → entries of that kind now |
//!
//! Ids are written zero-padded to 20 digits everywhere (`entries`, `leases` and `dlv` fields,
//! sorted-set members, script arguments), so that entries due at the same millisecond are
//! claimed in id order (Redis orders equal scores by member, as strings) and no script converts
//! ids.
//!
//! An entry is one value of three parts separated by line feeds (JSON has none of its own):
//!
//! 1. its status, written by the scripts, always in this field order:
//!    `{"kind":"timeout","state":"scheduled","att":1,"first":<ms>,"last":<ms>,"next":<ms or
//!    null>,"err":"...","hist":[{"at_ms":<ms>,"kind":"...","error":"..."}...]}` (`state` is
//!    `scheduled` — also while leased —, `parked` or `quarantined`; `next` is null unless
//!    scheduled);
//! 2. its origin, written once by [`Store::enqueue`]: `{"op":"...","meta":{...}}`;
//! 3. the payload, raw bytes.
//!
//! One value keeps the hot path cheap: a claim reads one field per entry (one `HMGET` for the
//! batch) and an ack deletes fields (one `HDEL`). A lease lives in the indexes only, so that
//! claiming an entry does not write it: a leased entry stays in `due`, rescored to its lease
//! deadline, and has a `leases` field (with the token that acks, failures and quarantines check,
//! one `HMGET` for a whole batch of acks). A lease that expires is therefore due again by
//! itself, and the next claim hands the entry out under a new token. Every entry is in exactly
//! one of `due`, `parked` and `quarantined`, so entries per state are `ZCARD`s and
//! `HLEN leases`.
//!
//! Ids are taken in the script that stamps an entry's original failure with Redis `TIME`, so
//! `all` is in first-failure order as well: the time-to-live trim walks it from the oldest entry
//! and stops at the first one young enough, and the oldest entry of the stats is the lowest id.
//! (Should the Redis clock step back, entries enqueued meanwhile may expire a little late.)
//!
//! # Migration from one key per entry
//!
//! Before the `entries` hash, each entry was a string key `palisade:dlq:{q}:e:<id>` (same
//! value). A store moves such entries into the hash before its first operation (once per
//! store and its clones; [`RedisStore::connect`] does it at once): one script call tells
//! whether `all` has members without a field in `entries`, and only then the ids are scanned
//! and the old keys moved in batches, each batch one script whose `KEYS` are `entries` and the
//! batch's old keys (declared, same slot). Moving is idempotent, so several processes may start
//! at once. Processes of the old version must not run on the queue at the same time as the new
//! one: each treats the other's entries as missing.
//!
//! The Lua sources are in `src/lua/` (one file per script, helpers in `src/lua/lib/`); see
//! `scripts.rs`.
//!
//! [`MemoryStore`]: crate::MemoryStore
//! [`Store::enqueue`]: crate::Store::enqueue

mod codec;
#[cfg(test)]
mod lua_lint;
mod migrate;
mod ops;
mod reply;
mod scripts;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::ConfigError;
use palisade_core::redis::{ConnectionOptions, IntoRedisConfig};
use parking_lot::Mutex;
use redis::{ErrorKind, RedisError, ScriptInvocation, ServerErrorKind, Value};
use tokio::sync::OnceCell;

use crate::store::{EntryId, StoreError, Totals};

use scripts::{Key, LuaScript, QueueKeys};

/// The connection every call goes through (cloned per call; clones share one multiplexed
/// connection). Anything implementing [`redis::aio::ConnectionLike`] + `Clone` fits: every
/// call is `invoke_async(&mut conn)` or `query_async(&mut conn)`.
type Conn = palisade_core::redis::RedisConnection;

/// Entries one script call may scan or remove (list, trim, purge, eviction): a call stays
/// around a millisecond of Redis time, and Rust loops for the rest.
const BATCH: u64 = 1000;

/// Entries one claim script may lease (larger claims loop).
const CLAIM_BATCH: usize = 1000;

/// Entries one `ack_many` script may acknowledge (larger batches loop).
const ACK_BATCH: usize = 1000;

/// A [`Store`] on Redis, shared by every process that names the same queue (see the module
/// documentation for the key layout).
///
/// - One multiplexed, auto-reconnecting connection, shared by clones.
/// - Every state change is one atomic Lua script, timed by Redis `TIME`. Every script declares
///   each key it touches, all in the queue's Cluster slot: valid on Redis Cluster and
///   Dragonfly.
/// - No script call does unbounded work: list, trim, purge and evictions scan or remove at most
///   1,000 entries per call, claims and [`Store::ack_many`] handle at most 1,000 entries per
///   call, and Rust loops for the rest. As a consequence `trim`, `purge` and `ack_many` are
///   atomic per batch, not as a whole (entries enqueued meanwhile may or may not be removed),
///   and delays and leases are capped at about 31,700 years.
/// - All entries of one claim call share its fencing token; a claim never writes the entries it
///   leases (see the module documentation). So an expired lease stays `leased` (for `get`,
///   `list`, `stats`) until a claim hands the entry out again, and among due entries it ranks
///   by its deadline (the memory store makes expired leases `scheduled`, due when a claim
///   noticed them).
/// - An entry whose fields do not parse is reported as [`StoreError::Corrupt`] naming entry and
///   field (by `get`, `list`, `fail`); `claim` quarantines it instead and goes on. The
///   time-to-live trim passes over an entry whose first failure time is unreadable (it still
///   counts for the maximum size).
/// - Redis must not evict keys: use `maxmemory-policy noeviction` ([`RedisStore::connect`]
///   warns otherwise).
/// - A queue written in the layout of earlier versions (one key per entry) is migrated before
///   the first operation (see the module documentation).
/// - Optionally, every write waits for replicas ([`RedisStore::wait_for_replicas`]).
///
/// ```no_run
/// use palisade_dlq::{RedisStore, Store};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379", "tool-calls").await?;
/// println!("{} entries", store.stats().await?.total);
/// # Ok(()) }
/// ```
///
/// [`Store`]: crate::Store
/// [`Store::ack_many`]: crate::Store::ack_many
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
    /// `WAIT` after every write, if set.
    wait: Option<WaitFor>,
}

struct Inner {
    conn: Conn,
    queue: String,
    keys: QueueKeys,
    maxmemory_policy: Mutex<Option<String>>,
    /// Set once the queue holds no entry of the old layout (see [`RedisStore::ready`]).
    migrated: OnceCell<()>,
}

/// The `WAIT` issued after every write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WaitFor {
    replicas: u32,
    /// At least 1 (`WAIT` with 0 would block forever).
    timeout_ms: u64,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password: it is not even kept.
        f.debug_struct("RedisStore")
            .field("queue", &self.inner.queue)
            .field("maxmemory_policy", &*self.inner.maxmemory_policy.lock())
            .field("wait_for_replicas", &self.wait)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for queue `queue` on the Redis `redis` points at: a URL
    /// (`redis://[:password@]host:port[/db]`, `rediss://…`, `redis+sentinel://…/<master>`,
    /// `redis+cluster://…`) or a [`RedisConfig`](palisade_core::redis::RedisConfig). It
    /// connects lazily: this succeeds while Redis is down, and operations fail with
    /// [`StoreError::Unavailable`] until it answers. Call inside a tokio runtime.
    ///
    /// Errors name the field: `redis_url` for a malformed URL (or `tls.*` for TLS files that
    /// cannot be read), `queue` for a name outside 1 to 128 characters of `A-Z a-z 0-9 - _ . :`.
    pub fn new(redis: impl IntoRedisConfig, queue: &str) -> Result<Self, ConfigError> {
        if !palisade_core::registry::is_valid_name(queue) {
            return Err(ConfigError::new(
                "queue",
                format!(
                    "{queue:?} is not a valid queue name; {}",
                    palisade_core::registry::NAME_RULE
                ),
            ));
        }
        let conn = Conn::open(&redis.into_redis_config()?, ConnectionOptions::default())?;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                conn,
                queue: queue.to_owned(),
                keys: QueueKeys::new(queue),
                maxmemory_policy: Mutex::new(None),
                migrated: OnceCell::new(),
            }),
            wait: None,
        })
    }

    /// Like [`RedisStore::new`], then connects, runs [`RedisStore::check_config`] and migrates
    /// entries of the old layout (see the module documentation): fails with
    /// [`StoreError::Unavailable`] for a bad URL or queue name (the message names the field) or
    /// when Redis cannot be reached.
    pub async fn connect(redis: impl IntoRedisConfig, queue: &str) -> Result<Self, StoreError> {
        let store = Self::new(redis, queue).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        store.check_config().await?;
        store.ready().await?;
        Ok(store)
    }

    /// Makes every write of this handle (enqueue, ack, ack_many, extend, fail — parking
    /// included —, quarantine, retry, discard, trim, purge) wait until `replicas` replicas
    /// have acknowledged it, or `timeout` has passed (Redis `WAIT replicas timeout`, on the
    /// connection that wrote). Claims only lease and do not wait. `replicas` 0 turns waiting
    /// off (the default); a zero `timeout` counts as 1 ms (`WAIT` with 0 would block forever).
    ///
    /// When fewer replicas acknowledged in time, the call fails with
    /// [`StoreError::NotReplicated`]: the write **was applied** on the primary and stays there,
    /// but it may be lost if the primary fails over before the replicas catch up; the caller
    /// cannot know whether it will survive. For an enqueue, retrying may then store the entry
    /// twice but never loses it; an ack that is lost at failover makes the entry be delivered
    /// again (at-least-once, as after a worker crash).
    ///
    /// The setting belongs to this handle (clones made after this call share it; earlier
    /// clones do not). `WAIT` blocks the connection it runs on, which is shared by the store's
    /// clones: while one call waits for replicas, the others' commands queue behind it, so
    /// keep `timeout` short (tens of milliseconds).
    #[must_use]
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.wait = (replicas > 0).then(|| WaitFor {
            replicas,
            timeout_ms: codec::ms(timeout).max(1),
        });
        self
    }

    /// Reads `maxmemory-policy` and logs a warning unless it is `noeviction`: under any other
    /// policy Redis may silently evict dead-letter entries when memory runs short (BullMQ
    /// documents the same rule). Managed Redis often refuses `CONFIG`; that is logged at debug
    /// level and is not an error. Fails only when Redis cannot be reached.
    pub async fn check_config(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let reply: Result<HashMap<String, String>, RedisError> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut conn)
            .await;
        match reply {
            Ok(map) => {
                let policy = map.get("maxmemory-policy").cloned();
                match policy.as_deref() {
                    Some("noeviction") | None => {}
                    Some(p) => tracing::warn!(target: "palisade::dlq",
                        queue = %self.inner.queue,
                        maxmemory_policy = p,
                        "Redis maxmemory-policy is not noeviction: dead-letter entries can be \
                         silently evicted when Redis runs out of memory (set maxmemory-policy \
                         noeviction, as BullMQ requires too)"
                    ),
                }
                *self.inner.maxmemory_policy.lock() = policy;
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Server(ServerErrorKind::ResponseError | ServerErrorKind::NoPerm)
                        | ErrorKind::Extension
                ) =>
            {
                tracing::debug!(target: "palisade::dlq", queue = %self.inner.queue, error = %e,
                    "Redis refused CONFIG GET maxmemory-policy (managed Redis?); not checked");
                Ok(())
            }
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        }
    }

    /// The `maxmemory-policy` read by [`RedisStore::check_config`], if it ran and Redis told.
    pub fn maxmemory_policy(&self) -> Option<String> {
        self.inner.maxmemory_policy.lock().clone()
    }

    /// The queue's name.
    pub fn queue(&self) -> &str {
        &self.inner.queue
    }

    /// The Redis key of the hash that holds the queue's entries, for operators inspecting
    /// Redis by hand: entry `id` is its field `id` zero-padded to 20 digits (`HGET
    /// 'palisade:dlq:{q}:entries' 00000000000000000042`), its value the status line, the
    /// origin line and the payload (see the module documentation). Earlier versions kept one
    /// string key per entry (`entry_key(id)`, `palisade:dlq:{q}:e:<id>`); those are migrated
    /// into this hash.
    pub fn entries_key(&self) -> &str {
        self.inner.keys.get(Key::Entries)
    }

    /// A clone of the connection, for one call.
    fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    /// `script` with its keys of this queue declared; the caller adds the arguments.
    fn invocation<'a>(&self, script: &'a LuaScript) -> ScriptInvocation<'a> {
        script.prepare(&self.inner.keys)
    }

    /// Runs a script of a queue operation, once the queue is migrated.
    async fn run(
        &self,
        script: &LuaScript,
        inv: &ScriptInvocation<'_>,
    ) -> Result<Value, StoreError> {
        self.ready().await?;
        self.run_unmigrated(script, inv).await
    }

    /// Runs a script, migrated or not.
    async fn run_unmigrated(
        &self,
        script: &LuaScript,
        inv: &ScriptInvocation<'_>,
    ) -> Result<Value, StoreError> {
        let mut conn = self.conn();
        inv.invoke_async(&mut conn).await.map_err(|e| {
            StoreError::Unavailable(format!(
                "{} on queue {}: {e}",
                script.name, self.inner.queue
            ))
        })
    }

    /// Migrates the queue once per store (and its clones); afterwards an atomic read.
    async fn ready(&self) -> Result<(), StoreError> {
        self.inner
            .migrated
            .get_or_try_init(|| self.migrate())
            .await
            .map(|&()| ())
    }

    /// After a write: `WAIT` for the replicas asked by [`RedisStore::wait_for_replicas`], on
    /// the connection that wrote (a no-op when not asked). The one place that sends `WAIT`.
    async fn wait_replicas(&self) -> Result<(), StoreError> {
        let Some(WaitFor {
            replicas,
            timeout_ms,
        }) = self.wait
        else {
            return Ok(());
        };
        // To the primary of the queue's slot (on a cluster), on the connection that wrote.
        let acked = self
            .inner
            .conn
            .wait_for_replicas(
                self.entries_key(),
                replicas,
                Duration::from_millis(timeout_ms),
            )
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "WAIT for replicas on queue {} (the write itself was applied on the \
                     primary): {e}",
                    self.inner.queue
                ))
            })?;
        if acked < replicas {
            return Err(StoreError::NotReplicated {
                acked,
                wanted: replicas,
            });
        }
        Ok(())
    }

    /// `value`, once the write that produced it has reached the replicas asked for.
    async fn written<T>(&self, value: T) -> Result<T, StoreError> {
        self.wait_replicas().await.map(|()| value)
    }

    fn corrupt(&self, id: EntryId, field: &str, why: &str) -> StoreError {
        codec::corrupt(&self.inner.queue, id, field, why)
    }

    fn unexpected(&self, script: &LuaScript, v: &Value) -> StoreError {
        StoreError::Unavailable(format!(
            "unexpected reply from the {} script on queue {}: {v:?}",
            script.name, self.inner.queue
        ))
    }

    /// The lifetime counters of a `stats` hash.
    fn totals(&self, counters: Vec<Value>) -> Result<Totals, StoreError> {
        let mut t = Totals::default();
        for (field, v) in reply::pairs(counters) {
            let slot = match field.as_str() {
                "acked" => &mut t.acked,
                "parked" => &mut t.parked,
                "retried" => &mut t.retried,
                "discarded" => &mut t.discarded,
                "quarantined" => &mut t.quarantined,
                "expired" => &mut t.expired,
                "evicted" => &mut t.evicted,
                "purged" => &mut t.purged,
                _ => continue,
            };
            *slot = reply::number(&v).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "counters of queue {}: field {field}: {v:?}",
                    self.inner.queue
                ))
            })?;
        }
        Ok(t)
    }
}
