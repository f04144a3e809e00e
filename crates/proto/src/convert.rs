//! Conversions between protobuf well-known types and std time types. They fail instead of
//! panicking on values a peer may send (negative durations, out-of-range timestamps).

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Why a protobuf time value could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TimeError {
    #[error("negative duration ({seconds}s {nanos}ns)")]
    NegativeDuration { seconds: i64, nanos: i32 },
    #[error("nanoseconds out of range: {0}")]
    BadNanos(i32),
    #[error("timestamp before the Unix epoch ({seconds}s)")]
    BeforeEpoch { seconds: i64 },
    #[error("time value out of range")]
    OutOfRange,
}

/// A protobuf `Duration` as a std `Duration`.
pub fn duration_from_proto(d: &prost_types::Duration) -> Result<Duration, TimeError> {
    if !(0..1_000_000_000).contains(&d.nanos) {
        return if d.nanos < 0 || d.seconds < 0 {
            Err(TimeError::NegativeDuration {
                seconds: d.seconds,
                nanos: d.nanos,
            })
        } else {
            Err(TimeError::BadNanos(d.nanos))
        };
    }
    if d.seconds < 0 {
        return Err(TimeError::NegativeDuration {
            seconds: d.seconds,
            nanos: d.nanos,
        });
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// A std `Duration` as a protobuf `Duration` (saturating at `i64::MAX` seconds).
pub fn duration_to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// A protobuf `Timestamp` as milliseconds since the Unix epoch.
pub fn timestamp_to_millis(t: &prost_types::Timestamp) -> Result<i64, TimeError> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(TimeError::BadNanos(t.nanos));
    }
    if t.seconds < 0 {
        return Err(TimeError::BeforeEpoch { seconds: t.seconds });
    }
    t.seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(t.nanos / 1_000_000)))
        .ok_or(TimeError::OutOfRange)
}

/// Milliseconds since the Unix epoch as a protobuf `Timestamp`.
pub fn millis_to_timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A `SystemTime` as a protobuf `Timestamp` (times before the epoch become the epoch).
pub fn system_time_to_timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = prost_types::Duration {
            seconds: 3,
            nanos: 500_000_000,
        };
        assert_eq!(duration_from_proto(&d), Ok(Duration::from_millis(3500)));
        assert_eq!(duration_to_proto(Duration::from_millis(3500)), d);
        assert!(duration_from_proto(&prost_types::Duration {
            seconds: -1,
            nanos: 0
        })
        .is_err());
        assert!(duration_from_proto(&prost_types::Duration {
            seconds: 1,
            nanos: 2_000_000_000
        })
        .is_err());
    }

    #[test]
    fn timestamps() {
        let t = millis_to_timestamp(1_700_000_000_123);
        assert_eq!(t.seconds, 1_700_000_000);
        assert_eq!(t.nanos, 123_000_000);
        assert_eq!(timestamp_to_millis(&t), Ok(1_700_000_000_123));
        assert!(timestamp_to_millis(&prost_types::Timestamp {
            seconds: -5,
            nanos: 0
        })
        .is_err());
        assert!(timestamp_to_millis(&prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0
        })
        .is_err());
    }
}
