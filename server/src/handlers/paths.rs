//! Paths off the wire (docs/protocol.md §0, §7): every handler that takes a path reads
//! it here, so that plain absolute paths and (revision 2026-08) `file:` URIs are
//! accepted alike, bad URIs get upstream's codes, and a result path can be written in
//! the form its request used.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use exec_protocol::{code, ErrorObject, PathError, PathForm, WirePath};

use crate::fs::{normalize, RelativePath};
use crate::options::ServerOptions;

/// How strictly paths are read: the server's `--require-file-uris` switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PathRules {
    /// Plain absolute paths are accepted besides `file:` URIs (the default). Without,
    /// a plain path is refused with -32602, as upstream does at revision 2026-08.
    pub accept_plain_paths: bool,
}

impl PathRules {
    pub(crate) fn of(options: &ServerOptions) -> Self {
        Self {
            accept_plain_paths: options.accept_plain_paths,
        }
    }
}

impl Default for PathRules {
    fn default() -> Self {
        Self {
            accept_plain_paths: true,
        }
    }
}

/// Reads the path in params field `field`: a plain absolute path or a `file:` URI
/// (percent-decoded, any bytes but NUL), normalised lexically. Returns the path and
/// the form it was spelled in, for [`render`]ing result paths.
///
/// Errors, as upstream answers at 2026-08: another host → -32600; another scheme, an
/// encoded NUL, a bad escape, a relative path → -32602; a plain path when `rules`
/// refuse them → -32602.
pub(crate) fn resolve(
    path: &WirePath,
    field: &'static str,
    rules: PathRules,
) -> Result<(PathBuf, PathForm), ErrorObject> {
    let resolved = path.resolve().map_err(|err| path_error(err, field))?;
    if resolved.form == PathForm::Plain && !rules.accept_plain_paths {
        return Err(path_error(
            PathError::PlainPathRefused(path.as_str().to_owned()),
            field,
        ));
    }
    let path = PathBuf::from(OsString::from_vec(resolved.bytes));
    Ok((normalize(&path), resolved.form))
}

/// A path that could not be read, as a JSON-RPC error naming `field`. A plain relative
/// path keeps revision 2026-06's message.
pub(crate) fn path_error(err: PathError, field: &'static str) -> ErrorObject {
    match err {
        PathError::Relative(path) => RelativePath { field, path }.into(),
        err if err.code() == code::INVALID_PARAMS => {
            ErrorObject::invalid_params(format!("invalid params: {field}: {err}"))
        }
        err => ErrorObject::new(err.code(), format!("{field}: {err}")),
    }
}

/// `path` spelled in `form`, for a result path.
pub(crate) fn render(form: PathForm, path: &Path) -> WirePath {
    form.render(path.as_os_str().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> PathRules {
        PathRules {
            accept_plain_paths: false,
        }
    }

    #[test]
    fn both_forms_resolve_and_normalise() {
        let rules = PathRules::default();
        assert_eq!(
            resolve(&"/a/./b/../c".into(), "path", rules),
            Ok((PathBuf::from("/a/c"), PathForm::Plain))
        );
        assert_eq!(
            resolve(&"file:///a%20b/../c%FF".into(), "path", rules),
            Ok((
                PathBuf::from(OsString::from_vec(b"/c\xff".to_vec())),
                PathForm::FileUri
            ))
        );
    }

    #[test]
    fn bad_paths_name_the_field_with_upstreams_codes() {
        let rules = PathRules::default();
        let error = |text: &str| resolve(&text.into(), "cwd", rules).unwrap_err();
        assert_eq!(
            error("a/b").message,
            "invalid params: cwd: path must be absolute, got \"a/b\""
        );
        assert_eq!(error("file://host/x").code, code::INVALID_REQUEST);
        assert!(error("file://host/x").message.starts_with("cwd: "));
        assert_eq!(error("http://x/y").code, code::INVALID_PARAMS);
        assert_eq!(error("file:///a%00").code, code::INVALID_PARAMS);
        let refused = resolve(&"/x".into(), "path", strict()).unwrap_err();
        assert_eq!(refused.code, code::INVALID_PARAMS);
        assert!(refused.message.contains("file: URI"), "{refused:?}");
        assert!(resolve(&"file:///x".into(), "path", strict()).is_ok());
    }

    #[test]
    fn results_render_in_the_requests_form() {
        let path = Path::new("/a b");
        assert_eq!(render(PathForm::Plain, path).as_str(), "/a b");
        assert_eq!(render(PathForm::FileUri, path).as_str(), "file:///a%20b");
    }
}
