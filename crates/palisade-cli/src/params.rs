//! Operator input turned into what the admin API takes: `k=v` pairs into a JSON object,
//! component kinds by any of their names, durations.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::CliError;

/// `k=v` pairs as a JSON object. A value that parses as JSON is taken as JSON (`5`, `true`,
/// `{"rate":600}`, `"5"` for the string), anything else as a string (`30s`, `fail_open`).
/// Dotted keys nest: `quota.rate=600 quota.period=1m` is `{"quota": {"rate": 600, "period":
/// "1m"}}`.
pub fn assignments(pairs: &[String]) -> Result<Map<String, Value>, CliError> {
    let mut root = Map::new();
    for pair in pairs {
        let Some((key, raw)) = pair.split_once('=') else {
            return Err(CliError::usage(format!(
                "{pair:?} is not key=value (for example wait_duration=30s)"
            )));
        };
        let key = key.trim();
        let path: Vec<&str> = key.split('.').map(str::trim).collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(CliError::usage(format!(
                "{pair:?} has an empty key; write key=value (for example wait_duration=30s)"
            )));
        }
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::from(raw));
        insert(&mut root, &path, value, key)?;
    }
    Ok(root)
}

fn insert(
    map: &mut Map<String, Value>,
    path: &[&str],
    value: Value,
    key: &str,
) -> Result<(), CliError> {
    match path {
        [] => Ok(()),
        [last] => {
            if map.contains_key(*last) {
                return Err(CliError::usage(format!("{key} is given twice")));
            }
            map.insert((*last).to_owned(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let child = map
                .entry((*first).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            match child {
                Value::Object(inner) => insert(inner, rest, value, key),
                _ => Err(CliError::usage(format!(
                    "{key} sets a field inside {first}, which is given a value of its own too"
                ))),
            }
        }
    }
}

/// A command's action from the command line: `force-open` is `force_open`.
pub fn action(name: &str) -> String {
    name.trim().replace('-', "_")
}

/// A component kind: its JSON name and its admin path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The name in JSON (`circuit_breaker`).
    pub json: &'static str,
    /// The collection's path segment under `/admin` (`circuit-breakers`; `health/components`
    /// for health).
    pub path: &'static str,
}

/// Every kind with the other names operators may type for it.
const KINDS: [(Kind, &[&str]); 10] = [
    (
        Kind {
            json: "circuit_breaker",
            path: "circuit-breakers",
        },
        &["breaker", "breakers", "circuit_breakers", "cb"],
    ),
    (
        Kind {
            json: "bulkhead",
            path: "bulkheads",
        },
        &["bulkheads", "partition", "partitions"],
    ),
    (
        Kind {
            json: "rate_limiter",
            path: "rate-limiters",
        },
        &["rate_limiters", "limiter", "limiters", "limit", "limits"],
    ),
    (
        Kind {
            json: "dead_letter_queue",
            path: "dlq",
        },
        &["dlq", "queue", "dead_letter_queues"],
    ),
    (
        Kind {
            json: "health",
            path: "health/components",
        },
        &["health_component", "component"],
    ),
    (
        Kind {
            json: "retry",
            path: "retries",
        },
        &["retries"],
    ),
    (
        Kind {
            json: "hedge",
            path: "hedges",
        },
        &["hedges"],
    ),
    (
        Kind {
            json: "timeout",
            path: "timeouts",
        },
        &["timeouts"],
    ),
    (
        Kind {
            json: "fallback",
            path: "fallbacks",
        },
        &["fallbacks"],
    ),
    (
        Kind {
            json: "fault_injector",
            path: "fault-injectors",
        },
        &["fault_injectors", "fault", "faults", "injector"],
    ),
];

/// The kind `name` names: its JSON name, its admin path, or a short name (`breaker`, `dlq`,
/// `limiter`, `fault`); `-` and `_` are the same.
pub fn kind(name: &str) -> Result<Kind, CliError> {
    let wanted = name.trim().to_ascii_lowercase().replace('-', "_");
    KINDS
        .iter()
        .find(|(k, aliases)| {
            k.json == wanted
                || k.path.replace('-', "_") == wanted
                || aliases.contains(&wanted.as_str())
        })
        .map(|(k, _)| *k)
        .ok_or_else(|| {
            let names: Vec<&str> = KINDS.iter().map(|(k, _)| k.json).collect();
            CliError::usage(format!(
                "unknown component kind {name:?}; use one of {} (or breaker, limiter, dlq, fault)",
                names.join(", ")
            ))
        })
}

/// The longest duration [`duration`] accepts.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A duration: `30s`, `500ms`, `2m`, `1h`, or a number of seconds; at most 24 h.
pub fn duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 30s, 500ms or 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use ms, s, m or h"
            ));
        }
    };
    let d = Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} is not a positive duration"))?;
    if d > MAX_DURATION {
        return Err(format!("{text:?} is longer than the limit of 24h"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn pairs_are_json_when_they_parse_and_strings_otherwise() {
        let m = assignments(&strings(&[
            "wait_duration=30s",
            "consecutive_failures=5",
            "enabled=true",
            "label=\"5\"",
            "quota.rate=600",
            "quota.period=1m",
            "raw={\"a\":[1]}",
            "empty=",
            "url=http://x/?a=b",
        ]))
        .unwrap();
        assert_eq!(
            Value::Object(m),
            json!({
                "wait_duration": "30s", "consecutive_failures": 5, "enabled": true,
                "label": "5", "quota": {"rate": 600, "period": "1m"}, "raw": {"a": [1]},
                "empty": "", "url": "http://x/?a=b"
            })
        );
    }

    #[test]
    fn bad_pairs_are_usage_errors() {
        for bad in [
            &["novalue"][..],
            &["=5"],
            &["a..b=1"],
            &["a=1", "a=2"],
            &["a=1", "a.b=2"],
        ] {
            let e = assignments(&strings(bad)).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
    }

    #[test]
    fn kinds_by_any_name() {
        for name in ["breaker", "circuit_breaker", "circuit-breakers", "CB"] {
            assert_eq!(kind(name).unwrap().json, "circuit_breaker", "{name}");
        }
        assert_eq!(kind("dlq").unwrap().json, "dead_letter_queue");
        assert_eq!(kind("rate-limiters").unwrap().path, "rate-limiters");
        assert_eq!(kind("fault").unwrap().json, "fault_injector");
        assert_eq!(kind("health").unwrap().path, "health/components");
        assert!(kind("nope").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("10"), Ok(Duration::from_secs(10)));
        assert!(duration("0").is_err());
        assert!(duration("x").is_err());
        assert!(duration("5 parsecs").is_err());
        assert!(duration("25h").is_err());
        assert!(duration("1e400").is_err());
        assert!(duration("99999999999999999999999").is_err());
        assert_eq!(action("force-open"), "force_open");
    }
}
