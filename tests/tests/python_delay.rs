//! Delayed messages through the official Python client (`tests/python/delay*.py`): delivery at
//! 1 s, 5 s and 30 s (concurrently, ~32 s), recall, refused sends, and survival of a broker
//! restart with messages that fell due while the broker was down.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use rocketlog_tests::{
    poll, process, run_scenario, unique_suffix, venv, Cluster, MessageType, SdkCluster, Tuning,
};

#[test]
fn delayed_messages_arrive_on_time_and_recalled_ones_never() {
    let tuning = Tuning::default();
    let cluster = Cluster::start(|config| tuning.apply(config))
        .unwrap_or_else(|e| panic!("starting the cluster: {e:#}"));
    let suffix = unique_suffix("delay");
    let setup = cluster
        .create_topic(&format!("delay-{suffix}"), 4, &[MessageType::Delay])
        .and_then(|()| cluster.create_topic(&format!("plain-{suffix}"), 2, &[MessageType::Normal]));
    if let Err(e) = setup {
        panic!("creating topics: {e:#}\n{}", cluster.logs());
    }
    run_scenario(&cluster, "delay.py", &suffix, &tuning);
    if let Err(e) = cluster.stop() {
        panic!("delay.py passed, but the cluster did not stop cleanly: {e:#}");
    }
}

/// Runs one phase of `delay_restart.py` against `endpoint`.
fn run_phase(
    endpoint: &str,
    suffix: &str,
    phase: &str,
    state: &Path,
    tuning: &Tuning,
) -> anyhow::Result<String> {
    let python = venv::python().map_err(|e| anyhow::anyhow!("the Python virtualenv: {e}"))?;
    let dir = venv::scripts_dir();
    let home = tempfile::tempdir().context("a HOME for the client")?;
    let mut cmd = Command::new(python);
    cmd.current_dir(&dir)
        .arg("-u")
        .arg(dir.join("delay_restart.py"))
        .arg(endpoint)
        .arg(suffix)
        .env("HOME", home.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("ROCKETLOG_DELAY_PHASE", phase)
        .env("ROCKETLOG_DELAY_STATE", state)
        .envs(tuning.script_env(4 << 20));
    let run = process::run(&mut cmd, Duration::from_secs(120))?;
    let passed = run.success() && run.stdout.lines().any(|l| l.starts_with("PASS "));
    if !passed {
        bail!(
            "delay_restart.py {phase} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            run.describe(),
            run.stdout,
            run.stderr
        );
    }
    Ok(run.stdout)
}

#[test]
fn delayed_messages_survive_a_broker_restart() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let tuning = Tuning::default();
        let mut cluster = SdkCluster::single(|config| tuning.apply(config))
            .await
            .expect("starting the cluster");
        let suffix = unique_suffix("delay-restart");
        cluster.brokers[0]
            .create_topic(&format!("delay-{suffix}"), 4, &[MessageType::Delay])
            .await
            .expect("creating the topic");
        let state_dir = tempfile::tempdir().expect("a state directory");
        let state = state_dir.path().join("state.json");
        let endpoint = cluster.broker().endpoint();

        let phase = |name: &'static str| {
            let (endpoint, suffix, state) = (endpoint.clone(), suffix.clone(), state.clone());
            tokio::task::spawn_blocking(move || {
                run_phase(&endpoint, &suffix, name, &state, &tuning)
            })
        };
        let sent = phase("send").await.expect("send phase task");
        let sent = sent.unwrap_or_else(|e| panic!("{e:#}"));
        println!("{sent}");
        let sent_at = SystemTime::now();

        // Down until the first messages (due 2 s after sending) are overdue.
        cluster.brokers[0]
            .stop()
            .await
            .expect("stopping the broker");
        poll(
            Duration::from_secs(10),
            "the first messages to fall due",
            || async {
                (sent_at.elapsed().unwrap_or_default() >= Duration::from_millis(2_500))
                    .then_some(())
            },
        )
        .await
        .expect("waiting for the due time");
        cluster.brokers[0]
            .restart()
            .await
            .expect("restarting the broker");

        let received = phase("receive").await.expect("receive phase task");
        let received = received.unwrap_or_else(|e| panic!("{e:#}"));
        println!("{received}");
        cluster.stop().await.expect("stopping the cluster");
    });
}
