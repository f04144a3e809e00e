//! Delayed messages through the Rust SDK against a real in-process broker: delivery at (never
//! before) the delivery time, recall handles and RecallMessage, and the broker's refusals.

mod common;

use std::time::{Duration, SystemTime};

use common::{unique, Cluster};
use rocketlog_client::{Code, FilterExpression, Message, Producer, SimpleConsumer};
use rocketlog_proto::v2;
use rocketlog_proto::v2::messaging_service_client::MessagingServiceClient;

const INVISIBLE: Duration = Duration::from_secs(30);

async fn consumer(cluster: &Cluster, topic: &str) -> SimpleConsumer {
    SimpleConsumer::builder(cluster.config(), unique("delay-group"))
        .subscribe(topic, FilterExpression::all())
        .await_duration(Duration::from_secs(2))
        .build()
        .await
        .expect("consumer starts")
}

async fn recall(cluster: &Cluster, topic: &str, handle: &str) -> v2::RecallMessageResponse {
    let mut client = MessagingServiceClient::connect(format!("http://{}", cluster.endpoint))
        .await
        .expect("connect");
    client
        .recall_message(v2::RecallMessageRequest {
            topic: Some(v2::Resource {
                resource_namespace: String::new(),
                name: topic.to_owned(),
            }),
            recall_handle: handle.to_owned(),
        })
        .await
        .expect("RecallMessage answers in-band")
        .into_inner()
}

fn code(status: Option<&v2::Status>) -> i32 {
    status.map_or(-1, |s| s.code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_arrive_at_their_time_and_recalled_ones_never() {
    let cluster = Cluster::start().await;
    let topic = unique("delayed");
    let c = consumer(&cluster, &topic).await;
    let producer = Producer::builder(cluster.config())
        .topics([&topic])
        .build()
        .await
        .expect("producer starts");

    let due = SystemTime::now() + Duration::from_millis(1_500);
    let kept = producer
        .send(
            Message::builder(&topic)
                .body("later")
                .delivery_time(due)
                .build()
                .unwrap(),
        )
        .await
        .expect("delayed send");
    assert!(kept.recall_handle().is_some(), "no recall handle");
    let doomed = producer
        .send(
            Message::builder(&topic)
                .body("never")
                .delivery_time(due)
                .build()
                .unwrap(),
        )
        .await
        .expect("delayed send");
    let handle = doomed.recall_handle().expect("a recall handle").to_owned();

    // Bad handles are refused; the good one recalls the message.
    let r = recall(&cluster, &topic, "not-a-handle").await;
    assert_eq!(code(r.status.as_ref()), Code::BadRequest as i32, "{r:?}");
    let r = recall(&cluster, &unique("elsewhere"), &handle).await;
    assert_eq!(code(r.status.as_ref()), Code::BadRequest as i32, "{r:?}");
    let r = recall(&cluster, &topic, &handle).await;
    assert_eq!(code(r.status.as_ref()), Code::Ok as i32, "{r:?}");
    assert_eq!(r.message_id, doomed.message_id());

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the delayed message never came"
        );
        got = c.receive(16, INVISIBLE).await.expect("receive");
    }
    let arrived = SystemTime::now();
    assert_eq!(got.len(), 1, "only the kept message");
    let m = &got[0];
    assert_eq!(m.message_id(), kept.message_id());
    assert!(
        arrived >= due,
        "delivered {:?} early",
        due.duration_since(arrived)
    );
    let at = m
        .delivery_time()
        .expect("delivery time on the delivered message");
    let want = due
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert_eq!(
        at.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
        want
    );
    c.ack(m).await.expect("ack");
    // The recalled one stays away, and recalling a delivered message is refused.
    assert!(c.receive(16, INVISIBLE).await.expect("receive").is_empty());
    let r = recall(&cluster, &topic, kept.recall_handle().unwrap()).await;
    assert_eq!(code(r.status.as_ref()), Code::NotFound as i32, "{r:?}");

    producer.shutdown().await;
    c.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_delivery_times_and_topics() {
    let cluster = Cluster::start().await;
    let normal = unique("normal-only");
    cluster
        .create_topic(
            &normal,
            2,
            &[rocketlog_proto::admin::v1::MessageType::Normal],
        )
        .await;
    let producer = Producer::builder(cluster.config())
        .topics([&normal])
        .build()
        .await
        .expect("producer starts");
    let later = SystemTime::now() + Duration::from_secs(60);
    let e = producer
        .send(
            Message::builder(&normal)
                .body("x")
                .delivery_time(later)
                .build()
                .unwrap(),
        )
        .await
        .expect_err("a NORMAL topic refuses delayed messages");
    assert_eq!(e.code(), Some(Code::MessagePropertyConflictWithType), "{e}");
    let too_far = SystemTime::now() + Duration::from_secs(41 * 24 * 3600);
    let topic = unique("delayed");
    let e = producer
        .send(
            Message::builder(&topic)
                .body("x")
                .delivery_time(too_far)
                .build()
                .unwrap(),
        )
        .await
        .expect_err("beyond the 40-day maximum");
    assert_eq!(e.code(), Some(Code::IllegalDeliveryTime), "{e}");
    // A time already past is delivered at once.
    let c = consumer(&cluster, &topic).await;
    let past = SystemTime::now() - Duration::from_secs(5);
    let sent = producer
        .send(
            Message::builder(&topic)
                .body("now")
                .delivery_time(past)
                .build()
                .unwrap(),
        )
        .await
        .expect("a past delivery time is accepted");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the message never came"
        );
        if let Some(m) = c.receive(16, INVISIBLE).await.expect("receive").first() {
            assert_eq!(m.message_id(), sent.message_id());
            break;
        }
    }
    producer.shutdown().await;
    c.shutdown().await;
    cluster.stop().await;
}
