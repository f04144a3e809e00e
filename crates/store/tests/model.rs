//! Property test: random sequences of appends, reads, clean restarts, crashes and crashes that
//! lose the unflushed tail, checked against a plain in-memory model of the queues.

mod common;

use common::*;
use proptest::prelude::*;
use rocketlog_store::{FlushMode, PhysicalOffset, QueueOffset, Store, StoreConfig};
use std::path::Path;
use std::time::Duration;

const SEG: u64 = 8192;
const QUEUES: u32 = 3;

#[derive(Debug, Clone)]
enum Op {
    Append {
        queue: u32,
        len: usize,
    },
    Read {
        queue: u32,
        from: u16,
        max: u8,
    },
    Restart,
    Crash,
    /// Crash, then lose the log from a point between the flushed offset and the end.
    CrashTruncate {
        at: u16,
        shorten: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..QUEUES, 0usize..900).prop_map(|(queue, len)| Op::Append { queue, len }),
        2 => (0..QUEUES, any::<u16>(), 1u8..10).prop_map(|(queue, from, max)| Op::Read { queue, from, max }),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
        2 => (any::<u16>(), any::<bool>()).prop_map(|(at, shorten)| Op::CrashTruncate { at, shorten }),
    ]
}

#[derive(Debug, Clone)]
struct Rec {
    body: Vec<u8>,
    phys: u64,
    size: u32,
}

struct Harness {
    cfg: StoreConfig,
    store: Option<Store>,
    model: Vec<Vec<Rec>>,
    seq: u64,
}

fn body(seq: u64, len: usize) -> Vec<u8> {
    let mut b = format!("{seq}:").into_bytes();
    b.extend((0..len).map(|i| (seq as usize * 31 + i) as u8));
    b
}

impl Harness {
    fn store(&self) -> &Store {
        self.store.as_ref().expect("open")
    }

