//! Method and notification names, and the [`Call`] / [`Notify`] traits that tie each
//! name to its params and result types. Nothing else in the workspace spells a
//! method name.

use serde::de::DeserializeOwned;
use serde::Serialize;

macro_rules! names {
    ($(#[$meta:meta])* $enum:ident { $($(#[$vmeta:meta])* $variant:ident = $name:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $enum {
            $($(#[$vmeta])* $variant,)*
        }

        impl $enum {
            /// Every name, in declaration order.
            pub const ALL: &'static [$enum] = &[$($enum::$variant,)*];

            /// The name as it travels on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($enum::$variant => $name,)*
                }
            }

            /// The name for a wire string; `None` for a name this protocol lacks.
            pub fn parse(name: &str) -> Option<$enum> {
                match name {
                    $($name => Some($enum::$variant),)*
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $enum {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

names! {
    /// A request method (a client calls it and the server answers).
    Method {
        Initialize = "initialize",
        ProcessStart = "process/start",
        ProcessRead = "process/read",
        ProcessWrite = "process/write",
        ProcessSignal = "process/signal",
        ProcessTerminate = "process/terminate",
        /// [ext]
        ProcessResize = "process/resize",
        FsReadFile = "fs/readFile",
        FsWriteFile = "fs/writeFile",
        FsCreateDirectory = "fs/createDirectory",
        FsGetMetadata = "fs/getMetadata",
        FsReadDirectory = "fs/readDirectory",
        FsRemove = "fs/remove",
        FsCopy = "fs/copy",
        FsCanonicalize = "fs/canonicalize",
        /// [ext] since 2026-08 (upstream removed it).
        FsJoin = "fs/join",
        /// [ext] since 2026-08 (upstream removed it).
        FsParent = "fs/parent",
        /// Since 2026-08: a handle for streamed reads of a large file.
        FsOpen = "fs/open",
        /// Since 2026-08.
        FsReadBlock = "fs/readBlock",
        /// Since 2026-08.
        FsClose = "fs/close",
        /// Since 2026-08: a bounded, breadth-first listing of a tree.
        FsWalk = "fs/walk",
        EnvironmentInfo = "environment/info",
        /// Since 2026-08.
        EnvironmentStatus = "environment/status",
    }
}

names! {
    /// A notification method: `initialized` from the client, the rest from the server.
    NotificationMethod {
        Initialized = "initialized",
        ProcessOutput = "process/output",
        ProcessExited = "process/exited",
        ProcessClosed = "process/closed",
    }
}

/// The method families the handshake errors name ("… before using fs methods").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Initialize,
    Process,
    Fs,
    Environment,
}

impl Family {
    pub const fn as_str(self) -> &'static str {
        match self {
            Family::Initialize => "initialize",
            Family::Process => "process",
            Family::Fs => "fs",
            Family::Environment => "environment",
        }
    }
}

impl Method {
    pub const fn family(self) -> Family {
        use Method::*;
        match self {
            Initialize => Family::Initialize,
            ProcessStart | ProcessRead | ProcessWrite | ProcessSignal | ProcessTerminate
            | ProcessResize => Family::Process,
            FsReadFile | FsWriteFile | FsCreateDirectory | FsGetMetadata | FsReadDirectory
            | FsRemove | FsCopy | FsCanonicalize | FsJoin | FsParent | FsOpen | FsReadBlock
            | FsClose | FsWalk => Family::Fs,
            EnvironmentInfo | EnvironmentStatus => Family::Environment,
        }
    }

    /// Whether a response lost in a disconnect may be re-sent without changing what
    /// the server did (a read) or not (everything that starts, writes or kills).
    pub const fn is_read_only(self) -> bool {
        use Method::*;
        matches!(
            self,
            ProcessRead
                | FsReadFile
                | FsGetMetadata
                | FsReadDirectory
                | FsCanonicalize
                | FsJoin
                | FsParent
                | FsReadBlock
                | FsWalk
                | EnvironmentInfo
                | EnvironmentStatus
        )
    }
}

/// The params of a request method, tied to its name and its result type.
pub trait Call: Serialize + DeserializeOwned {
    const METHOD: Method;
    type Result: Serialize + DeserializeOwned;
}

/// The params of a notification, tied to its name.
pub trait Notify: Serialize + DeserializeOwned {
    const METHOD: NotificationMethod;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_itself() {
        for method in Method::ALL {
            assert_eq!(Method::parse(method.as_str()), Some(*method));
        }
        for method in NotificationMethod::ALL {
            assert_eq!(NotificationMethod::parse(method.as_str()), Some(*method));
        }
        assert_eq!(Method::parse("process/nope"), None);
    }
}
