//! `rocketlog.admin.v1.Admin`, served on the client port: topics, consumer-group progress,
//! message lookup, offset reset and broker statistics. Failures are gRPC statuses with a
//! readable message (this API is for rocketlog's own tools, not the RocketMQ clients).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use rocketlog_proto::admin::v1 as pb;
use rocketlog_proto::admin::v1::admin_server::{Admin, AdminServer};
use rocketlog_store::{Store, StoredMessage};
use tonic::{Request, Response, Status};

use crate::auth::{Action, Auth, Decision, ResourceKind, Rule, UserError};
use crate::broker::Broker;
use crate::config::FlushMode;
use crate::consumption::QueueLag;
use crate::metrics::StorageSize;
use crate::nameserver_client::NameserverClient;
use crate::replication::PromoteError;
use crate::topics::{Permission, TopicConfig, TopicError, TopicMessageType};
use crate::transaction::HALF_TOPIC;

/// Default and largest number of messages one lookup returns.
const DEFAULT_LOOKUP_MAX: usize = 32;
const LOOKUP_MAX_LIMIT: usize = 1024;
/// Bodies in lookups are cut to this many bytes.
const LOOKUP_BODY_LIMIT: usize = 64 << 10;

/// The admin service over one broker.
#[derive(Debug, Clone)]
pub struct AdminApi {
    broker: Arc<Broker>,
    auth: Arc<Auth>,
    /// Bytes of the store on disk, measured now and then (walking the directory).
    storage_size: Arc<StorageSize>,
    /// The nameservers, for the cluster overview.
    nameservers: Option<NameserverClient>,
}

impl AdminApi {
    /// The admin API over `broker` (served as gRPC by [`service`], called in-process by the
    /// web console).
    pub fn new(broker: Arc<Broker>, auth: Arc<Auth>) -> Self {
        let storage_size = Arc::new(StorageSize::new(broker.config.store_dir()));
        let nameservers = (!broker.config.nameserver_addresses.is_empty()).then(|| {
            NameserverClient::new(
                &broker.config.nameserver_addresses,
                broker.config.auth.nameserver_credentials(),
            )
        });
        AdminApi {
            broker,
            auth,
            storage_size,
            nameservers,
        }
    }
}

/// The admin gRPC service, ready to be routed.
pub fn service(broker: Arc<Broker>, auth: Arc<Auth>) -> AdminServer<AdminApi> {
    AdminServer::new(AdminApi::new(broker, auth))
}

fn user_status(e: UserError) -> Status {
    match e {
        UserError::NotFound(_) => Status::not_found(e.to_string()),
        UserError::InvalidAccessKey(_)
        | UserError::InvalidSecretKey(_)
        | UserError::InvalidRule(_)
        | UserError::TooManyRules { .. } => Status::invalid_argument(e.to_string()),
        UserError::File { .. } => Status::internal(e.to_string()),
    }
}

fn rule_from(rule: Option<pb::AclRule>) -> Result<Rule, Status> {
    let r = rule.ok_or_else(|| Status::invalid_argument("a rule is required"))?;
    let decision = match pb::AclDecision::try_from(r.decision) {
        Ok(pb::AclDecision::Allow) => Decision::Allow,
        Ok(pb::AclDecision::Deny) => Decision::Deny,
        _ => {
            return Err(Status::invalid_argument(
                "the rule's decision must be allow or deny",
            ))
        }
    };
    let action = match pb::AclAction::try_from(r.action) {
        Ok(pb::AclAction::Pub) => Action::Pub,
        Ok(pb::AclAction::Sub) => Action::Sub,
        _ => {
            return Err(Status::invalid_argument(
                "the rule's action must be Pub or Sub",
            ))
        }
    };
    let kind = match pb::AclResource::try_from(r.resource) {
        Ok(pb::AclResource::Topic) => ResourceKind::Topic,
        Ok(pb::AclResource::Group) => ResourceKind::Group,
        _ => {
            return Err(Status::invalid_argument(
                "the rule's resource must be topic or group",
            ))
        }
    };
    if kind == ResourceKind::Group && action == Action::Pub {
        return Err(Status::invalid_argument(
            "groups only consume: a group rule's action is Sub",
        ));
    }
    Ok(Rule {
        decision,
        action,
        kind,
        pattern: r.pattern,
    })
}

