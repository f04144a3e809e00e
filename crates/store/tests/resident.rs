//! The resident window: mapped commit-log and consume-queue pages behind the recent log are
//! released from the process's resident set, and everything stays readable and intact.

mod common;

use common::{async_mode, config, msg, read_all, wait_dispatched, wait_until};
use rocketlog_store::Store;
use std::path::Path;
use std::time::Duration;

/// Resident kB of this process's mappings of files under `dir`, from `/proc/self/smaps`.
fn resident_kb_under(dir: &Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
    let prefix = dir.to_string_lossy().into_owned();
    let mut total = 0;
    let mut inside = false;
    for line in smaps.lines() {
        let mut parts = line.split_whitespace();
        let first = parts.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            inside = parts.nth(4).is_some_and(|path| path.starts_with(&prefix));
            continue;
        }
        if inside && first == "Rss:" {
            total += parts
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

const SEGMENT: u64 = 4 << 20;
const WINDOW: u64 = 2 << 20;
const BODY: usize = 4000;
const MESSAGES: usize = 8000; // about 32 MiB of log: 8 segments

fn body(i: usize) -> Vec<u8> {
    let mut b = format!("{i:08}").into_bytes();
    b.resize(BODY, (i % 251) as u8);
    b
}

#[test]
fn pages_behind_the_window_leave_the_resident_set_and_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), SEGMENT, async_mode());
    cfg.resident_window = Some(WINDOW);
    cfg.prefault_window = Some(0);
    cfg.consume_queue_segment_entries = 1000;
    cfg.checkpoint_interval = Duration::from_millis(20);
    let store = Store::open(cfg).unwrap();
    for i in 0..MESSAGES {
        store.append(msg("T", 0, &body(i))).unwrap();
    }
    wait_dispatched(&store);
    let written_kb = store.log_range().1 .0 / 1024;
    assert!(written_kb > 30_000, "{written_kb} kB written");
    // Window + the segment being written + the newest consume-queue file, with slack for
    // the index (its own files) and rounding.
    let bound_kb = (WINDOW + SEGMENT) / 1024 + 2048;
    let resident = || resident_kb_under(dir.path());
    wait_until("the resident set to shrink to the window", || {
        resident() <= bound_kb
    });

    // Old records read back intact (mapped again on demand), then released again.
    let all = read_all(&store, "T", 0);
    assert_eq!(all.len(), MESSAGES);
    for (i, m) in all.iter().enumerate() {
        assert_eq!(m.body, body(i), "message {i}");
    }
    wait_until("the pages read back to be released again", || {
        resident() <= bound_kb
    });

    // Released dirty pages still reach the disk: a restart reads them all.
    store.shutdown().unwrap();
    let store = Store::open(config(dir.path(), SEGMENT, async_mode())).unwrap();
    wait_dispatched(&store);
    let again = read_all(&store, "T", 0);
    assert_eq!(again.len(), MESSAGES);
    assert!(again.iter().enumerate().all(|(i, m)| m.body == body(i)));
}

#[test]
fn without_a_window_every_page_stays_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), SEGMENT, async_mode());
    cfg.resident_window = None;
    cfg.prefault_window = Some(0);
    cfg.checkpoint_interval = Duration::from_millis(20);
    let store = Store::open(cfg).unwrap();
    for i in 0..MESSAGES / 2 {
        store.append(msg("T", 0, &body(i))).unwrap();
    }
    wait_dispatched(&store);
    let written_kb = store.log_range().1 .0 / 1024;
    // Also a check of the measurement the other test relies on.
    assert!(
        resident_kb_under(dir.path()) >= written_kb * 9 / 10,
        "{} kB resident of {written_kb} kB written",
        resident_kb_under(dir.path())
    );
}
