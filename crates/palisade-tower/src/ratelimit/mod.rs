//! The rate limiter as a tower layer: key extractors, trusted proxies, backends and headers.

mod key;
mod proxies;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use palisade_ratelimit::{
    Decision, KeyedRateLimiter, Limiter, RateLimitError, RateLimited, RateLimiter,
};
use pin_project::pin_project;
use tower::{BoxError, Layer, Service};

pub use key::{
    CLIENT_IPV4_PREFIX, CLIENT_IPV6_PREFIX, ClientIp, DEFAULT_IPV4_PREFIX, DEFAULT_IPV6_PREFIX,
    GlobalKey, IpKey, KeyExtractor, MissingKey, PeerAddr,
};
pub use proxies::{TRUSTED_PROXIES, TrustedProxies};

// ---------------------------------------------------------------------------------------------
// Backends.

mod sealed {
    pub trait Sealed {}
}

/// The outcome of a backend's check.
#[derive(Debug)]
pub enum Check<P> {
    /// Admitted; with the full decision when one was asked for.
    Admitted(Option<Decision>),
    /// Refused.
    Refused(RateLimited),
    /// Not decided yet (a Redis round trip): the future decides.
    Pending(P),
}

/// A limiter the [`RateLimitLayer`] can use: [`Limiter`] (the front door: memory or Redis, as
/// configured), [`KeyedRateLimiter<String>`] (local, one bucket per key) or [`RateLimiter`]
/// (local, one bucket: the key is ignored). Sealed.
///
/// Local decisions are made in `call`, with no allocation; a Redis decision is a boxed future
/// that holds the request until Redis (or the limiter's failure policy) answers.
pub trait RateLimitBackend: Clone + sealed::Sealed {
    /// The future of an undecided check.
    type Pending: Future<Output = Result<Decision, RateLimited>>;

    /// The limiter's name.
    fn name(&self) -> &str;

    /// Checks one request of `key`; `decision` asks for the full [`Decision`] of an admission
    /// (for `RateLimit-*` headers), which costs local limiters a few more instructions.
    fn check(&self, key: &str, decision: bool) -> Check<Self::Pending>;
}

/// The pending check of a local limiter: never constructed.
#[derive(Debug)]
pub enum NeverPending {}

impl Future for NeverPending {
    type Output = Result<Decision, RateLimited>;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        match *self {}
    }
}

/// The pending check of a [`Limiter`] on Redis.
pub type BoxedCheck = Pin<Box<dyn Future<Output = Result<Decision, RateLimited>> + Send>>;

/// A decision's verdict as a `Check`.
#[inline]
fn verdict<P>(name: &str, d: Result<Decision, RateLimitError>) -> Check<P> {
    match decided(name, d) {
        Ok(d) => Check::Admitted(Some(d)),
        Err(refused) => Check::Refused(refused),
    }
}

/// A decision's verdict as a result.
fn decided(name: &str, d: Result<Decision, RateLimitError>) -> Result<Decision, RateLimited> {
    match d {
        Ok(d) if d.allowed => Ok(d),
        Ok(d) => Err(RateLimited {
            name: Arc::from(name),
            limit: d.limit,
            retry_after: d.retry_after,
        }),
        Err(RateLimitError::Limited(l)) => Err(l),
        // One request never exceeds a burst (bursts are at least 1); refuse rather than admit.
        Err(RateLimitError::InsufficientCapacity { name, burst, .. }) => Err(RateLimited {
            name,
            limit: burst,
            retry_after: Duration::ZERO,
        }),
    }
}

impl sealed::Sealed for KeyedRateLimiter<String> {}

impl RateLimitBackend for KeyedRateLimiter<String> {
    type Pending = NeverPending;

    fn name(&self) -> &str {
        KeyedRateLimiter::name(self)
    }

    #[inline]
    fn check(&self, key: &str, decision: bool) -> Check<NeverPending> {
        if decision {
            verdict(self.name(), self.decide_key(key, 1))
        } else {
            match self.check_key(key) {
                Ok(()) => Check::Admitted(None),
                Err(refused) => Check::Refused(refused),
            }
        }
    }
}

impl sealed::Sealed for RateLimiter {}

impl RateLimitBackend for RateLimiter {
    type Pending = NeverPending;

    fn name(&self) -> &str {
        RateLimiter::name(self)
    }

    #[inline]
    fn check(&self, _key: &str, decision: bool) -> Check<NeverPending> {
        if decision {
            verdict(self.name(), self.decide(1))
        } else {
            match RateLimiter::check(self) {
                Ok(()) => Check::Admitted(None),
                Err(refused) => Check::Refused(refused),
            }
        }
    }
}

impl sealed::Sealed for Limiter {}

impl RateLimitBackend for Limiter {
    type Pending = BoxedCheck;

    fn name(&self) -> &str {
        Limiter::name(self)
    }