fn rule_to(r: &Rule) -> pb::AclRule {
    pb::AclRule {
        decision: match r.decision {
            Decision::Allow => pb::AclDecision::Allow,
            Decision::Deny => pb::AclDecision::Deny,
        } as i32,
        action: match r.action {
            Action::Pub => pb::AclAction::Pub,
            Action::Sub => pb::AclAction::Sub,
        } as i32,
        resource: match r.kind {
            ResourceKind::Topic => pb::AclResource::Topic,
            ResourceKind::Group => pb::AclResource::Group,
        } as i32,
        pattern: r.pattern.clone(),
    }
}

impl AdminApi {
    /// Runs a change of the user file (fsynced) off the async threads.
    async fn users<T: Send + 'static>(
        &self,
        change: impl FnOnce(&Auth) -> Result<T, UserError> + Send + 'static,
    ) -> Result<T, Status> {
        let auth = Arc::clone(&self.auth);
        tokio::task::spawn_blocking(move || change(&auth))
            .await
            .map_err(|e| Status::internal(format!("user change failed: {e}")))?
            .map_err(user_status)
    }
}

fn topic_status(e: TopicError) -> Status {
    match e {
        TopicError::NotFound { .. } => Status::not_found(e.to_string()),
        TopicError::AlreadyExists { .. } => Status::already_exists(e.to_string()),
        TopicError::InvalidName(_)
        | TopicError::InvalidQueueCount { .. }
        | TopicError::NoMessageTypes { .. } => Status::invalid_argument(e.to_string()),
        TopicError::Io { .. } | TopicError::Corrupt { .. } => Status::internal(e.to_string()),
    }
}

impl AdminApi {
    /// Topics and consumer offsets are the master's: a slave copies them from it.
    fn master_only(&self, what: &str) -> Result<(), Status> {
        if self.broker.role.is_master() {
            return Ok(());
        }
        Err(Status::failed_precondition(format!(
            "this broker is a slave: change {what} on its master (slaves copy them from it)"
        )))
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

fn to_wire(t: &TopicConfig) -> pb::TopicConfig {
    pb::TopicConfig {
        name: t.name.clone(),
        queue_nums: t.queue_count,
        perm: match t.permission {
            Permission::None => pb::Permission::None,
            Permission::Read => pb::Permission::Read,
            Permission::Write => pb::Permission::Write,
            Permission::ReadWrite => pb::Permission::ReadWrite,
        } as i32,
        message_types: t
            .message_types
            .iter()
            .map(|m| match m {
                TopicMessageType::Normal => pb::MessageType::Normal,
                TopicMessageType::Fifo => pb::MessageType::Fifo,
                TopicMessageType::Delay => pb::MessageType::Delay,
                TopicMessageType::Transaction => pb::MessageType::Transaction,
            } as i32)
            .collect(),
    }
}

fn from_wire(t: pb::TopicConfig, default_queues: u32) -> Result<TopicConfig, Status> {
    let permission = match pb::Permission::try_from(t.perm) {
        Ok(pb::Permission::None) => Permission::None,
        Ok(pb::Permission::Read) => Permission::Read,
        Ok(pb::Permission::Write) => Permission::Write,
        Ok(pb::Permission::ReadWrite) | Ok(pb::Permission::Unspecified) => Permission::ReadWrite,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown permission {}",
                t.perm
            )))
        }
    };
    let mut types = BTreeSet::new();
    for m in t.message_types {
        let kind = match pb::MessageType::try_from(m) {
            Ok(pb::MessageType::Normal) => TopicMessageType::Normal,
            Ok(pb::MessageType::Fifo) => TopicMessageType::Fifo,
            Ok(pb::MessageType::Delay) => TopicMessageType::Delay,
            Ok(pb::MessageType::Transaction) => TopicMessageType::Transaction,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "unknown message type {m}"
                )))
            }
        };
        types.insert(kind);
    }
    if types.is_empty() {
        types.insert(TopicMessageType::Normal);
    }
    Ok(TopicConfig {
        name: t.name,
        queue_count: if t.queue_nums == 0 {
            default_queues
        } else {
            t.queue_nums
        },
        permission,
        message_types: types,
    })
}

