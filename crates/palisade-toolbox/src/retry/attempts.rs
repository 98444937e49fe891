//! Where attempts come from: a closure (the plain API) or a tower service (the layers).
//! Shared by retries and hedges.

use std::future::Future;
use std::task::{Context, Poll};

/// Makes the next attempt of one call.
pub(crate) trait Attempts<Fut: Future> {
    /// `Ready(Ok(attempt))` to start one; `Ready(Err(outcome))` when it cannot start (a tower
    /// service's readiness error), the outcome standing for the attempt's result.
    fn poll_start(&mut self, cx: &mut Context<'_>) -> Poll<Result<Fut, Fut::Output>>;
}

/// Attempts made by calling a closure.
pub(crate) struct FnAttempts<F>(pub(crate) F);

impl<F, Fut> Attempts<Fut> for FnAttempts<F>
where
    F: FnMut() -> Fut,
    Fut: Future,
{
    #[inline]
    fn poll_start(&mut self, _cx: &mut Context<'_>) -> Poll<Result<Fut, Fut::Output>> {
        Poll::Ready(Ok(super::compose::attempt((self.0)())))
    }
}

/// Attempts made by a (cloned) tower service with a clone of the request: readiness first, as
/// tower's contract requires before every `call`.
#[cfg(feature = "tower")]
pub(crate) struct ServiceAttempts<S, Req> {
    pub(crate) service: S,
    pub(crate) request: Req,
}

#[cfg(feature = "tower")]
impl<S, Req> Attempts<S::Future> for ServiceAttempts<S, Req>
where
    S: tower::Service<Req>,
    Req: Clone,
{
    fn poll_start(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<S::Future, Result<S::Response, S::Error>>> {
        match std::task::ready!(self.service.poll_ready(cx)) {
            Ok(()) => Poll::Ready(Ok(super::compose::attempt(
                self.service.call(self.request.clone()),
            ))),
            Err(e) => Poll::Ready(Err(Err(e))),
        }
    }
}
