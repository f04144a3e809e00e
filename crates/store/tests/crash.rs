//! Process-level crash test: a child process (this test binary, re-executed) appends with Sync
//! flush from several threads and prints every acknowledged record; the parent SIGKILLs it at
//! random moments, reopens the store and checks that every acknowledged record is intact, the
//! queues are dense, and nothing past the recovered end is served.

mod common;

use common::*;
use rocketlog_store::{FlushMode, PhysicalOffset, QueueOffset, Store, StoreConfig};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CHILD_DIR_ENV: &str = "ROCKETLOG_CRASH_CHILD_DIR";
const CHILD_ROUND_ENV: &str = "ROCKETLOG_CRASH_CHILD_ROUND";
const TEST_NAME: &str = "kill9_never_loses_an_acknowledged_record";
const TOPIC: &str = "Crash";
const QUEUES: u32 = 4;
const SEG: u64 = 256 << 10;
const ROUNDS: u64 = 24;

fn store_config(dir: &Path) -> StoreConfig {
    let mut cfg = config(dir, SEG, FlushMode::Sync);
    // Checkpoints at random points relative to the kills.
    cfg.checkpoint_interval = Duration::from_millis(40);
    cfg
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A body that proves its own integrity: a header naming (round, queue, seq, len) and bytes
/// derived from it.
fn payload(round: u64, queue: u32, seq: u64) -> Vec<u8> {
    let len = ((round * 7919 + seq * 104_729 + u64::from(queue) * 31) % 3000) as usize;
    let mut b = format!("{round}/{queue}/{seq}/{len}|").into_bytes();
    let seed = fnv(&b);
    b.extend((0..len).map(|i| (seed.wrapping_add(i as u64 * 0x9E37_79B9) >> 13) as u8));
    b
}

fn verify_payload(body: &[u8]) -> bool {
    let Some(bar) = body.iter().position(|b| *b == b'|') else {
        return false;
    };
    let head = String::from_utf8_lossy(&body[..bar]).into_owned();
    let parts: Vec<u64> = head.split('/').filter_map(|p| p.parse().ok()).collect();
    let [round, queue, seq, _len] = parts[..] else {
        return false;
    };
    payload(round, queue as u32, seq) == body
}

/// Child mode: append forever (bounded) and print acknowledgements.
fn child(dir: &Path, round: u64) {
    let store = Store::open(store_config(dir)).expect("child open");
    println!("OPEN");
    let threads: Vec<_> = (0..QUEUES)
        .map(|q| {
            let store = store.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                for seq in 0..50_000u64 {
                    if Instant::now() > deadline {
                        break;
                    }
                    let body = payload(round, q, seq);
                    let hash = fnv(&body);
                    let mut m = msg(TOPIC, q, &body);
                    m.keys.clear();
                    m.message_id = format!("{round}-{q}-{seq}");
                    let r = store
                        .append(m)
                        .and_then(|p| p.wait_durable())
                        .expect("append");
                    let mut out = std::io::stdout().lock();
                    writeln!(
                        out,
                        "ACK {q} {} {} {hash}",
                        r.queue_offset.0, r.physical_offset.0
                    )
                    .and_then(|()| out.flush())
                    .expect("stdout");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("appender");
    }
}

struct Ack {
    phys: u64,
    hash: u64,
}

fn parse_ack(line: &str) -> Option<(u32, u64, Ack)> {
    let mut it = line.strip_prefix("ACK ")?.split(' ');
    let q = it.next()?.parse().ok()?;
    let off = it.next()?.parse().ok()?;
    let phys = it.next()?.parse().ok()?;
    let hash = it.next()?.parse().ok()?;
    Some((q, off, Ack { phys, hash }))
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Runs one child until a random moment, kills it, returns the acknowledgements it printed.
fn run_child(dir: &Path, round: u64, rng: &mut Rng) -> Vec<(u32, u64, Ack)> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Kill during start-up/recovery in some rounds, after some acknowledgements in others.
    let mode = rng.next() % 4;
    let want_acks = rng.next() % 400;
    let delay = Duration::from_millis(rng.next() % 60);
    let deadline = Instant::now() + Duration::from_secs(10);
    let start = Instant::now();
    let mut acks = Vec::new();
    loop {
        if mode == 0 && start.elapsed() >= delay {
            break;
        }
        if mode != 0 && acks.len() as u64 >= want_acks {
            break;
        }
        assert!(Instant::now() < deadline, "child made no progress");
        match rx.recv_timeout(Duration::from_millis(5)) {
            Ok(line) => acks.extend(parse_ack(&line)),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("child exited early"),
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    // Lines already written before the kill are acknowledgements too.
    acks.extend(rx.try_iter().filter_map(|l| parse_ack(&l)));
    acks
}

fn verify(store: &Store, acked: &HashMap<(u32, u64), Ack>) {
    wait_dispatched(store);
    let mut total = 0;
    for q in 0..QUEUES {
        let all = read_all(store, TOPIC, q);
        for (k, m) in all.iter().enumerate() {
            assert_eq!(
                m.queue_offset,
                QueueOffset(k as u64),
                "dense offsets in queue {q}"
            );
            assert!(verify_payload(&m.body), "queue {q} offset {k} damaged");
        }
        total += all.len();
    }
    for ((q, off), ack) in acked {
        let m = store
            .get(TOPIC, *q, QueueOffset(*off))
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged record {q}/{off} lost"));
        assert_eq!(
            m.physical_offset,
            PhysicalOffset(ack.phys),
            "{q}/{off} moved"
        );
        assert_eq!(fnv(&m.body), ack.hash, "{q}/{off} changed");
    }
    // The log holds exactly the served records: nothing past the torn point.
    let (min, end) = store.log_range();
    let mut pos = min;
    let mut scanned = 0;
    while pos < end {
        let s = store.scan_log(pos, 1 << 20).unwrap();
        scanned += s.messages.len();
        pos = s.next;
    }
    assert_eq!(scanned, total);
}

#[test]
fn kill9_never_loses_an_acknowledged_record() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        let round = std::env::var(CHILD_ROUND_ENV).unwrap().parse().unwrap();
        child(Path::new(&dir), round);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let seed = std::env::var("ROCKETLOG_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed {seed} (ROCKETLOG_CRASH_SEED to replay)");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut acked: HashMap<(u32, u64), Ack> = HashMap::new();
    let mut total_acks = 0;
    for round in 0..ROUNDS {
        for (q, off, ack) in run_child(dir.path(), round, &mut rng) {
            total_acks += 1;
            assert!(
                acked.insert((q, off), ack).is_none(),
                "offset {q}/{off} acknowledged twice"
            );
        }
        let store = Store::open(store_config(dir.path())).unwrap();
        verify(&store, &acked);
        if rng.next() % 2 == 0 {
            store.shutdown().unwrap();
        } // else dropped: the next child recovers from a crash of this process too
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "crash test over budget"
        );
    }
    assert!(
        total_acks > 100,
        "too few acknowledgements ({total_acks}) to mean anything"
    );
    eprintln!(
        "{ROUNDS} kills, {total_acks} acknowledged records verified in {:?}",
        started.elapsed()
    );
}
