//! The injector's metric names (Prometheus conventions, label `name`; `fault` on
//! [`INJECTED_TOTAL`]: `latency`, `error`, `refuse`). Exported by pull, in
//! [`Managed::export_metrics`](palisade_core::Managed::export_metrics).
//!
//! ```
//! assert!(palisade_chaos::metric_names::INJECTED_TOTAL.starts_with("palisade_"));
//! ```

/// Gauge, 1 while faults are injected and 0 otherwise; label `name`.
pub const ENABLED: &str = "palisade_fault_injector_enabled";
/// Gauge of the seconds until the injection switches itself off (0 while off); label `name`.
pub const REMAINING_TTL_SECONDS: &str = "palisade_fault_injector_remaining_ttl_seconds";
/// Counter of calls that passed while the injector was on; label `name`.
pub const CALLS_TOTAL: &str = "palisade_fault_injector_calls_total";
/// Counter of injected faults; labels `name`, `fault` (`latency`, `error`, `refuse`).
pub const INJECTED_TOTAL: &str = "palisade_fault_injector_injected_total";
