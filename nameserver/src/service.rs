//! The `rocketlog.nameserver.v1.NameServer` gRPC shell over [`RouteTable`].

use std::sync::Arc;

use parking_lot::Mutex;
use rocketlog_proto::nameserver::v1 as pb;
use rocketlog_proto::nameserver::v1::name_server_server::NameServer;
use tonic::{Request, Response, Status};

use crate::metrics::{Method, NameserverMetrics};
use crate::route_table::RouteTable;
use crate::{now_ms, NameserverConfig};

/// gRPC handlers; cheap to clone.
#[derive(Debug, Clone)]
pub struct NameServerService {
    table: Arc<Mutex<RouteTable>>,
    heartbeat_interval_ms: u64,
    expiry_ms: u64,
    metrics: Option<NameserverMetrics>,
}

impl NameServerService {
    /// Handlers over a shared table.
    pub fn new(table: Arc<Mutex<RouteTable>>, config: &NameserverConfig) -> Self {
        NameServerService {
            table,
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            expiry_ms: config.broker_expiry_ms,
            metrics: None,
        }
    }

    /// The handlers counting their requests in `metrics`.
    pub fn with_metrics(mut self, metrics: NameserverMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count(&self, method: Method) {
        if let Some(m) = &self.metrics {
            m.request(method);
        }
    }
}

#[tonic::async_trait]
impl NameServer for NameServerService {
    async fn register_broker(
        &self,
        request: Request<pb::RegisterBrokerRequest>,
    ) -> Result<Response<pb::RegisterBrokerResponse>, Status> {
        self.count(Method::RegisterBroker);
        let req = request.into_inner();
        let (name, id) = (req.broker_name.clone(), req.broker_id);
        let master = self
            .table
            .lock()
            .register(req, now_ms())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::debug!(broker = %name, id, "broker registered");
        Ok(Response::new(pb::RegisterBrokerResponse {
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            expiry_ms: self.expiry_ms,
            master_client_address: master.unwrap_or_default(),
        }))
    }

    async fn unregister_broker(
        &self,
        request: Request<pb::UnregisterBrokerRequest>,
    ) -> Result<Response<pb::UnregisterBrokerResponse>, Status> {
        self.count(Method::UnregisterBroker);
        let req = request.into_inner();
        if self
            .table
            .lock()
            .unregister(&req.broker_name, req.broker_id)
        {
            tracing::info!(broker = %req.broker_name, id = req.broker_id, "broker unregistered");
        }
        Ok(Response::new(pb::UnregisterBrokerResponse {}))
    }

    async fn get_topic_route(
        &self,
        request: Request<pb::GetTopicRouteRequest>,
    ) -> Result<Response<pb::GetTopicRouteResponse>, Status> {
        self.count(Method::GetTopicRoute);
        let topic = request.into_inner().topic;
        if topic.is_empty() {
            return Err(Status::invalid_argument("topic is empty"));
        }
        let route = self.table.lock().topic_route(&topic);
        route
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no live broker serves topic {topic:?}")))
    }

    async fn list_topics(
        &self,
        _request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        self.count(Method::ListTopics);
        let topics = self.table.lock().topics();
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn list_brokers(
        &self,
        _request: Request<pb::ListBrokersRequest>,
    ) -> Result<Response<pb::ListBrokersResponse>, Status> {
        self.count(Method::ListBrokers);
        let brokers = self.table.lock().brokers();
        Ok(Response::new(pb::ListBrokersResponse { brokers }))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        self.count(Method::DeleteTopic);
        let topic = request.into_inner().topic;
        if self.table.lock().delete_topic(&topic) {
            Ok(Response::new(pb::DeleteTopicResponse {}))
        } else {
            Err(Status::not_found(format!(
                "topic {topic:?} is not registered"
            )))
        }
    }
}
