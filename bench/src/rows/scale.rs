//! Rows 5–7 and 10: many `sleep 600`s started pipelined, then terminated; the server's
//! RSS per live process; and 1 000 concurrent sleeps (start all, terminate all).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use exec_protocol::{Message, NotificationMethod, TerminateParams};

use super::{ms, Kind, Plan, Target};
use crate::client::{notification_for, Session};
use crate::floor;
use crate::report::Row;

/// Starts `n` sleeps (all requests sent before any reply is read), then terminates
/// them all and waits for every `process/closed`. Returns (start time, terminate time,
/// RSS growth KiB, failures).
async fn start_and_terminate(
    target: &Target<'_>,
    session: &mut Session,
    server_pid: u32,
    prefix: &str,
    n: usize,
) -> Result<(Duration, Duration, i64, usize)> {
    let rss_before = crate::server::rss_kib(server_pid)? as i64;
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let started = Instant::now();
    let mut pending = HashSet::new();
    for id in &ids {
        pending.insert(
            session
                .feed(&target.start_params(id, &["sleep", "600"]))
                .await?,
        );
    }
    session.conn.flush().await?;
    let mut failures = 0;
    while !pending.is_empty() {
        match session.next().await? {
            Message::Response { id, .. } => {
                pending.remove(&id);
            }
            Message::Error { id: Some(id), .. } => {
                failures += usize::from(pending.remove(&id));
            }
            _ => {}
        }
    }
    let start_time = started.elapsed();
    let rss_after = crate::server::rss_kib(server_pid)? as i64;
    let started = Instant::now();
    let mut open: HashSet<&str> = ids.iter().map(String::as_str).collect();
    for id in &ids {
        session
            .feed(&TerminateParams {
                process_id: id.clone(),
            })
            .await?;
    }
    session.conn.flush().await?;
    while !open.is_empty() {
        let message = session.next().await?;
        if let Some(params) = notification_for(&message, NotificationMethod::ProcessClosed) {
            if let Some(id) = params.get("processId").and_then(|v| v.as_str()) {
                open.remove(id);
            }
        }
    }
    Ok((
        start_time,
        started.elapsed(),
        rss_after - rss_before,
        failures,
    ))
}

/// Rows 5, 6 and 7.
pub async fn pipelined(plan: &Plan, target: &Target<'_>) -> Result<Vec<Row>> {
    let (server, mut session) = target.start(&[]).await?;
    let n = plan.pick(100, 500);
    let (mut starts, mut bare_starts, mut kills, mut bare_kills) = (vec![], vec![], vec![], vec![]);
    let mut rss_per_process = Vec::new();
    let mut failures = 0;
    for round in 0..plan.rounds {
        let (spawned, killed) = floor::sleeps(n).await?;
        bare_starts.push(ms(spawned));
        bare_kills.push(ms(killed));
        let (start, kill, rss, failed) =
            start_and_terminate(target, &mut session, server.pid(), &format!("p{round}"), n)
                .await?;
        starts.push(ms(start));
        kills.push(ms(kill));
        rss_per_process.push(rss as f64 / n as f64);
        failures += failed;
    }
    let name = |what: &str| format!("{what} ({n})");
    let mut start_row = target
        .row(&name("5 pipelined starts of sleep, all answered"), "ms")
        .measured(&starts, &bare_starts)
        .note("floor: sequential spawns");
    if failures > 0 {
        start_row = start_row.note(format!("{failures} starts failed"));
    }
    let kill_row = target
        .row(&name("6 terminates → all process/closed"), "ms")
        .measured(&kills, &bare_kills)
        .note("floor: kill + reap");
    let rss_row = target
        .row(&name("7 server RSS per live process"), "KiB")
        .measured(&rss_per_process[..1], &[])
        .note("absolute, first round (later rounds reuse freed memory)");
    Ok(vec![start_row, kill_row, rss_row])
}

/// Row 10: `n` concurrent sleeps, a fresh session per round (so no session holds more
/// than `n` processes): start all + terminate all, wall time; peak RSS; failures.
pub async fn concurrent(plan: &Plan, target: &Target<'_>) -> Result<Vec<Row>> {
    let (server, first) = target.start(&[]).await?;
    let n = plan.pick(200, 1000);
    let (mut wall, mut bare, mut rss) = (vec![], vec![], vec![]);
    let mut failures = 0;
    let mut session = Some(first);
    for round in 0..plan.rounds {
        let (spawned, killed) = floor::sleeps(n).await?;
        bare.push(ms(spawned + killed));
        let mut current = match session.take() {
            Some(current) => current,
            None => {
                let url = server
                    .url
                    .clone()
                    .ok_or_else(|| anyhow!("the websocket server has no url"))?;
                Session::open(crate::client::Conn::websocket(&url).await?, None).await?
            }
        };
        let base = crate::server::rss_kib(server.pid())?;
        let (start, kill, growth, failed) =
            start_and_terminate(target, &mut current, server.pid(), &format!("c{round}"), n)
                .await?;
        wall.push(ms(start + kill));
        rss.push((base as i64 + growth) as f64);
        failures += failed;
        current.conn.close().await;
    }
    let wall_row = target
        .row(
            &format!(
                "{} ({n}): start all + terminate all",
                Kind::Concurrent.name()
            ),
            "ms",
        )
        .measured(&wall, &bare)
        .note(format!("{failures} failures; floor: spawn all + kill all"));
    let rss_row = target
        .row(
            &format!(
                "{} ({n}): server RSS with all live",
                Kind::Concurrent.name()
            ),
            "KiB",
        )
        .measured(&rss, &[])
        .note("absolute");
    Ok(vec![wall_row, rss_row])
}
