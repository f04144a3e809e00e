//! Request headers and `MQv2-HMAC-SHA1` signing, as the official clients send them.
//!
//! Every call (Telemetry included) carries the client id, language, protocol, client
//! version, a fresh request id, the namespace and the date-time; with credentials it adds
//! `authorization: MQv2-HMAC-SHA1 Credential=<AK>, SignedHeaders=x-mq-date-time,
//! Signature=<hex of HMAC-SHA1(SK, date-time)>`.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha1::Sha1;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

use crate::config::Credentials;

pub(crate) const CLIENT_ID: &str = "x-mq-client-id";
pub(crate) const LANGUAGE: &str = "x-mq-language";
pub(crate) const PROTOCOL: &str = "x-mq-protocol";
pub(crate) const CLIENT_VERSION: &str = "x-mq-client-version";
pub(crate) const REQUEST_ID: &str = "x-mq-request-id";
pub(crate) const NAMESPACE: &str = "x-mq-namespace";
pub(crate) const DATE_TIME: &str = "x-mq-date-time";
pub(crate) const SESSION_TOKEN: &str = "x-mq-session-token";
pub(crate) const AUTHORIZATION: &str = "authorization";

/// The SDK version sent in `x-mq-client-version` and the settings' user agent.
pub(crate) const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Makes the header set of each request. Values that never change are parsed once.
#[derive(Debug, Clone)]
pub(crate) struct Signer {
    client_id: AsciiMetadataValue,
    namespace: AsciiMetadataValue,
    version: AsciiMetadataValue,
    credentials: Option<SigningKey>,
}

#[derive(Debug, Clone)]
struct SigningKey {
    /// `MQv2-HMAC-SHA1 Credential=<AK>, SignedHeaders=x-mq-date-time, Signature=`.
    prefix: String,
    secret: Vec<u8>,
    session_token: Option<AsciiMetadataValue>,
}

impl Signer {
    /// `client_id` and `namespace` must be printable ASCII (the config checks the namespace;
    /// client ids are made from a host name that is sanitized).
    pub(crate) fn new(
        client_id: &str,
        namespace: &str,
        credentials: Option<&Credentials>,
    ) -> Signer {
        let ascii = |s: &str| {
            AsciiMetadataValue::try_from(s).unwrap_or_else(|_| AsciiMetadataValue::from_static(""))
        };
        Signer {
            client_id: never_indexed(ascii(client_id)),
            namespace: ascii(namespace),
            version: ascii(SDK_VERSION),
            credentials: credentials.map(|c| SigningKey {
                prefix: format!(
                    "MQv2-HMAC-SHA1 Credential={}, SignedHeaders={DATE_TIME}, Signature=",
                    c.access_key
                ),
                secret: c.secret_key.as_bytes().to_vec(),
                session_token: c.session_token.as_deref().map(ascii).map(never_indexed),
            }),
        }
    }

    /// Headers for one request made at `now`.
    pub(crate) fn headers(&self, now: SystemTime) -> MetadataMap {
        let mut map = MetadataMap::with_capacity(10);
        map.insert(CLIENT_ID, self.client_id.clone());
        map.insert(LANGUAGE, AsciiMetadataValue::from_static("RUST"));
        map.insert(PROTOCOL, AsciiMetadataValue::from_static("v2"));
        map.insert(CLIENT_VERSION, self.version.clone());
        map.insert(REQUEST_ID, never_indexed(ascii_value(&request_id())));
        map.insert(NAMESPACE, self.namespace.clone());
        let date_time = format_date_time(now);
        if let Some(key) = &self.credentials {
            let authorization = format!("{}{}", key.prefix, signature(&key.secret, &date_time));
            map.insert(AUTHORIZATION, never_indexed(ascii_value(&authorization)));
            if let Some(token) = &key.session_token {
                map.insert(SESSION_TOKEN, token.clone());
            }
        }
        map.insert(DATE_TIME, ascii_value(&date_time));
        map
    }
}

/// Signs one request of another gRPC API (such as rocketlog's admin API) the way the
/// messaging calls are signed: sets `x-mq-date-time` to `now` and the `authorization`
/// header computed from it.
pub fn sign_request(credentials: &Credentials, headers: &mut MetadataMap, now: SystemTime) {
    let date_time = format_date_time(now);
    let authorization = format!(
        "MQv2-HMAC-SHA1 Credential={}, SignedHeaders={DATE_TIME}, Signature={}",
        credentials.access_key,
        signature(credentials.secret_key.as_bytes(), &date_time)
    );
    headers.insert(AUTHORIZATION, never_indexed(ascii_value(&authorization)));
    headers.insert(DATE_TIME, ascii_value(&date_time));
}

/// A tonic interceptor signing every call with [`sign_request`] (no credentials: calls go
/// unsigned), for rocketlog's own gRPC APIs such as the admin API.
#[derive(Debug, Clone, Default)]
pub struct SigningInterceptor(Option<Credentials>);

