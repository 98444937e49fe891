//! `HedgeLayer` on tokio's paused clock: only requests the predicate accepts are hedged; the
//! losing response future is dropped and its bulkhead permit returned.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use palisade_bulkhead::Bulkhead;
use palisade_toolbox::budget::BudgetConfig;
use palisade_toolbox::hedge::{AllIdempotent, Hedge, HedgeLayer};
use tokio::time::{Instant, sleep};
use tower::{ServiceBuilder, ServiceExt};

#[derive(Clone, Debug, PartialEq)]
enum Rpc {
    Get(u64),
    Charge(u64),
}

struct DropCount(Arc<AtomicU32>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn hedge() -> Hedge {
    Hedge::builder("rpc")
        .fixed_delay(Duration::from_millis(50))
        .budget_config(BudgetConfig {
            min_retries_per_second: 100.0,
            ..Default::default()
        })
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn only_requests_the_predicate_accepts_are_hedged() {
    let hedge = hedge();
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let svc = ServiceBuilder::new()
        .layer(HedgeLayer::new(hedge.clone(), |r: &Rpc| {
            matches!(r, Rpc::Get(_))
        }))
        .service_fn(move |r: Rpc| {
            counted.fetch_add(1, Ordering::Relaxed);
            async move {
                sleep(Duration::from_secs(1)).await; // slow: past the delay
                Ok::<_, ()>(r)
            }
        });
    assert_eq!(
        svc.clone().oneshot(Rpc::Charge(10)).await,
        Ok(Rpc::Charge(10))
    );
    assert_eq!(
        calls.load(Ordering::Relaxed),
        1,
        "a charge is never sent twice"
    );
    assert_eq!(svc.clone().oneshot(Rpc::Get(1)).await, Ok(Rpc::Get(1)));
    assert_eq!(calls.load(Ordering::Relaxed), 3, "a read is hedged");
    let snap = hedge.snapshot();
    assert_eq!(
        (
            snap.calls_total,
            snap.idempotent_calls_total,
            snap.hedges_sent_total
        ),
        (2, 1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn the_losing_response_future_is_dropped_and_its_permit_returned() {
    let hedge = hedge();
    let bulkhead = Bulkhead::builder("backend")
        .max_concurrent(2)
        .build()
        .unwrap();
    let dropped = Arc::new(AtomicU32::new(0));
    let n = Arc::new(AtomicU32::new(0));
    let (b, d) = (bulkhead.clone(), dropped.clone());
    let svc = ServiceBuilder::new()
        .layer(HedgeLayer::new(hedge.clone(), AllIdempotent))
        .service_fn(move |x: u64| {
            let first = n.fetch_add(1, Ordering::Relaxed) == 0;
            let (bulkhead, guard) = (b.clone(), DropCount(d.clone()));
            async move {
                let _guard = guard;
                let _permit = bulkhead.acquire().await.unwrap();
                let latency = if first {
                    Duration::from_secs(30)
                } else {
                    Duration::from_millis(5)
                };
                sleep(latency).await;
                Ok::<_, ()>(x)
            }
        });
    let start = Instant::now();
    assert_eq!(svc.oneshot(7).await, Ok(7));
    assert_eq!(start.elapsed(), Duration::from_millis(55));
    assert_eq!(
        dropped.load(Ordering::Relaxed),
        2,
        "the winner finished, the loser was dropped"
    );
    assert_eq!(bulkhead.snapshot().active, 0);
    let snap = hedge.snapshot();
    assert_eq!((snap.hedges_won_total, snap.cancelled_losers_total), (1, 1));
}

#[cfg(feature = "http")]
#[tokio::test(start_paused = true)]
async fn http_requests_are_hedged_by_method() {
    use palisade_toolbox::hedge::IdempotentMethods;

    let hedge = hedge();
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let svc = ServiceBuilder::new()
        .layer(HedgeLayer::new(hedge.clone(), IdempotentMethods))
        .service_fn(move |_: http::Request<()>| {
            counted.fetch_add(1, Ordering::Relaxed);
            async {
                sleep(Duration::from_secs(1)).await;
                Ok::<_, ()>(http::StatusCode::OK)
            }
        });
    let post = http::Request::post("/orders").body(()).unwrap();
    svc.clone().oneshot(post).await.unwrap();
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    let get = http::Request::get("/orders/1").body(()).unwrap();
    svc.clone().oneshot(get).await.unwrap();
    assert_eq!(calls.load(Ordering::Relaxed), 3);
}
