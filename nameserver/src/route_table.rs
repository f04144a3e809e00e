//! The nameserver's whole state: which brokers are alive and which topics each one serves.
//!
//! A pure data structure: every call takes the current time in milliseconds, so expiry is
//! tested without sleeping. Brokers send their complete topic table on every registration,
//! which makes registration idempotent and lets a restarted nameserver rebuild everything
//! within one heartbeat interval.

use std::collections::{BTreeMap, BTreeSet};

use rocketlog_proto::nameserver::v1 as pb;

/// Identity of one broker process: its group name and its id in the group (0 = master).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BrokerKey {
    pub broker_name: String,
    pub broker_id: u64,
}

#[derive(Debug, Clone)]
struct BrokerEntry {
    cluster_name: String,
    client_address: String,
    ha_address: String,
    topics: BTreeMap<String, pb::TopicConfig>,
    data_version: u64,
    last_heartbeat_ms: i64,
}

/// Live brokers and their topic tables.
#[derive(Debug, Default)]
pub struct RouteTable {
    brokers: BTreeMap<BrokerKey, BrokerEntry>,
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("broker_name is empty")]
    EmptyBrokerName,
    #[error("client_address is empty")]
    EmptyAddress,
    #[error("topic name is empty in the registration of {broker_name}")]
    EmptyTopic { broker_name: String },
}

impl RouteTable {
    /// Registers (or refreshes) a broker with its complete topic table. Returns the group's
    /// master client address when a master is registered.
    pub fn register(
        &mut self,
        req: pb::RegisterBrokerRequest,
        now_ms: i64,
    ) -> Result<Option<String>, RegisterError> {
        if req.broker_name.is_empty() {
            return Err(RegisterError::EmptyBrokerName);
        }
        if req.client_address.is_empty() {
            return Err(RegisterError::EmptyAddress);
        }
        let mut topics = BTreeMap::new();
        for t in req.topics {
            if t.name.is_empty() {
                return Err(RegisterError::EmptyTopic {
                    broker_name: req.broker_name,
                });
            }
            topics.insert(t.name.clone(), t);
        }
        let key = BrokerKey {
            broker_name: req.broker_name.clone(),
            broker_id: req.broker_id,
        };
        self.brokers.insert(
            key,
            BrokerEntry {
                cluster_name: req.cluster_name,
                client_address: req.client_address,
                ha_address: req.ha_address,
                topics,
                data_version: req.data_version,
                last_heartbeat_ms: now_ms,
            },
        );
        Ok(self.master_address(&req.broker_name))
    }

    /// Removes a broker; returns whether it was registered.
    pub fn unregister(&mut self, broker_name: &str, broker_id: u64) -> bool {
        self.brokers
            .remove(&BrokerKey {
                broker_name: broker_name.to_owned(),
                broker_id,
            })
            .is_some()
    }

