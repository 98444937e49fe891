//! Bulkhead behaviour on tokio's paused clock: fail-fast, timeouts, FIFO order, cancellation
//! while waiting and while running, grow and shrink under load, runtime control.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::sync::Arc;
use std::time::Duration;

use palisade_bulkhead::{Bulkhead, BulkheadError, CallError};
use palisade_core::{ComponentKind, ControlError, EventFilter, EventKind, Registry};
use parking_lot::Mutex;
use serde_json::json;

fn bulkhead(max: u32, wait_ms: u64) -> Bulkhead {
    Bulkhead::builder("database")
        .max_concurrent(max)
        .max_wait(Duration::from_millis(wait_ms))
        .build()
        .unwrap()
}

/// Lets spawned tasks run until `cond` holds (no timers involved).
async fn until(cond: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition never held");
}

#[tokio::test(start_paused = true)]
async fn fails_fast_without_a_wait() {
    let b = bulkhead(1, 0);
    let _held = b.acquire().await.unwrap();
    let err = b.acquire().await.unwrap_err();
    assert_eq!(
        err,
        BulkheadError::Full {
            name: "database".into(),
            max_concurrent: 1,
            max_waiting: None
        }
    );
    assert!(b.try_acquire().is_err());
    let snap = b.snapshot();
    assert_eq!((snap.active, snap.rejected_total, snap.waiting), (1, 2, 0));
}

#[tokio::test(start_paused = true)]
async fn times_out_after_max_wait() {
    let b = bulkhead(1, 250);
    let _held = b.acquire().await.unwrap();
    let start = tokio::time::Instant::now();
    let err = b.acquire().await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert_eq!(
        err.to_string(),
        "bulkhead 'database' timed out after 250 ms waiting for one of its 1 slots"
    );
    let snap = b.snapshot();
    assert_eq!((snap.timeouts_total, snap.waiting), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_slot_freed_within_the_wait_is_taken() {
    let b = bulkhead(1, 1000);
    let held = b.acquire().await.unwrap();
    let b2 = b.clone();
    let waiter = tokio::spawn(async move { b2.acquire().await.map(drop) });
    until(|| b.waiting() == 1).await;
    tokio::time::advance(Duration::from_millis(999)).await;
    drop(held);
    waiter.await.unwrap().unwrap();
    assert_eq!(b.snapshot().timeouts_total, 0);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_first_come_first_served() {
    let b = bulkhead(1, 60_000);
    let held = b.acquire().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..6u32 {
        let (b2, order) = (b.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let _p = b2.acquire().await.unwrap();
            order.lock().push(i);
            tokio::task::yield_now().await;
        }));
        until(|| b.waiting() == i + 1).await;
    }
    drop(held);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock(), vec![0, 1, 2, 3, 4, 5]);
}

#[tokio::test(start_paused = true)]
async fn the_wait_queue_is_bounded() {
    let b = Bulkhead::builder("cost")
        .max_concurrent(1)
        .max_wait(Duration::from_secs(10))
        .max_waiting(1)
        .build()
        .unwrap();
    let _held = b.acquire().await.unwrap();
    let b2 = b.clone();
    let _waiter = tokio::spawn(async move { b2.acquire().await.map(drop) });
    until(|| b.waiting() == 1).await;
    let err = b.acquire().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "bulkhead 'cost' is full: 1 calls running and 1 waiting; retry later or raise its limit"
    );
    assert_eq!(b.waiting(), 1);
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiters_and_running_calls_leak_nothing() {
    let b = bulkhead(1, 60_000);
    // Cancelled while running.
    let b2 = b.clone();
    let running =
        tokio::spawn(async move { b2.call(std::future::pending::<Result<(), ()>>()).await });
    until(|| b.active() == 1).await;
    // Cancelled while waiting.
    let b3 = b.clone();
    let waiting = tokio::spawn(async move { b3.acquire().await.map(drop) });
    until(|| b.waiting() == 1).await;
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    assert_eq!(b.waiting(), 0, "a cancelled waiter stayed counted");
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());
    assert_eq!(b.active(), 0, "a cancelled call kept its slot");
    // The single slot is usable again, by exactly one caller.
    let p = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    drop(p);
}

