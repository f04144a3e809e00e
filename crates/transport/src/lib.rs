//! The server side of rocketlog's gRPC ports: one TCP listener serving plaintext HTTP/2 (h2c,
//! prior knowledge) and TLS (ALPN `h2`), chosen per connection by its first byte (0x16 = a TLS
//! handshake record), as the Apache proxy's permissive mode does.
//!
//! A connection must finish its opening — TLS handshake, if any, and the whole 24-byte HTTP/2
//! client preface — within [`ConnectionSettings::handshake_timeout_ms`]; past that it is
//! closed, so a peer that sends half a preface and stops cannot pin a file descriptor. Once
//! open, an idle connection is probed with HTTP/2 PINGs and closed when a ping goes
//! unanswered. At most [`ConnectionSettings::max_connections`] connections (clamped to what the
//! process's file-descriptor limit allows) are served at once; one past the limit is answered
//! with an HTTP/2 GOAWAY naming the reason and closed, and the warning about it is logged at
//! most once per [`LOG_EVERY`].
//!
//! Lifecycle (modelled on mini-redis): the accept loop spawns one task per connection into a
//! `JoinSet`; on shutdown the loop stops accepting and drops the listener, every connection is
//! told to shut down gracefully (GOAWAY: in-flight requests finish, no new streams), and
//! connections still open after the grace period are aborted.
//!
//! Layering: depends on no other rocketlog crate. It serves whatever tonic routes it is given
//! and must not know the services behind them.

mod limits;
pub mod metrics;
pub mod process;
mod rewind;
pub mod signature;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tonic::service::Routes;
use tonic::transport::server::TcpConnectInfo;
use tower::ServiceExt;

pub use limits::{connection_budget, raise_fd_limit, FdLimit};
use limits::{Throttle, REFUSAL};
pub use metrics::{serve_http, serve_metrics, ConnectionCount, HttpPages, HttpResponse};
pub use process::ProcessCollector;
use rewind::{Rewind, PREFACE};

/// First byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Concurrent streams per connection unless configured (hyper's own default is 200).
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 10_000;
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Repeated warnings (failed accepts, refused connections) are logged at most this often,
/// with the number suppressed in between.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Refused connections being answered at once; past this a refused connection is just closed.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// How long a refused connection may take to read the GOAWAY before it is closed.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Limits and timers of the connections on one port (`[broker.connections]`,
/// `[nameserver.connections]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionSettings {
    /// Time from accept until the TLS handshake (if any) and the HTTP/2 client preface are
    /// complete, ms (default 5 000). Slower connections are closed.
    pub handshake_timeout_ms: u64,
    /// An open connection that sends nothing for this long is sent an HTTP/2 PING, ms
    /// (default 30 000).
    pub keepalive_interval_ms: u64,
    /// A PING not answered within this is taken as a dead peer and the connection closed, ms
    /// (default 10 000).
    pub keepalive_timeout_ms: u64,
    /// Connections served at once (default 10 000). Lowered at start, with a warning, to what
    /// the file-descriptor limit leaves after the store's own files (see [`connection_budget`]).
    pub max_connections: usize,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            handshake_timeout_ms: 5_000,
            keepalive_interval_ms: 30_000,
            keepalive_timeout_ms: 10_000,
            max_connections: 10_000,
        }
    }
}

impl ConnectionSettings {
    /// The first field that is out of range (named as in the `connections` section) and why.
    pub fn invalid_field(&self) -> Option<(&'static str, &'static str)> {
        let positive = [
            (
                "connections.handshake_timeout_ms",
                self.handshake_timeout_ms,
            ),
            (
                "connections.keepalive_interval_ms",
                self.keepalive_interval_ms,
            ),
            (
                "connections.keepalive_timeout_ms",
                self.keepalive_timeout_ms,
            ),
        ];
        if let Some((field, _)) = positive.into_iter().find(|(_, v)| *v == 0) {
            return Some((field, "must be positive"));
        }
        if self.max_connections == 0 {
            return Some(("connections.max_connections", "must be positive"));
        }
        None
    }
}

