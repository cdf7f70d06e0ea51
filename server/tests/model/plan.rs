//! The model: turns a sequence of [`Op`]s into the exact [`Step`]s a client takes and
//! what the protocol says each answer must be. It is pure (no server, no clock), so
//! the same plan is both executed against a server (`session_model.rs`) and written
//! out as a transcript ([`super::xt`]); a failure found by one replays in the other.
//!
//! Every expectation is deterministic on a correct server, because the plan only asks
//! what cannot depend on timing:
//! - each `cat` write is echoed as one chunk (one small write, one pipe read), and the
//!   next write to that `cat` waits until the echo was read, so echoes never merge;
//! - reads ask for one chunk at a time (`maxBytes: 0`, a long-poll), at its exact seq;
//! - seqs are known: a process's output, exit and close come in the order the plan
//!   makes them happen (a `cat` exits only after its last echo was read, a ticker only
//!   when terminated after its block was read);
//! - a process is terminated or written only after what it owes was read, so `running`
//!   and `stdinClosed` are known;
//! - a session is either resumed well within the TTL or after waiting well past it;
//! - a background grandchild has its output elsewhere, so it delays nothing; only a
//!   kill of its tree (terminate, expiry) ends it, which the end of the run checks.
//!
//! A transcript has one current connection and cannot return to an older one, and so
//! neither can a plan: acting on another session detaches the current one (a Close
//! frame) and resumes the other on a new connection.

use std::collections::VecDeque;

use serde_json::{json, Value};

use super::ops::{Op, Ticker};

/// At most this many sessions and processes per session: the end of a run reads and
/// stops all of them.
pub const MAX_SESSIONS: usize = 3;
pub const MAX_PROCESSES: usize = 4;
/// At most this many waits past the TTL per run (each is 2.5 TTLs in a transcript).
pub const MAX_TTL_WAITS: usize = 3;
/// `waitMs` of a read that must find something: well under the runner's 5 s per wait.
pub const LONG_POLL_MS: u64 = 3000;
/// `waitMs` of the read after a re-sent write: a second echo would come within it.
pub const QUIET_POLL_MS: u64 = 150;
/// What a transcript waits after a drop before resuming (the server notices a drop
/// asynchronously; fixtures/README.md); the executor retries "already attached" instead.
pub const SETTLE_MS: u64 = 200;

/// What a step is checking: names a failure and the transcript written for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Output is read back exactly: nothing lost, nothing twice, at the expected seqs.
    OutputOnce,
    /// A re-sent `writeId` reaches the child once.
    WriteIdOnce,
    /// A session resumed within its TTL is still there, processes and all.
    ResumeWithinTtl,
    /// A session past its TTL cannot be resumed.
    ExpiredRefused,
    /// A session attached to a connection cannot be resumed from another.
    AttachedRefused,
    /// An expired session leaves no process behind.
    ExpiryKills,
    /// A terminated process leaves nothing of its tree behind.
    TreeKilled,
    /// Every new session gets an id no other session had.
    SessionIdsDistinct,
    /// Anything else the protocol answers (starts, write statuses, terminate).
    Protocol,
}

impl Check {
    pub const ALL: [Check; 9] = [
        Check::OutputOnce,
        Check::WriteIdOnce,
        Check::ResumeWithinTtl,
        Check::ExpiredRefused,
        Check::AttachedRefused,
        Check::ExpiryKills,
        Check::TreeKilled,
        Check::SessionIdsDistinct,
        Check::Protocol,
    ];

