//! What a client tells the server about itself in the Telemetry handshake, and what it adopts
//! from the server's reply.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use rocketlog_proto::v2;

use crate::client_id;
use crate::convert::{
    duration_from_proto, duration_to_proto, endpoints_to_proto, resource, retry_policy_from_proto,
    retry_policy_to_proto,
};
use crate::endpoints::Endpoints;
use crate::retry::RetryPolicy;
use crate::signing::SDK_VERSION;

/// Body limit assumed until the server says (the proxy's default).
pub(crate) const DEFAULT_MAX_BODY_SIZE: usize = 4 * 1024 * 1024;
/// Receive batch assumed until the server says.
pub(crate) const DEFAULT_RECEIVE_BATCH_SIZE: u32 = 32;
/// Long polling time of push consumers until the server says.
pub(crate) const DEFAULT_LONG_POLLING_TIMEOUT: Duration = Duration::from_secs(30);

/// Which records a consumer wants from a topic.
///
/// ```
/// use rocketlog_client::FilterExpression;
///
/// let everything = FilterExpression::all();
/// let some_tags = FilterExpression::tag("TagA||TagB");
/// assert_eq!(some_tags.expression(), "TagA||TagB");
/// # let _ = everything;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterExpression {
    pub(crate) kind: FilterKind,
    pub(crate) expression: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FilterKind {
    Tag,
    Sql,
}

impl FilterExpression {
    /// Every message (`*`).
    pub fn all() -> Self {
        FilterExpression::tag("*")
    }

    /// Messages whose tag is one of `a||b||c`, or every message for `*`.
    pub fn tag(expression: impl Into<String>) -> Self {
        FilterExpression {
            kind: FilterKind::Tag,
            expression: expression.into(),
        }
    }

    /// An SQL-92 condition over message properties (if the server supports it).
    pub fn sql(expression: impl Into<String>) -> Self {
        FilterExpression {
            kind: FilterKind::Sql,
            expression: expression.into(),
        }
    }

    /// The expression text.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub(crate) fn to_proto(&self) -> v2::FilterExpression {
        let kind = match self.kind {
            FilterKind::Tag => v2::FilterType::Tag,
            FilterKind::Sql => v2::FilterType::Sql,
        };
        v2::FilterExpression {
            r#type: kind as i32,
            expression: self.expression.clone(),
        }
    }
}

impl Default for FilterExpression {
    fn default() -> Self {
        FilterExpression::all()
    }
}

/// The kind of client and what it publishes or subscribes to.
#[derive(Debug)]
pub(crate) enum Role {
    Producer {
        /// Topics published to; grows as the producer sends to new topics (the server checks
        /// transactions only with producers that name the topic).
        topics: RwLock<Vec<String>>,
    },
    SimpleConsumer {
        group: String,
        subscriptions: RwLock<BTreeMap<String, FilterExpression>>,
        await_duration: Duration,
    },
    PushConsumer {
        group: String,
        subscriptions: BTreeMap<String, FilterExpression>,
    },
    PullConsumer {
        group: String,
        /// Topics of the assigned queues, with their filters.
        subscriptions: RwLock<BTreeMap<String, FilterExpression>>,
    },
}

impl Role {
    pub(crate) fn client_type(&self) -> v2::ClientType {
        match self {
            Role::Producer { .. } => v2::ClientType::Producer,
            Role::SimpleConsumer { .. } => v2::ClientType::SimpleConsumer,
            Role::PushConsumer { .. } => v2::ClientType::PushConsumer,
            Role::PullConsumer { .. } => v2::ClientType::PullConsumer,
        }
    }

    pub(crate) fn group(&self) -> Option<&str> {
        match self {
            Role::Producer { .. } => None,
            Role::SimpleConsumer { group, .. }
            | Role::PushConsumer { group, .. }
            | Role::PullConsumer { group, .. } => Some(group),
        }
    }

    /// Topics whose routes the client needs.
    pub(crate) fn topics(&self) -> Vec<String> {
        match self {
            Role::Producer { topics } => topics.read().clone(),
            Role::SimpleConsumer { subscriptions, .. } => {
                subscriptions.read().keys().cloned().collect()
            }
            Role::PushConsumer { subscriptions, .. } => subscriptions.keys().cloned().collect(),
            Role::PullConsumer { subscriptions, .. } => {
                subscriptions.read().keys().cloned().collect()
            }
        }
    }
}

/// Values the server decides, with defaults until its first reply. Read on hot paths without
/// locks except the retry policy (read on failures only).
#[derive(Debug)]
pub(crate) struct Adopted {
    max_body_size: AtomicUsize,
    receive_batch_size: AtomicU32,
    long_polling_millis: AtomicU64,
    fifo: AtomicBool,
    max_attempts: AtomicU32,
    retry_policy: RwLock<RetryPolicy>,
    /// A policy the user fixed for this client (then the server's attempts count is ignored).
    user_max_attempts: Option<u32>,
}

