//! Conversions between the SDK's types and the generated `apache.rocketmq.v2` types.
//!
//! Everything read from the wire is converted without panicking: malformed queues are skipped,
//! out-of-range numbers are clamped, and a body that fails its digest marks the message
//! corrupted instead of failing the whole batch.

use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use md5::{Digest as _, Md5};
use rocketlog_proto::v2;
use sha1::Sha1;

use crate::endpoints::{Address, Endpoints, Scheme};
use crate::message::{Message, MessageView};
use crate::retry::{Backoff, RetryPolicy};
use crate::route::{Broker, MessageQueue, MessageType, Permission};

/// Largest body this client inflates from a GZIP-encoded message (a bound against bombs).
const MAX_INFLATED_BODY: u64 = 256 * 1024 * 1024;

pub(crate) fn resource(namespace: &str, name: &str) -> v2::Resource {
    v2::Resource {
        resource_namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

pub(crate) fn duration_to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// A proto duration as a `Duration`; negative values are zero.
pub(crate) fn duration_from_proto(d: &prost_types::Duration) -> Duration {
    if d.seconds < 0 || (d.seconds == 0 && d.nanos <= 0) {
        return Duration::ZERO;
    }
    Duration::new(d.seconds as u64, d.nanos.clamp(0, 999_999_999) as u32)
}

pub(crate) fn time_to_proto(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// A proto timestamp as a `SystemTime`; times before the epoch are the epoch.
pub(crate) fn time_from_proto(t: &prost_types::Timestamp) -> SystemTime {
    if t.seconds < 0 {
        return UNIX_EPOCH;
    }
    UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos.clamp(0, 999_999_999) as u32)
}

pub(crate) fn endpoints_to_proto(e: &Endpoints) -> v2::Endpoints {
    let scheme = match e.scheme {
        Scheme::Ipv4 => v2::AddressScheme::IPv4,
        Scheme::Ipv6 => v2::AddressScheme::IPv6,
        Scheme::DomainName => v2::AddressScheme::DomainName,
    };
    v2::Endpoints {
        scheme: scheme as i32,
        addresses: e
            .addresses
            .iter()
            .map(|a| v2::Address {
                host: a.host.clone(),
                port: i32::from(a.port),
            })
            .collect(),
    }
}

/// Endpoints from a route; `None` when no address is usable.
pub(crate) fn endpoints_from_proto(e: &v2::Endpoints) -> Option<Endpoints> {
    let addresses: Vec<Address> = e
        .addresses
        .iter()
        .filter_map(|a| {
            let port = u16::try_from(a.port).ok().filter(|p| *p != 0)?;
            let host = a.host.trim().trim_start_matches('[').trim_end_matches(']');
            (!host.is_empty()).then(|| Address {
                host: host.to_owned(),
                port,
            })
        })
        .collect();
    let first = addresses.first()?;
    // Trust the addresses over the declared scheme (some servers leave it unset).
    let scheme = match first.host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => Scheme::Ipv4,
        Ok(std::net::IpAddr::V6(_)) => Scheme::Ipv6,
        Err(_) => Scheme::DomainName,
    };
    let addresses = if scheme == Scheme::DomainName {
        addresses.into_iter().take(1).collect()
    } else {
        addresses
    };
    Some(Endpoints { scheme, addresses })
}

fn message_type_from_proto(t: i32) -> Option<MessageType> {
    match v2::MessageType::try_from(t).ok()? {
        v2::MessageType::Normal => Some(MessageType::Normal),
        v2::MessageType::Fifo => Some(MessageType::Fifo),
        v2::MessageType::Delay => Some(MessageType::Delay),
        v2::MessageType::Transaction => Some(MessageType::Transaction),
        _ => None,
    }
}

pub(crate) fn message_type_to_proto(t: MessageType) -> v2::MessageType {
    match t {
        MessageType::Normal => v2::MessageType::Normal,
        MessageType::Fifo => v2::MessageType::Fifo,
        MessageType::Delay => v2::MessageType::Delay,
        MessageType::Transaction => v2::MessageType::Transaction,
    }
}

/// A route queue; `None` when it lacks a broker with a usable address.
pub(crate) fn queue_from_proto(q: &v2::MessageQueue) -> Option<MessageQueue> {
    let broker = q.broker.as_ref()?;
    let endpoints = endpoints_from_proto(broker.endpoints.as_ref()?)?;
    let permission = match v2::Permission::try_from(q.permission).ok()? {
        v2::Permission::Read => Permission::Read,
        v2::Permission::Write => Permission::Write,
        v2::Permission::ReadWrite => Permission::ReadWrite,
        _ => Permission::None,
    };
    Some(MessageQueue {
        topic: q.topic.as_ref().map(|t| t.name.clone()).unwrap_or_default(),
        id: q.id,
        permission,
        broker: Broker {
            name: broker.name.clone(),
            id: broker.id,
            endpoints,
        },
        accept: q
            .accept_message_types
            .iter()
            .filter_map(|t| message_type_from_proto(*t))
            .collect(),
    })
}

pub(crate) fn queue_to_proto(q: &MessageQueue, namespace: &str) -> v2::MessageQueue {
    let permission = match q.permission {
        Permission::None => v2::Permission::None,
        Permission::Read => v2::Permission::Read,
        Permission::Write => v2::Permission::Write,
        Permission::ReadWrite => v2::Permission::ReadWrite,
    };
    v2::MessageQueue {
        topic: Some(resource(namespace, &q.topic)),
        id: q.id,
        permission: permission as i32,
        broker: Some(v2::Broker {
            name: q.broker.name.clone(),
            id: q.broker.id,
            endpoints: Some(endpoints_to_proto(&q.broker.endpoints)),
        }),
        accept_message_types: q
            .accept
            .iter()
            .map(|t| message_type_to_proto(*t) as i32)
            .collect(),
    }
}

pub(crate) fn retry_policy_to_proto(p: &RetryPolicy) -> v2::RetryPolicy {
    let strategy = match p.backoff() {
        Backoff::Exponential {
            initial,
            max,
            multiplier,
        } => v2::retry_policy::Strategy::ExponentialBackoff(v2::ExponentialBackoff {
            initial: Some(duration_to_proto(*initial)),
            max: Some(duration_to_proto(*max)),
            multiplier: *multiplier as f32,
        }),
        Backoff::Customized(delays) => {
            v2::retry_policy::Strategy::CustomizedBackoff(v2::CustomizedBackoff {
                next: delays.iter().map(|d| duration_to_proto(*d)).collect(),
            })
        }
    };
    v2::RetryPolicy {
        max_attempts: i32::try_from(p.max_attempts()).unwrap_or(i32::MAX),
        strategy: Some(strategy),
    }
}

/// The server's policy; `None` when it names no strategy.
pub(crate) fn retry_policy_from_proto(p: &v2::RetryPolicy) -> Option<RetryPolicy> {
    let attempts = u32::try_from(p.max_attempts).unwrap_or(1);
    match p.strategy.as_ref()? {
        v2::retry_policy::Strategy::ExponentialBackoff(e) => Some(RetryPolicy::exponential(
            attempts,
            e.initial
                .as_ref()
                .map(duration_from_proto)
                .unwrap_or_default(),
            e.max.as_ref().map(duration_from_proto).unwrap_or_default(),
            f64::from(e.multiplier),
        )),
        v2::retry_policy::Strategy::CustomizedBackoff(c) => Some(RetryPolicy::customized(
            attempts,
            c.next.iter().map(duration_from_proto).collect(),
        )),
    }
}

/// The wire form of `message` for one send attempt (born time is now).
pub(crate) fn message_to_proto(
    message: &Message,
    namespace: &str,
    message_id: &str,
    kind: MessageType,
    queue_id: i32,
) -> v2::Message {
    let system = v2::SystemProperties {
        tag: message.tag.clone(),
        keys: message.keys.clone(),
        message_id: message_id.to_owned(),
        body_encoding: v2::Encoding::Identity as i32,
        message_type: message_type_to_proto(kind) as i32,
        born_timestamp: Some(time_to_proto(SystemTime::now())),
        born_host: crate::client_id::host_name().to_owned(),
        delivery_timestamp: message.delivery_time.map(time_to_proto),
        queue_id,
        message_group: message.message_group.clone(),
        ..Default::default()
    };
    v2::Message {
        topic: Some(resource(namespace, &message.topic)),
        user_properties: message.properties.clone(),
        system_properties: Some(system),
        body: message.body.clone(),
    }
}

/// A delivered message. `endpoints` is the broker it came from (acks go there).
pub(crate) fn message_view_from_proto(m: v2::Message, endpoints: Option<Endpoints>) -> MessageView {
    let system = m.system_properties.unwrap_or_default();
    let raw: Bytes = m.body;
    let mut corrupted = match &system.body_digest {
        Some(d) => !digest_matches(d, &raw),
        None => false,
    };
    let body = match v2::Encoding::try_from(system.body_encoding) {
        Ok(v2::Encoding::Gzip) => match gunzip(&raw) {
            Some(b) => b,
            None => {
                corrupted = true;
                raw
            }
        },
        _ => raw,
    };
    MessageView {
        message_id: system.message_id,
        topic: m.topic.map(|t| t.name).unwrap_or_default(),
        body,
        tag: system.tag,
        keys: system.keys,
        properties: m.user_properties,
        message_group: system.message_group,
        delivery_time: system.delivery_timestamp.as_ref().map(time_from_proto),
        born_host: system.born_host,
        born_time: system.born_timestamp.as_ref().map(time_from_proto),
        store_time: system.store_timestamp.as_ref().map(time_from_proto),
        delivery_attempt: system
            .delivery_attempt
            .and_then(|a| u32::try_from(a).ok())
            .unwrap_or(1)
            .max(1),
        queue_id: system.queue_id,
        queue_offset: system.queue_offset,
        corrupted,
        receipt_handle: system.receipt_handle.unwrap_or_default(),
        endpoints,
    }
}

fn gunzip(raw: &[u8]) -> Option<Bytes> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .take(MAX_INFLATED_BODY + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() as u64 <= MAX_INFLATED_BODY).then(|| Bytes::from(out))
}

