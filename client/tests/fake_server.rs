//! The client against a scripted `MessagingService`: checks what goes on the wire where the
//! real broker cannot show it (headers and signatures on every call, retries keeping the
//! message id, adopted retry policy, transactions and the server's transaction checks).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rocketlog_client::{
    ClientConfig, Code, Credentials, Message, MessageView, Producer, TransactionProducer,
    TransactionResolution,
};
use rocketlog_proto::v2;
use rocketlog_proto::v2::messaging_service_server::{MessagingService, MessagingServiceServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

type Answer<T> = Result<Response<T>, Status>;
/// A call: its method and its `x-mq-*` and `authorization` headers.
type Call = (String, Vec<(String, String)>);

struct Fake {
    port: u16,
    /// (method, x-mq-* headers and authorization) of every call.
    calls: Mutex<Vec<Call>>,
    sends: Mutex<Vec<v2::SendMessageRequest>>,
    /// The next this many sends fail with `fail_code`.
    failing_sends: AtomicUsize,
    fail_code: v2::Code,
    settings: Mutex<Vec<v2::Settings>>,
    ends: mpsc::UnboundedSender<v2::EndTransactionRequest>,
    /// Writer of the last Telemetry stream, to push server commands.
    telemetry: Mutex<Option<mpsc::Sender<Result<v2::TelemetryCommand, Status>>>>,
    /// TCP connections accepted so far.
    connections: Arc<AtomicUsize>,
}

fn ok() -> Option<v2::Status> {
    Some(v2::Status {
        code: v2::Code::Ok as i32,
        message: "OK".into(),
    })
}

impl Fake {
    fn record<T>(&self, method: &str, request: &Request<T>) {
        let headers = request
            .metadata()
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                    let k = k.as_str();
                    (k.starts_with("x-mq-") || k == "authorization")
                        .then(|| (k.to_owned(), v.to_str().unwrap_or("").to_owned()))
                }
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            })
            .collect();
        self.calls
            .lock()
            .unwrap()
            .push((method.to_owned(), headers));
    }

    fn queue(&self, id: i32, broker: &str) -> v2::MessageQueue {
        v2::MessageQueue {
            topic: Some(v2::Resource {
                name: "t".into(),
                ..Default::default()
            }),
            id,
            permission: v2::Permission::ReadWrite as i32,
            broker: Some(v2::Broker {
                name: broker.into(),
                id: 0,
                endpoints: Some(v2::Endpoints {
                    scheme: v2::AddressScheme::IPv4 as i32,
                    addresses: vec![v2::Address {
                        host: "127.0.0.1".into(),
                        port: i32::from(self.port),
                    }],
                }),
            }),
            accept_message_types: vec![
                v2::MessageType::Normal as i32,
                v2::MessageType::Transaction as i32,
            ],
        }
    }
}

