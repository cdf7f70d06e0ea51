//! The bearer token a client sends on the websocket upgrade and a server checks
//! (docs/protocol.md §2 "Security"): read from a file or a variable, never printed.

use std::fmt;
use std::path::Path;

use subtle::ConstantTimeEq as _;

/// A bearer token. Its `Debug` never shows the secret, so it can sit in options that
/// are logged or printed; it has no `==`, which would not take constant time.
#[derive(Clone)]
pub struct BearerToken(String);

/// Longest token accepted, in bytes; a longer file is not a token (e.g. `/dev/zero`).
pub const MAX_TOKEN_BYTES: usize = 4096;

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is empty")]
    Empty,
    #[error("the token must be one line of visible ASCII (no spaces or control characters)")]
    NotAHeaderValue,
    #[error("the token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    /// The file could not be read; the text is the OS error, never the content.
    #[error("{0}")]
    Unreadable(String),
}

impl BearerToken {
    /// A token given as a value (e.g. from an environment variable): one trailing
    /// newline is trimmed, as for a file, and it must fit in an HTTP header.
    pub fn new(value: impl Into<String>) -> Result<Self, TokenError> {
        let mut value = value.into();
        if value.ends_with('\n') {
            value.pop();
            if value.ends_with('\r') {
                value.pop();
            }
        }
        if value.is_empty() {
            return Err(TokenError::Empty);
        }
        if value.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        if !value.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(TokenError::NotAHeaderValue);
        }
        Ok(Self(value))
    }

    /// Reads a token file: its content with one trailing newline trimmed.
    pub fn read_file(path: &Path) -> Result<Self, TokenError> {
        use std::io::Read as _;
        let unreadable = |err: std::io::Error| TokenError::Unreadable(err.to_string());
        let mut content = Vec::new();
        // A byte over the cap (after a CRLF) is enough to tell a token that is too long.
        std::fs::File::open(path)
            .and_then(|file| {
                file.take(MAX_TOKEN_BYTES as u64 + 3)
                    .read_to_end(&mut content)
            })
            .map_err(unreadable)?;
        let content = String::from_utf8(content).map_err(|_| TokenError::NotAHeaderValue)?;
        Self::new(content)
    }

    /// The secret itself, for the one place that sends it: the `Authorization` header.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Whether an `Authorization` header value carries this token. The comparison
    /// takes the same time wherever the first differing byte is.
    pub fn is_carried_by(&self, authorization: &[u8]) -> bool {
        let Some((scheme, presented)) = split_once_byte(authorization, b' ') else {
            return false;
        };
        scheme.eq_ignore_ascii_case(b"bearer")
            && bool::from(presented.trim_ascii().ct_eq(self.0.as_bytes()))
    }
}

fn split_once_byte(bytes: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|byte| *byte == separator)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_trim_one_newline_and_refuse_empty_or_unsendable_values() {
        let token = |value: &str| BearerToken::new(value).map(|token| token.0);
        assert_eq!(token("abc\n"), Ok("abc".into()));
        assert_eq!(token("abc\r\n"), Ok("abc".into()));
        assert_eq!(token("\n"), Err(TokenError::Empty));
        assert_eq!(token(""), Err(TokenError::Empty));
        assert_eq!(token("a\n\n"), Err(TokenError::NotAHeaderValue));
        assert_eq!(token("a b"), Err(TokenError::NotAHeaderValue));
        let longest = "a".repeat(MAX_TOKEN_BYTES);
        assert_eq!(token(&format!("{longest}\r\n")), Ok(longest.clone()));
        assert_eq!(token(&format!("{longest}a")), Err(TokenError::TooLong));
    }

    #[test]
    fn a_token_file_of_endless_bytes_is_refused() {
        assert_eq!(
            BearerToken::read_file(Path::new("/dev/zero")).map(|token| token.0),
            Err(TokenError::TooLong)
        );
    }
}
