//! Test harness: a real broker (and, where a test asks, a real nameserver) on 127.0.0.1:0 in
//! this process, and generated tonic clients with the headers the official clients send.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rocketlog_broker::BrokerConfig;
use rocketlog_proto::v2;
use rocketlog_proto::v2::messaging_service_client::MessagingServiceClient;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

mod tls_client;
#[allow(unused_imports)] // not every test binary uses TLS
pub use tls_client::tls_channel;

/// Deadline for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(20);

/// A broker running in this process.
pub struct TestBroker {
    pub addr: SocketAddr,
    pub dir: Arc<tempfile::TempDir>,
    pub config: BrokerConfig,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), rocketlog_broker::BrokerError>>>,
}

/// A config for tests: small store segments, sync flush, short receive floors.
pub fn test_config(dir: &std::path::Path) -> BrokerConfig {
    let mut c = BrokerConfig {
        data_dir: dir.to_path_buf(),
        flush_mode: rocketlog_broker::FlushMode::Sync,
        shutdown_grace_ms: 5_000,
        ..Default::default()
    };
    c.store.segment_size = 16 << 20;
    c.receive.min_invisible_duration_ms = 1_000;
    c
}

impl TestBroker {
    /// Starts a broker on a fresh data directory with `tweak` applied to the test config.
    pub async fn start(tweak: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let mut config = test_config(dir.path());
        tweak(&mut config);
        Self::start_with(dir, config).await
    }

