//! Dead-letter capture as a tower layer (feature `dlq`).

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::header::{HeaderMap, RETRY_AFTER};
use http::{Response, StatusCode};
use palisade_breaker::Rejected;
use palisade_bulkhead::BulkheadError;
use palisade_dlq::{DeadLetterQueue, Failure, FailureKind};
use palisade_ratelimit::RateLimited;
use pin_project::pin_project;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::{BoxError, Layer, Service};

use crate::classify::{find_error, is_timeout};

/// Decides whether a call's result goes to the dead-letter queue, and as what [`Failure`].
/// Any `Fn(&Result<Response, Error>) -> Option<Failure>` is one.
pub trait FailureClassifier<Resp, E> {
    /// The failure to record, or `None` for a result that is not dead-lettered.
    fn failure(&self, result: &Result<Resp, E>) -> Option<Failure>;
}

impl<F, Resp, E> FailureClassifier<Resp, E> for F
where
    F: Fn(&Result<Resp, E>) -> Option<Failure>,
{
    fn failure(&self, result: &Result<Resp, E>) -> Option<Failure> {
        self(result)
    }
}

/// The dead-letter classifier for HTTP services.
///
/// | result | failure kind |
/// | --- | --- |
/// | 5xx | `server_error` |
/// | 429 | `rate_limited`, with the upstream's `Retry-After` (seconds) when it sent one |
/// | other 4xx | not captured, or `client_error` with [`with_client_errors`](Self::with_client_errors) |
/// | a timeout (tower's `Timeout`, tokio's, an I/O timeout) | `timeout` |
/// | a circuit breaker open or a bulkhead full (inner layers), a refused or reset connection | `unavailable` |
/// | a rate limiter's refusal (inner layer) | `rate_limited`, with its `retry_after` |
/// | any other error | `other` |
///
/// ```
/// use http::Response;
/// use palisade_dlq::FailureKind;
/// use palisade_tower::dlq::{FailureClassifier, HttpFailures};
///
/// let reply = |s: u16| Ok::<_, tower::BoxError>(
///     Response::builder().status(s).header("retry-after", "30").body(()).unwrap());
/// assert_eq!(HttpFailures::new().failure(&reply(502)).unwrap().kind, FailureKind::ServerError);
/// let limited = HttpFailures::new().failure(&reply(429)).unwrap();
/// assert_eq!(limited.retry_after, Some(std::time::Duration::from_secs(30)));
/// assert!(HttpFailures::new().failure(&reply(404)).is_none());
/// assert!(HttpFailures::new().failure(&reply(200)).is_none());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpFailures {
    client_errors: bool,
}

impl HttpFailures {
    /// 5xx, 429 and errors are captured; other 4xx are not.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also captures other 4xx, as `client_error` (parked at once by the default policies, for
    /// an operator to look at).
    pub fn with_client_errors(mut self) -> Self {
        self.client_errors = true;
        self
    }

    /// The failure of a response with `status` and `headers`, if it is one.
    pub fn for_status(&self, status: StatusCode, headers: &HeaderMap) -> Option<Failure> {
        let message = || match status.canonical_reason() {
            Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
            None => format!("HTTP {}", status.as_u16()),
        };
        if status == StatusCode::TOO_MANY_REQUESTS {
            let mut failure = Failure::new(FailureKind::RateLimited, message());
            failure.retry_after = retry_after(headers);
            Some(failure)
        } else if status.is_server_error() {
            Some(Failure::server_error(message()))
        } else if status.is_client_error() && self.client_errors {
            Some(Failure::client_error(message()))
        } else {
            None
        }
    }

    /// The failure of an error.
    pub fn for_error<E: fmt::Display + 'static>(err: &E) -> Failure {
        let message = err.to_string();
        if let Some(limited) = find_error::<RateLimited, E>(err) {
            return Failure::rate_limited(message, limited.retry_after);
        }
        if find_error::<Rejected, E>(err).is_some() || find_error::<BulkheadError, E>(err).is_some()
        {
            return Failure::unavailable(message);
        }
        if is_timeout(err) {
            return Failure::timeout(message);
        }
        if let Some(io) = find_error::<std::io::Error, E>(err) {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | NotConnected
                    | AddrNotAvailable
                    | BrokenPipe
                    | HostUnreachable
                    | NetworkUnreachable
            ) {
                return Failure::unavailable(message);
            }
        }
        Failure::other(message)
    }
}

