//! Broker configuration: one plain struct, deserialized by the binary (TOML, environment, flags)
//! and validated once at start. Every field has a documented default, so an empty file is a
//! working standalone broker.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::BrokerError;
pub use crate::topics::MAX_QUEUE_COUNT;

/// Largest accepted `max_body_size` (the proxy's inbound gRPC message limit is 130 MiB; a body
/// must fit in one with its properties).
pub const MAX_BODY_SIZE_LIMIT: usize = 128 << 20;
/// Room for topic, properties and record header on top of the body in one store record.
pub const RECORD_OVERHEAD_ALLOWANCE: usize = 64 << 10;

/// How sends become durable before the broker answers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FlushMode {
    /// Answer a send only after an fsync covers it (group commit).
    Sync,
    /// Answer once the record is in the mapped log; flush every `flush_interval_ms`.
    #[default]
    Async,
}

/// Storage engine settings the operator may tune.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// Size of one commit-log segment file in bytes (default 1 GiB).
    pub segment_size: u64,
    /// Async flush period in milliseconds (default 500).
    pub flush_interval_ms: u64,
    /// Consume-queue entries per consume-queue file, 20 bytes each (default 300 000: 6 MB
    /// files, preallocated, one per queue at least). Fixed for a data directory once written:
    /// on a small disk with many queues, pick a lower value before the first start.
    pub consume_queue_segment_entries: u32,
    /// Entries per new message-id/key index file, 20 bytes each; a message takes one for its
    /// id and one per key (default 1 000 000). Files already written keep their size.
    pub index_entries_per_file: u32,
    /// Hash slots per new index file, 4 bytes each (default 250 007: about a quarter of the
    /// entries).
    pub index_slots: u32,
    /// Commit-log segments older than this many hours are deleted (default 72).
    pub retention_hours: u64,
    /// Segments are deleted early when disk use passes this ratio (default 0.85).
    pub disk_use_ratio_limit: f64,
    /// Write commit-log segments prepared ahead with zeros before use, so Sync flushes commit
    /// no file-system journal (default: on with `flush_mode = "sync"`, off with "async").
    pub zero_fill_segments: Option<bool>,
    /// Bytes of recent commit log kept mapped in the broker's resident set; older pages (and
    /// consume-queue files but each queue's newest) are released every second and mapped
    /// back when read (default 64 MiB; 0 keeps every page, so the resident set grows to the
    /// mapped log).
    pub resident_window: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            segment_size: 1 << 30,
            flush_interval_ms: 500,
            consume_queue_segment_entries: 300_000,
            index_entries_per_file: 1_000_000,
            index_slots: 250_007,
            retention_hours: 72,
            disk_use_ratio_limit: 0.85,
            zero_fill_segments: None,
            resident_window: rocketlog_store::DEFAULT_RESIDENT_WINDOW,
        }
    }
}

/// Consumer-side limits (the Apache proxy's defaults).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiveSettings {
    /// Smallest invisible duration a receive may ask for, ms (default 10 000).
    pub min_invisible_duration_ms: u64,
    /// Largest invisible duration for receive and change-invisible, ms (default 12 h).
    pub max_invisible_duration_ms: u64,
    /// Invisible duration of auto-renewed (push consumer) deliveries, ms (default 60 000).
    pub auto_renew_invisible_duration_ms: u64,
    /// Auto-renewal stops this long after the first delivery, ms (default 3 h).
    pub auto_renew_max_ms: u64,
    /// An auto-renewed delivery is extended when its deadline is this close, ms (default
    /// 10 000).
    pub auto_renew_ahead_ms: u64,
    /// How often auto-renewals are looked for, ms (default 5 000).
    pub auto_renew_period_ms: u64,
    /// Shortest long-polling wait, ms (default 5 000).
    pub min_long_polling_ms: u64,
    /// Longest long-polling wait, ms (default 20 000).
    pub max_long_polling_ms: u64,
    /// `receive_batch_size` given to push consumers in settings (default 32).
    pub batch_size: u32,
    /// Max delivery attempts before the dead-letter queue, sent to consumers in settings
    /// (default 17, the proxy's).
    pub max_delivery_attempts: u32,
}

