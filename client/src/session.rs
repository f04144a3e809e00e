//! The Telemetry session with one broker endpoint.
//!
//! The client opens a bidirectional `Telemetry` stream, writes its settings first, and adopts
//! the server's settings reply (which completes the handshake). The stream then carries
//! server commands: orphaned-transaction checks, stack-trace and verification requests,
//! reconnect orders, and later settings. A closed stream is reopened after a pause, with
//! the settings sent again.

use std::future::Future;
use std::sync::Weak;
use std::time::Duration;

use rocketlog_proto::v2;
use rocketlog_proto::v2::telemetry_command::Command;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::endpoints::Endpoints;
use crate::error::{Code, Error};
use crate::rpc::{rpc_error, Rpc};

/// Pause before reopening a closed stream.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// Commands buffered for the stream before writers wait.
const OUTBOUND_BUFFER: usize = 64;

/// What a session needs from the client that owns it.
pub(crate) trait SessionHost: Send + Sync + 'static {
    /// The channels to the brokers.
    fn rpc(&self) -> &Rpc;
    /// The deadline of one request.
    fn request_timeout(&self) -> Duration;
    /// The client's settings as sent to the server.
    fn settings(&self) -> v2::Settings;
    /// Takes on the settings the server answered.
    fn adopt(&self, settings: &v2::Settings);
    /// Answers the server's check of a transaction the client left open.
    fn on_orphaned_transaction(
        &self,
        endpoints: Endpoints,
        command: v2::RecoverOrphanedTransactionCommand,
    );
}

/// The client's side of a running session. Dropping it ends the session.
#[derive(Debug)]
pub(crate) struct SessionHandle {
    /// Becomes `true` once the server has answered the settings.
    pub(crate) handshake: watch::Receiver<bool>,
    /// Each `()` asks the session to send the current settings.
    resend: mpsc::UnboundedSender<()>,
    cancel: CancellationToken,
}

