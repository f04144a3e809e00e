//! A consumer that receives when asked and acknowledges each message itself.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use crate::config::ClientConfig;
use crate::consumer::{self, ReceiveRequest};
use crate::core::ClientCore;
use crate::error::Error;
use crate::message::MessageView;
use crate::retry::RetryPolicy;
use crate::settings::{FilterExpression, Role};

/// How long a receive waits for messages by default (the proxy caps it at 20 s).
pub const DEFAULT_AWAIT_DURATION: Duration = Duration::from_secs(20);
/// Largest batch one receive asks for.
pub const MAX_RECEIVE_BATCH: u32 = 32;

/// Receives messages on demand; the caller acknowledges each one, or lets it come back after
/// its invisible duration. Cheap to clone.
///
/// ```no_run
/// use std::time::Duration;
/// use rocketlog_client::{ClientConfig, FilterExpression, SimpleConsumer};
///
/// # async fn demo() -> Result<(), rocketlog_client::Error> {
/// let config = ClientConfig::new("127.0.0.1:8081")?;
/// let consumer = SimpleConsumer::builder(config, "billing")
///     .subscribe("orders", FilterExpression::tag("paid||refunded"))
///     .await_duration(Duration::from_secs(5))
///     .build()
///     .await?;
/// for message in consumer.receive(16, Duration::from_secs(30)).await? {
///     println!("{}: {:?}", message.message_id(), message.body());
///     consumer.ack(&message).await?;
/// }
/// consumer.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SimpleConsumer {
    core: Arc<ClientCore>,
    next_topic: Arc<AtomicUsize>,
}

/// Builds a [`SimpleConsumer`]; see there for an example.
#[derive(Debug)]
#[must_use = "a builder does nothing until build() is called"]
pub struct SimpleConsumerBuilder {
    config: ClientConfig,
    group: String,
    subscriptions: BTreeMap<String, FilterExpression>,
    await_duration: Duration,
}

impl SimpleConsumerBuilder {
    /// Receives messages of `topic` that pass `filter`.
    pub fn subscribe(mut self, topic: impl Into<String>, filter: FilterExpression) -> Self {
        self.subscriptions.insert(topic.into(), filter);
        self
    }

    /// How long a receive waits on the server when no message is ready.
    pub fn await_duration(mut self, duration: Duration) -> Self {
        self.await_duration = duration;
        self
    }

    /// Connects: fetches routes and completes the settings handshake.
    pub async fn build(self) -> Result<SimpleConsumer, Error> {
        rocketlog_common::validate_group(&self.group).map_err(|e| Error::Config(e.to_string()))?;
        for topic in self.subscriptions.keys() {
            rocketlog_common::validate_topic(topic).map_err(|e| Error::Config(e.to_string()))?;
        }
        let role = Role::SimpleConsumer {
            group: self.group,
            subscriptions: RwLock::new(self.subscriptions),
            await_duration: self.await_duration,
        };
        let core =
            ClientCore::start(self.config, role, RetryPolicy::immediate(1), None, None).await?;
        Ok(SimpleConsumer {
            core,
            next_topic: Arc::new(AtomicUsize::new(0)),
        })
    }
}

impl SimpleConsumer {
    /// A builder for a consumer of `group`.
    pub fn builder(config: ClientConfig, group: impl Into<String>) -> SimpleConsumerBuilder {
        SimpleConsumerBuilder {
            config,
            group: group.into(),
            subscriptions: BTreeMap::new(),
            await_duration: DEFAULT_AWAIT_DURATION,
        }
    }

    /// The id this client presents to servers.
    pub fn client_id(&self) -> &str {
        &self.core.client_id
    }

    /// Adds or replaces a subscription.
    pub async fn subscribe(
        &self,
        topic: impl Into<String>,
        filter: FilterExpression,
    ) -> Result<(), Error> {
        let topic = topic.into();
        rocketlog_common::validate_topic(&topic).map_err(|e| Error::Config(e.to_string()))?;
        self.core.route(&topic).await?;
        if let Role::SimpleConsumer { subscriptions, .. } = &self.core.role {
            subscriptions.write().insert(topic, filter);
        }
        self.core.resend_settings();
        Ok(())
    }

    /// Stops receiving from `topic`.
    pub fn unsubscribe(&self, topic: &str) {
        if let Role::SimpleConsumer { subscriptions, .. } = &self.core.role {
            subscriptions.write().remove(topic);
        }
        self.core.resend_settings();
    }

    /// Receives up to `max_messages` (at most [`MAX_RECEIVE_BATCH`]) from one queue of one
    /// subscribed topic, waiting up to the await duration for the first. Each message stays
    /// invisible to other consumers of the group for `invisible_duration`; acknowledge it
    /// before then or it is delivered again.
    pub async fn receive(
        &self,
        max_messages: u32,
        invisible_duration: Duration,
    ) -> Result<Vec<MessageView>, Error> {
        self.core.ensure_running()?;
        if max_messages == 0 {
            return Err(Error::Config("max_messages must be at least 1".into()));
        }
        let Role::SimpleConsumer {
            subscriptions,
            await_duration,
            ..
        } = &self.core.role
        else {
            return Err(Error::Config("not a simple consumer".into()));
        };
        let (topic, filter) = {
            let subs = subscriptions.read();
            if subs.is_empty() {
                return Err(Error::Config("no subscription".into()));
            }
            let i = self.next_topic.fetch_add(1, Ordering::Relaxed) % subs.len();
            let (t, f) = subs
                .iter()
                .nth(i)
                .ok_or_else(|| Error::Config("no subscription".into()))?;
            (t.clone(), f.clone())
        };
        let route = self.core.route(&topic).await?;
        let queue = route.next_readable().ok_or_else(|| Error::NoRoute {
            topic: topic.clone(),
            reason: "no readable queue on a leader broker".into(),
        })?;
        let request = ReceiveRequest {
            queue: &queue,
            filter: &filter,
            batch_size: max_messages.min(MAX_RECEIVE_BATCH),
            invisible_duration: Some(invisible_duration),
            long_polling: *await_duration,
            attempt_id: None,
        };
        let result = tokio::select! {
            r = consumer::receive(&self.core, request) => r,
            _ = self.core.cancel.cancelled() => Err(Error::Shutdown),
        };
        if let Err(e) = &result {
            if e.suggests_route_refresh() {
                self.core.invalidate_route(&topic);
            }
        }
        result
    }

    /// Acknowledges a message: it will not be delivered to this group again.
    pub async fn ack(&self, message: &MessageView) -> Result<(), Error> {
        consumer::ack(&self.core, message).await
    }

    /// Hides the message for `duration` from now (to take more time, or `ZERO` to have it
    /// delivered again at once). The message's receipt handle is replaced by the new one.
    pub async fn change_invisible_duration(
        &self,
        message: &mut MessageView,
        duration: Duration,
    ) -> Result<(), Error> {
        consumer::change_invisible_duration(&self.core, message, duration).await
    }

    /// Tells the brokers this consumer is leaving and stops its background work.
    pub async fn shutdown(&self) {
        self.core.shutdown().await;
    }
}
