//! The future of a guarded call.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project::{pin_project, pinned_drop};

use crate::breaker::CircuitBreaker;
use crate::classify::Classifier;
use crate::error::CallError;

/// No permit asked for yet (before the first poll).
const IDLE: u64 = u64::MAX;
/// Finished: the outcome is recorded or the call was refused.
const DONE: u64 = u64::MAX - 1;

/// The future returned by [`CircuitBreaker::call`] and [`CircuitBreaker::call_classified`].
///
/// It asks the breaker for permission on its first poll, runs the inner future if admitted, and
/// records the classified outcome when it completes. Dropped before completion, it records
/// nothing and gives a half-open trial slot back.
///
/// Written by hand rather than as an `async fn` so that the closed path holds the permit as two
/// plain words in the future: no nested state machine and no permit moved in and out of it.
#[pin_project(PinnedDrop)]
#[must_use = "futures do nothing unless polled"]
pub struct Call<'a, F, C> {
    breaker: &'a CircuitBreaker,
    #[pin]
    fut: F,
    classifier: C,
    /// `IDLE`, `DONE`, or the ticket of the permit held while `fut` runs.
    ticket: u64,
    started: u64,
}

impl<'a, F, C> Call<'a, F, C> {
    pub(crate) fn new(breaker: &'a CircuitBreaker, fut: F, classifier: C) -> Self {
        Call {
            breaker,
            fut,
            classifier,
            ticket: IDLE,
            started: 0,
        }
    }
}

impl<F, C, T, E> Future for Call<'_, F, C>
where
    F: Future<Output = Result<T, E>>,
    C: Classifier<T, E>,
{
    type Output = Result<T, CallError<E>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if *this.ticket == IDLE {
            match this.breaker.try_acquire() {
                Ok(permit) => (*this.ticket, *this.started) = permit.into_ticket(),
                Err(rejected) => {
                    *this.ticket = DONE;
                    return Poll::Ready(Err(CallError::Rejected(rejected)));
                }
            }
        }
        assert!(*this.ticket != DONE, "`Call` polled after completion");
        let result = ready!(this.fut.poll(cx));
        let outcome = this.classifier.classify(&result);
        let ticket = std::mem::replace(this.ticket, DONE);
        this.breaker
            .shared
            .on_ticket(ticket, *this.started, Some(outcome));
        Poll::Ready(result.map_err(CallError::Inner))
    }
}

#[pinned_drop]
impl<F, C> PinnedDrop for Call<'_, F, C> {
    fn drop(self: Pin<&mut Self>) {
        let this = self.project();
        if *this.ticket != IDLE && *this.ticket != DONE {
            // Cancelled while running: record nothing, give a trial slot back.
            this.breaker
                .shared
                .on_ticket(*this.ticket, *this.started, None);
        }
    }
}

impl<F, C> std::fmt::Debug for Call<'_, F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("breaker", &self.breaker.name())
            .field("running", &(self.ticket != IDLE && self.ticket != DONE))
            .finish()
    }
}