impl SigningInterceptor {
    /// Signs with `credentials`; `None` leaves calls unsigned.
    pub fn new(credentials: Option<Credentials>) -> Self {
        SigningInterceptor(credentials)
    }
}

impl tonic::service::Interceptor for SigningInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(c) = &self.0 {
            sign_request(c, req.metadata_mut(), SystemTime::now());
        }
        Ok(req)
    }
}

/// Upper-case hex of HMAC-SHA1 keyed by the secret over the date-time header value.
pub(crate) fn signature(secret: &[u8], date_time: &str) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = match Hmac::<Sha1>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(date_time.as_bytes());
    hex::encode_upper(mac.finalize().into_bytes())
}

/// Marks a header to be sent as a never-indexed HPACK literal: values that differ between the
/// clients sharing a connection (client id, signature, token) or between requests (request
/// id). Indexed, they would cycle through the 4 KiB dynamic table and evict the headers that
/// repeat on every request (64 clients sharing a connection: +25 % CPU per request on both
/// sides); secrets are kept out of the table as RFC 7541 §7.1.3 advises.
fn never_indexed(mut value: AsciiMetadataValue) -> AsciiMetadataValue {
    value.set_sensitive(true);
    value
}

fn ascii_value(s: &str) -> AsciiMetadataValue {
    // Every value built here is ASCII by construction (hex, digits, checked config strings).
    AsciiMetadataValue::try_from(s).unwrap_or_else(|_| AsciiMetadataValue::from_static(""))
}

/// A random UUID (version 4) in the usual 8-4-4-4-12 form.
pub(crate) fn request_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `yyyyMMdd'T'HHmmss'Z'` in UTC (the format of the official clients; Java writes its local
/// time with a literal `Z`, servers do not check the clock).
pub(crate) fn format_date_time(now: SystemTime) -> String {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn date_time_format() {
        assert_eq!(format_date_time(UNIX_EPOCH), "19700101T000000Z");
        // 2024-02-29T23:59:58Z, a leap day.
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_198);
        assert_eq!(format_date_time(t), "20240229T235958Z");
        // 2000-03-01T12:34:56Z.
        let t = UNIX_EPOCH + Duration::from_secs(951_914_096);
        assert_eq!(format_date_time(t), "20000301T123456Z");
    }

    #[test]
    fn hmac_sha1_matches_rfc2202() {
        // RFC 2202 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", "what do ya want for nothing?"),
            "EFFCDF6AE5EB2FA2D27416D5F184DF9C259A7C79"
        );
    }

    #[test]
    fn headers_without_credentials() {
        let s = Signer::new("host@1@0@abc", "", None);
        let h = s.headers(UNIX_EPOCH);
        assert_eq!(h.get(CLIENT_ID).unwrap(), "host@1@0@abc");
        assert_eq!(h.get(LANGUAGE).unwrap(), "RUST");
        assert_eq!(h.get(PROTOCOL).unwrap(), "v2");
        assert_eq!(h.get(CLIENT_VERSION).unwrap(), SDK_VERSION);
        assert_eq!(h.get(NAMESPACE).unwrap(), "");
        assert_eq!(h.get(DATE_TIME).unwrap(), "19700101T000000Z");
        assert_eq!(h.get(REQUEST_ID).unwrap().len(), 36);
        assert!(h.get(AUTHORIZATION).is_none());
        assert!(h.get(SESSION_TOKEN).is_none());
        // Per-client and per-request values stay out of the HPACK table; constant ones go in.
        assert!(h.get(CLIENT_ID).unwrap().is_sensitive());
        assert!(h.get(REQUEST_ID).unwrap().is_sensitive());
        assert!(!h.get(LANGUAGE).unwrap().is_sensitive());
        assert!(!h.get(DATE_TIME).unwrap().is_sensitive());
    }

    #[test]
    fn headers_with_credentials() {
        let c = Credentials::new("AK1", "SK1").with_session_token("TOKEN");
        let s = Signer::new("id", "ns", Some(&c));
        let h = s.headers(UNIX_EPOCH);
        let expected = format!(
            "MQv2-HMAC-SHA1 Credential=AK1, SignedHeaders=x-mq-date-time, Signature={}",
            signature(b"SK1", "19700101T000000Z")
        );
        assert_eq!(h.get(AUTHORIZATION).unwrap(), expected.as_str());
        assert_eq!(h.get(SESSION_TOKEN).unwrap(), "TOKEN");
        assert_eq!(h.get(NAMESPACE).unwrap(), "ns");
        assert!(h.get(AUTHORIZATION).unwrap().is_sensitive());
        assert!(h.get(SESSION_TOKEN).unwrap().is_sensitive());
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let a = request_id();
        assert_ne!(a, request_id());
        assert_eq!(a.as_bytes()[14], b'4');
        assert!(matches!(a.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
    }
}
