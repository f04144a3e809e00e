//! The master's side: serves `Follow` streams to its slaves, tracks how far each holds the log
//! durably, and answers sync-replicated sends once enough of them do.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rocketlog_proto::replication::v1 as pb;
use rocketlog_proto::replication::v1::log_replication_server::{
    LogReplication, LogReplicationServer,
};
use rocketlog_store::{PhysicalOffset, Store, StoreError};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::acks::{ReplicaId, SyncTracker};
use crate::epochs::{divergence, EpochHistory};
use crate::{from_pb_epochs, to_pb_epochs};

/// Largest chunk of log bytes in one message (at least one whole record is always sent).
pub const MAX_CHUNK_BYTES: usize = 1 << 20;
/// Chunks queued per slave ahead of its connection: enough to keep loopback busy, bounded so a
/// slow slave holds little memory.
const CHUNKS_IN_FLIGHT: usize = 8;

/// What the master needs to know about its group.
#[derive(Debug, Clone)]
pub struct MasterSettings {
    pub cluster_name: String,
    pub broker_name: String,
    /// Replicas (the master included) that must hold a send durably before it is
    /// acknowledged in sync mode; 1 = the master alone.
    pub min_in_sync_replicas: usize,
    /// An idle stream carries a heartbeat this often, so each side notices a dead peer.
    pub heartbeat_interval: Duration,
    /// The group state (topics, consumption, timer progress) goes to each slave when it
    /// changed, at most this often.
    pub state_interval: Duration,
    /// The address clients dial on this master, told to slaves for their routes.
    pub client_address: String,
}

/// The broker's state outside the commit log that slaves keep a copy of (see
/// [`pb::GroupState`]). Replication ships it without looking inside.
pub trait GroupStateSource: Send + Sync + std::fmt::Debug {
    /// Changes whenever the state changes (so an unchanged state is not sent again).
    fn version(&self) -> u64;
    /// The state now. `log_offset` is filled in by the caller, after this returns.
    fn snapshot(&self) -> Result<pb::GroupState, String>;
    /// Counts as finished here every message a slave's consumers acked while it had no
    /// master (`consumption` as in [`pb::SlaveProgress`]); returns how many were new. Called
    /// off the async workers.
    fn merge_progress(&self, consumption: &[u8]) -> Result<u64, String>;
}

/// Why a sync-replicated send could not be confirmed. The message is stored on the master in
/// every case; it may not be on any slave.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// Fewer slaves are connected than the minimum needs.
    #[error("{connected} of the {needed} slaves needed are connected")]
    TooFewReplicas { connected: usize, needed: usize },
    /// Not enough slaves reported the bytes durable in time.
    #[error("not enough slaves confirmed within {timeout_ms} ms (confirmed up to log offset {confirmed}, the send ends at {end})")]
    Timeout {
        timeout_ms: u64,
        confirmed: u64,
        end: u64,
    },
}

/// One connected slave as the master sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaveStatus {
    pub broker_id: ReplicaId,
    pub peer: String,
    /// The slave's log end and durable end, as last reported.
    pub log_end_offset: u64,
    pub durable_offset: u64,
    /// Bytes the master has that the slave does not hold durably.
    pub lag_bytes: u64,
    /// Since the slave last reported progress (or connected).
    pub last_ack_ms_ago: u64,
    /// Since the slave last held everything the master had (at the moment of one of its
    /// earlier acknowledgements, or now when it holds the whole log): how far behind in time
    /// it is, whether the master is busy or idle.
    pub caught_up_ms_ago: u64,
}

#[derive(Debug)]
struct Slave {
    peer: String,
    log_end: u64,
    durable: u64,
    last_ack: Instant,
    /// The master's log end at the slave's previous acknowledgement, and when that was: an
    /// acknowledgement reaching it means the slave was caught up as of then.
    mark: (u64, Instant),
    last_caught_up: Instant,
    /// Distinguishes a slave's stream from an older one of the same slave still closing.
    session: u64,
}

