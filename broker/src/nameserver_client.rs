//! The broker's side of `rocketlog.nameserver.v1.NameServer`: the calls that register and
//! unregister a broker with every configured nameserver (when to make them is the
//! registration module's business), and reading topic routes for QueryRoute.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rocketlog_proto::nameserver::v1 as ns;
use rocketlog_proto::nameserver::v1::name_server_client::NameServerClient;
use rocketlog_transport::signature::{Credentials, SigningInterceptor};
use tonic::codegen::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::topics::{Permission, TopicConfig, TopicMessageType};

/// One broker group's share of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerQueues {
    pub broker_name: String,
    /// 0 for the group's master; a slave's id when the master is gone and the slave serves
    /// reads (clients are told id 0 either way: see `broker_of`).
    pub broker_id: u64,
    /// Address `host:port`; `None` = this broker (the caller fills in its endpoint).
    pub address: Option<String>,
    pub queue_count: u32,
    pub permission: Permission,
    pub message_types: BTreeSet<TopicMessageType>,
}

impl BrokerQueues {
    /// This broker's entry for a local topic.
    pub fn local(broker_name: &str, topic: &TopicConfig) -> Self {
        BrokerQueues {
            broker_name: broker_name.to_owned(),
            broker_id: 0,
            address: None,
            queue_count: topic.queue_count,
            permission: topic.permission,
            message_types: topic.message_types.clone(),
        }
    }
}

/// Deadline of one nameserver call.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Delay before retrying a registration some nameserver refused or missed.
pub(crate) const REGISTER_RETRY: Duration = Duration::from_secs(1);

/// Why a nameserver call failed.
#[derive(Debug, thiserror::Error)]
pub enum NameserverError {
    #[error("nameserver {address}: {status}")]
    Call {
        address: String,
        #[source]
        status: tonic::Status,
    },
    #[error("invalid nameserver address {address:?}: {reason}")]
    Address { address: String, reason: String },
}

/// Lazily connected clients of every configured nameserver.
#[derive(Debug, Clone)]
pub struct NameserverClient {
    servers: Arc<Vec<(String, Result<Channel, String>)>>,
    next: Arc<AtomicUsize>,
    signer: SigningInterceptor,
}

type Client = NameServerClient<InterceptedService<Channel, SigningInterceptor>>;

impl NameserverClient {
    /// Clients for `addresses` (`host:port`), signing their calls with `credentials`
    /// (`[broker.auth] nameserver_access_key`); connections are made on first use.
    pub fn new(addresses: &[String], credentials: Option<Credentials>) -> Self {
        let servers = addresses
            .iter()
            .map(|a| {
                let channel = Endpoint::from_shared(format!("http://{a}"))
                    .map(|e| {
                        e.connect_timeout(CALL_TIMEOUT)
                            .timeout(CALL_TIMEOUT)
                            .connect_lazy()
                    })
                    .map_err(|e| e.to_string());
                (a.clone(), channel)
            })
            .collect();
        NameserverClient {
            servers: Arc::new(servers),
            next: Arc::new(AtomicUsize::new(0)),
            signer: SigningInterceptor::new(credentials),
        }
    }

    fn client(&self, index: usize) -> Result<(String, Client), NameserverError> {
        let (address, channel) = &self.servers[index];
        match channel {
            Ok(c) => Ok((
                address.clone(),
                NameServerClient::with_interceptor(c.clone(), self.signer.clone()),
            )),
            Err(reason) => Err(NameserverError::Address {
                address: address.clone(),
                reason: reason.clone(),
            }),
        }
    }