fn stored(m: StoredMessage, with_body: bool) -> pb::StoredMessage {
    let body_size = u32::try_from(m.body.len()).unwrap_or(u32::MAX);
    let body = if with_body {
        let mut b = m.body;
        b.truncate(LOOKUP_BODY_LIMIT);
        b
    } else {
        Vec::new()
    };
    pb::StoredMessage {
        topic: m.topic,
        queue_id: m.queue_id,
        queue_offset: m.queue_offset.0,
        physical_offset: m.physical_offset.0,
        message_id: m.message_id,
        keys: m.keys,
        tag: m.tag.unwrap_or_default(),
        born_timestamp_ms: m.born_timestamp_ms,
        store_timestamp_ms: m.store_timestamp_ms,
        body_size,
        properties: m.properties.into_iter().collect(),
        body,
        reconsume_times: m.reconsume_times,
        ..Default::default()
    }
}

/// Messages stored in every queue of `topic`, from the store's queue list `queues`.
fn stored_in(b: &Broker, queues: &HashMap<String, Vec<u32>>, topic: &str) -> u64 {
    queues.get(topic).map_or(0, |ids| {
        ids.iter()
            .map(|q| {
                let (min, max) = b.store.queue_range(topic, *q);
                max.0.saturating_sub(min.0)
            })
            .fold(0u64, u64::saturating_add)
    })
}

/// The store's queues by topic.
fn queues_by_topic(b: &Broker) -> HashMap<String, Vec<u32>> {
    let mut out: HashMap<String, Vec<u32>> = HashMap::new();
    for (topic, q) in b.store.queues() {
        out.entry(topic).or_default().push(q);
    }
    out
}

fn dlq_topic(group: &str) -> String {
    format!("%DLQ%{group}")
}

/// Counters of every topic in `topics`, in that order.
fn topic_stats(b: &Broker, topics: &[String]) -> Vec<pb::TopicStats> {
    let queues = queues_by_topic(b);
    // (acked, groups) per topic.
    let mut consumed: HashMap<String, (u64, BTreeSet<String>)> = HashMap::new();
    for (group, q) in b.consumption.describe_all() {
        let e = consumed.entry(q.topic).or_default();
        e.0 = e.0.saturating_add(q.committed_offset.0);
        e.1.insert(group);
    }
    topics
        .iter()
        .map(|name| {
            let ids = queues.get(name).map(Vec::as_slice).unwrap_or_default();
            let (mut written, mut kept) = (0u64, 0u64);
            for q in ids {
                let (min, max) = b.store.queue_range(name, *q);
                written = written.saturating_add(max.0);
                kept = kept.saturating_add(max.0.saturating_sub(min.0));
            }
            let (acked, groups) = consumed.remove(name).unwrap_or_default();
            pb::TopicStats {
                name: name.clone(),
                messages_in: written,
                messages_stored: kept,
                messages_acked: acked,
                consumer_groups: u32::try_from(groups.len()).unwrap_or(u32::MAX),
            }
        })
        .collect()
}

