//! Channels and calls: one HTTP/2 channel per endpoint, shared by every call to it (and by
//! default by every client of the process on the same runtime with the same connection
//! settings), and a signed, time-limited, traced request around each RPC.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use parking_lot::Mutex;
use rocketlog_proto::v2::messaging_service_client::MessagingServiceClient;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument;

use crate::config::{ClientConfig, TlsConfig};
use crate::endpoints::Endpoints;
use crate::error::Error;
use crate::signing::Signer;
use crate::tls::{accept_any_client_config, AcceptAnyConnector};

pub(crate) type Stub = MessagingServiceClient<Channel>;

/// Time to set up a TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 keepalive keeps idle channels to brokers alive through middleboxes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Largest message accepted from a server (batches of large messages; the proxy allows 130 MiB).
const MAX_DECODING: usize = 256 * 1024 * 1024;

/// The channels of one client. Channels are made lazily and live as long as the client, or,
/// when shared, as long as any client using them.
#[derive(Debug)]
pub(crate) struct Rpc {
    config: ClientConfig,
    signer: Signer,
    /// Each stub with the channel it was made from: holding the `Arc` keeps a shared channel
    /// in the process-wide table.
    stubs: DashMap<Endpoints, (Stub, Arc<Channel>)>,
    accept_any: OnceLock<Arc<rustls::ClientConfig>>,
}

/// What makes two clients' channels to a broker interchangeable. A channel's connection task
/// runs on the runtime that made it, so clients on other runtimes (e.g. one per test) get
/// their own; credentials and namespace are per request and not part of it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ChannelKey {
    runtime: tokio::runtime::Id,
    endpoints: Endpoints,
    tls: Option<TlsConfig>,
}

/// The channels in use in this process by clients that share connections. Entries die with
/// the last client holding them and are swept when a channel is added.
fn shared_channels() -> &'static Mutex<HashMap<ChannelKey, Weak<Channel>>> {
    static SHARED: OnceLock<Mutex<HashMap<ChannelKey, Weak<Channel>>>> = OnceLock::new();
    SHARED.get_or_init(Default::default)
}

