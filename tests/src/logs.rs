//! Server logs of one in-process cluster, kept in memory and shown only when a test fails.
//!
//! Every test runs its own cluster on its own tokio runtime; each worker and blocking thread of
//! that runtime gets this buffer's subscriber as its thread default, so concurrent tests never
//! mix their logs (threads the store starts itself log to the process default, i.e. nowhere).

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use tracing_subscriber::EnvFilter;

/// Environment variable with a `tracing` filter for the servers' logs in tests.
pub const LOG_FILTER_ENV: &str = "ROCKETLOG_TEST_LOG";
/// What servers log in tests unless [`LOG_FILTER_ENV`] says otherwise.
const DEFAULT_FILTER: &str = "info,rocketlog_broker=debug,rocketlog_store=debug";
/// Bytes kept; beyond this the oldest half is dropped (a runaway log must not eat the memory).
const MAX_BYTES: usize = 8 << 20;

/// A cheap-to-clone, bounded in-memory log.
#[derive(Debug, Clone, Default)]
pub struct LogBuffer {
    inner: Arc<Mutex<Buffer>>,
}

#[derive(Debug, Default)]
struct Buffer {
    bytes: Vec<u8>,
    dropped: usize,
}

impl LogBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// A dispatcher writing formatted events (no colours) into this buffer.
    pub fn dispatch(&self) -> tracing::Dispatch {
        let filter = EnvFilter::try_from_env(LOG_FILTER_ENV)
            .unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_thread_names(true)
            .with_writer(move || writer.clone())
            .finish();
        tracing::Dispatch::new(subscriber)
    }

    /// Everything logged so far (with a note when older lines were dropped).
    pub fn contents(&self) -> String {
        let b = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let text = String::from_utf8_lossy(&b.bytes);
        if b.dropped > 0 {
            format!("[... {} older bytes dropped ...]\n{text}", b.dropped)
        } else {
            text.into_owned()
        }
    }
}

impl io::Write for LogBuffer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut b = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        b.bytes.extend_from_slice(data);
        if b.bytes.len() > MAX_BYTES {
            let cut = b.bytes.len() - MAX_BYTES / 2;
            b.bytes.drain(..cut);
            b.dropped += cut;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn keeps_what_is_logged_and_bounds_it() {
        let log = LogBuffer::new();
        tracing::dispatcher::with_default(&log.dispatch(), || tracing::info!(answer = 42, "hello"));
        let text = log.contents();
        assert!(
            text.contains("hello") && text.contains("answer=42"),
            "{text}"
        );

        let mut w = log.clone();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..12 {
            w.write_all(&chunk).unwrap();
        }
        let text = log.contents();
        assert!(text.len() <= MAX_BYTES + 100, "{}", text.len());
        assert!(text.starts_with("[... "), "dropped bytes are announced");
    }
}