impl Adopted {
    pub(crate) fn new(initial_policy: RetryPolicy, user_max_attempts: Option<u32>) -> Adopted {
        Adopted {
            max_body_size: AtomicUsize::new(DEFAULT_MAX_BODY_SIZE),
            receive_batch_size: AtomicU32::new(DEFAULT_RECEIVE_BATCH_SIZE),
            long_polling_millis: AtomicU64::new(DEFAULT_LONG_POLLING_TIMEOUT.as_millis() as u64),
            fifo: AtomicBool::new(false),
            max_attempts: AtomicU32::new(initial_policy.max_attempts()),
            retry_policy: RwLock::new(initial_policy),
            user_max_attempts,
        }
    }

    pub(crate) fn max_body_size(&self) -> usize {
        self.max_body_size.load(Ordering::Relaxed)
    }

    pub(crate) fn receive_batch_size(&self) -> u32 {
        self.receive_batch_size.load(Ordering::Relaxed)
    }

    pub(crate) fn long_polling_timeout(&self) -> Duration {
        Duration::from_millis(self.long_polling_millis.load(Ordering::Relaxed))
    }

    pub(crate) fn fifo(&self) -> bool {
        self.fifo.load(Ordering::Relaxed)
    }

    pub(crate) fn max_attempts(&self) -> u32 {
        self.max_attempts.load(Ordering::Relaxed)
    }

    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        self.retry_policy.read().clone()
    }

    /// Takes the server's values from a settings reply. Values that would break the client
    /// (a zero body limit or batch size, no backoff strategy) are ignored.
    pub(crate) fn apply(&self, settings: &v2::Settings) {
        if let Some(policy) = settings
            .backoff_policy
            .as_ref()
            .and_then(retry_policy_from_proto)
        {
            let policy = match self.user_max_attempts {
                Some(n) => policy.with_max_attempts(n),
                None => policy,
            };
            self.max_attempts
                .store(policy.max_attempts(), Ordering::Relaxed);
            *self.retry_policy.write() = policy;
        }
        match &settings.pub_sub {
            Some(v2::settings::PubSub::Publishing(p)) => {
                if let Ok(max) = usize::try_from(p.max_body_size) {
                    if max > 0 {
                        self.max_body_size.store(max, Ordering::Relaxed);
                    }
                }
            }
            Some(v2::settings::PubSub::Subscription(s)) => {
                if let Some(fifo) = s.fifo {
                    self.fifo.store(fifo, Ordering::Relaxed);
                }
                if let Some(n) = s.receive_batch_size.and_then(|n| u32::try_from(n).ok()) {
                    if n > 0 {
                        self.receive_batch_size.store(n, Ordering::Relaxed);
                    }
                }
                if let Some(d) = &s.long_polling_timeout {
                    let d = duration_from_proto(d);
                    if !d.is_zero() {
                        self.long_polling_millis
                            .store(d.as_millis() as u64, Ordering::Relaxed);
                    }
                }
            }
            None => {}
        }
    }
}

/// The settings a client sends first on each Telemetry stream (and again every few minutes).
pub(crate) fn settings_to_proto(
    role: &Role,
    namespace: &str,
    access_point: &Endpoints,
    request_timeout: Duration,
    retry_policy: &RetryPolicy,
) -> v2::Settings {
    let pub_sub = match role {
        Role::Producer { topics } => v2::settings::PubSub::Publishing(v2::Publishing {
            topics: topics
                .read()
                .iter()
                .map(|t| resource(namespace, t))
                .collect(),
            max_body_size: 0,
            validate_message_type: true,
        }),
        Role::SimpleConsumer {
            group,
            subscriptions,
            await_duration,
        } => v2::settings::PubSub::Subscription(v2::Subscription {
            group: Some(resource(namespace, group)),
            subscriptions: entries(namespace, &subscriptions.read()),
            long_polling_timeout: Some(duration_to_proto(*await_duration)),
            ..Default::default()
        }),
        Role::PushConsumer {
            group,
            subscriptions,
        } => v2::settings::PubSub::Subscription(v2::Subscription {
            group: Some(resource(namespace, group)),
            subscriptions: entries(namespace, subscriptions),
            ..Default::default()
        }),
        Role::PullConsumer {
            group,
            subscriptions,
        } => v2::settings::PubSub::Subscription(v2::Subscription {
            group: Some(resource(namespace, group)),
            subscriptions: entries(namespace, &subscriptions.read()),
            ..Default::default()
        }),
    };
    v2::Settings {
        client_type: Some(role.client_type() as i32),
        access_point: Some(endpoints_to_proto(access_point)),
        backoff_policy: matches!(role, Role::Producer { .. })
            .then(|| retry_policy_to_proto(retry_policy)),
        request_timeout: Some(duration_to_proto(request_timeout)),
        pub_sub: Some(pub_sub),
        user_agent: Some(v2::Ua {
            language: v2::Language::Rust as i32,
            version: SDK_VERSION.to_owned(),
            platform: client_id::platform(),
            hostname: client_id::host_name().to_owned(),
        }),
        ..Default::default()
    }
}