    /// A file-name slug: what the transcript checks.
    pub fn slug(self) -> &'static str {
        match self {
            Check::OutputOnce => "output-read-back-exactly-once",
            Check::WriteIdOnce => "resent-write-id-reaches-child-once",
            Check::ResumeWithinTtl => "resume-within-ttl-keeps-session",
            Check::ExpiredRefused => "resume-after-ttl-refused",
            Check::AttachedRefused => "resume-of-attached-session-refused",
            Check::ExpiryKills => "expiry-leaves-no-processes",
            Check::TreeKilled => "terminate-leaves-no-processes",
            Check::SessionIdsDistinct => "session-ids-distinct",
            Check::Protocol => "answers-as-specified",
        }
    }

    /// The section of docs/protocol.md it grades.
    pub fn spec(self) -> &'static str {
        match self {
            Check::OutputOnce => "§6.3",
            Check::WriteIdOnce => "§6.4",
            Check::ResumeWithinTtl
            | Check::ExpiredRefused
            | Check::AttachedRefused
            | Check::ExpiryKills
            | Check::SessionIdsDistinct => "§5",
            Check::TreeKilled => "§6.5",
            Check::Protocol => "§6",
        }
    }

    /// One line saying what must hold.
    pub fn claim(self) -> &'static str {
        match self {
            Check::OutputOnce => {
                "output produced while attached or detached is read back once, at consecutive seqs"
            }
            Check::WriteIdOnce => {
                "a write whose answer a disconnect lost, re-sent with its writeId after the resume, reaches the child once"
            }
            Check::ResumeWithinTtl => "a session resumed within its TTL keeps its processes",
            Check::ExpiredRefused => "a session detached past its TTL cannot be resumed",
            Check::AttachedRefused => {
                "a session attached to one connection cannot be resumed from another"
            }
            Check::ExpiryKills => "an expired session leaves no process behind",
            Check::TreeKilled => "a terminated process leaves nothing of its tree behind",
            Check::SessionIdsDistinct => "every new session gets an id no session had before",
            Check::Protocol => "process requests are answered as specified",
        }
    }
}

/// How an `initialize` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// A new session; its id is bound as `$sidN`.
    Fresh,
    /// A resume of `$sidN` that must succeed (then `initialized`).
    Resume,
    /// A resume of `$sidN` that must be refused with -32600: the session expired.
    Expired,
    /// A resume of `$sidN` that must be refused with -32010: another connection holds it.
    Attached,
}

/// One request on the current connection.
#[derive(Debug, Clone)]
pub struct Call {
    /// The session it acts on (whose marker `$marker` stands for in the executor).
    pub session: usize,
    pub method: &'static str,
    /// The params, with `"$marker"` and `"$tmpPath"` standing for the case's values.
    pub params: Value,
    /// The pattern of the answer (`{"result": …}` or `{"error": …}`), matched as the
    /// conformance runner matches `<<` (objects by listed keys, arrays exactly,
    /// `{"$b64": text}`); `None`: the answer is never read (it is "lost").
    pub expect: Option<Value>,
    pub check: Check,
}

/// One step of a plan: what the executor does and what the transcript says.
#[derive(Debug, Clone)]
pub enum Step {
    /// Op number `index` (0-based) starts here; a comment in the transcript.
    Op {
        index: usize,
        text: String,
    },
    /// `initialize` on the current connection, and `initialized` if it succeeds.
    Initialize {
        session: usize,
        init: Init,
        check: Check,
    },
    /// Close the current connection with a Close frame.
    Disconnect,
    /// Drop the current connection with a TCP reset.
    Reset,
    /// Open a new connection; it becomes the current one. The old one is left as it is
    /// (closed already, or holding a session the client no longer uses).
    Reconnect,
    /// Let the server notice the last drop before a resume.
    Settle,
    Call(Call),
    /// Wait past the TTL (the executor: 1.25 × its TTL; a transcript: `wait-ttl 250%`).
    WaitPastTtl,
    /// The processes of these sessions, which just expired, are gone. Written into the
    /// transcript (`!! no-orphans`, which sees every process of the case) only when no
    /// live session still has a process that may run.
    Gone {
        sessions: Vec<usize>,
        in_transcript: bool,
    },
    /// Nothing any session started is still running.
    NoOrphans,
}

