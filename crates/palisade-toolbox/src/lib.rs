//! # palisade-toolbox
//!
//! Retries with a retry budget, hedged requests, per-call timeouts and fallbacks: each a named
//! component in the same [`Registry`](palisade_core::Registry), snapshot, control, event and
//! metrics model as Palisade's breakers and bulkheads, with a plain API and (feature `tower`)
//! a tower layer.

// ---- retry, budget, hedge (owned by the retry work) ----

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
