//! [`StartRequest`]: what to start, with the client's defaults, turned into the wire's
//! `process/start` params.

use std::collections::BTreeMap;

use exec_protocol::{EnvPolicy, Inherit, StartParams, WirePath};

/// What to start. Defaults: cwd `/`, `envPolicy {inherit: "core"}`, no tty, no stdin,
/// process id `client-N`.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// `None`: the client picks `client-N`.
    pub process_id: Option<String>,
    pub argv: Vec<String>,
    /// An absolute path; sent in the client's `ClientOptions::path_form`.
    pub cwd: String,
    /// With `env_policy`, laid over the policy's environment; without, exactly the
    /// child's environment.
    pub env: BTreeMap<String, String>,
    pub env_policy: Option<EnvPolicy>,
    pub tty: bool,
    pub pipe_stdin: bool,
    pub arg0: Option<String>,
}

impl StartRequest {
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            process_id: None,
            argv: argv.into_iter().map(Into::into).collect(),
            cwd: "/".into(),
            env: BTreeMap::new(),
            env_policy: Some(EnvPolicy {
                inherit: Inherit::Core,
                ..EnvPolicy::default()
            }),
            tty: false,
            pipe_stdin: false,
            arg0: None,
        }
    }

    /// The wire params, for the process id the client settled on and with `cwd`
    /// spelled as the client sends paths.
    pub(crate) fn into_params(self, process_id: String, cwd: WirePath) -> StartParams {
        StartParams {
            process_id,
            argv: self.argv,
            cwd,
            env: self.env,
            tty: self.tty,
            pipe_stdin: self.pipe_stdin,
            arg0: self.arg0,
            env_policy: self.env_policy,
            ..StartParams::new(String::new(), Vec::<String>::new(), "/")
        }
    }
}
