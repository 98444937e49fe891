//! The history: `GET /admin/history` over real components after real traffic (samples taken
//! explicitly on a manual clock), its query checks, a breaker's cycle in its points, the
//! sampler that `serve` starts and stops, and the memory each component costs, measured with a
//! byte-counting allocator.
#![cfg(feature = "health")] // the fixture has a health monitor
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed
#![allow(unsafe_code)] // the byte-counting global allocator below

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use palisade_admin::{AdminRouter, DEFAULT_CAPACITY, History};
use palisade_breaker::CircuitBreaker;
use palisade_core::clock::MANUAL_CLOCK_EPOCH_MILLIS;
use palisade_core::{Component, ComponentKind, ControlError, ManualClock, Registry, async_trait};
use palisade_dlq::Failure;
use palisade_toolbox::Timeout;
use serde_json::{Value, json};

// ---- a byte-counting allocator (this thread only, while measuring) ----

/// Forwards to [`System`]; while [`net_bytes_in`] measures on a thread, adds the bytes that
/// thread allocates and subtracts those it frees.
struct CountingBytes;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static NET: Cell<i64> = const { Cell::new(0) };
}

fn track(delta: i64) {
    // `try_with`: allocations during thread teardown must not panic.
    let _ = MEASURING.try_with(|on| {
        if on.get() {
            let _ = NET.try_with(|n| n.set(n.get() + delta));
        }
    });
}

fn size(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// SAFETY: every method forwards to `System` with the caller's arguments; the only addition is
// a thread-local counter, which allocates nothing.
unsafe impl GlobalAlloc for CountingBytes {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            track(size(layout.size()));
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            track(size(layout.size()));
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            track(size(new_size) - size(layout.size()));
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        track(-size(layout.size()));
    }
}

#[global_allocator]
static GLOBAL: CountingBytes = CountingBytes;

/// Bytes `f` allocated and did not free, on this thread.
fn net_bytes_in(f: impl FnOnce()) -> i64 {
    NET.with(|n| n.set(0));
    MEASURING.with(|m| m.set(true));
    f();
    MEASURING.with(|m| m.set(false));
    NET.with(Cell::get)
}

// ---- helpers ----

/// The points of `kind`'s `name` in a history document.
fn points_of<'a>(doc: &'a Value, kind: &str, name: &str) -> &'a Vec<Value> {
    doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == kind && c["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {doc}"))["points"]
        .as_array()
        .unwrap()
}

/// A history on a manual clock that only the test samples.
fn manual_history(registry: &Registry, clock: &ManualClock) -> History {
    History::builder(registry)
        .clock(clock.shared())
        .sample_when_served(false)
        .build()
        .unwrap()
}

// ---- the route ----

