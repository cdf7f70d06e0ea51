//! Paths as they travel: today a plain absolute path; revision 2026-08 also allows a
//! `file:` URI wherever a path goes, which this type will carry unchanged.

use serde::{Deserialize, Serialize};

/// A path exactly as the peer spelled it on the wire. Interpreting it (absolute?
/// beneath `--fs-root`?) is the server's job, not the wire's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WirePath(String);

impl WirePath {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl From<String> for WirePath {
    fn from(path: String) -> Self {
        Self(path)
    }
}

impl From<&str> for WirePath {
    fn from(path: &str) -> Self {
        Self(path.to_owned())
    }
}

impl From<&std::path::Path> for WirePath {
    /// A path that is not UTF-8 cannot travel in JSON; its invalid bytes become U+FFFD.
    fn from(path: &std::path::Path) -> Self {
        Self(path.to_string_lossy().into_owned())
    }
}

impl std::fmt::Display for WirePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