    /// Number of configured nameservers.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The route of `topic` from the first nameserver that answers (they hold the same
    /// table); empty when no broker serves it.
    pub async fn topic_route(&self, topic: &str) -> Result<Vec<BrokerQueues>, NameserverError> {
        let n = self.servers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last_err = None;
        for i in 0..n {
            let (address, mut client) = match self.client((start + i) % n) {
                Ok(c) => c,
                Err(e) => {
                    last_err = Some(e);
                    continue;
                }
            };
            let req = ns::GetTopicRouteRequest {
                topic: topic.to_owned(),
            };
            match client.get_topic_route(req).await {
                Ok(resp) => return Ok(route_of(resp.into_inner())),
                Err(status) if status.code() == tonic::Code::NotFound => return Ok(Vec::new()),
                Err(status) => last_err = Some(NameserverError::Call { address, status }),
            }
        }
        match last_err {
            Some(e) => Err(e),
            None => Ok(Vec::new()),
        }
    }

    /// Registers with every nameserver; returns how many accepted.
    pub async fn register(&self, req: &ns::RegisterBrokerRequest) -> usize {
        let calls = (0..self.servers.len()).map(|i| {
            let req = req.clone();
            async move {
                let (address, mut client) = self.client(i)?;
                client
                    .register_broker(req)
                    .await
                    .map_err(|status| NameserverError::Call { address, status })
            }
        });
        let mut ok = 0;
        for result in futures::future::join_all(calls).await {
            match result {
                Ok(_) => ok += 1,
                Err(e) => tracing::warn!(error = %e, "broker registration failed"),
            }
        }
        ok
    }

    /// Every nameserver's address with the brokers it has registered, or why it could not
    /// be asked; in configuration order.
    pub async fn list_brokers(&self) -> Vec<(String, Result<Vec<ns::BrokerInfo>, String>)> {
        let calls = (0..self.servers.len()).map(|i| async move {
            let address = self.servers[i].0.clone();
            let answer = match self.client(i) {
                Ok((_, mut client)) => client
                    .list_brokers(ns::ListBrokersRequest {})
                    .await
                    .map(|r| r.into_inner().brokers)
                    .map_err(|status| format!("{:?}: {}", status.code(), status.message())),
                Err(e) => Err(e.to_string()),
            };
            (address, answer)
        });
        futures::future::join_all(calls).await
    }

    /// Tells every nameserver this broker is leaving (best effort).
    pub async fn unregister(&self, req: &ns::UnregisterBrokerRequest) {
        let calls = (0..self.servers.len()).map(|i| {
            let req = req.clone();
            async move {
                if let Ok((_, mut client)) = self.client(i) {
                    let _ = client.unregister_broker(req).await;
                }
            }
        });
        futures::future::join_all(calls).await;
    }
}

fn permission_of(p: i32) -> Permission {
    match ns::Permission::try_from(p) {
        Ok(ns::Permission::None) => Permission::None,
        Ok(ns::Permission::Read) => Permission::Read,
        Ok(ns::Permission::Write) => Permission::Write,
        _ => Permission::ReadWrite,
    }
}

fn wire_permission(p: Permission) -> ns::Permission {
    match p {
        Permission::None => ns::Permission::None,
        Permission::Read => ns::Permission::Read,
        Permission::Write => ns::Permission::Write,
        Permission::ReadWrite => ns::Permission::ReadWrite,
    }
}

fn type_of(t: i32) -> Option<TopicMessageType> {
    match ns::MessageType::try_from(t) {
        Ok(ns::MessageType::Normal) => Some(TopicMessageType::Normal),
        Ok(ns::MessageType::Fifo) => Some(TopicMessageType::Fifo),
        Ok(ns::MessageType::Delay) => Some(TopicMessageType::Delay),
        Ok(ns::MessageType::Transaction) => Some(TopicMessageType::Transaction),
        _ => None,
    }
}

fn wire_type(t: TopicMessageType) -> ns::MessageType {
    match t {
        TopicMessageType::Normal => ns::MessageType::Normal,
        TopicMessageType::Fifo => ns::MessageType::Fifo,
        TopicMessageType::Delay => ns::MessageType::Delay,
        TopicMessageType::Transaction => ns::MessageType::Transaction,
    }
}

/// What a slave may do with a topic its master would serve: read, never write.
pub fn read_only(p: Permission) -> Permission {
    if p.readable() {
        Permission::Read
    } else {
        Permission::None
    }
}

