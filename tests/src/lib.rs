//! Shared harness of rocketlog's integration tests.
//!
//! Layering: a test-only crate above the servers and the client; only tests depend on it.
//!
//! - [`cluster`]: an in-process cluster on `127.0.0.1:0` listeners with a temporary data
//!   directory, its own runtime and its own log buffer ([`logs`]);
//! - [`venv`]: the Python virtualenv holding the official RocketMQ 5 client
//!   (`tests/python/requirements.txt`), created and installed on first use;
//! - [`java`] and [`golang`]: the official Java and Go client suites (`tests/java`,
//!   `tests/go`), built on first use;
//! - [`nodes`]: nameserver and brokers on the test's own runtime for the Rust SDK tests; a
//!   broker can be stopped and restarted on the same port and data directory;
//! - [`proxy`]: a TCP proxy that cuts and heals a link between two processes;
//! - [`scenario`]: runs one scenario script of `tests/python/` against a cluster under a
//!   deadline and fails the test with the script's output and the server logs.

pub mod auth;
pub mod cluster;
pub mod golang;
pub mod java;
pub mod logs;
pub mod nodes;
pub mod process;
pub mod proxy;
pub mod restart;
pub mod scenario;
pub mod venv;

pub use cluster::{Cluster, MessageType};
pub use nodes::{poll, unique_name, BrokerNode, NameserverNode, SdkCluster};
pub use proxy::FaultProxy;
pub use scenario::{run_program_scenario, run_scenario, run_scenario_at, unique_suffix, Tuning};
