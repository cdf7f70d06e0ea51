//! Rows 11 and 12: many idle sessions created, detached and resumed (RSS per session,
//! resume latency); and a slow reader (server RSS growth while the client reads
//! nothing and a child writes without end), checked against the outbound budget.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use futures_util::{stream, StreamExt as _, TryStreamExt as _};

use super::{ms, Kind, Plan, Target};
use crate::client::{Conn, Session};
use crate::report::Row;
use crate::server::rss_kib;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
/// Connections opened at once while creating and resuming sessions.
const PARALLEL: usize = 16;

/// Row 11. Ours gets `--session-ttl 600s` so that no session expires mid-row.
pub async fn sessions(plan: &Plan, target: &Target<'_>) -> Result<Vec<Row>> {
    let (server, first) = target.start(&["--session-ttl", "600s"]).await?;
    first.conn.close().await;
    let url = server.url.clone().ok_or_else(|| anyhow!("no url"))?;
    let n = plan.pick(1_000, 10_000);
    let before = rss_kib(server.pid())?;
    let ids: Vec<String> = stream::iter(0..n)
        .map(|_| {
            let url = url.clone();
            async move {
                let session = Session::open(Conn::websocket(&url).await?, None).await?;
                let id = session.session_id.clone();
                session.conn.close().await;
                anyhow::Ok(id)
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect()
        .await?;
    // Let the server see every close before measuring.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = rss_kib(server.pid())?;
    let per_session = (after as f64 - before as f64) / n as f64;
    let resumes: Vec<f64> = stream::iter(ids)
        .map(|id| {
            let url = url.clone();
            async move {
                let started = Instant::now();
                let session = Session::open(Conn::websocket(&url).await?, Some(id)).await?;
                let took = ms(started.elapsed());
                session.conn.close().await;
                anyhow::Ok(took)
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect()
        .await?;
    // Floor: connect to the bare echo and echo one frame, as many times, as parallel.
    let echo_url = plan.ws_floor_url.clone();
    let bare: Vec<f64> = stream::iter(0..n)
        .map(|_| {
            let url = echo_url.clone();
            async move {
                let started = Instant::now();
                let mut conn = Conn::websocket(&url).await?;
                conn.send(r#"{"id":1,"method":"initialize","params":{}}"#.into())
                    .await?;
                conn.recv().await?;
                let took = ms(started.elapsed());
                conn.close().await;
                anyhow::Ok(took)
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect()
        .await?;
    let name = Kind::Sessions.name();
    Ok(vec![
        target
            .row(&format!("{name} ({n}): RSS per detached session"), "KiB")
            .measured(&[per_session], &[])
            .note("absolute"),
        target
            .row(&format!("{name} ({n}): resume latency"), "ms")
            .measured(&resumes, &bare)
            .note(format!(
                "connect + initialize(resumeSessionId), {PARALLEL} at once; floor: connect + one echo"
            )),
    ])
}

/// Row 12: the client stops reading while `head -c N /dev/zero` writes; the server's
/// RSS is sampled for a few seconds. Limit: 64 MiB outbound budget (§3) + 1 MiB output
/// retention (the default) + 32 MiB.
pub async fn slow_reader(plan: &Plan, target: &Target<'_>) -> Result<Vec<Row>> {
    let (server, mut session) = target.start(&[]).await?;
    let n = plan.pick(128, 1024) * MIB;
    let before = rss_kib(server.pid())?;
    let params = target.start_params("slow", &["head", "-c", &n.to_string(), "/dev/zero"]);
    session.feed(&params).await?;
    session.conn.flush().await?;
    // From here on nothing is read.
    let watch = Duration::from_millis(plan.pick(2_000, 4_000));
    let started = Instant::now();
    let mut peak = before;
    while started.elapsed() < watch {
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak = peak.max(rss_kib(server.pid())?);
    }
    let growth_kib = peak.saturating_sub(before);
    let limit_kib = (64 * MIB + MIB + 32 * MIB) / KIB;
    let verdict = if growth_kib <= limit_kib {
        "PASS"
    } else {
        "OVER"
    };
    drop(session);
    drop(server);
    Ok(vec![target
        .row(&format!("{} ({} MiB written)", Kind::SlowReader.name(), n / MIB), "KiB")
        .measured(&[growth_kib as f64], &[])
        .note(format!(
            "{verdict}: RSS growth {} MiB vs limit {} MiB (64 budget + 1 retention + 32), watched {watch:?}",
            growth_kib / 1024,
            limit_kib / 1024
        ))])
}
