//! openraft's network over the broker protocol: each Raft message is one `Raft` request to
//! the peer broker (api key 8), its body openraft's request as JSON, its answer openraft's
//! `Result` as JSON. The answering side is [`serve_raft`].

use std::sync::Arc;

use bytes::Bytes;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::peers::Peers;
use super::{Node, NodeId, Raft, TypeConfig};
use crate::client::ClientError;
use crate::protocol::peer::RaftKind;
use crate::protocol::{Request, Response};

/// Makes a [`PeerNetwork`] per target for openraft.
#[derive(Debug, Clone)]
pub struct Network {
    peers: Arc<Peers>,
}

impl Network {
    /// Raft's network over `peers`.
    pub fn new(peers: Arc<Peers>) -> Self {
        Self { peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, _node: &Node) -> PeerNetwork {
        PeerNetwork {
            peers: Arc::clone(&self.peers),
            target,
        }
    }
}

/// openraft's connection to one peer.
#[derive(Debug)]
pub struct PeerNetwork {
    peers: Arc<Peers>,
    target: NodeId,
}

/// A failure that is not the remote Raft's answer: the transport's.
#[derive(Debug, thiserror::Error)]
#[error("raft message to node {node}: {message}")]
struct TransportError {
    node: NodeId,
    message: String,
}

impl PeerNetwork {
    async fn send<Req, Resp, E>(
        &self,
        kind: RaftKind,
        req: &Req,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let fail = |message: String| TransportError {
            node: self.target,
            message,
        };
        let json = serde_json::to_vec(req).map_err(|e| {
            RPCError::Network(NetworkError::new(&fail(format!("cannot encode: {e}"))))
        })?;
        let answer = self
            .peers
            .call(
                self.target,
                Request::Raft {
                    kind,
                    json: Bytes::from(json),
                },
            )
            .await;
        let body = match answer {
            Ok(Response::Raft(body)) => body,
            Ok(_) => {
                return Err(RPCError::Network(NetworkError::new(&fail(
                    "answer of the wrong kind".into(),
                ))));
            }
            Err(e @ (ClientError::Connect { .. } | ClientError::Closed)) => {
                return Err(RPCError::Unreachable(Unreachable::new(&fail(
                    e.to_string(),
                ))));
            }
            Err(e) => return Err(RPCError::Network(NetworkError::new(&fail(e.to_string())))),
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&body).map_err(|e| {
                RPCError::Network(NetworkError::new(&fail(format!("cannot decode: {e}"))))
            })?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.send(RaftKind::Append, &rpc).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.send(RaftKind::Snapshot, &rpc).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.send(RaftKind::Vote, &rpc).await
    }
}

/// Answers a `Raft` request from a peer: hands it to the local Raft node and encodes its
/// answer (its `Result`, errors included) as JSON.
///
/// # Errors
/// When the body is not a request of its kind (the sender answers it as a network error).
pub async fn serve_raft(raft: &Raft, kind: RaftKind, json: &[u8]) -> Result<Bytes, String> {
    fn encode<T: Serialize>(v: &T) -> Result<Bytes, String> {
        serde_json::to_vec(v)
            .map(Bytes::from)
            .map_err(|e| e.to_string())
    }
    let bad = |e: serde_json::Error| format!("bad raft {kind:?} message: {e}");
    match kind {
        RaftKind::Vote => {
            let req: VoteRequest<NodeId> = serde_json::from_slice(json).map_err(bad)?;
            encode(&raft.vote(req).await)
        }
        RaftKind::Append => {
            let req: AppendEntriesRequest<TypeConfig> =
                serde_json::from_slice(json).map_err(bad)?;
            encode(&raft.append_entries(req).await)
        }
        RaftKind::Snapshot => {
            let req: InstallSnapshotRequest<TypeConfig> =
                serde_json::from_slice(json).map_err(bad)?;
            encode(&raft.install_snapshot(req).await)
        }
    }
}
