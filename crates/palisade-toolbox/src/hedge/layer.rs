//! The hedge as a tower layer (crate feature `tower`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project::pin_project;
use tower::{Layer, Service};

use super::hedge::{Hedge, Shared};
use super::idempotent::Idempotent;
use super::race::Race;
use crate::retry::attempts::ServiceAttempts;
use crate::retry::compose;
use crate::retry::handle::{Handle, LayerHandle};

/// Hedges the idempotent requests of the service it wraps with a [`Hedge`]: after the delay, a
/// clone of the request goes to a clone of the service (made ready first), the first `Ok`
/// wins, and the other response future is dropped.
///
/// Which requests are idempotent is not guessed: [`new`](Self::new) takes the predicate
/// ([`AllIdempotent`](super::AllIdempotent), `IdempotentMethods` with feature `http`, or a
/// closure). Other requests pass through once, with no clone. Requests and the service must
/// be `Clone`; responses and errors are the inner service's own.
///
/// Each response future holds the component: [`new`](Self::new) clones its `Arc` per call (two
/// atomic operations); [`from_static`](Self::from_static) borrows a component that lives for
/// the whole process, for nothing.
///
/// ```
/// use std::time::Duration;
/// use palisade_toolbox::hedge::{Hedge, HedgeLayer};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let hedge = Hedge::builder("kv").fixed_delay(Duration::from_millis(10)).build()?;
/// let svc = ServiceBuilder::new()
///     .layer(HedgeLayer::new(hedge.clone(), |key: &String| !key.starts_with("counter:")))
///     .service_fn(|key: String| async move { Ok::<_, std::io::Error>(key.len()) });
/// assert_eq!(svc.clone().oneshot("user:42".to_string()).await?, 7);
/// assert_eq!(hedge.snapshot().idempotent_calls_total, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct HedgeLayer<P> {
    hedge: LayerHandle<Hedge>,
    idempotent: P,
}

impl<P> HedgeLayer<P> {
    /// A layer hedging, with `hedge`, the requests `idempotent` accepts.
    pub fn new(hedge: Hedge, idempotent: P) -> Self {
        HedgeLayer {
            hedge: LayerHandle::Owned(hedge),
            idempotent,
        }
    }

    /// A layer hedging with a component that lives for the whole process (a `static`, or one
    /// leaked once at startup): its response futures borrow it instead of counting a
    /// reference per call.
    ///
    /// ```
    /// use std::sync::LazyLock;
    /// use palisade_toolbox::hedge::{AllIdempotent, Hedge, HedgeLayer};
    ///
    /// static HEDGE: LazyLock<Hedge> = LazyLock::new(|| Hedge::builder("search").build().unwrap());
    /// let layer = HedgeLayer::from_static(&HEDGE, AllIdempotent);
    /// # drop(layer);
    /// ```
    pub fn from_static(hedge: &'static Hedge, idempotent: P) -> Self {
        HedgeLayer {
            hedge: LayerHandle::Static(hedge),
            idempotent,
        }
    }
}

impl<S, P: Clone> Layer<S> for HedgeLayer<P> {
    type Service = HedgeService<S, P>;

    fn layer(&self, inner: S) -> HedgeService<S, P> {
        HedgeService {
            inner,
            hedge: self.hedge.clone(),
            idempotent: self.idempotent.clone(),
        }
    }
}

/// The service of [`HedgeLayer`].
#[derive(Debug, Clone)]
pub struct HedgeService<S, P> {
    inner: S,
    hedge: LayerHandle<Hedge>,
    idempotent: P,
}

impl<S, P> HedgeService<S, P> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The hedge component.
    pub fn hedge(&self) -> &Hedge {
        &self.hedge
    }
}

impl<S, P, Req> Service<Req> for HedgeService<S, P>
where
    S: Service<Req> + Clone,
    Req: Clone,
    P: Idempotent<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = HedgeFuture<S, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    // Inlined into the caller, the future is built where it will live (see `RetryService::call`).
    #[inline(always)]
    fn call(&mut self, request: Req) -> HedgeFuture<S, Req> {
        let shared = match &self.hedge {
            LayerHandle::Owned(h) => Handle::Shared(Arc::clone(&h.shared)),
            LayerHandle::Static(h) => Handle::Static(&*h.shared),
        };
        let race = if self.idempotent.is_idempotent(&request) {
            let (started, hedge) = shared.begin_idempotent();
            if hedge {
                let primary = compose::attempt(self.inner.call(request.clone()));
                let backup = ServiceAttempts {
                    service: self.inner.clone(),
                    request,
                };
                Race::running(primary, Some(backup), started)
            } else {
                Race::running(compose::attempt(self.inner.call(request)), None, started)
            }
        } else {
            let started = shared.begin_single();
            Race::running(compose::attempt(self.inner.call(request)), None, started)
        };
        HedgeFuture { shared, race }
    }
}

/// The response future of [`HedgeService`].
#[pin_project]
#[must_use = "futures do nothing unless polled"]
pub struct HedgeFuture<S: Service<Req>, Req> {
    shared: Handle<Shared>,
    #[pin]
    race: Race<ServiceAttempts<S, Req>, S::Future>,
}

impl<S, Req> Future for HedgeFuture<S, Req>
where
    S: Service<Req>,
    Req: Clone,
{
    type Output = Result<S::Response, S::Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.race.poll_with(this.shared, cx)
    }
}

impl<S: Service<Req>, Req> std::fmt::Debug for HedgeFuture<S, Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HedgeFuture")
            .field("hedge", &&*self.shared.name)
            .field("in_flight", &self.race.in_flight())
            .field("hedged", &self.race.hedged())
            .finish()
    }
}
