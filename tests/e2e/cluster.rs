//! The cluster as real processes on loopback: a real `redis-server` (the shared store), three
//! `starling router`s (Raft registry, links over gRPC) and two `starling edge`s, with clients
//! whose homes are on different routers and who connect through different edges.
//!
//! Every wait is on a condition (the registry's status through `starling cluster status`, an
//! edge's `/readyz`, a stanza reaching a client), each bounded.

use crate::support::{http_get_at, sample, Client, BIN, STEP};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use starling_testkit::{free_port, RedisServer};
use starling_xml::Element;
use starling_xmpp::ns;
use starling_xmpp::sasl::ScramHash;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the cluster may take to notice and repair a failure.
const REPAIR: Duration = Duration::from_secs(30);

/// One `starling router` or `starling edge` process.
struct Node {
    role: &'static str,
    id: u64,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// Announced listeners by name (`http`, `cluster`, `c2s`).
    listeners: Vec<(String, SocketAddr)>,
}

impl Node {
    fn new(
        role: &'static str,
        id: u64,
        redis: &RedisServer,
        seeds: &[String],
        grpc: Option<&str>,
    ) -> Result<Node> {
        let dir = tempfile::tempdir()?;
        let seeds = format!("[{}]", seeds.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", "));
        let mut env: Vec<(String, String)> = vec![
            ("STARLING_DATA_DIR".into(), format!("\"{}\"", dir.path().display())),
            ("STARLING_STORE__BACKEND".into(), "redis".into()),
            ("STARLING_STORE__REDIS_URLS".into(), format!("[\"{}\"]", redis.url())),
            ("STARLING_CLUSTER__NODE_ID".into(), id.to_string()),
            ("STARLING_CLUSTER__SEEDS".into(), seeds),
            ("STARLING_CLUSTER__HEARTBEAT_MS".into(), "100".into()),
            ("STARLING_CLUSTER__ELECTION_TIMEOUT_MIN_MS".into(), "600".into()),
            ("STARLING_CLUSTER__ELECTION_TIMEOUT_MAX_MS".into(), "1200".into()),
            ("STARLING_CLUSTER__LIVENESS_INTERVAL_MS".into(), "200".into()),
            ("STARLING_CLUSTER__DOWN_AFTER_MS".into(), "1500".into()),
            ("STARLING_CLUSTER__BOOTSTRAP_WAIT_MS".into(), "1000".into()),
            ("STARLING_HTTP__LISTEN".into(), "127.0.0.1:0".into()),
            ("STARLING_C2S__LISTEN".into(), "127.0.0.1:0".into()),
            ("STARLING_C2S__DIRECT_TLS_LISTEN".into(), String::new()),
            ("STARLING_LOG__LEVEL".into(), "info,openraft=warn".into()),
        ];
        if let Some(addr) = grpc {
            env.push(("STARLING_CLUSTER__LISTEN".into(), addr.into()));
        }
        Ok(Node { role, id, dir, env, child: None, listeners: Vec::new() })
    }

    fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear();
        if let Ok(path) = std::env::var("PATH") {
            c.env("PATH", path);
        }
        c.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }

    /// Start the process and read its listener announcements.
    fn spawn(&mut self) -> Result<()> {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("stderr.log"))?;
        let mut child =
            self.command().arg(self.role).stdout(Stdio::piped()).stderr(Stdio::from(log)).spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                let _ = tx.send(line);
            }
        });
        let wanted: &[&str] = if self.role == "router" { &["http", "cluster"] } else { &["http", "c2s"] };
        self.listeners.clear();
        while !wanted.iter().all(|w| self.listeners.iter().any(|(n, _)| n == w)) {
            let line = rx.recv_timeout(STEP).map_err(|_| {
                anyhow!("{} {} announced no listeners; stderr:\n{}", self.role, self.id, self.stderr())
            })?;
            if let Some((what, addr)) =
                line.strip_prefix("starling: ").and_then(|l| l.split_once(" listening on "))
            {
                self.listeners.push((what.to_owned(), addr.trim().parse()?));
            }
        }
        self.child = Some(child);
        Ok(())
    }

    fn addr(&self, what: &str) -> Result<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == what)
            .map(|(_, a)| *a)
            .ok_or_else(|| anyhow!("no {what} listener"))
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn cert(&self) -> std::path::PathBuf {
        self.dir.path().join("tls").join("cert.pem")
    }

    /// SIGKILL: no drain, no goodbye.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (bounded) for the exit status.
    fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let pid = self.child.as_ref().map(|c| c.id()).context("not running")?;
        Command::new("kill").arg("-TERM").arg(pid.to_string()).status()?;
        self.wait_exit()
    }

    /// Wait (bounded by [`REPAIR`]) for the process to exit.
    fn wait_exit(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("not running")?;
        let deadline = Instant::now() + REPAIR;
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("{} {} did not exit after SIGTERM", self.role, self.id);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Run a CLI command with this node's configuration.
    fn cli(&self, args: &[&str]) -> Result<String> {
        let out = self.command().args(args).output()?;
        if !out.status.success() {
            bail!("starling {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn ready(&self) -> bool {
        match self.addr("http") {
            Ok(a) => matches!(http_get_at(a, "/readyz").await, Ok((200, _))),
            Err(_) => false,
        }
    }

    async fn login(&self, user: &str, resource: &str) -> Result<Client> {
        let mut c = Client::connect(self.addr("c2s")?).await?;
        c.starttls_and_open(&self.cert()).await?;
        c.auth_scram(ScramHash::Sha256, user, &format!("{user}-pw")).await?;
        c.bind(Some(resource)).await?;
        Ok(c)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The registry's status as one router answers it.
fn status(via: &Node, grpc: &str) -> Result<Value> {
    let out = via.cli(&["cluster", "--addr", grpc, "status", "--json"])?;
    Ok(serde_json::from_str(out.trim())?)
}

fn member(st: &Value, id: u64) -> Option<&Value> {
    st["members"].as_array()?.iter().find(|m| m["id"] == id)
}

fn state_of(st: &Value, id: u64) -> String {
    member(st, id).and_then(|m| m["state"].as_str()).unwrap_or("absent").to_owned()
}

/// Poll `grpc`'s status until `pred` holds (bounded by [`REPAIR`]).
async fn wait_status(what: &str, via: &Node, grpc: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = Instant::now() + REPAIR;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Ok(st) = status(via, grpc) {
            if pred(&st) {
                return Ok(st);
            }
            last = st;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out waiting for {what}; last status: {last}")
}

/// Every router in `routers` active, no slot unowned, and the slots spread evenly over them.
fn balanced(st: &Value, routers: &[u64]) -> bool {
    let even = 4096 / routers.len() as u64;
    st["slots_unowned"] == 0
        && routers.iter().all(|r| {
            member(st, *r).is_some_and(|m| {
                m["state"] == "active" && m["slots"].as_u64().is_some_and(|n| n.abs_diff(even) <= 1)
            })
        })
}

/// The router that owns `jid`'s slot.
fn home(via: &Node, grpc: &str, jid: &str) -> Result<u64> {
    let out = via.cli(&["cluster", "--addr", grpc, "locate", jid])?;
    let router =
        out.split_whitespace().skip_while(|w| *w != "router").nth(1).context("no router in locate")?;
    Ok(router.parse()?)
}

/// Answer `from`'s ping until `to` is reachable at its full JID through the cluster (the
/// session registered at its current home); returns how long that took.
async fn wait_reachable(from: &mut Client, to: &mut Client, to_jid: &str) -> Result<Duration> {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < REPAIR {
        n += 1;
        let id = format!("reach-{n}");
        let ping = Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("to", to_jid)
            .with_attr("id", &id)
            .with_child(Element::new("ping", ns::PING));
        from.send_element(&ping).await?;
        let got = tokio::time::timeout(
            Duration::from_secs(2),
            to.wait_for("a ping", |e| e.attr("id") == Some(id.as_str())),
        )
        .await;
        if let Ok(Ok(iq)) = got {
            let pong = Element::new("iq", ns::CLIENT)
                .with_attr("type", "result")
                .with_attr("to", iq.attr("from").unwrap_or_default())
                .with_attr("id", &id);
            to.send_element(&pong).await?;
        }
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            from.wait_for("the ping's answer", |e| e.attr("id") == Some(id.as_str())),
        )
        .await;
        if let Ok(Ok(iq)) = answer {
            if iq.attr("type") == Some("result") {
                return Ok(start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{to_jid} not reachable after {REPAIR:?}")
}

fn subscription(kind: &str, to: &str) -> Element {
    Element::new("presence", ns::CLIENT).with_attr("type", kind).with_attr("to", to)
}

/// A presence of `kind` from `from` (a full JID exactly, or any resource of a bare JID).
fn is_presence_from(e: &Element, from: &str, kind: Option<&str>) -> bool {
    let matches = |f: &str| f == from || (!from.contains('/') && f.starts_with(&format!("{from}/")));
    e.name == "presence" && e.attr("from").is_some_and(matches) && e.attr("type") == kind
}

fn status_is(e: &Element, status: &str) -> bool {
    e.get_child("status", ns::CLIENT).map(|s| s.text()).as_deref() == Some(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_routers_two_edges_survive_kills_and_a_join() -> Result<()> {
    let mut redis = RedisServer::start_durable();
    let grpc: Vec<String> = (0..4).map(|_| format!("127.0.0.1:{}", free_port(false))).collect();
    let seeds = &grpc[..3];
    let mut routers = Vec::new();
    for (i, addr) in seeds.iter().enumerate() {
        let mut r = Node::new("router", i as u64 + 1, &redis, seeds, Some(addr))?;
        r.spawn()?;
        routers.push(r);
    }
    let mut edges = Vec::new();
    for id in [11, 12] {
        let mut e = Node::new("edge", id, &redis, seeds, None)?;
        e.spawn()?;
        edges.push(e);
    }
    // The CLI runs with an edge's configuration (Redis, seeds); this node is never started.
    let admin = &Node::new("edge", 99, &redis, seeds, None)?;
    let st =
        wait_status("three active routers with balanced slots", admin, &grpc[0], |s| balanced(s, &[1, 2, 3]))
            .await?;
    assert_eq!(st["voters"], serde_json::json!([1, 2, 3]), "{st}");
    for e in &edges {
        let deadline = Instant::now() + REPAIR;
        while !e.ready().await {
            assert!(Instant::now() < deadline, "edge {} never ready:\n{}", e.id, e.stderr());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let leader = st["leader"].as_u64().context("a leader")?;

    // Two users homed on different routers, bob's home not the leader (it is killed first).
    let candidates: Vec<String> = (0..40).map(|i| format!("user{i}@localhost")).collect();
    let mut homes = Vec::new();
    for c in &candidates {
        homes.push((c.clone(), home(admin, &grpc[0], c)?));
    }
    let (bob, bob_home) = homes.iter().find(|(_, h)| *h != leader).cloned().context("a non-leader home")?;
    let (alice, alice_home) = homes.iter().find(|(_, h)| *h != bob_home).cloned().context("another home")?;
    for u in [&alice, &bob] {
        let local = u.split('@').next().unwrap_or_default();
        admin.cli(&["user", "add", u, "--password", &format!("{local}-pw")])?;
    }
    let (alice_local, bob_local) = (alice.split('@').next().unwrap(), bob.split('@').next().unwrap());

    // alice on edge 11, bob on edge 12: subscribe both ways, presence and messages flow
    // edge → router (home A) → router (home B) → edge.
    let mut a = edges[0].login(alice_local, "a").await?;
    let mut b = edges[1].login(bob_local, "b").await?;
    let (a_full, b_full) = (format!("{alice}/a"), format!("{bob}/b"));
    a.presence().await?;
    b.presence().await?;
    a.send_element(&subscription("subscribe", &bob)).await?;
    b.wait_for("alice's request", |e| is_presence_from(e, &alice, Some("subscribe"))).await?;
    b.send_element(&subscription("subscribed", &alice)).await?;
    a.wait_for("bob's presence after approval", |e| is_presence_from(e, &b_full, None)).await?;
    b.send_element(&subscription("subscribe", &alice)).await?;
    a.wait_for("bob's request", |e| is_presence_from(e, &bob, Some("subscribe"))).await?;
    a.send_element(&subscription("subscribed", &bob)).await?;
    b.wait_for("alice's presence after approval", |e| is_presence_from(e, &a_full, None)).await?;
    a.message(&b_full, "hello across routers").await?;
    let m = b.expect_message("hello across routers").await?;
    assert_eq!(m.attr("from"), Some(a_full.as_str()), "'from' stamped by alice's home");
    b.message(&a_full, "hello back").await?;
    a.expect_message("hello back").await?;
    eprintln!("alice home {alice_home}, bob home {bob_home}, leader {leader}");

    // Bob logs in a second resource through the other edge: his home router answers the
    // login with the presence of alice, homed elsewhere, from the bus's last-presence cache.
    let mut b2 = edges[0].login(bob_local, "b2").await?;
    b2.presence().await?;
    b2.wait_for("alice's presence at login", |e| is_presence_from(e, &a_full, None)).await?;
    b2.send("</stream:stream>").await?;
    a.wait_for("b2 leaving", |e| is_presence_from(e, &format!("{bob}/b2"), Some("unavailable"))).await?;

    // Redis restarts under the cluster: presence degrades while it is away and repairs itself
    // (resubscribe, republish); a change made meanwhile reaches the contact.
    redis.restart();
    a.send("<presence><status>after the Redis restart</status></presence>").await?;
    b.wait_for("alice's change across the Redis restart", |e| {
        is_presence_from(e, &a_full, None) && status_is(e, "after the Redis restart")
    })
    .await?;
    a.message(&b_full, "messages never needed Redis").await?;
    b.expect_message("messages never needed Redis").await?;

    // SIGKILL bob's home: the leader marks it down and gives its slots to the others; bob's
    // edge re-registers him with the new owner; messages flow again.
    let killed_at = Instant::now();
    let k = (bob_home - 1) as usize;
    routers[k].kill();
    let survivors: Vec<u64> = (1..=3).filter(|r| *r != bob_home).collect();
    let via = &grpc[(leader - 1) as usize];
    wait_status("the killed router's slots on the survivors", admin, via, |s| {
        state_of(s, bob_home) == "down" && balanced(s, &survivors)
    })
    .await?;
    wait_reachable(&mut a, &mut b, &b_full).await?;
    eprintln!("router kill → bob reachable again after {:?}", killed_at.elapsed());
    a.message(&b_full, "after the router died").await?;
    b.expect_message("after the router died").await?;

    // Bob's edge saw the slots move, keeps a queue per live router link, and counted what it
    // wrote by kind.
    let (_, m) = http_get_at(edges[1].addr("http")?, "/metrics").await?;
    assert!(sample(&m, "starling_slot_moves_total").unwrap_or(0.0) > 0.0, "{m}");
    let new_home = home(admin, via, &bob)?;
    let depth = format!("starling_link_queue_depth{{peer=\"{new_home}\"}}");
    assert!(sample(&m, &depth).is_some(), "no {depth}: {m}");
    assert!(sample(&m, "starling_stanzas_out_total{kind=\"message\"}").unwrap_or(0.0) >= 2.0, "{m}");
    let (_, m) = http_get_at(routers[(new_home - 1) as usize].addr("http")?, "/metrics").await?;
    assert!(sample(&m, "starling_slot_moves_total").unwrap_or(0.0) > 0.0, "{m}");

    // It restarts on its data directory and rejoins with its share of the slots.
    routers[k].spawn()?;
    wait_status("the restarted router active again", admin, via, |s| balanced(s, &[1, 2, 3])).await?;
    wait_reachable(&mut a, &mut b, &b_full).await?;

    // SIGKILL the Raft leader: the others elect a new one, which marks it down; the membership
    // is intact and the slots move.
    routers[(leader - 1) as usize].kill();
    let rest: Vec<u64> = (1..=3).filter(|r| *r != leader).collect();
    let via = &grpc[(rest[0] - 1) as usize];
    let st = wait_status("a new leader and the old one down", admin, via, |s| {
        s["leader"].as_u64().is_some_and(|l| l != 0 && l != leader)
            && state_of(s, leader) == "down"
            && balanced(s, &rest)
    })
    .await?;
    assert_eq!(st["voters"], serde_json::json!([1, 2, 3]), "no membership lost: {st}");
    wait_reachable(&mut a, &mut b, &b_full).await?;
    wait_reachable(&mut b, &mut a, &a_full).await?;
    b.message(&a_full, "after the leader died").await?;
    a.expect_message("after the leader died").await?;

    // A fourth router joins: the slots spread over the three active routers.
    let mut r4 = Node::new("router", 4, &redis, seeds, Some(&grpc[3]))?;
    r4.spawn()?;
    let mut active = rest.clone();
    active.push(4);
    let st = wait_status("router 4 active with a share of the slots", admin, via, |s| balanced(s, &active))
        .await?;
    assert_eq!(st["voters"], serde_json::json!([1, 2, 3, 4]), "the new router votes: {st}");
    routers.push(r4);
    wait_reachable(&mut a, &mut b, &b_full).await?;
    a.message(&b_full, "after the join").await?;
    b.expect_message("after the join").await?;

    // SIGKILL bob's edge: his session ends at his home router and alice hears he left.
    edges[1].kill();
    a.wait_for("bob's unavailable presence", |e| is_presence_from(e, &b_full, Some("unavailable"))).await?;
    drop(b);

    // SIGTERM drains a router: it asks the leader to move its slots, waits until it owns none,
    // and exits cleanly; nothing is left unowned.
    let drained = *active.iter().find(|r| **r != alice_home).context("a router other than alice's")?;
    let grpc_of = |id: u64| grpc[(id - 1) as usize].clone();
    let keep: Vec<u64> = active.iter().copied().filter(|r| *r != drained).collect();
    let via = grpc_of(keep[0]);
    let node = routers.iter_mut().find(|r| r.id == drained).context("the drained router")?;
    let code = node.terminate()?;
    assert!(code.success(), "router {drained} exited with {code} after SIGTERM:\n{}", node.stderr());
    let st = status(admin, &via)?;
    assert_eq!(state_of(&st, drained), "draining", "{st}");
    assert!(balanced(&st, &keep), "its slots moved before it exited: {st}");
    wait_reachable(&mut a, &mut a2_probe(&edges[0], alice_local).await?, &format!("{alice}/probe")).await?;

    // SIGTERM drains an edge: every client hears <system-shutdown/>, the process exits cleanly.
    let code_task = tokio::task::spawn_blocking({
        let pid = edges[0].child.as_ref().map(|c| c.id()).context("edge running")?;
        move || Command::new("kill").arg("-TERM").arg(pid.to_string()).status()
    });
    a.expect_stream_error("system-shutdown").await?;
    code_task.await??;
    let code = edges[0].wait_exit()?;
    assert!(code.success(), "edge exited with {code}:\n{}", edges[0].stderr());
    Ok(())
}

/// A second session of `user` at `edge`, to check reachability of the account's home.
async fn a2_probe(edge: &Node, user: &str) -> Result<Client> {
    let mut c = edge.login(user, "probe").await?;
    c.presence().await?;
    Ok(c)
}

/// One span as the test's collector received it.
#[derive(Clone, Debug)]
struct SeenSpan {
    service: String,
    instance: String,
    name: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    attrs: Vec<(String, String)>,
}

/// A minimal OTLP/gRPC trace collector: keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: std::sync::Arc<std::sync::Mutex<Vec<SeenSpan>>>,
}

mod otlp {
    pub use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    pub use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    pub use opentelemetry_proto::tonic::common::v1::any_value::Value;
    pub use opentelemetry_proto::tonic::common::v1::KeyValue;
}

fn text_of(kv: &otlp::KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(otlp::Value::StringValue(s)) => s.clone(),
        Some(otlp::Value::IntValue(i)) => i.to_string(),
        Some(otlp::Value::BoolValue(b)) => b.to_string(),
        Some(otlp::Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

#[tonic::async_trait]
impl otlp::TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<otlp::ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<otlp::ExportTraceServiceResponse>, tonic::Status> {
        let mut seen = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        for rs in request.into_inner().resource_spans {
            let attr = |key: &str| {
                rs.resource.as_ref().and_then(|r| r.attributes.iter().find(|a| a.key == key)).map(text_of)
            };
            let (service, instance) =
                (attr("service.name").unwrap_or_default(), attr("service.instance.id").unwrap_or_default());
            for span in rs.scope_spans.iter().flat_map(|s| s.spans.iter()) {
                seen.push(SeenSpan {
                    service: service.clone(),
                    instance: instance.clone(),
                    name: span.name.clone(),
                    trace: span.trace_id.clone(),
                    id: span.span_id.clone(),
                    parent: span.parent_span_id.clone(),
                    attrs: span.attributes.iter().map(|a| (a.key.clone(), text_of(a))).collect(),
                });
            }
        }
        Ok(tonic::Response::new(otlp::ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_is_one_trace_across_the_cluster() -> Result<()> {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let svc = otlp::TraceServiceServer::new(collector.clone());
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });

    let redis = RedisServer::start();
    let grpc: Vec<String> = (0..2).map(|_| format!("127.0.0.1:{}", free_port(false))).collect();
    let traced = |mut n: Node| {
        n.env.push(("STARLING_TRACING__OTLP_ENDPOINT".into(), endpoint.clone()));
        n.env.push(("STARLING_TRACING__SAMPLE_RATIO".into(), "1.0".into()));
        // Export within a fraction of a second instead of the SDK's default 5 s.
        n.env.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()));
        n
    };
    let mut nodes = Vec::new();
    for (i, addr) in grpc.iter().enumerate() {
        nodes.push(traced(Node::new("router", i as u64 + 1, &redis, &grpc, Some(addr))?));
    }
    for id in [11, 12] {
        nodes.push(traced(Node::new("edge", id, &redis, &grpc, None)?));
    }
    // Router 2 and edge 12 run single-threaded, as on a one-core pod: the trace must cross
    // both runtimes, and their exporters must flush on the way out.
    for i in [1, 3] {
        nodes[i].env.push(("STARLING_WORKER_THREADS".into(), "1".into()));
    }
    for n in &mut nodes {
        n.spawn()?;
    }
    let admin = &Node::new("edge", 99, &redis, &grpc, None)?;
    wait_status("two routers with balanced slots", admin, &grpc[0], |s| balanced(s, &[1, 2])).await?;
    for e in &nodes[2..] {
        let deadline = Instant::now() + REPAIR;
        while !e.ready().await {
            assert!(Instant::now() < deadline, "edge {} never ready", e.id);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut homes = Vec::new();
    for i in 0..40 {
        let u = format!("t{i}@localhost");
        homes.push((home(admin, &grpc[0], &u)?, u));
    }
    let (h1, alice) = homes.iter().find(|(h, _)| *h == 1).cloned().context("a user on router 1")?;
    let (h2, bob) = homes.iter().find(|(h, _)| *h == 2).cloned().context("a user on router 2")?;
    for u in [&alice, &bob] {
        let local = u.split('@').next().unwrap_or_default();
        admin.cli(&["user", "add", u, "--password", &format!("{local}-pw")])?;
    }
    let mut a = nodes[2].login(alice.split('@').next().unwrap_or_default(), "a").await?;
    let mut b = nodes[3].login(bob.split('@').next().unwrap_or_default(), "b").await?;
    a.message(&format!("{bob}/b"), "traced").await?;
    b.expect_message("traced").await?;

    // The message's trip: edge 11 → router 1 → router 2 → edge 12, one trace, each span the
    // child of the previous hop's.
    let deadline = Instant::now() + REPAIR;
    let chain = loop {
        let spans = collector.spans.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let start = spans.iter().find(|s| {
            s.name == "edge.receive" && s.attrs.iter().any(|(k, v)| k == "stanza" && v == "message")
        });
        if let Some(start) = start {
            let in_trace: Vec<&SeenSpan> = spans.iter().filter(|s| s.trace == start.trace).collect();
            let child_of = |parent: &SeenSpan, name: &str| {
                in_trace.iter().find(|s| s.name == name && s.parent == parent.id).map(|s| (*s).clone())
            };
            let route = child_of(start, "router.route");
            let deliver = route.as_ref().and_then(|r| child_of(r, "router.deliver"));
            let out = deliver.as_ref().and_then(|d| child_of(d, "edge.deliver"));
            if let (Some(route), Some(deliver), Some(out)) = (route, deliver, out) {
                break vec![start.clone(), route, deliver, out];
            }
        }
        if Instant::now() > deadline {
            let names: Vec<(String, String, String)> =
                spans.iter().map(|s| (s.service.clone(), s.instance.clone(), s.name.clone())).collect();
            bail!("no connected trace of the message; spans seen: {names:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let hops: Vec<(&str, &str)> = chain.iter().map(|s| (s.service.as_str(), s.instance.as_str())).collect();
    let (r1, r2) = (h1.to_string(), h2.to_string());
    assert_eq!(
        hops,
        vec![
            ("starling-edge", "11"),
            ("starling-router", r1.as_str()),
            ("starling-router", r2.as_str()),
            ("starling-edge", "12")
        ],
        "one trace across four processes"
    );
    // The single-threaded nodes stop cleanly on SIGTERM, their exporters flushed.
    for i in [3, 1] {
        let st = nodes[i].terminate()?;
        assert!(st.success(), "{} {} exited with {st}: {}", nodes[i].role, nodes[i].id, nodes[i].stderr());
    }
    Ok(())
}
