//! openraft's messages between controller members, over the `rocketlog.controller.v1.Raft`
//! gRPC service. Each request and reply is one `RaftPayload` holding JSON: the request is the
//! openraft request, the reply `Result<response, RaftError>` exactly as the receiving member's
//! `Raft` returned it, so a remote refusal reaches the sender's openraft intact.
//!
//! Transport failures are classified for openraft: a peer whose port refuses connections is
//! [`Unreachable`] (openraft then backs off before retrying it), anything else a
//! [`NetworkError`] (retried on the next heartbeat).

use rocketlog_transport::signature::{Credentials, SigningInterceptor};
use std::collections::HashMap;
use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes, Raft};
use rocketlog_proto::controller::v1::raft_client::RaftClient;
use rocketlog_proto::controller::v1::raft_server::{self, RaftServer};
use rocketlog_proto::controller::v1::RaftPayload;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

use super::TypeConfig;

/// Largest Raft message accepted or sent. Snapshot chunks are kept well below it (JSON spells
/// each byte of a chunk as up to four characters).
pub(crate) const MAX_MESSAGE_BYTES: usize = 16 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long openraft waits before retrying a member that refused the connection.
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(250);

/// Creates the clients openraft sends through, one lazily connected channel per peer.
#[derive(Debug)]
pub struct Network {
    node_id: u64,
    channels: HashMap<u64, (String, Result<Channel, String>)>,
    signer: SigningInterceptor,
}

impl Network {
    /// A factory for member `node_id`'s outgoing Raft messages, signed with `credentials`.
    pub fn new(node_id: u64, credentials: Option<Credentials>) -> Network {
        Network {
            node_id,
            channels: HashMap::new(),
            signer: SigningInterceptor::new(credentials),
        }
    }
}

/// Sends one member's Raft messages to one peer.
#[derive(Debug)]
pub struct PeerClient {
    from: u64,
    target: u64,
    node: BasicNode,
    /// `Err` when the peer's address does not form a URI; every send then fails.
    channel: Result<Channel, String>,
    signer: SigningInterceptor,
}

fn lazy_channel(addr: &str) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("peer address {addr:?}: {e}"))?;
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect_lazy())
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        // openraft asks for a client per election and per replication stream; reusing the
        // channel keeps one HTTP/2 connection per peer.
        let cached = self
            .channels
            .get(&target)
            .filter(|(addr, _)| *addr == node.addr);
        let channel = match cached {
            Some((_, channel)) => channel.clone(),
            None => {
                let channel = lazy_channel(&node.addr);
                self.channels
                    .insert(target, (node.addr.clone(), channel.clone()));
                channel
            }
        };
        PeerClient {
            from: self.node_id,
            target,
            node: node.clone(),
            channel,
            signer: self.signer.clone(),
        }
    }
}

/// A connection-level failure: the peer is down, not listening or cannot be routed to.
fn is_unreachable(status: &Status) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = status.source();
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::AddrNotAvailable
                    // Only the connect timeout produces this one.
                    | io::ErrorKind::TimedOut
            ) {
                return true;
            }
        }
        source = err.source();
    }
    false
}

impl PeerClient {
    fn network_error<E: StdError>(
        &self,
        e: &(impl StdError + 'static),
    ) -> RPCError<u64, BasicNode, E> {
        RPCError::Network(NetworkError::new(e))
    }

    /// Sends `req` as the `kind` RPC and decodes the peer's `Result<Resp, RaftError<E>>`.
    async fn send<Req, Resp, E>(
        &self,
        kind: RPCTypes,
        req: &Req,
        option: &RPCOption,
        entries: u64,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: StdError + DeserializeOwned,
    {
        let channel = match &self.channel {
            Ok(c) => c.clone(),
            Err(why) => {
                let e = io::Error::new(io::ErrorKind::InvalidInput, why.clone());
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
        };
        let data = serde_json::to_vec(req).map_err(|e| self.network_error(&e))?;
        let ttl = option.hard_ttl();
        let mut request = Request::new(RaftPayload { data });
        request.set_timeout(ttl);
        let mut client = RaftClient::with_interceptor(channel, self.signer.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let call = async move {
            match kind {
                RPCTypes::Vote => client.vote(request).await,
                RPCTypes::AppendEntries => client.append_entries(request).await,
                RPCTypes::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, call).await {
            Err(_elapsed) => {
                return Err(RPCError::Timeout(Timeout {
                    action: kind,
                    id: self.from,
                    target: self.target,
                    timeout: ttl,
                }))
            }
            Ok(Err(status)) => return Err(self.status_error(kind, status, entries)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let result: Result<Resp, RaftError<u64, E>> =
            serde_json::from_slice(&reply.data).map_err(|e| self.network_error(&e))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }

    fn status_error<E: StdError>(
        &self,
        kind: RPCTypes,
        status: Status,
        entries: u64,
    ) -> RPCError<u64, BasicNode, E> {
        let too_large = matches!(status.code(), Code::ResourceExhausted | Code::OutOfRange);
        if too_large && kind == RPCTypes::AppendEntries && entries > 1 {
            // Let openraft retry with fewer entries per message.
            return RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entries / 2).with_source_error(&status),
            );
        }
        if is_unreachable(&status) {
            return RPCError::Unreachable(Unreachable::new(&status));
        }
        RPCError::Network(NetworkError::new(&status))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let entries = rpc.entries.len() as u64;
        self.send(RPCTypes::AppendEntries, &rpc, &option, entries)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.send(RPCTypes::InstallSnapshot, &rpc, &option, 0).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.send(RPCTypes::Vote, &rpc, &option, 0).await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }
}

/// The server half: hands the messages other members send to the local [`Raft`].
#[derive(Clone)]
pub struct RaftService {
    raft: Raft<TypeConfig>,
}

impl std::fmt::Debug for RaftService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftService").finish_non_exhaustive()
    }
}

impl RaftService {
    /// Serves `raft` to the other members.
    pub fn new(raft: Raft<TypeConfig>) -> RaftService {
        RaftService { raft }
    }

    /// The tonic service, with message limits that fit snapshot chunks.
    pub fn into_server(self) -> RaftServer<RaftService> {
        RaftServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

fn decode<T: DeserializeOwned>(rpc: &str, payload: &RaftPayload) -> Result<T, Status> {
    serde_json::from_slice(&payload.data)
        .map_err(|e| Status::invalid_argument(format!("malformed Raft {rpc} payload: {e}")))
}

fn encode<T: Serialize>(rpc: &str, reply: &T) -> Result<Response<RaftPayload>, Status> {
    serde_json::to_vec(reply)
        .map(|data| Response::new(RaftPayload { data }))
        .map_err(|e| Status::internal(format!("encoding the Raft {rpc} reply: {e}")))
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest<u64> = decode("Vote", request.get_ref())?;
        encode("Vote", &self.raft.vote(rpc).await)
    }

    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode("AppendEntries", request.get_ref())?;
        encode("AppendEntries", &self.raft.append_entries(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode("InstallSnapshot", request.get_ref())?;
        encode("InstallSnapshot", &self.raft.install_snapshot(rpc).await)
    }
}
