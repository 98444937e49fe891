//! Metric names shared by all components, following Prometheus conventions (`_total` for
//! counters, base units, bounded label sets: component name, state, outcome; never client ids).
//!
//! Labels used: `name` (component name), `state`, `outcome`, `from`, `to`.

/// Gauge, 1 for the breaker's current state and 0 for the others; labels `name`, `state`.
pub const BREAKER_STATE: &str = "palisade_circuit_breaker_state";
/// Counter of calls that ran, by `outcome` (`success`, `failure`, `ignored`, `slow`); label `name`.
pub const BREAKER_CALLS_TOTAL: &str = "palisade_circuit_breaker_calls_total";
/// Counter of calls refused without running; label `name`.
pub const BREAKER_NOT_PERMITTED_TOTAL: &str = "palisade_circuit_breaker_not_permitted_calls_total";
/// Counter of state transitions; labels `name`, `from`, `to`.
pub const BREAKER_TRANSITIONS_TOTAL: &str = "palisade_circuit_breaker_transitions_total";
/// Gauge of the failure rate over the sliding window in percent (-1 until `minimum_calls`); label `name`.
pub const BREAKER_FAILURE_RATE: &str = "palisade_circuit_breaker_failure_rate";
/// Gauge of the slow-call rate over the sliding window in percent (-1 until `minimum_calls`); label `name`.
pub const BREAKER_SLOW_CALL_RATE: &str = "palisade_circuit_breaker_slow_call_rate";

/// Gauge of calls holding a bulkhead permit; label `name`.
pub const BULKHEAD_ACTIVE: &str = "palisade_bulkhead_active_calls";
/// Gauge of a bulkhead's current limit; label `name`.
pub const BULKHEAD_MAX_CONCURRENT: &str = "palisade_bulkhead_max_concurrent_calls";
/// Gauge of callers waiting for a bulkhead permit; label `name`.
pub const BULKHEAD_WAITING: &str = "palisade_bulkhead_waiting_calls";
/// Counter of calls refused because the bulkhead was full; label `name`.
pub const BULKHEAD_REJECTED_TOTAL: &str = "palisade_bulkhead_rejected_calls_total";
/// Counter of calls that gave up waiting for a bulkhead permit; label `name`.
pub const BULKHEAD_TIMEOUTS_TOTAL: &str = "palisade_bulkhead_timeouts_total";

/// Counter of requests a rate limiter admitted; label `name`.
pub const RATE_LIMITER_PERMITTED_TOTAL: &str = "palisade_rate_limiter_permitted_total";
/// Counter of requests a rate limiter refused; label `name`.
pub const RATE_LIMITER_REJECTED_TOTAL: &str = "palisade_rate_limiter_rejected_total";
/// Gauge of keys a local keyed rate limiter tracks; label `name`.
pub const RATE_LIMITER_KEYS: &str = "palisade_rate_limiter_keys";
/// Counter of Redis errors and timeouts of a distributed rate limiter; label `name`.
pub const RATE_LIMITER_BACKEND_ERRORS_TOTAL: &str = "palisade_rate_limiter_backend_errors_total";
/// Gauge, 1 while a distributed rate limiter reaches Redis, 0 while its failure policy decides;
/// label `name`.
pub const RATE_LIMITER_BACKEND_UP: &str = "palisade_rate_limiter_backend_up";

/// Gauge of a dead-letter queue's entries; labels `name`, `state`.
pub const DLQ_ENTRIES: &str = "palisade_dlq_entries";
/// Counter of entries ever enqueued; label `name`.
pub const DLQ_ENQUEUED_TOTAL: &str = "palisade_dlq_enqueued_total";
/// Counter of entries retried successfully and removed; label `name`.
pub const DLQ_ACKED_TOTAL: &str = "palisade_dlq_acked_total";
/// Counter of transitions to `parked`; label `name`.
pub const DLQ_PARKED_TOTAL: &str = "palisade_dlq_parked_total";
/// Counter of entries quarantined because their payload did not decode; label `name`.
pub const DLQ_QUARANTINED_TOTAL: &str = "palisade_dlq_quarantined_total";
/// Counter of entries removed by retention; labels `name`, `reason` (`expired`, `evicted`).
pub const DLQ_REMOVED_TOTAL: &str = "palisade_dlq_removed_total";
/// Gauge of the oldest entry's age in seconds; label `name`.
pub const DLQ_OLDEST_AGE_SECONDS: &str = "palisade_dlq_oldest_entry_age_seconds";

/// Gauge, 1 for a monitored component's current status and 0 for the others; labels `name`,
/// `status`.
pub const HEALTH_STATUS: &str = "palisade_health_status";
/// Counter of restarts of a monitored component; label `name`.
pub const HEALTH_RESTARTS_TOTAL: &str = "palisade_health_restarts_total";
/// Gauge, 1 while a monitored component is in crash-loop protection; label `name`.
pub const HEALTH_CRASH_LOOP: &str = "palisade_health_crash_loop";
