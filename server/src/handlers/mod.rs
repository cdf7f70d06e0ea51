//! Method routing: the table of known methods and one handler module per family.
//! Handlers see a ready session and decoded params; the handshake lives in `connection`.

pub mod environment;
pub mod initialize;
pub mod process;

use serde_json::Value;

use crate::connection::Turn;
use crate::rpc::RpcError;
use crate::server::ServerState;
use crate::session::{Generation, Session};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Initialize,
    ProcessStart,
    ProcessRead,
    ProcessWrite,
    ProcessSignal,
    ProcessTerminate,
    ProcessResize,
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
            "environment/info" => Method::EnvironmentInfo,
            _ => return None,
        })
    }

    /// The family named in handshake errors ("... before using process methods").
    pub fn family(self) -> &'static str {
        match self {
            Method::Initialize => "initialize",
            Method::EnvironmentInfo => "environment",
            _ => "process",
        }
    }

    /// Requests of these methods that name one `processId` are applied in arrival order.
    pub fn is_process_scoped(self) -> bool {
        self.family() == "process"
    }
}

pub async fn dispatch(
    state: &ServerState,
    session: &std::sync::Arc<Session>,
    generation: Generation,
    method: Method,
    params: Value,
    turn: Turn,
) -> Result<Value, RpcError> {
    match method {
        Method::Initialize => Err(RpcError::internal(
            "initialize is handled by the connection",
        )),
        Method::ProcessStart => process::start(session, params, turn).await,
        Method::ProcessRead => process::read(session, generation, params, turn).await,
        Method::ProcessWrite => process::write(session, params, turn).await,
        Method::ProcessSignal => process::signal(session, params, turn).await,
        Method::ProcessTerminate => process::terminate(session, params, turn).await,
        Method::ProcessResize => process::resize(session, params, turn).await,
        Method::EnvironmentInfo => environment::info(state),
    }
}
