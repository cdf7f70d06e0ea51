//! The client library at revision 2026-08 against the real server (docs/protocol.md §0,
//! §8): a write whose answer was lost is re-sent with its `writeId` and written once;
//! `file:` URI mode against a server that refuses plain paths; the new methods.
//!
//! These need the server side of 2026-08 (`capabilities.revisions` with "2026-08",
//! `writeId` de-duplication, `--require-file-uris`, `fs/open`/`readBlock`/`close`,
//! `fs/walk`); until it is merged they fail. The client side alone is tested against a
//! scripted fake server in `client/tests/revision_2026_08.rs`.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use exec_client::{
    ClientError, ClientOptions, EntryKind, ExecServerClient, ExecServerTransport, PathForm,
    ProcessEvent, ProcessHandle, StartRequest, Stream, WalkOptions, WriteStatus,
};
use exec_server_harness::Transport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

/// A TCP proxy that counts the bytes it forwards to the server and whose connections
/// the test can cut.
struct Proxy {
    url: String,
    to_server: Arc<AtomicU64>,
    cut: tokio::sync::watch::Sender<u64>,
}

async fn counting_proxy(
    listener: tokio::net::TcpListener,
    upstream: String,
) -> std::io::Result<Proxy> {
    let url = format!("ws://{}", listener.local_addr()?);
    let to_server = Arc::new(AtomicU64::new(0));
    let (cut, cuts) = tokio::sync::watch::channel(0u64);
    let counter = Arc::clone(&to_server);
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let mut cuts = cuts.clone();
            cuts.borrow_and_update();
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut from_client, mut to_client) = inbound.into_split();
                let (mut from_server, mut to_upstream) = outbound.into_split();
                let up = async {
                    let mut buffer = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = from_client.read(&mut buffer).await {
                        if to_upstream.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                        counter.fetch_add(n as u64, Ordering::SeqCst);
                    }
                };
                let down = tokio::io::copy(&mut from_server, &mut to_client);
                tokio::select! {
                    _ = async { tokio::join!(up, down) } => {}
                    _ = cuts.changed() => {}
                }
            });
        }
    });
    Ok(Proxy {
        url,
        to_server,
        cut,
    })
}

/// Every event of `process` until `Closed` or `Failed`, within `WAIT`.
async fn all_events(process: &mut ProcessHandle) -> Vec<ProcessEvent> {
    let mut events = Vec::new();
    let collect = async {
        while let Some(event) = process.next_event().await {
            let last = matches!(
                event,
                ProcessEvent::Closed { .. } | ProcessEvent::Failed { .. }
            );
            events.push(event);
            if last {
                break;
            }
        }
    };
    tokio::time::timeout(WAIT, collect)
        .await
        .expect("the process's events end within the deadline");
    events
}

