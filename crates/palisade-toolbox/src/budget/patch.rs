//! Operators' partial config changes for configs that hold a budget, and how a change is
//! described in its `config_changed` event.

use palisade_core::ConfigError;
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::{BudgetConfig, RetryBudget};

/// A component's config that carries the settings of its (possibly shared) budget.
pub(crate) trait BudgetedConfig: Clone + PartialEq + Serialize {
    /// The budget's settings in this config.
    fn budget_mut(&mut self) -> &mut BudgetConfig;
}

/// The config in `current`, with the budget's part read from `budget` (which components
/// sharing it may have changed).
pub(crate) fn current_config<C: BudgetedConfig>(current: &Mutex<C>, budget: &RetryBudget) -> C {
    let mut config = current.lock().clone();
    *config.budget_mut() = budget.config();
    config
}

/// Replaces the config in `current` with `new` (already validated): a changed budget part goes
/// to `budget` first (an error there changes nothing), then `store_hot` copies the hot fields,
/// all under the config lock. Returns what changed, for the `config_changed` event.
pub(crate) fn replace_config<C: BudgetedConfig>(
    current: &Mutex<C>,
    budget: &RetryBudget,
    mut new: C,
    store_hot: impl FnOnce(&C),
) -> Result<Option<String>, ConfigError> {
    let mut guard = current.lock();
    let mut old = guard.clone();
    *old.budget_mut() = budget.config();
    if new.budget_mut() != old.budget_mut() {
        budget.set_config(new.budget_mut().clone())?;
    }
    store_hot(&new);
    *guard = new.clone();
    drop(guard);
    Ok(describe_change(&old, &new))
}

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
