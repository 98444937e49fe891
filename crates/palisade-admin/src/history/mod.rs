//! [`History`]: the last 15 minutes of every component, one point per second, in bounded
//! rings (`ring`), read from snapshots (`record`, pure), sampled by a task (`sampler`) and served
//! by `GET /admin/history` (`route`).

mod record;
mod ring;
pub(crate) mod route;
mod sampler;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use palisade_core::config::{check_duration, check_range};
use palisade_core::{ComponentKind, ConfigError, Registry, SharedClock, SystemClock};
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq};
use tokio::task::JoinHandle;

use record::{
    BreakerPoint, BulkheadPoint, CounterPoint, DlqPoint, HealthPoint, LimiterPoint, Record,
    TimeoutPoint,
};
use ring::Ring;

/// Points kept per component by default: 15 minutes at one per second.
pub const DEFAULT_CAPACITY: usize = 900;

/// The most points a component may keep ([`HistoryBuilder::capacity`]): a day at one per second.
pub const MAX_CAPACITY: usize = 86_400;

/// Components tracked at most by default; samples of any beyond are dropped (and counted).
pub const DEFAULT_MAX_COMPONENTS: usize = 1024;

/// The sampler's period by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// Wait for all dead-letter queues' fresh stats before a sample, at most (and half the interval).
const QUEUE_STATS_BUDGET: Duration = Duration::from_millis(500);

/// One point and its time (milliseconds since the Unix epoch, from the history's clock).
#[derive(Debug, Clone, Copy)]
struct Stamped<R> {
    t_ms: u64,
    point: R,
}

/// One component's ring and the totals its next point is diffed against.
struct Track<R: Record> {
    ring: Ring<Stamped<R>>,
    last: Option<R::Totals>,
}

impl<R: Record> Track<R> {
    fn new(capacity: usize) -> Self {
        Self {
            ring: Ring::new(capacity),
            last: None,
        }
    }

    fn sample(&mut self, kind: ComponentKind, t_ms: u64, snapshot: &serde_json::Value) {
        let (point, totals) = R::read(kind, snapshot, self.last.as_ref());
        self.ring.push(Stamped { t_ms, point });
        self.last = Some(totals);
    }

    /// Points newer than `after_ms`, oldest first.
    fn after(&self, after_ms: u64) -> Vec<Stamped<R>> {
        let newer = self
            .ring
            .iter()
            .rev()
            .take_while(|p| p.t_ms > after_ms)
            .count();
        self.ring
            .iter()
            .skip(self.ring.len() - newer)
            .copied()
            .collect()
    }

    fn last_t(&self) -> Option<u64> {
        self.ring.last().map(|p| p.t_ms)
    }

    fn heap_bytes(&self) -> usize {
        self.ring.heap_bytes() + self.last.as_ref().map_or(0, R::totals_heap_bytes)
    }
}

/// A component's track, by kind.
enum Series {
    Breaker(Track<BreakerPoint>),
    Bulkhead(Track<BulkheadPoint>),
    Limiter(Track<LimiterPoint>),
    Dlq(Track<DlqPoint>),
    Timeout(Track<TimeoutPoint>),
    Health(Track<HealthPoint>),
    Counters(Track<CounterPoint>),
}

/// Copied-out points of one component, by kind.
enum Points {
    Breaker(Vec<Stamped<BreakerPoint>>),
    Bulkhead(Vec<Stamped<BulkheadPoint>>),
    Limiter(Vec<Stamped<LimiterPoint>>),
    Dlq(Vec<Stamped<DlqPoint>>),
    Timeout(Vec<Stamped<TimeoutPoint>>),
    Health(Vec<Stamped<HealthPoint>>),
    Counters(Vec<Stamped<CounterPoint>>),
}

/// Runs `$body` with `$t` bound to the series' track, whatever its kind.
macro_rules! with_track {
    ($series:expr, $t:ident => $body:expr) => {
        match $series {
            Series::Breaker($t) => $body,
            Series::Bulkhead($t) => $body,
            Series::Limiter($t) => $body,
            Series::Dlq($t) => $body,
            Series::Timeout($t) => $body,
            Series::Health($t) => $body,
            Series::Counters($t) => $body,
        }
    };
}

