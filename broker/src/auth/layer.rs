//! The gate in front of the client port's services.
//!
//! With authentication on, every call is authenticated from its headers before any service
//! sees it; health checks stay open for probes. RocketMQ API calls are then authorized from
//! the resources their request names: the request body is read once and only the topic and
//! group fields are decoded here (the service decodes the whole request as usual). A refused
//! RocketMQ call is answered the way the Apache proxy answers it — gRPC OK with `UNAUTHORIZED`
//! or `FORBIDDEN` in the response's status — so the official clients raise their typed
//! exceptions. Admin API calls need a super user and are refused with gRPC statuses.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use http_body::Frame;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited, StreamBody};
use prost::Message as _;
use rocketlog_proto::v2;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;

use super::{Action, Auth, Denied, Need, User};

const MESSAGING_PREFIX: &str = "/apache.rocketmq.v2.MessagingService/";
const ADMIN_PREFIX: &str = "/rocketlog.admin.v1.Admin/";
const OPEN_PREFIXES: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Wraps the client port's routes with [`Auth`].
#[derive(Debug, Clone)]
pub struct Gate<S> {
    inner: S,
    auth: Arc<Auth>,
    max_request: usize,
}

impl<S> Gate<S> {
    /// `max_request`: largest request body read for authorization (the service's own limit).
    pub fn new(inner: S, auth: Arc<Auth>, max_request: usize) -> Self {
        Gate {
            inner,
            auth,
            max_request,
        }
    }
}

impl<S: NamedService> NamedService for Gate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Gate<S>
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
        // The clone is the one made ready next time; this call uses the ready one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if !self.auth.enabled() {
            return Box::pin(inner.call(req));
        }
        let path = req.uri().path().to_owned();
        if OPEN_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return Box::pin(inner.call(req));
        }
        let user = match self.auth.authenticate(req.headers(), SystemTime::now()) {
            Ok(user) => user,
            Err(denied) => {
                tracing::debug!(%path, reason = denied.message(), "request refused");
                return Box::pin(std::future::ready(Ok(refusal(&path, &denied))));
            }
        };
        if let Some(method) = path.strip_prefix(ADMIN_PREFIX) {
            if !user.super_user {
                let denied = Denied::Forbidden(format!(
                    "user {:?} may not call the admin API ({method}): it needs a super user",
                    user.access_key
                ));
                return Box::pin(std::future::ready(Ok(refusal(&path, &denied))));
            }
            return Box::pin(inner.call(req));
        }
        let Some(method) = path.strip_prefix(MESSAGING_PREFIX) else {
            return Box::pin(inner.call(req));
        };
        let Some(needs_of) = needs_of(method).filter(|_| !user.super_user) else {
            return Box::pin(inner.call(req));
        };
        let method = method.to_owned();
        let auth = Arc::clone(&self.auth);
        let max = self.max_request;
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = match Limited::new(body, max.saturating_add(5)).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) => {
                    let denied = if e.downcast_ref::<LengthLimitError>().is_some() {
                        Denied::TooLarge(format!(
                            "the request is larger than the {max} bytes the broker accepts"
                        ))
                    } else {
                        Denied::BadRequest(format!(
                            "the request could not be read for authorization: {e}"
                        ))
                    };
                    return Ok(refusal(&path, &denied));
                }
            };
            if let Err(denied) = authorize(&auth, &user, &method, needs_of, &bytes) {
                tracing::debug!(%path, reason = denied.message(), "request refused");
                return Ok(refusal(&path, &denied));
            }
            inner
                .call(http::Request::from_parts(
                    parts,
                    Body::new(Full::new(bytes)),
                ))
                .await
        })
    }
}

/// What a call needs, from its decoded request message.
type NeedsOf = fn(&[u8]) -> Result<Vec<Need>, prost::DecodeError>;

