//! The official Apache RocketMQ 5 Python client (`rocketmq-python-client`, pinned in
//! `tests/python/requirements.txt`) against an in-process rocketlog broker: one test per
//! scenario script in `tests/python/`. See each script's docstring for what it checks.
//!
//! The first test to run creates the virtualenv (`tests/.venv`, or `$ROCKETLOG_TEST_VENV`) and
//! installs the client from PyPI; without python3 or PyPI the tests fail with the reason.

use rocketlog_broker::BrokerConfig;
use rocketlog_tests::{run_scenario, unique_suffix, Cluster, MessageType, Tuning};

/// Starts a cluster tuned for `tuning` (plus `extra`), then runs `setup` with the names' suffix.
fn scenario(
    script: &str,
    tuning: Tuning,
    extra: impl FnOnce(&mut BrokerConfig),
    setup: impl FnOnce(&Cluster, &str) -> anyhow::Result<()>,
) {
    let cluster = Cluster::start(|config| {
        tuning.apply(config);
        extra(config);
    })
    .unwrap_or_else(|e| panic!("starting the cluster for {script}: {e:#}"));
    let suffix = unique_suffix(script.trim_end_matches(".py"));
    if let Err(e) = setup(&cluster, &suffix) {
        panic!(
            "setting up {script}: {e:#}\n----- server logs -----\n{}",
            cluster.logs()
        );
    }
    run_scenario(&cluster, script, &suffix, &tuning);
    if let Err(e) = cluster.stop() {
        panic!("{script} passed, but the cluster did not stop cleanly: {e:#}");
    }
}

fn no_setup(_: &Cluster, _: &str) -> anyhow::Result<()> {
    Ok(())
}

#[test]
fn normal_messages_with_tags_keys_and_properties() {
    scenario("normal_and_tags.py", Tuning::default(), |_| {}, no_setup);
}

#[test]
fn unacked_message_is_redelivered_after_the_invisible_time() {
    scenario("redelivery.py", Tuning::default(), |_| {}, no_setup);
}

#[test]
fn fifo_message_groups_are_delivered_in_order_one_at_a_time() {
    scenario(
        "fifo.py",
        Tuning::default(),
        |_| {},
        |cluster, suffix| cluster.create_topic(&format!("fifo-{suffix}"), 4, &[MessageType::Fifo]),
    );
}

#[test]
fn message_past_max_attempts_goes_to_the_dead_letter_queue() {
    let tuning = Tuning {
        max_attempts: 3,
        ..Tuning::default()
    };
    scenario("dlq.py", tuning, |_| {}, no_setup);
}

#[test]
fn fifo_push_consumer_retries_locally_then_forwards_to_the_dead_letter_queue() {
    let tuning = Tuning {
        max_attempts: 2,
        ..Tuning::default()
    };
    scenario(
        "fifo_push.py",
        tuning,
        |_| {},
        |cluster, suffix| {
            cluster.create_topic(&format!("fifopush-{suffix}"), 4, &[MessageType::Fifo])
        },
    );
}

#[test]
fn push_consumer_acks_nacks_and_retries() {
    scenario("push_consumer.py", Tuning::default(), |_| {}, no_setup);
}

#[test]
fn concurrent_sends_and_bounded_receive_batches() {
    scenario("async_batch.py", Tuning::default(), |_| {}, no_setup);
}

#[test]
fn max_size_and_binary_bodies_round_trip() {
    scenario("large_body.py", Tuning::default(), |_| {}, no_setup);
}

#[test]
fn unknown_topic_is_refused_when_auto_creation_is_off() {
    scenario(
        "unknown_topic.py",
        Tuning::default(),
        |config| config.auto_create_topics = false,
        |cluster, suffix| {
            cluster.create_topic(&format!("existing-{suffix}"), 2, &[MessageType::Normal])
        },
    );
}
