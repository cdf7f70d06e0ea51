//! Bounded soak of a real `exec-server` binary on loopback (not part of CI; run it with
//! `scripts/soak.sh [SECONDS]`).
//!
//! N clients (default 50) do random starts, writes, reads, clean disconnects, TCP resets,
//! resumes and abandoned sessions for the given time:
//! - most are harness connections that pull output with `process/read` and know exactly
//!   what every process printed (the model of `tests/session_model.rs`);
//! - some use the client library (`ExecServerClient` with `reconnect`) through their own
//!   cuttable TCP proxy, and check the ordered event stream of each process.
//!
//! Every process carries a marker variable in its environment, so `/proc` shows what is
//! left of the server's children. The run has two phases, each ending quiet (every
//! session finished or expired): a warm-up whose end gives the RSS baseline, and the
//! main load. At the end it checks: no verification failure (0 lost or repeated bytes),
//! 0 marked processes left while the server runs and after it stops, no zombie children,
//! and the server's RSS within 20 % of the baseline.
//!
//! ```text
//! soak --binary target/release/exec-server [--seconds 300] [--clients 50]
//!      [--library-clients 10] [--ttl 10] [--seed N]
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exec_client::{
    ClientError, ClientOptions, ExecServerClient, ExecServerTransport, Method, ProcessEvent,
    ProcessHandle, StartRequest, WriteStatus,
};
use exec_server_harness::{Connection, ExecServer, HarnessError, Session};
use serde_json::json;

const PATH: &str = "/usr/local/bin:/usr/bin:/bin";
const MARK_VAR: &str = "EXEC_SOAK_MARK";
/// Live processes per client, at most.
const MAX_LIVE: usize = 4;
const RSS_TOLERANCE: f64 = 0.20;

struct Args {
    binary: String,
    seconds: u64,
    clients: usize,
    library_clients: usize,
    ttl: u64,
    seed: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        binary: "target/release/exec-server".into(),
        seconds: 300,
        clients: 50,
        library_clients: 10,
        ttl: 10,
        seed: std::process::id() as u64 ^ 0x5eed,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        let number = |text: String| {
            text.parse()
                .unwrap_or_else(|_| usage(&format!("bad number {text}")))
        };
        match flag.as_str() {
            "--binary" => args.binary = value(),
            "--seconds" => args.seconds = number(value()),
            "--clients" => args.clients = number(value()) as usize,
            "--library-clients" => args.library_clients = number(value()) as usize,
            "--ttl" => args.ttl = number(value()),
            "--seed" => args.seed = number(value()),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    args.library_clients = args.library_clients.min(args.clients);
    args
}

fn usage(problem: &str) -> ! {
    eprintln!("soak: {problem}\nusage: soak [--binary PATH] [--seconds N] [--clients N] [--library-clients N] [--ttl SECONDS] [--seed N]");
    std::process::exit(2)
}

/// xorshift64*: deterministic per client, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[derive(Default)]
struct Stats {
    operations: AtomicU64,
    starts: AtomicU64,
    writes: AtomicU64,
    reads: AtomicU64,
    disconnects: AtomicU64,
    resets: AtomicU64,
    resumes: AtomicU64,
    proxy_cuts: AtomicU64,
    /// Calls sent on a connection the client had not yet seen die: documented
    /// `ResponseLost` (the request may or may not have taken effect).
    responses_lost: AtomicU64,
    abandoned_sessions: AtomicU64,
    terminated: AtomicU64,
    processes_checked: AtomicU64,
    bytes_checked: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Stats {
    fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.operations.fetch_add(1, Ordering::Relaxed);
    }
    fn fail(&self, what: String) {
        eprintln!("soak: FAILURE: {what}");
        self.failures.lock().unwrap().push(what);
    }
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

struct Shared {
    stats: Stats,
    mark: String,
    stop: AtomicBool,
}

// ---------------------------------------------------------------------------------
// Harness clients: pull-based, exact model of every process's output.

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// `cat`: echoes what is written.
    Echo,
    /// Prints numbers, sleeps, prints more: output arrives while detached too.
    Ticker,
    /// `sh` with two background `sleep 600`: only a tree kill ends it.
    Tree,
}

struct ModelProcess {
    id: String,
    kind: Kind,
    expected: Vec<u8>,
    read: Vec<u8>,
    after_seq: u64,
    /// Terminated: the output must be a prefix of `expected`, not all of it.
    killed: bool,
}

struct RawClient {
    number: usize,
    connection: Connection,
    session: Session,
    attached: bool,
    processes: Vec<ModelProcess>,
    next_process: u64,
    rng: Rng,
    shared: Arc<Shared>,
}

type Outcome<T = ()> = Result<T, String>;

fn harness(context: &str) -> impl Fn(HarnessError) -> String + '_ {
    move |err| format!("{context}: {err}")
}

