//! `environment/info`: facts about the machine the server runs processes on.

use std::path::Path;

use exec_protocol::{EnvironmentInfo, ErrorObject, Shell};
use serde_json::Value;

/// Takes no params: like every method it accepts an object (fields ignored) or none.
pub fn info(params: Value) -> Result<EnvironmentInfo, ErrorObject> {
    // Checked here rather than decoded: an empty params struct would also take `[]`.
    if !(params.is_null() || params.is_object()) {
        return Err(ErrorObject::invalid_params(
            "invalid params: expected an object or no params",
        ));
    }
    let path = std::env::var("SHELL")
        .ok()
        .filter(|shell| Path::new(shell).is_absolute())
        .unwrap_or_else(|| "/bin/sh".to_owned());
    let name = Path::new(&path)
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.clone());
    Ok(EnvironmentInfo {
        shell: Shell { name, path },
    })
}