#[tokio::test(start_paused = true)]
async fn growing_admits_waiters_at_once() {
    let b = bulkhead(2, 60_000);
    let held = (b.acquire().await.unwrap(), b.acquire().await.unwrap());
    let mut waiters = Vec::new();
    for _ in 0..3 {
        let b2 = b.clone();
        waiters.push(tokio::spawn(async move {
            let _p = b2.acquire().await.unwrap();
            std::future::pending::<()>().await;
        }));
    }
    until(|| b.waiting() == 3).await;
    b.set_max_concurrent(4).unwrap();
    until(|| b.waiting() == 1).await;
    assert_eq!(b.active(), 4);
    for w in &waiters {
        w.abort();
    }
    drop(held);
    for w in waiters {
        let _ = w.await;
    }
    assert_eq!((b.active(), b.waiting()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn shrinking_lets_running_calls_finish_and_conserves_permits() {
    let b = bulkhead(4, 0);
    let mut held: Vec<_> = Vec::new();
    for _ in 0..4 {
        held.push(b.try_acquire().unwrap());
    }
    b.set_max_concurrent(2).unwrap();
    assert_eq!(
        (b.active(), b.max_concurrent()),
        (4, 2),
        "running calls are not interrupted"
    );
    held.pop();
    assert_eq!(b.active(), 3);
    assert!(b.try_acquire().is_err());
    held.pop();
    assert_eq!(b.active(), 2);
    assert!(
        b.try_acquire().is_err(),
        "admitted a call while active == limit"
    );
    held.pop();
    let p = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    drop(p);
    drop(held);
    assert_eq!(b.active(), 0);
    // Exactly two slots remain.
    let (x, y) = (b.try_acquire().unwrap(), b.try_acquire().unwrap());
    assert!(b.try_acquire().is_err());
    drop((x, y));
}

#[tokio::test(start_paused = true)]
async fn growing_while_a_shrink_is_still_draining() {
    let b = bulkhead(4, 0);
    let mut held: Vec<_> = (0..4).map(|_| b.try_acquire().unwrap()).collect();
    b.set_max_concurrent(1).unwrap();
    b.set_max_concurrent(3).unwrap();
    assert_eq!(b.active(), 4);
    held.pop();
    assert_eq!(b.active(), 3);
    assert!(b.try_acquire().is_err());
    held.pop();
    let p = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    drop(p);
    drop(held);
    let all: Vec<_> = (0..3).map(|_| b.try_acquire().unwrap()).collect();
    assert!(b.try_acquire().is_err());
    drop(all);
}

#[tokio::test(start_paused = true)]
async fn call_separates_refusals_from_inner_errors() {
    let b = bulkhead(1, 0);
    let r: Result<(), CallError<&str>> = b.call(async { Err("boom") }).await;
    assert_eq!(r, Err(CallError::Inner("boom")));
    let _held = b.try_acquire().unwrap();
    let r = b.call(async { Ok::<_, &str>(()) }).await;
    assert!(matches!(
        r,
        Err(CallError::Rejected(BulkheadError::Full { .. }))
    ));
}

#[tokio::test]
async fn operators_resize_through_the_registry() {
    let registry = Registry::new();
    let b = Bulkhead::builder("database")
        .max_concurrent(2)
        .registry(&registry)
        .build()
        .unwrap();
    let out = registry
        .control(
            ComponentKind::Bulkhead,
            "database",
            json!({"action": "set_max_concurrent", "max_concurrent": 4}),
        )
        .await
        .unwrap();
    assert_eq!(out["max_concurrent"], 4);
    assert_eq!(b.max_concurrent(), 4);
    let err = registry
        .control(
            ComponentKind::Bulkhead,
            "database",
            json!({"action": "set_max_concurrent", "max_concurrent": 0}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ControlError::InvalidConfig(e) if e.field == "max_concurrent"),
        "{err}"
    );
    assert_eq!(b.max_concurrent(), 4);
    registry
        .control(
            ComponentKind::Bulkhead,
            "database",
            json!({"action": "set_max_wait", "max_wait": "2s"}),
        )
        .await
        .unwrap();
    assert_eq!(b.snapshot().max_wait_ms, 2000);
    let changes: Vec<String> = registry
        .events()
        .recent(&EventFilter::default())
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ConfigChanged { change } => Some(change),
            _ => None,
        })
        .collect();
    assert_eq!(changes, vec!["max_concurrent 2 -> 4", "max_wait 0ns -> 2s"]);
    let snap = registry
        .snapshot(ComponentKind::Bulkhead, "database")
        .unwrap();
    assert_eq!(snap["active"], 0);
    assert_eq!(snap["config"]["max_wait"], "2s");
}
