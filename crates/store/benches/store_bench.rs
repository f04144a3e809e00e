//! Store benchmark (`cargo bench -p rocketlog-store`), one run, its own timing:
//!
//! - (a) disk baseline: sequential `write` of the big-run size with std::fs, then one fdatasync;
//! - (b) Async appends of 1 KiB records from one thread: a 256 MiB burst (records/s) and a big
//!   run (default 2 GiB) timed up to the final flush, compared with (a);
//! - (c) Sync appends from 1, 8 and 64 threads for a bounded time, with p50/p99 latency, next
//!   to the latency of one bare write + fdatasync of 1 and of 64 KiB (appending to a growing
//!   file, into preallocated space and into zero-filled space: the bound of group commit
//!   differs with each); then 1 and 64 appenders as tokio tasks on a 2-worker
//!   runtime (how the broker drives the store); measured in the steady state, after the first
//!   64 MiB segment (see `open_steady_sync`), and single appenders both in a segment
//!   zero-filled under earlier load and in one a light load left merely allocated;
//! - (d) sequential read of one queue through its consume queue.
//!
//! Environment: `ROCKETLOG_BENCH_DIR` (parent of the temp data dir; default the target's tmp
//! dir — keep it off tmpfs), `ROCKETLOG_BENCH_BIG_BYTES` (default 2 GiB),
//! `ROCKETLOG_BENCH_BURST_BYTES` (default 256 MiB), `ROCKETLOG_BENCH_SYNC_SECS` (default 3),
//! `ROCKETLOG_BENCH_PREFAULT_WINDOW` (bytes; default: the store's mode-dependent default),
//! `ROCKETLOG_BENCH_ZERO_FILL` (`1`/`0`: zero-fill segments prepared ahead or not; default:
//! the store's default), `ROCKETLOG_BENCH_IDLE_MS` (idle time after the first append of an async run, default 2000),
//! `ROCKETLOG_BENCH_ONLY` (sections to run, e.g. `b` or `a,b`; default all).

use rocketlog_store::{AppendMessage, FlushMode, QueueOffset, Store, StoreConfig};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RECORD: usize = 1024;
const QUEUES: u32 = 4;
const MB: f64 = 1_000_000.0;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What a broker hands the store per message: owned strings and body. Built as cheaply as the
/// bench can (a template clone and a hex id), so the numbers are the store's.
fn message(seq: u64, body: &[u8]) -> AppendMessage {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut id = [b'0'; 32];
    for (i, b) in id[16..].iter_mut().enumerate() {
        *b = HEX[((seq >> (60 - 4 * i)) & 0xF) as usize];
    }
    AppendMessage {
        topic: "BenchTopic".into(),
        queue_id: (seq % u64::from(QUEUES)) as u32,
        flags: 0,
        tag: Some("TagA".into()),
        keys: Vec::new(),
        message_id: String::from_utf8_lossy(&id).into_owned(),
        born_timestamp_ms: 1_700_000_000_000,
        born_host: "127.0.0.1:5000".into(),
        store_host: "127.0.0.1:8081".into(),
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        properties: Vec::new(),
        body: body.to_vec(),
    }
}

/// Body length that makes the whole encoded record exactly `RECORD` bytes.
fn body_for_record() -> Vec<u8> {
    let probe = message(0, &[]);
    let overhead = rocketlog_store::record::encoded_len(&probe).unwrap();
    vec![0xAB; RECORD - overhead]
}

