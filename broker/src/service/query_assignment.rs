//! QueryAssignment (push consumers): which queues this consumer should receive from. A FIFO
//! topic gets one assignment per readable queue (so each queue's order is kept by one receive
//! loop); otherwise one per broker group with queue id -1 (any queue), as the proxy does.

use rocketlog_proto::v2;

use super::error::{ok, ApiError};
use super::query_route::{broker_of, permission, topic_route};
use super::validate;
use crate::broker::Broker;
use crate::topics::TopicMessageType;

pub async fn handle(b: &Broker, req: v2::QueryAssignmentRequest) -> v2::QueryAssignmentResponse {
    match assignments(b, &req).await {
        Ok(assignments) => v2::QueryAssignmentResponse {
            status: Some(ok()),
            assignments,
        },
        Err(e) => v2::QueryAssignmentResponse {
            status: Some(e.status()),
            assignments: Vec::new(),
        },
    }
}

async fn assignments(
    b: &Broker,
    req: &v2::QueryAssignmentRequest,
) -> Result<Vec<v2::Assignment>, ApiError> {
    let topic = validate::topic(req.topic.as_ref())?;
    validate::group(req.group.as_ref())?;
    let brokers = topic_route(b, &topic, false).await?;
    let resource = v2::Resource {
        resource_namespace: req
            .topic
            .as_ref()
            .map(|t| t.resource_namespace.clone())
            .unwrap_or_default(),
        name: topic,
    };
    let mut out = Vec::new();
    for bq in brokers
        .iter()
        .filter(|bq| bq.permission.readable() && bq.queue_count > 0)
    {
        let broker = broker_of(b, bq, req.endpoints.as_ref());
        let fifo =
            bq.message_types.len() == 1 && bq.message_types.contains(&TopicMessageType::Fifo);
        let queue = |id: i32| v2::Assignment {
            message_queue: Some(v2::MessageQueue {
                topic: Some(resource.clone()),
                id,
                permission: permission(bq.permission) as i32,
                broker: Some(broker.clone()),
                accept_message_types: Vec::new(),
            }),
        };
        if fifo {
            out.extend((0..bq.queue_count).map(|id| queue(i32::try_from(id).unwrap_or(i32::MAX))));
        } else {
            out.push(queue(-1));
        }
    }
    if out.is_empty() {
        return Err(ApiError::Forbidden("no readable queue".into()));
    }
    Ok(out)
}
