//! The tower layer (feature `tower`): a fault injector in front of any service.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;
use tower::{Layer, Service};

use crate::decide::Action;
use crate::error::Injected;
use crate::injector::{Call, FaultInjector, Inject};

/// Puts a [`FaultInjector`] in front of a service: an injected delay holds the response back,
/// an injected error or refusal answers `Err(Injected.into())` without calling the service.
/// The service's error type must take an [`Injected`] (`S::Error: From<Injected>`; tower's
/// `BoxError` does).
///
/// ```
/// use std::time::Duration;
/// use palisade_chaos::{Fault, FaultInjector, FaultLayer};
/// use tower::{BoxError, ServiceBuilder, ServiceExt, service_fn};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let injector = FaultInjector::builder("echo").allow(true).build().unwrap();
/// let svc = ServiceBuilder::new()
///     .layer(FaultLayer::new(injector.clone()))
///     .service(service_fn(|req: String| async move { Ok::<_, BoxError>(req) }));
///
/// assert_eq!(svc.clone().oneshot("hi".into()).await.unwrap(), "hi");
/// injector.enable(Fault::error(), 1.0, Duration::from_secs(60)).unwrap();
/// let err = svc.oneshot("hi".into()).await.unwrap_err();
/// assert!(err.downcast_ref::<palisade_chaos::Injected>().is_some());
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct FaultLayer {
    injector: FaultInjector,
}

impl FaultLayer {
    /// A layer injecting `injector`'s faults.
    ///
    /// ```
    /// let injector = palisade_chaos::FaultInjector::builder("github").build().unwrap();
    /// let _layer = palisade_chaos::FaultLayer::new(injector);
    /// ```
    pub fn new(injector: FaultInjector) -> Self {
        Self { injector }
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = FaultService<S>;

    fn layer(&self, inner: S) -> FaultService<S> {
        FaultService {
            inner,
            injector: self.injector.clone(),
        }
    }
}

/// The service of [`FaultLayer`].
///
/// ```
/// use palisade_chaos::{FaultInjector, FaultLayer};
/// use tower::{Layer, service_fn, BoxError};
/// let injector = FaultInjector::builder("github").build().unwrap();
/// let svc = FaultLayer::new(injector).layer(service_fn(|r: u32| async move { Ok::<_, BoxError>(r) }));
/// assert_eq!(svc.injector().name(), "github");
/// ```
#[derive(Debug, Clone)]
pub struct FaultService<S> {
    inner: S,
    injector: FaultInjector,
}

impl<S> FaultService<S> {
    /// The injector.
    ///
    /// See [`FaultService`].
    pub fn injector(&self) -> &FaultInjector {
        &self.injector
    }

    /// The wrapped service.
    ///
    /// ```
    /// use palisade_chaos::{FaultInjector, FaultLayer};
    /// use tower::Layer;
    /// let svc = FaultLayer::new(FaultInjector::builder("g").build().unwrap()).layer(7u8);
    /// assert_eq!(*svc.get_ref(), 7);
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, Req> Service<Req> for FaultService<S>
where
    S: Service<Req>,
    S::Error: From<Injected>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let name = &self.injector.shared.name;
        let kind = match self.injector.decide() {
            None => Kind::Call(Call::new(Inject::ready(Ok(())), self.inner.call(req))),
            // The service is called now and polled once the delay is over.
            Some(delay @ Action::Delay(_)) => Kind::Call(Call::new(
                Inject::from_action(name, delay),
                self.inner.call(req),
            )),
            // The service is not called at all.
            Some(Action::Error) => Kind::Failed(Some(Injected::Error { name: name.clone() })),
            Some(Action::Refuse(retry_after)) => Kind::Failed(Some(Injected::Refused {
                name: name.clone(),
                retry_after,
            })),
        };
        ResponseFuture { kind }
    }
}

/// The response future of [`FaultService`].
#[pin_project]
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<F> {
    #[pin]
    kind: Kind<F>,
}

#[pin_project(project = KindProj)]
enum Kind<F> {
    Call(#[pin] Call<F>),
    Failed(Option<Injected>),
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Call(call) => f.debug_tuple("ResponseFuture").field(call).finish(),
            Kind::Failed(e) => f.debug_tuple("ResponseFuture").field(e).finish(),
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: From<Injected>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Call(call) => call.poll(cx),
            KindProj::Failed(e) => match e.take() {
                Some(e) => Poll::Ready(Err(E::from(e))),
                // Polled again after completion: the injected error was already returned.
                None => Poll::Pending,
            },
        }
    }
}
