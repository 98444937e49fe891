//! Reading Redis replies (RESP2 or RESP3) and stream ids.

use std::cmp::Ordering;

use redis::Value;

/// A string reply (bulk, simple, verbatim) or an integer, as text.
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Okay => Some("OK".to_owned()),
        _ => None,
    }
}

/// An integral reply (an integer or its decimal text).
pub(crate) fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// The elements of an array or set reply; nil is empty.
pub(crate) fn items(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

/// Pairs of a map reply, or of an array of 2-element arrays, or of a flat array.
fn pairs(v: Value) -> Option<Vec<(Value, Value)>> {
    match v {
        Value::Map(m) => Some(m),
        other => {
            let list = items(other)?;
            if list
                .iter()
                .all(|e| matches!(e, Value::Array(a) if a.len() == 2))
            {
                list.into_iter()
                    .map(|e| {
                        let mut two = items(e)?.into_iter();
                        Some((two.next()?, two.next()?))
                    })
                    .collect()
            } else {
                let mut out = Vec::with_capacity(list.len() / 2);
                let mut it = list.into_iter();
                while let Some(k) = it.next() {
                    out.push((k, it.next()?));
                }
                Some(out)
            }
        }
    }
}

/// One stream entry: its id and its `cmd` field (absent in a foreign entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamEntry {
    /// `<ms>-<seq>`.
    pub(crate) id: String,
    /// The `cmd` field.
    pub(crate) cmd: Option<String>,
}

/// The entries of an `XREAD` reply on one stream (nil when nothing came).
pub(crate) fn xread(v: Value) -> Option<Vec<StreamEntry>> {
    let mut out = Vec::new();
    for (_stream, entries) in pairs(v)? {
        for entry in items(entries)? {
            let mut parts = items(entry)?.into_iter();
            let id = text(&parts.next()?)?;
            let mut cmd = None;
            for (field, value) in pairs(parts.next().unwrap_or(Value::Nil))? {
                if text(&field).as_deref() == Some("cmd") {
                    cmd = text(&value);
                }
            }
            out.push(StreamEntry { id, cmd });
        }
    }
    Some(out)
}

/// A stream id's two numbers (`<ms>-<seq>`).
pub(crate) fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Orders stream ids numerically (unreadable ones first).
pub(crate) fn cmp_ids(a: &str, b: &str) -> Ordering {
    stream_id(a).cmp(&stream_id(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn xread_resp2_and_resp3() {
        let entries = Value::Array(vec![
            Value::Array(vec![
                bulk("17-0"),
                Value::Array(vec![bulk("cmd"), bulk("{}")]),
            ]),
            Value::Array(vec![
                bulk("17-1"),
                Value::Array(vec![bulk("other"), bulk("x")]),
            ]),
        ]);
        let expected = vec![
            StreamEntry {
                id: "17-0".into(),
                cmd: Some("{}".into()),
            },
            StreamEntry {
                id: "17-1".into(),
                cmd: None,
            },
        ];
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("s"), entries.clone()])]);
        assert_eq!(xread(resp2), Some(expected.clone()));
        let resp3 = Value::Map(vec![(bulk("s"), entries)]);
        assert_eq!(xread(resp3), Some(expected));
        assert_eq!(xread(Value::Nil), Some(Vec::new()));
        assert_eq!(xread(Value::Int(3)), None);
    }

    #[test]
    fn stream_ids_compare_numerically() {
        assert_eq!(stream_id("1700000000000-12"), Some((1_700_000_000_000, 12)));
        assert_eq!(stream_id("x"), None);
        assert_eq!(cmp_ids("9-0", "10-0"), Ordering::Less);
        assert_eq!(cmp_ids("10-2", "10-10"), Ordering::Less);
        assert_eq!(cmp_ids("10-2", "10-2"), Ordering::Equal);
    }
}
