//! Method routing: one handler module per method family. Handlers see a ready session
//! and typed params, and return typed results; `dispatch` decodes the params and
//! encodes the result into a reply the connection completes with the request's id.
//! Domain errors become JSON-RPC errors in `errors` and nowhere else. The handshake
//! lives in `connection`.

mod environment;
mod errors;
mod fs;
mod fs_handles;
pub mod initialize;
pub(crate) mod paths;
mod process;
mod walk;

use std::sync::Arc;

use exec_protocol::{decode_params, ErrorObject, Method, PartialReply};
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::ordering::Turn;
use crate::outbound::ReplyRoom;
use crate::session::{Generation, Session};
use crate::state::ServerState;

/// A handler's result as the reply's `result` member.
fn reply(result: Result<impl Serialize, ErrorObject>) -> Result<PartialReply, ErrorObject> {
    result.map(|result| PartialReply::new(&result))
}

/// Whether `method` is answered by [`immediate`]: at once, without waiting on
/// anything, touching no process and no file (so no `processId` order applies).
pub fn is_immediate(method: Method) -> bool {
    matches!(
        method,
        Method::EnvironmentInfo | Method::EnvironmentStatus | Method::FsJoin | Method::FsParent
    )
}

/// Answers an [immediate](is_immediate) method synchronously, so the connection can
/// answer it on its reader without a task; `None` for any other method.
pub fn immediate(
    state: &ServerState,
    method: Method,
    params: Value,
) -> Option<Result<PartialReply, ErrorObject>> {
    let rules = paths::PathRules::of(&state.options);
    Some(match method {
        Method::EnvironmentInfo => environment::info(&state.environment, params),
        Method::EnvironmentStatus => reply(environment::status(params)),
        Method::FsJoin => decode_params(params).and_then(|params| reply(fs::join(rules, params))),
        Method::FsParent => {
            decode_params(params).and_then(|params| reply(fs::parent(rules, params)))
        }
        _ => return None,
    })
}

/// Runs one request. `room` is where a handler that builds a big reply reserves room
/// for it first (see `outbound`). `draining` is cancelled when the connection winds down
/// (stdio EOF after its grace): a long-poll then returns what it has.
#[allow(clippy::too_many_arguments)]
pub async fn dispatch(
    state: &ServerState,
    session: &Arc<Session>,
    generation: Generation,
    method: Method,
    params: Value,
    turn: Turn,
    draining: &CancellationToken,
    room: &mut ReplyRoom,
) -> Result<PartialReply, ErrorObject> {
    let fs = &state.options.file_system;
    let rules = paths::PathRules::of(&state.options);
    match method {
        Method::Initialize => Err(ErrorObject::internal(
            "initialize is handled by the connection",
        )),
        Method::ProcessStart => {
            reply(process::start(fs, rules, session, decode_params(params)?, turn).await)
        }
        Method::ProcessRead => {
            let params = decode_params(params)?;
            reply(process::read(session, generation, params, turn, draining, room).await)
        }
        Method::ProcessWrite => reply(process::write(session, decode_params(params)?, turn).await),
        Method::ProcessSignal => {
            reply(process::signal(session, decode_params(params)?, turn).await)
        }
        Method::ProcessTerminate => {
            reply(process::terminate(session, decode_params(params)?, turn).await)
        }
        Method::ProcessResize => {
            reply(process::resize(session, decode_params(params)?, turn).await)
        }
        Method::FsReadFile => fs::read_file(fs, rules, decode_params(params)?, room).await,
        Method::FsWriteFile => reply(fs::write_file(fs, rules, decode_params(params)?).await),
        Method::FsCreateDirectory => {
            reply(fs::create_directory(fs, rules, decode_params(params)?).await)
        }
        Method::FsGetMetadata => reply(fs::get_metadata(fs, rules, decode_params(params)?).await),
        Method::FsReadDirectory => {
            reply(fs::read_directory(fs, rules, decode_params(params)?).await)
        }
        Method::FsRemove => reply(fs::remove(fs, rules, decode_params(params)?).await),
        Method::FsCopy => reply(fs::copy(fs, rules, decode_params(params)?).await),
        Method::FsCanonicalize => reply(fs::canonicalize(fs, rules, decode_params(params)?).await),
        // The connection answers these on its reader; here for completeness.
        Method::FsJoin | Method::FsParent | Method::EnvironmentInfo | Method::EnvironmentStatus => {
            immediate(state, method, params)
                .unwrap_or_else(|| Err(ErrorObject::internal("not an immediate method")))
        }
        Method::FsOpen => reply(fs_handles::open(fs, rules, session, decode_params(params)?).await),
        Method::FsReadBlock => fs_handles::read_block(session, decode_params(params)?, room).await,
        Method::FsClose => reply(fs_handles::close(session, decode_params(params)?)),
        Method::FsWalk => walk::walk(fs, rules, decode_params(params)?, room).await,
    }
}
