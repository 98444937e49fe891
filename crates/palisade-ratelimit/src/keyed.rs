//! The keyed limiter: one GCRA bucket per key (client IP, tenant, tool), with bounded memory.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::{DefaultHashBuilder, HashTable};
use palisade_core::{
    BuildError, EventBus, EventKind, Registry, RegistryError, SharedClock, config::ConfigError,
};
use parking_lot::RwLock;

use crate::core::Core;
use crate::error::{RateLimitError, RateLimited};
use crate::quota::{Decision, Gcra, Quota, Verdict, admit};

const SHARDS: usize = 64;
/// Default bound on tracked keys.
pub const DEFAULT_MAX_KEYS: usize = 100_000;
/// Largest accepted `max_keys`.
pub const MAX_KEYS: usize = 1 << 30;

struct Slot<K> {
    key: K,
    tat: AtomicU64,
}

/// One shard's keys, and the GCRA parameters their TATs are expressed in. A quota change
/// rescales a shard's TATs and swaps its parameters under the shard's write lock, so a
/// decision (under the read lock) always reads parameters and TATs that belong together.
struct Table<K> {
    slots: HashTable<Slot<K>>,
    gcra: Gcra,
}

#[repr(align(128))]
struct Shard<K>(RwLock<Table<K>>);

/// A local GCRA limiter with one bucket per key, each bucket one atomic.
///
/// Memory is bounded: at most `max_keys` keys (rounded up to a multiple of 64) are tracked. A
/// key whose bucket is full again is *idle*; dropping it loses nothing, and idle keys are swept
/// when a shard fills. If a shard is still full of active keys, the ones closest to full are
/// dropped (counted as `evicted_active_keys_total`: those clients get their burst back early).
///
/// ```
/// use palisade_ratelimit::{KeyedRateLimiter, Quota};
///
/// let per_client = KeyedRateLimiter::<String>::builder("per-client")
///     .quota(Quota::per_minute(60).with_burst(1))
///     .build()?;
/// assert!(per_client.check_key("10.0.0.1").is_ok());
/// assert!(per_client.check_key("10.0.0.1").is_err()); // spent
/// assert!(per_client.check_key("10.0.0.2").is_ok()); // another client has its own bucket
/// # Ok::<(), palisade_core::BuildError>(())
/// ```
pub struct KeyedRateLimiter<K> {
    inner: Arc<Keyed<K>>,
}

impl<K> Clone for KeyedRateLimiter<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Keyed<K> {
    core: Core,
    hasher: DefaultHashBuilder,
    shards: Box<[Shard<K>]>,
    shard_cap: usize,
    evicted_idle: AtomicU64,
    evicted_active: AtomicU64,
}

impl<K> fmt::Debug for KeyedRateLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimiter")
            .field("name", &self.inner.core.name)
            .field("quota", &self.inner.core.quota())
            .field("max_keys", &(self.inner.shard_cap * SHARDS))
            .finish_non_exhaustive()
    }
}

/// Builds a [`KeyedRateLimiter`]; see [`KeyedRateLimiter::builder`].
#[must_use]
pub struct Builder<K> {
    name: String,
    quota: Quota,
    max_keys: usize,
    registry: Option<Registry>,
    register: Option<Registration<K>>,
    clock: Option<SharedClock>,
}

type Registration<K> = Box<dyn FnOnce(&KeyedRateLimiter<K>) -> Result<(), RegistryError> + Send>;

impl<K> fmt::Debug for Builder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("quota", &self.quota)
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

impl<K> Builder<K>
where
    K: Hash + Eq + Send + Sync + 'static,
{
    /// The quota of each key. Default 100 per minute.
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = quota;
        self
    }

    /// At most this many keys are tracked (64 to 2³⁰). Default 100 000.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Reads time from `clock` instead of the CPU's time-stamp counter.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates and builds the limiter (registering it, if asked).
    pub fn build(mut self) -> Result<KeyedRateLimiter<K>, BuildError> {
        let register = self.register.take();
        let limiter = self.build_unregistered()?;
        if let Some(register) = register {
            register(&limiter)?;
        }
        Ok(limiter)
    }

    /// Builds without registering (for limiters embedded in another component).
    pub(crate) fn build_unregistered(self) -> Result<KeyedRateLimiter<K>, ConfigError> {
        if !(64..=MAX_KEYS).contains(&self.max_keys) {
            return Err(ConfigError::new(
                "max_keys",
                format!(
                    "{} is out of range; expected 64 to {MAX_KEYS}",
                    self.max_keys
                ),
            ));
        }
        let core = Core::new(self.name, self.quota, self.registry.as_ref(), self.clock)?;
        let shard_cap = self.max_keys.div_ceil(SHARDS);
        let gcra = core.gcra();
        Ok(KeyedRateLimiter {
            inner: Arc::new(Keyed {
                core,
                hasher: DefaultHashBuilder::default(),
                shards: (0..SHARDS)
                    .map(|_| {
                        Shard(RwLock::new(Table {
                            slots: HashTable::new(),
                            gcra,
                        }))
                    })
                    .collect(),
                shard_cap,
                evicted_idle: AtomicU64::new(0),
                evicted_active: AtomicU64::new(0),
            }),
        })
    }
}

