//! A registry node: one router's member of the Raft group, and — while it leads — the cluster's
//! controller.
//!
//! Every router runs one. The node
//! - replicates the registry log (durable in `<data_dir>/raft.redb`, see [`crate::store`]) and
//!   publishes the applied state as a [`ClusterView`] for the router's own links;
//! - on start, bootstraps a new cluster or joins one through its seeds ([`StartMode`]); a router
//!   that restarts joins again, which makes it active again if it had been marked down or
//!   was draining;
//! - reports its liveness to the leader every `liveness_interval`;
//! - while it leads, acts on liveness: a member not heard from for `down_after` is marked
//!   [`MemberState::Down`] and — in the same log entry — its slots move to the active routers;
//!   a down member that reports again becomes active and gets its share back. Every change of
//!   who is active is written with the slot moves it calls for ([`ClusterState::with_rebalance`]),
//!   so no node ever sees a state in which an active router set leaves slots unowned.
//!
//! Administration ([`RegistryNode::admin`]) is answered by the leader; a follower answers
//! "not leader" with the leader's address and [`crate::RegistryClient`] retries there.

use crate::client::RegistryClient;
use crate::error::RegistryError;
use crate::network::Network;
use crate::state::{ClusterState, Command, Member, MemberRole, MemberState};
use crate::store::{self, Applied, TypeConfig};
use crate::view::ClusterView;
use crate::wire;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, RaftMetrics, ServerState};
use starling_rpc::registry as pb;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How a node with no Raft state of its own becomes part of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartMode {
    /// Create a new single-voter cluster of this node.
    Bootstrap,
    /// Join through the seeds; never bootstrap.
    Join,
    /// Join through the seeds; when none knows a leader within `auto_bootstrap_after`, node 1
    /// bootstraps (a Kubernetes StatefulSet's ordinal 0). Other nodes keep trying to join.
    Auto,
}

/// A node's settings.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Node id, never 0.
    pub id: u64,
    /// The address other nodes dial (`host:port` of this node's gRPC server).
    pub addr: String,
    /// Where `raft.redb` lives.
    pub data_dir: PathBuf,
    /// gRPC addresses of other registry nodes, tried when joining.
    pub seeds: Vec<String>,
    /// What to do without Raft state.
    pub start: StartMode,
    /// Raft heartbeat interval (leader → followers).
    pub raft_heartbeat: Duration,
    /// Raft election timeout range.
    pub election_timeout: (Duration, Duration),
    /// How often members report liveness, and how often the leader looks at the reports.
    pub liveness_interval: Duration,
    /// A member silent this long is marked down and loses its slots.
    pub down_after: Duration,
    /// Routers beyond this many stay Raft learners (they still own slots).
    pub max_voters: usize,
    /// For [`StartMode::Auto`]: how long node 1 looks for an existing cluster before bootstrapping.
    pub auto_bootstrap_after: Duration,
}

impl NodeConfig {
    /// Settings with the default timings for node `id` at `addr`.
    pub fn new(id: u64, addr: impl Into<String>, data_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            id,
            addr: addr.into(),
            data_dir: data_dir.into(),
            seeds: Vec::new(),
            start: StartMode::Auto,
            raft_heartbeat: Duration::from_millis(200),
            election_timeout: (Duration::from_millis(1000), Duration::from_millis(2000)),
            liveness_interval: Duration::from_millis(500),
            down_after: Duration::from_secs(3),
            max_voters: 5,
            auto_bootstrap_after: Duration::from_secs(3),
        }
    }
}

/// An administrative request (`starling cluster …`, and a router joining on start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminOp {
    /// Add (or re-activate) a member. Routers become Raft learners, then voters while there are
    /// fewer than `max_voters`.
    Join {
        /// Node id.
        id: u64,
        /// Its role.
        role: MemberRole,
        /// Its gRPC address.
        addr: String,
    },
    /// Make a learner a voter.
    Promote(u64),
    /// Take a member out of the cluster and of the Raft group; its slots move.
    Remove(u64),
    /// Hand a router's slots to the others (before it stops).
    Drain(u64),
}

/// What the leader said about an [`AdminOp`].
#[derive(Debug)]
pub enum AdminOutcome {
    /// Done; a sentence for the operator.
    Done(String),
    /// This node does not lead; the leader's address when known.
    NotLeader(Option<(u64, String)>),
    /// The leader refused or failed; why.
    Refused(String),
    /// The leader refused: the node named is not a member.
    NotAMember(u64),
}

