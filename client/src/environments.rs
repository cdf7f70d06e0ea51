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
    id: Spanned<String>,
    url: Option<Spanned<String>>,
    program: Option<Spanned<String>>,
    args: Option<Spanned<Vec<String>>>,
    env: Option<Spanned<BTreeMap<String, String>>>,
    cwd: Option<Spanned<PathBuf>>,
    token_file: Option<Spanned<PathBuf>>,
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
            let entry_line = line_of(text, entry.span().start);
            let entry = entry.into_inner();
            let id = entry.id.get_ref().clone();
            // Errors point at the line of the field that is wrong.
            let fail = |field: &str, span: std::ops::Range<usize>, message: &str| {
                let line = line_of(text, span.start);
                EnvironmentsError(format!("{origin}:{line}: environments.{field}: {message}"))
            };
            if environments.iter().any(|known| known.id == id) {
                return Err(fail(
                    "id",
                    entry.id.span(),
                    &format!("{id:?} is defined twice"),
                ));
            }
            if let (Some(token_file), Some(_)) = (&entry.token_file, &entry.program) {
                return Err(fail(
                    "token_file",
                    token_file.span(),
                    &format!(
                        "environment {id:?}: token_file goes with url (a stdio program needs no token)"
                    ),
                ));
            }
            let transport = match (entry.url, entry.program) {
                (Some(_), Some(program)) => {
                    return Err(fail(
                        "program",
                        program.span(),
                        &format!("environment {id:?} has both url and program; give exactly one"),
                    ))
                }
                (None, None) => {
                    return Err(EnvironmentsError(format!(
                        "{origin}:{entry_line}: environments: environment {id:?} needs a url or a program"
                    )))
                }
                (Some(url), None) => {
                    let stdio_field = [
                        ("args", entry.args.as_ref().map(Spanned::span)),
                        ("env", entry.env.as_ref().map(Spanned::span)),
                        ("cwd", entry.cwd.as_ref().map(Spanned::span)),
                    ]
                    .into_iter()
                    .find_map(|(field, span)| Some((field, span?)));
                    if let Some((field, span)) = stdio_field {
                        return Err(fail(
                            field,
                            span,
                            &format!(
                                "environment {id:?}: args, env and cwd go with program, not url"
                            ),
                        ));
                    }
                    let span = url.span();
                    let url = url.into_inner();
                    match ExecServerTransport::parse(&url) {
                        Ok(transport @ ExecServerTransport::WebSocketUrl(_)) => transport,
                        _ => {
                            return Err(fail(
                                "url",
                                span,
                                &format!(
                                    "{url:?} is not a ws:// or wss:// URL (a stdio server is given with program and args)"
                                ),
                            ))
                        }
                    }
                }
                (None, Some(program)) => ExecServerTransport::StdioCommand {
                    program: program.into_inner(),
                    args: entry.args.map(Spanned::into_inner).unwrap_or_default(),
                    env: entry.env.map(Spanned::into_inner).unwrap_or_default(),
                    cwd: entry.cwd.map(Spanned::into_inner),
                },
            };
            environments.push(Environment {
                id,
                transport,
                token_file: entry.token_file.map(Spanned::into_inner),
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

    /// The environment `id`, or an error that lists the ids there are (`origin` names
    /// the file).
    pub fn lookup(&self, id: &str, origin: &str) -> Result<&Environment, EnvironmentsError> {
        self.get(id).ok_or_else(|| {
            let known: Vec<String> = self
                .environments
                .iter()
                .map(|environment| format!("{:?}", environment.id))
                .collect();
            EnvironmentsError(match known.is_empty() {
                true => format!("no environment {id:?}: {origin} defines none"),
                false => format!(
                    "no environment {id:?} in {origin}; it defines {}",
                    known.join(", ")
                ),
            })
        })
    }

    /// The server to use when none was named: `EXEC_SERVER_URL` (`url_override`) wins
    /// over the file's default (and then carries no token file; its id is the
    /// variable's name); it takes what `--connect` takes (`ws://`, `wss://`,
    /// `stdio:COMMAND`); `none` means no exec-server at all; empty means unset.
    pub fn default_environment(
        &self,
        url_override: Option<&str>,
    ) -> Result<Option<Environment>, EnvironmentsError> {
        match url_override {
            Some("none") => Ok(None),
            Some(url) if !url.is_empty() => match ExecServerTransport::parse(url) {
                Ok(transport) => Ok(Some(Environment {
                    id: URL_OVERRIDE_VAR.to_owned(),
                    transport,
                    token_file: None,
                })),
                Err(err) => Err(EnvironmentsError(format!(
                    "{URL_OVERRIDE_VAR}: {err} (or none)"
                ))),
            },
            _ => Ok(self.default.as_deref().and_then(|id| self.get(id)).cloned()),
        }
    }
}

/// The environments file used when none is given: `$XDG_CONFIG_HOME/exec-server/
/// environments.toml`, or `~/.config/exec-server/environments.toml` when
/// `XDG_CONFIG_HOME` is unset, empty or relative (as the XDG spec says); `None` when
/// neither it nor `HOME` is set.
pub fn default_path() -> Option<PathBuf> {
    default_path_from(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
}

fn default_path_from(
    xdg_config_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let config = xdg_config_home
        .map(PathBuf::from)
        .filter(|path| path.is_absolute())
        .or_else(|| {
            home.filter(|home| !home.is_empty())
                .map(|home| PathBuf::from(home).join(".config"))
        })?;
    Some(config.join("exec-server").join("environments.toml"))
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
        // Empty means unset: the file's default.
        assert!(matches!(
            transport(Some("")),
            Ok(Some(ExecServerTransport::StdioCommand { .. }))
        ));
        // stdio: as --connect takes it.
        let Ok(Some(ExecServerTransport::StdioCommand { program, args, .. })) =
            transport(Some("stdio:ssh box 'exec-server --listen stdio'"))
        else {
            panic!("stdio override");
        };
        assert_eq!((program.as_str(), args.len()), ("ssh", 2));
        let err = transport(Some("http://x")).unwrap_err().to_string();
        assert!(err.starts_with("EXEC_SERVER_URL: "), "{err}");
        assert!(err.contains("stdio:COMMAND"), "{err}");
    }

    #[test]
    fn an_unknown_id_lists_the_known_ones() {
        let parsed = Environments::parse(GOOD, "env.toml").expect("valid");
        assert!(parsed.lookup("box", "env.toml").is_ok());
        let err = parsed.lookup("nope", "env.toml").unwrap_err().to_string();
        assert_eq!(
            err,
            "no environment \"nope\" in env.toml; it defines \"local\", \"box\""
        );
        let err = Environments::default()
            .lookup("nope", "env.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "no environment \"nope\": env.toml defines none");
    }

    #[test]
    fn the_default_file_honours_xdg_config_home() {
        let path = |xdg: Option<&str>, home: Option<&str>| {
            default_path_from(xdg.map(Into::into), home.map(Into::into))
        };
        assert_eq!(
            path(Some("/xdg"), Some("/home/u")),
            Some(PathBuf::from("/xdg/exec-server/environments.toml"))
        );
        for xdg in [None, Some(""), Some("relative/dir")] {
            assert_eq!(
                path(xdg, Some("/home/u")),
                Some(PathBuf::from(
                    "/home/u/.config/exec-server/environments.toml"
                )),
                "{xdg:?}"
            );
        }
        assert_eq!(path(None, None), None);
    }

    #[test]
    fn errors_point_at_the_line_of_the_bad_field() {
        let cases = [
            (
                "[[environments]]\nid = \"a\"\nurl = \"http://x\"\n",
                "env.toml:3: environments.url:",
            ),
            (
                "[[environments]]\nid = \"a\"\nurl = \"ws://127.0.0.1:1\"\n\ncwd = \"/tmp\"\n",
                "env.toml:5: environments.cwd:",
            ),
            (
                "[[environments]]\nid = \"a\"\nurl = \"ws://127.0.0.1:1\"\nargs = [\"x\"]\n",
                "env.toml:4: environments.args:",
            ),
            (
                "[[environments]]\nid = \"a\"\nprogram = \"ssh\"\nargs = \"box\"\n",
                "env.toml:4:",
            ),
            (
                "[[environments]]\nid = \"a\"\nprogram = \"ssh\"\n\nbogus = 1\n",
                "env.toml:5:",
            ),
        ];
        for (text, expected) in cases {
            let err = Environments::parse(text, "env.toml")
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        let both = "[[environments]]\nid = \"a\"\nurl = \"ws://127.0.0.1:1\"\nprogram = \"x\"\n";
        let err = Environments::parse(both, "env.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("env.toml:4: environments.program:"),
            "{err}"
        );
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
            err.starts_with("env.toml:4: environments.token_file:"),
            "{err}"
        );
        let dup = "[[environments]]\nid = \"a\"\nurl = \"ws://127.0.0.1:1\"\n[[environments]]\nid = \"a\"\nurl = \"ws://127.0.0.1:2\"\n";
        assert!(Environments::parse(dup, "env.toml")
            .unwrap_err()
            .to_string()
            .starts_with("env.toml:5: environments.id"));
    }
}
