//! The client side of a connection's two halves: whole messages over a websocket
//! (`ws://` or `wss://`, rustls) or over JSON Lines byte streams. Shared by the client
//! library and the test harness, so there is one implementation of the client wire.

use std::sync::Once;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::token::BearerToken;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub type ByteReader = Box<dyn AsyncRead + Send + Unpin>;
pub type ByteWriter = Box<dyn AsyncWrite + Send + Unpin>;

pub enum FrameWriter {
    WebSocket(SplitSink<Socket, Message>),
    Lines(ByteWriter),
}

pub enum FrameReader {
    WebSocket(SplitStream<Socket>),
    Lines(Lines<BufReader<ByteReader>>),
}

/// What the reader produced.
#[derive(Debug)]
pub enum Frame {
    Text(String),
    /// Not a text frame (a binary websocket frame), described for logs and traces.
    Other(String),
}

/// rustls needs a process-wide crypto provider before the first TLS connection when
/// more than one backend could be linked; installing ours once makes `wss://` work in
/// any binary that uses this crate.
pub(crate) fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err means another provider is already installed, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Opens a websocket to `url` (`ws://` or `wss://`), optionally with a bearer token,
/// with TCP_NODELAY set. A refused upgrade's error carries the HTTP status and the
/// server's explanation.
pub async fn connect_websocket(
    url: &str,
    bearer_token: Option<&BearerToken>,
) -> std::io::Result<(FrameWriter, FrameReader)> {
    install_crypto_provider();
    let mut request = url.into_client_request().map_err(std::io::Error::other)?;
    if let Some(token) = bearer_token {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.secret()))
            .map_err(|_| std::io::Error::other("the token cannot be sent in an HTTP header"))?;
        value.set_sensitive(true);
        request.headers_mut().insert("Authorization", value);
    }
    // The server is trusted to size its messages: an `fs/readFile` result can be far
    // larger than tungstenite's default limits (64 MiB messages, 16 MiB frames).
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let uri = request.uri().clone();
    let (socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .map_err(|err| describe_connect_error(url, &uri, err))?;
    let (sink, stream) = socket.split();
    Ok((FrameWriter::WebSocket(sink), FrameReader::WebSocket(stream)))
}

/// Whether `err` is a failed TLS handshake (rustls reports it through an I/O error).
fn is_tls_failure(err: &tungstenite::Error) -> bool {
    match err {
        tungstenite::Error::Tls(_) => true,
        tungstenite::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::InvalidData
                || io
                    .get_ref()
                    .is_some_and(|inner| inner.is::<rustls::Error>())
        }
        _ => false,
    }
}

/// Says what failed and what to do: start a server, drop a path, try plain `ws://`.
fn describe_connect_error(
    url: &str,
    uri: &tungstenite::http::Uri,
    err: tungstenite::Error,
) -> std::io::Error {
    let authority = uri.authority().map_or("", |authority| authority.as_str());
    let secure = uri.scheme_str() == Some("wss");
    let response = match err {
        tungstenite::Error::Http(response) => response,
        tungstenite::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            let start = match secure {
                false => format!("start one with `exec-server --listen ws://{authority}`"),
                true => format!(
                    "start one (exec-server itself serves plain ws://, e.g. `exec-server --listen ws://{authority}`, so wss:// needs a TLS proxy in front)"
                ),
            };
            return std::io::Error::new(
                io.kind(),
                format!("no exec-server is listening at {url} (connection refused); {start}"),
            );
        }
        err if secure && is_tls_failure(&err) => {
            let plain = format!("ws://{}", &url["wss://".len()..]);
            return std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "TLS handshake with {authority} failed ({err}): the server may speak plain ws:// (exec-server does not do TLS itself); try --connect {plain}"
                ),
            );
        }
        tungstenite::Error::Io(io) => {
            return std::io::Error::new(io.kind(), format!("{url}: {io}"));
        }
        err => return std::io::Error::other(format!("{url}: {err}")),
    };
    const MAX_EXPLANATION_CHARS: usize = 500;
    let explanation: String = response
        .body()
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default()
        .trim()
        .chars()
        .take(MAX_EXPLANATION_CHARS)
        .collect();
    let status = response.status();
    let kind = match status.as_u16() {
        401 | 403 => std::io::ErrorKind::PermissionDenied,
        _ => std::io::ErrorKind::ConnectionRefused,
    };
    let mut message = match explanation.is_empty() {
        true => format!("{url}: the server refused the websocket upgrade: HTTP {status}"),
        false => {
            format!("{url}: the server refused the websocket upgrade: HTTP {status}: {explanation}")
        }
    };
    let path = uri.path();
    if status == tungstenite::http::StatusCode::NOT_FOUND && !matches!(path, "" | "/") {
        let scheme = if secure { "wss" } else { "ws" };
        message.push_str(&format!(
            "; exec-server serves its websocket at / only: drop the path {path} (--connect {scheme}://{authority})"
        ));
    }
    std::io::Error::new(kind, message)
}

/// JSON Lines over a pair of byte streams (a child's stdout and stdin).
pub fn lines(reader: ByteReader, writer: ByteWriter) -> (FrameWriter, FrameReader) {
    (
        FrameWriter::Lines(writer),
        FrameReader::Lines(BufReader::new(reader).lines()),
    )
}

impl FrameWriter {
    pub async fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        match self {
            FrameWriter::WebSocket(sink) => sink
                .send(Message::text(text))
                .await
                .map_err(std::io::Error::other),
            FrameWriter::Lines(writer) => {
                let mut line = String::with_capacity(text.len() + 1);
                line.push_str(text);
                line.push('\n');
                writer.write_all(line.as_bytes()).await?;
                writer.flush().await
            }
        }
    }

    /// A binary websocket frame (raw bytes on a byte stream).
    pub async fn send_binary(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            FrameWriter::WebSocket(sink) => sink
                .send(Message::binary(data.to_vec()))
                .await
                .map_err(std::io::Error::other),
            FrameWriter::Lines(writer) => {
                writer.write_all(data).await?;
                writer.flush().await
            }
        }
    }

    /// A clean close: a websocket Close frame, or EOF on a byte stream.
    pub async fn close(&mut self) {
        match self {
            FrameWriter::WebSocket(sink) => {
                let _ = sink.send(Message::Close(None)).await;
                let _ = sink.close().await;
            }
            FrameWriter::Lines(writer) => {
                let _ = writer.shutdown().await;
            }
        }
    }
}

impl FrameReader {
    /// The next frame, or `None` at end of stream. Cancel-safe.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        match self {
            FrameReader::WebSocket(stream) => loop {
                return match stream.next().await? {
                    Ok(Message::Text(text)) => Some(Frame::Text(text.to_string())),
                    Ok(Message::Binary(data)) => Some(Frame::Other(format!(
                        "binary frame of {} bytes (the protocol sends text)",
                        data.len()
                    ))),
                    Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                    Ok(Message::Close(_)) | Err(_) => None,
                };
            },
            FrameReader::Lines(lines) => lines.next_line().await.ok().flatten().map(Frame::Text),
        }
    }
}

/// Drops a websocket without a Close frame and with a TCP RST, as a crashed peer would.
pub fn reset(writer: FrameWriter, reader: FrameReader) {
    if let (FrameWriter::WebSocket(sink), FrameReader::WebSocket(stream)) = (writer, reader) {
        if let Ok(socket) = sink.reunite(stream) {
            if let MaybeTlsStream::Plain(tcp) = socket.get_ref() {
                let _ = tcp.set_zero_linger();
            }
        }
    }
}
