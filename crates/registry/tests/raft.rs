//! Registry nodes over real gRPC on loopback: bootstrap, joins, a leader that dies and comes
//! back, draining and removing a router, and an outside client (an edge) watching and
//! reporting liveness. Every wait is on a condition, bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use starling_registry::{
    AdminOp, ClusterView, MemberRole, MemberState, NodeConfig, RegistryClient, RegistryNode, StartMode,
    SLOT_COUNT,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

struct Running {
    node: Arc<RegistryNode>,
    server: tokio::task::JoinHandle<()>,
    addr: String,
}

fn config(id: u64, addr: &str, dir: &Path, seeds: &[String], start: StartMode) -> NodeConfig {
    let mut cfg = NodeConfig::new(id, addr, dir.join(format!("n{id}")));
    cfg.seeds = seeds.to_vec();
    cfg.start = start;
    cfg.raft_heartbeat = Duration::from_millis(50);
    cfg.election_timeout = (Duration::from_millis(400), Duration::from_millis(800));
    cfg.liveness_interval = Duration::from_millis(100);
    cfg.down_after = Duration::from_millis(1500);
    cfg.auto_bootstrap_after = Duration::from_millis(500);
    cfg
}

async fn start(
    id: u64,
    listener: tokio::net::TcpListener,
    dir: &Path,
    seeds: &[String],
    mode: StartMode,
) -> Running {
    let addr = listener.local_addr().unwrap().to_string();
    // A restarted node may find its previous database still closing for a moment.
    let node = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match RegistryNode::open(config(id, &addr, dir, seeds, mode)).await {
                Ok(n) => break n,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    eprintln!("node {id} not open yet: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("node {id}: {e}"),
            }
        }
    };
    let svc = node.service();
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    tokio::time::timeout(Duration::from_secs(20), node.start()).await.expect("node started in time").unwrap();
    Running { node, server, addr }
}

async fn listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// Wait until `view` satisfies `pred`.
async fn wait_view(
    what: &str,
    view: &mut watch::Receiver<Arc<ClusterView>>,
    pred: impl Fn(&ClusterView) -> bool,
) -> Arc<ClusterView> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v = view.borrow_and_update().clone();
        if pred(&v) {
            return v;
        }
        if tokio::time::timeout_at(deadline, view.changed()).await.is_err() {
            panic!(
                "timed out waiting for {what}; last view: version {} leader {:?} members {:?}",
                v.version, v.leader, v.members
            );
        }
    }
}

fn balanced_over(v: &ClusterView, routers: &[u64]) -> bool {
    let loads = v.slots.loads();
    v.slots.unowned() == 0
        && loads.keys().copied().collect::<Vec<_>>() == routers
        && loads.values().all(|n| n.abs_diff(SLOT_COUNT as usize / routers.len()) <= 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_form_a_cluster_survive_the_leader_and_hand_slots_over() {
    let dir = tempfile::tempdir().unwrap();
    let (l1, l2, l3) = (listener().await, listener().await, listener().await);
    let seeds: Vec<String> = [&l1, &l2, &l3].iter().map(|l| l.local_addr().unwrap().to_string()).collect();

    // Node 1 bootstraps (auto: nobody answers), 2 and 3 join through the seeds.
    let n1 = start(1, l1, dir.path(), &seeds, StartMode::Auto).await;
    let n2 = start(2, l2, dir.path(), &seeds, StartMode::Join).await;
    let n3 = start(3, l3, dir.path(), &seeds, StartMode::Join).await;
    let mut v3 = n3.node.view();
    let v = wait_view("three active routers with balanced slots", &mut v3, |v| balanced_over(v, &[1, 2, 3]))
        .await;
    assert_eq!(v.leader, Some(1));
    let st = n1.node.status();
    assert_eq!(st.voters, vec![1, 2, 3]);
    let epoch_before = v.slots.owners().iter().map(|o| o.epoch).max().unwrap();

    // An edge watches through the seeds and reports liveness: it becomes a member.
    let edge = Arc::new(RegistryClient::new(seeds.clone()));
    let mut edge_view = edge.watch(100);
    let beats = edge.spawn_liveness(100, MemberRole::Edge, "127.0.0.1:1".into(), Duration::from_millis(100));
    wait_view("the edge listed as an active member", &mut edge_view, |v| {
        v.members.get(&100).is_some_and(|m| m.role == MemberRole::Edge && m.state == MemberState::Active)
    })
    .await;

    // The leader dies: 2 and 3 elect a new one, which marks 1 down and takes its slots over
    // under a new epoch.
    let addr1 = n1.addr.clone();
    n1.server.abort();
    n1.node.shutdown().await;
    drop(n1);
    let v = wait_view("node 1 down, its slots on 2 and 3", &mut v3, |v| {
        v.leader.is_some_and(|l| l != 1)
            && v.members.get(&1).is_some_and(|m| m.state == MemberState::Down)
            && balanced_over(v, &[2, 3])
    })
    .await;
    assert!(v.slots.owners().iter().all(|o| o.epoch > 0));
    assert!(v.slots.owners().iter().map(|o| o.epoch).max().unwrap() > epoch_before, "a new epoch");
    wait_view("the edge sees the move", &mut edge_view, |e| e.version >= v.version).await;

    // Node 1 restarts on its data: it rejoins and gets its share back.
    let l1 = tokio::net::TcpListener::bind(&addr1).await.unwrap();
    let n1 = start(1, l1, dir.path(), &seeds, StartMode::Auto).await;
    wait_view("node 1 active again with a third of the slots", &mut v3, |v| {
        v.members.get(&1).is_some_and(|m| m.state == MemberState::Active) && balanced_over(v, &[1, 2, 3])
    })
    .await;
    assert_eq!(n1.node.status().voters, vec![1, 2, 3], "membership survived");

    // An operator drains node 3, then removes it: its slots move, it leaves Raft.
    let admin = RegistryClient::new(vec![seeds[1].clone()]);
    admin.admin(&AdminOp::Drain(3), Duration::from_secs(10)).await.unwrap();
    wait_view("node 3 drained", &mut v3, |v| {
        v.members.get(&3).is_some_and(|m| m.state == MemberState::Draining) && balanced_over(v, &[1, 2])
    })
    .await;
    admin.admin(&AdminOp::Remove(3), Duration::from_secs(10)).await.unwrap();
    let mut v2 = n2.node.view();
    wait_view("node 3 gone", &mut v2, |v| !v.members.contains_key(&3)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while n2.node.status().voters != vec![1, 2] {
        assert!(tokio::time::Instant::now() < deadline, "voters: {:?}", n2.node.status().voters);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Asking for something impossible is refused with a reason, not retried forever.
    let err = admin.admin(&AdminOp::Drain(42), Duration::from_secs(10)).await.unwrap_err();
    assert!(err.to_string().contains("not a member"), "{err}");

    // The edge stops reporting: the leader marks it down.
    beats.abort();
    wait_view("the silent edge marked down", &mut v2, |v| {
        v.members.get(&100).is_some_and(|m| m.state == MemberState::Down)
    })
    .await;
    for n in [n1, n2, n3] {
        n.server.abort();
        n.node.shutdown().await;
    }
}
