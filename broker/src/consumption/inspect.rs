//! Read-only views of consumption state for operators (the admin API and the web console):
//! how far each group got with one message.

use super::engine::Consumption;

/// How far one consumer group got with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Acked (or below the group's committed offset).
    Acked,
    /// Delivered and not yet acked.
    InFlight,
    /// FIFO: read, but held back behind an earlier message of its message group.
    Held,
    /// Not delivered to the group yet.
    Pending,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Acked => "acked",
            DeliveryState::InFlight => "in_flight",
            DeliveryState::Held => "held",
            DeliveryState::Pending => "pending",
        }
    }
}

impl Consumption {
    /// The state of the message at `offset` of queue `queue_id` of `topic` for every group
    /// with state on that queue, ordered by group.
    pub fn delivery_states(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Vec<(String, DeliveryState)> {
        let mut out: Vec<(String, DeliveryState)> = self
            .inner
            .slots
            .iter()
            .filter(|e| e.key().topic == topic)
            .filter_map(|e| {
                let st = e.value().state.lock();
                let q = st.queues.get(&queue_id)?;
                let state = if q.is_finished(offset) {
                    DeliveryState::Acked
                } else if q.in_flight(offset).is_some() {
                    DeliveryState::InFlight
                } else if q.is_known(offset) {
                    DeliveryState::Held
                } else {
                    DeliveryState::Pending
                };
                Some((e.key().group.clone(), state))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}
