//! The settings a client gets back on its Telemetry stream: its own settings with the server's
//! fields written over them, exactly as the proxy does (`GrpcClientSettingsManager`).

use std::time::Duration;

use rocketlog_proto::v2;

use super::convert::proto_duration;

/// Producer retry policy: 3 attempts, exponential 10 ms .. 1 s, x2 (the proxy's).
const PRODUCER_MAX_ATTEMPTS: i32 = 3;
const PRODUCER_BACKOFF_INITIAL: Duration = Duration::from_millis(10);
const PRODUCER_BACKOFF_MAX: Duration = Duration::from_secs(1);
const PRODUCER_BACKOFF_MULTIPLIER: f32 = 2.0;

/// Consumer redelivery delays by attempt: 1s 5s 10s 30s 1m 2m .. 10m 20m 30m 1h 2h.
pub fn consumer_backoff() -> Vec<Duration> {
    let mut next = vec![
        Duration::from_secs(1),
        Duration::from_secs(5),
        Duration::from_secs(10),
        Duration::from_secs(30),
    ];
    next.extend((1..=10).map(|m| Duration::from_secs(60 * m)));
    next.extend([
        Duration::from_secs(20 * 60),
        Duration::from_secs(30 * 60),
        Duration::from_secs(3600),
        Duration::from_secs(2 * 3600),
    ]);
    next
}

/// What the server decides for one client.
#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    pub max_body_size: usize,
    pub receive_batch_size: u32,
    pub long_polling_timeout: Duration,
    pub max_delivery_attempts: u32,
    /// Consumers: the group gets FIFO delivery.
    pub fifo: bool,
}

/// The client's settings with the server fields applied.
pub fn merge(mut settings: v2::Settings, server: &ServerSettings) -> v2::Settings {
    match &mut settings.pub_sub {
        Some(v2::settings::PubSub::Publishing(p)) => {
            settings.backoff_policy = Some(v2::RetryPolicy {
                max_attempts: PRODUCER_MAX_ATTEMPTS,
                strategy: Some(v2::retry_policy::Strategy::ExponentialBackoff(
                    v2::ExponentialBackoff {
                        initial: Some(proto_duration(PRODUCER_BACKOFF_INITIAL)),
                        max: Some(proto_duration(PRODUCER_BACKOFF_MAX)),
                        multiplier: PRODUCER_BACKOFF_MULTIPLIER,
                    },
                )),
            });
            p.max_body_size = i32::try_from(server.max_body_size).unwrap_or(i32::MAX);
            p.validate_message_type = true;
        }
        Some(v2::settings::PubSub::Subscription(s)) => {
            s.receive_batch_size =
                Some(i32::try_from(server.receive_batch_size).unwrap_or(i32::MAX));
            s.long_polling_timeout = Some(proto_duration(server.long_polling_timeout));
            s.fifo = Some(server.fifo);
            settings.backoff_policy = Some(v2::RetryPolicy {
                max_attempts: i32::try_from(server.max_delivery_attempts).unwrap_or(i32::MAX),
                strategy: Some(v2::retry_policy::Strategy::CustomizedBackoff(
                    v2::CustomizedBackoff {
                        next: consumer_backoff().into_iter().map(proto_duration).collect(),
                    },
                )),
            });
        }
        None => {}
    }
    settings.metric = Some(v2::Metric {
        on: false,
        endpoints: None,
    });
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: ServerSettings = ServerSettings {
        max_body_size: 4 << 20,
        receive_batch_size: 32,
        long_polling_timeout: Duration::from_secs(20),
        max_delivery_attempts: 17,
        fifo: true,
    };

    #[test]
    fn producer_fields() {
        let client = v2::Settings {
            client_type: Some(v2::ClientType::Producer as i32),
            request_timeout: Some(proto_duration(Duration::from_secs(3))),
            pub_sub: Some(v2::settings::PubSub::Publishing(v2::Publishing {
                topics: vec![v2::Resource {
                    resource_namespace: String::new(),
                    name: "t".into(),
                }],
                max_body_size: 128 << 20,
                validate_message_type: false,
            })),
            ..Default::default()
        };
        let s = merge(client, &SERVER);
        let Some(v2::settings::PubSub::Publishing(p)) = &s.pub_sub else {
            panic!("publishing kept");
        };
        assert_eq!(p.max_body_size, 4_194_304);
        assert!(p.validate_message_type);
        assert_eq!(p.topics.len(), 1);
        let policy = s.backoff_policy.unwrap();
        assert_eq!(policy.max_attempts, 3);
        match policy.strategy {
            Some(v2::retry_policy::Strategy::ExponentialBackoff(e)) => {
                assert_eq!(e.initial.unwrap().nanos, 10_000_000);
                assert_eq!(e.max.unwrap().seconds, 1);
                assert_eq!(e.multiplier, 2.0);
            }
            other => panic!("exponential expected, got {other:?}"),
        }
        assert!(!s.metric.unwrap().on);
        assert_eq!(s.request_timeout.unwrap().seconds, 3);
    }

    #[test]
    fn consumer_fields() {
        let client = v2::Settings {
            client_type: Some(v2::ClientType::PushConsumer as i32),
            pub_sub: Some(v2::settings::PubSub::Subscription(v2::Subscription {
                group: Some(v2::Resource {
                    resource_namespace: String::new(),
                    name: "g".into(),
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let s = merge(client, &SERVER);
        let Some(v2::settings::PubSub::Subscription(sub)) = &s.pub_sub else {
            panic!("subscription kept");
        };
        assert_eq!(sub.receive_batch_size, Some(32));
        assert_eq!(sub.long_polling_timeout.unwrap().seconds, 20);
        assert_eq!(sub.fifo, Some(true));
        let policy = s.backoff_policy.unwrap();
        assert_eq!(policy.max_attempts, 17);
        match policy.strategy {
            Some(v2::retry_policy::Strategy::CustomizedBackoff(c)) => {
                let secs: Vec<i64> = c.next.iter().map(|d| d.seconds).collect();
                assert_eq!(
                    secs,
                    vec![
                        1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800,
                        3600, 7200
                    ]
                );
            }
            other => panic!("customized expected, got {other:?}"),
        }
    }
}
