//! Operators' partial config changes for configs that hold a budget, and how a change is
//! described in its `config_changed` event.

use palisade_core::ConfigError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// `current` with `patch` applied, as `update_config` does: the top-level fields `patch` names
/// are replaced, except an object under `budget`, which changes only the budget fields it
/// names (`{"budget": {"ratio": 0.5}}` keeps the window and the floor). The result still needs
/// the component's validation.
pub(crate) fn merge_patch<C>(current: &C, mut patch: Map<String, Value>) -> Result<C, ConfigError>
where
    C: Serialize + DeserializeOwned,
{
    if let Some(Value::Object(budget_patch)) = patch.get_mut("budget") {
        let current_budget = serde_json::to_value(current)
            .ok()
            .and_then(|v| v.get("budget").and_then(Value::as_object).cloned())
            .unwrap_or_default();
        let mut merged = current_budget;
        merged.extend(std::mem::take(budget_patch));
        *budget_patch = merged;
    }
    palisade_core::config::merge_config(current, patch)
}

/// The fields that differ, as `field=new_value` pairs with nested fields dotted
/// and sorted (`budget.ratio=0.5, max_attempts=5`), or `None` when nothing changed.
pub(crate) fn describe_change<C: Serialize>(old: &C, new: &C) -> Option<String> {
    let (Ok(old), Ok(new)) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        return Some("config replaced".into());
    };
    let mut changed = Vec::new();
    diff("", &old, &new, &mut changed);
    (!changed.is_empty()).then(|| changed.join(", "))
}

fn diff(prefix: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            // Sorted, so that the description does not depend on serde_json's map order.
            let mut keys: Vec<&String> = b.keys().collect();
            keys.sort();
            for k in keys {
                let v = &b[k];
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match a.get(k) {
                    Some(old_v) => diff(&path, old_v, v, out),
                    None => out.push(format!("{path}={v}")),
                }
            }
        }
        _ if old != new => out.push(format!("{prefix}={new}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::BudgetConfig;

    #[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Cfg {
        attempts: u32,
        budget: BudgetConfig,
    }

    impl Default for Cfg {
        fn default() -> Self {
            Cfg {
                attempts: 3,
                budget: BudgetConfig::default(),
            }
        }
    }

    #[test]
    fn a_budget_patch_keeps_the_fields_it_does_not_name() {
        let current = Cfg {
            attempts: 3,
            budget: BudgetConfig {
                min_retries_per_second: 2.0,
                ..Default::default()
            },
        };
        let patch = serde_json::json!({"budget": {"ratio": 0.5}});
        let next = merge_patch(&current, patch.as_object().unwrap().clone()).unwrap();
        assert_eq!(next.budget.ratio, 0.5);
        assert_eq!(next.budget.min_retries_per_second, 2.0);
        assert_eq!(next.attempts, 3);
        let bad = serde_json::json!({"budget": {"ratoi": 0.5}});
        let err = merge_patch(&current, bad.as_object().unwrap().clone()).unwrap_err();
        assert!(err.reason.contains("ratoi"), "{err}");
    }

    #[test]
    fn changes_are_described_with_dotted_paths() {
        let old = Cfg::default();
        assert_eq!(describe_change(&old, &old), None);
        let new = Cfg {
            attempts: 5,
            budget: BudgetConfig {
                ratio: 0.5,
                ..Default::default()
            },
        };
        assert_eq!(
            describe_change(&old, &new).as_deref(),
            Some("attempts=5, budget.ratio=0.5")
        );
    }
}
