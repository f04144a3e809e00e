//! How much room each kind of store file leaves for the others when it is created.
//!
//! Without a reserve, whichever file asks first would take the last free bytes. The files do
//! not matter equally: the commit log holds acknowledged messages, the consume queues make
//! them readable, the index only speeds up lookups. So each creation also keeps some room
//! free for the kinds that matter more than the ones after it:
//!
//! - a commit-log segment keeps [`StoreConfig::derived_reserve`] free (an index file and a
//!   few consume-queue files), so the messages it accepts can still be made readable;
//! - an index file keeps room for two consume-queue files;
//! - a consume-queue file keeps nothing back.

use crate::config::StoreConfig;

/// Consume-queue files' worth of room an index file leaves for the consume queues.
const QUEUE_FILES_KEPT_BY_INDEX: u64 = 2;
/// Consume-queue files' worth of room a commit-log segment leaves (with one index file).
const QUEUE_FILES_KEPT_BY_LOG: u64 = 4;

impl StoreConfig {
    /// Bytes of one consume-queue file.
    pub fn consume_queue_file_len(&self) -> u64 {
        u64::from(self.consume_queue_segment_entries) * crate::consume_queue::ENTRY_LEN as u64
    }

    /// Bytes of one index file.
    pub fn index_file_len(&self) -> u64 {
        crate::index::file_len(self.index_slots, self.index_entries_per_file)
    }

    /// Room a new commit-log segment leaves free for consume-queue and index files.
    pub fn derived_reserve(&self) -> u64 {
        self.index_file_len() + QUEUE_FILES_KEPT_BY_LOG * self.consume_queue_file_len()
    }

    /// Room a new index file leaves free for consume-queue files.
    pub(crate) fn index_keep_free(&self) -> u64 {
        QUEUE_FILES_KEPT_BY_INDEX * self.consume_queue_file_len()
    }
}
