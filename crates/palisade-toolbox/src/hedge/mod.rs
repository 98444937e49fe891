//! Hedged requests: a second attempt after a delay, the first answer wins, the loser is
//! cancelled.
//!
//! - [`Hedge`]: the component (a [`Registry`](palisade_core::Registry) component of kind
//!   `hedge`). [`Hedge::call_idempotent`] takes a closure that can make the call twice and
//!   hedges it; [`Hedge::call`] takes one future and never hedges it. There is no way to hedge
//!   a call by passing a flag, so a non-idempotent call is not hedged by accident.
//! - [`HedgeDelay`]: fixed, or a percentile of recent successful calls' latencies with a floor
//!   and a ceiling ([`PercentileDelay`]).
//! - Every hedge spends a token of a [`RetryBudget`](crate::budget::RetryBudget) (shareable
//!   with a [`Retry`](crate::retry::Retry)), so hedges stay a bounded share of the traffic.
//! - `HedgeLayer` (feature `tower`): the same for a tower service, hedging the requests an
//!   [`Idempotent`] predicate accepts.
//!
//! ```
//! use std::time::Duration;
//! use palisade_toolbox::budget::RetryBudget;
//! use palisade_toolbox::hedge::Hedge;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! let budget = RetryBudget::builder().ratio(0.05).min_retries_per_second(1.0).build()?;
//! let hedge = Hedge::builder("replicas")
//!     .percentile_delay(95.0, Duration::from_millis(5))
//!     .budget(budget)
//!     .build()?;
//! let row = hedge.call_idempotent(|| async { Ok::<_, ()>("row") }).await;
//! assert_eq!(row, Ok("row"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod builder;
mod call;
mod config;
mod control;
#[allow(clippy::module_inception)]
mod hedge;
mod idempotent;
mod latency;
#[cfg(feature = "tower")]
mod layer;
pub mod names;
mod race;

pub use builder::HedgeBuilder;
pub use call::{HedgedCall, SingleCall};
pub use config::{HedgeConfig, HedgeDelay, MAX_HEDGE_DELAY, PercentileDelay};
pub use control::{HedgeCommand, HedgeSnapshot};
pub use hedge::Hedge;
#[cfg(feature = "http")]
pub use idempotent::IdempotentMethods;
pub use idempotent::{AllIdempotent, Idempotent};
#[cfg(feature = "tower")]
pub use layer::{HedgeFuture, HedgeLayer, HedgeService};