type Waiter = oneshot::Sender<bool>;

#[derive(Debug)]
struct State {
    tracker: SyncTracker<Waiter>,
    slaves: BTreeMap<ReplicaId, Slave>,
    next_session: u64,
}

/// The master of a broker group.
#[derive(Debug)]
pub struct Master {
    store: Store,
    settings: MasterSettings,
    epochs: Mutex<EpochHistory>,
    state: Mutex<State>,
    group_state: Option<Arc<dyn GroupStateSource>>,
    shutdown: CancellationToken,
}

impl Master {
    pub fn new(
        store: Store,
        settings: MasterSettings,
        epochs: EpochHistory,
        group_state: Option<Arc<dyn GroupStateSource>>,
        shutdown: CancellationToken,
    ) -> Arc<Master> {
        Arc::new(Master {
            store,
            state: Mutex::new(State {
                tracker: SyncTracker::new(settings.min_in_sync_replicas),
                slaves: BTreeMap::new(),
                next_session: 0,
            }),
            settings,
            epochs: Mutex::new(epochs),
            group_state,
            shutdown,
        })
    }

    /// The gRPC service to serve on the replication port.
    pub fn service(self: &Arc<Self>) -> LogReplicationServer<MasterService> {
        server(self.handler())
    }

    /// The service's handler, for a caller that routes `LogReplication` calls itself (a
    /// broker whose role can change while its replication port stays open).
    pub fn handler(self: &Arc<Self>) -> MasterService {
        MasterService(Arc::clone(self))
    }

    /// Sends ending at or below this offset have been acknowledged to producers: in sync mode
    /// what enough slaves hold durably, otherwise everything written.
    pub fn acknowledged_offset(&self) -> u64 {
        let end = self.store.log_range().1 .0;
        if self.needs_slaves() {
            self.state.lock().tracker.confirmed().min(end)
        } else {
            end
        }
    }

    /// Under a controller: the slaves every sync send must reach from now on (the
    /// sync-state set without this master, plus members being added); `None` returns to
    /// counting connected slaves. Answers the sends this already satisfies.
    pub fn require(&self, members: Option<std::collections::BTreeSet<ReplicaId>>) {
        let (released, too_few) = {
            let mut s = self.state.lock();
            if s.tracker.required() == members.as_ref() {
                return;
            }
            let released = s.tracker.require(members);
            (released, s.tracker.fail_if_too_few())
        };
        answer(released, true);
        answer(too_few, false);
    }

    /// Fails every send waiting for slaves (the master is stepping down, or stopping): each
    /// is answered as if too few slaves were connected.
    pub fn step_down(&self) {
        let waiters = self.state.lock().tracker.drain();
        answer(waiters, false);
    }