/// A plan and what a transcript of it needs to declare.
#[derive(Debug, Clone)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Waits past the TTL: the transcript requires `session.ttl`.
    pub uses_ttl: bool,
    /// Uses `closeStdin`: the transcript requires `process.close_stdin`.
    pub uses_close_stdin: bool,
    /// The longest a session stays detached before a resume that must succeed, in a
    /// transcript's logical time (its waits, and an allowance per request): with
    /// `session.ttl` the runner's TTL is 2 s, so this should stay well below it.
    pub longest_detach_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Attached,
    Detached,
    Expired,
    /// Attached to a connection the client no longer uses (after a refused resume from
    /// another one): a transcript cannot go back to an older connection.
    Held,
}

/// What the process owes the client, in seq order.
#[derive(Debug, Clone)]
enum Owed {
    Chunk(u64, String),
    Exit(u64, Option<i32>),
    Closed(u64),
}

/// A write whose answer was lost; re-sent when the process is next touched.
#[derive(Debug, Clone)]
struct Lost {
    write_id: String,
    data: String,
}

#[derive(Debug, Clone)]
struct Process {
    id: String,
    echo: bool,
    /// `cat` whose stdin the client has not closed.
    stdin_open: bool,
    /// No exit is owed or read yet.
    running: bool,
    /// Its close was read.
    closed: bool,
    /// It started a background grandchild, which outlives its close.
    background: bool,
    /// Its tree was killed (terminate, or its session expired).
    tree_killed: bool,
    /// The last seq read.
    after: u64,
    /// The seq the next event will get.
    next_seq: u64,
    owed: VecDeque<Owed>,
    /// Every chunk it prints, with its seq (for the final full read).
    chunks: Vec<(u64, String)>,
    lost: Option<Lost>,
}

impl Process {
    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Whether a process of its tree may still be running.
    fn may_run(&self) -> bool {
        !self.closed || (self.background && !self.tree_killed)
    }
}

#[derive(Debug, Clone)]
struct Session {
    state: State,
    processes: Vec<Process>,
    /// Logical transcript time since it was detached.
    detached_ms: u64,
}

/// The connection the client currently holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    /// None open (after a disconnect or reset).
    Closed,
    /// Open, not initialized (at the start, or after a refused resume).
    Fresh,
    Attached(usize),
}

/// A transcript's logical cost of one request (it is not waited for; an allowance).
const REQUEST_MS: u64 = 20;

struct Builder {
    steps: Vec<Step>,
    sessions: Vec<Session>,
    conn: Conn,
    next_write: u64,
    ttl_waits: usize,
    uses_close_stdin: bool,
    longest_detach_ms: u64,
}

impl Plan {
    /// The plan of `ops`, from a fresh server: session 0 is created first, and the
    /// run ends by reading every process to its close, stopping what still runs, and
    /// checking nothing is left.
    pub fn of(ops: &[Op]) -> Plan {
        let mut builder = Builder {
            steps: Vec::new(),
            sessions: Vec::new(),
            conn: Conn::Fresh,
            next_write: 1,
            ttl_waits: 0,
            uses_close_stdin: false,
            longest_detach_ms: 0,
        };
        builder.new_session();
        for (index, op) in ops.iter().enumerate() {
            let text = builder.describe(op);
            builder.steps.push(Step::Op { index, text });
            builder.op(op);
        }
        builder.finish();
        Plan {
            steps: builder.steps,
            uses_ttl: builder.ttl_waits > 0,
            uses_close_stdin: builder.uses_close_stdin,
            longest_detach_ms: builder.longest_detach_ms,
        }
    }
}

fn chunk_pattern(seq: u64, data: &str) -> Value {
    json!({"seq": seq, "stream": "stdout", "chunk": {"$b64": data}})
}

