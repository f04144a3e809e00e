//! Connection settings shared by every client type.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::endpoints::Endpoints;
use crate::error::Error;

/// Default time limit of one request (long polls add their wait to it).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Default period of route refreshes (as the official clients).
pub const DEFAULT_ROUTE_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Where and how to reach a rocketlog broker or an Apache RocketMQ 5 proxy.
///
/// Built with [`ClientConfig::builder`]; cheap to clone and shared by the clients made from it.
///
/// ```
/// use std::time::Duration;
/// use rocketlog_client::{ClientConfig, Credentials};
///
/// let config = ClientConfig::builder()
///     .access_point("127.0.0.1:8081;127.0.0.1:8082")
///     .namespace("staging")
///     .credentials(Credentials::new("my-access-key", "my-secret-key"))
///     .request_timeout(Duration::from_secs(5))
///     .build()?;
/// assert_eq!(config.namespace(), "staging");
/// # Ok::<(), rocketlog_client::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub(crate) access_point: Endpoints,
    pub(crate) namespace: String,
    pub(crate) credentials: Option<Credentials>,
    pub(crate) tls: Option<TlsConfig>,
    pub(crate) request_timeout: Duration,
    pub(crate) route_refresh_interval: Duration,
    pub(crate) share_connections: bool,
}

impl ClientConfig {
    /// A builder with no access point yet and the defaults: no namespace, no credentials,
    /// plaintext HTTP/2, a [`DEFAULT_REQUEST_TIMEOUT`] request timeout.
    pub fn builder() -> ClientConfigBuilder {
        ClientConfigBuilder::default()
    }

    /// A configuration with the defaults and this access point (see
    /// [`ClientConfigBuilder::access_point`]).
    pub fn new(access_point: &str) -> Result<ClientConfig, Error> {
        ClientConfig::builder().access_point(access_point).build()
    }

    /// The access point, as `host:port[;host:port...]`.
    pub fn access_point(&self) -> String {
        self.access_point.to_string()
    }

    /// The namespace, empty when none was set.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The time limit of one request.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// How often the routes of the topics in use are fetched again.
    pub fn route_refresh_interval(&self) -> Duration {
        self.route_refresh_interval
    }

    /// Whether connections use TLS.
    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether this client shares its connections with the other clients of the process (see
    /// [`ClientConfigBuilder::share_connections`]).
    pub fn shares_connections(&self) -> bool {
        self.share_connections
    }
}

/// Builds a [`ClientConfig`]; see there for an example.
#[derive(Default, Debug)]
pub struct ClientConfigBuilder {
    access_point: Option<String>,
    namespace: String,
    credentials: Option<Credentials>,
    tls: Option<TlsConfig>,
    request_timeout: Option<Duration>,
    route_refresh_interval: Option<Duration>,
    dedicated_connections: bool,
}

impl ClientConfigBuilder {
    /// Where the client first connects: `host:port`, or several IP addresses separated by
    /// `;` or `,`, or one DNS name (which may resolve to several brokers). IPv6 addresses go in
    /// brackets: `[::1]:8081`. Routes then name the brokers that serve each topic.
    pub fn access_point(mut self, access_point: impl Into<String>) -> Self {
        self.access_point = Some(access_point.into());
        self
    }

