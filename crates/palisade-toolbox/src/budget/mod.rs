//! Retry budgets: how many retries (and hedges) a component may add to the traffic.
//!
//! A [`RetryBudget`] is shared by every caller of the components that hold it. Each call
//! deposits (a counter increment, nothing else), each retry or hedge withdraws one token, and
//! tokens come from two sources: `ratio` per call over the last `window`, and a floor of
//! `min_retries_per_second`. When an upstream fails for everyone, retries stop at that share
//! instead of multiplying its traffic by `max_attempts`: the retry storm that keeps an
//! overloaded service down never starts.
//!
//! ```
//! use std::time::Duration;
//! use palisade_toolbox::budget::RetryBudget;
//! use palisade_toolbox::hedge::Hedge;
//! use palisade_toolbox::retry::Retry;
//!
//! // One budget for the retries and the hedges in front of one upstream.
//! let budget = RetryBudget::builder().ratio(0.1).min_retries_per_second(5.0).build()?;
//! let retry = Retry::builder("search").budget(budget.clone()).build()?;
//! let hedge = Hedge::builder("search").fixed_delay(Duration::from_millis(50)).budget(budget.clone()).build()?;
//! assert!(retry.budget().ptr_eq(hedge.budget()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[allow(clippy::module_inception)]
mod budget;
mod config;
mod ledger;
pub mod names;
pub(crate) mod patch;

pub(crate) use budget::Withdrawal;
pub use budget::{BudgetBuilder, BudgetSnapshot, RetryBudget};
pub use config::{BudgetConfig, MAX_MIN_RETRIES_PER_SECOND, MAX_RATIO, MAX_WINDOW, MIN_WINDOW};