impl Builder {
    /// `op` in the terms of this run: which session and process it picks (`$sidN`, as
    /// the transcript binds them), before it runs.
    fn describe(&self, op: &Op) -> String {
        let session = |index: u8| format!("$sid{}", self.pick_session(index) + 1);
        let process = |s: u8, p: u8| match self.pick_process(s, p) {
            Some((s, p)) => format!("$sid{} {}", s + 1, self.sessions[s].processes[p].id),
            None => format!("{} (which has no process, so nothing)", session(s)),
        };
        match op {
            Op::NewSession if self.sessions.len() >= MAX_SESSIONS => {
                format!("a new session (there are {MAX_SESSIONS} already, so nothing)")
            }
            Op::NewSession => format!("a new session, $sid{}", self.sessions.len() + 1),
            Op::Start {
                session: s,
                ticker,
                background,
            } => {
                let what = match ticker {
                    None => "cat".to_owned(),
                    Some(Ticker { delay_ms, lines }) => {
                        format!("a ticker ({lines} lines after {delay_ms} ms)")
                    }
                };
                let with = if *background {
                    " with a background grandchild"
                } else {
                    ""
                };
                format!("start {what}{with} in {}", session(*s))
            }
            Op::Write {
                session: s,
                process: p,
                data,
            } => {
                format!("write {data:?} to {}", process(*s, *p))
            }
            Op::WriteLost {
                session: s,
                process: p,
                data,
                echo_unseen,
                reset,
            } => format!(
                "write {data:?} to {}, {}and lose its answer to a {}",
                process(*s, *p),
                if *echo_unseen { "" } else { "see its echo, " },
                if *reset { "TCP reset" } else { "Close frame" }
            ),
            Op::CloseStdin {
                session: s,
                process: p,
            } => {
                format!("close the stdin of {}", process(*s, *p))
            }
            Op::Read {
                session: s,
                process: p,
            } => format!("read {}", process(*s, *p)),
            Op::Disconnect { reset: false } => "disconnect with a Close frame".to_owned(),
            Op::Disconnect { reset: true } => "disconnect with a TCP reset".to_owned(),
            Op::Resume { session: s } => format!("resume {}", session(*s)),
            Op::WaitPastTtl => "wait past the TTL".to_owned(),
            Op::ResumeAttached => match self.conn {
                Conn::Attached(s) if !self.sessions[s].processes.iter().any(Process::may_run) => {
                    format!("resume $sid{}, attached, from a second connection", s + 1)
                }
                Conn::Attached(s) => format!(
                    "resume $sid{}, attached, from a second connection (it has processes, so nothing)",
                    s + 1
                ),
                _ => "resume the attached session from a second connection (none is, so nothing)"
                    .to_owned(),
            },
            Op::Terminate {
                session: s,
                process: p,
            } => format!("terminate {}", process(*s, *p)),
        }
    }

    fn op(&mut self, op: &Op) {
        match op {
            Op::NewSession => self.new_session(),
            Op::Start {
                session,
                ticker,
                background,
            } => {
                let session = self.pick_session(*session);
                self.start(session, *ticker, *background);
            }
            Op::Write {
                session,
                process,
                data,
            } => {
                if let Some((s, p)) = self.pick_process(*session, *process) {
                    self.write(s, p, data);
                }
            }
            Op::WriteLost {
                session,
                process,
                data,
                echo_unseen,
                reset,
            } => {
                if let Some((s, p)) = self.pick_process(*session, *process) {
                    self.write_lost(s, p, data, !*echo_unseen, *reset);
                }
            }
            Op::CloseStdin { session, process } => {
                if let Some((s, p)) = self.pick_process(*session, *process) {
                    self.close_stdin(s, p);
                }
            }
            Op::Read { session, process } => {
                if let Some((s, p)) = self.pick_process(*session, *process) {
                    self.read(s, p);
                }
            }
            Op::Disconnect { reset } => self.disconnect(*reset),
            Op::Resume { session } => {
                let session = self.pick_session(*session);
                self.resume(session);
            }
            Op::WaitPastTtl => self.wait_past_ttl(),
            Op::ResumeAttached => self.resume_attached(),
            Op::Terminate { session, process } => {
                if let Some((s, p)) = self.pick_process(*session, *process) {
                    self.terminate(s, p);
                }
            }
        }
    }

    fn pick_session(&self, index: u8) -> usize {
        usize::from(index) % self.sessions.len()
    }

