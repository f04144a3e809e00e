//! TransactionProducer against a real in-process broker: commit, rollback, the server's
//! check-back through the TransactionChecker, the policy after the last check, and the error
//! codes of misuse.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{poll_until, unique, Cluster};
use rocketlog_client::{
    Code, FilterExpression, Message, MessageView, SimpleConsumer, TransactionProducer,
    TransactionResolution,
};
use rocketlog_proto::admin::v1 as admin;
use rocketlog_proto::v2;

const INVISIBLE: Duration = Duration::from_secs(30);

/// Checks first after `first_check_ms`, then every 300 ms, at most `max_checks`.
async fn cluster(first_check_ms: u64, max_checks: u32) -> Cluster {
    Cluster::start_with(|c| {
        c.transaction.first_check_delay_ms = first_check_ms;
        c.transaction.check_interval_ms = 300;
        c.transaction.scan_interval_ms = 50;
        c.transaction.max_checks = max_checks;
    })
    .await
}

async fn consumer(cluster: &Cluster, topic: &str) -> SimpleConsumer {
    SimpleConsumer::builder(cluster.config(), unique("g-tx"))
        .subscribe(topic, FilterExpression::all())
        .await_duration(Duration::from_secs(2))
        .build()
        .await
        .expect("consumer starts")
}

/// Receives (and acks) until `want` messages came, then polls `quiet_polls` more times to see
/// that nothing else comes; returns the ids received.
async fn consume(c: &SimpleConsumer, want: usize, quiet_polls: usize) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.len() < want && tokio::time::Instant::now() < deadline {
        for m in c.receive(16, INVISIBLE).await.expect("receive") {
            c.ack(&m).await.expect("ack");
            got.push(m.message_id().to_owned());
        }
    }
    for _ in 0..quiet_polls {
        for m in c.receive(16, INVISIBLE).await.expect("receive") {
            c.ack(&m).await.expect("ack");
            got.push(m.message_id().to_owned());
        }
    }
    got
}

