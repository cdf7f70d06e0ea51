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
    let (socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .map_err(describe_connect_error)?;
    let (sink, stream) = socket.split();
    Ok((FrameWriter::WebSocket(sink), FrameReader::WebSocket(stream)))
}

fn describe_connect_error(err: tungstenite::Error) -> std::io::Error {
    let tungstenite::Error::Http(response) = err else {
        return std::io::Error::other(err);
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
    let message = match explanation.is_empty() {
        true => format!("the server refused the websocket upgrade: HTTP {status}"),
        false => format!("the server refused the websocket upgrade: HTTP {status}: {explanation}"),
    };
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