    /// Waits until `min_in_sync_replicas` replicas (this master included) hold the log up to
    /// `end` durably. The caller has made it durable here already or does so concurrently.
    pub async fn wait_replicated(&self, end: u64, timeout: Duration) -> Result<(), SyncError> {
        let (tx, rx) = oneshot::channel();
        let parked = self.state.lock().tracker.wait(end, tx);
        match parked {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {}
            Err(e) => {
                return Err(SyncError::TooFewReplicas {
                    connected: e.connected,
                    needed: e.needed,
                })
            }
        }
        let timed_out = |m: &Master| SyncError::Timeout {
            timeout_ms: timeout.as_millis() as u64,
            confirmed: m.state.lock().tracker.confirmed(),
            end,
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(true)) => Ok(()),
            // The slaves went away while this send waited.
            Ok(Ok(false)) | Ok(Err(_)) => {
                let s = self.state.lock();
                Err(SyncError::TooFewReplicas {
                    connected: s.tracker.connected(),
                    needed: self.settings.min_in_sync_replicas.saturating_sub(1),
                })
            }
            Err(_) => Err(timed_out(self)),
        }
    }

    /// Whether sends need a slave's confirmation at all.
    pub fn needs_slaves(&self) -> bool {
        self.settings.min_in_sync_replicas > 1
    }

    /// The connected slaves.
    pub fn slaves(&self) -> Vec<SlaveStatus> {
        let end = self.store.log_range().1 .0;
        let mut s = self.state.lock();
        let now = Instant::now();
        for sl in s.slaves.values_mut() {
            if sl.durable >= end {
                sl.last_caught_up = now;
            }
        }
        s.slaves
            .iter()
            .map(|(id, sl)| SlaveStatus {
                broker_id: *id,
                peer: sl.peer.clone(),
                log_end_offset: sl.log_end,
                durable_offset: sl.durable,
                lag_bytes: end.saturating_sub(sl.durable),
                last_ack_ms_ago: sl.last_ack.elapsed().as_millis() as u64,
                caught_up_ms_ago: sl.last_caught_up.elapsed().as_millis() as u64,
            })
            .collect()
    }

    /// The epoch history this master writes under.
    pub fn epochs(&self) -> EpochHistory {
        self.epochs.lock().clone()
    }

    fn connect(&self, id: ReplicaId, peer: String, log_end: u64, durable: u64) -> u64 {
        let end = self.store.log_range().1 .0;
        let now = Instant::now();
        let mut s = self.state.lock();
        s.next_session += 1;
        let session = s.next_session;
        s.slaves.insert(
            id,
            Slave {
                peer,
                log_end,
                durable,
                last_ack: now,
                mark: (end, now),
                // Not caught up until it shows it: a slave that connects far behind must
                // catch up before it counts as in sync.
                last_caught_up: if durable >= end {
                    now
                } else {
                    now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
                },
                session,
            },
        );
        let woken = s.tracker.connect(id, durable);
        drop(s);
        answer(woken, true);
        session
    }

    fn ack(&self, id: ReplicaId, session: u64, log_end: u64, durable: u64) {
        let end = self.store.log_range().1 .0;
        let now = Instant::now();
        let mut s = self.state.lock();
        let Some(sl) = s.slaves.get_mut(&id).filter(|sl| sl.session == session) else {
            return;
        };
        sl.log_end = sl.log_end.max(log_end);
        sl.durable = sl.durable.max(durable);
        sl.last_ack = now;
        if sl.durable >= sl.mark.0 {
            sl.last_caught_up = sl.last_caught_up.max(sl.mark.1);
        }
        if sl.durable >= end {
            sl.last_caught_up = now;
        }
        sl.mark = (end, now);
        let woken = s.tracker.ack(id, durable);
        drop(s);
        answer(woken, true);
    }

    fn disconnect(&self, id: ReplicaId, session: u64) {
        let mut s = self.state.lock();
        if s.slaves.get(&id).is_none_or(|sl| sl.session != session) {
            return;
        }
        s.slaves.remove(&id);
        s.tracker.disconnect(id);
        let failed = s.tracker.fail_if_too_few();
        drop(s);
        answer(failed, false);
    }

    /// Checks that a Hello comes from a replica of this group that can follow this log.
    fn check_peer(&self, hello: &pb::Hello) -> Result<(), Status> {
        let s = &self.settings;
        if hello.broker_name != s.broker_name || hello.cluster_name != s.cluster_name {
            return Err(Status::failed_precondition(format!(
                "this master serves broker group {}/{}, not {}/{}",
                s.cluster_name, s.broker_name, hello.cluster_name, hello.broker_name
            )));
        }
        if hello.segment_size != self.store.segment_size() {
            return Err(Status::failed_precondition(format!(
                "the slave's segment size is {} bytes, the master's {}: they must be equal",
                hello.segment_size,
                self.store.segment_size()
            )));
        }
        Ok(())
    }

    /// Where the log described by `hello` stops agreeing with this master's.
    pub fn compare(&self, hello: &pb::Hello) -> Result<pb::Comparison, Status> {
        self.check_peer(hello)?;
        let (start, end) = self.store.log_range();
        let slave_epochs = from_pb_epochs(&hello.epochs)
            .map_err(|e| Status::invalid_argument(format!("the caller's epochs: {e}")))?;
        let epochs = self.epochs();
        let d = divergence(&slave_epochs, hello.log_end_offset, &epochs, end.0);
        Ok(pb::Comparison {
            truncate_to: d.truncate_to.min(hello.log_end_offset),
            master_log_start: start.0,
            master_log_end: end.0,
            epochs: to_pb_epochs(&epochs),
            acknowledged_offset: self.acknowledged_offset(),
        })
    }

    /// Checks a slave's Hello; the error says why it may not follow.
    fn admit(&self, hello: &pb::Hello) -> Result<(), Status> {
        self.check_peer(hello)?;
        if hello.broker_id == 0 {
            return Err(Status::invalid_argument(
                "broker id 0 is the master's; a slave has id 1 or more",
            ));
        }
        let (start, end) = self.store.log_range();
        let slave_epochs = from_pb_epochs(&hello.epochs)
            .map_err(|e| Status::invalid_argument(format!("the slave's epochs: {e}")))?;
        let d = divergence(&slave_epochs, hello.log_end_offset, &self.epochs(), end.0);
        if d.truncate_to < hello.log_end_offset {
            return Err(Status::failed_precondition(format!(
                "the slave's log ends at {} but matches the master's only up to {}: its tail \
                 was never replicated from this master and must be cut first (a slave cuts it \
                 when it starts with its master reachable: restart it)",
                hello.log_end_offset, d.truncate_to
            )));
        }
        if hello.log_end_offset < start.0 {
            return Err(Status::failed_precondition(format!(
                "the slave's log ends at {}, and the master's starts at {} (older segments \
                 were deleted by retention): start the slave from an empty data directory \
                 copied from the master's first segment",
                hello.log_end_offset, start.0
            )));
        }
        Ok(())
    }
}

