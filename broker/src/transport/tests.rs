//! The port really serves both protocols: one h2c client and one TLS client (trusting any
//! certificate, as the Java client does) call the same listener.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tonic::service::Routes;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::{tls, Transport};

// One copy of the accept-any TLS client, shared with the integration tests.
#[path = "../../tests/common/tls_client.rs"]
mod tls_client;
use tls_client::{accept_any_config, tls_channel};

async fn check(channel: Channel) -> ServingStatus {
    let resp = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(resp.status).unwrap()
}

/// A running transport serving the health service on a fresh port.
struct Serving {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

async fn serve(transport: Transport) -> Serving {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        transport
            .serve(listener, Routes::new(health), async {
                let _ = stop_rx.await;
            })
            .await
    });
    Serving { addr, stop, server }
}

#[tokio::test]
async fn h2c_and_tls_share_one_port_and_shutdown_drains() {
    let Serving { addr, stop, server } = serve(Transport::new(
        Some(tls::server_config(None, &[]).unwrap()),
        Duration::from_secs(5),
        Default::default(),
    ))
    .await;

    let plain = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(check(plain.clone()).await, ServingStatus::Serving);
    let secure = tls_channel(addr).await;
    assert_eq!(check(secure).await, ServingStatus::Serving);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server drains within the grace period")
        .unwrap();
    // The listener is gone: new connections are refused.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn plaintext_only_port_closes_tls_handshakes() {
    let Serving { addr, stop, server } = serve(Transport::new(
        None,
        Duration::from_secs(1),
        Default::default(),
    ))
    .await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let res = tokio_rustls::TlsConnector::from(Arc::new(accept_any_config()))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    assert!(res.is_err());
    let plain = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(check(plain).await, ServingStatus::Serving);
    stop.send(()).unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn connections_announce_the_configured_stream_limit() {
    let transport =
        Transport::new(None, Duration::from_secs(1), Default::default()).max_concurrent_streams(7);
    let Serving { addr, stop, server } = serve(transport).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send_request, mut connection) = h2::client::handshake(tcp).await.unwrap();
    // The limit arrives in the server's SETTINGS frame, read while the connection is driven.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while connection.max_concurrent_send_streams() != 7 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "limit still {}",
            connection.max_concurrent_send_streams()
        );
        let _ = tokio::time::timeout(Duration::from_millis(10), &mut connection).await;
    }
    drop((send_request, connection));
    stop.send(()).unwrap();
    server.await.unwrap();
}