    #[inline]
    fn check(&self, key: &str, decision: bool) -> Check<BoxedCheck> {
        // `Limiter` has a `Redis` variant when palisade-ratelimit's `redis` feature is on
        // (anywhere in the build), so the other variants go through its async `decide`.
        #[allow(unreachable_patterns)]
        match self {
            Limiter::Memory(keyed) => match RateLimitBackend::check(keyed, key, decision) {
                Check::Admitted(d) => Check::Admitted(d),
                Check::Refused(r) => Check::Refused(r),
                Check::Pending(never) => match never {},
            },
            _ => {
                let limiter = self.clone();
                let key = key.to_owned();
                Check::Pending(Box::pin(async move {
                    decided(limiter.name(), limiter.decide(&key, 1).await)
                }))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Headers.

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Whole seconds, rounded up: a client told to wait N seconds must not come back early.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Sets `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds, rounded up),
/// the fields of the IETF draft "RateLimit header fields for HTTP".
pub fn set_ratelimit_headers(headers: &mut HeaderMap, limit: u32, remaining: u32, reset: Duration) {
    headers.insert(RATELIMIT_LIMIT.clone(), HeaderValue::from(limit));
    headers.insert(RATELIMIT_REMAINING.clone(), HeaderValue::from(remaining));
    headers.insert(RATELIMIT_RESET.clone(), HeaderValue::from(ceil_secs(reset)));
}

/// What the rate-limit layer adds to admitted responses.
pub trait HeaderPolicy<Resp>: Clone {
    /// Whether the backend must report the full decision.
    fn wants_decision(&self) -> bool;

    /// Adds the decision to an admitted response.
    fn apply(&self, response: &mut Resp, decision: &Decision);
}

/// Admitted responses are left as they are (the default; any response type).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoHeaders;

impl<Resp> HeaderPolicy<Resp> for NoHeaders {
    #[inline]
    fn wants_decision(&self) -> bool {
        false
    }

    #[inline]
    fn apply(&self, _response: &mut Resp, _decision: &Decision) {}
}

/// Admitted HTTP responses carry `RateLimit-Limit` (the burst), `RateLimit-Remaining` and
/// `RateLimit-Reset` (seconds until the bucket is full again, rounded up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitHeaders;

impl<B> HeaderPolicy<http::Response<B>> for RateLimitHeaders {
    #[inline]
    fn wants_decision(&self) -> bool {
        true
    }

    fn apply(&self, response: &mut http::Response<B>, d: &Decision) {
        set_ratelimit_headers(response.headers_mut(), d.limit, d.remaining, d.reset_after);
    }
}

// ---------------------------------------------------------------------------------------------
// Layer and service.

/// Admits each request only if its key's quota allows it; refused requests fail with
/// [`RateLimited`] (boxed into a [`BoxError`], downcastable; a 429 through
/// `handle_error` with feature `axum`) without reaching the inner service.
///
/// The key comes from a [`KeyExtractor`]: [`ClientIp`] (spoof-proof behind trusted proxies;
/// an IPv6 client keyed by its /64 unless configured otherwise), [`GlobalKey`], or a closure. The limiter is any [`RateLimitBackend`]: [`Limiter`] (memory or
/// Redis, as operators configured), [`KeyedRateLimiter<String>`], or [`RateLimiter`] for one
/// bucket. With [`with_headers`](Self::with_headers), admitted HTTP responses carry the
/// `RateLimit-*` headers.
///
/// Local decisions happen in `call` (no allocation unless the key is new to the limiter); a
/// Redis decision holds the request in the response future until it is made, and only then
/// calls the inner service, so the inner service must be `Clone` (as for tower's `Retry`).
///
/// ```
/// use std::net::SocketAddr;
/// use http::{Request, Response};
/// use palisade_ratelimit::{KeyedRateLimiter, Quota, RateLimited};
/// use palisade_tower::ratelimit::{ClientIp, PeerAddr, RateLimitLayer};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let per_client = KeyedRateLimiter::<String>::builder("per-client")
///     .quota(Quota::per_minute(60).with_burst(1))
///     .build()?;
/// let svc = ServiceBuilder::new()
///     .layer(RateLimitLayer::new(per_client, ClientIp::from_env()?).with_headers())
///     .service(tower::service_fn(|_req: Request<()>| async {
///         Ok::<_, std::convert::Infallible>(Response::new(()))
///     }));
/// let from = |peer: &str| {
///     let mut req = Request::new(());
///     req.extensions_mut().insert(PeerAddr(peer.parse::<SocketAddr>().unwrap()));
///     req
/// };
///
/// let ok = svc.clone().oneshot(from("203.0.113.9:5000")).await?;
/// assert_eq!(ok.headers()["ratelimit-remaining"], "0");
/// let err = svc.clone().oneshot(from("203.0.113.9:5001")).await.unwrap_err();
/// assert!(err.downcast_ref::<RateLimited>().is_some());
/// // Another client has its own bucket.
/// assert!(svc.clone().oneshot(from("198.51.100.7:5000")).await.is_ok());
/// # Ok::<(), tower::BoxError>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct RateLimitLayer<B, K, H = NoHeaders> {
    backend: B,
    extractor: K,
    headers: H,
}

impl<B: RateLimitBackend, K> RateLimitLayer<B, K> {
    /// Limits requests by `extractor`'s key on `backend`.
    pub fn new(backend: B, extractor: K) -> Self {
        RateLimitLayer {
            backend,
            extractor,
            headers: NoHeaders,
        }
    }
}

impl<B, K, H> RateLimitLayer<B, K, H> {
    /// Admitted HTTP responses carry `RateLimit-Limit`, `RateLimit-Remaining` and
    /// `RateLimit-Reset`.
    pub fn with_headers(self) -> RateLimitLayer<B, K, RateLimitHeaders> {
        self.header_policy(RateLimitHeaders)
    }

    /// Admitted responses are changed as `policy` says.
    pub fn header_policy<H2>(self, policy: H2) -> RateLimitLayer<B, K, H2> {
        RateLimitLayer {
            backend: self.backend,
            extractor: self.extractor,
            headers: policy,
        }
    }

    /// The limiter.
    pub fn backend(&self) -> &B {
        &self.backend
    }
}

impl<B: RateLimitBackend, K, H> fmt::Debug for RateLimitLayer<B, K, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.backend.name())
            .finish_non_exhaustive()
    }
}

