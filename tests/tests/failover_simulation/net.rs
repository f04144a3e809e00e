//! What travels between the simulated nodes.

use rocketlog_controller::{GroupRecord, Heartbeat};
use rocketlog_replication::EpochHistory;

/// One record of a simulated commit log: the epoch whose master wrote it and the client's
/// message id. Offsets count records, so a record's offset is its index in the log.
pub type Rec = (u64, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    Controller,
    /// Producers: never partitioned, so every fault is between the group's own members.
    Client,
    Replica(u64),
}

/// A replica describing its log to a master it wants to follow (Compare and Follow).
#[derive(Debug, Clone)]
pub struct Hello {
    pub from: u64,
    pub inc: u64,
    /// The epoch in which the caller believes the addressed replica is master.
    pub epoch: u64,
    pub master_inc: u64,
    pub history: EpochHistory,
    pub log_end: u64,
}

/// The controller's answer to one heartbeat.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The incarnation that sent the heartbeat: a restarted process never sees it.
    pub to_inc: u64,
    pub seq: u64,
    pub record: GroupRecord,
    pub lease_ms: u64,
    pub fence_wait_ms: u64,
}

#[derive(Debug, Clone)]
pub enum Msg {
    Heartbeat {
        hb: Heartbeat,
        seq: u64,
    },
    Answer(Answer),
    Compare(Hello),
    /// `None`: the addressed replica is not master of that epoch (yet, or any more).
    Compared {
        epoch: u64,
        to_inc: u64,
        truncate_to: Option<u64>,
    },
    Follow(Hello),
    /// `Some((session, master's epoch history))` when admitted.
    Welcome {
        epoch: u64,
        to_inc: u64,
        admitted: Option<(u64, EpochHistory)>,
    },
    Chunk {
        epoch: u64,
        to_inc: u64,
        session: u64,
        start: u64,
        records: Vec<Rec>,
    },
    /// A slave's durable end; `appended: false` asks the master to resend from `end`.
    Ack {
        from: u64,
        inc: u64,
        epoch: u64,
        session: u64,
        end: u64,
        appended: bool,
    },
    Write {
        id: u64,
    },
}

impl Msg {
    pub fn kind(&self) -> &'static str {
        match self {
            Msg::Heartbeat { .. } => "heartbeat",
            Msg::Answer(_) => "answer",
            Msg::Compare(_) => "compare",
            Msg::Compared { .. } => "compared",
            Msg::Follow(_) => "follow",
            Msg::Welcome { .. } => "welcome",
            Msg::Chunk { .. } => "chunk",
            Msg::Ack { .. } => "ack",
            Msg::Write { .. } => "write",
        }
    }
}
