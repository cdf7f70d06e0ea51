//! `environment/*`: facts about the machine the server runs processes on, and
//! (2026-08) whether it is ready.

use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::sync::OnceLock;

use exec_protocol::{
    EnvironmentFeatures, EnvironmentInfo, EnvironmentStatus, ErrorObject, PartialReply, PathForm,
    Shell, WirePath,
};
use serde_json::Value;

/// Neither method takes params: like every method they accept an object (fields
/// ignored) or none. Checked here rather than decoded: an empty params struct would
/// also take `[]`.
fn no_params(params: &Value) -> Result<(), ErrorObject> {
    if params.is_null() || params.is_object() {
        return Ok(());
    }
    Err(ErrorObject::invalid_params(
        "invalid params: expected an object or no params",
    ))
}

/// `file:` URIs, as upstream sends these paths (they answer no request path).
fn uri(path: &Path) -> WirePath {
    PathForm::FileUri.render(path.as_os_str().as_bytes())
}

/// `environment/info`, whose answer does not change while the server runs: built on
/// the first call and kept, encoded, in `cache`.
pub fn info(cache: &OnceLock<PartialReply>, params: Value) -> Result<PartialReply, ErrorObject> {
    no_params(&params)?;
    Ok(cache
        .get_or_init(|| PartialReply::new(&environment_info()))
        .clone())
}

/// The facts `environment/info` reports. The server never changes its working
/// directory or environment once it serves, so they hold for its lifetime.
fn environment_info() -> EnvironmentInfo {
    let path = std::env::var("SHELL")
        .ok()
        .filter(|shell| Path::new(shell).is_absolute())
        .unwrap_or_else(|| "/bin/sh".to_owned());
    let name = Path::new(&path)
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.clone());
    let temp_dir = std::env::temp_dir();
    EnvironmentInfo {
        shell: Shell { name, path },
        cwd: std::env::current_dir().ok().map(|cwd| uri(&cwd)),
        temp_dir: Some(uri(&temp_dir)),
        temporary_directories: Some(vec![uri(&temp_dir)]),
        // None of codex's features: no network proxy, sandbox or snapshots here.
        capabilities: Some(EnvironmentFeatures::default()),
    }
}

/// The server answers only once it serves: it is always ready.
pub fn status(params: Value) -> Result<EnvironmentStatus, ErrorObject> {
    no_params(&params)?;
    Ok(EnvironmentStatus {
        status: "ready".to_owned(),
    })
}
