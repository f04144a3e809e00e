//! RPCs rocketlog does not serve yet: each answers with a typed status and a message saying
//! what is missing (never a fake success).

use rocketlog_proto::v2;

use super::error::status;

pub fn lite_topics() -> v2::Status {
    status(v2::Code::Unsupported, "lite topics are not supported")
}
