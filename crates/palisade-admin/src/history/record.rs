//! What one point of each kind keeps, read from a component's snapshot JSON and the totals of
//! the sample before: pure functions, tested without a clock or a registry.
//!
//! Counters in snapshots are cumulative (`*_total`, a breaker's `calls`); a point keeps their
//! growth since the previous sample (one second apart when the sampler takes them). A counter
//! that went down was reset (a `reset` command, or a component registered again), so all of its
//! value counts as new. The first point of a component, or the first after it was missing from a
//! sample, has no previous totals: it carries the gauges (state, utilization, depth) and leaves
//! the counts out.

use palisade_core::ComponentKind;
use serde::ser::SerializeMap;
use serde_json::Value;

/// One kind's point: fixed size (`Copy`), so a ring of them is one allocation.
pub(crate) trait Record: Copy + Send + Sync + 'static {
    /// The cumulative values the next sample is diffed against.
    type Totals: Send + Sync + 'static;

    /// The point for `snapshot` and the totals to keep; `last` is the previous sample's totals
    /// (`None` for the first).
    fn read(
        kind: ComponentKind,
        snapshot: &Value,
        last: Option<&Self::Totals>,
    ) -> (Self, Self::Totals);

    /// The point's fields, after `t`.
    fn write<M: SerializeMap>(&self, kind: ComponentKind, map: &mut M) -> Result<(), M::Error>;

    /// Heap bytes held by `totals` (beyond its own size).
    fn totals_heap_bytes(_totals: &Self::Totals) -> usize {
        0
    }
}

/// A number at `pointer` in `v`.
fn number(v: &Value, pointer: &str) -> Option<u64> {
    v.pointer(pointer).and_then(Value::as_u64)
}

/// A counter at `pointer` (0 when absent).
fn counter(v: &Value, pointer: &str) -> u64 {
    number(v, pointer).unwrap_or(0)
}

/// A gauge in 32 bits (saturating).
fn gauge(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Growth of a cumulative counter from `last` to `now`, in 32 bits (saturating). A counter
/// that went down was reset: all of `now` is new.
pub(crate) fn delta(now: u64, last: u64) -> u32 {
    gauge(if now >= last { now - last } else { now })
}

/// `delta` of each pair, or zeros without a previous sample.
fn deltas<const N: usize>(now: [u64; N], last: Option<&[u64; N]>) -> [u32; N] {
    let mut out = [0; N];
    if let Some(last) = last {
        for (o, (n, l)) in out.iter_mut().zip(now.iter().zip(last)) {
            *o = delta(*n, *l);
        }
    }
    out
}

// ---- circuit breakers ----

/// A breaker's state, in one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum BreakerState {
    /// Not in the snapshot, or a state this version does not know.
    #[default]
    Unknown,
    Closed,
    Open,
    HalfOpen,
    ForcedOpen,
    Disabled,
    MetricsOnly,
}

impl BreakerState {
    fn parse(s: Option<&str>) -> Self {
        match s {
            Some("closed") => Self::Closed,
            Some("open") => Self::Open,
            Some("half_open") => Self::HalfOpen,
            Some("forced_open") => Self::ForcedOpen,
            Some("disabled") => Self::Disabled,
            Some("metrics_only") => Self::MetricsOnly,
            _ => Self::Unknown,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::ForcedOpen => "forced_open",
            Self::Disabled => "disabled",
            Self::MetricsOnly => "metrics_only",
        }
    }
}

/// A breaker's second: calls (successful + failed), failures, refusals, slow calls, state
/// transitions, and the state at the sample.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct BreakerPoint {
    pub(crate) calls: u32,
    pub(crate) failures: u32,
    pub(crate) refusals: u32,
    pub(crate) slow: u32,
    pub(crate) transitions: u32,
    pub(crate) state: BreakerState,
    /// Whether the counts are known (not the first sample).
    pub(crate) counted: bool,
}

impl Record for BreakerPoint {
    /// successful, failed, not_permitted, slow, transitions_total.
    type Totals = [u64; 5];

