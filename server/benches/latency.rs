//! End-to-end numbers for the release binary over websocket, printed as a table:
//! `/bin/true` start→exited latency and output throughput through notifications.
//! Run with `cargo bench -p exec-server --bench latency`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Client, TestServer, Transport};
use serde_json::{json, Value};

const LATENCY_RUNS: usize = 200;
const THROUGHPUT_BYTES: u64 = 100 * 1024 * 1024;

#[tokio::main]
async fn main() {
    for transport in [Transport::Ws, Transport::Stdio] {
        let mut server = TestServer::start(transport, &[]).await;
        let mut client = server.session().await;
        let latency = spawn_to_exited(&mut client).await;
        let throughput = zero_throughput(&mut client).await;
        println!(
            "{transport:?}: /bin/true start->exited median {:.2} ms, p90 {:.2} ms ({LATENCY_RUNS} runs); \
             head -c 100M /dev/zero via notifications {throughput:.0} MiB/s",
            latency.0, latency.1
        );
    }
}

async fn spawn_to_exited(client: &mut Client) -> (f64, f64) {
    let mut samples = Vec::with_capacity(LATENCY_RUNS);
    for run in 0..LATENCY_RUNS {
        let id = format!("true-{run}");
        let started = Instant::now();
        client.start(&id, &["/bin/true"]).await;
        client
            .expect_event("exited", |e: &Value| {
                e["method"] == "process/exited" && e["params"]["processId"] == id
            })
            .await;
        samples.push(started.elapsed());
        client.events.clear();
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (
        ms(samples[LATENCY_RUNS / 2]),
        ms(samples[LATENCY_RUNS * 9 / 10]),
    )
}

async fn zero_throughput(client: &mut Client) -> f64 {
    let started = Instant::now();
    client
        .call(
            "process/start",
            json!({"processId": "zeros", "argv": ["head", "-c", THROUGHPUT_BYTES.to_string(), "/dev/zero"], "cwd": "/", "env": {"PATH": "/usr/bin:/bin"}}),
        )
        .await;
    let output = client
        .output_until_closed_within("zeros", Duration::from_secs(120))
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(output.stdout.len() as u64, THROUGHPUT_BYTES);
    THROUGHPUT_BYTES as f64 / (1024.0 * 1024.0) / elapsed
}
