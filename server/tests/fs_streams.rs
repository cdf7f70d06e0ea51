//! `fs/open`, `fs/readBlock`, `fs/close` (docs/protocol.md §0, revision 2026-08) over both
//! transports: reads and their `eof`, every error upstream answers, the per-session cap,
//! handles that outlive a websocket disconnect and die with the session, and a 100 MiB
//! sparse file read end to end with the server's resident memory staying flat.

mod common;

use std::time::Duration;

use common::procfs::{fds_on, resident_bytes};
use common::*;
use exec_server_harness::{Connection, HarnessError, Transport};
use serde_json::{json, Value};

const MIB: u64 = 1024 * 1024;

async fn open(conn: &Connection, handle_id: &str, path: &str) -> Result<Value, HarnessError> {
    conn.request("fs/open", json!({"handleId": handle_id, "path": path}))
        .result()
        .await
}

/// `(chunk, eof)` of one `fs/readBlock`.
async fn read_block(
    conn: &Connection,
    handle_id: &str,
    offset: u64,
    len: u64,
) -> Result<(Vec<u8>, bool), HarnessError> {
    let result = conn
        .request(
            "fs/readBlock",
            json!({"handleId": handle_id, "offset": offset, "len": len}),
        )
        .result()
        .await?;
    Ok((
        unb64(&result["chunk"]),
        result["eof"].as_bool().expect("eof"),
    ))
}

async fn error(
    conn: &Connection,
    method: &str,
    params: Value,
) -> Result<(i64, String), HarnessError> {
    let error = failure(conn, method, params).await?;
    Ok((error.code, error.message))
}

#[tokio::test]
async fn blocks_read_back_exactly_with_eof_at_the_end() -> TestResult {
    for transport in BOTH {
        let conn = ready(transport, &[]).await?;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("data bin");
        let data: Vec<u8> = (0..3000u32).map(|n| (n * 7 % 251) as u8).collect();
        std::fs::write(&file, &data)?;
        let opened = open(&conn, "h1", &p(&file)).await?;
        assert_eq!(opened, json!({"handleId": "h1"}), "{transport:?}");
        assert_eq!(
            read_block(&conn, "h1", 0, 1000).await?,
            (data[..1000].to_vec(), false)
        );
        // A block ending exactly at the end of the file reports eof.
        assert_eq!(
            read_block(&conn, "h1", 2000, 1000).await?,
            (data[2000..].to_vec(), true)
        );
        assert_eq!(
            read_block(&conn, "h1", 2500, 1000).await?,
            (data[2500..].to_vec(), true)
        );
        // At or past the end: an empty chunk and eof.
        assert_eq!(read_block(&conn, "h1", 3000, 10).await?, (Vec::new(), true));
        assert_eq!(
            read_block(&conn, "h1", u64::MAX, 10).await?,
            (Vec::new(), true)
        );
        // A file: URI opens the same file; a second handle reads independently.
        let uri = format!("file://{}", p(&file).replace(' ', "%20"));
        open(&conn, "h2", &uri).await?;
        assert_eq!(
            read_block(&conn, "h2", 1, 2).await?,
            (data[1..3].to_vec(), false)
        );
        // Concurrent reads of one handle share no cursor.
        let reads = futures_util::future::join_all(
            (0..6u64).map(|n| read_block(&conn, "h1", n * 500, 500)),
        )
        .await;
        for (n, read) in reads.into_iter().enumerate() {
            let (chunk, _) = read?;
            assert_eq!(
                chunk,
                data[n * 500..(n + 1) * 500],
                "{transport:?}: block {n}"
            );
        }
        let closed = conn
            .request("fs/close", json!({"handleId": "h1"}))
            .result()
            .await?;
        assert_eq!(closed, json!({}), "{transport:?}");
        // Closing an unknown handle is no error; reading a closed one is not found.
        let closed = conn
            .request("fs/close", json!({"handleId": "h1"}))
            .result()
            .await?;
        assert_eq!(closed, json!({}), "{transport:?}");
        let (code, _) = error(
            &conn,
            "fs/readBlock",
            json!({"handleId": "h1", "offset": 0, "len": 1}),
        )
        .await?;
        assert_eq!(code, NOT_FOUND, "{transport:?}");
        // The id is free again.
        open(&conn, "h1", &p(&file)).await?;
        // An empty file: eof at once.
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "")?;
        open(&conn, "e", &p(&empty)).await?;
        assert_eq!(read_block(&conn, "e", 0, 1).await?, (Vec::new(), true));
    }
    Ok(())
}

