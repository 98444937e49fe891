//! The Redis store: every state change is one Lua script (`EVALSHA`, reloaded by itself after a
//! Redis restart or `SCRIPT FLUSH`), timed by Redis `TIME`, so that any number of processes can
//! share a queue and their clocks do not matter. Same behaviour as [`MemoryStore`]
//! (crate::MemoryStore); the differences that bounded work forces are listed on [`RedisStore`].
//!
//! # Key layout
//!
//! All keys of queue `q` share the hash tag `{q}`, so they live in one Redis Cluster slot and one
//! script may touch them all:
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `palisade:dlq:{q}:e:<id>` | hash | one entry (fields below) |
//! | `palisade:dlq:{q}:due` | sorted set | scheduled entries, scored by next attempt (ms) |
//! | `palisade:dlq:{q}:leased` | sorted set | leased entries, scored by lease deadline (ms) |
//! | `palisade:dlq:{q}:parked` | sorted set | parked entries, scored by id |
//! | `palisade:dlq:{q}:quarantined` | sorted set | quarantined entries, scored by id |
//! | `palisade:dlq:{q}:all` | sorted set | every entry, scored by id (enqueue order) |
//! | `palisade:dlq:{q}:first` | sorted set | every entry, scored by original failure (ms) |
//! | `palisade:dlq:{q}:seq` | string | the last id (`INCR`) |
//! | `palisade:dlq:{q}:tok` | string | the last fencing token (`INCR`) |
//! | `palisade:dlq:{q}:stats` | hash | lifetime counters ([`Totals`]) |
//! | `palisade:dlq:{q}:kinds` | hash | failure kind → entries of that kind now |
//!
//! Members of the sorted sets are ids zero-padded to 20 digits, so that entries due at the same
//! millisecond are claimed in id order (Redis orders equal scores by member, as strings). Each
//! entry is in exactly one of the four state sets, so `ZCARD`s give exact counts per state.
//!
//! Entry hash fields: `op`, `kind`, `err`, `att` (attempts), `first`, `last` (ms), `next` (ms,
//! scheduled only), `state`, `meta` (JSON object), `hist` (JSON array of
//! `{at_ms, kind, error}`), `payload` (raw bytes), `lease` (deadline ms, leased only), `token`
//! (the current or last fencing token).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use palisade_core::ConfigError;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script, ScriptInvocation, ServerErrorKind, Value};

use crate::failure::FailureKind;
use crate::policy::Schedule;
use crate::store::{
    EntryId, EntryState, FailureRecord, Filter, HISTORY_LEN, Lease, NewEntry, Page, Store,
    StoreError, StoreStats, StoredEntry, Totals, Trimmed,
};

/// Entries one script call may scan or remove (list, trim, purge, eviction, lease recovery):
/// a call stays around a millisecond of Redis time, and Rust loops for the rest.
const BATCH: u64 = 1000;

/// Entries one claim script may lease (larger claims loop).
const CLAIM_BATCH: usize = 1000;

/// The longest delay or lease passed to Redis, in ms (about 31,700 years): `now + delay` then
/// stays an exact integer in Lua's doubles.
const MAX_MS: u64 = 1_000_000_000_000_000;

