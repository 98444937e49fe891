//! The futures of [`Hedge::call`](crate::hedge::Hedge::call) and
//! [`Hedge::call_idempotent`](crate::hedge::Hedge::call_idempotent).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project::pin_project;

use super::hedge::Shared;
use super::race::Race;
use crate::retry::attempts::FnAttempts;

/// The future returned by [`Hedge::call_idempotent`](crate::hedge::Hedge::call_idempotent):
/// the primary attempt, then (after the delay, if the budget allows) the backup; the first
/// `Ok` wins and the other attempt's future is dropped.
///
/// Both attempts and the hedging timer live inside it (pinned fields, no box, no task):
/// dropping it cancels whatever runs.
///
/// ```
/// use std::time::Duration;
/// use palisade_toolbox::hedge::Hedge;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let hedge = Hedge::builder("kv").fixed_delay(Duration::from_millis(20)).build().unwrap();
/// let get = hedge.call_idempotent(|| async { Ok::<_, ()>("value") });
/// assert_eq!(get.await, Ok("value"));
/// # });
/// ```
#[pin_project]
#[must_use = "futures do nothing unless polled"]
pub struct HedgedCall<'a, F, Fut> {
    shared: &'a Shared,
    #[pin]
    race: Race<FnAttempts<F>, Fut>,
}

impl<'a, F, Fut> HedgedCall<'a, F, Fut> {
    pub(crate) fn new(shared: &'a Shared, race: Race<FnAttempts<F>, Fut>) -> Self {
        HedgedCall { shared, race }
    }
}

impl<F, Fut, T, E> Future for HedgedCall<'_, F, Fut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.race.poll_with(this.shared, cx)
    }
}

impl<F, Fut> std::fmt::Debug for HedgedCall<'_, F, Fut> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HedgedCall")
            .field("hedge", &&*self.shared.name)
            .field("in_flight", &self.race.in_flight())
            .field("hedged", &self.race.hedged())
            .finish()
    }
}

/// The future returned by [`Hedge::call`](crate::hedge::Hedge::call): the one future it was
/// given, counted (and timed, for the percentile delay). Never hedged.
///
/// ```
/// use palisade_toolbox::hedge::Hedge;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let hedge = Hedge::builder("orders").build().unwrap();
/// assert_eq!(hedge.call(async { Ok::<_, ()>(1) }).await, Ok(1));
/// # });
/// ```
#[pin_project]
#[must_use = "futures do nothing unless polled"]
pub struct SingleCall<'a, Fut> {
    shared: &'a Shared,
    #[pin]
    fut: Fut,
    begun: bool,
    started: Option<u64>,
}

impl<'a, Fut> SingleCall<'a, Fut> {
    pub(crate) fn new(shared: &'a Shared, fut: Fut) -> Self {
        SingleCall {
            shared,
            fut,
            begun: false,
            started: None,
        }
    }
}

impl<Fut, T, E> Future for SingleCall<'_, Fut>
where
    Fut: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if !*this.begun {
            *this.begun = true;
            *this.started = this.shared.begin_single();
        }
        let out = ready!(this.fut.poll(cx));
        if out.is_ok() {
            this.shared.record_success(*this.started);
        }
        Poll::Ready(out)
    }
}

impl<Fut> std::fmt::Debug for SingleCall<'_, Fut> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleCall")
            .field("hedge", &&*self.shared.name)
            .finish()
    }
}