fn message(topic: &str, body: &str) -> Message {
    Message::builder(topic)
        .body(body.to_owned())
        .tag("tx")
        .build()
        .expect("message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_delivers_once_and_rollback_discards() {
    // No check during this test: the client alone resolves.
    let cluster = cluster(60_000, 15).await;
    let topic = unique("t-tx");
    cluster
        .create_topic(&topic, 4, &[admin::MessageType::Transaction])
        .await;
    let c = consumer(&cluster, &topic).await;
    let producer = TransactionProducer::builder(cluster.config(), |_m: MessageView| async {
        TransactionResolution::Rollback
    })
    .topics([&topic])
    .build()
    .await
    .expect("producer starts");

    let kept = producer.send(message(&topic, "kept")).await.expect("send");
    assert!(!kept.transaction_id().is_empty());
    let kept_id = kept.receipt().message_id().to_owned();
    let dropped = producer
        .send(message(&topic, "dropped"))
        .await
        .expect("send");
    // Nothing is visible before the commit.
    assert!(c.receive(16, INVISIBLE).await.expect("receive").is_empty());
    kept.commit().await.expect("commit");
    dropped.rollback().await.expect("rollback");

    let got = consume(&c, 1, 1).await;
    assert_eq!(got, vec![kept_id]);
    producer.shutdown().await;
    c.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_transaction_is_checked_back_until_the_checker_commits() {
    let cluster = cluster(300, 15).await;
    let topic = unique("t-txcheck");
    cluster
        .create_topic(&topic, 4, &[admin::MessageType::Transaction])
        .await;
    let c = consumer(&cluster, &topic).await;
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let checker = move |m: MessageView| {
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            assert_eq!(m.body().as_ref(), b"checked");
            // Undecided at first: the server must ask again.
            if n == 1 {
                TransactionResolution::Unknown
            } else {
                TransactionResolution::Commit
            }
        }
    };
    let producer = TransactionProducer::builder(cluster.config(), checker)
        .topics([&topic])
        .build()
        .await
        .expect("producer starts");
    let tx = producer
        .send(message(&topic, "checked"))
        .await
        .expect("send");
    let id = tx.receipt().message_id().to_owned();
    // Left open: only the checker decides.
    drop(tx);

    let got = consume(&c, 1, 2).await;
    assert_eq!(
        got,
        vec![id],
        "committed by the check, delivered exactly once"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "asked twice (unknown, then commit)"
    );
    producer.shutdown().await;
    c.shutdown().await;
    cluster.stop().await;
}

/// EndTransaction straight over gRPC (to probe the broker without the SDK's checks).
async fn raw_end(
    cluster: &Cluster,
    topic: &str,
    message_id: &str,
    transaction_id: &str,
    resolution: v2::TransactionResolution,
) -> v2::Status {
    let mut raw = v2::messaging_service_client::MessagingServiceClient::connect(format!(
        "http://{}",
        cluster.endpoint
    ))
    .await
    .expect("connect");
    raw.end_transaction(v2::EndTransactionRequest {
        topic: Some(v2::Resource {
            resource_namespace: String::new(),
            name: topic.to_owned(),
        }),
        message_id: message_id.to_owned(),
        transaction_id: transaction_id.to_owned(),
        resolution: resolution as i32,
        source: v2::TransactionSource::SourceClient as i32,
        trace_context: String::new(),
    })
    .await
    .expect("end transaction")
    .into_inner()
    .status
    .expect("a status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_transaction_is_rolled_back_after_the_last_check() {
    let cluster = cluster(300, 2).await;
    let topic = unique("t-txmax");
    cluster
        .create_topic(&topic, 4, &[admin::MessageType::Transaction])
        .await;
    let c = consumer(&cluster, &topic).await;
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let checker = move |_m: MessageView| {
        seen.fetch_add(1, Ordering::SeqCst);
        async { TransactionResolution::Unknown }
    };
    let producer = TransactionProducer::builder(cluster.config(), checker)
        .topics([&topic])
        .build()
        .await
        .expect("producer starts");
    let tx = producer.send(message(&topic, "never")).await.expect("send");
    let tx_id = tx.transaction_id().to_owned();
    // Probing with another message id changes nothing: the broker answers what it knows.
    let rolled_back = poll_until(Duration::from_secs(20), || async {
        let s = raw_end(
            &cluster,
            &topic,
            "not-the-message",
            &tx_id,
            v2::TransactionResolution::Commit,
        )
        .await;
        assert_eq!(s.code, v2::Code::InvalidTransactionId as i32, "{s:?}");
        s.message.contains("already rolled back").then_some(())
    })
    .await;
    assert!(
        rolled_back.is_some(),
        "the transaction was not rolled back after its last check"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "checked exactly max_checks times"
    );
    // A late commit is refused, and nothing is delivered.
    let code = tx.commit().await.err().and_then(|e| e.code());
    assert_eq!(code, Some(Code::InvalidTransactionId));
    assert!(
        consume(&c, 0, 1).await.is_empty(),
        "a rolled-back message was delivered"
    );
    producer.shutdown().await;
    c.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misuse_gets_the_proxys_error_codes() {
    let cluster = cluster(300, 15).await;
    let normal = unique("t-normal");
    cluster
        .create_topic(&normal, 4, &[admin::MessageType::Normal])
        .await;
    let producer = TransactionProducer::builder(cluster.config(), |_m: MessageView| async {
        TransactionResolution::Rollback
    })
    .topics([&normal])
    .build()
    .await
    .expect("producer starts");
    // A topic that does not accept TRANSACTION messages.
    let err = producer
        .send(message(&normal, "x"))
        .await
        .expect_err("a NORMAL-only topic took a transactional message");
    assert_eq!(err.code(), Some(Code::MessagePropertyConflictWithType));

    let topic = unique("t-txmisuse");
    cluster
        .create_topic(&topic, 4, &[admin::MessageType::Transaction])
        .await;
    let commit = v2::TransactionResolution::Commit;
    for bogus in ["", "nonsense", "00000000DEADBEEF"] {
        let s = raw_end(&cluster, &topic, "M", bogus, commit).await;
        assert_eq!(
            s.code,
            v2::Code::InvalidTransactionId as i32,
            "{bogus:?}: {s:?}"
        );
    }
    let s = raw_end(&cluster, "RMQ_SYS_TRANS_HALF_TOPIC", "M", "00", commit).await;
    assert_eq!(s.code, v2::Code::IllegalTopic as i32, "{s:?}");
    producer.shutdown().await;
    cluster.stop().await;
}
