//! Patterns: JSON with matching rules (see `fixtures/README.md`), and the variables a
//! transcript binds and substitutes.
//!
//! - objects match when every listed key matches (extra keys in the actual are fine);
//! - arrays match element-wise and by length, unless the last element is `"..."`;
//! - `"*"` matches anything (present, `null` included);
//! - `"$name"` binds on first use and must be equal afterwards; `"$name/rest"` is the
//!   bound string followed by `/rest` (for `$tmp/…` and `$tmpPath/…`);
//! - `"~/regex/"` matches a string against a regular expression;
//! - `${name}` inside a longer string is the bound value's text (`"got ${x}\n"`); a
//!   pattern string holding one is compared after substitution;
//! - `{"$b64": "text"}` matches the standard base64 of `text` (`${name}` substituted);
//! - `{"$oneOf": [p, q, …]}` matches when any alternative matches;
//! - `{"$allOf": [p, q, …]}` matches when every pattern matches, in order (what the
//!   first binds, the later see: `{"$allOf": ["$sid2", {"$not": "$sid1"}]}`);
//! - `{"$not": p}` matches anything `p` does not (and binds nothing);
//! - `{"$eq": value}` matches exactly `value` (no rules inside: an escape);
//! - `{"$type": "integer"}` matches any value of that JSON type (`string`, `number`,
//!   `integer`, `boolean`, `array`, `object`, `null`): for values that differ from run
//!   to run, such as times and seqs (recorded cases use it);
//! - `"$$…"` is the literal string `$…`.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde_json::Value;

/// A compiled pattern.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// `"*"`.
    Any,
    /// `"$name"` or `"$name/suffix"`.
    Var {
        /// The variable's name.
        name: String,
        /// What follows the name, after a `/`.
        suffix: Option<String>,
    },
    /// `"~/regex/"`.
    Regex(regex::Regex),
    /// `{"$b64": "text"}`: the decoded bytes must equal the text (after `${name}`
    /// substitution).
    Base64(String),
    /// A string with `${name}` inside: equal to it after substitution.
    Template(String),
    /// `{"$oneOf": [...]}`.
    OneOf(Vec<Pattern>),
    /// `{"$allOf": [...]}`: every pattern, in order, with the bindings of the earlier.
    AllOf(Vec<Pattern>),
    /// `{"$not": p}`: anything `p` does not match (binds nothing).
    Not(Box<Pattern>),
    /// A scalar, or `{"$eq": value}`.
    Exact(Value),
    /// `{"$type": "integer"}`: any value of this JSON type.
    Type(JsonType),
    /// An object: every listed key must match.
    Object(Vec<(String, Pattern)>),
    /// An array, element-wise; `open` when the pattern ended in `"..."`.
    Array {
        /// The element patterns.
        items: Vec<Pattern>,
        /// More elements may follow.
        open: bool,
    },
}

/// A JSON type a `{"$type": …}` pattern accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    /// `"string"`.
    String,
    /// `"number"`: any number, integer or not.
    Number,
    /// `"integer"`: a number without a fractional part (as JSON writes it: `1`, not `1.0`).
    Integer,
    /// `"boolean"`.
    Boolean,
    /// `"array"`.
    Array,
    /// `"object"`.
    Object,
    /// `"null"`.
    Null,
}

impl JsonType {
    /// Every type, in the order error messages list them.
    pub const ALL: [JsonType; 7] = [
        JsonType::String,
        JsonType::Number,
        JsonType::Integer,
        JsonType::Boolean,
        JsonType::Array,
        JsonType::Object,
        JsonType::Null,
    ];

    /// As written in a pattern.
    pub fn as_str(self) -> &'static str {
        match self {
            JsonType::String => "string",
            JsonType::Number => "number",
            JsonType::Integer => "integer",
            JsonType::Boolean => "boolean",
            JsonType::Array => "array",
            JsonType::Object => "object",
            JsonType::Null => "null",
        }
    }

    /// The type of `value`, the narrowest one (`integer` rather than `number`).
    pub fn of(value: &Value) -> JsonType {
        match value {
            Value::String(_) => JsonType::String,
            Value::Number(n) if n.is_i64() || n.is_u64() => JsonType::Integer,
            Value::Number(_) => JsonType::Number,
            Value::Bool(_) => JsonType::Boolean,
            Value::Array(_) => JsonType::Array,
            Value::Object(_) => JsonType::Object,
            Value::Null => JsonType::Null,
        }
    }

    /// Whether `value` is of this type.
    pub fn accepts(self, value: &Value) -> bool {
        match self {
            JsonType::Number => value.is_number(),
            narrow => JsonType::of(value) == narrow,
        }
    }
}

