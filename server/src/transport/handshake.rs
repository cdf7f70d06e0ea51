//! The server side of the websocket opening handshake (RFC 6455 §4.2): checks that a
//! request asks for a websocket, and builds the `101 Switching Protocols` answer. The
//! websocket itself is then run by tokio-tungstenite over our own socket adapter
//! (`unflushed`), which is why this is not left to axum's extractor.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Why a request is not a websocket upgrade we can accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAnUpgrade {
    /// `400`: a header the handshake needs is missing or wrong.
    BadRequest(&'static str),
    /// `426` with `Sec-WebSocket-Version: 13`: another protocol version.
    UnsupportedVersion,
}

impl IntoResponse for NotAnUpgrade {
    fn into_response(self) -> Response {
        match self {
            NotAnUpgrade::BadRequest(reason) => (StatusCode::BAD_REQUEST, reason).into_response(),
            NotAnUpgrade::UnsupportedVersion => (
                StatusCode::UPGRADE_REQUIRED,
                [(header::SEC_WEBSOCKET_VERSION, "13")],
                "only websocket version 13 is supported",
            )
                .into_response(),
        }
    }
}

/// Whether a comma-separated header lists `token` (ASCII case-insensitive).
fn lists_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|item| item.trim().eq_ignore_ascii_case(token))
        })
    })
}

/// Checks an upgrade request (RFC 6455 §4.2.1) and returns the `Sec-WebSocket-Accept`
/// value for its answer.
pub fn accept_key(method: &Method, headers: &HeaderMap) -> Result<String, NotAnUpgrade> {
    if method != Method::GET {
        return Err(NotAnUpgrade::BadRequest(
            "not a websocket upgrade: the method must be GET",
        ));
    }
    if !lists_token(headers, header::CONNECTION, "upgrade") {
        return Err(NotAnUpgrade::BadRequest(
            "not a websocket upgrade: `Connection: upgrade` is missing",
        ));
    }
    if !lists_token(headers, header::UPGRADE, "websocket") {
        return Err(NotAnUpgrade::BadRequest(
            "not a websocket upgrade: `Upgrade: websocket` is missing",
        ));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13")) {
        return Err(NotAnUpgrade::UnsupportedVersion);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(NotAnUpgrade::BadRequest("Sec-WebSocket-Key is missing"))?;
    let nonce = BASE64.decode(key.as_bytes()).unwrap_or_default();
    if nonce.len() != 16 {
        return Err(NotAnUpgrade::BadRequest(
            "Sec-WebSocket-Key must be 16 bytes in base64",
        ));
    }
    Ok(derive_accept_key(key.as_bytes()))
}

/// The `101` answer that completes the handshake.
pub fn switching_protocols(accept_key: &str) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(accept_key) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(name, HeaderValue::from_str(value).expect("value"));
        }
        headers
    }

    #[test]
    fn derives_the_rfc_example_accept_key() {
        let headers = request(&[
            (header::CONNECTION, "keep-alive, Upgrade"),
            (header::UPGRADE, "WebSocket"),
            (header::SEC_WEBSOCKET_VERSION, "13"),
            (header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        assert_eq!(
            accept_key(&Method::GET, &headers),
            Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_owned())
        );
        assert!(
            accept_key(&Method::HEAD, &headers).is_err(),
            "HEAD is not an upgrade"
        );
    }

    #[test]
    fn refuses_what_is_not_a_version_13_upgrade() {
        let full = [
            (header::CONNECTION, "upgrade"),
            (header::UPGRADE, "websocket"),
            (header::SEC_WEBSOCKET_VERSION, "13"),
            (header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        for missing in 0..full.len() {
            let partial: Vec<_> = full
                .iter()
                .enumerate()
                .filter(|(index, _)| *index != missing)
                .map(|(_, pair)| pair.clone())
                .collect();
            assert!(
                accept_key(&Method::GET, &request(&partial)).is_err(),
                "without {:?}",
                full[missing].0
            );
        }
        let mut old = full.to_vec();
        old[2] = (header::SEC_WEBSOCKET_VERSION, "8");
        assert_eq!(
            accept_key(&Method::GET, &request(&old)),
            Err(NotAnUpgrade::UnsupportedVersion)
        );
        let mut bad_key = full.to_vec();
        bad_key[3] = (header::SEC_WEBSOCKET_KEY, "not base64 !!");
        assert!(accept_key(&Method::GET, &request(&bad_key)).is_err());
    }
}
