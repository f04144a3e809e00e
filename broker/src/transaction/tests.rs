//! The transaction engine over a real store in a temporary directory: the state machine's
//! transitions as the log records them, check-back scheduling, and rebuilds after restarts.

use rocketlog_common::QueueOffset;
use rocketlog_store::{AppendMessage, Store, StoreConfig};
use tempfile::TempDir;

use super::*;

const TOPIC: &str = "orders";

struct Env {
    dir: TempDir,
    store_config: StoreConfig,
    store: Store,
    settings: TransactionSettings,
    t: Transactions,
}

fn settings() -> TransactionSettings {
    TransactionSettings {
        first_check_delay_ms: 0,
        check_interval_ms: 1_000,
        max_checks: 3,
        ..TransactionSettings::default()
    }
}

fn env(settings: TransactionSettings) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store_config = StoreConfig {
        data_dir: dir.path().join("store"),
        segment_size: 1 << 20,
        max_message_size: 64 << 10,
        consume_queue_segment_entries: 1024,
        index_slots: 1024,
        index_entries_per_file: 4096,
        prefault_window: Some(0),
        ..StoreConfig::default()
    };
    let store = Store::open(store_config.clone()).unwrap();
    let t = Transactions::open(
        store.clone(),
        &dir.path().join("tx"),
        settings.clone(),
        "b:1".into(),
    )
    .unwrap();
    Env {
        dir,
        store_config,
        store,
        settings,
        t,
    }
}

impl Env {
    /// A clean restart: the store shuts down, the final checkpoint is saved, both reopen.
    fn restart(&mut self) {
        self.store.shutdown().unwrap();
        self.t.save_final_checkpoint().unwrap();
        self.reopen();
    }

    /// A restart without the final checkpoint (as after a crash; the store recovers).
    fn reopen(&mut self) {
        let _ = self.store.shutdown();
        self.store = Store::open(self.store_config.clone()).unwrap();
        self.t = Transactions::open(
            self.store.clone(),
            &self.dir.path().join("tx"),
            self.settings.clone(),
            "b:1".into(),
        )
        .unwrap();
    }

    fn send(&self, id: &str) -> String {
        let (pending, tx_id) = self.t.prepare(message(id), None).unwrap();
        pending.wait_durable().unwrap();
        tx_id
    }