impl Default for ReceiveSettings {
    fn default() -> Self {
        ReceiveSettings {
            min_invisible_duration_ms: 10_000,
            max_invisible_duration_ms: 12 * 3600 * 1000,
            auto_renew_invisible_duration_ms: 60_000,
            auto_renew_max_ms: 3 * 3600 * 1000,
            auto_renew_ahead_ms: 10_000,
            auto_renew_period_ms: 5_000,
            min_long_polling_ms: 5_000,
            max_long_polling_ms: 20_000,
            batch_size: 32,
            max_delivery_attempts: 17,
        }
    }
}

/// Configuration of one broker process.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Cluster the broker registers under (default `DefaultCluster`).
    pub cluster_name: String,
    /// Broker group name; the masters and slaves of one group share it (default `broker-a`).
    pub broker_name: String,
    /// 0 = master (default), 1.. = slave.
    pub broker_id: u64,
    /// Root of the broker's files: `store/`, `consumption/`, `config/` (default `./rocketlog-data`).
    pub data_dir: PathBuf,
    /// `host:port` that clients and nameservers are told to dial. Default: the bound address
    /// (when bound to an unspecified address, routes echo the host the client dialled).
    pub advertised_address: Option<String>,
    /// `host:port` of every nameserver to register with. Empty: standalone, routes are served
    /// from the local topic table.
    pub nameserver_addresses: Vec<String>,
    /// When a send is acknowledged (default `async`).
    pub flush_mode: FlushMode,
    /// Storage engine tuning.
    pub store: StoreSettings,
    /// Create unknown topics on first route query or send (default true).
    pub auto_create_topics: bool,
    /// Queue count of auto-created topics and the admin default (default 8).
    pub default_queue_count: u32,
    /// Largest message body accepted, bytes (default 4 MiB).
    pub max_body_size: usize,
    /// PEM certificate chain for TLS; with no cert/key a self-signed certificate is generated
    /// at start (TLS and plaintext h2c are both served on the client port).
    pub tls_cert_path: Option<PathBuf>,
    /// PEM private key for `tls_cert_path`.
    pub tls_key_path: Option<PathBuf>,
    /// Consumer limits and settings.
    pub receive: ReceiveSettings,
    /// Interval of registration heartbeats to the nameservers, ms (default 30 000).
    pub heartbeat_interval_ms: u64,
    /// How long a route answered by a nameserver is reused, ms (default 3 000).
    pub route_cache_ms: u64,
    /// On shutdown, how long in-flight requests may take to finish, ms (default 10 000).
    pub shutdown_grace_ms: u64,
    /// Requests (HTTP/2 streams) one client connection may have open at once (default 10 000).
    /// Clients that share a connection (the Rust SDK's default) keep their long polls and
    /// Telemetry streams open on it, so a low limit would make one client's sends wait for
    /// another's polls; further requests wait in the client for a free stream, not fail.
    pub max_concurrent_streams: u32,
    /// Client connections: handshake deadline, keep-alive pings, how many at once.
    pub connections: crate::transport::ConnectionSettings,
    /// Transactional messages: check-back timing and policy.
    pub transaction: crate::transaction::TransactionSettings,
    /// Delayed messages: furthest delay, timer buckets and checkpoints.
    pub timer: crate::timer::TimerSettings,
    /// On a master: the address its slaves connect to for the commit log (plaintext gRPC,
    /// separate from the client port so that it can be firewalled off). Unset: no slaves.
    pub replication_listen: Option<SocketAddr>,
    /// Master/slave replication of the commit log.
    pub replication: crate::replication::ReplicationSettings,
    /// Where Prometheus scrapes the broker's metrics (`GET /metrics`, plain HTTP). Unset: not
    /// served.
    pub metrics_listen: Option<SocketAddr>,
    /// Authentication (signed requests) and access rules of the client port.
    pub auth: crate::auth::AuthSettings,
    /// The web console on the `metrics_listen` port.
    pub console: crate::console::settings::ConsoleSettings,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            cluster_name: "DefaultCluster".to_owned(),
            broker_name: "broker-a".to_owned(),
            broker_id: 0,
            data_dir: PathBuf::from("./rocketlog-data"),
            advertised_address: None,
            nameserver_addresses: Vec::new(),
            flush_mode: FlushMode::Async,
            store: StoreSettings::default(),
            auto_create_topics: true,
            default_queue_count: 8,
            max_body_size: 4 << 20,
            tls_cert_path: None,
            tls_key_path: None,
            receive: ReceiveSettings::default(),
            heartbeat_interval_ms: 30_000,
            route_cache_ms: 3_000,
            shutdown_grace_ms: 10_000,
            max_concurrent_streams: crate::transport::DEFAULT_MAX_CONCURRENT_STREAMS,
            connections: Default::default(),
            transaction: Default::default(),
            timer: Default::default(),
            replication_listen: None,
            replication: Default::default(),
            metrics_listen: None,
            auth: Default::default(),
            console: Default::default(),
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> BrokerError {
    BrokerError::Config {
        field,
        reason: reason.into(),
    }
}