#[tokio::test(start_paused = true)]
async fn history_serves_one_point_per_sample_for_every_kind() {
    let f = fixture().await;
    let weather = Timeout::builder("weather")
        .deadline(Duration::from_millis(500))
        .registry(&f.registry)
        .build()
        .unwrap();
    let clock = ManualClock::new();
    let history = manual_history(&f.registry, &clock);
    let app = AdminRouter::builder(&f.registry)
        .health(&f.monitor)
        .token(TOKEN)
        .history(history.clone())
        .build();

    let first = history.sample().await;
    assert_eq!((first.recorded, first.dropped), (8, 0));
    clock.advance(Duration::from_secs(1));

    // One second of traffic through every kind.
    for _ in 0..5 {
        f.breaker.call(async { Ok::<_, &str>(()) }).await.unwrap();
    }
    for _ in 0..3 {
        assert!(
            f.breaker
                .call(async { Err::<(), _>("boom") })
                .await
                .is_err()
        );
    }
    assert!(
        f.breaker.call(async { Ok::<_, &str>(()) }).await.is_err(),
        "refused"
    );
    let _slot = f.bulkhead.try_acquire().unwrap();
    for _ in 0..120 {
        let _ = f.limiter.check_key("10.0.0.1");
    }
    for ms in [20, 40, 150] {
        weather
            .call(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, ()>(())
            })
            .await
            .unwrap();
    }
    let late = weather.call(std::future::pending::<Result<(), ()>>()).await;
    assert!(late.unwrap_err().is_elapsed());
    f.dlq
        .push("slack.post", &json!({}), Failure::timeout("timed out"))
        .await
        .unwrap();
    history.sample().await; // asks the queue for fresh stats first

    let doc = get_json(&app, "/admin/history").await;
    assert_eq!(doc["interval_ms"], 1000);
    assert_eq!(doc["capacity"], 900);
    assert_eq!(doc["now_ms"], MANUAL_CLOCK_EPOCH_MILLIS + 1000);
    assert_eq!(
        (doc["tracked"].as_u64(), doc["dropped"].as_u64()),
        (Some(8), Some(0))
    );
    let t0 = MANUAL_CLOCK_EPOCH_MILLIS;

    let breaker = points_of(&doc, "circuit_breaker", "slack");
    assert_eq!(
        breaker[0],
        json!({"t": t0, "state": "closed"}),
        "no counts at first"
    );
    assert_eq!(
        breaker[1],
        json!({"t": t0 + 1000, "state": "open", "calls": 8, "failures": 3, "refusals": 1,
               "slow": 0, "transitions": 1})
    );
    let bulkhead = points_of(&doc, "bulkhead", "database");
    assert_eq!(
        bulkhead[1],
        json!({"t": t0 + 1000, "active": 1, "limit": 10, "utilization": 0.1, "waiting": 0,
               "rejected": 0, "timeouts": 0})
    );
    let limiter = &points_of(&doc, "rate_limiter", "per-client")[1];
    assert_eq!(
        limiter["permitted"].as_u64().unwrap() + limiter["rejected"].as_u64().unwrap(),
        120
    );
    assert!(limiter["rejected"].as_u64().unwrap() >= 1, "{limiter}");
    let queue = points_of(&doc, "dead_letter_queue", "tool-calls");
    assert_eq!(queue[0]["depth"], 3);
    assert_eq!(queue[1]["depth"], 4, "fresh stats: {queue:?}");
    assert!(queue[1]["oldest_age_ms"].is_u64());
    // 20, 40 and 150 ms, and the call that ran out at 500 ms: the median is at the top of
    // (20, 50], p99 96 % into (200, 500].
    let latency = points_of(&doc, "timeout", "weather");
    assert_eq!(
        latency[1],
        json!({"t": t0 + 1000, "calls": 4, "timeouts": 1, "p50_ms": 50.0, "p99_ms": 488.0})
    );
    let health = points_of(&doc, "health", "upstream");
    assert_eq!(
        health[1],
        json!({"t": t0 + 1000, "status": "healthy", "crash_loop": false, "restarts": 0})
    );
    assert_eq!(
        points_of(&doc, "rate_limiter", "flaky")[1],
        json!({"t": t0 + 1000, "permitted": 0, "rejected": 0})
    );
}