fn authorize(
    auth: &Auth,
    user: &User,
    method: &str,
    needs_of: NeedsOf,
    body: &Bytes,
) -> Result<(), Denied> {
    let message = grpc_message(body)?;
    let needs = needs_of(message).map_err(|e| {
        Denied::BadRequest(format!(
            "the request could not be decoded for authorization: {e}"
        ))
    })?;
    match auth.authorize(user, &needs) {
        // A route is for producers and consumers alike: Sub on the topic is enough too.
        Err(_) if method == "QueryRoute" => {
            let sub: Vec<Need> = needs
                .into_iter()
                .map(|n| Need {
                    action: Action::Sub,
                    ..n
                })
                .collect();
            auth.authorize(user, &sub).map_err(|_| {
                Denied::Forbidden(format!(
                    "user {:?} may neither Pub nor Sub topic {:?}",
                    user.access_key,
                    sub.first().map(|n| n.name.as_str()).unwrap_or_default()
                ))
            })
        }
        r => r,
    }
}

/// The one message of a unary request body (5-byte gRPC frame header, then the message).
fn grpc_message(body: &Bytes) -> Result<&[u8], Denied> {
    let unreadable = |why: &str| Denied::BadRequest(format!("the request {why}"));
    let mut header = body
        .get(..5)
        .ok_or_else(|| unreadable("is not a gRPC message"))?;
    if header.get_u8() != 0 {
        return Err(unreadable(
            "is compressed; send requests uncompressed when authentication is on",
        ));
    }
    let len = header.get_u32() as usize;
    body.get(5..5 + len)
        .ok_or_else(|| unreadable("is shorter than its gRPC frame says"))
}

/// The function that reads what `method` needs; `None`: authentication alone suffices
/// (Telemetry, NotifyClientTermination, calls the broker does not serve).
fn needs_of(method: &str) -> Option<NeedsOf> {
    Some(match method {
        "QueryRoute" => |m| {
            // Producers and consumers both look routes up: `authorize` accepts Sub too.
            let r = TopicAt1::decode(m)?;
            Ok(named(vec![Need::topic(Action::Pub, name(&r.topic))]))
        },
        "Heartbeat" => |m| {
            let r = GroupAt1::decode(m)?;
            Ok(named(vec![Need::group(name(&r.group))]))
        },
        "SendMessage" => |m| {
            let r = SendRequest::decode(m)?;
            let mut needs: Vec<Need> = Vec::with_capacity(1);
            for topic in r.messages.iter().map(|m| name(&m.topic)) {
                if !needs.iter().any(|n| n.name == topic) {
                    needs.push(Need::topic(Action::Pub, topic));
                }
            }
            Ok(named(needs))
        },
        "EndTransaction" | "RecallMessage" => |m| {
            let r = TopicAt1::decode(m)?;
            Ok(named(vec![Need::topic(Action::Pub, name(&r.topic))]))
        },
        "QueryAssignment" => |m| {
            let r = TopicGroup::decode(m)?;
            Ok(named(vec![
                Need::topic(Action::Sub, name(&r.topic)),
                Need::group(name(&r.group)),
            ]))
        },
        "ReceiveMessage" | "PullMessage" | "UpdateOffset" | "GetOffset" => |m| {
            let r = GroupQueue::decode(m)?;
            let topic = r.message_queue.as_ref().and_then(|q| q.topic.as_ref());
            Ok(named(vec![
                Need::topic(
                    Action::Sub,
                    topic.map(|t| t.name.clone()).unwrap_or_default(),
                ),
                Need::group(name(&r.group)),
            ]))
        },
        "QueryOffset" => |m| {
            let r = QueueAt1::decode(m)?;
            let topic = r.message_queue.as_ref().and_then(|q| q.topic.as_ref());
            Ok(named(vec![Need::topic(
                Action::Sub,
                topic.map(|t| t.name.clone()).unwrap_or_default(),
            )]))
        },
        "AckMessage" | "ChangeInvisibleDuration" | "ForwardMessageToDeadLetterQueue" => |m| {
            let r = GroupTopic::decode(m)?;
            Ok(named(vec![
                Need::topic(Action::Sub, name(&r.topic)),
                Need::group(name(&r.group)),
            ]))
        },
        _ => return None,
    })
}

