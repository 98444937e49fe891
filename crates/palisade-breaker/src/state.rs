//! Breaker states and the packed atomic word that holds the state machine.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Calls pass; outcomes are recorded and may trip the breaker.
    Closed,
    /// Calls are refused until the wait duration has elapsed.
    Open,
    /// A limited number of trial calls pass; their outcomes close or re-open the breaker.
    HalfOpen,
    /// An operator opened the breaker; it refuses every call until reset.
    ForcedOpen,
    /// An operator disabled the breaker; it admits every call and records nothing.
    Disabled,
    /// Calls pass and outcomes are recorded, but the breaker never trips.
    MetricsOnly,
}

impl State {
    /// Every state, in the order of their codes.
    pub const ALL: [State; 6] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Disabled,
        State::MetricsOnly,
    ];

    /// The snake_case name used in JSON, metrics labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
            State::MetricsOnly => "metrics_only",
        }
    }

    /// Whether calls are refused in this state (half-open refuses only beyond its trials).
    pub const fn is_open(self) -> bool {
        matches!(self, State::Open | State::ForcedOpen)
    }

    const fn code(self) -> u64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::ForcedOpen => 3,
            State::Disabled => 4,
            State::MetricsOnly => 5,
        }
    }

    const fn from_code(code: u64) -> State {
        match code {
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            4 => State::Disabled,
            5 => State::MetricsOnly,
            _ => State::Closed,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The breaker's whole state machine in one `u64`, so admission is one atomic load and
/// half-open trial accounting is one compare-and-swap:
///
/// | bits | field |
/// | --- | --- |
/// | 0–2 | state code |
/// | 3–31 | generation: bumped on every transition, so late outcomes of an earlier state are ignored |
/// | 32–47 | half-open trials in flight |
/// | 48–63 | half-open trial successes |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word(pub(crate) u64);

const STATE_BITS: u64 = 0b111;
const GEN_SHIFT: u32 = 3;
const GEN_MASK: u64 = (1 << 29) - 1;
const IN_FLIGHT_SHIFT: u32 = 32;
const SUCCESS_SHIFT: u32 = 48;
const U16: u64 = 0xFFFF;

impl Word {
    pub(crate) const fn new(state: State, generation: u32) -> Word {
        Word(state.code() | (((generation as u64) & GEN_MASK) << GEN_SHIFT))
    }

    #[inline]
    pub(crate) const fn state(self) -> State {
        State::from_code(self.0 & STATE_BITS)
    }

    #[inline]
    pub(crate) const fn generation(self) -> u32 {
        ((self.0 >> GEN_SHIFT) & GEN_MASK) as u32
    }

    pub(crate) const fn in_flight(self) -> u32 {
        ((self.0 >> IN_FLIGHT_SHIFT) & U16) as u32
    }

    pub(crate) const fn successes(self) -> u32 {
        ((self.0 >> SUCCESS_SHIFT) & U16) as u32
    }

    /// The same state and generation with new trial counters (each at most 65 535).
    pub(crate) const fn with_trials(self, in_flight: u32, successes: u32) -> Word {
        let base = self.0 & ((1 << IN_FLIGHT_SHIFT) - 1);
        Word(
            base | (((in_flight as u64) & U16) << IN_FLIGHT_SHIFT)
                | (((successes as u64) & U16) << SUCCESS_SHIFT),
        )
    }

    /// The word a transition to `to` produces: next generation, no trials.
    pub(crate) const fn next(self, to: State) -> Word {
        Word::new(to, self.generation().wrapping_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_packs_and_unpacks() {
        for s in State::ALL {
            let w = Word::new(s, 12345).with_trials(7, 65535);
            assert_eq!(w.state(), s);
            assert_eq!(w.generation(), 12345);
            assert_eq!(w.in_flight(), 7);
            assert_eq!(w.successes(), 65535);
        }
        let wrapped = Word::new(State::Closed, (1 << 29) - 1).next(State::Open);
        assert_eq!(wrapped.generation(), 0);
        assert_eq!(wrapped.state(), State::Open);
    }
}
