//! Revision 2026-08 on the client side, against a scripted fake websocket server (no
//! dependency on the real server): a `process/write` whose answer was lost is re-sent
//! with the same `writeId` only to a server that advertises 2026-08 (on the lost
//! connection and on the resumed one), and is reported as `ResponseLost` otherwise;
//! `file:` URI mode sends URIs and hands plain paths back; the new methods' wire shape.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use exec_client::{
    ClientError, ClientOptions, EntryKind, ExecServerClient, ExecServerTransport, FsOptions,
    Method, PathForm, WalkOptions, WriteStatus,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// What the fake does.
#[derive(Clone)]
struct Script {
    /// `capabilities.revisions` per connection (the last one repeats); `None` sends no
    /// `capabilities` at all.
    revisions: Vec<Option<Vec<&'static str>>>,
    /// Drop the first connection, unanswered, when its first `process/write` arrives.
    cut_at_first_write: bool,
}

/// A request the fake received: on which connection (0, 1, …), its method and params.
#[derive(Debug, Clone)]
struct Seen {
    connection: usize,
    method: String,
    params: Value,
}

struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    fn seen(&self, method: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|seen| seen.method == method)
            .cloned()
            .collect()
    }
}

async fn fake(script: Script) -> Fake {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        let mut connection = 0;
        while let Ok((socket, _)) = listener.accept().await {
            let script = script.clone();
            let log = Arc::clone(&log);
            tokio::spawn(serve(socket, connection, script, log));
            connection += 1;
        }
    });
    Fake { url, seen }
}

async fn serve(
    socket: tokio::net::TcpStream,
    connection: usize,
    script: Script,
    log: Arc<Mutex<Vec<Seen>>>,
) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(socket).await else {
        return;
    };
    let revisions = script.revisions[connection.min(script.revisions.len() - 1)].clone();
    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let request: Value = serde_json::from_str(&text).expect("json");
        let method = request["method"].as_str().unwrap_or_default().to_owned();
        let params = request["params"].clone();
        log.lock().unwrap().push(Seen {
            connection,
            method: method.clone(),
            params: params.clone(),
        });
        let Some(id) = request.get("id").cloned() else {
            continue; // `initialized`
        };
        let result = match method.as_str() {
            "initialize" => {
                let mut result = json!({"sessionId": "s"});
                if let Some(revisions) = &revisions {
                    result["capabilities"] = json!({ "revisions": revisions });
                }
                result
            }
            "process/write" if connection == 0 && script.cut_at_first_write => {
                // The write arrived; its answer is lost with the connection.
                return;
            }
            "process/write" => json!({"status": "accepted"}),
            "environment/status" => json!({"status": "ready"}),
            "fs/readFile" => json!({"dataBase64": "aGk="}),
            "fs/canonicalize" => json!({"path": params["path"]}),
            "fs/open" => json!({"handleId": params["handleId"]}),
            "fs/readBlock" => json!({"chunk": "aGk=", "eof": true}),
            "fs/close" => json!({}),
            "fs/walk" => {
                let base = params["path"].as_str().unwrap_or_default();
                json!({
                    "entries": [{"path": format!("{base}/a%20b"), "kind": "file"}],
                    "errors": [{"path": format!("{base}/locked"), "message": "denied"}],
                    "truncated": false,
                })
            }
            "process/start" => json!({"processId": params["processId"]}),
            _ => {
                let error = json!({"id": id, "error": {"code": -32601, "message": "nope"}});
                let _ = ws.send(Message::text(error.to_string())).await;
                continue;
            }
        };
        let answer = json!({"jsonrpc": "2.0", "id": id, "result": result});
        if ws.send(Message::text(answer.to_string())).await.is_err() {
            return;
        }
    }
}

async fn connect(fake: &Fake, path_form: PathForm) -> ExecServerClient {
    let options = ClientOptions {
        reconnect: Some(WAIT),
        path_form,
        ..ClientOptions::default()
    };
    ExecServerClient::connect(ExecServerTransport::WebSocketUrl(fake.url.clone()), options)
        .await
        .expect("connect")
}

