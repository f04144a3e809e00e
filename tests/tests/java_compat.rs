//! The official Apache RocketMQ 5 Java client (`rocketmq-client-java`, pinned in
//! `tests/java/pom.xml`, connecting with its defaults: TLS, any certificate) against an
//! in-process rocketlog broker: one test per scenario of `tests/java`. See each scenario's
//! class comment (`tests/java/src/main/java/org/rocketlog/compat/`) for what it checks.
//!
//! The first test to run builds `tests/java` with Maven unless `tests/java/prepare.sh` (or an
//! earlier run) already did; without a JDK 17+, Maven or Maven Central the tests fail with the
//! reason.

use rocketlog_broker::BrokerConfig;
use rocketlog_tests::{java, run_program_scenario, unique_suffix, Cluster, MessageType, Tuning};

/// Builds the suite if needed, starts a cluster tuned for `tuning` (plus `extra`), runs
/// `setup` with the names' suffix, then the Java scenario `name`.
fn scenario(
    name: &str,
    tuning: Tuning,
    extra: impl FnOnce(&mut BrokerConfig),
    setup: impl FnOnce(&Cluster, &str) -> anyhow::Result<()>,
) {
    let cmd = java::scenario_command(name).unwrap_or_else(|e| panic!("{e}"));
    let cluster = Cluster::start(|config| {
        tuning.apply(config);
        extra(config);
    })
    .unwrap_or_else(|e| panic!("starting the cluster for {name}: {e:#}"));
    let suffix = unique_suffix(&format!("java_{name}"));
    if let Err(e) = setup(&cluster, &suffix) {
        panic!(
            "setting up {name}: {e:#}\n----- server logs -----\n{}",
            cluster.logs()
        );
    }
    run_program_scenario(&cluster, &format!("java {name}"), cmd, &suffix, &tuning);
    if let Err(e) = cluster.stop() {
        panic!("java {name} passed, but the cluster did not stop cleanly: {e:#}");
    }
}

fn no_setup(_: &Cluster, _: &str) -> anyhow::Result<()> {
    Ok(())
}

#[test]
fn java_normal_messages_with_tags_keys_and_properties() {
    scenario("normal_and_tags", Tuning::default(), |_| {}, no_setup);
}

#[test]
fn java_unacked_message_is_redelivered_and_invisible_time_changes() {
    scenario("redelivery", Tuning::default(), |_| {}, no_setup);
}

#[test]
fn java_fifo_simple_consumer_gets_each_group_in_order_one_at_a_time() {
    scenario(
        "fifo",
        Tuning::default(),
        |_| {},
        |cluster, suffix| cluster.create_topic(&format!("fifo-{suffix}"), 4, &[MessageType::Fifo]),
    );
}

#[test]
fn java_fifo_push_consumer_retries_locally_then_dead_letters() {
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
fn java_delayed_messages_arrive_on_time_never_early() {
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
fn java_transactions_commit_rollback_and_check_back() {
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
fn java_message_past_max_attempts_goes_to_the_dead_letter_queue() {
    let tuning = Tuning {
        max_attempts: 3,
        ..Tuning::default()
    };
    scenario("dlq", tuning, |_| {}, no_setup);
}

#[test]
fn java_concurrent_async_sends_and_bounded_receive_batches() {
    scenario("async_batch", Tuning::default(), |_| {}, no_setup);
}

#[test]
fn java_bad_topic_and_oversized_body_are_refused_and_the_broker_serves_on() {
    scenario("bad_input", Tuning::default(), |_| {}, no_setup);
}

#[test]
fn java_push_consumer_with_defaults_consumes_ten_thousand_messages() {
    scenario(
        "push_bulk",
        Tuning::default(),
        // A batch handed to a receive the client gave up on (a loaded machine) is hidden for
        // the push invisible duration: 10 s instead of 60 s, so that it still comes in time.
        |config| {
            config.receive.auto_renew_invisible_duration_ms = 10_000;
            config.receive.auto_renew_ahead_ms = 5_000;
            config.receive.auto_renew_period_ms = 1_000;
        },
        no_setup,
    );
}

/// The pull RPCs (QueryOffset, PullMessage, UpdateOffset, GetOffset) through the official
/// jar's generated stubs (no released Java client has a pull consumer), and the committed
/// offset across a broker restart.
#[test]
fn java_pull_rpcs_query_pull_and_commit_offsets() {
    let tuning = Tuning::default();
    let first = java::scenario_command("pull_rpc").unwrap_or_else(|e| panic!("{e}"));
    let second = java::scenario_command("pull_rpc_after_restart").unwrap_or_else(|e| panic!("{e}"));
    let mut cluster = Cluster::start(|config| tuning.apply(config))
        .unwrap_or_else(|e| panic!("starting the cluster: {e:#}"));
    let suffix = unique_suffix("java_pull_rpc");
    if let Err(e) = cluster.create_topic(&format!("pull-{suffix}"), 2, &[MessageType::Normal]) {
        panic!("creating the topic: {e:#}\n{}", cluster.logs());
    }
    run_program_scenario(&cluster, "java pull_rpc", first, &suffix, &tuning);
    if let Err(e) = cluster.restart_broker() {
        panic!(
            "restarting the broker: {e:#}\n----- server logs -----\n{}",
            cluster.logs()
        );
    }
    run_program_scenario(
        &cluster,
        "java pull_rpc_after_restart",
        second,
        &suffix,
        &tuning,
    );
    if let Err(e) = cluster.stop() {
        panic!("java pull_rpc passed, but the cluster did not stop cleanly: {e:#}");
    }
}

#[test]
fn java_signed_requests_and_access_rules_with_real_credentials() {
    scenario(
        "auth",
        Tuning::default(),
        rocketlog_tests::auth::enable,
        |cluster, _| rocketlog_tests::auth::add_app_user(cluster),
    );
}
