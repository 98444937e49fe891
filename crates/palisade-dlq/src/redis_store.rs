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
//! | `palisade:dlq:{q}:e:<id>` | string | one entry (below), `<id>` zero-padded to 20 digits |
//! | `palisade:dlq:{q}:due` | sorted set | scheduled entries by next attempt, leased by lease end |
//! | `palisade:dlq:{q}:leases` | hash | leased entry id → `<token> <kind>` (its current lease) |
//! | `palisade:dlq:{q}:parked` | sorted set | parked entries, scored by id |
//! | `palisade:dlq:{q}:quarantined` | sorted set | quarantined entries, scored by id |
//! | `palisade:dlq:{q}:all` | sorted set | every entry, scored by id (enqueue order) |
//! | `palisade:dlq:{q}:seq` | string | the last id (`INCR`): the count of entries ever enqueued |
//! | `palisade:dlq:{q}:tok` | string | the last fencing token (`INCR`, once per claim call) |
//! | `palisade:dlq:{q}:stats` | hash | lifetime counters ([`Totals`]) but `enqueued` (`seq`) |
//! | `palisade:dlq:{q}:kinds` | hash | failure kind → entries of that kind now |
//!
//! Ids are written zero-padded to 20 digits everywhere (entry keys, sorted-set members, `leases`
//! fields, script arguments), so that entries due at the same millisecond are claimed in id
//! order (Redis orders equal scores by member, as strings) and no script converts ids.
//!
//! An entry is one string of three parts separated by line feeds (JSON has none of its own):
//!
//! 1. its status, written by the scripts, always in this field order:
//!    `{"kind":"timeout","state":"scheduled","att":1,"first":<ms>,"last":<ms>,"next":<ms or
//!    null>,"err":"...","hist":[{"at_ms":<ms>,"kind":"...","error":"..."}...]}` (`state` is
//!    `scheduled` — also while leased —, `parked` or `quarantined`; `next` is null unless
//!    scheduled);
//! 2. its origin, written once by [`Store::enqueue`]: `{"op":"...","meta":{...}}`;
//! 3. the payload, raw bytes.
//!
//! One string keeps the hot path cheap: a claim reads one value per entry and an ack deletes
//! plain strings. A lease lives in the indexes only, so that claiming an entry does not write it:
//! a leased entry stays in `due`, rescored to its lease deadline, and has a `leases` field (with
//! the token that acks, failures and quarantines check, one `HMGET` for a whole batch of acks). A
//! lease that expires is therefore due again by itself, and the next claim hands the entry out
//! under a new token. Every entry is in exactly one of `due`, `parked` and `quarantined`, so
//! entries per state are `ZCARD`s and `HLEN leases`.
//!
//! Ids are taken in the script that stamps an entry's original failure with Redis `TIME`, so
//! `all` is in first-failure order as well: the time-to-live trim walks it from the oldest entry
//! and stops at the first one young enough, and the oldest entry of the stats is the lowest id.
//! (Should the Redis clock step back, entries enqueued meanwhile may expire a little late.)

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use palisade_core::ConfigError;
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use redis::{ErrorKind, RedisError, Script, ScriptInvocation, ServerErrorKind, Value};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::failure::FailureKind;
use crate::policy::Schedule;
use crate::store::{
    EntryId, EntryState, FailureRecord, Filter, HISTORY_LEN, Lease, NewEntry, Page, Store,
    StoreError, StoreStats, StoredEntry, Totals, Trimmed,
};

/// Entries one script call may scan or remove (list, trim, purge, eviction): a call stays
/// around a millisecond of Redis time, and Rust loops for the rest.
const BATCH: u64 = 1000;

/// Entries one claim script may lease (larger claims loop).
const CLAIM_BATCH: usize = 1000;

/// Entries one `ack_many` script may acknowledge (larger batches loop).
const ACK_BATCH: usize = 1000;

/// The longest delay or lease passed to Redis, in ms (about 31,700 years): `now + delay` then
/// stays an exact integer in Lua's doubles.
const MAX_MS: u64 = 1_000_000_000_000_000;

// Every script declares one key, `KEYS[1]`: the queue's prefix `palisade:dlq:{q}:` (no such key
// exists). The scripts build the keys they use from it (`P .. 'due'`, `P .. 'e:' .. m`): all of
// them share the queue's hash tag, hence the slot of the declared key, so this is safe on Redis
// Cluster. Each script carries only the helpers it uses (defining Lua functions costs time on
// every call), and reads everything it checks before its first write.

/// `P`, the queue's key prefix.
macro_rules! lua_prefix {
    () => {
        "local P = KEYS[1]\n"
    };
}

/// `now`: Redis `TIME` in ms.
macro_rules! lua_now {
    () => {
        r"local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"
    };
}

/// `n2s`: an integral number as a decimal string (never `1e+15`).
macro_rules! lua_n2s {
    () => {
        "local function n2s(n) return string.format('%.0f', n) end\n"
    };
}

/// `kind_add(kind, d)`: adjusts the count of entries of a kind (drops it at zero).
macro_rules! lua_kind_add {
    () => {
        r"local function kind_add(k, d)
  if k and k ~= '' and d ~= 0 then
    if redis.call('HINCRBY', P .. 'kinds', k, d) <= 0 then redis.call('HDEL', P .. 'kinds', k) end
  end
end
"
    };
}