/// A liveness report the leader keeps (in memory only: a new leader starts everyone afresh).
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    role: MemberRole,
    addr: String,
}

/// One registry node.
pub struct RegistryNode {
    cfg: NodeConfig,
    raft: Raft<TypeConfig>,
    applied: watch::Receiver<Arc<Applied>>,
    committed: Arc<AtomicU64>,
    view: watch::Receiver<Arc<ClusterView>>,
    /// Liveness reports received while leading.
    seen: Mutex<HashMap<u64, Seen>>,
    /// Serializes the leader's state writes, each computed from the state the previous left.
    writes: tokio::sync::Mutex<()>,
    /// Serializes Raft membership changes (openraft allows one at a time).
    membership: tokio::sync::Mutex<()>,
    /// Calls to other nodes: joining, liveness reports, forwarded heartbeats.
    client: RegistryClient,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

type RaftWriteError = RaftError<u64, ClientWriteError<u64, BasicNode>>;

impl RegistryNode {
    /// Opens the node's storage and starts Raft. The node answers RPCs at once (serve
    /// [`RegistryNode::service`]); call [`RegistryNode::start`] once that server listens.
    pub async fn open(cfg: NodeConfig) -> Result<Arc<RegistryNode>, RegistryError> {
        if cfg.id == 0 {
            return Err(RegistryError::Config("node id 0 is reserved".into()));
        }
        let ms = |d: Duration| d.as_millis() as u64;
        let raft_cfg = openraft::Config {
            cluster_name: "starling".into(),
            heartbeat_interval: ms(cfg.raft_heartbeat),
            election_timeout_min: ms(cfg.election_timeout.0),
            election_timeout_max: ms(cfg.election_timeout.1),
            ..Default::default()
        }
        .validate()
        .map_err(|e| RegistryError::Config(e.to_string()))?;
        let st = store::open(&cfg.data_dir)?;
        let raft = Raft::new(cfg.id, Arc::new(raft_cfg), Network, st.log, st.sm)
            .await
            .map_err(|e| RegistryError::Raft(e.to_string()))?;
        let (view_tx, view) = watch::channel(Arc::new(ClusterView::default()));
        let node = Arc::new(RegistryNode {
            client: RegistryClient::new(cfg.seeds.clone()),
            cfg,
            raft,
            applied: st.applied,
            committed: st.committed,
            view,
            seen: Mutex::new(HashMap::new()),
            writes: tokio::sync::Mutex::new(()),
            membership: tokio::sync::Mutex::new(()),
            tasks: Mutex::new(Vec::new()),
        });
        let publisher = tokio::spawn(publish_views(
            node.raft.metrics(),
            node.applied.clone(),
            node.committed.clone(),
            view_tx,
            node.cfg.id,
        ));
        node.tasks_push(publisher);
        Ok(node)
    }

    fn tasks_push(&self, t: tokio::task::JoinHandle<()>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(t);
        }
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.cfg.id
    }

    /// The registry as this node has applied it, after every change.
    pub fn view(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.clone()
    }

    /// The gRPC service to serve on this node's address.
    pub fn service(self: &Arc<Self>) -> pb::registry_server::RegistryServer<crate::service::RegistryService> {
        pb::registry_server::RegistryServer::new(crate::service::RegistryService::new(self.clone()))
    }

