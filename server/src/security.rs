//! Who may open a websocket (docs/protocol.md §2.3): the bearer token, and the
//! `Origin` and `Host` rules that every upgrade passes before any JSON-RPC is read.
//!
//! Loopback is not a security boundary: a browser lets any web page open
//! `ws://127.0.0.1:PORT` (sending its `Origin`), and a DNS-rebound name reaches the same
//! port under a foreign `Host`. Both are refused here; the token guards the rest.

use std::fmt;
use std::net::SocketAddr;

use axum::http::{header, HeaderMap};
pub use exec_client::{BearerToken, TokenError};

/// Why an upgrade was refused; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `401`: no token, or the wrong one.
    Unauthorized,
    /// `403`: an `Origin` not listed by `--allow-origin` (a web page).
    ForeignOrigin(String),
    /// `403`: on a loopback bind, a `Host` that is not this server (DNS rebinding).
    ForeignHost(String),
}

/// At most this much of a header value the client sent is echoed in a refusal.
const ECHOED_CHARS: usize = 100;

fn echoed(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .chars()
        .take(ECHOED_CHARS)
        .collect()
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unauthorized => f.write_str(
                "missing or wrong bearer token: send `Authorization: Bearer <token>` with the token in the server's --auth-token-file",
            ),
            Refusal::ForeignOrigin(origin) => write!(
                f,
                "websocket upgrades from web pages are refused (Origin: {origin}); a trusted origin can be allowed with --allow-origin"
            ),
            Refusal::ForeignHost(host) => write!(
                f,
                "Host {host} does not name this loopback server; connect to its IP:PORT or localhost:PORT, or allow the name with --allow-host"
            ),
        }
    }
}

/// The rules every websocket upgrade must pass.
#[derive(Debug, Clone, Default)]
pub struct UpgradePolicy {
    /// Required as `Authorization: Bearer …` when set (`--auth-token-file`).
    pub token: Option<BearerToken>,
    /// `Origin` values accepted (`--allow-origin`); any other `Origin` is refused.
    pub allowed_origins: Vec<String>,
    /// Extra `Host` values accepted on a loopback bind (`--allow-host`): `NAME:PORT`
    /// matches exactly, a bare `NAME` matches that name with any port or none (a
    /// proxy in front of the server may use its own port).
    pub allowed_hosts: Vec<String>,
}

impl UpgradePolicy {
    /// Checks one upgrade request to a server bound at `bound`. The `Origin` and `Host`
    /// rules come first: they refuse what a browser sends, whatever token it carries.
    pub fn admit(&self, headers: &HeaderMap, bound: SocketAddr) -> Result<(), Refusal> {
        if let Some(origin) = headers.get(header::ORIGIN) {
            let allowed = self
                .allowed_origins
                .iter()
                .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin.as_bytes()));
            if !allowed {
                return Err(Refusal::ForeignOrigin(echoed(origin.as_bytes())));
            }
        }
        if bound.ip().to_canonical().is_loopback() {
            let host = headers
                .get(header::HOST)
                .map(|host| host.as_bytes())
                .unwrap_or_default();
            let own = std::str::from_utf8(host).is_ok_and(|host| self.is_own_host(host, bound));
            if !own {
                return Err(Refusal::ForeignHost(echoed(host)));
            }
        }
        if let Some(token) = &self.token {
            let carried = headers
                .get_all(header::AUTHORIZATION)
                .iter()
                .any(|value| token.is_carried_by(value.as_bytes()));
            if !carried {
                return Err(Refusal::Unauthorized);
            }
        }
        Ok(())
    }

    fn is_own_host(&self, host: &str, bound: SocketAddr) -> bool {
        let port = bound.port();
        let own = [
            bound.to_string(),
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ];
        let name = host_name(host);
        own.iter().any(|own| own.eq_ignore_ascii_case(host))
            || self.allowed_hosts.iter().any(|allowed| {
                allowed.eq_ignore_ascii_case(host)
                    || (host_name(allowed) == allowed.as_str()
                        && allowed.eq_ignore_ascii_case(name))
            })
    }
}

/// The name part of a `Host` value: `[::1]:80` → `[::1]`, `example:80` → `example`.
fn host_name(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port))
            if !name.is_empty()
                && (!name.starts_with('[') || name.ends_with(']'))
                && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            name
        }
        _ => host,
    }
}

