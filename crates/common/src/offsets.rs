//! Offsets as newtypes, so that a byte position in the commit log is never mistaken for the
//! index of a message inside one queue.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Byte position in a broker's commit log (global across all segments).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct PhysicalOffset(pub u64);

/// Dense index of a message inside one (topic, queue id): entry N is the Nth message of the queue.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct QueueOffset(pub u64);

/// Queue number inside a topic on one broker group.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct QueueId(pub u32);

macro_rules! display_inner {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    )*};
}
display_inner!(PhysicalOffset, QueueOffset, QueueId);

impl PhysicalOffset {
    /// The offset `n` bytes further on.
    pub fn advance(self, n: u64) -> Self {
        PhysicalOffset(self.0 + n)
    }
}

impl QueueOffset {
    /// The next dense queue offset.
    pub fn next(self) -> Self {
        QueueOffset(self.0 + 1)
    }
}