    /// Become part of a cluster (bootstrap or join, see [`StartMode`]), then keep reporting
    /// liveness and, while leading, control the cluster. Returns once this node is an active
    /// member; the work goes on in the background until [`RegistryNode::shutdown`].
    pub async fn start(self: &Arc<Self>) -> Result<(), RegistryError> {
        let initialized = self.raft.is_initialized().await.map_err(|e| RegistryError::Raft(e.to_string()))?;
        let me = AdminOp::Join { id: self.cfg.id, role: MemberRole::Router, addr: self.cfg.addr.clone() };
        if !initialized && self.cfg.start == StartMode::Bootstrap {
            self.bootstrap().await?;
        } else if !initialized && self.cfg.start == StartMode::Auto && self.cfg.id == 1 {
            match self.client.admin(&me, self.cfg.auto_bootstrap_after).await {
                Ok(msg) => tracing::info!(%msg, "joined an existing cluster"),
                Err(e) => {
                    tracing::info!(error = %e, "no cluster answered the seeds; bootstrapping one");
                    self.bootstrap().await?;
                }
            }
        }
        let controller = tokio::spawn(self.clone().control());
        self.tasks_push(controller);
        // Join (again): a restarted or bootstrapped node asks the leader to make it active.
        // Retried until it works; a joining router is useless without its membership.
        loop {
            if self.is_leader() {
                match self.admin(me.clone()).await {
                    AdminOutcome::Done(msg) => {
                        tracing::info!(%msg, "registry: active");
                        return Ok(());
                    }
                    other => tracing::warn!(?other, "registry: could not activate myself; retrying"),
                }
            } else {
                let hint = self.leader_addr();
                if let Some((_, addr)) = hint {
                    self.client.hint_leader(&addr);
                }
                match self.client.admin(&me, Duration::from_secs(10)).await {
                    Ok(msg) => {
                        tracing::info!(%msg, "registry: active");
                        return Ok(());
                    }
                    Err(e) => tracing::warn!(error = %e, "registry: join failed; retrying"),
                }
            }
            tokio::time::sleep(self.cfg.liveness_interval).await;
        }
    }

    async fn bootstrap(&self) -> Result<(), RegistryError> {
        let nodes = BTreeMap::from([(self.cfg.id, BasicNode::new(&self.cfg.addr))]);
        match self.raft.initialize(nodes).await {
            Ok(()) => {
                tracing::info!(id = self.cfg.id, "registry: bootstrapped a new cluster");
                Ok(())
            }
            // Another start already initialized it (a restart between the check and here).
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(RegistryError::Raft(e.to_string())),
        }
    }

