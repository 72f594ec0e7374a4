//! The JSON the extension stores for users (user and app metadata, identity data) and the
//! one validation every path that stores it applies, so that nothing stored can break a
//! later call: a value is storable when JSON clients can read it back as it is (numbers
//! within an IEEE double's range, as JavaScript and serde read them) and it is nested at
//! most `MAX_DEPTH` deep. The API paths also bound its size; triggers on the tables hold
//! the first two rules for writes that bypass the API.

use crate::error::{AuthError, AuthResult, OrRaise};
use pgrx::prelude::*;
use serde_json::{json, Value};

/// Largest metadata object the API stores, serialized: it travels in every access token.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// Deepest nesting stored (an object inside an object ... counts one level each).
pub const MAX_DEPTH: usize = 64;

/// Nesting depth of a value; scalars are 0. Iterative: the input may come from a table.
fn depth(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        deepest = deepest.max(d + 1);
        stack.extend(children.map(|c| (c, d + 1)));
    }
    deepest
}

/// Parse JSON text read back from the tables (a user object, whose metadata sits a few
/// levels down): only what serde cannot represent is refused, saying why.
pub fn parse_readable(raw: &str) -> Result<Value, String> {
    serde_json::from_str::<Value>(raw).map_err(|e| {
        if e.to_string().contains("recursion limit") {
            format!("is nested more than {MAX_DEPTH} levels deep")
        } else if e.to_string().contains("number out of range") {
            "holds a number outside the range JSON clients can represent".to_string()
        } else {
            format!("is not valid JSON ({e})")
        }
    })
}

/// Parse JSON text to be stored, or say why it cannot be: what [`parse_readable`] refuses,
/// and nesting deeper than `MAX_DEPTH`.
pub fn parse_storable(raw: &str) -> Result<Value, String> {
    let v = parse_readable(raw)?;
    if depth(&v) > MAX_DEPTH {
        return Err(format!("is nested more than {MAX_DEPTH} levels deep"));
    }
    Ok(v)
}

/// A JSON object given as jsonb text: NULL means `{}`; anything else must be a storable
/// object of at most `max` bytes (validation_failed otherwise).
pub fn parse_object(raw: Option<&str>, what: &str, max: usize) -> AuthResult<Value> {
    let Some(raw) = raw else { return Ok(json!({})) };
    if raw.len() > max {
        return Err(AuthError::ValidationFailed(format!(
            "{what} is larger than {max} bytes"
        )));
    }
    match parse_storable(raw) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(AuthError::ValidationFailed(format!(
            "{what} must be a JSON object"
        ))),
        Err(why) => Err(AuthError::ValidationFailed(format!("{what} {why}"))),
    }
}

pub fn parse_metadata(raw: Option<&str>) -> AuthResult<Value> {
    parse_object(raw, "user metadata", MAX_METADATA_BYTES)
}

/// SQL (every path that stores metadata): NULL, or a storable JSON object of at most
/// `max_bytes` bytes; validation_failed naming `what` otherwise.
#[pg_extern(immutable, parallel_safe)]
fn _check_json(data: Option<&str>, what: &str, max_bytes: i32) {
    if data.is_some() {
        parse_object(data, what, max_bytes.max(0) as usize).or_raise();
    }
}

/// SQL, in the triggers of the metadata columns: can this value be stored?
#[pg_extern(immutable, parallel_safe, strict)]
fn _storable_json(data: &str) -> bool {
    parse_storable(data).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(n: usize) -> String {
        format!("{}1{}", "[".repeat(n), "]".repeat(n))
    }

    #[test]
    fn metadata_must_be_a_bounded_storable_object() {
        assert_eq!(parse_metadata(None).unwrap(), json!({}));
        assert_eq!(parse_metadata(Some(r#"{"a":1}"#)).unwrap(), json!({"a": 1}));
        for bad in [
            "[1]",
            "\"s\"",
            "null",
            "1",
            "{\"n\":1e400}",
            "{\"n\":-1e309}",
            "{",
        ] {
            assert_eq!(
                parse_metadata(Some(bad)).unwrap_err().code(),
                "validation_failed",
                "{bad}"
            );
        }
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_METADATA_BYTES));
        assert_eq!(
            parse_metadata(Some(&big)).unwrap_err().code(),
            "validation_failed"
        );
    }

    #[test]
    fn the_depth_limit_is_exact() {
        let ok = format!("{{\"a\":{}}}", nested(MAX_DEPTH - 1));
        assert!(parse_metadata(Some(&ok)).is_ok());
        let deep = format!("{{\"a\":{}}}", nested(MAX_DEPTH));
        let e = parse_metadata(Some(&deep)).unwrap_err();
        assert!(e.to_string().contains("nested more than 64"), "{e}");
        // Past serde's own limit the message is the same.
        let deeper = format!("{{\"a\":{}}}", nested(300));
        let e = parse_metadata(Some(&deeper)).unwrap_err();
        assert!(e.to_string().contains("nested more than 64"), "{e}");
    }

    #[test]
    fn numbers_clients_can_read_are_storable() {
        assert!(_storable_json(
            "{\"n\": 1.7976931348623157e308, \"m\": 1e-400, \"i\": 18446744073709551616}"
        ));
        assert!(!_storable_json("{\"n\": 1e400}"));
        assert!(!_storable_json(&nested(65)));
        assert!(_storable_json(&nested(64)));
    }
}
