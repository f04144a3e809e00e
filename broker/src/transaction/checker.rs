//! The check-back loop: every scan interval, takes the transactions due for a check, sends
//! each a `RecoverOrphanedTransactionCommand` over the Telemetry stream of a connected producer
//! of its topic (a different one each check when there are several), and saves the
//! transaction checkpoint about once a second. The producer answers with `EndTransaction`
//! (source `SOURCE_SERVER_CHECK`), or not at all, and then the next check follows.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rocketlog_proto::v2;

use super::DueCheck;
use crate::broker::Broker;
use crate::service::convert::delivered_message;

/// How long a check may wait for room in a producer's Telemetry stream.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the checkpoint is saved (when it moved).
const CHECKPOINT_PERIOD: Duration = Duration::from_secs(1);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Runs until the broker shuts down.
pub async fn run(b: Arc<Broker>) {
    let mut tick = tokio::time::interval(b.transactions.settings().scan_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut saved = Instant::now();
    loop {
        tokio::select! {
            () = b.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Only the master asks producers and resolves transactions; a slave's log follows.
        if !b.role.is_master() {
            continue;
        }
        let t = b.transactions.clone();
        match tokio::task::spawn_blocking(move || t.due_checks(now_ms())).await {
            Ok(due) => {
                for check in due {
                    send(&b, check).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "transaction check pass failed"),
        }
        if saved.elapsed() >= CHECKPOINT_PERIOD {
            saved = Instant::now();
            let t = b.transactions.clone();
            match tokio::task::spawn_blocking(move || t.save_checkpoint()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "saving the transaction checkpoint failed")
                }
                Err(e) => tracing::warn!(error = %e, "saving the transaction checkpoint failed"),
            }
        }
    }
}

/// The command asking a producer to resolve `check`.
pub fn command(check: &DueCheck) -> v2::TelemetryCommand {
    v2::TelemetryCommand {
        status: None,
        command: Some(
            v2::telemetry_command::Command::RecoverOrphanedTransactionCommand(
                v2::RecoverOrphanedTransactionCommand {
                    message: Some(delivered_message(&check.message, None)),
                    transaction_id: check.transaction_id.clone(),
                },
            ),
        ),
    }
}

async fn send(b: &Broker, check: DueCheck) {
    let topic = &check.message.topic;
    let producers = b.clients.producers_of(topic);
    if producers.is_empty() {
        tracing::debug!(
            transaction_id = %check.transaction_id,
            topic = %topic,
            check = check.checks,
            "no producer of the topic is connected; the check goes unanswered"
        );
        return;
    }
    let command = command(&check);
    let start = usize::try_from(check.checks).unwrap_or(0) % producers.len();
    for i in 0..producers.len() {
        let client = &producers[(start + i) % producers.len()];
        let Some(sender) = b.clients.telemetry_sender(client) else {
            continue;
        };
        if let Ok(Ok(())) =
            tokio::time::timeout(SEND_TIMEOUT, sender.send(Ok(command.clone()))).await
        {
            tracing::debug!(
                transaction_id = %check.transaction_id,
                %client,
                check = check.checks,
                "sent a transaction check"
            );
            return;
        }
    }
    tracing::debug!(
        transaction_id = %check.transaction_id,
        "no producer took the transaction check"
    );
}
