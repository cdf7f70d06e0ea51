//! Paths as they travel. Revision 2026-06 sends plain absolute paths; revision 2026-08
//! sends `file:` URIs (docs/protocol.md §0). [`WirePath`] carries either, exactly as
//! spelled; [`WirePath::resolve`] reads it, and [`PathForm::render`] writes a result
//! path in the form the request used.

use serde::{Deserialize, Serialize};

use crate::code;

/// A path exactly as the peer spelled it on the wire. Interpreting it (beneath
/// `--fs-root`?) is the server's job; reading its form is [`WirePath::resolve`]'s.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WirePath(String);

/// Which of the two spellings a path used; results answer in the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathForm {
    /// `/tmp/x`.
    Plain,
    /// `file:///tmp/x`.
    FileUri,
}

/// A path read off the wire: its bytes (a URI may percent-encode any byte) and form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPath {
    /// An absolute path, not yet normalised (`..` and `.` are kept).
    pub bytes: Vec<u8>,
    pub form: PathForm,
}

/// Why a wire path cannot be used. [`PathError::code`] is the JSON-RPC code upstream
/// answers with at revision 2026-08.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must be absolute: {0}")]
    Relative(String),
    #[error("file URI names another host ({0}); only local paths are served")]
    OtherHost(String),
    #[error("unsupported URI scheme {0:?}: paths are absolute or file: URIs")]
    OtherScheme(String),
    #[error("the path contains an encoded NUL byte")]
    EncodedNul,
    #[error("invalid percent-encoding in {0}")]
    BadEscape(String),
    /// A server that speaks only revision 2026-08 (as upstream does) refuses plain paths.
    #[error("expected a file: URI, got a plain path: {0}")]
    PlainPathRefused(String),
}

impl PathError {
    pub fn code(&self) -> i64 {
        match self {
            PathError::OtherHost(_) => code::INVALID_REQUEST,
            _ => code::INVALID_PARAMS,
        }
    }
}

impl WirePath {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// Reads the path: a plain absolute path, or a `file:` URI (percent-decoded; an
    /// empty or `localhost` host; `file:relative/x` is `/relative/x`, as upstream's URL
    /// parser reads it; a query or fragment ends the path).
    pub fn resolve(&self) -> Result<ResolvedPath, PathError> {
        let text = self.0.as_str();
        let Some(scheme) = uri_scheme(text) else {
            if text.starts_with('/') {
                return Ok(ResolvedPath {
                    bytes: text.as_bytes().to_vec(),
                    form: PathForm::Plain,
                });
            }
            return Err(PathError::Relative(text.to_owned()));
        };
        if !scheme.eq_ignore_ascii_case("file") {
            return Err(PathError::OtherScheme(scheme.to_owned()));
        }
        let rest = &text[scheme.len() + 1..];
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let path = match rest.strip_prefix("//") {
            Some(authority_and_path) => {
                let (host, path) = match authority_and_path.find('/') {
                    Some(at) => authority_and_path.split_at(at),
                    None => (authority_and_path, "/"),
                };
                if !(host.is_empty() || host.eq_ignore_ascii_case("localhost")) {
                    return Err(PathError::OtherHost(host.to_owned()));
                }
                path
            }
            None => rest,
        };
        let mut bytes =
            percent_decode(path).ok_or_else(|| PathError::BadEscape(text.to_owned()))?;
        if bytes.contains(&0) {
            return Err(PathError::EncodedNul);
        }
        if bytes.first() != Some(&b'/') {
            bytes.insert(0, b'/');
        }
        Ok(ResolvedPath {
            bytes,
            form: PathForm::FileUri,
        })
    }
}

impl PathForm {
    /// `path` (absolute, as bytes) spelled in this form.
    pub fn render(self, path: &[u8]) -> WirePath {
        match self {
            PathForm::Plain => WirePath(String::from_utf8_lossy(path).into_owned()),
            PathForm::FileUri => {
                let mut uri = String::with_capacity(path.len() + 8);
                uri.push_str("file://");
                for &byte in path {
                    if byte.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&byte) {
                        uri.push(byte as char);
                    } else {
                        uri.push_str(&format!("%{byte:02X}"));
                    }
                }
                WirePath(uri)
            }
        }
    }
}

/// The scheme of `text` if it starts like a URI (`ALPHA *(ALPHA / DIGIT / + / - / .) ":"`).
fn uri_scheme(text: &str) -> Option<&str> {
    let colon = text.find(':')?;
    let scheme = &text[..colon];
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = text.get(at + 1..at + 3)?;
            // `from_str_radix` alone would take a sign: `%+F`.
            if !hex.bytes().all(|digit| digit.is_ascii_hexdigit()) {
                return None;
            }
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            decoded.push(bytes[at]);
            at += 1;
        }
    }
    Some(decoded)
}

impl From<String> for WirePath {
    fn from(path: String) -> Self {
        Self(path)
    }
}

impl From<&str> for WirePath {
    fn from(path: &str) -> Self {
        Self(path.to_owned())
    }
}

impl From<&std::path::Path> for WirePath {
    /// A path that is not UTF-8 cannot travel in JSON as a plain path; its invalid
    /// bytes become U+FFFD. (As a `file:` URI, use [`PathForm::render`].)
    fn from(path: &std::path::Path) -> Self {
        Self(path.to_string_lossy().into_owned())
    }
}

impl std::fmt::Display for WirePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str) -> Result<(String, PathForm), PathError> {
        WirePath::from(text)
            .resolve()
            .map(|path| (String::from_utf8(path.bytes).expect("utf-8"), path.form))
    }

    #[test]
    fn plain_paths_and_file_uris_resolve_as_upstream_reads_them() {
        assert_eq!(resolve("/tmp/x"), Ok(("/tmp/x".into(), PathForm::Plain)));
        assert_eq!(
            resolve("file:///tmp/a%20b"),
            Ok(("/tmp/a b".into(), PathForm::FileUri))
        );
        assert_eq!(
            resolve("file://localhost/tmp"),
            Ok(("/tmp".into(), PathForm::FileUri))
        );
        assert_eq!(
            resolve("FILE:///x?q#f"),
            Ok(("/x".into(), PathForm::FileUri))
        );
        assert_eq!(
            resolve("file:relative/x"),
            Ok(("/relative/x".into(), PathForm::FileUri))
        );
        assert_eq!(resolve("file:/x"), Ok(("/x".into(), PathForm::FileUri)));
    }

    #[test]
    fn bad_paths_get_upstreams_codes() {
        let code = |text: &str| resolve(text).unwrap_err().code();
        assert_eq!(code("file://otherhost/x"), code::INVALID_REQUEST);
        assert_eq!(code("http://host/x"), code::INVALID_PARAMS);
        assert_eq!(code("file:///a%00b"), code::INVALID_PARAMS);
        assert_eq!(code("file:///a%zz"), code::INVALID_PARAMS);
        assert_eq!(code("file:///a%+F"), code::INVALID_PARAMS);
        assert_eq!(code("relative/x"), code::INVALID_PARAMS);
    }

    #[test]
    fn rendering_round_trips_through_resolve() {
        for path in ["/tmp/a b/ü%#?", "/", "/x/.hidden"] {
            let uri = PathForm::FileUri.render(path.as_bytes());
            assert!(uri.as_str().starts_with("file:///"), "{uri}");
            assert_eq!(
                resolve(uri.as_str()),
                Ok((path.to_owned(), PathForm::FileUri))
            );
            assert_eq!(PathForm::Plain.render(path.as_bytes()).as_str(), path);
        }
    }
}
