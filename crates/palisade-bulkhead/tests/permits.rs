//! Proptest: random interleavings of acquire, wait, release, cancel and resize. After every step
//! no new call is admitted while `active >= limit`, `active <= limit` once a shrink has drained,
//! and when everything is released every permit is back.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade_bulkhead::{Bulkhead, BulkheadError, Permit};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    TryAcquire,
    StartWait,
    PollWaiters,
    Release(usize),
    Cancel(usize),
    Resize(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::TryAcquire),
        3 => Just(Op::StartWait),
        3 => Just(Op::PollWaiters),
        4 => any::<usize>().prop_map(Op::Release),
        2 => any::<usize>().prop_map(Op::Cancel),
        2 => (1u32..8).prop_map(Op::Resize),
    ]
}

type Waiter<'a> = Pin<Box<dyn Future<Output = Result<Permit<'a>, BulkheadError>> + 'a>>;

fn run(initial: u32, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let _enter = rt.enter();
    let b = Bulkhead::builder("p")
        .max_concurrent(initial)
        .max_wait(Duration::from_secs(3600))
        .build()
        .unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    let mut held: Vec<Permit<'_>> = Vec::new();
    let mut waiters: Vec<Waiter<'_>> = Vec::new();
    let mut limit = initial;

    for (step, op) in ops.into_iter().enumerate() {
        let before = held.len() as u32;
        match op {
            Op::TryAcquire => match b.try_acquire() {
                Ok(p) => {
                    prop_assert!(
                        before < limit,
                        "step {step}: admitted with {before} active, limit {limit}"
                    );
                    prop_assert!(waiters.is_empty(), "step {step}: jumped the queue");
                    held.push(p);
                }
                Err(_) => prop_assert!(
                    before >= limit || !waiters.is_empty(),
                    "step {step}: refused with room"
                ),
            },
            Op::StartWait => {
                let b = &b;
                let mut fut: Waiter<'_> = Box::pin(b.acquire());
                match fut.as_mut().poll(&mut cx) {
                    Poll::Ready(Ok(p)) => {
                        prop_assert!(
                            before < limit && waiters.is_empty(),
                            "step {step}: admitted without room"
                        );
                        held.push(p);
                    }
                    Poll::Ready(Err(e)) => {
                        prop_assert!(false, "step {step}: unexpected refusal {e}")
                    }
                    Poll::Pending => waiters.push(fut),
                }
            }
            Op::PollWaiters => {}
            Op::Release(i) if !held.is_empty() => {
                drop(held.remove(i % held.len()));
            }
            Op::Cancel(i) if !waiters.is_empty() => {
                drop(waiters.remove(i % waiters.len()));
            }
            Op::Release(_) | Op::Cancel(_) => {}
            Op::Resize(n) => {
                b.set_max_concurrent(n).unwrap();
                limit = n;
            }
        }
        // A waiter granted a slot holds it from then on; poll them all so the model sees it.
        let mut still = Vec::new();
        for mut w in waiters.drain(..) {
            match w.as_mut().poll(&mut cx) {
                Poll::Ready(Ok(p)) => {
                    prop_assert!(
                        (held.len() as u32) < limit,
                        "step {step}: waiter admitted without room"
                    );
                    held.push(p);
                }
                Poll::Ready(Err(e)) => prop_assert!(false, "step {step}: unexpected refusal {e}"),
                Poll::Pending => still.push(w),
            }
        }
        waiters = still;
        if held.len() as u32 > limit {
            prop_assert!(
                b.try_acquire().is_err(),
                "step {step}: admitted while draining a shrink"
            );
        }
        prop_assert_eq!(b.active(), held.len() as u32, "active after step {}", step);
        prop_assert_eq!(
            b.waiting(),
            waiters.len() as u32,
            "waiting after step {}",
            step
        );
    }
    drop(waiters);
    drop(held);
    prop_assert_eq!((b.active(), b.waiting()), (0, 0));
    // Every permit is back: exactly `limit` can be taken, no more.
    let all: Vec<_> = (0..limit).map(|_| b.try_acquire().unwrap()).collect();
    prop_assert!(b.try_acquire().is_err());
    drop(all);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn permits_are_conserved(initial in 1u32..6, ops in proptest::collection::vec(op(), 1..100)) {
        run(initial, ops)?;
    }
}