fn write_ids(fake: &Fake) -> Vec<(usize, String)> {
    fake.seen("process/write")
        .into_iter()
        .map(|seen| {
            let id = seen.params["writeId"]
                .as_str()
                .expect("a writeId")
                .to_owned();
            (seen.connection, id)
        })
        .collect()
}

/// Writes once to a fake that drops the connection when the write arrives.
async fn write_across_a_cut(
    revisions: Vec<Option<Vec<&'static str>>>,
) -> (Fake, Result<WriteStatus, ClientError>, ExecServerClient) {
    let fake = fake(Script {
        revisions,
        cut_at_first_write: true,
    })
    .await;
    let client = connect(&fake, PathForm::Plain).await;
    let outcome = tokio::time::timeout(WAIT, client.write("p", b"once"))
        .await
        .expect("the write ends in time");
    (fake, outcome, client)
}

#[tokio::test]
async fn a_lost_write_is_re_sent_with_its_write_id_to_a_2026_08_server() {
    let (fake, outcome, client) = write_across_a_cut(vec![Some(vec!["2026-06", "2026-08"])]).await;
    assert_eq!(
        outcome.expect("re-sent and answered"),
        WriteStatus::Accepted
    );
    let ids = write_ids(&fake);
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!((ids[0].0, ids[1].0), (0, 1), "once per connection");
    assert_eq!(ids[0].1, ids[1].1, "the same writeId");
    assert_eq!(client.server_revisions(), ["2026-06", "2026-08"]);
    // The write was re-sent right after the handshake of the resumed connection.
    let resumed: Vec<String> = fake
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|seen| seen.connection == 1)
        .map(|seen| seen.method.clone())
        .collect();
    assert_eq!(resumed[..3], ["initialize", "initialized", "process/write"]);
    let resume = &fake.seen("initialize")[1];
    assert_eq!(resume.params["resumeSessionId"], "s");
}

#[tokio::test]
async fn a_lost_write_is_reported_to_a_server_without_2026_08() {
    for revisions in [None, Some(vec!["2026-06"]), Some(vec![])] {
        let (fake, outcome, client) = write_across_a_cut(vec![revisions.clone()]).await;
        assert!(
            matches!(
                outcome,
                Err(ClientError::ResponseLost {
                    method: Method::ProcessWrite
                })
            ),
            "{revisions:?}: {outcome:?}"
        );
        // The client works after the resume, and the write went out exactly once.
        let status = client.environment_status().await.expect("status");
        assert_eq!(status.status, "ready");
        assert_eq!(write_ids(&fake).len(), 1, "{revisions:?}");
        assert_eq!(fake.seen("initialize").len(), 2, "resumed");
    }
}

#[tokio::test]
async fn a_lost_write_is_reported_when_the_resumed_server_no_longer_advertises_2026_08() {
    let (fake, outcome, client) = write_across_a_cut(vec![
        Some(vec!["2026-06", "2026-08"]),
        Some(vec!["2026-06"]),
    ])
    .await;
    assert!(
        matches!(outcome, Err(ClientError::ResponseLost { .. })),
        "{outcome:?}"
    );
    client.environment_status().await.expect("status");
    assert_eq!(write_ids(&fake).len(), 1);
    assert_eq!(client.server_revisions(), ["2026-06"]);
}

#[tokio::test]
async fn every_write_carries_a_fresh_bounded_write_id() {
    let fake = fake(Script {
        revisions: vec![None],
        cut_at_first_write: false,
    })
    .await;
    let first = connect(&fake, PathForm::Plain).await;
    let second = connect(&fake, PathForm::Plain).await;
    for client in [&first, &second, &first] {
        client.write("p", b"x").await.expect("write");
    }
    first.close_stdin("p", b"").await.expect("close");
    let ids: Vec<String> = write_ids(&fake).into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), 4);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4, "unique across writes and clients: {ids:?}");
    assert!(
        ids.iter().all(|id| !id.is_empty() && id.len() <= 256),
        "{ids:?}"
    );
    // One client's ids share its prefix and count up.
    let prefix = |id: &str| id.rsplit_once('-').map(|(p, _)| p.to_owned());
    assert_eq!(prefix(&ids[0]), prefix(&ids[2]));
    assert_ne!(prefix(&ids[0]), prefix(&ids[1]));
}

