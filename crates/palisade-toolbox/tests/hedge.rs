//! Hedging on tokio's paused clock: the first answer wins, the loser is cancelled (its future
//! dropped, its bulkhead permit returned), non-idempotent calls are never hedged, hedges spend
//! the retry budget, the percentile delay follows latencies, and the hedge as a registry
//! component.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use palisade_bulkhead::Bulkhead;
use palisade_core::{ComponentKind, ControlError, Registry, TokioClock};
use palisade_toolbox::budget::{BudgetConfig, RetryBudget};
use palisade_toolbox::hedge::{Hedge, HedgeDelay, PercentileDelay};
use palisade_toolbox::retry::Retry;
use parking_lot::Mutex;
use tokio::time::{Instant, sleep};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What happened to each attempt: `"0 finished"`, `"1 dropped"`.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn entries(&self) -> Vec<String> {
        let mut v = self.0.lock().clone();
        v.sort();
        v
    }
}

/// Lives as long as one attempt's future; says on drop whether the attempt finished.
struct Attempt {
    index: usize,
    log: Log,
    finished: bool,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let how = if self.finished { "finished" } else { "dropped" };
        self.log.0.lock().push(format!("{} {how}", self.index));
    }
}

fn roomy() -> BudgetConfig {
    BudgetConfig {
        min_retries_per_second: 1000.0,
        ..Default::default()
    }
}

fn fixed(delay: Duration) -> Hedge {
    Hedge::builder("h")
        .fixed_delay(delay)
        .budget_config(roomy())
        .build()
        .unwrap()
}

/// A closure making attempts that take `latencies[i]` and answer `results[i]`, each tracked.
fn attempts(
    log: &Log,
    latencies: Vec<Duration>,
    results: Vec<Result<usize, usize>>,
) -> impl FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<usize, usize>> + Send>>
{
    let log = log.clone();
    let made = AtomicUsize::new(0);
    move || {
        let index = made.fetch_add(1, Ordering::Relaxed);
        let guard = Attempt {
            index,
            log: log.clone(),
            finished: false,
        };
        let latency = latencies[index];
        let result = results[index];
        Box::pin(async move {
            let mut guard = guard; // the whole guard lives in the future
            sleep(latency).await;
            guard.finished = true;
            result
        })
    }
}

#[tokio::test(start_paused = true)]
async fn the_hedge_answers_first_and_the_primary_is_cancelled_with_its_permit_returned() {
    let hedge = fixed(ms(100));
    let bulkhead = Bulkhead::builder("upstream")
        .max_concurrent(2)
        .build()
        .unwrap();
    let log = Log::default();
    let held_while_racing = Arc::new(AtomicU32::new(0));
    let made = AtomicUsize::new(0);
    let start = Instant::now();
    let answer = hedge
        .call_idempotent(|| {
            let index = made.fetch_add(1, Ordering::Relaxed);
            let bulkhead = bulkhead.clone();
            let held = held_while_racing.clone();
            let guard = Attempt {
                index,
                log: log.clone(),
                finished: false,
            };
            async move {
                let mut guard = guard; // the whole guard lives in the future
                let _permit = bulkhead.acquire().await.unwrap();
                if index == 0 {
                    sleep(Duration::from_secs(10)).await; // the primary hangs
                } else {
                    sleep(ms(10)).await;
                    held.store(bulkhead.snapshot().active, Ordering::Relaxed);
                }
                guard.finished = true;
                Ok::<_, ()>(index)
            }
        })
        .await;
    assert_eq!(answer, Ok(1), "the hedge's answer");
    assert_eq!(start.elapsed(), ms(110), "delay + the hedge's latency");
    assert_eq!(
        held_while_racing.load(Ordering::Relaxed),
        2,
        "both attempts held a permit"
    );
    assert_eq!(log.entries(), vec!["0 dropped", "1 finished"]);
    assert_eq!(
        bulkhead.snapshot().active,
        0,
        "the cancelled primary's permit came back"
    );
    let snap = hedge.snapshot();
    assert_eq!(snap.calls_total, 1);
    assert_eq!(snap.idempotent_calls_total, 1);
    assert_eq!(snap.hedges_sent_total, 1);
    assert_eq!(snap.hedges_won_total, 1);
    assert_eq!(snap.cancelled_losers_total, 1);
}