    /// Whether this node leads now.
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.cfg.id)
    }

    /// The leader's id and address as this node knows them.
    pub fn leader_addr(&self) -> Option<(u64, String)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader)?;
        Some((leader, node.addr.clone()))
    }

    /// Raft's own view: term, leader, indexes, voters and learners.
    pub fn status(&self) -> pb::StatusReply {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let learners: Vec<u64> = membership.learner_ids().collect();
        let view = self.view.borrow().clone();
        pb::StatusReply {
            node_id: self.cfg.id,
            leader: m.current_leader.unwrap_or(0),
            term: m.current_term,
            commit_index: self.committed.load(Ordering::Relaxed),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            state: Some(wire::view_to_proto(&view, &voters)),
            voters: voters.into_iter().collect(),
            learners,
        }
    }

    /// The raw Raft handle, for the service's RPC handlers.
    pub(crate) fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// A liveness report from member `id`. Kept when this node leads; the reply names the
    /// leader either way so the sender can report there next time.
    pub fn record_liveness(&self, id: u64, role: MemberRole, addr: String) {
        if id != 0 {
            if let Ok(mut seen) = self.seen.lock() {
                seen.insert(id, Seen { at: Instant::now(), role, addr });
            }
        }
    }

    /// The client this node uses to reach the others (forwarded heartbeats).
    pub(crate) fn client(&self) -> &RegistryClient {
        &self.client
    }

    /// Perform `op` if this node leads.
    pub async fn admin(&self, op: AdminOp) -> AdminOutcome {
        if !self.is_leader() {
            return AdminOutcome::NotLeader(self.leader_addr());
        }
        let res = match &op {
            AdminOp::Join { id, role, addr } => self.join(*id, *role, addr).await,
            AdminOp::Promote(id) => {
                self.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*id])), true).await
            }
            AdminOp::Remove(id) => self.remove(*id).await,
            AdminOp::Drain(id) => {
                if self.applied.borrow().state.members.contains_key(id) {
                    self.write(vec![Command::SetMemberState { id: *id, state: MemberState::Draining }]).await
                } else {
                    Err(Refusal::NotAMember(*id))
                }
            }
        };
        match res {
            Ok(()) => AdminOutcome::Done(match op {
                AdminOp::Join { id, .. } => format!("node {id} is an active member"),
                AdminOp::Promote(id) => format!("node {id} is a voter"),
                AdminOp::Remove(id) => format!("node {id} was removed"),
                AdminOp::Drain(id) => format!("node {id} is draining; its slots moved"),
            }),
            Err(Refusal::NotLeader) => AdminOutcome::NotLeader(self.leader_addr()),
            Err(Refusal::Refused(why)) => AdminOutcome::Refused(why),
            Err(Refusal::NotAMember(id)) => AdminOutcome::NotAMember(id),
        }
    }

    async fn join(&self, id: u64, role: MemberRole, addr: &str) -> Result<(), Refusal> {
        if id == 0 || addr.is_empty() {
            return Err(Refusal::Refused("a member needs a non-zero id and an address".into()));
        }
        if role == MemberRole::Router {
            let membership = self.raft.metrics().borrow().membership_config.clone();
            let membership = membership.membership();
            let node = BasicNode::new(addr);
            match membership.get_node(&id) {
                None => {
                    // Blocks until the learner has caught up; bounded so a node that cannot be
                    // reached does not hold the admin call forever (it retries).
                    let add = self.raft.add_learner(id, node, true);
                    let _guard = self.membership.lock().await;
                    match tokio::time::timeout(Duration::from_secs(10), add).await {
                        Ok(r) => r.map_err(refusal)?,
                        Err(_) => {
                            return Err(Refusal::Refused(format!("node {id} did not catch up in time")))
                        }
                    };
                }
                Some(known) if known.addr != addr => {
                    self.change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, node)])), true)
                        .await?;
                }
                Some(_) => {}
            }
            let membership = self.raft.metrics().borrow().membership_config.clone();
            let voters = membership.membership().voter_ids().count();
            let is_voter = membership.membership().voter_ids().any(|v| v == id);
            if !is_voter && voters < self.cfg.max_voters {
                self.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true).await?;
            }
        }
        self.record_liveness(id, role, addr.to_owned());
        let member = Member { id, role, addr: addr.to_owned(), state: MemberState::Active };
        self.write(vec![Command::UpsertMember(member)]).await
    }

    async fn remove(&self, id: u64) -> Result<(), Refusal> {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let membership = membership.membership();
        if membership.voter_ids().any(|v| v == id) {
            self.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false).await?;
        } else if membership.get_node(&id).is_some() {
            self.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false).await?;
        } else if !self.applied.borrow().state.members.contains_key(&id) {
            return Err(Refusal::NotAMember(id));
        }
        if let Ok(mut seen) = self.seen.lock() {
            seen.remove(&id);
        }
        self.write(vec![Command::RemoveMember { id }]).await
    }

    async fn change_membership(
        &self,
        change: ChangeMembers<u64, BasicNode>,
        retain: bool,
    ) -> Result<(), Refusal> {
        let _guard = self.membership.lock().await;
        self.raft.change_membership(change, retain).await.map(|_| ()).map_err(refusal)
    }

    /// Write `cmds` plus the slot moves the resulting state calls for, as one entry.
    async fn write(&self, cmds: Vec<Command>) -> Result<(), Refusal> {
        let _guard = self.writes.lock().await;
        let state: ClusterState = self.applied.borrow().state.clone();
        let Some(cmd) = state.with_rebalance(cmds) else { return Ok(()) };
        self.raft.client_write(cmd).await.map(|_| ()).map_err(refusal)
    }

    /// The background loop: liveness reports while following, control while leading.
    async fn control(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.cfg.liveness_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leading = false;
        // The leader this node last followed: when this node takes over, that one has been
        // silent for at least an election timeout already.
        let mut previous_leader = None;
        loop {
            tick.tick().await;
            if self.is_leader() {
                if !leading {
                    leading = true;
                    let members = self.applied.borrow().state.members.clone();
                    let assumed =
                        assumed_seen(&members, previous_leader, self.cfg.election_timeout.0, Instant::now());
                    if let Ok(mut seen) = self.seen.lock() {
                        seen.extend(assumed);
                    }
                }
                self.lead_once().await;
            } else {
                leading = false;
                let current = self.raft.metrics().borrow().current_leader;
                if let Some(l) = current.filter(|l| *l != self.cfg.id) {
                    previous_leader = Some(l);
                }
                self.report_liveness().await;
            }
        }
    }

    async fn report_liveness(&self) {
        if let Some((_, addr)) = self.leader_addr() {
            self.client.hint_leader(&addr);
        }
        let req = pb::HeartbeatRequest {
            node_id: self.cfg.id,
            role: pb::MemberRole::Router as i32,
            addr: self.cfg.addr.clone(),
            forwarded: false,
        };
        if let Err(e) = self.client.heartbeat(req).await {
            tracing::debug!(error = %e, "registry: liveness report failed");
        }
    }

    /// One look at liveness by the leader; writes what changed.
    async fn lead_once(&self) {
        self.record_liveness(self.cfg.id, MemberRole::Router, self.cfg.addr.clone());
        let state = self.applied.borrow().state.clone();
        let seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        let suspects = suspects(&state, &seen, 2 * self.cfg.liveness_interval, Instant::now());
        let refused = refusing(suspects).await;
        let cmds = liveness_changes(&state, &seen, &refused, self.cfg.down_after, Instant::now());
        if cmds.is_empty() && state.rebalance_moves().is_empty() {
            return;
        }
        for c in &cmds {
            tracing::info!(change = ?c, "registry: liveness");
        }
        // A member going down must report again to come back: forget what was heard from it
        // (a refused connection can mark it down while its last report is still recent).
        if let Ok(mut seen) = self.seen.lock() {
            for c in &cmds {
                if let Command::SetMemberState { id, state: MemberState::Down } = c {
                    seen.remove(id);
                }
            }
        }
        if let Err(e) = self.write(cmds).await {
            tracing::warn!(error = ?e, "registry: could not write a liveness change");
        }
    }

    /// Stop Raft and the background work.
    pub async fn shutdown(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
        let _ = self.raft.shutdown().await;
    }
}