/// Whether serving `addr` without a token would hand command execution to the network.
pub fn exposes_network(addr: SocketAddr) -> bool {
    !addr.ip().to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const BOUND: &str = "127.0.0.1:8765";

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name, HeaderValue::from_str(value).expect("header value"));
        }
        map
    }

    fn bound() -> SocketAddr {
        BOUND.parse().expect("addr")
    }

    fn with_token(token: &str) -> UpgradePolicy {
        UpgradePolicy {
            token: Some(BearerToken::new(token).expect("token")),
            ..UpgradePolicy::default()
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let token = BearerToken::new("s3cret").expect("token");
        assert!(!format!("{token:?}").contains("s3cret"));
        assert!(!format!("{:?}", with_token("s3cret")).contains("s3cret"));
    }

    #[test]
    fn the_token_must_be_carried_as_a_bearer_credential() {
        let policy = with_token("s3cret");
        let host = (header::HOST, BOUND);
        let admit = |authorization: Option<&str>| {
            let mut pairs = vec![host.clone()];
            if let Some(value) = authorization {
                pairs.push((header::AUTHORIZATION, value));
            }
            policy.admit(&headers(&pairs), bound())
        };
        assert_eq!(admit(Some("Bearer s3cret")), Ok(()));
        assert_eq!(admit(Some("bearer s3cret")), Ok(()));
        assert_eq!(admit(None), Err(Refusal::Unauthorized));
        assert_eq!(admit(Some("Bearer s3cre")), Err(Refusal::Unauthorized));
        assert_eq!(admit(Some("Bearer s3crett")), Err(Refusal::Unauthorized));
        assert_eq!(admit(Some("Basic s3cret")), Err(Refusal::Unauthorized));
        assert_eq!(admit(Some("s3cret")), Err(Refusal::Unauthorized));
    }

    #[test]
    fn origins_are_refused_unless_listed() {
        let policy = UpgradePolicy {
            allowed_origins: vec!["https://ide.example".into()],
            ..UpgradePolicy::default()
        };
        let admit = |origin: &str| {
            policy.admit(
                &headers(&[(header::HOST, BOUND), (header::ORIGIN, origin)]),
                bound(),
            )
        };
        assert_eq!(admit("https://ide.example"), Ok(()));
        assert!(matches!(
            admit("https://evil.example"),
            Err(Refusal::ForeignOrigin(_))
        ));
        assert!(matches!(admit("null"), Err(Refusal::ForeignOrigin(_))));
        assert_eq!(
            policy.admit(&headers(&[(header::HOST, BOUND)]), bound()),
            Ok(())
        );
    }

    #[test]
    fn a_loopback_server_answers_only_to_its_own_names() {
        let policy = UpgradePolicy {
            allowed_hosts: vec!["dev.internal:8765".into(), "proxy.example".into()],
            ..UpgradePolicy::default()
        };
        let admit = |host: &str| policy.admit(&headers(&[(header::HOST, host)]), bound());
        for own in [
            BOUND,
            "localhost:8765",
            "LOCALHOST:8765",
            "[::1]:8765",
            "dev.internal:8765",
            "proxy.example",
            "proxy.example:443",
        ] {
            assert_eq!(admit(own), Ok(()), "{own}");
        }
        for foreign in [
            "evil.example:8765",
            "localhost:1",
            "localhost",
            "127.0.0.1",
            "dev.internal:1",
            "dev.internal",
            "proxy.example.evil:443",
        ] {
            assert!(
                matches!(admit(foreign), Err(Refusal::ForeignHost(_))),
                "{foreign}"
            );
        }
        assert!(matches!(
            policy.admit(&HeaderMap::new(), bound()),
            Err(Refusal::ForeignHost(_))
        ));
        let everywhere: SocketAddr = "0.0.0.0:8765".parse().expect("addr");
        assert_eq!(
            policy.admit(&headers(&[(header::HOST, "evil.example")]), everywhere),
            Ok(())
        );
    }

    #[test]
    fn only_loopback_addresses_stay_off_the_network() {
        for loopback in [
            "127.0.0.1:1",
            "127.1.2.3:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(
                !exposes_network(loopback.parse().expect("addr")),
                "{loopback}"
            );
        }
        for exposed in ["0.0.0.0:1", "[::]:1", "10.0.0.1:1"] {
            assert!(exposes_network(exposed.parse().expect("addr")), "{exposed}");
        }
    }
}
