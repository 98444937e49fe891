//! [`Fallback`]: an answer used when a call is refused or fails, chosen by the kind of
//! failure, as a named component.
//!
//! A classifier says what kind each error is ([`FailureKind`]); the fallback answers the kinds
//! it has a value or a function for and lets every other error through unchanged. Operators
//! see how often each kind was answered, and can switch the fallback off (errors pass
//! through) and on again at runtime.
//!
//! ```
//! use palisade_toolbox::{Fallback, FailureKind, TimeoutError};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // The forecast of the last hour when the upstream times out; its real errors otherwise.
//! let fallback = Fallback::<String, TimeoutError<String>>::builder("forecast")
//!     .classify(|e: &TimeoutError<String>| match e {
//!         TimeoutError::Elapsed { .. } => FailureKind::Timeout,
//!         _ => FailureKind::ServerError,
//!     })
//!     .value(FailureKind::Timeout, "sunny (cached)".to_owned())
//!     .build()
//!     .unwrap();
//! let slow = async { Err(TimeoutError::Elapsed { name: "weather".into(), after: Default::default() }) };
//! assert_eq!(fallback.call(slow).await.unwrap(), "sunny (cached)");
//! let broken = async { Err(TimeoutError::Inner("HTTP 500".to_owned())) };
//! assert!(fallback.call(broken).await.is_err());
//! assert_eq!(fallback.snapshot().used_total, 1);
//! # }
//! ```

mod control;
mod handle;
mod kind;
#[cfg(feature = "tower")]
mod layer;

pub use control::{FallbackCommand, FallbackSnapshot};
pub use handle::{Fallback, FallbackBuilder};
pub use kind::FailureKind;
#[cfg(feature = "tower")]
pub use layer::{FallbackFuture, FallbackLayer, FallbackService};
