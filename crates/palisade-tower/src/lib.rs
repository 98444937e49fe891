//! # palisade-tower
//!
//! Palisade's components as tower [`Layer`](tower::Layer)/[`Service`](tower::Service) pairs, for
//! axum routers, hyper services and tower HTTP clients:
//!
//! | layer | refuses with | in `call` |
//! | --- | --- | --- |
//! | [`RateLimitLayer`] | [`RateLimited`](palisade_ratelimit::RateLimited) | one keyed GCRA decision ([`ClientIp`](ratelimit::ClientIp), [`GlobalKey`](ratelimit::GlobalKey) or a closure; local or Redis) |
//! | [`BulkheadLayer`] | [`BulkheadError`](palisade_bulkhead::BulkheadError) | takes a slot, waiting up to the bulkhead's `max_wait`; held until the response future ends |
//! | [`CircuitBreakerLayer`] | [`Rejected`](palisade_breaker::Rejected) | one permit; the outcome is classified ([`HttpClassifier`]: 5xx and errors fail, 4xx succeed, 429 is ignored) when the response future completes |
//! | `DeadLetterLayer` (feature `dlq`) | nothing | captures the request's operation and payload, and pushes failed calls to a `DeadLetterQueue` |
//!
//! Every service answers with the inner service's response and a [`BoxError`](tower::BoxError)
//! (so stacks compose with tower's own layers), and Palisade's refusals stay their own types
//! inside it, so `err.downcast_ref::<RateLimited>()` works, and [`Refusal::from_error`] turns any
//! of them into a 503 or 429 with `Retry-After` (and `RateLimit-*`). With feature `axum`,
//! `handle_error` does that for `HandleErrorLayer`, and [`Refusal`] is `IntoResponse`.
//!
//! The layers are `Clone`, compose with [`tower::ServiceBuilder`], and pass `poll_ready` through
//! to the inner service untouched: back-pressure from below reaches the caller, and Palisade
//! admits or refuses in `call`, where a refusal is an immediately ready error and the inner
//! service is never called. On the permitted path no layer allocates: the response futures are
//! hand-written (pin-project), hold their permits as plain fields, and box nothing (only a
//! caller that must wait for a bulkhead slot, a Redis rate-limit decision and a dead-letter push
//! box a future).
//!
//! ## The whole stack, and its order
//!
//! Timeouts and retries are tower's ([`tower::timeout::Timeout`], `tower::retry::Retry` with a
//! `tower::retry::budget::TpsBudget`); Palisade adds what tower lacks. From the
//! outside in:
//!
//! 1. **Rate limit** outermost: the cheapest refusal, per client, before the request takes
//!    anything else. A refused request occupies no bulkhead slot, spends no retry budget and
//!    tells the breaker nothing (back-pressure is not an upstream failure).
//! 2. **Bulkhead**: bounds how many admitted requests run against the upstream at once. Its slot
//!    is held across every retry attempt and backoff, so retries cannot push concurrency past
//!    the limit.
//! 3. (**Dead-letter capture**, feature `dlq`: sees the final result after all attempts, and
//!    none of the caller's own refusals from the two layers above.)
//! 4. **Retry with a budget**: outside the breaker, so each attempt passes through it (one
//!    failed attempt is one failure) and an attempt after the breaker opened is refused at once;
//!    the policy should not retry Palisade's refusals ([`classify::is_refusal`]). The budget caps
//!    retries at a fraction of the traffic, so a struggling upstream is not hit with a retry
//!    storm.
//! 5. **Circuit breaker** outside the timeout: a timed-out attempt reaches it as an error and
//!    counts as a failure.
//! 6. **Timeout** innermost: per attempt, so each retry gets a fresh deadline.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use http::{Request, Response, StatusCode};
//! use palisade_breaker::CircuitBreaker;
//! use palisade_bulkhead::Bulkhead;
//! use palisade_ratelimit::{KeyedRateLimiter, Quota};
//! use palisade_tower::{BulkheadLayer, CircuitBreakerLayer, RateLimitLayer, classify};
//! use palisade_tower::ratelimit::GlobalKey;
//! use tower::retry::{Policy, RetryLayer, budget::{Budget, TpsBudget}};
//! use tower::timeout::TimeoutLayer;
//! use tower::{BoxError, ServiceBuilder, ServiceExt};
//!
//! /// Retries 5xx and errors (never Palisade's refusals) while the budget allows.
//! #[derive(Clone)]
//! struct RetryFailures { budget: Arc<TpsBudget>, left: u32 }
//!
//! impl<B: Clone, R> Policy<Request<B>, Response<R>, BoxError> for RetryFailures {
//!     type Future = std::future::Ready<()>;
//!     fn retry(&mut self, _: &mut Request<B>, result: &mut Result<Response<R>, BoxError>)
//!         -> Option<Self::Future>
//!     {
//!         let failed = match result {
//!             Ok(reply) => reply.status().is_server_error(),
//!             Err(err) => !classify::is_refusal(err),
//!         };
//!         if !failed {
//!             self.budget.deposit();
//!             return None;
//!         }
//!         if self.left == 0 || !self.budget.withdraw() {
//!             return None;
//!         }
//!         self.left -= 1;
//!         Some(std::future::ready(()))
//!     }
//!     fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
//!         Some(req.clone())
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let limiter = KeyedRateLimiter::<String>::builder("gateway").quota(Quota::per_second(100)).build()?;
//! let bulkhead = Bulkhead::builder("github").max_concurrent(8).max_wait(Duration::from_millis(100)).build()?;
//! let breaker = CircuitBreaker::builder("github").consecutive_failures(5).build()?;
//! let retry = RetryFailures { budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)), left: 2 };
//!
//! let upstream = tower::service_fn(|_req: Request<String>| async {
//!     Ok::<_, std::io::Error>(Response::new("done".to_string()))
//! });
//! let github = ServiceBuilder::new()
//!     .layer(RateLimitLayer::new(limiter, GlobalKey))
//!     .layer(BulkheadLayer::new(bulkhead))
//!     .layer(RetryLayer::new(retry))
//!     .layer(CircuitBreakerLayer::new(breaker))
//!     .layer(TimeoutLayer::new(Duration::from_secs(10)))
//!     .service(upstream);
//!
//! let reply = github.oneshot(Request::new("create issue".to_string())).await?;
//! assert_eq!(reply.status(), StatusCode::OK);
//! # Ok::<(), BoxError>(())
//! # }).unwrap();
//! ```
//!
//! In an axum router, put `HandleErrorLayer::new(palisade_tower::handle_error)` (feature `axum`)
//! above the stack: refusals become 429/503 responses with their headers, timeouts 504.
//!
//! ## Lifetimes
//!
//! `palisade_breaker::Permit` and `palisade_bulkhead::Permit` borrow their component, and a tower
//! response future must be `'static`, so [`CircuitBreakerLayer::new`] and [`BulkheadLayer::new`]
//! keep the component behind a `&'static` reference (a leaked pointer-sized allocation per
//! layer; the component's state is shared with every clone of the handle, as before). Build
//! layers once at startup.

mod refusal;

pub mod breaker;
pub mod bulkhead;
pub mod classify;
#[cfg(feature = "dlq")]
pub mod dlq;
pub mod ratelimit;
#[cfg(feature = "axum")]
mod response;

pub use breaker::CircuitBreakerLayer;
pub use bulkhead::BulkheadLayer;
pub use classify::HttpClassifier;
#[cfg(feature = "dlq")]
pub use dlq::DeadLetterLayer;
pub use ratelimit::RateLimitLayer;
pub use refusal::{BULKHEAD_RETRY_AFTER, HALF_OPEN_RETRY_AFTER, Refusal};
#[cfg(feature = "axum")]
pub use response::{error_response, handle_error};

/// Moves `value` to the heap for the rest of the process (the layers' components; see the
/// crate docs on lifetimes).
fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

/// The error of a response future polled again after it completed (a caller's bug).
#[cold]
fn polled_after_completion() -> tower::BoxError {
    "palisade-tower: response future polled after completion".into()
}
