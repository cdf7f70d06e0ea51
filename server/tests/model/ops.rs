//! The operations a client performs, and their proptest strategy. Indices are
//! resolved at plan time modulo what exists (sessions, a session's processes), so every
//! sequence is meaningful and shrinking (dropping ops, lowering numbers) keeps it so.

use std::fmt;

use proptest::prelude::*;

/// One client operation. `session` and `process` pick, modulo their count, among every
/// session created so far (expired ones included) and that session's processes.
#[derive(Clone)]
pub enum Op {
    /// Connect and `initialize` a fresh session (the current one, if attached, is
    /// disconnected first: a transcript has one current connection).
    NewSession,
    /// `process/start` of a `cat` (stdin piped, echoes what it is written) or, with
    /// `ticker`, of a process that prints one block after a delay and then sleeps. With
    /// `background`, it first starts a grandchild that sleeps in the background (its
    /// output elsewhere), which only a kill of the whole tree ends.
    Start {
        session: u8,
        ticker: Option<Ticker>,
        background: bool,
    },
    /// `process/write` with a fresh `writeId`.
    Write {
        session: u8,
        process: u8,
        data: String,
    },
    /// `process/write` with a fresh `writeId` whose answer is lost: the connection is
    /// closed (or reset) before it is read. The client first sees the echo (so the bytes
    /// certainly reached the child) unless `echo_unseen`; then the drop may come before
    /// the write took effect, or after. The write is re-sent, same `writeId`, when the
    /// process is next touched. (`false` is the case shrinking prefers: a failure that
    /// also happens with the echo seen replays without depending on timing.)
    WriteLost {
        session: u8,
        process: u8,
        data: String,
        echo_unseen: bool,
        reset: bool,
    },
    /// `process/write` with `closeStdin: true` (and a fresh `writeId`).
    CloseStdin { session: u8, process: u8 },
    /// Reads whatever the process owes, then checks nothing more is there.
    Read { session: u8, process: u8 },
    /// Ends the current connection: a Close frame, or a TCP reset.
    Disconnect { reset: bool },
    /// Resumes a detached session (an expired one must be refused).
    Resume { session: u8 },
    /// Waits past the session TTL: every detached session expires.
    WaitPastTtl,
    /// Resumes the current session from a second connection while the first holds it
    /// (refused); the first is kept open and no longer used.
    ResumeAttached,
    /// `process/terminate`.
    Terminate { session: u8, process: u8 },
}

/// A process that prints `lines` lines in one write, `delay_ms` after it starts.
#[derive(Clone, Copy, Debug)]
pub struct Ticker {
    pub delay_ms: u8,
    pub lines: u8,
}

// Compact, so that a shrunk failure reads as a short list.
impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::NewSession => write!(f, "NewSession"),
            Op::Start {
                session,
                ticker,
                background,
            } => {
                match ticker {
                    None => write!(f, "StartEcho(s{session}")?,
                    Some(t) => write!(
                        f,
                        "StartTicker(s{session}, {}ms, {} lines",
                        t.delay_ms, t.lines
                    )?,
                }
                match background {
                    true => write!(f, ", background)"),
                    false => write!(f, ")"),
                }
            }
            Op::Write {
                session,
                process,
                data,
            } => write!(f, "Write(s{session}/p{process}, {data:?})"),
            Op::WriteLost {
                session,
                process,
                data,
                echo_unseen,
                reset,
            } => write!(
                f,
                "WriteLost(s{session}/p{process}, {data:?}, {}, {})",
                if *echo_unseen {
                    "echo unseen"
                } else {
                    "echo seen"
                },
                if *reset { "reset" } else { "close" }
            ),
            Op::CloseStdin { session, process } => write!(f, "CloseStdin(s{session}/p{process})"),
            Op::Read { session, process } => write!(f, "Read(s{session}/p{process})"),
            Op::Disconnect { reset: false } => write!(f, "Disconnect"),
            Op::Disconnect { reset: true } => write!(f, "Reset"),
            Op::Resume { session } => write!(f, "Resume(s{session})"),
            Op::WaitPastTtl => write!(f, "WaitPastTtl"),
            Op::ResumeAttached => write!(f, "ResumeAttached"),
            Op::Terminate { session, process } => write!(f, "Terminate(s{session}/p{process})"),
        }
    }
}

/// What a client writes: short and printable, so a transcript shows it as text.
fn data() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,12}"
}

/// One operation. Waits past the TTL are rare: each costs more than a TTL of real time.
pub fn op() -> impl Strategy<Value = Op> {
    let index = || 0u8..8;
    prop_oneof![
        2 => Just(Op::NewSession),
        4 => (index(), any::<bool>()).prop_map(|(session, background)| Op::Start {
            session,
            ticker: None,
            background,
        }),
        2 => (index(), 0u8..=100, 1u8..=8, any::<bool>()).prop_map(
            |(session, delay_ms, lines, background)| Op::Start {
                session,
                ticker: Some(Ticker { delay_ms, lines }),
                background,
            }
        ),
        8 => (index(), index(), data())
            .prop_map(|(session, process, data)| Op::Write { session, process, data }),
        4 => (index(), index(), data(), any::<bool>(), any::<bool>()).prop_map(
            |(session, process, data, echo_unseen, reset)| Op::WriteLost {
                session,
                process,
                data,
                echo_unseen,
                reset,
            }
        ),
        2 => (index(), index()).prop_map(|(session, process)| Op::CloseStdin { session, process }),
        6 => (index(), index()).prop_map(|(session, process)| Op::Read { session, process }),
        4 => any::<bool>().prop_map(|reset| Op::Disconnect { reset }),
        4 => index().prop_map(|session| Op::Resume { session }),
        2 => Just(Op::WaitPastTtl),
        1 => Just(Op::ResumeAttached),
        2 => (index(), index()).prop_map(|(session, process)| Op::Terminate { session, process }),
    ]
}

/// A client's whole run.
pub fn ops(max: usize) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..=max)
}
