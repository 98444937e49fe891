//! Shared by the benches that time tower services (breaker, bulkhead, layers).

use std::hint::black_box;
use std::time::{Duration, Instant};

use tower::{Service, ServiceExt};

/// Times `iters` calls of `svc` (`ready().await` + `call().await`) on `rt`.
pub fn time_service<S>(rt: &tokio::runtime::Runtime, svc: &mut S, iters: u64) -> Duration
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        for i in 0..iters {
            let r = svc.ready().await.unwrap().call(black_box(i)).await;
            black_box(r).unwrap();
        }
        start.elapsed()
    })
}