impl SessionHandle {
    /// Queues the client's current settings for the server.
    pub(crate) fn send_settings(&self) {
        // The session task only goes away with the client; nothing to do then.
        let _ = self.resend.send(());
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Prepares the session with `endpoints`: the handle, and the task the caller runs. The task
/// ends when `cancel` fires, the handle is dropped, or the host goes away.
pub(crate) fn spawn<H: SessionHost>(
    host: Weak<H>,
    endpoints: Endpoints,
    cancel: CancellationToken,
) -> (SessionHandle, impl Future<Output = ()> + Send + 'static) {
    let (handshake_tx, handshake) = watch::channel(false);
    let (resend, resend_rx) = mpsc::unbounded_channel();
    let task = run(host, endpoints, handshake_tx, resend_rx, cancel.clone());
    let handle = SessionHandle {
        handshake,
        resend,
        cancel,
    };
    (handle, task)
}

async fn run<H: SessionHost>(
    core: Weak<H>,
    endpoints: Endpoints,
    handshake: watch::Sender<bool>,
    mut resend: mpsc::UnboundedReceiver<()>,
    cancel: CancellationToken,
) {
    loop {
        let opened = match core.upgrade() {
            Some(c) => {
                tokio::select! {
                    r = open(&*c, &endpoints) => r,
                    _ = cancel.cancelled() => return,
                }
            }
            None => return,
        };
        match opened {
            Ok((tx, inbound)) => {
                let reconnect = serve(
                    &core,
                    &endpoints,
                    &handshake,
                    &mut resend,
                    &cancel,
                    tx,
                    inbound,
                )
                .await;
                if !reconnect {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(endpoint = %endpoints, error = %e, "telemetry stream failed to open")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONNECT_DELAY) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

type Inbound = tonic::Streaming<v2::TelemetryCommand>;

/// Opens the stream with the settings as its first command.
async fn open<H: SessionHost>(
    core: &H,
    endpoints: &Endpoints,
) -> Result<(mpsc::Sender<v2::TelemetryCommand>, Inbound), Error> {
    let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
    let settings = settings_command(core);
    // The receiver is alive right here, and the buffer is empty.
    let _ = tx.try_send(settings);
    let mut stub = core.rpc().stub(endpoints)?;
    let request = core.rpc().request(ReceiverStream::new(rx), None);
    let limit = core.request_timeout() + Duration::from_secs(3);
    let response = tokio::time::timeout(limit, stub.telemetry(request))
        .await
        .map_err(|_| Error::Timeout {
            operation: "Telemetry",
            timeout: limit,
            endpoint: endpoints.to_string(),
        })?
        .map_err(|s| rpc_error(s, endpoints))?;
    tracing::debug!(endpoint = %endpoints, "telemetry stream open");
    Ok((tx, response.into_inner()))
}

fn settings_command<H: SessionHost>(core: &H) -> v2::TelemetryCommand {
    v2::TelemetryCommand {
        status: None,
        command: Some(Command::Settings(core.settings())),
    }
}

/// Pumps one stream until it ends. Returns whether to reconnect.
async fn serve<H: SessionHost>(
    core: &Weak<H>,
    endpoints: &Endpoints,
    handshake: &watch::Sender<bool>,
    resend: &mut mpsc::UnboundedReceiver<()>,
    cancel: &CancellationToken,
    tx: mpsc::Sender<v2::TelemetryCommand>,
    mut inbound: Inbound,
) -> bool {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return false,
            asked = resend.recv() => {
                if asked.is_none() {
                    return false;
                }
                let command = match core.upgrade() {
                    Some(c) => settings_command(&*c),
                    None => return false,
                };
                if tx.send(command).await.is_err() {
                    return true;
                }
            }
            incoming = inbound.message() => match incoming {
                Ok(Some(command)) => {
                    let Some(c) = core.upgrade() else { return false };
                    match handle(&*c, endpoints, handshake, command) {
                        Reply::None => {}
                        Reply::Send(reply) => {
                            if tx.send(*reply).await.is_err() {
                                return true;
                            }
                        }
                        Reply::Reconnect => return true,
                    }
                }
                Ok(None) => {
                    tracing::debug!(endpoint = %endpoints, "telemetry stream closed by the server");
                    return true;
                }
                Err(status) => {
                    tracing::warn!(endpoint = %endpoints, code = ?status.code(), message = status.message(), "telemetry stream failed");
                    return true;
                }
            }
        }
    }
}

enum Reply {
    None,
    Send(Box<v2::TelemetryCommand>),
    Reconnect,
}

fn handle<H: SessionHost>(
    core: &H,
    endpoints: &Endpoints,
    handshake: &watch::Sender<bool>,
    command: v2::TelemetryCommand,
) -> Reply {
    let status_ok = command
        .status
        .as_ref()
        .is_none_or(|s| s.code == Code::Ok as i32);
    match command.command {
        Some(Command::Settings(settings)) => {
            if status_ok {
                core.adopt(&settings);
            } else {
                tracing::warn!(endpoint = %endpoints, status = ?command.status, "server refused the settings");
            }
            handshake.send_replace(true);
            Reply::None
        }
        Some(Command::RecoverOrphanedTransactionCommand(check)) => {
            core.on_orphaned_transaction(endpoints.clone(), check);
            Reply::None
        }
        Some(Command::PrintThreadStackTraceCommand(c)) => {
            Reply::Send(Box::new(v2::TelemetryCommand {
                status: Some(ok_status()),
                command: Some(Command::ThreadStackTrace(v2::ThreadStackTrace {
                    nonce: c.nonce,
                    thread_stack_trace: Some(
                        "stack traces are not available from rocketlog-client (async Rust)".into(),
                    ),
                })),
            }))
        }
        Some(Command::VerifyMessageCommand(c)) => Reply::Send(Box::new(v2::TelemetryCommand {
            status: Some(v2::Status {
                code: Code::NotImplemented as i32,
                message: "message verification is not supported by rocketlog-client".into(),
            }),
            command: Some(Command::VerifyMessageResult(v2::VerifyMessageResult {
                nonce: c.nonce,
            })),
        })),
        Some(Command::ReconnectEndpointsCommand(_)) => Reply::Reconnect,
        Some(_) => Reply::None,
        None => {
            if !status_ok {
                tracing::warn!(endpoint = %endpoints, status = ?command.status, "telemetry error from the server");
            }
            Reply::None
        }
    }
}

fn ok_status() -> v2::Status {
    v2::Status {
        code: Code::Ok as i32,
        message: "OK".into(),
    }
}
