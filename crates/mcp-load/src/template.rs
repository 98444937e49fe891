//! Tool arguments with the call number filled in.

use serde_json::{Map, Value};

/// The placeholder replaced by the call number.
pub const CALL_NUMBER: &str = "{i}";

/// The arguments of every call: a JSON object whose strings may hold `{i}`, replaced by the
/// call's number (0, 1, 2 …). A string that is exactly `"{i}"` becomes the number itself.
///
/// ```
/// use mcp_load::ArgsTemplate;
///
/// let template = ArgsTemplate::parse(r#"{"text": "call {i}", "n": "{i}", "fixed": true}"#)?;
/// let args = template.render(7);
/// assert_eq!(args["text"], "call 7");
/// assert_eq!(args["n"], 7);
/// assert_eq!(args["fixed"], true);
/// # Ok::<(), mcp_load::LoadError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ArgsTemplate {
    object: Map<String, Value>,
    templated: bool,
}

impl ArgsTemplate {
    /// Parses `json`, which must be a JSON object.
    pub fn parse(json: &str) -> Result<ArgsTemplate, crate::LoadError> {
        match serde_json::from_str(json) {
            Ok(Value::Object(object)) => Ok(ArgsTemplate::new(object)),
            Ok(other) => Err(crate::LoadError::Args(format!(
                "the arguments must be a JSON object, not {}",
                kind(&other)
            ))),
            Err(e) => Err(crate::LoadError::Args(format!("not JSON: {e}"))),
        }
    }

    /// The arguments `object`, with `{i}` placeholders in its strings.
    pub fn new(object: Map<String, Value>) -> ArgsTemplate {
        let templated = object.values().any(has_placeholder);
        ArgsTemplate { object, templated }
    }

    /// The arguments of call number `i`.
    pub fn render(&self, i: u64) -> Map<String, Value> {
        if !self.templated {
            return self.object.clone();
        }
        let number = i.to_string();
        self.object
            .iter()
            .map(|(k, v)| (k.clone(), fill(v, i, &number)))
            .collect()
    }
}

impl Default for ArgsTemplate {
    fn default() -> Self {
        ArgsTemplate::new(Map::new())
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn has_placeholder(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains(CALL_NUMBER),
        Value::Array(items) => items.iter().any(has_placeholder),
        Value::Object(map) => map.values().any(has_placeholder),
        _ => false,
    }
}

fn fill(value: &Value, i: u64, number: &str) -> Value {
    match value {
        Value::String(s) if s == CALL_NUMBER => Value::from(i),
        Value::String(s) if s.contains(CALL_NUMBER) => Value::from(s.replace(CALL_NUMBER, number)),
        Value::Array(items) => items.iter().map(|v| fill(v, i, number)).collect(),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), fill(v, i, number)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fills_nested_strings_and_keeps_the_rest() {
        let t = ArgsTemplate::parse(
            r#"{"a": ["x{i}", "{i}", 3], "b": {"c": "{i}-{i}"}, "d": null, "e": "plain"}"#,
        )
        .unwrap();
        assert_eq!(
            Value::Object(t.render(42)),
            json!({"a": ["x42", 42, 3], "b": {"c": "42-42"}, "d": null, "e": "plain"})
        );
    }

    #[test]
    fn refuses_what_is_not_an_object() {
        for (text, says) in [
            ("[1]", "not an array"),
            ("\"x\"", "not a string"),
            ("{", "not JSON"),
        ] {
            let err = ArgsTemplate::parse(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
