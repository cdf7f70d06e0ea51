//! How a client connects and how long it waits: [`ClientOptions`] and its defaults.

use std::time::Duration;

use exec_protocol::PathForm;

use crate::token::BearerToken;

/// The environment variable `exec` reads a bearer token from (never a command-line value).
pub const TOKEN_VAR: &str = "EXEC_SERVER_TOKEN";

/// The default [`ClientOptions::call_timeout`]: a minute. Every request but a long-poll
/// is answered at once by a healthy server; the slow ones are big `fs/readFile`s over a
/// slow link and `process/write`s held back while the child does not read its stdin.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Sent as `clientName` in `initialize`.
    pub client_name: String,
    /// Limit for opening the transport.
    pub connect_timeout: Duration,
    /// Limit for the `initialize` answer.
    pub initialize_timeout: Duration,
    /// Limit for every other call, from the moment it is made (waiting for a reconnect
    /// included) until its answer; a `process/read` adds its `waitMs`. A call that runs
    /// out fails with [`ClientError::Timeout`](crate::error::ClientError::Timeout) naming the
    /// method; it may still take effect on the server. `None` waits as long as the
    /// connection lives. Default [`DEFAULT_CALL_TIMEOUT`].
    pub call_timeout: Option<Duration>,
    /// Sent as `Authorization: Bearer …` on the websocket upgrade (the server's
    /// `--auth-token-file`); unused on stdio.
    pub bearer_token: Option<BearerToken>,
    /// Websocket only: after a transport loss, keep trying to resume the session for
    /// this long. `None` (the default) fails everything at the first loss.
    pub reconnect: Option<Duration>,
    /// How every path the client sends is spelled: `process/start`'s `cwd` and every
    /// `fs/*` path. [`PathForm::Plain`] (the default) sends `/tmp/x` as given, which
    /// every server of revision 2026-06 needs; [`PathForm::FileUri`] sends
    /// `file:///tmp/x` (percent-encoded), which upstream at revision 2026-08 requires
    /// (docs/protocol.md §0). Only absolute paths (starting with `/`) are rewritten; any
    /// other string (a relative path, a `file:` URI you built yourself) is sent as
    /// given, so the server reports what is wrong with it.
    ///
    /// The API is the same in both modes: paths the server sends back
    /// (`canonicalize`, `join`, `parent`, `fs_walk` entries and errors) are returned as
    /// plain absolute paths whichever form they came in (a `file:` URI is decoded; bytes
    /// that are not UTF-8 become U+FFFD). `environment_info` returns the protocol type
    /// unchanged (its 2026-08 `cwd`/`tempDir` are URIs: `WirePath::resolve` reads them).
    pub path_form: PathForm,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            client_name: "exec-server-client".into(),
            connect_timeout: Duration::from_secs(10),
            initialize_timeout: Duration::from_secs(10),
            call_timeout: Some(DEFAULT_CALL_TIMEOUT),
            bearer_token: None,
            reconnect: None,
            path_form: PathForm::Plain,
        }
    }
}