fn config(dir: &Path, mode: FlushMode) -> StoreConfig {
    StoreConfig {
        data_dir: dir.to_path_buf(),
        flush_mode: mode,
        prefault_window: std::env::var("ROCKETLOG_BENCH_PREFAULT_WINDOW")
            .ok()
            .and_then(|v| v.parse().ok()),
        zero_fill_segments: std::env::var("ROCKETLOG_BENCH_ZERO_FILL")
            .ok()
            .map(|v| v == "1"),
        ..StoreConfig::default()
    }
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn baseline(dir: &Path, bytes: u64) -> f64 {
    let path = dir.join("baseline.bin");
    let chunk = vec![0xABu8; 1 << 20];
    let start = Instant::now();
    let mut f = std::fs::File::create(&path).unwrap();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_data().unwrap();
    let d = start.elapsed();
    drop(f);
    std::fs::remove_file(&path).unwrap();
    let mbs = bytes as f64 / MB / d.as_secs_f64();
    println!(
        "(a) baseline write+fdatasync   {:>8.0} MiB in {:>7.3} s = {:>8.1} MB/s",
        bytes as f64 / 1048576.0,
        d.as_secs_f64(),
        mbs
    );
    mbs
}

/// (ns on a CPU, ns waiting for a CPU) of the calling thread, from /proc/thread-self/schedstat:
/// on a shared machine the second tells how much of a run's wall time was other processes'.
fn sched_ns() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// ns on a CPU so far of each of this process's store threads (named `rocketlog-*`), from
/// /proc/self/task: where the other core goes while the appender runs.
fn store_threads_ns() -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let name = comm.trim();
        if !name.starts_with("rocketlog-") {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        let ns: u64 = stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        *out.entry(name.to_owned()).or_default() += ns;
    }
    out
}

fn async_run(dir: &Path, bytes: u64, label: &str, baseline_mbs: f64) -> PathBuf {
    let data = dir.join(label);
    let store = Store::open(config(&data, FlushMode::default())).unwrap();
    let body = body_for_record();
    // Warm-up: the first append creates the first segment; then the store idles for a moment,
    // as a broker between bursts does, while the allocator pre-faults the window ahead.
    store.append(message(0, &body)).unwrap();
    std::thread::sleep(Duration::from_millis(env_u64(
        "ROCKETLOG_BENCH_IDLE_MS",
        2000,
    )));
    let n = bytes / RECORD as u64;
    let sched0 = sched_ns();
    let threads0 = store_threads_ns();
    let start = Instant::now();
    for seq in 1..=n {
        store.append(message(seq, &body)).unwrap();
    }
    let appended = start.elapsed();
    let sched1 = sched_ns();
    let threads1 = store_threads_ns();
    store.shutdown().unwrap(); // final flush + checkpoint
    let total = start.elapsed();
    let bytes = n * RECORD as u64;
    println!(
        "(b) async {label:<6} {n:>9} recs  appends {:>7.3} s = {:>10.0} rec/s {:>8.1} MB/s | incl. final flush {:>7.3} s = {:>8.1} MB/s = {:>5.1}% of (a)",
        appended.as_secs_f64(),
        rate(n, appended),
        bytes as f64 / MB / appended.as_secs_f64(),
        total.as_secs_f64(),
        bytes as f64 / MB / total.as_secs_f64(),
        100.0 * bytes as f64 / MB / total.as_secs_f64() / baseline_mbs
    );
    let on_cpu = (sched1.0 - sched0.0) as f64;
    println!(
        "    appender thread: {:.0} ns on CPU per record (= {:.0} rec/s of CPU), {:.3} s of the {:.3} s waiting for a CPU",
        on_cpu / n as f64,
        n as f64 / (on_cpu / 1e9),
        (sched1.1 - sched0.1) as f64 / 1e9,
        appended.as_secs_f64()
    );
    let others: Vec<String> = threads1
        .iter()
        .map(|(name, ns)| {
            let used = ns.saturating_sub(threads0.get(name).copied().unwrap_or(0));
            format!("{name} {:.3} s", used as f64 / 1e9)
        })
        .collect();
    println!("    store threads on CPU meanwhile: {}", others.join(", "));
    data
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Where the bare write + fdatasync loops write: what each kind costs the disk differs, and
/// the store's segments are of the last two kinds.
#[derive(Clone, Copy)]
enum Space {
    /// Appending to a growing file (each flush also commits the new size).
    Growing,
    /// Into space reserved with fallocate, as a new segment is: the extents are still
    /// "unwritten", so each flush also commits their conversion.
    Preallocated,
    /// Into space already written with zeros, as a zero-filled segment is.
    Zeroed,
}

const BARE_ROUNDS: usize = 200;

/// p50 and p99 of one `chunk`-byte write + fdatasync, `BARE_ROUNDS` times in a row.
fn bare_write_fdatasync(dir: &Path, chunk: usize, space: Space) -> (Duration, Duration) {
    use std::os::unix::fs::FileExt;
    let path = dir.join("fsync.bin");
    let f = std::fs::File::create(&path).unwrap();
    let len = (chunk * BARE_ROUNDS) as u64;
    match space {
        Space::Growing => {}
        Space::Preallocated => {
            rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, len).unwrap();
        }
        Space::Zeroed => {
            f.write_all_at(&vec![0u8; len as usize], 0).unwrap();
        }
    }
    f.sync_all().unwrap();
    let buf = vec![1u8; chunk];
    let mut lat = Vec::with_capacity(BARE_ROUNDS);
    for i in 0..BARE_ROUNDS {
        let t = Instant::now();
        f.write_all_at(&buf, (i * chunk) as u64).unwrap();
        f.sync_data().unwrap();
        lat.push(t.elapsed());
    }
    drop(f);
    std::fs::remove_file(&path).unwrap();
    lat.sort();
    (percentile(&lat, 0.5), percentile(&lat, 0.99))
}