fn stdout_of(events: &[ProcessEvent]) -> String {
    let bytes: Vec<u8> = events
        .iter()
        .filter_map(|event| match event {
            ProcessEvent::Output {
                stream: Stream::Stdout,
                data,
                ..
            } => Some(data.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Needs the server merge: `capabilities.revisions` with "2026-08" and `writeId`
/// de-duplication. A write is answered only once the child's stdin backlog is below
/// the server's high-water mark (1 MiB), so a big write to a child that does not read
/// yet is cut off after it reached the server and before its answer; the client
/// resumes and re-sends it, and the child reads it once.
#[tokio::test]
async fn a_write_whose_answer_was_lost_is_re_sent_and_written_once() -> TestResult {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let proxy_host = listener.local_addr()?.to_string();
    let server = start_server(
        Transport::WebSocket,
        &["--session-ttl", "30s", "--allow-host", &proxy_host],
    )
    .await?;
    let upstream = server
        .url()
        .expect("url")
        .trim_start_matches("ws://")
        .to_owned();
    let proxy = counting_proxy(listener, upstream).await?;
    let options = ClientOptions {
        reconnect: Some(WAIT),
        ..ClientOptions::default()
    };
    let client = ExecServerClient::connect(
        ExecServerTransport::WebSocketUrl(proxy.url.clone()),
        options,
    )
    .await
    .expect("connect");
    assert!(
        client.server_revisions().iter().any(|r| r == "2026-08"),
        "the server must advertise 2026-08: {:?}",
        client.server_revisions()
    );
    let dir = tempfile::tempdir()?;
    let go = dir.path().join("go");
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.02; done; exec wc -c",
        go.display()
    );
    let mut process = client
        .start(StartRequest {
            pipe_stdin: true,
            ..StartRequest::new(["sh", "-c", &script])
        })
        .await
        .expect("start");
    // The server answers a write once the child's stdin backlog is below 1 MiB: with
    // 4 MiB and a child that does not read, the answer waits.
    let payload = vec![b'x'; 4 * 1024 * 1024];
    let before = proxy.to_server.load(Ordering::SeqCst);
    let write = tokio::spawn({
        let client = client.clone();
        let id = process.id().to_owned();
        let payload = payload.clone();
        async move { client.write(&id, &payload).await }
    });
    // The write's frame (base64: 4/3 of the payload) has gone through the proxy.
    let frame_bytes = payload.len() as u64 * 4 / 3;
    tokio::time::timeout(WAIT, async {
        while proxy.to_server.load(Ordering::SeqCst) < before + frame_bytes {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the write reaches the server");
    // Let the server decode and queue it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!write.is_finished(), "the answer waits for the child");
    proxy.cut.send_modify(|cuts| *cuts += 1);
    std::fs::write(&go, b"")?;
    let status = tokio::time::timeout(WAIT, write)
        .await
        .expect("the write ends in time")
        .expect("task");
    assert_eq!(status.expect("re-sent and answered"), WriteStatus::Accepted);
    assert_eq!(
        client.close_stdin(process.id(), b"").await.expect("close"),
        WriteStatus::Accepted
    );
    let events = all_events(&mut process).await;
    assert_eq!(
        stdout_of(&events).trim(),
        payload.len().to_string(),
        "the child read the payload exactly once: {:?}",
        events
            .iter()
            .filter(|e| !matches!(e, ProcessEvent::Output { .. }))
            .collect::<Vec<_>>()
    );
    Ok(())
}

fn stdio_server(extra: &[&str]) -> ExecServerTransport {
    let mut args = vec!["--listen".to_owned(), "stdio".to_owned()];
    args.extend(extra.iter().map(|arg| arg.to_string()));
    ExecServerTransport::StdioCommand {
        program: env!("CARGO_BIN_EXE_exec-server").into(),
        args,
        env: BTreeMap::new(),
        cwd: None,
    }
}

async fn client_in(path_form: PathForm, extra: &[&str]) -> ExecServerClient {
    let options = ClientOptions {
        path_form,
        ..ClientOptions::default()
    };
    ExecServerClient::connect(stdio_server(extra), options)
        .await
        .expect("connect")
}

/// Needs the server merge: the hidden `--require-file-uris` flag (the server refuses
/// plain paths with -32602, as upstream does at 2026-08).
#[tokio::test]
async fn a_file_uri_client_works_against_a_server_that_requires_file_uris() -> TestResult {
    let base = tempfile::tempdir()?;
    let dir = std::fs::canonicalize(base.path())?.join("a b%c");
    std::fs::create_dir(&dir)?;
    let dir = dir.to_string_lossy().into_owned();

    let plain = client_in(PathForm::Plain, &["--require-file-uris"]).await;
    let refused = plain.read_file(&format!("{dir}/f")).await;
    assert!(
        matches!(refused, Err(ClientError::Server { code: -32602, .. })),
        "the server refuses plain paths: {refused:?}"
    );

    let client = client_in(PathForm::FileUri, &["--require-file-uris"]).await;
    let mut start = StartRequest::new(["pwd"]);
    start.cwd = dir.clone();
    let mut process = client.start(start).await.expect("start in a cwd URI");
    assert_eq!(
        stdout_of(&all_events(&mut process).await),
        format!("{dir}\n")
    );

    let file = format!("{dir}/f ü");
    client.write_file(&file, b"data").await.expect("write file");
    assert_eq!(client.read_file(&file).await.expect("read file"), b"data");
    assert_eq!(
        std::fs::read(&file)?,
        b"data",
        "the URI named the plain path"
    );

    let canonical = client
        .canonicalize(&format!("{dir}/./sub/../f ü"))
        .await
        .expect("canonicalize");
    assert_eq!(canonical, file, "a plain path back, whatever was sent");
    let entries = client.read_directory(&dir).await.expect("list");
    assert_eq!(entries.len(), 1);
    assert!(client.get_metadata(&file).await.expect("metadata").is_file);
    Ok(())
}

/// `environment/status` is already served; works without the merge.
#[tokio::test]
async fn environment_status_is_ready() {
    for form in [PathForm::Plain, PathForm::FileUri] {
        let client = client_in(form, &[]).await;
        let status = client.environment_status().await.expect("status");
        assert_eq!(status.status, "ready");
    }
}

/// Needs the other server merge (`fs/open`, `fs/readBlock`, `fs/close`, `fs/walk`).
#[tokio::test]
async fn streamed_reads_and_walks_in_both_path_forms() -> TestResult {
    let base = tempfile::tempdir()?;
    let dir = std::fs::canonicalize(base.path())?;
    std::fs::create_dir(dir.join("sub dir"))?;
    std::fs::write(dir.join("sub dir").join("big"), vec![7u8; 3000])?;
    std::fs::write(dir.join("top"), b"t")?;
    let dir = dir.to_string_lossy().into_owned();
    for form in [PathForm::Plain, PathForm::FileUri] {
        let client = client_in(form, &[]).await;
        let big = format!("{dir}/sub dir/big");
        assert_eq!(client.fs_open("h", &big).await.expect("open"), "h");
        let mut data = Vec::new();
        loop {
            let block = client
                .fs_read_block("h", data.len() as u64, 1024)
                .await
                .expect("read block");
            let eof = block.eof;
            data.extend(block.chunk.into_inner());
            if eof {
                break;
            }
        }
        assert_eq!(data, vec![7u8; 3000], "{form:?}");
        client.fs_close("h").await.expect("close");
        let walk = client
            .fs_walk(
                &dir,
                WalkOptions {
                    max_depth: 4,
                    max_directories: 10,
                    max_entries: 10,
                    follow_directory_symlinks: false,
                    prune_hidden_directories: None,
                },
            )
            .await
            .expect("walk");
        let entries: Vec<(String, EntryKind)> = walk
            .entries
            .iter()
            .map(|entry| (entry.path.to_string(), entry.kind))
            .collect();
        assert_eq!(
            entries,
            [
                (format!("{dir}/sub dir"), EntryKind::Directory),
                (format!("{dir}/top"), EntryKind::File),
                (big.clone(), EntryKind::File),
            ],
            "{form:?}: plain paths back"
        );
        assert!(!walk.truncated);
    }
    Ok(())
}
