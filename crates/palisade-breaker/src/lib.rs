//! # palisade-breaker
//!
//! Circuit breakers for calls to upstreams that fail: stop calling a dependency that is down,
//! probe it with a few trial calls once a wait has passed, and close again when it answers.
//!
//! - States `closed`, `open`, `half_open`, plus the operator states `forced_open`,
//!   `disabled` (admit all, record nothing) and `metrics_only` (record, never trip).
//! - Trips on N consecutive failures (default 3), and optionally on a failure rate or a
//!   slow-call rate over a count-based or time-based sliding window.
//! - Waits (default 60 s) optionally grow on repeated trips up to a cap, with jitter.
//! - Half-open admits at most K concurrent trials; K successes close, one failure re-opens;
//!   a cancelled trial gives its slot back, and trials that go `max_wait_in_half_open`
//!   (default 60 s) without news are presumed hung and re-open the breaker.
//! - A [`Classifier`] says what counts: a caller's bad input or a 429 must not trip a breaker.
//! - Runtime control ([`CircuitBreaker::reset`], [`force_open`](CircuitBreaker::force_open),
//!   [`set_config`](CircuitBreaker::set_config), …), snapshots, events and metrics through
//!   [`palisade_core`], so the admin router handles breakers like every other component.
//!
//! The closed path is one atomic load to admit and one to record, with no lock, allocation or
//! clock read (unless a time window or slow-call detection needs the time).
//!
//! ```
//! use std::time::Duration;
//! use palisade_breaker::{CircuitBreaker, Outcome, State};
//! use palisade_core::{ComponentKind, Registry};
//!
//! # tokio_test(async {
//! let registry = Registry::new();
//! let github = CircuitBreaker::builder("github")
//!     .consecutive_failures(3)
//!     .wait_duration(Duration::from_secs(60))
//!     .half_open_max_calls(2)
//!     .registry(&registry)
//!     .build()?;
//!
//! #[derive(Debug)]
//! enum Error { BadRequest, Upstream }
//! // A caller's bad input says nothing about GitHub's health.
//! let classify = |r: &Result<(), Error>| match r {
//!     Ok(()) => Outcome::Success,
//!     Err(Error::BadRequest) => Outcome::Ignored,
//!     Err(Error::Upstream) => Outcome::Failure,
//! };
//! for _ in 0..5 {
//!     let _ = github.call_classified(classify, async { Err(Error::BadRequest) }).await;
//! }
//! assert_eq!(github.state(), State::Closed);
//!
//! // Operators see and steer it through the registry (the admin router does exactly this).
//! registry
//!     .control(ComponentKind::CircuitBreaker, "github", serde_json::json!({"action": "force_open"}))
//!     .await?;
//! assert_eq!(github.state(), State::ForcedOpen);
//! let snap = registry.snapshot(ComponentKind::CircuitBreaker, "github")?;
//! assert_eq!(snap["state"], "forced_open");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! # fn tokio_test<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

mod breaker;
mod builder;
mod call;
mod classify;
mod config;
mod config_change;
mod control;
mod error;
mod machine;
mod permit;
mod shared;
mod sharing;
mod state;
mod window;

pub use breaker::CircuitBreaker;
pub use builder::Builder;
pub use call::Call;
pub use classify::{Classifier, ErrorsAreFailures, Outcome};
pub use config::{BreakerConfig, FailureRateConfig, SlidingWindow};
pub use control::{
    BreakerCommand, BreakerSnapshot, CallCounts, HalfOpenSnapshot, TransitionSnapshot,
};
pub use error::{CallError, RejectReason, Rejected};
pub use permit::Permit;
pub use sharing::{SharedTrip, SharingSnapshot, SharingStatus};
pub use state::State;
pub use window::WindowSnapshot;
