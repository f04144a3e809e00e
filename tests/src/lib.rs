//! Shared harness of rocketlog's integration tests.
//!
//! - [`cluster`]: an in-process cluster on `127.0.0.1:0` listeners with a temporary data
//!   directory, its own runtime and its own log buffer ([`logs`]);
//! - [`venv`]: the Python virtualenv holding the official RocketMQ 5 client
//!   (`tests/python/requirements.txt`), created and installed on first use;
//! - [`scenario`]: runs one scenario script of `tests/python/` against a cluster under a
//!   deadline and fails the test with the script's output and the server logs.

pub mod cluster;
pub mod logs;
pub mod process;
pub mod scenario;
pub mod venv;

pub use cluster::{Cluster, MessageType};
pub use scenario::{run_scenario, unique_suffix, Tuning};
