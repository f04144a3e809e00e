//! Dead-lettering: a copy of the message goes to `%DLQ%<group>` queue 0, then the original
//! counts as finished for the group. The copy is made durable in the store before the original
//! is finished, so a crash in between dead-letters it twice rather than never.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rocketlog_common::names::dlq_topic;
use rocketlog_common::QueueOffset;
use rocketlog_store::{AppendMessage, StoredMessage};

use super::engine::{duration_ms, Inner, Slot};
use super::error::ConsumeError;
use super::journal::{Record, StateKey};
use super::types::{DLQ_ORIGIN_MESSAGE_ID_PROPERTY, DLQ_ORIGIN_TOPIC_PROPERTY};

/// How long a message whose dead-letter move failed waits before the move is retried.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// One in-flight message to move (its entry is flagged `dead_lettering` meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Job {
    pub queue_id: u32,
    pub offset: u64,
    /// Deliveries made so far (becomes the copy's reconsume times).
    pub attempt: u32,
}

/// The dead-letter copy of `msg`, consumed by `group` from `origin_topic`: same id, tag, keys,
/// body and properties, plus the origin topic and message id (the gRPC layer turns those into
/// `SystemProperties.dead_letter_queue`).
pub(super) fn dlq_message(msg: StoredMessage, group: &str, attempt: u32) -> AppendMessage {
    let origin_topic = msg.topic;
    let mut properties: Vec<(String, String)> = msg
        .properties
        .into_iter()
        .filter(|(k, _)| k != DLQ_ORIGIN_TOPIC_PROPERTY && k != DLQ_ORIGIN_MESSAGE_ID_PROPERTY)
        .collect();
    properties.push((DLQ_ORIGIN_TOPIC_PROPERTY.to_owned(), origin_topic));
    properties.push((
        DLQ_ORIGIN_MESSAGE_ID_PROPERTY.to_owned(),
        msg.message_id.clone(),
    ));
    AppendMessage {
        topic: dlq_topic(group),
        queue_id: 0,
        flags: msg.flags,
        tag: msg.tag,
        keys: msg.keys,
        message_id: msg.message_id,
        born_timestamp_ms: msg.born_timestamp_ms,
        born_host: msg.born_host,
        store_host: msg.store_host,
        reconsume_times: attempt,
        prepared_transaction_offset: 0,
        properties,
        body: msg.body,
    }
}

impl Inner {
    /// Moves one message to the dead-letter topic and finishes it. Blocks on the store's and
    /// the journal's flushes. On failure the message stays in flight and the move is retried
    /// when it expires again.
    pub(super) fn dead_letter(
        &self,
        key: &StateKey,
        slot: &Slot,
        job: Job,
    ) -> Result<(), ConsumeError> {
        if let Err(e) = self.copy_to_dlq(key, job) {
            let retry_at = self
                .config
                .clock
                .now_ms()
                .saturating_add(duration_ms(RETRY_AFTER_FAILURE));
            let mut st = slot.state.lock();
            if let Some(q) = st.queues.get_mut(&job.queue_id) {
                q.set_dead_lettering(job.offset, false);
                q.set_deadline(job.offset, retry_at);
            }
            return Err(e);
        }
        self.count_dead_lettered(&key.group);
        let ticket = {
            let mut st = slot.state.lock();
            match st.queues.get_mut(&job.queue_id) {
                Some(q) if q.in_flight(job.offset).is_some() => {
                    let ticket = self.record(&[Record::Finish {
                        key: key.clone(),
                        queue_id: job.queue_id,
                        offset: job.offset,
                    }])?;
                    q.finish(job.offset);
                    Some(ticket)
                }
                // Acked (or reset) while the copy was being written: nothing left to finish.
                _ => None,
            }
        };
        slot.notify.notify_waiters();
        if let Some(ticket) = ticket {
            self.journal.sync(ticket)?;
        }
        self.maybe_snapshot();
        Ok(())
    }

    fn count_dead_lettered(&self, group: &str) {
        if let Some(n) = self.dead_lettered.get(group) {
            n.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.dead_lettered
            .entry(group.to_owned())
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    fn copy_to_dlq(&self, key: &StateKey, job: Job) -> Result<(), ConsumeError> {
        let Some(msg) = self
            .store
            .get(&key.topic, job.queue_id, QueueOffset(job.offset))?
        else {
            // Aged out of the store: there is nothing left to copy.
            return Ok(());
        };
        let copy = dlq_message(msg, &key.group, job.attempt);
        self.store.append(copy)?.wait_durable()?;
        Ok(())
    }
}
