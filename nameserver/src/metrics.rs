//! Prometheus metrics of a nameserver (`[nameserver] metrics_listen`): registered brokers and
//! topics (read from the route table at scrape time), requests per RPC, and the process
//! figures, served at `GET /metrics` by `rocketlog_transport::serve_metrics`.

use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use rocketlog_transport::ProcessCollector;

use crate::route_table::RouteTable;

/// The `rocketlog.nameserver.v1.NameServer` RPCs, counted by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    RegisterBroker,
    UnregisterBroker,
    GetTopicRoute,
    ListTopics,
    ListBrokers,
    DeleteTopic,
}

impl Method {
    const ALL: [Method; 6] = [
        Method::RegisterBroker,
        Method::UnregisterBroker,
        Method::GetTopicRoute,
        Method::ListTopics,
        Method::ListBrokers,
        Method::DeleteTopic,
    ];

    fn name(self) -> &'static str {
        match self {
            Method::RegisterBroker => "RegisterBroker",
            Method::UnregisterBroker => "UnregisterBroker",
            Method::GetTopicRoute => "GetTopicRoute",
            Method::ListTopics => "ListTopics",
            Method::ListBrokers => "ListBrokers",
            Method::DeleteTopic => "DeleteTopic",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

/// The nameserver's registry and its request counters; cheap to clone.
#[derive(Debug, Clone)]
pub struct NameserverMetrics {
    registry: Arc<Registry>,
    /// Indexed like [`Method::ALL`].
    requests: Arc<[Counter]>,
}

impl NameserverMetrics {
    /// Metrics over `table`.
    pub fn new(table: Arc<Mutex<RouteTable>>) -> Self {
        let mut registry = Registry::default();
        let family = Family::<MethodLabels, Counter>::default();
        let requests: Arc<[Counter]> = Method::ALL
            .iter()
            .map(|m| family.get_or_create_owned(&MethodLabels { method: m.name() }))
            .collect();
        registry.register(
            "rocketlog_nameserver_requests",
            "Requests received, per RPC",
            family,
        );
        registry.register_collector(Box::new(TableCollector { table }));
        registry.register_collector(Box::new(ProcessCollector));
        NameserverMetrics {
            registry: Arc::new(registry),
            requests,
        }
    }

    /// Counts one request of `method`.
    pub fn request(&self, method: Method) {
        if let Some(c) = self.requests.get(method as usize) {
            c.inc();
        }
    }

    /// The registry to serve.
    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry)
    }
}

#[derive(Debug)]
struct TableCollector {
    table: Arc<Mutex<RouteTable>>,
}

impl Collector for TableCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (brokers, topics) = {
            let t = self.table.lock();
            (t.broker_count(), t.topic_count())
        };
        let g = ConstGauge::new(i64::try_from(brokers).unwrap_or(i64::MAX));
        g.encode(encoder.encode_descriptor(
            "rocketlog_nameserver_brokers",
            "Broker replicas registered and not expired",
            None,
            MetricType::Gauge,
        )?)?;
        let g = ConstGauge::new(i64::try_from(topics).unwrap_or(i64::MAX));
        g.encode(encoder.encode_descriptor(
            "rocketlog_nameserver_topics",
            "Distinct topics the registered brokers serve",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_index_their_counters() {
        for (i, m) in Method::ALL.iter().enumerate() {
            assert_eq!(*m as usize, i, "{}", m.name());
        }
        let m = NameserverMetrics::new(Arc::new(Mutex::new(RouteTable::default())));
        m.request(Method::GetTopicRoute);
        m.request(Method::GetTopicRoute);
        let text = rocketlog_transport::metrics::encode(&m.registry()).unwrap();
        assert!(
            text.contains("rocketlog_nameserver_requests_total{method=\"GetTopicRoute\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("rocketlog_nameserver_brokers 0\n"), "{text}");
        assert!(text.contains("rocketlog_nameserver_topics 0\n"), "{text}");
    }
}