    fn read(_: ComponentKind, s: &Value, last: Option<&[u64; 5]>) -> (Self, [u64; 5]) {
        let now = [
            counter(s, "/calls/successful"),
            counter(s, "/calls/failed"),
            counter(s, "/calls/not_permitted"),
            counter(s, "/calls/slow"),
            counter(s, "/transitions_total"),
        ];
        let [ok, failed, refused, slow, transitions] = deltas(now, last);
        let point = Self {
            calls: ok.saturating_add(failed),
            failures: failed,
            refusals: refused,
            slow,
            transitions,
            state: BreakerState::parse(s.get("state").and_then(Value::as_str)),
            counted: last.is_some(),
        };
        (point, now)
    }

    fn write<M: SerializeMap>(&self, _: ComponentKind, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("state", self.state.as_str())?;
        if self.counted {
            map.serialize_entry("calls", &self.calls)?;
            map.serialize_entry("failures", &self.failures)?;
            map.serialize_entry("refusals", &self.refusals)?;
            map.serialize_entry("slow", &self.slow)?;
            map.serialize_entry("transitions", &self.transitions)?;
        }
        Ok(())
    }
}

// ---- bulkheads ----

/// A bulkhead's second: slots in use and the limit at the sample (utilization is their
/// ratio), callers waiting, and the calls refused or that gave up waiting.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct BulkheadPoint {
    pub(crate) active: u32,
    pub(crate) limit: u32,
    pub(crate) waiting: u32,
    pub(crate) rejected: u32,
    pub(crate) timeouts: u32,
    pub(crate) counted: bool,
}

impl Record for BulkheadPoint {
    /// rejected_total, timeouts_total.
    type Totals = [u64; 2];

    fn read(_: ComponentKind, s: &Value, last: Option<&[u64; 2]>) -> (Self, [u64; 2]) {
        let now = [counter(s, "/rejected_total"), counter(s, "/timeouts_total")];
        let [rejected, timeouts] = deltas(now, last);
        let point = Self {
            active: gauge(counter(s, "/active")),
            limit: gauge(counter(s, "/max_concurrent")),
            waiting: gauge(counter(s, "/waiting")),
            rejected,
            timeouts,
            counted: last.is_some(),
        };
        (point, now)
    }

    fn write<M: SerializeMap>(&self, _: ComponentKind, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("active", &self.active)?;
        map.serialize_entry("limit", &self.limit)?;
        if self.limit > 0 {
            // Three decimals: 0.125 is 12.5 %.
            let ratio = f64::from(self.active) / f64::from(self.limit);
            map.serialize_entry("utilization", &((ratio * 1000.0).round() / 1000.0))?;
        }
        map.serialize_entry("waiting", &self.waiting)?;
        if self.counted {
            map.serialize_entry("rejected", &self.rejected)?;
            map.serialize_entry("timeouts", &self.timeouts)?;
        }
        Ok(())
    }
}

// ---- rate limiters ----

/// A rate limiter's second: requests permitted and rejected.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct LimiterPoint {
    pub(crate) permitted: u32,
    pub(crate) rejected: u32,
    pub(crate) counted: bool,
}

impl Record for LimiterPoint {
    /// permitted_total, rejected_total.
    type Totals = [u64; 2];

    fn read(_: ComponentKind, s: &Value, last: Option<&[u64; 2]>) -> (Self, [u64; 2]) {
        let now = [
            counter(s, "/permitted_total"),
            counter(s, "/rejected_total"),
        ];
        let [permitted, rejected] = deltas(now, last);
        let point = Self {
            permitted,
            rejected,
            counted: last.is_some(),
        };
        (point, now)
    }

    fn write<M: SerializeMap>(&self, _: ComponentKind, map: &mut M) -> Result<(), M::Error> {
        if self.counted {
            map.serialize_entry("permitted", &self.permitted)?;
            map.serialize_entry("rejected", &self.rejected)?;
        }
        Ok(())
    }
}

