//! `process/start` of `/bin/true` against a bare `tokio::process::Command` floor, floor
//! and server alternating in one run (issue 18): start → response over spawn returning,
//! start → `process/exited` over spawn + wait, and 500 pipelined starts of `sleep` over
//! 500 sequential spawns. Prints medians and ratios (server ÷ floor).
//! Run with `cargo bench -p exec-server --bench spawn [-- RUNS]`.

use std::time::{Duration, Instant};

use exec_server_harness::{ExecServer, HarnessError, ProcessSpec, Session, Transport};

fn spec(id: &str, argv: &[&str]) -> ProcessSpec {
    ProcessSpec::new(argv.iter().copied())
        .id(id)
        .cwd("/")
        .env_policy(None)
        .env("PATH", "/usr/bin:/bin")
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() -> Result<(), HarnessError> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(200);
    for transport in [Transport::WebSocket, Transport::Stdio] {
        let server = ExecServer::builder()
            .transport(transport)
            .binary(
                std::env::var("EXEC_BENCH_SERVER")
                    .unwrap_or_else(|_| env!("CARGO_BIN_EXE_exec-server").to_owned()),
            )
            .start()
            .await?;
        let session = server.connect().await?.initialize("spawn-bench").await?;
        let connection = session.connection();
        let (mut response, mut exited, mut floor_spawn, mut floor_wait, mut round_trip) =
            (vec![], vec![], vec![], vec![], vec![]);
        for run in 0..runs {
            let id = format!("true-{run}");
            let started = Instant::now();
            session.start_with(spec(&id, &["/bin/true"])).await?;
            response.push(started.elapsed());
            connection.skip_until(|e| e.is_exited(&id)).await?;
            exited.push(started.elapsed());
            // A request that spawns nothing: what the transport alone costs.
            let started = Instant::now();
            session.read(&id, u64::MAX, 0).await?;
            round_trip.push(started.elapsed());

            let started = Instant::now();
            let mut child = tokio::process::Command::new("/bin/true")
                .spawn()
                .expect("spawn");
            floor_spawn.push(started.elapsed());
            child.wait().await.expect("wait");
            floor_wait.push(started.elapsed());
        }
        let (response, exited) = (median(response), median(exited));
        let (floor_spawn, floor_wait) = (median(floor_spawn), median(floor_wait));
        let round_trip = median(round_trip);
        println!(
            "{transport:?}: start->response {response:.0} us / spawn {floor_spawn:.0} us = {:.2}x; \
             start->exited {exited:.0} us / spawn+wait {floor_wait:.0} us = {:.2}x; \
             process/read round trip {round_trip:.0} us ({runs} runs)",
            response / floor_spawn,
            exited / floor_wait
        );
        let (pipelined, floor) = pipelined_starts(&session, transport).await?;
        println!(
            "{transport:?}: 500 pipelined starts {:.1} ms / 500 sequential spawns {:.1} ms = {:.2}x",
            pipelined * 1e3,
            floor * 1e3,
            pipelined / floor
        );
    }
    Ok(())
}

/// Best of 3 rounds each, alternating.
async fn pipelined_starts(
    session: &Session,
    transport: Transport,
) -> Result<(f64, f64), HarnessError> {
    let (mut ours, mut floor) = (f64::MAX, f64::MAX);
    for round in 0..3 {
        let started = Instant::now();
        let starts = (0..500).map(|i| {
            let id = format!("sleep-{transport:?}-{round}-{i}");
            async move { session.start_with(spec(&id, &["sleep", "1000"])).await }
        });
        let ids = futures_util::future::try_join_all(starts).await?;
        ours = ours.min(started.elapsed().as_secs_f64());
        for id in &ids {
            session.terminate(id).await?;
        }
        let started = Instant::now();
        let mut children = Vec::with_capacity(500);
        for _ in 0..500 {
            children.push(
                tokio::process::Command::new("sleep")
                    .arg("1000")
                    .spawn()
                    .expect("spawn"),
            );
        }
        floor = floor.min(started.elapsed().as_secs_f64());
        for child in &mut children {
            child.kill().await.expect("kill");
        }
    }
    Ok((ours, floor))
}
