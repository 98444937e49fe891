//! A retry storm on tokio's paused clock: 100 callers against an upstream that fails every
//! call. The retry budget keeps the upstream's load at `(1 + ratio)` × the offered load plus
//! the floor, however many attempts each call may make; once the upstream recovers, the
//! budget refills and failures are retried again.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::{ComponentKind, EventFilter, EventKind, Registry, TokioClock};
use palisade_toolbox::budget::BudgetConfig;
use palisade_toolbox::retry::Retry;
use tokio::time::Instant;

const CALLERS: usize = 100;
const RATIO: f64 = 0.2;
const FLOOR: f64 = 1.0;
const WINDOW: Duration = Duration::from_secs(10);

struct Upstream {
    healthy: AtomicBool,
    attempts: AtomicU64,
}

impl Upstream {
    async fn call(&self) -> Result<(), &'static str> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
        if self.healthy.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("503")
        }
    }
}

/// `CALLERS` tasks calling through `retry` for `duration`, one call every 500 ms each.
async fn load(retry: &Retry, upstream: &Arc<Upstream>, duration: Duration) {
    let until = Instant::now() + duration;
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let retry = retry.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                while Instant::now() < until {
                    let _ = retry.call(|| upstream.call()).await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

fn notices(registry: &Registry) -> Vec<String> {
    registry
        .events()
        .recent(&EventFilter {
            kind: Some(ComponentKind::Retry),
            ..Default::default()
        })
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Notice { message, .. } if message.contains("budget") => Some(message),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_failing_upstream_sees_at_most_one_plus_ratio_times_the_offered_load_plus_the_floor() {
    let registry = Registry::new();
    let retry = Retry::builder("storm")
        .max_attempts(5) // without a budget: 5× the load
        .backoff(Duration::from_millis(50), Duration::from_secs(1))
        .budget_config(BudgetConfig {
            ratio: RATIO,
            min_retries_per_second: FLOOR,
            window: WINDOW,
        })
        .clock(TokioClock::shared())
        .registry(&registry)
        .build()
        .unwrap();
    let upstream = Arc::new(Upstream {
        healthy: AtomicBool::new(false),
        attempts: AtomicU64::new(0),
    });

    let start = Instant::now();
    load(&retry, &upstream, Duration::from_secs(60)).await;
    let seconds = start.elapsed().as_secs_f64();

    let snap = retry.snapshot();
    let offered = snap.calls_total as f64;
    let seen = upstream.attempts.load(Ordering::Relaxed) as f64;
    // The budget's exact bound: the reserve a new budget starts with (floor × window), the
    // floor over the time elapsed (plus one bucket, a tenth of the window), and ratio × calls.
    let floor_term = FLOOR * (seconds + WINDOW.as_secs_f64() * 1.1);
    let bound = (1.0 + RATIO) * offered + floor_term;
    assert!(offered > 5_000.0, "the load ran: {offered} calls");
    assert!(
        seen <= bound,
        "upstream saw {seen} attempts for {offered} calls over {seconds} s; bound {bound}"
    );
    // The budget was the limit, not the attempts: most retries were refused, and the retries
    // made were about the share allowed (without the budget: 4 retries per call).
    let retries = snap.retries_total as f64;
    assert!(snap.budget_denied_total as f64 > 0.7 * offered, "{snap:?}");
    assert!(
        retries >= RATIO * offered * 0.9,
        "retries {retries} for {offered} calls"
    );
    assert_eq!(seen, offered + retries);
    assert!(snap.budget.exhausted);
    assert_eq!(
        notices(&registry),
        vec!["retry budget exhausted; retries are refused until it refills"]
    );

    // Recovery: healthy traffic refills the budget; a failure is retried again.
    upstream.healthy.store(true, Ordering::Relaxed);
    load(&retry, &upstream, WINDOW).await;
    assert!(
        retry.budget().tokens() >= 1.0,
        "{:?}",
        retry.budget().snapshot()
    );
    upstream.healthy.store(false, Ordering::Relaxed);
    let before = upstream.attempts.load(Ordering::Relaxed);
    let mut first = true;
    let r = retry
        .call(|| {
            // Fails once, then the upstream is back.
            let fail = std::mem::take(&mut first);
            let upstream = upstream.clone();
            async move {
                let r = upstream.call().await;
                upstream.healthy.store(true, Ordering::Relaxed);
                if fail { r } else { Ok(()) }
            }
        })
        .await;
    assert_eq!(r, Ok(()));
    assert_eq!(
        upstream.attempts.load(Ordering::Relaxed) - before,
        2,
        "retried"
    );
    assert!(!retry.budget().snapshot().exhausted);
    assert_eq!(
        notices(&registry),
        vec![
            "retry budget exhausted; retries are refused until it refills",
            "retry budget available again",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn with_no_traffic_the_floor_alone_refills_the_budget() {
    let retry = Retry::builder("quiet")
        .max_attempts(100)
        .backoff(Duration::ZERO, Duration::ZERO)
        .budget_config(BudgetConfig {
            ratio: 0.0,
            min_retries_per_second: 2.0,
            window: WINDOW,
        })
        .clock(TokioClock::shared())
        .build()
        .unwrap();
    let attempts = AtomicU64::new(0);
    let call = || {
        retry.call(|| {
            attempts.fetch_add(1, Ordering::Relaxed);
            async { Err::<(), _>("down") }
        })
    };
    // The reserve: 2 a second over 10 s.
    let _ = call().await;
    assert_eq!(attempts.swap(0, Ordering::Relaxed), 1 + 20);
    let _ = call().await;
    assert_eq!(attempts.swap(0, Ordering::Relaxed), 1, "spent");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = call().await;
    assert_eq!(
        attempts.swap(0, Ordering::Relaxed),
        1 + 6,
        "3 s at 2 a second"
    );
}
