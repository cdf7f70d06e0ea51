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
use std::time::Duration;

use common::events::{all_events, stdout_of};
use common::proxy::{reconnecting_client, server_behind_proxy};
use common::*;
use exec_client::{
    ClientError, ClientOptions, EntryKind, ExecServerClient, ExecServerTransport, PathForm,
    ProcessEvent, StartRequest, WalkOptions, WriteStatus,
};

const WAIT: Duration = Duration::from_secs(10);

/// The stdout among `events` as text.
fn stdout_text(events: &[ProcessEvent]) -> String {
    String::from_utf8_lossy(&stdout_of(events)).into_owned()
}

/// Needs the server merge: `capabilities.revisions` with "2026-08" and `writeId`
/// de-duplication. A write is answered only once the child's stdin backlog is below
/// the server's high-water mark (1 MiB), so a big write to a child that does not read
/// yet is cut off after it reached the server and before its answer; the client
/// resumes and re-sends it, and the child reads it once.
#[tokio::test]
async fn a_write_whose_answer_was_lost_is_re_sent_and_written_once() -> TestResult {
    let (_server, proxy) = server_behind_proxy(&["--session-ttl", "30s"]).await?;
    let client = reconnecting_client(&proxy, WAIT).await;
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
    let before = proxy.bytes_to_server();
    let write = tokio::spawn({
        let client = client.clone();
        let id = process.id().to_owned();
        let payload = payload.clone();
        async move { client.write(&id, &payload).await }
    });
    // The write's frame (base64: 4/3 of the payload) has gone through the proxy.
    let frame_bytes = payload.len() as u64 * 4 / 3;
    tokio::time::timeout(WAIT, async {
        while proxy.bytes_to_server() < before + frame_bytes {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the write reaches the server");
    // Let the server decode and queue it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!write.is_finished(), "the answer waits for the child");
    proxy.cut();
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
        stdout_text(&events).trim(),
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
        stdout_text(&all_events(&mut process).await),
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
