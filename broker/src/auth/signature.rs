//! The `MQv2-HMAC-SHA1` request signature and the `x-mq-date-time` it signs.

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
}
