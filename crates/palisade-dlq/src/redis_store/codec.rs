//! Entries as the scripts store them, and the script arguments Rust encodes: the pure part of
//! the Redis store (no connection), unit-tested without Redis.
//!
//! An entry is one value of the queue's `entries` hash, three parts separated by line feeds
//! (see the module documentation of the store): the status line the scripts write, the origin
//! line written once by `enqueue`, and the raw payload.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::failure::FailureKind;
use crate::policy::Schedule;
use crate::store::{EntryId, EntryState, FailureRecord, StoreError, StoredEntry};

/// The longest delay or lease passed to Redis, in ms (about 31,700 years): `now + delay` then
/// stays an exact integer in Lua's doubles.
pub(super) const MAX_MS: u64 = 1_000_000_000_000_000;

/// An id as the scripts take it and the `entries` hash names its fields: zero-padded to 20
/// digits (see the module documentation).
pub(super) fn padded(id: EntryId) -> String {
    format!("{id:020}")
}

/// Milliseconds of `d`, capped at [`MAX_MS`].
pub(super) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).min(MAX_MS)
}

/// `(park, delay ms)` arguments of a schedule.
pub(super) fn schedule_args(schedule: Schedule) -> (&'static str, u64) {
    match schedule {
        Schedule::RetryIn(d) => ("0", ms(d)),
        Schedule::Park => ("1", 0),
    }
}

/// A string as JSON (for the scripts, which paste it into a status line).
pub(super) fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// A filter field as the list script takes it: empty for any, else `=value`.
pub(super) fn filter_arg(v: Option<&str>) -> String {
    v.map_or_else(String::new, |v| format!("={v}"))
}

/// The list script's origin prefix for an operation filter: empty for any, else the start of
/// the origin line as [`origin_line`] writes it (`{"op":<op as JSON>,`).
pub(super) fn op_prefix(op: Option<&str>) -> String {
    op.map_or_else(String::new, |op| format!("{{\"op\":{},", json_string(op)))
}

/// The origin line of a new entry: `{"op":"...","meta":{...}}`.
pub(super) fn origin_line(
    operation: &str,
    metadata: &BTreeMap<String, String>,
) -> Result<String, StoreError> {
    serde_json::to_string(&OriginRef {
        op: operation,
        meta: metadata,
    })
    .map_err(|e| StoreError::Unavailable(format!("metadata does not serialize to JSON: {e}")))
}

/// The error for a stored entry whose field does not read.
pub(super) fn corrupt(queue: &str, id: EntryId, field: &str, why: &str) -> StoreError {
    StoreError::Corrupt(format!("entry {id} of queue {queue}: field {field}: {why}"))
}

/// Parses entry `id` of queue `queue` (named in errors); `lease_until_ms` is its lease's
/// deadline, `None` when it is not leased. A field that does not read is named in a
/// [`StoreError::Corrupt`].
pub(super) fn parse_entry(
    queue: &str,
    id: EntryId,
    entry: &[u8],
    lease_until_ms: Option<u64>,
) -> Result<StoredEntry, StoreError> {
    let mut parts = entry.splitn(3, |&b| b == b'\n');
    let (Some(status), Some(origin), Some(payload)) = (parts.next(), parts.next(), parts.next())
    else {
        let why = format!(
            "not a status line, an origin line and a payload: {}",
            excerpt(entry)
        );
        return Err(corrupt(queue, id, "*", &why));
    };
    let status: Status = serde_json::from_slice(status)
        .map_err(|e| line_error(queue, id, "status", status, &STATUS_CHECKS, &e))?;
    let origin: Origin = serde_json::from_slice(origin)
        .map_err(|e| line_error(queue, id, "origin", origin, &ORIGIN_CHECKS, &e))?;
    let state = if lease_until_ms.is_some() {
        EntryState::Leased
    } else {
        status.state
    };
    Ok(StoredEntry {
        id,
        operation: origin.op,
        payload: payload.to_vec(),
        kind: status.kind,
        error: status.err,
        attempts: status.att,
        first_failed_ms: status.first,
        last_failed_ms: status.last,
        // Only meaningful while scheduled (a leased entry keeps its last one).
        next_attempt_ms: status.next.filter(|_| state == EntryState::Scheduled),
        state,
        metadata: origin.meta,
        history: status.hist,
        lease_until_ms,
    })
}