/// `$body` (a `Vec` of the track's points) in the matching [`Points`] variant.
macro_rules! points_of {
    ($series:expr, $t:ident => $body:expr) => {
        match $series {
            Series::Breaker($t) => Points::Breaker($body),
            Series::Bulkhead($t) => Points::Bulkhead($body),
            Series::Limiter($t) => Points::Limiter($body),
            Series::Dlq($t) => Points::Dlq($body),
            Series::Timeout($t) => Points::Timeout($body),
            Series::Health($t) => Points::Health($body),
            Series::Counters($t) => Points::Counters($body),
        }
    };
}

impl Series {
    /// An empty series for `kind`; `None` for a kind the history has no point for.
    fn new(kind: ComponentKind, capacity: usize) -> Option<Self> {
        Some(match kind {
            ComponentKind::CircuitBreaker => Self::Breaker(Track::new(capacity)),
            ComponentKind::Bulkhead => Self::Bulkhead(Track::new(capacity)),
            ComponentKind::RateLimiter => Self::Limiter(Track::new(capacity)),
            ComponentKind::DeadLetterQueue => Self::Dlq(Track::new(capacity)),
            ComponentKind::Timeout => Self::Timeout(Track::new(capacity)),
            ComponentKind::Health => Self::Health(Track::new(capacity)),
            ComponentKind::Retry
            | ComponentKind::Hedge
            | ComponentKind::Fallback
            | ComponentKind::FaultInjector => Self::Counters(Track::new(capacity)),
            _ => return None,
        })
    }

    fn sample(&mut self, kind: ComponentKind, t_ms: u64, snapshot: &serde_json::Value) {
        with_track!(self, t => t.sample(kind, t_ms, snapshot));
    }

    /// Forgets the totals: the next point has no counts (the component was missing).
    fn forget(&mut self) {
        with_track!(self, t => t.last = None);
    }

    fn last_t(&self) -> Option<u64> {
        with_track!(self, t => t.last_t())
    }

    fn len(&self) -> usize {
        with_track!(self, t => t.ring.len())
    }

    fn heap_bytes(&self) -> usize {
        with_track!(self, t => t.heap_bytes())
    }

    fn after(&self, after_ms: u64) -> Points {
        points_of!(self, t => t.after(after_ms))
    }
}

/// One tracked component.
struct Entry {
    series: Series,
    /// The sample that last saw it.
    seen: u64,
}

impl Entry {
    /// Its size in the map plus what it holds on the heap (its ring, its totals).
    fn bytes(&self, name: &str) -> usize {
        std::mem::size_of::<(ComponentKind, String, Entry)>()
            + name.len()
            + self.series.heap_bytes()
    }
}

#[derive(Default)]
struct State {
    series: BTreeMap<(ComponentKind, String), Entry>,
    /// Components the last sample could not track (over the cap).
    dropped: usize,
    /// Samples taken.
    samples: u64,
}

struct Inner {
    registry: Registry,
    clock: SharedClock,
    capacity: usize,
    max_components: usize,
    interval: Duration,
    sample_when_served: bool,
    /// A sampler task runs for this history.
    sampling: AtomicBool,
    state: Mutex<State>,
}