/// Which protocol a connection speaks; request handlers read it from the request extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionKind {
    Plaintext,
    Tls,
}

/// What the server knows about one port.
#[derive(Clone)]
pub struct Transport {
    tls: Option<TlsAcceptor>,
    grace: Duration,
    max_concurrent_streams: u32,
    settings: ConnectionSettings,
    max_connections: usize,
    open: ConnectionCount,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("tls", &self.tls.is_some())
            .field("grace", &self.grace)
            .field("max_concurrent_streams", &self.max_concurrent_streams)
            .field("settings", &self.settings)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl Transport {
    /// `tls: None` serves plaintext only (TLS handshakes are refused by closing). The
    /// connection limit is `settings.max_connections` or, if lower, what the process's
    /// file-descriptor limit allows (logged as a warning).
    pub fn new(
        tls: Option<Arc<rustls::ServerConfig>>,
        grace: Duration,
        settings: ConnectionSettings,
    ) -> Self {
        let max_connections = match connection_budget() {
            Some((budget, _)) => budget.min(settings.max_connections),
            None => settings.max_connections,
        };
        Transport {
            tls: tls.map(TlsAcceptor::from),
            grace,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            settings,
            max_connections,
            open: ConnectionCount::default(),
        }
    }

    /// Counts this port's open connections in `count` (for monitoring).
    pub fn count_connections(mut self, count: ConnectionCount) -> Self {
        self.open = count;
        self
    }

    /// Streams one connection may have open at once.
    pub fn max_concurrent_streams(mut self, max: u32) -> Self {
        self.max_concurrent_streams = max;
        self
    }

    /// Connections served at once, after the file-descriptor clamp.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Serves `routes` on `listener` until `shutdown` resolves, then drains connections as
    /// described in the module doc and returns.
    pub async fn serve(
        &self,
        listener: TcpListener,
        routes: Routes,
        shutdown: impl Future<Output = ()>,
    ) {
        if self.max_connections < self.settings.max_connections {
            tracing::warn!(
                listen = ?listener.local_addr().ok(),
                configured = self.settings.max_connections,
                serving = self.max_connections,
                fd_limit = ?connection_budget().map(|(_, soft)| soft),
                "the file-descriptor limit allows fewer connections than max_connections; \
                 raise it (ulimit -n, systemd LimitNOFILE) to serve more"
            );
        }
        let routes = routes.prepare();
        let (stop_tx, stop_rx) = watch::channel(false);
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
        let mut accept_errors = Throttle::new(LOG_EVERY);
        let mut refused = Throttle::new(LOG_EVERY);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => match Arc::clone(&slots).try_acquire_owned() {
                        Ok(slot) => {
                            let conn = Connection {
                                tls: self.tls.clone(),
                                routes: routes.clone(),
                                stop: stop_rx.clone(),
                                max_concurrent_streams: self.max_concurrent_streams,
                                settings: self.settings.clone(),
                                _slot: slot,
                                _open: self.open.open(),
                            };
                            connections.spawn(conn.run(stream, peer));
                        }
                        Err(_) => {
                            if let Some(suppressed) = refused.hit() {
                                tracing::warn!(
                                    limit = self.max_connections,
                                    %peer,
                                    refused_since_last_warning = suppressed,
                                    "connection limit reached; refusing new connections"
                                );
                            }
                            refuse(stream, &refusals);
                        }
                    },
                    Err(e) => {
                        if let Some(suppressed) = accept_errors.hit() {
                            tracing::warn!(
                                error = %e,
                                failed_since_last_warning = suppressed,
                                "accept failed"
                            );
                        }
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(self.grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                open = connections.len(),
                "connections still open after the shutdown grace period; closing them"
            );
            connections.shutdown().await;
        }
    }
}

/// Answers a connection past the limit with the server's HTTP/2 preface and a GOAWAY
/// (ENHANCE_YOUR_CALM, "connection limit reached"), then closes it once the peer has read it
/// (or after [`REFUSAL_LINGER`]), so clients see a named reason rather than a reset.
fn refuse(stream: TcpStream, refusals: &Arc<Semaphore>) {
    let Ok(permit) = Arc::clone(refusals).try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        if stream.try_write(REFUSAL).is_err() {
            return;
        }
        // Reading until the peer closes (or the linger ends) avoids a reset that could
        // discard the GOAWAY before the client reads it.
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    });
}

