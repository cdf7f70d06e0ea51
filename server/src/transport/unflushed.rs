//! The websocket's socket adapter: writes never block, and the bytes that the socket
//! has not taken yet are counted (`WritePressure`).
//!
//! tungstenite answers every ping with a pong as it reads, and keeps whatever the
//! socket does not take in a buffer of its own that nothing outside can see; a peer
//! that sends pings and never reads would grow it without bound. Here every byte that
//! cannot be written at once waits in this adapter instead, where it is counted, so the
//! reader can stop reading while too much is unflushed (docs/protocol.md §3: pongs count).
//! Flushing still waits for the socket to take everything.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// What the rest of the connection sees of the adapter's backlog.
#[derive(Default)]
pub struct WritePressure {
    unflushed: AtomicUsize,
    /// Notified whenever the socket took some of the backlog.
    progress: Notify,
    /// Notified when the reader wants the backlog written (the writer task flushes).
    flush_wanted: Notify,
}

impl WritePressure {
    /// Bytes accepted from the websocket layer that the socket has not taken yet.
    pub fn unflushed(&self) -> usize {
        self.unflushed.load(Ordering::SeqCst)
    }

    pub fn progress(&self) -> &Notify {
        &self.progress
    }

    pub fn flush_wanted(&self) -> &Notify {
        &self.flush_wanted
    }
}

/// The written front of the backlog is dropped once it is at least this big.
const COMPACT_BYTES: usize = 64 * 1024;

pub struct Unflushed<S> {
    inner: S,
    backlog: Vec<u8>,
    /// How much of `backlog` the socket has taken already.
    written: usize,
    pressure: Arc<WritePressure>,
}

impl<S> Unflushed<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            backlog: Vec::new(),
            written: 0,
            pressure: Arc::default(),
        }
    }

    pub fn pressure(&self) -> Arc<WritePressure> {
        Arc::clone(&self.pressure)
    }
}

impl<S: AsyncWrite + Unpin> Unflushed<S> {
    /// Writes the backlog; ready once all of it is in the socket.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.backlog.len() {
            let pending = &self.backlog[self.written..];
            let n = match Pin::new(&mut self.inner).poll_write(cx, pending) {
                Poll::Ready(written) => written?,
                Poll::Pending => {
                    self.compact();
                    return Poll::Pending;
                }
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
            self.pressure.unflushed.fetch_sub(n, Ordering::SeqCst);
            self.pressure.progress.notify_waiters();
        }
        self.backlog = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Drops the part of the backlog the socket already took once it is the larger
    /// part, so a backlog that never quite empties (a peer reading slowly while it
    /// floods us with pings) does not keep everything it ever held.
    fn compact(&mut self) {
        if self.written >= COMPACT_BYTES && self.written * 2 >= self.backlog.len() {
            self.backlog.drain(..self.written);
            self.backlog.shrink_to(self.backlog.len() * 2);
            self.written = 0;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Unflushed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.poll_drain(cx)?.is_ready() {
            if let Poll::Ready(written) = Pin::new(&mut this.inner).poll_write(cx, data) {
                this.pressure.progress.notify_waiters();
                return Poll::Ready(written);
            }
        }
        // The socket is full: keep the bytes, counted, and report them written.
        this.backlog.extend_from_slice(data);
        this.pressure
            .unflushed
            .fetch_add(data.len(), Ordering::SeqCst);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Unflushed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn writes_to_a_full_socket_are_kept_counted_and_flushed_later() {
        let (near, mut far) = tokio::io::duplex(16);
        let mut adapter = Unflushed::new(near);
        let pressure = adapter.pressure();
        // Never blocks, although the pipe holds only 16 bytes.
        let data: Vec<u8> = (0..100u8).collect();
        tokio::time::timeout(std::time::Duration::from_secs(5), adapter.write_all(&data))
            .await
            .expect("writes do not block")
            .expect("write");
        assert_eq!(pressure.unflushed(), 100 - 16);
        let reader = tokio::spawn(async move {
            let mut received = vec![0u8; 100];
            far.read_exact(&mut received).await.map(|_| received)
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), adapter.flush())
            .await
            .expect("flush completes once the peer reads")
            .expect("flush");
        assert_eq!(pressure.unflushed(), 0);
        assert_eq!(reader.await.expect("task").expect("read"), data);
    }

    #[tokio::test]
    async fn a_backlog_that_never_empties_does_not_keep_what_was_written() {
        let (near, mut far) = tokio::io::duplex(4096);
        let mut adapter = Unflushed::new(near);
        let block = vec![7u8; 16 * 1024];
        let mut received = vec![0u8; block.len()];
        // Three blocks ahead, then each round we write one block and the peer reads
        // one: the backlog never empties, but what it holds stays about the same.
        for _ in 0..3 {
            adapter.write_all(&block).await.expect("write");
        }
        for _ in 0..200 {
            adapter.write_all(&block).await.expect("write");
            let read = far.read_exact(&mut received);
            tokio::pin!(read);
            loop {
                tokio::select! {
                    done = &mut read => {
                        done.expect("read");
                        break;
                    }
                    flushed = adapter.flush() => flushed.expect("flush"),
                }
            }
        }
        assert!(
            adapter.backlog.capacity() < 1024 * 1024,
            "{} bytes of capacity for {} unflushed",
            adapter.backlog.capacity(),
            adapter.pressure.unflushed()
        );
    }
}
