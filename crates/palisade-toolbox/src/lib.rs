//! # palisade-toolbox
//!
//! Retries with a retry budget, hedged requests, per-call timeouts and fallbacks: each a named
//! component in the same [`Registry`](palisade_core::Registry), snapshot, control, event and
//! metrics model as Palisade's breakers and bulkheads, with a plain API and (feature `tower`)
//! a tower layer.
//!
//! - [`retry`]: [`Retry`] retries failed calls (exponential backoff with full jitter and a cap,
//!   `Retry-After` hints and Palisade's refusals' `retry_after` honoured) within a
//!   [`RetryBudget`] ([`budget`]) shared by all its callers, so a failing upstream sees at most
//!   `1 + ratio` times its traffic (plus a small floor). The first attempt allocates nothing.
//! - [`hedge`]: [`Hedge`] sends a second attempt of an *idempotent* call after a fixed delay or
//!   a tracked latency percentile; the first answer wins and the loser is cancelled. Hedges
//!   spend the same kind of budget (shareable with a retry).

// ---- retry, budget, hedge (owned by the retry work) ----
pub mod budget;
pub use budget::{BudgetConfig, BudgetSnapshot, RetryBudget};
pub mod retry;
#[cfg(feature = "http")]
pub use retry::HttpResponses;
pub use retry::{
    Backoff, Classify, Decision, HintedErrors, Retry, RetryBuilder, RetryCall, RetryCommand,
    RetryConfig, RetryErrors, RetryHint, RetrySnapshot,
};
#[cfg(feature = "tower")]
pub use retry::{RetryFuture, RetryLayer, RetryService};
pub mod hedge;
#[cfg(feature = "http")]
pub use hedge::IdempotentMethods;
pub use hedge::{
    AllIdempotent, Hedge, HedgeBuilder, HedgeCommand, HedgeConfig, HedgeDelay, HedgeSnapshot,
    HedgedCall, Idempotent, PercentileDelay, SingleCall,
};
#[cfg(feature = "tower")]
pub use hedge::{HedgeFuture, HedgeLayer, HedgeService};

// ---- timeout, fallback ----
pub mod timeout;
pub use timeout::{
    CountAs, Timeout, TimeoutBuilder, TimeoutCall, TimeoutCommand, TimeoutConfig, TimeoutError,
    TimeoutSnapshot,
};
#[cfg(feature = "tower")]
pub use timeout::{TimeoutLayer, TimeoutService};
pub mod fallback;
pub use fallback::{FailureKind, Fallback, FallbackBuilder, FallbackCommand, FallbackSnapshot};
#[cfg(feature = "tower")]
pub use fallback::{FallbackFuture, FallbackLayer, FallbackService};
