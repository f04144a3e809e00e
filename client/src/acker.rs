//! Batched acknowledgements for the push consumer.
//!
//! Handlers finish one message at a time, but an `AckMessage` request can carry many entries.
//! The acker sends a round of requests (one per broker and topic) as soon as the previous
//! round is answered, with every ack queued by then, as a group commit does: no timer delays a lone ack, and under load
//! the acks that pile up while requests are in flight share the next one. Each caller still
//! gets its own entry's result.

use std::sync::Arc;

use rocketlog_proto::v2;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::convert::resource;
use crate::core::ClientCore;
use crate::endpoints::Endpoints;
use crate::error::Error;
use crate::message::MessageView;

/// Most entries in one round (the broker's limit per request is 1,024; this bounds one failure).
const MAX_BATCH: usize = 256;
/// Rounds in flight at once; acks queue behind them and form the next round. One round (its
/// requests to different brokers run side by side) batched best: measured with `rocketlog
/// bench consume --kind push`, 1 round in flight gave 14 acks per request and 31-34 k msgs/s,
/// 2 gave 6.6 and 24-27 k, 4 gave 4.2 and 24-27 k.
const MAX_IN_FLIGHT: usize = 1;

struct Pending {
    endpoints: Endpoints,
    topic: String,
    entry: v2::AckMessageEntry,
    reply: oneshot::Sender<Result<(), Error>>,
}

/// The handle handlers ack through. The background task ends when the handle is dropped.
#[derive(Debug)]
pub(crate) struct Acker {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Acker {
    pub(crate) fn spawn(core: Arc<ClientCore>) -> Acker {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(core, rx));
        Acker { queue }
    }

    /// Acknowledges one delivery; resolves with that entry's result.
    pub(crate) async fn ack(&self, message: &MessageView) -> Result<(), Error> {
        let endpoints = message.endpoints.clone().ok_or_else(|| {
            Error::InvalidMessage("this message was not received by a consumer".into())
        })?;
        let (reply, result) = oneshot::channel();
        let pending = Pending {
            endpoints,
            topic: message.topic.clone(),
            entry: v2::AckMessageEntry {
                message_id: message.message_id.clone(),
                receipt_handle: message.receipt_handle.clone(),
                ..Default::default()
            },
            reply,
        };
        self.queue.send(pending).map_err(|_| Error::Shutdown)?;
        result.await.map_err(|_| Error::Shutdown)?
    }
}

async fn run(core: Arc<ClientCore>, mut queue: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        // Wait for a free slot first: while none is free, acks accumulate in the queue.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let core = core.clone();
        tokio::spawn(async move {
            let groups = by_destination(batch);
            futures::future::join_all(groups.into_iter().map(|g| flush(&core, g))).await;
            drop(slot);
        });
    }
}

/// Splits a batch into one list per broker and topic (one request each).
fn by_destination(batch: Vec<Pending>) -> Vec<Vec<Pending>> {
    let mut groups: Vec<Vec<Pending>> = Vec::new();
    for p in batch {
        match groups
            .iter_mut()
            .find(|g| g[0].endpoints == p.endpoints && g[0].topic == p.topic)
        {
            Some(g) => g.push(p),
            None => groups.push(vec![p]),
        }
    }
    groups
}

async fn flush(core: &ClientCore, group: Vec<Pending>) {
    let endpoints = group[0].endpoints.clone();
    let request = v2::AckMessageRequest {
        group: core.group_resource(),
        topic: Some(resource(core.namespace(), &group[0].topic)),
        entries: group.iter().map(|p| p.entry.clone()).collect(),
    };
    let response = core
        .rpc
        .unary(
            &endpoints,
            "AckMessage",
            request,
            core.request_timeout(),
            |mut stub, r| async move { stub.ack_message(r).await },
        )
        .await;
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            for p in group {
                // The waiter may have gone (its handler task was dropped).
                let _ = p.reply.send(Err(duplicate(&e)));
            }
            return;
        }
    };
    let top = Error::from_status(response.status.as_ref(), &endpoints);
    for p in group {
        let entry = response
            .entries
            .iter()
            .find(|e| e.receipt_handle == p.entry.receipt_handle);
        let result = match (entry, &top) {
            (Some(e), _) => Error::from_status(e.status.as_ref(), &endpoints),
            // No entry for it: the top status speaks for the whole request.
            (None, Ok(())) => Err(Error::Protocol {
                reason: "no ack result for the message".into(),
                endpoint: endpoints.to_string(),
            }),
            (None, Err(e)) => Err(duplicate(e)),
        };
        let _ = p.reply.send(result);
    }
}

/// The same failure for another waiter of the batch.
fn duplicate(e: &Error) -> Error {
    match e {
        Error::Config(s) => Error::Config(s.clone()),
        Error::InvalidMessage(s) => Error::InvalidMessage(s.clone()),
        Error::BodyTooLarge { size, max } => Error::BodyTooLarge {
            size: *size,
            max: *max,
        },
        Error::Server {
            code,
            message,
            endpoint,
        } => Error::Server {
            code: *code,
            message: message.clone(),
            endpoint: endpoint.clone(),
        },
        Error::Rpc { status, endpoint } => Error::Rpc {
            status: status.clone(),
            endpoint: endpoint.clone(),
        },
        Error::Connect { source, endpoint } => Error::Rpc {
            status: tonic::Status::unavailable(source.to_string()),
            endpoint: endpoint.clone(),
        },
        Error::Timeout {
            operation,
            timeout,
            endpoint,
        } => Error::Timeout {
            operation,
            timeout: *timeout,
            endpoint: endpoint.clone(),
        },
        Error::Protocol { reason, endpoint } => Error::Protocol {
            reason: reason.clone(),
            endpoint: endpoint.clone(),
        },
        Error::BatchReceiptMismatch {
            messages,
            entries,
            ids,
            endpoint,
        } => Error::BatchReceiptMismatch {
            messages: *messages,
            entries: *entries,
            ids: *ids,
            endpoint: endpoint.clone(),
        },
        Error::NoRoute { topic, reason } => Error::NoRoute {
            topic: topic.clone(),
            reason: reason.clone(),
        },
        Error::Shutdown => Error::Shutdown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    fn pending(endpoint: &str, topic: &str, handle: &str) -> Pending {
        Pending {
            endpoints: Endpoints::parse(endpoint).unwrap(),
            topic: topic.into(),
            entry: v2::AckMessageEntry {
                receipt_handle: handle.into(),
                ..Default::default()
            },
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn batches_split_by_broker_and_topic_in_order() {
        let batch = vec![
            pending("127.0.0.1:1", "a", "h1"),
            pending("127.0.0.1:2", "a", "h2"),
            pending("127.0.0.1:1", "b", "h3"),
            pending("127.0.0.1:1", "a", "h4"),
        ];
        let groups: Vec<Vec<String>> = by_destination(batch)
            .into_iter()
            .map(|g| g.into_iter().map(|p| p.entry.receipt_handle).collect())
            .collect();
        assert_eq!(groups, [vec!["h1", "h4"], vec!["h2"], vec!["h3"]]);
    }

    #[test]
    fn duplicated_errors_keep_their_code() {
        let e = Error::Server {
            code: Code::InvalidReceiptHandle,
            message: "expired".into(),
            endpoint: "e".into(),
        };
        assert_eq!(duplicate(&e).code(), Some(Code::InvalidReceiptHandle));
        let e = Error::Rpc {
            status: tonic::Status::unavailable("down"),
            endpoint: "e".into(),
        };
        assert!(duplicate(&e).is_retryable());
    }
}
