//! The `MQv2-HMAC-SHA1` request signature and the `x-mq-date-time` it signs: reading and
//! checking it (the broker's authentication, the nameserver's), and signing rocketlog's own
//! calls between servers ([`SigningInterceptor`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The signature scheme the official clients use.
pub const SCHEME: &str = "MQv2-HMAC-SHA1";

/// The parts of an `authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential<'a> {
    pub access_key: &'a str,
    /// Decoded HMAC bytes.
    pub signature: Vec<u8>,
}

/// Why a header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the authorization header uses scheme {0:?}, not {SCHEME}")]
    Scheme(String),
    #[error("the authorization header has no Credential")]
    NoCredential,
    #[error("the authorization header has no Signature")]
    NoSignature,
    #[error("the authorization header's signature is not hex")]
    SignatureNotHex,
    #[error("the authorization header signs {0:?}, not x-mq-date-time")]
    SignedHeaders(String),
}

/// Reads `MQv2-HMAC-SHA1 Credential=<ak>, SignedHeaders=x-mq-date-time, Signature=<hex>`.
/// The access key is what precedes any `/` in the credential (clients may append a scope);
/// `Ok(None)`: the header names no access key (clients send that when they have none).
pub fn parse_authorization(header: &str) -> Result<Option<Credential<'_>>, HeaderError> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme != SCHEME {
        return Err(HeaderError::Scheme(scheme.chars().take(32).collect()));
    }
    let (mut credential, mut signature, mut signed) = (None, None, None);
    for part in rest.split(',') {
        let Some((key, value)) = part.split_once('=') else {
            continue;
        };
        match key.trim() {
            "Credential" => credential = Some(value.trim()),
            "Signature" => signature = Some(value.trim()),
            "SignedHeaders" => signed = Some(value.trim()),
            _ => {}
        }
    }
    let access_key = credential
        .ok_or(HeaderError::NoCredential)?
        .split('/')
        .next()
        .unwrap_or_default();
    if access_key.is_empty() {
        return Ok(None);
    }
    if let Some(signed) = signed.filter(|s| !s.eq_ignore_ascii_case("x-mq-date-time")) {
        return Err(HeaderError::SignedHeaders(
            signed.chars().take(64).collect(),
        ));
    }
    let signature = signature.ok_or(HeaderError::NoSignature)?;
    let signature = hex::decode(signature).map_err(|_| HeaderError::SignatureNotHex)?;
    Ok(Some(Credential {
        access_key,
        signature,
    }))
}

/// Whether `signature` is HMAC-SHA1 of `date_time` under `secret`, compared in constant time.
pub fn verify(secret: &[u8], date_time: &str, signature: &[u8]) -> bool {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        return false;
    };
    mac.update(date_time.as_bytes());
    mac.verify_slice(signature).is_ok()
}

/// The instant of an `x-mq-date-time` value: `yyyyMMdd'T'HHmmss'Z'` (the official clients)
/// or RFC 3339 with an offset (`2026-12-07T09:51:00.123+08:00`).
pub fn parse_date_time(value: &str) -> Option<SystemTime> {
    let v = value.trim().as_bytes();
    let num = |s: &[u8]| -> Option<i64> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    let (date, time, rest): (_, _, &[u8]) = if v.len() == 16 && v[8] == b'T' && v[15] == b'Z' {
        (
            [num(&v[0..4])?, num(&v[4..6])?, num(&v[6..8])?],
            [num(&v[9..11])?, num(&v[11..13])?, num(&v[13..15])?],
            b"Z",
        )
    } else if v.len() >= 20
        && v[4] == b'-'
        && v[7] == b'-'
        && matches!(v[10], b'T' | b't' | b' ')
        && v[13] == b':'
        && v[16] == b':'
    {
        let mut rest = &v[19..];
        if rest.first() == Some(&b'.') {
            let digits = rest[1..].iter().take_while(|b| b.is_ascii_digit()).count();
            rest = &rest[1 + digits..];
        }
        (
            [num(&v[0..4])?, num(&v[5..7])?, num(&v[8..10])?],
            [num(&v[11..13])?, num(&v[14..16])?, num(&v[17..19])?],
            rest,
        )
    } else {
        return None;
    };
    let offset_secs = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let secs = num(&[*h1, *h2])? * 3600 + num(&[*m1, *m2])? * 60;
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    let [year, month, day] = date;
    let [hour, minute, second] = time;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Upper-case hex of HMAC-SHA1 under `secret` over `date_time` (what `Signature=` carries).
pub fn sign(secret: &[u8], date_time: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(date_time.as_bytes());
    hex::encode_upper(mac.finalize().into_bytes())
}

/// `yyyyMMdd'T'HHmmss'Z'` in UTC, the `x-mq-date-time` format of the official clients.
pub fn format_date_time(now: SystemTime) -> String {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (i64::try_from(secs / 86_400).unwrap_or(0), secs % 86_400);
    // Inverse of `days_from_civil` (Howard Hinnant's civil_from_days).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// An access key and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log.
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// Header carrying the signature.
pub const AUTHORIZATION: &str = "authorization";
/// Header carrying the signed date-time.
pub const DATE_TIME: &str = "x-mq-date-time";

/// Signs every call with its credentials (none: calls go unsigned).
#[derive(Debug, Clone, Default)]
pub struct SigningInterceptor(Option<Arc<Credentials>>);

impl SigningInterceptor {
    pub fn new(credentials: Option<Credentials>) -> Self {
        SigningInterceptor(credentials.map(Arc::new))
    }
}

impl tonic::service::Interceptor for SigningInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(c) = &self.0 {
            let date_time = format_date_time(SystemTime::now());
            let authorization = format!(
                "{SCHEME} Credential={}, SignedHeaders={DATE_TIME}, Signature={}",
                c.access_key,
                sign(c.secret_key.as_bytes(), &date_time)
            );
            let (Ok(mut authorization), Ok(date_time)) = (
                tonic::metadata::AsciiMetadataValue::try_from(authorization),
                tonic::metadata::AsciiMetadataValue::try_from(date_time),
            ) else {
                return Err(tonic::Status::invalid_argument(
                    "the access key is not printable ASCII",
                ));
            };
            authorization.set_sensitive(true);
            req.metadata_mut().insert(AUTHORIZATION, authorization);
            req.metadata_mut().insert(DATE_TIME, date_time);
        }
        Ok(req)
    }
}

