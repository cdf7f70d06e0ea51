//! What one run is configured from, shared by the suite and the recorder: where the
//! cases and the default server come from ([`Source`]), and the options resolved into
//! the runner's [`Config`] and the manifest.

use std::path::{Path, PathBuf};

use crate::cli::{resolve_program, Options};
use crate::manifest::{self, Manifest};
use crate::runner::Config;
use crate::transcript::Revision;

/// Where the cases and the default server come from.
pub struct Source<'a> {
    /// The workspace (the `conformance` test target): relative paths are resolved
    /// from it, and its `fixtures/transcripts` are the cases.
    pub workspace: Option<&'a Path>,
    /// Cases built into the binary (the standalone runner): `(id, text)`.
    pub embedded: &'a [(&'a str, &'a str)],
    /// The server tested without `--server`, with its built-in manifest.
    pub in_tree: Option<&'a str>,
}

/// A path given on the command line: as given, or, when relative and not found there,
/// from the workspace root (where the commands of the README are run).
pub(crate) fn resolve(source: &Source, path: PathBuf) -> PathBuf {
    match source.workspace {
        Some(root) if path.is_relative() && !path.exists() => root.join(path),
        _ => path,
    }
}

/// What one run tests and how: the server, its manifest (given, or the in-tree
/// server's built-in one), token, revision and time scale. The suite and the recorder
/// both start from it.
pub(crate) fn setup(
    options: &Options,
    source: &Source,
    listing: bool,
) -> Result<(Config, Option<Manifest>), String> {
    let workspace = source.workspace;
    let resolve = |path: PathBuf| resolve(source, path);
    let manifest = match (&options.manifest, &options.server, source.in_tree) {
        (Some(path), _, _) => {
            Some(Manifest::load(&resolve(path.clone())).map_err(|e| e.to_string())?)
        }
        (None, None, Some(_)) => Some(Manifest::parse(manifest::IN_TREE)?),
        (None, _, _) => None,
    };
    let token_file = options
        .token_file
        .clone()
        .map(&resolve)
        .or_else(|| manifest.as_ref().and_then(|m| m.token_file.clone()));
    let token = match &token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|err| format!("token file {}: {err}", path.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        ),
        None => None,
    };
    let server = match (&options.server, source.in_tree) {
        (Some(words), _) => {
            let root = workspace.unwrap_or(Path::new("."));
            // Relative, cargo reads it from where it was run: the workspace root, here.
            let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(|dir| root.join(dir));
            resolve_program(words.clone(), root, target_dir.as_deref())
        }
        (None, Some(in_tree)) => vec![in_tree.to_owned()],
        // Attached, or only listing: no server is started.
        (None, None) if options.attach.is_some() || listing => Vec::new(),
        (None, None) => {
            return Err("no server: give --server CMD (or EXEC_CONFORMANCE_SERVER)".into())
        }
    };
    let revision = match (options.revision, &manifest) {
        (Some(revision), _) => revision,
        // The newest the manifest declares.
        (None, Some(manifest)) => manifest
            .revisions
            .iter()
            .filter_map(|r| Revision::parse(r))
            .max()
            .unwrap_or(Revision::R2026_08),
        (None, None) => Revision::R2026_08,
    };
    if let Some(manifest) = &manifest {
        if !manifest.revisions.iter().any(|r| r == revision.as_str()) {
            return Err(format!(
                "--revision {}: the manifest {:?} declares {} only, so every case would be skipped",
                revision.as_str(),
                manifest.name,
                manifest.revisions.join(", ")
            ));
        }
    }
    let config = Config {
        server,
        attach: options.attach.clone(),
        revision,
        time_scale: options.time_scale.unwrap_or(1.0),
        include_long: options.include_long,
        token,
        // One token for both ends: `--token-file` replaces the manifest's file in what
        // the server is given too.
        token_args: match (&manifest, &token_file) {
            (Some(manifest), Some(file)) => manifest.token_args(file),
            _ => Vec::new(),
        },
    };
    Ok((config, manifest))
}
