//! The server's end of a child's stdout, stderr or PTY, read only once the child has
//! written something. Waiting holds no buffer: a buffer kept per stream for the life of
//! the process (64 KiB each, calloc'ed, so touched when recycled) made up most of the
//! server's memory per live process.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::pty::PtyMaster;

pub enum OutputReader {
    /// The read end of a pipe, made non-blocking (the child's end stays blocking).
    Pipe(AsyncFd<OwnedFd>),
    Pty(PtyMaster),
}

impl OutputReader {
    /// Hands the read end of a pipe to tokio's reactor. Needs a tokio runtime.
    pub fn pipe(fd: OwnedFd) -> io::Result<OutputReader> {
        let status = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(status | OFlag::O_NONBLOCK))?;
        // SAFETY: an OwnedFd stays open and keeps its number until the AsyncFd drops it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(OutputReader::Pipe(fd))
    }

    fn fd(&self) -> &AsyncFd<OwnedFd> {
        match self {
            OutputReader::Pipe(fd) => fd,
            OutputReader::Pty(master) => master.fd(),
        }
    }

    /// Waits until the child has written something (or closed its end), then reads
    /// what is there now, up to `max` bytes, into a buffer allocated only then. Returns
    /// the bytes, in a buffer no larger than they are (none after a spurious wake-up),
    /// and whether the stream has ended: at EOF, or at a read error (on a PTY master,
    /// EIO once every slave fd is closed is its EOF).
    pub async fn read_chunk(&self, max: usize) -> (Vec<u8>, bool) {
        let Ok(mut ready) = self.fd().readable().await else {
            return (Vec::new(), true);
        };
        let mut chunk = Vec::with_capacity(max);
        let mut at_eof = false;
        while chunk.len() < max {
            let spare = chunk.spare_capacity_mut();
            let wanted = spare.len();
            match ready.try_io(|fd| read(fd.get_ref(), spare)) {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    at_eof = true;
                    break;
                }
                Ok(Ok(n)) => {
                    // SAFETY: read(2) initialised the first `n` bytes of the spare capacity.
                    unsafe { chunk.set_len(chunk.len() + n) };
                    if n < wanted && matches!(self, OutputReader::Pipe(_)) {
                        // A short read emptied the pipe: wait for the next wake-up rather
                        // than asking again at once (as tokio's own reads do). Not on a
                        // PTY, whose reads return at most ~4 KiB however much is queued.
                        ready.clear_ready();
                        break;
                    }
                }
                // Nothing more for now; `try_io` cleared the readiness.
                Err(_would_block) => break,
            }
        }
        // A retained chunk holds just its bytes; glibc's realloc shrinks in place, so
        // this copies nothing (the old code copied every chunk out of a kept buffer).
        chunk.shrink_to_fit();
        (chunk, at_eof)
    }
}

/// read(2) into uninitialised memory; returns how many bytes it initialised.
fn read(fd: &OwnedFd, into: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    loop {
        // SAFETY: read(2) writes at most `into.len()` bytes into `into`, which is valid
        // for writes of that length.
        let n = unsafe { libc::read(fd.as_raw_fd(), into.as_mut_ptr().cast(), into.len()) };
        match usize::try_from(n) {
            Ok(n) => return Ok(n),
            Err(_) => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[tokio::test]
    async fn a_chunk_holds_what_was_there_up_to_max_in_a_buffer_of_its_size() {
        let (read, mut write) = std::io::pipe().expect("pipe");
        let reader = OutputReader::pipe(read.into()).expect("reader");
        write.write_all(&[7; 3000]).expect("write");
        let mut sizes = Vec::new();
        for _ in 0..3 {
            let (chunk, at_eof) = reader.read_chunk(1024).await;
            assert!(!at_eof);
            assert!(chunk.iter().all(|&byte| byte == 7));
            sizes.push((chunk.len(), chunk.capacity()));
        }
        assert_eq!(sizes, [(1024, 1024), (1024, 1024), (952, 952)]);
        write.write_all(b"end").expect("write");
        drop(write);
        let (chunk, _) = reader.read_chunk(1024).await;
        assert_eq!(chunk, b"end");
        // Whether that read saw the EOF too or not, the next one does.
        let (chunk, at_eof) = reader.read_chunk(1024).await;
        assert!(chunk.is_empty() && at_eof);
    }
}