/// Shared by every script. KEYS: the entry key prefix, then the fixed keys of the queue.
///
/// Entry keys (`KEYS[1] .. id`) are built inside the scripts rather than declared: they share
/// the queue's hash tag, hence the slot of the declared keys, so this is safe on Redis Cluster.
macro_rules! prelude {
    () => {
        r"
local P = KEYS[1]
local DUE, LEASED, PARKED, QUAR = KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local ALL, FIRST, SEQ, TOK, STATS, KINDS = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function n2s(n) return string.format('%.0f', n) end
local function mem(id) return string.rep('0', 20 - #id) .. id end
local function unpad(m)
  local s = string.gsub(m, '^0+', '')
  if s == '' then return '0' end
  return s
end
local function unindex(m)
  redis.call('ZREM', DUE, m)
  redis.call('ZREM', LEASED, m)
  redis.call('ZREM', PARKED, m)
  redis.call('ZREM', QUAR, m)
end
local function count(field, n)
  if n ~= 0 then redis.call('HINCRBY', STATS, field, n) end
end
local function kind_add(k, d)
  if k then
    if redis.call('HINCRBY', KINDS, k, d) <= 0 then redis.call('HDEL', KINDS, k) end
  end
end
local function forget(m)
  unindex(m)
  redis.call('ZREM', ALL, m)
  redis.call('ZREM', FIRST, m)
end
local function remove(id)
  local key = P .. id
  local kind = redis.call('HGET', key, 'kind')
  local existed = redis.call('DEL', key) == 1
  forget(mem(id))
  if existed then kind_add(kind, -1) end
  return existed
end
"
    };
}

/// ARGV: max entries, eviction budget, op, kind, err, meta, payload, park (`1`/`0`), delay ms.
/// Evicts the oldest entries while the queue is full; returns `{0, evicted}` when the budget ran
/// out first (call again), else `{1, id}`.
const ENQUEUE: &str = concat!(
    prelude!(),
    r"
local now = now_ms()
local maxn = math.max(tonumber(ARGV[1]), 1)
local len = redis.call('ZCARD', ALL)
if len >= maxn then
  local over = len + 1 - maxn
  local k = math.min(over, tonumber(ARGV[2]))
  local evicted = 0
  for _, m in ipairs(redis.call('ZRANGE', ALL, 0, k - 1)) do
    if remove(unpad(m)) then evicted = evicted + 1 end
  end
  count('evicted', evicted)
  if over > k then return {0, evicted} end
end
local id = n2s(redis.call('INCR', SEQ))
local key = P .. id
local m = mem(id)
local nows = n2s(now)
redis.call('HSET', key, 'op', ARGV[3], 'kind', ARGV[4], 'err', ARGV[5], 'att', '1',
  'first', nows, 'last', nows, 'meta', ARGV[6], 'hist', '[]', 'payload', ARGV[7], 'token', '0')
if ARGV[8] == '1' then
  redis.call('HSET', key, 'state', 'parked')
  redis.call('ZADD', PARKED, id, m)
  count('parked', 1)
else
  local nxt = n2s(now + tonumber(ARGV[9]))
  redis.call('HSET', key, 'state', 'scheduled', 'next', nxt)
  redis.call('ZADD', DUE, nxt, m)
end
redis.call('ZADD', ALL, id, m)
redis.call('ZADD', FIRST, nows, m)
kind_add(ARGV[4], 1)
count('enqueued', 1)
return {1, id}
"
);

/// ARGV: max, lease ms, recovery budget. Moves expired leases back to due (now), then leases up
/// to `max` due entries in due order, each with a fresh token. Returns
/// `{due ids examined, {{id, token, {hash fields}}...}}`.
const CLAIM: &str = concat!(
    prelude!(),
    r"
local now = now_ms()
local nows = n2s(now)
for _, m in ipairs(redis.call('ZRANGEBYSCORE', LEASED, '-inf', nows, 'LIMIT', 0, tonumber(ARGV[3]))) do
  local key = P .. unpad(m)
  if redis.call('EXISTS', key) == 1 then
    redis.call('ZREM', LEASED, m)
    redis.call('ZADD', DUE, nows, m)
    redis.call('HSET', key, 'state', 'scheduled', 'next', nows)
    redis.call('HDEL', key, 'lease')
  else
    forget(m)
  end
end
local max = tonumber(ARGV[1])
local out = {}
local n = 0
if max > 0 then
  local ms = redis.call('ZRANGEBYSCORE', DUE, '-inf', nows, 'LIMIT', 0, max)
  n = #ms
  local deadline = n2s(now + tonumber(ARGV[2]))
  for _, m in ipairs(ms) do
    local id = unpad(m)
    local key = P .. id
    if redis.call('EXISTS', key) == 1 then
      local tok = n2s(redis.call('INCR', TOK))
      redis.call('ZREM', DUE, m)
      redis.call('ZADD', LEASED, deadline, m)
      redis.call('HSET', key, 'state', 'leased', 'lease', deadline, 'token', tok)
      redis.call('HDEL', key, 'next')
      out[#out + 1] = {id, tok, redis.call('HGETALL', key)}
    else
      forget(m)
    end
  end
end
return {n, out}
"
);

/// ARGV: id, token. Removes the entry if that lease is current. Returns 1 or 0.
const ACK: &str = concat!(
    prelude!(),
    r"
local f = redis.call('HMGET', P .. ARGV[1], 'state', 'token')
if f[1] ~= 'leased' or f[2] ~= ARGV[2] then return 0 end
remove(ARGV[1])
count('acked', 1)
return 1
"
);

/// ARGV: id, token, kind, err, park (`1`/`0`), delay ms, history length. Returns 1, 0 (stale
/// token) or `{'corrupt', field}` (nothing changed).
const FAIL: &str = concat!(
    prelude!(),
    r"
local id = ARGV[1]
local key = P .. id
local f = redis.call('HMGET', key, 'state', 'token', 'kind', 'err', 'last', 'att', 'hist')
if f[1] ~= 'leased' or f[2] ~= ARGV[2] then return 0 end
if not f[3] then return {'corrupt', 'kind'} end
if not f[4] then return {'corrupt', 'err'} end
local last = tonumber(f[5])
if not last or last < 0 or last ~= math.floor(last) then return {'corrupt', 'last'} end
local att = tonumber(f[6])
if not att or att < 0 or att ~= math.floor(att) then return {'corrupt', 'att'} end
local ok, hist = pcall(cjson.decode, f[7])
if not ok or type(hist) ~= 'table' then return {'corrupt', 'hist'} end
hist[#hist + 1] = {at_ms = last, kind = f[3], error = f[4]}
while #hist > tonumber(ARGV[7]) do table.remove(hist, 1) end
local now = now_ms()
local m = mem(id)
unindex(m)
redis.call('HSET', key, 'kind', ARGV[3], 'err', ARGV[4], 'att', n2s(math.min(att + 1, 4294967295)),
  'last', n2s(now), 'hist', cjson.encode(hist))
redis.call('HDEL', key, 'lease')
if ARGV[5] == '1' then
  redis.call('HSET', key, 'state', 'parked')
  redis.call('HDEL', key, 'next')
  redis.call('ZADD', PARKED, id, m)
  count('parked', 1)
else
  local nxt = n2s(now + tonumber(ARGV[6]))
  redis.call('HSET', key, 'state', 'scheduled', 'next', nxt)
  redis.call('ZADD', DUE, nxt, m)
end
if f[3] ~= ARGV[3] then
  kind_add(f[3], -1)
  kind_add(ARGV[3], 1)
end
return 1
"
);

/// ARGV: id, token (empty: any state), reason. Returns 1 or 0.
const QUARANTINE: &str = concat!(
    prelude!(),
    r"
local id = ARGV[1]
local key = P .. id
if redis.call('EXISTS', key) == 0 then return 0 end
if ARGV[2] ~= '' then
  local f = redis.call('HMGET', key, 'state', 'token')
  if f[1] ~= 'leased' or f[2] ~= ARGV[2] then return 0 end
end
local m = mem(id)
unindex(m)
redis.call('ZADD', QUAR, id, m)
redis.call('HSET', key, 'state', 'quarantined', 'err', ARGV[3])
redis.call('HDEL', key, 'next', 'lease')
count('quarantined', 1)
return 1
"
);

/// ARGV: id. Returns the entry's fields (flat), empty when unknown.
const GET: &str = concat!(prelude!(), r"return redis.call('HGETALL', P .. ARGV[1])");

/// ARGV: source (`all`, `parked`, `quarantined`), after (empty: from the start), scan budget,
/// matches wanted, kind, op, state (each empty for any, else `=` and the value). Returns
/// `{last scanned id or '', done (1: the source is exhausted), {{id, {fields}}...}}`.
const LIST: &str = concat!(
    prelude!(),
    r"
local src = ALL
if ARGV[1] == 'parked' then src = PARKED elseif ARGV[1] == 'quarantined' then src = QUAR end
local min = '-inf'
if ARGV[2] ~= '' then min = '(' .. ARGV[2] end
local budget = tonumber(ARGV[3])
local need = tonumber(ARGV[4])
local ms = redis.call('ZRANGEBYSCORE', src, min, '+inf', 'LIMIT', 0, budget)
local out = {}
local last = ''
local stopped = false
for _, m in ipairs(ms) do
  local id = unpad(m)
  last = id
  local key = P .. id
  local f = redis.call('HMGET', key, 'kind', 'op', 'state')
  if f[1] and (ARGV[5] == '' or ARGV[5] == '=' .. f[1])
      and (ARGV[6] == '' or (f[2] and ARGV[6] == '=' .. f[2]))
      and (ARGV[7] == '' or (f[3] and ARGV[7] == '=' .. f[3])) then
    out[#out + 1] = {id, redis.call('HGETALL', key)}
    if #out >= need then
      stopped = true
      break
    end
  end
end
local done = 0
if not stopped and #ms < budget then done = 1 end
return {last, done, out}
"
);

/// ARGV: id. Makes a scheduled or parked entry due now with attempts 0. Returns 1 or 0.
const RETRY: &str = concat!(
    prelude!(),
    r"
local id = ARGV[1]
local key = P .. id
local st = redis.call('HGET', key, 'state')
if st ~= 'scheduled' and st ~= 'parked' then return 0 end
local nows = n2s(now_ms())
local m = mem(id)
unindex(m)
redis.call('ZADD', DUE, nows, m)
redis.call('HSET', key, 'state', 'scheduled', 'next', nows, 'att', '0')
count('retried', 1)
return 1
"
);

/// ARGV: id. Removes the entry in any state. Returns 1 or 0.
const DISCARD: &str = concat!(
    prelude!(),
    r"
if remove(ARGV[1]) then
  count('discarded', 1)
  return 1
end
return 0
"
);

/// ARGV: ttl ms, max entries, budget, cutoff (empty on the first call: now − ttl). Removes
/// entries first failed before the cutoff, then the oldest over `max entries`, up to `budget`
/// in all. Returns `{expired, evicted, done, cutoff}`.
const TRIM: &str = concat!(
    prelude!(),
    r"
local cutoff = tonumber(ARGV[4])
if not cutoff then
  cutoff = now_ms() - tonumber(ARGV[1])
  if cutoff < 0 then cutoff = 0 end
end
local maxn = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local expired = 0
local evicted = 0
local done = 1
local old = redis.call('ZRANGEBYSCORE', FIRST, '-inf', '(' .. n2s(cutoff), 'LIMIT', 0, budget)
for _, m in ipairs(old) do
  if remove(unpad(m)) then expired = expired + 1 end
end
if #old >= budget then
  done = 0
else
  local len = redis.call('ZCARD', ALL)
  if len > maxn then
    local over = len - maxn
    local k = math.min(over, budget - #old)
    for _, m in ipairs(redis.call('ZRANGE', ALL, 0, k - 1)) do
      if remove(unpad(m)) then evicted = evicted + 1 end
    end
    if over > k then done = 0 end
  end
end
count('expired', expired)
count('evicted', evicted)
return {expired, evicted, done, n2s(cutoff)}
"
);

/// ARGV: budget. Removes up to `budget` entries, oldest first. Returns `{removed, done}`; once
/// the queue is empty, also deletes the (then empty) indexes.
const PURGE: &str = concat!(
    prelude!(),
    r"
local n = 0
for _, m in ipairs(redis.call('ZRANGE', ALL, 0, tonumber(ARGV[1]) - 1)) do
  if remove(unpad(m)) then n = n + 1 end
end
count('purged', n)
if redis.call('ZCARD', ALL) == 0 then
  redis.call('DEL', DUE, LEASED, PARKED, QUAR, FIRST, KINDS)
  return {n, 1}
end
return {n, 0}
"
);

/// No ARGV. Returns `{now, #due, #leased, #parked, #quarantined, #all, {kinds}, {stats},
/// {oldest member, first failure}}`.
const STATS: &str = concat!(
    prelude!(),
    r"
return {n2s(now_ms()), redis.call('ZCARD', DUE), redis.call('ZCARD', LEASED),
  redis.call('ZCARD', PARKED), redis.call('ZCARD', QUAR), redis.call('ZCARD', ALL),
  redis.call('HGETALL', KINDS), redis.call('HGETALL', STATS),
  redis.call('ZRANGE', FIRST, 0, 0, 'WITHSCORES')}
"
);

struct Scripts {
    enqueue: Script,
    claim: Script,
    ack: Script,
    fail: Script,
    quarantine: Script,
    get: Script,
    list: Script,
    retry: Script,
    discard: Script,
    trim: Script,
    purge: Script,
    stats: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: Script::new(ENQUEUE),
    claim: Script::new(CLAIM),
    ack: Script::new(ACK),
    fail: Script::new(FAIL),
    quarantine: Script::new(QUARANTINE),
    get: Script::new(GET),
    list: Script::new(LIST),
    retry: Script::new(RETRY),
    discard: Script::new(DISCARD),
    trim: Script::new(TRIM),
    purge: Script::new(PURGE),
    stats: Script::new(STATS),
});

/// A [`Store`] on Redis, shared by every process that names the same queue (see the module
/// documentation for the key layout).
///
/// - One multiplexed, auto-reconnecting connection ([`ConnectionManager`]), shared by clones.
/// - Every state change is one atomic Lua script, timed by Redis `TIME`.
/// - No script call does unbounded work: list, trim, purge and evictions scan or remove at most
///   1,000 entries per call and loop from Rust. As a consequence `trim` and `purge` are atomic
///   per batch, not as a whole (entries enqueued meanwhile may or may not be removed), a claim
///   returns at most 1,000 expired leases to the due set (the rest on the next claims), and
///   delays and leases are capped at about 31,700 years.
/// - An entry whose fields do not parse is reported as [`StoreError::Corrupt`] naming entry and
///   field (by `get`, `list`, `fail`); `claim` quarantines it instead and goes on.
/// - Redis must not evict keys: use `maxmemory-policy noeviction` ([`RedisStore::connect`]
///   warns otherwise).
///
/// ```no_run
/// use palisade_dlq::{RedisStore, Store};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379", "tool-calls").await?;
/// println!("{} entries", store.stats().await?.total);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    queue: String,
    /// KEYS of every script: the entry prefix, then the fixed keys (see `prelude!`).
    keys: Vec<String>,
    maxmemory_policy: Mutex<Option<String>>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password: it is not even kept.
        f.debug_struct("RedisStore")
            .field("queue", &self.inner.queue)
            .field("maxmemory_policy", &*self.inner.maxmemory_policy.lock())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for queue `queue` on the Redis at `url` (`redis://[:password@]host:port[/db]`),
    /// connecting lazily: this succeeds while Redis is down, and operations fail with
    /// [`StoreError::Unavailable`] until it answers. Call inside a tokio runtime.
    ///
    /// Errors name the field: `redis_url` for a malformed URL, `queue` for a name outside
    /// 1 to 128 characters of `A-Z a-z 0-9 - _ . :`.
    pub fn new(url: &str, queue: &str) -> Result<Self, ConfigError> {
        if !palisade_core::registry::is_valid_name(queue) {
            return Err(ConfigError::new(
                "queue",
                format!(
                    "{queue:?} is not a valid queue name; {}",
                    palisade_core::registry::NAME_RULE
                ),
            ));
        }
        let client = redis::Client::open(url)
            .map_err(|e| ConfigError::new("redis_url", format!("not a Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| ConfigError::new("redis_url", e.to_string()))?;
        let base = format!("palisade:dlq:{{{queue}}}:");
        let keys = [
            "e:",
            "due",
            "leased",
            "parked",
            "quarantined",
            "all",
            "first",
            "seq",
            "tok",
            "stats",
            "kinds",
        ]
        .iter()
        .map(|k| format!("{base}{k}"))
        .collect();
        Ok(RedisStore {
            inner: Arc::new(Inner {
                conn,
                queue: queue.to_owned(),
                keys,
                maxmemory_policy: Mutex::new(None),
            }),
        })
    }

    /// Like [`RedisStore::new`], then connects and runs [`RedisStore::check_config`]: fails
    /// with [`StoreError::Unavailable`] for a bad URL or queue name (the message names the
    /// field) or when Redis cannot be reached.
    pub async fn connect(url: &str, queue: &str) -> Result<Self, StoreError> {
        let store = Self::new(url, queue).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        store.check_config().await?;
        Ok(store)
    }

    /// Reads `maxmemory-policy` and logs a warning unless it is `noeviction`: under any other
    /// policy Redis may silently evict dead-letter entries when memory runs short (BullMQ
    /// documents the same rule). Managed Redis often refuses `CONFIG`; that is logged at debug
    /// level and is not an error. Fails only when Redis cannot be reached.
    pub async fn check_config(&self) -> Result<(), StoreError> {
        let mut conn = self.inner.conn.clone();
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
                    Some(p) => tracing::warn!(
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
                tracing::debug!(queue = %self.inner.queue, error = %e,
                    "Redis refused CONFIG GET maxmemory-policy (managed Redis?); not checked");
                Ok(())
            }
            Err(e) => Err(unavailable(&e)),
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

    /// The Redis key of entry `id` (a hash), for operators inspecting Redis by hand.
    pub fn entry_key(&self, id: EntryId) -> String {
        format!("{}{id}", self.inner.keys[0])
    }

    fn invocation<'a>(&self, script: &'a Script) -> ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        inv.key(self.inner.keys.as_slice());
        inv
    }

    async fn run(&self, name: &str, inv: &ScriptInvocation<'_>) -> Result<Value, StoreError> {
        let mut conn = self.inner.conn.clone();
        inv.invoke_async(&mut conn).await.map_err(|e| {
            StoreError::Unavailable(format!("{name} on queue {}: {e}", self.inner.queue))
        })
    }

    fn corrupt(&self, id: EntryId, field: &str, why: &str) -> StoreError {
        StoreError::Corrupt(format!(
            "entry {id} of queue {}: field {field}: {why}",
            self.inner.queue
        ))
    }

    fn unexpected(&self, script: &str, v: &Value) -> StoreError {
        StoreError::Unavailable(format!(
            "unexpected reply from the {script} script on queue {}: {v:?}",
            self.inner.queue
        ))
    }

    fn parse_entry(&self, id: EntryId, flat: Vec<Value>) -> Result<StoredEntry, StoreError> {
        Fields::new(self, id, flat).entry()
    }

    /// `{id, token, {fields}}` of a claim.
    fn parse_claimed(&self, v: Value) -> Result<(EntryId, u64, Vec<Value>), StoreError> {
        let bad = |v: &Value| self.unexpected("claim", v);
        let Value::Array(items) = v else {
            return Err(bad(&v));
        };
        let [id, token, Value::Array(fields)] =
            <[Value; 3]>::try_from(items).map_err(|items| bad(&Value::Array(items)))?
        else {
            return Err(self.unexpected("claim", &Value::Nil));
        };
        let id = number(&id).ok_or_else(|| bad(&id))?;
        let token = number(&token).ok_or_else(|| bad(&token))?;
        Ok((id, token, fields))
    }
}

/// `StoreError::Unavailable` text of a Redis error (never the URL).
fn unavailable(e: &RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Milliseconds of `d`, capped at [`MAX_MS`].
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).min(MAX_MS)
}

/// The bytes of a string reply.
fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// An unsigned integer reply (integer or decimal string).
fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        _ => std::str::from_utf8(bytes(v)?).ok()?.parse().ok(),
    }
}

/// `(field, value)` pairs of a flat `HGETALL` reply.
fn pairs(flat: Vec<Value>) -> Vec<(String, Value)> {
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let k = bytes(&k).map(|b| String::from_utf8_lossy(b).into_owned());
        out.push((k.unwrap_or_default(), v));
    }
    out
}

/// A short, printable excerpt of a bad value for error messages.
fn excerpt(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let mut out: String = s.chars().take(40).collect();
    if s.chars().count() > 40 {
        out.push_str("...");
    }
    format!("{out:?}")
}

/// An entry's hash fields, parsed one by one into a [`StoredEntry`].
struct Fields<'a> {
    store: &'a RedisStore,
    id: EntryId,
    map: HashMap<String, Value>,
}

