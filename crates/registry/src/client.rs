//! Talking to the registry from outside the Raft group (edges, `starling cluster …`) and from a
//! router that does not lead: administration that follows the leader, liveness reports, and a
//! [`ClusterView`] kept current from a `Watch` stream.

use crate::error::RegistryError;
use crate::network::channel;
use crate::node::AdminOp;
use crate::state::MemberRole;
use crate::view::ClusterView;
use crate::wire;
use starling_rpc::registry as pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tonic::transport::Channel;

type Rpc = pb::registry_client::RegistryClient<Channel>;

/// How long one RPC may take before the next address is tried.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// A client of the registry through a list of seed addresses.
pub struct RegistryClient {
    seeds: Vec<String>,
    /// The leader's address as last heard; tried first.
    leader: Mutex<Option<String>>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl RegistryClient {
    /// A client that starts from `seeds` (`host:port` of registry nodes).
    pub fn new(seeds: Vec<String>) -> RegistryClient {
        RegistryClient { seeds, leader: Mutex::new(None), channels: Mutex::new(HashMap::new()) }
    }

    /// Remember `addr` as the leader's.
    pub fn hint_leader(&self, addr: &str) {
        if let Ok(mut l) = self.leader.lock() {
            if !addr.is_empty() && l.as_deref() != Some(addr) {
                *l = Some(addr.to_owned());
            }
        }
    }

    fn rpc(&self, addr: &str) -> Option<Rpc> {
        let mut channels = self.channels.lock().ok()?;
        if let Some(c) = channels.get(addr) {
            return Some(Rpc::new(c.clone()));
        }
        let c = channel(addr)?;
        channels.insert(addr.to_owned(), c.clone());
        Some(Rpc::new(c))
    }

    /// Addresses to try, the leader's first.
    fn candidates(&self) -> Vec<String> {
        let mut out: Vec<String> = self.leader.lock().ok().and_then(|l| l.clone()).into_iter().collect();
        for s in &self.seeds {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        out
    }

    /// Have the leader perform `op`, following "not leader" answers, for at most `within`.
    pub async fn admin(&self, op: &AdminOp, within: Duration) -> Result<String, RegistryError> {
        let deadline = tokio::time::Instant::now() + within;
        let mut last = String::from("no registry address to try");
        // Whether an attempt may have been carried out without our hearing so (it timed out or
        // its connection failed). A removal retried after one finds the node gone: its own
        // earlier attempt removed it, and that is success, not a refusal.
        let mut uncertain = false;
        while tokio::time::Instant::now() < deadline {
            let mut redirected = false;
            for addr in self.candidates() {
                let Some(mut rpc) = self.rpc(&addr) else {
                    last = format!("invalid address {addr:?}");
                    continue;
                };
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let reply = tokio::time::timeout(left.min(CALL_TIMEOUT), call_admin(&mut rpc, op)).await;
                match reply {
                    Ok(Ok(r)) if r.ok => {
                        self.hint_leader(&addr);
                        return Ok(r.message);
                    }
                    Ok(Ok(r)) if r.not_leader => {
                        last = format!("{addr} does not lead and knows no leader");
                        if !r.leader_addr.is_empty() && r.leader_addr != addr {
                            self.hint_leader(&r.leader_addr);
                            redirected = true;
                            break;
                        }
                    }
                    Ok(Ok(r)) => {
                        if let (true, AdminOp::Remove(id)) = (uncertain && r.not_a_member, op) {
                            return Ok(format!("node {id} was removed"));
                        }
                        return Err(RegistryError::Refused(r.message));
                    }
                    Ok(Err(status)) => {
                        uncertain = true;
                        last = format!("{addr}: {}", status.message());
                    }
                    Err(_) => {
                        uncertain = true;
                        last = format!("{addr}: timed out");
                    }
                }
            }
            if !redirected {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Err(RegistryError::Unavailable(last))
    }

    /// One node's Raft status.
    pub async fn status(&self, addr: &str) -> Result<pb::StatusReply, RegistryError> {
        let mut rpc = self.rpc(addr).ok_or_else(|| RegistryError::InvalidAddress(addr.to_owned()))?;
        match tokio::time::timeout(CALL_TIMEOUT, rpc.status(pb::StatusRequest {})).await {
            Ok(r) => Ok(r?.into_inner()),
            Err(_) => Err(RegistryError::Unavailable(format!("{addr}: timed out"))),
        }
    }

    /// Send one liveness report to the leader (or to any node, which forwards it).
    pub async fn heartbeat(&self, req: pb::HeartbeatRequest) -> Result<(), RegistryError> {
        let mut last = RegistryError::Unavailable("no registry address to try".into());
        for addr in self.candidates() {
            let Some(mut rpc) = self.rpc(&addr) else { continue };
            match tokio::time::timeout(CALL_TIMEOUT, rpc.heartbeat(req.clone())).await {
                Ok(Ok(r)) => {
                    let r = r.into_inner();
                    self.hint_leader(if r.leader_addr.is_empty() { &addr } else { &r.leader_addr });
                    return Ok(());
                }
                Ok(Err(status)) => last = status.into(),
                Err(_) => last = RegistryError::Unavailable(format!("{addr}: timed out")),
            }
        }
        Err(last)
    }

    /// Report liveness of node `id` every `interval` until the task is aborted.
    pub fn spawn_liveness(
        self: &Arc<Self>,
        id: u64,
        role: MemberRole,
        addr: String,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let client = self.clone();
        tokio::spawn(async move {
            let req = pb::HeartbeatRequest {
                node_id: id,
                role: wire::role_to_proto(role) as i32,
                addr,
                forwarded: false,
            };
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = client.heartbeat(req.clone()).await {
                    tracing::debug!(error = %e, "liveness report failed");
                }
            }
        })
    }

    /// The registry's state, kept current from a `Watch` stream on one seed after another.
    /// Never goes back to an older version (seeds may lag one another). The task ends when
    /// every receiver is gone.
    pub fn watch(self: &Arc<Self>, node_id: u64) -> watch::Receiver<Arc<ClusterView>> {
        let (tx, rx) = watch::channel(Arc::new(ClusterView::default()));
        let client = self.clone();
        tokio::spawn(async move {
            let mut turn = 0usize;
            while !tx.is_closed() {
                let Some(addr) = client.seeds.get(turn % client.seeds.len().max(1)).cloned() else {
                    tracing::error!("registry watch: no seeds configured");
                    return;
                };
                turn += 1;
                if let Some(mut rpc) = client.rpc(&addr) {
                    match rpc.watch(pb::WatchRequest { node_id }).await {
                        Ok(stream) => follow(stream.into_inner(), &tx).await,
                        Err(status) => {
                            tracing::debug!(%addr, error = %status.message(), "registry watch failed")
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        rx
    }
}

/// Copies views from a `Watch` stream into `tx` until the stream ends or breaks.
async fn follow(mut stream: tonic::Streaming<pb::ClusterState>, tx: &watch::Sender<Arc<ClusterView>>) {
    loop {
        let next = tokio::select! {
            m = stream.message() => m,
            _ = tx.closed() => return,
        };
        match next {
            Ok(Some(state)) => {
                let Some(view) = wire::view_from_proto(state) else {
                    tracing::warn!("registry watch: a view this version cannot read; ignored");
                    continue;
                };
                tx.send_if_modified(|cur| {
                    let newer = view.version > cur.version
                        || (view.version == cur.version && view.leader != cur.leader);
                    if newer {
                        *cur = Arc::new(view);
                    }
                    newer
                });
            }
            Ok(None) => return,
            Err(status) => {
                tracing::debug!(error = %status.message(), "registry watch stream broke");
                return;
            }
        }
    }
}

async fn call_admin(rpc: &mut Rpc, op: &AdminOp) -> Result<pb::AdminReply, tonic::Status> {
    let node = |id: u64| pb::NodeRequest { node_id: id };
    let reply = match op {
        AdminOp::Join { id, role, addr } => {
            rpc.join(pb::JoinRequest {
                node_id: *id,
                role: wire::role_to_proto(*role) as i32,
                addr: addr.clone(),
            })
            .await?
        }
        AdminOp::Promote(id) => rpc.promote(node(*id)).await?,
        AdminOp::Remove(id) => rpc.remove(node(*id)).await?,
        AdminOp::Drain(id) => rpc.drain(node(*id)).await?,
    };
    Ok(reply.into_inner())
}
