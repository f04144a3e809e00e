//! `EndTransaction`: the gRPC shell over [`Transactions::end`](super::Transactions::end).
//!
//! COMMIT and ROLLBACK resolve an open transaction and answer once the appends are durable. An
//! unspecified resolution (a checker that cannot decide yet; the Python client sends one) is
//! answered OK and changes nothing: the transaction is checked again later. Ending a
//! transaction the same way twice is answered OK without a second delivery; ending it the
//! other way, or a transaction id this broker does not know, is INVALID_TRANSACTION_ID.

use rocketlog_proto::v2;

use super::error::TransactionError;
use super::state::Resolution;
use super::EndOutcome;
use crate::broker::Broker;
use crate::service::error::{ok, status, ApiError};
use crate::service::validate;

impl From<TransactionError> for ApiError {
    fn from(e: TransactionError) -> Self {
        match e {
            TransactionError::Store(s) => ApiError::Store(s),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

fn answer(status: v2::Status) -> v2::EndTransactionResponse {
    v2::EndTransactionResponse {
        status: Some(status),
    }
}

pub async fn handle(b: &Broker, req: v2::EndTransactionRequest) -> v2::EndTransactionResponse {
    let topic = match validate::topic(req.topic.as_ref()) {
        Ok(t) => t,
        Err(e) => return answer(e.status()),
    };
    if req.transaction_id.trim().is_empty() {
        return answer(status(
            v2::Code::InvalidTransactionId,
            "transaction id must not be blank",
        ));
    }
    let from_check = req.source == v2::TransactionSource::SourceServerCheck as i32;
    let resolution = match v2::TransactionResolution::try_from(req.resolution) {
        Ok(v2::TransactionResolution::Commit) => Resolution::Commit,
        Ok(v2::TransactionResolution::Rollback) => Resolution::Rollback,
        Ok(v2::TransactionResolution::Unspecified) => {
            tracing::debug!(
                transaction_id = %req.transaction_id,
                from_check,
                "transaction resolution unknown yet; it stays open"
            );
            return answer(ok());
        }
        Err(_) => {
            return answer(status(
                v2::Code::BadRequest,
                format!("unknown transaction resolution {}", req.resolution),
            ))
        }
    };
    let outcome = b
        .transactions
        .end(&req.transaction_id, &req.message_id, &topic, resolution);
    match outcome {
        Ok(EndOutcome::Applied(pending)) => {
            for p in pending {
                if let Err(e) = p.durable().await {
                    return answer(ApiError::Store(e).status());
                }
            }
            tracing::debug!(
                transaction_id = %req.transaction_id,
                message_id = %req.message_id,
                from_check,
                "transaction {}",
                resolution.as_str()
            );
            answer(ok())
        }
        Ok(EndOutcome::Repeated) => answer(status(
            v2::Code::Ok,
            format!(
                "transaction {} was already {}",
                req.transaction_id,
                resolution.as_str()
            ),
        )),
        Err(
            e @ (TransactionError::Unknown { .. }
            | TransactionError::AlreadyResolved { .. }
            | TransactionError::WrongMessage { .. }),
        ) => answer(status(v2::Code::InvalidTransactionId, e.to_string())),
        Err(e) => answer(ApiError::from(e).status()),
    }
}
