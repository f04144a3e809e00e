//! rocketlog controller: decides which replica of each broker group is its master and under
//! which epoch, and keeps each group's sync-state set (the replicas that hold every
//! acknowledged record). The decisions are commands in a Raft log ([`state`]) replicated
//! among the controller members with openraft; the liveness the elections are based on is
//! soft state the leader keeps from the replicas' heartbeats ([`elector`]).
//!
//! The openraft wiring — on-disk log and snapshots, gRPC transport, a running member — is
//! [`raft`] ([`ControllerNode`]).
//!
//! The pure parts — [`state`] and [`elector`] — do no I/O and read no clock: the simulation
//! tests drive them with a simulated network and clock.
//!
//! Layering: depends on `rocketlog-proto` and `rocketlog-transport` only (and openraft).

pub mod elector;
pub mod raft;
pub mod state;

pub use elector::{Decision, ElectionSettings, Elector, Heartbeat, Seen};
pub use raft::{ControllerError, ControllerNode, NodeStatus, ProposeError, RaftSettings};
pub use state::{Command, ControllerState, GroupRecord, Outcome, ReplicaInfo};