/// The disk's own numbers for (c): one record per fdatasync, and the best any group commit
/// of 64 one-record appenders could do (64 records per fdatasync, nothing else), for each
/// kind of space. Returns the growing-file 1 KiB figures, the reference for latency.
fn bare_fdatasync(dir: &Path) -> (Duration, Duration) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut reference = (Duration::ZERO, Duration::ZERO);
    for (space, name) in [
        (Space::Growing, "growing file"),
        (Space::Preallocated, "preallocated"),
        (Space::Zeroed, "zero-filled"),
    ] {
        let (p50, p99) = bare_write_fdatasync(dir, RECORD, space);
        let (g50, g99) = bare_write_fdatasync(dir, 64 * RECORD, space);
        println!(
            "(c) bare write+fdatasync, {name:<12}  1 KiB p50 {:>6.3} p99 {:>6.3} ms, 64 KiB p50 {:>6.3} p99 {:>6.3} ms: 64 appenders can reach at most {:.1}x one",
            ms(p50),
            ms(p99),
            ms(g50),
            ms(g99),
            64.0 * p50.as_secs_f64() / g50.as_secs_f64(),
        );
        if matches!(space, Space::Growing) {
            reference = (p50, p99);
        }
    }
    reference
}

/// Segment size of the Sync runs: small enough to fill quickly before measuring.
const SYNC_SEGMENT: u64 = 64 << 20;

/// What a store went through before a measured Sync run: it decides whether the segment
/// being written was zero-filled, since the allocator fills only while flushes carry more than
/// a page.
#[derive(Clone, Copy, PartialEq, Eq)]
enum History {
    /// Loaded by 64 appenders: the segment was zero-filled ahead (a loaded store's steady state).
    Loaded,
    /// Light load all along: the segment is merely allocated (a lone appender's steady state;
    /// prepared with the filling off, then reopened with the configured default).
    Light,
}

impl History {
    fn label(self) -> &'static str {
        match self {
            History::Loaded => "",
            History::Light => " (light)",
        }
    }

    /// Suffix of the run's data directory.
    fn dir_suffix(self) -> &'static str {
        match self {
            History::Loaded => "",
            History::Light => "-light",
        }
    }
}

