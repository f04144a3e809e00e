//! Publishing messages.

use std::sync::{Arc, OnceLock};

use rocketlog_common::MessageIdGenerator;
use rocketlog_proto::v2;
use tracing::Instrument;

use crate::config::ClientConfig;
use crate::convert::{message_to_proto, resource};
use crate::core::ClientCore;
use crate::endpoints::Endpoints;
use crate::error::Error;
use crate::message::{Message, SendReceipt};
use crate::retry::RetryPolicy;
use crate::route::{MessageQueue, MessageType};
use crate::settings::Role;

/// Attempts per send until the server's policy arrives (and the policy proposed to it).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Sends messages. Cheap to clone; clones share connections, routes and settings, and any
/// number of sends may be in flight at once.
///
/// ```no_run
/// use rocketlog_client::{ClientConfig, Message, Producer};
///
/// # async fn demo() -> Result<(), rocketlog_client::Error> {
/// let config = ClientConfig::new("127.0.0.1:8081")?;
/// let producer = Producer::builder(config).topics(["orders"]).build().await?;
/// let receipt = producer
///     .send(Message::builder("orders").body("order 42 paid").tag("paid").build()?)
///     .await?;
/// println!("stored as {} at offset {}", receipt.message_id(), receipt.offset());
/// producer.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Producer {
    pub(crate) core: Arc<ClientCore>,
}

/// Builds a [`Producer`]; see there for an example.
#[derive(Debug)]
#[must_use = "a builder does nothing until build() is called"]
pub struct ProducerBuilder {
    config: ClientConfig,
    topics: Vec<String>,
    max_attempts: Option<u32>,
}

impl ProducerBuilder {
    /// Topics to prepare at start (routes fetched, brokers connected). Other topics work too;
    /// their first send fetches the route.
    pub fn topics<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.topics.extend(topics.into_iter().map(Into::into));
        self
    }

    /// Caps the attempts per send (first one included), overriding the server's policy; its
    /// backoff still applies. At least 1.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// Connects: fetches the routes of the given topics and completes the settings handshake
    /// with their brokers.
    pub async fn build(self) -> Result<Producer, Error> {
        let core = start_core(self.config, self.topics, self.max_attempts, None).await?;
        Ok(Producer { core })
    }
}

pub(crate) async fn start_core(
    config: ClientConfig,
    topics: Vec<String>,
    max_attempts: Option<u32>,
    checker: Option<crate::checker::SharedChecker>,
) -> Result<Arc<ClientCore>, Error> {
    let mut unique: Vec<String> = Vec::with_capacity(topics.len());
    for t in topics {
        rocketlog_common::validate_topic(&t).map_err(|e| Error::Config(e.to_string()))?;
        if !unique.contains(&t) {
            unique.push(t);
        }
    }
    let role = Role::Producer {
        topics: parking_lot::RwLock::new(unique),
    };
    let policy = RetryPolicy::immediate(max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS));
    ClientCore::start(config, role, policy, max_attempts, checker).await
}

fn message_ids() -> &'static MessageIdGenerator {
    static IDS: OnceLock<MessageIdGenerator> = OnceLock::new();
    IDS.get_or_init(MessageIdGenerator::for_this_process)
}

impl Producer {
    /// A builder for a producer using `config`.
    pub fn builder(config: ClientConfig) -> ProducerBuilder {
        ProducerBuilder {
            config,
            topics: Vec::new(),
            max_attempts: None,
        }
    }

    /// The id this client presents to servers.
    pub fn client_id(&self) -> &str {
        &self.core.client_id
    }

    /// Sends one message and waits for the broker's receipt.
    ///
    /// Failures that may pass (network errors, timeouts, throttling, server-side failures) are
    /// retried on another queue, on another broker when there is one, after the backoff of the
    /// server's retry policy, up to its attempt limit. Every attempt carries the same message
    /// id. FIFO messages retry on their group's queue only.
    pub async fn send(&self, message: Message) -> Result<SendReceipt, Error> {
        let kind = message.kind();
        let mut receipts = send_messages(&self.core, std::slice::from_ref(&message), kind).await?;
        receipts.pop().ok_or_else(|| Error::Protocol {
            reason: "no receipt for the message".into(),
            endpoint: self.core.config().access_point(),
        })
    }

    /// Sends several messages in one request to one queue, and returns their receipts in
    /// order. They must share a topic and kind (and a message group, for FIFO messages).
    pub async fn send_batch(&self, messages: Vec<Message>) -> Result<Vec<SendReceipt>, Error> {
        let Some(first) = messages.first() else {
            return Ok(Vec::new());
        };
        let kind = first.kind();
        send_messages(&self.core, &messages, kind).await
    }