    fn pick_process(&self, session: u8, process: u8) -> Option<(usize, usize)> {
        let s = self.pick_session(session);
        let count = self.sessions[s].processes.len();
        (count > 0).then(|| (s, usize::from(process) % count))
    }

    fn push(&mut self, step: Step) {
        let cost = match &step {
            Step::Settle => SETTLE_MS,
            Step::Call(_) | Step::Initialize { .. } => REQUEST_MS,
            _ => 0,
        };
        for session in &mut self.sessions {
            if session.state == State::Detached {
                session.detached_ms += cost;
            }
        }
        self.steps.push(step);
    }

    fn call(
        &mut self,
        session: usize,
        method: &'static str,
        params: Value,
        expect: Value,
        check: Check,
    ) {
        self.push(Step::Call(Call {
            session,
            method,
            params,
            expect: Some(expect),
            check,
        }));
    }

    fn write_id(&mut self) -> String {
        let id = format!("w{}", self.next_write);
        self.next_write += 1;
        id
    }

    /// The current connection's session detaches (a Close frame or a reset).
    fn drop_connection(&mut self, reset: bool) {
        if let Conn::Attached(s) = self.conn {
            self.push(if reset { Step::Reset } else { Step::Disconnect });
            self.sessions[s].state = State::Detached;
            self.sessions[s].detached_ms = 0;
            self.conn = Conn::Closed;
        }
    }

    /// An open connection that is not initialized.
    fn fresh_connection(&mut self) {
        self.drop_connection(false);
        if self.conn == Conn::Closed {
            self.push(Step::Reconnect);
            self.conn = Conn::Fresh;
        }
    }

    /// Attaches session `s` to the current connection (resuming it on a fresh one if
    /// another session is current); false if it expired.
    fn attach(&mut self, s: usize) -> bool {
        match self.sessions[s].state {
            State::Expired | State::Held => false,
            State::Attached => true,
            State::Detached => {
                self.fresh_connection();
                self.push(Step::Settle);
                self.longest_detach_ms = self.longest_detach_ms.max(self.sessions[s].detached_ms);
                self.push(Step::Initialize {
                    session: s,
                    init: Init::Resume,
                    check: Check::ResumeWithinTtl,
                });
                self.sessions[s].state = State::Attached;
                self.conn = Conn::Attached(s);
                true
            }
        }
    }

    fn new_session(&mut self) {
        if self.sessions.len() >= MAX_SESSIONS {
            return;
        }
        self.fresh_connection();
        let s = self.sessions.len();
        self.sessions.push(Session {
            state: State::Attached,
            processes: Vec::new(),
            detached_ms: 0,
        });
        self.push(Step::Initialize {
            session: s,
            init: Init::Fresh,
            check: Check::SessionIdsDistinct,
        });
        self.conn = Conn::Attached(s);
    }

    fn start(&mut self, s: usize, ticker: Option<Ticker>, background: bool) {
        if self.sessions[s].processes.len() >= MAX_PROCESSES || !self.attach(s) {
            return;
        }
        let id = format!("p{}", self.sessions[s].processes.len() + 1);
        let mut process = Process {
            id: id.clone(),
            echo: ticker.is_none(),
            stdin_open: ticker.is_none(),
            running: true,
            closed: false,
            background,
            tree_killed: false,
            after: 0,
            next_seq: 1,
            owed: VecDeque::new(),
            chunks: Vec::new(),
            lost: None,
        };
        let mut script = match ticker {
            // `exec`: the marker stays in its environment, and a kill reaches it.
            None => "exec cat".to_owned(),
            Some(Ticker { delay_ms, lines }) => {
                let block: String = (1..=lines).map(|i| format!("{id}-tick-{i}\n")).collect();
                let seq = process.take_seq();
                process.owed.push_back(Owed::Chunk(seq, block.clone()));
                process.chunks.push((seq, block.clone()));
                // One printf: one write of under 4 KiB, so one chunk. It then sleeps,
                // so no exit can take a seq before the block is read.
                let format = block.replace('\n', "\\n");
                let sleep = match delay_ms {
                    0 => String::new(),
                    ms => format!("sleep 0.{ms:03}; "),
                };
                format!("{sleep}printf '{format}'; exec sleep 600")
            }
        };
        if background {
            // As fixtures/README.md has it: the marker in argv too; `; :` keeps the
            // shell. Its output goes elsewhere, so it holds none of the process's pipes
            // (and is no reason to delay `closed`); only a kill of the tree ends it.
            script = format!("sh -c 'sleep 600; :' \"$0\" >/dev/null 2>&1 & {script}");
        }
        self.call(
            s,
            "process/start",
            json!({
                "processId": id,
                "argv": ["/bin/sh", "-c", script, "$marker"],
                "cwd": "$tmpPath",
                "env": {"PATH": "/usr/bin:/bin", "XT_MARKER": "$marker"},
                "pipeStdin": ticker.is_none(),
            }),
            json!({"result": {"processId": id}}),
            Check::Protocol,
        );
        self.sessions[s].processes.push(process);
    }