/// Checks that `headers` are signed by `expected`'s access key with its secret at a date-time
/// within `max_skew` of `now` (`None`: any time); the error says which check failed.
pub fn check(
    headers: &http::HeaderMap,
    expected: &Credentials,
    max_skew: Option<Duration>,
    now: SystemTime,
) -> Result<(), String> {
    let header = headers
        .get(AUTHORIZATION)
        .ok_or("authentication is required: the request has no authorization header")?
        .to_str()
        .map_err(|_| "the authorization header is not ASCII")?;
    let credential = parse_authorization(header)
        .map_err(|e| e.to_string())?
        .ok_or("authentication is required: the request names no access key")?;
    if credential.access_key != expected.access_key {
        return Err(format!(
            "unknown access key {:?}",
            credential.access_key.chars().take(64).collect::<String>()
        ));
    }
    let date_time = headers
        .get(DATE_TIME)
        .and_then(|v| v.to_str().ok())
        .ok_or("the request has no x-mq-date-time header to sign")?;
    if !verify(
        expected.secret_key.as_bytes(),
        date_time,
        &credential.signature,
    ) {
        return Err(format!(
            "bad signature for access key {:?}: the secret key does not match",
            expected.access_key
        ));
    }
    if let Some(max) = max_skew {
        let at = parse_date_time(date_time).ok_or_else(|| {
            format!(
                "x-mq-date-time {:?} is not a date-time",
                date_time.chars().take(40).collect::<String>()
            )
        })?;
        let skew = match now.duration_since(at) {
            Ok(behind) => behind,
            Err(ahead) => ahead.duration(),
        };
        if skew > max {
            return Err(format!(
                "x-mq-date-time {date_time} is {} s away from this server's clock, more than \
                 the {} s allowed",
                skew.as_secs(),
                max.as_secs()
            ));
        }
    }
    Ok(())
}

/// A gRPC service that answers `UNAUTHENTICATED` to every call not signed with `expected`
/// (checked as [`check`] does); wraps one service of a port, so the others (health) stay open.
#[derive(Debug, Clone)]
pub struct RequireSignature<S> {
    inner: S,
    expected: Arc<Credentials>,
    max_skew: Option<Duration>,
}

