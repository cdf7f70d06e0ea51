//! The one place where domain errors become JSON-RPC error objects (docs/protocol.md
//! §3, §5, §6, §7). Codes are what clients match on; messages are kept as they were.

use std::io;

use exec_protocol::{code, ErrorObject};
use serde_json::json;

use crate::fs::{CopyError, RelativePath};
use crate::limits::LimitReached;
use crate::outbound::Closed;
use crate::session::{SessionError, SpawnError};

/// An I/O error of the file system (§7): NotFound → -32004; InvalidInput and
/// PermissionDenied → -32600; others → -32603. The message is the OS text.
pub fn io_error(err: io::Error) -> ErrorObject {
    let code = match err.kind() {
        io::ErrorKind::NotFound => code::NOT_FOUND,
        io::ErrorKind::InvalidInput | io::ErrorKind::PermissionDenied => code::INVALID_REQUEST,
        _ => code::INTERNAL_ERROR,
    };
    ErrorObject::new(code, err.to_string())
}

/// [ext] A cap is reached: -32005 with `data: {limit, value}`.
pub fn limit_reached(reached: LimitReached) -> ErrorObject {
    ErrorObject::new(code::LIMIT_REACHED, reached.to_string())
        .with_data(json!({"limit": reached.wire_name(), "value": reached.value()}))
}

impl From<LimitReached> for ErrorObject {
    fn from(reached: LimitReached) -> Self {
        limit_reached(reached)
    }
}

impl From<SessionError> for ErrorObject {
    fn from(err: SessionError) -> Self {
        match err {
            SessionError::LimitReached(reached) => limit_reached(reached),
            SessionError::AlreadyAttached(_) => {
                ErrorObject::new(code::SESSION_ALREADY_ATTACHED, err.to_string())
            }
            SessionError::UnknownSession(_)
            | SessionError::ProcessExists(_)
            | SessionError::Destroyed => ErrorObject::invalid_request(err.to_string()),
            SessionError::Spawn(err) => err.into(),
        }
    }
}

/// A failed start (§6.1): -32603 naming the program or the directory, with [ext]
/// `data: {errno, subject}` when the OS gave an error number.
impl From<SpawnError> for ErrorObject {
    fn from(err: SpawnError) -> Self {
        let error = ErrorObject::internal(err.to_string());
        match err.errno() {
            Some(errno) => error.with_data(json!({"errno": errno, "subject": err.subject()})),
            None => error,
        }
    }
}

/// A relative path where an absolute one is needed is invalid params naming the field.
impl From<RelativePath> for ErrorObject {
    fn from(err: RelativePath) -> Self {
        ErrorObject::invalid_params(format!("invalid params: {err}"))
    }
}

impl From<CopyError> for ErrorObject {
    fn from(err: CopyError) -> Self {
        match err {
            CopyError::Io(err) => io_error(err),
            CopyError::Special(_)
            | CopyError::DirectoryNeedsRecursive(_)
            | CopyError::OntoRoot
            | CopyError::IntoItself { .. } => ErrorObject::invalid_request(err.to_string()),
        }
    }
}

/// Waiting for room ended because the connection closed: the reply has no reader.
impl From<Closed> for ErrorObject {
    fn from(closed: Closed) -> Self {
        ErrorObject::internal(closed.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_map_to_protocol_codes() {
        let code_of = |err: io::Error| io_error(err).code;
        assert_eq!(code_of(io::ErrorKind::NotFound.into()), code::NOT_FOUND);
        assert_eq!(
            code_of(io::ErrorKind::PermissionDenied.into()),
            code::INVALID_REQUEST
        );
        assert_eq!(
            code_of(io::ErrorKind::InvalidInput.into()),
            code::INVALID_REQUEST
        );
        assert_eq!(
            code_of(io::Error::from_raw_os_error(libc::EISDIR)),
            code::INTERNAL_ERROR
        );
    }

    #[test]
    fn a_session_attached_elsewhere_is_its_own_code() {
        let error = ErrorObject::from(SessionError::AlreadyAttached("s".into()));
        assert_eq!(error.code, code::SESSION_ALREADY_ATTACHED);
        assert_eq!(
            error.message,
            "session s is already attached to another connection"
        );
    }

    #[test]
    fn a_reached_limit_names_itself_in_data() {
        let error = ErrorObject::from(LimitReached::Processes { value: 7 });
        assert_eq!(error.code, code::LIMIT_REACHED);
        assert_eq!(
            error.data,
            Some(json!({"limit": "maxProcesses", "value": 7}))
        );
    }

    #[test]
    fn a_failed_start_names_what_failed_in_data() {
        let error = ErrorObject::from(SessionError::from(SpawnError::Cwd {
            cwd: "/nonexistent".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        }));
        assert_eq!(error.code, code::INTERNAL_ERROR);
        assert_eq!(
            error.message,
            "cannot use cwd /nonexistent: No such file or directory (os error 2)"
        );
        assert_eq!(error.data, Some(json!({"errno": 2, "subject": "cwd"})));
        let error = ErrorObject::from(SpawnError::Program {
            program: "/etc/passwd".into(),
            source: io::Error::from_raw_os_error(libc::EACCES),
        });
        assert_eq!(
            error.message,
            "failed to start /etc/passwd: Permission denied (os error 13)"
        );
        assert_eq!(error.data, Some(json!({"errno": 13, "subject": "program"})));
        // The server's own set-up failing says nothing about the program: no errno
        // that a client would read as "not found" (127).
        let error = ErrorObject::from(SpawnError::Setup {
            program: "ls".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        });
        assert_eq!(error.code, code::INTERNAL_ERROR);
        assert_eq!(
            error.message,
            "cannot start ls: the server could not set up the process: No such file or directory (os error 2)"
        );
        assert_eq!(error.data, None);
    }

    #[test]
    fn a_relative_path_is_invalid_params_naming_the_field() {
        let error = super::super::paths::path_error(
            exec_protocol::PathError::Relative("a/b".into()),
            "cwd",
        );
        assert_eq!(error.code, code::INVALID_PARAMS);
        assert_eq!(
            error.message,
            "invalid params: cwd: path must be absolute, got \"a/b\""
        );
    }
}
