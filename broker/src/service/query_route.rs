//! QueryRoute: every queue of the topic on every broker group, each with the master's endpoints
//! and the message types the topic accepts. Unknown topics are auto-created here when enabled
//! (accepting NORMAL, FIFO and DELAY, since the producer's message type is not known yet).

use std::net::IpAddr;

use rocketlog_common::names::DLQ_TOPIC_PREFIX;
use rocketlog_proto::v2;

use super::convert::wire_type;
use super::error::{ok, ApiError};
use super::validate;
use crate::broker::Broker;
use crate::config::parse_host_port;
use crate::routes::{BrokerQueues, SlaveView};
use crate::topics::{Permission, TopicConfig, TopicMessageType};

pub async fn handle(b: &Broker, req: v2::QueryRouteRequest) -> v2::QueryRouteResponse {
    match route(b, &req).await {
        Ok(message_queues) => v2::QueryRouteResponse {
            status: Some(ok()),
            message_queues,
        },
        Err(e) => v2::QueryRouteResponse {
            status: Some(e.status()),
            message_queues: Vec::new(),
        },
    }
}

async fn route(b: &Broker, req: &v2::QueryRouteRequest) -> Result<Vec<v2::MessageQueue>, ApiError> {
    let topic = validate::topic(req.topic.as_ref())?;
    let brokers = topic_route(b, &topic, true).await?;
    let resource = v2::Resource {
        resource_namespace: req
            .topic
            .as_ref()
            .map(|t| t.resource_namespace.clone())
            .unwrap_or_default(),
        name: topic,
    };
    let mut out = Vec::new();
    for bq in &brokers {
        let broker = broker_of(b, bq, req.endpoints.as_ref());
        let types: Vec<i32> = bq
            .message_types
            .iter()
            .map(|t| wire_type(*t) as i32)
            .collect();
        for id in 0..bq.queue_count {
            out.push(v2::MessageQueue {
                topic: Some(resource.clone()),
                id: i32::try_from(id).unwrap_or(i32::MAX),
                permission: permission(bq.permission) as i32,
                broker: Some(broker.clone()),
                accept_message_types: types.clone(),
            });
        }
    }
    Ok(out)
}

/// The route of a topic; creates it locally when it exists nowhere and `create` allows.
pub(super) async fn topic_route(
    b: &Broker,
    topic: &str,
    create: bool,
) -> Result<Vec<BrokerQueues>, ApiError> {
    let local = b.topics.get(topic).map(|t| b.routed_topic(&t));
    let is_slave = !b.role.is_master();
    // Under a controller every replica is an access point with the topic's own permission:
    // while it follows no master its sends fail retriably and succeed again once one is
    // elected, so clients must not learn a read-only route (they would keep it until their
    // next route refresh, 30 s later).
    let slave = (!b.role.under_controller())
        .then(|| b.role.follower_status())
        .flatten()
        .map(|(status, _)| SlaveView {
            broker_id: b.role.broker_id(),
            following: status.connected && !status.master_client_address.is_empty(),
            master_client_address: status.master_client_address,
        });
    let brokers = b
        .routes
        .route(topic, local.as_deref(), slave.as_ref())
        .await;
    if !brokers.is_empty() {
        return Ok(brokers);
    }
    // A slave's topics are its master's: it creates none of its own.
    if !create || is_slave {
        return Err(ApiError::TopicNotFound(topic.to_owned()));
    }
    let created = if topic.starts_with(DLQ_TOPIC_PREFIX) {
        // Dead-letter topics hold what the engine moved to queue 0; consumers may read them
        // whatever the auto-create setting.
        match b.topics.create(TopicConfig::new(
            topic,
            1,
            [TopicMessageType::Normal, TopicMessageType::Fifo],
        )) {
            Ok(t) => t,
            Err(crate::topics::TopicError::AlreadyExists { .. }) => b
                .topics
                .get(topic)
                .ok_or_else(|| ApiError::TopicNotFound(topic.to_owned()))?,
            Err(e) => return Err(e.into()),
        }
    } else {
        b.topics.get_or_create(
            topic,
            &[
                TopicMessageType::Normal,
                TopicMessageType::Fifo,
                TopicMessageType::Delay,
            ],
        )?
    };
    Ok(vec![BrokerQueues::local(&b.config.broker_name, &created)])
}

pub(super) fn permission(p: Permission) -> v2::Permission {
    match p {
        Permission::None => v2::Permission::None,
        Permission::Read => v2::Permission::Read,
        Permission::Write => v2::Permission::Write,
        Permission::ReadWrite => v2::Permission::ReadWrite,
    }
}

/// The scheme that matches a host: an IP literal's family, else a domain name.
fn scheme_of(host: &str) -> v2::AddressScheme {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => v2::AddressScheme::IPv4,
        Ok(IpAddr::V6(_)) => v2::AddressScheme::IPv6,
        Err(_) => v2::AddressScheme::DomainName,
    }
}

/// The `Broker` of a route entry, with endpoints the client can dial: this broker's advertised
/// address (or, when bound to an unspecified address, the host the client used with our port),
/// or the registered address of another broker group's master.
pub(super) fn broker_of(
    b: &Broker,
    bq: &BrokerQueues,
    dialled: Option<&v2::Endpoints>,
) -> v2::Broker {
    // Under a controller every replica is an access point: a client is sent back to the
    // replica (or the virtual address in front of the group) it asked, and a slave passes
    // its calls to the master, so a failover needs no route refresh.
    if bq.broker_name == b.config.broker_name && b.role.under_controller() {
        if let Some(e) = dialled.filter(|e| e.addresses.len() == 1) {
            return v2::Broker {
                name: bq.broker_name.clone(),
                id: 0,
                endpoints: Some(e.clone()),
            };
        }
    }
    let (host, port) = match &bq.address {
        None => {
            let dialled_host = dialled
                .and_then(|e| e.addresses.first())
                .map(|a| a.host.clone())
                .filter(|h| !h.is_empty());
            match dialled_host {
                Some(h) if b.endpoint.echo_client_host => (h, b.endpoint.port),
                _ => (b.endpoint.host.clone(), b.endpoint.port),
            }
        }
        Some(addr) => match parse_host_port(addr) {
            Ok((h, p)) => (h, p),
            Err(_) => (addr.clone(), 0),
        },
    };
    v2::Broker {
        name: bq.broker_name.clone(),
        // The official clients use only queues of broker id 0 (the Apache proxy presents every
        // group as its master), so a slave serving reads is announced as id 0 too: its
        // permission (READ) is what tells clients it takes no writes.
        id: 0,
        endpoints: Some(v2::Endpoints {
            scheme: scheme_of(&host) as i32,
            addresses: vec![v2::Address {
                host,
                port: i32::from(port),
            }],
        }),
    }
}