#[tonic::async_trait]
impl MessagingService for Fake {
    async fn query_route(
        &self,
        r: Request<v2::QueryRouteRequest>,
    ) -> Answer<v2::QueryRouteResponse> {
        self.record("QueryRoute", &r);
        Ok(Response::new(v2::QueryRouteResponse {
            status: ok(),
            message_queues: vec![self.queue(0, "b1"), self.queue(1, "b2")],
        }))
    }
    async fn heartbeat(&self, r: Request<v2::HeartbeatRequest>) -> Answer<v2::HeartbeatResponse> {
        self.record("Heartbeat", &r);
        Ok(Response::new(v2::HeartbeatResponse { status: ok() }))
    }
    async fn send_message(
        &self,
        r: Request<v2::SendMessageRequest>,
    ) -> Answer<v2::SendMessageResponse> {
        self.record("SendMessage", &r);
        let req = r.into_inner();
        self.sends.lock().unwrap().push(req.clone());
        let failing = self
            .failing_sends
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Ok(Response::new(v2::SendMessageResponse {
                status: Some(v2::Status {
                    code: self.fail_code as i32,
                    message: "scripted failure".into(),
                }),
                entries: vec![],
            }));
        }
        let entries = req
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let sys = m.system_properties.clone().unwrap_or_default();
                let tx = sys.message_type == v2::MessageType::Transaction as i32;
                v2::SendResultEntry {
                    status: ok(),
                    message_id: sys.message_id,
                    transaction_id: if tx { "TX-1".into() } else { String::new() },
                    offset: i as i64,
                    ..Default::default()
                }
            })
            .collect();
        Ok(Response::new(v2::SendMessageResponse {
            status: ok(),
            entries,
        }))
    }
    async fn query_assignment(
        &self,
        _: Request<v2::QueryAssignmentRequest>,
    ) -> Answer<v2::QueryAssignmentResponse> {
        Err(Status::unimplemented("fake"))
    }
    type ReceiveMessageStream = ReceiverStream<Result<v2::ReceiveMessageResponse, Status>>;
    async fn receive_message(
        &self,
        _: Request<v2::ReceiveMessageRequest>,
    ) -> Answer<Self::ReceiveMessageStream> {
        Err(Status::unimplemented("fake"))
    }
    async fn ack_message(
        &self,
        _: Request<v2::AckMessageRequest>,
    ) -> Answer<v2::AckMessageResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn forward_message_to_dead_letter_queue(
        &self,
        _: Request<v2::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Answer<v2::ForwardMessageToDeadLetterQueueResponse> {
        Err(Status::unimplemented("fake"))
    }
    type PullMessageStream = ReceiverStream<Result<v2::PullMessageResponse, Status>>;
    async fn pull_message(
        &self,
        _: Request<v2::PullMessageRequest>,
    ) -> Answer<Self::PullMessageStream> {
        Err(Status::unimplemented("fake"))
    }
    async fn update_offset(
        &self,
        _: Request<v2::UpdateOffsetRequest>,
    ) -> Answer<v2::UpdateOffsetResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_offset(&self, _: Request<v2::GetOffsetRequest>) -> Answer<v2::GetOffsetResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn query_offset(
        &self,
        _: Request<v2::QueryOffsetRequest>,
    ) -> Answer<v2::QueryOffsetResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn end_transaction(
        &self,
        r: Request<v2::EndTransactionRequest>,
    ) -> Answer<v2::EndTransactionResponse> {
        self.record("EndTransaction", &r);
        let _ = self.ends.send(r.into_inner());
        Ok(Response::new(v2::EndTransactionResponse { status: ok() }))
    }
    type TelemetryStream = ReceiverStream<Result<v2::TelemetryCommand, Status>>;
    async fn telemetry(
        &self,
        r: Request<tonic::Streaming<v2::TelemetryCommand>>,
    ) -> Answer<Self::TelemetryStream> {
        self.record("Telemetry", &r);
        let mut inbound = r.into_inner();
        let (tx, rx) = mpsc::channel(16);
        *self.telemetry.lock().unwrap() = Some(tx.clone());
        let first = inbound.message().await?.and_then(|c| c.command);
        let Some(v2::telemetry_command::Command::Settings(mut settings)) = first else {
            return Err(Status::invalid_argument("settings must come first"));
        };
        self.settings.lock().unwrap().push(settings.clone());
        // The server's policy: four attempts, exponential 10 ms x2; a 1 KiB body limit.
        settings.backoff_policy = Some(v2::RetryPolicy {
            max_attempts: 4,
            strategy: Some(v2::retry_policy::Strategy::ExponentialBackoff(
                v2::ExponentialBackoff {
                    initial: Some(prost_types::Duration {
                        seconds: 0,
                        nanos: 10_000_000,
                    }),
                    max: Some(prost_types::Duration {
                        seconds: 1,
                        nanos: 0,
                    }),
                    multiplier: 2.0,
                },
            )),
        });
        if let Some(v2::settings::PubSub::Publishing(p)) = &mut settings.pub_sub {
            p.max_body_size = 1024;
        }
        let _ = tx
            .send(Ok(v2::TelemetryCommand {
                status: ok(),
                command: Some(v2::telemetry_command::Command::Settings(settings)),
            }))
            .await;
        // Keep reading until the client closes its side.
        tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
    async fn notify_client_termination(
        &self,
        r: Request<v2::NotifyClientTerminationRequest>,
    ) -> Answer<v2::NotifyClientTerminationResponse> {
        self.record("NotifyClientTermination", &r);
        Ok(Response::new(v2::NotifyClientTerminationResponse {
            status: ok(),
        }))
    }
    async fn change_invisible_duration(
        &self,
        _: Request<v2::ChangeInvisibleDurationRequest>,
    ) -> Answer<v2::ChangeInvisibleDurationResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn recall_message(
        &self,
        r: Request<v2::RecallMessageRequest>,
    ) -> Answer<v2::RecallMessageResponse> {
        self.record("RecallMessage", &r);
        let req = r.into_inner();
        let topic = req.topic.map(|t| t.name).unwrap_or_default();
        // Scripted: the handle "gone" names a message no longer recallable.
        if req.recall_handle == "gone" {
            return Ok(Response::new(v2::RecallMessageResponse {
                status: Some(v2::Status {
                    code: v2::Code::NotFound as i32,
                    message: "nothing to recall".into(),
                }),
                message_id: String::new(),
            }));
        }
        Ok(Response::new(v2::RecallMessageResponse {
            status: ok(),
            message_id: format!("{topic}/{}", req.recall_handle),
        }))
    }
    async fn sync_lite_subscription(
        &self,
        _: Request<v2::SyncLiteSubscriptionRequest>,
    ) -> Answer<v2::SyncLiteSubscriptionResponse> {
        Err(Status::unimplemented("fake"))
    }
}

struct Running {
    fake: Arc<Fake>,
    ends: mpsc::UnboundedReceiver<v2::EndTransactionRequest>,
    endpoint: String,
    _server: tokio::task::JoinHandle<()>,
}

async fn start(failing_sends: usize, fail_code: v2::Code) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (ends_tx, ends) = mpsc::unbounded_channel();
    let fake = Arc::new(Fake {
        port,
        calls: Mutex::default(),
        sends: Mutex::default(),
        failing_sends: AtomicUsize::new(failing_sends),
        fail_code,
        settings: Mutex::default(),
        ends: ends_tx,
        telemetry: Mutex::default(),
        connections: Arc::default(),
    });
    let service = MessagingServiceServer::from_arc(fake.clone());
    let accepted = Arc::clone(&fake.connections);
    let incoming = TcpListenerStream::new(listener).map(move |conn| {
        accepted.fetch_add(1, Ordering::SeqCst);
        conn
    });
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
    });
    Running {
        fake,
        ends,
        endpoint: format!("127.0.0.1:{port}"),
        _server: server,
    }
}