/// `holder(m)`: the token of an entry's current lease, or nil.
macro_rules! lua_holder {
    () => {
        r"local function holder(m)
  local v = redis.call('HGET', P .. 'leases', m)
  if not v then return nil end
  return string.match(v, '^[^ ]*')
end
"
    };
}

/// `unindex(m, state)`: removes a member from its state's set (from all three when the state is
/// unknown).
macro_rules! lua_unindex {
    () => {
        r"local function unindex(m, state)
  local s = ({scheduled = 'due', parked = 'parked', quarantined = 'quarantined'})[state]
  if s then
    redis.call('ZREM', P .. s, m)
  else
    for _, x in ipairs({'due', 'parked', 'quarantined'}) do redis.call('ZREM', P .. x, m) end
  end
end
"
    };
}

/// `enc(v)`: a decoded status value as JSON again (integers in full).
macro_rules! lua_enc {
    () => {
        r"local function enc(v)
  if type(v) == 'number' and v >= 0 and v == math.floor(v) then
    return string.format('%.0f', v)
  end
  return cjson.encode(v)
end
"
    };
}

/// `status(s, state, att, next, err)`: a status line from a decoded one, with a new state,
/// attempts, next attempt and error (all but `state` already JSON). Needs `enc`.
macro_rules! lua_status {
    () => {
        r#"local function status(s, state, att, nxt, err)
  local h = s.hist
  local hj = '[]'
  if type(h) ~= 'table' or next(h) ~= nil then hj = cjson.encode(h) end
  return '{"kind":' .. enc(s.kind) .. ',"state":"' .. state .. '","att":' .. att ..
    ',"first":' .. enc(s.first) .. ',"last":' .. enc(s.last) .. ',"next":' .. nxt ..
    ',"err":' .. err .. ',"hist":' .. hj .. '}'
end
"#
    };
}

/// `remove_many(ms)`: removes entries (unknown ones only leave the indexes) with one command
/// per index for the batch; returns how many existed. Reads all before writing. Needs
/// `kind_add`.
macro_rules! lua_remove_many {
    () => {
        r#"local function remove_many(ms)
  if #ms == 0 then return 0 end
  local keys, kinds, found = {}, {}, 0
  for i, m in ipairs(ms) do
    local key = P .. 'e:' .. m
    keys[i] = key
    local head = redis.call('GETRANGE', key, 0, 63)
    if head ~= '' or redis.call('EXISTS', key) == 1 then
      found = found + 1
      local kind = string.match(head, '^{"kind":"([%w_]*)"')
      if kind then kinds[kind] = (kinds[kind] or 0) + 1 end
    end
  end
  redis.call('DEL', unpack(keys))
  for _, s in ipairs({'due', 'parked', 'quarantined', 'all'}) do
    redis.call('ZREM', P .. s, unpack(ms))
  end
  redis.call('HDEL', P .. 'leases', unpack(ms))
  redis.call('HDEL', P .. 'dlv', unpack(ms))
  for k, c in pairs(kinds) do kind_add(k, -c) end
  return found
end
"#
    };
}

/// ARGV: max entries, eviction budget, kind, error (JSON), origin line, payload, park (`1`/`0`),
/// delay ms. Evicts the oldest entries while the queue is full; returns `{0, evicted}` when the
/// budget ran out first (call again), else `{1, id}`.
const ENQUEUE: &str = concat!(
    lua_prefix!(),
    lua_now!(),
    lua_n2s!(),
    r"
local len = redis.call('ZCARD', P .. 'all')
local maxn = math.max(tonumber(ARGV[1]), 1)
if len >= maxn then
",
    lua_kind_add!(),
    lua_remove_many!(),
    r#"
  local over = len + 1 - maxn
  local k = math.min(over, tonumber(ARGV[2]))
  local evicted = remove_many(redis.call('ZRANGE', P .. 'all', 0, k - 1))
  if evicted > 0 then redis.call('HINCRBY', P .. 'stats', 'evicted', evicted) end
  if over > k then return {0, evicted} end
end
local id = redis.call('INCR', P .. 'seq')
local m = string.format('%020d', id)
local nows = n2s(now)
local park = ARGV[7] == '1'
local st, nxt = 'parked', 'null'
if not park then st, nxt = 'scheduled', n2s(now + tonumber(ARGV[8])) end
redis.call('SET', P .. 'e:' .. m, '{"kind":"' .. ARGV[3] .. '","state":"' .. st ..
  '","att":1,"first":' .. nows .. ',"last":' .. nows .. ',"next":' .. nxt .. ',"err":' ..
  ARGV[4] .. ',"hist":[]}\n' .. ARGV[5] .. '\n' .. ARGV[6])
if park then
  redis.call('ZADD', P .. 'parked', m, m)
  redis.call('HINCRBY', P .. 'stats', 'parked', 1)
else
  redis.call('ZADD', P .. 'due', nxt, m)
end
redis.call('ZADD', P .. 'all', m, m)
redis.call('HINCRBY', P .. 'kinds', ARGV[3], 1)
return {1, id}
"#
);