/// The last 15 minutes of every component of a registry, one point per second, in bounded
/// rings: what `GET /admin/history` serves and the dashboard draws. Cheap to clone; clones
/// share the rings.
///
/// Each sample reads every registered component's snapshot and keeps, per component, one
/// fixed-size point in a ring of [`DEFAULT_CAPACITY`] (900 points: 15 minutes at one per
/// second). What a point holds depends on the kind:
///
/// | kind | fields (counts are per sample: per second) |
/// | --- | --- |
/// | `circuit_breaker` | `state`, `calls` (successful + failed), `failures`, `refusals`, `slow`, `transitions` |
/// | `bulkhead` | `active`, `limit`, `utilization` (0–1), `waiting`, `rejected`, `timeouts` |
/// | `rate_limiter` | `permitted`, `rejected` |
/// | `dead_letter_queue` | `depth`, `oldest_age_ms` (as of the queue's latest stats) |
/// | `timeout` | `calls` (that waited), `timeouts`, `p50_ms`, `p99_ms` (of the calls of that second) |
/// | `health` | `status`, `crash_loop`, `restarts` |
/// | `retry` | `calls`, `retries`, `exhausted`, `budget_denied` |
/// | `hedge` | `calls`, `hedges`, `won`, `budget_denied` |
/// | `fallback` | `enabled`, `used`, `passed` |
/// | `fault_injector` | `enabled`, `calls`, `errors`, `delayed`, `refused` |
///
/// Counts are the growth of the snapshot's cumulative counters since the sample before; the
/// first point of a component (and the first after it was missing from a sample) has none.
///
/// Memory is bounded: a component's ring is allocated once, when it is first seen, and never
/// grows; at most [`DEFAULT_MAX_COMPONENTS`] components are tracked, the others are counted as
/// dropped; a component that is no longer registered keeps its points until they are older
/// than the window, then its ring is freed. With the defaults a component costs 14 to 36 KB
/// (900 points of 16 to 40 bytes, by kind: [`History::point_bytes`]), so the cap bounds the
/// whole history near 37 MB; [`History::heap_bytes`] says what it holds now.
///
/// [`AdminRouterBuilder::serve`](crate::AdminRouterBuilder::serve) starts the sampler (one
/// sample per [`DEFAULT_INTERVAL`], until the server stops). With
/// [`build`](crate::AdminRouterBuilder::build), start it with [`History::spawn_sampler`], or
/// take samples yourself ([`History::sample`], [`History::sample_now`]).
///
/// ```
/// use palisade_admin::History;
/// use palisade_breaker::CircuitBreaker;
/// use palisade_core::{ComponentKind, ManualClock, Registry};
///
/// let registry = Registry::new();
/// let slack = CircuitBreaker::builder("slack").registry(&registry).build()?;
/// let clock = ManualClock::new(); // timestamps; tests move it by hand
/// let history = History::builder(&registry).clock(clock.shared()).build()?;
///
/// history.sample_now();
/// slack.force_open();
/// clock.advance(std::time::Duration::from_secs(1));
/// let sample = history.sample_now();
/// assert_eq!((sample.recorded, sample.dropped), (1, 0));
/// assert_eq!(history.points(ComponentKind::CircuitBreaker, "slack"), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct History {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("capacity", &self.inner.capacity)
            .field("max_components", &self.inner.max_components)
            .field("interval", &self.inner.interval)
            .field("tracked", &self.tracked())
            .finish()
    }
}

/// What one sample did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistorySample {
    /// Its time (milliseconds since the Unix epoch, from the history's clock).
    pub at_unix_ms: u64,
    /// Components that got a point.
    pub recorded: usize,
    /// Components that got none: more than the history tracks.
    pub dropped: usize,
}

/// Configures a [`History`]; see [`History::builder`].
#[must_use]
pub struct HistoryBuilder {
    registry: Registry,
    clock: Option<SharedClock>,
    capacity: usize,
    max_components: usize,
    interval: Duration,
    sample_when_served: bool,
}

impl std::fmt::Debug for HistoryBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryBuilder")
            .field("capacity", &self.capacity)
            .field("max_components", &self.max_components)
            .field("interval", &self.interval)
            .field("sample_when_served", &self.sample_when_served)
            .finish()
    }
}

impl HistoryBuilder {
    /// The clock that stamps points and ages them out (default: the system clock). Tests pass
    /// a [`ManualClock`](palisade_core::ManualClock) and move it between samples.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Points kept per component (default [`DEFAULT_CAPACITY`], 1 to [`MAX_CAPACITY`]).
    pub fn capacity(mut self, points: usize) -> Self {
        self.capacity = points;
        self
    }

    /// Components tracked at most (default [`DEFAULT_MAX_COMPONENTS`], 1 to 65 536); the
    /// others are counted as dropped.
    pub fn max_components(mut self, components: usize) -> Self {
        self.max_components = components;
        self
    }

