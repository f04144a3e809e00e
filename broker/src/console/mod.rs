//! The web console: pages served by the broker on its HTTP port (`[broker] metrics_listen`,
//! beside `/metrics`), with their assets built into the binary, so there is no other process
//! to deploy and nothing is fetched from elsewhere.
//!
//! - `GET /` is the page, `GET /console/app.js` and `/console/app.css` its assets.
//! - `POST /api/<Method>` calls the admin API (`rocketlog.admin.v1.Admin`, the one
//!   `rocketlog admin` uses) in-process: the body is the request message in the proto3 JSON
//!   mapping, the answer the response message in it; a failure answers a non-2xx status with
//!   `{"code": "<gRPC code>", "message": "..."}`. Calls must carry `X-Rocketlog-Console: 1`,
//!   which a cross-site form cannot send.
//! - With `[broker.auth] enabled`, every API call needs `Authorization: Basic` with the
//!   access key and secret key of a super user (the rule of the admin API); without auth the
//!   console is open to whoever reaches the port, as the admin API is.
//! - `history.rs`: consumer lag per queue over the last hour, sampled into memory.

pub mod history;
pub mod settings;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use rocketlog_proto::admin::v1::admin_server::Admin;
use rocketlog_transport::{HttpPages, HttpResponse};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Code, Request, Response, Status};

use crate::admin::AdminApi;
use crate::auth::Auth;
use crate::broker::Broker;

pub use history::LagHistory;
pub use settings::ConsoleSettings;

/// Largest API request body.
const MAX_REQUEST_BYTES: usize = 1 << 20;
/// The header every API call carries.
const CONSOLE_HEADER: &str = "x-rocketlog-console";

const INDEX_HTML: &str = include_str!("../../console/index.html");
const APP_JS: &str = include_str!("../../console/app.js");
const APP_CSS: &str = include_str!("../../console/app.css");

/// The console of one broker.
#[derive(Debug, Clone)]
pub struct Console {
    admin: AdminApi,
    auth: Arc<Auth>,
}

impl Console {
    pub fn new(broker: Arc<Broker>, auth: Arc<Auth>) -> Self {
        Console {
            admin: AdminApi::new(broker, Arc::clone(&auth)),
            auth,
        }
    }
}

impl HttpPages for Console {
    fn answer(
        &self,
        request: http::Request<hyper::body::Incoming>,
    ) -> Pin<Box<dyn Future<Output = HttpResponse> + Send + 'static>> {
        let console = self.clone();
        Box::pin(async move { console.route(request).await })
    }
}

impl Console {
    async fn route(&self, request: http::Request<hyper::body::Incoming>) -> HttpResponse {
        let path = request.uri().path().to_owned();
        if let Some(method) = path.strip_prefix("/api/") {
            let method = method.to_owned();
            return self.api(&method, request).await;
        }
        if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
            return text(http::StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        }
        match path.as_str() {
            "/" | "/index.html" => asset(INDEX_HTML, "text/html; charset=utf-8"),
            "/console/app.js" => asset(APP_JS, "text/javascript; charset=utf-8"),
            "/console/app.css" => asset(APP_CSS, "text/css; charset=utf-8"),
            _ => text(
                http::StatusCode::NOT_FOUND,
                "not found: the console is at /, metrics at /metrics\n",
            ),
        }
    }

    async fn api(
        &self,
        method: &str,
        request: http::Request<hyper::body::Incoming>,
    ) -> HttpResponse {
        if request.method() != http::Method::POST {
            return failure(
                http::StatusCode::METHOD_NOT_ALLOWED,
                "INVALID_ARGUMENT",
                "API calls are POST requests",
            );
        }
        if request.headers().get(CONSOLE_HEADER).map(|v| v.as_bytes()) != Some(b"1") {
            return failure(
                http::StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                &format!("API calls must carry the header {CONSOLE_HEADER}: 1"),
            );
        }
        if let Some(refused) = self.refusal(request.headers()) {
            return refused;
        }
        let body = match Limited::new(request.into_body(), MAX_REQUEST_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return failure(
                    http::StatusCode::PAYLOAD_TOO_LARGE,
                    "INVALID_ARGUMENT",
                    &format!(
                        "reading the request body failed (at most {MAX_REQUEST_BYTES} bytes): {e}"
                    ),
                )
            }
        };
        let a = &self.admin;
        match method {
            "ClusterOverview" => call(&body, |r| a.cluster_overview(r)).await,
            "BrokerStats" => call(&body, |r| a.broker_stats(r)).await,
            "ListTopics" => call(&body, |r| a.list_topics(r)).await,
            "CreateOrUpdateTopic" => call(&body, |r| a.create_or_update_topic(r)).await,
            "DeleteTopic" => call(&body, |r| a.delete_topic(r)).await,
            "ListConsumerGroups" => call(&body, |r| a.list_consumer_groups(r)).await,
            "DescribeConsumerGroup" => call(&body, |r| a.describe_consumer_group(r)).await,
            "ConsumerLagHistory" => call(&body, |r| a.consumer_lag_history(r)).await,
            "ResetConsumerOffset" => call(&body, |r| a.reset_consumer_offset(r)).await,
            "LookupMessage" => call(&body, |r| a.lookup_message(r)).await,
            other => failure(
                http::StatusCode::NOT_FOUND,
                "UNIMPLEMENTED",
                &format!(
                    "unknown console API method {:?}",
                    other.chars().take(64).collect::<String>()
                ),
            ),
        }
    }

    /// With auth on, the caller must be a super user (HTTP Basic with its keys): the answer
    /// refusing the call when it is not.
    fn refusal(&self, headers: &http::HeaderMap) -> Option<HttpResponse> {
        if !self.auth.enabled() {
            return None;
        }
        let unauthenticated = |m: &str| {
            Some(failure(
                http::StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                m,
            ))
        };
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return unauthenticated(
                "sign in: authentication is on, give the access key and secret key of a super user",
            );
        };
        let Some((access_key, secret_key)) = basic_credentials(value.as_bytes()) else {
            return unauthenticated("the authorization header is not HTTP Basic credentials");
        };
        match self.auth.check_secret(&access_key, &secret_key) {
            Ok(user) if user.super_user => None,
            Ok(user) => Some(failure(
                http::StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                &format!(
                    "user {:?} is not a super user: the console needs one",
                    user.access_key
                ),
            )),
            Err(e) => unauthenticated(&e.to_string()),
        }
    }
}