    /// Cancels a delayed message before its delivery time, with the recall handle its
    /// [`SendReceipt::recall_handle`] carried. Returns the recalled message's id. A message
    /// already delivered, recalled before, or unknown fails with the server's code (rocketlog:
    /// `NotFound` family). Sent to the access point, as the official clients do.
    ///
    /// ```no_run
    /// use std::time::{Duration, SystemTime};
    /// use rocketlog_client::{ClientConfig, Message, Producer};
    ///
    /// # async fn demo() -> Result<(), rocketlog_client::Error> {
    /// let producer = Producer::builder(ClientConfig::new("127.0.0.1:8081")?).build().await?;
    /// let reminder = Message::builder("reminders")
    ///     .body("call back")
    ///     .delivery_time(SystemTime::now() + Duration::from_secs(3600))
    ///     .build()?;
    /// let receipt = producer.send(reminder).await?;
    /// if let Some(handle) = receipt.recall_handle() {
    ///     producer.recall_message("reminders", handle).await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn recall_message(&self, topic: &str, recall_handle: &str) -> Result<String, Error> {
        let core = &self.core;
        core.ensure_running()?;
        if recall_handle.is_empty() {
            return Err(Error::InvalidMessage("the recall handle is empty".into()));
        }
        let access_point = &core.config().access_point;
        let request = v2::RecallMessageRequest {
            topic: Some(resource(core.namespace(), topic)),
            recall_handle: recall_handle.to_owned(),
        };
        let response = core
            .rpc
            .unary(
                access_point,
                "RecallMessage",
                request,
                core.request_timeout(),
                |mut stub, r| async move { stub.recall_message(r).await },
            )
            .await?;
        Error::from_status(response.status.as_ref(), access_point)?;
        Ok(response.message_id)
    }

    /// Tells the brokers this producer is leaving and stops its background work. Sends still
    /// in flight finish; later ones fail with [`Error::Shutdown`].
    pub async fn shutdown(&self) {
        self.core.shutdown().await;
    }
}

/// Checks a batch: one topic, one kind, one group, bodies within the server's limit.
fn validate_batch(core: &ClientCore, messages: &[Message], kind: MessageType) -> Result<(), Error> {
    let first = messages
        .first()
        .ok_or_else(|| Error::InvalidMessage("no message to send".into()))?;
    let max = core.adopted.max_body_size();
    for m in messages {
        if m.topic != first.topic {
            return Err(Error::InvalidMessage(
                "messages of one batch must share a topic".into(),
            ));
        }
        if kind != MessageType::Transaction && m.kind() != kind {
            return Err(Error::InvalidMessage(
                "messages of one batch must be of one kind".into(),
            ));
        }
        if kind == MessageType::Transaction && m.kind() != MessageType::Normal {
            return Err(Error::InvalidMessage(
                "a transactional message cannot have a message group or a delivery time".into(),
            ));
        }
        if m.message_group != first.message_group {
            return Err(Error::InvalidMessage(
                "FIFO messages of one batch must share a message group".into(),
            ));
        }
        if m.body.len() > max {
            return Err(Error::BodyTooLarge {
                size: m.body.len(),
                max,
            });
        }
    }
    Ok(())
}

/// Sends `messages` as `kind`, with retries and failover.
pub(crate) async fn send_messages(
    core: &ClientCore,
    messages: &[Message],
    kind: MessageType,
) -> Result<Vec<SendReceipt>, Error> {
    core.ensure_running()?;
    validate_batch(core, messages, kind)?;
    let topic = messages[0].topic.as_str();
    let ids: Vec<String> = messages.iter().map(|_| message_ids().next_id()).collect();
    let span = tracing::debug_span!("send", topic, message_id = %ids[0], count = messages.len());
    async {
        let route = route_for_publishing(core, topic).await?;
        // Transactions are not retried: a second half message would be a second transaction.
        let max_attempts = if kind == MessageType::Transaction {
            1
        } else {
            core.adopted.max_attempts().max(1)
        };
        let candidates: Vec<Arc<MessageQueue>> = match &messages[0].message_group {
            Some(group) => route.queue_for_group(group).into_iter().collect(),
            None => route.send_candidates(max_attempts as usize),
        };
        if candidates.is_empty() {
            return Err(Error::NoRoute {
                topic: topic.to_owned(),
                reason: "no writable queue on a leader broker".into(),
            });
        }
        // Prefer queues that declare the kind; if none does, let the server judge (its error
        // carries the code).
        let candidates = if candidates.iter().any(|q| q.accepts(kind)) {
            candidates.into_iter().filter(|q| q.accepts(kind)).collect()
        } else {
            candidates
        };
        let mut attempt = 1u32;
        loop {
            let queue = &candidates[(attempt as usize - 1) % candidates.len()];
            let result = send_once(core, queue, messages, &ids, kind).await;
            let error = match result {
                Ok(receipts) => {
                    if attempt > 1 {
                        tracing::debug!(attempt, "sent after retrying");
                    }
                    return Ok(receipts);
                }
                Err(e) => e,
            };
            if attempt >= max_attempts || !error.is_retryable() {
                return Err(error);
            }
            if error.suggests_route_refresh() {
                core.invalidate_route(topic);
            }
            let delay = core.adopted.retry_policy().delay(attempt);
            tracing::debug!(attempt, ?delay, error = %error, "send failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = core.cancel.cancelled() => return Err(error),
            }
            attempt += 1;
        }
    }
    .instrument(span)
    .await
}

