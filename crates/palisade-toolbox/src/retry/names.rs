//! Metric names of retries (all with label `name`), exported by
//! [`Managed::export_metrics`](palisade_core::Managed::export_metrics) from the component's own
//! counters. The budget's are in [`crate::budget::names`].

/// Counter of calls (first attempts); label `name`.
pub const RETRY_CALLS_TOTAL: &str = "palisade_retry_calls_total";
/// Counter of retries (attempts after the first); label `name`.
pub const RETRY_RETRIES_TOTAL: &str = "palisade_retry_retries_total";
/// Counter of calls returned after at least one retry; label `name`.
pub const RETRY_RETURNED_AFTER_RETRY_TOTAL: &str = "palisade_retry_returned_after_retry_total";
/// Counter of calls that ended on a retryable result without a retry, by `reason`
/// (`exhausted`, `budget`, `retry_after_too_long`); labels `name`, `reason`.
pub const RETRY_GIVE_UPS_TOTAL: &str = "palisade_retry_give_ups_total";
/// Counter of retries that waited for a `Retry-After` hint; label `name`.
pub const RETRY_AFTER_HONOURED_TOTAL: &str = "palisade_retry_after_honoured_total";

pub(crate) fn export(snap: &super::RetrySnapshot) {
    let name = snap.name.clone();
    metrics::counter!(RETRY_CALLS_TOTAL, "name" => name.clone()).absolute(snap.calls_total);
    metrics::counter!(RETRY_RETRIES_TOTAL, "name" => name.clone()).absolute(snap.retries_total);
    metrics::counter!(RETRY_RETURNED_AFTER_RETRY_TOTAL, "name" => name.clone())
        .absolute(snap.returned_after_retry_total);
    for (reason, n) in [
        ("exhausted", snap.exhausted_total),
        ("budget", snap.budget_denied_total),
        ("retry_after_too_long", snap.retry_after_too_long_total),
    ] {
        metrics::counter!(RETRY_GIVE_UPS_TOTAL, "name" => name.clone(), "reason" => reason)
            .absolute(n);
    }
    metrics::counter!(RETRY_AFTER_HONOURED_TOTAL, "name" => name)
        .absolute(snap.retry_after_honoured_total);
}
