//! The admin API on the client port: topics, group lag, lookups, offset reset, stats.

mod common;

use std::time::Duration;

use common::*;
use rocketlog_proto::admin::v1 as pb;
use rocketlog_proto::admin::v1::admin_client::AdminClient;
use rocketlog_proto::v2;

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn topics_lag_lookup_reset_and_stats() {
    let broker = TestBroker::start(|c| c.auto_create_topics = false).await;
    let mut admin = AdminClient::new(plain_channel(broker.addr).await);
    let mut client = broker.client().await;

    // Create a FIFO topic with 2 queues; a second call updates it.
    let created = admin
        .create_or_update_topic(pb::CreateOrUpdateTopicRequest {
            topic: Some(pb::TopicConfig {
                name: "AdminFifo".into(),
                queue_nums: 2,
                perm: pb::Permission::ReadWrite as i32,
                message_types: vec![pb::MessageType::Fifo as i32],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.created);
    assert_eq!(created.topic.as_ref().unwrap().queue_nums, 2);
    let updated = admin
        .create_or_update_topic(pb::CreateOrUpdateTopicRequest {
            topic: Some(pb::TopicConfig {
                name: "AdminFifo".into(),
                queue_nums: 1,
                perm: pb::Permission::ReadWrite as i32,
                message_types: vec![pb::MessageType::Fifo as i32],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!updated.created);
    let bad = admin
        .create_or_update_topic(pb::CreateOrUpdateTopicRequest {
            topic: Some(pb::TopicConfig {
                name: "bad name".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let list = admin
        .list_topics(pb::ListTopicsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.topics.iter().any(|t| t.name == "AdminFifo"));

    // The route shows the admin's layout; sends obey its type.
    let route = client
        .query_route(req(v2::QueryRouteRequest {
            topic: resource("AdminFifo"),
            endpoints: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(route.message_queues.len(), 1);
    assert_eq!(
        route.message_queues[0].accept_message_types,
        vec![v2::MessageType::Fifo as i32]
    );
    let m = message("AdminFifo", b"payload", Some("T"), &["order-7"], Some("g1"));
    let id = sys(&m).message_id.clone();
    assert_eq!(code(&send(&mut client, m).await.status), v2::Code::Ok);
    let m2 = message("AdminFifo", b"payload-2", Some("T"), &[], Some("g1"));
    assert_eq!(code(&send(&mut client, m2).await.status), v2::Code::Ok);

    // Lookups by id and by key.
    let by_id = admin
        .lookup_message(pb::LookupMessageRequest {
            by: Some(pb::lookup_message_request::By::MessageId(id.clone())),
            max: 0,
            with_body: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_id.messages.len(), 1);
    assert_eq!(by_id.messages[0].body.as_ref() as &[u8], b"payload");
    assert_eq!(by_id.messages[0].tag, "T");
    let by_key = admin
        .lookup_message(pb::LookupMessageRequest {
            by: Some(pb::lookup_message_request::By::Key(pb::KeyQuery {
                topic: "AdminFifo".into(),
                key: "order-7".into(),
            })),
            max: 10,
            with_body: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_key.messages.len(), 1);
    assert_eq!(by_key.messages[0].message_id, id);
    assert!(by_key.messages[0].body.is_empty());
    assert_eq!(by_key.messages[0].body_size, 7);

    // Consume and ack one: lag 1 of 2.
    let got = receive(
        &mut client,
        "g-admin",
        "AdminFifo",
        "*",
        1,
        30 * SECOND,
        5 * SECOND,
    )
    .await;
    assert_eq!(got.messages.len(), 1);
    assert_eq!(
        code(&ack(&mut client, "g-admin", &got.messages[0]).await.status),
        v2::Code::Ok
    );
    let lag = admin
        .describe_consumer_group(pb::DescribeConsumerGroupRequest {
            group: "g-admin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lag.total_lag, 1);
    let q = lag.queues.iter().find(|q| q.topic == "AdminFifo").unwrap();
    assert_eq!((q.broker_offset, q.consumer_offset), (2, 1));
    assert_eq!((lag.total_inflight, lag.dlq_messages), (0, 0));

    // The views the console reads: per-topic counters, groups, how far a message got.
    let listed = admin
        .list_topics(pb::ListTopicsRequest { with_stats: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.stats.len(), listed.topics.len());
    let at = listed
        .topics
        .iter()
        .position(|t| t.name == "AdminFifo")
        .unwrap();
    let s = &listed.stats[at];
    assert_eq!(s.name, "AdminFifo");
    assert_eq!(
        (
            s.messages_in,
            s.messages_stored,
            s.messages_acked,
            s.consumer_groups
        ),
        (2, 2, 1, 1)
    );
    let groups = admin
        .list_consumer_groups(pb::ListConsumerGroupsRequest {})
        .await
        .unwrap()
        .into_inner()
        .groups;
    let g = groups.iter().find(|g| g.group == "g-admin").unwrap();
    assert_eq!(
        (g.topics.clone(), g.total_lag),
        (vec!["AdminFifo".to_owned()], 1)
    );
    let by_id = admin
        .lookup_message(pb::LookupMessageRequest {
            by: Some(pb::lookup_message_request::By::MessageId(id.clone())),
            max: 0,
            with_body: false,
        })
        .await
        .unwrap()
        .into_inner();
    let deliveries = &by_id.messages[0].deliveries;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(
        (deliveries[0].group.as_str(), deliveries[0].state.as_str()),
        ("g-admin", "acked")
    );
    assert_eq!(by_id.messages[0].delay_state, "");
    assert_eq!(by_id.messages[0].transaction_state, "");

    // Reset to the beginning: everything is due again.
    let reset = admin
        .reset_consumer_offset(pb::ResetConsumerOffsetRequest {
            group: "g-admin".into(),
            topic: "AdminFifo".into(),
            timestamp_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reset.offsets.len(), 1);
    assert_eq!(reset.offsets[0].offset, 0);
    let lag = admin
        .describe_consumer_group(pb::DescribeConsumerGroupRequest {
            group: "g-admin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lag.total_lag, 2);

    let stats = admin
        .broker_stats(pb::BrokerStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.broker_name, "broker-a");
    assert_eq!(stats.flush_mode, "sync");
    assert!(stats.topic_count >= 1);
    assert!(stats.max_log_offset > 0);
    assert!(stats.disk_total_bytes >= stats.disk_free_bytes && stats.disk_free_bytes > 0);
    assert!(stats.store_size_bytes > 0);
    assert!(!stats.draining);
    let cluster = admin
        .cluster_overview(pb::ClusterOverviewRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cluster.broker.unwrap().broker_name, "broker-a");

    // Delete: gone from the table and the route.
    admin
        .delete_topic(pb::DeleteTopicRequest {
            name: "AdminFifo".into(),
        })
        .await
        .unwrap();
    let missing = admin
        .delete_topic(pb::DeleteTopicRequest {
            name: "AdminFifo".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let route = client
        .query_route(req(v2::QueryRouteRequest {
            topic: resource("AdminFifo"),
            endpoints: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&route.status), v2::Code::TopicNotFound);
    broker.stop().await;
}

#[tokio::test]
async fn health_and_reflection_share_the_port() {
    let broker = TestBroker::start(|_| {}).await;
    let channel = plain_channel(broker.addr).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "apache.rocketmq.v2.MessagingService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // Reflection lists the services (what grpcurl asks first).
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("list services answer expected");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"apache.rocketmq.v2.MessagingService"),
        "{names:?}"
    );
    assert!(names.contains(&"rocketlog.admin.v1.Admin"), "{names:?}");
    broker.stop().await;
}

/// `LookupMessage` of `id`, every record of it, with the state the admin API adds.
async fn lookup(
    admin: &mut AdminClient<tonic::transport::Channel>,
    id: &str,
) -> Vec<pb::StoredMessage> {
    admin
        .lookup_message(pb::LookupMessageRequest {
            by: Some(pb::lookup_message_request::By::MessageId(id.to_owned())),
            max: 0,
            with_body: false,
        })
        .await
        .unwrap()
        .into_inner()
        .messages
}

#[tokio::test]
async fn lookups_tell_delayed_and_transactional_state() {
    let broker = TestBroker::start(|_| {}).await;
    let mut admin = AdminClient::new(plain_channel(broker.addr).await);
    let mut client = broker.client().await;
    for (name, kind) in [
        ("AdminDelay", pb::MessageType::Delay),
        ("AdminTx", pb::MessageType::Transaction),
    ] {
        admin
            .create_or_update_topic(pb::CreateOrUpdateTopicRequest {
                topic: Some(pb::TopicConfig {
                    name: name.into(),
                    queue_nums: 1,
                    perm: pb::Permission::ReadWrite as i32,
                    message_types: vec![kind as i32],
                }),
            })
            .await
            .unwrap();
    }

    // Due in an hour: held by the timer.
    let mut m = message("AdminDelay", b"later", None, &[], None);
    let at = std::time::SystemTime::now() + Duration::from_secs(3600);
    let at_s = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let props = m.system_properties.as_mut().unwrap();
    props.message_type = v2::MessageType::Delay as i32;
    props.delivery_timestamp = Some(prost_types::Timestamp {
        seconds: at_s,
        nanos: 0,
    });
    let id = props.message_id.clone();
    assert_eq!(code(&send(&mut client, m).await.status), v2::Code::Ok);
    let found = lookup(&mut admin, &id).await;
    assert!(!found.is_empty());
    for f in &found {
        assert_eq!(f.delay_state, "scheduled", "{f:?}");
        assert_eq!(f.deliver_at_ms, at_s * 1000);
    }

    // A transaction: open, then committed (the half message and its copy in the topic).
    let mut m = message("AdminTx", b"tx", None, &[], None);
    let props = m.system_properties.as_mut().unwrap();
    props.message_type = v2::MessageType::Transaction as i32;
    let id = props.message_id.clone();
    let sent = send(&mut client, m).await;
    assert_eq!(code(&sent.status), v2::Code::Ok);
    let tx = sent.entries[0].transaction_id.clone();
    let states = |found: &[pb::StoredMessage]| {
        found
            .iter()
            .map(|f| f.transaction_state.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(states(&lookup(&mut admin, &id).await), vec!["open"]);
    let ended = client
        .end_transaction(req(v2::EndTransactionRequest {
            topic: resource("AdminTx"),
            message_id: id.clone(),
            transaction_id: tx,
            resolution: v2::TransactionResolution::Commit as i32,
            source: v2::TransactionSource::SourceClient as i32,
            trace_context: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&ended.status), v2::Code::Ok);
    let mut after = Vec::new();
    poll(|| {
        let mut a = admin.clone();
        let id = id.clone();
        async move { lookup(&mut a, &id).await.len() == 2 }
    })
    .await;
    after.extend(lookup(&mut admin, &id).await);
    assert_eq!(states(&after), vec!["committed", "committed"]);
    broker.stop().await;
}