/// The route of a topic to publish to; a new topic joins the producer's settings first so the
/// server knows this producer publishes it (transaction checks depend on it).
async fn route_for_publishing(
    core: &ClientCore,
    topic: &str,
) -> Result<Arc<crate::route::TopicRoute>, Error> {
    // A cached route means the topic is known: the fast path takes no lock.
    let route = match core.cached_route(topic) {
        Some(route) => route,
        None => {
            if let Role::Producer { topics } = &core.role {
                let known = topics.read().iter().any(|t| t == topic);
                if !known {
                    topics.write().push(topic.to_owned());
                    core.resend_settings();
                }
            }
            core.route(topic).await?
        }
    };
    if !route.has_writable() {
        core.invalidate_route(topic);
        return Err(Error::NoRoute {
            topic: topic.to_owned(),
            reason: "no writable queue on a leader broker".into(),
        });
    }
    Ok(route)
}

async fn send_once(
    core: &ClientCore,
    queue: &MessageQueue,
    messages: &[Message],
    ids: &[String],
    kind: MessageType,
) -> Result<Vec<SendReceipt>, Error> {
    let namespace = core.namespace();
    let request = v2::SendMessageRequest {
        messages: messages
            .iter()
            .zip(ids)
            .map(|(m, id)| message_to_proto(m, namespace, id, kind, queue.id))
            .collect(),
    };
    let endpoints = &queue.broker.endpoints;
    let response = core
        .rpc
        .unary(
            endpoints,
            "SendMessage",
            request,
            core.request_timeout(),
            |mut stub, r| async move { stub.send_message(r).await },
        )
        .await?;
    Error::from_status(response.status.as_ref(), endpoints)?;
    receipts(response.entries, ids, queue.id, endpoints)
}

