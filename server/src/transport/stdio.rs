//! The stdio transport: JSON Lines on stdin/stdout, one connection per process.
//! Stdout carries protocol frames and nothing else; EOF on stdin is the disconnect.

use std::sync::Arc;

use crate::connection::{self, FrameSource, InboundFrame};
use crate::faults::{self, Fault};
use crate::outbound::{self, OutboundQueue, OUTBOUND_BUDGET_BYTES};
use crate::state::ServerState;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Serves one connection over `input`/`output` (the process's stdin and stdout, or any
/// byte streams) until `input` reaches EOF.
pub async fn serve(
    state: Arc<ServerState>,
    input: impl tokio::io::AsyncRead + Send + Unpin,
    output: impl AsyncWrite + Send + Unpin + 'static,
    limit: usize,
) {
    let (outbound, queue) = outbound::channel(OUTBOUND_BUDGET_BYTES);
    let writer = tokio::spawn(write_lines(output, queue));
    let source = LineSource {
        reader: BufReader::with_capacity(64 * 1024, input),
        limit,
        line: Vec::new(),
        discarding: false,
    };
    // One connection per process: nothing could resume the session later.
    connection::serve(state, source, outbound, false).await;
    // The writer ends once the connection and its session have dropped their senders.
    // A client that closed stdin but never reads stdout must not keep us from exiting.
    let mut writer = writer;
    if tokio::time::timeout(WRITER_GRACE, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

async fn write_lines(mut output: impl AsyncWrite + Unpin, mut queue: OutboundQueue) {
    while let Some(mut batch) = queue.recv().await {
        // The first message is extended in place, so even a very large one is not copied;
        // small ones already queued behind it go out in the same write. Each keeps its
        // room in the budget until the write is done.
        batch.text.push('\n');
        let mut written_with = Vec::new();
        while batch.text.len() < BATCH_BYTES {
            let Ok(mut more) = queue.try_recv() else {
                break;
            };
            batch.text.push_str(&std::mem::take(&mut more.text));
            batch.text.push('\n');
            written_with.push(more);
        }
        let text = batch.text.as_bytes();
        if output.write_all(text).await.is_err() || output.flush().await.is_err() {
            tracing::warn!("stdout closed; dropping outbound messages");
            return;
        }
    }
}

/// How long the writer may keep flushing after the connection ended.
const WRITER_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Queued messages are coalesced into one write up to about this size.
const BATCH_BYTES: usize = 1 << 20;

/// Reads newline-delimited frames, skipping blank lines. A line longer than `limit`
/// is discarded up to its newline and reported as `Oversized`.
struct LineSource<R> {
    reader: R,
    limit: usize,
    /// The partial line read so far; kept across cancellations of `next_frame`.
    line: Vec<u8>,
    discarding: bool,
}

impl<R: AsyncBufRead + Send + Unpin> FrameSource for LineSource<R> {
    async fn next_frame(&mut self) -> Option<InboundFrame> {
        loop {
            let buffer = match self.reader.fill_buf().await {
                Ok(buffer) => buffer,
                Err(err) => {
                    tracing::warn!(%err, "stdin read failed");
                    return None;
                }
            };
            if buffer.is_empty() {
                // EOF: a last line without its newline is still a message.
                if std::mem::take(&mut self.discarding) {
                    return Some(InboundFrame::Oversized { limit: self.limit });
                }
                let line = std::mem::take(&mut self.line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    // Negative control: the EOF goes unnoticed.
                    if faults::active(Fault::SurviveStdinEof) {
                        std::future::pending::<()>().await;
                    }
                    return None;
                }
                return Some(match String::from_utf8(line) {
                    Ok(text) => InboundFrame::Message(text),
                    Err(_) => InboundFrame::NotUtf8,
                });
            }
            let (taken, complete) = match buffer.iter().position(|&byte| byte == b'\n') {
                Some(newline) => (newline + 1, true),
                None => (buffer.len(), false),
            };
            if !self.discarding {
                self.line.extend_from_slice(&buffer[..taken]);
                if self.line.len() > self.limit + 1 {
                    self.line = Vec::new();
                    self.discarding = true;
                }
            }
            self.reader.consume(taken);
            if !complete {
                continue;
            }
            if std::mem::take(&mut self.discarding) {
                return Some(InboundFrame::Oversized { limit: self.limit });
            }
            let line = std::mem::take(&mut self.line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(match String::from_utf8(line) {
                Ok(text) => InboundFrame::Message(text),
                Err(_) => InboundFrame::NotUtf8,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(input: &[u8], limit: usize) -> Vec<String> {
        let mut source = LineSource {
            reader: BufReader::with_capacity(8, input),
            limit,
            line: Vec::new(),
            discarding: false,
        };
        let mut seen = Vec::new();
        while let Some(frame) = source.next_frame().await {
            seen.push(match frame {
                InboundFrame::Message(text) => text.trim_end().to_owned(),
                InboundFrame::Oversized { .. } => "<oversized>".to_owned(),
                InboundFrame::NotUtf8 => "<not-utf8>".to_owned(),
            });
        }
        seen
    }

    #[tokio::test]
    async fn splits_lines_and_skips_blank_ones() {
        assert_eq!(
            frames(b"{\"a\":1}\n\n  \n{\"b\":2}\n", 100).await,
            ["{\"a\":1}", "{\"b\":2}"]
        );
    }

    #[tokio::test]
    async fn a_last_line_without_its_newline_is_still_a_message() {
        assert_eq!(
            frames(b"{\"a\":1}\n{\"b\":2}", 100).await,
            ["{\"a\":1}", "{\"b\":2}"]
        );
        assert_eq!(frames(b"{}\n  ", 100).await, ["{}"]);
        assert_eq!(frames(&[b'x'; 50], 20).await, ["<oversized>"]);
    }

    #[tokio::test]
    async fn oversized_line_is_reported_and_the_next_line_survives() {
        let mut input = vec![b'x'; 50];
        input.extend_from_slice(b"\n{}\n");
        assert_eq!(frames(&input, 20).await, ["<oversized>", "{}"]);
    }

    #[tokio::test]
    async fn invalid_utf8_is_reported() {
        assert_eq!(frames(b"\xff\xfe\n{}\n", 100).await, ["<not-utf8>", "{}"]);
    }
}
