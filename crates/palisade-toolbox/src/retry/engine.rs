//! The retry loop, as a hand-written future state machine shared by the plain API and the
//! tower layer. Nothing in it allocates until an attempt fails and a retry waits (the timer is
//! boxed then, once per call, and reset for later waits).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project::pin_project;
use tokio::time::{Instant, Sleep};

use super::attempts::Attempts;
use super::classify::{Classify, Decision};
use super::retry::Shared;

#[pin_project]
pub(crate) struct Engine<A, C, Fut> {
    attempts: A,
    classify: C,
    #[pin]
    current: Option<Fut>,
    /// The backoff timer, boxed on the first wait and reset for the next ones.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Attempts started so far, and [`SLEEPING`] while a wait runs: one word, written with one
    /// store (a `bool` and a `u32` side by side, written separately and read back as one
    /// 16-byte move of the future, stalled store forwarding on the first attempt's path).
    state: u64,
}

/// Set in `Engine::state` while the engine waits out a backoff or a `Retry-After`.
const SLEEPING: u64 = 1 << 32;
/// The attempts count in `Engine::state`.
const MADE: u64 = u32::MAX as u64;

impl<A, C, Fut> Engine<A, C, Fut> {
    /// An engine that starts (and counts) the first attempt when first polled.
    pub(crate) fn new(attempts: A, classify: C) -> Self {
        Engine {
            attempts,
            classify,
            current: None,
            sleep: None,
            state: 0,
        }
    }

    /// An engine whose first attempt is already running (and was counted by the caller).
    #[cfg(feature = "tower")]
    pub(crate) fn started(attempts: A, classify: C, first: Fut) -> Self {
        Engine {
            attempts,
            classify,
            current: Some(first),
            sleep: None,
            state: 1,
        }
    }

    /// Attempts started so far.
    pub(crate) fn attempts_made(&self) -> u32 {
        (self.state & MADE) as u32
    }

    /// Whether the engine is waiting out a backoff or a `Retry-After`.
    pub(crate) fn waiting(&self) -> bool {
        self.state & SLEEPING != 0
    }
}

impl<A, C, Fut, T, E> Engine<A, C, Fut>
where
    A: Attempts<Fut>,
    Fut: Future<Output = Result<T, E>>,
    C: Classify<T, E>,
{
    #[inline]
    pub(crate) fn poll_with(
        self: Pin<&mut Self>,
        shared: &Shared,
        cx: &mut Context<'_>,
    ) -> Poll<Result<T, E>> {
        let mut this = self.project();
        loop {
            if *this.state & SLEEPING != 0 {
                if let Some(sleep) = this.sleep.as_mut() {
                    ready!(sleep.as_mut().poll(cx));
                }
                *this.state &= MADE;
            }
            if this.current.is_none() {
                match ready!(this.attempts.poll_start(cx)) {
                    Ok(fut) => {
                        if *this.state == 0 {
                            shared.begin();
                        }
                        *this.state += 1;
                        this.current.set(Some(fut));
                    }
                    // A service that cannot become ready ends the call with its error.
                    Err(outcome) => return Poll::Ready(outcome),
                }
            }
            let Some(fut) = this.current.as_mut().as_pin_mut() else {
                unreachable!("an attempt was just started");
            };
            let result = ready!(fut.poll(cx));
            this.current.set(None);
            let decision = this.classify.classify(&result);
            let made = (*this.state & MADE) as u32;
            if decision == Decision::Return {
                if made > 1 {
                    shared.returned_after_retry();
                }
                return Poll::Ready(result);
            }
            match shared.plan_retry(decision, made) {
                None => return Poll::Ready(result),
                Some(delay) => {
                    if arm(this.sleep, delay) {
                        *this.state |= SLEEPING;
                    }
                }
            }
        }
    }
}

/// Sets the timer for `delay` (boxing it the first time); `false` for a zero delay, which
/// retries at once.
fn arm(sleep: &mut Option<Pin<Box<Sleep>>>, delay: Duration) -> bool {
    if delay.is_zero() {
        return false;
    }
    let deadline = Instant::now() + delay;
    match sleep {
        Some(s) => s.as_mut().reset(deadline),
        None => *sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
    }
    true
}
