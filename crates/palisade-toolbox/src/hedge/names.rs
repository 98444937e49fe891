//! Metric names of hedges (all with label `name`), exported by
//! [`Managed::export_metrics`](palisade_core::Managed::export_metrics) from the component's own
//! counters. The budget's are in [`crate::budget::names`].

/// Counter of calls, hedgeable or not; label `name`.
pub const HEDGE_CALLS_TOTAL: &str = "palisade_hedge_calls_total";
/// Counter of idempotent (hedgeable) calls; label `name`.
pub const HEDGE_IDEMPOTENT_CALLS_TOTAL: &str = "palisade_hedge_idempotent_calls_total";
/// Counter of second attempts sent; label `name`.
pub const HEDGE_SENT_TOTAL: &str = "palisade_hedge_sent_total";
/// Counter of calls the second attempt answered first; label `name`.
pub const HEDGE_WON_TOTAL: &str = "palisade_hedge_won_total";
/// Counter of losing attempts cancelled; label `name`.
pub const HEDGE_CANCELLED_TOTAL: &str = "palisade_hedge_cancelled_losers_total";
/// Counter of hedges the budget refused; label `name`.
pub const HEDGE_BUDGET_DENIED_TOTAL: &str = "palisade_hedge_budget_denied_total";
/// Gauge of the delay in force, in seconds; label `name`.
pub const HEDGE_DELAY_SECONDS: &str = "palisade_hedge_delay_seconds";

pub(crate) fn export(snap: &super::HedgeSnapshot) {
    let name = snap.name.clone();
    for (metric, n) in [
        (HEDGE_CALLS_TOTAL, snap.calls_total),
        (HEDGE_IDEMPOTENT_CALLS_TOTAL, snap.idempotent_calls_total),
        (HEDGE_SENT_TOTAL, snap.hedges_sent_total),
        (HEDGE_WON_TOTAL, snap.hedges_won_total),
        (HEDGE_CANCELLED_TOTAL, snap.cancelled_losers_total),
        (HEDGE_BUDGET_DENIED_TOTAL, snap.budget_denied_total),
    ] {
        metrics::counter!(metric, "name" => name.clone()).absolute(n);
    }
    metrics::gauge!(HEDGE_DELAY_SECONDS, "name" => name).set(snap.current_delay_ms / 1000.0);
}
