//! [`TimeoutCall`]: the future of a call under a deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project::pin_project;
use tokio::time::Sleep;

use super::error::TimeoutError;
use super::handle::Shared;

/// The timeout a call belongs to: borrowed (the plain API, a `'static` layer) or shared
/// (a layer that owns its timeout: one reference count per call).
pub(crate) enum Handle<'a> {
    Borrowed(&'a Shared),
    Owned(Arc<Shared>),
}

impl std::ops::Deref for Handle<'_> {
    type Target = Shared;

    #[inline]
    fn deref(&self) -> &Shared {
        match self {
            Handle::Borrowed(s) => s,
            Handle::Owned(s) => s,
        }
    }
}

/// The future of [`Timeout::call`](crate::Timeout::call): the call's result, or
/// [`TimeoutError::Elapsed`] once the deadline has run out (the call is then dropped with
/// this future). The timer starts at the first poll at which the call is not ready, so a
/// call that is ready at once reads no clock and arms no timer.
#[pin_project]
#[must_use = "futures do nothing unless polled"]
pub struct TimeoutCall<'a, F> {
    #[pin]
    inner: F,
    #[pin]
    sleep: Option<Sleep>,
    /// A per-call deadline; `None`: the timeout's, read when the timer is armed.
    deadline: Option<Duration>,
    shared: Handle<'a>,
}

impl<'a, F> TimeoutCall<'a, F> {
    #[inline]
    pub(crate) fn new(shared: Handle<'a>, deadline: Option<Duration>, inner: F) -> Self {
        TimeoutCall {
            inner,
            sleep: None,
            deadline,
            shared,
        }
    }
}

impl<F> std::fmt::Debug for TimeoutCall<'_, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeoutCall")
            .field("timeout", &&*self.shared.name)
            .field("deadline", &self.deadline)
            .field("timer_armed", &self.sleep.is_some())
            .finish()
    }
}

impl<F, T, E> Future for TimeoutCall<'_, F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, TimeoutError<E>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            // A call that waited: time it from when its timer was armed.
            if let (Some(sleep), Some(deadline)) = (this.sleep.as_pin_mut(), *this.deadline) {
                let armed = sleep.deadline().checked_sub(deadline);
                if let Some(armed) = armed {
                    this.shared.latencies.record(armed.elapsed());
                }
            }
            return Poll::Ready(out.map_err(TimeoutError::Inner));
        }
        if this.sleep.is_none() {
            this.shared.waited.incr();
            let deadline = *this.deadline.get_or_insert_with(|| this.shared.deadline());
            this.sleep.set(Some(tokio::time::sleep(deadline)));
        }
        if let Some(sleep) = this.sleep.as_pin_mut() {
            ready!(sleep.poll(cx));
        }
        let after = this.deadline.unwrap_or_default();
        this.shared.timeouts.incr();
        this.shared.latencies.record(after);
        tracing::debug!(
            target: "palisade::toolbox", timeout = %this.shared.name,
            deadline_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
            "call timed out"
        );
        Poll::Ready(Err(TimeoutError::Elapsed {
            name: Arc::clone(&this.shared.name),
            after,
        }))
    }
}
