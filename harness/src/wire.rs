//! One connection's two halves: a writer that sends whole messages and a reader that
//! yields whole messages, over a websocket or over JSON Lines byte streams.

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

pub(crate) type Socket = WebSocketStream<TcpStream>;
pub(crate) type ByteReader = Box<dyn AsyncRead + Send + Unpin>;
pub(crate) type ByteWriter = Box<dyn AsyncWrite + Send + Unpin>;

pub(crate) enum Writer {
    Ws(SplitSink<Socket, Message>),
    Lines(ByteWriter),
}

pub(crate) enum Reader {
    Ws(SplitStream<Socket>),
    Lines(Lines<BufReader<ByteReader>>),
}

/// What the reader produced.
pub(crate) enum Frame {
    Text(String),
    /// A frame that is not text (binary websocket frame), kept for the trace.
    Other(String),
}

pub(crate) async fn connect_ws(url: &str) -> std::io::Result<(Writer, Reader)> {
    let addr = url
        .strip_prefix("ws://")
        .ok_or_else(|| std::io::Error::other(format!("not a ws:// URL: {url}")))?;
    let stream = TcpStream::connect(addr.trim_end_matches('/')).await?;
    stream.set_nodelay(true)?;
    let (socket, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(std::io::Error::other)?;
    let (sink, stream) = socket.split();
    Ok((Writer::Ws(sink), Reader::Ws(stream)))
}

pub(crate) fn lines(reader: ByteReader, writer: ByteWriter) -> (Writer, Reader) {
    (
        Writer::Lines(writer),
        Reader::Lines(BufReader::new(reader).lines()),
    )
}

impl Writer {
    pub async fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        match self {
            Writer::Ws(sink) => sink
                .send(Message::text(text))
                .await
                .map_err(std::io::Error::other),
            Writer::Lines(writer) => {
                let mut line = String::with_capacity(text.len() + 1);
                line.push_str(text);
                line.push('\n');
                writer.write_all(line.as_bytes()).await?;
                writer.flush().await
            }
        }
    }

    pub async fn send_binary(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Writer::Ws(sink) => sink
                .send(Message::binary(data.to_vec()))
                .await
                .map_err(std::io::Error::other),
            Writer::Lines(writer) => {
                writer.write_all(data).await?;
                writer.flush().await
            }
        }
    }

    /// A clean close: a websocket Close frame, or EOF on a byte stream.
    pub async fn close(&mut self) {
        match self {
            Writer::Ws(sink) => {
                let _ = sink.send(Message::Close(None)).await;
                let _ = sink.close().await;
            }
            Writer::Lines(writer) => {
                let _ = writer.shutdown().await;
            }
        }
    }
}

impl Reader {
    /// The next frame, or `None` at end of stream. Cancel-safe.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        match self {
            Reader::Ws(stream) => loop {
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
            Reader::Lines(lines) => lines.next_line().await.ok().flatten().map(Frame::Text),
        }
    }
}

/// Drops a websocket without a Close frame and with a TCP RST, as a crashed peer would.
pub(crate) fn reset(writer: Writer, reader: Reader) {
    if let (Writer::Ws(sink), Reader::Ws(stream)) = (writer, reader) {
        if let Ok(socket) = sink.reunite(stream) {
            let _ = socket.get_ref().set_zero_linger();
        }
    }
}