/// Why a pattern (or a message to send) is not valid. `token` is the JSON text the
/// error is about, so the parser can point at its column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// What is wrong.
    pub message: String,
    /// The offending JSON token (as written in the transcript, roughly), if known.
    pub token: Option<String>,
}

impl PatternError {
    fn new(message: impl Into<String>, token: Option<String>) -> Self {
        PatternError {
            message: message.into(),
            token,
        }
    }
}

/// A `$` reference in a string: `$name` or `$name/suffix`.
fn parse_var(text: &str) -> Option<(String, Option<String>)> {
    let rest = text.strip_prefix('$')?;
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let name = &rest[..end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    match &rest[end..] {
        "" => Some((name.to_owned(), None)),
        tail if tail.starts_with('/') => Some((name.to_owned(), Some(tail[1..].to_owned()))),
        _ => None,
    }
}

fn compile_all(items: &[Value]) -> Result<Vec<Pattern>, PatternError> {
    items.iter().map(Pattern::compile).collect()
}

/// The operand of `$oneOf` / `$allOf`: a non-empty array of patterns (`what` names
/// them in the error).
fn compile_list(op: &str, operand: &Value, what: &str) -> Result<Vec<Pattern>, PatternError> {
    match operand {
        Value::Array(items) if !items.is_empty() => compile_all(items),
        _ => Err(PatternError::new(
            format!("{op} takes a non-empty array of {what}"),
            quoted(op),
        )),
    }
}

fn quoted(text: &str) -> Option<String> {
    serde_json::to_string(text).ok()
}

impl Pattern {
    /// Compiles a JSON value into a pattern.
    pub fn compile(value: &Value) -> Result<Pattern, PatternError> {
        match value {
            Value::String(text) => Self::compile_string(text),
            Value::Array(items) => {
                let open = items.last() == Some(&Value::String("...".into()));
                let items = match open {
                    true => &items[..items.len() - 1],
                    false => &items[..],
                };
                if items.iter().any(|v| v == "...") {
                    return Err(PatternError::new(
                        "\"...\" is only allowed as the last element of an array",
                        quoted("..."),
                    ));
                }
                Ok(Pattern::Array {
                    items: compile_all(items)?,
                    open,
                })
            }
            Value::Object(map) => {
                if let Some(op) = map.keys().find(|key| key.starts_with('$')) {
                    if map.len() != 1 {
                        return Err(PatternError::new(
                            format!("{op} must be the only key of its object"),
                            quoted(op),
                        ));
                    }
                    let operand = &map[op];
                    return match op.as_str() {
                        "$b64" => match operand {
                            Value::String(text) => {
                                check_template(text)?;
                                Ok(Pattern::Base64(text.clone()))
                            }
                            _ => Err(PatternError::new(
                                "$b64 takes a string (the decoded text)",
                                quoted(op),
                            )),
                        },
                        "$oneOf" => compile_list(op, operand, "alternatives").map(Pattern::OneOf),
                        "$allOf" => compile_list(op, operand, "patterns").map(Pattern::AllOf),
                        "$eq" => Ok(Pattern::Exact(operand.clone())),
                        "$type" => operand
                            .as_str()
                            .and_then(|name| JsonType::ALL.into_iter().find(|t| t.as_str() == name))
                            .map(Pattern::Type)
                            .ok_or_else(|| {
                                let known: Vec<&str> =
                                    JsonType::ALL.iter().map(|t| t.as_str()).collect();
                                PatternError::new(
                                    format!("$type takes a type name ({})", known.join(", ")),
                                    quoted(op),
                                )
                            }),
                        "$not" => Ok(Pattern::Not(Box::new(Pattern::compile(operand)?))),
                        _ => Err(PatternError::new(
                            format!(
                                "unknown pattern operator {op} (known: $b64, $oneOf, $allOf, $not, $eq, $type)"
                            ),
                            quoted(op),
                        )),
                    };
                }
                Ok(Pattern::Object(
                    map.iter()
                        .map(|(key, value)| Ok((key.clone(), Pattern::compile(value)?)))
                        .collect::<Result<_, PatternError>>()?,
                ))
            }
            scalar => Ok(Pattern::Exact(scalar.clone())),
        }
    }

    fn compile_string(text: &str) -> Result<Pattern, PatternError> {
        if text == "*" {
            return Ok(Pattern::Any);
        }
        if let Some(literal) = text.strip_prefix("$$") {
            return Ok(Pattern::Exact(Value::String(format!("${literal}"))));
        }
        // `${name}…` is a template (below), as in a message to send.
        if text.starts_with('$') && !text.starts_with("${") {
            return match parse_var(text) {
                Some((name, suffix)) => Ok(Pattern::Var { name, suffix }),
                None => Err(PatternError::new(
                    format!("{text:?} is not a variable ($name or $name/path); write $$ for a literal $"),
                    quoted(text),
                )),
            };
        }
        if let Some(body) = text.strip_prefix("~/") {
            let Some(source) = body.strip_suffix('/') else {
                return Err(PatternError::new(
                    "a regex pattern is written \"~/regex/\"",
                    quoted(text),
                ));
            };
            return regex::Regex::new(source)
                .map(Pattern::Regex)
                .map_err(|err| PatternError::new(format!("bad regex: {err}"), quoted(text)));
        }
        if text.contains("${") {
            check_template(text)?;
            return Ok(Pattern::Template(text.to_owned()));
        }
        Ok(Pattern::Exact(Value::String(text.to_owned())))
    }

    /// Names of the variables this pattern uses without binding them (`${name}` in
    /// templates and `$b64` texts): each must be bound before the pattern is matched.
    pub fn references(&self, out: &mut Vec<String>) {
        match self {
            Pattern::Template(text) | Pattern::Base64(text) => {
                referenced(&Value::String(text.clone()), out)
            }
            Pattern::OneOf(items) | Pattern::AllOf(items) | Pattern::Array { items, .. } => {
                items.iter().for_each(|p| p.references(out))
            }
            Pattern::Object(entries) => entries.iter().for_each(|(_, p)| p.references(out)),
            _ => {}
        }
    }

    /// Names of the variables this pattern mentions, in order.
    pub fn variables(&self, out: &mut Vec<String>) {
        match self {
            Pattern::Var { name, .. } => out.push(name.clone()),
            Pattern::OneOf(items) | Pattern::AllOf(items) | Pattern::Array { items, .. } => {
                items.iter().for_each(|p| p.variables(out))
            }
            Pattern::Object(entries) => entries.iter().for_each(|(_, p)| p.variables(out)),
            _ => {}
        }
    }

    /// Matches `actual`, binding unbound variables into `bindings` (only on success).
    pub fn matches(&self, actual: &Value, bindings: &mut Bindings) -> Result<(), Mismatch> {
        let mut scratch = bindings.clone();
        self.match_at(actual, &mut scratch, "$")?;
        *bindings = scratch;
        Ok(())
    }

    fn match_at(
        &self,
        actual: &Value,
        bindings: &mut Bindings,
        path: &str,
    ) -> Result<(), Mismatch> {
        let mismatch = |expected: String| {
            Err(Mismatch {
                path: path.to_owned(),
                expected,
                actual: actual.clone(),
            })
        };
        match self {
            Pattern::Any => Ok(()),
            Pattern::Var { name, suffix } => match (bindings.get(name), suffix) {
                (Some(bound), None) => match json_equal(bound, actual) {
                    true => Ok(()),
                    false => mismatch(format!("${name} = {bound}")),
                },
                (Some(Value::String(bound)), Some(suffix)) => {
                    let want = format!("{bound}/{suffix}");
                    match actual.as_str() == Some(want.as_str()) {
                        true => Ok(()),
                        false => mismatch(format!("${name}/{suffix} = {want:?}")),
                    }
                }
                (Some(bound), Some(suffix)) => mismatch(format!(
                    "${name}/{suffix}, but ${name} = {bound} is not a string"
                )),
                (None, None) => {
                    bindings.insert(name.clone(), actual.clone());
                    Ok(())
                }
                (None, Some(suffix)) => {
                    mismatch(format!("${name}/{suffix}, but ${name} is unbound"))
                }
            },
            Pattern::Regex(regex) => match actual.as_str() {
                Some(text) if regex.is_match(text) => Ok(()),
                _ => mismatch(format!("a string matching /{}/", regex.as_str())),
            },
            Pattern::Base64(template) => {
                let want = expand_at(template, bindings, path, actual)?;
                let decoded = actual
                    .as_str()
                    .and_then(|text| base64::engine::general_purpose::STANDARD.decode(text).ok());
                match decoded.as_deref() == Some(want.as_bytes()) {
                    true => Ok(()),
                    false => mismatch(format!("base64 of {want:?}")),
                }
            }
            Pattern::Template(template) => {
                let want = expand_at(template, bindings, path, actual)?;
                match actual.as_str() == Some(want.as_str()) {
                    true => Ok(()),
                    false => mismatch(format!("{want:?}")),
                }
            }
            Pattern::Not(inner) => match inner.match_at(actual, &mut bindings.clone(), path) {
                Ok(()) => mismatch(format!("anything but {}", inner.render())),
                Err(_) => Ok(()),
            },
            Pattern::AllOf(items) => items
                .iter()
                .try_for_each(|item| item.match_at(actual, bindings, path)),
            Pattern::OneOf(options) => {
                for option in options {
                    let mut scratch = bindings.clone();
                    if option.match_at(actual, &mut scratch, path).is_ok() {
                        *bindings = scratch;
                        return Ok(());
                    }
                }
                mismatch(format!("one of {}", self.render()))
            }
            Pattern::Exact(want) => match json_equal(want, actual) {
                true => Ok(()),
                false => mismatch(want.to_string()),
            },
            Pattern::Type(kind) => match kind.accepts(actual) {
                true => Ok(()),
                false => mismatch(format!("any {}", kind.as_str())),
            },
            Pattern::Object(entries) => {
                let Some(object) = actual.as_object() else {
                    return mismatch("an object".into());
                };
                for (key, pattern) in entries {
                    let child = format!("{path}.{key}");
                    match object.get(key) {
                        Some(value) => pattern.match_at(value, bindings, &child)?,
                        None => {
                            return Err(Mismatch {
                                path: child,
                                expected: pattern.render().to_string(),
                                actual: Value::String("<absent>".into()),
                            });
                        }
                    }
                }
                Ok(())
            }
            Pattern::Array { items, open } => {
                let Some(array) = actual.as_array() else {
                    return mismatch("an array".into());
                };
                let length_ok = match open {
                    true => array.len() >= items.len(),
                    false => array.len() == items.len(),
                };
                if !length_ok {
                    let at_least = if *open { "at least " } else { "" };
                    return mismatch(format!("an array of {at_least}{} elements", items.len()));
                }
                for (index, (pattern, value)) in items.iter().zip(array).enumerate() {
                    pattern.match_at(value, bindings, &format!("{path}[{index}]"))?;
                }
                Ok(())
            }
        }
    }

    /// The pattern as JSON, as written (roughly) in a transcript.
    pub fn render(&self) -> Value {
        match self {
            Pattern::Any => Value::String("*".into()),
            Pattern::Var { name, suffix: None } => Value::String(format!("${name}")),
            Pattern::Var {
                name,
                suffix: Some(suffix),
            } => Value::String(format!("${name}/{suffix}")),
            Pattern::Regex(regex) => Value::String(format!("~/{}/", regex.as_str())),
            Pattern::Base64(text) => serde_json::json!({ "$b64": text }),
            Pattern::Template(text) => Value::String(text.clone()),
            Pattern::Not(inner) => serde_json::json!({ "$not": inner.render() }),
            Pattern::OneOf(items) => {
                serde_json::json!({"$oneOf": items.iter().map(Pattern::render).collect::<Vec<_>>()})
            }
            Pattern::AllOf(items) => {
                serde_json::json!({"$allOf": items.iter().map(Pattern::render).collect::<Vec<_>>()})
            }
            Pattern::Exact(value) => value.clone(),
            Pattern::Type(kind) => serde_json::json!({ "$type": kind.as_str() }),
            Pattern::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(key, pattern)| (key.clone(), pattern.render()))
                    .collect(),
            ),
            Pattern::Array { items, open } => {
                let mut out: Vec<Value> = items.iter().map(Pattern::render).collect();
                if *open {
                    out.push(Value::String("...".into()));
                }
                Value::Array(out)
            }
        }
    }
}

