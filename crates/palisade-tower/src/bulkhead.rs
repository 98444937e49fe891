//! The bulkhead as a tower layer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use palisade_breaker::{Classifier, ErrorsAreFailures, Outcome};
use palisade_bulkhead::{Acquire, Bulkhead, BulkheadError, Permit};
use pin_project::pin_project;
use tower::{BoxError, Layer, Service};

/// Runs each call in a slot of a [`Bulkhead`]: the slot is taken in `call`, waiting up to the
/// bulkhead's `max_wait` (in FIFO order) when all are busy, and held until the response future
/// completes or is dropped.
///
/// A call that gets no slot (no wait allowed, wait queue full, or `max_wait` elapsed) fails
/// with [`BulkheadError`] (boxed into a [`BoxError`], downcastable) without reaching the inner
/// service. A caller that has to wait reaches the inner service only once it has its slot, so
/// the inner service must be `Clone` (as for tower's `Retry`): the ready instance goes into the
/// waiting future and a clone takes its place. A free slot costs no clone and no allocation.
///
/// With the bulkhead's adaptive limit on, each call's latency and outcome feed the limit, as
/// [`Bulkhead::call`] does; the outcome comes from the classifier (default
/// [`ErrorsAreFailures`]; [`HttpClassifier`](crate::HttpClassifier) also counts 5xx).
///
/// ```
/// use std::time::Duration;
/// use palisade_bulkhead::{Bulkhead, BulkheadError};
/// use palisade_tower::BulkheadLayer;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let database = Bulkhead::builder("database").max_concurrent(1).build()?;
/// let svc = ServiceBuilder::new()
///     .layer(BulkheadLayer::new(database.clone()))
///     .service(tower::service_fn(|q: &'static str| async move { Ok::<_, std::io::Error>(q.len()) }));
///
/// assert_eq!(svc.clone().oneshot("select 1").await?, 8);
/// let held = database.try_acquire()?; // every slot taken
/// let err = svc.clone().oneshot("select 1").await.unwrap_err();
/// assert!(matches!(err.downcast_ref::<BulkheadError>(), Some(BulkheadError::Full { .. })));
/// # drop(held);
/// # Ok::<(), tower::BoxError>(())
/// # }).unwrap();
/// ```
///
/// Like [`CircuitBreakerLayer`](crate::CircuitBreakerLayer), the layer keeps its bulkhead
/// behind a `&'static` reference (the bulkhead's permits borrow it): [`new`](Self::new) leaks
/// one pointer-sized allocation per layer. Build layers once at startup.
#[derive(Clone)]
pub struct BulkheadLayer<C = ErrorsAreFailures> {
    bulkhead: &'static Bulkhead,
    sample: bool,
    classifier: C,
}

impl BulkheadLayer {
    /// A layer over `bulkhead`. Adaptive samples are taken if the bulkhead's adaptive limit is
    /// on now; see [`adaptive_samples`](Self::adaptive_samples).
    pub fn new(bulkhead: Bulkhead) -> Self {
        Self::from_static(crate::leak(bulkhead))
    }

    /// A layer over a bulkhead that already lives for the whole process.
    pub fn from_static(bulkhead: &'static Bulkhead) -> Self {
        BulkheadLayer {
            sample: bulkhead.config().adaptive.enabled,
            bulkhead,
            classifier: ErrorsAreFailures,
        }
    }
}

impl<C> BulkheadLayer<C> {
    /// Whether calls feed the adaptive limit (their latency and outcome). Sampling reads the
    /// clock twice per call, so it is off unless the bulkhead was adaptive when the layer was
    /// built; turn it on here if you switch the adaptive mode on later.
    pub fn adaptive_samples(mut self, on: bool) -> Self {
        self.sample = on;
        self
    }

    /// The classifier of adaptive samples: a [`Outcome::Failure`] counts as a sign of
    /// overload.
    pub fn classifier<C2>(self, classifier: C2) -> BulkheadLayer<C2> {
        BulkheadLayer {
            bulkhead: self.bulkhead,
            sample: self.sample,
            classifier,
        }
    }

    /// The bulkhead.
    pub fn bulkhead(&self) -> &Bulkhead {
        self.bulkhead
    }
}

impl<C> fmt::Debug for BulkheadLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadLayer")
            .field("bulkhead", &self.bulkhead.name())
            .field("adaptive_samples", &self.sample)
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone> Layer<S> for BulkheadLayer<C> {
    type Service = BulkheadService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService {
            inner,
            bulkhead: self.bulkhead,
            sample: self.sample,
            classifier: self.classifier.clone(),
        }
    }
}

