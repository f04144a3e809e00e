//! The slave's side: follows the master's log over one `Follow` stream, appends what arrives,
//! and reports its log end and durable end back; reconnects (with backoff) whenever the
//! stream breaks, from wherever its log then ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rocketlog_proto::replication::v1 as pb;
use rocketlog_proto::replication::v1::log_replication_client::LogReplicationClient;
use rocketlog_store::{PendingAppend, PhysicalOffset, Store};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use crate::epoch_file::EpochFile;
use crate::{from_pb_epochs, to_pb_epochs};

/// First wait before reconnecting; doubled per failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Who the slave is and whom it follows.
#[derive(Debug, Clone)]
pub struct FollowerSettings {
    pub cluster_name: String,
    pub broker_name: String,
    pub broker_id: u64,
    /// `host:port` of the master's replication port.
    pub master_address: String,
    /// Connecting (TCP + HTTP/2) must finish within this.
    pub connect_timeout: Duration,
    /// A stream that carries nothing (not even a heartbeat) this long is taken as dead.
    pub idle_timeout: Duration,
}

/// What the slave knows about its replication, for status and admin output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowerStatus {
    pub connected: bool,
    /// The master's log end as last heard.
    pub master_end_offset: u64,
    /// This slave's log end and durable end.
    pub log_end_offset: u64,
    pub durable_offset: u64,
    /// Why the last connection ended or failed, if it did.
    pub last_error: Option<String>,
}

/// A running follower.
#[derive(Debug, Clone)]
pub struct Follower {
    status: Arc<Mutex<FollowerStatus>>,
}

impl Follower {
    /// Starts following (a task on the current runtime) until `shutdown`.
    pub fn start(
        store: Store,
        settings: FollowerSettings,
        epochs: EpochFile,
        shutdown: CancellationToken,
    ) -> (Follower, tokio::task::JoinHandle<()>) {
        let status = Arc::new(Mutex::new(FollowerStatus::default()));
        let f = Follower {
            status: Arc::clone(&status),
        };
        let task = tokio::spawn(run(store, settings, epochs, status, shutdown));
        (f, task)
    }

    pub fn status(&self) -> FollowerStatus {
        self.status.lock().clone()
    }
}

