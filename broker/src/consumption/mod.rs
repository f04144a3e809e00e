//! Consumption engine: the RocketMQ 5 "pop" model behind ReceiveMessage, AckMessage,
//! ChangeInvisibleDuration and ForwardMessageToDeadLetterQueue, in plain Rust types (the gRPC
//! layer maps to and from the wire).
//!
//! Per consumer group and topic the engine keeps, for each queue, a committed offset (every
//! message below it is finished), the messages in flight (delivered, invisible until a
//! deadline, identified by a receipt handle), the offsets finished out of order above the
//! committed offset, and — for FIFO groups — messages held back behind an in-flight message
//! of the same message group. State changes go to an append-only journal in the state
//! directory (acks and other answered changes are fsynced first) and to periodic snapshots;
//! opening replays them, so a restart loses no ack and keeps in-flight deadlines. A master
//! ships its whole state to its slaves (`Consumption::export_state` and `install_state`), so
//! that a promoted slave carries on where the master's consumers were.

mod clock;
mod codec;
mod dlq;
mod engine;
mod error;
mod filter;
mod inspect;
mod journal;
mod queue_state;
mod ranges;
mod receipt;
mod receive;
mod recovery;
mod snapshot;
mod transfer;
mod types;

pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::Consumption;
pub use error::ConsumeError;
pub use filter::{FilterExpression, Tags};
pub use inspect::DeliveryState;
pub use types::{
    ConsumptionConfig, Delivery, InitialPosition, QueueLag, ReceiveRequest, RetryPolicy,
    DEFAULT_MAX_ATTEMPTS, DLQ_ORIGIN_MESSAGE_ID_PROPERTY, DLQ_ORIGIN_TOPIC_PROPERTY,
    MESSAGE_GROUP_PROPERTY,
};

#[cfg(test)]
mod tests;