// ---- dead-letter queues ----

/// A dead-letter queue at the sample: its depth and the age of its oldest entry, as of the
/// queue's latest stats (absent before the first).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct DlqPoint {
    pub(crate) depth: Option<u32>,
    pub(crate) oldest_age_ms: Option<u64>,
}

impl Record for DlqPoint {
    type Totals = ();

    fn read(_: ComponentKind, s: &Value, _: Option<&()>) -> (Self, ()) {
        let point = Self {
            depth: number(s, "/stats/total").map(gauge),
            oldest_age_ms: number(s, "/stats/oldest_age_ms"),
        };
        (point, ())
    }

    fn write<M: SerializeMap>(&self, _: ComponentKind, map: &mut M) -> Result<(), M::Error> {
        if let Some(depth) = self.depth {
            map.serialize_entry("depth", &depth)?;
        }
        if let Some(age) = self.oldest_age_ms {
            map.serialize_entry("oldest_age_ms", &age)?;
        }
        Ok(())
    }
}

// ---- timeouts (a connector's latency) ----

/// Latency buckets kept between samples, at most (a timeout has 14).
pub(crate) const MAX_BUCKETS: usize = 64;

/// A timeout's second: calls that waited, deadlines that ran out, and the p50 and p99 latency
/// of the calls that waited in that second (absent when none did).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct TimeoutPoint {
    pub(crate) calls: u32,
    pub(crate) timeouts: u32,
    pub(crate) p50_ms: Option<f32>,
    pub(crate) p99_ms: Option<f32>,
    pub(crate) counted: bool,
}

/// A timeout's cumulative counters and latency buckets.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct TimeoutTotals {
    waited: u64,
    timeouts: u64,
    /// Upper bounds (ms) of the buckets, as the snapshot gave them.
    le_ms: Vec<u64>,
    /// Calls per bucket (one more than `le_ms`: the last is the overflow).
    counts: Vec<u64>,
}

/// A number array at `pointer` (at most [`MAX_BUCKETS`] items; non-numbers count as 0).
fn numbers(v: &Value, pointer: &str) -> Vec<u64> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .take(MAX_BUCKETS)
                .map(|n| n.as_u64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

/// The `q` quantile (0–1), in milliseconds, of the calls in `counts` (calls per bucket;
/// `le_ms` are the buckets' upper bounds, the bucket after the last bound is the overflow):
/// linear within its bucket, as Prometheus's `histogram_quantile`; a rank in the overflow
/// bucket answers the last bound. `None` without calls.
pub(crate) fn quantile(le_ms: &[u64], counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = total as f64 * q.clamp(0.0, 1.0);
    let mut below = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let Some(&hi) = le_ms.get(i) else {
                return le_ms.last().map(|&b| b as f64);
            };
            let lo = if i == 0 {
                0
            } else {
                le_ms.get(i - 1).copied().unwrap_or(0)
            };
            let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
            return Some(lo as f64 + (hi.saturating_sub(lo)) as f64 * within);
        }
        below += n;
    }
    le_ms.last().map(|&b| b as f64)
}

impl Record for TimeoutPoint {
    type Totals = TimeoutTotals;

    fn read(_: ComponentKind, s: &Value, last: Option<&TimeoutTotals>) -> (Self, TimeoutTotals) {
        let now = TimeoutTotals {
            waited: counter(s, "/waited_total"),
            timeouts: counter(s, "/timeouts_total"),
            le_ms: numbers(s, "/latency/le_ms"),
            counts: numbers(s, "/latency/counts"),
        };
        let mut point = Self {
            counted: last.is_some(),
            ..Self::default()
        };
        if let Some(last) = last {
            point.calls = delta(now.waited, last.waited);
            point.timeouts = delta(now.timeouts, last.timeouts);
            // Calls per bucket in this second; other bounds, or a count that went down, mean
            // the timeout was replaced: everything it counted is new.
            let comparable = last.le_ms == now.le_ms
                && last.counts.len() == now.counts.len()
                && now.counts.iter().zip(&last.counts).all(|(n, l)| n >= l);
            let second: Vec<u64> = if comparable {
                now.counts
                    .iter()
                    .zip(&last.counts)
                    .map(|(n, l)| n - l)
                    .collect()
            } else {
                now.counts.clone()
            };
            point.p50_ms = quantile(&now.le_ms, &second, 0.5).map(|v| v as f32);
            point.p99_ms = quantile(&now.le_ms, &second, 0.99).map(|v| v as f32);
        }
        (point, now)
    }

