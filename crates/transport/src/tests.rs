//! Peers that misbehave at the connection level: half a preface, half a TLS handshake, a TLS
//! session with no preface, unanswered pings, more connections than the limit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::service::Routes;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::{ConnectionSettings, Transport, REFUSAL};
use crate::rewind::PREFACE;

/// Longest any test waits for the server to act; the behaviour under test takes a fraction.
const PATIENCE: Duration = Duration::from_secs(20);

fn quick(max_connections: usize) -> ConnectionSettings {
    ConnectionSettings {
        handshake_timeout_ms: 300,
        keepalive_interval_ms: 300,
        keepalive_timeout_ms: 300,
        max_connections,
    }
}

struct Serving {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(transport: Transport) -> Serving {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        transport
            .serve(listener, Routes::new(health), async {
                let _ = stop_rx.await;
            })
            .await
    });
    Serving { addr, _stop: stop }
}

/// Reads until the server closes the connection; panics if it stays open past [`PATIENCE`].
/// Returns everything the server sent.
async fn until_closed(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
    got
}

async fn health(channel: Channel) -> Result<(), tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(drop)
}

async fn connect(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn tls_pair() -> (Arc<rustls::ServerConfig>, rustls::ClientConfig) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    (Arc::new(server), client)
}

#[tokio::test]
async fn half_a_preface_is_closed_at_the_handshake_deadline() {
    let s = serve(Transport::new(None, Duration::from_secs(1), quick(100))).await;
    let mut peers = Vec::new();
    for _ in 0..20 {
        let mut peer = TcpStream::connect(s.addr).await.unwrap();
        peer.write_all(&PREFACE[..12]).await.unwrap();
        peers.push(peer);
    }
    for peer in &mut peers {
        until_closed(peer).await;
    }
    // The port still serves well-behaved clients.
    health(connect(s.addr).await).await.unwrap();
}

#[tokio::test]
async fn half_a_tls_handshake_is_closed_at_the_handshake_deadline() {
    let (server, _) = tls_pair();
    let s = serve(Transport::new(
        Some(server),
        Duration::from_secs(1),
        quick(100),
    ))
    .await;
    let mut peer = TcpStream::connect(s.addr).await.unwrap();
    // A handshake record header announcing 512 bytes, then only a few of them.
    peer.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .await
        .unwrap();
    until_closed(&mut peer).await;
}

#[tokio::test]
async fn a_tls_session_without_a_preface_is_closed_at_the_handshake_deadline() {
    let (server, client) = tls_pair();
    let s = serve(Transport::new(
        Some(server),
        Duration::from_secs(1),
        quick(100),
    ))
    .await;
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the handshake itself succeeds");
    tls.write_all(&PREFACE[..5]).await.unwrap();
    tls.flush().await.unwrap();
    until_closed(&mut tls).await;
}

#[tokio::test]
async fn a_peer_that_never_answers_pings_is_closed() {
    let s = serve(Transport::new(None, Duration::from_secs(1), quick(100))).await;
    let mut peer = TcpStream::connect(s.addr).await.unwrap();
    peer.write_all(PREFACE).await.unwrap();
    // An empty SETTINGS frame completes the opening; nothing after it, not even PING acks.
    peer.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let got = until_closed(&mut peer).await;
    let ping = got.windows(2).any(|w| w == [0x08, 0x06]);
    assert!(ping, "the server sent no PING before closing: {got:02x?}");
}

#[tokio::test]
async fn past_the_limit_connections_are_refused_with_a_reason_and_served_again_once_one_closes() {
    let s = serve(Transport::new(None, Duration::from_secs(1), quick(2))).await;
    let first = connect(s.addr).await;
    let second = connect(s.addr).await;
    health(first.clone()).await.unwrap();
    health(second.clone()).await.unwrap();

    let mut third = TcpStream::connect(s.addr).await.unwrap();
    let got = until_closed(&mut third).await;
    assert_eq!(got, REFUSAL, "a refused connection is told why");
    let refused = Endpoint::from_shared(format!("http://{}", s.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = refused {
        assert!(health(channel).await.is_err(), "a third client was served");
    }

    // Both admitted clients are still served; once one leaves, a new one gets in.
    health(second.clone()).await.unwrap();
    drop(first);
    let admitted = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok(channel) = Endpoint::from_shared(format!("http://{}", s.addr))
                .unwrap()
                .connect()
                .await
            {
                if health(channel).await.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(admitted.is_ok(), "no new client served after one left");
    health(second).await.unwrap();
}
