//! Request round trip (issue 18, row "request round trip"): sequential
//! `environment/info` requests to the release `exec-server` over websocket, against a
//! bare floor measured in the same run, rounds alternating: a websocket echo server
//! (axum routing + hyper upgrade + tokio-tungstenite, the server's own stack, on a
//! 2-worker runtime like the server's) echoing the same request frame bytes.
//! `cargo bench -p exec-server --bench roundtrip [-- ROUNDS REQUESTS]`; prints the
//! median of each round, the median over rounds and the ratio server ÷ floor.
//! `-- --server-only N` sends N requests to the server only (for profiling).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Instant;

use axum::extract::Request;
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const FRAME: &str = r#"{"jsonrpc":"2.0","id":1,"method":"environment/info"}"#;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if args.first().map(String::as_str) == Some("--server-only") {
        let n = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(20_000);
        let url = std::env::var("EXEC_SERVER_URL").ok();
        return client.block_on(server_only(n, url));
    }
    let rounds: usize = args.first().and_then(|n| n.parse().ok()).unwrap_or(5);
    let requests: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(2000);
    // The floor on its own 2-worker runtime, as the server's on a 2-core machine.
    let floor_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let floor_addr = floor_runtime.block_on(start_floor());
    client.block_on(async {
        let (mut child, url) = start_server().await;
        let mut server = connect(&url).await;
        initialize(&mut server).await;
        let mut floor = connect(&format!("ws://{floor_addr}/")).await;
        // Warm-up.
        round(&mut server, 200).await;
        round(&mut floor, 200).await;
        let (mut servers, mut floors) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            let f = round(&mut floor, requests).await;
            let s = round(&mut server, requests).await;
            println!(
                "round {r}: floor {:.1} µs  server {:.1} µs  ratio {:.2}",
                f,
                s,
                s / f
            );
            floors.push(f);
            servers.push(s);
        }
        let (f, s) = (median(&mut floors), median(&mut servers));
        println!(
            "environment/info round trip: floor median {f:.1} µs, server median {s:.1} µs, ratio {:.2} ({rounds} rounds × {requests})",
            s / f
        );
        let _ = child.kill().await;
    });
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Median round trip in µs over `n` sequential requests.
async fn round(socket: &mut Client, n: usize) -> f64 {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        socket.send(Message::text(FRAME)).await.expect("send");
        loop {
            match socket.next().await.expect("open").expect("read") {
                Message::Text(_) => break,
                _ => continue,
            }
        }
        samples.push(started.elapsed().as_secs_f64() * 1e6);
    }
    median(&mut samples)
}

async fn server_only(n: usize, url: Option<String>) {
    let (child, url) = match url {
        Some(url) => (None, url),
        None => {
            let (child, url) = start_server().await;
            (Some(child), url)
        }
    };
    let mut server = connect(&url).await;
    initialize(&mut server).await;
    let started = Instant::now();
    let median = round(&mut server, n).await;
    println!(
        "{n} round trips in {:?}, median {median:.1} µs",
        started.elapsed()
    );
    if let Some(mut child) = child {
        let _ = child.kill().await;
    }
}

async fn start_server() -> (tokio::process::Child, String) {
    let binary = std::env::var("EXEC_SERVER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_exec-server").to_owned());
    let mut child = tokio::process::Command::new(binary)
        .args(["--listen", "ws://127.0.0.1:0"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start exec-server");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .await
        .expect("url");
    (child, line.trim().to_owned())
}

async fn connect(url: &str) -> Client {
    let (socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    if let MaybeTlsStream::Plain(tcp) = socket.get_ref() {
        tcp.set_nodelay(true).expect("nodelay");
    }
    socket
}

async fn initialize(socket: &mut Client) {
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"clientName":"roundtrip-bench"}}"#;
    socket.send(Message::text(init)).await.expect("send");
    let reply = socket.next().await.expect("open").expect("read");
    assert!(
        reply.to_text().expect("text").contains("sessionId"),
        "{reply:?}"
    );
    let done = r#"{"jsonrpc":"2.0","method":"initialized"}"#;
    socket.send(Message::text(done)).await.expect("send");
    socket.send(Message::text(FRAME)).await.expect("send");
    let reply = socket.next().await.expect("open").expect("read");
    assert!(
        reply.to_text().expect("text").contains("shell"),
        "{reply:?}"
    );
}

/// The floor: websocket upgrade on `/`, then every text frame echoed back.
async fn start_floor() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().route("/", get(upgrade));
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.expect("accept");
            tcp.set_nodelay(true).expect("nodelay");
            let app = app.clone();
            tokio::spawn(async move {
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

async fn upgrade(mut request: Request) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    let key = request
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .expect("key")
        .as_bytes()
        .to_vec();
    let on_upgrade = request
        .extensions_mut()
        .remove::<OnUpgrade>()
        .expect("upgrade");
    tokio::spawn(async move {
        let upgraded = on_upgrade.await.expect("upgraded");
        let mut socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Text(text) = message {
                if socket.send(Message::Text(text)).await.is_err() {
                    break;
                }
            }
        }
    });
    axum::response::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, derive_accept_key(&key))
        .body(axum::body::Body::empty())
        .expect("response")
}
