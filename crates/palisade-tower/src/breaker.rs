//! The circuit breaker as a tower layer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use palisade_breaker::{CircuitBreaker, Classifier, Permit, Rejected};
use pin_project::pin_project;
use tower::{BoxError, Layer, Service};

use crate::classify::HttpClassifier;

/// Guards a service with a [`CircuitBreaker`]: each call asks the breaker for a permit in
/// `call`, and the classified outcome is recorded when the response future completes.
///
/// Once the breaker is open, calls are refused with [`Rejected`] (boxed into a
/// [`BoxError`], downcastable) without reaching the inner service. The default classifier,
/// [`HttpClassifier`], counts 5xx and errors (timeouts included) as failures, 4xx as successes,
/// and ignores 429 and Palisade's own refusals; [`classifier`](Self::classifier) replaces it
/// (any `Fn(&Result<Response, Error>) -> Outcome`, or
/// [`ErrorsAreFailures`](palisade_breaker::ErrorsAreFailures) for non-HTTP services).
///
/// A response future dropped before it completes records nothing and gives a half-open trial
/// slot back.
///
/// ```
/// use std::time::Duration;
/// use http::{Request, Response, StatusCode};
/// use palisade_breaker::{CircuitBreaker, Rejected, State};
/// use palisade_tower::CircuitBreakerLayer;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let breaker = CircuitBreaker::builder("github").consecutive_failures(2).build()?;
/// let upstream = tower::service_fn(|_req: Request<()>| async {
///     Ok::<_, std::io::Error>(Response::builder().status(502).body(()).unwrap())
/// });
/// let svc = ServiceBuilder::new()
///     .layer(CircuitBreakerLayer::new(breaker.clone()))
///     .service(upstream);
///
/// for _ in 0..2 {
///     let reply = svc.clone().oneshot(Request::new(())).await?;
///     assert_eq!(reply.status(), StatusCode::BAD_GATEWAY);
/// }
/// assert_eq!(breaker.state(), State::Open);
/// let err = svc.clone().oneshot(Request::new(())).await.unwrap_err();
/// assert!(err.downcast_ref::<Rejected>().is_some());
/// # Ok::<(), tower::BoxError>(())
/// # }).unwrap();
/// ```
///
/// # The breaker lives for the rest of the process
///
/// `palisade_breaker::Permit` borrows its breaker, and a tower response future must own what it
/// holds (`'static`), so the layer keeps the breaker behind a `&'static` reference:
/// [`new`](Self::new) moves the handle into a leaked allocation (one pointer, never freed; the
/// breaker's state lives as long as it anyway when it is registered). Build layers once at
/// startup, not per request, or pass a breaker you already hold as `&'static` to
/// [`from_static`](Self::from_static).
#[derive(Clone)]
pub struct CircuitBreakerLayer<C = HttpClassifier> {
    breaker: &'static CircuitBreaker,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// A layer over `breaker` with the [`HttpClassifier`]. See the type's docs on the breaker's
    /// lifetime.
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self::from_static(crate::leak(breaker))
    }

    /// A layer over a breaker that already lives for the whole process.
    pub fn from_static(breaker: &'static CircuitBreaker) -> Self {
        CircuitBreakerLayer {
            breaker,
            classifier: HttpClassifier,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// The same layer counting outcomes as `classifier` says.
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier,
        }
    }

    /// The breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        self.breaker
    }
}

impl<C> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breaker", &self.breaker.name())
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            breaker: self.breaker,
            classifier: self.classifier.clone(),
        }
    }
}

/// The service of [`CircuitBreakerLayer`].
#[derive(Clone)]
pub struct CircuitBreakerService<S, C = HttpClassifier> {
    inner: S,
    breaker: &'static CircuitBreaker,
    classifier: C,
}

impl<S, C> CircuitBreakerService<S, C> {
    /// The breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        self.breaker
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreakerService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerService")
            .field("breaker", &self.breaker.name())
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Service<Req> for CircuitBreakerService<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classifier<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    /// The inner service's readiness: the breaker admits or refuses in `call`.
    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match self.breaker.try_acquire() {
            Ok(permit) => ResponseFuture {
                state: State::Running {
                    fut: self.inner.call(req),
                    permit: Some(permit),
                    classifier: self.classifier.clone(),
                },
            },
            Err(rejected) => ResponseFuture {
                state: State::Refused {
                    rejected: Some(rejected),
                },
            },
        }
    }
}

/// The response future of [`CircuitBreakerService`]: holds the breaker's permit while the inner
/// future runs and records the classified outcome when it completes.
#[pin_project]
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<F, C> {
    #[pin]
    state: State<F, C>,
}

#[pin_project(project = StateProj)]
enum State<F, C> {
    Running {
        #[pin]
        fut: F,
        /// `None` once the outcome is recorded.
        permit: Option<Permit<'static>>,
        classifier: C,
    },
    Refused {
        rejected: Option<Rejected>,
    },
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classifier<T, E>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Running {
                fut,
                permit,
                classifier,
            } => {
                let result = ready!(fut.poll(cx));
                if let Some(permit) = permit.take() {
                    permit.record(classifier.classify(&result));
                }
                Poll::Ready(result.map_err(Into::into))
            }
            StateProj::Refused { rejected } => Poll::Ready(Err(match rejected.take() {
                Some(r) => Box::new(r),
                None => crate::polled_after_completion(),
            })),
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Running {
                permit: Some(_), ..
            } => "running",
            State::Running { permit: None, .. } => "done",
            State::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
