//! Permission to make one call, and the ticket it packs into.

use crate::classify::Outcome;
use crate::shared::Shared;

/// What a permit was issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PermitKind {
    /// Disabled breaker: nothing is recorded.
    Untracked,
    /// Closed or metrics-only breaker.
    Normal,
    /// A half-open trial call holding one of the trial slots.
    Trial,
}

impl PermitKind {
    const fn code(self) -> u64 {
        match self {
            PermitKind::Untracked => 0,
            PermitKind::Normal => 1,
            PermitKind::Trial => 2,
        }
    }

    const fn from_code(code: u64) -> PermitKind {
        match code {
            1 => PermitKind::Normal,
            2 => PermitKind::Trial,
            _ => PermitKind::Untracked,
        }
    }
}

/// A permit's identity as one word: generation in the low 32 bits, kind above.
#[inline]
pub(crate) const fn ticket(generation: u32, kind: PermitKind) -> u64 {
    generation as u64 | (kind.code() << 32)
}

/// The generation and kind a [`ticket`] packs.
#[inline]
pub(crate) const fn unpack(ticket: u64) -> (u32, PermitKind) {
    (ticket as u32, PermitKind::from_code(ticket >> 32))
}

/// Permission to make one call, for code that cannot hand the breaker a future.
///
/// Report how the call went with [`Permit::record`] (or [`success`](Permit::success),
/// [`failure`](Permit::failure), [`ignore`](Permit::ignore)). A permit dropped without a
/// record counts as nothing, and a half-open trial slot it held is given back, so cancelled
/// calls never leak trial slots. A trial that never reports at all (hung, or its permit leaked)
/// holds its slot only until `max_wait_in_half_open` passes without news from any trial; the
/// breaker then re-opens.
///
/// ```
/// use palisade_breaker::{CircuitBreaker, Outcome};
///
/// let breaker = CircuitBreaker::builder("db").build().unwrap();
/// match breaker.try_acquire() {
///     Ok(permit) => {
///         let ok = true; // ... make the call ...
///         permit.record(if ok { Outcome::Success } else { Outcome::Failure });
///     }
///     Err(refused) => eprintln!("{refused}"),
/// }
/// ```
#[must_use = "a permit records nothing unless its outcome is reported"]
pub struct Permit<'a> {
    pub(crate) shared: &'a Shared,
    /// See [`ticket`]. Every field is word-sized: a permit is moved into and out of `call`'s
    /// future state, and narrow fields there cost store-forwarding stalls on the hot path.
    pub(crate) ticket: u64,
    pub(crate) started: u64,
}

impl Permit<'_> {
    #[inline]
    fn kind(&self) -> PermitKind {
        unpack(self.ticket).1
    }

    /// The permit's ticket and start time, without running its `Drop`: the caller takes over
    /// the duty to report (see [`Shared::on_ticket`]).
    #[inline]
    pub(crate) fn into_ticket(self) -> (u64, u64) {
        let parts = (self.ticket, self.started);
        std::mem::forget(self);
        parts
    }

    /// Reports the call's outcome.
    #[inline]
    pub fn record(self, outcome: Outcome) {
        let shared = self.shared;
        let (ticket, started) = self.into_ticket();
        shared.on_ticket(ticket, started, Some(outcome));
    }

    /// Reports a success.
    #[inline]
    pub fn success(self) {
        self.record(Outcome::Success)
    }

    /// Reports a failure.
    #[inline]
    pub fn failure(self) {
        self.record(Outcome::Failure)
    }

    /// Reports an outcome that says nothing about the upstream (see [`Outcome::Ignored`]).
    #[inline]
    pub fn ignore(self) {
        self.record(Outcome::Ignored)
    }

    /// Whether this permit holds a half-open trial slot.
    pub fn is_trial(&self) -> bool {
        self.kind() == PermitKind::Trial
    }
}

impl std::fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &&*self.shared.name)
            .field("trial", &(self.kind() == PermitKind::Trial))
            .finish()
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        self.shared.on_ticket(self.ticket, self.started, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_round_trip() {
        for kind in [PermitKind::Untracked, PermitKind::Normal, PermitKind::Trial] {
            for generation in [0, 1, (1 << 29) - 1, u32::MAX] {
                assert_eq!(unpack(ticket(generation, kind)), (generation, kind));
            }
        }
    }
}