impl<S, B: Clone, K: Clone, H: Clone> Layer<S> for RateLimitLayer<B, K, H> {
    type Service = RateLimitService<S, B, K, H>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            backend: self.backend.clone(),
            extractor: self.extractor.clone(),
            headers: self.headers.clone(),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimitService<S, B, K, H = NoHeaders> {
    inner: S,
    backend: B,
    extractor: K,
    headers: H,
}

impl<S, B, K, H> RateLimitService<S, B, K, H> {
    /// The limiter.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: fmt::Debug, B: RateLimitBackend, K, H> fmt::Debug for RateLimitService<S, B, K, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitService")
            .field("limiter", &self.backend.name())
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, Req, B, K, H> Service<Req> for RateLimitService<S, B, K, H>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    B: RateLimitBackend,
    K: KeyExtractor<Req>,
    H: HeaderPolicy<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, B::Pending, H>;

    /// The inner service's readiness: the limiter decides in `call`.
    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let state = match self.extractor.extract(&req) {
            Err(missing) => State::Refused {
                error: Some(Box::new(missing)),
            },
            Ok(key) => match self
                .backend
                .check(key.as_ref(), self.headers.wants_decision())
            {
                Check::Admitted(decision) => State::Running {
                    fut: self.inner.call(req),
                    decision,
                },
                Check::Refused(refused) => State::Refused {
                    error: Some(Box::new(refused)),
                },
                Check::Pending(check) => {
                    let clone = self.inner.clone();
                    State::Checking {
                        check,
                        svc: Some(std::mem::replace(&mut self.inner, clone)),
                        req: Some(req),
                    }
                }
            },
        };
        ResponseFuture {
            state,
            headers: self.headers.clone(),
        }
    }
}

/// The response future of [`RateLimitService`].
#[pin_project]
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<S, Req, P, H>
where
    S: Service<Req>,
{
    #[pin]
    state: State<S, Req, P>,
    headers: H,
}

#[pin_project(project = StateProj)]
enum State<S, Req, P>
where
    S: Service<Req>,
{
    Checking {
        #[pin]
        check: P,
        svc: Option<S>,
        req: Option<Req>,
    },
    Running {
        #[pin]
        fut: S::Future,
        decision: Option<Decision>,
    },
    Refused {
        error: Option<BoxError>,
    },
}

impl<S, Req, P, H> Future for ResponseFuture<S, Req, P, H>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: Future<Output = Result<Decision, RateLimited>>,
    H: HeaderPolicy<S::Response>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Running { fut, decision } => {
                    let mut response = ready!(fut.poll(cx)).map_err(Into::into)?;
                    if let Some(d) = decision.take() {
                        this.headers.apply(&mut response, &d);
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Checking { check, svc, req } => {
                    let decision = match ready!(check.poll(cx)) {
                        Ok(d) => d,
                        Err(refused) => return Poll::Ready(Err(Box::new(refused))),
                    };
                    let (Some(mut svc), Some(req)) = (svc.take(), req.take()) else {
                        return Poll::Ready(Err(crate::polled_after_completion()));
                    };
                    let running = State::Running {
                        fut: svc.call(req),
                        decision: Some(decision),
                    };
                    this.state.set(running);
                }
                StateProj::Refused { error } => {
                    return Poll::Ready(Err(error
                        .take()
                        .unwrap_or_else(crate::polled_after_completion)));
                }
            }
        }
    }
}

impl<S, Req, P, H> fmt::Debug for ResponseFuture<S, Req, P, H>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Checking { .. } => "checking",
            State::Running { .. } => "running",
            State::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
