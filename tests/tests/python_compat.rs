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

#[test]
fn sends_of_the_official_client_are_spread_over_the_queues() {
    const QUEUES: u32 = 8;
    let tuning = Tuning::default();
    let cluster = Cluster::start(|config| tuning.apply(config))
        .unwrap_or_else(|e| panic!("starting the cluster: {e:#}"));
    let suffix = unique_suffix("queue_spread");
    let topic = format!("spread-{suffix}");
    if let Err(e) = cluster.create_topic(&topic, QUEUES, &[MessageType::Normal, MessageType::Fifo])
    {
        panic!("creating {topic}: {e:#}\n{}", cluster.logs());
    }
    run_scenario(&cluster, "queue_spread.py", &suffix, &tuning);
    // The counts queue_spread.py sends.
    let (normal, groups, per_group) = (64, 6, 8);
    let queue_of = |key: &str| -> u32 {
        let queues = cluster
            .queues_of_key(&topic, key)
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(queues.len(), 1, "key {key} stored once: {queues:?}");
        queues[0]
    };
    let mut per_queue = vec![0u32; QUEUES as usize];
    for i in 0..normal {
        per_queue[queue_of(&format!("n-{i}")) as usize] += 1;
    }
    // Round robin: every queue gets its share (the producer's first message may start
    // anywhere in the rotation).
    let share = normal / QUEUES;
    assert!(
        per_queue.iter().all(|&n| n == share),
        "normal messages per queue: {per_queue:?}"
    );
    let mut group_queues = Vec::new();
    for g in 0..groups {
        let q = queue_of(&format!("g{g}-0"));
        for i in 1..per_group {
            assert_eq!(
                queue_of(&format!("g{g}-{i}")),
                q,
                "every message of group g{g} in one queue"
            );
        }
        group_queues.push(q);
    }
    group_queues.sort_unstable();
    group_queues.dedup();
    assert!(
        group_queues.len() > 1,
        "{groups} message groups all hashed to one queue: {group_queues:?}"
    );
    println!("normal messages per queue: {per_queue:?}; queues of the groups: {group_queues:?}");
    if let Err(e) = cluster.stop() {
        panic!("queue_spread.py passed, but the cluster did not stop cleanly: {e:#}");
    }
}

#[test]
fn signed_requests_and_access_rules_with_real_credentials() {
    scenario(
        "auth.py",
        Tuning::default(),
        rocketlog_tests::auth::enable,
        |cluster, _| rocketlog_tests::auth::add_app_user(cluster),
    );
}
