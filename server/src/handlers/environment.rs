//! `environment/info`: facts about the machine the server runs processes on.

use std::path::Path;

use serde_json::{json, Value};

use crate::rpc::RpcError;

/// Takes no params: like every method it accepts an object (fields ignored) or none.
pub fn info(params: Value) -> Result<Value, RpcError> {
    if !(params.is_null() || params.is_object()) {
        return Err(RpcError::invalid_params(
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
    Ok(json!({"shell": {"name": name, "path": path}}))
}