    /// Session `s` attached, the lost write of process `p` re-sent, and what `p` owes
    /// read; false if the session expired.
    fn touch(&mut self, s: usize, p: usize) -> bool {
        if !self.attach(s) {
            return false;
        }
        if let Some(lost) = self.sessions[s].processes[p].lost.take() {
            let id = self.sessions[s].processes[p].id.clone();
            // Same id, same bytes: it is the same write, written once whether or not
            // the first one got through before the drop.
            self.call(
                s,
                "process/write",
                json!({"processId": id, "chunk": b64(&lost.data), "writeId": lost.write_id}),
                json!({"result": {"status": "accepted"}}),
                Check::WriteIdOnce,
            );
            self.read_owed(s, p, Check::WriteIdOnce);
            let after = self.sessions[s].processes[p].after;
            self.call(
                s,
                "process/read",
                json!({"processId": id, "afterSeq": after, "maxBytes": 0, "waitMs": QUIET_POLL_MS}),
                json!({"result": {"chunks": []}}),
                Check::WriteIdOnce,
            );
        }
        self.read_owed(s, p, Check::OutputOnce);
        true
    }

    /// Reads what process `p` owes, one event at a time at its seq.
    fn read_owed(&mut self, s: usize, p: usize, check: Check) {
        while let Some(owed) = self.sessions[s].processes[p].owed.pop_front() {
            let process = &self.sessions[s].processes[p];
            let id = process.id.clone();
            let after = process.after;
            let (params, expect, seq) = match owed {
                Owed::Chunk(seq, data) => (
                    json!({"processId": id, "afterSeq": after, "maxBytes": 0, "waitMs": LONG_POLL_MS}),
                    json!({"result": {"chunks": [chunk_pattern(seq, &data)]}}),
                    seq,
                ),
                Owed::Exit(seq, code) => {
                    let mut result = json!({"chunks": [], "exited": true});
                    if let Some(code) = code {
                        result["exitCode"] = json!(code);
                    }
                    (
                        json!({"processId": id, "afterSeq": after, "waitMs": LONG_POLL_MS}),
                        json!({ "result": result }),
                        seq,
                    )
                }
                Owed::Closed(seq) => {
                    self.sessions[s].processes[p].closed = true;
                    (
                        json!({"processId": id, "afterSeq": after, "waitMs": LONG_POLL_MS}),
                        json!({"result": {"chunks": [], "closed": true}}),
                        seq,
                    )
                }
            };
            self.call(s, "process/read", params, expect, check);
            self.sessions[s].processes[p].after = seq;
        }
    }

    /// Whether a write to `p` is accepted (else it is answered `stdinClosed`).
    fn writable(&self, s: usize, p: usize) -> bool {
        let process = &self.sessions[s].processes[p];
        process.echo && process.stdin_open && process.running
    }

