//! Connected clients, keyed by the `x-mq-client-id` header: what each is (producer or consumer,
//! group, topics), the settings the broker answered, and the sending half of its Telemetry
//! stream, so the broker can push commands to it later (transaction check-back, ...).
//!
//! A client may reopen its Telemetry stream (Java and Node do after a second); each stream has
//! an id and only the stream that registered an entry removes it, so a late close of an old
//! stream does not forget a client that already reconnected.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use rocketlog_proto::v2;
use tokio::sync::mpsc;

/// Sending half of one Telemetry response stream.
pub type TelemetrySender = mpsc::Sender<Result<v2::TelemetryCommand, tonic::Status>>;

/// What the broker knows about one connected client.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub client_type: v2::ClientType,
    /// Consumer group (consumers only).
    pub group: Option<String>,
    /// Producer: topics it publishes to; consumer: topics it subscribes to.
    pub topics: Vec<String>,
    /// The settings answered to the client (server fields applied).
    pub settings: v2::Settings,
    /// The client's request timeout (default 3 s).
    pub request_timeout: Duration,
    stream_id: u64,
    sender: TelemetrySender,
}

impl ClientInfo {
    /// Consumer group is FIFO (from the answered settings).
    pub fn fifo(&self) -> bool {
        match &self.settings.pub_sub {
            Some(v2::settings::PubSub::Subscription(s)) => s.fifo.unwrap_or(false),
            _ => false,
        }
    }
}

/// The registry of connected clients.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    clients: DashMap<String, ClientInfo>,
    next_stream: AtomicU64,
}

impl ClientRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh id for a new Telemetry stream.
    pub fn new_stream_id(&self) -> u64 {
        self.next_stream.fetch_add(1, Ordering::Relaxed)
    }

    /// Records (or replaces) a client after a settings command on stream `stream_id`.
    #[allow(clippy::too_many_arguments)]
    pub fn register(
        &self,
        client_id: &str,
        stream_id: u64,
        client_type: v2::ClientType,
        group: Option<String>,
        topics: Vec<String>,
        settings: v2::Settings,
        request_timeout: Duration,
        sender: TelemetrySender,
    ) {
        self.clients.insert(
            client_id.to_owned(),
            ClientInfo {
                client_type,
                group,
                topics,
                settings,
                request_timeout,
                stream_id,
                sender,
            },
        );
    }

    /// Forgets the client if stream `stream_id` is the one that registered it.
    pub fn remove_stream(&self, client_id: &str, stream_id: u64) -> bool {
        self.clients
            .remove_if(client_id, |_, c| c.stream_id == stream_id)
            .is_some()
    }

    /// Forgets the client (NotifyClientTermination).
    pub fn remove(&self, client_id: &str) -> Option<ClientInfo> {
        self.clients.remove(client_id).map(|(_, c)| c)
    }

    pub fn get(&self, client_id: &str) -> Option<ClientInfo> {
        self.clients.get(client_id).map(|c| c.clone())
    }

    /// The client has a live Telemetry stream.
    pub fn is_connected(&self, client_id: &str) -> bool {
        self.clients
            .get(client_id)
            .is_some_and(|c| !c.sender.is_closed())
    }

    /// Pushes a command to a client's Telemetry stream; false if it is gone or its stream is
    /// full (a client that stopped reading).
    pub fn send(&self, client_id: &str, command: v2::TelemetryCommand) -> bool {
        let Some(sender) = self.clients.get(client_id).map(|c| c.sender.clone()) else {
            return false;
        };
        sender.try_send(Ok(command)).is_ok()
    }

    /// The sending half of a client's Telemetry stream (to wait for room, unlike [`send`]).
    ///
    /// [`send`]: ClientRegistry::send
    pub fn telemetry_sender(&self, client_id: &str) -> Option<TelemetrySender> {
        self.clients
            .get(client_id)
            .map(|c| c.sender.clone())
            .filter(|s| !s.is_closed())
    }

    /// Ids of the producers publishing to `topic`.
    pub fn producers_of(&self, topic: &str) -> Vec<String> {
        self.clients
            .iter()
            .filter(|c| {
                c.client_type == v2::ClientType::Producer && c.topics.iter().any(|t| t == topic)
            })
            .map(|c| c.key().clone())
            .collect()
    }

    /// Number of registered clients.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Drops every client (shutdown): their Telemetry streams end.
    pub fn clear(&self) {
        self.clients.clear();
    }
}