/// Splits `host:port` (IPv6 hosts in brackets) and checks both parts.
pub fn parse_host_port(addr: &str) -> Result<(String, u16), String> {
    if let Ok(sock) = addr.parse::<SocketAddr>() {
        return Ok((sock.ip().to_string(), sock.port()));
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{addr:?} is not host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{addr:?} has an invalid port {port:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(format!("{addr:?} has an invalid host"));
    }
    Ok((host.to_owned(), port))
}

impl BrokerConfig {
    /// Checks every field; the error names the field and why.
    pub fn validate(&self) -> Result<(), BrokerError> {
        rocketlog_common::validate_group(&self.cluster_name)
            .map_err(|e| invalid("cluster_name", e.to_string()))?;
        rocketlog_common::validate_group(&self.broker_name)
            .map_err(|e| invalid("broker_name", e.to_string()))?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if let Some(addr) = &self.advertised_address {
            parse_host_port(addr).map_err(|e| invalid("advertised_address", e))?;
        }
        for addr in &self.nameserver_addresses {
            parse_host_port(addr).map_err(|e| invalid("nameserver_addresses", e))?;
        }
        if self.default_queue_count == 0 || self.default_queue_count > MAX_QUEUE_COUNT {
            return Err(invalid(
                "default_queue_count",
                format!(
                    "{} is outside 1..={MAX_QUEUE_COUNT}",
                    self.default_queue_count
                ),
            ));
        }
        if self.max_body_size == 0 || self.max_body_size > MAX_BODY_SIZE_LIMIT {
            return Err(invalid(
                "max_body_size",
                format!(
                    "{} is outside 1..={MAX_BODY_SIZE_LIMIT}",
                    self.max_body_size
                ),
            ));
        }
        self.validate_store()?;
        if let Some((field, reason)) = self
            .replication
            .invalid_field(self.broker_id, self.replication_listen)
        {
            return Err(invalid(field, reason));
        }
        if self.replication.controller && self.nameserver_addresses.is_empty() {
            return Err(invalid(
                "replication.controller",
                "the controller runs in the nameservers: set nameserver_addresses",
            ));
        }
        if let Some(addr) = &self.replication.master_address {
            parse_host_port(addr).map_err(|e| invalid("replication.master_address", e))?;
        }
        match (&self.tls_cert_path, &self.tls_key_path) {
            (Some(_), None) => return Err(invalid("tls_key_path", "tls_cert_path needs a key")),
            (None, Some(_)) => return Err(invalid("tls_cert_path", "tls_key_path needs a cert")),
            _ => {}
        }
        self.validate_receive()?;
        let c = &self.console;
        if c.lag_sample_interval_ms == 0 {
            return Err(invalid("console.lag_sample_interval_ms", "must be above 0"));
        }
        if c.lag_history_ms < c.lag_sample_interval_ms {
            return Err(invalid(
                "console.lag_history_ms",
                "is below console.lag_sample_interval_ms",
            ));
        }
        if self.heartbeat_interval_ms == 0 {
            return Err(invalid("heartbeat_interval_ms", "must be positive"));
        }
        if self.max_concurrent_streams == 0 {
            return Err(invalid("max_concurrent_streams", "must be positive"));
        }
        if let Some((field, reason)) = self.connections.invalid_field() {
            return Err(invalid(field, reason));
        }
        if let Some((field, reason)) = self.transaction.invalid_field() {
            return Err(invalid(field, reason));
        }
        self.timer.validate(self.store.retention_hours)?;
        Ok(())
    }

    fn validate_store(&self) -> Result<(), BrokerError> {
        let s = &self.store;
        let min_segment = (self.max_body_size + RECORD_OVERHEAD_ALLOWANCE) as u64;
        if s.segment_size < min_segment {
            return Err(invalid(
                "store.segment_size",
                format!(
                    "{} bytes cannot hold one max-size message ({min_segment} bytes with overhead)",
                    s.segment_size
                ),
            ));
        }
        if s.flush_interval_ms == 0 {
            return Err(invalid("store.flush_interval_ms", "must be positive"));
        }
        if s.consume_queue_segment_entries == 0 {
            return Err(invalid(
                "store.consume_queue_segment_entries",
                "must be positive",
            ));
        }
        if s.index_entries_per_file == 0 {
            return Err(invalid("store.index_entries_per_file", "must be positive"));
        }
        if s.index_slots == 0 {
            return Err(invalid("store.index_slots", "must be positive"));
        }
        if s.retention_hours == 0 {
            return Err(invalid("store.retention_hours", "must be positive"));
        }
        if !(s.disk_use_ratio_limit > 0.0 && s.disk_use_ratio_limit <= 1.0) {
            return Err(invalid(
                "store.disk_use_ratio_limit",
                format!("{} is outside (0, 1]", s.disk_use_ratio_limit),
            ));
        }
        Ok(())
    }

    fn validate_receive(&self) -> Result<(), BrokerError> {
        let r = &self.receive;
        if r.min_invisible_duration_ms > r.max_invisible_duration_ms {
            return Err(invalid(
                "receive.min_invisible_duration_ms",
                "is above receive.max_invisible_duration_ms",
            ));
        }
        if r.auto_renew_invisible_duration_ms == 0
            || r.auto_renew_invisible_duration_ms > r.max_invisible_duration_ms
        {
            return Err(invalid(
                "receive.auto_renew_invisible_duration_ms",
                "must be positive and at most receive.max_invisible_duration_ms",
            ));
        }
        if r.auto_renew_ahead_ms >= r.auto_renew_invisible_duration_ms {
            return Err(invalid(
                "receive.auto_renew_ahead_ms",
                "must be below receive.auto_renew_invisible_duration_ms",
            ));
        }
        if r.auto_renew_period_ms == 0 || r.auto_renew_period_ms >= r.auto_renew_ahead_ms {
            return Err(invalid(
                "receive.auto_renew_period_ms",
                "must be positive and below receive.auto_renew_ahead_ms",
            ));
        }
        if r.min_long_polling_ms > r.max_long_polling_ms {
            return Err(invalid(
                "receive.min_long_polling_ms",
                "is above receive.max_long_polling_ms",
            ));
        }
        if r.batch_size == 0 || r.batch_size > 1024 {
            return Err(invalid("receive.batch_size", "must be in 1..=1024"));
        }
        if r.max_delivery_attempts == 0 {
            return Err(invalid("receive.max_delivery_attempts", "must be positive"));
        }
        Ok(())
    }

    /// Period of the registration heartbeat.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// The storage engine's configuration.
    pub fn store_config(&self) -> rocketlog_store::StoreConfig {
        let flush_mode = match self.flush_mode {
            FlushMode::Sync => rocketlog_store::FlushMode::Sync,
            FlushMode::Async => rocketlog_store::FlushMode::Async {
                interval: Duration::from_millis(self.store.flush_interval_ms),
            },
        };
        rocketlog_store::StoreConfig {
            data_dir: self.store_dir(),
            segment_size: self.store.segment_size,
            flush_mode,
            max_message_size: self.max_body_size + RECORD_OVERHEAD_ALLOWANCE,
            consume_queue_segment_entries: self.store.consume_queue_segment_entries,
            index_entries_per_file: self.store.index_entries_per_file,
            index_slots: self.store.index_slots,
            retention: Duration::from_secs(self.store.retention_hours.saturating_mul(3600)),
            disk_use_ratio_limit: self.store.disk_use_ratio_limit,
            zero_fill_segments: self.store.zero_fill_segments,
            resident_window: Some(self.store.resident_window).filter(|w| *w > 0),
            ..Default::default()
        }
    }

    /// Who this broker is in its group, for replication.
    pub fn identity(&self) -> crate::replication::Identity {
        crate::replication::Identity {
            cluster_name: self.cluster_name.clone(),
            broker_name: self.broker_name.clone(),
            broker_id: self.broker_id,
            store_dir: self.store_dir(),
            serves_replication: self.replication_listen.is_some(),
            start_as: if self.broker_id == 0 {
                crate::replication::StartAs::Master { epoch: None }
            } else {
                crate::replication::StartAs::Slave {
                    master_address: self.replication.master_address.clone().unwrap_or_default(),
                }
            },
        }
    }

    /// Directory of the storage engine's files.
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }

    /// Directory of the consumption engine's state.
    pub fn consumption_dir(&self) -> PathBuf {
        self.data_dir.join("consumption")
    }

    /// Directory of the transaction checkpoint.
    pub fn transaction_dir(&self) -> PathBuf {
        self.data_dir.join("transaction")
    }

    /// Directory of the delayed-message timer (bucket files, checkpoint).
    pub fn timer_dir(&self) -> PathBuf {
        self.data_dir.join("timer")
    }

    /// Directory of the broker's own metadata (topic table).
    pub fn config_dir(&self) -> PathBuf {
        self.data_dir.join("config")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        BrokerConfig::default().validate().unwrap();
    }

    #[test]
    fn empty_toml_like_input_gives_defaults() {
        let cfg: BrokerConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg.broker_name, "broker-a");
        assert_eq!(cfg.default_queue_count, 8);
        assert_eq!(cfg.flush_mode, FlushMode::Async);
        let cfg: BrokerConfig = serde_json::from_str(r#"{"flush_mode":"sync"}"#).unwrap();
        assert_eq!(cfg.flush_mode, FlushMode::Sync);
        assert!(serde_json::from_str::<BrokerConfig>(r#"{"no_such":1}"#).is_err());
    }

    #[test]
    fn zero_fill_follows_the_flush_mode_unless_set() {
        let parse = |json: &str| serde_json::from_str::<BrokerConfig>(json).unwrap();
        assert!(parse(r#"{"flush_mode":"sync"}"#)
            .store_config()
            .effective_zero_fill());
        assert!(!parse("{}").store_config().effective_zero_fill());
        let off = parse(r#"{"flush_mode":"sync","store":{"zero_fill_segments":false}}"#);
        assert!(!off.store_config().effective_zero_fill());
        let on = parse(r#"{"store":{"zero_fill_segments":true}}"#);
        assert!(on.store_config().effective_zero_fill());
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: Vec<(BrokerConfig, &str)> = vec![
            (
                BrokerConfig {
                    default_queue_count: 0,
                    ..Default::default()
                },
                "default_queue_count",
            ),
            (
                BrokerConfig {
                    max_body_size: 0,
                    ..Default::default()
                },
                "max_body_size",
            ),
            (
                BrokerConfig {
                    tls_cert_path: Some("c.pem".into()),
                    ..Default::default()
                },
                "tls_key_path",
            ),
            (
                BrokerConfig {
                    nameserver_addresses: vec!["nohost".into()],
                    ..Default::default()
                },
                "nameserver_addresses",
            ),
            (
                BrokerConfig {
                    broker_name: "a b".into(),
                    ..Default::default()
                },
                "broker_name",
            ),
            (
                BrokerConfig {
                    max_concurrent_streams: 0,
                    ..Default::default()
                },
                "max_concurrent_streams",
            ),
            (
                BrokerConfig {
                    connections: crate::transport::ConnectionSettings {
                        handshake_timeout_ms: 0,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                "connections.handshake_timeout_ms",
            ),
        ];
        for (cfg, field) in cases {
            match cfg.validate() {
                Err(BrokerError::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected error on {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn host_port_parsing() {
        assert_eq!(
            parse_host_port("127.0.0.1:8081").unwrap(),
            ("127.0.0.1".into(), 8081)
        );
        assert_eq!(parse_host_port("[::1]:8081").unwrap(), ("::1".into(), 8081));
        assert_eq!(
            parse_host_port("broker-0.mq:8081").unwrap(),
            ("broker-0.mq".into(), 8081)
        );
        assert!(parse_host_port("x:99999").is_err());
        assert!(parse_host_port(":1").is_err());
    }
}
