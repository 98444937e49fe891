//! Reading script replies (`redis::Value`) without trusting their shape.

use redis::Value;

/// A 0/1 reply.
pub(super) fn flag(v: &Value) -> Option<bool> {
    match v {
        Value::Int(0) => Some(false),
        Value::Int(1) => Some(true),
        _ => None,
    }
}

/// The bytes of a string reply.
pub(super) fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// An unsigned integer reply (integer or decimal string).
pub(super) fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        _ => std::str::from_utf8(bytes(v)?).ok()?.parse().ok(),
    }
}

/// Integers of a script's array reply.
pub(super) fn ints(v: &Value) -> Option<Vec<u64>> {
    match v {
        Value::Array(items) => items.iter().map(number).collect(),
        _ => None,
    }
}

/// A string reply as text (lossy).
pub(super) fn text(v: &Value) -> Option<String> {
    bytes(v).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// `(field, value)` pairs of a flat `HGETALL` reply.
pub(super) fn pairs(flat: Vec<Value>) -> Vec<(String, Value)> {
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((text(&k).unwrap_or_default(), v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_read_only_in_their_expected_shape() {
        assert_eq!(flag(&Value::Int(1)), Some(true));
        assert_eq!(flag(&Value::Int(2)), None);
        assert_eq!(number(&Value::BulkString(b"42".to_vec())), Some(42));
        assert_eq!(number(&Value::Int(-1)), None);
        assert_eq!(number(&Value::Nil), None);
        assert_eq!(
            ints(&Value::Array(vec![
                Value::Int(1),
                Value::BulkString(b"2".to_vec())
            ])),
            Some(vec![1, 2])
        );
        assert_eq!(ints(&Value::Array(vec![Value::Nil])), None);
        let flat = vec![
            Value::BulkString(b"acked".to_vec()),
            Value::BulkString(b"3".to_vec()),
            Value::BulkString(b"odd".to_vec()),
        ];
        let p = pairs(flat);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, "acked");
    }
}
