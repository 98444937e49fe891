//! [`TimeoutLayer`]: a [`Timeout`] as a tower layer.

use std::task::{Context, Poll};

use super::future::TimeoutCall;
use super::handle::Timeout;

/// Wraps a service so that each call runs under the timeout's deadline; the service's errors
/// become [`TimeoutError::Inner`](crate::TimeoutError::Inner).
///
/// ```
/// use std::time::Duration;
/// use palisade_toolbox::{Timeout, TimeoutLayer};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let timeout = Timeout::builder("api").deadline(Duration::from_secs(1)).build().unwrap();
/// let svc = TimeoutLayer::new(timeout).layer(service_fn(|x: u32| async move {
///     Ok::<_, std::io::Error>(x * 2)
/// }));
/// assert_eq!(svc.oneshot(21).await.unwrap(), 42);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TimeoutLayer {
    timeout: Held,
}

/// A layer's timeout: owned (one reference count per call) or `'static` (none).
#[derive(Debug, Clone)]
enum Held {
    Owned(Timeout),
    Static(&'static Timeout),
}

impl TimeoutLayer {
    /// A layer applying `timeout`.
    pub fn new(timeout: Timeout) -> Self {
        TimeoutLayer {
            timeout: Held::Owned(timeout),
        }
    }

    /// A layer applying a timeout that lives as long as the process (a `static`, or leaked
    /// once at start): its calls skip the reference count.
    pub fn from_static(timeout: &'static Timeout) -> Self {
        TimeoutLayer {
            timeout: Held::Static(timeout),
        }
    }
}

impl<S> tower::Layer<S> for TimeoutLayer {
    type Service = TimeoutService<S>;

    fn layer(&self, inner: S) -> TimeoutService<S> {
        TimeoutService {
            inner,
            timeout: self.timeout.clone(),
        }
    }
}

/// The service of [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct TimeoutService<S> {
    inner: S,
    timeout: Held,
}

impl<S, R> tower::Service<R> for TimeoutService<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = crate::TimeoutError<S::Error>;
    type Future = TimeoutCall<'static, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(crate::TimeoutError::Inner)
    }

    #[inline(always)]
    fn call(&mut self, request: R) -> Self::Future {
        let fut = self.inner.call(request);
        match &self.timeout {
            Held::Owned(t) => t.call_owned(fut),
            Held::Static(t) => t.call(fut),
        }
    }
}
