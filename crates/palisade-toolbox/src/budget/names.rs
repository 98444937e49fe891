//! Metric names of retry budgets, exported by each component that holds one.
//!
//! Labels: `kind` (`retry` or `hedge`: the component exporting) and `name` (its name). A
//! budget shared by two components is exported under both.

/// Gauge of retries the budget allows now; labels `kind`, `name`.
pub const BUDGET_TOKENS: &str = "palisade_retry_budget_tokens";
/// Counter of calls counted by the budget (one deposit each); labels `kind`, `name`.
pub const BUDGET_DEPOSITS_TOTAL: &str = "palisade_retry_budget_deposits_total";
/// Counter of retries and hedges the budget granted; labels `kind`, `name`.
pub const BUDGET_WITHDRAWALS_TOTAL: &str = "palisade_retry_budget_withdrawals_total";
/// Counter of retries and hedges the budget refused; labels `kind`, `name`.
pub const BUDGET_DENIED_TOTAL: &str = "palisade_retry_budget_denied_total";

/// Exports `snapshot` under the component `kind`/`name`.
pub(crate) fn export(kind: &'static str, name: &str, snapshot: &super::BudgetSnapshot) {
    let name = name.to_owned();
    metrics::gauge!(BUDGET_TOKENS, "kind" => kind, "name" => name.clone()).set(snapshot.tokens);
    metrics::counter!(BUDGET_DEPOSITS_TOTAL, "kind" => kind, "name" => name.clone())
        .absolute(snapshot.deposits_total);
    metrics::counter!(BUDGET_WITHDRAWALS_TOTAL, "kind" => kind, "name" => name.clone())
        .absolute(snapshot.withdrawals_total);
    metrics::counter!(BUDGET_DENIED_TOTAL, "kind" => kind, "name" => name)
        .absolute(snapshot.denied_total);
}
