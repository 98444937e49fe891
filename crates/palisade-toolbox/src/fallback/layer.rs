//! [`FallbackLayer`]: a [`Fallback`] as a tower layer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project::pin_project;

use super::handle::Fallback;

/// Wraps a service so that its errors of the kinds the fallback answers are replaced by the
/// fallback's answer.
///
/// ```
/// use palisade_toolbox::{FailureKind, Fallback, FallbackLayer};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let fallback = Fallback::<&str, &str>::builder("api")
///     .classify(|_| FailureKind::Unavailable)
///     .value(FailureKind::Unavailable, "cached")
///     .build()
///     .unwrap();
/// let svc = FallbackLayer::new(fallback).layer(service_fn(|_: ()| async { Err::<&str, _>("down") }));
/// assert_eq!(svc.oneshot(()).await.unwrap(), "cached");
/// # }
/// ```
pub struct FallbackLayer<T, E> {
    fallback: Fallback<T, E>,
}

impl<T, E> Clone for FallbackLayer<T, E> {
    fn clone(&self) -> Self {
        FallbackLayer {
            fallback: self.fallback.clone(),
        }
    }
}

impl<T, E> std::fmt::Debug for FallbackLayer<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("FallbackLayer")
            .field(&self.fallback)
            .finish()
    }
}

impl<T, E> FallbackLayer<T, E> {
    /// A layer applying `fallback`.
    pub fn new(fallback: Fallback<T, E>) -> Self {
        FallbackLayer { fallback }
    }
}

impl<S, T, E> tower::Layer<S> for FallbackLayer<T, E> {
    type Service = FallbackService<S, T, E>;

    fn layer(&self, inner: S) -> Self::Service {
        FallbackService {
            inner,
            fallback: self.fallback.clone(),
        }
    }
}

/// The service of [`FallbackLayer`].
pub struct FallbackService<S, T, E> {
    inner: S,
    fallback: Fallback<T, E>,
}

impl<S: Clone, T, E> Clone for FallbackService<S, T, E> {
    fn clone(&self) -> Self {
        FallbackService {
            inner: self.inner.clone(),
            fallback: self.fallback.clone(),
        }
    }
}

impl<S: std::fmt::Debug, T, E> std::fmt::Debug for FallbackService<S, T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackService")
            .field("inner", &self.inner)
            .field("fallback", &self.fallback)
            .finish()
    }
}

impl<S, R, T, E> tower::Service<R> for FallbackService<S, T, E>
where
    S: tower::Service<R, Response = T, Error = E>,
    T: Clone,
{
    type Response = T;
    type Error = E;
    type Future = FallbackFuture<S::Future, T, E>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        FallbackFuture {
            inner: self.inner.call(request),
            fallback: self.fallback.clone(),
        }
    }
}

/// The future of [`FallbackService`].
#[pin_project]
pub struct FallbackFuture<F, T, E> {
    #[pin]
    inner: F,
    fallback: Fallback<T, E>,
}

impl<F, T, E> std::fmt::Debug for FallbackFuture<F, T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackFuture").finish_non_exhaustive()
    }
}

impl<F, T, E> Future for FallbackFuture<F, T, E>
where
    F: Future<Output = Result<T, E>>,
    T: Clone,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        Poll::Ready(this.fallback.apply(out))
    }
}