impl Rpc {
    pub(crate) fn new(config: ClientConfig, client_id: &str) -> Rpc {
        let signer = Signer::new(client_id, &config.namespace, config.credentials.as_ref());
        Rpc {
            config,
            signer,
            stubs: DashMap::new(),
            accept_any: OnceLock::new(),
        }
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The stub for `endpoints`, making its channel on first use. Cloning a stub is cheap and
    /// all clones share one connection.
    pub(crate) fn stub(&self, endpoints: &Endpoints) -> Result<Stub, Error> {
        if let Some(entry) = self.stubs.get(endpoints) {
            return Ok(entry.0.clone());
        }
        let channel = self.channel(endpoints)?;
        let stub = MessagingServiceClient::new(Channel::clone(&channel))
            .max_decoding_message_size(MAX_DECODING);
        Ok(self
            .stubs
            .entry(endpoints.clone())
            .or_insert((stub, channel))
            .0
            .clone())
    }

    /// The channel to `endpoints`: the one other clients of this runtime already use with the
    /// same settings, or a new one (registered for them unless this client opted out).
    fn channel(&self, endpoints: &Endpoints) -> Result<Arc<Channel>, Error> {
        let runtime = tokio::runtime::Handle::try_current().ok();
        let Some(runtime) = runtime.filter(|_| self.config.share_connections) else {
            return Ok(Arc::new(self.new_channel(endpoints)?));
        };
        let key = ChannelKey {
            runtime: runtime.id(),
            endpoints: endpoints.clone(),
            tls: self.config.tls.clone(),
        };
        let mut shared = shared_channels().lock();
        if let Some(channel) = shared.get(&key).and_then(Weak::upgrade) {
            return Ok(channel);
        }
        let channel = Arc::new(self.new_channel(endpoints)?);
        shared.retain(|_, c| c.strong_count() > 0);
        shared.insert(key, Arc::downgrade(&channel));
        Ok(channel)
    }

    fn new_channel(&self, endpoints: &Endpoints) -> Result<Channel, Error> {
        let connect_error = |source| Error::Connect {
            source,
            endpoint: endpoints.to_string(),
        };
        let configure = |uri: String| -> Result<Endpoint, Error> {
            Ok(Endpoint::from_shared(uri)
                .map_err(connect_error)?
                .connect_timeout(CONNECT_TIMEOUT)
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_while_idle(true)
                .tcp_nodelay(true))
        };
        if let Some(tls) = self.config.tls.as_ref().filter(|t| t.accept_any) {
            // Our own connector does the TLS (and spreads connections over the addresses);
            // the channel itself speaks HTTP/2 over what it hands back.
            let first = endpoints
                .uris(false)
                .into_iter()
                .next()
                .ok_or_else(|| Error::Config(format!("endpoint {endpoints} has no address")))?;
            let connector = AcceptAnyConnector::new(
                self.accept_any_config()?,
                endpoints.addresses.clone(),
                tls.domain_name.clone(),
            );
            return Ok(configure(first)?.connect_with_connector_lazy(connector));
        }
        let mut list = Vec::with_capacity(endpoints.addresses.len());
        for uri in endpoints.uris(self.config.tls.is_some()) {
            let mut e = configure(uri)?;
            if let Some(tls) = &self.config.tls {
                e = e.tls_config(tls.to_tonic()).map_err(connect_error)?;
            }
            list.push(e);
        }
        match list.len() {
            1 => Ok(list.remove(0).connect_lazy()),
            _ => Ok(Channel::balance_list(list.into_iter())),
        }
    }

    /// The rustls configuration of the accept-any mode, made once per client.
    fn accept_any_config(&self) -> Result<Arc<rustls::ClientConfig>, Error> {
        if let Some(c) = self.accept_any.get() {
            return Ok(c.clone());
        }
        let config = accept_any_client_config()?;
        Ok(self.accept_any.get_or_init(|| config).clone())
    }

    /// A request carrying the signed headers, with the server told the deadline.
    pub(crate) fn request<T>(&self, message: T, timeout: Option<Duration>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = self.signer.headers(SystemTime::now());
        if let Some(t) = timeout {
            request.set_timeout(t);
        }
        request
    }

    /// Runs one unary RPC: signs it, bounds it by `timeout`, and traces it as `rpc` with the
    /// method and endpoint. gRPC failures become [`Error::Rpc`]; the in-band status is the
    /// caller's to check.
    pub(crate) async fn unary<Req, Resp, F, Fut>(
        &self,
        endpoints: &Endpoints,
        method: &'static str,
        message: Req,
        timeout: Duration,
        call: F,
    ) -> Result<Resp, Error>
    where
        F: FnOnce(Stub, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let stub = self.stub(endpoints)?;
        let request = self.request(message, Some(timeout));
        let span = tracing::debug_span!("rpc", method, endpoint = %endpoints);
        async move {
            match tokio::time::timeout(timeout, call(stub, request)).await {
                Ok(Ok(response)) => Ok(response.into_inner()),
                Ok(Err(status)) => {
                    tracing::debug!(code = ?status.code(), message = status.message(), "rpc failed");
                    Err(rpc_error(status, endpoints))
                }
                Err(_) => {
                    tracing::debug!(?timeout, "rpc timed out");
                    Err(Error::Timeout {
                        operation: method,
                        timeout,
                        endpoint: endpoints.to_string(),
                    })
                }
            }
        }
        .instrument(span)
        .await
    }
}

/// A gRPC-level failure (below the RocketMQ status) as an error.
pub(crate) fn rpc_error(status: tonic::Status, endpoints: &Endpoints) -> Error {
    Error::Rpc {
        status,
        endpoint: endpoints.to_string(),
    }
}
