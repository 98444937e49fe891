//! The future of [`Retry::call`](crate::retry::Retry::call).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;

use super::attempts::FnAttempts;
use super::classify::Classify;
use super::engine::Engine;
use super::retry::Shared;

/// The future returned by [`Retry::call`](crate::retry::Retry::call) and
/// [`Retry::call_classified`](crate::retry::Retry::call_classified): runs attempts until one
/// is to be returned, waiting between them.
///
/// Written by hand rather than as an `async fn`: the first attempt runs inside it as a plain
/// field, with no allocation; only a retry's wait boxes a timer. Dropping it cancels the
/// attempt in flight (its future is dropped) or the wait.
///
/// ```
/// use palisade_toolbox::retry::Retry;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let retry = Retry::builder("cache").build().unwrap();
/// let call = retry.call(|| async { Ok::<_, ()>(7) }); // nothing runs yet
/// assert_eq!(call.await, Ok(7));
/// # });
/// ```
#[pin_project]
#[must_use = "futures do nothing unless polled"]
pub struct RetryCall<'a, C, F, Fut> {
    shared: &'a Shared,
    #[pin]
    engine: Engine<FnAttempts<F>, C, Fut>,
}

impl<'a, C, F, Fut> RetryCall<'a, C, F, Fut> {
    pub(crate) fn new(shared: &'a Shared, engine: Engine<FnAttempts<F>, C, Fut>) -> Self {
        RetryCall { shared, engine }
    }
}

impl<C, F, Fut, T, E> Future for RetryCall<'_, C, F, Fut>
where
    C: Classify<T, E>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.engine.poll_with(this.shared, cx)
    }
}

impl<C, F, Fut> std::fmt::Debug for RetryCall<'_, C, F, Fut> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryCall")
            .field("retry", &&*self.shared.name)
            .field("attempts", &self.engine.attempts_made())
            .field("waiting", &self.engine.waiting())
            .finish()
    }
}