    /// The sampler's period (default [`DEFAULT_INTERVAL`], 10 ms to 1 h).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Whether [`AdminRouterBuilder::serve`](crate::AdminRouterBuilder::serve) starts the
    /// sampler (default: yes). Off, samples are taken only by [`History::sample`] and
    /// [`History::sample_now`]: what tests that drive time by hand want (on tokio's paused
    /// clock too, which the sampler's timer would otherwise move forward whenever the runtime
    /// idles).
    pub fn sample_when_served(mut self, on: bool) -> Self {
        self.sample_when_served = on;
        self
    }

    /// Checks the values and builds the history (empty: its first sample fills it).
    ///
    /// ```
    /// let registry = palisade_core::Registry::new();
    /// let err = palisade_admin::History::builder(&registry).capacity(0).build().unwrap_err();
    /// assert_eq!(err.field, "history.capacity");
    /// ```
    pub fn build(self) -> Result<History, ConfigError> {
        let within = |e: ConfigError| e.within("history");
        check_range("capacity", self.capacity, 1, MAX_CAPACITY).map_err(within)?;
        check_range("max_components", self.max_components, 1, 65_536).map_err(within)?;
        check_duration(
            "interval",
            self.interval,
            Duration::from_millis(10),
            Duration::from_secs(3600),
        )
        .map_err(within)?;
        Ok(self.finish())
    }

    /// The history, without checks (the values are checked, or the defaults).
    fn finish(self) -> History {
        History {
            inner: Arc::new(Inner {
                registry: self.registry,
                clock: self.clock.unwrap_or_else(SystemClock::shared),
                capacity: self.capacity,
                max_components: self.max_components,
                interval: self.interval,
                sample_when_served: self.sample_when_served,
                sampling: AtomicBool::new(false),
                state: Mutex::new(State::default()),
            }),
        }
    }
}

impl History {
    /// A history of `registry`'s components with the defaults: 900 points (15 minutes) per
    /// component, at most 1024 components, one sample per second when served.
    pub fn new(registry: &Registry) -> Self {
        Self::builder(registry).finish()
    }

