//! Raft's RPCs between registry nodes over gRPC (`Registry.Vote`, `AppendEntries`,
//! `InstallSnapshot`), with openraft's request and reply types as JSON in a `RaftPayload`.
//!
//! A reply payload is `Result<Reply, RaftError>` in JSON, so a remote Raft error (the peer has a
//! higher vote, say) reaches openraft as `RemoteError`, while a transport failure is
//! `Unreachable` and openraft backs off.

use crate::store::TypeConfig;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use starling_rpc::registry::registry_client::RegistryClient;
use starling_rpc::registry::RaftPayload;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// A lazily connecting gRPC channel to `addr` (`host:port`); `None` for an address that does
/// not make a URI.
pub fn channel(addr: &str) -> Option<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).ok()?;
    Some(
        endpoint
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy(),
    )
}

/// Makes one [`PeerClient`] per target node.
#[derive(Clone, Default)]
pub struct Network;

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient { target, node: node.clone(), client: channel(&node.addr).map(RegistryClient::new) }
    }
}

/// Raft RPCs to one peer.
pub struct PeerClient {
    target: u64,
    node: BasicNode,
    /// `None` when the peer's address is not usable; every call then fails as unreachable.
    client: Option<RegistryClient<Channel>>,
}

type RpcResult<T, E> = Result<T, RPCError<u64, BasicNode, E>>;

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        method: Method,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(client) = self.client.as_mut() else {
            let e = std::io::Error::other(format!("unusable address {:?}", self.node.addr));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        };
        let json = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftPayload { json });
        request.set_timeout(option.hard_ttl());
        let reply = match method {
            Method::Vote => client.vote(request).await,
            Method::Append => client.append_entries(request).await,
            Method::Snapshot => client.install_snapshot(request).await,
        }
        .map_err(|status| RPCError::Unreachable(Unreachable::new(&status)))?;
        let result: Result<Resp, E> = serde_json::from_slice(&reply.into_inner().json)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result
            .map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }
}

#[derive(Clone, Copy)]
enum Method {
    Vote,
    Append,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, RaftError<u64>> {
        self.call(Method::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        self.call(Method::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>, RaftError<u64>> {
        self.call(Method::Vote, &rpc, &option).await
    }

    /// After a failure, retry a peer after 250 ms, doubling up to 2 s: a node that is down is
    /// not dialled (and logged) several times a second for as long as it stays down.
    fn backoff(&self) -> Backoff {
        Backoff::new((0..).map(|i: u32| Duration::from_millis(250u64 << i.min(3))))
    }
}
