//! Two broker groups and a nameserver in one process: routes list the queues of every group
//! with each group's own endpoints, registration follows topic changes, and assignments cover
//! both groups.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use rocketlog_proto::admin::v1 as pb;
use rocketlog_proto::admin::v1::admin_client::AdminClient;
use rocketlog_proto::v2;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const SECOND: Duration = Duration::from_secs(1);

struct Nameserver {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), rocketlog_nameserver::NameserverError>>,
}

async fn nameserver() -> Nameserver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(rocketlog_nameserver::run(
        rocketlog_nameserver::NameserverConfig::default(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    Nameserver { addr, stop, task }
}

async fn create_topic(addr: SocketAddr, name: &str, queues: u32) {
    let mut admin = AdminClient::new(plain_channel(addr).await);
    admin
        .create_or_update_topic(pb::CreateOrUpdateTopicRequest {
            topic: Some(pb::TopicConfig {
                name: name.into(),
                queue_nums: queues,
                perm: pb::Permission::ReadWrite as i32,
                message_types: vec![pb::MessageType::Normal as i32],
            }),
        })
        .await
        .unwrap();
}

async fn route(
    client: &mut v2::messaging_service_client::MessagingServiceClient<tonic::transport::Channel>,
    topic: &str,
) -> v2::QueryRouteResponse {
    client
        .query_route(req(v2::QueryRouteRequest {
            topic: resource(topic),
            endpoints: None,
        }))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn routes_span_every_broker_group() {
    let ns = nameserver().await;
    let ns_addr = ns.addr.to_string();
    let a = TestBroker::start(|c| {
        c.broker_name = "broker-a".into();
        c.auto_create_topics = false;
        c.nameserver_addresses = vec![ns_addr.clone()];
        c.route_cache_ms = 100;
    })
    .await;
    let b = TestBroker::start(|c| {
        c.broker_name = "broker-b".into();
        c.auto_create_topics = false;
        c.nameserver_addresses = vec![ns_addr.clone()];
        c.route_cache_ms = 100;
    })
    .await;
    create_topic(a.addr, "Shared", 2).await;
    create_topic(b.addr, "Shared", 3).await;
    create_topic(b.addr, "OnlyB", 1).await;

    // Broker a answers with its own 2 queues and b's 3, each with its group's endpoint.
    let mut client_a = a.client().await;
    poll(|| {
        let mut c = client_a.clone();
        async move { route(&mut c, "Shared").await.message_queues.len() == 5 }
    })
    .await;
    let shared = route(&mut client_a, "Shared").await;
    for q in &shared.message_queues {
        let broker = q.broker.as_ref().unwrap();
        let port = broker.endpoints.as_ref().unwrap().addresses[0].port;
        match broker.name.as_str() {
            "broker-a" => assert_eq!(port, i32::from(a.addr.port())),
            "broker-b" => assert_eq!(port, i32::from(b.addr.port())),
            other => panic!("unexpected broker {other}"),
        }
        assert_eq!(broker.id, 0);
    }
    // A topic only b has is routed by a (to b), not auto-created on a.
    let only_b = route(&mut client_a, "OnlyB").await;
    assert_eq!(code(&only_b.status), v2::Code::Ok);
    assert_eq!(only_b.message_queues.len(), 1);
    assert_eq!(
        only_b.message_queues[0].broker.as_ref().unwrap().name,
        "broker-b"
    );

    // Push consumers get one assignment per broker group.
    let assignments = client_a
        .query_assignment(req(v2::QueryAssignmentRequest {
            topic: resource("Shared"),
            group: resource("g-shared"),
            endpoints: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&assignments.status), v2::Code::Ok);
    let mut names: Vec<String> = assignments
        .assignments
        .iter()
        .map(|x| {
            let q = x.message_queue.as_ref().unwrap();
            assert_eq!(q.id, -1);
            q.broker.as_ref().unwrap().name.clone()
        })
        .collect();
    names.sort();
    assert_eq!(names, vec!["broker-a".to_owned(), "broker-b".to_owned()]);

    // Messages sent to b are consumed from b.
    let mut client_b = b.client().await;
    let m = message("OnlyB", b"on-b", None, &[], None);
    let id = sys(&m).message_id.clone();
    assert_eq!(code(&send(&mut client_b, m).await.status), v2::Code::Ok);
    let got = receive(
        &mut client_b,
        "g-b",
        "OnlyB",
        "*",
        1,
        30 * SECOND,
        5 * SECOND,
    )
    .await;
    assert_eq!(sys(&got.messages[0]).message_id, id);

    // A stopped broker unregisters: its queues leave the route.
    b.stop().await;
    poll(|| {
        let mut c = client_a.clone();
        async move { route(&mut c, "Shared").await.message_queues.len() == 2 }
    })
    .await;
    a.stop().await;
    let _ = ns.stop.send(());
    ns.task.await.unwrap().unwrap();
}
