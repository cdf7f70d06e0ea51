//! A minimal client: one websocket (tokio-tungstenite) or one pair of pipes carrying
//! JSON Lines, frames classified with `exec-protocol`, requests built from its typed
//! params. It does as little as a client can, so the figures are the server's.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use exec_protocol::{
    classify, encode_notification, encode_request, Call, InitializeParams, Initialized, Message,
    Notify, RequestId,
};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::unix::pipe;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The longest any single frame may take to arrive before the wait is an error.
pub const FRAME_DEADLINE: Duration = Duration::from_secs(30);

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One connection, on either transport.
pub enum Conn {
    Ws(Box<WsStream>),
    Lines {
        writer: pipe::Sender,
        reader: BufReader<pipe::Receiver>,
        line: String,
    },
}

impl Conn {
    pub async fn websocket(url: &str) -> Result<Conn> {
        let (stream, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url),
        )
        .await
        .map_err(|_| anyhow!("connecting to {url} timed out"))?
        .with_context(|| format!("connecting to {url}"))?;
        Ok(Conn::Ws(Box::new(stream)))
    }

    /// JSON Lines over a child's stdin and stdout.
    pub fn lines(
        stdin: impl Into<std::os::fd::OwnedFd>,
        stdout: impl Into<std::os::fd::OwnedFd>,
    ) -> Result<Conn> {
        let writer = pipe::Sender::from_owned_fd(stdin.into())?;
        let reader = pipe::Receiver::from_owned_fd(stdout.into())?;
        Ok(Conn::Lines {
            writer,
            reader: BufReader::with_capacity(1 << 20, reader),
            line: String::new(),
        })
    }

    /// Queues a frame without flushing (websocket) — see [`Conn::flush`].
    pub async fn feed(&mut self, frame: String) -> Result<()> {
        match self {
            Conn::Ws(ws) => ws.feed(WsMessage::text(frame)).await?,
            Conn::Lines { writer, .. } => {
                let mut bytes = frame.into_bytes();
                bytes.push(b'\n');
                writer.write_all(&bytes).await?;
            }
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<()> {
        match self {
            Conn::Ws(ws) => ws.flush().await?,
            Conn::Lines { writer, .. } => writer.flush().await?,
        }
        Ok(())
    }

    pub async fn send(&mut self, frame: String) -> Result<()> {
        self.feed(frame).await?;
        self.flush().await
    }

    /// The next text frame (or line), within [`FRAME_DEADLINE`].
    pub async fn recv(&mut self) -> Result<String> {
        tokio::time::timeout(FRAME_DEADLINE, self.recv_unbounded())
            .await
            .map_err(|_| anyhow!("no frame within {FRAME_DEADLINE:?}"))?
    }

    async fn recv_unbounded(&mut self) -> Result<String> {
        match self {
            Conn::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(WsMessage::Text(text))) => return Ok(text.as_str().to_owned()),
                    Some(Ok(WsMessage::Binary(bytes))) => {
                        return String::from_utf8(bytes.to_vec()).context("binary frame not UTF-8")
                    }
                    Some(Ok(WsMessage::Close(_))) | None => bail!("connection closed"),
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => return Err(error.into()),
                }
            },
            Conn::Lines { reader, line, .. } => loop {
                line.clear();
                if reader.read_line(line).await? == 0 {
                    bail!("connection closed (EOF)");
                }
                if !line.trim().is_empty() {
                    return Ok(line.trim_end().to_owned());
                }
            },
        }
    }

    /// Closes politely (websocket) or drops the pipes.
    pub async fn close(self) {
        if let Conn::Ws(mut ws) = self {
            // A Close frame through the sink: the stream's own `close` differs between
            // the feature sets this crate is built with (alone, or in the workspace).
            let close = tokio_tungstenite::tungstenite::Message::Close(None);
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.send(close)).await;
        }
    }
}

/// An initialized session on one connection, with request ids counted from 1.
pub struct Session {
    pub conn: Conn,
    pub session_id: String,
    next_id: u64,
}

impl Session {
    /// `initialize` (optionally resuming) then `initialized`.
    pub async fn open(conn: Conn, resume: Option<String>) -> Result<Session> {
        let mut session = Session {
            conn,
            session_id: String::new(),
            next_id: 1,
        };
        let result = session
            .call(&InitializeParams {
                client_name: "exec-bench".into(),
                resume_session_id: resume,
            })
            .await?;
        session.session_id = result.session_id;
        let initialized = encode_notification(Initialized::METHOD.as_str(), &Initialized {});
        session.conn.send(initialized).await?;
        Ok(session)
    }

    /// The next request id, as it will be echoed.
    fn next_id(&mut self) -> RequestId {
        let id = RequestId::from(self.next_id);
        self.next_id += 1;
        id
    }

    /// Queues a request (not flushed); returns its id.
    pub async fn feed<C: Call>(&mut self, params: &C) -> Result<RequestId> {
        let id = self.next_id();
        let frame = encode_request(&id, C::METHOD.as_str(), params);
        self.conn.feed(frame).await?;
        Ok(id)
    }

    /// Sends a request and waits for its response, skipping notifications and other
    /// responses.
    pub async fn call<C: Call>(&mut self, params: &C) -> Result<C::Result> {
        let id = self.feed(params).await?;
        self.conn.flush().await?;
        loop {
            match classify(&self.conn.recv().await?) {
                Message::Response { id: got, result } if got == id => {
                    return serde_json::from_value(result)
                        .with_context(|| format!("decoding the {} result", C::METHOD));
                }
                Message::Error {
                    id: Some(got),
                    error,
                } if got == id => bail!("{} failed: {} {}", C::METHOD, error.code, error.message),
                _ => continue,
            }
        }
    }

    /// The next frame, classified.
    pub async fn next(&mut self) -> Result<Message> {
        Ok(classify(&self.conn.recv().await?))
    }
}

/// The decoded size of a standard base64 string, without decoding it.
pub fn base64_len(text: &str) -> u64 {
    let padding = text.bytes().rev().take_while(|&b| b == b'=').count() as u64;
    // Saturating: a malformed chunk (e.g. "==") must not wrap to 2^64 bytes.
    ((text.len() as u64 / 4) * 3).saturating_sub(padding)
}

/// If `message` is a notification named `method` about `process_id`, its params.
pub fn notification_for(
    message: &Message,
    method: exec_protocol::NotificationMethod,
) -> Option<&serde_json::Value> {
    match message {
        Message::Notification { method: m, params } if m == method.as_str() => Some(params),
        _ => None,
    }
}
