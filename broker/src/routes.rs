//! Where a topic's queues live, as QueryRoute and QueryAssignment need it: per broker group,
//! its master's address and the topic's queue layout there.
//!
//! This broker's own entry always comes from its local topic table (fresh even before the
//! nameservers have heard of a change); the other broker groups come from the nameservers'
//! route table (queried over gRPC, cached briefly). With no nameserver configured the broker is
//! standalone and its own entry is the whole route.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use crate::nameserver_client::BrokerQueues;
use crate::nameserver_client::NameserverClient;
use crate::topics::TopicConfig;

/// What a slave knows of its group's master, for its routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaveView {
    pub broker_id: u64,
    /// Following the master right now.
    pub following: bool,
    /// Where clients reach the master (from its welcome).
    pub master_client_address: String,
}

/// A nameserver answer and when it was fetched.
type Cached = (Instant, Arc<Vec<BrokerQueues>>);

/// Route lookups with a short cache of nameserver answers.
#[derive(Debug)]
pub struct RouteTable {
    broker_name: String,
    nameservers: Option<NameserverClient>,
    ttl: Duration,
    cache: Mutex<HashMap<String, Cached>>,
}

impl RouteTable {
    pub fn new(broker_name: &str, nameservers: Option<NameserverClient>, ttl: Duration) -> Self {
        RouteTable {
            broker_name: broker_name.to_owned(),
            nameservers,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The route of `topic`: this broker group's entry (from `local`, if the topic exists
    /// here) plus the other broker groups the nameservers know, ordered by broker name.
    ///
    /// On a slave, the group's entry is the master's while the slave follows it, and this
    /// slave's, read-only, while it does not: consumers keep receiving what was replicated.
    pub async fn route(
        &self,
        topic: &str,
        local: Option<&TopicConfig>,
        slave: Option<&SlaveView>,
    ) -> Vec<BrokerQueues> {
        let remote = self.remote(topic).await;
        let mut out: Vec<BrokerQueues> = remote
            .iter()
            .filter(|b| b.broker_name != self.broker_name)
            .cloned()
            .collect();
        if let Some(t) = local {
            let own = BrokerQueues::local(&self.broker_name, t);
            out.push(match slave {
                None => own,
                Some(s) if s.following => remote
                    .iter()
                    .find(|b| b.broker_name == self.broker_name && b.broker_id == 0)
                    .cloned()
                    .unwrap_or(BrokerQueues {
                        address: Some(s.master_client_address.clone()),
                        ..own
                    }),
                Some(s) => BrokerQueues {
                    broker_id: s.broker_id,
                    permission: crate::nameserver_client::read_only(own.permission),
                    ..own
                },
            });
        }
        out.sort_by(|a, b| a.broker_name.cmp(&b.broker_name));
        out
    }

    /// Forgets cached answers (after a local topic change).
    pub fn invalidate(&self, topic: &str) {
        self.cache.lock().remove(topic);
    }

    async fn remote(&self, topic: &str) -> Arc<Vec<BrokerQueues>> {
        let Some(ns) = &self.nameservers else {
            return Arc::new(Vec::new());
        };
        if let Some((at, cached)) = self.cache.lock().get(topic) {
            if at.elapsed() < self.ttl {
                return Arc::clone(cached);
            }
        }
        match ns.topic_route(topic).await {
            Ok(route) => {
                let route = Arc::new(route);
                self.cache
                    .lock()
                    .insert(topic.to_owned(), (Instant::now(), Arc::clone(&route)));
                route
            }
            Err(e) => {
                tracing::warn!(topic, error = %e, "nameserver route query failed; answering with the local route");
                // A stale answer beats none while the nameservers are unreachable.
                self.cache
                    .lock()
                    .get(topic)
                    .map(|(_, r)| Arc::clone(r))
                    .unwrap_or_default()
            }
        }
    }
}
