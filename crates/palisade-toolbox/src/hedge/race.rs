//! The hedged call, as a hand-written future state machine shared by the plain API and the
//! tower layer: a primary attempt, a timer, a backup attempt, and the first answer wins. Both
//! attempts and the timer are plain pinned fields: nothing is boxed or spawned, and dropping
//! the race (or one of its attempts) cancels synchronously.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;
use tokio::time::Sleep;

use super::hedge::Shared;
use crate::retry::attempts::Attempts;

/// Where the hedge stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hedging {
    /// This call is never hedged.
    Off,
    /// The primary runs; the timer is not set yet.
    Idle,
    /// The timer runs.
    Armed,
    /// The budget allowed a hedge; the backup is being started (a service getting ready).
    Starting,
    /// The backup was started (it may have finished since).
    Sent,
    /// No hedge will be sent (the budget refused, or the backup could not start).
    Done,
}

#[pin_project]
pub(crate) struct Race<A, Fut> {
    /// Makes the primary (if not made yet) and the backup.
    attempts: Option<A>,
    #[pin]
    primary: Option<Fut>,
    #[pin]
    backup: Option<Fut>,
    #[pin]
    timer: Option<Sleep>,
    hedging: Hedging,
    /// The call was counted.
    begun: bool,
    /// The primary was made (it may have finished since).
    primary_made: bool,
    primary_started: Option<u64>,
    backup_started: Option<u64>,
}

impl<A, Fut> Race<A, Fut> {
    /// A race that makes (and counts) its primary when first polled.
    pub(crate) fn lazy(attempts: A) -> Self {
        Race {
            attempts: Some(attempts),
            primary: None,
            backup: None,
            timer: None,
            hedging: Hedging::Idle,
            begun: false,
            primary_made: false,
            primary_started: None,
            backup_started: None,
        }
    }

    /// A race whose primary already runs (counted by the caller, started at `started`);
    /// hedged only if `attempts` can make a backup.
    #[cfg(feature = "tower")]
    pub(crate) fn running(primary: Fut, attempts: Option<A>, started: Option<u64>) -> Self {
        Race {
            hedging: if attempts.is_some() {
                Hedging::Idle
            } else {
                Hedging::Off
            },
            attempts,
            primary: Some(primary),
            backup: None,
            timer: None,
            begun: true,
            primary_made: true,
            primary_started: started,
            backup_started: None,
        }
    }

    /// Attempts running now.
    pub(crate) fn in_flight(&self) -> usize {
        usize::from(self.primary.is_some()) + usize::from(self.backup.is_some())
    }

    /// Whether a hedge was sent.
    pub(crate) fn hedged(&self) -> bool {
        self.hedging == Hedging::Sent
    }
}

impl<A, Fut, T, E> Race<A, Fut>
where
    A: Attempts<Fut>,
    Fut: Future<Output = Result<T, E>>,
{
    #[inline]
    pub(crate) fn poll_with(
        self: Pin<&mut Self>,
        shared: &Shared,
        cx: &mut Context<'_>,
    ) -> Poll<Result<T, E>> {
        let mut this = self.project();
        if !*this.begun {
            *this.begun = true;
            let (started, hedge) = shared.begin_idempotent();
            *this.primary_started = started;
            if !hedge {
                *this.hedging = Hedging::Off;
            }
        }
        if !*this.primary_made {
            let Some(attempts) = this.attempts.as_mut() else {
                unreachable!("a lazy race has its attempts");
            };
            match attempts.poll_start(cx) {
                Poll::Ready(Ok(fut)) => {
                    *this.primary_made = true;
                    this.primary.set(Some(fut));
                }
                Poll::Ready(Err(outcome)) => return Poll::Ready(outcome),
                Poll::Pending => return Poll::Pending,
            }
        }

        // The primary.
        if let Some(primary) = this.primary.as_mut().as_pin_mut() {
            if let Poll::Ready(out) = primary.poll(cx) {
                this.primary.set(None);
                let backup_live = this.backup.is_some() || *this.hedging == Hedging::Starting;
                if out.is_ok() || !backup_live {
                    if out.is_ok() {
                        shared.record_success(*this.primary_started);
                    }
                    if this.backup.is_some() {
                        this.backup.set(None);
                        shared.loser_cancelled();
                    }
                    this.timer.set(None);
                    return Poll::Ready(out);
                }
                // Failed while the backup runs: the backup may still answer.
            }
        }

        // The hedge: set the timer, and send the backup when it fires.
        if *this.hedging == Hedging::Idle {
            let delay = shared.delay();
            if delay.is_zero() {
                *this.hedging = fire(shared);
            } else {
                this.timer.set(Some(tokio::time::sleep(delay)));
                *this.hedging = Hedging::Armed;
            }
        }
        if *this.hedging == Hedging::Armed {
            if let Some(timer) = this.timer.as_mut().as_pin_mut() {
                if timer.poll(cx).is_ready() {
                    this.timer.set(None);
                    *this.hedging = fire(shared);
                }
            }
        }
        if *this.hedging == Hedging::Starting {
            if let Some(attempts) = this.attempts.as_mut() {
                match attempts.poll_start(cx) {
                    Poll::Ready(Ok(fut)) => {
                        *this.backup_started = this.primary_started.map(|_| shared.now_nanos());
                        this.backup.set(Some(fut));
                        *this.hedging = Hedging::Sent;
                        shared.hedge_sent();
                    }
                    Poll::Ready(Err(outcome)) => {
                        *this.hedging = Hedging::Done;
                        if this.primary.is_none() {
                            return Poll::Ready(outcome);
                        }
                    }
                    Poll::Pending => {}
                }
            }
        }

        // The backup.
        if let Some(backup) = this.backup.as_mut().as_pin_mut() {
            if let Poll::Ready(out) = backup.poll(cx) {
                this.backup.set(None);
                if out.is_ok() || this.primary.is_none() {
                    if out.is_ok() {
                        shared.hedge_won();
                        shared.record_success(*this.backup_started);
                        if this.primary.is_some() {
                            this.primary.set(None);
                            shared.loser_cancelled();
                        }
                    }
                    return Poll::Ready(out);
                }
                // Failed while the primary runs: the primary may still answer.
            }
        }
        Poll::Pending
    }
}

/// The timer fired: ask the budget for a hedge.
fn fire(shared: &Shared) -> Hedging {
    if shared.try_hedge() {
        Hedging::Starting
    } else {
        Hedging::Done
    }
}
