//! The manifest an implementation keeps in its own repository (`--manifest FILE`,
//! TOML): what it serves and supports, and how to start it with a short TTL, a small
//! retention, an fs root or a token. The in-tree server has one built in. A manifest
//! becomes one [`Profile`] per transport; [`mismatches`] compares it with what the
//! server advertises (§9).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::profile::{ArgTemplates, Profile};
use crate::transcript::{Revision, TransportName, FEATURES};

/// The in-tree server's own manifest (also what `--manifest` takes for our release
/// binary).
pub const IN_TREE: &str = include_str!("../../exec-server.manifest.toml");

/// A manifest as written (see `conformance/README.md`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The implementation's name.
    pub name: String,
    /// `ws`, `stdio`.
    pub transports: Vec<String>,
    /// `2026-06`, `2026-08`.
    pub revisions: Vec<String>,
    /// Features it supports (see `fixtures/README.md`).
    #[serde(default)]
    pub features: Vec<String>,
    /// Features it supports on some transports only: feature → transports.
    #[serde(default)]
    pub only: BTreeMap<String, Vec<String>>,
    /// Arguments that set the session TTL: `{ms}` is replaced by milliseconds.
    pub ttl_arg: Option<String>,
    /// Arguments that set the per-process retention: `{bytes}`.
    pub retention_arg: Option<String>,
    /// Arguments that confine fs paths to a directory: `{dir}`.
    pub fs_root_arg: Option<String>,
    /// A file holding the bearer token the server requires (relative to the manifest).
    pub token_file: Option<PathBuf>,
    /// Arguments that give the server that token file: `{file}`.
    pub token_arg: Option<String>,
}

/// Why a manifest cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ManifestError {
    path: String,
    message: String,
}

impl Manifest {
    /// Reads and checks a manifest file; a relative `token_file` becomes relative to it.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let error = |message: String| ManifestError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|err| error(err.to_string()))?;
        let mut manifest = Manifest::parse(&text).map_err(error)?;
        if let Some(file) = &manifest.token_file {
            if file.is_relative() {
                let base = path.parent().unwrap_or(Path::new("."));
                manifest.token_file = Some(base.join(file));
            }
        }
        Ok(manifest)
    }

    /// Parses and checks a manifest's text.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let manifest: Manifest = toml::from_str(text).map_err(|err| err.to_string())?;
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), String> {
        for transport in self.transports.iter().chain(self.only.values().flatten()) {
            if parse_transport(transport).is_none() {
                return Err(format!("unknown transport {transport:?} (ws, stdio)"));
            }
        }
        if let Some(revision) = self.revisions.iter().find(|r| Revision::parse(r).is_none()) {
            return Err(format!("unknown revision {revision:?} (2026-06, 2026-08)"));
        }
        if self.transports.is_empty() || self.revisions.is_empty() {
            return Err("`transports` and `revisions` each list at least one".into());
        }
        for feature in self.features.iter().chain(self.only.keys()) {
            if !FEATURES.contains(&feature.as_str()) {
                return Err(format!(
                    "unknown feature {feature:?} (known: {})",
                    FEATURES.join(", ")
                ));
            }
        }
        let templates = [
            ("session.ttl", "ttl_arg", &self.ttl_arg, "{ms}"),
            (
                "process.retention",
                "retention_arg",
                &self.retention_arg,
                "{bytes}",
            ),
            ("fs.root", "fs_root_arg", &self.fs_root_arg, "{dir}"),
        ];
        for (feature, key, template, placeholder) in templates {
            let declared = self.features.iter().any(|f| f == feature);
            match template {
                None if declared => {
                    return Err(format!("feature {feature} needs `{key}` (how to set it)"))
                }
                Some(template) if !template.contains(placeholder) => {
                    return Err(format!("`{key}` must contain {placeholder}"))
                }
                _ => {}
            }
        }
        match (&self.token_file, &self.token_arg) {
            (Some(_), None) | (None, Some(_)) => {
                Err("`token_file` and `token_arg` go together".into())
            }
            (_, Some(arg)) if !arg.contains("{file}") => {
                Err("`token_arg` must contain {file}".into())
            }
            _ => Ok(()),
        }
    }

    /// What the manifest declares on `transport`.
    pub fn profile(&self, transport: TransportName) -> Profile {
        let features: BTreeSet<String> = self
            .features
            .iter()
            .filter(|feature| match self.only.get(*feature) {
                Some(transports) => transports.iter().any(|t| t == transport.as_str()),
                None => true,
            })
            .cloned()
            .collect();
        Profile {
            features,
            revisions: Some(
                self.revisions
                    .iter()
                    .filter_map(|r| Revision::parse(r))
                    .collect(),
            ),
            transports: Some(
                self.transports
                    .iter()
                    .filter_map(|t| parse_transport(t))
                    .collect(),
            ),
            args: ArgTemplates {
                ttl: self.ttl_arg.clone(),
                retention: self.retention_arg.clone(),
                fs_root: self.fs_root_arg.clone(),
            },
        }
    }

    /// The arguments that give the server token file `file` (the manifest's, or the
    /// runner's `--token-file`), if the server takes one.
    pub fn token_args(&self, file: &Path) -> Vec<String> {
        match &self.token_arg {
            Some(template) => {
                crate::profile::instantiate(template, "{file}", &file.to_string_lossy())
            }
            None => Vec::new(),
        }
    }
}