/// One accepted TCP connection; `_slot` is its place under the connection limit.
struct Connection {
    tls: Option<TlsAcceptor>,
    routes: Routes,
    stop: watch::Receiver<bool>,
    max_concurrent_streams: u32,
    settings: ConnectionSettings,
    _slot: OwnedSemaphorePermit,
    /// Counted in the port's open connections while it lives.
    _open: metrics::OpenConnection,
}

impl Connection {
    async fn run(self, mut stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let deadline = Instant::now() + Duration::from_millis(self.settings.handshake_timeout_ms);
        let mut first = [0u8; 1];
        match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
            Ok(Ok(1)) => {}
            // Closed before a byte, an error, or silence: nothing to serve.
            _ => return,
        }
        let info = TcpConnectInfo {
            local_addr: stream.local_addr().ok(),
            remote_addr: Some(peer),
        };
        if first[0] != TLS_HANDSHAKE_RECORD {
            if read_preface(&mut stream, deadline, peer).await {
                self.serve(Rewind::new(stream), info, ConnectionKind::Plaintext)
                    .await;
            }
            return;
        }
        let Some(acceptor) = self.tls.clone() else {
            tracing::debug!(%peer, "TLS handshake on a plaintext-only port; closing");
            return;
        };
        let mut tls = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        if read_preface(&mut tls, deadline, peer).await {
            self.serve(Rewind::new(tls), info, ConnectionKind::Tls)
                .await;
        }
    }

    async fn serve<IO>(mut self, io: IO, info: TcpConnectInfo, kind: ConnectionKind)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let routes = self.routes.clone();
        let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(info.clone());
            req.extensions_mut().insert(kind);
            let routes = routes.clone();
            async move { routes.oneshot(req).await }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new()).http2_only();
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.max_concurrent_streams)
            .keep_alive_interval(Some(Duration::from_millis(
                self.settings.keepalive_interval_ms,
            )))
            .keep_alive_timeout(Duration::from_millis(self.settings.keepalive_timeout_ms));
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        tokio::select! {
            res = conn.as_mut() => {
                log_end(res);
                return;
            }
            _ = self.stop.wait_for(|stop| *stop) => {}
        }
        conn.as_mut().graceful_shutdown();
        log_end(conn.await);
    }
}

/// Reads the 24-byte HTTP/2 client preface by `deadline`; false (logged at debug) when the
/// peer is too slow, closes, or sends something else.
async fn read_preface<IO>(io: &mut IO, deadline: Instant, peer: SocketAddr) -> bool
where
    IO: tokio::io::AsyncRead + Unpin,
{
    let mut got = [0u8; PREFACE.len()];
    match tokio::time::timeout_at(deadline, io.read_exact(&mut got)).await {
        Ok(Ok(_)) if got == *PREFACE => true,
        Ok(Ok(_)) => {
            tracing::debug!(%peer, "not an HTTP/2 client preface; closing");
            false
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection closed during the HTTP/2 preface");
            false
        }
        Err(_) => {
            tracing::debug!(%peer, "HTTP/2 preface not complete by the handshake deadline; closing");
            false
        }
    }
}

fn log_end(res: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = res {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

// Keeps the service's error type explicit: the tonic router never fails a request at the
// HTTP level (errors are gRPC statuses).
const _: fn() = || {
    fn infallible<S: tower::Service<http::Request<Incoming>, Error = Infallible>>() {}
    infallible::<Routes>();
};

#[cfg(test)]
mod tests;
