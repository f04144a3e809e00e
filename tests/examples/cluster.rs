//! Starts the same in-process cluster the compatibility tests use (tuned by [`Tuning`]'s
//! defaults) and keeps it up until standard input closes, for running a scenario script by
//! hand: `cargo run -p rocketlog-tests --example cluster`, then in another shell
//! `tests/.venv/bin/python tests/python/redelivery.py <client address> manual` with the
//! `ROCKETLOG_*` variables it prints. The server logs go to standard error at the end.

use std::io::Read;

use rocketlog_tests::{Cluster, Tuning};

fn main() -> anyhow::Result<()> {
    let tuning = Tuning::default();
    let cluster = Cluster::start(|config| tuning.apply(config))?;
    println!(
        "client={} nameserver={}",
        cluster.client_address(),
        cluster.nameserver_address()
    );
    for (name, value) in tuning.script_env(cluster.config().max_body_size) {
        println!("export {name}={value}");
    }
    println!("(close standard input, e.g. Ctrl-D, to stop)");
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink)?;
    eprintln!("{}", cluster.logs());
    cluster.stop()
}
