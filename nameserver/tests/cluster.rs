//! Two real nameservers on 127.0.0.1:0; a broker group registers with both.

use std::time::{Duration, Instant};

use rocketlog_nameserver::{run, NameserverConfig};
use rocketlog_proto::nameserver::v1 as pb;
use rocketlog_proto::nameserver::v1::name_server_client::NameServerClient;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;

struct Server {
    client: NameServerClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(config: NameserverConfig) -> anyhow::Result<Server> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        run(config, listener, async {
            let _ = rx.await;
        })
        .await
        .expect("nameserver failed");
    });
    let client = NameServerClient::connect(format!("http://{addr}")).await?;
    Ok(Server {
        client,
        stop: Some(tx),
        task,
    })
}

fn registration(name: &str, id: u64, addr: &str, topics: &[&str]) -> pb::RegisterBrokerRequest {
    pb::RegisterBrokerRequest {
        cluster_name: "DefaultCluster".into(),
        broker_name: name.into(),
        broker_id: id,
        client_address: addr.into(),
        ha_address: String::new(),
        topics: topics
            .iter()
            .map(|t| pb::TopicConfig {
                name: (*t).into(),
                read_queue_nums: 4,
                write_queue_nums: 4,
                perm: pb::Permission::ReadWrite as i32,
                message_types: vec![pb::MessageType::Normal as i32],
            })
            .collect(),
        data_version: 1,
    }
}

#[tokio::test]
async fn brokers_register_with_every_nameserver_and_routes_agree() -> anyhow::Result<()> {
    let mut servers = vec![
        start(NameserverConfig::default()).await?,
        start(NameserverConfig::default()).await?,
    ];
    for s in &mut servers {
        s.client
            .register_broker(registration("broker-a", 0, "127.0.0.1:1001", &["T"]))
            .await?;
        let r = s
            .client
            .register_broker(registration("broker-a", 1, "127.0.0.1:1002", &["T"]))
            .await?;
        assert_eq!(r.into_inner().master_client_address, "127.0.0.1:1001");
    }
    for s in &mut servers {
        let route = s
            .client
            .get_topic_route(pb::GetTopicRouteRequest { topic: "T".into() })
            .await?
            .into_inner();
        assert_eq!(route.groups.len(), 1);
        let g = &route.groups[0];
        assert_eq!(g.broker_name, "broker-a");
        assert_eq!(
            g.addresses.get(&0).map(String::as_str),
            Some("127.0.0.1:1001")
        );
        assert_eq!(
            g.addresses.get(&1).map(String::as_str),
            Some("127.0.0.1:1002")
        );
        assert_eq!(g.topic.as_ref().map(|t| t.write_queue_nums), Some(4));

        let err = s
            .client
            .get_topic_route(pb::GetTopicRouteRequest {
                topic: "nope".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);

        let err = s
            .client
            .register_broker(registration("", 0, "x:1", &[]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);

        let brokers = s
            .client
            .list_brokers(pb::ListBrokersRequest {})
            .await?
            .into_inner();
        assert_eq!(brokers.brokers.len(), 2);
        s.client
            .delete_topic(pb::DeleteTopicRequest { topic: "T".into() })
            .await?;
        let err = s
            .client
            .get_topic_route(pb::GetTopicRouteRequest { topic: "T".into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
    }
    for mut s in servers {
        let _ = s.stop.take().map(|tx| tx.send(()));
        s.task.await?;
    }
    Ok(())
}

#[tokio::test]
async fn silent_brokers_expire() -> anyhow::Result<()> {
    let mut s = start(NameserverConfig {
        broker_expiry_ms: 300,
        scan_interval_ms: 50,
        heartbeat_interval_ms: 100,
        ..Default::default()
    })
    .await?;
    s.client
        .register_broker(registration("broker-a", 0, "127.0.0.1:1001", &["T"]))
        .await?;
    assert!(s
        .client
        .get_topic_route(pb::GetTopicRouteRequest { topic: "T".into() })
        .await
        .is_ok());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = s
            .client
            .list_brokers(pb::ListBrokersRequest {})
            .await?
            .into_inner();
        if listed.brokers.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "broker never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = s
        .client
        .get_topic_route(pb::GetTopicRouteRequest { topic: "T".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let _ = s.stop.take().map(|tx| tx.send(()));
    s.task.await?;
    Ok(())
}

#[tokio::test]
async fn invalid_config_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bad = NameserverConfig {
        broker_expiry_ms: 10,
        scan_interval_ms: 10,
        heartbeat_interval_ms: 30,
        ..Default::default()
    };
    let err = run(bad, listener, std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("broker_expiry_ms"), "{err}");
}