/// A short, printable excerpt of a bad value for error messages.
pub(super) fn excerpt(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let mut out: String = s.chars().take(40).collect();
    if s.chars().count() > 40 {
        out.push_str("...");
    }
    format!("{out:?}")
}

/// An entry's status line (see the module documentation).
#[derive(Deserialize)]
struct Status {
    kind: FailureKind,
    state: EntryState,
    att: u32,
    first: u64,
    last: u64,
    next: Option<u64>,
    err: String,
    hist: Vec<FailureRecord>,
}

/// An entry's origin line, as read.
#[derive(Deserialize)]
struct Origin {
    op: String,
    meta: BTreeMap<String, String>,
}

/// An entry's origin line, as written.
#[derive(Serialize)]
struct OriginRef<'a> {
    op: &'a str,
    meta: &'a BTreeMap<String, String>,
}

/// Whether a JSON value reads as a `T`, or why not.
fn reads_as<T: DeserializeOwned>(v: &serde_json::Value) -> Result<(), String> {
    T::deserialize(v).map(|_| ()).map_err(|e| e.to_string())
}

/// A field of a status or origin line and its check.
type Check = (&'static str, fn(&serde_json::Value) -> Result<(), String>);

/// The fields of a status line, in the order they are checked.
const STATUS_CHECKS: [Check; 8] = [
    ("kind", reads_as::<FailureKind>),
    ("err", reads_as::<String>),
    ("att", reads_as::<u32>),
    ("first", reads_as::<u64>),
    ("last", reads_as::<u64>),
    ("state", reads_as::<EntryState>),
    ("next", reads_as::<Option<u64>>),
    ("hist", reads_as::<Vec<FailureRecord>>),
];

/// The fields of an origin line.
const ORIGIN_CHECKS: [Check; 2] = [
    ("op", reads_as::<String>),
    ("meta", reads_as::<BTreeMap<String, String>>),
];

/// Names the field of a line that does not parse.
fn line_error(
    queue: &str,
    id: EntryId,
    line: &str,
    raw: &[u8],
    checks: &[Check],
    e: &serde_json::Error,
) -> StoreError {
    let map: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(raw) {
        Ok(map) => map,
        Err(e) => {
            let why = format!("not a JSON object: {}: {e}", excerpt(raw));
            return corrupt(queue, id, line, &why);
        }
    };
    for &(field, check) in checks {
        let why = match map.get(field) {
            // Only `next` may be missing (null).
            None => check(&serde_json::Value::Null)
                .err()
                .map(|_| "missing".to_owned()),
            Some(v) => check(v)
                .err()
                .map(|why| format!("{}: {why}", excerpt(v.to_string().as_bytes()))),
        };
        if let Some(why) = why {
            return corrupt(queue, id, field, &why);
        }
    }
    corrupt(queue, id, line, &e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry as `enqueue.lua` writes it.
    fn stored(status: &str, origin: &str, payload: &[u8]) -> Vec<u8> {
        let mut v = format!("{status}\n{origin}\n").into_bytes();
        v.extend_from_slice(payload);
        v
    }

    const STATUS: &str = r#"{"kind":"timeout","state":"scheduled","att":2,"first":1000,"last":2000,"next":3000,"err":"slow","hist":[{"at_ms":1000,"kind":"server_error","error":"500"}]}"#;

    fn origin() -> String {
        let meta = BTreeMap::from([("trace_id".to_owned(), "abc".to_owned())]);
        origin_line("slack.post", &meta).unwrap()
    }

    #[test]
    fn parses_what_the_scripts_write() {
        // Payloads are raw bytes, line feeds included.
        let raw = stored(STATUS, &origin(), b"\x00\n\xff");
        let e = parse_entry("q", 7, &raw, None).unwrap();
        assert_eq!(e.id, 7);
        assert_eq!(e.operation, "slack.post");
        assert_eq!(e.metadata["trace_id"], "abc");
        assert_eq!(e.payload, b"\x00\n\xff");
        assert_eq!(e.kind, FailureKind::Timeout);
        assert_eq!(e.error, "slow");
        assert_eq!(
            (e.attempts, e.first_failed_ms, e.last_failed_ms),
            (2, 1000, 2000)
        );
        assert_eq!(e.state, EntryState::Scheduled);
        assert_eq!(e.next_attempt_ms, Some(3000));
        assert_eq!(e.history.len(), 1);
        assert_eq!(e.history[0].kind, FailureKind::ServerError);
        assert_eq!(e.lease_until_ms, None);
        // `next` may be missing (null).
        let raw = stored(&STATUS.replace(r#","next":3000"#, ""), &origin(), b"{}");
        assert_eq!(
            parse_entry("q", 7, &raw, None).unwrap().next_attempt_ms,
            None
        );

        // A lease makes it leased, and hides the next attempt.
        let e = parse_entry("q", 7, &raw, Some(9000)).unwrap();
        assert_eq!(e.state, EntryState::Leased);
        assert_eq!(e.lease_until_ms, Some(9000));
        assert_eq!(e.next_attempt_ms, None);
    }

    #[test]
    fn names_the_field_that_does_not_read() {
        let cases = [
            (STATUS.replace(r#""att":2"#, r#""att":"many""#), "field att"),
            (
                STATUS.replace(r#""kind":"timeout""#, r#""kind":"nope""#),
                "field kind",
            ),
            (
                STATUS.replace(r#""state":"scheduled""#, r#""state":"gone""#),
                "field state",
            ),
            (
                STATUS.replace(r#""first":1000,"#, ""),
                "field first: missing",
            ),
            ("not json".to_owned(), "field status: not a JSON object"),
        ];
        for (status, want) in cases {
            let raw = stored(&status, &origin(), b"{}");
            match parse_entry("tool-calls", 42, &raw, None) {
                Err(StoreError::Corrupt(msg)) => {
                    assert!(msg.contains("entry 42 of queue tool-calls"), "{msg}");
                    assert!(msg.contains(want), "{want}: {msg}");
                }
                other => panic!("{want}: expected a corrupt entry, got {other:?}"),
            }
        }
        let raw = stored(STATUS, r#"{"op":"x","meta":"{not json"}"#, b"{}");
        assert!(matches!(
            parse_entry("q", 1, &raw, None),
            Err(StoreError::Corrupt(msg)) if msg.contains("field meta")
        ));
        assert!(matches!(
            parse_entry("q", 1, b"one line only", None),
            Err(StoreError::Corrupt(msg)) if msg.contains("field *")
        ));
    }

    #[test]
    fn arguments_are_encoded_as_the_scripts_expect() {
        assert_eq!(padded(42), "00000000000000000042");
        assert_eq!(padded(u64::MAX).len(), 20);
        assert_eq!(ms(Duration::from_millis(1500)), 1500);
        assert_eq!(ms(Duration::MAX), MAX_MS);
        assert_eq!(schedule_args(Schedule::Park), ("1", 0));
        assert_eq!(
            schedule_args(Schedule::RetryIn(Duration::from_secs(2))),
            ("0", 2000)
        );
        assert_eq!(json_string("a \"b\"\n"), r#""a \"b\"\n""#);
        assert_eq!(filter_arg(None), "");
        assert_eq!(filter_arg(Some("parked")), "=parked");
        // The operation filter is a prefix of the origin line the store writes.
        assert_eq!(op_prefix(None), "");
        let prefix = op_prefix(Some("slack.post"));
        assert!(origin().starts_with(&prefix), "{prefix} / {}", origin());
        assert!(
            !origin_line("slack.posting", &BTreeMap::new())
                .unwrap()
                .starts_with(&prefix)
        );
        assert_eq!(excerpt(&[b'x'; 50]), format!("\"{}...\"", "x".repeat(40)));
    }
}
