//! The in-memory store: the embedded default (no Redis), with the same behaviour as the Redis
//! store. Nothing survives the process.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use palisade_core::{SharedClock, SystemClock};
use parking_lot::Mutex;

use crate::failure::FailureKind;
use crate::policy::Schedule;
use crate::store::{
    EntryId, EntryState, FailureRecord, Filter, HISTORY_LEN, Lease, NewEntry, Page, Store,
    StoreError, StoreStats, StoredEntry, Totals, Trimmed,
};

/// A [`Store`] in this process's memory, timed by a [`palisade_core::Clock`] (so tests can run
/// it on tokio's paused clock).
///
/// ```
/// use palisade_dlq::MemoryStore;
/// let store = MemoryStore::new();
/// # let _ = store;
/// ```
pub struct MemoryStore {
    clock: SharedClock,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    seq: EntryId,
    tokens: u64,
    entries: BTreeMap<EntryId, (StoredEntry, u64)>,
    /// (due at ms, id) of scheduled entries.
    due: BTreeSet<(u64, EntryId)>,
    /// (lease deadline ms, id) of leased entries.
    leased: BTreeSet<(u64, EntryId)>,
    /// Claims of each entry since its last recorded outcome ([`Lease::deliveries`]).
    deliveries: BTreeMap<EntryId, u32>,
    totals: Totals,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.inner.lock().entries.len())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(SystemClock::shared())
    }

    /// An empty store timed by `clock` (`TokioClock` for tests on the paused clock).
    pub fn with_clock(clock: SharedClock) -> Self {
        MemoryStore {
            clock,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.unix_millis()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Inner {
    /// Unlinks an entry from the indexes by its current state.
    fn unindex(&mut self, e: &StoredEntry) {
        match e.state {
            EntryState::Scheduled => {
                if let Some(at) = e.next_attempt_ms {
                    self.due.remove(&(at, e.id));
                }
            }
            EntryState::Leased => {
                if let Some(until) = e.lease_until_ms {
                    self.leased.remove(&(until, e.id));
                }
            }
            EntryState::Parked | EntryState::Quarantined => {}
        }
    }

    fn index(&mut self, e: &StoredEntry) {
        match e.state {
            EntryState::Scheduled => {
                self.due.insert((e.next_attempt_ms.unwrap_or(0), e.id));
            }
            EntryState::Leased => {
                self.leased.insert((e.lease_until_ms.unwrap_or(0), e.id));
            }
            EntryState::Parked | EntryState::Quarantined => {}
        }
    }

    fn remove(&mut self, id: EntryId) -> Option<StoredEntry> {
        self.deliveries.remove(&id);
        let (e, _) = self.entries.remove(&id)?;
        self.unindex(&e);
        Some(e)
    }

    /// Applies `f` to entry `id` if `token` matches (when given), re-indexing it.
    fn update(
        &mut self,
        id: EntryId,
        token: Option<u64>,
        f: impl FnOnce(&mut StoredEntry),
    ) -> bool {
        let Some((mut e, t)) = self.entries.remove(&id) else {
            return false;
        };
        if token.is_some_and(|tok| tok != t || e.state != EntryState::Leased) {
            self.entries.insert(id, (e, t));
            return false;
        }
        self.unindex(&e);
        f(&mut e);
        self.index(&e);
        self.entries.insert(id, (e, t));
        true
    }

    fn evict_oldest(&mut self, over: u64) -> u64 {
        let ids: Vec<EntryId> = self
            .entries
            .keys()
            .take(usize::try_from(over).unwrap_or(usize::MAX))
            .copied()
            .collect();
        for id in &ids {
            self.remove(*id);
        }
        ids.len() as u64
    }
}

fn apply_schedule(e: &mut StoredEntry, schedule: Schedule, now: u64) -> bool {
    e.lease_until_ms = None;
    match schedule {
        Schedule::RetryIn(d) => {
            e.state = EntryState::Scheduled;
            e.next_attempt_ms = Some(now.saturating_add(ms(d)));
            false
        }
        Schedule::Park => {
            e.state = EntryState::Parked;
            e.next_attempt_ms = None;
            true
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn enqueue(&self, new: NewEntry, max_entries: u64) -> Result<EntryId, StoreError> {
        let now = self.now_ms();
        let mut s = self.inner.lock();
        let len = s.entries.len() as u64;
        if len >= max_entries.max(1) {
            let evicted = s.evict_oldest(len + 1 - max_entries.max(1));
            s.totals.evicted += evicted;
        }
        s.seq += 1;
        let id = s.seq;
        let mut e = StoredEntry {
            id,
            operation: new.operation,
            payload: new.payload,
            kind: new.kind,
            error: new.error,
            attempts: 1,
            first_failed_ms: now,
            last_failed_ms: now,
            next_attempt_ms: None,
            state: EntryState::Scheduled,
            metadata: new.metadata,
            history: Vec::new(),
            lease_until_ms: None,
        };
        if apply_schedule(&mut e, new.schedule, now) {
            s.totals.parked += 1;
        }
        s.totals.enqueued += 1;
        s.index(&e);
        s.entries.insert(id, (e, 0));
        Ok(id)
    }

    async fn claim(&self, max: usize, lease: Duration) -> Result<Vec<Lease>, StoreError> {
        let now = self.now_ms();
        let mut s = self.inner.lock();
        // Expired leases first: their workers died.
        let expired: Vec<EntryId> = s
            .leased
            .range(..=(now, EntryId::MAX))
            .map(|(_, id)| *id)
            .collect();
        for id in expired {
            s.update(id, None, |e| {
                e.state = EntryState::Scheduled;
                e.lease_until_ms = None;
                e.next_attempt_ms = Some(now);
            });
        }
        let due: Vec<EntryId> = s
            .due
            .range(..=(now, EntryId::MAX))
            .take(max)
            .map(|(_, id)| *id)
            .collect();
        let mut out = Vec::with_capacity(due.len());
        for id in due {
            s.tokens += 1;
            let token = s.tokens;
            let until = now.saturating_add(ms(lease));
            s.update(id, None, |e| {
                e.state = EntryState::Leased;
                e.lease_until_ms = Some(until);
                e.next_attempt_ms = None;
            });
            let deliveries = {
                let d = s.deliveries.entry(id).or_insert(0);
                *d = d.saturating_add(1);
                *d
            };
            if let Some((e, t)) = s.entries.get_mut(&id) {
                *t = token;
                out.push(Lease {
                    entry: e.clone(),
                    token,
                    deliveries,
                });
            }
        }
        Ok(out)
    }

    async fn extend(&self, id: EntryId, token: u64, lease: Duration) -> Result<bool, StoreError> {
        let until = self.now_ms().saturating_add(ms(lease));
        let mut s = self.inner.lock();
        Ok(s.update(id, Some(token), |e| e.lease_until_ms = Some(until)))
    }

    async fn ack(&self, id: EntryId, token: u64) -> Result<bool, StoreError> {
        let mut s = self.inner.lock();
        match s.entries.get(&id) {
            Some((e, t)) if *t == token && e.state == EntryState::Leased => {
                s.remove(id);
                s.totals.acked += 1;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn fail(
        &self,
        id: EntryId,
        token: u64,
        kind: FailureKind,
        error: &str,
        schedule: Schedule,
    ) -> Result<bool, StoreError> {
        let now = self.now_ms();
        let mut s = self.inner.lock();
        let mut parked = false;
        let ok = s.update(id, Some(token), |e| {
            e.history.push(FailureRecord {
                at_ms: e.last_failed_ms,
                kind: e.kind,
                error: std::mem::take(&mut e.error),
            });
            if e.history.len() > HISTORY_LEN {
                let extra = e.history.len() - HISTORY_LEN;
                e.history.drain(..extra);
            }
            e.kind = kind;
            e.error = error.to_owned();
            e.attempts = e.attempts.saturating_add(1);
            e.last_failed_ms = now;
            parked = apply_schedule(e, schedule, now);
        });
        if ok {
            s.deliveries.remove(&id);
        }
        if parked {
            s.totals.parked += 1;
        }
        Ok(ok)
    }

    async fn quarantine(
        &self,
        id: EntryId,
        token: Option<u64>,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let mut s = self.inner.lock();
        let ok = s.update(id, token, |e| {
            e.state = EntryState::Quarantined;
            e.next_attempt_ms = None;
            e.lease_until_ms = None;
            e.error = reason.to_owned();
        });
        if ok {
            s.deliveries.remove(&id);
            s.totals.quarantined += 1;
        }
        Ok(ok)
    }

    async fn get(&self, id: EntryId) -> Result<Option<StoredEntry>, StoreError> {
        Ok(self.inner.lock().entries.get(&id).map(|(e, _)| e.clone()))
    }

    async fn list(
        &self,
        filter: &Filter,
        after: Option<EntryId>,
        limit: usize,
    ) -> Result<Page<StoredEntry>, StoreError> {
        let s = self.inner.lock();
        let start = after.map_or(0, |a| a.saturating_add(1));
        let mut entries = Vec::new();
        let mut next = None;
        for (e, _) in s.entries.range(start..).map(|(_, v)| v) {
            if !filter.matches(e) {
                continue;
            }
            if entries.len() == limit {
                next = entries.last().map(|e: &StoredEntry| e.id);
                break;
            }
            entries.push(e.clone());
        }
        Ok(Page { entries, next })
    }

    async fn retry(&self, id: EntryId) -> Result<bool, StoreError> {
        let now = self.now_ms();
        let mut s = self.inner.lock();
        let retryable = matches!(
            s.entries.get(&id),
            Some((e, _)) if matches!(e.state, EntryState::Scheduled | EntryState::Parked)
        );
        if !retryable {
            return Ok(false);
        }
        s.update(id, None, |e| {
            e.state = EntryState::Scheduled;
            e.next_attempt_ms = Some(now);
            e.attempts = 0;
        });
        s.deliveries.remove(&id);
        s.totals.retried += 1;
        Ok(true)
    }

    async fn discard(&self, id: EntryId) -> Result<bool, StoreError> {
        let mut s = self.inner.lock();
        let found = s.remove(id).is_some();
        if found {
            s.totals.discarded += 1;
        }
        Ok(found)
    }

    async fn trim(&self, ttl: Duration, max_entries: u64) -> Result<Trimmed, StoreError> {
        let now = self.now_ms();
        let cutoff = now.saturating_sub(ms(ttl));
        let mut s = self.inner.lock();
        let old: Vec<EntryId> = s
            .entries
            .iter()
            .filter(|(_, (e, _))| e.first_failed_ms < cutoff)
            .map(|(id, _)| *id)
            .collect();
        for id in &old {
            s.remove(*id);
        }
        let expired = old.len() as u64;
        let len = s.entries.len() as u64;
        let evicted = if len > max_entries {
            s.evict_oldest(len - max_entries)
        } else {
            0
        };
        s.totals.expired += expired;
        s.totals.evicted += evicted;
        Ok(Trimmed { expired, evicted })
    }

    async fn purge(&self) -> Result<u64, StoreError> {
        let mut s = self.inner.lock();
        let n = s.entries.len() as u64;
        s.entries.clear();
        s.due.clear();
        s.leased.clear();
        s.deliveries.clear();
        s.totals.purged += n;
        Ok(n)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let now = self.now_ms();
        let s = self.inner.lock();
        let mut stats = StoreStats {
            now_ms: now,
            totals: s.totals.clone(),
            total: s.entries.len() as u64,
            ..StoreStats::default()
        };
        for (e, _) in s.entries.values() {
            *stats.by_state.entry(e.state).or_default() += 1;
            *stats.by_kind.entry(e.kind).or_default() += 1;
            stats.oldest_first_failed_ms = Some(
                stats
                    .oldest_first_failed_ms
                    .map_or(e.first_failed_ms, |o| o.min(e.first_failed_ms)),
            );
        }
        Ok(stats)
    }
}