#[tokio::test(start_paused = true)]
async fn a_primary_answering_first_cancels_the_hedge() {
    let hedge = fixed(ms(100));
    let log = Log::default();
    let start = Instant::now();
    let answer = hedge
        .call_idempotent(attempts(&log, vec![ms(150), ms(1000)], vec![Ok(0), Ok(1)]))
        .await;
    assert_eq!(answer, Ok(0));
    assert_eq!(start.elapsed(), ms(150));
    assert_eq!(log.entries(), vec!["0 finished", "1 dropped"]);
    let snap = hedge.snapshot();
    assert_eq!(
        (
            snap.hedges_sent_total,
            snap.hedges_won_total,
            snap.cancelled_losers_total
        ),
        (1, 0, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_answering_before_the_delay_is_not_hedged() {
    let hedge = fixed(ms(100));
    let log = Log::default();
    let answer = hedge
        .call_idempotent(attempts(&log, vec![ms(99)], vec![Ok(0)]))
        .await;
    assert_eq!(answer, Ok(0));
    assert_eq!(log.entries(), vec!["0 finished"]);
    assert_eq!(hedge.snapshot().hedges_sent_total, 0);
    assert_eq!(hedge.budget().snapshot().withdrawals_total, 0);
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_calls_are_never_hedged() {
    let hedge = fixed(ms(1));
    let made = AtomicU32::new(0);
    let upstream = || {
        made.fetch_add(1, Ordering::Relaxed);
        async {
            sleep(Duration::from_secs(10)).await;
            Ok::<_, ()>("charged")
        }
    };
    // `call` takes one future: there is nothing to send a second time.
    assert_eq!(hedge.call(upstream()).await, Ok("charged"));
    assert_eq!(made.load(Ordering::Relaxed), 1);
    let snap = hedge.snapshot();
    assert_eq!(
        (
            snap.calls_total,
            snap.idempotent_calls_total,
            snap.hedges_sent_total
        ),
        (1, 0, 0)
    );
    assert_eq!(
        snap.budget.deposits_total, 0,
        "a call that cannot be hedged earns no hedge"
    );
    // The same upstream, declared idempotent, is hedged.
    assert_eq!(hedge.call_idempotent(upstream).await, Ok("charged"));
    assert_eq!(made.load(Ordering::Relaxed), 3);
    assert_eq!(hedge.snapshot().hedges_sent_total, 1);
}

#[tokio::test(start_paused = true)]
async fn an_error_before_the_delay_is_returned_at_once() {
    let hedge = fixed(ms(100));
    let log = Log::default();
    let start = Instant::now();
    let answer = hedge
        .call_idempotent(attempts(&log, vec![ms(10)], vec![Err(0)]))
        .await;
    assert_eq!(answer, Err(0));
    assert_eq!(start.elapsed(), ms(10));
    assert_eq!(hedge.snapshot().hedges_sent_total, 0);
}

#[tokio::test(start_paused = true)]
async fn an_error_while_the_other_attempt_runs_waits_for_it() {
    let hedge = fixed(ms(100));
    let log = Log::default();
    let start = Instant::now();
    // The primary fails at 150 ms, after the hedge was sent; the hedge answers at 300 ms.
    let answer = hedge
        .call_idempotent(attempts(&log, vec![ms(150), ms(200)], vec![Err(0), Ok(1)]))
        .await;
    assert_eq!(answer, Ok(1));
    assert_eq!(start.elapsed(), ms(300));
    // Both fail: the last error is returned.
    let log = Log::default();
    let answer = hedge
        .call_idempotent(attempts(&log, vec![ms(150), ms(200)], vec![Err(0), Err(1)]))
        .await;
    assert_eq!(answer, Err(1));
    assert_eq!(log.entries(), vec!["0 finished", "1 finished"]);
}

#[tokio::test(start_paused = true)]
async fn hedges_spend_the_retry_budget_shared_with_a_retry() {
    // No floor, no reserve: only calls earn hedges (and retries).
    let budget = RetryBudget::builder()
        .ratio(0.5)
        .min_retries_per_second(0.0)
        .clock(TokioClock::shared())
        .build()
        .unwrap();
    let hedge = Hedge::builder("search")
        .fixed_delay(ms(10))
        .budget(budget.clone())
        .build()
        .unwrap();
    let retry = Retry::builder("search")
        .budget(budget.clone())
        .build()
        .unwrap();
    assert!(hedge.budget().ptr_eq(retry.budget()));

    let log = Log::default();
    // One call earns half a hedge: not enough.
    let answer = hedge
        .call_idempotent(attempts(&log, vec![ms(100)], vec![Ok(0)]))
        .await;
    assert_eq!(answer, Ok(0));
    assert_eq!(log.entries(), vec!["0 finished"]);
    let snap = hedge.snapshot();
    assert_eq!((snap.hedges_sent_total, snap.budget_denied_total), (0, 1));
    // A second call earns the other half: hedged.
    let log = Log::default();
    hedge
        .call_idempotent(attempts(&log, vec![ms(100), ms(10)], vec![Ok(0), Ok(1)]))
        .await
        .unwrap();
    assert_eq!(hedge.snapshot().hedges_sent_total, 1);
    // A retry's call earns half a token, not enough for a retry...
    let r: Result<(), &str> = retry.call(|| async { Err("down") }).await;
    assert_eq!(r, Err("down"));
    assert_eq!(retry.snapshot().budget_denied_total, 1);
    // ...and the retry's deposit plus one more call make a token the hedge can spend.
    let log = Log::default();
    hedge
        .call_idempotent(attempts(&log, vec![ms(100), ms(10)], vec![Ok(0), Ok(1)]))
        .await
        .unwrap();
    assert_eq!(hedge.snapshot().hedges_sent_total, 2);
    assert_eq!(budget.snapshot().withdrawals_total, 2);
}

#[tokio::test(start_paused = true)]
async fn a_zero_delay_sends_both_attempts_at_once() {
    let hedge = fixed(Duration::ZERO);
    let log = Log::default();
    let start = Instant::now();
    let answer = hedge
        .call_idempotent(attempts(&log, vec![ms(50), ms(20)], vec![Ok(0), Ok(1)]))
        .await;
    assert_eq!((answer, start.elapsed()), (Ok(1), ms(20)));
}

#[tokio::test(start_paused = true)]
async fn disabled_hedging_runs_idempotent_calls_once() {
    let hedge = fixed(ms(10));
    hedge.set_enabled(false).unwrap();
    let log = Log::default();
    let answer = hedge
        .call_idempotent(attempts(&log, vec![ms(500)], vec![Ok(0)]))
        .await;
    assert_eq!(answer, Ok(0));
    assert_eq!(log.entries(), vec!["0 finished"]);
    assert_eq!(hedge.snapshot().budget.deposits_total, 0);
}

#[tokio::test(start_paused = true)]
async fn the_percentile_delay_follows_recent_latencies_within_floor_and_ceiling() {
    let hedge = Hedge::builder("p95")
        .delay(HedgeDelay::Percentile(PercentileDelay {
            percentile: 95.0,
            floor: ms(5),
            ceiling: ms(800),
            min_samples: 20,
            window: Duration::from_secs(30),
        }))
        .clock(TokioClock::shared())
        .build()
        .unwrap();
    assert_eq!(
        hedge.current_delay(),
        ms(800),
        "no latency known: the ceiling"
    );
    // Latencies of 1..=100 ms, through both entry points.
    for n in 1..=100u64 {
        let call = async move {
            sleep(ms(n)).await;
            Ok::<_, ()>(())
        };
        if n % 2 == 0 {
            hedge.call(call).await.unwrap();
        } else {
            hedge
                .call_idempotent(|| async move {
                    sleep(ms(n)).await;
                    Ok::<_, ()>(())
                })
                .await
                .unwrap();
        }
    }
    let delay = hedge.current_delay();
    assert!(
        delay >= ms(95) && delay <= ms(95) * 9 / 8,
        "p95 of 1..=100 ms: {delay:?}"
    );
    let snap = hedge.snapshot();
    assert_eq!(snap.latency_samples, 100);
    // Latencies rising past the running p95 got hedged; every backup started later than its
    // primary and took as long, so each lost and was cancelled, and the primary's own latency
    // was recorded.
    assert!(snap.hedges_sent_total > 0);
    assert_eq!(snap.hedges_won_total, 0);
    assert_eq!(snap.cancelled_losers_total, snap.hedges_sent_total);
    assert_eq!(snap.current_delay_ms, delay.as_secs_f64() * 1000.0);

    // Old latencies leave the window; fast ones bring the delay down to the floor.
    sleep(Duration::from_secs(31)).await;
    for _ in 0..40 {
        hedge.call(async { Ok::<_, ()>(()) }).await.unwrap();
    }
    assert_eq!(hedge.current_delay(), ms(5), "the floor");
    assert_eq!(hedge.snapshot().latency_samples, 40);
}

#[tokio::test(start_paused = true)]
async fn the_hedge_is_a_registry_component() {
    let registry = Registry::new();
    let hedge = Hedge::builder("replicas")
        .fixed_delay(ms(20))
        .registry(&registry)
        .build()
        .unwrap();
    let log = Log::default();
    hedge
        .call_idempotent(attempts(&log, vec![ms(100), ms(10)], vec![Ok(0), Ok(1)]))
        .await
        .unwrap();
    let snap = registry.snapshot(ComponentKind::Hedge, "replicas").unwrap();
    for (field, value) in [
        ("calls_total", 1),
        ("hedges_sent_total", 1),
        ("hedges_won_total", 1),
        ("cancelled_losers_total", 1),
        ("budget_denied_total", 0),
    ] {
        assert_eq!(snap[field], value, "{field}: {snap}");
    }
    assert_eq!(snap["current_delay_ms"], 20.0);
    assert_eq!(snap["budget"]["withdrawals_total"], 1);

    let out = registry
        .control(
            ComponentKind::Hedge,
            "replicas",
            serde_json::json!({"action": "set_delay", "delay": {"percentile": {"percentile": 99, "floor": "2ms"}}}),
        )
        .await
        .unwrap();
    assert_eq!(out["config"]["delay"]["percentile"]["floor"], "2ms");
    assert_eq!(
        out["current_delay_ms"], 1000.0,
        "no samples yet: the default ceiling"
    );
    let out = registry
        .control(
            ComponentKind::Hedge,
            "replicas",
            serde_json::json!({"action": "set_enabled", "enabled": false}),
        )
        .await
        .unwrap();
    assert_eq!(out["enabled"], false);
    let out = registry
        .control(
            ComponentKind::Hedge,
            "replicas",
            serde_json::json!({"action": "set_budget", "ratio": 0.05}),
        )
        .await
        .unwrap();
    assert_eq!(out["config"]["budget"]["ratio"], 0.05);

    for (command, field) in [
        (
            serde_json::json!({"action": "set_delay", "delay": {"percentile": {"percentile": 120}}}),
            "delay.percentile.percentile",
        ),
        (
            serde_json::json!({"action": "set_delay", "delay": {"percentile": {"floor": "2s", "ceiling": "1s"}}}),
            "delay.percentile.ceiling",
        ),
        (
            serde_json::json!({"action": "set_budget", "ratio": -1}),
            "budget.ratio",
        ),
        (
            serde_json::json!({"action": "update_config", "config": {"budget": {"min_retries_per_second": -5}}}),
            "budget.min_retries_per_second",
        ),
    ] {
        match registry
            .control(ComponentKind::Hedge, "replicas", command.clone())
            .await
        {
            Err(ControlError::InvalidConfig(e)) => assert_eq!(e.field, field, "{command}"),
            other => panic!("{command}: {other:?}"),
        }
    }
    assert_eq!(
        hedge.config().budget.ratio,
        0.05,
        "refused commands changed nothing"
    );
}
