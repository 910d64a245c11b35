//! The cluster roles: `starling router` (sessions of its slots, a registry node, the gRPC
//! links) and `starling edge` (client connections, the registry watched through seeds), and
//! `starling cluster …` (administration over the registry's gRPC API).
//!
//! They wire the same edge and router as `serve`: the edge's [`starling_edge::SessionHost`] is
//! the link to the routers instead of the router itself, and the router's
//! [`starling_router::Peers`] are the other routers instead of nobody.

use crate::config::{Config, ConfigError};
use crate::serve::{
    bind, edge_config, finish_tracing, init_logging, load_tls, router_config, spawn_edge_listeners,
    spawn_http, stop, wait_for_signal,
};
use anyhow::{bail, Context};
use clap::Subcommand;
use starling_cluster::{ClusterPeers, EdgeHost, LinkLimits, RouterLinks};
use starling_edge::Edge;
use starling_presence::{BusConfig, RedisBus};
use starling_registry::{
    AdminOp, ClusterView, MemberRole, NodeConfig, RegistryClient, RegistryNode, StartMode,
};
use starling_router::{LocalBus, PresenceBus, Router};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The host name, for a node id from a StatefulSet ordinal.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn node_id(cfg: &Config, role: MemberRole) -> Result<u64, ConfigError> {
    cfg.cluster.resolve_node_id(&hostname(), role == MemberRole::Edge)
}

fn limits(cfg: &Config) -> LinkLimits {
    LinkLimits { router_queue: cfg.cluster.router_queue.max(1), edge_queue: cfg.cluster.edge_queue.max(1) }
}

/// Whether a node's view lets it take traffic: a leader is known and every slot has an owner.
fn view_ready(view: &ClusterView) -> bool {
    view.leader.is_some() && view.slots.unowned() == 0
}

/// `starling router`: run until SIGTERM, then hand this router's slots to the others.
pub async fn router(cfg: Config) -> anyhow::Result<()> {
    let id = node_id(&cfg, MemberRole::Router)?;
    let tracing = init_logging(&cfg, "router", id);
    let addr = cfg.cluster.advertised()?;
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let store = crate::users::open_store(&cfg)?;
    let c = &cfg.cluster;
    let ms = Duration::from_millis;
    let mut ncfg = NodeConfig::new(id, addr.clone(), cfg.data_dir.join("raft"));
    ncfg.seeds = c.seeds.clone();
    ncfg.start = if c.bootstrap { StartMode::Bootstrap } else { StartMode::Auto };
    ncfg.raft_heartbeat = ms(c.heartbeat_ms);
    ncfg.election_timeout = (ms(c.election_timeout_min_ms), ms(c.election_timeout_max_ms));
    ncfg.liveness_interval = ms(c.liveness_interval_ms);
    ncfg.down_after = ms(c.down_after_ms);
    ncfg.max_voters = c.max_voters;
    ncfg.auto_bootstrap_after = ms(c.bootstrap_wait_ms);
    let node = RegistryNode::open(ncfg).await.context("opening the registry")?;
    let view = node.view();

    let peers = ClusterPeers::new(id, view.clone(), limits(&cfg));
    // Presence travels between routers over Redis when the store is there too; a router on
    // the embedded store is alone and delivers everything itself.
    let (bus, inbox): (Arc<dyn PresenceBus>, _) = if cfg.store.backend == "redis" {
        let (bus, inbox) = RedisBus::start(BusConfig {
            urls: cfg.store.redis_urls.clone(),
            prefix: cfg.store.key_prefix.clone(),
            node_id: id,
            ttl: Duration::from_secs(c.presence_ttl_secs),
        })?;
        (bus, Some(inbox))
    } else {
        (Arc::new(LocalBus), None)
    };
    let router = Arc::new(Router::with_bus(router_config(&cfg), store, peers.clone(), bus));
    let links = RouterLinks::new(id, router.clone(), peers, limits(&cfg));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = vec![tokio::spawn(links.clone().watch_slots())];
    if let Some(mut inbox) = inbox {
        let r = router.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(presence) = inbox.recv().await {
                r.on_bus_presence(presence);
            }
        }));
    }
    starling_telemetry::metrics().build_info.with_label_values(&[env!("CARGO_PKG_VERSION"), "router"]).set(1);

    let joined = Arc::new(AtomicBool::new(false));
    let (flag, ready_view) = (joined.clone(), view.clone());
    let ready = Arc::new(move || flag.load(Ordering::Acquire) && view_ready(&ready_view.borrow()));
    spawn_http(&cfg, ready, shutdown_rx.clone(), &mut tasks).await?;
    let listener = bind(&c.listen, "cluster").await?;
    let (svc, link_svc) = (node.service(), links.service());
    let mut grpc_shutdown = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        let res = tonic::transport::Server::builder()
            .add_service(svc)
            .add_service(link_svc)
            .serve_with_incoming_shutdown(
                // Nagle on the accepted side would hold every small batch a router sends back
                // to the node that dialled it for a delayed ACK (~40 ms): see docs/benchmarks.md.
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    let _ = grpc_shutdown.wait_for(|s| *s).await;
                },
            )
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "cluster gRPC server failed");
        }
    }));
    let starter = node.clone();
    tasks.push(tokio::spawn(async move {
        match starter.start().await {
            Ok(()) => joined.store(true, Ordering::Release),
            Err(e) => tracing::error!(error = %e, "registry: could not start"),
        }
    }));
    tracing::info!(id, %addr, version = env!("CARGO_PKG_VERSION"), "starling router serving");

    wait_for_signal().await;
    // Drain: ask the leader to move this router's slots, and wait (bounded) until they left.
    let grace = Duration::from_secs(c.drain_timeout_secs);
    tracing::info!("draining: handing slots to the other routers");
    let mut seeds = c.seeds.clone();
    seeds.insert(0, addr.clone());
    let admin = RegistryClient::new(seeds);
    match admin.admin(&AdminOp::Drain(id), grace).await {
        Ok(_) => {
            let mut v = view.clone();
            let moved = tokio::time::timeout(grace, v.wait_for(|v| v.slots.owned_by(id) == 0)).await;
            if moved.is_err() {
                tracing::warn!("drain: slots still owned after the grace period; exiting anyway");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "drain: the registry did not answer; exiting without handing off")
        }
    }
    let _ = shutdown_tx.send(true);
    stop(tasks, Duration::ZERO, || 0).await;
    node.shutdown().await;
    finish_tracing(tracing).await;
    Ok(())
}

