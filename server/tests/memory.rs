//! Bounded memory whatever the peer does (docs/protocol.md §3): replies the peer does not
//! read, pings whose pongs it does not read, and writes to a child that does not read
//! its stdin all stop the server reading instead of growing it. Each test measures the
//! real binary's resident memory through /proc.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::procfs::resident_bytes;
use common::*;
use exec_server_harness::{Connection, ExecServer, Transport};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024 * 1024;
/// Deadline of the waits this file does itself.
const WAIT: Duration = Duration::from_secs(10);

/// The server's resident memory in bytes.
fn memory(server: &ExecServer) -> u64 {
    resident_bytes(server.pid().expect("a child server"))
}

/// How much the server's resident memory grew over `baseline` once it settled (did
/// not grow for `QUIET`). Fails as soon as the growth passes `ceiling`.
async fn settled_growth(server: &ExecServer, baseline: u64, ceiling: u64, what: &str) -> u64 {
    const QUIET: Duration = Duration::from_secs(2);
    let give_up = tokio::time::Instant::now() + WAIT * 3;
    let mut peak = 0;
    let mut since = tokio::time::Instant::now();
    loop {
        let growth = memory(server).saturating_sub(baseline);
        assert!(
            growth < ceiling,
            "{what} grew the server by {} MiB (ceiling {} MiB)",
            growth / MIB,
            ceiling / MIB
        );
        if growth > peak {
            (peak, since) = (growth, tokio::time::Instant::now());
        } else if since.elapsed() >= QUIET || tokio::time::Instant::now() >= give_up {
            return peak;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `progress` has not moved for `quiet`, within `deadline`; returns its value.
async fn wait_until_stalled(progress: &AtomicU64, quiet: Duration, deadline: Duration) -> u64 {
    let give_up = tokio::time::Instant::now() + deadline;
    let mut last = progress.load(Ordering::SeqCst);
    let mut since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = progress.load(Ordering::SeqCst);
        if now != last {
            (last, since) = (now, tokio::time::Instant::now());
        } else if since.elapsed() >= quiet {
            return now;
        }
        if tokio::time::Instant::now() >= give_up {
            return now;
        }
    }
}

/// Sends `count` frames made by `frame` in the background until the server stops
/// reading them; fails if it reads them all. Returns how many were sent.
async fn send_until_refused(
    conn: &Connection,
    count: usize,
    frame: impl Fn(usize) -> String + Send + 'static,
) -> u64 {
    let sent = Arc::new(AtomicU64::new(0));
    let sender = tokio::spawn({
        let conn = conn.clone();
        let sent = Arc::clone(&sent);
        async move {
            for n in 0..count {
                conn.send_raw(frame(n)).await?;
                sent.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<_, exec_server_harness::HarnessError>(())
        }
    });
    let accepted = wait_until_stalled(&sent, Duration::from_secs(3), WAIT * 6).await;
    assert!(
        !sender.is_finished(),
        "the server read all {count} frames although nothing it owes was taken"
    );
    sender.abort();
    accepted
}

#[tokio::test]
async fn pipelined_reads_whose_replies_are_not_read_wait_for_room() -> TestResult {
    const READS: usize = 1000;
    let server = start_server(Transport::WebSocket, &[]).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    // 1 MiB retained: each read result is about 1.4 MB of base64.
    session
        .start_with(spec("big", ["head", "-c", "1048576", "/dev/urandom"]))
        .await?;
    conn.notified_output_within("big", WAIT).await?;
    let baseline = memory(&server);
    for n in 0..READS {
        let request = json!({"id": format!("r{n}"), "method": "process/read", "params": {"processId": "big"}});
        conn.send_raw(request.to_string()).await?;
    }
    let what = format!("{READS} read results nobody reads");
    let growth = settled_growth(&server, baseline, 200 * MIB, &what).await;
    println!("{what}: +{} MiB", growth / MIB);
    // Other clients are served meanwhile.
    let other = server.connect().await?;
    other.initialize("other").await?;
    Ok(())
}

#[tokio::test]
async fn pipelined_file_reads_are_built_one_budget_at_a_time() -> TestResult {
    const READS: usize = 12;
    let directory = tempfile::tempdir()?;
    let path = directory.path().join("sparse");
    std::fs::File::create(&path)?.set_len(40 * MIB)?;
    let server = start_server(Transport::WebSocket, &[]).await?;
    let conn = server.connect().await?;
    conn.initialize(CLIENT).await?;
    let baseline = memory(&server);
    for n in 0..READS {
        let request = json!({"id": n, "method": "fs/readFile", "params": {"path": path}});
        conn.send_raw(request.to_string()).await?;
    }
    let what = format!("{READS} reads of a 40 MiB file nobody reads");
    let growth = settled_growth(&server, baseline, 256 * MIB, &what).await;
    println!("{what}: +{} MiB", growth / MIB);
    // Other clients are served meanwhile.
    let other = server.connect().await?;
    other.initialize("other").await?;
    Ok(())
}

/// Opens a websocket by hand, so the test can write raw frames and never read.
async fn raw_websocket(server: &ExecServer) -> std::io::Result<tokio::net::TcpStream> {
    let addr = server.url().expect("url").trim_start_matches("ws://");
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await? == 1 {
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    Ok(stream)
}

#[tokio::test]
async fn a_ping_flood_whose_pongs_are_not_read_stops_being_read() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let mut stream = raw_websocket(&server).await?;
    // Masked client pings with the largest control payload, 125 bytes: 131 bytes each.
    let mut ping = vec![0x89, 0x80 | 125, 1, 2, 3, 4];
    ping.extend((0..125u8).map(|n| n ^ [1, 2, 3, 4][usize::from(n % 4)]));
    let batch: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 8000)
        .collect();
    let baseline = memory(&server);
    let sent = Arc::new(AtomicU64::new(0));
    let flood = tokio::spawn({
        let sent = Arc::clone(&sent);
        async move {
            while sent.load(Ordering::SeqCst) < 512 * MIB {
                stream.write_all(&batch).await?;
                sent.fetch_add(batch.len() as u64, Ordering::SeqCst);
            }
            Ok::<_, std::io::Error>(stream)
        }
    });
    let stalled_at = wait_until_stalled(&sent, Duration::from_secs(2), WAIT * 6).await;
    let growth = settled_growth(&server, baseline, 160 * MIB, "a ping flood").await;
    assert!(
        !flood.is_finished(),
        "the server read all 512 MiB of pings without the pongs being read"
    );
    flood.abort();
    println!("{} MiB of pings: +{} MiB", stalled_at / MIB, growth / MIB);
    // Other clients are served meanwhile.
    let other = server.connect().await?;
    other.initialize("other").await?;
    Ok(())
}

#[tokio::test]
async fn writes_queued_for_a_child_that_never_reads_hold_less_than_the_budget() -> TestResult {
    const WRITES: usize = 12;
    let server = start_server(Transport::WebSocket, &[]).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    session
        .start_with(spec("sink", ["sleep", "1000"]).pipe_stdin(true))
        .await?;
    // 24 MiB of stdin per write: a 32 MiB frame; the in-flight budget takes 8 of them.
    let chunk = b64(&vec![b'x'; 24 * MIB as usize]);
    let baseline = memory(&server);
    let accepted = send_until_refused(&conn, WRITES, move |n| {
        format!(
            r#"{{"id":"w{n}","method":"process/write","params":{{"processId":"sink","chunk":"{chunk}"}}}}"#
        )
    })
    .await;
    let what = format!("{accepted} writes of 24 MiB for a child that never reads");
    let growth = settled_growth(&server, baseline, 320 * MIB, &what).await;
    println!("{what}: +{} MiB", growth / MIB);
    Ok(())
}

#[tokio::test]
async fn long_request_ids_count_in_the_room_a_reply_reserves() -> TestResult {
    // More than the inbound (256 MiB of frames) and outbound (64 MiB) budgets hold.
    const READS: usize = 250;
    let server = start_server(Transport::WebSocket, &[]).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    session.start_with(spec("small", ["echo", "hi"])).await?;
    conn.notified_output_within("small", WAIT).await?;
    // A 2 MiB id makes each small read result a 2 MiB reply.
    let id = "i".repeat(2 * MIB as usize);
    let baseline = memory(&server);
    let accepted = send_until_refused(&conn, READS, move |n| {
        format!(r#"{{"id":"{id}{n}","method":"process/read","params":{{"processId":"small"}}}}"#)
    })
    .await;
    let what = format!("{accepted} read results with 2 MiB ids nobody reads");
    // What the two budgets allow, and no more: 256 + 64 MiB and some slack.
    let growth = settled_growth(&server, baseline, 400 * MIB, &what).await;
    println!("{what}: +{} MiB", growth / MIB);
    Ok(())
}
