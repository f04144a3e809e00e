//! Receiving (pop): one pass takes expired in-flight messages first (redelivery, or the
//! dead-letter queue past the max attempts), then held-back FIFO messages whose group is free,
//! then new messages from each queue's read cursor, round robin over the queues. When a pass
//! finds nothing, `receive` long-polls: it waits for the store to dispatch more, for a state
//! change of the (group, topic) (ack, nack, reset), or for the next in-flight deadline.

use std::collections::HashSet;
use std::time::Duration;

use rocketlog_common::QueueOffset;
use rocketlog_store::{StoreError, StoredMessage};
use tokio::time::Instant;

use super::dlq::Job;
use super::engine::{duration_ms, Consumption, Inner, Slot};
use super::error::ConsumeError;
use super::journal::{Record, StateKey};
use super::queue_state::{InFlight, QueueState};
use super::receipt::ReceiptHandle;
use super::recovery::TopicState;
use super::types::{Delivery, InitialPosition, ReceiveRequest, MESSAGE_GROUP_PROPERTY};

/// Reads of one queue per pass (each reads up to the batch's remaining room), bounding a pass
/// that keeps meeting held-back or filtered messages.
const MAX_READS_PER_QUEUE: usize = 16;

/// `now + d`, capped a year ahead (an `Instant` overflow would panic).
fn far_instant(d: Duration) -> Instant {
    const CAP: Duration = Duration::from_secs(365 * 24 * 3600);
    Instant::now() + d.min(CAP)
}

/// The FIFO message group of a stored message.
pub(super) fn message_group(msg: &StoredMessage) -> Option<String> {
    msg.properties
        .iter()
        .find(|(k, _)| k == MESSAGE_GROUP_PROPERTY)
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty())
}

/// What one pass produced.
#[derive(Debug, Default)]
pub(super) struct Pass {
    pub deliveries: Vec<Delivery>,
    pub dead_letters: Vec<Job>,
    /// Earliest deadline of what is still in flight (when to look again).
    pub next_deadline_ms: Option<i64>,
}

/// One pass over a (group, topic), under its slot lock.
struct PassCtx<'a> {
    inner: &'a Inner,
    key: &'a StateKey,
    req: &'a ReceiveRequest,
    now_ms: i64,
    deadline_ms: i64,
    max_attempts: u32,
    records: Vec<Record>,
    out: Pass,
}