    fn write(&mut self, s: usize, p: usize, data: &str) {
        if !self.touch(s, p) {
            return;
        }
        let accepted = self.writable(s, p);
        let write_id = self.write_id();
        let process = &mut self.sessions[s].processes[p];
        let id = process.id.clone();
        if accepted {
            let seq = process.take_seq();
            process.owed.push_back(Owed::Chunk(seq, data.to_owned()));
            process.chunks.push((seq, data.to_owned()));
        }
        let status = if accepted { "accepted" } else { "stdinClosed" };
        self.call(
            s,
            "process/write",
            json!({"processId": id, "chunk": b64(data), "writeId": write_id}),
            json!({"result": {"status": status}}),
            Check::Protocol,
        );
    }

    fn write_lost(&mut self, s: usize, p: usize, data: &str, confirm_echo: bool, reset: bool) {
        if !self.touch(s, p) || !self.writable(s, p) {
            return;
        }
        let write_id = self.write_id();
        let process = &mut self.sessions[s].processes[p];
        let id = process.id.clone();
        let seq = process.take_seq();
        process.owed.push_back(Owed::Chunk(seq, data.to_owned()));
        process.chunks.push((seq, data.to_owned()));
        process.lost = Some(Lost {
            write_id: write_id.clone(),
            data: data.to_owned(),
        });
        self.push(Step::Call(Call {
            session: s,
            method: "process/write",
            params: json!({"processId": id, "chunk": b64(data), "writeId": write_id}),
            expect: None,
            check: Check::WriteIdOnce,
        }));
        if confirm_echo {
            // The echo proves the bytes reached the child before the answer was lost.
            self.read_owed(s, p, Check::OutputOnce);
        }
        self.drop_connection(reset);
    }

    fn close_stdin(&mut self, s: usize, p: usize) {
        if !self.touch(s, p) {
            return;
        }
        self.uses_close_stdin = true;
        let accepted = self.writable(s, p);
        let write_id = self.write_id();
        let process = &mut self.sessions[s].processes[p];
        let id = process.id.clone();
        if accepted {
            // `cat` exits at EOF; every echo was read, so its exit is the next seq.
            process.stdin_open = false;
            process.running = false;
            let exit = process.take_seq();
            let close = process.take_seq();
            process.owed.push_back(Owed::Exit(exit, Some(0)));
            process.owed.push_back(Owed::Closed(close));
        }
        let status = if accepted { "accepted" } else { "stdinClosed" };
        self.call(
            s,
            "process/write",
            json!({"processId": id, "chunk": "", "closeStdin": true, "writeId": write_id}),
            json!({"result": {"status": status}}),
            Check::Protocol,
        );
    }

    fn read(&mut self, s: usize, p: usize) {
        if !self.touch(s, p) {
            return;
        }
        let process = &self.sessions[s].processes[p];
        let (id, after) = (process.id.clone(), process.after);
        self.call(
            s,
            "process/read",
            json!({"processId": id, "afterSeq": after, "maxBytes": 0}),
            json!({"result": {"chunks": []}}),
            Check::OutputOnce,
        );
    }

    fn terminate(&mut self, s: usize, p: usize) {
        if !self.touch(s, p) {
            return;
        }
        let process = &mut self.sessions[s].processes[p];
        let id = process.id.clone();
        let running = process.running;
        // Whenever the process is known, what is left of its tree is killed (§6.5).
        process.tree_killed = true;
        if running {
            process.running = false;
            process.stdin_open = false;
            let exit = process.take_seq();
            let close = process.take_seq();
            // Killed: the code is 128 + the signal, which the protocol leaves open.
            process.owed.push_back(Owed::Exit(exit, None));
            process.owed.push_back(Owed::Closed(close));
        }
        self.call(
            s,
            "process/terminate",
            json!({"processId": id}),
            json!({"result": {"running": running}}),
            Check::Protocol,
        );
    }

    fn disconnect(&mut self, reset: bool) {
        self.drop_connection(reset);
    }