impl<S> RequireSignature<S> {
    pub fn new(inner: S, expected: Credentials, max_skew: Option<Duration>) -> Self {
        RequireSignature {
            inner,
            expected: Arc::new(expected),
            max_skew,
        }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for RequireSignature<S> {
    const NAME: &'static str = S::NAME;
}

type Answer = Result<http::Response<tonic::body::Body>, std::convert::Infallible>;

impl<S> tower::Service<http::Request<tonic::body::Body>> for RequireSignature<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        // The clone is the one made ready next time; this call uses the ready one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        match check(
            req.headers(),
            &self.expected,
            self.max_skew,
            SystemTime::now(),
        ) {
            Ok(()) => Box::pin(inner.call(req)),
            Err(reason) => {
                tracing::debug!(path = %req.uri().path(), %reason, "request refused");
                let refused = tonic::Status::unauthenticated(reason).into_http();
                Box::pin(std::future::ready(Ok(refused)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, date_time: &str) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(date_time.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn headers_of_the_official_clients_parse() {
        let sig = sign("sk", "20261207T095100Z");
        let h = format!(
            "MQv2-HMAC-SHA1 Credential=ak, SignedHeaders=x-mq-date-time, Signature={}",
            sig.to_uppercase()
        );
        let c = parse_authorization(&h).unwrap().unwrap();
        assert_eq!(c.access_key, "ak");
        assert!(verify(b"sk", "20261207T095100Z", &c.signature));
        assert!(!verify(b"other", "20261207T095100Z", &c.signature));
        assert!(!verify(b"sk", "20261207T095101Z", &c.signature));
        // A scope after the access key, lower-case hex.
        let h = format!(
            "MQv2-HMAC-SHA1 Credential=ak/2026, SignedHeaders=x-mq-date-time, Signature={sig}"
        );
        assert_eq!(parse_authorization(&h).unwrap().unwrap().access_key, "ak");
        // The Python client sends an empty credential when it has none.
        let h = "MQv2-HMAC-SHA1 Credential=, SignedHeaders=x-mq-date-time, Signature=";
        assert_eq!(parse_authorization(h).unwrap(), None);
    }

    #[test]
    fn malformed_headers_say_what_is_wrong() {
        assert!(matches!(
            parse_authorization("Bearer abc"),
            Err(HeaderError::Scheme(_))
        ));
        assert_eq!(
            parse_authorization("MQv2-HMAC-SHA1 Signature=00"),
            Err(HeaderError::NoCredential)
        );
        assert_eq!(
            parse_authorization("MQv2-HMAC-SHA1 Credential=ak"),
            Err(HeaderError::NoSignature)
        );
        assert_eq!(
            parse_authorization("MQv2-HMAC-SHA1 Credential=ak, Signature=zz"),
            Err(HeaderError::SignatureNotHex)
        );
        assert!(matches!(
            parse_authorization("MQv2-HMAC-SHA1 Credential=ak, SignedHeaders=host, Signature=00"),
            Err(HeaderError::SignedHeaders(_))
        ));
    }

    #[test]
    fn date_times_in_both_formats() {
        let at = |s| parse_date_time(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs());
        assert_eq!(at("19700101T000000Z"), Some(0));
        assert_eq!(at("20261207T095100Z"), Some(1_796_637_060));
        assert_eq!(at("2026-12-07T09:51:00Z"), Some(1_796_637_060));
        assert_eq!(at("2026-12-07T17:51:00.123456+08:00"), Some(1_796_637_060));
        assert_eq!(at("2026-12-07T08:51:00-01:00"), Some(1_796_637_060));
        assert_eq!(at("2000-02-29T00:00:00Z"), Some(951_782_400));
        for bad in [
            "",
            "yesterday",
            "20261307T000000Z",
            "2026-12-07T09:51:00",
            "20261207T246000Z",
        ] {
            assert_eq!(at(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn signed_calls_pass_the_check_and_others_say_why_not() {
        let now = SystemTime::now();
        assert_eq!(
            parse_date_time(&format_date_time(
                UNIX_EPOCH + Duration::from_secs(1_796_640_000)
            ))
            .unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_796_640_000)
        );
        let creds = Credentials {
            access_key: "ns".into(),
            secret_key: "ns-secret-key".into(),
        };
        let mut interceptor = SigningInterceptor::new(Some(creds.clone()));
        let req =
            tonic::service::Interceptor::call(&mut interceptor, tonic::Request::new(())).unwrap();
        let headers = req.metadata().clone().into_headers();
        let skew = Some(Duration::from_secs(60));
        assert_eq!(check(&headers, &creds, skew, now), Ok(()));
        let other = Credentials {
            secret_key: "another-secret".into(),
            ..creds.clone()
        };
        assert!(check(&headers, &other, skew, now)
            .unwrap_err()
            .contains("bad signature"));
        let stranger = Credentials {
            access_key: "other".into(),
            ..creds.clone()
        };
        assert!(check(&headers, &stranger, skew, now)
            .unwrap_err()
            .contains("unknown access key"));
        let later = now + Duration::from_secs(600);
        assert!(check(&headers, &creds, skew, later)
            .unwrap_err()
            .contains("away from"));
        assert!(check(&http::HeaderMap::new(), &creds, skew, now)
            .unwrap_err()
            .contains("no authorization header"));
        let mut unsigned = SigningInterceptor::new(None);
        let req =
            tonic::service::Interceptor::call(&mut unsigned, tonic::Request::new(())).unwrap();
        assert!(req.metadata().get(AUTHORIZATION).is_none());
    }
}
