//! A slave that follows its master passes its clients' calls on to the master, unchanged,
//! over one HTTP/2 connection. Under a controller, routes send each client back to the
//! replica it asked (or the virtual address in front of the group, such as a Kubernetes
//! Service), so a client keeps working through a failover whichever replica it reached:
//! while that replica follows, the master answers through it; while it follows no one (its
//! master is gone), it answers itself with what it holds, read-only; once elected, it is the
//! master.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::Status;
use tower::Service;

use crate::replication::GroupRole;

/// Wraps the client API service: calls go to `inner`, or to the master while this broker
/// is a slave following one.
#[derive(Debug, Clone)]
pub struct Forwarding<S> {
    inner: S,
    role: Arc<GroupRole>,
    client: Client<HttpConnector, Body>,
}

impl<S> Forwarding<S> {
    pub fn new(inner: S, role: Arc<GroupRole>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector);
        Forwarding {
            inner,
            role,
            client,
        }
    }
}

impl<S: NamedService> NamedService for Forwarding<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Forwarding<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        match self.role.forward_target() {
            None => {
                // The clone is the one made ready next time; this call uses the ready one.
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                Box::pin(async move { ready.call(req).await })
            }
            Some(master) => Box::pin(forward(self.client.clone(), master, req)),
        }
    }
}

async fn forward(
    client: Client<HttpConnector, Body>,
    master: String,
    req: http::Request<Body>,
) -> Result<http::Response<Body>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    parts.uri = match format!("http://{master}{path}").parse() {
        Ok(u) => u,
        Err(e) => {
            return Ok(Status::internal(format!(
                "this slave's master address {master:?} is not usable: {e}"
            ))
            .into_http())
        }
    };
    // Connection details of the client's connection mean nothing on the next hop.
    parts.extensions = http::Extensions::new();
    match client.request(http::Request::from_parts(parts, body)).await {
        Ok(resp) => Ok(resp.map(Body::new)),
        Err(e) => Ok(Status::unavailable(format!(
            "this broker is a slave and passes calls to its master at {master}, which did not \
             answer ({e}); retry: a new master is elected when it is gone"
        ))
        .into_http()),
    }
}
