//! Configured environments: a TOML file of named exec-servers and a default, with
//! `EXEC_SERVER_URL` as an override (docs/protocol.md §8).
//!
//! ```toml
//! default = "local"
//!
//! [[environments]]
//! id = "local"
//! url = "ws://127.0.0.1:8765"
//! token_file = "local.token"   # relative to this file's directory
//!
//! [[environments]]
//! id = "build-box"
//! program = "ssh"
//! args = ["build-box", "exec-server", "--listen", "stdio"]
//! env = { LANG = "C" }
//! cwd = "/tmp"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::transport::ExecServerTransport;

/// The variable that overrides the file's default: a websocket URL, or `none`.
pub const URL_OVERRIDE_VAR: &str = "EXEC_SERVER_URL";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub id: String,
    pub transport: ExecServerTransport,
    /// The server's bearer token, read when it is used (websocket entries only).
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Environments {
    pub default: Option<String>,
    pub environments: Vec<Environment>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct EnvironmentsError(String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    default: Option<Spanned<String>>,
    #[serde(default)]
    environments: Vec<Spanned<RawEnvironment>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironment {
    id: String,
    url: Option<String>,
    program: Option<String>,
    args: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    cwd: Option<PathBuf>,
    token_file: Option<PathBuf>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Environments {
    pub fn load(path: &Path) -> Result<Environments, EnvironmentsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| EnvironmentsError(format!("{}: {err}", path.display())))?;
        let mut parsed = Self::parse(&text, &path.display().to_string())?;
        let directory = path.parent().unwrap_or(Path::new("."));
        for environment in &mut parsed.environments {
            if let Some(token_file) = &mut environment.token_file {
                *token_file = directory.join(&*token_file);
            }
        }
        Ok(parsed)
    }

    /// Parses the file's text; `origin` names it in errors (`FILE:LINE: …`).
    pub fn parse(text: &str, origin: &str) -> Result<Environments, EnvironmentsError> {
        let raw: RawFile = toml::from_str(text).map_err(|err| {
            let line = err.span().map_or(0, |span| line_of(text, span.start));
            EnvironmentsError(format!("{origin}:{line}: {}", err.message()))
        })?;
        let mut environments: Vec<Environment> = Vec::new();
        for entry in raw.environments {
            let line = line_of(text, entry.span().start);
            let fail = |field: &str, message: &str| {
                EnvironmentsError(format!("{origin}:{line}: environments.{field}: {message}"))
            };
            let entry = entry.into_inner();
            if environments.iter().any(|known| known.id == entry.id) {
                return Err(fail("id", &format!("{:?} is defined twice", entry.id)));
            }
            if entry.token_file.is_some() && entry.program.is_some() {
                return Err(fail(
                    "token_file",
                    &format!(
                        "environment {:?}: token_file goes with url (a stdio program needs no token)",
                        entry.id
                    ),
                ));
            }
            let transport = match (entry.url, entry.program) {
                (Some(_), Some(_)) => {
                    return Err(fail(
                        "url",
                        &format!(
                            "environment {:?} has both url and program; give exactly one",
                            entry.id
                        ),
                    ))
                }
                (None, None) => {
                    return Err(fail(
                        "url",
                        &format!("environment {:?} needs a url or a program", entry.id),
                    ))
                }
                (Some(url), None) => {
                    if entry.args.is_some() || entry.env.is_some() || entry.cwd.is_some() {
                        return Err(fail(
                            "args",
                            &format!(
                                "environment {:?}: args, env and cwd go with program, not url",
                                entry.id
                            ),
                        ));
                    }
                    match ExecServerTransport::parse(&url) {
                        Ok(transport @ ExecServerTransport::WebSocketUrl(_)) => transport,
                        _ => {
                            return Err(fail(
                                "url",
                                &format!("{url:?} is not a ws:// or wss:// URL"),
                            ))
                        }
                    }
                }
                (None, Some(program)) => ExecServerTransport::StdioCommand {
                    program,
                    args: entry.args.unwrap_or_default(),
                    env: entry.env.unwrap_or_default(),
                    cwd: entry.cwd,
                },
            };
            environments.push(Environment {
                id: entry.id,
                transport,
                token_file: entry.token_file,
            });
        }
        let default = match raw.default {
            None => None,
            Some(default) => {
                let line = line_of(text, default.span().start);
                let default = default.into_inner();
                if !environments.iter().any(|known| known.id == default) {
                    return Err(EnvironmentsError(format!(
                        "{origin}:{line}: default: no environment has id {default:?}"
                    )));
                }
                Some(default)
            }
        };
        Ok(Environments {
            default,
            environments,
        })
    }

    pub fn get(&self, id: &str) -> Option<&Environment> {
        self.environments
            .iter()
            .find(|environment| environment.id == id)
    }

    /// The server to use when none was named: `EXEC_SERVER_URL` (`url_override`) wins
    /// over the file's default (and then carries no token file; its id is the
    /// variable's name); `none` means no exec-server at all.
    pub fn default_environment(
        &self,
        url_override: Option<&str>,
    ) -> Result<Option<Environment>, EnvironmentsError> {
        match url_override {
            Some("none") => Ok(None),
            Some(url) => match ExecServerTransport::parse(url) {
                Ok(transport @ ExecServerTransport::WebSocketUrl(_)) => Ok(Some(Environment {
                    id: URL_OVERRIDE_VAR.to_owned(),
                    transport,
                    token_file: None,
                })),
                _ => Err(EnvironmentsError(format!(
                    "{URL_OVERRIDE_VAR}={url:?} is not a ws:// or wss:// URL (or none)"
                ))),
            },
            None => Ok(self.default.as_deref().and_then(|id| self.get(id)).cloned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_relative_to_the_environments_file() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("environments.toml");
        std::fs::write(&path, GOOD).expect("write");
        let loaded = Environments::load(&path).expect("load");
        assert_eq!(
            loaded.get("local").and_then(|e| e.token_file.clone()),
            Some(directory.path().join("local.token"))
        );
    }

    const GOOD: &str = r#"
default = "box"

[[environments]]
id = "local"
url = "ws://127.0.0.1:1"
token_file = "local.token"

[[environments]]
id = "box"
program = "ssh"
args = ["box", "exec-server", "--listen", "stdio"]
env = { LANG = "C" }
cwd = "/tmp"
"#;

    #[test]
    fn parses_urls_commands_and_the_default() {
        let parsed = Environments::parse(GOOD, "env.toml").expect("valid");
        assert_eq!(parsed.default.as_deref(), Some("box"));
        assert_eq!(
            parsed.get("local").map(|e| e.transport.clone()),
            Some(ExecServerTransport::WebSocketUrl("ws://127.0.0.1:1".into()))
        );
        assert_eq!(
            parsed.get("local").and_then(|e| e.token_file.clone()),
            Some(PathBuf::from("local.token"))
        );
        let Some(ExecServerTransport::StdioCommand {
            program,
            args,
            env,
            cwd,
        }) = parsed.get("box").map(|e| e.transport.clone())
        else {
            panic!("stdio command");
        };
        assert_eq!(
            (program.as_str(), args.len(), env["LANG"].as_str(), cwd),
            ("ssh", 4, "C", Some(PathBuf::from("/tmp")))
        );
    }

    #[test]
    fn the_url_variable_overrides_the_default() {
        let parsed = Environments::parse(GOOD, "env.toml").expect("valid");
        let transport = |url_override| {
            parsed
                .default_environment(url_override)
                .map(|found| found.map(|environment| environment.transport))
        };
        assert!(matches!(
            transport(None),
            Ok(Some(ExecServerTransport::StdioCommand { .. }))
        ));
        assert_eq!(
            transport(Some("ws://10.0.0.1:9")),
            Ok(Some(ExecServerTransport::WebSocketUrl(
                "ws://10.0.0.1:9".into()
            )))
        );
        assert_eq!(transport(Some("none")), Ok(None));
        assert!(transport(Some("stdio:x")).is_err());
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        let both = "[[environments]]\nid = \"a\"\nurl = \"ws://127.0.0.1:1\"\nprogram = \"x\"\n";
        let err = Environments::parse(both, "env.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("env.toml:1: environments.url:"), "{err}");
        let neither = "\n\n[[environments]]\nid = \"a\"\n";
        let err = Environments::parse(neither, "env.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("env.toml:3:"), "{err}");
        let unknown = "[[environments]]\nid = \"a\"\nurl = \"ws://127.0.0.1:1\"\nport = 3\n";
        let err = Environments::parse(unknown, "env.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("env.toml:") && err.contains("port"), "{err}");
        let bad_default = "default = \"zzz\"\n";
        let err = Environments::parse(bad_default, "env.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "env.toml:1: default: no environment has id \"zzz\"");
        let syntax = "[[environments]\n";
        assert!(Environments::parse(syntax, "env.toml")
            .unwrap_err()
            .to_string()
            .starts_with("env.toml:1:"));
        let stdio_token = "[[environments]]\nid = \"a\"\nprogram = \"ssh\"\ntoken_file = \"t\"\n";
        let err = Environments::parse(stdio_token, "env.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("env.toml:1: environments.token_file:"),
            "{err}"
        );
        let dup = "[[environments]]\nid = \"a\"\nurl = \"ws://127.0.0.1:1\"\n[[environments]]\nid = \"a\"\nurl = \"ws://127.0.0.1:2\"\n";
        assert!(Environments::parse(dup, "env.toml")
            .unwrap_err()
            .to_string()
            .starts_with("env.toml:4: environments.id"));
    }
}
