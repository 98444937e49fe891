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

/// The future of [`Timeout::call`](crate::Timeout::call): the call's result, or
/// [`TimeoutError::Elapsed`] once the deadline has run out (the call is then dropped with
/// this future). The timer starts at the first poll at which the call is not ready, so a
/// call that is ready at once reads no clock and arms no timer.
#[pin_project]
#[must_use = "futures do nothing unless polled"]
pub struct TimeoutCall<F> {
    #[pin]
    inner: F,
    #[pin]
    sleep: Option<Sleep>,
    deadline: Duration,
    shared: Arc<Shared>,
}

impl<F> TimeoutCall<F> {
    pub(crate) fn new(shared: Arc<Shared>, deadline: Duration, inner: F) -> Self {
        TimeoutCall {
            inner,
            sleep: None,
            deadline,
            shared,
        }
    }
}

impl<F> std::fmt::Debug for TimeoutCall<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeoutCall")
            .field("timeout", &&*self.shared.name)
            .field("deadline", &self.deadline)
            .field("timer_armed", &self.sleep.is_some())
            .finish()
    }
}

impl<F, T, E> Future for TimeoutCall<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, TimeoutError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(out.map_err(TimeoutError::Inner));
        }
        if this.sleep.is_none() {
            this.sleep.set(Some(tokio::time::sleep(*this.deadline)));
        }
        if let Some(sleep) = this.sleep.as_pin_mut() {
            ready!(sleep.poll(cx));
        }
        this.shared.timeouts.incr();
        tracing::debug!(
            target: "palisade::timeout", timeout = %this.shared.name,
            deadline_ms = u64::try_from(this.deadline.as_millis()).unwrap_or(u64::MAX),
            "call timed out"
        );
        Poll::Ready(Err(TimeoutError::Elapsed {
            name: Arc::clone(&this.shared.name),
            after: *this.deadline,
        }))
    }
}
