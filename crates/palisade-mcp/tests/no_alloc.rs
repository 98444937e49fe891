//! The admitted path of `run` allocates nothing beyond what the call itself does: rate limits
//! (one key part, and a combined key), breaker, bulkhead and timeout, all at once.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade_breaker::CircuitBreaker;
use palisade_bulkhead::Bulkhead;
use palisade_mcp::{CallError, Caller, KeyPart, Outcome, RateLimit, ToolPolicy};
use palisade_ratelimit::{Quota, RateLimitConfig};
use palisade_testkit::alloc::allocations_in;

#[global_allocator]
static GLOBAL: palisade_testkit::alloc::CountingAlloc = palisade_testkit::alloc::CountingAlloc;

/// Polls `fut` once with a no-op waker: everything on the admitted path is ready at once.
fn ready<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("not ready on the first poll"),
    }
}

#[test]
fn the_admitted_path_does_not_allocate() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _context = runtime.enter(); // the timeout's timer
    let quota = Quota::per_second(1_000_000_000).with_burst(1_000_000_000);
    let limiter = |name: &str| {
        RateLimitConfig {
            quota,
            ..Default::default()
        }
        .build(name)
        .finish()
        .unwrap()
    };
    let policy = ToolPolicy::builder()
        .rate_limit(RateLimit::new(limiter("per-caller")))
        .rate_limit(
            RateLimit::new(limiter("per-caller-tool")).key_by(KeyPart::Identity | KeyPart::Tool),
        )
        .breaker(CircuitBreaker::builder("search").build().unwrap())
        .bulkhead(
            Bulkhead::builder("search")
                .max_concurrent(10)
                .build()
                .unwrap(),
        )
        .timeout(Duration::from_secs(10))
        .build();
    let caller = Caller::from_ip("203.0.113.9".parse().unwrap()).with_identity("sub:alice");
    let call = || {
        ready(palisade_mcp::run(&policy, "search", &caller, || async {
            Ok::<u32, CallError>(7)
        }))
    };
    // The first call adds each limiter's key (one `String` each) and warms thread-locals up.
    assert_eq!(call(), Outcome::Done(7));
    let n = allocations_in(|| {
        for _ in 0..1000 {
            assert!(call().is_done());
        }
    });
    assert_eq!(n, 0, "allocations in 1000 admitted calls");
    // The count works.
    assert!(allocations_in(|| drop(std::hint::black_box(vec![1u8]))) > 0);
}
