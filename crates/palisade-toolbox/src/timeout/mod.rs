//! [`Timeout`]: a per-call deadline, as a named component.
//!
//! A call that runs past its deadline is dropped (its future is cancelled) and ends in
//! [`TimeoutError::Elapsed`]. The deadline is the component's (changeable at runtime by
//! operators) or one given per call. With a breaker (feature `breaker`),
//! [`Timeout::classifier`] counts an elapsed deadline as a failure or as a slow call, as the
//! config's [`CountAs`] says.
//!
//! A call whose future is ready on its first poll costs no clock read, no timer and no
//! allocation: the timer starts only when the call has to wait.
//!
//! ```
//! use std::time::Duration;
//! use palisade_toolbox::{Timeout, TimeoutError};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let timeout = Timeout::builder("weather")
//!     .deadline(Duration::from_secs(2))
//!     .build()
//!     .unwrap();
//! let fast = timeout.call(async { Ok::<_, std::io::Error>(21) }).await;
//! assert_eq!(fast.unwrap(), 21);
//! let slow = timeout
//!     .call(async {
//!         tokio::time::sleep(Duration::from_secs(5)).await;
//!         Ok::<_, std::io::Error>(0)
//!     })
//!     .await;
//! assert!(matches!(slow, Err(TimeoutError::Elapsed { .. })));
//! assert_eq!(slow.unwrap_err().to_string(), "'weather' timed out after 2000 ms");
//! assert_eq!(timeout.snapshot().timeouts_total, 1);
//! # }
//! ```

mod config;
mod control;
mod error;
mod future;
mod handle;
mod latency;
#[cfg(feature = "tower")]
mod layer;

pub use config::{CountAs, MAX_DEADLINE, TimeoutConfig};
pub use control::{TimeoutCommand, TimeoutSnapshot};
pub use error::TimeoutError;
pub use future::TimeoutCall;
pub use handle::{Timeout, TimeoutBuilder};
pub use latency::{LATENCY_BOUNDS_MS, LatencySnapshot};
#[cfg(feature = "tower")]
pub use layer::{TimeoutLayer, TimeoutService};