/// `(access key, secret key)` of an `Authorization: Basic` value.
fn basic_credentials(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (ak, sk) = decoded.split_once(':')?;
    Some((ak.to_owned(), sk.to_owned()))
}

async fn call<Req, Resp, F, Fut>(body: &Bytes, method: F) -> HttpResponse
where
    Req: DeserializeOwned + Default,
    Resp: Serialize,
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    let req = if body.iter().all(u8::is_ascii_whitespace) {
        Req::default()
    } else {
        match serde_json::from_slice::<Req>(body) {
            Ok(r) => r,
            Err(e) => {
                return failure(
                    http::StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    &format!("the request body is not the method's request in JSON: {e}"),
                )
            }
        }
    };
    match method(Request::new(req)).await {
        Ok(resp) => match serde_json::to_vec(resp.get_ref()) {
            Ok(json) => respond(
                http::StatusCode::OK,
                "application/json",
                json.into(),
                "no-store",
            ),
            Err(e) => failure(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                &format!("encoding the answer failed: {e}"),
            ),
        },
        Err(status) => {
            let (http_status, code) = status_of(status.code());
            failure(http_status, code, status.message())
        }
    }
}

/// The HTTP status and gRPC code name of a gRPC status code.
fn status_of(code: Code) -> (http::StatusCode, &'static str) {
    use http::StatusCode as H;
    match code {
        Code::Ok => (H::OK, "OK"),
        Code::Cancelled => (H::INTERNAL_SERVER_ERROR, "CANCELLED"),
        Code::Unknown => (H::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        Code::InvalidArgument => (H::BAD_REQUEST, "INVALID_ARGUMENT"),
        Code::DeadlineExceeded => (H::GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED"),
        Code::NotFound => (H::NOT_FOUND, "NOT_FOUND"),
        Code::AlreadyExists => (H::CONFLICT, "ALREADY_EXISTS"),
        Code::PermissionDenied => (H::FORBIDDEN, "PERMISSION_DENIED"),
        Code::ResourceExhausted => (H::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED"),
        Code::FailedPrecondition => (H::CONFLICT, "FAILED_PRECONDITION"),
        Code::Aborted => (H::CONFLICT, "ABORTED"),
        Code::OutOfRange => (H::BAD_REQUEST, "OUT_OF_RANGE"),
        Code::Unimplemented => (H::NOT_IMPLEMENTED, "UNIMPLEMENTED"),
        Code::Internal => (H::INTERNAL_SERVER_ERROR, "INTERNAL"),
        Code::Unavailable => (H::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        Code::DataLoss => (H::INTERNAL_SERVER_ERROR, "DATA_LOSS"),
        Code::Unauthenticated => (H::UNAUTHORIZED, "UNAUTHENTICATED"),
    }
}

fn respond(status: http::StatusCode, content_type: &str, body: Bytes, cache: &str) -> HttpResponse {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CACHE_CONTROL, cache)
        .header("x-content-type-options", "nosniff")
        .header("x-frame-options", "DENY")
        .header(
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
             frame-ancestors 'none'",
        )
        .body(Full::new(body))
        .unwrap_or_default()
}

fn asset(content: &'static str, content_type: &str) -> HttpResponse {
    respond(
        http::StatusCode::OK,
        content_type,
        Bytes::from_static(content.as_bytes()),
        "no-cache",
    )
}

fn text(status: http::StatusCode, message: &str) -> HttpResponse {
    respond(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(message.to_owned()),
        "no-store",
    )
}

fn failure(status: http::StatusCode, code: &str, message: &str) -> HttpResponse {
    let body = serde_json::json!({ "code": code, "message": message }).to_string();
    respond(status, "application/json", Bytes::from(body), "no-store")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Samples consumer lag into the broker's history until the broker shuts down.
pub async fn sample_lag(broker: Arc<Broker>) {
    let history = Arc::clone(&broker.lag_history);
    let mut tick = tokio::time::interval(history.interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = broker.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (b, h) = (Arc::clone(&broker), Arc::clone(&history));
        // Locks every group's state in turn: off the async workers.
        let sampled = tokio::task::spawn_blocking(move || {
            let lags = b.consumption.describe_all();
            h.record(now_ms(), &lags);
        })
        .await;
        if sampled.is_err() {
            tracing::warn!("sampling consumer lag failed");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_parsed() {
        let v = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("admin:s3cret:with:colons")
        );
        assert_eq!(
            basic_credentials(v.as_bytes()),
            Some(("admin".into(), "s3cret:with:colons".into()))
        );
        assert_eq!(basic_credentials(b"Bearer abc"), None);
        assert_eq!(basic_credentials(b"Basic !!!"), None);
        assert_eq!(basic_credentials(b"Basic"), None);
    }

    #[test]
    fn every_code_maps_to_an_error_status_but_ok() {
        for c in 1..=16 {
            let (status, name) = status_of(Code::from_i32(c));
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{name}"
            );
            assert_ne!(name, "OK");
        }
    }
}