    /// Drops every broker silent for longer than `expiry_ms`; returns the dropped keys.
    pub fn expire(&mut self, now_ms: i64, expiry_ms: i64) -> Vec<BrokerKey> {
        let dead: Vec<BrokerKey> = self
            .brokers
            .iter()
            .filter(|(_, e)| now_ms.saturating_sub(e.last_heartbeat_ms) > expiry_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &dead {
            self.brokers.remove(k);
        }
        dead
    }

    fn master_address(&self, broker_name: &str) -> Option<String> {
        self.brokers
            .get(&BrokerKey {
                broker_name: broker_name.to_owned(),
                broker_id: 0,
            })
            .map(|e| e.client_address.clone())
    }

    /// The route of `topic`: one entry per broker group that serves it, or `None`.
    ///
    /// A group's queue layout comes from its master; when the master is gone a slave's layout
    /// is used, so consumers keep reading from the slaves.
    pub fn topic_route(&self, topic: &str) -> Option<pb::GetTopicRouteResponse> {
        let mut groups: BTreeMap<&str, pb::BrokerGroupRoute> = BTreeMap::new();
        for (key, entry) in &self.brokers {
            let group =
                groups
                    .entry(key.broker_name.as_str())
                    .or_insert_with(|| pb::BrokerGroupRoute {
                        cluster_name: entry.cluster_name.clone(),
                        broker_name: key.broker_name.clone(),
                        addresses: Default::default(),
                        topic: None,
                    });
            group
                .addresses
                .insert(key.broker_id, entry.client_address.clone());
            // BTreeMap order visits id 0 (the master) first, so its layout wins.
            if group.topic.is_none() {
                group.topic = entry.topics.get(topic).cloned();
            }
        }
        let groups: Vec<_> = groups.into_values().filter(|g| g.topic.is_some()).collect();
        (!groups.is_empty()).then(|| pb::GetTopicRouteResponse {
            topic: topic.to_owned(),
            groups,
        })
    }

    /// Every topic served by a live broker, with the groups serving it.
    pub fn topics(&self) -> Vec<pb::TopicSummary> {
        let mut by_topic: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (key, entry) in &self.brokers {
            for name in entry.topics.keys() {
                by_topic
                    .entry(name)
                    .or_default()
                    .insert(key.broker_name.as_str());
            }
        }
        by_topic
            .into_iter()
            .map(|(name, brokers)| pb::TopicSummary {
                name: name.to_owned(),
                broker_names: brokers.into_iter().map(str::to_owned).collect(),
            })
            .collect()
    }

    /// Every live broker.
    /// Broker replicas registered now.
    pub fn broker_count(&self) -> usize {
        self.brokers.len()
    }

    /// Distinct topics the registered brokers serve.
    pub fn topic_count(&self) -> usize {
        let mut names: BTreeSet<&str> = BTreeSet::new();
        for entry in self.brokers.values() {
            names.extend(entry.topics.keys().map(String::as_str));
        }
        names.len()
    }

    pub fn brokers(&self) -> Vec<pb::BrokerInfo> {
        self.brokers
            .iter()
            .map(|(k, e)| pb::BrokerInfo {
                cluster_name: e.cluster_name.clone(),
                broker_name: k.broker_name.clone(),
                broker_id: k.broker_id,
                client_address: e.client_address.clone(),
                ha_address: e.ha_address.clone(),
                last_heartbeat_ms: e.last_heartbeat_ms,
                topic_count: u32::try_from(e.topics.len()).unwrap_or(u32::MAX),
                data_version: e.data_version,
            })
            .collect()
    }

    /// Removes `topic` from every broker's entry; returns whether any had it. A broker that
    /// still has the topic adds it back on its next registration, so deleting a topic for
    /// good is done on the brokers (`rocketlog admin topic delete`); this clears what dead
    /// or misconfigured brokers left behind.
    pub fn delete_topic(&mut self, topic: &str) -> bool {
        let mut found = false;
        for entry in self.brokers.values_mut() {
            found |= entry.topics.remove(topic).is_some();
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, queues: u32) -> pb::TopicConfig {
        pb::TopicConfig {
            name: name.to_owned(),
            read_queue_nums: queues,
            write_queue_nums: queues,
            perm: pb::Permission::ReadWrite as i32,
            message_types: vec![pb::MessageType::Normal as i32],
        }
    }

    fn reg(
        name: &str,
        id: u64,
        addr: &str,
        topics: Vec<pb::TopicConfig>,
    ) -> pb::RegisterBrokerRequest {
        pb::RegisterBrokerRequest {
            cluster_name: "c".into(),
            broker_name: name.into(),
            broker_id: id,
            client_address: addr.into(),
            ha_address: String::new(),
            topics,
            data_version: 1,
        }
    }

    #[test]
    fn route_lists_each_group_with_master_layout_and_all_members() {
        let mut t = RouteTable::default();
        t.register(reg("a", 0, "h1:1", vec![topic("T", 8)]), 0)
            .unwrap();
        let master = t
            .register(reg("a", 1, "h2:1", vec![topic("T", 4)]), 0)
            .unwrap();
        assert_eq!(master.as_deref(), Some("h1:1"));
        t.register(reg("b", 0, "h3:1", vec![topic("T", 2), topic("U", 1)]), 0)
            .unwrap();

        let r = t.topic_route("T").unwrap();
        assert_eq!(r.groups.len(), 2);
        let a = &r.groups[0];
        assert_eq!(a.broker_name, "a");
        assert_eq!(a.topic.as_ref().unwrap().read_queue_nums, 8);
        assert_eq!(a.addresses.len(), 2);
        assert_eq!(a.addresses[&1], "h2:1");
        assert_eq!(t.topic_route("U").unwrap().groups.len(), 1);
        assert!(t.topic_route("missing").is_none());
    }

    #[test]
    fn slave_layout_serves_when_master_is_gone() {
        let mut t = RouteTable::default();
        t.register(reg("a", 0, "m:1", vec![topic("T", 8)]), 0)
            .unwrap();
        t.register(reg("a", 1, "s:1", vec![topic("T", 8)]), 50)
            .unwrap();
        assert_eq!(
            t.expire(130, 100),
            vec![BrokerKey {
                broker_name: "a".into(),
                broker_id: 0
            }]
        );
        let r = t.topic_route("T").unwrap();
        assert_eq!(r.groups[0].addresses.len(), 1);
        assert_eq!(r.groups[0].addresses[&1], "s:1");
    }

    #[test]
    fn registration_replaces_topic_table_and_refreshes_liveness() {
        let mut t = RouteTable::default();
        t.register(reg("a", 0, "m:1", vec![topic("T", 8)]), 0)
            .unwrap();
        t.register(reg("a", 0, "m:1", vec![topic("U", 8)]), 90)
            .unwrap();
        assert!(t.topic_route("T").is_none());
        assert!(
            t.expire(150, 100).is_empty(),
            "heartbeat at 90 keeps it alive at 150"
        );
        assert_eq!(t.expire(191, 100).len(), 1);
        assert!(t.brokers().is_empty());
    }

    #[test]
    fn delete_unregister_and_listing() {
        let mut t = RouteTable::default();
        t.register(reg("a", 0, "m:1", vec![topic("T", 8), topic("U", 1)]), 0)
            .unwrap();
        t.register(reg("b", 0, "n:1", vec![topic("T", 8)]), 0)
            .unwrap();
        let names: Vec<_> = t
            .topics()
            .into_iter()
            .map(|s| (s.name, s.broker_names))
            .collect();
        assert_eq!(
            names,
            vec![
                ("T".to_owned(), vec!["a".to_owned(), "b".to_owned()]),
                ("U".to_owned(), vec!["a".to_owned()])
            ]
        );
        assert!(t.delete_topic("T"));
        assert!(!t.delete_topic("T"));
        assert!(t.topic_route("T").is_none());
        assert!(t.unregister("b", 0));
        assert!(!t.unregister("b", 0));
        assert_eq!(t.brokers().len(), 1);
    }

    #[test]
    fn bad_registrations_are_refused() {
        let mut t = RouteTable::default();
        assert_eq!(
            t.register(reg("", 0, "m:1", vec![]), 0),
            Err(RegisterError::EmptyBrokerName)
        );
        assert_eq!(
            t.register(reg("a", 0, "", vec![]), 0),
            Err(RegisterError::EmptyAddress)
        );
        assert!(matches!(
            t.register(reg("a", 0, "m:1", vec![topic("", 1)]), 0),
            Err(RegisterError::EmptyTopic { .. })
        ));
        assert!(t.brokers().is_empty());
    }
}
