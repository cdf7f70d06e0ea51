//! Model-based test of detach/resume (proptest): random sequences of start, write,
//! read, disconnect (clean or TCP reset), resume and wait against the real server. The
//! model knows exactly what every process prints; the client only pulls output with
//! `process/read` from the last seq it saw. Whenever it resumes within the TTL, the
//! bytes it read must equal what each process printed: nothing lost, nothing twice.

mod common;

use std::time::Duration;

use common::*;
use exec_server_harness::protocol::WriteStatus;
use exec_server_harness::{Connection, HarnessError, Session, Transport};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// `cat`: echoes what the client writes.
    StartEcho,
    /// Prints `count` numbered lines on its own, a few ms apart, detached or not.
    StartTicker {
        count: u16,
    },
    Write {
        process: usize,
        data: Vec<u8>,
    },
    Read {
        process: usize,
    },
    Disconnect {
        reset: bool,
    },
    Resume,
    Wait {
        ms: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::StartEcho),
        1 => (1u16..200).prop_map(|count| Op::StartTicker { count }),
        4 => (0usize..8, proptest::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(process, data)| Op::Write { process, data }),
        3 => (0usize..8).prop_map(|process| Op::Read { process }),
        2 => any::<bool>().prop_map(|reset| Op::Disconnect { reset }),
        1 => Just(Op::Resume),
        1 => (0u8..30).prop_map(|ms| Op::Wait { ms }),
    ]
}

struct ModelProcess {
    id: String,
    echo: bool,
    expected: Vec<u8>,
    read: Vec<u8>,
    after_seq: u64,
}

struct Client {
    conn: Connection,
    session: Session,
    attached: bool,
}

impl Client {
    async fn ensure_attached(&mut self) -> Result<(), HarnessError> {
        if !self.attached {
            self.conn.reconnect().await?;
            let id = self.session.id().to_owned();
            self.session = resume_when_detached(&self.conn, &id).await?;
            self.attached = true;
        }
        Ok(())
    }
}

/// Pulls whatever is available after the last seen seq; true once the process is closed
/// and nothing more is left.
async fn pull(
    session: &Session,
    process: &mut ModelProcess,
    wait_ms: u64,
) -> Result<bool, HarnessError> {
    let read = session
        .read(&process.id, process.after_seq, wait_ms)
        .await?;
    let first_retained = read.first_retained_seq.unwrap_or(1);
    assert!(
        process.after_seq + 1 >= first_retained,
        "{}: retention dropped unread output",
        process.id
    );
    let chunks = read.chunks;
    for chunk in &chunks {
        let seq = chunk.seq;
        assert!(
            seq > process.after_seq,
            "{}: seq {seq} returned twice",
            process.id
        );
        process.read.extend_from_slice(&chunk.chunk);
    }
    process.after_seq = read.next_seq - 1;
    Ok(chunks.is_empty() && read.closed)
}

async fn run(ops: Vec<Op>) -> Result<(), HarnessError> {
    let server = start_server(Transport::WebSocket, &["--session-ttl", "30s"]).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    let mut client = Client {
        conn,
        session,
        attached: true,
    };
    let mut processes: Vec<ModelProcess> = Vec::new();
    for op in ops {
        match op {
            Op::StartEcho | Op::StartTicker { .. } => {
                client.ensure_attached().await?;
                let id = format!("p{}", processes.len());
                let (argv, expected, echo) = match op {
                    Op::StartTicker { count } => {
                        let script = format!(
                            "for i in $(seq 1 {count}); do echo tick-$i; sleep 0.002; done"
                        );
                        let expected: String = (1..=count).map(|i| format!("tick-{i}\n")).collect();
                        (
                            vec!["sh".to_owned(), "-c".to_owned(), script],
                            expected.into_bytes(),
                            false,
                        )
                    }
                    _ => (vec!["cat".to_owned()], Vec::new(), true),
                };
                client
                    .session
                    .start_with(spec(&id, argv).pipe_stdin(echo))
                    .await?;
                processes.push(ModelProcess {
                    id,
                    echo,
                    expected,
                    read: Vec::new(),
                    after_seq: 0,
                });
            }
            Op::Write { process, data } => {
                let echoes: Vec<usize> = (0..processes.len())
                    .filter(|&i| processes[i].echo)
                    .collect();
                if echoes.is_empty() {
                    continue;
                }
                client.ensure_attached().await?;
                let target = &mut processes[echoes[process % echoes.len()]];
                assert_eq!(
                    client.session.write_status(&target.id, &data).await?,
                    WriteStatus::Accepted
                );
                target.expected.extend(data);
            }
            Op::Read { process } => {
                if processes.is_empty() {
                    continue;
                }
                client.ensure_attached().await?;
                let index = process % processes.len();
                pull(&client.session, &mut processes[index], 0).await?;
            }
            Op::Disconnect { reset } => {
                if client.attached {
                    if reset {
                        client.conn.reset().await?;
                    } else {
                        client.conn.disconnect().await?;
                    }
                    client.attached = false;
                }
            }
            Op::Resume => client.ensure_attached().await?,
            Op::Wait { ms } => tokio::time::sleep(Duration::from_millis(ms.into())).await,
        }
    }
    client.ensure_attached().await?;
    for process in &processes {
        if process.echo {
            client.session.close_stdin(&process.id).await?;
        }
    }
    let deadline = tokio::time::Instant::now() + client.conn.default_wait();
    for process in &mut processes {
        while !pull(&client.session, process, 200).await? {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not close",
                process.id
            );
        }
        assert!(
            process.read == process.expected,
            "{}: read {} bytes, expected {}",
            process.id,
            process.read.len(),
            process.expected.len()
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn resumed_sessions_lose_and_repeat_no_output(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(run(ops)).map_err(|err| TestCaseError::fail(err.to_string()))?;
    }
}