    /// Starts configuring a history of `registry`'s components.
    pub fn builder(registry: &Registry) -> HistoryBuilder {
        HistoryBuilder {
            registry: registry.clone(),
            clock: None,
            capacity: DEFAULT_CAPACITY,
            max_components: DEFAULT_MAX_COMPONENTS,
            interval: DEFAULT_INTERVAL,
            sample_when_served: true,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while sampling leaves the rings consistent (each push is whole): go on.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one sample now: reads every component's snapshot and adds one point to each
    /// component's ring (creating it for a component seen for the first time, while fewer than
    /// the maximum are tracked). Dead-letter queues count as of their latest stats; see
    /// [`sample`](Self::sample).
    pub fn sample_now(&self) -> HistorySample {
        let snapshots = self.inner.registry.snapshot_all(None);
        let t_ms = self.inner.clock.unix_millis();
        let window_ms = self.window_ms();
        let (capacity, max) = (self.inner.capacity, self.inner.max_components);
        let mut state = self.state();
        state.samples += 1;
        let sample = state.samples;
        let (mut recorded, mut dropped) = (0, 0);
        for c in snapshots {
            let key = (c.kind, c.name);
            if !state.series.contains_key(&key) {
                if state.series.len() >= max {
                    dropped += 1;
                    continue;
                }
                let Some(series) = Series::new(key.0, capacity) else {
                    continue; // a kind without points
                };
                state.series.insert(key.clone(), Entry { series, seen: 0 });
            }
            if let Some(entry) = state.series.get_mut(&key) {
                entry.series.sample(key.0, t_ms, &c.snapshot);
                entry.seen = sample;
                recorded += 1;
            }
        }
        // Components gone from the registry: no counts across the gap; freed once their last
        // point has left the window.
        state.series.retain(|_, entry| {
            if entry.seen == sample {
                return true;
            }
            entry.series.forget();
            entry
                .series
                .last_t()
                .is_some_and(|t| t_ms.saturating_sub(t) < window_ms)
        });
        if dropped > 0 && state.dropped == 0 {
            tracing::warn!(
                target: "palisade::admin",
                dropped, max_components = max,
                "the history tracks at most {max} components: {dropped} get no history \
                 (History::builder(..).max_components raises the cap)"
            );
        }
        state.dropped = dropped;
        HistorySample {
            at_unix_ms: t_ms,
            recorded,
            dropped,
        }
    }

    /// Asks every dead-letter queue for fresh stats (within half the interval, at most
    /// 500 ms in all), then [`sample_now`](Self::sample_now): what the sampler does each
    /// interval, so queue depth is current (a queue's snapshot alone shows its counts as of its
    /// latest stats, which its worker refreshes every `trim_interval`).
    pub async fn sample(&self) -> HistorySample {
        self.refresh_queue_stats().await;
        self.sample_now()
    }

    async fn refresh_queue_stats(&self) {
        let registry = &self.inner.registry;
        let budget = QUEUE_STATS_BUDGET.min(self.inner.interval / 2);
        let deadline = tokio::time::Instant::now() + budget;
        for name in registry.list(ComponentKind::DeadLetterQueue) {
            let Some(queue) = registry.get(ComponentKind::DeadLetterQueue, &name) else {
                continue;
            };
            let stats = queue.control_json(serde_json::json!({"action": "stats"}));
            match tokio::time::timeout_at(deadline, stats).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!(
                    target: "palisade::admin", queue = %name, error = %e,
                    "history: no fresh stats for the queue; its depth is as of its last stats"
                ),
                Err(_) => {
                    tracing::debug!(
                        target: "palisade::admin", queue = %name,
                        "history: the queues' stats took longer than {budget:?}; sampling"
                    );
                    return;
                }
            }
        }
    }

    /// Starts the sampler: a task that calls [`sample`](Self::sample) now and every interval
    /// until every handle of this history is dropped. `None` when a sampler already runs for
    /// it (one is enough). [`AdminRouterBuilder::serve`](crate::AdminRouterBuilder::serve)
    /// starts one itself; call this with [`build`](crate::AdminRouterBuilder::build). Must run
    /// inside a tokio runtime.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let registry = palisade_core::Registry::new();
    /// let history = palisade_admin::History::new(&registry);
    /// let app = palisade_admin::AdminRouter::builder(&registry)
    ///     .history(history.clone())
    ///     .build();
    /// let sampler = history.spawn_sampler();
    /// assert!(sampler.is_some());
    /// assert!(history.spawn_sampler().is_none(), "one per history");
    /// # drop(app);
    /// # });
    /// ```
    pub fn spawn_sampler(&self) -> Option<JoinHandle<()>> {
        sampler::spawn(self, None)
    }

    /// Whether a sampler task runs for this history now.
    pub fn sampling(&self) -> bool {
        self.inner
            .sampling
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Heap bytes of one point of `kind`, with its time: a ring holds `capacity` of them.
    ///
    /// ```
    /// use palisade_admin::{DEFAULT_CAPACITY, History};
    /// use palisade_core::ComponentKind;
    ///
    /// let ring = DEFAULT_CAPACITY * History::point_bytes(ComponentKind::CircuitBreaker);
    /// assert!(ring <= 32 * 1024, "a breaker's 15 minutes fit in 32 KiB");
    /// ```
    pub fn point_bytes(kind: ComponentKind) -> usize {
        use std::mem::size_of;
        match kind {
            ComponentKind::CircuitBreaker => size_of::<Stamped<BreakerPoint>>(),
            ComponentKind::Bulkhead => size_of::<Stamped<BulkheadPoint>>(),
            ComponentKind::RateLimiter => size_of::<Stamped<LimiterPoint>>(),
            ComponentKind::DeadLetterQueue => size_of::<Stamped<DlqPoint>>(),
            ComponentKind::Timeout => size_of::<Stamped<TimeoutPoint>>(),
            ComponentKind::Health => size_of::<Stamped<HealthPoint>>(),
            ComponentKind::Retry
            | ComponentKind::Hedge
            | ComponentKind::Fallback
            | ComponentKind::FaultInjector => size_of::<Stamped<CounterPoint>>(),
            _ => 0,
        }
    }

    /// The number of points `kind`'s `name` has now.
    pub fn points(&self, kind: ComponentKind, name: &str) -> usize {
        self.state()
            .series
            .get(&(kind, name.to_owned()))
            .map_or(0, |e| e.series.len())
    }

    /// Components with a ring now.
    pub fn tracked(&self) -> usize {
        self.state().series.len()
    }

    /// Components the last sample gave no point, because the history tracks that many
    /// already.
    pub fn dropped(&self) -> usize {
        self.state().dropped
    }

    /// Memory the history holds: each tracked component's ring (allocated whole when the
    /// component is first seen), totals, name and map entry. Computed from the types and
    /// capacities; the map's own node overhead is not counted.
    pub fn heap_bytes(&self) -> usize {
        self.state()
            .series
            .iter()
            .map(|((_, name), entry)| entry.bytes(name))
            .sum()
    }

    /// Points kept per component.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// The sampler's period.
    pub fn interval(&self) -> Duration {
        self.inner.interval
    }

    /// How far back the rings reach: capacity × interval, in milliseconds.
    fn window_ms(&self) -> u64 {
        let interval = u64::try_from(self.inner.interval.as_millis()).unwrap_or(u64::MAX);
        interval.saturating_mul(self.inner.capacity as u64)
    }

    pub(crate) fn sample_when_served(&self) -> bool {
        self.inner.sample_when_served
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The history's clock now (milliseconds since the Unix epoch).
    fn now_ms(&self) -> u64 {
        self.inner.clock.unix_millis()
    }

    /// The points the filter selects, copied out (no lock held while they are written).
    fn select(&self, filter: &Filter) -> Selection {
        let now_ms = self.now_ms();
        let after_ms = filter
            .seconds
            .map(|s| now_ms.saturating_sub(s.saturating_mul(1000)))
            .into_iter()
            .chain(filter.since_ms)
            .max()
            .unwrap_or(0);
        let state = self.state();
        let components = state
            .series
            .iter()
            .filter(|((kind, name), _)| {
                filter.kind.is_none_or(|k| k == *kind)
                    && filter.name.as_deref().is_none_or(|n| n == name)
            })
            .map(|((kind, name), entry)| ComponentPoints {
                kind: *kind,
                name: name.clone(),
                points: entry.series.after(after_ms),
            })
            .collect();
        Selection {
            interval_ms: u64::try_from(self.inner.interval.as_millis()).unwrap_or(u64::MAX),
            capacity: self.inner.capacity,
            now_ms,
            tracked: state.series.len(),
            dropped: state.dropped,
            components,
        }
    }
}

/// Starts `history`'s sampler until `stop` turns `true` (the server's shutdown signal).
pub(crate) fn spawn_sampler(history: &History, stop: tokio::sync::watch::Receiver<bool>) {
    // `None`: a sampler runs already (the history is shared with another served router).
    let _ = sampler::spawn(history, Some(stop));
}

/// What `GET /admin/history` asks for.
#[derive(Debug, Default)]
pub(crate) struct Filter {
    pub kind: Option<ComponentKind>,
    pub name: Option<String>,
    /// The last this many seconds (by the history's clock).
    pub seconds: Option<u64>,
    /// Only points after this time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
}

/// The answer of `GET /admin/history`.
pub(crate) struct Selection {
    interval_ms: u64,
    capacity: usize,
    now_ms: u64,
    tracked: usize,
    dropped: usize,
    components: Vec<ComponentPoints>,
}

impl Selection {
    pub(crate) fn is_empty(&self) -> bool {
        self.components.is_empty()
    }
}

struct ComponentPoints {
    kind: ComponentKind,
    name: String,
    points: Points,
}

impl Serialize for Selection {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(6))?;
        map.serialize_entry("interval_ms", &self.interval_ms)?;
        map.serialize_entry("capacity", &self.capacity)?;
        map.serialize_entry("now_ms", &self.now_ms)?;
        map.serialize_entry("tracked", &self.tracked)?;
        map.serialize_entry("dropped", &self.dropped)?;
        map.serialize_entry("components", &self.components)?;
        map.end()
    }
}

impl Serialize for ComponentPoints {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("kind", self.kind.as_str())?;
        map.serialize_entry("name", &self.name)?;
        let kind = self.kind;
        match &self.points {
            Points::Breaker(p) => map.serialize_entry("points", &PointList(kind, p)),
            Points::Bulkhead(p) => map.serialize_entry("points", &PointList(kind, p)),
            Points::Limiter(p) => map.serialize_entry("points", &PointList(kind, p)),
            Points::Dlq(p) => map.serialize_entry("points", &PointList(kind, p)),
            Points::Timeout(p) => map.serialize_entry("points", &PointList(kind, p)),
            Points::Health(p) => map.serialize_entry("points", &PointList(kind, p)),
            Points::Counters(p) => map.serialize_entry("points", &PointList(kind, p)),
        }?;
        map.end()
    }
}