impl Builder<String> {
    /// Registers the limiter in `registry` (limiters keyed by `String`, which the admin API
    /// can address) and publishes its events on the registry's bus.
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        let registry = registry.clone();
        self.register = Some(Box::new(move |l: &KeyedRateLimiter<String>| {
            registry.register(Arc::new(l.clone()))
        }));
        self
    }
}

impl<K> KeyedRateLimiter<K>
where
    K: Hash + Eq + Send + Sync + 'static,
{
    /// A builder for a limiter named `name`.
    pub fn builder(name: impl Into<String>) -> Builder<K> {
        Builder {
            name: name.into(),
            quota: Quota::default(),
            max_keys: DEFAULT_MAX_KEYS,
            registry: None,
            register: None,
            clock: None,
        }
    }

    /// Admits one request of `key`, or refuses it with the exact time to wait.
    #[inline]
    pub fn check_key<Q>(&self, key: &Q) -> Result<(), RateLimited>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let k = &*self.inner;
        match k.verdict(key, 1) {
            (_, _, _, Verdict::Allow(_)) => {
                k.core.permitted.incr();
                Ok(())
            }
            (g, _, _, Verdict::Deny(wait)) => Err(k.core.limited(g, wait)),
        }
    }

    /// Admits `n` requests of `key` at once (all or none).
    pub fn check_key_n<Q>(&self, key: &Q, n: u32) -> Result<(), RateLimitError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let d = self.decide_key(key, n)?;
        Ok(self.inner.core.result(d)?)
    }

    /// Decides on `n` requests of `key` and reports the full outcome. A denial changes nothing.
    pub fn decide_key<Q>(&self, key: &Q, n: u32) -> Result<Decision, RateLimitError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let k = &*self.inner;
        if let Some(e) = k.core.over_capacity(k.core.gcra(), n) {
            return Err(e);
        }
        let (g, tat, now, verdict) = k.verdict(key, n);
        match verdict {
            Verdict::Allow(_) => k.core.permitted.add(u64::from(n)),
            Verdict::Deny(_) => k.core.rejected.add(u64::from(n)),
        }
        Ok(g.decision(tat, now, verdict))
    }

    /// Forgets `key`'s state: its next `burst` requests pass. Returns whether it was tracked.
    pub fn reset_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let k = &*self.inner;
        let hash = k.hasher.hash_one(key);
        let mut table = k.shard(hash).0.write();
        match table.slots.find_entry(hash, |s| s.key.borrow() == key) {
            Ok(entry) => {
                entry.remove();
                true
            }
            Err(_) => false,
        }
    }

    /// Forgets every key.
    pub fn reset_all(&self) {
        for shard in self.inner.shards.iter() {
            shard.0.write().slots.clear();
        }
        self.inner.core.publish(EventKind::AdminAction {
            action: "reset".into(),
        });
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.0.read().slots.len())
            .sum()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every idle key (bucket full again) now; returns how many. Sweeps also happen by
    /// themselves when a shard fills.
    pub fn sweep(&self) -> usize {
        let k = &*self.inner;
        let now = k.core.time.now();
        k.shards
            .iter()
            .map(|s| k.drop_idle(&mut s.0.write().slots, now))
            .sum()
    }

    /// The bound on tracked keys.
    pub fn max_keys(&self) -> usize {
        self.inner.shard_cap * SHARDS
    }

    /// Idle keys dropped so far (nothing lost).
    pub fn evicted_idle_keys(&self) -> u64 {
        self.inner.evicted_idle.load(Ordering::Relaxed)
    }

    /// Active keys dropped so far because the bound was reached (their debt was forgiven).
    pub fn evicted_active_keys(&self) -> u64 {
        self.inner.evicted_active.load(Ordering::Relaxed)
    }

    /// The quota of each key.
    pub fn quota(&self) -> Quota {
        self.inner.core.quota()
    }

    /// Changes every key's rate and burst while running. Validated first; on error nothing
    /// changes.
    ///
    /// Every tracked key keeps the fraction of its burst it has used: raising the quota helps
    /// limited clients at once, lowering it leaves each key the unused share of the new burst
    /// (never more than the new burst). The keys are rescaled shard by shard, each under its
    /// shard's write lock (decisions on that shard wait for it: a few nanoseconds per key,
    /// about 10 µs per shard at the default bound; the whole change takes about 0.5 ms for
    /// 100 000 keys and 10 ms for a million, in a release build).
    pub fn set_quota(&self, quota: Quota) -> Result<(), ConfigError> {
        let k = &*self.inner;
        k.core.set_quota(quota, |_, new, _| {
            for shard in k.shards.iter() {
                let mut table = shard.0.write();
                let old = table.gcra;
                if old == new {
                    continue;
                }
                let now = k.core.time.now();
                for slot in table.slots.iter_mut() {
                    let tat = slot.tat.get_mut();
                    *tat = new.carry(old, *tat, now);
                }
                table.gcra = new;
            }
        })
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.inner.core.name
    }

    /// The event bus this limiter publishes to.
    pub fn events(&self) -> &EventBus {
        &self.inner.core.events
    }

    pub(crate) fn core(&self) -> &Core {
        &self.inner.core
    }
}

