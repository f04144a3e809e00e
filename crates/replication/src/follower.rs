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
use tonic::transport::{Channel, Endpoint};

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
    /// Signs each call to the master (a master whose port requires a signature refuses
    /// unsigned ones); `None`: calls go unsigned.
    pub signer: Option<Arc<dyn SignCalls>>,
}

/// Adds authentication headers to a call to the master, fresh for each call (a signature
/// covers the call's date-time).
pub trait SignCalls: Send + Sync + std::fmt::Debug {
    fn sign(&self, metadata: &mut tonic::metadata::MetadataMap) -> Result<(), String>;
}

/// A request to the master, signed when the settings say so.
fn signed<T>(settings: &FollowerSettings, message: T) -> Result<tonic::Request<T>, String> {
    let mut request = tonic::Request::new(message);
    if let Some(signer) = &settings.signer {
        signer
            .sign(request.metadata_mut())
            .map_err(|e| format!("signing the call to the master: {e}"))?;
    }
    Ok(request)
}

/// Where a slave puts the master's group state (topics, consumption, timer progress) when it
/// arrives. Called off the async workers: it may write files and fsync.
pub trait GroupStateSink: Send + Sync + std::fmt::Debug {
    fn install(&self, state: pb::GroupState) -> Result<(), String>;
    /// The slave's own consumption state if its consumers changed it since the last install
    /// (it served them while it had no master), for the master to merge; else `None`.
    fn local_progress(&self) -> Option<Vec<u8>>;
}

/// What the slave knows about its replication, for status and admin output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowerStatus {
    pub connected: bool,
    /// The master's log end as last heard.
    pub master_end_offset: u64,
    /// The highest offset the master said it had acknowledged to producers (0 until heard;
    /// kept in memory only).
    pub acknowledged_offset: u64,
    /// When the master was last heard from (a chunk, a heartbeat, the welcome).
    pub last_heard: Option<Instant>,
    /// The master's log end when the group state last installed was taken.
    pub state_log_offset: u64,
    /// The address clients dial on the master, as its welcome said (empty until then).
    pub master_client_address: String,
    /// The master's epoch, as its welcome said (0 until then).
    pub epoch: u64,
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
    master_address: String,
    stop: CancellationToken,
    task: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<EpochFile>>>>,
}

impl Follower {
    /// Starts following (a task on the current runtime) until `shutdown` or [`Follower::stop`].
    pub fn start(
        store: Store,
        settings: FollowerSettings,
        epochs: EpochFile,
        sink: Option<Arc<dyn GroupStateSink>>,
        shutdown: &CancellationToken,
    ) -> Follower {
        let status = Arc::new(Mutex::new(FollowerStatus::default()));
        let stop = shutdown.child_token();
        let master_address = settings.master_address.clone();
        let task = tokio::spawn(run(
            store,
            settings,
            epochs,
            sink,
            Arc::clone(&status),
            stop.clone(),
        ));
        Follower {
            status,
            master_address,
            stop,
            task: Arc::new(tokio::sync::Mutex::new(Some(task))),
        }
    }

    pub fn status(&self) -> FollowerStatus {
        self.status.lock().clone()
    }

    /// The master's replication address this follower dials.
    pub fn master_address(&self) -> &str {
        &self.master_address
    }

    /// Stops following and waits until nothing more is appended; returns the epoch file
    /// (`None` if the follower was stopped already or its task failed).
    pub async fn stop(&self) -> Option<EpochFile> {
        self.stop.cancel();
        let task = self.task.lock().await.take()?;
        match task.await {
            Ok(epochs) => Some(epochs),
            Err(e) => {
                tracing::error!(error = %e, "the follower task failed");
                None
            }
        }
    }
}

