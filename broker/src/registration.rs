//! Keeping the nameservers told about this broker: its client address and complete topic
//! table, registered at start, on every heartbeat interval and at once when the topic table
//! changes, and unregistered at shutdown. It reads the [`Broker`] and talks through the
//! [`NameserverClient`], so neither of those knows about the other.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rocketlog_proto::nameserver::v1 as ns;

use crate::broker::Broker;
use crate::nameserver_client::{wire_topic, NameserverClient, REGISTER_RETRY};

fn registration(b: &Broker, data_version: u64) -> ns::RegisterBrokerRequest {
    ns::RegisterBrokerRequest {
        cluster_name: b.config.cluster_name.clone(),
        broker_name: b.config.broker_name.clone(),
        broker_id: b.role.broker_id(),
        client_address: b.endpoint.address(),
        ha_address: b.replication_address.clone(),
        topics: b
            .topics
            .list()
            .iter()
            .map(|t| wire_topic(&b.routed_topic(t)))
            .collect(),
        data_version,
    }
}

/// Registers now, then on every heartbeat interval and whenever the topic table changes,
/// until shutdown; then unregisters.
pub async fn register_loop(ns: NameserverClient, broker: Arc<Broker>) {
    // Data versions keep increasing across restarts: start time in ms, scaled, plus changes.
    let base = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0)
        .saturating_mul(1_000_000);
    let mut changes = broker.topics.subscribe();
    let mut role_changes = broker.role.subscribe();
    let mut registered_id = broker.role.broker_id();
    let mut tick = tokio::time::interval(broker.config.heartbeat_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // After a failed registration (a nameserver not up yet), try again soon rather than a
    // whole heartbeat interval later.
    let retry_after = broker.config.heartbeat_interval().min(REGISTER_RETRY);
    let mut retry: Option<tokio::time::Instant> = None;
    loop {
        let retry_sleep = async {
            match retry {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = broker.shutdown.cancelled() => break,
            _ = tick.tick() => {}
            () = retry_sleep => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            changed = role_changes.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
        // A promoted slave registers as its group's master (id 0) and drops its slave entry.
        let id = broker.role.broker_id();
        if id != registered_id {
            ns.unregister(&ns::UnregisterBrokerRequest {
                cluster_name: broker.config.cluster_name.clone(),
                broker_name: broker.config.broker_name.clone(),
                broker_id: registered_id,
            })
            .await;
            registered_id = id;
        }
        let version = base.saturating_add(*changes.borrow_and_update());
        let req = registration(&broker, version);
        let accepted = ns.register(&req).await;
        retry = (accepted < ns.len()).then(|| tokio::time::Instant::now() + retry_after);
    }
    ns.unregister(&ns::UnregisterBrokerRequest {
        cluster_name: broker.config.cluster_name.clone(),
        broker_name: broker.config.broker_name.clone(),
        broker_id: registered_id,
    })
    .await;
}
