//! Telemetry: the long-lived bidirectional stream of a client. The client writes its settings
//! first (and again every few minutes); each is answered with `{status OK, settings}` where the
//! server fields are applied. The stream's sending half goes into the client registry so the
//! broker can push commands later: the transaction checker sends
//! `RecoverOrphanedTransactionCommand`s to producers of a topic through it
//! (`crate::transaction::checker`), and the producer answers with an `EndTransaction` call, not
//! on this stream. A closed or reset inbound stream means the client left: the registry
//! forgets it and the task ends quietly. A command that does not decode ends the stream with
//! `INVALID_ARGUMENT` naming the decode error.

use std::sync::Arc;
use std::time::Duration;

use rocketlog_proto::v2;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};

use super::client_id;
use super::convert::duration;
use super::error::ok;
use super::settings::{merge, ServerSettings};
use crate::broker::Broker;
use crate::clients::TelemetrySender;

/// Commands queued for one client before pushes are refused (the client stopped reading).
const OUTBOUND_CAPACITY: usize = 64;
/// Request timeout assumed when a client does not say (the clients' default).
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

type TelemetryStream = ReceiverStream<Result<v2::TelemetryCommand, Status>>;

pub fn handle(
    b: Arc<Broker>,
    request: Request<Streaming<v2::TelemetryCommand>>,
) -> Result<TelemetryStream, Status> {
    let Some(client) = client_id(request.metadata()) else {
        return Err(Status::invalid_argument(
            "the x-mq-client-id header is required",
        ));
    };
    let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
    let inbound = request.into_inner();
    let stream_id = b.clients.new_stream_id();
    tokio::spawn(serve(b, client, stream_id, inbound, tx));
    Ok(ReceiverStream::new(rx))
}

async fn serve(
    b: Arc<Broker>,
    client: String,
    stream_id: u64,
    mut inbound: Streaming<v2::TelemetryCommand>,
    tx: TelemetrySender,
) {
    loop {
        let next = tokio::select! {
            () = b.shutdown.cancelled() => break,
            next = inbound.message() => next,
        };
        let command = match next {
            Ok(Some(command)) => command,
            Ok(None) => break,
            Err(status) if status.code() == tonic::Code::Internal => {
                // Bytes that are not a TelemetryCommand: say so rather than end the stream
                // with OK (unary calls answer the same bytes the same way).
                tracing::debug!(%client, error = %status.message(), "undecodable telemetry command");
                let _ = tx
                    .send(Err(Status::invalid_argument(format!(
                        "undecodable TelemetryCommand: {}",
                        status.message()
                    ))))
                    .await;
                break;
            }
            // The client reset or cancelled the stream: it left.
            Err(_) => break,
        };
        match command.command {
            Some(v2::telemetry_command::Command::Settings(settings)) => {
                if let Err(status) = on_settings(&b, &client, stream_id, settings, &tx).await {
                    let _ = tx.send(Err(status)).await;
                    break;
                }
            }
            Some(v2::telemetry_command::Command::ThreadStackTrace(_))
            | Some(v2::telemetry_command::Command::VerifyMessageResult(_)) => {
                // Answers to commands rocketlog does not send yet.
            }
            _ => {}
        }
    }
    if b.clients.remove_stream(&client, stream_id) {
        tracing::debug!(%client, "telemetry stream closed; client forgotten");
    }
}

async fn on_settings(
    b: &Broker,
    client: &str,
    stream_id: u64,
    settings: v2::Settings,
    tx: &TelemetrySender,
) -> Result<(), Status> {
    let client_type = settings
        .client_type
        .and_then(|t| v2::ClientType::try_from(t).ok())
        .unwrap_or(v2::ClientType::Unspecified);
    let (group, topics, fifo) = match &settings.pub_sub {
        Some(v2::settings::PubSub::Publishing(p)) => {
            let mut topics = Vec::with_capacity(p.topics.len());
            for t in &p.topics {
                // A name no topic can have is left out rather than failing the stream: the
                // client's route query and sends to it were already refused ILLEGAL_TOPIC, and
                // ending the stream would cut its session for every other topic too (the Java
                // client adds a topic to its settings when it first sends to it).
                match rocketlog_common::validate_topic(&t.name) {
                    Ok(()) => topics.push(t.name.clone()),
                    Err(e) => tracing::debug!(client, error = %e, "publishing topic left out"),
                }
            }
            (None, topics, false)
        }
        Some(v2::settings::PubSub::Subscription(s)) => {
            let group = s.group.as_ref().map(|g| g.name.clone()).unwrap_or_default();
            rocketlog_common::validate_group(&group)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let topics: Vec<String> = s
                .subscriptions
                .iter()
                .filter_map(|e| e.topic.as_ref().map(|t| t.name.clone()))
                .collect();
            let fifo = !topics.is_empty() && topics.iter().all(|t| b.topic_is_fifo(t));
            (Some(group), topics, fifo)
        }
        None => {
            return Err(Status::invalid_argument(
                "there is no publishing or subscription data in settings",
            ))
        }
    };
    let request_timeout = settings
        .request_timeout
        .as_ref()
        .and_then(duration)
        .unwrap_or(DEFAULT_REQUEST_TIMEOUT);
    let r = &b.config.receive;
    let answered = merge(
        settings,
        &ServerSettings {
            max_body_size: b.config.max_body_size,
            receive_batch_size: r.batch_size,
            long_polling_timeout: Duration::from_millis(r.max_long_polling_ms),
            max_delivery_attempts: r.max_delivery_attempts,
            fifo,
        },
    );
    b.clients.register(
        client,
        stream_id,
        client_type,
        group,
        topics,
        answered.clone(),
        request_timeout,
        tx.clone(),
    );
    let reply = v2::TelemetryCommand {
        status: Some(ok()),
        command: Some(v2::telemetry_command::Command::Settings(answered)),
    };
    // A failed send means the client is gone; the read loop will see it too.
    let _ = tx.send(Ok(reply)).await;
    Ok(())
}
