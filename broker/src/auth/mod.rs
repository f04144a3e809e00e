//! Authentication and authorization of client requests.
//!
//! The official clients sign every request: `authorization: MQv2-HMAC-SHA1
//! Credential=<access key>, SignedHeaders=x-mq-date-time, Signature=<hex>`, where the
//! signature is HMAC-SHA1 of the `x-mq-date-time` header under the user's secret key. With
//! `[broker.auth] enabled = true`, every request on the client port (the RocketMQ API and
//! rocketlog's admin API) must carry a valid signature of a known user, and the user's access
//! rules decide which topics it may publish to and which topics and groups it may consume.

use serde::{Deserialize, Serialize};

/// `[broker.auth]`: who may use the client port.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Verify every request's signature and check its user's access rules (default false).
    pub enabled: bool,
    /// Largest difference between a request's `x-mq-date-time` and the broker's clock, ms
    /// (default 900 000 = 15 min). 0 turns the check off.
    pub max_clock_skew_ms: u64,
    /// A super user created at start when the broker has no user yet: its access key.
    pub init_access_key: Option<String>,
    /// The secret key of `init_access_key` (set it through the environment, e.g.
    /// `ROCKETLOG_BROKER__AUTH__INIT_SECRET_KEY`, rather than in a file).
    pub init_secret_key: Option<String>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            enabled: false,
            max_clock_skew_ms: 15 * 60 * 1000,
            init_access_key: None,
            init_secret_key: None,
        }
    }
}
