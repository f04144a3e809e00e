//! Prometheus metrics of one broker (`[broker] metrics_listen`): a `prometheus-client`
//! registry built once per broker, the handles the request handlers record into, and the
//! scrape-time collector (`collector.rs`) that reads lag, in-flight counts, store offsets,
//! replication and process figures when Prometheus asks. Served by [`serve`] on a port of its
//! own (`rocketlog_transport::serve_metrics`).
//!
//! Cost: with metrics off every recording call is one branch. With them on, a send looks its
//! topic's counters up once per message in a map keyed by topic name (no allocation once the
//! topic has been seen) and adds to two atomics when the send is acknowledged; an RPC adds one
//! histogram observation. Labels never carry message ids, client ids or addresses; `queue_id`
//! appears on the lag gauge only.

mod collector;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets_range, Histogram};
use prometheus_client::registry::{Registry, Unit};
use rocketlog_store::Store;
use rocketlog_transport::{ConnectionCount, ProcessCollector};
use std::net::SocketAddr;
use tokio::net::TcpListener;

pub use collector::{Sources, StorageSize};

use crate::config::BrokerConfig;
use crate::consumption::Consumption;
use crate::error::BrokerError;
use crate::replication::GroupRole;
use crate::timer::Timer;
use crate::transaction::Transactions;

/// The RPCs whose latency is recorded, named as in `apache.rocketmq.v2.MessagingService`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    QueryRoute,
    Heartbeat,
    SendMessage,
    QueryAssignment,
    ReceiveMessage,
    AckMessage,
    ForwardMessageToDeadLetterQueue,
    PullMessage,
    UpdateOffset,
    GetOffset,
    QueryOffset,
    EndTransaction,
    NotifyClientTermination,
    ChangeInvisibleDuration,
    RecallMessage,
}

impl Rpc {
    /// Every RPC (each at the position of its discriminant).
    pub const ALL: [Rpc; 15] = [
        Rpc::QueryRoute,
        Rpc::Heartbeat,
        Rpc::SendMessage,
        Rpc::QueryAssignment,
        Rpc::ReceiveMessage,
        Rpc::AckMessage,
        Rpc::ForwardMessageToDeadLetterQueue,
        Rpc::PullMessage,
        Rpc::UpdateOffset,
        Rpc::GetOffset,
        Rpc::QueryOffset,
        Rpc::EndTransaction,
        Rpc::NotifyClientTermination,
        Rpc::ChangeInvisibleDuration,
        Rpc::RecallMessage,
    ];