impl<K> Keyed<K>
where
    K: Hash + Eq,
{
    #[inline]
    fn shard(&self, hash: u64) -> &Shard<K> {
        // hashbrown indexes with the low bits and tags with the top 7; use bits in between.
        &self.shards[(hash >> 40) as usize % SHARDS]
    }

    /// The parameters in force for `key`, its stored TAT, the time, and the verdict for `n`
    /// cells of `key`; an admission is already stored when this returns.
    #[inline]
    fn verdict<Q>(&self, key: &Q, n: u32) -> (Gcra, u64, u64, Verdict)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let shard = self.shard(hash);
        let now = self.core.time.now();
        {
            let table = shard.0.read();
            if let Some(slot) = table.slots.find(hash, |s| s.key.borrow() == key) {
                let g = table.gcra;
                return admit(&slot.tat, || g, now, n);
            }
        }
        let mut guard = shard.0.write();
        let table = &mut *guard;
        let g = table.gcra;
        if let Some(slot) = table.slots.find(hash, |s| s.key.borrow() == key) {
            return admit(&slot.tat, || g, now, n);
        }
        let verdict = g.decide(0, now, n);
        if let (Verdict::Allow(new), true) = (verdict, n > 0) {
            if table.slots.len() >= self.shard_cap {
                self.make_room(&mut table.slots, now);
            }
            let hasher = &self.hasher;
            table.slots.insert_unique(
                hash,
                Slot {
                    key: key.to_owned(),
                    tat: AtomicU64::new(new),
                },
                |s| hasher.hash_one(&s.key),
            );
        }
        (g, 0, now, verdict)
    }

    fn drop_idle(&self, table: &mut HashTable<Slot<K>>, now: u64) -> usize {
        let before = table.len();
        table.retain(|s| s.tat.load(Ordering::Relaxed) > now);
        let removed = before - table.len();
        self.evicted_idle
            .fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    /// Brings a full shard down to 7/8 of its bound: idle keys first, then the keys closest to
    /// full.
    #[cold]
    fn make_room(&self, table: &mut HashTable<Slot<K>>, now: u64) {
        self.drop_idle(table, now);
        let target = self.shard_cap - self.shard_cap / 8 - 1;
        if table.len() <= target {
            return;
        }
        let mut tats: Vec<u64> = table
            .iter()
            .map(|s| s.tat.load(Ordering::Relaxed))
            .collect();
        let excess = table.len() - target;
        let (_, cutoff, _) = tats.select_nth_unstable(excess - 1);
        let cutoff = *cutoff;
        let mut dropped = 0u64;
        table.retain(|s| {
            let keep = dropped >= excess as u64 || s.tat.load(Ordering::Relaxed) > cutoff;
            if !keep {
                dropped += 1;
            }
            keep
        });
        self.evicted_active.fetch_add(dropped, Ordering::Relaxed);
        tracing::debug!(target: "palisade::ratelimit",
            limiter = %self.core.name,
            dropped,
            "rate limiter key bound reached; dropped the keys closest to a full bucket"
        );
    }
}
