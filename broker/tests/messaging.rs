//! The client API end to end against a real broker on 127.0.0.1:0, through the generated tonic
//! client, as the official clients use it.

mod common;

use std::time::Duration;

use common::*;
use rocketlog_proto::v2;
use tokio_stream::StreamExt;

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn route_lists_every_queue_with_a_dialable_endpoint() {
    let broker = TestBroker::start(|c| c.default_queue_count = 4).await;
    let mut client = broker.client().await;
    let resp = client
        .query_route(req(v2::QueryRouteRequest {
            topic: resource("RouteTopic"),
            endpoints: Some(v2::Endpoints {
                scheme: v2::AddressScheme::IPv4 as i32,
                addresses: vec![v2::Address {
                    host: "127.0.0.1".into(),
                    port: i32::from(broker.addr.port()),
                }],
            }),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&resp.status), v2::Code::Ok);
    assert_eq!(resp.message_queues.len(), 4);
    for (i, q) in resp.message_queues.iter().enumerate() {
        assert_eq!(q.id, i32::try_from(i).unwrap());
        assert_eq!(q.topic.as_ref().unwrap().name, "RouteTopic");
        assert_eq!(q.permission, v2::Permission::ReadWrite as i32);
        let b = q.broker.as_ref().unwrap();
        assert_eq!(b.name, "broker-a");
        assert_eq!(b.id, 0);
        let e = b.endpoints.as_ref().unwrap();
        assert_eq!(e.scheme, v2::AddressScheme::IPv4 as i32);
        assert_eq!(e.addresses[0].host, "127.0.0.1");
        assert_eq!(e.addresses[0].port, i32::from(broker.addr.port()));
        assert!(q
            .accept_message_types
            .contains(&(v2::MessageType::Normal as i32)));
    }
    broker.stop().await;
}

#[tokio::test]
async fn telemetry_answers_settings_with_server_fields() {
    let broker = TestBroker::start(|_| {}).await;
    let mut client = broker.client().await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let producer = v2::Settings {
        client_type: Some(v2::ClientType::Producer as i32),
        request_timeout: Some(prost_types::Duration {
            seconds: 3,
            nanos: 0,
        }),
        pub_sub: Some(v2::settings::PubSub::Publishing(v2::Publishing {
            topics: vec![resource("SettingsTopic").unwrap()],
            max_body_size: 128 << 20,
            validate_message_type: false,
        })),
        ..Default::default()
    };
    tx.send(v2::TelemetryCommand {
        status: None,
        command: Some(v2::telemetry_command::Command::Settings(producer.clone())),
    })
    .await
    .unwrap();
    let mut replies = client
        .telemetry(req(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    let reply = tokio::time::timeout(WAIT, replies.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(code(&reply.status), v2::Code::Ok);
    let Some(v2::telemetry_command::Command::Settings(s)) = reply.command else {
        panic!("settings reply expected");
    };
    let Some(v2::settings::PubSub::Publishing(p)) = &s.pub_sub else {
        panic!("publishing kept");
    };
    assert_eq!(p.max_body_size, 4 << 20);
    assert!(p.validate_message_type);
    let policy = s.backoff_policy.unwrap();
    assert_eq!(policy.max_attempts, 3);
    assert!(matches!(
        policy.strategy,
        Some(v2::retry_policy::Strategy::ExponentialBackoff(_))
    ));
    assert!(!s.metric.unwrap().on);

    // A resent settings command is answered again.
    tx.send(v2::TelemetryCommand {
        status: None,
        command: Some(v2::telemetry_command::Command::Settings(producer)),
    })
    .await
    .unwrap();
    let again = tokio::time::timeout(WAIT, replies.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(code(&again.status), v2::Code::Ok);

    // Closing our side ends the stream quietly.
    drop(tx);
    let end = tokio::time::timeout(WAIT, replies.next()).await.unwrap();
    assert!(end.is_none(), "stream ends after the client half-closes");
    broker.stop().await;
}

/// A producer's settings naming a topic no topic can have (the Java client adds a topic to
/// its settings when it first sends to it, even one the route query refused) are still
/// answered: the stream carries the client's session for all its other topics.
#[tokio::test]
async fn settings_naming_an_illegal_topic_are_answered_and_the_stream_stays_open() {
    let broker = TestBroker::start(|_| {}).await;
    let mut client = broker.client().await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let long = "t".repeat(128);
    let producer = v2::Settings {
        client_type: Some(v2::ClientType::Producer as i32),
        pub_sub: Some(v2::settings::PubSub::Publishing(v2::Publishing {
            topics: vec![
                resource("GoodTopic").unwrap(),
                v2::Resource {
                    name: long,
                    ..Default::default()
                },
            ],
            max_body_size: 128 << 20,
            validate_message_type: false,
        })),
        ..Default::default()
    };
    let command = v2::TelemetryCommand {
        status: None,
        command: Some(v2::telemetry_command::Command::Settings(producer)),
    };
    tx.send(command.clone()).await.unwrap();
    let mut replies = client
        .telemetry(req(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    for round in 0..2 {
        let reply = tokio::time::timeout(WAIT, replies.next())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("the stream ended (round {round})"))
            .unwrap_or_else(|s| panic!("the stream failed (round {round}): {s:?}"));
        assert_eq!(code(&reply.status), v2::Code::Ok, "round {round}");
        assert!(matches!(
            reply.command,
            Some(v2::telemetry_command::Command::Settings(_))
        ));
        tx.send(command.clone()).await.unwrap();
    }
    broker.stop().await;
}

#[tokio::test]
async fn consumer_settings_get_retry_policy_and_fifo_from_topic() {
    let broker = TestBroker::start(|_| {}).await;
    let mut client = broker.client().await;
    // Make a FIFO-only topic through a FIFO send with auto-create.
    let sent = send(
        &mut client,
        message("FifoSettings", b"x", None, &[], Some("g1")),
    )
    .await;
    assert_eq!(code(&sent.status), v2::Code::Ok);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(v2::TelemetryCommand {
        status: None,
        command: Some(v2::telemetry_command::Command::Settings(v2::Settings {
            client_type: Some(v2::ClientType::PushConsumer as i32),
            pub_sub: Some(v2::settings::PubSub::Subscription(v2::Subscription {
                group: resource("fifo-group"),
                subscriptions: vec![v2::SubscriptionEntry {
                    topic: resource("FifoSettings"),
                    expression: None,
                }],
                ..Default::default()
            })),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut replies = client
        .telemetry(req(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    let reply = tokio::time::timeout(WAIT, replies.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Some(v2::telemetry_command::Command::Settings(s)) = reply.command else {
        panic!("settings reply expected");
    };
    let Some(v2::settings::PubSub::Subscription(sub)) = &s.pub_sub else {
        panic!("subscription kept");
    };
    assert_eq!(sub.fifo, Some(true));
    assert_eq!(sub.receive_batch_size, Some(32));
    assert_eq!(sub.long_polling_timeout.unwrap().seconds, 20);
    let policy = s.backoff_policy.unwrap();
    assert_eq!(policy.max_attempts, 17);
    assert!(matches!(
        policy.strategy,
        Some(v2::retry_policy::Strategy::CustomizedBackoff(_))
    ));

    // FIFO topic: one assignment per queue.
    let assignment = client
        .query_assignment(req(v2::QueryAssignmentRequest {
            topic: resource("FifoSettings"),
            group: resource("fifo-group"),
            endpoints: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&assignment.status), v2::Code::Ok);
    assert_eq!(assignment.assignments.len(), 8);
    drop(tx);
    broker.stop().await;
}

#[tokio::test]
async fn send_receive_with_tag_filter_and_ack() {
    let broker = TestBroker::start(|_| {}).await;
    let mut client = broker.client().await;
    let a = message("Orders", b"tagged-a", Some("TagA"), &["k1", "k2"], None);
    let a_id = sys(&a).message_id.clone();
    let resp = send(&mut client, a).await;
    assert_eq!(code(&resp.status), v2::Code::Ok);
    assert_eq!(resp.entries.len(), 1);
    assert_eq!(code(&resp.entries[0].status), v2::Code::Ok);
    assert_eq!(
        resp.entries[0].message_id, a_id,
        "message id echoed exactly"
    );
    let resp = send(
        &mut client,
        message("Orders", b"tagged-b", Some("TagB"), &[], None),
    )
    .await;
    assert_eq!(code(&resp.status), v2::Code::Ok);

    let got = receive(
        &mut client,
        "g-orders",
        "Orders",
        "TagA",
        16,
        30 * SECOND,
        5 * SECOND,
    )
    .await;
    assert_eq!(code(&got.status), v2::Code::Ok);
    assert_eq!(got.shape, "smd", "status, messages, delivery timestamp");
    assert_eq!(got.messages.len(), 1);
    let m = &got.messages[0];
    let s = sys(m);
    assert_eq!(s.message_id, a_id);
    assert_eq!(s.tag.as_deref(), Some("TagA"));
    assert_eq!(s.keys, vec!["k1".to_owned(), "k2".to_owned()]);
    assert_eq!(m.body.as_ref() as &[u8], b"tagged-a");
    let digest = s.body_digest.as_ref().unwrap();
    assert_eq!(digest.r#type, v2::DigestType::Md5 as i32);
    use md5::Digest as _;
    assert_eq!(
        digest.checksum,
        hex::encode_upper(md5::Md5::digest(b"tagged-a"))
    );
    assert_eq!(s.body_encoding, v2::Encoding::Identity as i32);
    assert_eq!(s.message_type, v2::MessageType::Normal as i32);
    assert_eq!(s.delivery_attempt, Some(1));
    assert_eq!(s.born_host, "test-host");
    assert!(s.store_timestamp.is_some());
    assert!(s.receipt_handle.as_deref().is_some_and(|h| !h.is_empty()));
    assert_eq!(
        m.user_properties.get("origin").map(String::as_str),
        Some("test")
    );

    let acked = ack(&mut client, "g-orders", m).await;
    assert_eq!(code(&acked.status), v2::Code::Ok);
    assert_eq!(code(&acked.entries[0].status), v2::Code::Ok);
    // Acking the same delivery again is refused.
    let again = ack(&mut client, "g-orders", m).await;
    assert_eq!(code(&again.status), v2::Code::InvalidReceiptHandle);

    // Nothing else matches TagA: MESSAGE_NOT_FOUND after the minimum poll.
    let none = receive(
        &mut client,
        "g-orders",
        "Orders",
        "TagA",
        16,
        30 * SECOND,
        5 * SECOND,
    )
    .await;
    assert_eq!(code(&none.status), v2::Code::MessageNotFound);
    assert_eq!(none.shape, "sd");
    broker.stop().await;
}

#[tokio::test]
async fn fifo_messages_keep_their_group_and_order() {
    let broker = TestBroker::start(|_| {}).await;
    let mut client = broker.client().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let m = message(
            "FifoOrders",
            format!("step-{i}").as_bytes(),
            Some("T"),
            &[],
            Some("order-42"),
        );
        ids.push(sys(&m).message_id.clone());
        assert_eq!(code(&send(&mut client, m).await.status), v2::Code::Ok);
    }
    // FIFO: only the first of the group is released while it is in flight.
    let first = receive(
        &mut client,
        "g-fifo",
        "FifoOrders",
        "*",
        16,
        30 * SECOND,
        5 * SECOND,
    )
    .await;
    assert_eq!(first.messages.len(), 1);
    let s = sys(&first.messages[0]);
    assert_eq!(s.message_id, ids[0]);
    assert_eq!(s.message_group.as_deref(), Some("order-42"));
    assert_eq!(s.message_type, v2::MessageType::Fifo as i32);
    assert_eq!(
        code(&ack(&mut client, "g-fifo", &first.messages[0]).await.status),
        v2::Code::Ok
    );
    let second = receive(
        &mut client,
        "g-fifo",
        "FifoOrders",
        "*",
        16,
        30 * SECOND,
        5 * SECOND,
    )
    .await;
    assert_eq!(sys(&second.messages[0]).message_id, ids[1]);
    broker.stop().await;
}

#[tokio::test]
async fn redelivery_after_invisible_time_counts_attempts() {
    let broker = TestBroker::start(|_| {}).await;
    let mut client = broker.client().await;
    let m = message("Redeliver", b"again", None, &[], None);
    let id = sys(&m).message_id.clone();
    assert_eq!(code(&send(&mut client, m).await.status), v2::Code::Ok);
    let first = receive(&mut client, "g-re", "Redeliver", "*", 1, SECOND, 5 * SECOND).await;
    assert_eq!(sys(&first.messages[0]).delivery_attempt, Some(1));
    let old_handle = sys(&first.messages[0]).receipt_handle.clone().unwrap();
    // Not acked: it comes back once its invisible second has passed.
    let second = receive(
        &mut client,
        "g-re",
        "Redeliver",
        "*",
        1,
        30 * SECOND,
        10 * SECOND,
    )
    .await;
    assert_eq!(second.messages.len(), 1, "redelivered within the poll");
    let s = sys(&second.messages[0]);
    assert_eq!(s.message_id, id);
    assert_eq!(s.delivery_attempt, Some(2));
    assert_ne!(s.receipt_handle.as_deref(), Some(old_handle.as_str()));
    // The first delivery's handle is stale now.
    let stale = ack(&mut client, "g-re", &first.messages[0]).await;
    assert_eq!(code(&stale.status), v2::Code::InvalidReceiptHandle);
    assert_eq!(
        code(&ack(&mut client, "g-re", &second.messages[0]).await.status),
        v2::Code::Ok
    );
    broker.stop().await;
}

#[tokio::test]
async fn change_invisible_duration_returns_a_new_handle_and_dlq_after_max_attempts() {
    let broker = TestBroker::start(|c| c.receive.max_delivery_attempts = 2).await;
    let mut client = broker.client().await;
    let m = message("Poison", b"bad", Some("P"), &[], None);
    let id = sys(&m).message_id.clone();
    assert_eq!(code(&send(&mut client, m).await.status), v2::Code::Ok);
    for attempt in 1..=2 {
        let got = receive(
            &mut client,
            "g-dlq",
            "Poison",
            "*",
            1,
            30 * SECOND,
            10 * SECOND,
        )
        .await;
        assert_eq!(got.messages.len(), 1, "attempt {attempt}");
        let s = sys(&got.messages[0]);
        assert_eq!(s.delivery_attempt, Some(attempt));
        // Nack: visible again at once.
        let changed = client
            .change_invisible_duration(req(v2::ChangeInvisibleDurationRequest {
                group: resource("g-dlq"),
                topic: resource("Poison"),
                receipt_handle: s.receipt_handle.clone().unwrap(),
                invisible_duration: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 0,
                }),
                message_id: id.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(code(&changed.status), v2::Code::Ok);
        assert!(!changed.receipt_handle.is_empty());
        assert_ne!(Some(&changed.receipt_handle), s.receipt_handle.as_ref());
    }
    // Past the max attempts it is dead-lettered, not delivered again.
    let none = receive(
        &mut client,
        "g-dlq",
        "Poison",
        "*",
        1,
        30 * SECOND,
        5 * SECOND,
    )
    .await;
    assert_eq!(code(&none.status), v2::Code::MessageNotFound);
    let dlq = receive(
        &mut client,
        "g-dlq-reader",
        "%DLQ%g-dlq",
        "*",
        1,
        30 * SECOND,
        10 * SECOND,
    )
    .await;
    assert_eq!(dlq.messages.len(), 1);
    let s = sys(&dlq.messages[0]);
    assert_eq!(s.message_id, id);
    let dl = s.dead_letter_queue.as_ref().expect("dead_letter_queue set");
    assert_eq!(dl.topic, "Poison");
    assert_eq!(dl.message_id, id);
    broker.stop().await;
}

#[tokio::test]
async fn invalid_requests_get_their_codes() {
    let broker = TestBroker::start(|c| {
        c.auto_create_topics = false;
        c.max_body_size = 1024;
    })
    .await;
    let mut client = broker.client().await;
    // Unknown topic, auto-create off.
    let r = send(&mut client, message("Nope", b"x", None, &[], None)).await;
    assert_eq!(code(&r.status), v2::Code::TopicNotFound);
    assert_eq!(r.entries.len(), 1);
    assert_eq!(code(&r.entries[0].status), v2::Code::TopicNotFound);
    let route = client
        .query_route(req(v2::QueryRouteRequest {
            topic: resource("Nope"),
            endpoints: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&route.status), v2::Code::TopicNotFound);

    // Illegal names and fields.
    let r = send(&mut client, message("bad topic", b"x", None, &[], None)).await;
    assert_eq!(code(&r.status), v2::Code::IllegalTopic);
    let mut blank_id = message("Nope", b"x", None, &[], None);
    blank_id.system_properties.as_mut().unwrap().message_id = " ".into();
    assert_eq!(
        code(&send(&mut client, blank_id).await.status),
        v2::Code::IllegalMessageId
    );
    let r = send(&mut client, message("Nope", b"x", Some("a|b"), &[], None)).await;
    assert_eq!(code(&r.status), v2::Code::IllegalMessageTag);
    let r = send(&mut client, message("Nope", b"", None, &[], None)).await;
    assert_eq!(code(&r.status), v2::Code::MessageBodyEmpty);
    let r = send(&mut client, message("Nope", &[7u8; 1025], None, &[], None)).await;
    assert_eq!(code(&r.status), v2::Code::MessageBodyTooLarge);
    // A DELAY message needs a delivery timestamp.
    let mut delay = message("Nope", b"x", None, &[], None);
    delay.system_properties.as_mut().unwrap().message_type = v2::MessageType::Delay as i32;
    assert_eq!(
        code(&send(&mut client, delay).await.status),
        v2::Code::IllegalDeliveryTime
    );
    let mut reserved = message("Nope", b"x", None, &[], None);
    reserved
        .user_properties
        .insert("__MGROUP".into(), "x".into());
    assert_eq!(
        code(&send(&mut client, reserved).await.status),
        v2::Code::IllegalMessagePropertyKey
    );

    // Bad receipt handle.
    let r = client
        .ack_message(req(v2::AckMessageRequest {
            group: resource("g"),
            topic: resource("Nope"),
            entries: vec![v2::AckMessageEntry {
                message_id: message_id(),
                receipt_handle: "not-a-handle".into(),
                lite_topic: None,
            }],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), v2::Code::InvalidReceiptHandle);
    assert_eq!(r.entries.len(), 1);

    // Receive: invisible time below the floor, unknown topic.
    let got = receive(
        &mut client,
        "g",
        "Nope",
        "*",
        1,
        Duration::from_millis(100),
        5 * SECOND,
    )
    .await;
    assert_eq!(code(&got.status), v2::Code::IllegalInvisibleTime);
    assert_eq!(got.shape, "sd");

    // EndTransaction without a topic or a transaction id answers with a typed status.
    let end = client
        .end_transaction(req(v2::EndTransactionRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&end.status), v2::Code::IllegalTopic);
    // Heartbeat and termination are always OK.
    let hb = client
        .heartbeat(req(v2::HeartbeatRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&hb.status), v2::Code::Ok);
    let bye = client
        .notify_client_termination(req(v2::NotifyClientTerminationRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&bye.status), v2::Code::Ok);
    broker.stop().await;
}

#[tokio::test]
async fn wrong_message_type_for_the_topic_is_refused() {
    let broker = TestBroker::start(|_| {}).await;
    let mut client = broker.client().await;
    // The first send creates a NORMAL-only topic.
    assert_eq!(
        code(
            &send(&mut client, message("Typed", b"x", None, &[], None))
                .await
                .status
        ),
        v2::Code::Ok
    );
    let r = send(&mut client, message("Typed", b"x", None, &[], Some("g"))).await;
    assert_eq!(code(&r.status), v2::Code::MessagePropertyConflictWithType);
    // A FIFO message without a group conflicts with its own type.
    let mut no_group = message("Typed", b"x", None, &[], None);
    no_group.system_properties.as_mut().unwrap().message_type = v2::MessageType::Fifo as i32;
    assert_eq!(
        code(&send(&mut client, no_group).await.status),
        v2::Code::MessagePropertyConflictWithType
    );
    broker.stop().await;
}

#[tokio::test]
async fn restart_keeps_acks() {
    let broker = TestBroker::start(|_| {}).await;
    let mut client = broker.client().await;
    let m1 = message("Durable", b"one", None, &[], None);
    let m2 = message("Durable", b"two", None, &[], None);
    let id2 = sys(&m2).message_id.clone();
    for m in [m1, m2] {
        assert_eq!(code(&send(&mut client, m).await.status), v2::Code::Ok);
    }
    // Both messages, possibly over several receives (each returns what is readable now).
    let mut got = Vec::new();
    while got.len() < 2 {
        let more = receive(
            &mut client,
            "g-durable",
            "Durable",
            "*",
            2,
            3 * SECOND,
            5 * SECOND,
        )
        .await;
        assert!(!more.messages.is_empty(), "both messages arrive");
        got.extend(more.messages);
    }
    assert_eq!(got.len(), 2);
    let (acked, kept): (Vec<_>, Vec<_>) = got.iter().partition(|m| sys(m).message_id != id2);
    assert_eq!(
        code(&ack(&mut client, "g-durable", acked[0]).await.status),
        v2::Code::Ok
    );
    drop(client);
    let (dir, config) = broker.stop().await;

    let broker = TestBroker::start_with(dir, config).await;
    let mut client = broker.client().await;
    // Only the unacked message comes back (after its invisible second).
    let again = receive(
        &mut client,
        "g-durable",
        "Durable",
        "*",
        4,
        30 * SECOND,
        10 * SECOND,
    )
    .await;
    assert_eq!(again.messages.len(), 1);
    assert_eq!(sys(&again.messages[0]).message_id, sys(kept[0]).message_id);
    assert_eq!(sys(&again.messages[0]).delivery_attempt, Some(2));
    let none = receive(
        &mut client,
        "g-durable",
        "Durable",
        "*",
        4,
        30 * SECOND,
        5 * SECOND,
    )
    .await;
    assert_eq!(code(&none.status), v2::Code::MessageNotFound);
    broker.stop().await;
}

#[tokio::test]
async fn tls_and_h2c_share_the_client_port() {
    let broker = TestBroker::start(|_| {}).await;
    let mut plain = broker.client().await;
    let mut secure =
        v2::messaging_service_client::MessagingServiceClient::new(tls_channel(broker.addr).await);
    for client in [&mut plain, &mut secure] {
        let route = client
            .query_route(req(v2::QueryRouteRequest {
                topic: resource("BothWays"),
                endpoints: None,
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(code(&route.status), v2::Code::Ok);
        assert_eq!(route.message_queues.len(), 8);
    }
    broker.stop().await;
}
