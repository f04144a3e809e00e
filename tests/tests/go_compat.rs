//! The official Apache RocketMQ 5 Go client (`github.com/apache/rocketmq-clients/golang/v5`,
//! pinned in `tests/go/go.mod`, connecting with its defaults: TLS, any certificate) against an
//! in-process rocketlog broker: one test per scenario of `tests/go`. See each scenario file's
//! comment (`tests/go/<scenario>.go`) for what it checks.
//!
//! The first test to run builds `tests/go` with `go build` (a no-op when `tests/go/prepare.sh`
//! or an earlier run already built it); without the Go toolchain or the module proxy the tests
//! fail with the reason.

use rocketlog_broker::BrokerConfig;
use rocketlog_tests::{golang, run_program_scenario, unique_suffix, Cluster, MessageType, Tuning};

/// Builds the suite if needed, starts a cluster tuned for `tuning` (plus `extra`), runs
/// `setup` with the names' suffix, then the Go scenario `name`.
fn scenario(
    name: &str,
    tuning: Tuning,
    extra: impl FnOnce(&mut BrokerConfig),
    setup: impl FnOnce(&Cluster, &str) -> anyhow::Result<()>,
) {
    let cmd = golang::scenario_command(name).unwrap_or_else(|e| panic!("{e}"));
    let cluster = Cluster::start(|config| {
        tuning.apply(config);
        extra(config);
    })
    .unwrap_or_else(|e| panic!("starting the cluster for {name}: {e:#}"));
    let suffix = unique_suffix(&format!("go_{name}"));
    if let Err(e) = setup(&cluster, &suffix) {
        panic!(
            "setting up {name}: {e:#}\n----- server logs -----\n{}",
            cluster.logs()
        );
    }
    run_program_scenario(&cluster, &format!("go {name}"), cmd, &suffix, &tuning);
    if let Err(e) = cluster.stop() {
        panic!("go {name} passed, but the cluster did not stop cleanly: {e:#}");
    }
}

fn no_setup(_: &Cluster, _: &str) -> anyhow::Result<()> {
    Ok(())
}

#[test]
fn go_normal_messages_with_tags_keys_and_properties() {
    scenario("normal_and_tags", Tuning::default(), |_| {}, no_setup);
}

#[test]
fn go_unacked_message_is_redelivered_and_invisible_time_changes() {
    scenario("redelivery", Tuning::default(), |_| {}, no_setup);
}

#[test]
fn go_fifo_simple_consumer_gets_each_group_in_order_one_at_a_time() {
    scenario(
        "fifo",
        Tuning::default(),
        |_| {},
        |cluster, suffix| cluster.create_topic(&format!("fifo-{suffix}"), 4, &[MessageType::Fifo]),
    );
}

#[test]
fn go_fifo_push_consumer_retries_locally_then_dead_letters() {
    let tuning = Tuning {
        max_attempts: 2,
        ..Tuning::default()
    };
    scenario(
        "fifo_push",
        tuning,
        |_| {},
        |cluster, suffix| {
            cluster.create_topic(&format!("fifopush-{suffix}"), 4, &[MessageType::Fifo])
        },
    );
}

#[test]
fn go_delayed_messages_arrive_on_time_never_early() {
    scenario(
        "delay",
        Tuning::default(),
        |_| {},
        |cluster, suffix| {
            cluster.create_topic(&format!("delay-{suffix}"), 4, &[MessageType::Delay])?;
            cluster.create_topic(&format!("plain-{suffix}"), 2, &[MessageType::Normal])
        },
    );
}

#[test]
fn go_transactions_commit_rollback_and_check_back() {
    scenario(
        "transaction",
        Tuning::default(),
        // As tests/tests/python_transaction.rs: the first check 4 s after the half message
        // (longer than the scenario's wait before it commits), then every 1 s.
        |config| {
            config.transaction.first_check_delay_ms = 4_000;
            config.transaction.check_interval_ms = 1_000;
            config.transaction.scan_interval_ms = 100;
            config.transaction.max_checks = 60;
        },
        |cluster, suffix| {
            cluster.create_topic(&format!("tx-{suffix}"), 4, &[MessageType::Transaction])?;
            cluster.create_topic(&format!("txnormal-{suffix}"), 4, &[MessageType::Normal])
        },
    );
}

#[test]
fn go_message_past_max_attempts_goes_to_the_dead_letter_queue() {
    let tuning = Tuning {
        max_attempts: 3,
        ..Tuning::default()
    };
    scenario("dlq", tuning, |_| {}, no_setup);
}

#[test]
fn go_concurrent_async_sends_and_bounded_receive_batches() {
    scenario("async_batch", Tuning::default(), |_| {}, no_setup);
}

#[test]
fn go_bad_topic_and_oversized_body_are_refused_and_the_broker_serves_on() {
    scenario("bad_input", Tuning::default(), |_| {}, no_setup);
}

#[test]
fn go_push_consumer_with_defaults_consumes_ten_thousand_messages() {
    scenario("push_bulk", Tuning::default(), |_| {}, no_setup);
}

#[test]
fn go_signed_requests_and_access_rules_with_real_credentials() {
    scenario(
        "auth",
        Tuning::default(),
        rocketlog_tests::auth::enable,
        |cluster, _| rocketlog_tests::auth::add_app_user(cluster),
    );
}