/// Every group with consumption state, summed over its queues.
fn group_summaries(b: &Broker) -> Vec<pb::ConsumerGroupSummary> {
    let queues = queues_by_topic(b);
    let mut groups: Vec<pb::ConsumerGroupSummary> = Vec::new();
    for (group, q) in b.consumption.describe_all() {
        if groups.last().map(|g| g.group != group).unwrap_or(true) {
            let dlq_messages = stored_in(b, &queues, &dlq_topic(&group));
            groups.push(pb::ConsumerGroupSummary {
                group,
                dlq_messages,
                ..Default::default()
            });
        }
        let Some(g) = groups.last_mut() else { continue };
        if g.topics.last() != Some(&q.topic) {
            g.topics.push(q.topic.clone());
        }
        g.total_lag = g.total_lag.saturating_add(q.lag);
        g.total_inflight = g
            .total_inflight
            .saturating_add(u64::try_from(q.in_flight).unwrap_or(u64::MAX));
    }
    groups
}

fn queue_lag(q: QueueLag) -> pb::QueueLag {
    pb::QueueLag {
        topic: q.topic,
        queue_id: q.queue_id,
        broker_offset: q.max_offset.0,
        consumer_offset: q.committed_offset.0,
        lag: q.lag,
        inflight: u64::try_from(q.in_flight).unwrap_or(u64::MAX),
    }
}

fn property<'a>(m: &'a pb::StoredMessage, key: &str) -> Option<&'a str> {
    m.properties.get(key).map(String::as_str)
}

/// Adds to each found message how far each group got with it, and its delayed and
/// transactional state, judged from the other records of the same message id found with it
/// (a delayed message is a timer record and, once due, a delivered copy; a transactional one
/// a half message and, once committed, a copy in its topic).
fn annotate(b: &Broker, messages: &mut [pb::StoredMessage]) {
    let delivered = |id: &str, all: &[pb::StoredMessage]| {
        all.iter().any(|m| {
            m.message_id == id && m.topic != crate::timer::TIMER_TOPIC && m.topic != HALF_TOPIC
        })
    };
    let recalled = |id: &str, all: &[pb::StoredMessage]| {
        all.iter()
            .any(|m| m.message_id == id && property(m, crate::timer::RECALL_PROPERTY).is_some())
    };
    let half_of = |id: &str, all: &[pb::StoredMessage]| {
        all.iter()
            .find(|m| m.message_id == id && m.topic == HALF_TOPIC)
            .map(|m| m.physical_offset)
    };
    let snapshot = messages.to_vec();
    for m in messages.iter_mut() {
        m.deliveries = b
            .consumption
            .delivery_states(&m.topic, m.queue_id, m.queue_offset)
            .into_iter()
            .map(|(group, state)| pb::GroupDelivery {
                group,
                state: state.as_str().to_owned(),
            })
            .collect();
        if let Some(at) = property(m, crate::timer::DELIVER_MS_PROPERTY) {
            m.deliver_at_ms = at.parse().unwrap_or(0);
            m.delay_state = if recalled(&m.message_id, &snapshot) {
                "recalled"
            } else if m.topic != crate::timer::TIMER_TOPIC || delivered(&m.message_id, &snapshot) {
                "delivered"
            } else {
                "scheduled"
            }
            .to_owned();
        }
        if let Some(half) = half_of(&m.message_id, &snapshot) {
            m.transaction_state = if delivered(&m.message_id, &snapshot) {
                "committed"
            } else if b.transactions.is_open(half) {
                "open"
            } else {
                "rolled_back"
            }
            .to_owned();
        }
    }
}

