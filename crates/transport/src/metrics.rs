//! The metrics port: Prometheus text (format 0.0.4) of a `prometheus-client` registry at
//! `GET /metrics`, over plain HTTP/1.1, on a listener of its own. Other paths go to the port's
//! [`HttpPages`] when it has some (the broker's web console), else answer 404; any method but
//! GET or HEAD on `/metrics` answers 405. Encoding runs on a blocking thread, since a registry's collectors may
//! read files (the process collector reads `/proc`) or walk large tables.
//!
//! Lifecycle as the gRPC ports: one task per connection in a `JoinSet`; on shutdown the
//! listener is dropped and connections still open (a scrape takes milliseconds) are aborted.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The path Prometheus scrapes.
pub const METRICS_PATH: &str = "/metrics";
/// Longest a client may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrape connections served at once; more wait in the listen backlog.
const MAX_SCRAPE_CONNECTIONS: usize = 64;

/// An HTTP answer of the metrics port.
pub type HttpResponse = http::Response<Full<Bytes>>;

/// What a port serves besides `/metrics` (every other path, every method).
pub trait HttpPages: Send + Sync + 'static {
    /// Answers one request; the body is the handler's to read (and to bound).
    fn answer(
        &self,
        request: http::Request<Incoming>,
    ) -> Pin<Box<dyn Future<Output = HttpResponse> + Send + 'static>>;
}

/// What one port serves: metrics, pages, or both.
#[derive(Clone)]
struct Routes {
    registry: Option<Arc<Registry>>,
    pages: Option<Arc<dyn HttpPages>>,
}

/// Serves `registry` on `listener` until `shutdown` resolves.
pub async fn serve_metrics(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()>,
) {
    serve_http(listener, Some(registry), None, shutdown).await;
}

/// Serves `registry` at `/metrics` (when given) and `pages` on every other path (when given)
/// on `listener` until `shutdown` resolves.
pub async fn serve_http(
    listener: TcpListener,
    registry: Option<Arc<Registry>>,
    pages: Option<Arc<dyn HttpPages>>,
    shutdown: impl Future<Output = ()>,
) {
    let routes = Routes { registry, pages };
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept(), if connections.len() < MAX_SCRAPE_CONNECTIONS => {
                match accepted {
                    Ok((stream, _peer)) => {
                        connections.spawn(serve_connection(stream, routes.clone()));
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "metrics accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(stream: tokio::net::TcpStream, routes: Routes) {
    let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let routes = routes.clone();
        async move {
            let answer = match (&routes.registry, &routes.pages) {
                (Some(registry), _) if req.uri().path() == METRICS_PATH => {
                    answer(&req, Arc::clone(registry)).await.map(Full::from)
                }
                (_, Some(pages)) => pages.answer(req).await,
                (Some(registry), None) => answer(&req, Arc::clone(registry)).await.map(Full::from),
                (None, None) => plain(http::StatusCode::NOT_FOUND, "not found\n").map(Full::from),
            };
            Ok::<_, Infallible>(answer)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "metrics connection ended with an error");
    }
}

async fn answer<B>(req: &http::Request<B>, registry: Arc<Registry>) -> http::Response<String> {
    if req.uri().path() != METRICS_PATH {
        return plain(
            http::StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n",
        );
    }
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return plain(http::StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    let encoded = tokio::task::spawn_blocking(move || encode(&registry)).await;
    match encoded {
        Ok(Ok(text)) => http::Response::builder()
            .header(http::header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)
            .body(text)
            .unwrap_or_default(),
        _ => plain(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed\n",
        ),
    }
}

/// The registry in Prometheus text format.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::with_capacity(16 << 10);
    prometheus_text::encode(&mut text, registry)?;
    Ok(text)
}

fn plain(status: http::StatusCode, text: &str) -> http::Response<String> {
    let mut r = http::Response::new(text.to_owned());
    *r.status_mut() = status;
    r
}

/// Connections open on a port (shared with whoever reports it; cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct ConnectionCount(Arc<AtomicUsize>);

impl ConnectionCount {
    /// Connections open now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one connection until the guard drops.
    pub(crate) fn open(&self) -> OpenConnection {
        self.0.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone())
    }
}

/// One connection counted in a [`ConnectionCount`].
#[derive(Debug)]
pub(crate) struct OpenConnection(ConnectionCount);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_count_follows_guards() {
        let c = ConnectionCount::default();
        let a = c.open();
        let b = c.open();
        assert_eq!(c.get(), 2);
        drop(a);
        assert_eq!(c.get(), 1);
        drop(b);
        assert_eq!(c.get(), 0);
    }

    #[tokio::test]
    async fn only_get_metrics_is_served() {
        let mut registry = Registry::default();
        let c: prometheus_client::metrics::counter::Counter = Default::default();
        c.inc();
        registry.register("probe", "A probe", c);
        let registry = Arc::new(registry);
        let get = |path: &str| {
            http::Request::builder()
                .uri(path)
                .body(())
                .unwrap_or_default()
        };
        let ok = answer(&get("/metrics"), Arc::clone(&registry)).await;
        assert_eq!(ok.status(), http::StatusCode::OK);
        assert!(ok.body().contains("probe_total 1\n"), "{}", ok.body());
        let missing = answer(&get("/other"), Arc::clone(&registry)).await;
        assert_eq!(missing.status(), http::StatusCode::NOT_FOUND);
        let post = http::Request::builder()
            .method(http::Method::POST)
            .uri("/metrics")
            .body(())
            .unwrap_or_default();
        let refused = answer(&post, registry).await;
        assert_eq!(refused.status(), http::StatusCode::METHOD_NOT_ALLOWED);
    }
}
