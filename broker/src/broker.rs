//! The state one broker shares between its request handlers and background tasks.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocketlog_store::Store;
use tokio_util::sync::CancellationToken;

use crate::clients::ClientRegistry;
use crate::config::{parse_host_port, BrokerConfig};
use crate::consumption::Consumption;
use crate::metrics::Metrics;
use crate::renewal::Renewals;
use crate::replication::GroupRole;
use crate::routes::RouteTable;
use crate::timer::Timer;
use crate::topics::{TopicConfig, TopicManager, TopicMessageType};
use crate::transaction::Transactions;

/// The address this broker gives clients in routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedEndpoint {
    pub host: String,
    pub port: u16,
    /// Bound to an unspecified address with nothing configured: routes echo the host the
    /// client dialled (as the proxy does), with our port.
    pub echo_client_host: bool,
}

impl AdvertisedEndpoint {
    /// From the configured advertised address, else the bound address.
    pub fn resolve(advertised: Option<&str>, bound: SocketAddr) -> Self {
        if let Some((host, port)) = advertised.and_then(|a| parse_host_port(a).ok()) {
            return AdvertisedEndpoint {
                host,
                port,
                echo_client_host: false,
            };
        }
        let unspecified = bound.ip().is_unspecified();
        let host = if unspecified {
            match bound.ip() {
                IpAddr::V4(_) => "127.0.0.1".to_owned(),
                IpAddr::V6(_) => "::1".to_owned(),
            }
        } else {
            bound.ip().to_string()
        };
        AdvertisedEndpoint {
            host,
            port: bound.port(),
            echo_client_host: unspecified,
        }
    }

    /// `host:port` (IPv6 hosts in brackets).
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Everything a request handler may touch.
#[derive(Debug)]
pub struct Broker {
    pub config: BrokerConfig,
    pub store: Store,
    pub consumption: Consumption,
    pub topics: Arc<TopicManager>,
    pub clients: ClientRegistry,
    pub renewals: Renewals,
    pub routes: RouteTable,
    pub endpoint: AdvertisedEndpoint,
    /// `endpoint` as `host:port`, the store host of every message appended here (made once,
    /// not per send).
    pub store_host: String,
    /// `host:port` of the replication port as replicas dial it (registered with the
    /// nameservers); empty without one.
    pub replication_address: String,
    /// Open transactions (half messages) and their check-back.
    pub transactions: Transactions,
    /// Pending delayed messages.
    pub timer: Arc<Timer>,
    /// Master or slave of its group, and the replication state that goes with it.
    pub role: Arc<GroupRole>,
    /// Cancelled when the broker begins shutting down: long polls and Telemetry streams end.
    pub shutdown: CancellationToken,
    /// When the broker started serving (for uptime).
    pub started: Instant,
    /// Prometheus metrics (disabled unless `metrics_listen` is set).
    pub metrics: Metrics,
    /// Consumer lag over time, for the console (sampled only while the console is served).
    pub lag_history: Arc<crate::console::history::LagHistory>,
    next_queue: AtomicU32,
}

impl Broker {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: BrokerConfig,
        store: Store,
        consumption: Consumption,
        topics: Arc<TopicManager>,
        routes: RouteTable,
        renewals: Renewals,
        endpoint: AdvertisedEndpoint,
        transactions: Transactions,
        timer: Arc<Timer>,
        role: Arc<GroupRole>,
        shutdown: CancellationToken,
    ) -> Self {
        let lag_history = Arc::new(crate::console::history::LagHistory::new(
            std::time::Duration::from_millis(config.console.lag_sample_interval_ms),
            std::time::Duration::from_millis(config.console.lag_history_ms),
        ));
        Broker {
            config,
            store,
            consumption,
            topics,
            clients: ClientRegistry::new(),
            renewals,
            routes,
            store_host: endpoint.address(),
            replication_address: String::new(),
            endpoint,
            transactions,
            timer,
            role,
            shutdown,
            started: Instant::now(),
            metrics: Metrics::disabled(),
            lag_history,
            next_queue: AtomicU32::new(0),
        }
    }

    /// The broker recording into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The replication port's advertised address.
    pub fn with_replication_address(mut self, address: String) -> Self {
        self.replication_address = address;
        self
    }

    /// Round-robin queue choice among `count` queues.
    pub fn next_queue(&self, count: u32) -> u32 {
        self.next_queue.fetch_add(1, Ordering::Relaxed) % count.max(1)
    }

    /// Whether consumers of `topic` get FIFO delivery: the topic accepts FIFO messages only.
    /// (rocketlog keeps no per-group "orderly" flag; a FIFO topic is consumed in order.)
    pub fn topic_is_fifo(&self, topic: &str) -> bool {
        self.topics.get(topic).is_some_and(|t| is_fifo_topic(&t))
    }

    /// Time allowed for in-flight work at shutdown.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.config.shutdown_grace_ms)
    }
}

/// A topic that accepts FIFO messages and nothing else.
pub fn is_fifo_topic(t: &TopicConfig) -> bool {
    t.message_types.len() == 1 && t.accepts(TopicMessageType::Fifo)
}

impl Broker {
    /// A topic as routes and registrations present it: read-only while the broker drains, so
    /// producers move to other broker groups and consumers keep reading.
    pub fn routed_topic(&self, t: &Arc<TopicConfig>) -> Arc<TopicConfig> {
        if self.role.is_draining() && t.permission.writable() {
            Arc::new(TopicConfig {
                permission: crate::nameserver_client::read_only(t.permission),
                ..(**t).clone()
            })
        } else {
            Arc::clone(t)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_resolution() {
        let bound: SocketAddr = "0.0.0.0:8081".parse().unwrap();
        let e = AdvertisedEndpoint::resolve(None, bound);
        assert!(e.echo_client_host);
        assert_eq!(e.port, 8081);
        let e = AdvertisedEndpoint::resolve(Some("mq.example:9000"), bound);
        assert_eq!(e.address(), "mq.example:9000");
        assert!(!e.echo_client_host);
        let e = AdvertisedEndpoint::resolve(None, "127.0.0.1:7".parse().unwrap());
        assert_eq!(e.address(), "127.0.0.1:7");
        assert!(!e.echo_client_host);
        let e = AdvertisedEndpoint::resolve(None, "[::1]:7".parse().unwrap());
        assert_eq!(e.address(), "[::1]:7");
    }
}
