//! [`ExecServerBuilder`]: which server to start (in-tree in-process, a binary, or a
//! command line), on which transport, with which arguments, token and time scale.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use exec_client::{BearerToken, TokenError};
use exec_protocol::Revision;

use crate::error::{HarnessError, Result};
use crate::launch::{self, Launched, Program, Transport};
use crate::server::{ExecServer, ServerProcess};
use crate::wait::{Waits, time_scale_from_env};

/// Configures and starts a server. Obtain one with [`ExecServer::builder`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), exec_server_harness::HarnessError> {
/// use exec_server_harness::ExecServer;
/// let server = ExecServer::builder()
///     .stdio()
///     .arg("--output-retention")
///     .arg("4096")
///     .time_scale(2.0)
///     .start()
///     .await?;
/// let conn = server.connect().await?; // stdio: the server's stdin and stdout
/// conn.initialize("builder-example").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ExecServerBuilder {
    transport: Transport,
    program: Program,
    listen: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    time_scale: Option<f64>,
    /// Checked when set, reported by `start` (its `Debug` never shows the secret).
    auth_token: Option<std::result::Result<BearerToken, TokenError>>,
    /// Sent on connections only (see `bearer_token`).
    bearer_token: Option<std::result::Result<BearerToken, TokenError>>,
    revision: Revision,
}

impl ExecServer {
    /// A builder: in-tree server on websocket unless told otherwise.
    pub fn builder() -> ExecServerBuilder {
        ExecServerBuilder {
            transport: Transport::WebSocket,
            program: Program::InTree,
            listen: None,
            args: Vec::new(),
            env: Vec::new(),
            time_scale: None,
            auth_token: None,
            bearer_token: None,
            revision: Revision::R2026_06,
        }
    }
}

impl ExecServerBuilder {
    /// Serve over a websocket (the default).
    pub fn websocket(mut self) -> Self {
        self.transport = Transport::WebSocket;
        self
    }

    /// Serve over stdio (JSON Lines on the server's stdin and stdout: exactly one
    /// connection).
    pub fn stdio(mut self) -> Self {
        self.transport = Transport::Stdio;
        self
    }

    /// Serve over the given transport.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Run this binary instead of the in-process server. The harness appends
    /// `--listen ws://127.0.0.1:0` or `--listen stdio`, then the extra [`arg`](Self::arg)s.
    pub fn binary(self, path: impl Into<PathBuf>) -> Self {
        let path = path.into().to_string_lossy().into_owned();
        self.command([path])
    }

    /// Run this command line (program and leading arguments) instead of the in-process
    /// server; `--listen …` and the extra args are appended.
    pub fn command<I, S>(mut self, words: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.program = Program::Command(words.into_iter().map(Into::into).collect());
        self
    }

    /// Talk to a websocket server that is already running at `url` (`ws://IP:PORT`)
    /// instead of starting one: `start` waits for its `GET /readyz`, and dropping the
    /// handle leaves it running. It has no pid and no stderr; arguments and environment
    /// cannot be given to it.
    pub fn attach(mut self, url: impl Into<String>) -> Self {
        self.transport = Transport::WebSocket;
        self.program = Program::Attached(url.into());
        self
    }

    /// Overrides the value passed to `--listen` for a binary or command (e.g. `stdio://`);
    /// it must still select the builder's transport.
    pub fn listen(mut self, url: impl Into<String>) -> Self {
        self.listen = Some(url.into());
        self
    }

    /// One extra server argument, e.g. `--output-retention`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Several extra server arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable for a child server (ignored in-process).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Requires this bearer token: the harness writes it to a private file, passes
    /// `--auth-token-file FILE` to the server, and sends `Authorization: Bearer …` on
    /// every websocket connection it opens. A token that cannot be sent in an HTTP
    /// header (empty, spaces, control characters) makes [`start`](Self::start) fail.
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(BearerToken::new(token.into()));
        self
    }

    /// Sends `Authorization: Bearer …` with this token on every websocket connection,
    /// without telling the server: for a server given its token some other way (its own
    /// flag, or one already running). Fails at [`start`](Self::start) like
    /// [`auth_token`](Self::auth_token) for a token that cannot be sent.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(BearerToken::new(token.into()));
        self
    }

    /// Multiplies every deadline; overrides `EXEC_HARNESS_TIME_SCALE`.
    pub fn time_scale(mut self, scale: f64) -> Self {
        self.time_scale = Some(scale);
        self
    }

    /// The protocol revision the harness's typed helpers speak on every connection to
    /// this server (default [`Revision::R2026_06`]; a connection can change it with
    /// [`Connection::set_revision`](crate::Connection::set_revision)). At
    /// [`Revision::R2026_08`], [`ProcessSpec`](crate::ProcessSpec)'s `cwd` and the
    /// typed fs helpers send `file:` URIs, and `Session::write`/`close_stdin` send a
    /// fresh `writeId`. Raw JSON (`request`, `send_raw`) and `call(&params)` go out
    /// exactly as given. The server is not told: pass its own flags with
    /// [`arg`](Self::arg).
    pub fn revision(mut self, revision: Revision) -> Self {
        self.revision = revision;
        self
    }

    /// Starts the server. A child server on websocket must print its `ws://` line and
    /// answer `GET /readyz` within twice the default deadline. Open a connection with
    /// [`ExecServer::connect`].
    pub async fn start(self) -> Result<ExecServer> {
        let waits = Waits {
            scale: self.time_scale.unwrap_or_else(time_scale_from_env),
        };
        let mut args = self.args.clone();
        // The server reads the file at start-up; it only has to outlive the launch.
        let (token, _token_file) = match self.auth_token {
            None => match self.bearer_token {
                None => (None, None),
                Some(token) => (
                    Some(
                        token
                            .map_err(|err| HarnessError::Startup(format!("bearer_token: {err}")))?,
                    ),
                    None,
                ),
            },
            Some(token) => {
                let token =
                    token.map_err(|err| HarnessError::Startup(format!("auth_token: {err}")))?;
                let file = write_token_file(&token)?;
                args.push("--auth-token-file".into());
                args.push(file.path().to_string_lossy().into_owned());
                (Some(token), Some(file))
            }
        };
        let Launched {
            running,
            url,
            stdio,
        } = launch::launch(
            &self.program,
            self.transport,
            self.listen.as_deref(),
            &args,
            &self.env,
            waits.default_wait() * 2,
        )
        .await?;
        Ok(ExecServer {
            process: Arc::new(ServerProcess {
                running: Mutex::new(running),
                transport: self.transport,
                url,
                waits,
                token,
                stdio: Mutex::new(stdio),
                revision: self.revision,
            }),
        })
    }
}

/// A file only this user can read (tempfile creates it with mode 0600).
fn write_token_file(token: &BearerToken) -> Result<tempfile::NamedTempFile> {
    use std::io::Write as _;
    let mut file = tempfile::Builder::new()
        .prefix("exec-server-token-")
        .tempfile()?;
    file.write_all(token.secret().as_bytes())?;
    file.flush()?;
    Ok(file)
}
