//! Process limits and repeated-event logging for the accept loop.

use std::time::{Duration, Instant};

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Highest soft file-descriptor limit asked for: Linux refuses more than `fs.nr_open`
/// (1,048,576 by default) even when the hard limit says unlimited.
const FD_LIMIT_CEILING: u64 = 1 << 20;
/// Descriptors kept back from client connections for the store's segment, consume-queue and
/// index files, the nameserver links and logs: half of a small limit, at most this many.
const FD_RESERVE_MAX: u64 = 1024;

/// The file-descriptor limit after [`raise_fd_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit now in force.
    pub soft: u64,
    /// The soft limit before, when it was raised.
    pub raised_from: Option<u64>,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (as most servers do at start: the
/// default soft limit of 1,024 is far below what a broker with many clients needs). `None`
/// when the limit cannot be read; a refused raise is logged and the old limit kept.
pub fn raise_fd_limit() -> Option<FdLimit> {
    let now = getrlimit(Resource::Nofile);
    let soft = now.current?;
    let target = now.maximum.unwrap_or(u64::MAX).min(FD_LIMIT_CEILING);
    if target <= soft {
        return Some(FdLimit {
            soft,
            raised_from: None,
        });
    }
    let raised = Rlimit {
        current: Some(target),
        maximum: now.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::info!(from = soft, to = target, "raised the file-descriptor limit");
            Some(FdLimit {
                soft: target,
                raised_from: Some(soft),
            })
        }
        Err(e) => {
            tracing::warn!(limit = soft, error = %e, "could not raise the file-descriptor limit");
            Some(FdLimit {
                soft,
                raised_from: None,
            })
        }
    }
}

/// How many client connections the current soft file-descriptor limit leaves room for, and
/// that limit: the limit less a reserve of half of it, at most 1,024. `None`
/// when the limit is unlimited or cannot be read.
pub fn connection_budget() -> Option<(usize, u64)> {
    let soft = getrlimit(Resource::Nofile).current?;
    Some((budget_for(soft), soft))
}

fn budget_for(soft: u64) -> usize {
    let budget = soft - (soft / 2).min(FD_RESERVE_MAX);
    usize::try_from(budget).unwrap_or(usize::MAX)
}

/// The server's answer to a connection past the limit: its HTTP/2 preface (an empty
/// SETTINGS frame) and a GOAWAY with last stream 0, error ENHANCE_YOUR_CALM and the reason
/// as debug data (RFC 9113 §6.5, §6.8).
pub(crate) const REFUSAL: &[u8] = &{
    const REASON: &[u8] = b"connection limit reached";
    const GOAWAY_LEN: usize = 8 + REASON.len();
    let mut out = [0u8; 9 + 9 + GOAWAY_LEN];
    // SETTINGS: length 0, type 0x4, no flags, stream 0.
    out[3] = 0x4;
    // GOAWAY: 24-bit length, type 0x7, no flags, stream 0.
    out[9 + 2] = GOAWAY_LEN as u8;
    out[9 + 3] = 0x7;
    // Last stream id 0 (bytes 18..22), then the error code ENHANCE_YOUR_CALM (0xb).
    out[18 + 7] = 0xb;
    let mut i = 0;
    while i < REASON.len() {
        out[26 + i] = REASON[i];
        i += 1;
    }
    out
};

/// Lets one of a burst of identical events be logged per interval and counts the rest.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Records one event: `Some(events suppressed since the last logged one)` when this one
    /// should be logged.
    pub(crate) fn hit(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_logs_the_first_of_a_burst_and_counts_the_rest() {
        let mut t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.hit(), Some(0));
        assert_eq!((0..159).filter_map(|_| t.hit()).count(), 0);
        t.last = Some(Instant::now() - Duration::from_secs(3601));
        assert_eq!(t.hit(), Some(159));
    }

    #[test]
    fn refusal_is_a_settings_frame_then_a_goaway_naming_the_reason() {
        assert_eq!(&REFUSAL[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let goaway = &REFUSAL[9..];
        let len = u32::from_be_bytes([0, goaway[0], goaway[1], goaway[2]]) as usize;
        assert_eq!(len, goaway.len() - 9);
        assert_eq!(goaway[3], 7, "frame type GOAWAY");
        assert_eq!(&goaway[5..9], &[0, 0, 0, 0], "connection-level frame");
        assert_eq!(&goaway[9..13], &[0, 0, 0, 0], "last stream id");
        assert_eq!(&goaway[13..17], &[0, 0, 0, 0xb], "ENHANCE_YOUR_CALM");
        assert_eq!(&goaway[17..], b"connection limit reached");
    }

    #[test]
    fn the_budget_keeps_half_of_a_small_limit_and_at_most_1024_of_a_large_one() {
        assert_eq!(budget_for(256), 128);
        assert_eq!(budget_for(1024), 512);
        assert_eq!(budget_for(4096), 3072);
        assert_eq!(budget_for(1 << 20), (1 << 20) - 1024);
    }
}