async fn run(
    store: Store,
    settings: FollowerSettings,
    mut epochs: EpochFile,
    sink: Option<Arc<dyn GroupStateSink>>,
    status: Arc<Mutex<FollowerStatus>>,
    shutdown: CancellationToken,
) -> EpochFile {
    let mut backoff = MIN_BACKOFF;
    let mut last_error: Option<String> = None;
    loop {
        let started = Instant::now();
        let result = tokio::select! {
            () = shutdown.cancelled() => return epochs,
            r = follow_once(&store, &settings, &mut epochs, sink.as_ref(), &status) => r,
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
            () = shutdown.cancelled() => return epochs,
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
    sink: Option<&Arc<dyn GroupStateSink>>,
    status: &Mutex<FollowerStatus>,
) -> Result<(), String> {
    let mut client = connect(settings).await?;
    let (req_tx, req_rx) = mpsc::channel::<pb::FollowRequest>(64);
    let hello = hello(settings, store, epochs);
    req_tx
        .send(pb::FollowRequest {
            kind: Some(pb::follow_request::Kind::Hello(hello)),
        })
        .await
        .map_err(|_| "the request stream closed".to_owned())?;
    if let Some(sink) = sink {
        let sink = Arc::clone(sink);
        let progress = tokio::task::spawn_blocking(move || sink.local_progress())
            .await
            .map_err(|e| format!("exporting this slave's consumer progress: {e}"))?;
        if let Some(consumption) = progress {
            req_tx
                .send(pb::FollowRequest {
                    kind: Some(pb::follow_request::Kind::Progress(pb::SlaveProgress {
                        consumption,
                    })),
                })
                .await
                .map_err(|_| "the request stream closed".to_owned())?;
        }
    }
    let mut incoming = client
        .follow(signed(settings, ReceiverStream::new(req_rx))?)
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
                st.master_client_address = w.client_address;
                st.epoch = w.epoch;
                st.last_heard = Some(Instant::now());
                st.last_error = None;
                tracing::info!(
                    master = %settings.master_address,
                    from = store.log_range().1 .0,
                    master_end = w.log_end_offset,
                    "following the master"
                );
            }
            Some(pb::follow_response::Kind::Heartbeat(h)) => {
                let mut st = status.lock();
                st.master_end_offset = h.master_end_offset;
                st.acknowledged_offset = st.acknowledged_offset.max(h.acknowledged_offset);
                st.last_heard = Some(Instant::now());
            }
            Some(pb::follow_response::Kind::State(state)) => {
                let Some(sink) = sink else { continue };
                let log_offset = state.log_offset;
                if store.log_range().1 .0 < log_offset {
                    break Err(format!(
                        "the master sent its group state at log offset {log_offset} before the log up to it"
                    ));
                }
                let sink = Arc::clone(sink);
                match tokio::task::spawn_blocking(move || sink.install(state)).await {
                    Ok(Ok(())) => status.lock().state_log_offset = log_offset,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "could not install the master's group state; the next one replaces it");
                    }
                    Err(e) => break Err(format!("installing the master's group state: {e}")),
                }
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
                    st.acknowledged_offset = st.acknowledged_offset.max(c.acknowledged_offset);
                    st.last_heard = Some(Instant::now());
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

async fn connect(settings: &FollowerSettings) -> Result<LogReplicationClient<Channel>, String> {
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
    Ok(LogReplicationClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(64 << 10))
}

/// What this replica says about its log.
fn hello(settings: &FollowerSettings, store: &Store, epochs: &EpochFile) -> pb::Hello {
    let end = store.log_range().1 .0;
    pb::Hello {
        cluster_name: settings.cluster_name.clone(),
        broker_name: settings.broker_name.clone(),
        broker_id: settings.broker_id,
        log_end_offset: end,
        durable_offset: store.flushed_offset().0.min(end),
        segment_size: store.segment_size(),
        epochs: to_pb_epochs(epochs.history()),
    }
}

/// Asks the master where this replica's log stops agreeing with its own (one attempt,
/// bounded by the connect timeout and `timeout`).
pub async fn compare(
    settings: &FollowerSettings,
    store: &Store,
    epochs: &EpochFile,
    timeout: Duration,
) -> Result<pb::Comparison, String> {
    let hello = hello(settings, store, epochs);
    let call = async {
        let mut client = connect(settings).await?;
        client
            .compare(signed(settings, hello)?)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| format!("the master refused: {}", s.message()))
    };
    tokio::time::timeout(timeout, call).await.map_err(|_| {
        format!(
            "no answer from {} within {timeout:?}",
            settings.master_address
        )
    })?
}

/// Records the master's epochs that this replica's history lacks.
fn adopt_epochs(file: &mut EpochFile, master: &[pb::Epoch]) -> Result<(), String> {
    // The master compared the two logs before admitting this one, so this log is a prefix of
    // the master's and the master's history describes it, byte for byte. Keeping any entry
    // of our own (an epoch this replica began or followed that the master never had, left at
    // the point the log was cut) would label the master's older records with it.
    let master = from_pb_epochs(master).map_err(|e| format!("the master's epochs: {e}"))?;
    file.adopt(master)
        .map_err(|err| format!("recording the master's epochs: {err}"))
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