fn parse_transport(name: &str) -> Option<TransportName> {
    TransportName::ALL.into_iter().find(|t| t.as_str() == name)
}

/// Where a manifest and what the server advertises on `transport` disagree. Only
/// what is advertised is compared: a server that advertises nothing matches anything.
/// Features a server can only be told to use (a TTL, a retention, a root) are a
/// mismatch only when declared but advertised absent.
pub fn mismatches(manifest: &Profile, advertised: &Profile, has_capabilities: bool) -> Vec<String> {
    if !has_capabilities {
        return Vec::new();
    }
    let settable = ["session.ttl", "process.retention", "fs.root"];
    let mut found = Vec::new();
    for feature in FEATURES {
        let declared = manifest.features.contains(feature);
        let offered = advertised.features.contains(feature);
        if declared && !offered {
            found.push(format!(
                "declares {feature}, which the server does not advertise"
            ));
        } else if offered && !declared && !settable.contains(&feature) {
            found.push(format!(
                "the server advertises {feature}, which the manifest does not declare"
            ));
        }
    }
    if let (Some(declared), Some(offered)) = (&manifest.revisions, &advertised.revisions) {
        for revision in declared.iter().filter(|r| !offered.contains(r)) {
            found.push(format!(
                "declares revision {}, which the server does not advertise",
                revision.as_str()
            ));
        }
    }
    if let (Some(declared), Some(offered)) = (&manifest.transports, &advertised.transports) {
        for transport in declared.iter().filter(|t| !offered.contains(t)) {
            found.push(format!(
                "declares transport {}, which the server does not advertise",
                transport.as_str()
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_built_in_manifest_parses_and_limits_resume_to_websocket() {
        let manifest = Manifest::parse(IN_TREE).unwrap();
        assert!(manifest
            .profile(TransportName::Ws)
            .features
            .contains("session.resume"));
        assert!(!manifest
            .profile(TransportName::Stdio)
            .features
            .contains("session.resume"));
        assert_eq!(manifest.profile(TransportName::Ws).features.len(), 9);
    }

    #[test]
    fn bad_manifests_say_what_is_wrong() {
        let base = "name = \"x\"\ntransports = [\"ws\"]\nrevisions = [\"2026-08\"]\n";
        let error = |extra: &str| Manifest::parse(&format!("{base}{extra}")).unwrap_err();
        assert!(error("features = [\"process.teleport\"]").contains("unknown feature"));
        assert!(error("features = [\"session.ttl\"]").contains("needs `ttl_arg`"));
        assert!(error("ttl_arg = \"--ttl 2s\"").contains("must contain {ms}"));
        assert!(error("token_file = \"t\"").contains("go together"));
        assert!(error("colour = \"blue\"").contains("unknown field"));
        assert!(Manifest::parse(&base.replace("ws", "tcp"))
            .unwrap_err()
            .contains("unknown transport"));
        assert!(Manifest::parse(base).is_ok());
    }

    #[test]
    fn the_cross_check_compares_only_what_is_advertised() {
        let manifest = Manifest::parse(IN_TREE).unwrap().profile(TransportName::Ws);
        let ours = json!({
            "revisions": ["2026-06", "2026-08"], "transports": ["ws", "stdio"],
            "process": {"tty": true, "resize": true, "closeStdin": true, "firstRetainedSeq": true,
                        "outputRetentionBytes": 1048576},
            "session": {"resume": true, "ttlMs": 30000}, "fs": {"root": false}
        });
        let advertised = Profile::from_capabilities(Some(&ours));
        assert_eq!(
            mismatches(&manifest, &advertised, true),
            Vec::<String>::new()
        );
        let mut less = ours.clone();
        less["process"]["tty"] = json!(false);
        let found = mismatches(&manifest, &Profile::from_capabilities(Some(&less)), true);
        assert_eq!(
            found,
            ["declares process.tty, which the server does not advertise"]
        );
        let small =
            Manifest::parse("name = \"x\"\ntransports = [\"ws\"]\nrevisions = [\"2026-08\"]\n")
                .unwrap()
                .profile(TransportName::Ws);
        let found = mismatches(&small, &advertised, true);
        assert!(
            found.iter().any(|m| m.contains("advertises process.tty")),
            "{found:?}"
        );
        assert!(
            !found.iter().any(|m| m.contains("session.ttl")),
            "settable: {found:?}"
        );
        assert!(
            mismatches(&small, &Profile::default(), false).is_empty(),
            "nothing advertised"
        );
    }
}