/// `starling edge`: run until SIGTERM, then close every client stream with `<system-shutdown/>`.
pub async fn edge(cfg: Config) -> anyhow::Result<()> {
    let id = node_id(&cfg, MemberRole::Edge)?;
    let tracing = init_logging(&cfg, "edge", id);
    if cfg.cluster.seeds.is_empty() {
        bail!("an edge needs cluster.seeds: the routers to watch the registry through");
    }
    let store = crate::users::open_store(&cfg)?;
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let tls = load_tls(&cfg)?;
    let client = Arc::new(RegistryClient::new(cfg.cluster.seeds.clone()));
    let view = client.watch(id);
    let mut tasks = Vec::new();
    let host = EdgeHost::new(id, view.clone(), cfg.cluster.edge_queue.max(1));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let edge = Edge::new(edge_config(&cfg), Arc::new(host.clone()), store, Some(tls), shutdown_rx.clone());
    starling_telemetry::metrics().build_info.with_label_values(&[env!("CARGO_PKG_VERSION"), "edge"]).set(1);
    let ready_view = view.clone();
    spawn_http(&cfg, Arc::new(move || view_ready(&ready_view.borrow())), shutdown_rx.clone(), &mut tasks)
        .await?;
    let bound = spawn_edge_listeners(&cfg, &edge, &mut tasks).await?;
    // What the registry shows for this edge: the configured advertise address, else the
    // client listener as bound (so `127.0.0.1:0` shows up with its real port).
    let label = match (cfg.cluster.advertise.is_empty(), bound) {
        (false, _) => cfg.cluster.advertise.clone(),
        (true, Some(a)) => a.to_string(),
        (true, None) => cfg.c2s.listen.clone(),
    };
    let liveness = Duration::from_millis(cfg.cluster.liveness_interval_ms);
    tasks.push(client.spawn_liveness(id, MemberRole::Edge, label, liveness));
    tracing::info!(id, version = env!("CARGO_PKG_VERSION"), "starling edge serving");

    wait_for_signal().await;
    tracing::info!("shutting down: closing client streams");
    let _ = shutdown_tx.send(true);
    let grace = Duration::from_secs(cfg.cluster.drain_timeout_secs);
    stop(tasks, grace, || host.session_count()).await;
    finish_tracing(tracing).await;
    Ok(())
}