fn answer(waiters: Vec<Waiter>, ok: bool) {
    for w in waiters {
        // A waiter that timed out dropped its receiver; nothing to tell it.
        let _ = w.send(ok);
    }
}

/// The tonic service over a [`Master`].
#[derive(Debug, Clone)]
pub struct MasterService(Arc<Master>);

/// The stream of a `Follow` call.
pub type FollowStream = ReceiverStream<Result<pb::FollowResponse, Status>>;

/// The `LogReplication` server over a handler, with the message limits replication needs.
pub fn server<S: LogReplication>(handler: S) -> LogReplicationServer<S> {
    LogReplicationServer::new(handler)
        .max_decoding_message_size(64 << 10)
        .max_encoding_message_size(MAX_CHUNK_BYTES + (64 << 10) + (128 << 20))
}

#[tonic::async_trait]
impl LogReplication for MasterService {
    type FollowStream = FollowStream;

    async fn compare(
        &self,
        request: Request<pb::Hello>,
    ) -> Result<Response<pb::Comparison>, Status> {
        self.0.compare(request.get_ref()).map(Response::new)
    }

    async fn follow(
        &self,
        request: Request<Streaming<pb::FollowRequest>>,
    ) -> Result<Response<Self::FollowStream>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown".into());
        let mut incoming = request.into_inner();
        let hello = match incoming.message().await? {
            Some(pb::FollowRequest {
                kind: Some(pb::follow_request::Kind::Hello(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "a Follow stream starts with a Hello",
                ))
            }
        };
        let master = Arc::clone(&self.0);
        master.admit(&hello)?;
        let id = hello.broker_id;
        let session = master.connect(id, peer.clone(), hello.log_end_offset, hello.durable_offset);
        let (start, end) = master.store.log_range();
        tracing::info!(
            slave = id,
            %peer,
            from = hello.log_end_offset,
            master_end = end.0,
            "slave connected"
        );
        let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let welcome = pb::FollowResponse {
            kind: Some(pb::follow_response::Kind::Welcome(pb::Welcome {
                epoch: master.epochs().last().map_or(0, |e| e.epoch),
                epochs: to_pb_epochs(&master.epochs()),
                log_start_offset: start.0,
                log_end_offset: end.0,
                client_address: master.settings.client_address.clone(),
            })),
        };
        if tx.send(Ok(welcome)).await.is_err() {
            master.disconnect(id, session);
            return Err(Status::cancelled("the slave went away"));
        }
        let stop = CancellationToken::new();
        tokio::spawn(read_acks(
            Arc::clone(&master),
            id,
            session,
            incoming,
            stop.clone(),
        ));
        tokio::spawn(ship(master, id, session, hello.log_end_offset, tx, stop));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Applies the slave's acks until its stream ends, then forgets the slave.
async fn read_acks(
    master: Arc<Master>,
    id: ReplicaId,
    session: u64,
    mut incoming: Streaming<pb::FollowRequest>,
    stop: CancellationToken,
) {
    let why = loop {
        tokio::select! {
            () = stop.cancelled() => break "the shipping side stopped".to_owned(),
            () = master.shutdown.cancelled() => break "the master is shutting down".to_owned(),
            m = incoming.next() => match m {
                Some(Ok(pb::FollowRequest { kind: Some(pb::follow_request::Kind::Ack(a)) })) => {
                    master.ack(id, session, a.log_end_offset, a.durable_offset);
                }
                Some(Ok(pb::FollowRequest { kind: Some(pb::follow_request::Kind::Progress(p)) })) => {
                    merge_progress(&master, id, p.consumption).await;
                }
                Some(Ok(_)) => break "the slave sent something other than an Ack".to_owned(),
                Some(Err(e)) => break format!("stream error: {}", e.message()),
                None => break "the slave closed its stream".to_owned(),
            },
        }
    };
    stop.cancel();
    master.disconnect(id, session);
    tracing::info!(slave = id, reason = %why, "slave disconnected");
}

/// Takes the acks a slave's consumers made while it had no master.
async fn merge_progress(master: &Master, id: ReplicaId, consumption: Vec<u8>) {
    let Some(source) = master.group_state.clone() else {
        return;
    };
    let merged = tokio::task::spawn_blocking(move || source.merge_progress(&consumption)).await;
    match merged {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::info!(
            slave = id,
            finished = n,
            "took the acks the slave's consumers made while it had no master"
        ),
        Ok(Err(e)) => {
            tracing::warn!(slave = id, error = %e, "could not take the slave's consumer progress; those messages may be delivered again")
        }
        Err(e) => {
            tracing::warn!(slave = id, error = %e, "taking the slave's consumer progress failed")
        }
    }
}

/// Sends the log from `from` as it grows, heartbeats while idle.
async fn ship(
    master: Arc<Master>,
    id: ReplicaId,
    session: u64,
    mut from: u64,
    tx: mpsc::Sender<Result<pb::FollowResponse, Status>>,
    stop: CancellationToken,
) {
    let mut end_rx = master.store.subscribe_log_end();
    let heartbeat = master.settings.heartbeat_interval;
    let mut group_state = StateShipper::new(&master);
    // A heartbeat goes out when nothing else has for a whole interval.
    let mut last_sent = tokio::time::Instant::now();
    let result: Result<(), String> = async {
        loop {
            if let Some(state) = group_state.due(&master, from) {
                let msg = pb::FollowResponse {
                    kind: Some(pb::follow_response::Kind::State(state)),
                };
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    sent = tx.send(Ok(msg)) => if sent.is_err() { return Ok(()); },
                }
                last_sent = tokio::time::Instant::now();
            }
            let bytes = read_from(&master.store, from).await;
            let bytes = match bytes {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx
                        .send(Err(Status::internal(format!(
                            "reading the log at {from}: {e}"
                        ))))
                        .await;
                    return Err(format!("reading the log at {from}: {e}"));
                }
            };
            if bytes.is_empty() {
                let idle = tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = master.shutdown.cancelled() => return Ok(()),
                    changed = end_rx.changed() => {
                        if changed.is_err() { return Ok(()); }
                        false
                    }
                    () = tokio::time::sleep_until(last_sent + heartbeat) => true,
                    () = group_state.wait() => false,
                };
                if idle {
                    let hb = pb::FollowResponse {
                        kind: Some(pb::follow_response::Kind::Heartbeat(pb::Heartbeat {
                            master_end_offset: master.store.log_range().1 .0,
                            acknowledged_offset: master.acknowledged_offset(),
                        })),
                    };
                    if tx.send(Ok(hb)).await.is_err() {
                        return Ok(());
                    }
                    last_sent = tokio::time::Instant::now();
                }
                continue;
            }
            let len = bytes.len() as u64;
            let chunk = pb::FollowResponse {
                kind: Some(pb::follow_response::Kind::Chunk(pb::Chunk {
                    start_offset: from,
                    data: bytes.into(),
                    master_end_offset: master.store.log_range().1 .0,
                    acknowledged_offset: master.acknowledged_offset(),
                })),
            };
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                sent = tx.send(Ok(chunk)) => if sent.is_err() { return Ok(()); },
            }
            last_sent = tokio::time::Instant::now();
            from += len;
        }
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(slave = id, error = %e, "shipping to the slave stopped");
    }
    stop.cancel();
    master.disconnect(id, session);
}