    /// Polls (with a deadline) until the dispatcher has made the whole log readable.
    fn settle(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let end = self.store.log_range().1;
        while *self.store.dispatched().borrow() < end {
            assert!(
                std::time::Instant::now() < deadline,
                "the log was not dispatched in time"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Message ids in queue 1 of the real topic.
    fn delivered(&self) -> Vec<String> {
        self.settle();
        let (min, _) = self.store.queue_range(TOPIC, 1);
        self.store
            .read_queue(TOPIC, 1, min, 100, &|_| true)
            .unwrap()
            .messages
            .into_iter()
            .map(|m| m.message_id)
            .collect()
    }
}

fn message(id: &str) -> AppendMessage {
    AppendMessage {
        topic: TOPIC.into(),
        queue_id: 1,
        flags: 4,
        tag: Some("T".into()),
        keys: vec![],
        message_id: id.into(),
        born_timestamp_ms: 1,
        born_host: "c".into(),
        store_host: "b:1".into(),
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        properties: vec![("k".into(), "v".into())],
        body: id.as_bytes().to_vec(),
    }
}

fn applied(outcome: EndOutcome) {
    match outcome {
        EndOutcome::Applied(pending) => {
            for p in pending {
                p.wait_durable().unwrap();
            }
        }
        EndOutcome::Repeated => panic!("expected a new resolution"),
    }
}

#[test]
fn half_is_hidden_until_commit_and_commit_delivers_once() {
    let e = env(settings());
    let id = e.send("M1");
    assert!(e.delivered().is_empty());
    assert_eq!(e.store.queue_range(HALF_TOPIC, 0).1, QueueOffset(1));
    applied(e.t.end(&id, "M1", TOPIC, Resolution::Commit).unwrap());
    assert_eq!(e.delivered(), vec!["M1"]);
    let m = &e
        .store
        .read_queue(TOPIC, 1, QueueOffset(0), 1, &|_| true)
        .unwrap()
        .messages[0];
    assert_eq!(m.body, b"M1");
    assert_eq!(m.properties, vec![("k".to_owned(), "v".to_owned())]);
    // The same resolution again is harmless; the other one is refused; nothing is delivered twice.
    assert!(matches!(
        e.t.end(&id, "M1", TOPIC, Resolution::Commit).unwrap(),
        EndOutcome::Repeated
    ));
    assert!(matches!(
        e.t.end(&id, "M1", TOPIC, Resolution::Rollback),
        Err(TransactionError::AlreadyResolved {
            was: Resolution::Commit,
            ..
        })
    ));
    assert_eq!(e.delivered(), vec!["M1"]);
    assert_eq!(e.t.open_count(), 0);
}

#[test]
fn rollback_discards_and_bad_ids_are_refused() {
    let e = env(settings());
    let id = e.send("M1");
    assert!(matches!(
        e.t.end("not-an-id", "M1", TOPIC, Resolution::Commit),
        Err(TransactionError::Unknown { .. })
    ));
    assert!(matches!(
        e.t.end(
            &state::transaction_id(12345),
            "M1",
            TOPIC,
            Resolution::Commit
        ),
        Err(TransactionError::Unknown { .. })
    ));
    assert!(matches!(
        e.t.end(&id, "OTHER", TOPIC, Resolution::Commit),
        Err(TransactionError::WrongMessage { .. })
    ));
    assert!(matches!(
        e.t.end(&id, "M1", "elsewhere", Resolution::Commit),
        Err(TransactionError::WrongMessage { .. })
    ));
    applied(e.t.end(&id, "M1", TOPIC, Resolution::Rollback).unwrap());
    assert!(e.delivered().is_empty());
    assert!(matches!(
        e.t.end(&id, "M1", TOPIC, Resolution::Commit),
        Err(TransactionError::AlreadyResolved { .. })
    ));
    assert!(e.delivered().is_empty());
}

#[test]
fn checks_repeat_then_the_transaction_is_rolled_back() {
    let e = env(settings());
    let id = e.send("M1");
    let now = now_ms();
    let first = e.t.due_checks(now + 10);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].transaction_id, id);
    assert_eq!(first[0].checks, 1);
    // The producer sees its message as sent: real topic and queue, its own properties.
    assert_eq!(first[0].message.topic, TOPIC);
    assert_eq!(first[0].message.queue_id, 1);
    assert_eq!(first[0].message.message_id, "M1");
    assert_eq!(
        first[0].message.properties,
        vec![("k".to_owned(), "v".to_owned())]
    );
    // Not again before the interval.
    assert!(e.t.due_checks(now + 500).is_empty());
    assert_eq!(e.t.due_checks(now + 1_010)[0].checks, 2);
    assert_eq!(e.t.due_checks(now + 2_010)[0].checks, 3);
    // Out of checks: rolled back, nothing delivered.
    assert!(e.t.due_checks(now + 3_010).is_empty());
    assert_eq!(e.t.open_count(), 0);
    assert!(e.delivered().is_empty());
    assert!(matches!(
        e.t.end(&id, "M1", TOPIC, Resolution::Commit),
        Err(TransactionError::AlreadyResolved {
            was: Resolution::Rollback,
            ..
        })
    ));
}

#[test]
fn out_of_checks_may_commit_by_policy() {
    let e = env(TransactionSettings {
        max_checks: 1,
        on_max_checks: OnMaxChecks::Commit,
        ..settings()
    });
    e.send("M1");
    let now = now_ms();
    assert_eq!(e.t.due_checks(now + 10).len(), 1);
    assert!(e.t.due_checks(now + 2_000).is_empty());
    assert_eq!(e.delivered(), vec!["M1"]);
}

#[test]
fn first_check_waits_for_the_delay_asked_for() {
    let e = env(TransactionSettings {
        first_check_delay_ms: 60_000,
        ..settings()
    });
    let asked = prost_types::Duration {
        seconds: 2,
        nanos: 0,
    };
    let (p, _) = e.t.prepare(message("M1"), Some(&asked)).unwrap();
    p.wait_durable().unwrap();
    e.send("M2");
    let now = now_ms();
    let due = e.t.due_checks(now + 2_500);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].message.message_id, "M1");
}