/// [`expand`] while matching: an unbound name is a mismatch at `path`.
fn expand_at(
    template: &str,
    bindings: &Bindings,
    path: &str,
    actual: &Value,
) -> Result<String, Mismatch> {
    expand(template, bindings).map_err(|err| Mismatch {
        path: path.to_owned(),
        expected: err.message,
        actual: actual.clone(),
    })
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || ((x.is_f64() || y.is_f64()) && x.as_f64() == y.as_f64())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, value)| y.get(key).is_some_and(|other| json_equal(value, other)))
        }
        _ => a == b,
    }
}

/// Where and how a message failed to match its pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// JSON path of the first difference, e.g. `$.error.code`.
    pub path: String,
    /// What the pattern wanted there.
    pub expected: String,
    /// What was there.
    pub actual: Value,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at {}: expected {}, got {}",
            self.path, self.expected, self.actual
        )
    }
}

/// Variable values, by name (without the `$`).
pub type Bindings = BTreeMap<String, Value>;

/// Replaces variables in a message to send: a string that is `$name` becomes the bound
/// value, `$name/rest` the bound string followed by `/rest`, `${name}` inside a longer
/// string is replaced by the bound value's text, and `$$` is a literal `$`.
pub fn substitute(value: &Value, bindings: &Bindings) -> Result<Value, PatternError> {
    match value {
        Value::String(text) => substitute_string(text, bindings),
        Value::Array(items) => Ok(Value::Array(
            items
                .iter()
                .map(|item| substitute(item, bindings))
                .collect::<Result<_, _>>()?,
        )),
        Value::Object(map) => Ok(Value::Object(
            map.iter()
                .map(|(key, value)| Ok((key.clone(), substitute(value, bindings)?)))
                .collect::<Result<_, PatternError>>()?,
        )),
        other => Ok(other.clone()),
    }
}