/// A Sync-mode store in its steady state: the first segment of an empty log is allocated on
/// demand (the first append waits for it, so it is never zero-filled); every later one is
/// prepared ahead (and zero-filled if asked for and it pays). Fill the first segment (64
/// tasks) before measuring; see [`History`].
fn open_steady_sync(data: &Path, history: History) -> Store {
    let steady = StoreConfig {
        segment_size: SYNC_SEGMENT,
        ..config(data, FlushMode::Sync)
    };
    let prefill = StoreConfig {
        zero_fill_segments: match history {
            History::Loaded => steady.zero_fill_segments,
            History::Light => Some(false),
        },
        ..steady.clone()
    };
    let store = Store::open(prefill).unwrap();
    let body = Arc::new(body_for_record());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..64u64)
            .map(|t| {
                let (store, body) = (store.clone(), body.clone());
                tokio::spawn(async move {
                    let mut seq = t;
                    while store.log_range().1 .0 < SYNC_SEGMENT + 4096 {
                        let p = store.append(message(seq, &body)).unwrap();
                        p.durable().await.unwrap();
                        seq += 64;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    if history == History::Light {
        store.shutdown().unwrap();
        return Store::open(steady).unwrap();
    }
    store
}

/// Prints one Sync run (`lat`: every append's latency, `d`: its wall time) against the bare
/// fdatasync p50 and p99; returns records/s.
fn report_sync(
    who: String,
    d: Duration,
    mut lat: Vec<Duration>,
    fsync: (Duration, Duration),
    history: History,
) -> f64 {
    lat.sort();
    let n = lat.len() as u64;
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    println!(
        "(c) sync {who} {n:>7} recs in {:>5.2} s = {:>9.0} rec/s {:>7.2} MB/s  p50 {:>7.3} ms  p99 {:>7.3} ms  (p99 = {:.2}x bare fdatasync p50, {:.2}x its p99){}",
        d.as_secs_f64(),
        rate(n, d),
        (n * RECORD as u64) as f64 / MB / d.as_secs_f64(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        p99.as_secs_f64() / fsync.0.as_secs_f64(),
        p99.as_secs_f64() / fsync.1.as_secs_f64(),
        history.label()
    );
    rate(n, d)
}

fn sync_run(
    dir: &Path,
    threads: usize,
    secs: u64,
    fsync: (Duration, Duration),
    history: History,
) -> f64 {
    let data = dir.join(format!("sync{threads}{}", history.dir_suffix()));
    let store = open_steady_sync(&data, history);
    let body = Arc::new(body_for_record());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (store, body, stop) = (store.clone(), body.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut seq = t as u64;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    store
                        .append(message(seq, &body))
                        .unwrap()
                        .wait_durable()
                        .unwrap();
                    lat.push(t0.elapsed());
                    seq += threads as u64;
                }
                lat
            })
        })
        .collect();
    // A bounded run: the appenders stop at the deadline.
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let lat: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let d = start.elapsed();
    store.shutdown().unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    report_sync(format!("{threads:>2} appenders "), d, lat, fsync, history)
}

/// (c) one appender that writes `batch` records and waits for the last one only: every fsync
/// carries exactly `batch` records, with no wake-ups between rounds.
fn sync_batch_run(dir: &Path, batch: usize, secs: u64) -> f64 {
    let data = dir.join(format!("syncbatch{batch}"));
    let store = open_steady_sync(&data, History::Loaded);
    let body = body_for_record();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let (mut n, mut fsyncs, mut seq) = (0u64, 0u64, 0u64);
    let mut appending = Duration::ZERO;
    while Instant::now() < deadline {
        let mut last = None;
        let t = Instant::now();
        for _ in 0..batch {
            last = Some(store.append(message(seq, &body)).unwrap());
            seq += 1;
        }
        appending += t.elapsed();
        if let Some(p) = last {
            p.wait_durable().unwrap();
        }
        n += batch as u64;
        fsyncs += 1;
    }
    let d = start.elapsed();
    store.shutdown().unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    println!(
        "(c) 1 appender, {batch} records per fsync {n:>7} recs in {:>5.2} s = {:>9.0} rec/s ({:.3} ms per fsync round, {:.3} ms of it appending)",
        d.as_secs_f64(),
        rate(n, d),
        d.as_secs_f64() * 1e3 / fsyncs as f64,
        appending.as_secs_f64() * 1e3 / fsyncs as f64
    );
    rate(n, d)
}

/// (c) as the broker drives the store: `tasks` tokio tasks on a 2-worker runtime, each
/// appending and awaiting durability, so a group commit wakes tasks, not OS threads.
fn sync_tasks_run(
    dir: &Path,
    tasks: usize,
    secs: u64,
    fsync: (Duration, Duration),
    history: History,
) -> f64 {
    let data = dir.join(format!("tasks{tasks}{}", history.dir_suffix()));
    let store = open_steady_sync(&data, history);
    let body = Arc::new(body_for_record());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (store, body, stop) = (store.clone(), body.clone(), stop.clone());
            rt.spawn(async move {
                let mut lat = Vec::new();
                let mut seq = t as u64;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let pending = store.append(message(seq, &body)).unwrap();
                    pending.durable().await.unwrap();
                    lat.push(t0.elapsed());
                    seq += tasks as u64;
                }
                lat
            })
        })
        .collect();
    // A bounded run: the appenders stop at the deadline.
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let lat: Vec<Duration> = rt.block_on(async {
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.unwrap());
        }
        all
    });
    let d = start.elapsed();
    drop(rt);
    store.shutdown().unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    report_sync(format!("{tasks:>2} tokio tasks"), d, lat, fsync, history)
}