impl RawClient {
    async fn new(
        number: usize,
        server: &ExecServer,
        shared: Arc<Shared>,
        seed: u64,
    ) -> Outcome<Self> {
        let connection = server.connect().await.map_err(harness("connect"))?;
        let session = connection
            .initialize(&format!("soak-{number}"))
            .await
            .map_err(harness(Method::Initialize.as_str()))?;
        Ok(RawClient {
            number,
            connection,
            session,
            attached: true,
            processes: Vec::new(),
            next_process: 0,
            rng: Rng::new(seed),
            shared,
        })
    }

    fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    async fn attach(&mut self) -> Outcome {
        if self.attached {
            return Ok(());
        }
        self.connection
            .reconnect()
            .await
            .map_err(harness("reconnect"))?;
        let id = self.session.id().to_owned();
        let deadline = Instant::now() + self.connection.default_wait();
        // The end of a reset connection is noticed asynchronously.
        self.session = loop {
            match self.connection.resume("soak", &id).await {
                Err(HarnessError::Rpc { failure, .. })
                    if failure.message.contains("already attached")
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => break other.map_err(harness("resume"))?,
            }
        };
        self.attached = true;
        self.stats().count(&self.stats().resumes);
        Ok(())
    }

    async fn start(&mut self, kind: Kind) -> Outcome {
        self.attach().await?;
        let id = format!("p{}", self.next_process);
        self.next_process += 1;
        let (argv, expected): (Vec<String>, Vec<u8>) = match kind {
            Kind::Echo => (vec!["cat".into()], Vec::new()),
            Kind::Ticker => {
                let (first, second) = (1 + self.rng.below(400), 1 + self.rng.below(400));
                let pause = self.rng.below(5);
                let script = format!("seq 1 {first}; sleep 0.{pause}; seq 1 {second}");
                let expected: String = (1..=first)
                    .chain(1..=second)
                    .map(|i| format!("{i}\n"))
                    .collect();
                (
                    vec!["sh".into(), "-c".into(), script],
                    expected.into_bytes(),
                )
            }
            Kind::Tree => (
                vec![
                    "sh".into(),
                    "-c".into(),
                    "sleep 600 & sleep 600 & echo ready; wait".into(),
                ],
                b"ready\n".to_vec(),
            ),
        };
        let params = json!({
            "processId": id,
            "argv": argv,
            "cwd": "/",
            "env": {"PATH": PATH, MARK_VAR: self.shared.mark},
            "tty": false,
            "pipeStdin": kind == Kind::Echo,
        });
        self.connection
            .request(Method::ProcessStart, params)
            .result()
            .await
            .map_err(harness(Method::ProcessStart.as_str()))?;
        self.stats().count(&self.stats().starts);
        self.processes.push(ModelProcess {
            id,
            kind,
            expected,
            read: Vec::new(),
            after_seq: 0,
            killed: false,
        });
        Ok(())
    }

    /// One `process/read` after the last seen seq; true once closed and drained.
    async fn pull(&mut self, index: usize, wait_ms: u64) -> Outcome<bool> {
        let process = &mut self.processes[index];
        let read = self
            .session
            .read(&process.id, process.after_seq, wait_ms)
            .await
            .map_err(harness(Method::ProcessRead.as_str()))?;
        self.shared.stats.count(&self.shared.stats.reads);
        let first_retained = read.first_retained_seq.unwrap_or(1);
        if process.after_seq + 1 < first_retained {
            return Err(format!(
                "client {} {}: retention dropped unread output (after {} < first retained {first_retained})",
                self.number, process.id, process.after_seq
            ));
        }
        for chunk in &read.chunks {
            let seq = chunk.seq;
            if seq <= process.after_seq {
                return Err(format!("{}: seq {seq} returned twice", process.id));
            }
            process.read.extend_from_slice(&chunk.chunk);
        }
        process.after_seq = read.next_seq - 1;
        Ok(read.chunks.is_empty() && read.closed)
    }

