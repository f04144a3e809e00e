//! Heartbeat: always OK, even before the client's settings arrived (clients heartbeat every
//! 10 s to every route endpoint; failing it only makes noise).

use rocketlog_proto::v2;
use tonic::Request;

use super::error::ok;
use crate::broker::Broker;

pub fn handle(_b: &Broker, _request: Request<v2::HeartbeatRequest>) -> v2::HeartbeatResponse {
    v2::HeartbeatResponse { status: Some(ok()) }
}
