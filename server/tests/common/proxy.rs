//! A TCP proxy in front of a websocket server under test, counting the bytes it forwards
//! to the server, whose open connections a test can cut to force a websocket drop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use exec_client::{ClientOptions, ExecServerClient, ExecServerTransport};
use exec_server_harness::{ExecServer, HarnessError, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    /// The proxy's `ws://` URL.
    pub url: String,
    to_server: Arc<AtomicU64>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    /// Bytes forwarded to the server so far, over every connection.
    pub fn bytes_to_server(&self) -> u64 {
        self.to_server.load(Ordering::SeqCst)
    }

    /// Cuts every connection open through the proxy now; later ones go through.
    pub fn cut(&self) {
        self.cut.send_modify(|cuts| *cuts += 1);
    }
}

/// Forwards every connection accepted on `listener` to `upstream` (`host:port`). The
/// server must accept the proxy's address as a `Host` (`--allow-host`), as behind any
/// real proxy. Each direction is shut down when the other side ends it.
pub fn proxy_to(listener: TcpListener, upstream: String) -> std::io::Result<Proxy> {
    let url = format!("ws://{}", listener.local_addr()?);
    let to_server = Arc::new(AtomicU64::new(0));
    let (cut, cuts) = tokio::sync::watch::channel(0u64);
    let counter = Arc::clone(&to_server);
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let mut cuts = cuts.clone();
            cuts.borrow_and_update();
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut from_client, mut to_client) = inbound.into_split();
                let (mut from_server, mut to_upstream) = outbound.into_split();
                let up = async {
                    let mut buffer = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = from_client.read(&mut buffer).await {
                        if to_upstream.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                        counter.fetch_add(n as u64, Ordering::SeqCst);
                    }
                    let _ = to_upstream.shutdown().await;
                };
                let down = async {
                    let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                    let _ = to_client.shutdown().await;
                };
                tokio::select! {
                    _ = async { tokio::join!(up, down) } => {}
                    _ = cuts.changed() => {}
                }
            });
        }
    });
    Ok(Proxy {
        url,
        to_server,
        cut,
    })
}

/// Starts the real binary on a websocket with `args`, allowing the proxy's address as a
/// `Host`, and a [`Proxy`] in front of it. Keep the server: dropping it stops it.
pub async fn server_behind_proxy(args: &[&str]) -> Result<(ExecServer, Proxy), HarnessError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let proxy_host = listener.local_addr()?.to_string();
    let mut args = args.to_vec();
    args.extend(["--allow-host", &proxy_host]);
    let server = super::start_server(Transport::WebSocket, &args).await?;
    let upstream = server
        .url()
        .expect("url")
        .trim_start_matches("ws://")
        .to_owned();
    let proxy = proxy_to(listener, upstream)?;
    Ok((server, proxy))
}

/// A client connected through `proxy` that reconnects for up to `reconnect`.
pub async fn reconnecting_client(proxy: &Proxy, reconnect: Duration) -> ExecServerClient {
    let options = ClientOptions {
        reconnect: Some(reconnect),
        ..ClientOptions::default()
    };
    ExecServerClient::connect(
        ExecServerTransport::WebSocketUrl(proxy.url.clone()),
        options,
    )
    .await
    .expect("connect")
}