    /// The `method` label.
    pub fn name(self) -> &'static str {
        match self {
            Rpc::QueryRoute => "QueryRoute",
            Rpc::Heartbeat => "Heartbeat",
            Rpc::SendMessage => "SendMessage",
            Rpc::QueryAssignment => "QueryAssignment",
            Rpc::ReceiveMessage => "ReceiveMessage",
            Rpc::AckMessage => "AckMessage",
            Rpc::ForwardMessageToDeadLetterQueue => "ForwardMessageToDeadLetterQueue",
            Rpc::PullMessage => "PullMessage",
            Rpc::UpdateOffset => "UpdateOffset",
            Rpc::GetOffset => "GetOffset",
            Rpc::QueryOffset => "QueryOffset",
            Rpc::EndTransaction => "EndTransaction",
            Rpc::NotifyClientTermination => "NotifyClientTermination",
            Rpc::ChangeInvisibleDuration => "ChangeInvisibleDuration",
            Rpc::RecallMessage => "RecallMessage",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Latency buckets, seconds: 100 µs to 10 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets_range(0.000_1, 10.0, 16)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DeliveryLabels {
    topic: String,
    consumer_group: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

/// The counters of messages sent to one topic (clones of the registered family members).
#[derive(Debug)]
pub struct TopicIn {
    messages: Counter,
    bytes: Counter,
}

impl TopicIn {
    /// One acknowledged message with a body of `body_bytes`.
    pub fn sent(&self, body_bytes: u64) {
        self.messages.inc();
        self.bytes.inc_by(body_bytes);
    }
}

#[derive(Debug)]
struct Recorders {
    registry: Arc<Registry>,
    messages_in: Family<TopicLabels, Counter>,
    throughput_in: Family<TopicLabels, Counter>,
    /// Per-topic handles of the two families above, so a send allocates no label set.
    topics_in: DashMap<Box<str>, Arc<TopicIn>>,
    messages_out: Family<DeliveryLabels, Counter>,
    throughput_out: Family<DeliveryLabels, Counter>,
    /// Indexed by [`Rpc::index`].
    latency: Vec<Histogram>,
}

/// A broker's metrics; disabled (every call a no-op) unless `metrics_listen` is set.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    recorders: Option<Arc<Recorders>>,
    /// Open connections of the client port (counted whether or not metrics are served).
    connections: ConnectionCount,
}

impl Metrics {
    /// Metrics that record nothing.
    pub fn disabled() -> Self {
        Metrics::default()
    }

    /// The registry over `sources`, with the handles the handlers record into.
    pub fn new(sources: Sources) -> Self {
        let connections = sources.connections.clone();
        let mut registry = Registry::default();
        let messages_in = Family::<TopicLabels, Counter>::default();
        registry.register(
            "rocketmq_messages_in",
            "Messages acknowledged to producers, per topic",
            messages_in.clone(),
        );
        let throughput_in = Family::<TopicLabels, Counter>::default();
        registry.register(
            "rocketmq_throughput_in",
            "Body bytes of the messages acknowledged to producers, per topic",
            throughput_in.clone(),
        );
        let messages_out = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "rocketmq_messages_out",
            "Messages delivered to consumers by ReceiveMessage and PullMessage",
            messages_out.clone(),
        );
        let throughput_out = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "rocketmq_throughput_out",
            "Body bytes of the messages delivered by ReceiveMessage and PullMessage",
            throughput_out.clone(),
        );
        let latency_family = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        let latency = Rpc::ALL
            .iter()
            .map(|r| latency_family.get_or_create_owned(&MethodLabels { method: r.name() }))
            .collect();
        registry.register_with_unit(
            "rocketmq_rpc_latency",
            "Time to answer each client RPC; ReceiveMessage and PullMessage are measured to the \
             end of their response stream (long polling included)",
            Unit::Seconds,
            latency_family,
        );
        registry.register_collector(Box::new(collector::BrokerCollector::new(sources)));
        registry.register_collector(Box::new(ProcessCollector));
        Metrics {
            recorders: Some(Arc::new(Recorders {
                registry: Arc::new(registry),
                messages_in,
                throughput_in,
                topics_in: DashMap::new(),
                messages_out,
                throughput_out,
                latency,
            })),
            connections,
        }
    }

    /// The registry (None when disabled).
    pub fn registry(&self) -> Option<Arc<Registry>> {
        self.recorders.as_ref().map(|r| Arc::clone(&r.registry))
    }

    /// The client port's connection count, to hand to its transport.
    pub fn connections(&self) -> ConnectionCount {
        self.connections.clone()
    }

    /// The send counters of `topic` (None when disabled). Allocates only the first time a
    /// topic is seen.
    pub fn topic_in(&self, topic: &str) -> Option<Arc<TopicIn>> {
        let r = self.recorders.as_ref()?;
        if let Some(t) = r.topics_in.get(topic) {
            return Some(Arc::clone(t.value()));
        }
        let labels = TopicLabels {
            topic: topic.to_owned(),
        };
        let handles = Arc::new(TopicIn {
            messages: r.messages_in.get_or_create_owned(&labels),
            bytes: r.throughput_in.get_or_create_owned(&labels),
        });
        Some(Arc::clone(
            r.topics_in.entry(topic.into()).or_insert(handles).value(),
        ))
    }