    /// Namespace of every topic and group this client names (sent as `x-mq-namespace` and in
    /// each resource). Empty means none.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Signs every request with these credentials (`MQv2-HMAC-SHA1`).
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Connects over TLS instead of plaintext HTTP/2 (see [`TlsConfig`] for the ways to
    /// trust the server). rocketlog serves TLS and plaintext on the same port.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Time limit of one request; long polls wait this much beyond their polling time.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// How often the routes of the topics in use are fetched again (default
    /// [`DEFAULT_ROUTE_REFRESH_INTERVAL`]), so queues on new brokers are used. Routes are also
    /// fetched again at once after a routing error. At least 100 ms.
    pub fn route_refresh_interval(mut self, interval: Duration) -> Self {
        self.route_refresh_interval = Some(interval);
        self
    }

    /// Whether clients share connections (default `true`).
    ///
    /// By default every client of the process made with the same access point and TLS
    /// settings, on the same tokio runtime, sends its requests to a broker over one shared
    /// HTTP/2 connection, each request on its own stream, as gRPC's C core shares connections
    /// between channels with equal settings. 64 producers with one send each then cost the
    /// broker and the process about what one producer with 64 sends in flight costs; each on
    /// its own connection costs a socket read and write per message on both sides. Credentials
    /// and namespace travel with each request, so clients with different ones still share.
    ///
    /// `false` gives the client connections of its own: for an access point behind a
    /// TCP load balancer that should spread clients over several servers, or a server that
    /// allows few concurrent streams per connection (rocketlog allows
    /// `broker.max_concurrent_streams`, 10,000 by default), where long polls of some
    /// clients could hold the streams others need.
    pub fn share_connections(mut self, share: bool) -> Self {
        self.dedicated_connections = !share;
        self
    }

    /// Checks the settings and builds the configuration.
    pub fn build(self) -> Result<ClientConfig, Error> {
        let spec = self
            .access_point
            .ok_or_else(|| Error::Config("no access point set".into()))?;
        let access_point = Endpoints::parse(&spec)?;
        let request_timeout = self.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        if request_timeout.is_zero() {
            return Err(Error::Config("the request timeout must be positive".into()));
        }
        if !self.namespace.is_ascii() || self.namespace.chars().any(|c| c.is_ascii_control()) {
            return Err(Error::Config(format!(
                "namespace {:?} must be printable ASCII (it travels in a header)",
                self.namespace
            )));
        }
        if let Some(c) = &self.credentials {
            c.validate()?;
        }
        let route_refresh_interval = self
            .route_refresh_interval
            .unwrap_or(DEFAULT_ROUTE_REFRESH_INTERVAL);
        if route_refresh_interval < Duration::from_millis(100) {
            return Err(Error::Config(
                "the route refresh interval must be at least 100 ms".into(),
            ));
        }
        let tls = self.tls.map(TlsConfig::load).transpose()?;
        Ok(ClientConfig {
            access_point,
            namespace: self.namespace,
            credentials: self.credentials,
            tls,
            request_timeout,
            route_refresh_interval,
            share_connections: !self.dedicated_connections,
        })
    }
}

/// An access key and secret key, and optionally a session token, for request signing.
///
/// The secret never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub(crate) access_key: String,
    pub(crate) secret_key: String,
    pub(crate) session_token: Option<String>,
}

impl Credentials {
    /// Long-lived credentials.
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Credentials {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            session_token: None,
        }
    }

