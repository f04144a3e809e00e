//! The client port: one TCP listener serving gRPC over plaintext HTTP/2 (h2c, prior knowledge)
//! and over TLS (ALPN `h2`), chosen per connection by its first byte (0x16 = a TLS handshake
//! record), as the Apache proxy's permissive mode does.
//!
//! Lifecycle (modelled on mini-redis): an accept loop spawns one task per connection into a
//! `JoinSet`; on shutdown the loop stops accepting and drops the listener, every connection is
//! told to shut down gracefully (HTTP/2 GOAWAY: in-flight requests finish, no new streams), and
//! connections still open after the grace period are aborted.

pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tonic::service::Routes;
use tonic::transport::server::TcpConnectInfo;
use tower::ServiceExt;

/// First byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// A connection that sends nothing (or does not finish its TLS handshake) this long is closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent streams per connection unless configured (`broker.max_concurrent_streams`).
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 10_000;
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Which protocol a connection speaks; request handlers read it from the request extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionKind {
    Plaintext,
    Tls,
}

/// What the server knows about one client port.
#[derive(Clone)]
pub struct Transport {
    tls: Option<TlsAcceptor>,
    grace: Duration,
    max_concurrent_streams: u32,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("tls", &self.tls.is_some())
            .field("grace", &self.grace)
            .field("max_concurrent_streams", &self.max_concurrent_streams)
            .finish()
    }
}

impl Transport {
    /// `tls: None` serves plaintext only (TLS handshakes are refused by closing).
    pub fn new(tls: Option<Arc<rustls::ServerConfig>>, grace: Duration) -> Self {
        Transport {
            tls: tls.map(TlsAcceptor::from),
            grace,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
        }
    }

    /// Streams one connection may have open at once (hyper's own default is 200).
    pub fn max_concurrent_streams(mut self, max: u32) -> Self {
        self.max_concurrent_streams = max;
        self
    }

    /// Serves `routes` on `listener` until `shutdown` resolves, then drains connections as
    /// described in the module doc and returns.
    pub async fn serve(
        &self,
        listener: TcpListener,
        routes: Routes,
        shutdown: impl Future<Output = ()>,
    ) {
        let routes = routes.prepare();
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let conn = Connection {
                            tls: self.tls.clone(),
                            routes: routes.clone(),
                            stop: stop_rx.clone(),
                            max_concurrent_streams: self.max_concurrent_streams,
                        };
                        connections.spawn(conn.run(stream, peer));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
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

/// One accepted TCP connection.
struct Connection {
    tls: Option<TlsAcceptor>,
    routes: Routes,
    stop: watch::Receiver<bool>,
    max_concurrent_streams: u32,
}

impl Connection {
    async fn run(self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let mut first = [0u8; 1];
        let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await;
        match peeked {
            Ok(Ok(1)) => {}
            // Closed before a byte, an error, or silence: nothing to serve.
            _ => return,
        }
        let info = TcpConnectInfo {
            local_addr: stream.local_addr().ok(),
            remote_addr: Some(peer),
        };
        if first[0] != TLS_HANDSHAKE_RECORD {
            self.serve(stream, info, ConnectionKind::Plaintext).await;
            return;
        }
        let Some(acceptor) = self.tls.clone() else {
            tracing::debug!(%peer, "TLS handshake on a plaintext-only port; closing");
            return;
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => self.serve(tls, info, ConnectionKind::Tls).await,
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
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
            .keep_alive_interval(Some(Duration::from_secs(60)))
            .keep_alive_timeout(Duration::from_secs(20));
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