fn unbound(name: &str) -> PatternError {
    PatternError::new(
        format!("${name} is not bound (bind it in an earlier << or <~ pattern)"),
        quoted(&format!("${name}")),
    )
}

fn substitute_string(text: &str, bindings: &Bindings) -> Result<Value, PatternError> {
    if let Some(literal) = text.strip_prefix("$$") {
        return Ok(Value::String(format!("${literal}")));
    }
    if text.starts_with('$') && !text.starts_with("${") {
        let Some((name, suffix)) = parse_var(text) else {
            return Err(PatternError::new(
                format!(
                    "{text:?} is not a variable ($name or $name/path); write $$ for a literal $"
                ),
                quoted(text),
            ));
        };
        let bound = bindings.get(&name).ok_or_else(|| unbound(&name))?;
        return match (suffix, bound) {
            (None, value) => Ok(value.clone()),
            (Some(suffix), Value::String(bound)) => Ok(Value::String(format!("{bound}/{suffix}"))),
            (Some(_), other) => Err(PatternError::new(
                format!("${name} = {other} is not a string; cannot append a path"),
                quoted(text),
            )),
        };
    }
    // `${name}` inside a longer string.
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(PatternError::new("unclosed ${", quoted(text)));
        };
        let name = &after[..end];
        let bound = bindings.get(name).ok_or_else(|| unbound(name))?;
        match bound {
            Value::String(s) => out.push_str(s),
            other => out.push_str(&other.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Value::String(out))
}