    /// Adds a security token of temporary credentials (sent as `x-mq-session-token`).
    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(token.into());
        self
    }

    /// The access key.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    fn validate(&self) -> Result<(), Error> {
        let header_safe = |s: &str| s.bytes().all(|b| (0x20..0x7f).contains(&b));
        if self.access_key.trim().is_empty() || self.secret_key.is_empty() {
            return Err(Error::Config(
                "credentials need a non-empty access key and secret key".into(),
            ));
        }
        if !header_safe(&self.access_key)
            || self
                .session_token
                .as_deref()
                .is_some_and(|t| !header_safe(t))
        {
            return Err(Error::Config(
                "the access key and session token must be printable ASCII".into(),
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// TLS settings (rustls).
///
/// Three ways to trust a server:
/// - [`TlsConfig::new`]: certificates signed by a public CA (the Mozilla root certificates,
///   webpki roots), valid for the dialled host;
/// - [`TlsConfig::ca_certificate_pem`] or [`TlsConfig::ca_certificate_file`]: certificates
///   signed by a private CA, or one self-signed certificate given as its own CA;
/// - [`TlsConfig::accept_any_certificate`]: any certificate, as the official Java, Go and C#
///   clients do. rocketlog (and the Apache proxy) serve a self-signed certificate generated at
///   start unless one is configured; this mode connects to them without further setup.
///
/// ```
/// use rocketlog_client::{ClientConfig, TlsConfig};
///
/// // A broker with a certificate from a private CA (or its self-signed certificate).
/// let verified = TlsConfig::new()
///     .ca_certificate_file("/etc/rocketlog/ca.pem")
///     .domain_name("mq.example.com");
/// // A broker with the self-signed certificate it generated itself.
/// let config = ClientConfig::builder()
///     .access_point("127.0.0.1:8081")
///     .tls(TlsConfig::new().accept_any_certificate())
///     .build()?;
/// assert!(config.tls_enabled());
/// # let _ = verified;
/// # Ok::<(), rocketlog_client::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlsConfig {
    pub(crate) ca_pem: Option<Vec<u8>>,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) domain_name: Option<String>,
    pub(crate) accept_any: bool,
}

impl TlsConfig {
    /// Verify servers against the webpki root certificates.
    pub fn new() -> Self {
        TlsConfig::default()
    }

    /// Trust this CA certificate (PEM) instead of the webpki roots, e.g. a private CA or a
    /// broker's self-signed certificate.
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Trust the CA certificate in this PEM file instead of the webpki roots. The file is read
    /// when the [`ClientConfig`] is built; a missing file or one without a certificate fails
    /// [`ClientConfigBuilder::build`].
    pub fn ca_certificate_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Expect this name in the server certificate instead of the dialled host (also sent as
    /// the TLS server name).
    pub fn domain_name(mut self, name: impl Into<String>) -> Self {
        self.domain_name = Some(name.into());
        self
    }

    /// Accept any server certificate: expired, self-signed, or issued for another name.
    ///
    /// The connection is still encrypted, but to whoever answers at the address: use it for
    /// brokers with generated self-signed certificates on networks you trust, as the official
    /// Java, Go and C# clients do by default. Overrides any CA certificate given.
    pub fn accept_any_certificate(mut self) -> Self {
        self.accept_any = true;
        self
    }

    /// Whether any certificate is accepted.
    pub fn accepts_any_certificate(&self) -> bool {
        self.accept_any
    }

    /// Reads the CA file and checks the CA certificate, once, when the configuration is built.
    fn load(mut self) -> Result<TlsConfig, Error> {
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                Error::Config(format!(
                    "cannot read the CA certificate file {}: {e}",
                    path.display()
                ))
            })?;
            self.ca_pem = Some(pem);
        }
        if let Some(pem) = &self.ca_pem {
            let text = String::from_utf8_lossy(pem);
            if !text.contains("-----BEGIN CERTIFICATE-----") {
                let source = match &self.ca_file {
                    Some(p) => p.display().to_string(),
                    None => "the CA certificate".to_owned(),
                };
                return Err(Error::Config(format!(
                    "{source} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                )));
            }
        }
        Ok(self)
    }

    pub(crate) fn to_tonic(&self) -> tonic::transport::ClientTlsConfig {
        let mut tls = tonic::transport::ClientTlsConfig::new();
        tls = match &self.ca_pem {
            Some(pem) => tls.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
            None => tls.with_webpki_roots(),
        };
        if let Some(name) = &self.domain_name {
            tls = tls.domain_name(name.clone());
        }
        tls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let c = ClientConfig::new("127.0.0.1:8081").unwrap();
        assert_eq!(c.request_timeout(), DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(c.namespace(), "");
        assert!(!c.tls_enabled());
        assert_eq!(c.access_point(), "127.0.0.1:8081");

        assert!(ClientConfig::builder().build().is_err());
        assert!(ClientConfig::builder()
            .access_point("h:1")
            .request_timeout(Duration::ZERO)
            .build()
            .is_err());
        assert!(ClientConfig::builder()
            .access_point("h:1")
            .credentials(Credentials::new("", "sk"))
            .build()
            .is_err());
        assert!(ClientConfig::builder()
            .access_point("h:1")
            .namespace("bad\nns")
            .build()
            .is_err());
    }

    #[test]
    fn route_refresh_interval_is_checked() {
        let c = ClientConfig::new("127.0.0.1:8081").unwrap();
        assert_eq!(c.route_refresh_interval(), DEFAULT_ROUTE_REFRESH_INTERVAL);
        let c = ClientConfig::builder()
            .access_point("h:1")
            .route_refresh_interval(Duration::from_millis(250))
            .build()
            .unwrap();
        assert_eq!(c.route_refresh_interval(), Duration::from_millis(250));
        assert!(ClientConfig::builder()
            .access_point("h:1")
            .route_refresh_interval(Duration::from_millis(10))
            .build()
            .is_err());
    }

    #[test]
    fn tls_ca_sources_are_loaded_and_checked() {
        let dir = std::env::temp_dir().join(format!("rocketlog-client-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("ca.pem");
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        std::fs::write(&good, pem).unwrap();
        let bad = dir.join("key.pem");
        std::fs::write(&bad, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        let build = |tls: TlsConfig| ClientConfig::builder().access_point("h:1").tls(tls).build();

        let c = build(TlsConfig::new().ca_certificate_file(&good)).unwrap();
        let tls = c.tls.as_ref().unwrap();
        assert_eq!(tls.ca_pem.as_deref(), Some(pem.as_bytes()));
        assert!(!tls.accepts_any_certificate());
        for refused in [
            TlsConfig::new().ca_certificate_file(&bad),
            TlsConfig::new().ca_certificate_file(dir.join("absent.pem")),
            TlsConfig::new().ca_certificate_pem("not a certificate"),
        ] {
            assert!(matches!(build(refused), Err(Error::Config(_))));
        }
        let any = build(TlsConfig::new().accept_any_certificate()).unwrap();
        assert!(any.tls_enabled() && any.tls.as_ref().unwrap().accepts_any_certificate());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = Credentials::new("ak", "very-secret").with_session_token("tok-secret");
        let text = format!("{c:?}");
        assert!(text.contains("ak"));
        assert!(!text.contains("very-secret"));
        assert!(!text.contains("tok-secret"));
    }
}
