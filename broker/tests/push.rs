//! Push-consumer deliveries (`auto_renew`): kept invisible while the client's Telemetry stream
//! is open, acked with the handle the client was given, released when the client leaves.

mod common;

use std::time::Duration;

use common::*;
use rocketlog_proto::v2;
use rocketlog_proto::v2::messaging_service_client::MessagingServiceClient;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

const SECOND: Duration = Duration::from_secs(1);
const PUSH_CLIENT: &str = "push-client@1";

async fn receive_push(
    client: &mut MessagingServiceClient<Channel>,
    group: &str,
    topic: &str,
) -> Vec<v2::Message> {
    let mut r = req_as(
        PUSH_CLIENT,
        v2::ReceiveMessageRequest {
            group: resource(group),
            message_queue: Some(v2::MessageQueue {
                topic: resource(topic),
                id: -1,
                ..Default::default()
            }),
            filter_expression: Some(v2::FilterExpression {
                r#type: v2::FilterType::Tag as i32,
                expression: "*".into(),
            }),
            batch_size: 32,
            invisible_duration: None,
            auto_renew: true,
            long_polling_timeout: Some(prost_types::Duration {
                seconds: 5,
                nanos: 0,
            }),
            attempt_id: Some("attempt-1".into()),
        },
    );
    r.set_timeout(8 * SECOND);
    let mut stream = client.receive_message(r).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(item) = stream.message().await.unwrap() {
        if let Some(v2::receive_message_response::Content::Message(m)) = item.content {
            out.push(m);
        }
    }
    out
}

#[tokio::test]
async fn auto_renewed_deliveries_stay_invisible_while_the_client_is_connected() {
    let broker = TestBroker::start(|c| {
        c.receive.auto_renew_invisible_duration_ms = 2_000;
        c.receive.auto_renew_ahead_ms = 1_000;
        c.receive.auto_renew_period_ms = 100;
    })
    .await;
    let mut client = broker.client().await;
    assert_eq!(
        code(
            &send(&mut client, message("Renewed", b"one", None, &[], None))
                .await
                .status
        ),
        v2::Code::Ok
    );

    // The push consumer connects: settings first, on its Telemetry stream.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(v2::TelemetryCommand {
        status: None,
        command: Some(v2::telemetry_command::Command::Settings(v2::Settings {
            client_type: Some(v2::ClientType::PushConsumer as i32),
            pub_sub: Some(v2::settings::PubSub::Subscription(v2::Subscription {
                group: resource("g-push"),
                subscriptions: vec![v2::SubscriptionEntry {
                    topic: resource("Renewed"),
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
        .telemetry(req_as(
            PUSH_CLIENT,
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .await
        .unwrap()
        .into_inner();
    let reply = tokio::time::timeout(WAIT, replies.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(code(&reply.status), v2::Code::Ok);

    let got = receive_push(&mut client, "g-push", "Renewed").await;
    assert_eq!(got.len(), 1);
    let first = &got[0];
    assert_eq!(sys(first).delivery_attempt, Some(1));
    // Its 2 s invisibility is renewed: a 5 s long poll of the group finds nothing.
    let other = receive(
        &mut client,
        "g-push",
        "Renewed",
        "*",
        1,
        30 * SECOND,
        5 * SECOND,
    )
    .await;
    assert_eq!(code(&other.status), v2::Code::MessageNotFound);
    // The handle the client was given still acks it, renewals notwithstanding.
    assert_eq!(
        code(&ack(&mut client, "g-push", first).await.status),
        v2::Code::Ok
    );

    // Once the client is gone its deliveries are no longer renewed.
    assert_eq!(
        code(
            &send(&mut client, message("Renewed", b"two", None, &[], None))
                .await
                .status
        ),
        v2::Code::Ok
    );
    let got = receive_push(&mut client, "g-push", "Renewed").await;
    assert_eq!(got.len(), 1);
    let id = sys(&got[0]).message_id.clone();
    drop(tx);
    assert!(tokio::time::timeout(WAIT, replies.next())
        .await
        .unwrap()
        .is_none());
    let again = receive(
        &mut client,
        "g-push",
        "Renewed",
        "*",
        1,
        30 * SECOND,
        10 * SECOND,
    )
    .await;
    assert_eq!(again.messages.len(), 1, "released after the client left");
    assert_eq!(sys(&again.messages[0]).message_id, id);
    assert_eq!(sys(&again.messages[0]).delivery_attempt, Some(2));
    broker.stop().await;
}

#[tokio::test]
async fn shutdown_ends_long_polls_and_telemetry_streams_promptly() {
    // A grace period far longer than the test allows: a stop that waited for the long poll or
    // the Telemetry stream to end by themselves would be caught by the timing check below.
    let broker = TestBroker::start(|c| c.shutdown_grace_ms = 60_000).await;
    let mut client = broker.client().await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(v2::TelemetryCommand {
        status: None,
        command: Some(v2::telemetry_command::Command::Settings(v2::Settings {
            client_type: Some(v2::ClientType::SimpleConsumer as i32),
            pub_sub: Some(v2::settings::PubSub::Subscription(v2::Subscription {
                group: resource("g-stop"),
                ..Default::default()
            })),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut replies = client
        .telemetry(req_as(
            PUSH_CLIENT,
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(WAIT, replies.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // Make the topic, then park a 20 s long poll on it.
    assert_eq!(
        code(
            &send(&mut client, message("Quiet", b"x", None, &[], None))
                .await
                .status
        ),
        v2::Code::Ok
    );
    let first = receive(
        &mut client,
        "g-stop",
        "Quiet",
        "*",
        1,
        30 * SECOND,
        5 * SECOND,
    )
    .await;
    assert_eq!(first.messages.len(), 1);
    let mut poller = client.clone();
    let parked = tokio::spawn(async move {
        receive(
            &mut poller,
            "g-stop",
            "Quiet",
            "*",
            1,
            30 * SECOND,
            20 * SECOND,
        )
        .await
    });
    // Requests on one connection are dispatched in order: once this answer is back, the
    // receive has reached the broker.
    client
        .heartbeat(req(v2::HeartbeatRequest::default()))
        .await
        .unwrap();

    let started = std::time::Instant::now();
    broker.stop().await;
    assert!(
        started.elapsed() < 10 * SECOND,
        "stop took {:?}",
        started.elapsed()
    );
    let polled = parked.await.unwrap();
    assert_eq!(code(&polled.status), v2::Code::MessageNotFound);
    assert!(tokio::time::timeout(WAIT, replies.next())
        .await
        .unwrap()
        .is_none_or(|r| r.is_err()));
    drop(tx);
}
