//! Config validation errors, environment parsing and a human-friendly duration format.
//!
//! Every component validates its config as a whole before applying it; a bad value is refused
//! with a [`ConfigError`] that names the offending field, and nothing changes.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// An invalid configuration value. `field` is the dotted path of the offending field
/// (`failure_rate.minimum_calls`) or the environment variable (`CIRCUIT_BREAKER_THRESHOLD`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("invalid config `{field}`: {reason}")]
pub struct ConfigError {
    /// The offending field or environment variable.
    pub field: String,
    /// What is wrong with it and what is accepted.
    pub reason: String,
}

impl ConfigError {
    /// A new error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error with `prefix.` in front of its field (for nested configs).
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

/// Returns `Err` naming `field` unless `lo <= value <= hi`.
pub fn check_range<T>(field: &str, value: T, lo: T, hi: T) -> Result<(), ConfigError>
where
    T: PartialOrd + fmt::Display + Copy,
{
    if value < lo || value > hi {
        return Err(ConfigError::new(
            field,
            format!("{value} is out of range; expected {lo} to {hi}"),
        ));
    }
    Ok(())
}

/// `current` with the top-level fields of `patch` replaced: what an operator's "change only
/// these fields" command (`update_config`) applies. A field `patch` does not name keeps its
/// value; an unknown field or a value of the wrong type is an error naming it (field `config`
/// and the parser's message). The result still needs the component's own validation.
///
/// ```
/// use std::time::Duration;
/// use palisade_core::config::merge_config;
///
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// #[serde(deny_unknown_fields)]
/// struct Cfg { threshold: u32, #[serde(with = "palisade_core::config::duration")] wait: Duration }
///
/// let current = Cfg { threshold: 5, wait: Duration::from_secs(10) };
/// let patch = serde_json::json!({"wait": "30s"});
/// let next = merge_config(&current, patch.as_object().unwrap().clone()).unwrap();
/// assert_eq!(next, Cfg { threshold: 5, wait: Duration::from_secs(30) });
///
/// let bad = serde_json::json!({"treshold": 3});
/// assert!(merge_config(&current, bad.as_object().unwrap().clone()).unwrap_err().reason.contains("treshold"));
/// ```
pub fn merge_config<C>(
    current: &C,
    patch: serde_json::Map<String, serde_json::Value>,
) -> Result<C, ConfigError>
where
    C: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut merged = match serde_json::to_value(current) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(_) => {
            return Err(ConfigError::new(
                "config",
                "the config is not a JSON object",
            ));
        }
        Err(e) => return Err(ConfigError::new("config", e.to_string())),
    };
    merged.extend(patch);
    serde_json::from_value(serde_json::Value::Object(merged))
        .map_err(|e| ConfigError::new("config", e.to_string()))
}

/// Returns `Err` naming `field` unless `lo <= d <= hi`.
pub fn check_duration(
    field: &str,
    d: Duration,
    lo: Duration,
    hi: Duration,
) -> Result<(), ConfigError> {
    if d < lo || d > hi {
        return Err(ConfigError::new(
            field,
            format!("{d:?} is out of range; expected {lo:?} to {hi:?}"),
        ));
    }
    Ok(())
}

/// Reads environment variables through a lookup function, so that tests need not mutate the
/// process environment.
///
/// ```
/// use palisade_core::config::Env;
///
/// let env = Env::from_fn(|k| (k == "CIRCUIT_BREAKER_THRESHOLD").then(|| "5".to_string()));
/// assert_eq!(env.parse::<u32>("CIRCUIT_BREAKER_THRESHOLD").unwrap(), Some(5));
/// assert_eq!(env.parse::<u32>("UNSET").unwrap(), None);
/// ```
pub struct Env<F = fn(&str) -> Option<String>> {
    lookup: F,
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Env {
            lookup: |k| std::env::var(k).ok(),
        }
    }
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// An environment backed by `lookup`.
    pub fn from_fn(lookup: F) -> Self {
        Env { lookup }
    }

    /// The raw value of `key`, if set and not blank.
    pub fn get(&self, key: &str) -> Option<String> {
        (self.lookup)(key).filter(|v| !v.trim().is_empty())
    }

    /// Parses `key` with [`FromStr`]; `Ok(None)` when unset, an error naming `key` when malformed.
    pub fn parse<T>(&self, key: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.get(key) {
            None => Ok(None),
            Some(raw) => raw
                .trim()
                .parse::<T>()
                .map(Some)
                .map_err(|e| ConfigError::new(key, format!("cannot parse {raw:?}: {e}"))),
        }
    }

    /// Parses `key` as a boolean (`true/false`, `1/0`, `yes/no`, `on/off`).
    pub fn parse_bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(raw) => match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(Some(true)),
                "false" | "0" | "no" | "off" => Ok(Some(false)),
                _ => Err(ConfigError::new(
                    key,
                    format!("cannot parse {raw:?} as a boolean; use true or false"),
                )),
            },
        }
    }

    /// Parses `key` as a duration: a bare number is taken in `bare_unit`
    /// (`CIRCUIT_BREAKER_TIMEOUT=60` means seconds), or a value with a unit such as `500ms`.
    pub fn parse_duration(
        &self,
        key: &str,
        bare_unit: Duration,
    ) -> Result<Option<Duration>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(raw) => {
                let t = raw.trim();
                if let Ok(n) = t.parse::<f64>() {
                    if !n.is_finite() || n < 0.0 {
                        return Err(ConfigError::new(
                            key,
                            format!("{raw:?} must be a non-negative number"),
                        ));
                    }
                    return Duration::try_from_secs_f64(bare_unit.as_secs_f64() * n)
                        .map(Some)
                        .map_err(|e| ConfigError::new(key, e.to_string()));
                }
                parse_duration(t)
                    .map(Some)
                    .map_err(|e| ConfigError::new(key, e))
            }
        }
    }
}