impl<'a> Fields<'a> {
    fn new(store: &'a RedisStore, id: EntryId, flat: Vec<Value>) -> Self {
        Fields {
            store,
            id,
            map: pairs(flat).into_iter().collect(),
        }
    }

    fn err(&self, field: &str, why: &str) -> StoreError {
        self.store.corrupt(self.id, field, why)
    }

    fn opt_bytes(&mut self, field: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.map.remove(field) {
            None => Ok(None),
            Some(Value::BulkString(b)) => Ok(Some(b)),
            Some(Value::SimpleString(s)) => Ok(Some(s.into_bytes())),
            Some(v) => Err(self.err(field, &format!("not a string: {v:?}"))),
        }
    }

    fn bytes(&mut self, field: &str) -> Result<Vec<u8>, StoreError> {
        self.opt_bytes(field)?
            .ok_or_else(|| self.err(field, "missing"))
    }

    fn text(&mut self, field: &str) -> Result<String, StoreError> {
        String::from_utf8(self.bytes(field)?)
            .map_err(|e| self.err(field, &format!("not UTF-8: {}", excerpt(e.as_bytes()))))
    }

    fn opt_parsed<T: FromStr>(&mut self, field: &str) -> Result<Option<T>, StoreError>
    where
        T::Err: fmt::Display,
    {
        let Some(b) = self.opt_bytes(field)? else {
            return Ok(None);
        };
        std::str::from_utf8(&b)
            .map_err(|_| self.err(field, &format!("not UTF-8: {}", excerpt(&b))))?
            .parse()
            .map(Some)
            .map_err(|e: T::Err| self.err(field, &format!("{}: {e}", excerpt(&b))))
    }

