//! TLS that accepts any server certificate, for brokers with self-signed certificates (the
//! official Java, Go and C# clients connect this way).
//!
//! tonic verifies certificates itself and offers no switch to turn that off, so this mode
//! brings its own connector: TCP, then a rustls handshake whose verifier accepts any
//! certificate but still checks the handshake signatures (so the connection is encrypted to
//! whoever holds the presented certificate's key). The channel it feeds dials `http://` URIs;
//! the encryption happens below HTTP/2, where the server cannot tell the difference.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tonic::codegen::http::Uri;

use crate::endpoints::Address;
use crate::error::Error;

/// A certificate verifier that trusts every certificate and checks only that the server
/// holds the key of the certificate it presents.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The rustls configuration of the accept-any mode: ring, TLS 1.2 and 1.3, ALPN `h2`.
pub(crate) fn accept_any_client_config() -> Result<Arc<rustls::ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AcceptAnyCertificate {
        provider: provider.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Connects to the addresses of one endpoint over TLS without verifying certificates. Each
/// new connection starts at the next address and tries every address once.
#[derive(Clone)]
pub(crate) struct AcceptAnyConnector {
    config: Arc<rustls::ClientConfig>,
    addresses: Arc<Vec<Address>>,
    /// Name sent in SNI instead of the dialled host.
    server_name: Option<String>,
    next: Arc<AtomicUsize>,
}

impl AcceptAnyConnector {
    pub(crate) fn new(
        config: Arc<rustls::ClientConfig>,
        addresses: Vec<Address>,
        server_name: Option<String>,
    ) -> Self {
        AcceptAnyConnector {
            config,
            addresses: Arc::new(addresses),
            server_name,
            next: Arc::new(AtomicUsize::new(0)),
        }
    }
}

type Connecting =
    Pin<Box<dyn Future<Output = io::Result<TokioIo<TlsStream<TcpStream>>>> + Send + 'static>>;

impl tower::Service<Uri> for AcceptAnyConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let count = this.addresses.len();
            let start = this.next.fetch_add(1, Ordering::Relaxed);
            let mut last_error =
                io::Error::new(io::ErrorKind::InvalidInput, "the endpoint has no address");
            for i in 0..count {
                let Some(address) = this.addresses.get((start + i) % count) else {
                    continue;
                };
                match connect(&this, address).await {
                    Ok(stream) => return Ok(TokioIo::new(stream)),
                    Err(e) => {
                        tracing::debug!(host = %address.host, port = address.port, error = %e, "TLS connect failed");
                        last_error = e;
                    }
                }
            }
            Err(last_error)
        })
    }
}

async fn connect(
    connector: &AcceptAnyConnector,
    address: &Address,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect((address.host.as_str(), address.port)).await?;
    tcp.set_nodelay(true)?;
    let name = connector
        .server_name
        .clone()
        .unwrap_or_else(|| address.host.clone());
    let server_name =
        ServerName::try_from(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    TlsConnector::from(connector.config.clone())
        .connect(server_name, tcp)
        .await
}
