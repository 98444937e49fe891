//! Services the tests put behind the layers.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses some of these

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use tower::Service;
use waker_slot::WakerSlot;

/// A tiny waker slot (std only), so the gate needs no extra test dependency.
mod waker_slot {
    use std::sync::Mutex;
    use std::task::Waker;

    #[derive(Default)]
    pub struct WakerSlot(Mutex<Option<Waker>>);

    impl WakerSlot {
        pub fn register(&self, waker: &Waker) {
            *self.0.lock().unwrap() = Some(waker.clone());
        }

        pub fn wake(&self) {
            if let Some(w) = self.0.lock().unwrap().take() {
                w.wake();
            }
        }
    }
}

pub type Req = Request<String>;

/// A request with an empty body.
pub fn req() -> Req {
    Request::new(String::new())
}

/// An HTTP upstream answering with the status `status(n)` for its `n`-th call (from 0), and
/// counting calls.
#[derive(Clone)]
pub struct Upstream<F> {
    pub calls: Arc<AtomicUsize>,
    status: Arc<F>,
}

pub fn upstream<F: Fn(usize) -> u16>(status: F) -> Upstream<F> {
    Upstream {
        calls: Arc::new(AtomicUsize::new(0)),
        status: Arc::new(status),
    }
}

impl<F> Upstream<F> {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl<F: Fn(usize) -> u16> Service<Req> for Upstream<F> {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Req) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let status = StatusCode::from_u16((self.status)(n)).unwrap();
        let mut response = Response::new(format!("reply {n}"));
        *response.status_mut() = status;
        std::future::ready(Ok(response))
    }
}

/// An upstream whose calls never complete (until dropped), counting calls.
#[derive(Clone, Default)]
pub struct Hanging {
    pub calls: Arc<AtomicUsize>,
}

impl Service<Req> for Hanging {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = std::future::Pending<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Req) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::pending()
    }
}

/// An upstream whose calls complete when told to: each call waits on a `Notify`-like latch.
#[derive(Clone, Default)]
pub struct Latched {
    pub calls: Arc<AtomicUsize>,
    pub release: Arc<tokio::sync::Notify>,
}

impl Service<Req> for Latched {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<String>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Req) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let release = self.release.clone();
        Box::pin(async move {
            release.notified().await;
            Ok(Response::new("released".to_string()))
        })
    }
}

/// An upstream that is ready only while its gate is open (and fails readiness when told to),
/// waking the waiting caller when the gate opens.
#[derive(Clone, Default)]
pub struct Gate {
    open: Arc<AtomicBool>,
    broken: Arc<AtomicBool>,
    waker: Arc<WakerSlot>,
    pub calls: Arc<AtomicUsize>,
}

#[derive(Debug)]
pub struct GateBroken;

impl std::fmt::Display for GateBroken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the gate is broken")
    }
}

impl std::error::Error for GateBroken {}

impl Gate {
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    pub fn break_it(&self) {
        self.broken.store(true, Ordering::SeqCst);
        self.waker.wake();
    }
}

impl Service<Req> for Gate {
    type Response = Response<String>;
    type Error = GateBroken;
    type Future = std::future::Ready<Result<Response<String>, GateBroken>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GateBroken>> {
        if self.broken.load(Ordering::SeqCst) {
            return Poll::Ready(Err(GateBroken));
        }
        if self.open.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        self.waker.register(cx.waker());
        // Opened between the check and the registration: do not miss it.
        if self.open.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }

    fn call(&mut self, _req: Req) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(Response::new("through the gate".to_string())))
    }
}
