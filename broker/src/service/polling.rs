//! How long a ReceiveMessage may wait for messages (the proxy's rule, plus a reserve so the
//! stream always ends before the client's deadline: a stream still open at the deadline loses
//! its batch until the invisible time passes).

use std::time::Duration;

use http::HeaderMap;

/// Time kept back from the client's deadline to write the answer and end the stream.
pub const DEADLINE_RESERVE: Duration = Duration::from_secs(1);

/// Limits of the long-polling wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollingLimits {
    pub min: Duration,
    pub max: Duration,
}

/// The deadline left is below the shortest wait: the request cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotEnoughTime {
    pub remaining: Duration,
    pub min: Duration,
}

/// The wait for one receive: the request's `long_polling_timeout` (else the time left minus
/// half the client's request timeout), clamped to `limits`, and never past the client's
/// deadline less [`DEADLINE_RESERVE`].
pub fn polling_time(
    requested: Option<Duration>,
    remaining: Option<Duration>,
    request_timeout: Duration,
    limits: PollingLimits,
) -> Result<Duration, NotEnoughTime> {
    let wanted = match (requested, remaining) {
        (Some(r), _) => r,
        (None, Some(rem)) => rem.saturating_sub(request_timeout / 2),
        (None, None) => limits.max,
    };
    let mut poll = wanted.clamp(limits.min, limits.max);
    if let Some(rem) = remaining {
        if rem < limits.min {
            return Err(NotEnoughTime {
                remaining: rem,
                min: limits.min,
            });
        }
        poll = poll.min(rem.saturating_sub(DEADLINE_RESERVE));
    }
    Ok(poll)
}

/// The `grpc-timeout` header (`<digits><unit>`, unit one of H M S m u n), if present and valid.
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PollingLimits = PollingLimits {
        min: Duration::from_secs(5),
        max: Duration::from_secs(20),
    };
    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn table() {
        let rt = S(3);
        // (requested, remaining) -> expected
        type Case = (Option<Duration>, Option<Duration>, Result<Duration, ()>);
        let cases: &[Case] = &[
            // Python simple consumer: 20 s poll, 23 s deadline.
            (Some(S(20)), Some(S(23)), Ok(S(20))),
            // Rust client: deadline equals the poll it asks for.
            (Some(S(40)), Some(S(40)), Ok(S(20))),
            (Some(S(20)), Some(S(20)), Ok(S(19))),
            // Too short a request is raised to the minimum.
            (Some(S(1)), Some(S(30)), Ok(S(5))),
            // No request: remaining minus half the request timeout.
            (None, Some(S(13)), Ok(Duration::from_millis(11_500))),
            (None, None, Ok(S(20))),
            (Some(S(10)), None, Ok(S(10))),
            // Deadline below the minimum.
            (Some(S(10)), Some(S(4)), Err(())),
            // Between min and min + reserve: what is left.
            (
                Some(S(10)),
                Some(Duration::from_millis(5500)),
                Ok(Duration::from_millis(4500)),
            ),
        ];
        for (req, rem, want) in cases {
            let got = polling_time(*req, *rem, rt, LIMITS).map_err(|_| ());
            assert_eq!(got, *want, "requested {req:?} remaining {rem:?}");
        }
    }

    #[test]
    fn grpc_timeout_header() {
        let mut h = HeaderMap::new();
        assert_eq!(grpc_timeout(&h), None);
        for (v, d) in [
            ("23S", Some(S(23))),
            ("1500m", Some(Duration::from_millis(1500))),
            ("2M", Some(S(120))),
            ("1H", Some(S(3600))),
            ("5u", Some(Duration::from_micros(5))),
            ("7n", Some(Duration::from_nanos(7))),
            ("S", None),
            ("12x", None),
            ("123456789S", None),
        ] {
            h.insert("grpc-timeout", v.parse().unwrap());
            assert_eq!(grpc_timeout(&h), d, "{v}");
        }
    }
}