/// Why the leader did not do what was asked.
#[derive(Debug)]
enum Refusal {
    NotLeader,
    Refused(String),
    NotAMember(u64),
}

fn refusal(e: RaftWriteError) -> Refusal {
    match &e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Refusal::NotLeader,
        _ => Refusal::Refused(e.to_string()),
    }
}

/// What a new leader assumes of its members' liveness (pure; unit-tested). It has heard from
/// nobody yet, so every member not already down gets a full `down_after` from `now` to report
/// (down members must report to come back), except the leader it
/// replaces: an election only starts after that one was silent for `election_min`, so its
/// silence is counted from then, and a dead leader loses its slots that much sooner.
fn assumed_seen(
    members: &BTreeMap<u64, Member>,
    previous_leader: Option<u64>,
    election_min: Duration,
    now: Instant,
) -> HashMap<u64, Seen> {
    members
        .values()
        // A member already down stays down until it reports: assuming it alive would hand it
        // slots again (and take them away once more a moment later).
        .filter(|m| m.state != MemberState::Down)
        .map(|m| {
            let at = if Some(m.id) == previous_leader {
                now.checked_sub(election_min).unwrap_or(now)
            } else {
                now
            };
            (m.id, Seen { at, role: m.role, addr: m.addr.clone() })
        })
        .collect()
}

/// Active routers that missed their last two liveness reports (pure): worth a connection
/// attempt to tell a dead process from a slow one.
fn suspects(
    state: &ClusterState,
    seen: &HashMap<u64, Seen>,
    late: Duration,
    now: Instant,
) -> Vec<(u64, String)> {
    state
        .members
        .values()
        .filter(|m| {
            m.role == MemberRole::Router && matches!(m.state, MemberState::Active | MemberState::Joining)
        })
        .filter(|m| seen.get(&m.id).is_none_or(|s| now.saturating_duration_since(s.at) >= late))
        .map(|m| (m.id, m.addr.clone()))
        .collect()
}

/// Of `suspects`, those whose gRPC address refuses connections: nothing listens there, so the
/// process is gone (a SIGKILLed router's kernel answers at once). A host that does not answer
/// at all (a vanished pod, a partition) is not refusing; `down_after` decides for it.
async fn refusing(suspects: Vec<(u64, String)>) -> BTreeSet<u64> {
    let mut probes = tokio::task::JoinSet::new();
    for (id, addr) in suspects {
        probes.spawn(async move {
            let attempt = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await;
            matches!(attempt, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused).then_some(id)
        });
    }
    probes.join_all().await.into_iter().flatten().collect()
}