impl PassCtx<'_> {
    fn full(&self) -> bool {
        self.out.deliveries.len() >= self.req.batch_size
    }

    fn room(&self) -> usize {
        self.req
            .batch_size
            .saturating_sub(self.out.deliveries.len())
    }

    fn deliver(&mut self, q: &mut QueueState, queue_id: u32, msg: StoredMessage, attempt: u32) {
        let seq = self.inner.next_seq();
        let offset = msg.queue_offset.0;
        let group = message_group(&msg);
        q.set_in_flight(
            offset,
            InFlight {
                seq,
                attempt,
                deadline_ms: self.deadline_ms,
                message_group: group.clone(),
                dead_lettering: false,
            },
        );
        self.records.push(Record::Deliver {
            key: self.key.clone(),
            queue_id,
            offset,
            seq,
            attempt,
            deadline_ms: self.deadline_ms,
            message_group: group,
        });
        let receipt_handle = ReceiptHandle {
            queue_id,
            queue_offset: offset,
            seq,
        }
        .encode(&self.key.topic);
        self.out.deliveries.push(Delivery {
            message: msg,
            receipt_handle,
            delivery_attempt: attempt,
            invisible_until_ms: self.deadline_ms,
        });
    }

    /// Expired in-flight messages, oldest deadline first.
    fn redeliver(&mut self, st: &mut TopicState) -> Result<(), ConsumeError> {
        let mut expired: Vec<(i64, u32, u64)> = st
            .queues
            .iter()
            .flat_map(|(queue_id, q)| {
                q.expired(self.now_ms)
                    .map(move |(offset, f)| (f.deadline_ms, *queue_id, offset))
            })
            .collect();
        expired.sort_unstable();
        for (_, queue_id, offset) in expired {
            if self.full() {
                break;
            }
            let Some(q) = st.queues.get_mut(&queue_id) else {
                continue;
            };
            let Some(attempt) = q.in_flight(offset).map(|f| f.attempt) else {
                continue;
            };
            if attempt >= self.max_attempts {
                q.set_dead_lettering(offset, true);
                self.out.dead_letters.push(Job {
                    queue_id,
                    offset,
                    attempt,
                });
                continue;
            }
            let found = self
                .inner
                .store
                .get(&self.key.topic, queue_id, QueueOffset(offset))?;
            match found {
                None => {
                    // Aged out of the store: nothing left to deliver.
                    self.records.push(Record::Finish {
                        key: self.key.clone(),
                        queue_id,
                        offset,
                    });
                    q.finish(offset);
                }
                // The group's subscription no longer takes it: filtered out, as a new message
                // with that tag would be (leaving it would also make every long poll of this
                // filter spin on an expired deadline).
                Some(msg) if !self.req.filter.matches_tag(msg.tag.as_deref()) => {
                    self.records.push(Record::Finish {
                        key: self.key.clone(),
                        queue_id,
                        offset,
                    });
                    q.finish(offset);
                }
                Some(msg) => self.deliver(q, queue_id, msg, attempt + 1),
            }
        }
        Ok(())
    }

    /// Held-back FIFO messages whose message group has nothing in flight, in queue order.
    fn release_held(&mut self, q: &mut QueueState, queue_id: u32) -> Result<(), ConsumeError> {
        let mut blocked: HashSet<String> = HashSet::new();
        for (offset, group) in q.held() {
            if self.full() {
                break;
            }
            if self.req.fifo && (q.group_in_flight(&group) || blocked.contains(&group)) {
                blocked.insert(group);
                continue;
            }
            let found = self
                .inner
                .store
                .get(&self.key.topic, queue_id, QueueOffset(offset))?;
            match found {
                Some(msg) => self.deliver(q, queue_id, msg, 1),
                None => q.finish(offset),
            }
        }
        Ok(())
    }

    /// New messages of one queue from its read cursor.
    fn read_new(
        &mut self,
        q: &mut QueueState,
        queue_id: u32,
        max: u64,
    ) -> Result<(), ConsumeError> {
        let max_held = self.inner.config.max_held_per_queue;
        for _ in 0..MAX_READS_PER_QUEUE {
            if self.full() || (self.req.fifo && q.held_len() >= max_held) {
                return Ok(());
            }
            let from = q.skip_known(q.next());
            q.set_next(from);
            if from >= max {
                return Ok(());
            }
            let limit = q.next_known_after(from).unwrap_or(max).min(max);
            let want = usize::try_from(limit - from)
                .unwrap_or(usize::MAX)
                .min(self.room())
                .max(1);
            let filter = &self.req.filter;
            let read = match self.inner.store.read_queue(
                &self.key.topic,
                queue_id,
                QueueOffset(from),
                want,
                &|hash| filter.matches_hash(hash),
            ) {
                Ok(read) => read,
                // Retention moved the queue's minimum past the cursor since the range was read.
                Err(StoreError::OffsetOutOfRange { min, .. }) if min > from => {
                    q.clamp_min(min);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let mut cursor = from;
            let mut stopped_early = false;
            for msg in read.messages {
                let offset = msg.queue_offset.0;
                if offset < cursor {
                    continue;
                }
                q.mark_skipped(cursor, offset);
                cursor = offset + 1;
                if q.is_known(offset) {
                    continue;
                }
                if !self.req.filter.matches_tag(msg.tag.as_deref()) {
                    q.finish(offset);
                    continue;
                }
                if self.req.fifo {
                    if let Some(group) = message_group(&msg) {
                        if q.group_blocked(&group) {
                            q.hold(offset, group);
                            if q.held_len() >= max_held {
                                stopped_early = true;
                                break;
                            }
                            continue;
                        }
                    }
                }
                self.deliver(q, queue_id, msg, 1);
                if self.full() {
                    stopped_early = true;
                    break;
                }
            }
            if !stopped_early && read.next_offset.0 > cursor {
                q.mark_skipped(cursor, read.next_offset.0);
                cursor = read.next_offset.0;
            }
            q.set_next(cursor);
            if cursor == from {
                // The store had nothing readable there yet.
                return Ok(());
            }
        }
        Ok(())
    }

    /// Held and new messages, round robin over the topic's queues.
    fn deliver_new(&mut self, st: &mut TopicState) -> Result<(), ConsumeError> {
        let n = self.req.queue_count;
        let start = st.cursor % n;
        st.cursor = (start + 1) % n;
        for i in 0..n {
            if self.full() {
                break;
            }
            let queue_id = (start + i) % n;
            let (min, max) = self.inner.store.queue_range(&self.key.topic, queue_id);
            let q = st.queues.entry(queue_id).or_insert_with(|| {
                let start = match self.inner.config.initial_position {
                    InitialPosition::Earliest => min.0,
                    InitialPosition::Latest => max.0,
                };
                self.records.push(Record::Reset {
                    key: self.key.clone(),
                    queue_id,
                    offset: start,
                });
                QueueState::new(start)
            });
            q.clamp_min(min.0);
            self.release_held(q, queue_id)?;
            self.read_new(q, queue_id, max.0)?;
        }
        Ok(())
    }
}

impl Inner {
    /// One receive pass over a (group, topic); journals what it changed before returning.
    /// A store error after some messages were taken ends the pass early with those messages.
    pub(super) fn poll_once(
        &self,
        key: &StateKey,
        slot: &Slot,
        req: &ReceiveRequest,
    ) -> Result<Pass, ConsumeError> {
        let now_ms = self.config.clock.now_ms();
        let mut ctx = PassCtx {
            inner: self,
            key,
            req,
            now_ms,
            deadline_ms: now_ms.saturating_add(duration_ms(req.invisible_duration)),
            max_attempts: req.retry_policy.effective_max_attempts(),
            records: Vec::new(),
            out: Pass::default(),
        };
        let mut st = slot.state.lock();
        let result = ctx
            .redeliver(&mut st)
            .and_then(|()| ctx.deliver_new(&mut st));
        if let Err(e) = result {
            if ctx.out.deliveries.is_empty() && ctx.out.dead_letters.is_empty() {
                self.record(&ctx.records)?;
                return Err(e);
            }
            tracing::warn!(group = %key.group, topic = %key.topic, error = %e, "receive pass ended early");
        }
        self.record(&ctx.records)?;
        #[cfg(test)]
        self.passes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ctx.out.next_deadline_ms = st
            .queues
            .values()
            .filter_map(QueueState::next_deadline)
            .min();
        Ok(ctx.out)
    }

    fn validate_receive(&self, req: &ReceiveRequest) -> Result<(), ConsumeError> {
        let max_batch = self.config.max_batch_size;
        if req.batch_size == 0 || req.batch_size > max_batch {
            return Err(ConsumeError::IllegalBatchSize {
                requested: req.batch_size,
                max: max_batch,
            });
        }
        let (min, max) = (self.config.min_invisible, self.config.max_invisible);
        if req.invisible_duration < min || req.invisible_duration > max {
            return Err(ConsumeError::IllegalInvisibleTime {
                requested: req.invisible_duration,
                min,
                max,
            });
        }
        if req.queue_count == 0 {
            return Err(ConsumeError::NoQueues {
                topic: req.topic.clone(),
            });
        }
        Ok(())
    }
}

impl Consumption {
    /// Takes up to `batch_size` messages for the group (see the module docs for the order),
    /// each invisible to the group until acked, changed or `now + invisible_duration`. When
    /// none is available, waits up to `long_polling_timeout` for one, then returns empty.
    pub async fn receive(&self, req: ReceiveRequest) -> Result<Vec<Delivery>, ConsumeError> {
        let inner = &self.inner;
        inner.check_open()?;
        inner.validate_receive(&req)?;
        // Before any delivery is made in memory: a pass whose journal write fails would leave
        // its messages invisible until their deadline.
        inner.journal_ready()?;
        let key = StateKey {
            group: req.group.clone(),
            topic: req.topic.clone(),
        };
        let slot = inner.slot(&key);
        let poll_until = far_instant(req.long_polling_timeout);
        let mut dispatched = Some(inner.store.dispatched());
        loop {
            if inner.is_shut_down() {
                return Ok(Vec::new());
            }
            // Register for wake-ups before looking, so that nothing happening between the look
            // and the wait is missed.
            let notified = slot.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(rx) = dispatched.as_mut() {
                rx.borrow_and_update();
            }
            let pass = inner.poll_once(&key, &slot, &req)?;
            if inner.journal.gen_bytes() >= inner.config.snapshot_after_bytes {
                let snap = std::sync::Arc::clone(inner);
                // Snapshots fsync; keep them off the async workers.
                tokio::task::spawn_blocking(move || snap.maybe_snapshot());
            }
            let moved_some = !pass.dead_letters.is_empty();
            if moved_some {
                self.run_dead_letters(&key, &slot, pass.dead_letters).await;
            }
            if !pass.deliveries.is_empty() {
                return Ok(pass.deliveries);
            }
            if moved_some {
                // Moving a FIFO message out may have freed its message group: look again.
                continue;
            }
            if Instant::now() >= poll_until {
                return Ok(Vec::new());
            }
            let mut wake = poll_until;
            if let Some(deadline_ms) = pass.next_deadline_ms {
                let wait_ms = deadline_ms
                    .saturating_sub(inner.config.clock.now_ms())
                    .max(0);
                let wait = Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0) + 1);
                wake = wake.min(far_instant(wait));
            }
            tokio::select! {
                changed = async {
                    match dispatched.as_mut() {
                        Some(rx) => rx.changed().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if changed.is_err() {
                        // The store is gone; keep waiting on the other signals only.
                        dispatched = None;
                    }
                }
                () = &mut notified => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn run_dead_letters(&self, key: &StateKey, slot: &std::sync::Arc<Slot>, jobs: Vec<Job>) {
        let inner = std::sync::Arc::clone(&self.inner);
        let key = key.clone();
        let slot = std::sync::Arc::clone(slot);
        let task = tokio::task::spawn_blocking(move || {
            for job in jobs {
                if let Err(e) = inner.dead_letter(&key, &slot, job) {
                    tracing::warn!(group = %key.group, topic = %key.topic, queue_id = job.queue_id, offset = job.offset, error = %e, "dead-letter move failed; will retry");
                }
            }
        });
        if let Err(e) = task.await {
            tracing::error!(error = %e, "dead-letter task failed");
        }
    }
}