#[tokio::test]
async fn history_query_is_checked_and_reads_need_a_token() {
    let f = fixture().await;
    let clock = ManualClock::new();
    let history = manual_history(&f.registry, &clock);
    let app = AdminRouter::builder(&f.registry)
        .health(&f.monitor)
        .token(TOKEN)
        .history(history.clone())
        .build();
    for _ in 0..10 {
        history.sample_now();
        clock.advance(Duration::from_secs(1));
    }

    // Filters: kind (by name or admin path), name, the last seconds, after a time.
    let doc = get_json(&app, "/admin/history?kind=circuit-breakers").await;
    assert_eq!(doc["components"].as_array().unwrap().len(), 1);
    assert_eq!(points_of(&doc, "circuit_breaker", "slack").len(), 10);
    let doc = get_json(&app, "/admin/history?kind=health&name=worker&seconds=3").await;
    assert_eq!(doc["components"].as_array().unwrap().len(), 1);
    assert_eq!(
        points_of(&doc, "health", "worker").len(),
        2,
        "the clock is 1 s past the last"
    );
    let since = MANUAL_CLOCK_EPOCH_MILLIS + 6_000;
    let doc = get_json(&app, &format!("/admin/history?name=database&since={since}")).await;
    let points = points_of(&doc, "bulkhead", "database");
    assert_eq!(points.len(), 3);
    assert_eq!(points[0]["t"], since + 1000);
    let doc = get_json(&app, "/admin/history?kind=&name=&seconds=").await;
    assert_eq!(
        doc["components"].as_array().unwrap().len(),
        7,
        "empty values: no filter"
    );

    // Mistakes are 400s that say what is accepted.
    for (query, needle) in [
        ("kind=breakers", "unknown kind `breakers`"),
        ("seconds=0", "from 1 to 900"),
        ("seconds=1000", "from 1 to 900"),
        ("seconds=ten", "whole number"),
        ("since=-1", "milliseconds since the Unix epoch"),
        ("name=a%20b", "not a component name"),
        (
            "limit=5",
            "unknown query parameter `limit`; use kind, name, seconds, since",
        ),
        ("kind=bulkhead&kind=timeout", "given twice"),
    ] {
        let r = send(&app, get(&format!("/admin/history?{query}"))).await;
        r.assert_error(400, "bad_query");
        assert!(
            r.json["message"].as_str().unwrap().contains(needle),
            "{query}: {}",
            r.text
        );
    }
    // A name nobody has is a 404; one registered but not sampled yet has no points.
    send(&app, get("/admin/history?kind=circuit_breaker&name=nobody"))
        .await
        .assert_error(404, "not_found");
    let _late = CircuitBreaker::builder("late")
        .registry(&f.registry)
        .build()
        .unwrap();
    let doc = get_json(&app, "/admin/history?name=late").await;
    assert_eq!(doc["components"], json!([]));

    // A reader's token, like every other read.
    send(&app, get_anonymous("/admin/history"))
        .await
        .assert_error(401, "unauthorized");
    let index = get_json(&app, "/admin").await;
    let route = index["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == "/admin/history")
        .unwrap();
    assert_eq!(
        (&route["method"], &route["needs_token"]),
        (&json!("GET"), &json!(true))
    );
}

#[tokio::test]
async fn a_breaker_cycle_shows_in_its_points() {
    let registry = Registry::new();
    let breaker_clock = ManualClock::new();
    let breaker = CircuitBreaker::builder("cycle")
        .consecutive_failures(2)
        .wait_duration(Duration::from_secs(10))
        .half_open_max_calls(1)
        .clock(breaker_clock.shared())
        .registry(&registry)
        .build()
        .unwrap();
    let clock = ManualClock::new();
    let history = manual_history(&registry, &clock);
    let app = AdminRouter::builder(&registry)
        .token(TOKEN)
        .history(history.clone())
        .build();
    let sample = || {
        history.sample_now();
        clock.advance(Duration::from_secs(1));
    };

    sample(); // closed
    for _ in 0..2 {
        assert!(breaker.call(async { Err::<(), _>("boom") }).await.is_err());
    }
    assert!(
        breaker.call(async { Ok::<_, &str>(()) }).await.is_err(),
        "refused"
    );
    sample(); // open
    breaker_clock.advance(Duration::from_secs(11));
    sample(); // half-open: the snapshot applies the due move
    breaker.call(async { Ok::<_, &str>(()) }).await.unwrap();
    sample(); // closed: the trial succeeded

    let doc = get_json(&app, "/admin/history?kind=circuit_breaker&name=cycle").await;
    let points = points_of(&doc, "circuit_breaker", "cycle");
    let states: Vec<&str> = points
        .iter()
        .map(|p| p["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["closed", "open", "half_open", "closed"]);
    let field =
        |name: &str| -> Vec<Value> { points[1..].iter().map(|p| p[name].clone()).collect() };
    assert_eq!(field("failures"), [json!(2), json!(0), json!(0)]);
    assert_eq!(field("refusals"), [json!(1), json!(0), json!(0)]);
    assert_eq!(field("transitions"), [json!(1), json!(1), json!(1)]);
    assert_eq!(field("calls"), [json!(2), json!(0), json!(1)]);
}

// ---- the sampler ----

#[tokio::test]
async fn serve_samples_every_interval_until_the_server_stops() {
    let registry = Registry::new();
    let _b = CircuitBreaker::builder("b")
        .registry(&registry)
        .build()
        .unwrap();
    let history = History::builder(&registry)
        .interval(Duration::from_millis(20))
        .build()
        .unwrap();
    let server = AdminRouter::builder(&registry)
        .token(TOKEN)
        .history(history.clone())
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert!(history.sampling(), "serve started the sampler");
    palisade_testkit::eventually("three samples", Duration::from_secs(10), || async {
        history.points(ComponentKind::CircuitBreaker, "b") >= 3
    })
    .await;
    server.shutdown().await.unwrap();
    palisade_testkit::eventually("the sampler to stop", Duration::from_secs(10), || async {
        !history.sampling()
    })
    .await;
    // The flag is cleared as the task ends: no sample can follow.
    let after = history.points(ComponentKind::CircuitBreaker, "b");
    tokio::task::yield_now().await;
    assert_eq!(history.points(ComponentKind::CircuitBreaker, "b"), after);
    assert!(history.spawn_sampler().is_some(), "free to start again");

    // Off by choice: serve starts none.
    let manual = History::builder(&registry)
        .sample_when_served(false)
        .build()
        .unwrap();
    let server = AdminRouter::builder(&registry)
        .token(TOKEN)
        .history(manual.clone())
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert!(!manual.sampling());
    assert_eq!(manual.points(ComponentKind::CircuitBreaker, "b"), 0);
    server.shutdown().await.unwrap();
}

// ---- memory ----

/// A component of any kind whose snapshot is fixed JSON (the shape its kind's snapshot has).
struct Fake {
    kind: ComponentKind,
    name: String,
    snapshot: Value,
}

#[async_trait]
impl Component for Fake {
    fn kind(&self) -> ComponentKind {
        self.kind
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn snapshot_json(&self) -> Value {
        self.snapshot.clone()
    }
    async fn control_json(&self, _: Value) -> Result<Value, ControlError> {
        Ok(Value::Null)
    }
    fn export_metrics(&self) {}
}

/// A snapshot of `kind` with the fields its points read.
fn snapshot_of(kind: ComponentKind) -> Value {
    match kind {
        ComponentKind::CircuitBreaker => json!({"state": "closed", "transitions_total": 3,
            "calls": {"successful": 10, "failed": 2, "ignored": 0, "slow": 1, "not_permitted": 4}}),
        ComponentKind::Bulkhead => json!({"active": 3, "max_concurrent": 10, "waiting": 1,
            "rejected_total": 5, "timeouts_total": 1}),
        ComponentKind::RateLimiter => json!({"permitted_total": 100, "rejected_total": 7}),
        ComponentKind::DeadLetterQueue => json!({"stats": {"total": 12, "oldest_age_ms": 60_000}}),
        ComponentKind::Timeout => json!({"waited_total": 50, "timeouts_total": 2, "latency": {
            "le_ms": [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000],
            "counts": [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5]}}),
        ComponentKind::Health => {
            json!({"status": "healthy", "restart_count": 1, "crash_loop": false})
        }
        _ => json!({"enabled": true, "calls_total": 9, "retries_total": 2, "used_total": 1,
            "calls_while_enabled_total": 3}),
    }
}

const PER_KIND: usize = 16;

#[test]
fn each_component_costs_a_fixed_ring_and_nothing_grows() {
    let mut table = Vec::new();
    for kind in ComponentKind::ALL {
        let registry = Registry::new();
        for i in 0..PER_KIND {
            registry
                .register(Arc::new(Fake {
                    kind,
                    name: format!("component-{i:02}"),
                    snapshot: snapshot_of(kind),
                }))
                .unwrap();
        }
        let history = History::new(&registry);
        // A full window: every ring is full, every component has totals.
        let filled = net_bytes_in(|| {
            for _ in 0..DEFAULT_CAPACITY {
                history.sample_now();
            }
        });
        // Another window on top: nothing more is kept.
        let more = net_bytes_in(|| {
            for _ in 0..DEFAULT_CAPACITY {
                history.sample_now();
            }
        });
        assert_eq!(
            more, 0,
            "{kind}: the history grew by {more} bytes in its second window"
        );
        assert_eq!(history.points(kind, "component-00"), DEFAULT_CAPACITY);

        let measured = usize::try_from(filled).unwrap() / PER_KIND;
        let computed = history.heap_bytes() / PER_KIND;
        let ring = DEFAULT_CAPACITY * History::point_bytes(kind);
        // The ring is nearly all of it; the map's nodes (measured, not computed) add a little.
        assert!(
            ring <= computed && computed <= measured,
            "{kind}: ring {ring}, computed {computed}, measured {measured}"
        );
        assert!(
            measured <= computed + 256,
            "{kind}: measured {measured} > computed {computed} + 256"
        );
        table.push(format!(
            "| `{kind}` | {} | {ring} | {computed} | {measured} |",
            History::point_bytes(kind)
        ));
    }
    eprintln!(
        "| kind | bytes per point | ring (900 points) | per component, computed | per component, measured |\n| --- | --- | --- | --- | --- |\n{}",
        table.join("\n")
    );
}