    /// Reads to the end and compares with the model; removes the process.
    async fn finish(&mut self, index: usize) -> Outcome {
        let deadline = Instant::now() + self.connection.default_wait() * 2;
        while !self.pull(index, 500).await? {
            if Instant::now() > deadline {
                return Err(format!(
                    "client {} {}: not closed in time",
                    self.number, self.processes[index].id
                ));
            }
        }
        let process = self.processes.swap_remove(index);
        let exact = process.read == process.expected;
        let prefix = process.killed && process.expected.starts_with(&process.read);
        if !(exact || prefix) {
            return Err(format!(
                "client {} {}: read {} bytes, expected {}{} ({:?} vs {:?})",
                self.number,
                process.id,
                process.read.len(),
                if process.killed { "a prefix of " } else { "" },
                process.expected.len(),
                String::from_utf8_lossy(&process.read[..process.read.len().min(60)]),
                String::from_utf8_lossy(&process.expected[..process.expected.len().min(60)]),
            ));
        }
        let stats = self.stats();
        stats.processes_checked.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes_checked
            .fetch_add(process.read.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Ends a process the way its kind allows, then checks it.
    async fn close(&mut self, index: usize) -> Outcome {
        self.attach().await?;
        let id = self.processes[index].id.clone();
        match self.processes[index].kind {
            Kind::Echo => {
                self.session
                    .close_stdin(&id)
                    .await
                    .map_err(harness("close stdin"))?;
            }
            Kind::Tree => {
                self.session
                    .terminate(&id)
                    .await
                    .map_err(harness("terminate"))?;
                self.processes[index].killed = true;
                self.stats().count(&self.stats().terminated);
            }
            Kind::Ticker => {}
        }
        self.finish(index).await
    }

    /// Throws away buffered notifications (this client pulls with `process/read`).
    async fn drain_events(&self) {
        let _ = self
            .connection
            .skip_until(|_| false)
            .within(Duration::ZERO)
            .await;
    }

    async fn step(&mut self) -> Outcome {
        let roll = self.rng.below(100);
        let live = self.processes.len();
        match roll {
            0..=9 if live < MAX_LIVE => self.start(Kind::Echo).await,
            10..=17 if live < MAX_LIVE => self.start(Kind::Ticker).await,
            18..=20 if live < MAX_LIVE => self.start(Kind::Tree).await,
            21..=45 => {
                let echoes: Vec<usize> = (0..live)
                    .filter(|&i| self.processes[i].kind == Kind::Echo)
                    .collect();
                if echoes.is_empty() {
                    return Ok(());
                }
                self.attach().await?;
                let index = echoes[self.rng.below(echoes.len() as u64) as usize];
                let len = 1 + self.rng.below(2048) as usize;
                let data = self.rng.bytes(len);
                let id = self.processes[index].id.clone();
                let status = self
                    .session
                    .write_status(&id, &data)
                    .await
                    .map_err(harness("write"))?;
                if status != WriteStatus::Accepted {
                    return Err(format!("{id}: write status {status:?}"));
                }
                self.processes[index].expected.extend(data);
                self.stats().count(&self.stats().writes);
                Ok(())
            }
            46..=65 if live > 0 => {
                self.attach().await?;
                let index = self.rng.below(live as u64) as usize;
                self.pull(index, 0).await?;
                self.drain_events().await;
                Ok(())
            }
            66..=73 if live > 0 => {
                let index = self.rng.below(live as u64) as usize;
                self.close(index).await
            }
            74..=81 if self.attached => {
                if self.rng.chance(50) {
                    self.connection.reset().await.map_err(harness("reset"))?;
                    self.stats().count(&self.stats().resets);
                } else {
                    self.connection
                        .disconnect()
                        .await
                        .map_err(harness("disconnect"))?;
                    self.stats().count(&self.stats().disconnects);
                }
                self.attached = false;
                Ok(())
            }
            82..=86 => self.attach().await,
            87 if self.rng.chance(30) => self.abandon().await,
            _ => {
                // Idle, attached or not: detached processes keep running and retaining.
                let ms = self.rng.below(if self.attached { 40 } else { 400 });
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(())
            }
        }
    }

    /// Drops the session without resuming it: its processes (trees included) must die
    /// when it expires.
    async fn abandon(&mut self) -> Outcome {
        if self.attached {
            self.connection.reset().await.map_err(harness("reset"))?;
        }
        self.connection
            .reconnect()
            .await
            .map_err(harness("reconnect"))?;
        self.session = self
            .connection
            .initialize(&format!("soak-{}", self.number))
            .await
            .map_err(harness(Method::Initialize.as_str()))?;
        self.attached = true;
        self.processes.clear();
        self.stats().count(&self.stats().abandoned_sessions);
        Ok(())
    }

    /// Ends every process, checks them, and leaves the session to expire.
    async fn wind_down(&mut self) -> Outcome {
        while !self.processes.is_empty() {
            self.close(self.processes.len() - 1).await?;
        }
        self.connection
            .disconnect()
            .await
            .map_err(harness("disconnect"))?;
        Ok(())
    }
}

async fn run_raw_client(
    number: usize,
    server: ExecServer,
    shared: Arc<Shared>,
    seed: u64,
) -> Outcome {
    let mut client = RawClient::new(number, &server, Arc::clone(&shared), seed).await?;
    while !shared.stop.load(Ordering::Relaxed) {
        client.step().await?;
        let pause = client.rng.below(30);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    client.wind_down().await
}

// ---------------------------------------------------------------------------------
// Library clients: ExecServerClient with reconnect, through a cuttable proxy.

struct Proxy {
    url: String,
    cut: tokio::sync::watch::Sender<u64>,
}

/// Forwards every accepted connection to `upstream` until the next cut.
fn proxy_to(listener: tokio::net::TcpListener, upstream: String) -> Proxy {
    let url = format!("ws://{}", listener.local_addr().expect("proxy address"));
    let (cut, cuts) = tokio::sync::watch::channel(0u64);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let mut cuts = cuts.clone();
            cuts.borrow_and_update();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cuts.changed() => {}
                }
            });
        }
    });
    Proxy { url, cut }
}