/// `starling cluster …`
#[derive(Subcommand, Debug)]
pub enum ClusterAction {
    /// Show the registry: leader, Raft indexes, members and their slots.
    Status {
        /// Print the status as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Show which router owns an account's (or a component domain's) slot.
    Locate {
        /// A bare JID (`user@domain`) or a component domain.
        jid: String,
    },
    /// Add a member by hand (routers join by themselves on start).
    Join {
        /// Node id.
        id: u64,
        /// Its gRPC address (`host:port`).
        addr: String,
        /// `router` or `edge`.
        #[arg(long, default_value = "router")]
        role: String,
    },
    /// Make a Raft learner a voter.
    Promote {
        /// Node id.
        id: u64,
    },
    /// Move a router's slots to the others (it stays a member, with no slots).
    Drain {
        /// Node id.
        id: u64,
    },
    /// Take a node out of the cluster and the Raft group; its slots move.
    Remove {
        /// Node id.
        id: u64,
    },
}

/// Run one `starling cluster` command against `addr` (or the configured seeds).
pub async fn cluster(cfg: &Config, addr: Option<String>, action: ClusterAction) -> anyhow::Result<()> {
    let targets = match addr {
        Some(a) => vec![a],
        None if !cfg.cluster.seeds.is_empty() => cfg.cluster.seeds.clone(),
        None => vec![cfg.cluster.listen.clone()],
    };
    let client = RegistryClient::new(targets.clone());
    let within = Duration::from_secs(15);
    let op = match action {
        ClusterAction::Status { json } => return status(&client, &targets, json).await,
        ClusterAction::Locate { jid } => return locate(&client, &targets, &jid).await,
        ClusterAction::Join { id, addr, role } => {
            let role = match role.as_str() {
                "router" => MemberRole::Router,
                "edge" => MemberRole::Edge,
                other => bail!("--role must be router or edge, not {other:?}"),
            };
            AdminOp::Join { id, role, addr }
        }
        ClusterAction::Promote { id } => AdminOp::Promote(id),
        ClusterAction::Drain { id } => AdminOp::Drain(id),
        ClusterAction::Remove { id } => AdminOp::Remove(id),
    };
    let msg = client.admin(&op, within).await?;
    println!("{msg}");
    Ok(())
}

/// The first answer of a `Status` call among `targets`.
async fn first_status(
    client: &RegistryClient,
    targets: &[String],
) -> anyhow::Result<starling_registry::proto::StatusReply> {
    let mut last = None;
    for t in targets {
        match client.status(t).await {
            Ok(st) => return Ok(st),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(e).context("no registry node answered"),
        None => bail!("no registry address to ask"),
    }
}

async fn locate(client: &RegistryClient, targets: &[String], jid: &str) -> anyhow::Result<()> {
    let key = match starling_xmpp::Jid::new(jid) {
        Ok(j) if j.node().is_some() => j.to_bare().to_string(),
        Ok(j) => j.domain().to_string(),
        Err(e) => bail!("{jid:?} is not a JID: {e}"),
    };
    let st = first_status(client, targets).await?;
    let view = st.state.and_then(starling_registry::wire::view_from_proto).unwrap_or_default();
    let slot = starling_registry::slot_of(&key);
    match view.slots.owner(slot) {
        Some((router, epoch)) => println!("{key} slot {slot} router {router} epoch {epoch}"),
        None => println!("{key} slot {slot} router none"),
    }
    Ok(())
}

async fn status(client: &RegistryClient, targets: &[String], json: bool) -> anyhow::Result<()> {
    let st = first_status(client, targets).await?;
    let view = st.state.clone().and_then(starling_registry::wire::view_from_proto).unwrap_or_default();
    let loads = view.slots.loads();
    let members: Vec<serde_json::Value> = st
        .state
        .iter()
        .flat_map(|s| s.members.iter())
        .map(|m| {
            let member = view.members.get(&m.id);
            serde_json::json!({
                "id": m.id,
                "role": member.map(|m| format!("{:?}", m.role).to_lowercase()),
                "state": member.map(|m| format!("{:?}", m.state).to_lowercase()),
                "addr": m.addr,
                "voter": m.voter,
                "slots": loads.get(&m.id).copied().unwrap_or(0),
            })
        })
        .collect();
    // A Raft group of n voters keeps a majority through (n - 1) / 2 failures: 2 voters survive
    // none, which is why a cluster wants 3 routers (see docs/cluster.md).
    let tolerates = st.voters.len().saturating_sub(1) / 2;
    if json {
        let out = serde_json::json!({
            "tolerates_voter_failures": tolerates,
            "node": st.node_id,
            "leader": st.leader,
            "term": st.term,
            "commit_index": st.commit_index,
            "applied_index": st.applied_index,
            "voters": st.voters,
            "learners": st.learners,
            "slots_unowned": view.slots.unowned(),
            "members": members,
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "node {} · leader {} · term {} · commit {} · applied {} · unowned slots {}",
        st.node_id,
        st.leader,
        st.term,
        st.commit_index,
        st.applied_index,
        view.slots.unowned()
    );
    println!("{:>6}  {:<7} {:<9} {:<6} {:>6}  addr", "id", "role", "state", "voter", "slots");
    for m in &members {
        println!(
            "{:>6}  {:<7} {:<9} {:<6} {:>6}  {}",
            m["id"].to_string(),
            m["role"].as_str().unwrap_or("?"),
            m["state"].as_str().unwrap_or("?"),
            m["voter"].to_string(),
            m["slots"].to_string(),
            m["addr"].as_str().unwrap_or("")
        );
    }
    println!("{} voters: the registry survives {tolerates} voter failure(s)", st.voters.len());
    if tolerates == 0 && st.voters.len() > 1 {
        println!("warning: losing any voter stops the registry (no majority); run at least 3 routers");
    }
    Ok(())
}