    fn reopen(&mut self) {
        self.store = Some(Store::open(self.cfg.clone()).expect("reopen"));
        self.check_all();
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append { queue, len } => {
                self.seq += 1;
                let b = body(self.seq, *len);
                let mut m = msg("Topic", *queue, &b);
                m.message_id = format!("id-{}", self.seq);
                m.keys = vec![format!("k-{}", self.seq)];
                let p = self.store().append(m).unwrap();
                let r = p.wait_durable().unwrap();
                let q = &mut self.model[*queue as usize];
                assert_eq!(
                    r.queue_offset,
                    QueueOffset(q.len() as u64),
                    "dense queue offsets"
                );
                if let Some(last) = q.last() {
                    assert!(r.physical_offset.0 > last.phys);
                }
                q.push(Rec {
                    body: b,
                    phys: r.physical_offset.0,
                    size: r.size,
                });
            }
            Op::Read { queue, from, max } => {
                wait_dispatched(self.store());
                let q = &self.model[*queue as usize];
                let from = u64::from(*from) % (q.len() as u64 + 1);
                let r = self
                    .store()
                    .read_queue(
                        "Topic",
                        *queue,
                        QueueOffset(from),
                        usize::from(*max),
                        &|_| true,
                    )
                    .unwrap();
                let expect: Vec<&Rec> = q
                    .iter()
                    .skip(from as usize)
                    .take(usize::from(*max))
                    .collect();
                assert_eq!(r.messages.len(), expect.len());
                for (m, e) in r.messages.iter().zip(expect) {
                    assert_eq!(
                        (&m.body, m.physical_offset.0, m.size),
                        (&e.body, e.phys, e.size)
                    );
                }
                assert_eq!(r.next_offset, QueueOffset(from + r.messages.len() as u64));
            }
            Op::Restart => {
                self.store.take().expect("open").shutdown().unwrap();
                self.reopen();
            }
            Op::Crash => {
                wait_dispatched(self.store());
                drop(self.store.take());
                self.reopen();
            }
            Op::CrashTruncate { at, shorten } => {
                let store = self.store.take().expect("open");
                let flushed = store.flushed_offset().0;
                let end = store.log_range().1 .0;
                drop(store);
                if end > 0 {
                    let last_base = (end - 1) / SEG * SEG;
                    let lo = flushed.max(last_base);
                    let cut = lo + u64::from(*at) % (end - lo + 1);
                    let cut = cut_log(&self.cfg.data_dir, cut, *shorten);
                    for q in &mut self.model {
                        q.retain(|r| r.phys + u64::from(r.size) <= cut);
                    }
                }
                self.reopen();
            }
        }
    }

    fn check_all(&self) {
        let store = self.store();
        wait_dispatched(store);
        for (qid, q) in self.model.iter().enumerate() {
            let qid = qid as u32;
            assert_eq!(
                store.queue_range("Topic", qid),
                (QueueOffset(0), QueueOffset(q.len() as u64)),
                "queue {qid}"
            );
            let all = read_all(store, "Topic", qid);
            assert_eq!(all.len(), q.len());
            for (k, (m, e)) in all.iter().zip(q).enumerate() {
                assert_eq!(m.queue_offset, QueueOffset(k as u64));
                assert_eq!(
                    (&m.body, m.physical_offset.0, m.size),
                    (&e.body, e.phys, e.size)
                );
            }
            if let Some(last) = all.last() {
                let found = store.lookup_message_id(&last.message_id).unwrap();
                assert_eq!(found.len(), 1);
                assert_eq!(found[0].physical_offset, last.physical_offset);
                assert_eq!(store.lookup_key("Topic", &last.keys[0], 10).unwrap(), found);
            }
        }
        // Nothing past the surviving records is served.
        let end = self
            .model
            .iter()
            .flatten()
            .map(|r| r.phys + u64::from(r.size))
            .max()
            .unwrap_or(0);
        let log_end = store.log_range().1 .0;
        assert!(log_end >= end);
        assert!(
            log_end - end < SEG,
            "only a filler or nothing follows the last record"
        );
        let mut pos = PhysicalOffset(0);
        let mut n = 0;
        while pos.0 < log_end {
            let s = store.scan_log(pos, 1 << 20).unwrap();
            n += s.messages.len();
            pos = s.next;
        }
        assert_eq!(n, self.model.iter().map(Vec::len).sum::<usize>());
    }
}

/// Loses the log from physical offset `cut` on, in the segment holding it, by zeroing or by
/// truncating the file (the store grows a short segment back, so the lost tail reads as zeros
/// either way). Returns where the loss really begins: losing bytes that were zero already
/// changes nothing, so a record whose last bytes are zeros (a body can end in them) survives a
/// cut among them intact, as it must.
fn cut_log(dir: &Path, cut: u64, shorten: bool) -> u64 {
    let base = if cut % SEG == 0 && cut > 0 {
        cut - SEG
    } else {
        cut / SEG * SEG
    };
    let path = segment_path(dir, SEG, PhysicalOffset(base));
    let local = cut - base;
    let mut bytes = std::fs::read(&path).unwrap();
    let tail = &mut bytes[local as usize..];
    let unchanged = tail.iter().take_while(|&&b| b == 0).count() as u64;
    if shorten {
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(local).unwrap();
    } else {
        tail.fill(0);
        std::fs::write(&path, bytes).unwrap();
    }
    cut + unchanged
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        max_shrink_iters: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_model(sync in prop::bool::weighted(0.2), ops in prop::collection::vec(op(), 1..45)) {
        let dir = fast_tempdir();
        let mode = if sync {
            FlushMode::Sync
        } else {
            // Long interval: most of the log stays unflushed, so truncation has room.
            FlushMode::Async { interval: Duration::from_secs(3600) }
        };
        let cfg = config(dir.path(), SEG, mode);
        let mut h = Harness {
            cfg: cfg.clone(),
            store: Some(Store::open(cfg).unwrap()),
            model: vec![Vec::new(); QUEUES as usize],
            seq: 0,
        };
        for op in &ops {
            h.apply(op);
        }
        h.check_all();
    }
}