async fn run(
    store: Store,
    settings: FollowerSettings,
    mut epochs: EpochFile,
    status: Arc<Mutex<FollowerStatus>>,
    shutdown: CancellationToken,
) {
    let mut backoff = MIN_BACKOFF;
    let mut last_error: Option<String> = None;
    loop {
        let started = Instant::now();
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            r = follow_once(&store, &settings, &mut epochs, &status) => r,
        };
        status.lock().connected = false;
        let error = match result {
            Ok(()) => "the master ended the stream".to_owned(),
            Err(e) => e,
        };
        // One line per change of state, not one per retry.
        if last_error.as_deref() != Some(error.as_str()) {
            tracing::warn!(master = %settings.master_address, error = %error, "not following the master; retrying");
            last_error = Some(error.clone());
        }
        status.lock().last_error = Some(error);
        if started.elapsed() > MAX_BACKOFF * 4 {
            backoff = MIN_BACKOFF;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection: Hello, Welcome, then chunks until the stream breaks.
async fn follow_once(
    store: &Store,
    settings: &FollowerSettings,
    epochs: &mut EpochFile,
    status: &Mutex<FollowerStatus>,
) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(format!("http://{}", settings.master_address))
        .map_err(|e| format!("master address {:?}: {e}", settings.master_address))?
        .connect_timeout(settings.connect_timeout)
        .http2_keep_alive_interval(settings.idle_timeout / 2)
        .keep_alive_timeout(settings.idle_timeout / 2)
        .tcp_nodelay(true);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connecting to {}: {e}", settings.master_address))?;
    let mut client = LogReplicationClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(64 << 10);

    let (req_tx, req_rx) = mpsc::channel::<pb::FollowRequest>(64);
    let end = store.log_range().1 .0;
    let durable = store.flushed_offset().0.min(end);
    let hello = pb::Hello {
        cluster_name: settings.cluster_name.clone(),
        broker_name: settings.broker_name.clone(),
        broker_id: settings.broker_id,
        log_end_offset: end,
        durable_offset: durable,
        segment_size: store.segment_size(),
        epochs: to_pb_epochs(epochs.history()),
    };
    req_tx
        .send(pb::FollowRequest {
            kind: Some(pb::follow_request::Kind::Hello(hello)),
        })
        .await
        .map_err(|_| "the request stream closed".to_owned())?;
    let mut incoming = client
        .follow(ReceiverStream::new(req_rx))
        .await
        .map_err(|s| format!("the master refused: {}", s.message()))?
        .into_inner();

    // Durability is awaited in order on a task of its own, so appending the next chunk never
    // waits for the previous one's fsync.
    let (dur_tx, dur_rx) = mpsc::unbounded_channel::<(u64, PendingAppend)>();
    let acker = tokio::spawn(ack_durable(dur_rx, req_tx.clone()));
    let _stop_acker = AbortOnDrop(acker);

    let result = loop {
        let msg = match tokio::time::timeout(settings.idle_timeout, incoming.message()).await {
            Err(_) => {
                break Err(format!(
                    "nothing from the master for {:?}",
                    settings.idle_timeout
                ))
            }
            Ok(Err(s)) => break Err(format!("the master ended the stream: {}", s.message())),
            Ok(Ok(None)) => break Ok(()),
            Ok(Ok(Some(m))) => m,
        };
        match msg.kind {
            Some(pb::follow_response::Kind::Welcome(w)) => {
                // The master admitted this log as a prefix of its own: from here on this log
                // is written by the master's epochs.
                if let Err(e) = adopt_epochs(epochs, &w.epochs) {
                    break Err(e);
                }
                let mut st = status.lock();
                st.connected = true;
                st.master_end_offset = w.log_end_offset;
                st.last_error = None;
                tracing::info!(
                    master = %settings.master_address,
                    from = store.log_range().1 .0,
                    master_end = w.log_end_offset,
                    "following the master"
                );
            }
            Some(pb::follow_response::Kind::Heartbeat(h)) => {
                status.lock().master_end_offset = h.master_end_offset;
            }
            Some(pb::follow_response::Kind::Chunk(c)) => {
                let pending = match store.append_replicated(PhysicalOffset(c.start_offset), &c.data)
                {
                    Ok(p) => p,
                    Err(e) => break Err(format!("appending the master's bytes: {e}")),
                };
                let end = c.start_offset + c.data.len() as u64;
                {
                    let mut st = status.lock();
                    st.master_end_offset = c.master_end_offset;
                    st.log_end_offset = end;
                }
                if dur_tx.send((end, pending)).is_err() {
                    break Err("the ack task stopped".to_owned());
                }
            }
            None => break Err("the master sent an empty message".to_owned()),
        }
    };
    let flushed = store.flushed_offset().0;
    let mut st = status.lock();
    st.durable_offset = st.durable_offset.max(flushed);
    result
}

/// Records the master's epochs that this replica's history lacks.
fn adopt_epochs(file: &mut EpochFile, master: &[pb::Epoch]) -> Result<(), String> {
    let master = from_pb_epochs(master).map_err(|e| format!("the master's epochs: {e}"))?;
    let last = file.history().last().map(|e| e.epoch);
    for e in master.entries() {
        if last.is_none_or(|l| e.epoch > l) {
            file.begin(e.epoch, e.start_offset)
                .map_err(|err| format!("recording epoch {} from the master: {err}", e.epoch))?;
        }
    }
    Ok(())
}

/// Reports each chunk once it is durable (in order), as an Ack.
async fn ack_durable(
    mut rx: mpsc::UnboundedReceiver<(u64, PendingAppend)>,
    tx: mpsc::Sender<pb::FollowRequest>,
) {
    while let Some((end, pending)) = rx.recv().await {
        if let Err(e) = pending.durable().await {
            tracing::error!(error = %e, "a replicated chunk could not be made durable");
            return;
        }
        // Chunks that became durable together are reported once.
        let mut durable = end;
        while let Ok((later, p)) = rx.try_recv() {
            if let Err(e) = p.durable().await {
                tracing::error!(error = %e, "a replicated chunk could not be made durable");
                return;
            }
            durable = later;
        }
        let ack = pb::FollowRequest {
            kind: Some(pb::follow_request::Kind::Ack(pb::Ack {
                log_end_offset: durable,
                durable_offset: durable,
            })),
        };
        if tx.send(ack).await.is_err() {
            return;
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
