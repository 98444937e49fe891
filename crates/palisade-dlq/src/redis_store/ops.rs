//! [`Store`] on Redis: each operation is one script call (or a loop of them for batches beyond
//! one call's bound), its reply read without trusting its shape.

use std::time::Duration;

use async_trait::async_trait;
use redis::Value;

use super::codec::{self, json_string, ms, padded, schedule_args};
use super::reply::{bytes, flag, ints, number, pairs, text};
use super::scripts::SCRIPTS;
use super::{ACK_BATCH, BATCH, CLAIM_BATCH, RedisStore};
use crate::failure::FailureKind;
use crate::policy::Schedule;
use crate::store::{
    EntryId, EntryState, Filter, HISTORY_LEN, Lease, NewEntry, Page, Store, StoreError, StoreStats,
    StoredEntry, Trimmed,
};

impl RedisStore {
    /// Parses entry `id` as a script returned it with its lease deadline (nil when not leased).
    fn parse(
        &self,
        id: EntryId,
        entry: &[u8],
        deadline: &Value,
    ) -> Result<StoredEntry, StoreError> {
        let lease_until_ms = match deadline {
            Value::Nil => None,
            v => Some(number(v).ok_or_else(|| self.corrupt(id, "lease", &format!("{v:?}")))?),
        };
        codec::parse_entry(&self.inner.queue, id, entry, lease_until_ms)
    }
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn enqueue(&self, entry: NewEntry, max_entries: u64) -> Result<EntryId, StoreError> {
        let script = &SCRIPTS.enqueue;
        let origin = codec::origin_line(&entry.operation, &entry.metadata)?;
        let (park, delay) = schedule_args(entry.schedule);
        let mut inv = self.invocation(script);
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
            let v = self.run(script, &inv).await?;
            match ints(&v).as_deref() {
                Some([1, id]) => return self.written(*id).await,
                Some([0, _]) => {}
                _ => return Err(self.unexpected(script, &v)),
            }
        }
    }

    async fn claim(&self, max: usize, lease: Duration) -> Result<Vec<Lease>, StoreError> {
        let script = &SCRIPTS.claim;
        let mut out = Vec::with_capacity(max.min(CLAIM_BATCH));
        loop {
            let batch = (max - out.len()).min(CLAIM_BATCH);
            let mut inv = self.invocation(script);
            inv.arg(batch).arg(ms(lease));
            let v = self.run(script, &inv).await?;
            let Value::Array(reply) = v else {
                return Err(self.unexpected(script, &v));
            };
            // `{examined}`, or `{examined, token, deadline, id, entry, deliveries, id, ...}`.
            if reply.len() != 1 && (reply.len() < 3 || reply.len() % 3 != 0) {
                return Err(self.unexpected(script, &Value::Array(reply)));
            }
            let mut it = reply.into_iter();
            let examined = it.next().unwrap_or(Value::Nil);
            let examined = number(&examined).ok_or_else(|| self.unexpected(script, &examined))?;
            if let (Some(token), Some(deadline)) = (it.next(), it.next()) {
                let token = number(&token).ok_or_else(|| self.unexpected(script, &token))?;
                while let (Some(id), Some(entry), Some(deliveries)) =
                    (it.next(), it.next(), it.next())
                {
                    let id = number(&id).ok_or_else(|| self.unexpected(script, &id))?;
                    let deliveries = number(&deliveries)
                        .map(|d| u32::try_from(d).unwrap_or(u32::MAX))
                        .ok_or_else(|| self.unexpected(script, &deliveries))?;
                    let parsed = match bytes(&entry) {
                        Some(b) => self.parse(id, b, &deadline),
                        None => Err(self.unexpected(script, &entry)),
                    };
                    match parsed {
                        Ok(entry) => out.push(Lease {
                            entry,
                            token,
                            deliveries,
                        }),
                        Err(e) => {
                            // A corrupt entry must not block the queue: quarantine it, go on.
                            tracing::warn!(target: "palisade::dlq", queue = %self.inner.queue, id, error = %e,
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
        let script = &SCRIPTS.extend;
        let mut inv = self.invocation(script);
        inv.arg(padded(id)).arg(token).arg(ms(lease));
        let v = self.run(script, &inv).await?;
        let extended = flag(&v).ok_or_else(|| self.unexpected(script, &v))?;
        self.written(extended).await
    }

    async fn ack(&self, id: EntryId, token: u64) -> Result<bool, StoreError> {
        Ok(matches!(
            self.ack_many(&[(id, token)]).await?.as_slice(),
            [true]
        ))
    }

    /// One script call per 1,000 acks (each call is atomic).
    async fn ack_many(&self, acks: &[(EntryId, u64)]) -> Result<Vec<bool>, StoreError> {
        let script = &SCRIPTS.ack;
        let mut out = Vec::with_capacity(acks.len());
        if acks.is_empty() {
            return Ok(out);
        }
        for chunk in acks.chunks(ACK_BATCH) {
            let mut inv = self.invocation(script);
            for &(id, token) in chunk {
                inv.arg(padded(id)).arg(token);
            }
            let v = self.run(script, &inv).await?;
            let flags = match &v {
                Value::Array(items) if items.len() == chunk.len() => {
                    items.iter().map(flag).collect::<Option<Vec<bool>>>()
                }
                _ => None,
            };
            out.extend(flags.ok_or_else(|| self.unexpected(script, &v))?);
        }
        // One WAIT covers every chunk: they were written on the same connection.
        self.written(out).await
    }

    async fn fail(
        &self,
        id: EntryId,
        token: u64,
        kind: FailureKind,
        error: &str,
        schedule: Schedule,
    ) -> Result<bool, StoreError> {
        let script = &SCRIPTS.fail;
        let (park, delay) = schedule_args(schedule);
        let mut inv = self.invocation(script);
        inv.arg(padded(id))
            .arg(token)
            .arg(kind.as_str())
            .arg(json_string(error))
            .arg(park)
            .arg(delay)
            .arg(HISTORY_LEN);
        let v = self.run(script, &inv).await?;
        if let Some(ok) = flag(&v) {
            return self.written(ok).await;
        }
        if let Value::Array(items) = &v {
            if let [tag, field] = items.as_slice() {
                if bytes(tag) == Some(b"corrupt".as_slice()) {
                    let field = text(field).unwrap_or_default();
                    return Err(self.corrupt(id, &field, "unreadable (fail refused)"));
                }
            }
        }
        Err(self.unexpected(script, &v))
    }

    async fn quarantine(
        &self,
        id: EntryId,
        token: Option<u64>,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let script = &SCRIPTS.quarantine;
        let mut inv = self.invocation(script);
        inv.arg(padded(id))
            .arg(token.map_or_else(String::new, |t| t.to_string()))
            .arg(json_string(reason));
        let v = self.run(script, &inv).await?;
        let moved = flag(&v).ok_or_else(|| self.unexpected(script, &v))?;
        self.written(moved).await
    }

    async fn get(&self, id: EntryId) -> Result<Option<StoredEntry>, StoreError> {
        let script = &SCRIPTS.get;
        let mut inv = self.invocation(script);
        inv.arg(padded(id));
        let v = self.run(script, &inv).await?;
        match &v {
            Value::Array(items) => match items.as_slice() {
                [] => Ok(None),
                [entry, deadline] => match bytes(entry) {
                    Some(b) => self.parse(id, b, deadline).map(Some),
                    None => Err(self.unexpected(script, &v)),
                },
                _ => Err(self.unexpected(script, &v)),
            },
            _ => Err(self.unexpected(script, &v)),
        }
    }

    async fn list(
        &self,
        filter: &Filter,
        after: Option<EntryId>,
        limit: usize,
    ) -> Result<Page<StoredEntry>, StoreError> {
        let script = &SCRIPTS.list;
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
        let kind = codec::filter_arg(filter.kind.map(FailureKind::as_str));
        let op = codec::op_prefix(filter.operation.as_deref());
        let state = codec::filter_arg(filter.state.map(EntryState::as_str));
        let mut cursor = after.map(|a| a.to_string()).unwrap_or_default();
        loop {
            // One match beyond the page tells whether another page follows.
            let need = limit.saturating_add(1) - entries.len();
            let mut inv = self.invocation(script);
            inv.arg(source)
                .arg(&cursor)
                .arg(BATCH)
                .arg(need)
                .arg(&kind)
                .arg(&op)
                .arg(&state);
            let v = self.run(script, &inv).await?;
            let Value::Array(reply) = v else {
                return Err(self.unexpected(script, &v));
            };
            let [last, done, Value::Array(found)] = <[Value; 3]>::try_from(reply)
                .map_err(|items| self.unexpected(script, &Value::Array(items)))?
            else {
                return Err(self.unexpected(script, &Value::Nil));
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
                            (Some(id), Some(b)) => Some(self.parse(id, b, deadline)),
                            _ => None,
                        },
                        _ => None,
                    },
                    _ => None,
                };
                entries.push(parsed.ok_or_else(|| self.unexpected(script, &item))??);
            }
            match (number(&done), text(&last)) {
                (Some(0), Some(last)) if !last.is_empty() => cursor = last,
                (Some(_), _) => {
                    return Ok(Page {
                        entries,
                        next: None,
                    });
                }
                _ => return Err(self.unexpected(script, &done)),
            }
        }
    }

    async fn retry(&self, id: EntryId) -> Result<bool, StoreError> {
        let script = &SCRIPTS.retry;
        let mut inv = self.invocation(script);
        inv.arg(padded(id));
        let v = self.run(script, &inv).await?;
        let retried = flag(&v).ok_or_else(|| self.unexpected(script, &v))?;
        self.written(retried).await
    }

    async fn discard(&self, id: EntryId) -> Result<bool, StoreError> {
        let script = &SCRIPTS.discard;
        let mut inv = self.invocation(script);
        inv.arg(padded(id));
        let v = self.run(script, &inv).await?;
        let discarded = flag(&v).ok_or_else(|| self.unexpected(script, &v))?;
        self.written(discarded).await
    }

    async fn trim(&self, ttl: Duration, max_entries: u64) -> Result<Trimmed, StoreError> {
        let script = &SCRIPTS.trim;
        let mut trimmed = Trimmed::default();
        // The first call fixes the cutoff (now − ttl); the next ones reuse it, and go on
        // walking from where the previous one stopped.
        let mut cutoff = String::new();
        let mut cursor = "0".to_owned();
        loop {
            let mut inv = self.invocation(script);
            inv.arg(ms(ttl))
                .arg(max_entries)
                .arg(BATCH)
                .arg(&cutoff)
                .arg(&cursor);
            let v = self.run(script, &inv).await?;
            let parsed = match &v {
                Value::Array(items) => match items.as_slice() {
                    [expired, evicted, done, c, at] => {
                        match (number(expired), number(evicted), number(done), number(c)) {
                            (Some(x), Some(e), Some(d), Some(c)) => {
                                text(at).map(|at| (x, e, d, c, at))
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                },
                _ => None,
            };
            let Some((expired, evicted, done, c, at)) = parsed else {
                return Err(self.unexpected(script, &v));
            };
            trimmed.expired += expired;
            trimmed.evicted += evicted;
            if done == 1 {
                return self.written(trimmed).await;
            }
            cutoff = c.to_string();
            cursor = at;
        }
    }

    async fn purge(&self) -> Result<u64, StoreError> {
        let script = &SCRIPTS.purge;
        let mut removed = 0;
        loop {
            let mut inv = self.invocation(script);
            inv.arg(BATCH);
            let v = self.run(script, &inv).await?;
            match ints(&v).as_deref() {
                Some([n, done]) => {
                    removed += n;
                    if *done == 1 {
                        return self.written(removed).await;
                    }
                }
                _ => return Err(self.unexpected(script, &v)),
            }
        }
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let script = &SCRIPTS.stats;
        let inv = self.invocation(script);
        let v = self.run(script, &inv).await?;
        let Value::Array(reply) = v else {
            return Err(self.unexpected(script, &v));
        };
        let items = <[Value; 10]>::try_from(reply)
            .map_err(|items| self.unexpected(script, &Value::Array(items)))?;
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
            return Err(self.unexpected(script, &Value::Nil));
        };
        let num = |v: &Value| number(v).ok_or_else(|| self.unexpected(script, v));
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
                _ => {
                    tracing::warn!(target: "palisade::dlq", queue = %self.inner.queue, kind, count = ?n,
                    "ignoring an unknown failure kind in the dead-letter counts")
                }
            }
        }
        stats.totals = self.totals(counters)?;
        // Ids are taken one by one from `seq`: it counts every entry ever enqueued.
        stats.totals.enqueued = num(&seq)?;
        match oldest.as_slice() {
            [] => {}
            [_, first] if number(first).is_some() => stats.oldest_first_failed_ms = number(first),
            [id, _] => tracing::warn!(target: "palisade::dlq", queue = %self.inner.queue, id = ?id,
                "the oldest dead-letter entry has no readable first failure time"),
            _ => return Err(self.unexpected(script, &Value::Array(oldest))),
        }
        Ok(stats)
    }
}