/// ARGV: max, lease ms. Leases up to `max` due entries (scheduled ones due now and expired
/// leases) in due order, all under one fresh token. Returns `{due ids examined}` when none was
/// claimed, else `{examined, token, deadline, id, entry, id, entry...}`. Writes no entry: the
/// lease is the rescored `due` member and the `leases` field.
const CLAIM: &str = concat!(
    lua_prefix!(),
    lua_now!(),
    lua_n2s!(),
    r#"
local DUE = P .. 'due'
local ms = redis.call('ZRANGEBYSCORE', DUE, '-inf', n2s(now), 'LIMIT', 0, tonumber(ARGV[1]))
local n = #ms
if n == 0 then return {0} end
local PE = P .. 'e:'
local keys = {}
for i, m in ipairs(ms) do keys[i] = PE .. m end
local es = redis.call('MGET', unpack(keys))
-- The token is taken before the loop (MGET cannot fail): one pass builds everything.
local tok = n2s(redis.call('INCR', P .. 'tok'))
local deadline = n2s(now + tonumber(ARGV[2]))
local out = {n, tok, deadline}
local DLV = P .. 'dlv'
local due, holders, gone, held = {}, {}, {}, {}
local k = 0
for i, m in ipairs(ms) do
  local e = es[i]
  if e then
    k = k + 1
    due[2 * k - 1] = deadline
    due[2 * k] = m
    local kind = string.match(e, '^{"kind":"([%w_]*)"') or ''
    local h = held[kind]
    if not h then
      h = tok .. ' ' .. kind
      held[kind] = h
    end
    holders[2 * k - 1] = m
    holders[2 * k] = h
    out[3 * k + 1] = m
    out[3 * k + 2] = e
    out[3 * k + 3] = redis.call('HINCRBY', DLV, m, 1)
  else
    gone[#gone + 1] = m
  end
end
if #gone > 0 then
  -- Index members without an entry (deleted by hand): dropped.
  redis.call('ZREM', DUE, unpack(gone))
  redis.call('ZREM', P .. 'all', unpack(gone))
  redis.call('HDEL', P .. 'leases', unpack(gone))
  redis.call('HDEL', DLV, unpack(gone))
  if k == 0 then return {n} end
end
redis.call('ZADD', DUE, unpack(due))
redis.call('HSET', P .. 'leases', unpack(holders))
return out
"#
);

/// ARGV: id, token, id, token, ... Removes each entry whose lease is current (an id listed twice
/// is removed once). Returns one 1 or 0 per pair.
const ACK: &str = concat!(
    lua_prefix!(),
    r"
local LEASES = P .. 'leases'
local n = #ARGV / 2
if n < 1 then return {} end
local ms = {}
for i = 1, n do ms[i] = ARGV[2 * i - 1] end
local held = redis.call('HMGET', LEASES, unpack(ms))
local PE = P .. 'e:'
local out, keys, done, kinds = {}, {}, {}, {}
-- Lease values (`<token> <kind>`) repeat within a batch: each is split once.
local toks, kindof = {}, {}
local k = 0
for i = 1, n do
  out[i] = 0
  local v, m = held[i], ms[i]
  if v and not done[m] then
    local t = toks[v]
    if not t then
      local sp = string.find(v, ' ', 1, true) or (#v + 1)
      t = string.sub(v, 1, sp - 1)
      toks[v] = t
      kindof[v] = string.sub(v, sp + 1)
    end
    if t == ARGV[2 * i] then
      done[m] = true
      out[i] = 1
      k = k + 1
      keys[k] = PE .. m
      ms[k] = m
      local kind = kindof[v]
      if kind ~= '' then kinds[kind] = (kinds[kind] or 0) + 1 end
    end
  end
end
if k > 0 then
  for i = n, k + 1, -1 do ms[i] = nil end
  redis.call('DEL', unpack(keys))
  redis.call('ZREM', P .. 'due', unpack(ms))
  redis.call('ZREM', P .. 'all', unpack(ms))
  redis.call('HDEL', LEASES, unpack(ms))
  redis.call('HDEL', P .. 'dlv', unpack(ms))
  redis.call('HINCRBY', P .. 'stats', 'acked', k)
  local KINDS = P .. 'kinds'
  for kind, c in pairs(kinds) do
    if redis.call('HINCRBY', KINDS, kind, -c) <= 0 then redis.call('HDEL', KINDS, kind) end
  end
end
return out
"
);

/// ARGV: id, token, kind, error (JSON), park (`1`/`0`), delay ms, history length. Returns 1, 0
/// (stale token) or `{'corrupt', field}` (nothing changed).
const FAIL: &str = concat!(
    lua_prefix!(),
    lua_n2s!(),
    lua_kind_add!(),
    lua_holder!(),
    lua_enc!(),
    r#"
local m = ARGV[1]
local key = P .. 'e:' .. m
if holder(m) ~= ARGV[2] then return 0 end
local e = redis.call('GET', key)
if not e then return {'corrupt', 'status'} end
local p = string.find(e, '\n', 1, true)
local ok, s = false, nil
if p then ok, s = pcall(cjson.decode, string.sub(e, 1, p - 1)) end
if not ok or type(s) ~= 'table' then return {'corrupt', 'status'} end
if type(s.kind) ~= 'string' then return {'corrupt', 'kind'} end
if type(s.err) ~= 'string' then return {'corrupt', 'err'} end
local last = s.last
if type(last) ~= 'number' or last < 0 or last ~= math.floor(last) then
  return {'corrupt', 'last'}
end
local att = s.att
if type(att) ~= 'number' or att < 0 or att ~= math.floor(att) then return {'corrupt', 'att'} end
local hist = s.hist
if type(hist) ~= 'table' then return {'corrupt', 'hist'} end
hist[#hist + 1] = {at_ms = last, kind = s.kind, error = s.err}
while #hist > tonumber(ARGV[7]) do table.remove(hist, 1) end
"#,
    lua_now!(),
    r#"
local park = ARGV[5] == '1'
local st, nxt = 'parked', 'null'
if not park then st, nxt = 'scheduled', n2s(now + tonumber(ARGV[6])) end
redis.call('HDEL', P .. 'leases', m)
redis.call('HDEL', P .. 'dlv', m)
redis.call('SET', key, '{"kind":"' .. ARGV[3] .. '","state":"' .. st .. '","att":' ..
  n2s(math.min(att + 1, 4294967295)) .. ',"first":' .. enc(s.first) .. ',"last":' .. n2s(now) ..
  ',"next":' .. nxt .. ',"err":' .. ARGV[4] .. ',"hist":' .. cjson.encode(hist) .. '}' ..
  string.sub(e, p))
if park then
  redis.call('ZREM', P .. 'due', m)
  redis.call('ZADD', P .. 'parked', m, m)
  redis.call('HINCRBY', P .. 'stats', 'parked', 1)
else
  redis.call('ZADD', P .. 'due', nxt, m)
end
if s.kind ~= ARGV[3] then
  kind_add(s.kind, -1)
  kind_add(ARGV[3], 1)
end
return 1
"#
);

/// ARGV: id, token (empty: any state), reason (JSON). Returns 1 or 0. An entry whose status does
/// not decode is moved to the quarantine unchanged.
const QUARANTINE: &str = concat!(
    lua_prefix!(),
    lua_holder!(),
    lua_unindex!(),
    lua_enc!(),
    lua_status!(),
    r#"
local m = ARGV[1]
local key = P .. 'e:' .. m
local e = redis.call('GET', key)
if not e then return 0 end
local tok = holder(m)
if ARGV[2] ~= '' and tok ~= ARGV[2] then return 0 end
local updated = e
local p = string.find(e, '\n', 1, true)
if p then
  local ok, s = pcall(cjson.decode, string.sub(e, 1, p - 1))
  if ok and type(s) == 'table' then
    local built, line = pcall(status, s, 'quarantined', enc(s.att), 'null', ARGV[3])
    if built then updated = line .. string.sub(e, p) end
  end
end
redis.call('HDEL', P .. 'dlv', m)
if tok then
  redis.call('HDEL', P .. 'leases', m)
  redis.call('ZREM', P .. 'due', m)
else
  unindex(m, string.match(e, '^{"kind":"[%w_]*","state":"(%a*)"'))
end
redis.call('ZADD', P .. 'quarantined', m, m)
if updated ~= e then redis.call('SET', key, updated) end
redis.call('HINCRBY', P .. 'stats', 'quarantined', 1)
return 1
"#
);

/// ARGV: id. Returns `{}` when unknown, else `{entry, lease deadline or nil}`.
const GET: &str = concat!(
    lua_prefix!(),
    lua_n2s!(),
    r"
local m = ARGV[1]
local e = redis.call('GET', P .. 'e:' .. m)
if not e then return {} end
local dl = false
if redis.call('HEXISTS', P .. 'leases', m) == 1 then
  local s = redis.call('ZSCORE', P .. 'due', m)
  if s then dl = n2s(tonumber(s)) end
end
return {e, dl}
"
);

/// ARGV: source (`all`, `parked`, `quarantined`), after (empty: from the start), scan budget,
/// matches wanted, kind (empty for any, else `=` and the kind), origin prefix (empty for any,
/// else `{"op":<op as JSON>,`), state (like kind). Returns `{last scanned id or '', done (1:
/// the source is exhausted), {{id, entry, lease deadline or nil}...}}`.
const LIST: &str = concat!(
    lua_prefix!(),
    lua_n2s!(),
    r#"
local src = P .. 'all'
if ARGV[1] == 'parked' then src = P .. 'parked'
elseif ARGV[1] == 'quarantined' then src = P .. 'quarantined' end
local min = '-inf'
if ARGV[2] ~= '' then min = '(' .. ARGV[2] end
local budget = tonumber(ARGV[3])
local need = tonumber(ARGV[4])
local kf, of, sf = ARGV[5], ARGV[6], ARGV[7]
local ms = redis.call('ZRANGEBYSCORE', src, min, '+inf', 'LIMIT', 0, budget)
local out = {}
local last = ''
local stopped = false
local leased = {}
if #ms > 0 and ARGV[1] == 'all' then leased = redis.call('HMGET', P .. 'leases', unpack(ms)) end
for i, m in ipairs(ms) do
  last = m
  local e = redis.call('GET', P .. 'e:' .. m)
  if e then
    local kind, st = string.match(e, '^{"kind":"([%w_]*)","state":"(%a*)"')
    if leased[i] then st = 'leased' end
    local ok = (kf == '' or kf == '=' .. (kind or '')) and (sf == '' or sf == '=' .. (st or ''))
    if ok and of ~= '' then
      local p = string.find(e, '\n', 1, true)
      ok = p ~= nil and string.sub(e, p + 1, p + #of) == of
    end
    if ok then
      local dl = false
      if leased[i] then
        local s = redis.call('ZSCORE', P .. 'due', m)
        if s then dl = n2s(tonumber(s)) end
      end
      out[#out + 1] = {m, e, dl}
      if #out >= need then
        stopped = true
        break
      end
    end
  end
end
local done = 0
if not stopped and #ms < budget then done = 1 end
return {last, done, out}
"#
);

/// ARGV: id. Makes a scheduled (not leased) or parked entry due now with attempts 0. Returns 1
/// or 0.
const RETRY: &str = concat!(
    lua_prefix!(),
    lua_n2s!(),
    lua_enc!(),
    lua_status!(),
    r#"
local m = ARGV[1]
local key = P .. 'e:' .. m
local e = redis.call('GET', key)
if not e then return 0 end
local st = string.match(e, '^{"kind":"[%w_]*","state":"(%a*)"')
if st ~= 'scheduled' and st ~= 'parked' then return 0 end
if redis.call('HEXISTS', P .. 'leases', m) == 1 then return 0 end
local p = string.find(e, '\n', 1, true)
if not p then return 0 end
local ok, s = pcall(cjson.decode, string.sub(e, 1, p - 1))
if not ok or type(s) ~= 'table' then return 0 end
"#,
    lua_now!(),
    r"
local nows = n2s(now)
local built, line = pcall(status, s, 'scheduled', '0', nows, enc(s.err))
if not built then return 0 end
if st == 'parked' then redis.call('ZREM', P .. 'parked', m) end
redis.call('ZADD', P .. 'due', nows, m)
redis.call('HDEL', P .. 'dlv', m)
redis.call('SET', key, line .. string.sub(e, p))
redis.call('HINCRBY', P .. 'stats', 'retried', 1)
return 1
"
);

/// ARGV: id. Removes the entry in any state. Returns 1 or 0.
const DISCARD: &str = concat!(
    lua_prefix!(),
    lua_kind_add!(),
    lua_remove_many!(),
    r"
if remove_many({ARGV[1]}) == 1 then
  redis.call('HINCRBY', P .. 'stats', 'discarded', 1)
  return 1
end
return 0
"
);

/// ARGV: ttl ms, max entries, budget, cutoff (empty on the first call: now − ttl), cursor (`0`
/// on the first call). Walks `all` from the id after the cursor, removing entries first failed
/// before the cutoff, until the first younger one (entries whose first failure is unreadable
/// are passed over); then removes the oldest entries over `max entries`; scans and removes at
/// most `budget` entries in all. Returns `{expired, evicted, done, cutoff, cursor}`: the cursor
/// is where the walk stopped, `end` once it is over.
const TRIM: &str = concat!(
    lua_prefix!(),
    lua_n2s!(),
    lua_kind_add!(),
    lua_remove_many!(),
    r"
local cutoff = tonumber(ARGV[4])
if not cutoff then
",
    lua_now!(),
    r#"
  cutoff = now - tonumber(ARGV[1])
  if cutoff < 0 then cutoff = 0 end
end
local ALL = P .. 'all'
local maxn = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local cursor = ARGV[5]
local scanned = 0
local old = {}
while cursor ~= 'end' and scanned < budget do
  local ms = redis.call('ZRANGEBYSCORE', ALL, '(' .. cursor, '+inf', 'LIMIT', 0,
    math.min(64, budget - scanned))
  if #ms == 0 then
    cursor = 'end'
    break
  end
  for _, m in ipairs(ms) do
    local key = P .. 'e:' .. m
    local head = redis.call('GETRANGE', key, 0, 127)
    local first = tonumber(string.match(head,
      '^{"kind":"[%w_]*","state":"%a*","att":[^,]*,"first":(%d+),'))
    scanned = scanned + 1
    if first then
      if first >= cutoff then
        cursor = 'end'
        break
      end
      old[#old + 1] = m
    elseif head == '' and redis.call('EXISTS', key) == 0 then
      -- A stray member: dropped from the indexes (not counted).
      old[#old + 1] = m
    end
    cursor = m
  end
end
local expired = remove_many(old)
local evicted = 0
local done = 1
if cursor ~= 'end' then
  done = 0
else
  local len = redis.call('ZCARD', ALL)
  if len > maxn then
    local over = len - maxn
    local k = math.min(over, budget - scanned)
    if k > 0 then
      evicted = remove_many(redis.call('ZRANGE', ALL, 0, k - 1))
    end
    if over > k then done = 0 end
  end
end
if expired > 0 then redis.call('HINCRBY', P .. 'stats', 'expired', expired) end
if evicted > 0 then redis.call('HINCRBY', P .. 'stats', 'evicted', evicted) end
return {expired, evicted, done, n2s(cutoff), cursor}
"#
);

/// ARGV: budget. Removes up to `budget` entries, oldest first. Returns `{removed, done}`; once
/// the queue is empty, also deletes the (then empty) indexes.
const PURGE: &str = concat!(
    lua_prefix!(),
    lua_kind_add!(),
    lua_remove_many!(),
    r"
local ALL = P .. 'all'
local n = remove_many(redis.call('ZRANGE', ALL, 0, tonumber(ARGV[1]) - 1))
if n > 0 then redis.call('HINCRBY', P .. 'stats', 'purged', n) end
if redis.call('ZCARD', ALL) == 0 then
  redis.call('DEL', P .. 'due', P .. 'parked', P .. 'quarantined', P .. 'leases', P .. 'kinds', P .. 'dlv')
  return {n, 1}
end
return {n, 0}
"
);

/// No ARGV. Returns `{now, #due (scheduled and leased), #leased, #parked, #quarantined, #all,
/// {kinds}, {stats}, seq, {oldest id, its first failure or nil}}` (the last empty when the
/// queue is).
const STATS: &str = concat!(
    lua_prefix!(),
    lua_now!(),
    lua_n2s!(),
    r#"
local oldest = {}
local m = redis.call('ZRANGE', P .. 'all', 0, 0)[1]
if m then
  local head = redis.call('GETRANGE', P .. 'e:' .. m, 0, 127)
  oldest = {m, string.match(head, '^{"kind":"[%w_]*","state":"%a*","att":[^,]*,"first":(%d+),')
    or false}
end
return {n2s(now), redis.call('ZCARD', P .. 'due'), redis.call('HLEN', P .. 'leases'),
  redis.call('ZCARD', P .. 'parked'), redis.call('ZCARD', P .. 'quarantined'),
  redis.call('ZCARD', P .. 'all'), redis.call('HGETALL', P .. 'kinds'),
  redis.call('HGETALL', P .. 'stats'), redis.call('GET', P .. 'seq') or '0', oldest}
"#
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
    extend: Script,
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
    extend: Script::new(include_str!("lua/extend.lua")),
});

/// A [`Store`] on Redis, shared by every process that names the same queue (see the module
/// documentation for the key layout).
///
/// - One multiplexed, auto-reconnecting connection ([`ConnectionManager`]), shared by clones.
/// - Every state change is one atomic Lua script, timed by Redis `TIME`.
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
    /// The one key every script declares: the queue's prefix `palisade:dlq:{q}:`.
    prefix: String,
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
        let conn = palisade_core::redis::lazy_connection(
            url,
            "redis_url",
            palisade_core::redis::connection_config(),
        )?;
        let prefix = format!("palisade:dlq:{{{queue}}}:");
        Ok(RedisStore {
            inner: Arc::new(Inner {
                conn,
                queue: queue.to_owned(),
                prefix,
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

    /// The Redis key of entry `id` (a string: status line, origin line, payload; see the module
    /// documentation), for operators inspecting Redis by hand.
    pub fn entry_key(&self, id: EntryId) -> String {
        format!("{}e:{}", self.inner.prefix, padded(id))
    }

    fn invocation<'a>(&self, script: &'a Script) -> ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        inv.key(self.inner.prefix.as_str());
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
}

/// `StoreError::Unavailable` text of a Redis error (never the URL).
fn unavailable(e: &RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// An id as the scripts take it (zero-padded to 20 digits, see the module documentation).
fn padded(id: EntryId) -> String {
    format!("{id:020}")
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

/// An entry's status line (see the module documentation).
#[derive(Deserialize)]
struct Status {
    kind: FailureKind,
    state: EntryState,
    att: u32,
    first: u64,
    last: u64,
    next: Option<u64>,
    err: String,
    hist: Vec<FailureRecord>,
}

/// An entry's origin line, as read.
#[derive(Deserialize)]
struct Origin {
    op: String,
    meta: BTreeMap<String, String>,
}

/// An entry's origin line, as written.
#[derive(Serialize)]
struct OriginRef<'a> {
    op: &'a str,
    meta: &'a BTreeMap<String, String>,
}

/// Whether a JSON value reads as a `T`, or why not.
fn reads_as<T: DeserializeOwned>(v: &serde_json::Value) -> Result<(), String> {
    T::deserialize(v).map(|_| ()).map_err(|e| e.to_string())
}

/// A field of a status or origin line and its check.
type Check = (&'static str, fn(&serde_json::Value) -> Result<(), String>);

/// The fields of a status line, in the order they are checked.
const STATUS_CHECKS: [Check; 8] = [
    ("kind", reads_as::<FailureKind>),
    ("err", reads_as::<String>),
    ("att", reads_as::<u32>),
    ("first", reads_as::<u64>),
    ("last", reads_as::<u64>),
    ("state", reads_as::<EntryState>),
    ("next", reads_as::<Option<u64>>),
    ("hist", reads_as::<Vec<FailureRecord>>),
];

/// The fields of an origin line.
const ORIGIN_CHECKS: [Check; 2] = [
    ("op", reads_as::<String>),
    ("meta", reads_as::<BTreeMap<String, String>>),
];

/// `(park, delay ms)` arguments of a schedule.
fn schedule_args(schedule: Schedule) -> (&'static str, u64) {
    match schedule {
        Schedule::RetryIn(d) => ("0", ms(d)),
        Schedule::Park => ("1", 0),
    }
}

/// A string as JSON (for the scripts, which paste it into a status line).
fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
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

impl RedisStore {
    /// Parses an entry (see the module documentation); `deadline` is its lease's, nil when it is
    /// not leased.
    fn parse_entry(
        &self,
        id: EntryId,
        entry: &[u8],
        deadline: &Value,
    ) -> Result<StoredEntry, StoreError> {
        let mut parts = entry.splitn(3, |&b| b == b'\n');
        let (Some(status), Some(origin), Some(payload)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(self.corrupt(
                id,
                "*",
                &format!(
                    "not a status line, an origin line and a payload: {}",
                    excerpt(entry)
                ),
            ));
        };
        let status: Status = serde_json::from_slice(status)
            .map_err(|e| self.line_error(id, "status", status, &STATUS_CHECKS, &e))?;
        let origin: Origin = serde_json::from_slice(origin)
            .map_err(|e| self.line_error(id, "origin", origin, &ORIGIN_CHECKS, &e))?;
        let lease_until_ms = match deadline {
            Value::Nil => None,
            v => Some(number(v).ok_or_else(|| self.corrupt(id, "lease", &format!("{v:?}")))?),
        };
        let state = if lease_until_ms.is_some() {
            EntryState::Leased
        } else {
            status.state
        };
        Ok(StoredEntry {
            id,
            operation: origin.op,
            payload: payload.to_vec(),
            kind: status.kind,
            error: status.err,
            attempts: status.att,
            first_failed_ms: status.first,
            last_failed_ms: status.last,
            // Only meaningful while scheduled (a leased entry keeps its last one).
            next_attempt_ms: status.next.filter(|_| state == EntryState::Scheduled),
            state,
            metadata: origin.meta,
            history: status.hist,
            lease_until_ms,
        })
    }

    /// Names the field of a line that does not parse.
    fn line_error(
        &self,
        id: EntryId,
        line: &str,
        raw: &[u8],
        checks: &[Check],
        e: &serde_json::Error,
    ) -> StoreError {
        let map: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(raw) {
            Ok(map) => map,
            Err(e) => {
                let why = format!("not a JSON object: {}: {e}", excerpt(raw));
                return self.corrupt(id, line, &why);
            }
        };
        for &(field, check) in checks {
            let why = match map.get(field) {
                // Only `next` may be missing (null).
                None => check(&serde_json::Value::Null)
                    .err()
                    .map(|_| "missing".to_owned()),
                Some(v) => check(v)
                    .err()
                    .map(|why| format!("{}: {why}", excerpt(v.to_string().as_bytes()))),
            };
            if let Some(why) = why {
                return self.corrupt(id, field, &why);
            }
        }
        self.corrupt(id, line, &e.to_string())
    }
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn enqueue(&self, entry: NewEntry, max_entries: u64) -> Result<EntryId, StoreError> {
        let origin = serde_json::to_string(&OriginRef {
            op: &entry.operation,
            meta: &entry.metadata,
        })
        .map_err(|e| {
            StoreError::Unavailable(format!("metadata does not serialize to JSON: {e}"))
        })?;
        let (park, delay) = schedule_args(entry.schedule);
        let mut inv = self.invocation(&SCRIPTS.enqueue);
        inv.arg(max_entries)
            .arg(BATCH)
            .arg(entry.kind.as_str())
            .arg(json_string(&entry.error))
            .arg(origin)
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
            inv.arg(batch).arg(ms(lease));
            let v = self.run("claim", &inv).await?;
            let Value::Array(reply) = v else {
                return Err(self.unexpected("claim", &v));
            };
            // `{examined}`, or `{examined, token, deadline, id, entry, deliveries, id, ...}`.
            if reply.len() != 1 && (reply.len() < 3 || reply.len() % 3 != 0) {
                return Err(self.unexpected("claim", &Value::Array(reply)));
            }
            let mut it = reply.into_iter();
            let examined = it.next().unwrap_or(Value::Nil);
            let examined = number(&examined).ok_or_else(|| self.unexpected("claim", &examined))?;
            if let (Some(token), Some(deadline)) = (it.next(), it.next()) {
                let token = number(&token).ok_or_else(|| self.unexpected("claim", &token))?;
                while let (Some(id), Some(entry), Some(deliveries)) =
                    (it.next(), it.next(), it.next())
                {
                    let id = number(&id).ok_or_else(|| self.unexpected("claim", &id))?;
                    let deliveries = number(&deliveries)
                        .map(|d| u32::try_from(d).unwrap_or(u32::MAX))
                        .ok_or_else(|| self.unexpected("claim", &deliveries))?;
                    let parsed = match bytes(&entry) {
                        Some(b) => self.parse_entry(id, b, &deadline),
                        None => Err(self.unexpected("claim", &entry)),
                    };
                    match parsed {
                        Ok(entry) => out.push(Lease {
                            entry,
                            token,
                            deliveries,
                        }),
                        Err(e) => {
                            // A corrupt entry must not block the queue: quarantine it, go on.
                            tracing::warn!(queue = %self.inner.queue, id, error = %e,
                                "quarantining a dead-letter entry that does not parse");
                            self.quarantine(id, Some(token), &e.to_string()).await?;
                        }
                    }
                }
            }
            let exhausted = usize::try_from(examined).map_or(true, |n| n < batch);
            if batch == 0 || exhausted || out.len() >= max {
                return Ok(out);
            }
        }
    }

    async fn extend(&self, id: EntryId, token: u64, lease: Duration) -> Result<bool, StoreError> {
        let mut inv = SCRIPTS.extend.prepare_invoke();
        inv.key(format!("{}due", self.inner.prefix))
            .key(format!("{}leases", self.inner.prefix))
            .arg(padded(id))
            .arg(token)
            .arg(ms(lease));
        let v = self.run("extend", &inv).await?;
        flag(&v).ok_or_else(|| self.unexpected("extend", &v))
    }

    async fn ack(&self, id: EntryId, token: u64) -> Result<bool, StoreError> {
        Ok(matches!(
            self.ack_many(&[(id, token)]).await?.as_slice(),
            [true]
        ))
    }

    /// One script call per 1,000 acks (each call is atomic).
    async fn ack_many(&self, acks: &[(EntryId, u64)]) -> Result<Vec<bool>, StoreError> {
        let mut out = Vec::with_capacity(acks.len());
        for chunk in acks.chunks(ACK_BATCH) {
            let mut inv = self.invocation(&SCRIPTS.ack);
            for &(id, token) in chunk {
                inv.arg(padded(id)).arg(token);
            }
            let v = self.run("ack", &inv).await?;
            let flags = match &v {
                Value::Array(items) if items.len() == chunk.len() => {
                    items.iter().map(flag).collect::<Option<Vec<bool>>>()
                }
                _ => None,
            };
            out.extend(flags.ok_or_else(|| self.unexpected("ack", &v))?);
        }
        Ok(out)
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
        inv.arg(padded(id))
            .arg(token)
            .arg(kind.as_str())
            .arg(json_string(error))
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
        inv.arg(padded(id))
            .arg(token.map_or_else(String::new, |t| t.to_string()))
            .arg(json_string(reason));
        let v = self.run("quarantine", &inv).await?;
        flag(&v).ok_or_else(|| self.unexpected("quarantine", &v))
    }

    async fn get(&self, id: EntryId) -> Result<Option<StoredEntry>, StoreError> {
        let mut inv = self.invocation(&SCRIPTS.get);
        inv.arg(padded(id));
        let v = self.run("get", &inv).await?;
        match &v {
            Value::Array(items) => match items.as_slice() {
                [] => Ok(None),
                [entry, deadline] => match bytes(entry) {
                    Some(b) => self.parse_entry(id, b, deadline).map(Some),
                    None => Err(self.unexpected("get", &v)),
                },
                _ => Err(self.unexpected("get", &v)),
            },
            _ => Err(self.unexpected("get", &v)),
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
        // Origin lines start with the operation, written by serde_json as here.
        let op = filter
            .operation
            .as_deref()
            .map_or_else(String::new, |op| format!("{{\"op\":{},", json_string(op)));
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
                let parsed = match &item {
                    Value::Array(triple) => match triple.as_slice() {
                        [id, entry, deadline] => match (number(id), bytes(entry)) {
                            (Some(id), Some(b)) => Some(self.parse_entry(id, b, deadline)),
                            _ => None,
                        },
                        _ => None,
                    },
                    _ => None,
                };
                entries.push(parsed.ok_or_else(|| self.unexpected("list", &item))??);
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
        inv.arg(padded(id));
        let v = self.run("retry", &inv).await?;
        flag(&v).ok_or_else(|| self.unexpected("retry", &v))
    }

    async fn discard(&self, id: EntryId) -> Result<bool, StoreError> {
        let mut inv = self.invocation(&SCRIPTS.discard);
        inv.arg(padded(id));
        let v = self.run("discard", &inv).await?;
        flag(&v).ok_or_else(|| self.unexpected("discard", &v))
    }

    async fn trim(&self, ttl: Duration, max_entries: u64) -> Result<Trimmed, StoreError> {
        let mut trimmed = Trimmed::default();
        // The first call fixes the cutoff (now − ttl); the next ones reuse it, and go on
        // walking from where the previous one stopped.
        let mut cutoff = String::new();
        let mut cursor = "0".to_owned();
        loop {
            let mut inv = self.invocation(&SCRIPTS.trim);
            inv.arg(ms(ttl))
                .arg(max_entries)
                .arg(BATCH)
                .arg(&cutoff)
                .arg(&cursor);
            let v = self.run("trim", &inv).await?;
            let parsed = match &v {
                Value::Array(items) => match items.as_slice() {
                    [expired, evicted, done, c, at] => {
                        let at = bytes(at).and_then(|b| std::str::from_utf8(b).ok());
                        match (
                            number(expired),
                            number(evicted),
                            number(done),
                            number(c),
                            at,
                        ) {
                            (Some(x), Some(e), Some(d), Some(c), Some(at)) => {
                                Some((x, e, d, c, at.to_owned()))
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                },
                _ => None,
            };
            let Some((expired, evicted, done, c, at)) = parsed else {
                return Err(self.unexpected("trim", &v));
            };
            trimmed.expired += expired;
            trimmed.evicted += evicted;
            if done == 1 {
                return Ok(trimmed);
            }
            cutoff = c.to_string();
            cursor = at;
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
        let items = <[Value; 10]>::try_from(reply)
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
            seq,
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
        // `due` holds the scheduled entries and the leased ones.
        let leased = num(&leased)?;
        let scheduled = num(&due)?.saturating_sub(leased);
        for (state, n) in [
            (EntryState::Scheduled, scheduled),
            (EntryState::Leased, leased),
            (EntryState::Parked, num(&parked)?),
            (EntryState::Quarantined, num(&quarantined)?),
        ] {
            if n > 0 {
                stats.by_state.insert(state, n);
            }
        }
        for (kind, n) in pairs(kinds) {
            // Counts follow the entries' kinds: a hand-edited entry can leave a stray.
            match (kind.parse::<FailureKind>(), number(&n)) {
                (Ok(k), Some(n)) if n > 0 => {
                    stats.by_kind.insert(k, n);
                }
                _ => tracing::warn!(queue = %self.inner.queue, kind, count = ?n,
                    "ignoring an unknown failure kind in the dead-letter counts"),
            }
        }
        stats.totals = self.totals(counters)?;
        // Ids are taken one by one from `seq`: it counts every entry ever enqueued.
        stats.totals.enqueued = num(&seq)?;
        match oldest.as_slice() {
            [] => {}
            [_, first] if number(first).is_some() => stats.oldest_first_failed_ms = number(first),
            [id, _] => tracing::warn!(queue = %self.inner.queue, id = ?id,
                "the oldest dead-letter entry has no readable first failure time"),
            _ => return Err(self.unexpected("stats", &Value::Array(oldest))),
        }
        Ok(stats)
    }
}

impl RedisStore {
    fn totals(&self, counters: Vec<Value>) -> Result<Totals, StoreError> {
        let mut t = Totals::default();
        for (field, v) in pairs(counters) {
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