struct LibProcess {
    handle: ProcessHandle,
    echo: bool,
    expected: Vec<u8>,
    /// A write whose answer was lost in a cut: it may or may not have been applied.
    uncertain: Option<Vec<u8>>,
}

async fn run_library_client(
    number: usize,
    proxy: Proxy,
    shared: Arc<Shared>,
    seed: u64,
    wait: Duration,
) -> Outcome {
    let mut rng = Rng::new(seed);
    let stats = &shared.stats;
    let options = ClientOptions {
        client_name: format!("soak-lib-{number}"),
        reconnect: Some(wait * 2),
        ..ClientOptions::default()
    };
    let client = ExecServerClient::connect(
        ExecServerTransport::WebSocketUrl(proxy.url.clone()),
        options,
    )
    .await
    .map_err(|err| format!("library client {number}: connect: {err}"))?;
    let lib = |context: &'static str| {
        move |err: ClientError| format!("library client {number}: {context}: {err}")
    };
    let mut processes: Vec<LibProcess> = Vec::new();
    let mut started = 0u64;
    let finish = |mut process: LibProcess| async move {
        let mut output = Vec::new();
        let closed = tokio::time::timeout(wait * 3, async {
            while let Some(event) = process.handle.next_event().await {
                match event {
                    ProcessEvent::Output { data, .. } => output.extend(data),
                    ProcessEvent::Exited { .. } => {}
                    ProcessEvent::Closed { .. } => return Ok(()),
                    ProcessEvent::Lost { from_seq, to_seq } => {
                        return Err(format!("lost seqs {from_seq}..{to_seq}"))
                    }
                    ProcessEvent::Failed { reason } => return Err(format!("failed: {reason}")),
                }
            }
            Err("event stream ended without Closed".to_owned())
        })
        .await
        .map_err(|_| "not closed in time".to_owned())
        .and_then(|inner| inner);
        closed.map_err(|err| format!("library client {number} {}: {err}", process.handle.id()))?;
        let with_uncertain = process.uncertain.as_ref().map(|extra| {
            let mut all = process.expected.clone();
            all.extend(extra);
            all
        });
        if output != process.expected && Some(&output) != with_uncertain.as_ref() {
            return Err(format!(
                "library client {number} {}: got {} bytes, expected {}",
                process.handle.id(),
                output.len(),
                process.expected.len()
            ));
        }
        Ok(output.len() as u64)
    };
    let check = |result: Outcome<u64>| -> Outcome {
        let bytes = result?;
        stats.processes_checked.fetch_add(1, Ordering::Relaxed);
        stats.bytes_checked.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    };
    while !shared.stop.load(Ordering::Relaxed) {
        let roll = rng.below(100);
        match roll {
            0..=19 if processes.len() < MAX_LIVE => {
                let echo = rng.chance(50);
                let (argv, expected) = if echo {
                    (vec!["cat".to_owned()], Vec::new())
                } else {
                    let count = 1 + rng.below(2000);
                    let pause = rng.below(4);
                    let script = format!("seq 1 {count}; sleep 0.{pause}; seq 1 {count}");
                    let once: String = (1..=count).map(|i| format!("{i}\n")).collect();
                    (
                        vec!["sh".into(), "-c".into(), script],
                        once.repeat(2).into_bytes(),
                    )
                };
                started += 1;
                let mut request = StartRequest::new(argv);
                request.process_id = Some(format!("lib-{started}"));
                request.pipe_stdin = echo;
                request.env.insert(MARK_VAR.into(), shared.mark.clone());
                let handle = match client.start(request).await {
                    Ok(handle) => handle,
                    // Started or not: a `cat` left over dies with the session.
                    Err(ClientError::ResponseLost { .. }) => {
                        stats.count(&stats.responses_lost);
                        continue;
                    }
                    Err(err) => return Err(lib("start")(err)),
                };
                stats.count(&stats.starts);
                processes.push(LibProcess {
                    handle,
                    echo,
                    expected,
                    uncertain: None,
                });
            }
            20..=54 => {
                let Some(process) = processes
                    .iter_mut()
                    .find(|p| p.echo && p.uncertain.is_none())
                else {
                    continue;
                };
                let len = 1 + rng.below(4096) as usize;
                let data = rng.bytes(len);
                match client.write(process.handle.id(), &data).await {
                    Ok(WriteStatus::Accepted) => process.expected.extend(data),
                    Ok(status) => {
                        return Err(format!("library client {number}: write status {status:?}"))
                    }
                    Err(ClientError::ResponseLost { .. }) => {
                        stats.count(&stats.responses_lost);
                        process.uncertain = Some(data);
                    }
                    Err(err) => return Err(lib("write")(err)),
                }
                stats.count(&stats.writes);
            }
            55..=64 => {
                proxy.cut.send_modify(|cuts| *cuts += 1);
                stats.count(&stats.proxy_cuts);
            }
            65..=74 if !processes.is_empty() => {
                let index = rng.below(processes.len() as u64) as usize;
                let process = processes.swap_remove(index);
                if process.echo {
                    match client.close_stdin(process.handle.id(), b"").await {
                        Ok(_) => {}
                        // Lost in a cut: the close may or may not have happened; once more.
                        Err(ClientError::ResponseLost { .. }) => {
                            stats.count(&stats.responses_lost);
                            client
                                .close_stdin(process.handle.id(), b"")
                                .await
                                .map_err(lib("close stdin"))?;
                        }
                        Err(err) => return Err(lib("close stdin")(err)),
                    }
                }
                check(finish(process).await)?;
            }
            75..=79 => match client.environment_info().await {
                Ok(_) => stats.count(&stats.reads),
                Err(ClientError::ResponseLost { .. }) => stats.count(&stats.responses_lost),
                Err(err) => return Err(lib(Method::EnvironmentInfo.as_str())(err)),
            },
            _ => {
                tokio::time::sleep(Duration::from_millis(rng.below(60))).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.below(30))).await;
    }
    for process in processes.drain(..) {
        if process.echo {
            match client.close_stdin(process.handle.id(), b"").await {
                Ok(_) | Err(ClientError::ResponseLost { .. }) => {}
                Err(err) => return Err(lib("close stdin")(err)),
            }
            // A lost close is retried: closing twice is harmless.
            let _ = client.close_stdin(process.handle.id(), b"").await;
        }
        check(finish(process).await)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// /proc: RSS, marked processes, zombie children.

fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn marked_processes(mark: &str) -> Vec<(i32, String)> {
    let needle = format!("{MARK_VAR}={mark}");
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ
            .split(|&b| b == 0)
            .any(|var| var == needle.as_bytes())
        {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push((pid, cmdline.trim().to_owned()));
        }
    }
    found
}