    fn write<M: SerializeMap>(&self, _: ComponentKind, map: &mut M) -> Result<(), M::Error> {
        if self.counted {
            map.serialize_entry("calls", &self.calls)?;
            map.serialize_entry("timeouts", &self.timeouts)?;
        }
        // Two decimals are plenty for bucketed latencies.
        let ms = |v: f32| (f64::from(v) * 100.0).round() / 100.0;
        if let Some(p50) = self.p50_ms {
            map.serialize_entry("p50_ms", &ms(p50))?;
        }
        if let Some(p99) = self.p99_ms {
            map.serialize_entry("p99_ms", &ms(p99))?;
        }
        Ok(())
    }

    fn totals_heap_bytes(t: &TimeoutTotals) -> usize {
        (t.le_ms.capacity() + t.counts.capacity()) * std::mem::size_of::<u64>()
    }
}

// ---- health components ----

/// A health component's status, in one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum HealthStatus {
    /// Not checked yet, or a status this version does not know.
    #[default]
    Unknown,
    Healthy,
    Degraded,
    Unhealthy,
}

impl HealthStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
        }
    }
}

/// A health component's second: its status, restarts, and whether it is in crash-loop
/// protection.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct HealthPoint {
    pub(crate) status: HealthStatus,
    pub(crate) restarts: u32,
    pub(crate) crash_loop: bool,
    pub(crate) counted: bool,
}

impl Record for HealthPoint {
    /// restart_count.
    type Totals = u64;

    fn read(_: ComponentKind, s: &Value, last: Option<&u64>) -> (Self, u64) {
        let restarts = counter(s, "/restart_count");
        let status = match s.get("status").and_then(Value::as_str) {
            Some("healthy") => HealthStatus::Healthy,
            Some("degraded") => HealthStatus::Degraded,
            Some("unhealthy") => HealthStatus::Unhealthy,
            _ => HealthStatus::Unknown,
        };
        let point = Self {
            status,
            restarts: last.map_or(0, |&l| delta(restarts, l)),
            crash_loop: s.get("crash_loop").and_then(Value::as_bool) == Some(true),
            counted: last.is_some(),
        };
        (point, restarts)
    }

    fn write<M: SerializeMap>(&self, _: ComponentKind, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("status", self.status.as_str())?;
        map.serialize_entry("crash_loop", &self.crash_loop)?;
        if self.counted {
            map.serialize_entry("restarts", &self.restarts)?;
        }
        Ok(())
    }
}

// ---- retries, hedges, fallbacks, fault injectors: counters ----

/// Counters a [`CounterPoint`] keeps per kind: (snapshot field, point field).
pub(crate) fn counter_fields(kind: ComponentKind) -> &'static [(&'static str, &'static str)] {
    match kind {
        ComponentKind::Retry => &[
            ("calls_total", "calls"),
            ("retries_total", "retries"),
            ("exhausted_total", "exhausted"),
            ("budget_denied_total", "budget_denied"),
        ],
        ComponentKind::Hedge => &[
            ("calls_total", "calls"),
            ("hedges_sent_total", "hedges"),
            ("hedges_won_total", "won"),
            ("budget_denied_total", "budget_denied"),
        ],
        ComponentKind::Fallback => &[("used_total", "used"), ("passed_total", "passed")],
        ComponentKind::FaultInjector => &[
            ("calls_while_enabled_total", "calls"),
            ("injected_errors_total", "errors"),
            ("injected_latency_total", "delayed"),
            ("injected_refusals_total", "refused"),
        ],
        _ => &[],
    }
}