/// `Retry-After` in delta-seconds (the HTTP-date form is not read).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

impl<B, E: fmt::Display + 'static> FailureClassifier<Response<B>, E> for HttpFailures {
    fn failure(&self, result: &Result<Response<B>, E>) -> Option<Failure> {
        match result {
            Ok(response) => self.for_status(response.status(), response.headers()),
            Err(err) => Some(Self::for_error(err)),
        }
    }
}

/// What the capture closure returns for a request worth keeping: the operation's name and the
/// payload to store.
pub type Captured<T> = Option<(Cow<'static, str>, T)>;

/// Records failed calls in a [`DeadLetterQueue`], so they can be retried later by its worker or
/// by an operator.
///
/// Before each call, `capture` maps the request to `Some((operation, payload))` (or `None`: not
/// worth keeping; the call then costs nothing more). When the call fails as the classifier
/// ([`HttpFailures`] by default) says, the entry is pushed with the failure's kind before the
/// response (or error) is returned, so an acknowledged failure is already in the queue. A push
/// that fails, or takes longer than [`push_timeout`](Self::push_timeout) (default
/// [`DEFAULT_PUSH_TIMEOUT`]), is logged (`tracing`, warn) and the call's own result is returned
/// unchanged: a struggling store delays failed calls by at most that much.
///
/// Place it outside tower's `Retry` (only calls that failed every attempt are dead-lettered) and
/// inside the rate limiter and bulkhead (a caller's own refusals are not failed operations).
///
/// ```
/// use std::borrow::Cow;
/// use http::{Request, Response};
/// use palisade_dlq::{DeadLetterQueue, FailureKind, Filter};
/// use palisade_tower::dlq::DeadLetterLayer;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let queue = DeadLetterQueue::<String>::builder("tool-calls").build()?;
/// let svc = ServiceBuilder::new()
///     .layer(DeadLetterLayer::new(queue.clone(), |req: &Request<String>| {
///         Some((Cow::Borrowed("github.create_issue"), req.body().clone()))
///     }))
///     .service(tower::service_fn(|_req: Request<String>| async {
///         Ok::<_, std::io::Error>(Response::builder().status(503).body(()).unwrap())
///     }));
///
/// svc.oneshot(Request::new("{\"title\":\"flaky\"}".to_string())).await?;
/// let page = queue.list(&Filter::default(), None, 10).await?;
/// assert_eq!(page.entries[0].kind, FailureKind::ServerError);
/// assert_eq!(page.entries[0].operation, "github.create_issue");
/// # Ok::<(), tower::BoxError>(())
/// # }).unwrap();
/// ```
pub struct DeadLetterLayer<T, F, C = HttpFailures> {
    queue: DeadLetterQueue<T>,
    capture: F,
    classifier: C,
    push_timeout: Duration,
}

/// How long a failed call waits for its dead-letter push by default.
pub const DEFAULT_PUSH_TIMEOUT: Duration = Duration::from_secs(2);

impl<T, F> DeadLetterLayer<T, F> {
    /// Captures requests with `capture` and pushes the failed ones to `queue`.
    pub fn new<Req>(queue: DeadLetterQueue<T>, capture: F) -> Self
    where
        F: Fn(&Req) -> Captured<T>,
    {
        DeadLetterLayer {
            queue,
            capture,
            classifier: HttpFailures::new(),
            push_timeout: DEFAULT_PUSH_TIMEOUT,
        }
    }
}

impl<T, F, C> DeadLetterLayer<T, F, C> {
    /// The same layer deciding what failed as `classifier` says.
    pub fn classifier<C2>(self, classifier: C2) -> DeadLetterLayer<T, F, C2> {
        DeadLetterLayer {
            queue: self.queue,
            capture: self.capture,
            classifier,
            push_timeout: self.push_timeout,
        }
    }

    /// The longest a failed call waits for its push before returning anyway (the push is then
    /// abandoned and logged).
    pub fn push_timeout(mut self, timeout: Duration) -> Self {
        self.push_timeout = timeout;
        self
    }
}

impl<T, F: Clone, C: Clone> Clone for DeadLetterLayer<T, F, C> {
    fn clone(&self) -> Self {
        DeadLetterLayer {
            queue: self.queue.clone(),
            capture: self.capture.clone(),
            classifier: self.classifier.clone(),
            push_timeout: self.push_timeout,
        }
    }
}

impl<T, F, C> fmt::Debug for DeadLetterLayer<T, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterLayer")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl<S, T, F: Clone, C: Clone> Layer<S> for DeadLetterLayer<T, F, C> {
    type Service = DeadLetterService<S, T, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadLetterService {
            inner,
            queue: self.queue.clone(),
            capture: self.capture.clone(),
            classifier: self.classifier.clone(),
            push_timeout: self.push_timeout,
        }
    }
}

