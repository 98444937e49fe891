//! Retries with exponential backoff, full jitter, `Retry-After` hints and a retry budget.
//!
//! - [`Retry`]: the component (a [`Registry`](palisade_core::Registry) component of kind
//!   `retry`), with a plain async API: `retry.call(|| async { … }).await`, the closure making
//!   each attempt.
//! - [`Classify`]: what is retried, and when. [`RetryErrors`] (the default) retries every
//!   `Err`; [`HintedErrors`] follows the errors' own [`RetryHint`] (Palisade's refusals carry
//!   their `retry_after`); `HttpResponses` (feature `http`) reads status codes and
//!   `Retry-After`; any closure `Fn(&Result<T, E>) -> Decision` will do.
//! - [`Backoff`]: the pure backoff math, `[0, min(max, base × multiplierⁿ)]`.
//! - `RetryLayer` (feature `tower`): the same for a tower service with `Clone` requests.
//! - The budget ([`RetryBudget`](crate::budget::RetryBudget)) caps retries at a share of
//!   the traffic, shared by every caller (and by a [`Hedge`](crate::hedge::Hedge) given the
//!   same handle).
//!
//! A retry of Palisade's own refusals is ruled by their hints: an open breaker's wait (60 s by
//! default) is longer than `max_retry_after` (30 s by default), so such a call ends at once
//! instead of waiting; a rate limiter's short `retry_after` is waited out exactly.
//!
//! ```
//! use std::time::Duration;
//! use palisade_toolbox::retry::{Decision, Retry};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! #[derive(Debug, PartialEq)]
//! enum Error { NotFound, Overloaded { retry_after: Duration }, Timeout }
//!
//! let retry = Retry::builder("catalog").max_attempts(3).build()?;
//! let mut replies = vec![Err(Error::Overloaded { retry_after: Duration::from_millis(300) }), Ok("book")];
//! replies.reverse();
//! let started = tokio::time::Instant::now();
//! let item = retry
//!     .call_classified(
//!         |r: &Result<&str, Error>| match r {
//!             Ok(_) | Err(Error::NotFound) => Decision::Return,
//!             Err(Error::Overloaded { retry_after }) => Decision::RetryAfter(*retry_after),
//!             Err(Error::Timeout) => Decision::Retry,
//!         },
//!         || std::future::ready(replies.pop().unwrap()),
//!     )
//!     .await;
//! assert_eq!(item, Ok("book"));
//! assert_eq!(started.elapsed(), Duration::from_millis(300));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

pub(crate) mod attempts;
mod backoff;
mod builder;
mod call;
mod classify;
pub(crate) mod compose;
mod config;
mod control;
mod engine;
#[cfg(feature = "tower")]
pub(crate) mod handle;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "tower")]
mod layer;
pub mod names;
mod refusal;
#[allow(clippy::module_inception)]
mod retry;

pub use backoff::Backoff;
pub use builder::RetryBuilder;
pub use call::RetryCall;
pub use classify::{Classify, Decision, HintedErrors, RetryErrors, RetryHint, hint_in_chain};
pub use config::{MAX_ATTEMPTS, MAX_DELAY, MAX_MULTIPLIER, RetryConfig};
pub use control::{RetryCommand, RetrySnapshot};
pub(crate) use control::{reset_budget, set_budget_fields};
#[cfg(feature = "http")]
pub use http::{HttpResponses, retry_after};
#[cfg(feature = "tower")]
pub use layer::{RetryFuture, RetryLayer, RetryService};
pub use retry::Retry;