    /// `messages` messages with `bytes` of bodies delivered from `topic` to `group`.
    pub fn delivered(&self, topic: &str, group: &str, messages: u64, bytes: u64) {
        let Some(r) = &self.recorders else { return };
        if messages == 0 {
            return;
        }
        let labels = DeliveryLabels {
            topic: topic.to_owned(),
            consumer_group: group.to_owned(),
        };
        r.messages_out.get_or_create(&labels).inc_by(messages);
        r.throughput_out.get_or_create(&labels).inc_by(bytes);
    }

    /// Starts timing one call of `rpc`; recorded when the guard drops.
    pub fn rpc(&self, rpc: Rpc) -> RpcTimer {
        RpcTimer {
            histogram: self
                .recorders
                .as_ref()
                .and_then(|r| r.latency.get(rpc.index()).cloned()),
            started: Instant::now(),
        }
    }
}

/// Records the time from its creation to its drop in an RPC's latency histogram.
#[derive(Debug)]
pub struct RpcTimer {
    histogram: Option<Histogram>,
    started: Instant,
}

impl Drop for RpcTimer {
    fn drop(&mut self) {
        if let Some(h) = &self.histogram {
            h.observe(self.started.elapsed().as_secs_f64());
        }
    }
}

/// The metrics of a broker configured with `config` over its parts (disabled without
/// `metrics_listen`).
pub fn for_broker(
    config: &BrokerConfig,
    store: &Store,
    consumption: &Consumption,
    transactions: &Transactions,
    timer: &Arc<Timer>,
    role: &Arc<GroupRole>,
) -> Metrics {
    if config.metrics_listen.is_none() {
        return Metrics::disabled();
    }
    Metrics::new(Sources {
        store: store.clone(),
        consumption: consumption.clone(),
        timer: Arc::clone(timer),
        transactions: transactions.clone(),
        role: Arc::clone(role),
        connections: ConnectionCount::default(),
        store_dir: config.store_dir(),
    })
}

/// Binds `metrics_listen`, kept across in-process restarts like the other ports.
pub async fn bind(addr: Option<SocketAddr>) -> Result<Option<std::net::TcpListener>, BrokerError> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = TcpListener::bind(addr).await.map_err(|source| {
        BrokerError::Listener(std::io::Error::new(
            source.kind(),
            format!("binding metrics_listen {addr}: {source}"),
        ))
    })?;
    listener.into_std().map(Some).map_err(BrokerError::Listener)
}

/// Serves `metrics` at `GET /metrics`, and `pages` (the web console) on every other path, on
/// `listener` until `shutdown` resolves (at once when there is no listener).
pub async fn serve(
    metrics: &Metrics,
    pages: Option<Arc<dyn rocketlog_transport::HttpPages>>,
    listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) {
    let Some(listener) = listener else { return };
    let registry = metrics.registry();
    if registry.is_none() && pages.is_none() {
        return;
    }
    tracing::info!(
        listen = ?listener.local_addr().ok(),
        console = pages.is_some(),
        "metrics serving"
    );
    rocketlog_transport::serve_http(listener, registry, pages, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_indexes_follow_all() {
        for (i, r) in Rpc::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{}", r.name());
        }
    }

    #[test]
    fn latency_buckets_span_100us_to_10s() {
        let b: Vec<f64> = latency_buckets().collect();
        assert!((b[0] - 0.000_1).abs() < 1e-12);
        assert!((b[b.len() - 1] - 10.0).abs() < 1e-9);
        assert!(b.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn disabled_metrics_record_nothing() {
        let m = Metrics::disabled();
        assert!(m.topic_in("T").is_none());
        m.delivered("T", "G", 3, 30);
        drop(m.rpc(Rpc::SendMessage));
        assert!(m.registry().is_none());
    }
}
