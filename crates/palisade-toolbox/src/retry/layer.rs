//! The retry as a tower layer (crate feature `tower`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project::pin_project;
use tower::{Layer, Service};

use super::attempts::ServiceAttempts;
use super::classify::{Classify, RetryErrors};
use super::engine::Engine;
use super::handle::{Handle, LayerHandle};
use super::retry::{Retry, Shared};

/// Retries the calls of the service it wraps with a [`Retry`]: backoff, `Retry-After` hints
/// and the retry budget, exactly as [`Retry::call`] does. Requests must be `Clone` (each
/// attempt sends a clone) and so must the service (retries go through a clone, made ready
/// first as tower requires).
///
/// The response and error are the inner service's own: the last attempt's result is returned
/// as it is. The first attempt is called in `call` with no allocation; a retry's wait boxes a
/// timer. For a per-attempt deadline, put a timeout layer *inside* this one.
///
/// Each response future holds the component: [`new`](Self::new) clones its `Arc` per call (two
/// atomic operations); [`from_static`](Self::from_static) borrows a component that lives for
/// the whole process, for nothing.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use palisade_toolbox::retry::{Retry, RetryLayer};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let retry = Retry::builder("inventory").max_attempts(3).build()?;
/// let failures = Arc::new(AtomicU32::new(2));
/// let svc = ServiceBuilder::new()
///     .layer(RetryLayer::new(retry.clone()))
///     .service_fn(move |sku: u32| {
///         let failures = failures.clone();
///         async move {
///             if failures.fetch_sub(1, Ordering::Relaxed) > 0 { Err("busy") } else { Ok(sku * 2) }
///         }
///     });
/// assert_eq!(svc.oneshot(21).await, Ok(42));
/// assert_eq!(retry.snapshot().retries_total, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct RetryLayer<C = RetryErrors> {
    retry: LayerHandle<Retry>,
    classify: C,
}

impl RetryLayer {
    /// A layer retrying every `Err` with `retry`.
    pub fn new(retry: Retry) -> Self {
        RetryLayer {
            retry: LayerHandle::Owned(retry),
            classify: RetryErrors,
        }
    }

    /// A layer retrying every `Err` with a component that lives for the whole process
    /// (a `static`, or one leaked once at startup): its response futures borrow it instead of
    /// counting a reference per call.
    ///
    /// ```
    /// use std::sync::LazyLock;
    /// use palisade_toolbox::retry::{Retry, RetryLayer};
    ///
    /// static RETRY: LazyLock<Retry> = LazyLock::new(|| Retry::builder("github").build().unwrap());
    /// let layer = RetryLayer::from_static(&RETRY);
    /// # drop(layer);
    /// ```
    pub fn from_static(retry: &'static Retry) -> Self {
        RetryLayer {
            retry: LayerHandle::Static(retry),
            classify: RetryErrors,
        }
    }
}

impl<C> RetryLayer<C> {
    /// The same layer with `classify` deciding what each result means (for instance
    /// `HttpResponses` with feature `http`, or
    /// [`HintedErrors`](super::HintedErrors) to honour Palisade's refusals in a `BoxError`).
    ///
    /// ```
    /// use palisade_toolbox::retry::{HintedErrors, Retry, RetryLayer};
    ///
    /// let layer = RetryLayer::new(Retry::builder("api").build().unwrap()).classify(HintedErrors);
    /// # drop(layer);
    /// ```
    pub fn classify<C2>(self, classify: C2) -> RetryLayer<C2> {
        RetryLayer {
            retry: self.retry,
            classify,
        }
    }
}

impl<S, C: Clone> Layer<S> for RetryLayer<C> {
    type Service = RetryService<S, C>;

    fn layer(&self, inner: S) -> RetryService<S, C> {
        RetryService {
            inner,
            retry: self.retry.clone(),
            classify: self.classify.clone(),
        }
    }
}

/// The service of [`RetryLayer`].
#[derive(Debug, Clone)]
pub struct RetryService<S, C = RetryErrors> {
    inner: S,
    retry: LayerHandle<Retry>,
    classify: C,
}

impl<S, C> RetryService<S, C> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The retry component.
    pub fn retry(&self) -> &Retry {
        &self.retry
    }
}

impl<S, C, Req> Service<Req> for RetryService<S, C>
where
    S: Service<Req> + Clone,
    Req: Clone,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RetryFuture<S, Req, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    // Inlined into the caller, the future is built where it will live: returned from a call
    // that is not inlined, it was written field by field and read back in 16-byte moves,
    // stalling store forwarding (most of this layer's cost).
    #[inline(always)]
    fn call(&mut self, request: Req) -> RetryFuture<S, Req, C> {
        let shared = match &self.retry {
            LayerHandle::Owned(r) => Handle::Shared(Arc::clone(&r.shared)),
            LayerHandle::Static(r) => Handle::Static(&*r.shared),
        };
        shared.begin();
        let first = super::compose::attempt(self.inner.call(request.clone()));
        let attempts = ServiceAttempts {
            service: self.inner.clone(),
            request,
        };
        RetryFuture {
            shared,
            engine: Engine::started(attempts, self.classify.clone(), first),
        }
    }
}

/// The response future of [`RetryService`].
#[pin_project]
#[must_use = "futures do nothing unless polled"]
pub struct RetryFuture<S: Service<Req>, Req, C> {
    shared: Handle<Shared>,
    #[pin]
    engine: Engine<ServiceAttempts<S, Req>, C, S::Future>,
}

impl<S, Req, C> Future for RetryFuture<S, Req, C>
where
    S: Service<Req>,
    Req: Clone,
    C: Classify<S::Response, S::Error>,
{
    type Output = Result<S::Response, S::Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.engine.poll_with(this.shared, cx)
    }
}

impl<S: Service<Req>, Req, C> std::fmt::Debug for RetryFuture<S, Req, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryFuture")
            .field("retry", &&*self.shared.name)
            .field("attempts", &self.engine.attempts_made())
            .field("waiting", &self.engine.waiting())
            .finish()
    }
}
