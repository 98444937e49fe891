//! The retry worker: claims due entries under a lease, runs the handler, acks or reschedules.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::failure::{Failure, truncate};
use crate::policy::Schedule;
use crate::queue::{DeadLetterQueue, Entry, Inner};
use crate::store::{EntryId, Lease};

/// Counters of a queue's worker.
#[derive(Debug, Default)]
pub(crate) struct WorkerState {
    pub running: AtomicBool,
    pub concurrency: AtomicU64,
    pub in_flight: AtomicU64,
    pub handled: AtomicU64,
    pub acked: AtomicU64,
    pub failed: AtomicU64,
    pub parked: AtomicU64,
    pub stale: AtomicU64,
    pub quarantined: AtomicU64,
    pub store_errors: AtomicU64,
}

/// What the snapshot shows of a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSnapshot {
    /// Whether it is claiming entries.
    pub running: bool,
    /// Entries it handles at once at most.
    pub concurrency: u64,
    /// Entries being handled now.
    pub in_flight: u64,
    /// Entries handed to the handler.
    pub handled_total: u64,
    /// Handler successes acknowledged.
    pub acked_total: u64,
    /// Handler failures (rescheduled or parked).
    pub failed_total: u64,
    /// Entries parked by this worker.
    pub parked_total: u64,
    /// Acks or fails refused because the lease had expired (the entry went to another worker).
    pub stale_total: u64,
    /// Entries quarantined because their payload did not decode.
    pub quarantined_total: u64,
    /// Store errors while claiming.
    pub store_errors_total: u64,
}

impl WorkerState {
    pub fn snapshot(&self) -> WorkerSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerSnapshot {
            running: self.running.load(Ordering::Relaxed),
            concurrency: g(&self.concurrency),
            in_flight: g(&self.in_flight),
            handled_total: g(&self.handled),
            acked_total: g(&self.acked),
            failed_total: g(&self.failed),
            parked_total: g(&self.parked),
            stale_total: g(&self.stale),
            quarantined_total: g(&self.quarantined),
            store_errors_total: g(&self.store_errors),
        }
    }
}

/// A running retry worker; see [`DeadLetterQueue::worker`].
///
/// Dropping the handle leaves the worker running; [`shutdown`](Worker::shutdown) stops it
/// gracefully, [`abort`](Worker::abort) kills it (its leases expire and the entries are
/// delivered again).
#[derive(Debug)]
pub struct Worker {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    state: Arc<WorkerState>,
}

impl Worker {
    /// Stops claiming, waits up to `grace` for the entries in hand, then returns. Entries still
    /// running after `grace` are abandoned: their leases expire and they are delivered again.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
            let _ = task.await;
        }
        self.state.running.store(false, Ordering::Relaxed);
    }

    /// Kills the worker and its handlers at once, as a crash would.
    pub fn abort(&self) {
        self.task.abort();
        self.state.running.store(false, Ordering::Relaxed);
    }

    /// Counters of this worker.
    pub fn snapshot(&self) -> WorkerSnapshot {
        self.state.snapshot()
    }
}

