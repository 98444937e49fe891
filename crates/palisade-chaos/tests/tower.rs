//! The tower layer (feature `tower`): passes through while off, delays the response, and
//! answers injected errors and refusals without calling the service.
#![cfg(feature = "tower")]
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use palisade_chaos::{Fault, FaultInjector, FaultLayer, Injected};
use palisade_core::TokioClock;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};

fn counting_service(
    calls: Arc<AtomicU32>,
) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone {
    service_fn(move |req: u32| {
        calls.fetch_add(1, Ordering::Relaxed);
        async move { Ok::<_, BoxError>(req * 2) }
    })
}

#[tokio::test(start_paused = true)]
async fn the_layer_injects_each_fault() {
    let injector = FaultInjector::builder("doubler")
        .allow(true)
        .clock(TokioClock::shared())
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let svc = ServiceBuilder::new()
        .layer(FaultLayer::new(injector.clone()))
        .service(counting_service(calls.clone()));

    assert_eq!(svc.clone().oneshot(21).await.unwrap(), 42, "off: untouched");

    injector
        .enable(
            Fault::latency(Duration::from_millis(250)),
            1.0,
            Duration::from_secs(60),
        )
        .unwrap();
    let start = tokio::time::Instant::now();
    assert_eq!(svc.clone().oneshot(5).await.unwrap(), 10);
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert_eq!(calls.load(Ordering::Relaxed), 2);

    injector
        .enable(Fault::error(), 1.0, Duration::from_secs(60))
        .unwrap();
    let err = svc.clone().oneshot(5).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<Injected>(),
        Some(&Injected::Error {
            name: "doubler".into()
        })
    );
    injector
        .enable(
            Fault::refuse(Duration::from_secs(4)),
            1.0,
            Duration::from_secs(60),
        )
        .unwrap();
    let err = svc.clone().oneshot(5).await.unwrap_err();
    let refused = err.downcast_ref::<Injected>().unwrap();
    assert_eq!(refused.retry_after(), Some(Duration::from_secs(4)));
    assert_eq!(
        calls.load(Ordering::Relaxed),
        2,
        "faulted requests never reached it"
    );

    // The ttl ran out: untouched again.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(svc.oneshot(1).await.unwrap(), 2);
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    let snap = injector.snapshot();
    assert!(!snap.enabled);
    assert_eq!(
        (
            snap.injected_latency_total,
            snap.injected_errors_total,
            snap.injected_refusals_total
        ),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn the_response_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let injector = FaultInjector::builder("doubler").build().unwrap();
    let mut svc = FaultLayer::new(injector).layer_service(counting_service(Arc::default()));
    let fut = svc.call(1);
    assert_send(&fut);
    assert_eq!(fut.await.unwrap(), 2);
}

trait LayerService {
    fn layer_service<S>(self, inner: S) -> palisade_chaos::FaultService<S>;
}

impl LayerService for FaultLayer {
    fn layer_service<S>(self, inner: S) -> palisade_chaos::FaultService<S> {
        tower::Layer::layer(&self, inner)
    }
}