    fn parsed<T: FromStr>(&mut self, field: &str) -> Result<T, StoreError>
    where
        T::Err: fmt::Display,
    {
        self.opt_parsed(field)?
            .ok_or_else(|| self.err(field, "missing"))
    }

    fn json<T: serde::de::DeserializeOwned>(&mut self, field: &str) -> Result<T, StoreError> {
        let b = self.bytes(field)?;
        serde_json::from_slice(&b).map_err(|e| self.err(field, &format!("{}: {e}", excerpt(&b))))
    }

    fn entry(mut self) -> Result<StoredEntry, StoreError> {
        if self.map.is_empty() {
            return Err(self.err("*", "the entry has no fields"));
        }
        Ok(StoredEntry {
            id: self.id,
            operation: self.text("op")?,
            kind: self.parsed::<FailureKind>("kind")?,
            error: self.text("err")?,
            attempts: self.parsed("att")?,
            first_failed_ms: self.parsed("first")?,
            last_failed_ms: self.parsed("last")?,
            next_attempt_ms: self.opt_parsed("next")?,
            state: self.parsed::<EntryState>("state")?,
            metadata: self.json("meta")?,
            history: self.json::<Vec<FailureRecord>>("hist")?,
            lease_until_ms: self.opt_parsed("lease")?,
            payload: self.bytes("payload")?,
        })
    }
}