#[tokio::test]
async fn file_uri_mode_sends_uris_and_returns_plain_paths() {
    let fake = fake(Script {
        revisions: vec![Some(vec!["2026-08"])],
        cut_at_first_write: false,
    })
    .await;
    let client = connect(&fake, PathForm::FileUri).await;
    let mut start = exec_client::StartRequest::new(["true"]);
    start.cwd = "/tmp/a b".into();
    client.start(start).await.expect("start");
    assert_eq!(client.read_file("/tmp/a b/f").await.expect("read"), b"hi");
    assert_eq!(
        client
            .canonicalize("/tmp/a b/%")
            .await
            .expect("canonicalize"),
        "/tmp/a b/%",
        "the URI the fake echoes comes back as a plain path"
    );
    let walk = client
        .fs_walk(
            "/tmp/w",
            WalkOptions {
                max_depth: 2,
                max_directories: 10,
                max_entries: 10,
                follow_directory_symlinks: false,
                prune_hidden_directories: None,
            },
        )
        .await
        .expect("walk");
    assert_eq!(walk.entries[0].path.as_str(), "/tmp/w/a b");
    assert_eq!(walk.entries[0].kind, EntryKind::File);
    assert_eq!(walk.errors[0].path.as_str(), "/tmp/w/locked");
    client
        .get_metadata_with("/x", &FsOptions::follow_symlinks(false))
        .await
        .expect_err("the fake does not know fs/getMetadata");
    let sent = |method: &str| fake.seen(method)[0].params.clone();
    assert_eq!(sent("process/start")["cwd"], "file:///tmp/a%20b");
    assert_eq!(sent("fs/readFile")["path"], "file:///tmp/a%20b/f");
    assert!(sent("fs/readFile").get("followSymlinks").is_none());
    assert_eq!(sent("fs/canonicalize")["path"], "file:///tmp/a%20b/%25");
    assert_eq!(sent("fs/walk")["path"], "file:///tmp/w");
    assert_eq!(sent("fs/walk")["options"]["maxDepth"], 2);
    assert_eq!(
        sent("fs/getMetadata"),
        json!({"path": "file:///x", "followSymlinks": false})
    );
}

#[tokio::test]
async fn plain_mode_sends_paths_as_given() {
    let fake = fake(Script {
        revisions: vec![None],
        cut_at_first_write: false,
    })
    .await;
    let client = connect(&fake, PathForm::Plain).await;
    client.read_file("/tmp/a b").await.expect("read");
    assert_eq!(client.canonicalize("/x").await.expect("canonicalize"), "/x");
    assert_eq!(
        fake.seen("fs/readFile")[0].params,
        json!({"path": "/tmp/a b"})
    );
}

#[tokio::test]
async fn the_2026_08_methods_send_their_params() {
    let fake = fake(Script {
        revisions: vec![Some(vec!["2026-08"])],
        cut_at_first_write: false,
    })
    .await;
    let client = connect(&fake, PathForm::FileUri).await;
    assert_eq!(
        client.environment_status().await.expect("status").status,
        "ready"
    );
    assert_eq!(client.fs_open("h1", "/tmp/big").await.expect("open"), "h1");
    let block = client.fs_read_block("h1", 4, 2).await.expect("block");
    assert_eq!(
        (block.chunk.into_inner(), block.eof),
        (b"hi".to_vec(), true)
    );
    client.fs_close("h1").await.expect("close");
    let sent = |method: &str| fake.seen(method)[0].params.clone();
    assert_eq!(
        sent("fs/open"),
        json!({"handleId": "h1", "path": "file:///tmp/big"})
    );
    assert_eq!(
        sent("fs/readBlock"),
        json!({"handleId": "h1", "offset": 4, "len": 2})
    );
    assert_eq!(sent("fs/close"), json!({"handleId": "h1"}));
}