    /// Starts a broker with exactly `config` (its data dir inside `dir`).
    pub async fn start_with(dir: Arc<tempfile::TempDir>, config: BrokerConfig) -> TestBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(rocketlog_broker::run(
            config.clone(),
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        let broker = TestBroker {
            addr,
            dir,
            config,
            stop: Some(stop),
            task: Some(task),
        };
        // Ready when a route query is answered.
        let mut client = broker.client().await;
        poll(|| {
            let mut c = client.clone();
            async move {
                c.heartbeat(req(v2::HeartbeatRequest::default()))
                    .await
                    .is_ok()
            }
        })
        .await;
        let _ = &mut client;
        broker
    }

    /// A plaintext (h2c) client.
    pub async fn client(&self) -> MessagingServiceClient<Channel> {
        MessagingServiceClient::new(plain_channel(self.addr).await)
    }

    /// Stops the broker and waits for a clean return.
    pub async fn stop(mut self) -> (Arc<tempfile::TempDir>, BrokerConfig) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("broker stops in time")
                .expect("broker task")
                .expect("broker run ok");
        }
        (Arc::clone(&self.dir), self.config.clone())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Polls `f` until it returns true, failing the test after [`WAIT`].
pub async fn poll<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if f().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn plain_channel(addr: SocketAddr) -> Channel {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match Endpoint::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
        {
            Ok(c) => return c,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cannot connect: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A request with the headers of an official client (client id, language, version).
pub fn req<T>(msg: T) -> tonic::Request<T> {
    req_as("test-client@1", msg)
}

/// A request from a given client id.
pub fn req_as<T>(client_id: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    let md = r.metadata_mut();
    md.insert("x-mq-client-id", client_id.parse().expect("header"));
    md.insert("x-mq-language", "RUST".parse().expect("header"));
    md.insert("x-mq-client-version", "5.1.2".parse().expect("header"));
    md.insert("x-mq-protocol", "v2".parse().expect("header"));
    r
}

pub fn resource(name: &str) -> Option<v2::Resource> {
    Some(v2::Resource {
        resource_namespace: String::new(),
        name: name.to_owned(),
    })
}

pub fn code(status: &Option<v2::Status>) -> v2::Code {
    let c = status.as_ref().expect("status present").code;
    v2::Code::try_from(c).expect("known code")
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A fresh client-style message id (34 upper-case hex characters).
pub fn message_id() -> String {
    let n = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("01AABBCCDDEEFF0102{n:016X}")
}

/// A message as a producer sends it.
pub fn message(
    topic: &str,
    body: &[u8],
    tag: Option<&str>,
    keys: &[&str],
    group: Option<&str>,
) -> v2::Message {
    let message_type = if group.is_some() {
        v2::MessageType::Fifo
    } else {
        v2::MessageType::Normal
    };
    v2::Message {
        topic: resource(topic),
        user_properties: [("origin".to_owned(), "test".to_owned())]
            .into_iter()
            .collect(),
        system_properties: Some(v2::SystemProperties {
            tag: tag.map(str::to_owned),
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            message_id: message_id(),
            body_encoding: v2::Encoding::Identity as i32,
            message_type: message_type as i32,
            born_timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            born_host: "test-host".to_owned(),
            message_group: group.map(str::to_owned),
            ..Default::default()
        }),
        body: body.to_vec().into(),
    }
}

/// Sends one message; returns the response.
pub async fn send(
    client: &mut MessagingServiceClient<Channel>,
    msg: v2::Message,
) -> v2::SendMessageResponse {
    client
        .send_message(req(v2::SendMessageRequest {
            messages: vec![msg],
        }))
        .await
        .expect("send rpc")
        .into_inner()
}

/// What one ReceiveMessage stream carried.
#[derive(Debug, Default)]
pub struct Received {
    pub status: Option<v2::Status>,
    pub messages: Vec<v2::Message>,
    pub delivery_timestamp: Option<prost_types::Timestamp>,
    /// Order of the items: 's' status, 'm' message, 'd' delivery timestamp.
    pub shape: String,
}

/// One simple-consumer receive.
pub async fn receive(
    client: &mut MessagingServiceClient<Channel>,
    group: &str,
    topic: &str,
    filter: &str,
    batch: i32,
    invisible: Duration,
    poll: Duration,
) -> Received {
    let mut r = req(v2::ReceiveMessageRequest {
        group: resource(group),
        message_queue: Some(v2::MessageQueue {
            topic: resource(topic),
            id: 0,
            ..Default::default()
        }),
        filter_expression: Some(v2::FilterExpression {
            r#type: v2::FilterType::Tag as i32,
            expression: filter.to_owned(),
        }),
        batch_size: batch,
        invisible_duration: Some(prost_types::Duration {
            seconds: i64::try_from(invisible.as_secs()).expect("secs"),
            nanos: i32::try_from(invisible.subsec_nanos()).expect("nanos"),
        }),
        auto_renew: false,
        long_polling_timeout: Some(prost_types::Duration {
            seconds: i64::try_from(poll.as_secs()).expect("secs"),
            nanos: 0,
        }),
        attempt_id: None,
    });
    r.set_timeout(poll + Duration::from_secs(3));
    let mut stream = client
        .receive_message(r)
        .await
        .expect("receive rpc")
        .into_inner();
    let mut out = Received::default();
    while let Some(item) = stream.message().await.expect("receive stream") {
        match item.content {
            Some(v2::receive_message_response::Content::Status(s)) => {
                out.shape.push('s');
                out.status = Some(s);
            }
            Some(v2::receive_message_response::Content::Message(m)) => {
                out.shape.push('m');
                out.messages.push(m);
            }
            Some(v2::receive_message_response::Content::DeliveryTimestamp(t)) => {
                out.shape.push('d');
                out.delivery_timestamp = Some(t);
            }
            None => out.shape.push('?'),
        }
    }
    out
}

/// The system properties of a delivered message.
pub fn sys(m: &v2::Message) -> &v2::SystemProperties {
    m.system_properties.as_ref().expect("system properties")
}

/// Acks one delivered message.
pub async fn ack(
    client: &mut MessagingServiceClient<Channel>,
    group: &str,
    m: &v2::Message,
) -> v2::AckMessageResponse {
    let s = sys(m);
    client
        .ack_message(req(v2::AckMessageRequest {
            group: resource(group),
            topic: m.topic.clone(),
            entries: vec![v2::AckMessageEntry {
                message_id: s.message_id.clone(),
                receipt_handle: s.receipt_handle.clone().unwrap_or_default(),
                lite_topic: None,
            }],
        }))
        .await
        .expect("ack rpc")
        .into_inner()
}
