//! Layer: replication — depends on `rocketlog-store` and `rocketlog-proto`; the broker uses
//! it.
//!
//! Master/slave commit-log replication, as in Apache RocketMQ 5. A pure core holds the
//! decisions a broker group has to get right, kept apart from the sockets and tasks that carry
//! them out so they can be tested exhaustively: nothing in it does network I/O or runs a
//! runtime, and the only file it touches is the epoch file beside the commit log
//! ([`epoch_file`]). A thin shell ships the log over gRPC: [`master`] serves slaves,
//! [`follower`] is a slave following its master.
//!
//! | module | decides |
//! |---|---|
//! | [`acks`] | which sends waiting for sync replication are now held by enough slaves |
//! | [`epochs`] | which master epoch wrote which range of the log, where a replica's log stops agreeing with its master's, whether a replica may be promoted |
//! | [`epoch_file`] | how the epoch history survives a restart |
//! | [`master`] | (shell) serving `Follow` streams, answering sync sends once slaves hold them |
//! | [`follower`] | (shell) following the master, appending and acknowledging what arrives |
//!
//! Every number the core takes may come from a peer over the network, so none of it panics on
//! any input: what cannot be accepted is a typed error carrying the numbers.

pub mod acks;
pub mod epoch_file;
pub mod epochs;
pub mod follower;
pub mod master;

pub use acks::{ReplicaId, SyncTracker, TooFewReplicas};
pub use epoch_file::{Damage, EpochFile, EpochFileError};
pub use epochs::{
    check_promotable, divergence, BehindBy, Divergence, EpochEntry, EpochError, EpochHistory,
};

use rocketlog_proto::replication::v1 as pb;

/// An epoch history as the wire carries it.
pub(crate) fn to_pb_epochs(h: &EpochHistory) -> Vec<pb::Epoch> {
    h.entries()
        .iter()
        .map(|e| pb::Epoch {
            epoch: e.epoch,
            start_offset: e.start_offset,
        })
        .collect()
}

/// An epoch history from the wire, checked like a local one.
pub(crate) fn from_pb_epochs(epochs: &[pb::Epoch]) -> Result<EpochHistory, EpochError> {
    EpochHistory::from_entries(
        epochs
            .iter()
            .map(|e| EpochEntry {
                epoch: e.epoch,
                start_offset: e.start_offset,
            })
            .collect(),
    )
}
