//! End-to-end tests of the engine over a real store in a temporary directory.

mod delivery;
mod fifo;
mod long_poll;
mod merge;
mod restart;
mod transfer;

use std::sync::Arc;
use std::time::Duration;

use rocketlog_store::{AppendMessage, Store, StoreConfig};
use tempfile::TempDir;

use super::*;

pub(super) const T0: i64 = 1_700_000_000_000;
pub(super) const TOPIC: &str = "orders";
pub(super) const GROUP: &str = "billing";

pub(super) struct Env {
    pub(super) _dir: TempDir,
    pub(super) state_dir: std::path::PathBuf,
    pub(super) store: Store,
    pub(super) store_config: StoreConfig,
    pub(super) clock: ManualClock,
    pub(super) config: ConsumptionConfig,
    pub(super) c: Consumption,
}

pub(super) fn env_with(config: impl FnOnce(&mut ConsumptionConfig)) -> Env {
    env_full(|_| {}, config)
}

pub(super) fn env_full(
    store: impl FnOnce(&mut StoreConfig),
    config: impl FnOnce(&mut ConsumptionConfig),
) -> Env {
    let dir = tempfile::tempdir().unwrap();
    // Small files: tests open many stores.
    let mut store_config = StoreConfig {
        data_dir: dir.path().join("store"),
        segment_size: 1 << 20,
        max_message_size: 64 << 10,
        consume_queue_segment_entries: 1024,
        index_slots: 1024,
        index_entries_per_file: 4096,
        prefault_window: Some(0),
        ..StoreConfig::default()
    };
    store(&mut store_config);
    let store = Store::open(store_config.clone()).unwrap();
    let clock = ManualClock::new(T0);
    let mut cfg = ConsumptionConfig {
        clock: Arc::new(clock.clone()),
        ..ConsumptionConfig::default()
    };
    config(&mut cfg);
    let state_dir = dir.path().join("consumption");
    let c = Consumption::open(store.clone(), state_dir.clone(), cfg.clone()).unwrap();
    Env {
        _dir: dir,
        state_dir,
        store,
        store_config,
        clock,
        config: cfg,
        c,
    }
}

pub(super) fn env() -> Env {
    env_with(|_| {})
}

/// A second engine over `master`'s store and clock, with a state directory of its own (a
/// slave whose replica of the messages is the master's store).
pub(super) fn replica(master: &Env) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("consumption");
    let c = Consumption::open(
        master.store.clone(),
        state_dir.clone(),
        master.config.clone(),
    )
    .unwrap();
    Env {
        _dir: dir,
        state_dir,
        store: master.store.clone(),
        store_config: master.store_config.clone(),
        clock: master.clock.clone(),
        config: master.config.clone(),
        c,
    }
}

impl Env {
    pub(super) fn reopen(&mut self) {
        self.c = Consumption::open(
            self.store.clone(),
            self.state_dir.clone(),
            self.config.clone(),
        )
        .unwrap();
    }

    /// A clean restart of the whole broker: engine and store shut down, then both reopened.
    pub(super) fn restart_all(&mut self) {
        self.c.shutdown().unwrap();
        self.store.shutdown().unwrap();
        self.store = Store::open(self.store_config.clone()).unwrap();
        self.reopen();
    }

    pub(super) fn send(
        &self,
        topic: &str,
        queue_id: u32,
        tag: Option<&str>,
        group: Option<&str>,
        body: &str,
    ) {
        let mut properties = vec![("user".to_owned(), "prop".to_owned())];
        if let Some(g) = group {
            properties.push((MESSAGE_GROUP_PROPERTY.to_owned(), g.to_owned()));
        }
        self.store
            .append(AppendMessage {
                topic: topic.to_owned(),
                queue_id,
                flags: 0,
                tag: tag.map(str::to_owned),
                keys: vec![],
                message_id: format!("id-{body}"),
                born_timestamp_ms: T0,
                born_host: "127.0.0.1:1".into(),
                store_host: "127.0.0.1:2".into(),
                reconsume_times: 0,
                prepared_transaction_offset: 0,
                properties,
                body: body.as_bytes().to_vec(),
            })
            .unwrap()
            .wait_durable()
            .unwrap();
    }

    pub(super) async fn recv(&self, r: ReceiveRequest) -> Vec<Delivery> {
        self.c.receive(r).await.unwrap()
    }

    /// Polls (with a deadline) until the store has dispatched `n` messages of the queue.
    pub(super) async fn wait_dispatched(&self, topic: &str, queue_id: u32, n: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.store.queue_range(topic, queue_id).1 .0 < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "store never dispatched {n}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub(super) fn passes(&self) -> usize {
        self.c
            .inner
            .passes
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Polls (with a deadline) until more than `before` receive passes were made: a long poll
    /// started after reading `before` has looked once and is waiting.
    pub(super) async fn wait_parked(&self, before: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.passes() <= before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "receive never polled"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub(super) fn lag(&self, topic: &str, queue_id: u32) -> QueueLag {
        self.c
            .describe_group(GROUP)
            .into_iter()
            .find(|l| l.topic == topic && l.queue_id == queue_id)
            .unwrap()
    }
}

pub(super) fn req() -> ReceiveRequest {
    ReceiveRequest {
        group: GROUP.into(),
        topic: TOPIC.into(),
        queue_id: None,
        filter: FilterExpression::All,
        batch_size: 32,
        invisible_duration: Duration::from_secs(10),
        long_polling_timeout: Duration::ZERO,
        fifo: false,
        retry_policy: RetryPolicy::default(),
        queue_count: 1,
    }
}

pub(super) fn bodies(d: &[Delivery]) -> Vec<String> {
    d.iter()
        .map(|d| String::from_utf8(d.message.body.clone()).unwrap())
        .collect()
}

pub(super) fn is_invalid_handle<T: std::fmt::Debug>(r: Result<T, ConsumeError>) -> bool {
    matches!(r, Err(ConsumeError::InvalidReceiptHandle { .. }))
}

pub(super) fn real_time_env() -> Env {
    env_with(|c| c.clock = Arc::new(SystemClock))
}
