//! Domain types shared by every rocketlog crate.
//!
//! Nothing here knows about files, networks or protobuf: these are the names, numbers and
//! identifiers that the store, the broker, the nameserver and the client all agree on.
//!
//! Layering: depends on no other rocketlog crate; every other crate may depend on it.

pub mod durable_file;
pub mod message_id;
pub mod names;
pub mod offsets;
pub mod queue_select;
pub mod tag;

pub use message_id::MessageIdGenerator;
pub use names::{validate_group, validate_topic, NameError};
pub use offsets::{PhysicalOffset, QueueId, QueueOffset};
pub use queue_select::queue_for_group;
pub use tag::tag_hash;