#[tokio::test]
async fn every_error_gets_upstreams_code() -> TestResult {
    for transport in BOTH {
        let conn = ready(transport, &[]).await?;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("f");
        std::fs::write(&file, vec![1u8; 2 * MIB as usize])?;
        let path = p(&file);
        open(&conn, "h", &path).await?;
        let cases = [
            (
                "duplicate handleId",
                "fs/open",
                json!({"handleId": "h", "path": path}),
                INVALID_REQUEST,
            ),
            (
                "a directory",
                "fs/open",
                json!({"handleId": "d", "path": p(dir.path())}),
                INVALID_REQUEST,
            ),
            (
                "a missing file",
                "fs/open",
                json!({"handleId": "m", "path": format!("{path}.missing")}),
                NOT_FOUND,
            ),
            (
                "a relative path",
                "fs/open",
                json!({"handleId": "r", "path": "f"}),
                INVALID_PARAMS,
            ),
            (
                "handleId over 32 bytes",
                "fs/open",
                json!({"handleId": "x".repeat(33), "path": path}),
                INVALID_PARAMS,
            ),
            (
                "a sandbox profile",
                "fs/open",
                json!({"handleId": "s", "path": path, "sandbox": {"type": "read-only"}}),
                INVALID_PARAMS,
            ),
            (
                "an unknown handle",
                "fs/readBlock",
                json!({"handleId": "nope", "offset": 0, "len": 1}),
                NOT_FOUND,
            ),
            (
                "len 0",
                "fs/readBlock",
                json!({"handleId": "h", "offset": 0, "len": 0}),
                INVALID_REQUEST,
            ),
            (
                "len over 1 MiB",
                "fs/readBlock",
                json!({"handleId": "h", "offset": 0, "len": MIB + 1}),
                INVALID_REQUEST,
            ),
            (
                "no len",
                "fs/readBlock",
                json!({"handleId": "h", "offset": 0}),
                INVALID_PARAMS,
            ),
            (
                "a negative offset",
                "fs/readBlock",
                json!({"handleId": "h", "offset": -1, "len": 1}),
                INVALID_PARAMS,
            ),
            ("no handleId", "fs/close", json!({}), INVALID_PARAMS),
        ];
        for (what, method, params, expected) in cases {
            let (code, message) = error(&conn, method, params).await?;
            assert_eq!(code, expected, "{transport:?}: {what}: {message}");
        }
        // The failed open of `d` left nothing behind; exactly 1 MiB is allowed.
        let (chunk, eof) = read_block(&conn, "h", 0, MIB).await?;
        assert_eq!((chunk.len() as u64, eof), (MIB, false), "{transport:?}");
        let (chunk, eof) = read_block(&conn, "h", MIB, MIB).await?;
        assert_eq!((chunk.len() as u64, eof), (MIB, true), "{transport:?}");
        open(&conn, "d", &path).await?;
    }
    Ok(())
}

#[tokio::test]
async fn the_open_handles_of_a_session_are_capped() -> TestResult {
    for transport in BOTH {
        let conn = ready(transport, &[]).await?;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("f");
        std::fs::write(&file, "x")?;
        let path = p(&file);
        for n in 0..256 {
            open(&conn, &format!("h{n}"), &path).await?;
        }
        let refused = conn
            .request("fs/open", json!({"handleId": "one-more", "path": path}))
            .error()
            .await?;
        assert_eq!(refused.code, LIMIT_REACHED, "{transport:?}: {refused:?}");
        assert_eq!(
            refused.data,
            Some(json!({"limit": "maxOpenHandles", "value": 256})),
            "{transport:?}"
        );
        conn.request("fs/close", json!({"handleId": "h0"}))
            .result()
            .await?;
        open(&conn, "one-more", &path).await?;
    }
    Ok(())
}

