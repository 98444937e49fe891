//! What an injector injects: a [`Fault`] (latency, an error or a refusal) and its limits.

use std::fmt;
use std::time::Duration;

use palisade_core::config::{ConfigError, check_duration};
use serde::Serialize;

/// Longest injected latency (and `latency_max_ms`): 60 s.
pub const MAX_LATENCY: Duration = Duration::from_secs(60);
/// Longest `retry_after` an injected refusal may carry: 1 h.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// The `retry_after` of an injected refusal when the command gives none: 1 s.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The kind of fault, as named in commands and snapshots (`"latency"`, `"error"`, `"refuse"`).
///
/// An unknown mode is refused with a message naming the field:
///
/// ```
/// use palisade_chaos::FaultMode;
///
/// let mode: FaultMode = serde_json::from_str(r#""refuse""#).unwrap();
/// assert_eq!(mode, FaultMode::Refuse);
/// assert_eq!(mode.as_str(), "refuse");
/// let err = serde_json::from_str::<FaultMode>(r#""explode""#).unwrap_err();
/// assert!(err.to_string().contains("mode"), "{err}");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FaultMode {
    /// Injected latency: the call is delayed, then runs.
    Latency,
    /// An injected error: the call does not run and fails with [`Injected::Error`](crate::Injected::Error).
    Error,
    /// An injected refusal: the call does not run and is refused with a `retry_after`, as an
    /// open breaker or a full rate limit would ([`Injected::Refused`](crate::Injected::Refused)).
    Refuse,
}

impl FaultMode {
    /// Every mode, in the order the dashboard lists them.
    pub const ALL: [FaultMode; 3] = [FaultMode::Latency, FaultMode::Error, FaultMode::Refuse];

    /// The name used in JSON, metrics labels and logs.
    ///
    /// ```
    /// assert_eq!(palisade_chaos::FaultMode::Latency.as_str(), "latency");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            FaultMode::Latency => "latency",
            FaultMode::Error => "error",
            FaultMode::Refuse => "refuse",
        }
    }
}

impl fmt::Display for FaultMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for FaultMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = FaultMode;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a fault mode: \"latency\", \"error\" or \"refuse\"")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FaultMode, E> {
                FaultMode::ALL
                    .into_iter()
                    .find(|m| m.as_str() == v)
                    .ok_or_else(|| {
                        E::custom(format!(
                            "unknown mode {v:?} in field `mode`; use \"latency\", \"error\" or \"refuse\""
                        ))
                    })
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// A fault to inject into the calls an injector lets through.
///
/// ```
/// use std::time::Duration;
/// use palisade_chaos::{Fault, FaultMode};
///
/// let slow = Fault::latency(Duration::from_millis(200));
/// assert_eq!(slow.mode(), FaultMode::Latency);
/// let jittery = Fault::latency_between(Duration::from_millis(100), Duration::from_millis(500));
/// assert!(jittery.validate().is_ok());
/// // A range upside down is refused, naming the field.
/// let bad = Fault::latency_between(Duration::from_millis(500), Duration::from_millis(100));
/// assert_eq!(bad.validate().unwrap_err().field, "latency_max_ms");
/// assert_eq!(Fault::refuse(Duration::from_secs(2)).mode(), FaultMode::Refuse);
/// assert_eq!(Fault::error().mode(), FaultMode::Error);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Delay the call by `min` (when `min == max`) or by a uniform pick from `min..=max`.
    Latency {
        /// The shortest delay (1 ms to [`MAX_LATENCY`]).
        min: Duration,
        /// The longest delay (`min` to [`MAX_LATENCY`]).
        max: Duration,
    },
    /// Fail the call with [`Injected::Error`](crate::Injected::Error) without running it.
    Error,
    /// Refuse the call with [`Injected::Refused`](crate::Injected::Refused) without running it.
    Refuse {
        /// What the refusal tells the caller to wait (1 ms to [`MAX_RETRY_AFTER`]).
        retry_after: Duration,
    },
}