/// Route entries per broker group: its master's; or, when the master is gone, its first
/// slave's, read-only (consumers keep receiving what was replicated; producers go elsewhere).
fn route_of(resp: ns::GetTopicRouteResponse) -> Vec<BrokerQueues> {
    resp.groups
        .into_iter()
        .filter_map(|g| {
            let (&broker_id, address) = g.addresses.iter().min_by_key(|(id, _)| **id)?;
            let address = address.clone();
            let t = g.topic?;
            let mut types: BTreeSet<TopicMessageType> =
                t.message_types.iter().filter_map(|m| type_of(*m)).collect();
            if types.is_empty() {
                types.insert(TopicMessageType::Normal);
            }
            let permission = permission_of(t.perm);
            Some(BrokerQueues {
                broker_name: g.broker_name,
                broker_id,
                address: Some(address),
                queue_count: t.read_queue_nums.max(t.write_queue_nums),
                permission: if broker_id == 0 {
                    permission
                } else {
                    read_only(permission)
                },
                message_types: types,
            })
        })
        .collect()
}

/// This broker's topic as the nameserver stores it.
pub fn wire_topic(t: &TopicConfig) -> ns::TopicConfig {
    ns::TopicConfig {
        name: t.name.clone(),
        read_queue_nums: t.queue_count,
        write_queue_nums: t.queue_count,
        perm: wire_permission(t.permission) as i32,
        message_types: t
            .message_types
            .iter()
            .map(|m| wire_type(*m) as i32)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_use_the_master_or_else_a_slave_read_only() {
        let topic = |perm: ns::Permission| ns::TopicConfig {
            name: "t".into(),
            read_queue_nums: 4,
            write_queue_nums: 4,
            perm: perm as i32,
            message_types: vec![ns::MessageType::Fifo as i32],
        };
        let group = |name: &str, addresses: &[(u64, &str)], perm| ns::BrokerGroupRoute {
            cluster_name: "c".into(),
            broker_name: name.into(),
            addresses: addresses
                .iter()
                .map(|(id, a)| (*id, (*a).to_owned()))
                .collect(),
            topic: Some(topic(perm)),
        };
        let resp = ns::GetTopicRouteResponse {
            topic: "t".into(),
            groups: vec![
                group(
                    "broker-b",
                    &[(1, "10.0.0.3:8081"), (0, "10.0.0.2:8081")],
                    ns::Permission::Read,
                ),
                group(
                    "slave-only",
                    &[(2, "10.0.0.5:8081"), (1, "10.0.0.4:8081")],
                    ns::Permission::ReadWrite,
                ),
                group("write-only", &[(1, "10.0.0.6:8081")], ns::Permission::Write),
            ],
        };
        let route = route_of(resp);
        assert_eq!(route.len(), 3);
        let b = &route[0];
        assert_eq!(b.broker_name, "broker-b");
        assert_eq!(
            (b.broker_id, b.address.as_deref()),
            (0, Some("10.0.0.2:8081"))
        );
        assert_eq!(b.queue_count, 4);
        assert_eq!(b.permission, Permission::Read);
        assert!(b.message_types.contains(&TopicMessageType::Fifo));
        let s = &route[1];
        assert_eq!(
            (s.broker_id, s.address.as_deref()),
            (1, Some("10.0.0.4:8081"))
        );
        assert_eq!(s.permission, Permission::Read, "a slave never takes writes");
        assert_eq!(route[2].permission, Permission::None);
    }

    #[test]
    fn local_topics_register_with_equal_read_and_write_queues() {
        let t = TopicConfig::new("orders", 3, [TopicMessageType::Normal]);
        let wire = wire_topic(&t);
        assert_eq!((wire.read_queue_nums, wire.write_queue_nums), (3, 3));
        assert_eq!(wire.perm, ns::Permission::ReadWrite as i32);
        assert_eq!(wire.message_types, vec![ns::MessageType::Normal as i32]);
    }
}