/// When the group state goes to one slave: when it changed, at most once per state interval,
/// and only once the log bytes it was taken over have been shipped ahead of it.
struct StateShipper {
    interval: Duration,
    next_check: tokio::time::Instant,
    sent_version: Option<u64>,
    /// Taken, waiting for the log to be shipped up to its `log_offset`.
    pending: Option<(u64, pb::GroupState)>,
    failing: bool,
}

impl StateShipper {
    fn new(master: &Master) -> Self {
        StateShipper {
            interval: master.settings.state_interval,
            next_check: tokio::time::Instant::now(),
            sent_version: None,
            pending: None,
            failing: false,
        }
    }

    /// Resolves when a check is due (never, without a state source).
    async fn wait(&self) {
        if self.pending.is_some() {
            // Shipping the log wakes the loop; nothing to wait for here.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep_until(self.next_check).await;
    }

    /// The state to send now, with the log shipped up to `shipped`.
    fn due(&mut self, master: &Master, shipped: u64) -> Option<pb::GroupState> {
        let source = master.group_state.as_ref()?;
        if self.pending.is_none() && tokio::time::Instant::now() >= self.next_check {
            self.next_check = tokio::time::Instant::now() + self.interval;
            let version = source.version();
            if self.sent_version != Some(version) {
                match source.snapshot() {
                    Ok(mut state) => {
                        // Taken before the log end is read: everything it refers to (acked
                        // messages, fired timers' deliveries) lies below that end.
                        state.log_offset = master.store.log_range().1 .0;
                        self.pending = Some((version, state));
                        self.failing = false;
                    }
                    Err(e) => {
                        if !self.failing {
                            tracing::warn!(error = %e, "could not take the group state for the slaves; retrying");
                            self.failing = true;
                        }
                    }
                }
            }
        }
        match &self.pending {
            Some((_, state)) if state.log_offset <= shipped => {
                let (version, state) = self.pending.take()?;
                self.sent_version = Some(version);
                Some(state)
            }
            _ => None,
        }
    }
}

/// A copy out of the mapped log: at most one chunk, so cheap enough for an async worker (a
/// thread hop would cost more than the copy and add to every sync send's latency).
async fn read_from(store: &Store, from: u64) -> Result<Vec<u8>, StoreError> {
    store.read_log_bytes(PhysicalOffset(from), MAX_CHUNK_BYTES)
}