/// Parses `"250ms"`, `"1.5s"`, `"2m"`, `"1h"`, `"7d"`, `"100us"` or `"10ns"`.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(palisade_core::config::parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert!(palisade_core::config::parse_duration("soon").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{s:?} has no unit; use ns, us, ms, s, m, h or d"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} does not start with a number"))?;
    let secs_per_unit = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => {
            return Err(format!(
                "unknown unit {other:?}; use ns, us, ms, s, m, h or d"
            ));
        }
    };
    Duration::try_from_secs_f64(n * secs_per_unit).map_err(|e| format!("{s:?}: {e}"))
}

/// Formats a duration the way [`parse_duration`] reads it back (`"250ms"`, `"60s"`).
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        "0s".to_string()
    } else if nanos % 1_000_000_000 == 0 {
        format!("{}s", d.as_secs())
    } else if nanos % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else if nanos % 1_000 == 0 {
        format!("{}us", d.as_micros())
    } else {
        format!("{nanos}ns")
    }
}

/// Serde helpers for `Duration` fields: serialize as `"250ms"`, deserialize from such a string
/// or from an integer number of **milliseconds**.
///
/// ```
/// use std::time::Duration;
/// #[derive(serde::Deserialize, serde::Serialize)]
/// struct C { #[serde(with = "palisade_core::config::duration")] wait: Duration }
///
/// let c: C = serde_json::from_str(r#"{"wait": "1.5s"}"#).unwrap();
/// assert_eq!(c.wait, Duration::from_millis(1500));
/// let c: C = serde_json::from_str(r#"{"wait": 250}"#).unwrap();
/// assert_eq!(c.wait, Duration::from_millis(250));
/// assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"wait":"250ms"}"#);
/// ```
pub mod duration {
    use super::{format_duration, parse_duration};
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;
    use std::time::Duration;

    /// Serializes as a string such as `"250ms"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    /// Deserializes from `"250ms"`-style strings or integer milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as \"250ms\", \"60s\" or integer milliseconds")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_millis)
                .map_err(|_| E::custom(format!("duration must not be negative, got {v}")))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            if !v.is_finite() || v < 0.0 {
                return Err(E::custom(format!(
                    "duration must be a non-negative number, got {v}"
                )));
            }
            Duration::try_from_secs_f64(v / 1000.0).map_err(E::custom)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }
    }

    /// The same for `Option<Duration>` (`null` or absent means `None`).
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use std::time::Duration;

        /// Serializes `Some(d)` like [`super::serialize`], `None` as null.
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        /// Deserializes null as `None`, anything else like [`super::deserialize`].
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            #[derive(Deserialize)]
            struct Wrap(#[serde(with = "super")] Duration);
            Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for d in [
            Duration::ZERO,
            Duration::from_secs(60),
            Duration::from_millis(250),
            Duration::from_micros(7),
            Duration::from_nanos(13),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }

    #[test]
    fn bad_durations_name_the_problem() {
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(
            parse_duration("10 fortnights")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_duration("ms").unwrap_err().contains("number"));
    }

    #[test]
    fn env_errors_name_the_variable() {
        let env = Env::from_fn(|k| match k {
            "A" => Some("abc".into()),
            "B" => Some("-3".into()),
            "C" => Some("maybe".into()),
            "D" => Some("1.5".into()),
            "E" => Some("  ".into()),
            _ => None,
        });
        let e = env.parse::<u32>("A").unwrap_err();
        assert_eq!(e.field, "A");
        assert!(e.to_string().contains("cannot parse \"abc\""), "{e}");
        assert_eq!(
            env.parse_duration("B", Duration::from_secs(1))
                .unwrap_err()
                .field,
            "B"
        );
        assert_eq!(env.parse_bool("C").unwrap_err().field, "C");
        assert_eq!(
            env.parse_duration("D", Duration::from_secs(1)).unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(env.parse::<u32>("E").unwrap(), None);
    }

    #[test]
    fn range_check_names_field() {
        assert!(check_range("x", 5, 1, 10).is_ok());
        let e = check_range("x", 11, 1, 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid config `x`: 11 is out of range; expected 1 to 10"
        );
        assert_eq!(e.within("outer").field, "outer.x");
    }
}