/// `(park, delay ms)` arguments of a schedule.
fn schedule_args(schedule: Schedule) -> (&'static str, u64) {
    match schedule {
        Schedule::RetryIn(d) => ("0", ms(d)),
        Schedule::Park => ("1", 0),
    }
}

/// A filter field as the list script takes it: empty for any, else `=value`.
fn filter_arg(v: Option<&str>) -> String {
    v.map_or_else(String::new, |v| format!("={v}"))
}

/// Integers of a script's array reply.
fn ints(v: &Value) -> Option<Vec<u64>> {
    match v {
        Value::Array(items) => items.iter().map(number).collect(),
        _ => None,
    }
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn enqueue(&self, entry: NewEntry, max_entries: u64) -> Result<EntryId, StoreError> {
        let meta = serde_json::to_string(&entry.metadata).map_err(|e| {
            StoreError::Unavailable(format!("metadata does not serialize to JSON: {e}"))
        })?;
        let (park, delay) = schedule_args(entry.schedule);
        let mut inv = self.invocation(&SCRIPTS.enqueue);
        inv.arg(max_entries)
            .arg(BATCH)
            .arg(&entry.operation)
            .arg(entry.kind.as_str())
            .arg(&entry.error)
            .arg(&meta)
            .arg(&entry.payload)
            .arg(park)
            .arg(delay);
        // Loops only while a full queue needs more than one batch of evictions.
        loop {
            let v = self.run("enqueue", &inv).await?;
            match ints(&v).as_deref() {
                Some([1, id]) => return Ok(*id),
                Some([0, _]) => {}
                _ => return Err(self.unexpected("enqueue", &v)),
            }
        }
    }

    async fn claim(&self, max: usize, lease: Duration) -> Result<Vec<Lease>, StoreError> {
        let mut out = Vec::with_capacity(max.min(CLAIM_BATCH));
        loop {
            let batch = (max - out.len()).min(CLAIM_BATCH);
            let mut inv = self.invocation(&SCRIPTS.claim);
            inv.arg(batch).arg(ms(lease)).arg(BATCH);
            let v = self.run("claim", &inv).await?;
            let Value::Array(reply) = v else {
                return Err(self.unexpected("claim", &v));
            };
            let [examined, Value::Array(claimed)] = <[Value; 2]>::try_from(reply)
                .map_err(|items| self.unexpected("claim", &Value::Array(items)))?
            else {
                return Err(self.unexpected("claim", &Value::Nil));
            };
            let examined = number(&examined).ok_or_else(|| self.unexpected("claim", &examined))?;
            for item in claimed {
                let (id, token, fields) = self.parse_claimed(item)?;
                match self.parse_entry(id, fields) {
                    Ok(entry) => out.push(Lease { entry, token }),
                    Err(e) => {
                        // A corrupt entry must not block the queue: quarantine it, go on.
                        tracing::warn!(queue = %self.inner.queue, id, error = %e,
                            "quarantining a dead-letter entry that does not parse");
                        self.quarantine(id, Some(token), &e.to_string()).await?;
                    }
                }
            }
            let exhausted = usize::try_from(examined).map_or(true, |n| n < batch);
            if batch == 0 || exhausted || out.len() >= max {
                return Ok(out);
            }
        }
    }

    async fn ack(&self, id: EntryId, token: u64) -> Result<bool, StoreError> {
        let mut inv = self.invocation(&SCRIPTS.ack);
        inv.arg(id).arg(token);
        let v = self.run("ack", &inv).await?;
        flag(&v).ok_or_else(|| self.unexpected("ack", &v))
    }

    async fn fail(
        &self,
        id: EntryId,
        token: u64,
        kind: FailureKind,
        error: &str,
        schedule: Schedule,
    ) -> Result<bool, StoreError> {
        let (park, delay) = schedule_args(schedule);
        let mut inv = self.invocation(&SCRIPTS.fail);
        inv.arg(id)
            .arg(token)
            .arg(kind.as_str())
            .arg(error)
            .arg(park)
            .arg(delay)
            .arg(HISTORY_LEN);
        let v = self.run("fail", &inv).await?;
        if let Some(ok) = flag(&v) {
            return Ok(ok);
        }
        if let Value::Array(items) = &v {
            if let [tag, field] = items.as_slice() {
                if bytes(tag) == Some(b"corrupt".as_slice()) {
                    let field = bytes(field)
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default();
                    return Err(self.corrupt(id, &field, "unreadable (fail refused)"));
                }
            }
        }
        Err(self.unexpected("fail", &v))
    }

    async fn quarantine(
        &self,
        id: EntryId,
        token: Option<u64>,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let mut inv = self.invocation(&SCRIPTS.quarantine);
        inv.arg(id)
            .arg(token.map_or_else(String::new, |t| t.to_string()))
            .arg(reason);
        let v = self.run("quarantine", &inv).await?;
        flag(&v).ok_or_else(|| self.unexpected("quarantine", &v))
    }

    async fn get(&self, id: EntryId) -> Result<Option<StoredEntry>, StoreError> {
        let mut inv = self.invocation(&SCRIPTS.get);
        inv.arg(id);
        match self.run("get", &inv).await? {
            Value::Array(flat) if flat.is_empty() => Ok(None),
            Value::Array(flat) => self.parse_entry(id, flat).map(Some),
            v => Err(self.unexpected("get", &v)),
        }
    }

    async fn list(
        &self,
        filter: &Filter,
        after: Option<EntryId>,
        limit: usize,
    ) -> Result<Page<StoredEntry>, StoreError> {
        let mut entries: Vec<StoredEntry> = Vec::new();
        if limit == 0 {
            return Ok(Page {
                entries,
                next: None,
            });
        }
        // Parked and quarantined entries have their own sets, scored by id: scan only those.
        let source = match filter.state {
            Some(EntryState::Parked) => "parked",
            Some(EntryState::Quarantined) => "quarantined",
            _ => "all",
        };
        let kind = filter_arg(filter.kind.map(FailureKind::as_str));
        let op = filter_arg(filter.operation.as_deref());
        let state = filter_arg(filter.state.map(EntryState::as_str));
        let mut cursor = after.map(|a| a.to_string()).unwrap_or_default();
        loop {
            // One match beyond the page tells whether another page follows.
            let need = limit.saturating_add(1) - entries.len();
            let mut inv = self.invocation(&SCRIPTS.list);
            inv.arg(source)
                .arg(&cursor)
                .arg(BATCH)
                .arg(need)
                .arg(&kind)
                .arg(&op)
                .arg(&state);
            let v = self.run("list", &inv).await?;
            let Value::Array(reply) = v else {
                return Err(self.unexpected("list", &v));
            };
            let [last, done, Value::Array(found)] = <[Value; 3]>::try_from(reply)
                .map_err(|items| self.unexpected("list", &Value::Array(items)))?
            else {
                return Err(self.unexpected("list", &Value::Nil));
            };
            for item in found {
                if entries.len() == limit {
                    // A further match exists: the page is full and has a successor.
                    let next = entries.last().map(|e| e.id);
                    return Ok(Page { entries, next });
                }
                let Value::Array(pair) = item else {
                    return Err(self.unexpected("list", &item));
                };
                let [id, Value::Array(fields)] = <[Value; 2]>::try_from(pair)
                    .map_err(|items| self.unexpected("list", &Value::Array(items)))?
                else {
                    return Err(self.unexpected("list", &Value::Nil));
                };
                let id = number(&id).ok_or_else(|| self.unexpected("list", &id))?;
                entries.push(self.parse_entry(id, fields)?);
            }
            let last = bytes(&last).map(|b| String::from_utf8_lossy(b).into_owned());
            match (number(&done), last) {
                (Some(0), Some(last)) if !last.is_empty() => cursor = last,
                (Some(_), _) => {
                    return Ok(Page {
                        entries,
                        next: None,
                    });
                }
                _ => return Err(self.unexpected("list", &done)),
            }
        }
    }

    async fn retry(&self, id: EntryId) -> Result<bool, StoreError> {
        let mut inv = self.invocation(&SCRIPTS.retry);
        inv.arg(id);
        let v = self.run("retry", &inv).await?;
        flag(&v).ok_or_else(|| self.unexpected("retry", &v))
    }

    async fn discard(&self, id: EntryId) -> Result<bool, StoreError> {
        let mut inv = self.invocation(&SCRIPTS.discard);
        inv.arg(id);
        let v = self.run("discard", &inv).await?;
        flag(&v).ok_or_else(|| self.unexpected("discard", &v))
    }

    async fn trim(&self, ttl: Duration, max_entries: u64) -> Result<Trimmed, StoreError> {
        let mut trimmed = Trimmed::default();
        // The first call fixes the cutoff (now − ttl); the next ones reuse it.
        let mut cutoff = String::new();
        loop {
            let mut inv = self.invocation(&SCRIPTS.trim);
            inv.arg(ms(ttl)).arg(max_entries).arg(BATCH).arg(&cutoff);
            let v = self.run("trim", &inv).await?;
            let Some([expired, evicted, done, c]) = ints(&v)
                .as_deref()
                .map(<[u64; 4]>::try_from)
                .and_then(Result::ok)
            else {
                return Err(self.unexpected("trim", &v));
            };
            trimmed.expired += expired;
            trimmed.evicted += evicted;
            if done == 1 {
                return Ok(trimmed);
            }
            cutoff = c.to_string();
        }
    }

    async fn purge(&self) -> Result<u64, StoreError> {
        let mut removed = 0;
        loop {
            let mut inv = self.invocation(&SCRIPTS.purge);
            inv.arg(BATCH);
            let v = self.run("purge", &inv).await?;
            match ints(&v).as_deref() {
                Some([n, done]) => {
                    removed += n;
                    if *done == 1 {
                        return Ok(removed);
                    }
                }
                _ => return Err(self.unexpected("purge", &v)),
            }
        }
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let inv = self.invocation(&SCRIPTS.stats);
        let v = self.run("stats", &inv).await?;
        let Value::Array(reply) = v else {
            return Err(self.unexpected("stats", &v));
        };
        let items = <[Value; 9]>::try_from(reply)
            .map_err(|items| self.unexpected("stats", &Value::Array(items)))?;
        let [
            now,
            due,
            leased,
            parked,
            quarantined,
            total,
            Value::Array(kinds),
            Value::Array(counters),
            Value::Array(oldest),
        ] = items
        else {
            return Err(self.unexpected("stats", &Value::Nil));
        };
        let num = |v: &Value| number(v).ok_or_else(|| self.unexpected("stats", v));
        let mut stats = StoreStats {
            now_ms: num(&now)?,
            total: num(&total)?,
            ..StoreStats::default()
        };
        for (state, n) in [
            (EntryState::Scheduled, &due),
            (EntryState::Leased, &leased),
            (EntryState::Parked, &parked),
            (EntryState::Quarantined, &quarantined),
        ] {
            let n = num(n)?;
            if n > 0 {
                stats.by_state.insert(state, n);
            }
        }
        for (kind, n) in pairs(kinds) {
            // Counts follow the entries' `kind` fields: a hand-edited field can leave a stray.
            match (kind.parse::<FailureKind>(), number(&n)) {
                (Ok(k), Some(n)) if n > 0 => {
                    stats.by_kind.insert(k, n);
                }
                _ => tracing::warn!(queue = %self.inner.queue, kind, count = ?n,
                    "ignoring an unknown failure kind in the dead-letter counts"),
            }
        }
        stats.totals = self.totals(counters)?;
        if let [_, score] = oldest.as_slice() {
            let first = bytes(score)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|f| f.is_finite() && *f >= 0.0)
                .ok_or_else(|| self.unexpected("stats", score))?;
            // Scores are integral milliseconds below 2^53: the conversion is exact.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let first = first as u64;
            stats.oldest_first_failed_ms = Some(first);
        }
        Ok(stats)
    }
}

impl RedisStore {
    fn totals(&self, counters: Vec<Value>) -> Result<Totals, StoreError> {
        let mut t = Totals::default();
        for (field, v) in pairs(counters) {
            let slot = match field.as_str() {
                "enqueued" => &mut t.enqueued,
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
            *slot = number(&v).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "counters of queue {}: field {field}: {v:?}",
                    self.inner.queue
                ))
            })?;
        }
        Ok(t)
    }
}

/// A 0/1 reply.
fn flag(v: &Value) -> Option<bool> {
    match v {
        Value::Int(0) => Some(false),
        Value::Int(1) => Some(true),
        _ => None,
    }
}