/// Counters at most one [`CounterPoint`] keeps.
const COUNTERS: usize = 4;

/// A retry policy's, hedge's, fallback's or fault injector's second: the growth of its
/// counters ([`counter_fields`]) and whether it is enabled (when its snapshot says).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct CounterPoint {
    pub(crate) values: [u32; COUNTERS],
    pub(crate) enabled: Option<bool>,
    pub(crate) counted: bool,
}

impl Record for CounterPoint {
    type Totals = [u64; COUNTERS];

    fn read(
        kind: ComponentKind,
        s: &Value,
        last: Option<&[u64; COUNTERS]>,
    ) -> (Self, Self::Totals) {
        let mut now = [0; COUNTERS];
        for (n, (field, _)) in now.iter_mut().zip(counter_fields(kind)) {
            *n = s.get(*field).and_then(Value::as_u64).unwrap_or(0);
        }
        let point = Self {
            values: deltas(now, last),
            enabled: s.get("enabled").and_then(Value::as_bool),
            counted: last.is_some(),
        };
        (point, now)
    }

    fn write<M: SerializeMap>(&self, kind: ComponentKind, map: &mut M) -> Result<(), M::Error> {
        if let Some(enabled) = self.enabled {
            map.serialize_entry("enabled", &enabled)?;
        }
        if self.counted {
            for (v, (_, name)) in self.values.iter().zip(counter_fields(kind)) {
                map.serialize_entry(*name, v)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    /// The JSON of `point`, as the route writes it (without `t`).
    fn fields<R: Record>(kind: ComponentKind, point: &R) -> Value {
        struct View<'a, R>(ComponentKind, &'a R);
        impl<R: Record> serde::Serialize for View<'_, R> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(None)?;
                self.1.write(self.0, &mut map)?;
                map.end()
            }
        }
        serde_json::to_value(View(kind, point)).unwrap()
    }

    /// Reads `snapshots` in order, as the sampler would: the points.
    fn run<R: Record>(kind: ComponentKind, snapshots: &[Value]) -> Vec<Value> {
        let mut last: Option<R::Totals> = None;
        snapshots
            .iter()
            .map(|s| {
                let (point, totals) = R::read(kind, s, last.as_ref());
                last = Some(totals);
                fields(kind, &point)
            })
            .collect()
    }

    fn breaker(state: &str, ok: u64, failed: u64, refused: u64, transitions: u64) -> Value {
        json!({"name": "slack", "state": state, "transitions_total": transitions,
               "calls": {"successful": ok, "failed": failed, "ignored": 0, "slow": 0, "not_permitted": refused}})
    }

    #[test]
    fn breaker_points_count_each_second_and_keep_the_state() {
        let kind = ComponentKind::CircuitBreaker;
        let points = run::<BreakerPoint>(
            kind,
            &[
                breaker("closed", 100, 2, 0, 0),
                breaker("closed", 110, 5, 0, 0),
                breaker("open", 110, 8, 4, 1),
                breaker("half_open", 110, 8, 9, 2),
                // A reset cleared the counters: what they hold now is new.
                breaker("closed", 1, 0, 0, 3),
            ],
        );
        assert_eq!(points[0], json!({"state": "closed"}), "no counts at first");
        assert_eq!(
            points[1],
            json!({"state": "closed", "calls": 13, "failures": 3, "refusals": 0, "slow": 0, "transitions": 0})
        );
        assert_eq!(points[2]["state"], "open");
        assert_eq!(
            (
                &points[2]["calls"],
                &points[2]["failures"],
                &points[2]["refusals"]
            ),
            (&json!(3), &json!(3), &json!(4))
        );
        assert_eq!(points[3]["state"], "half_open");
        assert_eq!(points[3]["refusals"], 5);
        assert_eq!(points[4]["state"], "closed");
        assert_eq!(points[4]["calls"], 1, "a counter that went down was reset");
        assert_eq!(points[4]["transitions"], 1);
    }