/// Maps the send results of one SendMessage answer to the request's messages (`ids` are the
/// ids this client gave them, in order). Two shapes are accepted:
///
/// - one entry per message, in order (rocketlog; any server for a single message);
/// - for a batch, one entry for the whole batch, as the Apache RocketMQ 5 proxy answers: the
///   broker stores a batch as consecutive messages of one queue and reports one result whose
///   offset is the first message's. Its message id lists the batch's ids separated by commas
///   (proxy in cluster mode, where its remoting client joins them), mapped in order to the
///   messages; or it is one id the proxy made for the batch itself (local mode, the broker
///   inside the proxy), and each receipt then carries the id this client gave its message,
///   which is the id the message is stored and delivered under.
///
/// Any other count of entries or ids is [`Error::BatchReceiptMismatch`].
fn receipts(
    entries: Vec<v2::SendResultEntry>,
    ids: &[String],
    queue_id: i32,
    endpoints: &Endpoints,
) -> Result<Vec<SendReceipt>, Error> {
    let receipt = |message_id: String, entry: &v2::SendResultEntry, offset: i64| SendReceipt {
        message_id,
        queue_id,
        offset,
        transaction_id: Some(entry.transaction_id.clone()).filter(|t| !t.is_empty()),
        recall_handle: Some(entry.recall_handle.clone()).filter(|t| !t.is_empty()),
        endpoints: endpoints.clone(),
    };
    if entries.len() == ids.len() {
        let mut out = Vec::with_capacity(ids.len());
        for (entry, id) in entries.iter().zip(ids) {
            Error::from_status(entry.status.as_ref(), endpoints)?;
            let message_id = if entry.message_id.is_empty() {
                id.clone()
            } else {
                entry.message_id.clone()
            };
            out.push(receipt(message_id, entry, entry.offset));
        }
        return Ok(out);
    }
    let mismatch = |named: usize| Error::BatchReceiptMismatch {
        messages: ids.len(),
        entries: entries.len(),
        ids: named,
        endpoint: endpoints.to_string(),
    };
    let [entry] = entries.as_slice() else {
        return Err(mismatch(entries.len()));
    };
    Error::from_status(entry.status.as_ref(), endpoints)?;
    let named: Vec<&str> = entry
        .message_id
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let message_ids: Vec<String> = match named.len() {
        n if n == ids.len() => named.into_iter().map(str::to_owned).collect(),
        // One id for the whole batch (or none): it names no message of it.
        0 | 1 => ids.to_vec(),
        n => return Err(mismatch(n)),
    };
    Ok(message_ids
        .into_iter()
        .zip(0i64..)
        .map(|(id, i)| {
            let mut r = receipt(id, entry, entry.offset.saturating_add(i));
            // A recall handle names one delayed message, and a transaction id one half
            // message (the proxy fills it with the first message's id), not a batch.
            r.recall_handle = None;
            r.transaction_id = None;
            r
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Option<v2::Status> {
        Some(v2::Status {
            code: v2::Code::Ok as i32,
            message: "OK".into(),
        })
    }

    fn entry(message_id: &str, offset: i64) -> v2::SendResultEntry {
        v2::SendResultEntry {
            status: ok(),
            message_id: message_id.into(),
            offset,
            ..Default::default()
        }
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("01ID{i:04}")).collect()
    }

    fn endpoints() -> Endpoints {
        Endpoints::parse("127.0.0.1:8081").unwrap()
    }

    fn summary(receipts: &[SendReceipt]) -> Vec<(&str, i64, i32)> {
        receipts
            .iter()
            .map(|r| (r.message_id(), r.offset(), r.queue_id()))
            .collect()
    }

    #[test]
    fn one_entry_per_message() {
        let ids = ids(3);
        let entries = vec![entry("01ID0000", 7), entry("01ID0001", 8), entry("", 9)];
        let got = receipts(entries, &ids, 2, &endpoints()).unwrap();
        assert_eq!(
            summary(&got),
            [("01ID0000", 7, 2), ("01ID0001", 8, 2), ("01ID0002", 9, 2)]
        );
        assert!(got.iter().all(|r| r.endpoint() == "127.0.0.1:8081"));
    }

    #[test]
    fn single_message_keeps_its_recall_handle_and_transaction() {
        let mut e = entry("01ID0000", 3);
        e.recall_handle = "handle".into();
        e.transaction_id = "tx".into();
        let got = receipts(vec![e], &ids(1), 0, &endpoints()).unwrap();
        assert_eq!(got[0].recall_handle(), Some("handle"));
        assert_eq!(got[0].transaction_id(), Some("tx"));
    }

    #[test]
    fn one_entry_with_comma_separated_ids_maps_in_order() {
        let ids = ids(3);
        let mut e = entry("A1,A2, A3", 40);
        e.transaction_id = "A1".into();
        let got = receipts(vec![e], &ids, 5, &endpoints()).unwrap();
        assert_eq!(summary(&got), [("A1", 40, 5), ("A2", 41, 5), ("A3", 42, 5)]);
        assert!(got
            .iter()
            .all(|r| r.recall_handle().is_none() && r.transaction_id().is_none()));
    }

    #[test]
    fn one_entry_with_one_id_for_the_batch_keeps_the_clients_ids() {
        let ids = ids(32);
        let got = receipts(vec![entry("7F0000010001BATCH", 100)], &ids, 1, &endpoints()).unwrap();
        assert_eq!(got.len(), 32);
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.message_id(), ids[i]);
            assert_eq!(r.offset(), 100 + i as i64);
        }
    }

    #[test]
    fn id_count_mismatch_is_a_typed_error() {
        let e = receipts(vec![entry("A1,A2", 0)], &ids(3), 0, &endpoints()).unwrap_err();
        match &e {
            Error::BatchReceiptMismatch {
                messages: 3,
                entries: 1,
                ids: 2,
                endpoint,
            } => assert_eq!(endpoint, "127.0.0.1:8081"),
            other => panic!("unexpected error {other:?}"),
        }
        assert!(!e.is_retryable());
        let text = e.to_string();
        assert!(
            text.contains("batch of 3 messages") && text.contains("2 message ids"),
            "{text}"
        );
        let e = receipts(vec![entry("A1,A2,A3,A4", 0)], &ids(3), 0, &endpoints()).unwrap_err();
        assert!(
            matches!(e, Error::BatchReceiptMismatch { ids: 4, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn entry_count_mismatch_is_a_typed_error() {
        let entries = vec![entry("A1", 0), entry("A2", 1)];
        let e = receipts(entries, &ids(3), 0, &endpoints()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::BatchReceiptMismatch {
                    messages: 3,
                    entries: 2,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = receipts(Vec::new(), &ids(2), 0, &endpoints()).unwrap_err();
        assert!(
            matches!(e, Error::BatchReceiptMismatch { entries: 0, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn a_failed_batch_entry_is_the_servers_error() {
        let mut e = entry("", 0);
        e.status = Some(v2::Status {
            code: v2::Code::MasterPersistenceTimeout as i32,
            message: "flush timeout".into(),
        });
        let err = receipts(vec![e], &ids(4), 0, &endpoints()).unwrap_err();
        assert_eq!(err.code(), Some(v2::Code::MasterPersistenceTimeout));
    }
}
