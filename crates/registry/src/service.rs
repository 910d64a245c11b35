//! The `Registry` gRPC service of a node: Raft RPCs in, the `Watch` stream out, liveness
//! reports, and administration (answered by the leader, redirected by followers).

use crate::node::{AdminOp, AdminOutcome, RegistryNode};
use crate::state::MemberRole;
use crate::wire;
use serde::de::DeserializeOwned;
use serde::Serialize;
use starling_rpc::registry as pb;
use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

/// The service over one [`RegistryNode`].
pub struct RegistryService {
    node: Arc<RegistryNode>,
}

impl RegistryService {
    /// The service for `node`.
    pub fn new(node: Arc<RegistryNode>) -> RegistryService {
        RegistryService { node }
    }

    fn reply(&self, outcome: AdminOutcome) -> pb::AdminReply {
        let leader = self.node.leader_addr();
        let (leader_id, leader_addr) = leader.clone().unwrap_or((0, String::new()));
        match outcome {
            AdminOutcome::Done(message) => {
                pb::AdminReply { ok: true, message, leader: leader_id, leader_addr, ..Default::default() }
            }
            AdminOutcome::NotLeader(known) => {
                let (leader, leader_addr) = known.unwrap_or((0, String::new()));
                pb::AdminReply {
                    ok: false,
                    message: "not the leader".into(),
                    leader,
                    leader_addr,
                    not_leader: true,
                    not_a_member: false,
                }
            }
            AdminOutcome::Refused(message) => {
                pb::AdminReply { ok: false, message, leader: leader_id, leader_addr, ..Default::default() }
            }
            AdminOutcome::NotAMember(id) => pb::AdminReply {
                ok: false,
                message: format!("node {id} is not a member"),
                leader: leader_id,
                leader_addr,
                not_leader: false,
                not_a_member: true,
            },
        }
    }
}

fn decode<T: DeserializeOwned>(req: Request<pb::RaftPayload>) -> Result<T, Status> {
    serde_json::from_slice(&req.into_inner().json).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<pb::RaftPayload>, Status> {
    serde_json::to_vec(value)
        .map(|json| Response::new(pb::RaftPayload { json }))
        .map_err(|e| Status::internal(e.to_string()))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::ClusterState, Status>> + Send>>;

#[tonic::async_trait]
impl pb::registry_server::Registry for RegistryService {
    async fn vote(&self, req: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc = decode(req)?;
        encode(&self.node.raft().vote(rpc).await)
    }

    async fn append_entries(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc = decode(req)?;
        encode(&self.node.raft().append_entries(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc = decode(req)?;
        encode(&self.node.raft().install_snapshot(rpc).await)
    }

    type WatchStream = WatchStream;

    async fn watch(&self, _req: Request<pb::WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let node = self.node.clone();
        let views = tokio_stream::wrappers::WatchStream::new(self.node.view());
        let stream = views.map(move |view| {
            let voters: BTreeSet<u64> = node.status().voters.into_iter().collect();
            Ok(wire::view_to_proto(&view, &voters))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatReply>, Status> {
        let req = req.into_inner();
        let role = wire::role_from_proto(req.role).ok_or_else(|| Status::invalid_argument("unknown role"))?;
        let leader = self.node.leader_addr();
        if self.node.is_leader() {
            self.node.record_liveness(req.node_id, role, req.addr);
        } else if !req.forwarded {
            // Pass it on once; the reply tells the sender where to report next time.
            if let Some((_, addr)) = &leader {
                self.node.client().hint_leader(addr);
                let forwarded = pb::HeartbeatRequest { forwarded: true, ..req };
                let _ = self.node.client().heartbeat(forwarded).await;
            }
        }
        let (leader, leader_addr) = leader.unwrap_or((0, String::new()));
        Ok(Response::new(pb::HeartbeatReply { leader, leader_addr }))
    }

    async fn join(&self, req: Request<pb::JoinRequest>) -> Result<Response<pb::AdminReply>, Status> {
        let req = req.into_inner();
        let role: MemberRole =
            wire::role_from_proto(req.role).ok_or_else(|| Status::invalid_argument("unknown role"))?;
        let outcome = self.node.admin(AdminOp::Join { id: req.node_id, role, addr: req.addr }).await;
        Ok(Response::new(self.reply(outcome)))
    }

    async fn promote(&self, req: Request<pb::NodeRequest>) -> Result<Response<pb::AdminReply>, Status> {
        let outcome = self.node.admin(AdminOp::Promote(req.into_inner().node_id)).await;
        Ok(Response::new(self.reply(outcome)))
    }

    async fn remove(&self, req: Request<pb::NodeRequest>) -> Result<Response<pb::AdminReply>, Status> {
        let outcome = self.node.admin(AdminOp::Remove(req.into_inner().node_id)).await;
        Ok(Response::new(self.reply(outcome)))
    }

    async fn drain(&self, req: Request<pb::NodeRequest>) -> Result<Response<pb::AdminReply>, Status> {
        let outcome = self.node.admin(AdminOp::Drain(req.into_inner().node_id)).await;
        Ok(Response::new(self.reply(outcome)))
    }

    async fn status(&self, _req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusReply>, Status> {
        Ok(Response::new(self.node.status()))
    }
}
