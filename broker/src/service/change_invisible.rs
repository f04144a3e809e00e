//! ChangeInvisibleDuration: give an in-flight delivery a new deadline (0 = redeliver now, a
//! nack) and return the handle that replaces the old one. On failure the request's handle is
//! echoed back: the Python client stores `receipt_handle` before it checks the status.

use std::time::Duration;

use rocketlog_proto::v2;

use super::convert::duration;
use super::error::{ok, ApiError};
use super::handles::ClientHandle;
use super::validate;
use crate::broker::Broker;

pub async fn handle(
    b: &Broker,
    req: v2::ChangeInvisibleDurationRequest,
) -> v2::ChangeInvisibleDurationResponse {
    let given = req.receipt_handle.clone();
    match change(b, req).await {
        Ok(receipt_handle) => v2::ChangeInvisibleDurationResponse {
            status: Some(ok()),
            receipt_handle,
        },
        Err(e) => v2::ChangeInvisibleDurationResponse {
            status: Some(e.status()),
            receipt_handle: given,
        },
    }
}

async fn change(b: &Broker, req: v2::ChangeInvisibleDurationRequest) -> Result<String, ApiError> {
    let topic = validate::topic(req.topic.as_ref())?;
    let group = validate::group(req.group.as_ref())?;
    let max = Duration::from_millis(b.config.receive.max_invisible_duration_ms);
    let invisible = req
        .invisible_duration
        .as_ref()
        .map(|d| {
            duration(d).ok_or_else(|| {
                ApiError::IllegalInvisibleTime("invisible duration is negative".into())
            })
        })
        .transpose()?
        .unwrap_or_default();
    if invisible > max {
        return Err(ApiError::IllegalInvisibleTime(format!(
            "invisible duration {invisible:?} is above the maximum {max:?}"
        )));
    }
    if req.receipt_handle.is_empty() {
        return Err(ApiError::Consume(
            crate::consumption::ConsumeError::InvalidReceiptHandle {
                reason: "receipt handle is empty",
            },
        ));
    }
    let handle = ClientHandle::resolve(b, &group, &req.receipt_handle);
    let engine = b.consumption.clone();
    b.consumption
        .call(move || {
            let current = handle.current();
            engine.change_invisible_duration(&group, &topic, current.as_str(), invisible)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("change-invisible task failed: {e}")))?
        .map_err(ApiError::from)
}