fn read_run(data: &Path) {
    let store = Store::open(config(data, FlushMode::default())).unwrap();
    let (min, max) = store.queue_range("BenchTopic", 0);
    let start = Instant::now();
    let mut next = min;
    let (mut n, mut bytes) = (0u64, 0u64);
    while next < max {
        let r = store
            .read_queue("BenchTopic", 0, next, 32, &|_| true)
            .unwrap();
        n += r.messages.len() as u64;
        bytes += r.messages.iter().map(|m| u64::from(m.size)).sum::<u64>();
        next = r.next_offset;
    }
    let d = start.elapsed();
    assert_eq!(QueueOffset(min.0 + n), max);
    println!(
        "(d) read queue 0 via consume queue {n:>8} recs in {:>6.3} s = {:>10.0} rec/s {:>8.1} MB/s",
        d.as_secs_f64(),
        rate(n, d),
        bytes as f64 / MB / d.as_secs_f64()
    );
    store.shutdown().unwrap();
}

fn main() {
    let parent = std::env::var("ROCKETLOG_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&parent).unwrap();
    let dir = tempfile::tempdir_in(&parent).unwrap();
    let big = env_u64("ROCKETLOG_BENCH_BIG_BYTES", 2 << 30);
    let burst = env_u64("ROCKETLOG_BENCH_BURST_BYTES", 256 << 20);
    let secs = env_u64("ROCKETLOG_BENCH_SYNC_SECS", 3);
    println!(
        "rocketlog-store bench in {} (record {RECORD} B, {QUEUES} queues, prefault window: async {} MiB, sync {} MiB)",
        dir.path().display(),
        config(dir.path(), FlushMode::default()).effective_prefault_window() >> 20,
        config(dir.path(), FlushMode::Sync).effective_prefault_window() >> 20
    );
    let only = std::env::var("ROCKETLOG_BENCH_ONLY").unwrap_or_else(|_| "a,b,c,d".into());
    let run = |s: &str| only.split(',').any(|x| x.trim() == s);
    let base = if run("a") {
        baseline(dir.path(), big)
    } else {
        f64::NAN
    };
    let mut burst_dir = None;
    if run("b") || run("d") {
        burst_dir = Some(async_run(dir.path(), burst, "burst", base));
    }
    if run("b") {
        let big_dir = async_run(dir.path(), big, "big", base);
        std::fs::remove_dir_all(&big_dir).unwrap();
    }
    if run("c") {
        use History::{Light, Loaded};
        let fsync = bare_fdatasync(dir.path());
        let one = sync_run(dir.path(), 1, secs, fsync, Loaded);
        let one_light = sync_run(dir.path(), 1, secs, fsync, Light);
        sync_run(dir.path(), 8, secs, fsync, Loaded);
        let many = sync_run(dir.path(), 64, secs, fsync, Loaded);
        println!(
            "(c) 64 appender threads / 1 appender = {:.1}x (/ 1 appender, light = {:.1}x)",
            many / one,
            many / one_light
        );
        let grouped = sync_batch_run(dir.path(), 64, secs);
        println!(
            "(c) 1 appender with 64 records per fsync / 1 appender = {:.1}x",
            grouped / one
        );
        let one_task = sync_tasks_run(dir.path(), 1, secs, fsync, Loaded);
        let one_task_light = sync_tasks_run(dir.path(), 1, secs, fsync, Light);
        let tasks = sync_tasks_run(dir.path(), 64, secs, fsync, Loaded);
        println!(
            "(c) 64 tokio tasks / 1 appender thread = {:.1}x (light {:.1}x; / 1 task = {:.1}x, light {:.1}x)",
            tasks / one,
            tasks / one_light,
            tasks / one_task,
            tasks / one_task_light
        );
    }
    if run("ct") {
        // Only the broker-shaped Sync run (for profiling).
        let fsync = bare_fdatasync(dir.path());
        sync_tasks_run(dir.path(), 64, secs, fsync, History::Loaded);
    }
    if let (true, Some(d)) = (run("d"), burst_dir) {
        read_run(&d);
    }
}