/// Drops needs without a name: the service answers those requests with its own error.
fn named(mut needs: Vec<Need>) -> Vec<Need> {
    needs.retain(|n| !n.name.is_empty());
    needs
}

fn name(r: &Option<Res>) -> String {
    r.as_ref().map(|r| r.name.clone()).unwrap_or_default()
}

// The fields of the `apache.rocketmq.v2` requests that name resources; decoding skips the
// others (bodies, properties) without reading them into memory.

#[derive(Clone, PartialEq, prost::Message)]
struct Res {
    #[prost(string, tag = "2")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Queue {
    #[prost(message, optional, tag = "1")]
    topic: Option<Res>,
}

/// QueryRoute, EndTransaction, RecallMessage; each of SendMessage's messages.
#[derive(Clone, PartialEq, prost::Message)]
struct TopicAt1 {
    #[prost(message, optional, tag = "1")]
    topic: Option<Res>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SendRequest {
    #[prost(message, repeated, tag = "1")]
    messages: Vec<TopicAt1>,
}

/// Heartbeat.
#[derive(Clone, PartialEq, prost::Message)]
struct GroupAt1 {
    #[prost(message, optional, tag = "1")]
    group: Option<Res>,
}

/// QueryAssignment.
#[derive(Clone, PartialEq, prost::Message)]
struct TopicGroup {
    #[prost(message, optional, tag = "1")]
    topic: Option<Res>,
    #[prost(message, optional, tag = "2")]
    group: Option<Res>,
}

/// AckMessage, ChangeInvisibleDuration, ForwardMessageToDeadLetterQueue.
#[derive(Clone, PartialEq, prost::Message)]
struct GroupTopic {
    #[prost(message, optional, tag = "1")]
    group: Option<Res>,
    #[prost(message, optional, tag = "2")]
    topic: Option<Res>,
}

/// ReceiveMessage, PullMessage, UpdateOffset, GetOffset.
#[derive(Clone, PartialEq, prost::Message)]
struct GroupQueue {
    #[prost(message, optional, tag = "1")]
    group: Option<Res>,
    #[prost(message, optional, tag = "2")]
    message_queue: Option<Queue>,
}

/// QueryOffset.
#[derive(Clone, PartialEq, prost::Message)]
struct QueueAt1 {
    #[prost(message, optional, tag = "1")]
    message_queue: Option<Queue>,
}

/// The answer to a refused call on `path`.
fn refusal(path: &str, denied: &Denied) -> http::Response<Body> {
    if path.starts_with(MESSAGING_PREFIX) {
        in_band(denied)
    } else {
        match denied {
            Denied::Unauthenticated(m) => tonic::Status::unauthenticated(m.clone()),
            Denied::Forbidden(m) => tonic::Status::permission_denied(m.clone()),
            Denied::BadRequest(m) => tonic::Status::invalid_argument(m.clone()),
            Denied::TooLarge(m) => tonic::Status::resource_exhausted(m.clone()),
        }
        .into_http()
    }
}

/// gRPC OK with one response message holding only the status. Every `apache.rocketmq.v2`
/// response (streamed ones and TelemetryCommand included) carries its `Status` as field 1,
/// so one encoding fits every method.
fn in_band(denied: &Denied) -> http::Response<Body> {
    let code = match denied {
        Denied::Unauthenticated(_) => v2::Code::Unauthorized,
        Denied::Forbidden(_) => v2::Code::Forbidden,
        Denied::BadRequest(_) => v2::Code::BadRequest,
        Denied::TooLarge(_) => v2::Code::PayloadTooLarge,
    };
    let message = v2::HeartbeatResponse {
        status: Some(v2::Status {
            code: code as i32,
            message: denied.message().to_owned(),
        }),
    };
    let len = message.encoded_len();
    let mut frame = BytesMut::with_capacity(5 + len);
    frame.put_u8(0);
    frame.put_u32(len as u32);
    // Encoding into a buffer with room for the whole message cannot fail.
    let _ = message.encode(&mut frame);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = futures::stream::iter([
        Ok::<_, Infallible>(Frame::data(frame.freeze())),
        Ok(Frame::trailers(trailers)),
    ]);
    let mut response = http::Response::new(Body::new(StreamBody::new(frames)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(message: &impl prost::Message) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(0);
        b.put_u32(message.encoded_len() as u32);
        message.encode(&mut b).unwrap();
        b.freeze()
    }

    fn resource(name: &str) -> Option<v2::Resource> {
        Some(v2::Resource {
            resource_namespace: String::new(),
            name: name.into(),
        })
    }

    fn needs(method: &str, message: &impl prost::Message) -> Vec<Need> {
        let body = frame(message);
        needs_of(method).unwrap()(grpc_message(&body).unwrap()).unwrap()
    }

    #[test]
    fn the_resources_of_each_request_are_read_from_the_real_messages() {
        let send = v2::SendMessageRequest {
            messages: vec![
                v2::Message {
                    topic: resource("a"),
                    body: vec![7; 1000].into(),
                    ..Default::default()
                },
                v2::Message {
                    topic: resource("a"),
                    ..Default::default()
                },
                v2::Message {
                    topic: resource("b"),
                    ..Default::default()
                },
            ],
        };
        assert_eq!(
            needs("SendMessage", &send),
            vec![Need::topic(Action::Pub, "a"), Need::topic(Action::Pub, "b")]
        );
        let receive = v2::ReceiveMessageRequest {
            group: resource("g"),
            message_queue: Some(v2::MessageQueue {
                topic: resource("t"),
                id: 3,
                ..Default::default()
            }),
            batch_size: 32,
            ..Default::default()
        };
        assert_eq!(
            needs("ReceiveMessage", &receive),
            vec![Need::topic(Action::Sub, "t"), Need::group("g")]
        );
        let ack = v2::AckMessageRequest {
            group: resource("g"),
            topic: resource("t"),
            entries: vec![],
        };
        assert_eq!(
            needs("AckMessage", &ack),
            vec![Need::topic(Action::Sub, "t"), Need::group("g")]
        );
        let assignment = v2::QueryAssignmentRequest {
            topic: resource("t"),
            group: resource("g"),
            endpoints: None,
        };
        assert_eq!(
            needs("QueryAssignment", &assignment),
            vec![Need::topic(Action::Sub, "t"), Need::group("g")]
        );
        let offset = v2::QueryOffsetRequest {
            message_queue: Some(v2::MessageQueue {
                topic: resource("t"),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            needs("QueryOffset", &offset),
            vec![Need::topic(Action::Sub, "t")]
        );
        let end = v2::EndTransactionRequest {
            topic: resource("t"),
            ..Default::default()
        };
        assert_eq!(
            needs("EndTransaction", &end),
            vec![Need::topic(Action::Pub, "t")]
        );
        let producer_heartbeat = v2::HeartbeatRequest {
            group: None,
            client_type: v2::ClientType::Producer as i32,
        };
        assert!(needs("Heartbeat", &producer_heartbeat).is_empty());
        assert!(needs_of("Telemetry").is_none());
    }

    #[test]
    fn compressed_or_cut_frames_are_refused() {
        let mut compressed = BytesMut::from(&frame(&v2::GetOffsetRequest::default())[..]);
        compressed[0] = 1;
        assert!(matches!(
            grpc_message(&compressed.freeze()),
            Err(Denied::BadRequest(_))
        ));
        let cut = frame(&v2::AckMessageRequest {
            group: resource("group"),
            ..Default::default()
        });
        assert!(grpc_message(&cut.slice(..cut.len() - 1)).is_err());
        assert!(grpc_message(&Bytes::from_static(b"\0\0")).is_err());
        // Answered in band as a bad request, not as an authentication failure.
        let refused = refusal(
            "/apache.rocketmq.v2.MessagingService/AckMessage",
            &Denied::TooLarge("big".into()),
        );
        assert_eq!(refused.status(), http::StatusCode::OK);
    }
}
