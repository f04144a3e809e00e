//! NotifyClientTermination: the client is shutting down; forget it. Always OK (a failure here
//! aborts the Node client's shutdown).

use rocketlog_proto::v2;
use tonic::Request;

use super::client_id;
use super::error::ok;
use crate::broker::Broker;

pub fn handle(
    b: &Broker,
    request: Request<v2::NotifyClientTerminationRequest>,
) -> v2::NotifyClientTerminationResponse {
    if let Some(id) = client_id(request.metadata()) {
        if b.clients.remove(&id).is_some() {
            tracing::debug!(client = %id, "client terminated");
        }
    }
    v2::NotifyClientTerminationResponse { status: Some(ok()) }
}
