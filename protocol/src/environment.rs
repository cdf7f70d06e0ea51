//! `environment/*` methods (docs/protocol.md §7, last line).

use serde::{Deserialize, Serialize};

use crate::method::{Call, Method};

/// `environment/info` takes no params (an object, whose fields are ignored, or none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentInfoParams {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentInfo {
    /// The shell the server would use.
    pub shell: Shell,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shell {
    pub name: String,
    pub path: String,
}

impl Call for EnvironmentInfoParams {
    const METHOD: Method = Method::EnvironmentInfo;
    type Result = EnvironmentInfo;
}
