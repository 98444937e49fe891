//! **Composition point for a per-attempt timeout.**
//!
//! Every attempt a [`Retry`](crate::retry::Retry) (plain API or `RetryLayer`) or a
//! [`Hedge`](crate::hedge::Hedge) starts goes through `attempt` first, so this is the one
//! place to bound each attempt by its own deadline once the toolbox's `Timeout` exists: a
//! timed-out attempt then reaches the retry's classifier as an error (retried after the
//! backoff, counted by the budget) and a hedge's timed-out attempt simply loses the race.
//!
//! Today it returns the attempt unchanged (and is inlined away: the first attempt's path costs
//! nothing more). To compose a timeout here, give the retry's shared state a timeout handle and
//! wrap `fut` in its future; the attempt future types in `attempts.rs` follow from this
//! function's return type. With tower, the same composition is `ServiceBuilder::new()
//! .layer(retry_layer).layer(timeout_layer)`: the timeout inside the retry, one deadline per
//! attempt.

/// The attempt that is run, from the future the caller's closure (or the tower service) made.
/// TIMEOUT: compose the per-attempt timeout here.
#[inline(always)]
pub(crate) fn attempt<F: std::future::Future>(fut: F) -> F {
    fut
}
