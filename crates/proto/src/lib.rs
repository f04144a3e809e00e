//! Generated gRPC code for rocketlog.
//!
//! - [`v2`]: `apache.rocketmq.v2`, wire-compatible with Apache RocketMQ 5 (what the official
//!   clients speak), with tonic clients and servers;
//! - [`nameserver::v1`]: broker registration and topic routes (`rocketlog.nameserver.v1`);
//! - [`admin::v1`]: the broker's admin API (`rocketlog.admin.v1`), with serde implementations
//!   of the proto3 JSON mapping (for the web console).
//!
//! Besides generated code this crate holds only small, never-panicking conversions that every
//! user of the types needs (see [`convert`] and [`status`]).
//!
//! Layering: depends on no other rocketlog crate, and holds no broker or client behaviour.

pub mod convert;
pub mod status;

/// `apache.rocketmq.v2`: messages, enums and the `MessagingService` client and server.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    missing_debug_implementations
)]
pub mod v2 {
    tonic::include_proto!("apache.rocketmq.v2");
}

/// `rocketlog.nameserver.v1`.
pub mod nameserver {
    /// Broker registration and topic routes.
    #[allow(
        clippy::all,
        clippy::pedantic,
        missing_docs,
        missing_debug_implementations
    )]
    pub mod v1 {
        tonic::include_proto!("rocketlog.nameserver.v1");
    }
}

/// `rocketlog.replication.v1`.
pub mod replication {
    /// Commit-log shipping from a master to its slaves.
    #[allow(
        clippy::all,
        clippy::pedantic,
        missing_docs,
        missing_debug_implementations
    )]
    pub mod v1 {
        tonic::include_proto!("rocketlog.replication.v1");
    }
}

/// `rocketlog.controller.v1`.
pub mod controller {
    /// The controller: which replica is each group's master, replicated with Raft.
    #[allow(
        clippy::all,
        clippy::pedantic,
        missing_docs,
        missing_debug_implementations
    )]
    pub mod v1 {
        tonic::include_proto!("rocketlog.controller.v1");
    }
}

/// `rocketlog.admin.v1`.
pub mod admin {
    /// The broker's admin API.
    #[allow(
        clippy::all,
        clippy::pedantic,
        missing_docs,
        missing_debug_implementations
    )]
    pub mod v1 {
        tonic::include_proto!("rocketlog.admin.v1");
        include!(concat!(env!("OUT_DIR"), "/rocketlog.admin.v1.serde.rs"));
    }
}

/// Encoded `FileDescriptorSet` of every rocketlog proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/rocketlog_descriptor.bin"));