/// Points as a JSON array of `{"t": ms, ...fields}`.
struct PointList<'a, R>(ComponentKind, &'a [Stamped<R>]);

impl<R: Record> Serialize for PointList<'_, R> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.1.len()))?;
        for p in self.1 {
            seq.serialize_element(&PointView(self.0, p))?;
        }
        seq.end()
    }
}

struct PointView<'a, R>(ComponentKind, &'a Stamped<R>);

impl<R: Record> Serialize for PointView<'_, R> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("t", &self.1.t_ms)?;
        self.1.point.write(self.0, &mut map)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use palisade_core::{Control, ControlError, Inspect, Managed, ManualClock, async_trait};
    use serde_json::{Value, json};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A breaker-kind component whose snapshot the test sets.
    struct Fake {
        name: String,
        calls: Arc<AtomicU64>,
    }

    impl Inspect for Fake {
        type Snapshot = Value;
        fn snapshot(&self) -> Value {
            json!({"state": "closed", "calls": {"successful": self.calls.load(Ordering::Relaxed)}})
        }
    }

    #[async_trait]
    impl Control for Fake {
        type Command = Value;
        type Output = Value;
        async fn control(&self, _: Value) -> Result<Value, ControlError> {
            Ok(Value::Null)
        }
    }

    impl Managed for Fake {
        const KIND: ComponentKind = ComponentKind::CircuitBreaker;
        fn name(&self) -> &str {
            &self.name
        }
    }

    fn fake(registry: &Registry, name: &str) -> Arc<AtomicU64> {
        let calls = Arc::new(AtomicU64::new(0));
        registry
            .register(Arc::new(Fake {
                name: name.into(),
                calls: calls.clone(),
            }))
            .unwrap();
        calls
    }

    fn json_of(history: &History, filter: &Filter) -> Value {
        serde_json::to_value(history.select(filter)).unwrap()
    }

    #[test]
    fn samples_fill_rings_that_stay_bounded() {
        let registry = Registry::new();
        let calls = fake(&registry, "a");
        let clock = ManualClock::new();
        let history = History::builder(&registry)
            .clock(clock.shared())
            .capacity(5)
            .build()
            .unwrap();
        for i in 0..12 {
            calls.store(i * 10, Ordering::Relaxed);
            history.sample_now();
            clock.advance(Duration::from_secs(1));
        }
        let bytes = history.heap_bytes();
        assert_eq!(history.points(ComponentKind::CircuitBreaker, "a"), 5);
        let doc = json_of(&history, &Filter::default());
        let points = doc["components"][0]["points"].as_array().unwrap();
        assert_eq!(points.len(), 5);
        let t0 = palisade_core::clock::MANUAL_CLOCK_EPOCH_MILLIS;
        assert_eq!(points[0]["t"], t0 + 7_000, "the oldest left");
        assert_eq!(points[4]["t"], t0 + 11_000);
        assert!(points.iter().all(|p| p["calls"] == 10));
        for _ in 0..100 {
            history.sample_now();
        }
        assert_eq!(history.heap_bytes(), bytes, "no growth");
    }

    #[test]
    fn seconds_and_since_select_the_newest_points() {
        let registry = Registry::new();
        fake(&registry, "a");
        fake(&registry, "b");
        let clock = ManualClock::new();
        let history = History::builder(&registry)
            .clock(clock.shared())
            .build()
            .unwrap();
        for _ in 0..10 {
            history.sample_now();
            clock.advance(Duration::from_secs(1));
        }
        // The clock is one second past the last sample.
        let last3 = Filter {
            seconds: Some(4),
            ..Filter::default()
        };
        let doc = json_of(&history, &last3);
        assert_eq!(doc["components"].as_array().unwrap().len(), 2);
        assert_eq!(doc["components"][0]["points"].as_array().unwrap().len(), 3);
        let t0 = palisade_core::clock::MANUAL_CLOCK_EPOCH_MILLIS;
        let since = Filter {
            name: Some("b".into()),
            since_ms: Some(t0 + 7_000),
            ..Filter::default()
        };
        let doc = json_of(&history, &since);
        assert_eq!(doc["components"].as_array().unwrap().len(), 1);
        assert_eq!(doc["components"][0]["name"], "b");
        assert_eq!(
            doc["components"][0]["points"],
            json!([{"t": t0 + 8_000, "state": "closed", "calls": 0, "failures": 0, "refusals": 0, "slow": 0, "transitions": 0}, {"t": t0 + 9_000, "state": "closed", "calls": 0, "failures": 0, "refusals": 0, "slow": 0, "transitions": 0}])
        );
        assert_eq!(doc["interval_ms"], 1000);
        assert_eq!(doc["now_ms"], t0 + 10_000);
    }

    #[test]
    fn components_over_the_cap_are_dropped_and_counted() {
        let registry = Registry::new();
        for name in ["a", "b", "c"] {
            fake(&registry, name);
        }
        let history = History::builder(&registry)
            .max_components(2)
            .build()
            .unwrap();
        let s = history.sample_now();
        assert_eq!((s.recorded, s.dropped), (2, 1));
        assert_eq!((history.tracked(), history.dropped()), (2, 1));
        assert_eq!(history.points(ComponentKind::CircuitBreaker, "c"), 0);
    }

    #[test]
    fn a_component_gone_is_kept_for_the_window_then_freed() {
        let registry = Registry::new();
        fake(&registry, "a");
        let gone = fake(&registry, "b");
        let clock = ManualClock::new();
        let history = History::builder(&registry)
            .clock(clock.shared())
            .capacity(10)
            .build()
            .unwrap();
        history.sample_now();
        clock.advance(Duration::from_secs(1));
        history.sample_now();
        registry.deregister(ComponentKind::CircuitBreaker, "b");
        drop(gone);
        clock.advance(Duration::from_secs(5));
        history.sample_now();
        assert_eq!(
            history.points(ComponentKind::CircuitBreaker, "b"),
            2,
            "kept"
        );
        // Back again: its counters start over, and its first point has no counts.
        let calls = fake(&registry, "b");
        calls.store(500, Ordering::Relaxed);
        history.sample_now();
        let doc = json_of(
            &history,
            &Filter {
                name: Some("b".into()),
                ..Filter::default()
            },
        );
        let points = doc["components"][0]["points"].as_array().unwrap();
        assert_eq!(points.len(), 3);
        assert!(points[2].get("calls").is_none(), "{}", points[2]);
        registry.deregister(ComponentKind::CircuitBreaker, "b");
        clock.advance(Duration::from_secs(10));
        history.sample_now();
        assert_eq!(
            history.points(ComponentKind::CircuitBreaker, "b"),
            0,
            "freed"
        );
        assert_eq!(history.tracked(), 1);
    }

    #[test]
    fn builder_checks_its_values() {
        let registry = Registry::new();
        let field = |b: HistoryBuilder| b.build().unwrap_err().field;
        assert_eq!(
            field(History::builder(&registry).capacity(MAX_CAPACITY + 1)),
            "history.capacity"
        );
        assert_eq!(
            field(History::builder(&registry).max_components(0)),
            "history.max_components"
        );
        assert_eq!(
            field(History::builder(&registry).interval(Duration::from_millis(1))),
            "history.interval"
        );
    }
}
