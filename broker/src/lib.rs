//! rocketlog broker: the Apache RocketMQ 5 client API (`apache.rocketmq.v2.MessagingService`)
//! and rocketlog's admin API over the storage engine, on one port that serves plaintext HTTP/2
//! and TLS alike.
//!
//! Layering: depends on `rocketlog-common`, `rocketlog-proto`, `rocketlog-store`,
//! `rocketlog-replication` and `rocketlog-transport`; it must not depend on the nameserver crate (it talks to nameservers
//! over gRPC), the client or the binary.
//!
//! Embedding: [`run`] serves a [`BrokerConfig`] on a bound listener until a shutdown future
//! resolves, then drains and flushes. See [`standalone`] for a nameserver and a broker in one
//! process.

pub mod admin;
pub mod auth;
pub mod broker;
pub mod clients;
pub mod config;
pub mod console;
pub mod consumption;
pub mod controller_agent;
pub mod error;
pub mod forward;
pub mod metrics;
pub mod nameserver_client;
pub mod registration;
pub mod renewal;
pub mod replication;
pub mod routes;
mod run;
pub mod service;
pub mod timer;
pub mod topics;
pub mod transaction;
pub mod transport;

pub use config::{BrokerConfig, FlushMode, ReceiveSettings, StoreSettings};
pub use error::BrokerError;
pub use run::{run, run_with_ready, standalone, Ready};
