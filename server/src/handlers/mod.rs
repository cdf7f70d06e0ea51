//! Method routing: the table of known methods and one handler module per family.
//! Handlers see a ready session and decoded params; the handshake lives in `connection`.

pub mod environment;
pub mod fs;
pub mod initialize;
pub mod process;

use serde_json::Value;

use crate::ordering::Turn;
use crate::outbound::{Closed, ReplyRoom};
use crate::rpc::{Reply, RpcError};
use crate::server::ServerState;
use crate::session::{Generation, Session};

/// Waiting for room ended because the connection closed: the reply has no reader.
impl From<Closed> for RpcError {
    fn from(closed: Closed) -> Self {
        RpcError::internal(closed.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Initialize,
    ProcessStart,
    ProcessRead,
    ProcessWrite,
    ProcessSignal,
    ProcessTerminate,
    ProcessResize,
    FsReadFile,
    FsWriteFile,
    FsCreateDirectory,
    FsGetMetadata,
    FsReadDirectory,
    FsRemove,
    FsCopy,
    FsCanonicalize,
    FsJoin,
    FsParent,
    EnvironmentInfo,
}

impl Method {
    pub fn parse(name: &str) -> Option<Method> {
        Some(match name {
            "initialize" => Method::Initialize,
            "process/start" => Method::ProcessStart,
            "process/read" => Method::ProcessRead,
            "process/write" => Method::ProcessWrite,
            "process/signal" => Method::ProcessSignal,
            "process/terminate" => Method::ProcessTerminate,
            "process/resize" => Method::ProcessResize,
            "fs/readFile" => Method::FsReadFile,
            "fs/writeFile" => Method::FsWriteFile,
            "fs/createDirectory" => Method::FsCreateDirectory,
            "fs/getMetadata" => Method::FsGetMetadata,
            "fs/readDirectory" => Method::FsReadDirectory,
            "fs/remove" => Method::FsRemove,
            "fs/copy" => Method::FsCopy,
            "fs/canonicalize" => Method::FsCanonicalize,
            "fs/join" => Method::FsJoin,
            "fs/parent" => Method::FsParent,
            "environment/info" => Method::EnvironmentInfo,
            _ => return None,
        })
    }

    /// The family named in handshake errors ("... before using process methods").
    pub fn family(self) -> &'static str {
        match self {
            Method::Initialize => "initialize",
            Method::EnvironmentInfo => "environment",
            Method::FsReadFile
            | Method::FsWriteFile
            | Method::FsCreateDirectory
            | Method::FsGetMetadata
            | Method::FsReadDirectory
            | Method::FsRemove
            | Method::FsCopy
            | Method::FsCanonicalize
            | Method::FsJoin
            | Method::FsParent => "fs",
            _ => "process",
        }
    }

    /// Requests of these methods that name one `processId` are applied in arrival order.
    pub fn is_process_scoped(self) -> bool {
        self.family() == "process"
    }
}

/// Runs one request. `room` is where a handler that builds a big reply reserves room
/// for it first (see `outbound`).
pub async fn dispatch(
    state: &ServerState,
    session: &std::sync::Arc<Session>,
    generation: Generation,
    method: Method,
    params: Value,
    turn: Turn,
    room: &mut ReplyRoom,
) -> Result<Reply, RpcError> {
    let fs = &state.options.file_system;
    let json = |result: Result<Value, RpcError>| result.map(Reply::from);
    match method {
        Method::Initialize => Err(RpcError::internal(
            "initialize is handled by the connection",
        )),
        Method::ProcessStart => json(process::start(fs, session, params, turn).await),
        Method::ProcessRead => json(process::read(session, generation, params, turn, room).await),
        Method::ProcessWrite => json(process::write(session, params, turn).await),
        Method::ProcessSignal => json(process::signal(session, params, turn).await),
        Method::ProcessTerminate => json(process::terminate(session, params, turn).await),
        Method::ProcessResize => json(process::resize(session, params, turn).await),
        Method::FsReadFile => fs::read_file(fs, params, room).await,
        Method::FsWriteFile => fs::write_file(fs, params).await,
        Method::FsCreateDirectory => fs::create_directory(fs, params).await,
        Method::FsGetMetadata => fs::get_metadata(fs, params).await,
        Method::FsReadDirectory => fs::read_directory(fs, params).await,
        Method::FsRemove => fs::remove(fs, params).await,
        Method::FsCopy => fs::copy(fs, params).await,
        Method::FsCanonicalize => fs::canonicalize(fs, params).await,
        Method::FsJoin => fs::join(params),
        Method::FsParent => fs::parent(params),
        Method::EnvironmentInfo => json(environment::info(params)),
    }
}