/// How long a refusal probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// The commands liveness calls for (pure; unit-tested): members silent for `down_after`, or
/// late and `refused` (nothing listens at their address), go down; down members that reported
/// go active; edges that report without being members are added. The leader itself is in
/// `seen` (it records itself before asking).
fn liveness_changes(
    state: &ClusterState,
    seen: &HashMap<u64, Seen>,
    refused: &BTreeSet<u64>,
    down_after: Duration,
    now: Instant,
) -> Vec<Command> {
    let alive = |id: u64| {
        !refused.contains(&id)
            && seen.get(&id).is_some_and(|s| now.saturating_duration_since(s.at) < down_after)
    };
    let mut cmds = Vec::new();
    for m in state.members.values() {
        match m.state {
            MemberState::Active | MemberState::Joining if !alive(m.id) => {
                cmds.push(Command::SetMemberState { id: m.id, state: MemberState::Down });
            }
            MemberState::Down if alive(m.id) => {
                cmds.push(Command::SetMemberState { id: m.id, state: MemberState::Active });
            }
            _ => {}
        }
    }
    // Edges are members by reporting; routers must join (they need Raft membership).
    let mut edges: Vec<(&u64, &Seen)> = seen
        .iter()
        .filter(|(id, s)| s.role == MemberRole::Edge && !state.members.contains_key(id) && alive(**id))
        .collect();
    edges.sort_by_key(|(id, _)| **id);
    for (id, s) in edges {
        cmds.push(Command::UpsertMember(Member {
            id: *id,
            role: MemberRole::Edge,
            addr: s.addr.clone(),
            state: MemberState::Active,
        }));
    }
    cmds
}

