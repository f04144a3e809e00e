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
    /// The access key this broker signs its calls to the nameservers with (their
    /// `[nameserver.auth]`); unset: unsigned. Independent of `enabled`.
    pub nameserver_access_key: Option<String>,
    /// Its secret key (`ROCKETLOG_BROKER__AUTH__NAMESERVER_SECRET_KEY`).
    pub nameserver_secret_key: Option<String>,
}

impl AuthSettings {
    /// What the broker signs its nameserver calls with.
    pub fn nameserver_credentials(&self) -> Option<rocketlog_transport::signature::Credentials> {
        match (&self.nameserver_access_key, &self.nameserver_secret_key) {
            (Some(ak), Some(sk)) => Some(rocketlog_transport::signature::Credentials {
                access_key: ak.clone(),
                secret_key: sk.clone(),
            }),
            _ => None,
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            enabled: false,
            max_clock_skew_ms: 15 * 60 * 1000,
            init_access_key: None,
            init_secret_key: None,
            nameserver_access_key: None,
            nameserver_secret_key: None,
        }
    }
}

pub mod layer;
pub use rocketlog_transport::signature;
pub mod users;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderMap;

pub use users::{Action, Decision, Need, ResourceKind, Rule, User, UserError, UserStore};

/// Header carrying the signature.
pub const AUTHORIZATION_HEADER: &str = "authorization";
/// Header carrying the signed date-time.
pub const DATE_TIME_HEADER: &str = "x-mq-date-time";

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// Who sent it is unknown or unproven (`UNAUTHORIZED`).
    Unauthenticated(String),
    /// The user may not do this (`FORBIDDEN`).
    Forbidden(String),
    /// The request could not be read to find what it touches (`BAD_REQUEST`).
    BadRequest(String),
    /// The request is larger than any the broker accepts (`PAYLOAD_TOO_LARGE`).
    TooLarge(String),
}

impl Denied {
    pub fn message(&self) -> &str {
        match self {
            Denied::Unauthenticated(m)
            | Denied::Forbidden(m)
            | Denied::BadRequest(m)
            | Denied::TooLarge(m) => m,
        }
    }
}

/// The client port's gatekeeper: the settings and the user store.
#[derive(Debug)]
pub struct Auth {
    enabled: bool,
    max_skew: Option<Duration>,
    users: Arc<UserStore>,
}

impl Auth {
    /// Opens the users of `config_dir`; when there are none and `settings` names an initial
    /// user, creates it as a super user.
    pub fn open(settings: &AuthSettings, config_dir: &Path) -> Result<Auth, UserError> {
        let users = UserStore::open(config_dir)?;
        if users.is_empty() {
            if let (Some(ak), Some(sk)) = (&settings.init_access_key, &settings.init_secret_key) {
                users.put(ak, sk, true)?;
                tracing::info!(access_key = %ak, "created the initial super user");
            }
        }
        if settings.enabled && users.is_empty() {
            tracing::warn!(
                "authentication is on but the broker has no user: every request is refused \
                 until one is added (set [broker.auth] init_access_key and init_secret_key)"
            );
        }
        Ok(Auth {
            enabled: settings.enabled,
            max_skew: (settings.max_clock_skew_ms > 0)
                .then(|| Duration::from_millis(settings.max_clock_skew_ms)),
            users: Arc::new(users),
        })
    }

    /// Whether requests are checked.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The users (managed through the admin API).
    pub fn users(&self) -> &UserStore {
        &self.users
    }

    /// The users, shared (a slave installs its master's into them).
    pub fn shared_users(&self) -> Arc<UserStore> {
        Arc::clone(&self.users)
    }

    /// The user who signed a request with `headers`, received at `now`.
    pub fn authenticate(&self, headers: &HeaderMap, now: SystemTime) -> Result<Arc<User>, Denied> {
        let unauthenticated = |m: String| Err(Denied::Unauthenticated(m));
        let Some(header) = headers.get(AUTHORIZATION_HEADER) else {
            return unauthenticated(
                "authentication is required: the request has no authorization header (give \
                 the client an access key and a secret key)"
                    .into(),
            );
        };
        let header = header
            .to_str()
            .map_err(|_| Denied::Unauthenticated("the authorization header is not ASCII".into()))?;
        let credential = match signature::parse_authorization(header) {
            Ok(Some(c)) => c,
            Ok(None) => {
                return unauthenticated(
                    "authentication is required: the request names no access key".into(),
                )
            }
            Err(e) => return unauthenticated(e.to_string()),
        };
        let Some(user) = self.users.get(credential.access_key) else {
            return unauthenticated(format!(
                "unknown access key {:?}",
                credential.access_key.chars().take(64).collect::<String>()
            ));
        };
        let date_time = headers
            .get(DATE_TIME_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Denied::Unauthenticated("the request has no x-mq-date-time header to sign".into())
            })?;
        if !signature::verify(user.secret_key.as_bytes(), date_time, &credential.signature) {
            return unauthenticated(format!(
                "bad signature for access key {:?}: the secret key does not match",
                user.access_key
            ));
        }
        if let Some(max) = self.max_skew {
            let Some(at) = signature::parse_date_time(date_time) else {
                return unauthenticated(format!(
                    "x-mq-date-time {:?} is not a date-time",
                    date_time.chars().take(40).collect::<String>()
                ));
            };
            let skew = match now.duration_since(at) {
                Ok(behind) => behind,
                Err(ahead) => ahead.duration(),
            };
            if skew > max {
                return unauthenticated(format!(
                    "x-mq-date-time {date_time} is {} s away from the broker's clock, more than \
                     the {} s allowed: check the client's clock (and that it sends UTC)",
                    skew.as_secs(),
                    max.as_secs()
                ));
            }
        }
        Ok(user)
    }

    /// The user with `access_key` if `secret_key` is its secret (compared in constant time):
    /// how the web console signs in. The error says which check failed.
    pub fn check_secret(&self, access_key: &str, secret_key: &str) -> Result<Arc<User>, String> {
        let Some(user) = self.users.get(access_key) else {
            return Err(format!(
                "unknown access key {:?}",
                access_key.chars().take(64).collect::<String>()
            ));
        };
        // Both secrets keyed into the same MAC: equal tags iff equal secrets, and the
        // comparison of the tags takes the same time wherever they differ.
        const PROBE: &str = "rocketlog-console-sign-in";
        let Ok(mut mac) =
            <hmac::Hmac<sha1::Sha1> as hmac::Mac>::new_from_slice(secret_key.as_bytes())
        else {
            return Err("the secret key is not usable".into());
        };
        hmac::Mac::update(&mut mac, PROBE.as_bytes());
        let tag = hmac::Mac::finalize(mac).into_bytes();
        if !signature::verify(user.secret_key.as_bytes(), PROBE, &tag) {
            return Err(format!(
                "wrong secret key for access key {:?}",
                user.access_key
            ));
        }
        Ok(user)
    }

    /// Whether `user` may do every one of `needs`.
    pub fn authorize(&self, user: &User, needs: &[Need]) -> Result<(), Denied> {
        user.check(needs).map_err(|r| {
            let what = format!(
                "user {:?} may not {} {} {:?}",
                user.access_key, r.need.action, r.need.kind, r.need.name
            );
            Denied::Forbidden(match r.denied_by {
                Some(rule) => format!("{what}: denied by rule \"{rule}\""),
                None => format!("{what}: no rule allows it"),
            })
        })
    }
}
