//! Negative controls (issue 17): deliberate faults that prove conformance cases can
//! fail. With the `faults` cargo feature, the `broken-server` binary turns on exactly
//! one [`Fault`] for the life of the process (`set`), and the hooks in the server ask
//! [`active`] whether to misbehave. Without the feature [`active`] is a constant `false`,
//! so every hook is a branch the compiler removes and a release build of `exec-server`
//! carries none of them. A leaf module: it imports nothing of the crate.
//!
//! Which cases must catch each fault is `fixtures/negative-controls.toml`; the CI step
//! `scripts/negative-controls.py` checks it. To add a fault: a variant here, its line in
//! `FAULTS` (the name `--fault` takes; the conformance-runner test reads the names
//! from this file), one small hook where the behaviour lives, and its cases in the TOML.

/// One way to break the server; each breaks one behaviour of docs/protocol.md and
/// nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    DropOutputChunk,
    DuplicateOutputChunk,
    KillOnDisconnect,
    IgnoreTtl,
    ExpireImmediately,
    ResumeAnySessionId,
    AllowDoubleAttach,
    OrphanChildren,
    SurviveStdinEof,
    CancelAtEof,
    StdoutLogLine,
    CloseOnMalformed,
    ReorderWrites,
    IgnoreWriteId,
    LoseExitCode,
    ExitBeforeOutput,
    NoReadyz,
    SerialRequests,
    FsFollowSymlinkOnRemove,
    FsEscapeRoot,
}

/// Every fault: the name `broken-server --fault` takes, and what it breaks. Each entry
/// starts `(Fault::X, "name",`: the conformance-runner tests read the names from this
/// text, since they cannot build the feature.
#[cfg(feature = "faults")]
pub const FAULTS: [(Fault, &str, &str); 20] = [
    (Fault::DropOutputChunk, "drop-output-chunk", "the first output chunk read from each stream of a process is lost (never numbered, retained or sent)"),
    (Fault::DuplicateOutputChunk, "duplicate-output-chunk", "every output chunk is published twice, under two seqs"),
    (Fault::KillOnDisconnect, "kill-on-disconnect", "a websocket disconnect destroys the session (kills its processes) instead of detaching it"),
    (Fault::IgnoreTtl, "ignore-ttl", "a detached session never expires"),
    (Fault::ExpireImmediately, "expire-immediately", "a detached session expires at once, whatever --session-ttl says"),
    (Fault::ResumeAnySessionId, "resume-any-session-id", "initialize with an unknown resumeSessionId succeeds (with a fresh session)"),
    (Fault::AllowDoubleAttach, "allow-double-attach", "resuming a session that is attached to another connection succeeds"),
    (Fault::OrphanChildren, "orphan-children", "kills and signals reach the leader pid only, not its process group or cgroup"),
    (Fault::SurviveStdinEof, "survive-stdin-eof", "EOF on stdin goes unnoticed: the stdio server and its children live on"),
    (Fault::CancelAtEof, "cancel-at-eof", "requests read before stdin EOF are cancelled unanswered (no EOF grace)"),
    (Fault::StdoutLogLine, "stdout-log-line", "a log line is printed on stdout at every initialize"),
    (Fault::CloseOnMalformed, "close-on-malformed", "a frame that is not JSON closes the connection instead of getting an error answer"),
    (Fault::ReorderWrites, "reorder-writes", "a process's first stdin write lands after the second (held up to 1 s for it)"),
    (Fault::IgnoreWriteId, "ignore-write-id", "writeId de-duplication is off: a repeated write is written again"),
    (Fault::LoseExitCode, "lose-exit-code", "every exit is reported with exitCode -1, as if reaping had failed"),
    (Fault::ExitBeforeOutput, "exit-before-output", "process/closed follows process/exited at once, before output still to come"),
    (Fault::NoReadyz, "no-readyz", "GET /readyz answers 404"),
    (Fault::SerialRequests, "serial-requests", "a connection handles one request at a time, so a long-poll blocks the rest"),
    (Fault::FsFollowSymlinkOnRemove, "fs-follow-symlink-on-remove", "fs/remove of a symlink also removes what it points to"),
    (Fault::FsEscapeRoot, "fs-escape-root", "--fs-root confines to / instead of the directory given"),
];

#[cfg(feature = "faults")]
impl Fault {
    pub fn name(self) -> &'static str {
        FAULTS
            .iter()
            .find(|(fault, _, _)| *fault == self)
            .map_or("?", |(_, name, _)| name)
    }

    pub fn parse(name: &str) -> Option<Fault> {
        FAULTS
            .iter()
            .find(|(_, known, _)| *known == name)
            .map(|(fault, _, _)| *fault)
    }
}

#[cfg(feature = "faults")]
static ACTIVE: std::sync::OnceLock<Fault> = std::sync::OnceLock::new();

/// Turns `fault` on for the rest of the process, before the server starts. Once only:
/// a second call changes nothing and returns its fault as the error.
#[cfg(feature = "faults")]
pub fn set(fault: Fault) -> Result<(), Fault> {
    ACTIVE.set(fault)
}

/// Whether `fault` is the one turned on.
#[cfg(feature = "faults")]
#[inline]
pub fn active(fault: Fault) -> bool {
    ACTIVE.get() == Some(&fault)
}

/// Never, without the `faults` feature: the hooks compile to nothing.
#[cfg(not(feature = "faults"))]
#[inline(always)]
pub const fn active(_fault: Fault) -> bool {
    false
}
