//! `apache.rocketmq.v2.MessagingService`: one handler per RPC, each in its own file. Handlers
//! answer in-band (gRPC OK with a `Status` inside), mapping failures through
//! [`error::ApiError`] — the one place codes are chosen.

pub mod convert;
pub mod error;
pub mod polling;
pub mod validate;

mod ack_message;
mod change_invisible;
mod forward_dlq;
mod handles;
mod heartbeat;
mod not_supported;
mod notify_termination;
mod pull;
mod query_assignment;
mod query_route;
mod receive_message;
mod send_message;
mod settings;
mod telemetry;

use std::sync::Arc;

use rocketlog_proto::v2;
use rocketlog_proto::v2::messaging_service_server::MessagingService;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::broker::Broker;
use crate::metrics::Rpc;

/// Header naming the client instance.
pub const CLIENT_ID_HEADER: &str = "x-mq-client-id";
/// Header with the client SDK version.
pub const CLIENT_VERSION_HEADER: &str = "x-mq-client-version";

/// The client id header, if present and not blank.
pub fn client_id(metadata: &MetadataMap) -> Option<String> {
    metadata
        .get(CLIENT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The messaging service over one broker.
#[derive(Debug, Clone)]
pub struct MessagingServer {
    broker: Arc<Broker>,
}

impl MessagingServer {
    pub fn new(broker: Arc<Broker>) -> Self {
        MessagingServer { broker }
    }
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl MessagingService for MessagingServer {
    async fn query_route(
        &self,
        request: Request<v2::QueryRouteRequest>,
    ) -> Answer<v2::QueryRouteResponse> {
        let _timing = self.broker.metrics.rpc(Rpc::QueryRoute);
        Ok(Response::new(
            query_route::handle(&self.broker, request.into_inner()).await,
        ))
    }

    async fn heartbeat(
        &self,
        request: Request<v2::HeartbeatRequest>,
    ) -> Answer<v2::HeartbeatResponse> {
        let _timing = self.broker.metrics.rpc(Rpc::Heartbeat);
        Ok(Response::new(heartbeat::handle(&self.broker, request)))
    }

    async fn send_message(
        &self,
        request: Request<v2::SendMessageRequest>,
    ) -> Answer<v2::SendMessageResponse> {
        let _timing = self.broker.metrics.rpc(Rpc::SendMessage);
        Ok(Response::new(
            send_message::handle(&self.broker, request).await,
        ))
    }

    async fn query_assignment(
        &self,
        request: Request<v2::QueryAssignmentRequest>,
    ) -> Answer<v2::QueryAssignmentResponse> {
        let _timing = self.broker.metrics.rpc(Rpc::QueryAssignment);
        Ok(Response::new(
            query_assignment::handle(&self.broker, request.into_inner()).await,
        ))
    }

    type ReceiveMessageStream = ReceiverStream<Result<v2::ReceiveMessageResponse, Status>>;

    async fn receive_message(
        &self,
        request: Request<v2::ReceiveMessageRequest>,
    ) -> Answer<Self::ReceiveMessageStream> {
        let timing = self.broker.metrics.rpc(Rpc::ReceiveMessage);
        Ok(Response::new(receive_message::handle(
            Arc::clone(&self.broker),
            request,
            timing,
        )))
    }

    async fn ack_message(
        &self,
        request: Request<v2::AckMessageRequest>,
    ) -> Answer<v2::AckMessageResponse> {
        let _timing = self.broker.metrics.rpc(Rpc::AckMessage);
        Ok(Response::new(
            ack_message::handle(&self.broker, request.into_inner()).await,
        ))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        request: Request<v2::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Answer<v2::ForwardMessageToDeadLetterQueueResponse> {
        let _timing = self
            .broker
            .metrics
            .rpc(Rpc::ForwardMessageToDeadLetterQueue);
        Ok(Response::new(
            forward_dlq::handle(&self.broker, request.into_inner()).await,
        ))
    }

    type PullMessageStream = ReceiverStream<Result<v2::PullMessageResponse, Status>>;

    async fn pull_message(
        &self,
        request: Request<v2::PullMessageRequest>,
    ) -> Answer<Self::PullMessageStream> {
        let timing = self.broker.metrics.rpc(Rpc::PullMessage);
        Ok(Response::new(pull::pull_message(
            Arc::clone(&self.broker),
            request,
            timing,
        )))
    }

    async fn update_offset(
        &self,
        request: Request<v2::UpdateOffsetRequest>,
    ) -> Answer<v2::UpdateOffsetResponse> {
        let _timing = self.broker.metrics.rpc(Rpc::UpdateOffset);
        Ok(Response::new(
            pull::update_offset(&self.broker, request.into_inner()).await,
        ))
    }

    async fn get_offset(
        &self,
        request: Request<v2::GetOffsetRequest>,
    ) -> Answer<v2::GetOffsetResponse> {
        let _timing = self.broker.metrics.rpc(Rpc::GetOffset);
        Ok(Response::new(pull::get_offset(
            &self.broker,
            request.into_inner(),
        )))
    }

    async fn query_offset(
        &self,
        request: Request<v2::QueryOffsetRequest>,
    ) -> Answer<v2::QueryOffsetResponse> {
        let _timing = self.broker.metrics.rpc(Rpc::QueryOffset);
        Ok(Response::new(
            pull::query_offset(&self.broker, request.into_inner()).await,
        ))
    }

    async fn end_transaction(
        &self,
        request: Request<v2::EndTransactionRequest>,
    ) -> Answer<v2::EndTransactionResponse> {
        let _timing = self.broker.metrics.rpc(Rpc::EndTransaction);
        Ok(Response::new(
            crate::transaction::end_transaction(&self.broker, request.into_inner()).await,
        ))
    }

    type TelemetryStream = ReceiverStream<Result<v2::TelemetryCommand, Status>>;

    async fn telemetry(
        &self,
        request: Request<Streaming<v2::TelemetryCommand>>,
    ) -> Answer<Self::TelemetryStream> {
        telemetry::handle(Arc::clone(&self.broker), request).map(Response::new)
    }

    async fn notify_client_termination(
        &self,
        request: Request<v2::NotifyClientTerminationRequest>,
    ) -> Answer<v2::NotifyClientTerminationResponse> {
        let _timing = self.broker.metrics.rpc(Rpc::NotifyClientTermination);
        Ok(Response::new(notify_termination::handle(
            &self.broker,
            request,
        )))
    }

    async fn change_invisible_duration(
        &self,
        request: Request<v2::ChangeInvisibleDurationRequest>,
    ) -> Answer<v2::ChangeInvisibleDurationResponse> {
        let _timing = self.broker.metrics.rpc(Rpc::ChangeInvisibleDuration);
        Ok(Response::new(
            change_invisible::handle(&self.broker, request.into_inner()).await,
        ))
    }

    async fn recall_message(
        &self,
        request: Request<v2::RecallMessageRequest>,
    ) -> Answer<v2::RecallMessageResponse> {
        let _timing = self.broker.metrics.rpc(Rpc::RecallMessage);
        Ok(Response::new(
            crate::timer::recall::handle(&self.broker, request.into_inner()).await,
        ))
    }

    async fn sync_lite_subscription(
        &self,
        _request: Request<v2::SyncLiteSubscriptionRequest>,
    ) -> Answer<v2::SyncLiteSubscriptionResponse> {
        Ok(Response::new(v2::SyncLiteSubscriptionResponse {
            status: Some(not_supported::lite_topics()),
        }))
    }
}
