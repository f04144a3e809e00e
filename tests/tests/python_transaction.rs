//! Transactional messages with the official Apache RocketMQ 5 Python client against an
//! in-process rocketlog broker: commit, rollback and check-back (`tests/python/transaction.py`),
//! and a broker restart in the middle of an open transaction
//! (`tests/python/transaction_restart_*.py`). See each script's docstring.

use rocketlog_broker::BrokerConfig;
use rocketlog_tests::{run_scenario, unique_suffix, Cluster, MessageType, Tuning};

/// Checks 4 s after the half message was stored (longer than the scenarios' first long poll
/// before they commit), then every 1 s.
fn quick_checks(config: &mut BrokerConfig) {
    config.transaction.first_check_delay_ms = 4_000;
    config.transaction.check_interval_ms = 1_000;
    config.transaction.scan_interval_ms = 100;
    // Room for the restart and the new producer's start before the last check.
    config.transaction.max_checks = 60;
}

fn start(tuning: &Tuning) -> Cluster {
    Cluster::start(|config| {
        tuning.apply(config);
        quick_checks(config);
    })
    .unwrap_or_else(|e| panic!("starting the cluster: {e:#}"))
}

fn create(cluster: &Cluster, topic: &str, types: &[MessageType]) {
    if let Err(e) = cluster.create_topic(topic, 4, types) {
        panic!(
            "creating {topic}: {e:#}\n----- server logs -----\n{}",
            cluster.logs()
        );
    }
}

#[test]
fn commit_rollback_and_check_back_deliver_exactly_the_committed_messages() {
    let tuning = Tuning::default();
    let cluster = start(&tuning);
    let suffix = unique_suffix("transaction");
    create(
        &cluster,
        &format!("tx-{suffix}"),
        &[MessageType::Transaction],
    );
    create(
        &cluster,
        &format!("txnormal-{suffix}"),
        &[MessageType::Normal],
    );
    run_scenario(&cluster, "transaction.py", &suffix, &tuning);
    if let Err(e) = cluster.stop() {
        panic!("transaction.py passed, but the cluster did not stop cleanly: {e:#}");
    }
}

#[test]
fn transaction_open_across_a_broker_restart_is_still_resolved() {
    let tuning = Tuning::default();
    let mut cluster = start(&tuning);
    // Both halves of the scenario use the same names.
    let suffix = unique_suffix("transaction_restart");
    create(
        &cluster,
        &format!("txrestart-{suffix}"),
        &[MessageType::Transaction],
    );
    run_scenario(&cluster, "transaction_restart_open.py", &suffix, &tuning);
    if let Err(e) = cluster.restart_broker() {
        panic!(
            "restarting the broker: {e:#}\n----- server logs -----\n{}",
            cluster.logs()
        );
    }
    run_scenario(&cluster, "transaction_restart_resolve.py", &suffix, &tuning);
    if let Err(e) = cluster.stop() {
        panic!("the restart scenario passed, but the cluster did not stop cleanly: {e:#}");
    }
}
