//! Matching an answer against a plan's expectation, by the rules the conformance
//! runner applies to `<<` patterns (fixtures/README.md), for the part of them a plan
//! uses: objects match on the keys they list, arrays element by element and by length,
//! `{"$b64": text}` matches the base64 of `text`, anything else matches itself. So the
//! executor fails exactly where the written transcript would.

use base64::Engine as _;
use serde_json::Value;

/// `Ok` if `actual` matches `pattern`, else where and why not.
pub fn matches(pattern: &Value, actual: &Value) -> Result<(), String> {
    at(pattern, actual, "")
}

fn at(pattern: &Value, actual: &Value, path: &str) -> Result<(), String> {
    match pattern {
        Value::Object(fields) => {
            if let Some(text) = fields.get("$b64").and_then(Value::as_str) {
                let decoded = actual
                    .as_str()
                    .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok());
                return match decoded {
                    Some(bytes) if bytes == text.as_bytes() => Ok(()),
                    Some(bytes) => Err(format!(
                        "{path}: {:?}, expected {text:?}",
                        String::from_utf8_lossy(&bytes)
                    )),
                    None => Err(format!("{path}: {actual}, expected the base64 of {text:?}")),
                };
            }
            let Value::Object(actual) = actual else {
                return Err(format!("{path}: {actual}, expected an object"));
            };
            for (key, inner) in fields {
                match actual.get(key) {
                    Some(value) => at(inner, value, &format!("{path}.{key}"))?,
                    None => return Err(format!("{path}.{key}: missing")),
                }
            }
            Ok(())
        }
        Value::Array(items) => {
            let Value::Array(actual) = actual else {
                return Err(format!("{path}: {actual}, expected an array"));
            };
            if items.len() != actual.len() {
                return Err(format!(
                    "{path}: {} elements, expected {}: {}",
                    actual.len(),
                    items.len(),
                    Value::Array(actual.clone())
                ));
            }
            for (index, (inner, value)) in items.iter().zip(actual).enumerate() {
                at(inner, value, &format!("{path}[{index}]"))?;
            }
            Ok(())
        }
        scalar => match scalar == actual {
            true => Ok(()),
            false => Err(format!("{path}: {actual}, expected {scalar}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::matches;

    #[test]
    fn objects_by_listed_keys_arrays_exactly() {
        let answer =
            json!({"id": 3, "result": {"chunks": [{"seq": 1, "chunk": "YWI="}], "closed": false}});
        assert!(matches(
            &json!({"result": {"chunks": [{"chunk": {"$b64": "ab"}}]}}),
            &answer
        )
        .is_ok());
        assert!(matches(&json!({"result": {"chunks": []}}), &answer).is_err());
        assert!(matches(
            &json!({"result": {"chunks": [{"chunk": {"$b64": "a"}}]}}),
            &answer
        )
        .is_err());
        assert!(matches(&json!({"result": {"closed": true}}), &answer).is_err());
        assert!(matches(&json!({"error": {"code": -32600}}), &answer).is_err());
    }
}