/// Follows Raft's metrics and the state machine; publishes a [`ClusterView`] whenever either
/// changes what the view holds, and keeps the Raft gauges current.
async fn publish_views(
    mut metrics: watch::Receiver<RaftMetrics<u64, BasicNode>>,
    mut applied: watch::Receiver<Arc<Applied>>,
    committed: Arc<AtomicU64>,
    view: watch::Sender<Arc<ClusterView>>,
    me: u64,
) {
    loop {
        let (leader, next) = {
            let m = metrics.borrow_and_update();
            let a = applied.borrow_and_update();
            let g = starling_telemetry::metrics();
            g.raft_term.set(m.current_term as i64);
            g.raft_is_leader.set(i64::from(m.current_leader == Some(me)));
            g.raft_leader_id.set(m.current_leader.unwrap_or(0) as i64);
            g.raft_applied_index.set(m.last_applied.map(|l| l.index).unwrap_or(0) as i64);
            g.raft_commit_index.set(committed.load(Ordering::Relaxed) as i64);
            g.raft_snapshot_index.set(m.snapshot.map(|l| l.index).unwrap_or(0) as i64);
            g.slots_unowned.set(a.state.slots.unowned() as i64);
            (m.current_leader, a.clone())
        };
        let changed = {
            let cur = view.borrow();
            cur.version != next.index() || cur.leader != leader
        };
        if changed {
            view.send_replace(Arc::new(ClusterView {
                version: next.index(),
                leader,
                members: next.state.members.clone(),
                slots: next.state.slots.clone(),
            }));
        }
        tokio::select! {
            r = metrics.changed() => if r.is_err() { return },
            r = applied.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn member(id: u64, role: MemberRole, state: MemberState) -> Member {
        Member { id, role, addr: format!("n{id}:7400"), state }
    }

    fn seen_at(at: Instant, role: MemberRole) -> Seen {
        Seen { at, role, addr: "x:1".into() }
    }

    #[test]
    fn silent_members_go_down_and_reporting_ones_come_back() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(10);
        let mut state = ClusterState::default();
        for (id, st) in [(1, MemberState::Active), (2, MemberState::Active), (3, MemberState::Down)] {
            state.apply(&Command::UpsertMember(member(id, MemberRole::Router, st)));
        }
        state.apply(&Command::UpsertMember(member(4, MemberRole::Router, MemberState::Draining)));
        let seen = HashMap::from([
            (1, seen_at(later, MemberRole::Router)),
            (2, seen_at(t0, MemberRole::Router)),
            (3, seen_at(later, MemberRole::Router)),
            (9, seen_at(later, MemberRole::Edge)),
            (8, seen_at(later, MemberRole::Router)),
        ]);
        let cmds = liveness_changes(
            &state,
            &seen,
            &BTreeSet::new(),
            Duration::from_secs(3),
            later + Duration::from_millis(1),
        );
        assert_eq!(
            cmds,
            vec![
                Command::SetMemberState { id: 2, state: MemberState::Down },
                Command::SetMemberState { id: 3, state: MemberState::Active },
                Command::UpsertMember(Member {
                    id: 9,
                    role: MemberRole::Edge,
                    addr: "x:1".into(),
                    state: MemberState::Active
                }),
            ],
            "router 8 never joined and draining 4 is left alone"
        );
        let all_fresh: HashMap<u64, Seen> =
            (1..=4).map(|id| (id, seen_at(later, MemberRole::Router))).collect();
        let cmds = liveness_changes(&state, &all_fresh, &BTreeSet::new(), Duration::from_secs(3), later);
        assert_eq!(cmds, vec![Command::SetMemberState { id: 3, state: MemberState::Active }]);
    }

    #[test]
    fn a_late_router_whose_address_refuses_goes_down_before_down_after() {
        let t0 = Instant::now();
        let mut state = ClusterState::default();
        for id in 1..=3 {
            state.apply(&Command::UpsertMember(member(id, MemberRole::Router, MemberState::Active)));
        }
        state.apply(&Command::UpsertMember(member(9, MemberRole::Edge, MemberState::Active)));
        let now = t0 + Duration::from_millis(1200);
        let seen = HashMap::from([
            (1, seen_at(now, MemberRole::Router)),
            (2, seen_at(t0, MemberRole::Router)),
            (3, seen_at(now - Duration::from_millis(400), MemberRole::Router)),
            (9, seen_at(t0, MemberRole::Edge)),
        ]);
        let late = suspects(&state, &seen, Duration::from_secs(1), now);
        assert_eq!(late, vec![(2, "n2:7400".to_string())], "only routers late by two reports (not edge 9)");
        let down_after = Duration::from_secs(3);
        assert_eq!(liveness_changes(&state, &seen, &BTreeSet::new(), down_after, now), vec![]);
        assert_eq!(
            liveness_changes(&state, &seen, &BTreeSet::from([2]), down_after, now),
            vec![Command::SetMemberState { id: 2, state: MemberState::Down }]
        );
    }

    #[tokio::test]
    async fn only_a_closed_port_counts_as_refusing() {
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (open_addr, closed_addr) = (open.local_addr().unwrap(), closed.local_addr().unwrap());
        drop(closed);
        let refused = refusing(vec![(1, open_addr.to_string()), (2, closed_addr.to_string())]).await;
        assert_eq!(refused, BTreeSet::from([2]));
    }

    #[test]
    fn a_new_leader_counts_its_predecessors_silence_from_the_election() {
        let now = Instant::now() + Duration::from_secs(60);
        let mut state = ClusterState::default();
        for id in 1..=3 {
            state.apply(&Command::UpsertMember(member(id, MemberRole::Router, MemberState::Active)));
        }
        let (down_after, election_min) = (Duration::from_secs(3), Duration::from_secs(1));
        let mut seen = assumed_seen(&state.members, Some(1), election_min, now);
        assert_eq!(seen[&1].at, now - election_min);
        assert_eq!(seen[&2].at, now);
        // Node 2 (the new leader) records itself; 3 reports; the old leader 1 stays silent.
        let t = now + Duration::from_millis(2100);
        seen.insert(2, seen_at(t, MemberRole::Router));
        seen.insert(3, seen_at(t, MemberRole::Router));
        assert_eq!(
            liveness_changes(&state, &seen, &BTreeSet::new(), down_after, t),
            vec![Command::SetMemberState { id: 1, state: MemberState::Down }],
            "down after down_after - election_min of the new leader's time, not a full down_after"
        );
        let without_predecessor = assumed_seen(&state.members, None, election_min, now);
        assert!(without_predecessor.values().all(|s| s.at == now));

        // Router 1 is down when yet another leader takes over: it is not brought back.
        state.apply(&Command::SetMemberState { id: 1, state: MemberState::Down });
        let seen = assumed_seen(&state.members, Some(2), election_min, now);
        assert!(!seen.contains_key(&1), "a down member is not assumed alive");
        assert_eq!(liveness_changes(&state, &seen, &BTreeSet::new(), down_after, now), vec![]);
    }
}
