//! Rows 4, 8 and 9: `head -c N /dev/zero` read through `process/output` notifications
//! (pipes, or a PTY), and through `process/read` long-polls. Figures are times (the
//! ratio is a time ratio); the notes carry MiB/s.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use exec_protocol::{Message, NotificationMethod, ReadParams};

use super::{secs, Kind, Plan, Target};
use crate::client::{base64_len, notification_for, Conn, Session};
use crate::floor::{self, StdioFloor};
use crate::report::Row;
use crate::server::Transport;

const MIB: u64 = 1024 * 1024;

/// Output bytes in `message` for `id`, and whether it is `id`'s `process/closed`.
fn output_of(message: &Message, id: &str) -> (u64, bool) {
    if let Some(params) = notification_for(message, NotificationMethod::ProcessOutput) {
        if params.get("processId").and_then(|v| v.as_str()) == Some(id) {
            let chunk = params.get("chunk").and_then(|v| v.as_str()).unwrap_or("");
            return (base64_len(chunk), false);
        }
    }
    if let Some(params) = notification_for(message, NotificationMethod::ProcessClosed) {
        return (
            0,
            params.get("processId").and_then(|v| v.as_str()) == Some(id),
        );
    }
    (0, false)
}

async fn drain(session: &mut Session, id: &str) -> Result<u64> {
    let mut total = 0;
    loop {
        let (bytes, closed) = output_of(&session.next().await?, id);
        total += bytes;
        if closed {
            return Ok(total);
        }
    }
}

async fn drain_conn(conn: &mut Conn) -> Result<u64> {
    let mut total = 0;
    loop {
        let (bytes, closed) = output_of(&exec_protocol::classify(&conn.recv().await?), "z");
        total += bytes;
        if closed {
            return Ok(total);
        }
    }
}

/// The floor: the hand-written pipe → base64 → frame path, over this transport.
async fn zeros_floor(plan: &Plan, transport: Transport, n: u64) -> Result<(Duration, u64)> {
    let started = Instant::now();
    let total = match transport {
        Transport::WebSocket => {
            let mut conn = Conn::websocket(&format!("{}/zeros/{n}", plan.ws_floor_url)).await?;
            let total = drain_conn(&mut conn).await?;
            conn.close().await;
            total
        }
        Transport::Stdio => {
            let mut helper = StdioFloor::start(&["zeros", &n.to_string()])?;
            let conn = helper
                .conn
                .as_mut()
                .ok_or_else(|| anyhow!("helper closed"))?;
            let total = drain_conn(conn).await?;
            helper.stop().await;
            total
        }
    };
    Ok((started.elapsed(), total))
}

fn mib_per_s(bytes: u64, samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
    bytes as f64 / MIB as f64 / median
}

/// Row 4 (pipes) or row 8 (`tty: true`; floor: a raw PTY read loop).
pub async fn notifications(plan: &Plan, target: &Target<'_>, tty: bool) -> Result<Vec<Row>> {
    let (_server, mut session) = target.start(&[]).await?;
    let n = match tty {
        false => plan.pick(64, 512) * MIB,
        true => plan.pick(16, 128) * MIB,
    };
    let (mut server, mut bare) = (Vec::new(), Vec::new());
    let mut short = 0;
    for round in 0..plan.rounds {
        let (took, got) = if tty {
            tokio::task::spawn_blocking(move || floor::pty_zeros(n)).await??
        } else {
            zeros_floor(plan, target.transport, n).await?
        };
        short += u64::from(got != n);
        bare.push(secs(took));
        let id = format!("z{round}");
        let mut params = target.start_params(&id, &["head", "-c", &n.to_string(), "/dev/zero"]);
        params.tty = tty;
        let started = Instant::now();
        session.feed(&params).await?;
        session.conn.flush().await?;
        let got = drain(&mut session, &id).await?;
        server.push(secs(started.elapsed()));
        short += u64::from(got != n);
    }
    let (kind, floor_name) = match tty {
        false => (Kind::Notifications, "pipe → base64 → frames, 64 KiB reads"),
        true => (Kind::Pty, "raw PTY read loop"),
    };
    let mut row = target
        .row(kind.name(), "s")
        .measured(&server, &bare)
        .note(format!(
            "{} MiB; server {:.0} MiB/s, floor {:.0} MiB/s; floor: {floor_name}",
            n / MIB,
            mib_per_s(n, &server),
            mib_per_s(n, &bare)
        ));
    if short > 0 {
        row = row.note(format!("{short} transfers short of {n} bytes"));
    }
    Ok(vec![row])
}

/// Row 9: the same output read with `process/read` (afterSeq, waitMs 1000) until
/// closed; notifications arriving meanwhile are skipped. Floor: row 4's.
pub async fn long_poll(plan: &Plan, target: &Target<'_>) -> Result<Vec<Row>> {
    let (_server, mut session) = target.start(&[]).await?;
    let n = plan.pick(64, 512) * MIB;
    let (mut server, mut bare) = (Vec::new(), Vec::new());
    let mut lost = 0u64;
    for round in 0..plan.rounds {
        bare.push(secs(zeros_floor(plan, target.transport, n).await?.0));
        let id = format!("r{round}");
        let params = target.start_params(&id, &["head", "-c", &n.to_string(), "/dev/zero"]);
        let started = Instant::now();
        session.call(&params).await?;
        let mut after_seq = 0;
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let read = session
                .call(&ReadParams {
                    process_id: id.clone(),
                    after_seq,
                    max_bytes: None,
                    wait_ms: 1000,
                })
                .await?;
            got += read
                .chunks
                .iter()
                .map(|c| c.chunk.0.len() as u64)
                .sum::<u64>();
            after_seq = read.next_seq.saturating_sub(1).max(after_seq);
            if read.closed {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!("process/read did not reach closed within 120 s");
            }
        }
        server.push(secs(started.elapsed()));
        lost += n.saturating_sub(got);
    }
    let mut row = target
        .row(Kind::LongPoll.name(), "s")
        .measured(&server, &bare)
        .note(format!(
            "{} MiB; server {:.0} MiB/s; floor: row 4's",
            n / MIB,
            mib_per_s(n, &server)
        ));
    if lost > 0 {
        row = row.note(format!("{} MiB not read (retention overrun)", lost / MIB));
    }
    Ok(vec![row])
}