/// `text` with every `${name}` replaced by the bound value's text (for `$b64`
/// texts, templates and `!! read-until`).
pub fn expand(text: &str, bindings: &Bindings) -> Result<String, PatternError> {
    match substitute_string(&format!("_{text}"), bindings)? {
        Value::String(expanded) => Ok(expanded[1..].to_owned()),
        other => Ok(other.to_string()),
    }
}

/// A `${` without its `}` is an error when the transcript is read, not when it runs.
fn check_template(text: &str) -> Result<(), PatternError> {
    let mut names = Vec::new();
    referenced(&Value::String(format!("_{text}")), &mut names);
    let bindings = names
        .into_iter()
        .map(|name| (name, Value::String(String::new())))
        .collect();
    expand(text, &bindings).map(|_| ())
}

/// Names of the variables a message to send refers to (for checking, before running,
/// that each is bound by then).
pub fn referenced(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(text) => {
            if text.starts_with("$$") {
                return;
            }
            if text.starts_with('$') && !text.starts_with("${") {
                if let Some((name, _)) = parse_var(text) {
                    out.push(name);
                }
                return;
            }
            let mut rest = text.as_str();
            while let Some(start) = rest.find("${") {
                let after = &rest[start + 2..];
                let Some(end) = after.find('}') else { return };
                out.push(after[..end].to_owned());
                rest = &after[end + 1..];
            }
        }
        Value::Array(items) => items.iter().for_each(|item| referenced(item, out)),
        Value::Object(map) => map.values().for_each(|item| referenced(item, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(pattern: Value, actual: Value) -> Result<Bindings, Mismatch> {
        let mut bindings = Bindings::new();
        Pattern::compile(&pattern)
            .unwrap()
            .matches(&actual, &mut bindings)
            .map(|()| bindings)
    }

    #[test]
    fn objects_match_listed_keys_only() {
        assert!(check(json!({"id": 1}), json!({"id": 1, "result": {}})).is_ok());
        let miss = check(
            json!({"id": 1, "result": {"a": 2}}),
            json!({"id": 1, "result": {}}),
        )
        .unwrap_err();
        assert_eq!(miss.path, "$.result.a");
    }

    #[test]
    fn arrays_match_by_length_unless_open() {
        assert!(check(json!([1, 2]), json!([1, 2])).is_ok());
        assert!(check(json!([1]), json!([1, 2])).is_err());
        assert!(check(json!([1, "..."]), json!([1, 2, 3])).is_ok());
        assert!(check(json!([1, 2, "..."]), json!([1])).is_err());
        assert!(Pattern::compile(&json!(["...", 1])).is_err());
    }

    #[test]
    fn variables_bind_then_must_be_equal() {
        let pattern = Pattern::compile(&json!({"a": "$x", "b": "$x"})).unwrap();
        let mut bindings = Bindings::new();
        assert!(pattern
            .matches(&json!({"a": 1, "b": 2}), &mut bindings)
            .is_err());
        assert!(bindings.is_empty(), "a failed match binds nothing");
        pattern
            .matches(&json!({"a": 1, "b": 1}), &mut bindings)
            .unwrap();
        assert_eq!(bindings["x"], json!(1));
    }

    #[test]
    fn path_suffix_variables() {
        let mut bindings = Bindings::from([("tmp".to_owned(), json!("/t/1"))]);
        let pattern = Pattern::compile(&json!("$tmp/a b")).unwrap();
        pattern.matches(&json!("/t/1/a b"), &mut bindings).unwrap();
        assert!(pattern.matches(&json!("/t/1/c"), &mut bindings).is_err());
    }

    #[test]
    fn star_regex_base64_oneof_eq() {
        assert!(check(json!("*"), json!(null)).is_ok());
        assert!(check(json!("~/^ab+c$/"), json!("abbc")).is_ok());
        assert!(check(json!("~/^ab+c$/"), json!(5)).is_err());
        assert!(check(json!({"$b64": "hi\n"}), json!("aGkK")).is_ok());
        assert!(check(json!({"$not": 1}), json!(2)).is_ok());
        assert!(check(json!({"$not": {"$oneOf": [1, 2]}}), json!(2)).is_err());
        assert!(check(json!({"$b64": "hi"}), json!("aGkK")).is_err());
        assert!(check(json!({"$oneOf": [-32600, -32010]}), json!(-32010)).is_ok());
        // $allOf: every pattern, the later ones seeing what the earlier bound.
        let fresh = Pattern::compile(&json!({"$allOf": ["$b", {"$not": "$a"}]})).unwrap();
        let mut bindings = Bindings::new();
        bindings.insert("a".into(), json!("x"));
        assert!(fresh.matches(&json!("x"), &mut bindings.clone()).is_err());
        assert!(fresh.matches(&json!("y"), &mut bindings).is_ok());
        assert_eq!(bindings.get("b"), Some(&json!("y")));
        assert!(check(json!({"$oneOf": [-32600, -32010]}), json!(-32601)).is_err());
        assert!(check(json!({"$eq": "*"}), json!("*")).is_ok());
        assert!(check(json!({"$eq": "*"}), json!("x")).is_err());
        assert!(check(json!("$$x"), json!("$x")).is_ok());
        assert!(check(json!(1), json!(1.0)).is_ok());
    }

    #[test]
    fn a_template_may_start_with_a_variable() {
        let mut bindings = Bindings::from([("tmp".to_owned(), json!("/t/1"))]);
        let pattern = Pattern::compile(&json!("${tmp} is gone")).unwrap();
        assert!(matches!(pattern, Pattern::Template(_)));
        pattern
            .matches(&json!("/t/1 is gone"), &mut bindings)
            .unwrap();
        assert!(pattern
            .matches(&json!("/t/2 is gone"), &mut bindings)
            .is_err());
    }

    #[test]
    fn typed_wildcards() {
        assert!(check(json!({"$type": "integer"}), json!(17)).is_ok());
        assert!(check(json!({"$type": "integer"}), json!(-3)).is_ok());
        assert!(check(json!({"$type": "integer"}), json!(1.5)).is_err());
        assert!(check(json!({"$type": "integer"}), json!("17")).is_err());
        assert!(check(json!({"$type": "number"}), json!(1.5)).is_ok());
        assert!(check(json!({"$type": "number"}), json!(2)).is_ok());
        assert!(check(json!({"$type": "string"}), json!("x")).is_ok());
        assert!(check(json!({"$type": "null"}), json!(null)).is_ok());
        assert!(check(json!({"$type": "array"}), json!({})).is_err());
        let miss = check(json!({"a": {"$type": "boolean"}}), json!({"a": 0})).unwrap_err();
        assert_eq!(miss.expected, "any boolean");
        let pattern = Pattern::compile(&json!({"$type": "object"})).unwrap();
        assert_eq!(pattern.render(), json!({"$type": "object"}));
        assert!(Pattern::compile(&json!({"$type": "int"})).is_err());
        assert!(Pattern::compile(&json!({"$type": 1})).is_err());
    }

    #[test]
    fn bad_patterns_are_errors() {
        for bad in [
            json!("~/(/"),
            json!("~/abc"),
            json!({"$nope": 1}),
            json!({"$oneOf": []}),
            json!({"$allOf": []}),
            json!({"$b64": 1}),
            json!({"$eq": 1, "x": 2}),
            json!("$1abc"),
            json!("$a.b"),
        ] {
            assert!(Pattern::compile(&bad).is_err(), "{bad} should not compile");
        }
    }

    #[test]
    fn substitution() {
        let bindings = Bindings::from([
            ("sid".to_owned(), json!("s-1")),
            ("tmp".to_owned(), json!("/t")),
            ("n".to_owned(), json!(3)),
        ]);
        let sent = substitute(
            &json!({"a": "$sid", "b": "$tmp/x", "c": "echo ${sid} ${n}", "d": "$$lit", "e": "$n"}),
            &bindings,
        )
        .unwrap();
        assert_eq!(
            sent,
            json!({"a": "s-1", "b": "/t/x", "c": "echo s-1 3", "d": "$lit", "e": 3})
        );
        assert!(substitute(&json!("$nope"), &bindings).is_err());
        let mut names = Vec::new();
        referenced(
            &json!({"a": "$sid", "c": "x ${n} ${m}", "d": "$$z"}),
            &mut names,
        );
        assert_eq!(names, ["sid", "n", "m"]);
    }
}