/// The service of [`DeadLetterLayer`].
pub struct DeadLetterService<S, T, F, C = HttpFailures> {
    inner: S,
    queue: DeadLetterQueue<T>,
    capture: F,
    classifier: C,
    push_timeout: Duration,
}

impl<S: Clone, T, F: Clone, C: Clone> Clone for DeadLetterService<S, T, F, C> {
    fn clone(&self) -> Self {
        DeadLetterService {
            inner: self.inner.clone(),
            queue: self.queue.clone(),
            capture: self.capture.clone(),
            classifier: self.classifier.clone(),
            push_timeout: self.push_timeout,
        }
    }
}

impl<S: fmt::Debug, T, F, C> fmt::Debug for DeadLetterService<S, T, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterService")
            .field("queue", &self.queue)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, Req, T, F, C> Service<Req> for DeadLetterService<S, T, F, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    F: Fn(&Req) -> Captured<T>,
    C: FailureClassifier<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, T, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let capture = (self.capture)(&req).map(|(operation, payload)| Capture {
            queue: self.queue.clone(),
            operation,
            payload,
            classifier: self.classifier.clone(),
            timeout: self.push_timeout,
        });
        ResponseFuture {
            state: State::Running {
                fut: self.inner.call(req),
                capture,
            },
        }
    }
}

struct Capture<T, C> {
    queue: DeadLetterQueue<T>,
    operation: Cow<'static, str>,
    payload: T,
    classifier: C,
    timeout: Duration,
}

type Push = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The response future of [`DeadLetterService`].
#[pin_project]
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<F: Future, T, C> {
    #[pin]
    state: State<F, T, C>,
}

#[pin_project(project = StateProj)]
enum State<F: Future, T, C> {
    Running {
        #[pin]
        fut: F,
        capture: Option<Capture<T, C>>,
    },
    Pushing {
        push: Push,
        result: Option<F::Output>,
    },
}

impl<F, T, C, R, E> Future for ResponseFuture<F, T, C>
where
    F: Future<Output = Result<R, E>>,
    E: Into<BoxError>,
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    C: FailureClassifier<R, E>,
{
    type Output = Result<R, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Running { fut, capture } => {
                    let result = ready!(fut.poll(cx));
                    let Some(capture) = capture.take() else {
                        return Poll::Ready(result.map_err(Into::into));
                    };
                    let Some(failure) = capture.classifier.failure(&result) else {
                        return Poll::Ready(result.map_err(Into::into));
                    };
                    let Capture {
                        queue,
                        operation,
                        payload,
                        timeout,
                        ..
                    } = capture;
                    let push: Push = Box::pin(async move {
                        let kind = failure.kind;
                        let pushed = tokio::time::timeout(
                            timeout,
                            queue.push(&operation, &payload, failure),
                        )
                        .await;
                        let error = match pushed {
                            Ok(Ok(_)) => return,
                            Ok(Err(e)) => e.to_string(),
                            Err(_) => format!("no answer from the store in {timeout:?}"),
                        };
                        tracing::warn!(target: "palisade::tower", queue = queue.name(),
                            operation = %operation, kind = %kind, error = %error,
                            "could not dead-letter a failed call");
                    });
                    this.state.set(State::Pushing {
                        push,
                        result: Some(result),
                    });
                }
                StateProj::Pushing { push, result } => {
                    ready!(push.as_mut().poll(cx));
                    return Poll::Ready(match result.take() {
                        Some(result) => result.map_err(Into::into),
                        None => Err(crate::polled_after_completion()),
                    });
                }
            }
        }
    }
}

impl<F: Future, T, C> fmt::Debug for ResponseFuture<F, T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Running { capture: None, .. } => "running",
            State::Running { .. } => "running (captured)",
            State::Pushing { .. } => "pushing",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
