//! Capped in-memory pipes for a guest's stdout and stderr. stdout past its cap traps the guest
//! (the attempt ends as `output_limit`); stderr past its cap keeps the first bytes, drops the
//! rest and marks the log truncated. Nothing here interprets what the guest writes.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// What happens when a write would pass the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Overflow {
    /// Refuse the write and trap the guest (stdout: the result must be whole or absent).
    Trap,
    /// Keep what fits, drop the rest, remember it (stderr: a log may be cut).
    Truncate,
}

/// The error a full stdout traps the guest with; found again when classifying.
#[derive(Debug, thiserror::Error)]
#[error("stdout exceeded its cap of {0} bytes")]
pub(super) struct OutputLimitExceeded(pub(super) u64);

#[derive(Debug, Default)]
struct Buffer {
    bytes: Vec<u8>,
    overflowed: bool,
}

/// A capped pipe; clones share one buffer, so the host keeps a handle after the store is gone.
#[derive(Debug, Clone)]
pub(super) struct CappedPipe {
    cap: u64,
    overflow: Overflow,
    buffer: Arc<Mutex<Buffer>>,
}

impl CappedPipe {
    pub(super) fn new(cap: u64, overflow: Overflow) -> Self {
        Self {
            cap,
            overflow,
            buffer: Arc::default(),
        }
    }

    /// Takes the bytes written so far and whether any write passed the cap.
    pub(super) fn take(&self) -> (Vec<u8>, bool) {
        let mut b = self.lock();
        (std::mem::take(&mut b.bytes), b.overflowed)
    }

    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // A poisoned buffer only means a panic elsewhere; the bytes are still whole.
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends what fits; returns false when something did not fit.
    fn append(&self, data: &[u8]) -> bool {
        let mut b = self.lock();
        let room = (self.cap as usize).saturating_sub(b.bytes.len());
        if data.len() <= room {
            b.bytes.extend_from_slice(data);
            return true;
        }
        b.overflowed = true;
        if self.overflow == Overflow::Truncate {
            b.bytes.extend_from_slice(&data[..room]);
        }
        false
    }
}

impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if self.append(&bytes) || self.overflow == Overflow::Truncate {
            return Ok(());
        }
        Err(StreamError::Trap(OutputLimitExceeded(self.cap).into()))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always accept a full chunk: the cap is enforced in `write`, so a guest that writes
        // too much learns it there (trap or truncation) rather than waiting forever.
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CappedPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.append(buf) || self.overflow == Overflow::Truncate {
            return Poll::Ready(Ok(buf.len()));
        }
        Poll::Ready(Err(io::Error::other(OutputLimitExceeded(self.cap))))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_refuses_the_write_that_passes_the_cap() {
        let mut p = CappedPipe::new(4, Overflow::Trap);
        assert!(p.write(Bytes::from_static(b"abc")).is_ok());
        assert!(matches!(
            p.write(Bytes::from_static(b"de")),
            Err(StreamError::Trap(_))
        ));
        assert_eq!(p.take(), (b"abc".to_vec(), true));
    }

    #[test]
    fn stderr_keeps_the_head_and_marks_truncation() {
        let mut p = CappedPipe::new(4, Overflow::Truncate);
        p.write(Bytes::from_static(b"abc")).unwrap();
        p.write(Bytes::from_static(b"def")).unwrap();
        assert_eq!(p.take(), (b"abcd".to_vec(), true));
    }
}