#[tokio::test]
async fn handles_survive_a_resume_and_close_when_the_session_expires() -> TestResult {
    // Websocket only: a stdio server has one connection, so nothing to resume.
    let server = start_server(Transport::WebSocket, &["--session-ttl", "2s"]).await?;
    let pid = server.pid().expect("a child server");
    let conn = server.connect().await?;
    let session_id = conn.initialize(CLIENT).await?.id().to_owned();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("f");
    std::fs::write(&file, b"0123456789")?;
    let file = std::fs::canonicalize(&file)?;
    assert_eq!(fds_on(pid, &file), 0);
    for n in 0..8 {
        open(&conn, &format!("h{n}"), &p(&file)).await?;
    }
    assert_eq!(fds_on(pid, &file), 8, "eight descriptors on the file");

    conn.disconnect().await?;
    conn.reconnect().await?;
    resume_when_detached(&conn, &session_id).await?;
    assert_eq!(
        read_block(&conn, "h3", 4, 3).await?,
        (b"456".to_vec(), false)
    );
    let (code, _) = error(
        &conn,
        "fs/open",
        json!({"handleId": "h3", "path": p(&file)}),
    )
    .await?;
    assert_eq!(code, INVALID_REQUEST, "the resumed session still holds h3");
    assert_eq!(fds_on(pid, &file), 8, "a resume closes nothing");

    conn.disconnect().await?;
    // After the TTL the session is destroyed and its descriptors closed.
    let deadline = tokio::time::Instant::now() + server.default_wait() + Duration::from_secs(4);
    loop {
        let fds = fds_on(pid, &file);
        if fds == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{fds} descriptors still open on the file long after the session expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    conn.reconnect().await?;
    let (code, _) = error(
        &conn,
        "initialize",
        json!({"clientName": CLIENT, "resumeSessionId": session_id}),
    )
    .await?;
    assert_eq!(code, INVALID_REQUEST, "the session is gone");
    conn.initialize(CLIENT).await?;
    open(&conn, "h3", &p(&file)).await?;
    assert_eq!(read_block(&conn, "h3", 8, 8).await?, (b"89".to_vec(), true));
    Ok(())
}

#[tokio::test]
async fn a_sparse_100_mib_file_reads_end_to_end_in_flat_memory() -> TestResult {
    for transport in BOTH {
        let (server, conn) = ready_with_server(transport, &[]).await?;
        let pid = server.pid().expect("a child server");
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("sparse");
        let file = std::fs::File::create(&path)?;
        file.set_len(100 * MIB)?;
        // A few non-zero bytes to check the blocks land where they belong.
        std::os::unix::fs::FileExt::write_at(&file, b"start", 0)?;
        std::os::unix::fs::FileExt::write_at(&file, b"middle", 50 * MIB + 7)?;
        std::os::unix::fs::FileExt::write_at(&file, b"end", 100 * MIB - 3)?;
        drop(file);
        open(&conn, "big", &p(&path)).await?;
        // Warm up (first allocations of the reply path), then measure.
        read_block(&conn, "big", 0, MIB).await?;
        let baseline = resident_bytes(pid);
        let mut peak = baseline;
        let mut total = 0u64;
        let mut offset = 0;
        loop {
            let (chunk, eof) = read_block(&conn, "big", offset, MIB).await?;
            if offset == 0 {
                assert_eq!(&chunk[..5], b"start");
            }
            if offset == 50 * MIB {
                assert_eq!(&chunk[7..13], b"middle");
            }
            total += chunk.len() as u64;
            offset += chunk.len() as u64;
            peak = peak.max(resident_bytes(pid));
            if eof {
                assert_eq!(&chunk[chunk.len() - 3..], b"end");
                break;
            }
            assert_eq!(
                chunk.len() as u64,
                MIB,
                "{transport:?}: full blocks until the end"
            );
        }
        assert_eq!(total, 100 * MIB, "{transport:?}");
        let growth = peak.saturating_sub(baseline);
        eprintln!(
            "{transport:?}: VmRSS {} KiB before, peak {} KiB, growth {} KiB over 100 MiB read",
            baseline / 1024,
            peak / 1024,
            growth / 1024
        );
        assert!(
            growth < 50 * MIB,
            "{transport:?}: the server grew by {} MiB reading 100 MiB",
            growth / MIB
        );
    }
    Ok(())
}