    #[test]
    fn unreadable_snapshots_give_empty_points_not_errors() {
        let odd = [
            json!(null),
            json!("text"),
            json!([1, 2]),
            json!({"calls": "many", "state": 7, "stats": 3, "permitted_total": -1,
                   "calls_total": 1.5, "latency": {"le_ms": "x", "counts": [1, "a"]}}),
        ];
        for kind in ComponentKind::ALL {
            let points = run::<BreakerPoint>(kind, &odd);
            assert!(points.iter().all(|p| p["state"] == "unknown"), "{points:?}");
            assert!(
                run::<BulkheadPoint>(kind, &odd)
                    .iter()
                    .all(|p| p.get("utilization").is_none())
            );
            assert!(
                run::<LimiterPoint>(kind, &odd)[1..]
                    .iter()
                    .all(|p| p["rejected"] == 0)
            );
            assert!(run::<DlqPoint>(kind, &odd).iter().all(|p| *p == json!({})));
            assert!(
                run::<TimeoutPoint>(kind, &odd)
                    .iter()
                    .all(|p| p.get("p50_ms").is_none())
            );
            assert!(
                run::<HealthPoint>(kind, &odd)
                    .iter()
                    .all(|p| p["status"] == "unknown")
            );
            assert!(
                run::<CounterPoint>(kind, &odd)
                    .iter()
                    .all(|p| p.get("enabled").is_none())
            );
        }
    }

    #[test]
    fn bulkhead_points_carry_utilization_and_waits() {
        let kind = ComponentKind::Bulkhead;
        let snap = |active: u64, waiting: u64, rejected: u64| json!({"active": active, "max_concurrent": 8, "waiting": waiting, "rejected_total": rejected, "timeouts_total": 1});
        let points = run::<BulkheadPoint>(kind, &[snap(2, 0, 5), snap(8, 3, 9)]);
        assert_eq!(
            points[0],
            json!({"active": 2, "limit": 8, "utilization": 0.25, "waiting": 0})
        );
        assert_eq!(
            points[1],
            json!({"active": 8, "limit": 8, "utilization": 1.0, "waiting": 3, "rejected": 4, "timeouts": 0})
        );
    }

    #[test]
    fn limiter_and_counter_points_diff_their_totals() {
        let points = run::<LimiterPoint>(
            ComponentKind::RateLimiter,
            &[
                json!({"permitted_total": 10, "rejected_total": 0}),
                json!({"permitted_total": 25, "rejected_total": 7}),
            ],
        );
        assert_eq!(points[0], json!({}));
        assert_eq!(points[1], json!({"permitted": 15, "rejected": 7}));

        let points = run::<CounterPoint>(
            ComponentKind::FaultInjector,
            &[
                json!({"enabled": false, "calls_while_enabled_total": 0, "injected_errors_total": 0}),
                json!({"enabled": true, "calls_while_enabled_total": 10, "injected_errors_total": 5,
                       "injected_latency_total": 0, "injected_refusals_total": 1}),
            ],
        );
        assert_eq!(points[0], json!({"enabled": false}));
        assert_eq!(
            points[1],
            json!({"enabled": true, "calls": 10, "errors": 5, "delayed": 0, "refused": 1})
        );
        let points = run::<CounterPoint>(
            ComponentKind::Retry,
            &[
                json!({"calls_total": 1, "retries_total": 0}),
                json!({"calls_total": 4, "retries_total": 2}),
            ],
        );
        assert_eq!(
            points[1],
            json!({"calls": 3, "retries": 2, "exhausted": 0, "budget_denied": 0})
        );
        for kind in ComponentKind::ALL {
            assert!(counter_fields(kind).len() <= COUNTERS, "{kind}");
        }
    }