    fn resume(&mut self, s: usize) {
        match self.sessions[s].state {
            State::Expired => {
                self.fresh_connection();
                self.push(Step::Initialize {
                    session: s,
                    init: Init::Expired,
                    check: Check::ExpiredRefused,
                });
            }
            State::Held => {
                self.fresh_connection();
                self.push(Step::Initialize {
                    session: s,
                    init: Init::Attached,
                    check: Check::AttachedRefused,
                });
            }
            State::Attached | State::Detached => {
                self.attach(s);
            }
        }
    }

    /// A resume of the current session from a second connection, while the first
    /// holds it: refused. The session stays with the first connection, which the
    /// client keeps open and no longer uses; so only a session with nothing left to
    /// run (the run must end with nothing running).
    fn resume_attached(&mut self) {
        let Conn::Attached(s) = self.conn else {
            return;
        };
        if self.sessions[s].processes.iter().any(Process::may_run) {
            return;
        }
        self.push(Step::Reconnect);
        self.conn = Conn::Fresh;
        self.push(Step::Initialize {
            session: s,
            init: Init::Attached,
            check: Check::AttachedRefused,
        });
        self.sessions[s].state = State::Held;
    }

    fn wait_past_ttl(&mut self) {
        let detached: Vec<usize> = (0..self.sessions.len())
            .filter(|&s| self.sessions[s].state == State::Detached)
            .collect();
        if self.ttl_waits >= MAX_TTL_WAITS || detached.is_empty() {
            return;
        }
        self.ttl_waits += 1;
        self.push(Step::WaitPastTtl);
        for &s in &detached {
            let session = &mut self.sessions[s];
            session.state = State::Expired;
            for process in &mut session.processes {
                // Killed with the session: nothing more is owed or re-sent.
                process.owed.clear();
                process.lost = None;
                process.running = false;
                process.closed = true;
                process.tree_killed = true;
            }
        }
        let others_quiet = self
            .sessions
            .iter()
            .filter(|session| session.state != State::Expired)
            .all(|session| !session.processes.iter().any(Process::may_run));
        self.push(Step::Gone {
            sessions: detached,
            in_transcript: others_quiet,
        });
    }

    /// The end of every run: expired sessions stay refused; every other session is
    /// resumed, its processes read to their close and stopped, and read back whole;
    /// then nothing the run started may be left.
    fn finish(&mut self) {
        self.push(Step::Op {
            index: usize::MAX,
            text: "read everything back, stop what runs".into(),
        });
        let expired: Vec<usize> = (0..self.sessions.len())
            .filter(|&s| self.sessions[s].state == State::Expired)
            .collect();
        if !expired.is_empty() {
            self.fresh_connection();
            for s in expired {
                self.push(Step::Initialize {
                    session: s,
                    init: Init::Expired,
                    check: Check::ExpiredRefused,
                });
            }
        }
        for s in 0..self.sessions.len() {
            if matches!(self.sessions[s].state, State::Expired | State::Held) {
                continue;
            }
            for p in 0..self.sessions[s].processes.len() {
                self.touch(s, p);
                if self.writable(s, p) {
                    self.close_stdin(s, p);
                } else if self.sessions[s].processes[p].running {
                    self.terminate(s, p);
                }
                self.read_owed(s, p, Check::OutputOnce);
                let process = &self.sessions[s].processes[p];
                if process.background && !process.tree_killed {
                    // Closed, but its grandchild still runs.
                    self.terminate(s, p);
                }
                let process = &self.sessions[s].processes[p];
                let chunks: Vec<Value> = process
                    .chunks
                    .iter()
                    .map(|(seq, data)| chunk_pattern(*seq, data))
                    .collect();
                let id = process.id.clone();
                // Everything again, from the start: each chunk once, at its seq.
                self.call(
                    s,
                    "process/read",
                    json!({"processId": id, "afterSeq": 0}),
                    json!({"result": {"chunks": chunks, "exited": true, "closed": true}}),
                    Check::OutputOnce,
                );
            }
        }
        self.push(Step::NoOrphans);
    }
}

/// Standard base64 with padding, as the wire carries bytes.
pub fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
}
