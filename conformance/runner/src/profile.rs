//! What the server under test declares it supports on one transport, and how to start
//! it for a case that needs a short TTL, a small retention or an fs root: from its
//! manifest, or, without one, from the `capabilities` its `initialize` result
//! advertises (§9), using the command-line options of §1 for what those capabilities
//! say is settable.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::transcript::{Revision, Transcript, TransportName};

/// The session TTL a case that requires `session.ttl` runs with (× the time scale).
pub const SHORT_TTL: Duration = Duration::from_secs(2);

/// The per-process retention a case that requires `process.retention` runs with.
pub const SMALL_RETENTION_BYTES: u64 = 64 * 1024;

/// What one server offers on one transport.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    /// Declared features.
    pub features: BTreeSet<String>,
    /// Revisions it serves, if it says.
    pub revisions: Option<Vec<Revision>>,
    /// Transports it serves, if it says.
    pub transports: Option<Vec<TransportName>>,
    /// How to set what a case needs.
    pub args: ArgTemplates,
}

/// Argument templates, split like shell words, with a placeholder each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArgTemplates {
    /// Sets the session TTL: `{ms}`.
    pub ttl: Option<String>,
    /// Sets the per-process retention: `{bytes}`.
    pub retention: Option<String>,
    /// Confines fs paths to a directory: `{dir}`.
    pub fs_root: Option<String>,
}

/// `template` split like shell words, with `placeholder` replaced by `value` in each.
pub fn instantiate(template: &str, placeholder: &str, value: &str) -> Vec<String> {
    shlex::split(template)
        .unwrap_or_else(|| vec![template.to_owned()])
        .into_iter()
        .map(|word| word.replace(placeholder, value))
        .collect()
}

