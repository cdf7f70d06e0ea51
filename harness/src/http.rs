//! Plain HTTP/1.1 requests to a websocket server's listener (`/readyz`, refused
//! upgrades): the response head, its status code, and a body sent with a
//! `Content-Length`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{HarnessError, Result};
use crate::server::ExecServer;
use crate::wait::bounded;

/// An HTTP response: its head (status line and headers) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpHead {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The head as received, up to and including the blank line.
    pub text: String,
    /// The body, as text (lossy), when the response gave a `Content-Length` of at most
    /// [`MAX_HTTP_BODY_BYTES`]; empty otherwise (and after an accepted upgrade).
    pub body: String,
}

/// The largest body [`http_head`] reads.
pub const MAX_HTTP_BODY_BYTES: usize = 1 << 20;

/// One HTTP/1.1 request to the listener of a websocket server.
#[derive(Debug, Clone)]
pub struct HttpRequest<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The request target, e.g. `/readyz`.
    pub target: &'a str,
    /// The `Host` header; the server's own `IP:PORT` when `None`.
    pub host: Option<&'a str>,
    /// More headers, sent as given.
    pub headers: &'a [(&'a str, &'a str)],
}

impl<'a> HttpRequest<'a> {
    /// `GET target` with the server's own `Host` and no other headers.
    pub fn get(target: &'a str) -> Self {
        Self {
            method: "GET",
            target,
            host: None,
            headers: &[],
        }
    }
}

impl ExecServer {
    /// Sends `request` to this websocket server's listener and returns the response
    /// head, within the default deadline.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), exec_server_harness::HarnessError> {
    /// use exec_server_harness::HttpRequest;
    /// let server = exec_server_harness::exec_server().await?;
    /// assert_eq!(server.http(HttpRequest::get("/readyz")).await?.status, 200);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn http(&self, request: HttpRequest<'_>) -> Result<HttpHead> {
        let url = self
            .url()
            .ok_or_else(|| HarnessError::Unsupported("a stdio server has no listener".into()))?;
        http_head(url, request, self.default_wait()).await
    }
}

/// Sends `request` to the server at `url` (`ws://IP:PORT`) and returns the response
/// head, read within `within` (not scaled: pass a scaled duration).
pub async fn http_head(url: &str, request: HttpRequest<'_>, within: Duration) -> Result<HttpHead> {
    let addr = url.trim_start_matches("ws://").trim_end_matches('/');
    let host = request.host.unwrap_or(addr);
    let mut text = format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n",
        request.method, request.target
    );
    for (name, value) in request.headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(text.as_bytes()).await?;
        // Byte by byte up to the blank line: an accepted upgrade keeps the socket open.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await? == 1 {
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let mut body = vec![0; body_length(&head)];
        stream.read_exact(&mut body).await?;
        Ok((head, String::from_utf8_lossy(&body).into_owned()))
    };
    let (head, body) =
        bounded(|| format!("an HTTP response from {addr}"), within, exchange).await?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| HarnessError::protocol(format!("no HTTP status line in {head:?}")))?;
    Ok(HttpHead {
        status,
        text: head,
        body,
    })
}

/// The `Content-Length` of a response head, if it is not an upgrade and at most
/// [`MAX_HTTP_BODY_BYTES`]; else 0.
fn body_length(head: &str) -> usize {
    if head.split(' ').nth(1) == Some("101") {
        return 0;
    }
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .filter(|length| *length <= MAX_HTTP_BODY_BYTES)
        .unwrap_or(0)
}