/// The service of [`BulkheadLayer`].
#[derive(Clone)]
pub struct BulkheadService<S, C = ErrorsAreFailures> {
    inner: S,
    bulkhead: &'static Bulkhead,
    sample: bool,
    classifier: C,
}

impl<S, C> BulkheadService<S, C> {
    /// The bulkhead.
    pub fn bulkhead(&self) -> &Bulkhead {
        self.bulkhead
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: fmt::Debug, C> fmt::Debug for BulkheadService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadService")
            .field("bulkhead", &self.bulkhead.name())
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Service<Req> for BulkheadService<S, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classifier<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C>;

    /// The inner service's readiness: the slot is taken in `call`.
    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let mut acquire = self.bulkhead.acquire();
        // A free slot is taken on the first poll, with no waker needed; a caller that has to
        // wait joins the queue here and is woken through the response future's waker, which
        // replaces this no-op one on its first poll.
        let first = Pin::new(&mut acquire).poll(&mut Context::from_waker(Waker::noop()));
        let state = match first {
            Poll::Ready(Ok(permit)) => self.running(req, permit),
            Poll::Ready(Err(refused)) => State::Refused {
                refused: Some(refused),
            },
            Poll::Pending => {
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                State::Waiting {
                    acquire,
                    svc: Some(ready),
                    req: Some(req),
                }
            }
        };
        ResponseFuture {
            state,
            bulkhead: self.bulkhead,
            sample: self.sample,
            classifier: self.classifier.clone(),
        }
    }
}

impl<S, C> BulkheadService<S, C> {
    #[inline]
    fn running<Req>(&mut self, req: Req, permit: Permit<'static>) -> State<S, Req>
    where
        S: Service<Req>,
    {
        State::Running {
            fut: self.inner.call(req),
            permit: Some(permit),
            started: self.sample.then(tokio::time::Instant::now),
        }
    }
}

/// The response future of [`BulkheadService`]: waits for a slot if it has to, runs the inner
/// call in it, and releases the slot when the call completes or this future is dropped.
#[pin_project]
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<S, Req, C>
where
    S: Service<Req>,
{
    #[pin]
    state: State<S, Req>,
    bulkhead: &'static Bulkhead,
    sample: bool,
    classifier: C,
}

#[pin_project(project = StateProj)]
enum State<S, Req>
where
    S: Service<Req>,
{
    Waiting {
        acquire: Acquire<'static>,
        svc: Option<S>,
        req: Option<Req>,
    },
    Running {
        #[pin]
        fut: S::Future,
        /// `None` once released.
        permit: Option<Permit<'static>>,
        started: Option<tokio::time::Instant>,
    },
    Refused {
        refused: Option<BulkheadError>,
    },
}

impl<S, Req, C> Future for ResponseFuture<S, Req, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classifier<S::Response, S::Error>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Running {
                    fut,
                    permit,
                    started,
                } => {
                    let result = ready!(fut.poll(cx));
                    if let Some(started) = started.take() {
                        // Observed while the slot is still held, as `Bulkhead::call` does.
                        let ok = this.classifier.classify(&result) != Outcome::Failure;
                        this.bulkhead.observe(started.elapsed(), ok);
                    }
                    *permit = None;
                    return Poll::Ready(result.map_err(Into::into));
                }
                StateProj::Waiting { acquire, svc, req } => {
                    let permit = match ready!(Pin::new(acquire).poll(cx)) {
                        Ok(permit) => permit,
                        Err(refused) => return Poll::Ready(Err(Box::new(refused))),
                    };
                    let (Some(mut svc), Some(req)) = (svc.take(), req.take()) else {
                        return Poll::Ready(Err(crate::polled_after_completion()));
                    };
                    let running = State::Running {
                        fut: svc.call(req),
                        permit: Some(permit),
                        started: this.sample.then(tokio::time::Instant::now),
                    };
                    this.state.set(running);
                }
                StateProj::Refused { refused } => {
                    return Poll::Ready(Err(match refused.take() {
                        Some(r) => Box::new(r),
                        None => crate::polled_after_completion(),
                    }));
                }
            }
        }
    }
}

impl<S, Req, C> fmt::Debug for ResponseFuture<S, Req, C>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { .. } => "waiting",
            State::Running {
                permit: Some(_), ..
            } => "running",
            State::Running { permit: None, .. } => "done",
            State::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture")
            .field("bulkhead", &self.bulkhead.name())
            .field("state", &state)
            .finish()
    }
}