impl Fault {
    /// A fixed delay.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let f = palisade_chaos::Fault::latency(Duration::from_millis(200));
    /// assert!(f.validate().is_ok());
    /// ```
    pub const fn latency(delay: Duration) -> Fault {
        Fault::Latency {
            min: delay,
            max: delay,
        }
    }

    /// A delay picked uniformly between `min` and `max` for each faulted call.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let f = palisade_chaos::Fault::latency_between(Duration::from_millis(50), Duration::from_secs(1));
    /// assert!(f.validate().is_ok());
    /// ```
    pub const fn latency_between(min: Duration, max: Duration) -> Fault {
        Fault::Latency { min, max }
    }

    /// An injected error.
    ///
    /// ```
    /// assert_eq!(palisade_chaos::Fault::error(), palisade_chaos::Fault::Error);
    /// ```
    pub const fn error() -> Fault {
        Fault::Error
    }

    /// An injected refusal telling the caller to retry after `retry_after`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let f = palisade_chaos::Fault::refuse(Duration::from_secs(5));
    /// assert!(f.validate().is_ok());
    /// ```
    pub const fn refuse(retry_after: Duration) -> Fault {
        Fault::Refuse { retry_after }
    }

    /// The fault's mode.
    ///
    /// ```
    /// # use palisade_chaos::{Fault, FaultMode};
    /// assert_eq!(Fault::error().mode(), FaultMode::Error);
    /// ```
    pub const fn mode(&self) -> FaultMode {
        match self {
            Fault::Latency { .. } => FaultMode::Latency,
            Fault::Error => FaultMode::Error,
            Fault::Refuse { .. } => FaultMode::Refuse,
        }
    }

    /// Checks the fault's durations; the error names the command field (`latency_ms`,
    /// `latency_max_ms`, `retry_after_ms`).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let e = palisade_chaos::Fault::latency(Duration::ZERO).validate().unwrap_err();
    /// assert_eq!(e.field, "latency_ms");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        match *self {
            Fault::Latency { min, max } => {
                check_duration("latency_ms", min, Duration::from_millis(1), MAX_LATENCY)?;
                if max < min {
                    return Err(ConfigError::new(
                        "latency_max_ms",
                        format!(
                            "{} ms is below latency_ms ({} ms); the range must not be upside down",
                            max.as_millis(),
                            min.as_millis()
                        ),
                    ));
                }
                check_duration("latency_max_ms", max, min, MAX_LATENCY)
            }
            Fault::Error => Ok(()),
            Fault::Refuse { retry_after } => check_duration(
                "retry_after_ms",
                retry_after,
                Duration::from_millis(1),
                MAX_RETRY_AFTER,
            ),
        }
    }

    /// The fault from a command's fields: `latency_ms` (and `latency_max_ms`) only with mode
    /// `latency`, `retry_after_ms` only with mode `refuse` (default [`DEFAULT_RETRY_AFTER`]).
    /// A missing or misplaced field is refused, naming it.
    pub(crate) fn from_fields(
        mode: FaultMode,
        latency_ms: Option<u64>,
        latency_max_ms: Option<u64>,
        retry_after_ms: Option<u64>,
    ) -> Result<Fault, ConfigError> {
        let only = |field: &str, wanted: FaultMode| {
            ConfigError::new(
                field,
                format!("is only used with mode \"{wanted}\", not \"{mode}\"; leave it out"),
            )
        };
        let fault = match mode {
            FaultMode::Latency => {
                if retry_after_ms.is_some() {
                    return Err(only("retry_after_ms", FaultMode::Refuse));
                }
                let min = latency_ms.ok_or_else(|| {
                    ConfigError::new(
                        "latency_ms",
                        "is required with mode \"latency\": the delay in milliseconds, such as 200",
                    )
                })?;
                let min = Duration::from_millis(min);
                let max = latency_max_ms.map_or(min, Duration::from_millis);
                Fault::Latency { min, max }
            }
            FaultMode::Error => {
                if latency_ms.is_some() {
                    return Err(only("latency_ms", FaultMode::Latency));
                }
                if latency_max_ms.is_some() {
                    return Err(only("latency_max_ms", FaultMode::Latency));
                }
                if retry_after_ms.is_some() {
                    return Err(only("retry_after_ms", FaultMode::Refuse));
                }
                Fault::Error
            }
            FaultMode::Refuse => {
                if latency_ms.is_some() {
                    return Err(only("latency_ms", FaultMode::Latency));
                }
                if latency_max_ms.is_some() {
                    return Err(only("latency_max_ms", FaultMode::Latency));
                }
                Fault::Refuse {
                    retry_after: retry_after_ms.map_or(DEFAULT_RETRY_AFTER, Duration::from_millis),
                }
            }
        };
        fault.validate()?;
        Ok(fault)
    }
}

