//! Client ids (`x-mq-client-id`) and the host facts sent in the user agent.
//!
//! Servers key per-client state (settings, transaction checks, assignments) by the client id, so
//! every client object gets its own: `host@pid@index@base36(nanos)`, as the Java client.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

static INDEX: AtomicU32 = AtomicU32::new(0);

/// A new client id, unique within this process and very likely across hosts.
pub(crate) fn next_client_id() -> String {
    let index = INDEX.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "{}@{}@{}@{}",
        host_name(),
        std::process::id(),
        index,
        base36(nanos)
    )
}

/// This host's name, reduced to characters that are safe in a header; `localhost` when it
/// cannot be read.
pub(crate) fn host_name() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .unwrap_or_default();
        let clean: String = raw
            .trim()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            .collect();
        if clean.is_empty() {
            "localhost".to_owned()
        } else {
            clean
        }
    })
}

/// Operating system and architecture, e.g. `linux x86_64`.
pub(crate) fn platform() -> String {
    format!("{} {}", std::env::consts::OS, std::env::consts::ARCH)
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".to_owned();
    }
    let mut out = Vec::with_capacity(13);
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    out.into_iter().map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_digits() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(base36(u64::MAX), "3w5e11264sgsf");
    }

    #[test]
    fn ids_are_distinct_and_header_safe() {
        let a = next_client_id();
        let b = next_client_id();
        assert_ne!(a, b);
        assert_eq!(a.split('@').count(), 4);
        assert!(a.bytes().all(|c| (0x21..0x7f).contains(&c)));
    }
}