/// Children of `parent` in state Z.
fn zombie_children(parent: i32) -> Vec<i32> {
    let mut zombies = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return zombies;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …: comm may contain spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let ppid: Option<i32> = fields.next().and_then(|p| p.parse().ok());
        if ppid == Some(parent) && state == Some("Z") {
            zombies.push(pid);
        }
    }
    zombies
}

/// Waits until no marked process is left, up to `within`; returns what is left.
async fn wait_for_no_marked(mark: &str, within: Duration) -> Vec<(i32, String)> {
    let deadline = Instant::now() + within;
    loop {
        let left = marked_processes(mark);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------

/// Runs every client for `seconds`, then lets them wind down.
async fn phase(
    name: &str,
    seconds: u64,
    args: &Args,
    server: &ExecServer,
    proxies: &mut Vec<Proxy>,
    shared: &Arc<Shared>,
    seed: u64,
) {
    eprintln!("soak: {name}: {} clients for {seconds}s", args.clients);
    shared.stop.store(false, Ordering::Relaxed);
    let mut tasks = tokio::task::JoinSet::new();
    for number in 0..args.clients {
        let shared = Arc::clone(shared);
        let client_seed = seed ^ ((number as u64 + 1) << 32);
        if number < args.library_clients {
            // A fresh proxy per phase (the previous one's listener is gone with its task).
            let proxy = proxies.pop().expect("a proxy per library client");
            let wait = server.default_wait();
            tasks.spawn(async move {
                run_library_client(number, proxy, shared, client_seed, wait).await
            });
        } else {
            let server = server.clone();
            tasks.spawn(async move { run_raw_client(number, server, shared, client_seed).await });
        }
    }
    let started = Instant::now();
    let mut last_report = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if last_report.elapsed() >= Duration::from_secs(30) {
            last_report = Instant::now();
            let stats = &shared.stats;
            eprintln!(
                "soak: {name}: {:>4}s  ops {}  starts {}  bytes checked {}  server RSS {} KiB",
                started.elapsed().as_secs(),
                Stats::get(&stats.operations),
                Stats::get(&stats.starts),
                Stats::get(&stats.bytes_checked),
                server.pid().and_then(rss_kib).unwrap_or(0)
            );
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => shared.stats.fail(failure),
            Err(err) => shared.stats.fail(format!("client task panicked: {err}")),
        }
    }
}

async fn make_proxies(count: usize) -> (Vec<tokio::net::TcpListener>, Vec<String>) {
    let mut listeners = Vec::new();
    let mut hosts = Vec::new();
    for _ in 0..count {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy listener");
        hosts.push(listener.local_addr().expect("address").to_string());
        listeners.push(listener);
    }
    (listeners, hosts)
}

async fn soak(args: Args) -> bool {
    let mark = format!("{:016x}", Rng::new(args.seed).next());
    // Two phases, each with its own proxies for the library clients.
    let (listeners, hosts) = make_proxies(args.library_clients * 2).await;
    let ttl = format!("{}s", args.ttl);
    let mut server_args = vec!["--session-ttl".to_owned(), ttl];
    for host in &hosts {
        server_args.push("--allow-host".into());
        server_args.push(host.clone());
    }
    let server = ExecServer::builder()
        .binary(&args.binary)
        .args(server_args)
        .time_scale(4.0)
        .start()
        .await
        .expect("start the server");
    let pid = server.pid().expect("a child server");
    let upstream = server
        .url()
        .expect("url")
        .trim_start_matches("ws://")
        .to_owned();
    let mut proxies: Vec<Proxy> = listeners
        .into_iter()
        .map(|listener| proxy_to(listener, upstream.clone()))
        .collect();
    let shared = Arc::new(Shared {
        stats: Stats::default(),
        mark: mark.clone(),
        stop: AtomicBool::new(false),
    });
    let quiet = Duration::from_secs(args.ttl * 5 / 2 + 10);
    let rss_start = rss_kib(pid).unwrap_or(0);
    eprintln!(
        "soak: server pid {pid}, RSS at start {rss_start} KiB, marker {MARK_VAR}={mark}, seed {}",
        args.seed
    );

    let warmup = (args.seconds / 5).clamp(1, 60);
    let main = args.seconds.saturating_sub(warmup).max(1);
    phase(
        "warm-up",
        warmup,
        &args,
        &server,
        &mut proxies,
        &shared,
        args.seed,
    )
    .await;
    let left = wait_for_no_marked(&mark, quiet).await;
    let baseline = rss_kib(pid).unwrap_or(0);
    eprintln!(
        "soak: warm-up done; {} marked processes left; RSS baseline {baseline} KiB",
        left.len()
    );
    let warmup_failures = shared.stats.failures.lock().unwrap().len();

    let load_started = Instant::now();
    phase(
        "main",
        main,
        &args,
        &server,
        &mut proxies,
        &shared,
        args.seed.rotate_left(17),
    )
    .await;
    let load_seconds = load_started.elapsed().as_secs();
    // Abandoned and finished sessions expire after the TTL; their trees must die.
    let orphans_running = wait_for_no_marked(&mark, quiet).await;
    let zombies = zombie_children(pid);
    let rss_after = rss_kib(pid).unwrap_or(0);
    let hwm = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_default();
    let alive = exec_server_harness::process_alive(pid);
    let stderr = server.stderr();
    // Stop the server (SIGTERM, then SIGKILL of its group) and look again.
    drop(server);
    let orphans_after_stop = wait_for_no_marked(&mark, Duration::from_secs(5)).await;

    let stats = &shared.stats;
    let failures = stats.failures.lock().unwrap().clone();
    let growth = if baseline > 0 {
        rss_after as f64 / baseline as f64 - 1.0
    } else {
        f64::INFINITY
    };
    println!("==== soak report ====");
    println!(
        "clients                {} ({} library clients through proxies)",
        args.clients, args.library_clients
    );
    println!(
        "load                   {warmup}s warm-up + {load_seconds}s main (TTL {}s)",
        args.ttl
    );
    println!("operations             {}", Stats::get(&stats.operations));
    println!("  process starts       {}", Stats::get(&stats.starts));
    println!("  writes               {}", Stats::get(&stats.writes));
    println!("  reads                {}", Stats::get(&stats.reads));
    println!("  clean disconnects    {}", Stats::get(&stats.disconnects));
    println!("  TCP resets           {}", Stats::get(&stats.resets));
    println!("  proxy cuts           {}", Stats::get(&stats.proxy_cuts));
    println!("  resumes (harness)    {}", Stats::get(&stats.resumes));
    println!(
        "  responses lost       {} (library calls sent into a cut; documented)",
        Stats::get(&stats.responses_lost)
    );
    println!("  terminated trees     {}", Stats::get(&stats.terminated));
    println!(
        "  abandoned sessions   {}",
        Stats::get(&stats.abandoned_sessions)
    );
    println!(
        "processes checked      {}",
        Stats::get(&stats.processes_checked)
    );
    println!(
        "bytes checked          {}",
        Stats::get(&stats.bytes_checked)
    );
    println!(
        "failures               {} ({warmup_failures} in warm-up)",
        failures.len()
    );
    println!("orphans (server up)    {}", orphans_running.len());
    println!("orphans (server down)  {}", orphans_after_stop.len());
    println!("zombie children        {}", zombies.len());
    println!("server alive at end    {alive}");
    println!("RSS KiB                start {rss_start}, baseline {baseline}, after {rss_after} ({:+.1} %), peak {hwm}", growth * 100.0);
    for failure in failures.iter().take(20) {
        println!("FAILURE: {failure}");
    }
    for (pid, cmdline) in orphans_running.iter().chain(&orphans_after_stop).take(20) {
        println!("ORPHAN: {pid} {cmdline}");
    }
    let panicked = stderr.contains("panicked");
    if panicked {
        println!("the server's stderr shows a panic:\n{stderr}");
    }
    let ok = failures.is_empty()
        && orphans_running.is_empty()
        && orphans_after_stop.is_empty()
        && zombies.is_empty()
        && alive
        && !panicked
        && growth <= RSS_TOLERANCE;
    println!(
        "verdict                {}",
        if ok { "PASS" } else { "FAIL" }
    );
    ok
}

fn main() {
    // RUST_LOG=exec_server=debug shows the client library's reconnects.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = parse_args();
    if !std::path::Path::new(&args.binary).exists() {
        usage(&format!(
            "{} does not exist (cargo build --release first)",
            args.binary
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ok = runtime.block_on(soak(args));
    std::process::exit(if ok { 0 } else { 1 });
}