/// The messages of `topic` with `key`, including those the broker still holds under a system
/// topic for it: a delayed message waiting in the timer's topic, a transactional message as
/// its half message (open or rolled back, or committed: the half copy beside the delivered
/// one tells the transaction's outcome). At most `max` distinct message ids, each with every
/// copy stored under it.
fn lookup_key(
    store: &Store,
    topic: &str,
    key: &str,
    max: usize,
) -> Result<Vec<StoredMessage>, rocketlog_store::StoreError> {
    let mut found = store.lookup_key(topic, key, max)?;
    let held = |m: &StoredMessage| match m.topic.as_str() {
        crate::timer::TIMER_TOPIC => crate::timer::real_topic(m) == Some(topic),
        HALF_TOPIC => {
            m.properties
                .iter()
                .find(|(k, _)| k == crate::transaction::HALF_REAL_TOPIC_PROPERTY)
                .map(|(_, v)| v.as_str())
                == Some(topic)
        }
        _ => false,
    };
    for system in [crate::timer::TIMER_TOPIC, HALF_TOPIC] {
        found.extend(
            store
                .lookup_key(system, key, max)?
                .into_iter()
                .filter(|m| held(m)),
        );
    }
    // Oldest first, then at most `max` message ids with all their copies.
    found.sort_by_key(|m| m.physical_offset.0);
    let mut ids: Vec<String> = Vec::new();
    found.retain(|m| {
        if ids.contains(&m.message_id) {
            return true;
        }
        if ids.len() < max {
            ids.push(m.message_id.clone());
            true
        } else {
            false
        }
    });
    Ok(found)
}

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn create_or_update_topic(
        &self,
        request: Request<pb::CreateOrUpdateTopicRequest>,
    ) -> Result<Response<pb::CreateOrUpdateTopicResponse>, Status> {
        let b = &self.broker;
        self.master_only("topics")?;
        let wire = request
            .into_inner()
            .topic
            .ok_or_else(|| Status::invalid_argument("topic is required"))?;
        let config = from_wire(wire, b.config.default_queue_count)?;
        let existed = b.topics.get(&config.name).is_some();
        let saved = b.topics.upsert(config).map_err(topic_status)?;
        b.routes.invalidate(&saved.name);
        tracing::info!(topic = %saved.name, queues = saved.queue_count, created = !existed, "topic saved");
        Ok(Response::new(pb::CreateOrUpdateTopicResponse {
            topic: Some(to_wire(&saved)),
            created: !existed,
        }))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let b = &self.broker;
        self.master_only("topics")?;
        let name = request.into_inner().name;
        b.topics.delete(&name).map_err(topic_status)?;
        b.routes.invalidate(&name);
        let store = b.store.clone();
        tokio::task::spawn_blocking(move || store.delete_topic(&name))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let mut topics: Vec<pb::TopicConfig> = self
            .broker
            .topics
            .list()
            .iter()
            .map(|t| to_wire(t))
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let stats = if request.into_inner().with_stats {
            let b = Arc::clone(&self.broker);
            let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
            tokio::task::spawn_blocking(move || topic_stats(&b, &names))
                .await
                .map_err(internal)?
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::ListTopicsResponse { topics, stats }))
    }

    async fn list_consumer_groups(
        &self,
        _request: Request<pb::ListConsumerGroupsRequest>,
    ) -> Result<Response<pb::ListConsumerGroupsResponse>, Status> {
        let b = Arc::clone(&self.broker);
        let groups = tokio::task::spawn_blocking(move || group_summaries(&b))
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::ListConsumerGroupsResponse { groups }))
    }

    async fn consumer_lag_history(
        &self,
        request: Request<pb::ConsumerLagHistoryRequest>,
    ) -> Result<Response<pb::ConsumerLagHistoryResponse>, Status> {
        let group = request.into_inner().group;
        rocketlog_common::validate_group(&group)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let history = &self.broker.lag_history;
        let series = history
            .group(&group)
            .into_iter()
            .map(|s| pb::LagSeries {
                topic: s.topic,
                queue_id: s.queue_id,
                points: s
                    .points
                    .into_iter()
                    .map(|(time_ms, lag)| pb::LagPoint { time_ms, lag })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::ConsumerLagHistoryResponse {
            group,
            interval_ms: u64::try_from(history.interval().as_millis()).unwrap_or(u64::MAX),
            series,
        }))
    }

    async fn cluster_overview(
        &self,
        _request: Request<pb::ClusterOverviewRequest>,
    ) -> Result<Response<pb::ClusterOverviewResponse>, Status> {
        let me = self
            .broker_stats(Request::new(pb::BrokerStatsRequest {}))
            .await?
            .into_inner();
        let mut nameservers = Vec::new();
        // (broker name, id) -> the freshest registration any nameserver has.
        let mut brokers: std::collections::BTreeMap<(String, u64), pb::ClusterBroker> =
            Default::default();
        if let Some(ns) = &self.nameservers {
            for (address, answer) in ns.list_brokers().await {
                match answer {
                    Ok(list) => {
                        nameservers.push(pb::NameserverStatus {
                            address,
                            reachable: true,
                            error: String::new(),
                        });
                        for info in list {
                            let key = (info.broker_name.clone(), info.broker_id);
                            let fresher = brokers
                                .get(&key)
                                .is_none_or(|b| b.last_heartbeat_ms < info.last_heartbeat_ms);
                            if fresher {
                                let this_broker = info.cluster_name == me.cluster_name
                                    && info.broker_name == me.broker_name
                                    && info.broker_id == me.broker_id;
                                brokers.insert(
                                    key,
                                    pb::ClusterBroker {
                                        cluster_name: info.cluster_name,
                                        broker_name: info.broker_name,
                                        broker_id: info.broker_id,
                                        client_address: info.client_address,
                                        replication_address: info.ha_address,
                                        last_heartbeat_ms: info.last_heartbeat_ms,
                                        topic_count: info.topic_count,
                                        this_broker,
                                    },
                                );
                            }
                        }
                    }
                    Err(error) => nameservers.push(pb::NameserverStatus {
                        address,
                        reachable: false,
                        error,
                    }),
                }
            }
        }
        Ok(Response::new(pb::ClusterOverviewResponse {
            broker: Some(me),
            nameservers,
            brokers: brokers.into_values().collect(),
        }))
    }

    async fn describe_consumer_group(
        &self,
        request: Request<pb::DescribeConsumerGroupRequest>,
    ) -> Result<Response<pb::DescribeConsumerGroupResponse>, Status> {
        let group = request.into_inner().group;
        rocketlog_common::validate_group(&group)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let queues: Vec<pb::QueueLag> = self
            .broker
            .consumption
            .describe_group(&group)
            .into_iter()
            .map(queue_lag)
            .collect();
        let total_lag = queues.iter().map(|q| q.lag).fold(0u64, u64::saturating_add);
        let total_inflight = queues
            .iter()
            .map(|q| q.inflight)
            .fold(0u64, u64::saturating_add);
        let dlq_messages = stored_in(
            &self.broker,
            &queues_by_topic(&self.broker),
            &dlq_topic(&group),
        );
        Ok(Response::new(pb::DescribeConsumerGroupResponse {
            group,
            queues,
            total_lag,
            total_inflight,
            dlq_messages,
        }))
    }

    async fn lookup_message(
        &self,
        request: Request<pb::LookupMessageRequest>,
    ) -> Result<Response<pb::LookupMessageResponse>, Status> {
        let req = request.into_inner();
        let max = match usize::try_from(req.max).unwrap_or(LOOKUP_MAX_LIMIT) {
            0 => DEFAULT_LOOKUP_MAX,
            n => n.min(LOOKUP_MAX_LIMIT),
        };
        let store = self.broker.store.clone();
        let found = match req.by {
            Some(pb::lookup_message_request::By::MessageId(id)) => {
                if id.trim().is_empty() {
                    return Err(Status::invalid_argument("message id is empty"));
                }
                tokio::task::spawn_blocking(move || store.lookup_message_id(&id)).await
            }
            Some(pb::lookup_message_request::By::Key(k)) => {
                rocketlog_common::validate_topic(&k.topic)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                if k.key.is_empty() {
                    return Err(Status::invalid_argument("key is empty"));
                }
                tokio::task::spawn_blocking(move || lookup_key(&store, &k.topic, &k.key, max)).await
            }
            None => {
                return Err(Status::invalid_argument(
                    "give a message id or a topic and key",
                ))
            }
        }
        .map_err(internal)?
        .map_err(internal)?;
        let mut messages: Vec<pb::StoredMessage> = found
            .into_iter()
            .map(|m| stored(m, req.with_body))
            .collect();
        annotate(&self.broker, &mut messages);
        Ok(Response::new(pb::LookupMessageResponse { messages }))
    }

    async fn put_user(
        &self,
        request: Request<pb::PutUserRequest>,
    ) -> Result<Response<pb::PutUserResponse>, Status> {
        self.master_only("users and access rules")?;
        let r = request.into_inner();
        let created = self
            .users(move |auth| {
                let created = auth.users().get(&r.access_key).is_none();
                auth.users()
                    .put(&r.access_key, &r.secret_key, r.super_user)?;
                Ok(created)
            })
            .await?;
        Ok(Response::new(pb::PutUserResponse { created }))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        self.master_only("users and access rules")?;
        let key = request.into_inner().access_key;
        self.users(move |auth| auth.users().delete(&key)).await?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn list_users(
        &self,
        _request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let users = self
            .auth
            .users()
            .list()
            .iter()
            .map(|u| pb::UserInfo {
                access_key: u.access_key.clone(),
                super_user: u.super_user,
                rules: u.rules.iter().map(rule_to).collect(),
            })
            .collect();
        Ok(Response::new(pb::ListUsersResponse { users }))
    }

    async fn grant(
        &self,
        request: Request<pb::GrantRequest>,
    ) -> Result<Response<pb::GrantResponse>, Status> {
        self.master_only("users and access rules")?;
        let r = request.into_inner();
        let rule = rule_from(r.rule)?;
        self.users(move |auth| auth.users().grant(&r.access_key, rule))
            .await?;
        Ok(Response::new(pb::GrantResponse {}))
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        self.master_only("users and access rules")?;
        let r = request.into_inner();
        let rule = rule_from(r.rule)?;
        let removed = self
            .users(move |auth| auth.users().revoke(&r.access_key, &rule))
            .await?;
        Ok(Response::new(pb::RevokeResponse { removed }))
    }

    async fn drain(
        &self,
        request: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        let draining = !request.into_inner().resume;
        let was_draining = self.broker.role.set_draining(draining);
        Ok(Response::new(pb::DrainResponse {
            draining,
            was_draining,
        }))
    }

    async fn promote(
        &self,
        request: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::PromoteResponse>, Status> {
        let force = request.into_inner().force;
        if self.broker.role.under_controller() {
            // The controller decides: it elects this replica (from the sync-state set unless
            // forced), and this broker takes the role on its next heartbeat.
            let client = crate::controller_agent::ControllerClient::new(
                &self.broker.config.nameserver_addresses,
                self.broker.config.auth.nameserver_credentials(),
            );
            let a = client
                .elect(&rocketlog_proto::controller::v1::ElectRequest {
                    broker_name: self.broker.config.broker_name.clone(),
                    broker_id: self.broker.config.broker_id,
                    unclean: force,
                })
                .await?;
            return Ok(Response::new(pb::PromoteResponse {
                epoch: a.epoch,
                start_offset: self.broker.role.log_end(),
                lost_bytes: 0,
            }));
        }
        match self.broker.role.promote(force).await {
            Ok(p) => Ok(Response::new(pb::PromoteResponse {
                epoch: p.epoch,
                start_offset: p.start_offset,
                lost_bytes: p.lost_bytes,
            })),
            Err(e @ PromoteError::Failed(_)) => Err(Status::internal(e.to_string())),
            Err(e @ PromoteError::Busy) => Err(Status::aborted(e.to_string())),
            Err(e) => Err(Status::failed_precondition(e.to_string())),
        }
    }

    async fn reset_consumer_offset(
        &self,
        request: Request<pb::ResetConsumerOffsetRequest>,
    ) -> Result<Response<pb::ResetConsumerOffsetResponse>, Status> {
        self.master_only("consumer offsets")?;
        let req = request.into_inner();
        rocketlog_common::validate_group(&req.group)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if self.broker.topics.get(&req.topic).is_none() {
            return Err(Status::not_found(format!(
                "topic {:?} does not exist",
                req.topic
            )));
        }
        let engine = self.broker.consumption.clone();
        let offsets = tokio::task::spawn_blocking(move || {
            engine.reset_offset(&req.group, &req.topic, req.timestamp_ms)
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        Ok(Response::new(pb::ResetConsumerOffsetResponse {
            offsets: offsets
                .into_iter()
                .map(|(queue_id, offset)| pb::QueueOffset {
                    queue_id,
                    offset: offset.0,
                })
                .collect(),
        }))
    }

    async fn broker_stats(
        &self,
        _request: Request<pb::BrokerStatsRequest>,
    ) -> Result<Response<pb::BrokerStatsResponse>, Status> {
        let b = &self.broker;
        let topics = b.topics.list();
        let (min, max) = b.store.log_range();
        let (disk, store_size_bytes) = {
            let (store, size) = (b.store.clone(), Arc::clone(&self.storage_size));
            tokio::task::spawn_blocking(move || (store.disk_space(), size.get()))
                .await
                .map_err(internal)?
        };
        Ok(Response::new(pb::BrokerStatsResponse {
            cluster_name: b.config.cluster_name.clone(),
            broker_name: b.config.broker_name.clone(),
            broker_id: b.role.broker_id(),
            uptime_ms: u64::try_from(b.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            min_log_offset: min.0,
            max_log_offset: max.0,
            flushed_offset: b.store.flushed_offset().0,
            topic_count: u32::try_from(topics.len()).unwrap_or(u32::MAX),
            queue_count: topics
                .iter()
                .map(|t| t.queue_count)
                .fold(0u32, u32::saturating_add),
            flush_mode: match b.config.flush_mode {
                FlushMode::Sync => "sync",
                FlushMode::Async => "async",
            }
            .to_owned(),
            role: if b.role.is_master() {
                "master"
            } else {
                "slave"
            }
            .to_owned(),
            slaves: b
                .role
                .slaves()
                .into_iter()
                .map(|s| pb::SlaveReplication {
                    broker_id: s.broker_id,
                    peer: s.peer,
                    log_end_offset: s.log_end_offset,
                    durable_offset: s.durable_offset,
                    lag_bytes: s.lag_bytes,
                    last_ack_ms_ago: s.last_ack_ms_ago,
                })
                .collect(),
            following: b.role.follower_status().map(|(f, master_address)| {
                pb::FollowerReplication {
                    connected: f.connected,
                    master_address,
                    master_end_offset: f.master_end_offset,
                    log_end_offset: max.0,
                    last_error: f.last_error.unwrap_or_default(),
                    acknowledged_offset: f.acknowledged_offset,
                    state_log_offset: f.state_log_offset,
                }
            }),
            replication_mode: match b.config.replication.mode {
                crate::replication::ReplicationMode::Sync => "sync",
                crate::replication::ReplicationMode::Async => "async",
            }
            .to_owned(),
            epoch: b.role.epoch(),
            disk_total_bytes: disk.map_or(0, |(used, free)| used.saturating_add(free)),
            disk_free_bytes: disk.map_or(0, |(_, free)| free),
            store_size_bytes,
            draining: b.role.is_draining(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }
}
