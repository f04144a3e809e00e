//! The Rust SDK over TLS on the broker's client port (TLS and plaintext share the port):
//! accepting the broker's generated self-signed certificate, trusting a CA file, and refusing
//! an unverifiable certificate by default.

use std::time::Duration;

use anyhow::{ensure, Context};
use rocketlog_client::{
    ClientConfig, Error, FilterExpression, Message, Producer, SimpleConsumer, TlsConfig,
};
use rocketlog_tests::{poll, unique_name, SdkCluster};

/// Sends one message and receives it back over `config`.
async fn round_trip(config: ClientConfig) -> anyhow::Result<()> {
    let topic = unique_name("tls");
    let producer = Producer::builder(config.clone())
        .topics([&topic])
        .build()
        .await
        .context("producer over TLS")?;
    let consumer = SimpleConsumer::builder(config, unique_name("grp-tls"))
        .subscribe(&topic, FilterExpression::all())
        .await_duration(Duration::from_secs(2))
        .build()
        .await
        .context("consumer over TLS")?;
    let sent = producer
        .send(Message::builder(&topic).body("encrypted").build()?)
        .await?;
    let got = poll(Duration::from_secs(20), "the message over TLS", || async {
        consumer
            .receive(1, Duration::from_secs(10))
            .await
            .ok()?
            .pop()
    })
    .await?;
    ensure!(got.message_id() == sent.message_id() && got.body().as_ref() == b"encrypted");
    consumer.ack(&got).await?;
    consumer.shutdown().await;
    producer.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_any_certificate_reaches_a_self_signed_broker() -> anyhow::Result<()> {
    // No certificate configured: the broker generates a self-signed one at start.
    let cluster = SdkCluster::single(|_| {}).await?;
    let endpoint = cluster.broker().endpoint();
    let config = ClientConfig::builder()
        .access_point(&endpoint)
        .tls(TlsConfig::new().accept_any_certificate())
        .build()?;
    ensure!(config.tls_enabled());
    round_trip(config).await?;

    // Verified TLS (the default) refuses the self-signed certificate.
    let verified = ClientConfig::builder()
        .access_point(&endpoint)
        .tls(TlsConfig::new())
        .request_timeout(Duration::from_secs(2))
        .build()?;
    let refused = Producer::builder(verified)
        .topics([unique_name("tls-refused")])
        .build()
        .await;
    ensure!(refused.is_err(), "an unverifiable certificate was accepted");
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_verifies_the_broker() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let cert_path = dir.path().join("broker.pem");
    let key_path = dir.path().join("broker.key");
    std::fs::write(&cert_path, generated.cert.pem())?;
    std::fs::write(&key_path, generated.signing_key.serialize_pem())?;
    let cluster = SdkCluster::single(|c| {
        c.tls_cert_path = Some(cert_path.clone());
        c.tls_key_path = Some(key_path.clone());
    })
    .await?;
    let config = ClientConfig::builder()
        .access_point(cluster.broker().endpoint())
        .tls(TlsConfig::new().ca_certificate_file(&cert_path))
        .build()?;
    round_trip(config).await?;

    // A CA file that is missing, or holds no certificate, is refused when the config is built.
    let missing = ClientConfig::builder()
        .access_point(cluster.broker().endpoint())
        .tls(TlsConfig::new().ca_certificate_file(dir.path().join("absent.pem")))
        .build();
    ensure!(matches!(missing, Err(Error::Config(_))), "{missing:?}");
    let not_pem = ClientConfig::builder()
        .access_point(cluster.broker().endpoint())
        .tls(TlsConfig::new().ca_certificate_file(&key_path))
        .build();
    ensure!(matches!(not_pem, Err(Error::Config(_))), "{not_pem:?}");
    cluster.stop().await
}
