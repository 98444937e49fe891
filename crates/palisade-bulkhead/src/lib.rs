//! # palisade-bulkhead
//!
//! Semaphore bulkheads: isolate a dependency's calls in a named partition (`database`, `cost`,
//! `infrastructure`, `security`, …) with its own limit, so one slow upstream cannot take every
//! worker of the process.
//!
//! - `max_concurrent` calls run at once; callers wait up to `max_wait` (zero fails fast) in FIFO
//!   order, and at most `max_waiting` may wait.
//! - Permits are released on drop, including when a caller's future is cancelled mid-wait or
//!   mid-call.
//! - [`Bulkhead::set_max_concurrent`] resizes a running partition: growing admits waiters at
//!   once, shrinking never interrupts running calls. Permits are conserved exactly.
//! - An adaptive mode ([`AdaptiveConfig`]): the limit moves between a floor and a ceiling
//!   with observed latency and errors (AIMD), switchable at runtime.
//! - Snapshots, events, metrics and control commands through [`palisade_core`], like every
//!   Palisade component.
//!
//! ```
//! use std::time::Duration;
//! use palisade_bulkhead::{Bulkhead, CallError};
//! use palisade_core::{ComponentKind, Registry};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let registry = Registry::new();
//! let database = Bulkhead::builder("database")
//!     .max_concurrent(5)
//!     .max_wait(Duration::from_millis(100))
//!     .registry(&registry)
//!     .build()?;
//!
//! let rows = database.call(async { Ok::<_, std::io::Error>(vec![1, 2, 3]) }).await?;
//! assert_eq!(rows.len(), 3);
//!
//! // Operators resize it with one admin request (the registry is what the admin router calls).
//! registry
//!     .control(ComponentKind::Bulkhead, "database",
//!              serde_json::json!({"action": "set_max_concurrent", "max_concurrent": 8}))
//!     .await?;
//! assert_eq!(database.max_concurrent(), 8);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod bulkhead;
mod config;
mod control;
mod error;

pub use bulkhead::{Acquire, Builder, Bulkhead, Call, Permit};
pub use config::{AdaptiveConfig, BulkheadConfig, MAX_LIMIT, MAX_WAIT};
pub use control::{BulkheadCommand, BulkheadSnapshot};
pub use error::{BulkheadError, CallError};
