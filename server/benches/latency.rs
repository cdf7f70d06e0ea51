//! End-to-end numbers for the release binary over websocket and stdio, printed as a
//! table: `/bin/true` start→exited latency and output throughput through
//! notifications. Run with `cargo bench -p exec-server --bench latency`.

use std::time::{Duration, Instant};

use exec_server_harness::{ExecServer, HarnessError, ProcessSpec, Session, Transport};

const LATENCY_RUNS: usize = 200;
const THROUGHPUT_BYTES: u64 = 100 * 1024 * 1024;

#[tokio::main]
async fn main() -> Result<(), HarnessError> {
    for transport in [Transport::WebSocket, Transport::Stdio] {
        let server = ExecServer::builder()
            .transport(transport)
            .binary(env!("CARGO_BIN_EXE_exec-server"))
            .start()
            .await?;
        let session = server.connect().await?.initialize("latency-bench").await?;
        let latency = spawn_to_exited(&session).await?;
        let throughput = zero_throughput(&session).await?;
        println!(
            "{transport:?}: /bin/true start->exited median {:.2} ms, p90 {:.2} ms ({LATENCY_RUNS} runs); \
             head -c 100M /dev/zero via notifications {throughput:.0} MiB/s",
            latency.0, latency.1
        );
    }
    Ok(())
}

/// A process in `/` with exactly `PATH` as its environment.
fn spec(id: &str, argv: &[&str]) -> ProcessSpec {
    ProcessSpec::new(argv.iter().copied())
        .id(id)
        .cwd("/")
        .env_policy(None)
        .env("PATH", "/usr/bin:/bin")
}

async fn spawn_to_exited(session: &Session) -> Result<(f64, f64), HarnessError> {
    let connection = session.connection();
    let mut samples = Vec::with_capacity(LATENCY_RUNS);
    for run in 0..LATENCY_RUNS {
        let id = format!("true-{run}");
        let started = Instant::now();
        session.start_with(spec(&id, &["/bin/true"])).await?;
        // Also discards what earlier runs left buffered (their process/closed).
        connection.skip_until(|e| e.is_exited(&id)).await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok((
        ms(samples[LATENCY_RUNS / 2]),
        ms(samples[LATENCY_RUNS * 9 / 10]),
    ))
}

async fn zero_throughput(session: &Session) -> Result<f64, HarnessError> {
    let connection = session.connection();
    let deadline = Instant::now() + Duration::from_secs(120);
    let started = Instant::now();
    let size = THROUGHPUT_BYTES.to_string();
    session
        .start_with(spec("zeros", &["head", "-c", &size, "/dev/zero"]))
        .await?;
    // Consume the notifications one by one so they do not pile up in the buffer.
    let mut received = 0u64;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let event = connection
            .expect_event(|e| e.process_id() == Some("zeros"))
            .within(remaining)
            .await?;
        if event.is_closed("zeros") {
            break;
        }
        received += event.chunk().map_or(0, |chunk| chunk.len() as u64);
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(received, THROUGHPUT_BYTES);
    Ok(THROUGHPUT_BYTES as f64 / (1024.0 * 1024.0) / elapsed)
}
