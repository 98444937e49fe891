//! The permitted path through the layers allocates nothing: breaker, bulkhead and rate limiter
//! (local keyed limiter keyed by `ClientIp`, and the one-bucket limiter), alone and stacked.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use http::{Request, Response};
use palisade_breaker::CircuitBreaker;
use palisade_bulkhead::Bulkhead;
use palisade_ratelimit::{KeyedRateLimiter, Quota, RateLimiter};
use palisade_tower::ratelimit::{ClientIp, GlobalKey, PeerAddr, TrustedProxies};
use palisade_tower::{BulkheadLayer, CircuitBreakerLayer, RateLimitLayer};
use tower::{Service, ServiceBuilder};

#[global_allocator]
static GLOBAL: palisade_testkit::alloc::CountingAlloc = palisade_testkit::alloc::CountingAlloc;

use palisade_testkit::alloc::allocations_in;

/// `poll_ready` then `call`, each polled once with a no-op waker (everything here is ready).
fn ready_call<S, R>(svc: &mut S, req: R) -> S::Response
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    match pin!(svc.call(req)).poll(&mut cx) {
        Poll::Ready(r) => r.unwrap(),
        Poll::Pending => panic!("not ready on the first poll"),
    }
}

#[test]
fn the_permitted_path_does_not_allocate() {
    let quota = Quota::per_second(1_000_000_000).with_burst(1_000_000_000);
    let keyed = KeyedRateLimiter::<String>::builder("per-client")
        .quota(quota)
        .build()
        .unwrap();
    let client_ip = ClientIp::new(TrustedProxies::parse("10.0.0.0/8").unwrap());
    let mut stack = ServiceBuilder::new()
        .layer(RateLimitLayer::new(keyed, client_ip))
        .layer(BulkheadLayer::new(
            Bulkhead::builder("upstream")
                .max_concurrent(100)
                .build()
                .unwrap(),
        ))
        .layer(CircuitBreakerLayer::new(
            CircuitBreaker::builder("upstream").build().unwrap(),
        ))
        .service(tower::service_fn(|_req: Request<()>| {
            std::future::ready(Ok::<_, Infallible>(Response::new(())))
        }));
    let request = |xff: &str| {
        let mut request = Request::builder()
            .header("x-forwarded-for", xff)
            .body(())
            .unwrap();
        request
            .extensions_mut()
            .insert(PeerAddr("10.0.0.2:443".parse::<SocketAddr>().unwrap()));
        request
    };
    let v4 = request("203.0.113.9, 10.0.0.3");
    // An IPv6 client, keyed by its /64.
    let v6 = request("2001:db8:1:2:3:4:5:6, 10.0.0.3");
    // Requests are built outside the counted stretch; the first call of each client adds its
    // key (one `String`) and warms thread-locals up.
    let mut requests: Vec<_> = (0..1000)
        .map(|i| if i % 2 == 0 { v4.clone() } else { v6.clone() })
        .collect();
    ready_call(&mut stack, v4);
    ready_call(&mut stack, v6);
    let n = allocations_in(|| {
        for req in requests.drain(..) {
            let reply = ready_call(&mut stack, req);
            assert_eq!(reply.status(), 200);
        }
    });
    assert_eq!(n, 0, "allocations on the permitted path");

    let mut one_bucket = ServiceBuilder::new()
        .layer(RateLimitLayer::new(
            RateLimiter::builder("global").quota(quota).build().unwrap(),
            GlobalKey,
        ))
        .layer(
            CircuitBreakerLayer::new(CircuitBreaker::builder("u").build().unwrap())
                .classifier(palisade_breaker::ErrorsAreFailures),
        )
        .service(tower::service_fn(|n: u64| {
            std::future::ready(Ok::<_, Infallible>(n))
        }));
    ready_call(&mut one_bucket, 0);
    let n = allocations_in(|| {
        for i in 0..1000 {
            assert_eq!(ready_call(&mut one_bucket, i), i);
        }
    });
    assert_eq!(n, 0);
}