#[test]
fn restart_keeps_open_transactions_and_their_check_counts() {
    let mut e = env(settings());
    let a = e.send("A");
    let b = e.send("B");
    let c = e.send("C");
    applied(e.t.end(&a, "A", TOPIC, Resolution::Commit).unwrap());
    applied(e.t.end(&c, "C", TOPIC, Resolution::Rollback).unwrap());
    let now = now_ms();
    assert_eq!(e.t.due_checks(now + 10).len(), 1);
    e.restart();
    assert_eq!(e.t.open_count(), 1);
    // Resolutions survive: no second delivery of A, C stays rolled back.
    assert!(matches!(
        e.t.end(&a, "A", TOPIC, Resolution::Commit).unwrap(),
        EndOutcome::Repeated
    ));
    // B's check count came back from the op queue: two more checks, then the rollback.
    assert_eq!(e.t.due_checks(now + 1_020)[0].checks, 2);
    e.reopen();
    assert_eq!(e.t.due_checks(now + 2_030)[0].checks, 3);
    applied(e.t.end(&b, "B", TOPIC, Resolution::Commit).unwrap());
    e.restart();
    assert_eq!(e.t.open_count(), 0);
    assert_eq!(e.delivered(), vec!["A", "B"]);
    // A new transaction after the restarts gets a fresh id and works.
    let d = e.send("D");
    applied(e.t.end(&d, "D", TOPIC, Resolution::Commit).unwrap());
    assert_eq!(e.delivered(), vec!["A", "B", "D"]);
}

#[test]
fn checkpoint_skips_resolved_history_but_never_an_open_transaction() {
    let mut e = env(settings());
    let old = e.send("OLD");
    for i in 0..20 {
        let id = e.send(&format!("R{i}"));
        applied(
            e.t.end(&id, &format!("R{i}"), TOPIC, Resolution::Rollback)
                .unwrap(),
        );
    }
    let (p, _) = e.t.prepare(message("X"), None).unwrap();
    p.wait_durable().unwrap();
    // Async flush: the checkpoint is written once the log is flushed past what it covers.
    e.restart();
    assert_eq!(e.t.open_count(), 2);
    applied(e.t.end(&old, "OLD", TOPIC, Resolution::Commit).unwrap());
    e.restart();
    let saved = e.t.inner.checkpoint.read().unwrap().unwrap();
    assert_eq!(saved.half, 21, "starts at the still-open X");
    assert_eq!(e.t.open_count(), 1);
    assert_eq!(e.delivered(), vec!["OLD"]);
}

#[test]
fn a_commit_cut_between_its_two_appends_is_not_delivered_twice() {
    let mut e = env(settings());
    let id = e.send("M1");
    // What a commit appends first, without its op record (the crash came in between).
    let key = state::parse_transaction_id(&id).unwrap();
    let half_msg = e.store.read_at(PhysicalOffset(key)).unwrap();
    let info = half::half_info(&half_msg).unwrap();
    e.store
        .append(half::committed(&half_msg, &info))
        .unwrap()
        .wait_durable()
        .unwrap();
    e.reopen();
    assert_eq!(e.t.open_count(), 0, "recognized as committed");
    assert!(e.t.due_checks(now_ms() + 60_000).is_empty());
    assert_eq!(e.delivered(), vec!["M1"]);
    assert!(matches!(
        e.t.end(&id, "M1", TOPIC, Resolution::Commit).unwrap(),
        EndOutcome::Repeated
    ));
}