impl Profile {
    /// The profile a server advertises in its `initialize` result's `capabilities`
    /// (absent or not an object: no features).
    pub fn from_capabilities(capabilities: Option<&Value>) -> Profile {
        let mut profile = Profile::default();
        let Some(caps) = capabilities.filter(|caps| caps.is_object()) else {
            return profile;
        };
        let is_true = |pointer: &str| caps.pointer(pointer) == Some(&Value::Bool(true));
        let has =
            |pointer: &str, check: fn(&Value) -> bool| caps.pointer(pointer).is_some_and(check);
        let declared = [
            ("process.tty", is_true("/process/tty")),
            ("process.resize", is_true("/process/resize")),
            ("process.close_stdin", is_true("/process/closeStdin")),
            (
                "process.first_retained_seq",
                is_true("/process/firstRetainedSeq"),
            ),
            // Settable through `--output-retention` (§1) when its value is advertised.
            (
                "process.retention",
                has("/process/outputRetentionBytes", Value::is_u64),
            ),
            ("session.resume", is_true("/session/resume")),
            // Settable through `--session-ttl` (§1) when its value is advertised.
            ("session.ttl", has("/session/ttlMs", Value::is_u64)),
            ("fs", has("/fs", Value::is_object)),
            // Settable through `--fs-root` (§1) when the server says whether it has one.
            ("fs.root", has("/fs/root", Value::is_boolean)),
        ];
        profile.features = declared
            .into_iter()
            .filter(|(_, yes)| *yes)
            .map(|(name, _)| name.to_owned())
            .collect();
        let settable = |feature: &str, template: &str| {
            profile
                .features
                .contains(feature)
                .then(|| template.to_owned())
        };
        profile.args = ArgTemplates {
            ttl: settable("session.ttl", "--session-ttl {ms}ms"),
            retention: settable("process.retention", "--output-retention {bytes}"),
            fs_root: settable("fs.root", "--fs-root {dir}"),
        };
        profile.revisions = caps.get("revisions").and_then(Value::as_array).map(|list| {
            list.iter()
                .filter_map(|r| r.as_str().and_then(Revision::parse))
                .collect()
        });
        profile.transports = caps
            .get("transports")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|t| {
                        TransportName::ALL
                            .into_iter()
                            .find(|name| Some(name.as_str()) == t.as_str())
                    })
                    .collect()
            });
        profile
    }

    /// Why `case` cannot run against this server on `transport` at `revision`, if it
    /// cannot: the `SKIPPED(…)` reason.
    pub fn unmet(
        &self,
        case: &Transcript,
        transport: TransportName,
        revision: Revision,
    ) -> Option<String> {
        if let Some(transports) = &self.transports {
            if !transports.contains(&transport) {
                return Some(format!("undeclared: transport {}", transport.as_str()));
            }
        }
        if let Some(revisions) = &self.revisions {
            if !revisions.contains(&revision) {
                return Some(format!("undeclared: revision {}", revision.as_str()));
            }
        }
        let missing: Vec<&str> = case
            .requires
            .iter()
            .filter(|feature| !self.features.contains(*feature))
            .map(String::as_str)
            .collect();
        (!missing.is_empty()).then(|| format!("undeclared: {}", missing.join(", ")))
    }

    /// The options a server is started with for `case`: `ttl`, a small retention,
    /// `root` as its fs root, for the features the case requires and this profile
    /// knows how to set.
    pub fn server_args(&self, case: &Transcript, ttl: Duration, root: &Path) -> Vec<String> {
        let mut args = Vec::new();
        for feature in &case.requires {
            let (template, placeholder, value) = match feature.as_str() {
                "session.ttl" => (&self.args.ttl, "{ms}", ttl.as_millis().to_string()),
                "process.retention" => (
                    &self.args.retention,
                    "{bytes}",
                    SMALL_RETENTION_BYTES.to_string(),
                ),
                "fs.root" => (
                    &self.args.fs_root,
                    "{dir}",
                    root.to_string_lossy().into_owned(),
                ),
                _ => continue,
            };
            if let Some(template) = template {
                args.extend(instantiate(template, placeholder, &value));
            }
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn features_come_from_capabilities() {
        let caps = json!({
            "revisions": ["2026-06", "2026-08"],
            "transports": ["ws"],
            "process": {"tty": true, "resize": false, "closeStdin": true, "outputRetentionBytes": 1048576},
            "session": {"resume": true, "ttlMs": 30000},
            "fs": {"root": false},
        });
        let profile = Profile::from_capabilities(Some(&caps));
        let features: Vec<&str> = profile.features.iter().map(String::as_str).collect();
        assert_eq!(
            features,
            [
                "fs",
                "fs.root",
                "process.close_stdin",
                "process.retention",
                "process.tty",
                "session.resume",
                "session.ttl"
            ]
        );
        assert_eq!(profile.transports, Some(vec![TransportName::Ws]));
        assert_eq!(profile.revisions.as_ref().map(Vec::len), Some(2));
    }

    #[test]
    fn nothing_advertised_declares_nothing() {
        assert_eq!(Profile::from_capabilities(None), Profile::default());
        assert_eq!(
            Profile::from_capabilities(Some(&json!("yes"))),
            Profile::default()
        );
    }

    #[test]
    fn unmet_features_and_transports_skip() {
        let case = crate::transcript::parse(
            "c.xt",
            "# spec: §5\n# requires: session.resume, process.tty\n!! wait 1ms\n",
        )
        .unwrap();
        let profile = Profile::from_capabilities(Some(&json!({
            "transports": ["ws"], "session": {"resume": true}
        })));
        assert_eq!(
            profile.unmet(&case, TransportName::Ws, Revision::R2026_08),
            Some("undeclared: process.tty".into())
        );
        assert_eq!(
            profile.unmet(&case, TransportName::Stdio, Revision::R2026_08),
            Some("undeclared: transport stdio".into())
        );
        let settable = Profile::from_capabilities(Some(&json!({
            "session": {"ttlMs": 30000}, "fs": {"root": false}
        })));
        let args = settable.server_args(
            &crate::transcript::parse(
                "t.xt",
                "# spec: §5\n# requires: session.ttl, fs.root\n!! wait 1ms\n",
            )
            .unwrap(),
            Duration::from_millis(2500),
            Path::new("/tmp/x"),
        );
        assert_eq!(args, ["--session-ttl", "2500ms", "--fs-root", "/tmp/x"]);
    }
}
