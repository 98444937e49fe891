//! Many tasks against a half-open breaker: never more than K trials at once, cancelled
//! trials give their slot back, and a limit lowered while trials succeed never strands it.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use palisade_breaker::{CallError, CircuitBreaker, Outcome, RejectReason, State};
use palisade_core::ManualClock;
use tokio::sync::watch;

const K: u32 = 3;
const TASKS: usize = 64;

fn half_open_breaker(clock: &ManualClock) -> CircuitBreaker {
    let cb = CircuitBreaker::builder("contended")
        .consecutive_failures(1)
        .half_open_max_calls(K)
        .wait_duration(Duration::from_secs(10))
        .clock(clock.shared())
        .build()
        .unwrap();
    cb.try_acquire().unwrap().failure();
    clock.advance(Duration::from_secs(10));
    assert_eq!(cb.state(), State::HalfOpen);
    cb
}

#[derive(Default)]
struct Gauges {
    running: AtomicU32,
    max_running: AtomicU32,
    admitted: AtomicUsize,
    refused: AtomicUsize,
}

/// Spawns `TASKS` calls whose futures hold their trial until `gate` turns true.
fn spawn_trials(
    cb: &CircuitBreaker,
    gauges: &Arc<Gauges>,
    gate: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<bool>> {
    (0..TASKS)
        .map(|_| {
            let (cb, g, mut gate) = (cb.clone(), gauges.clone(), gate.clone());
            tokio::spawn(async move {
                let r = cb
                    .call(async {
                        g.admitted.fetch_add(1, Ordering::SeqCst);
                        let now = g.running.fetch_add(1, Ordering::SeqCst) + 1;
                        g.max_running.fetch_max(now, Ordering::SeqCst);
                        let _ = gate.wait_for(|open| *open).await;
                        g.running.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, ()>(())
                    })
                    .await;
                match r {
                    Ok(()) => true,
                    Err(CallError::Rejected(rej)) => {
                        assert_eq!(rej.reason(), RejectReason::HalfOpenFull);
                        g.refused.fetch_add(1, Ordering::SeqCst);
                        false
                    }
                    Err(CallError::Inner(())) => unreachable!("the trial future never fails"),
                }
            })
        })
        .collect()
}

async fn settle(g: &Gauges) {
    // Every task has either been admitted (and is parked on the gate) or been refused.
    while g.admitted.load(Ordering::SeqCst) + g.refused.load(Ordering::SeqCst) < TASKS {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_most_k_trials_and_cancelled_trials_return_their_slots() {
    let clock = ManualClock::new();
    let cb = half_open_breaker(&clock);
    let (open_gate, gate) = watch::channel(false);

    // Round 1: all trials are cancelled while running.
    let g = Arc::new(Gauges::default());
    let handles = spawn_trials(&cb, &g, &gate);
    settle(&g).await;
    assert_eq!(g.admitted.load(Ordering::SeqCst), K as usize);
    assert_eq!(g.refused.load(Ordering::SeqCst), TASKS - K as usize);
    assert_eq!(cb.snapshot().half_open.unwrap().in_flight, K);
    for h in &handles {
        h.abort();
    }
    for h in handles {
        let _ = h.await;
    }
    let snap = cb.snapshot();
    assert_eq!(snap.state, State::HalfOpen);
    assert_eq!(
        snap.half_open.unwrap().in_flight,
        0,
        "cancelled trials leaked their slots"
    );
    assert!(g.max_running.load(Ordering::SeqCst) <= K);

    // Round 2: the same breaker admits K fresh trials; their successes close it.
    let g = Arc::new(Gauges::default());
    let handles = spawn_trials(&cb, &g, &gate);
    settle(&g).await;
    assert_eq!(g.admitted.load(Ordering::SeqCst), K as usize);
    open_gate.send(true).unwrap();
    let mut succeeded = 0;
    for h in handles {
        succeeded += usize::from(h.await.unwrap());
    }
    assert_eq!(succeeded, K as usize);
    assert!(g.max_running.load(Ordering::SeqCst) <= K);
    assert_eq!(cb.state(), State::Closed);
}

#[test]
fn trial_slots_are_conserved_under_thread_contention() {
    let clock = ManualClock::new();
    let cb = half_open_breaker(&clock);
    let running = AtomicU32::new(0);
    let max_running = AtomicU32::new(0);
    let admitted = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (cb, running, max_running, admitted) = (&cb, &running, &max_running, &admitted);
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t);
                for _ in 0..20_000 {
                    if let Ok(p) = cb.try_acquire() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        max_running.fetch_max(now, Ordering::SeqCst);
                        running.fetch_sub(1, Ordering::SeqCst);
                        // Ignored outcomes and cancellations both give the slot back.
                        if rng.bool() {
                            p.record(Outcome::Ignored)
                        } else {
                            drop(p)
                        }
                    }
                }
            });
        }
    });
    assert!(max_running.load(Ordering::SeqCst) <= K);
    assert!(admitted.load(Ordering::Relaxed) > 0);
    let snap = cb.snapshot();
    assert_eq!(snap.state, State::HalfOpen);
    let ho = snap.half_open.unwrap();
    assert_eq!((ho.in_flight, ho.successes), (0, 0));
}

#[test]
fn lowering_the_limit_while_trials_succeed_never_strands_half_open() {
    // A trial success and a lowered `half_open_max_calls` racing: whichever lands second must
    // close the breaker, or it would refuse every call with nothing in flight.
    for round in 0..300u64 {
        let clock = ManualClock::new();
        let cb = half_open_breaker(&clock);
        let trials: Vec<_> = (0..K).map(|_| cb.try_acquire().unwrap()).collect();
        let mut trials = trials.into_iter();
        let first = trials.next().unwrap();
        std::thread::scope(|s| {
            s.spawn(|| first.success());
            s.spawn(|| {
                let mut cfg = cb.config();
                cfg.half_open_max_calls = 1 + u32::from(round % 2 == 0);
                cb.set_config(cfg).unwrap();
            });
        });
        drop(trials); // the rest are cancelled
        let snap = cb.snapshot();
        if let Some(ho) = snap.half_open {
            assert!(
                ho.in_flight > 0 || ho.successes < ho.max_calls,
                "round {round}: stranded {ho:?}"
            );
            assert!(cb.try_acquire().is_ok(), "round {round}: refused");
        } else {
            assert_eq!(snap.state, State::Closed, "round {round}");
        }
    }
}