impl fmt::Display for Fault {
    /// `latency 200 ms`, `latency 100 to 500 ms`, `error`, `refuse (retry after 1000 ms)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Latency { min, max } if min == max => {
                write!(f, "latency {} ms", min.as_millis())
            }
            Fault::Latency { min, max } => {
                write!(f, "latency {} to {} ms", min.as_millis(), max.as_millis())
            }
            Fault::Error => f.write_str("error"),
            Fault::Refuse { retry_after } => {
                write!(f, "refuse (retry after {} ms)", retry_after.as_millis())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_become_faults_or_name_the_field() {
        let ms = Duration::from_millis;
        assert_eq!(
            Fault::from_fields(FaultMode::Latency, Some(200), None, None),
            Ok(Fault::latency(ms(200)))
        );
        assert_eq!(
            Fault::from_fields(FaultMode::Latency, Some(100), Some(500), None),
            Ok(Fault::latency_between(ms(100), ms(500)))
        );
        assert_eq!(
            Fault::from_fields(FaultMode::Refuse, None, None, None),
            Ok(Fault::refuse(DEFAULT_RETRY_AFTER))
        );
        assert_eq!(
            Fault::from_fields(FaultMode::Error, None, None, None),
            Ok(Fault::Error)
        );
        let field = |r: Result<Fault, ConfigError>| r.unwrap_err().field;
        assert_eq!(
            field(Fault::from_fields(FaultMode::Latency, None, None, None)),
            "latency_ms"
        );
        assert_eq!(
            field(Fault::from_fields(FaultMode::Latency, Some(0), None, None)),
            "latency_ms"
        );
        assert_eq!(
            field(Fault::from_fields(
                FaultMode::Latency,
                Some(61_000),
                None,
                None
            )),
            "latency_ms"
        );
        assert_eq!(
            field(Fault::from_fields(
                FaultMode::Latency,
                Some(500),
                Some(100),
                None
            )),
            "latency_max_ms"
        );
        assert_eq!(
            field(Fault::from_fields(FaultMode::Error, Some(5), None, None)),
            "latency_ms"
        );
        assert_eq!(
            field(Fault::from_fields(FaultMode::Error, None, None, Some(5))),
            "retry_after_ms"
        );
        assert_eq!(
            field(Fault::from_fields(FaultMode::Refuse, None, None, Some(0))),
            "retry_after_ms"
        );
        assert_eq!(
            field(Fault::from_fields(FaultMode::Refuse, None, Some(3), None)),
            "latency_max_ms"
        );
    }

    #[test]
    fn faults_display_for_operators() {
        let ms = Duration::from_millis;
        assert_eq!(Fault::latency(ms(200)).to_string(), "latency 200 ms");
        assert_eq!(
            Fault::latency_between(ms(100), ms(500)).to_string(),
            "latency 100 to 500 ms"
        );
        assert_eq!(Fault::error().to_string(), "error");
        assert_eq!(
            Fault::refuse(ms(1000)).to_string(),
            "refuse (retry after 1000 ms)"
        );
    }
}