fn entries(
    namespace: &str,
    subscriptions: &BTreeMap<String, FilterExpression>,
) -> Vec<v2::SubscriptionEntry> {
    subscriptions
        .iter()
        .map(|(topic, filter)| v2::SubscriptionEntry {
            topic: Some(resource(namespace, topic)),
            expression: Some(filter.to_proto()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::immediate(3)
    }

    #[test]
    fn producer_settings_name_topics_and_policy() {
        let role = Role::Producer {
            topics: RwLock::new(vec!["a".into(), "b".into()]),
        };
        let ap = Endpoints::parse("127.0.0.1:8081").unwrap();
        let s = settings_to_proto(&role, "ns", &ap, Duration::from_secs(3), &policy());
        assert_eq!(s.client_type, Some(v2::ClientType::Producer as i32));
        assert!(s.backoff_policy.is_some());
        let Some(v2::settings::PubSub::Publishing(p)) = s.pub_sub else {
            panic!("not publishing");
        };
        assert_eq!(p.topics.len(), 2);
        assert_eq!(p.topics[0].resource_namespace, "ns");
        assert_eq!(s.user_agent.unwrap().language, v2::Language::Rust as i32);
    }

    #[test]
    fn consumer_settings_name_group_and_filters() {
        let role = Role::SimpleConsumer {
            group: "g".into(),
            subscriptions: RwLock::new(BTreeMap::from([(
                "t".to_string(),
                FilterExpression::tag("x||y"),
            )])),
            await_duration: Duration::from_secs(10),
        };
        let ap = Endpoints::parse("127.0.0.1:8081").unwrap();
        let s = settings_to_proto(&role, "", &ap, Duration::from_secs(3), &policy());
        let Some(v2::settings::PubSub::Subscription(sub)) = s.pub_sub else {
            panic!("not subscription");
        };
        assert_eq!(sub.group.unwrap().name, "g");
        assert_eq!(
            sub.subscriptions[0].expression.as_ref().unwrap().expression,
            "x||y"
        );
        assert_eq!(sub.long_polling_timeout.unwrap().seconds, 10);
        assert!(s.backoff_policy.is_none());
    }

    #[test]
    fn adopts_server_values_but_ignores_harmful_ones() {
        let a = Adopted::new(policy(), None);
        assert_eq!(a.max_body_size(), DEFAULT_MAX_BODY_SIZE);
        let server_policy =
            RetryPolicy::exponential(5, Duration::from_millis(10), Duration::from_secs(1), 2.0);
        a.apply(&v2::Settings {
            backoff_policy: Some(retry_policy_to_proto(&server_policy)),
            pub_sub: Some(v2::settings::PubSub::Publishing(v2::Publishing {
                max_body_size: 1024,
                ..Default::default()
            })),
            ..Default::default()
        });
        assert_eq!(a.max_body_size(), 1024);
        assert_eq!(a.max_attempts(), 5);
        assert_eq!(a.retry_policy(), server_policy);

        a.apply(&v2::Settings {
            pub_sub: Some(v2::settings::PubSub::Publishing(v2::Publishing::default())),
            ..Default::default()
        });
        assert_eq!(a.max_body_size(), 1024, "a zero limit is ignored");

        let fixed = Adopted::new(policy(), Some(2));
        fixed.apply(&v2::Settings {
            backoff_policy: Some(retry_policy_to_proto(&server_policy)),
            ..Default::default()
        });
        assert_eq!(fixed.max_attempts(), 2, "the user's attempt limit wins");
        assert_eq!(fixed.retry_policy().delay(2), Duration::from_millis(20));

        let c = Adopted::new(policy(), None);
        c.apply(&v2::Settings {
            pub_sub: Some(v2::settings::PubSub::Subscription(v2::Subscription {
                fifo: Some(true),
                receive_batch_size: Some(8),
                long_polling_timeout: Some(duration_to_proto(Duration::from_secs(20))),
                ..Default::default()
            })),
            ..Default::default()
        });
        assert!(c.fifo());
        assert_eq!(c.receive_batch_size(), 8);
        assert_eq!(c.long_polling_timeout(), Duration::from_secs(20));
    }
}
