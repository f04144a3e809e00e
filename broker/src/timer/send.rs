//! The send path's delivery-time rules: which messages the timer holds and which times are
//! refused.

use rocketlog_proto::v2;

use super::service::now_ms;
use super::TimerSettings;
use crate::service::convert::timestamp_ms;
use crate::service::error::ApiError;
use crate::topics::TopicMessageType;

/// The delivery time of a message of `kind`: `Some(ms)` for a DELAY message (a time already
/// past means "now"), `None` for other kinds. A DELAY message needs a valid time at most
/// `max_delay_ms` ahead; other kinds may not ask for a future one.
pub fn delivery_time(
    sys: &v2::SystemProperties,
    kind: TopicMessageType,
    settings: &TimerSettings,
) -> Result<Option<i64>, ApiError> {
    let requested = match &sys.delivery_timestamp {
        None => None,
        Some(t) => Some(timestamp_ms(t).ok_or_else(|| {
            ApiError::IllegalDeliveryTime(format!("delivery timestamp {t:?} is not a valid time"))
        })?),
    };
    let now = now_ms();
    if kind != TopicMessageType::Delay {
        return match requested {
            Some(ms) if ms > now => Err(ApiError::PropertyConflictWithType(format!(
                "a {} message cannot have a delivery timestamp; send it as DELAY",
                kind.as_str()
            ))),
            _ => Ok(None),
        };
    }
    let Some(ms) = requested else {
        return Err(ApiError::IllegalDeliveryTime(
            "a DELAY message needs a delivery timestamp".into(),
        ));
    };
    let max = i64::try_from(settings.max_delay_ms).unwrap_or(i64::MAX);
    if ms.saturating_sub(now) > max {
        return Err(ApiError::IllegalDeliveryTime(format!(
            "delivery timestamp {ms} is {} ms ahead; the limit is {max} ms",
            ms.saturating_sub(now)
        )));
    }
    Ok(Some(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::convert::timestamp;

    fn sys(at: Option<i64>) -> v2::SystemProperties {
        v2::SystemProperties {
            delivery_timestamp: at.map(timestamp),
            ..Default::default()
        }
    }

    #[test]
    fn rules() {
        let s = TimerSettings::default();
        let now = now_ms();
        let delay = TopicMessageType::Delay;
        assert_eq!(
            delivery_time(&sys(Some(now + 5_000)), delay, &s).unwrap(),
            Some(now + 5_000)
        );
        assert_eq!(
            delivery_time(&sys(Some(now - 5_000)), delay, &s).unwrap(),
            Some(now - 5_000)
        );
        let code = |r: Result<Option<i64>, ApiError>| r.unwrap_err().code();
        assert_eq!(
            code(delivery_time(&sys(None), delay, &s)),
            v2::Code::IllegalDeliveryTime
        );
        let far = now + 41 * 24 * 3600 * 1000;
        assert_eq!(
            code(delivery_time(&sys(Some(far)), delay, &s)),
            v2::Code::IllegalDeliveryTime
        );
        let bad = v2::SystemProperties {
            delivery_timestamp: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: -5,
            }),
            ..Default::default()
        };
        assert_eq!(
            code(delivery_time(&bad, delay, &s)),
            v2::Code::IllegalDeliveryTime
        );
        let normal = TopicMessageType::Normal;
        assert_eq!(
            code(delivery_time(&sys(Some(now + 5_000)), normal, &s)),
            v2::Code::MessagePropertyConflictWithType
        );
        assert_eq!(delivery_time(&sys(None), normal, &s).unwrap(), None);
    }
}
