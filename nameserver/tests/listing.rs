//! The remaining NameServer calls over a real connection: registration hints, topic listing,
//! unregistration, and the health service that orchestrators probe.

use rocketlog_nameserver::{run, NameserverConfig};
use rocketlog_proto::nameserver::v1 as pb;
use rocketlog_proto::nameserver::v1::name_server_client::NameServerClient;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn registration(name: &str, id: u64, topics: &[&str]) -> pb::RegisterBrokerRequest {
    pb::RegisterBrokerRequest {
        cluster_name: "DefaultCluster".into(),
        broker_name: name.into(),
        broker_id: id,
        client_address: format!("127.0.0.1:{}", 2000 + id),
        ha_address: format!("127.0.0.1:{}", 3000 + id),
        topics: topics
            .iter()
            .map(|t| pb::TopicConfig {
                name: (*t).into(),
                read_queue_nums: 2,
                write_queue_nums: 2,
                perm: pb::Permission::ReadWrite as i32,
                message_types: vec![pb::MessageType::Fifo as i32],
            })
            .collect(),
        data_version: 7,
    }
}

#[tokio::test]
async fn hints_listing_unregister_and_health() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let config = NameserverConfig {
        broker_expiry_ms: 5_000,
        scan_interval_ms: 1_000,
        heartbeat_interval_ms: 1_500,
        ..Default::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(run(config, listener, async {
        let _ = stopped.await;
    }));
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = NameServerClient::new(channel.clone());

    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "rocketlog.nameserver.v1.NameServer".into(),
        })
        .await?
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);

    let hints = client
        .register_broker(registration("broker-a", 0, &["T", "U"]))
        .await?
        .into_inner();
    assert_eq!(hints.heartbeat_interval_ms, 1_500);
    assert_eq!(hints.expiry_ms, 5_000);
    client
        .register_broker(registration("broker-b", 0, &["T"]))
        .await?;

    let topics = client
        .list_topics(pb::ListTopicsRequest::default())
        .await?
        .into_inner()
        .topics;
    let listed: Vec<(&str, Vec<&str>)> = topics
        .iter()
        .map(|t| {
            (
                t.name.as_str(),
                t.broker_names.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![("T", vec!["broker-a", "broker-b"]), ("U", vec!["broker-a"])]
    );

    let brokers = client
        .list_brokers(pb::ListBrokersRequest {})
        .await?
        .into_inner()
        .brokers;
    let a = brokers
        .iter()
        .find(|b| b.broker_name == "broker-a")
        .ok_or_else(|| anyhow::anyhow!("broker-a not listed: {brokers:?}"))?;
    assert_eq!(
        (a.ha_address.as_str(), a.topic_count, a.data_version),
        ("127.0.0.1:3000", 2, 7)
    );
    assert!(a.last_heartbeat_ms > 0);

    client
        .unregister_broker(pb::UnregisterBrokerRequest {
            cluster_name: "DefaultCluster".into(),
            broker_name: "broker-a".into(),
            broker_id: 0,
        })
        .await?;
    let err = client
        .get_topic_route(pb::GetTopicRouteRequest { topic: "U".into() })
        .await
        .err()
        .map(|e| e.code());
    assert_eq!(err, Some(tonic::Code::NotFound));
    let route = client
        .get_topic_route(pb::GetTopicRouteRequest { topic: "T".into() })
        .await?
        .into_inner();
    let groups: Vec<&str> = route
        .groups
        .iter()
        .map(|g| g.broker_name.as_str())
        .collect();
    assert_eq!(groups, vec!["broker-b"]);
    assert_eq!(
        route.groups[0]
            .topic
            .as_ref()
            .map(|t| t.message_types.clone()),
        Some(vec![pb::MessageType::Fifo as i32])
    );

    let _ = stop.send(());
    server.await??;
    Ok(())
}
