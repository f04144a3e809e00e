//! A connection whose HTTP/2 client preface was already read (to enforce the handshake
//! deadline) and is replayed to the HTTP/2 server before the rest of the stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface every HTTP/2 connection starts with (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// `inner` with [`PREFACE`] put back in front of its unread bytes; writes pass straight through.
#[derive(Debug)]
pub(crate) struct Rewind<IO> {
    replayed: usize,
    inner: IO,
}

impl<IO> Rewind<IO> {
    /// `inner` must have yielded exactly the preface so far.
    pub(crate) fn new(inner: IO) -> Self {
        Rewind { replayed: 0, inner }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.replayed < PREFACE.len() {
            let rest = &PREFACE[this.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn replays_the_preface_then_the_stream_even_through_tiny_reads() {
        let rest: &[u8] = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00";
        let mut io = Rewind::new(rest);
        let mut got = Vec::new();
        let mut byte = [0u8; 5];
        loop {
            let n = io.read(&mut byte).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&byte[..n]);
        }
        assert_eq!(&got[..24], PREFACE);
        assert_eq!(&got[24..], rest);
    }
}