/// Checks a body digest. Clients disagree on how CRC32 is written (padded or not, hex or
/// decimal), so any of those forms matches; MD5 and SHA-1 are hex in either case.
fn digest_matches(d: &v2::Digest, body: &[u8]) -> bool {
    let given = d.checksum.trim();
    match v2::DigestType::try_from(d.r#type) {
        Ok(v2::DigestType::Md5) => given.eq_ignore_ascii_case(&hex::encode(Md5::digest(body))),
        Ok(v2::DigestType::Sha1) => given.eq_ignore_ascii_case(&hex::encode(Sha1::digest(body))),
        Ok(v2::DigestType::Crc32) => {
            let crc = crc32(body);
            given.eq_ignore_ascii_case(&format!("{crc:x}"))
                || given.eq_ignore_ascii_case(&format!("{crc:08x}"))
                || given == crc.to_string()
        }
        // Unknown algorithms cannot be checked; do not call the body corrupted for it.
        _ => true,
    }
}

/// CRC-32 (IEEE 802.3, reflected, as `java.util.zip.CRC32`).
fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn durations_and_times_round_trip() {
        let d = Duration::from_millis(1500);
        assert_eq!(duration_from_proto(&duration_to_proto(d)), d);
        assert_eq!(
            duration_from_proto(&prost_types::Duration {
                seconds: -1,
                nanos: 0
            }),
            Duration::ZERO
        );
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(time_from_proto(&time_to_proto(t)), t);
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn digests() {
        let body = b"hello";
        let md5 = v2::Digest {
            r#type: v2::DigestType::Md5 as i32,
            checksum: "5D41402ABC4B2A76B9719D911017C592".into(),
        };
        assert!(digest_matches(&md5, body));
        assert!(!digest_matches(&md5, b"hellp"));
        let crc = crc32(body);
        for text in [format!("{crc:X}"), format!("{crc:08x}"), crc.to_string()] {
            let d = v2::Digest {
                r#type: v2::DigestType::Crc32 as i32,
                checksum: text,
            };
            assert!(digest_matches(&d, body));
        }
        let sha = v2::Digest {
            r#type: v2::DigestType::Sha1 as i32,
            checksum: "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d".into(),
        };
        assert!(digest_matches(&sha, body));
    }

    fn delivered(body: Vec<u8>, encoding: v2::Encoding, digest: Option<v2::Digest>) -> v2::Message {
        v2::Message {
            topic: Some(resource("", "t")),
            user_properties: [("k".to_string(), "v".to_string())].into(),
            system_properties: Some(v2::SystemProperties {
                message_id: "01ABC".into(),
                tag: Some("TagA".into()),
                body_encoding: encoding as i32,
                body_digest: digest,
                receipt_handle: Some("rh".into()),
                delivery_attempt: Some(2),
                queue_id: 3,
                queue_offset: Some(9),
                ..Default::default()
            }),
            body: body.into(),
        }
    }

    #[test]
    fn message_views_decode_and_check() {
        let v = message_view_from_proto(
            delivered(b"hello".to_vec(), v2::Encoding::Identity, None),
            None,
        );
        assert_eq!(v.message_id(), "01ABC");
        assert_eq!(v.topic(), "t");
        assert_eq!(v.tag(), Some("TagA"));
        assert_eq!(v.delivery_attempt(), 2);
        assert_eq!(v.queue_id(), 3);
        assert_eq!(v.queue_offset(), Some(9));
        assert_eq!(v.receipt_handle, "rh");
        assert_eq!(v.properties()["k"], "v");
        assert!(!v.is_corrupted());

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"squeezed").unwrap();
        let v = message_view_from_proto(
            delivered(gz.finish().unwrap(), v2::Encoding::Gzip, None),
            None,
        );
        assert_eq!(v.body().as_ref(), b"squeezed");
        assert!(!v.is_corrupted());

        let bad_digest = v2::Digest {
            r#type: v2::DigestType::Md5 as i32,
            checksum: "00".into(),
        };
        let v = message_view_from_proto(
            delivered(b"x".to_vec(), v2::Encoding::Identity, Some(bad_digest)),
            None,
        );
        assert!(v.is_corrupted());
        let v = message_view_from_proto(
            delivered(b"not gzip".to_vec(), v2::Encoding::Gzip, None),
            None,
        );
        assert!(v.is_corrupted());
    }

    #[test]
    fn outgoing_messages() {
        let m = Message::builder("t")
            .body("b")
            .tag("x")
            .message_group("g")
            .build()
            .unwrap();
        let p = message_to_proto(&m, "ns", "ID1", MessageType::Fifo, 4);
        let s = p.system_properties.unwrap();
        assert_eq!(s.message_id, "ID1");
        assert_eq!(s.message_type, v2::MessageType::Fifo as i32);
        assert_eq!(s.message_group.as_deref(), Some("g"));
        assert_eq!(s.queue_id, 4);
        assert_eq!(s.body_encoding, v2::Encoding::Identity as i32);
        assert!(s.born_timestamp.is_some());
        assert_eq!(p.topic.unwrap().resource_namespace, "ns");
    }

    #[test]
    fn queues_and_policies() {
        let e = Endpoints::parse("127.0.0.1:8081").unwrap();
        let q = MessageQueue {
            topic: "t".into(),
            id: 2,
            permission: Permission::ReadWrite,
            broker: Broker {
                name: "b".into(),
                id: 0,
                endpoints: e.clone(),
            },
            accept: vec![MessageType::Normal, MessageType::Fifo],
        };
        assert_eq!(queue_from_proto(&queue_to_proto(&q, "")), Some(q));
        let mut bad = v2::MessageQueue::default();
        assert!(queue_from_proto(&bad).is_none());
        bad.broker = Some(v2::Broker::default());
        assert!(queue_from_proto(&bad).is_none());

        for p in [
            RetryPolicy::exponential(3, Duration::from_millis(10), Duration::from_secs(1), 2.0),
            RetryPolicy::customized(17, vec![Duration::from_secs(1), Duration::from_secs(5)]),
        ] {
            assert_eq!(retry_policy_from_proto(&retry_policy_to_proto(&p)), Some(p));
        }
        assert!(retry_policy_from_proto(&v2::RetryPolicy::default()).is_none());
    }
}
