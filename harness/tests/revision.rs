//! The harness's revision setting: at 2026-08 its typed helpers send `file:` URIs and
//! `writeId`s (checked in the wire trace); at 2026-06 (the default) neither; raw JSON
//! and `call(&params)` are never rewritten.

use exec_server_harness::protocol::{ReadFileParams, Revision};
use exec_server_harness::{
    Connection, Direction, ExecServer, HarnessError, ProcessSpec, Value, exec_server, json,
};

type TestResult = Result<(), HarnessError>;

/// The params of every request of `method` this connection sent.
fn sent(conn: &Connection, method: &str) -> Vec<Value> {
    conn.trace()
        .into_iter()
        .filter(|entry| entry.direction == Direction::Sent)
        .filter_map(|entry| serde_json::from_str::<Value>(&entry.text).ok())
        .filter(|message| message["method"] == method)
        .map(|message| message["params"].clone())
        .collect()
}

/// Works against today's server: whether it accepts URIs yet does not matter, only
/// what the harness sent.
#[tokio::test]
async fn the_2026_08_setting_sends_uris_and_write_ids() -> TestResult {
    let server = ExecServer::builder()
        .revision(Revision::R2026_08)
        .start()
        .await?;
    assert_eq!(server.revision(), Revision::R2026_08);
    let conn = server.connect().await?;
    assert_eq!(conn.revision(), Revision::R2026_08);
    let session = conn.initialize("revision").await?;

    // The typed fs helpers and ProcessSpec's cwd: URIs (outcomes do not matter here).
    let _ = session.write_file("/tmp/a b/f", b"x").await;
    let _ = session.read_file("/tmp/a b/f").await;
    let _ = session.canonicalize("/tmp/a b").await;
    let _ = session
        .start_with(ProcessSpec::new(["true"]).id("in-uri").cwd("/tmp/a b"))
        .await;
    assert_eq!(
        sent(&conn, "fs/writeFile")[0]["path"],
        "file:///tmp/a%20b/f"
    );
    assert_eq!(sent(&conn, "fs/readFile")[0]["path"], "file:///tmp/a%20b/f");
    assert_eq!(
        sent(&conn, "fs/canonicalize")[0]["path"],
        "file:///tmp/a%20b"
    );
    assert_eq!(sent(&conn, "process/start")[0]["cwd"], "file:///tmp/a%20b");

    // Writes: a fresh writeId each, explicit ones as given.
    conn.set_revision(Revision::R2026_06);
    let pid = session
        .start_with(ProcessSpec::new(["cat"]).pipe_stdin(true).cwd("/"))
        .await?;
    assert_eq!(
        sent(&conn, "process/start")[1]["cwd"],
        "/",
        "2026-06: plain"
    );
    session.write(&pid, b"a").await?;
    conn.set_revision(Revision::R2026_08);
    session.write(&pid, b"b").await?;
    session.write_status(&pid, b"c").await?;
    session.write_with_id(&pid, b"d", "my-id").await?;
    session.close_stdin(&pid).await?;
    let writes = sent(&conn, "process/write");
    let ids: Vec<Option<&str>> = writes.iter().map(|w| w["writeId"].as_str()).collect();
    assert_eq!(ids[0], None, "2026-06 writes carry no writeId");
    assert_eq!(ids[3], Some("my-id"));
    let generated: Vec<&str> = [ids[1], ids[2], ids[4]].into_iter().flatten().collect();
    assert_eq!(generated.len(), 3, "{ids:?}");
    assert!(generated[0] != generated[1] && generated[1] != generated[2]);
    assert!(generated.iter().all(|id| id.len() <= 256));
    assert_eq!(session.read_to_end(&pid).await?.stdout, b"abcd");

    // Raw JSON and typed `call` go out as given.
    let _ = conn
        .request("fs/readFile", json!({"path": "/tmp/raw"}))
        .await?;
    let _ = conn
        .call(&ReadFileParams {
            path: "/tmp/typed".into(),
            follow_symlinks: None,
            sandbox: None,
        })
        .await;
    let reads = sent(&conn, "fs/readFile");
    assert_eq!(reads[1]["path"], "/tmp/raw");
    assert_eq!(reads[2]["path"], "/tmp/typed");
    Ok(())
}

#[tokio::test]
async fn the_default_setting_sends_plain_paths_and_no_write_ids() -> TestResult {
    let server = exec_server().await?;
    assert_eq!(server.revision(), Revision::R2026_06);
    let conn = server.connect().await?;
    let session = conn.initialize("revision").await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("f").to_string_lossy().into_owned();
    session.write_file(&file, b"data").await?;
    assert_eq!(session.read_file(&file).await?, b"data");
    assert_eq!(sent(&conn, "fs/readFile")[0]["path"], file.as_str());
    let pid = session
        .start_with(ProcessSpec::new(["cat"]).pipe_stdin(true))
        .await?;
    session.write(&pid, b"x").await?;
    assert!(sent(&conn, "process/write")[0].get("writeId").is_none());
    Ok(())
}

/// Needs the server merge (URIs understood, `writeId` de-duplicated): the whole
/// 2026-08 round trip through the harness's helpers.
#[tokio::test]
async fn the_2026_08_setting_round_trips_against_the_server() -> TestResult {
    let server = ExecServer::builder()
        .revision(Revision::R2026_08)
        .start()
        .await?;
    let conn = server.connect().await?;
    let session = conn.initialize("revision").await?;
    let base = tempfile::tempdir()?;
    let dir = std::fs::canonicalize(base.path())?.join("a b");
    std::fs::create_dir(&dir)?;
    let dir = dir.to_string_lossy().into_owned();
    let file = format!("{dir}/f");
    session.write_file(&file, b"data").await?;
    assert_eq!(session.read_file(&file).await?, b"data");
    let canonical = session.canonicalize(&format!("{dir}/./f")).await?;
    assert_eq!(canonical, conn.wire_path(&file).as_str(), "a URI back");
    let pid = session
        .start_with(
            ProcessSpec::new(["sh", "-c", "pwd; exec cat"])
                .pipe_stdin(true)
                .cwd(&dir),
        )
        .await?;
    assert_eq!(
        session.write_with_id(&pid, b"once", "w1").await?,
        exec_server_harness::protocol::WriteStatus::Accepted
    );
    assert_eq!(
        session.write_with_id(&pid, b"once", "w1").await?,
        exec_server_harness::protocol::WriteStatus::Accepted,
        "a repeat gets the first write's status"
    );
    session.close_stdin(&pid).await?;
    let out = session.read_to_end(&pid).await?;
    assert_eq!(out.stdout_text(), format!("{dir}\nonce"));
    Ok(())
}