    #[test]
    fn dlq_points_keep_depth_and_age() {
        let points = run::<DlqPoint>(
            ComponentKind::DeadLetterQueue,
            &[
                json!({"stats": null}),
                json!({"stats": {"total": 3, "oldest_age_ms": 1500}}),
                json!({"stats": {"total": 0, "oldest_age_ms": null}}),
            ],
        );
        assert_eq!(
            points,
            [
                json!({}),
                json!({"depth": 3, "oldest_age_ms": 1500}),
                json!({"depth": 0})
            ]
        );
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let le = [10, 100];
        assert_eq!(quantile(&le, &[0, 0, 0], 0.5), None);
        assert_eq!(quantile(&le, &[], 0.5), None);
        // 10 calls in (0, 10]: the median is half way.
        assert_eq!(quantile(&le, &[10, 0, 0], 0.5), Some(5.0));
        // 90 fast, 10 in (10, 100]: p99 is 90 % into the second bucket.
        assert_eq!(quantile(&le, &[90, 10, 0], 0.99), Some(91.0));
        assert_eq!(quantile(&le, &[90, 10, 0], 0.5), Some(50.0 / 9.0));
        // The overflow answers the last bound.
        assert_eq!(quantile(&le, &[0, 0, 4], 0.5), Some(100.0));
        assert_eq!(quantile(&le, &[1, 0, 0], 1.0), Some(10.0));
        assert_eq!(quantile(&[], &[3], 0.5), None);
    }

    #[test]
    fn timeout_points_take_percentiles_of_the_second_only() {
        let kind = ComponentKind::Timeout;
        let snap = |waited: u64, timeouts: u64, counts: [u64; 3]| {
            json!({"waited_total": waited, "timeouts_total": timeouts,
                   "latency": {"le_ms": [10, 100], "counts": counts}})
        };
        let points = run::<TimeoutPoint>(
            kind,
            &[
                // Slow calls before the history started must not weigh on its first seconds.
                snap(1000, 3, [0, 0, 1000]),
                snap(1010, 3, [10, 0, 1000]),
                snap(1010, 3, [10, 0, 1000]),
                snap(1020, 4, [10, 9, 1001]),
            ],
        );
        assert_eq!(points[0], json!({}));
        assert_eq!(
            points[1],
            json!({"calls": 10, "timeouts": 0, "p50_ms": 5.0, "p99_ms": 9.9})
        );
        assert_eq!(
            points[2],
            json!({"calls": 0, "timeouts": 0}),
            "no call, no percentile"
        );
        assert_eq!(points[3]["timeouts"], 1);
        assert_eq!(
            points[3]["p99_ms"], 100.0,
            "the timed-out call is in the overflow"
        );
        assert_eq!(points[3]["p50_ms"], 60.0, "5 of 9 into (10, 100]");
        // Other bounds: the timeout was replaced, all of its counts are new.
        let other = json!({"waited_total": 2, "timeouts_total": 0, "latency": {"le_ms": [1, 2], "counts": [2, 0, 0]}});
        let (p, _) = TimeoutPoint::read(
            kind,
            &other,
            Some(&TimeoutTotals {
                waited: 1020,
                timeouts: 4,
                le_ms: vec![10, 100],
                counts: vec![10, 9, 1001],
            }),
        );
        assert_eq!((p.calls, p.p50_ms), (2, Some(0.5)));
    }

    #[test]
    fn health_points_keep_status_and_restarts() {
        let points = run::<HealthPoint>(
            ComponentKind::Health,
            &[
                json!({"status": null, "restart_count": 2, "crash_loop": false}),
                json!({"status": "unhealthy", "restart_count": 3, "crash_loop": true}),
            ],
        );
        assert_eq!(points[0], json!({"status": "unknown", "crash_loop": false}));
        assert_eq!(
            points[1],
            json!({"status": "unhealthy", "crash_loop": true, "restarts": 1})
        );
    }

    #[test]
    fn deltas_saturate_in_32_bits() {
        assert_eq!(delta(u64::MAX, 0), u32::MAX);
        assert_eq!(delta(5, 3), 2);
        assert_eq!(delta(3, 5), 3);
    }
}