fn sent_ids(fake: &Fake) -> Vec<(String, i32)> {
    fake.sends
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| r.messages.iter())
        .map(|m| {
            let s = m.system_properties.clone().unwrap_or_default();
            (s.message_id, s.queue_id)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_signed_and_settings_come_first() {
    let server = start(0, v2::Code::Ok).await;
    let config = ClientConfig::builder()
        .access_point(&server.endpoint)
        .namespace("ns1")
        .credentials(Credentials::new("AK", "SK"))
        .build()
        .unwrap();
    let producer = Producer::builder(config)
        .topics(["t"])
        .build()
        .await
        .unwrap();
    producer
        .send(Message::builder("t").body("x").build().unwrap())
        .await
        .unwrap();
    producer.shutdown().await;

    let calls = server.fake.calls.lock().unwrap().clone();
    let methods: Vec<&str> = calls.iter().map(|(m, _)| m.as_str()).collect();
    for m in [
        "QueryRoute",
        "Telemetry",
        "SendMessage",
        "NotifyClientTermination",
    ] {
        assert!(methods.contains(&m), "{m} missing from {methods:?}");
    }
    let mut request_ids = std::collections::HashSet::new();
    for (method, headers) in &calls {
        let get = |k: &str| {
            headers
                .iter()
                .find(|(h, _)| h == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{method}: no {k}"))
        };
        assert_eq!(get("x-mq-language"), "RUST");
        assert_eq!(get("x-mq-protocol"), "v2");
        assert_eq!(get("x-mq-namespace"), "ns1");
        assert!(!get("x-mq-client-version").is_empty());
        assert_eq!(get("x-mq-client-id").split('@').count(), 4);
        let date = get("x-mq-date-time");
        assert_eq!(date.len(), 16, "{date}");
        let auth = get("authorization");
        let prefix = "MQv2-HMAC-SHA1 Credential=AK, SignedHeaders=x-mq-date-time, Signature=";
        assert!(auth.starts_with(prefix), "{auth}");
        let sig = &auth[prefix.len()..];
        assert_eq!(sig.len(), 40);
        assert!(sig.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(request_ids.insert(get("x-mq-request-id").to_owned()));
    }

    let settings = server.fake.settings.lock().unwrap().clone();
    let s = &settings[0];
    assert_eq!(s.client_type, Some(v2::ClientType::Producer as i32));
    let Some(v2::settings::PubSub::Publishing(p)) = &s.pub_sub else {
        panic!("producer settings without publishing")
    };
    assert_eq!(p.topics[0].name, "t");
    assert_eq!(p.topics[0].resource_namespace, "ns1");
    let ua = s.user_agent.clone().unwrap();
    assert_eq!(ua.language, v2::Language::Rust as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_keep_the_message_id_and_fail_over() {
    // Three failures, and the server's policy allows four attempts: the fourth succeeds.
    let server = start(3, v2::Code::InternalServerError).await;
    let config = ClientConfig::new(&server.endpoint).unwrap();
    let producer = Producer::builder(config)
        .topics(["t"])
        .build()
        .await
        .unwrap();
    let receipt = producer
        .send(Message::builder("t").body("x").build().unwrap())
        .await
        .expect("the fourth attempt succeeds");
    let attempts = sent_ids(&server.fake);
    assert_eq!(attempts.len(), 4);
    assert!(
        attempts.iter().all(|(id, _)| id == receipt.message_id()),
        "{attempts:?}"
    );
    assert_ne!(
        attempts[0].1, attempts[1].1,
        "a retry goes to the other broker's queue"
    );

    // The body limit came from the settings reply.
    let e = producer
        .send(Message::builder("t").body(vec![0u8; 2000]).build().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(e, rocketlog_client::Error::BodyTooLarge { max: 1024, .. }),
        "{e}"
    );
    producer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors_are_not_retried() {
    let server = start(1, v2::Code::IllegalMessageTag).await;
    let producer = Producer::builder(ClientConfig::new(&server.endpoint).unwrap())
        .max_attempts(5)
        .build()
        .await
        .unwrap();
    let e = producer
        .send(Message::builder("t").body("x").build().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::IllegalMessageTag));
    assert_eq!(sent_ids(&server.fake).len(), 1);
    producer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_and_answer_server_checks() {
    let mut server = start(0, v2::Code::Ok).await;
    let config = ClientConfig::new(&server.endpoint).unwrap();
    let checked = Arc::new(Mutex::new(Vec::new()));
    let c = checked.clone();
    let producer = TransactionProducer::builder(config, move |m: MessageView| {
        let c = c.clone();
        async move {
            c.lock().unwrap().push(m.message_id().to_owned());
            if m.body().as_ref() == b"keep" {
                TransactionResolution::Commit
            } else {
                TransactionResolution::Unknown
            }
        }
    })
    .topics(["t"])
    .build()
    .await
    .unwrap();

    let tx = producer
        .send(Message::builder("t").body("x").build().unwrap())
        .await
        .unwrap();
    assert_eq!(tx.transaction_id(), "TX-1");
    let id = tx.receipt().message_id().to_owned();
    tx.commit().await.unwrap();
    let end = server.ends.recv().await.unwrap();
    assert_eq!(end.message_id, id);
    assert_eq!(end.transaction_id, "TX-1");
    assert_eq!(end.resolution, v2::TransactionResolution::Commit as i32);
    assert_eq!(end.source, v2::TransactionSource::SourceClient as i32);
    let sends = server.fake.sends.lock().unwrap().clone();
    let sys = sends[0].messages[0].system_properties.clone().unwrap();
    assert_eq!(sys.message_type, v2::MessageType::Transaction as i32);

    // The server asks about an orphaned transaction on the Telemetry stream.
    let check = |body: &str, id: &str| v2::TelemetryCommand {
        status: ok(),
        command: Some(
            v2::telemetry_command::Command::RecoverOrphanedTransactionCommand(
                v2::RecoverOrphanedTransactionCommand {
                    message: Some(v2::Message {
                        topic: Some(v2::Resource {
                            name: "t".into(),
                            ..Default::default()
                        }),
                        system_properties: Some(v2::SystemProperties {
                            message_id: id.into(),
                            body_encoding: v2::Encoding::Identity as i32,
                            ..Default::default()
                        }),
                        body: body.to_owned().into_bytes().into(),
                        ..Default::default()
                    }),
                    transaction_id: format!("TX-{id}"),
                },
            ),
        ),
    };
    let writer = server.fake.telemetry.lock().unwrap().clone().unwrap();
    writer.send(Ok(check("undecided", "M1"))).await.unwrap();
    writer.send(Ok(check("keep", "M2"))).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), server.ends.recv())
        .await
        .expect("the checker answered")
        .unwrap();
    // "Unknown" sends nothing; the first answer is M2's.
    assert_eq!(end.message_id, "M2");
    assert_eq!(end.transaction_id, "TX-M2");
    assert_eq!(end.resolution, v2::TransactionResolution::Commit as i32);
    assert_eq!(end.source, v2::TransactionSource::SourceServerCheck as i32);
    let mut asked = checked.lock().unwrap().clone();
    asked.sort();
    assert_eq!(asked, ["M1", "M2"]);
    producer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_message_names_topic_and_handle() {
    let server = start(0, v2::Code::Ok).await;
    let producer = Producer::builder(ClientConfig::new(&server.endpoint).unwrap())
        .build()
        .await
        .expect("producer starts");
    let id = producer
        .recall_message("t", "handle-1")
        .await
        .expect("recalled");
    assert_eq!(id, "t/handle-1");
    let e = producer
        .recall_message("t", "gone")
        .await
        .expect_err("a message no longer recallable");
    assert_eq!(e.code(), Some(Code::NotFound), "{e}");
    let e = producer
        .recall_message("t", "")
        .await
        .expect_err("empty handle");
    assert!(
        matches!(e, rocketlog_client::Error::InvalidMessage(_)),
        "{e}"
    );
    let recalls = server
        .fake
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, _)| m == "RecallMessage")
        .count();
    assert_eq!(recalls, 2, "the empty handle never left the client");
    producer.shutdown().await;
}

/// The access key and client id each call carried, in order.
fn callers(fake: &Fake) -> Vec<(String, String)> {
    fake.calls
        .lock()
        .unwrap()
        .iter()
        .map(|(_, headers)| {
            let get = |k: &str| {
                headers
                    .iter()
                    .find(|(h, _)| h == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let auth = get("authorization");
            let key = auth
                .split("Credential=")
                .nth(1)
                .and_then(|rest| rest.split(',').next())
                .unwrap_or("")
                .to_owned();
            (key, get("x-mq-client-id"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_share_one_connection_unless_told_not_to() {
    let server = start(0, v2::Code::Ok).await;
    let accepted = || server.fake.connections.load(Ordering::SeqCst);
    let config = |key: &str| {
        ClientConfig::builder()
            .access_point(&server.endpoint)
            .credentials(Credentials::new(key, "SK"))
    };
    // A producer that has sent one message.
    let sending = |config: ClientConfig| async move {
        let p = Producer::builder(config)
            .topics(["t"])
            .build()
            .await
            .unwrap();
        p.send(Message::builder("t").body("x").build().unwrap())
            .await
            .unwrap();
        p
    };

    // Three producers with different credentials: one connection, each call signed by its own
    // client.
    let mut shared = Vec::new();
    for key in ["AK1", "AK2", "AK3"] {
        shared.push(sending(config(key).build().unwrap()).await);
    }
    assert_eq!(accepted(), 1);
    let callers = callers(&server.fake);
    let mut ids_per_key = std::collections::HashMap::new();
    for (key, id) in &callers {
        ids_per_key
            .entry(key.clone())
            .or_insert_with(std::collections::HashSet::new)
            .insert(id.clone());
    }
    assert_eq!(ids_per_key.len(), 3, "{callers:?}");
    assert!(
        ids_per_key.values().all(|ids| ids.len() == 1),
        "{callers:?}"
    );

    // A producer that opts out connects on its own.
    let own = sending(config("AK4").share_connections(false).build().unwrap()).await;
    assert_eq!(accepted(), 2);

    // Once every sharing client is gone, the next one connects anew.
    for producer in shared {
        producer.shutdown().await;
    }
    let later = sending(config("AK5").build().unwrap()).await;
    assert_eq!(accepted(), 3);
    later.shutdown().await;
    own.shutdown().await;
}
