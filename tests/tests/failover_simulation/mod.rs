//! The simulated broker group behind `failover_simulation.rs`: the controller and the
//! replicas (built on the real pure cores), the network and faults between them, and the
//! invariant checker.

pub mod checker;
pub mod config;
pub mod controller;
pub mod faults;
pub mod master;
pub mod net;
pub mod replica;
pub mod rng;
pub mod world;