impl<T> DeadLetterQueue<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Starts a retry worker: it claims due entries (at most `concurrency` at once, each under a
    /// `lease`), runs `handler` on each, acknowledges successes and reschedules or parks
    /// failures under their kind's policy. Entries whose payload does not decode are
    /// quarantined and the worker carries on. A handler that panics counts as an `other`
    /// failure. Call inside a tokio runtime.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_dlq::{DeadLetterQueue, Failure};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
    /// let dlq = DeadLetterQueue::<String>::builder("emails")
    ///     .clock(palisade_core::TokioClock::shared())
    ///     .build()?;
    /// dlq.push("send", &"hello".to_string(), Failure::unavailable("smtp down")).await?;
    ///
    /// let worker = dlq.worker(|entry| async move {
    ///     assert_eq!(entry.payload, "hello");
    ///     Ok::<(), Failure>(()) // delivered this time
    /// });
    /// tokio::time::sleep(Duration::from_secs(5)).await; // past the 1 s backoff
    /// assert_eq!(dlq.stats().await?.store.total, 0);
    /// worker.shutdown(Duration::from_secs(1)).await;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn worker<F, Fut>(&self, handler: F) -> Worker
    where
        F: Fn(Entry<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Failure>> + Send + 'static,
    {
        let state = Arc::new(WorkerState::default());
        state.running.store(true, Ordering::Relaxed);
        *self.inner.worker.lock() = Some(Arc::clone(&state));
        let (stop, stopped) = watch::channel(false);
        let inner = Arc::clone(&self.inner);
        let task = tokio::spawn(run::<T, F, Fut>(
            inner,
            Arc::new(handler),
            Arc::clone(&state),
            stopped,
        ));
        self.inner.notice(
            "worker started".into(),
            serde_json::json!({"concurrency": self.inner.config().concurrency}),
        );
        Worker { stop, task, state }
    }
}

async fn run<T, F, Fut>(
    inner: Arc<Inner>,
    handler: Arc<F>,
    state: Arc<WorkerState>,
    mut stopped: watch::Receiver<bool>,
) where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    F: Fn(Entry<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Failure>> + Send + 'static,
{
    let concurrency = inner.config().concurrency as usize;
    state
        .concurrency
        .store(concurrency as u64, Ordering::Relaxed);
    // Claims wait for a quarter of the slots to be free (unless nothing is in flight), so that
    // a busy worker claims in batches rather than one entry per round trip.
    let batch = (concurrency / 4).max(1);
    let mut tasks: JoinSet<Option<(EntryId, u64)>> = JoinSet::new();
    let mut acks: Vec<(EntryId, u64)> = Vec::new();
    let mut next_trim = tokio::time::Instant::now();
    loop {
        while let Some(done) = tasks.try_join_next() {
            collect(done, &mut acks);
        }
        flush(&inner, &state, &mut acks).await;
        state.in_flight.store(tasks.len() as u64, Ordering::Relaxed);
        if *stopped.borrow() {
            break;
        }
        let cfg = inner.config();
        if tokio::time::Instant::now() >= next_trim {
            if let Err(e) = inner.trim().await {
                tracing::warn!(target: "palisade::dlq", queue = %inner.name, error = %e, "dead-letter retention failed");
            }
            // The snapshot's `stats` (what the admin API and the dashboard show) as of now.
            if let Err(e) = crate::queue::stats(&inner).await {
                tracing::debug!(target: "palisade::dlq", queue = %inner.name, error = %e, "stats refresh failed");
            }
            next_trim = tokio::time::Instant::now() + cfg.trim_interval;
        }
        let free = concurrency.saturating_sub(tasks.len());
        if free == 0 || (free < batch && !tasks.is_empty()) {
            tokio::select! {
                Some(done) = tasks.join_next() => collect(done, &mut acks),
                _ = stopped.changed() => {}
            }
            continue;
        }
        // The leases run from no earlier than this instant (Redis times them from its own clock,
        // a little later).
        let claimed_at = tokio::time::Instant::now();
        let idle = match inner.store.claim(free, cfg.lease).await {
            Ok(leases) => {
                let idle = leases.is_empty();
                for lease in leases {
                    let (inner, handler, state) =
                        (Arc::clone(&inner), Arc::clone(&handler), Arc::clone(&state));
                    let held = Held {
                        lease,
                        until: claimed_at + cfg.lease,
                        length: cfg.lease,
                    };
                    tasks.spawn(async move {
                        process::<T, F, Fut>(&inner, &*handler, &state, held).await
                    });
                }
                idle
            }
            Err(e) => {
                state.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "palisade::dlq", queue = %inner.name, error = %e, "dead-letter claim failed; retrying");
                true
            }
        };
        state.in_flight.store(tasks.len() as u64, Ordering::Relaxed);
        if idle {
            tokio::select! {
                _ = tokio::time::sleep(cfg.poll_interval) => {}
                Some(done) = tasks.join_next(), if !tasks.is_empty() => collect(done, &mut acks),
                _ = stopped.changed() => {}
            }
        }
    }
    // Graceful: finish what is in hand.
    while let Some(done) = tasks.join_next().await {
        collect(done, &mut acks);
    }
    flush(&inner, &state, &mut acks).await;
    state.in_flight.store(0, Ordering::Relaxed);
    state.running.store(false, Ordering::Relaxed);
    inner.notice("worker stopped".into(), serde_json::Value::Null);
}

/// Keeps a finished entry's ack for the next batch.
fn collect(
    done: Result<Option<(EntryId, u64)>, tokio::task::JoinError>,
    acks: &mut Vec<(EntryId, u64)>,
) {
    if let Ok(Some(ack)) = done {
        acks.push(ack);
    }
}

/// Acknowledges the finished entries in one store call.
async fn flush(inner: &Inner, state: &WorkerState, acks: &mut Vec<(EntryId, u64)>) {
    if acks.is_empty() {
        return;
    }
    match inner.store.ack_many(acks).await {
        Ok(results) => {
            for (&(id, _), ok) in acks.iter().zip(results) {
                if ok {
                    state.acked.fetch_add(1, Ordering::Relaxed);
                } else {
                    state.stale.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(target: "palisade::dlq", queue = %inner.name, id,
                        "ack refused: the lease expired and the entry was delivered again");
                }
            }
        }
        Err(e) => {
            tracing::warn!(target: "palisade::dlq", queue = %inner.name, error = %e, entries = acks.len(),
                "ack failed; the entries will be delivered again");
        }
    }
    acks.clear();
}

/// A claimed entry, with how long its lease lasts for sure and how long a lease is.
struct Held {
    lease: Lease,
    /// The lease runs at least until this instant (it may run a little longer).
    until: tokio::time::Instant,
    length: Duration,
}

/// What keeping an entry's lease needs (its payload is the handler's by then).
struct Kept {
    id: EntryId,
    token: u64,
    until: tokio::time::Instant,
    length: Duration,
}

/// A spawned handler, aborted when dropped: a handler never outlives its worker (an aborted
/// worker, or one shut down past its grace, drops its entries' futures, hence this).
struct AbortOnDrop<R>(JoinHandle<R>);

impl<R> Drop for AbortOnDrop<R> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a handler run ended.
enum Run {
    /// It returned (or panicked: an `other` failure).
    Done(Result<(), Failure>),
    /// The lease could not be kept: the handler was stopped so that it never runs at the same
    /// time as another worker's run of the same entry.
    LeaseLost(&'static str),
}

/// Runs `handler` while keeping the lease: it is extended every third of its length, and when
/// it is lost (another worker claimed the entry) or cannot be extended before it ends, the
/// handler is stopped.
async fn run_leased<Fut>(inner: &Inner, held: &Kept, handler: Fut) -> Run
where
    Fut: Future<Output = Result<(), Failure>> + Send + 'static,
{
    let (id, token) = (held.id, held.token);
    // Run the handler in its own task so that a panic is a failure, not a dead worker.
    let mut task = AbortOnDrop(tokio::spawn(handler));
    let every = (held.length / 3).max(Duration::from_millis(1));
    // Stop this much before the lease would end, so a slow extension never overlaps a new claim.
    let margin = (held.length / 10).max(Duration::from_millis(1));
    let mut until = held.until;
    loop {
        let next = (tokio::time::Instant::now() + every).min(until - margin);
        tokio::select! {
            joined = &mut task.0 => {
                return Run::Done(match joined {
                    Ok(result) => result,
                    Err(e) if e.is_panic() => Err(Failure::other("retry handler panicked")),
                    Err(_) => Err(Failure::other("retry handler cancelled")),
                });
            }
            () = tokio::time::sleep_until(next) => {}
        }
        if tokio::time::Instant::now() + margin >= until {
            return Run::LeaseLost("the lease could not be extended in time");
        }
        let asked = tokio::time::Instant::now();
        match inner.store.extend(id, token, held.length).await {
            Ok(true) => until = asked + held.length,
            Ok(false) => return Run::LeaseLost("another worker holds the entry now"),
            Err(e) => {
                tracing::warn!(target: "palisade::dlq", queue = %inner.name, id, error = %e, "extending a lease failed; retrying until it ends");
            }
        }
    }
}

/// Moves a leased entry to the quarantine with `reason`, counted and announced.
async fn quarantine(
    inner: &Inner,
    state: &WorkerState,
    id: EntryId,
    token: u64,
    operation: &str,
    reason: &str,
) {
    match inner.store.quarantine(id, Some(token), reason).await {
        Ok(true) => {
            state.quarantined.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(target: "palisade::dlq", queue = %inner.name, id, %reason, "dead-letter entry quarantined");
            inner.notice(
                format!("entry {id} quarantined: {reason}"),
                serde_json::json!({"id": id, "operation": operation}),
            );
        }
        Ok(false) => {
            state.stale.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::warn!(target: "palisade::dlq", queue = %inner.name, id, error = %e, "quarantine failed; the lease will expire");
        }
    }
}

/// Runs the handler on one entry. Returns the entry's ack for a success (acks are batched by
/// the loop); failures and quarantines are recorded here.
async fn process<T, F, Fut>(
    inner: &Inner,
    handler: &F,
    state: &WorkerState,
    held: Held,
) -> Option<(EntryId, u64)>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    F: Fn(Entry<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Failure>> + Send + 'static,
{
    let Held {
        lease: Lease {
            entry,
            token,
            deliveries,
        },
        until,
        length,
    } = held;
    let (id, attempts) = (entry.id, entry.attempts);
    let max_deliveries = inner.config().max_deliveries;
    if deliveries > max_deliveries {
        // Its earlier holders died with it: running it again may crash this worker too.
        let reason = format!(
            "poison: delivered {deliveries} times without an outcome (max_deliveries {max_deliveries}); its handler may crash the worker"
        );
        quarantine(inner, state, id, token, &entry.operation, &reason).await;
        return None;
    }
    let payload: T = match serde_json::from_slice(&entry.payload) {
        Ok(p) => p,
        Err(e) => {
            let reason = format!("payload does not decode: {e}");
            quarantine(inner, state, id, token, &entry.operation, &reason).await;
            return None;
        }
    };
    let operation = entry.operation.clone();
    let typed = Entry {
        id,
        operation: entry.operation,
        payload,
        kind: entry.kind,
        error: entry.error,
        attempts,
        first_failed_ms: entry.first_failed_ms,
        last_failed_ms: entry.last_failed_ms,
        next_attempt_ms: entry.next_attempt_ms,
        state: entry.state,
        metadata: entry.metadata,
        history: entry.history,
    };
    state.handled.fetch_add(1, Ordering::Relaxed);
    let kept = Kept {
        id,
        token,
        until,
        length,
    };
    let outcome = match run_leased(inner, &kept, handler(typed)).await {
        Run::Done(result) => result,
        Run::LeaseLost(why) => {
            state.stale.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(target: "palisade::dlq", queue = %inner.name, id, "retry handler stopped: {why}; the entry will be delivered again");
            return None;
        }
    };
    let failure = match outcome {
        Ok(()) => return Some((id, token)),
        Err(failure) => failure,
    };
    state.failed.fetch_add(1, Ordering::Relaxed);
    let cfg = inner.config();
    let schedule = cfg
        .policies
        .schedule(attempts.saturating_add(1), &failure, fastrand::f64());
    let error = truncate(&failure.message, cfg.max_error_len);
    match inner
        .store
        .fail(id, token, failure.kind, &error, schedule)
        .await
    {
        Ok(true) if schedule == Schedule::Park => {
            state.parked.fetch_add(1, Ordering::Relaxed);
            inner.notice(
                format!(
                    "entry {id} parked after {} attempts: {failure}",
                    attempts.saturating_add(1)
                ),
                serde_json::json!({"id": id, "operation": operation, "kind": failure.kind}),
            );
        }
        Ok(true) => {}
        Ok(false) => {
            state.stale.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::warn!(target: "palisade::dlq", queue = %inner.name, id, error = %e, "recording a failure failed; the entry will be delivered again");
        }
    }
    None
}
