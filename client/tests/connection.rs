//! Connection options against a real in-process broker: TLS on the client port, signed
//! requests.

mod common;

use std::time::Duration;

use common::{unique, Cluster};
use rocketlog_client::{
    ClientConfig, Credentials, FilterExpression, Message, Producer, SimpleConsumer, TlsConfig,
};

async fn round_trip(config: ClientConfig) {
    let topic = unique("t-conn");
    let consumer = SimpleConsumer::builder(config.clone(), unique("g-conn"))
        .subscribe(&topic, FilterExpression::all())
        .await_duration(Duration::from_secs(5))
        .build()
        .await
        .expect("consumer starts");
    let producer = Producer::builder(config)
        .topics([&topic])
        .build()
        .await
        .expect("producer starts");
    let sent = producer
        .send(
            Message::builder(&topic)
                .body("over the wire")
                .build()
                .unwrap(),
        )
        .await
        .expect("send");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.is_empty() && tokio::time::Instant::now() < deadline {
        got = consumer
            .receive(1, Duration::from_secs(30))
            .await
            .expect("receive");
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message_id(), sent.message_id());
    consumer.ack(&got[0]).await.expect("ack");
    producer.shutdown().await;
    consumer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_trusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, generated.cert.pem()).unwrap();
    std::fs::write(&key_path, generated.signing_key.serialize_pem()).unwrap();
    let cluster = Cluster::start_with(|c| {
        c.tls_cert_path = Some(cert_path.clone());
        c.tls_key_path = Some(key_path.clone());
    })
    .await;

    let config = ClientConfig::builder()
        .access_point(&cluster.endpoint)
        .tls(TlsConfig::new().ca_certificate_pem(generated.cert.pem()))
        .build()
        .unwrap();
    assert!(config.tls_enabled());
    round_trip(config).await;

    // A client that does not trust the certificate cannot start.
    let untrusted = ClientConfig::builder()
        .access_point(&cluster.endpoint)
        .tls(TlsConfig::new())
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let refused = Producer::builder(untrusted)
        .topics(["t-untrusted"])
        .build()
        .await;
    assert!(refused.is_err(), "an untrusted certificate was accepted");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_requests_are_served() {
    let cluster = Cluster::start().await;
    let config = ClientConfig::builder()
        .access_point(&cluster.endpoint)
        .credentials(Credentials::new("test-ak", "test-sk"))
        .build()
        .unwrap();
    round_trip(config).await;
    cluster.stop().await;
}
