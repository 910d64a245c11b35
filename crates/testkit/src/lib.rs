//! Test support shared by the suites (dev-dependency only): free loopback ports and real
//! `redis-server` processes, started without persistence in temporary directories and killed
//! on drop. A missing `redis-server` fails the test with the command that installs it.
//!
//! - [`RedisServer`]: one server (restartable, optionally durable).
//! - [`RedisCluster`]: a real Redis Cluster of three masters, optionally each with a replica,
//!   with the operations the failure tests need: slot migration, graceful failover
//!   (`CLUSTER FAILOVER`) and a master killed so that its replica is promoted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// Panics with an install hint unless `bin --version` runs.
pub fn require(bin: &str) {
    match Command::new(bin).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(st) if st.success() => {}
        other => panic!(
            "`{bin} --version` failed ({other:?}): this test needs a real {bin} on PATH \
             (apt-get install redis-server; scripts/test.sh installs it)"
        ),
    }
}

/// A loopback port that is free now (and, with `with_bus`, whose Redis Cluster bus port
/// +10000 is too). Spread by process so parallel test processes rarely probe the same ports.
///
/// Every port handed out (bus ports included) lies below 32768, where Linux's ephemeral range
/// starts: the kernel never gives one to an outgoing connection between the probe here and
/// the process that binds it later. (Ports inside that range once failed a cluster test with
/// "address already in use".)
pub fn free_port(with_bus: bool) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    const LOW: u16 = 10_000;
    let span: u16 = if with_bus { 12_000 } else { 22_000 };
    let start = (std::process::id() % 2_000) as u16 * 10;
    for _ in 0..5_000 {
        let p = LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed) % span) % span;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(p) && (!with_bus || free(p + 10_000)) {
            return p;
        }
    }
    panic!("no free loopback port found");
}

/// One `redis-server`, killed (and its directory removed) on drop.
pub struct RedisServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    /// Whether it keeps an append-only file (data survives [`RedisServer::restart`]).
    durable: bool,
    /// `cluster-node-timeout` in milliseconds when it runs in cluster mode: how long a master
    /// may be unreachable before the cluster fails it over.
    node_timeout_ms: u32,
}

/// `cluster-node-timeout` of [`RedisServer::start_with`]'s cluster nodes.
const DEFAULT_NODE_TIMEOUT_MS: u32 = 5_000;

impl RedisServer {
    /// A single server on a free port.
    pub fn start() -> RedisServer {
        Self::start_with(false, |_| None)
    }

    /// A single server whose data survives [`RedisServer::restart`] (append-only file, fsync
    /// on every write).
    pub fn start_durable() -> RedisServer {
        require("redis-server");
        let mut dir = tempfile::tempdir().unwrap();
        let mut last = String::new();
        for _ in 0..5 {
            match Self::spawn_in(dir, free_port(false), None, true) {
                Ok(s) => return s,
                Err((d, log)) => {
                    dir = d;
                    last = log;
                }
            }
        }
        panic!("redis-server would not start; last log:\n{last}");
    }

    /// Kill the server (SIGKILL) and start it again on the same port and directory.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let cluster = self.is_cluster().then_some(self.node_timeout_ms);
        match Self::spawn_in(dir, self.port, cluster, self.durable) {
            Ok(s) => *self = s,
            Err((_, log)) => panic!("redis-server did not come back on port {}:\n{log}", self.port),
        }
    }

    /// Starts a server on a free port (or `port(attempt)`'s answer), retrying on another port if
    /// it dies at startup (another process took the port in between). `cluster` enables Redis
    /// Cluster mode.
    pub fn start_with(cluster: bool, port: impl Fn(usize) -> Option<u16>) -> RedisServer {
        Self::start_node(cluster.then_some(DEFAULT_NODE_TIMEOUT_MS), port)
    }

    /// [`RedisServer::start_with`], in cluster mode with `cluster-node-timeout` `Some(ms)`.
    fn start_node(cluster: Option<u32>, port: impl Fn(usize) -> Option<u16>) -> RedisServer {
        require("redis-server");
        let mut last = String::new();
        for attempt in 0..5 {
            let p = port(attempt).unwrap_or_else(|| free_port(cluster.is_some()));
            match Self::spawn_in(tempfile::tempdir().unwrap(), p, cluster, false) {
                Ok(s) => return s,
                Err((_, log)) => last = log,
            }
        }
        panic!("redis-server would not start; last log:\n{last}");
    }

    /// Start a server in `dir` (in cluster mode with `cluster-node-timeout` `Some(ms)`); on
    /// failure the directory comes back with the log.
    fn spawn_in(
        dir: tempfile::TempDir,
        port: u16,
        cluster: Option<u32>,
        durable: bool,
    ) -> Result<RedisServer, (tempfile::TempDir, String)> {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--save", "", "--bind", "127.0.0.1"])
            .args(["--appendonly", if durable { "yes" } else { "no" }])
            .args(["--appendfsync", "always"])
            .args(["--port", &port.to_string()])
            .arg("--dir")
            .arg(dir.path())
            .args(["--logfile", "redis.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(timeout) = cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-config-file", &format!("nodes-{port}.conf")]);
            cmd.args(["--cluster-node-timeout", &timeout.to_string()]);
        }
        let child = cmd.spawn().expect("spawn redis-server");
        let mut server = RedisServer { child, port, dir, durable, node_timeout_ms: cluster.unwrap_or(0) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = format!("exited with {status}:\n{}", server.log());
                return Err((server.take_dir(), log));
            }
            if server.ping() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                let log = format!("not answering PING after 10 s:\n{}", server.log());
                let _ = server.child.kill();
                return Err((server.take_dir(), log));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn is_cluster(&self) -> bool {
        self.node_timeout_ms > 0
    }

    /// Kill the server at once (SIGKILL), as a crash would; it stays down.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn take_dir(&mut self) -> tempfile::TempDir {
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// Whether the server answers `PING` now.
    pub fn ping(&self) -> bool {
        let Ok(mut s) =
            TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_millis(200))
        else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// `redis://127.0.0.1:<port>/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `redis-cli -p <port> <args>`: its stdout, trimmed. Panics if it cannot run.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A real Redis Cluster on loopback, built with `redis-cli --cluster create`: three masters,
/// optionally each with a replica; every node is killed on drop.
pub struct RedisCluster {
    /// Every node, in the order they were started (the masters first as created; roles change
    /// with failovers: ask [`RedisCluster::owner_of`] and [`RedisCluster::replica_of`]).
    pub nodes: Vec<RedisServer>,
    /// Nodes stopped by [`RedisCluster::kill`]: nobody asks them anything any more.
    dead: Vec<bool>,
}

/// The hash slot of `key` by the Redis Cluster specification: CRC16 (XMODEM) of the key, or of
/// its hash tag (the first `{...}` with something inside), modulo 16384. Computed here so that a
/// test can place thousands of keys without asking a server about each.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    let mut crc: u16 = 0;
    for &b in hashed {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16_384
}

/// A snapshot of which node serves each slot ([`RedisCluster::owners`]).
pub struct SlotOwners {
    /// (first slot, last slot, node index).
    ranges: Vec<(u16, u16, usize)>,
}

impl SlotOwners {
    /// The node serving `slot`.
    pub fn of(&self, slot: u16) -> usize {
        match self.ranges.iter().find(|&&(a, b, _)| a <= slot && slot <= b) {
            Some(&(_, _, node)) => node,
            None => panic!("nobody serves slot {slot}: {:?}", self.ranges),
        }
    }
}

/// One line of `CLUSTER NODES`.
struct NodeLine {
    port: u16,
    flags: Vec<String>,
    /// The master's id for a replica, `-` for a master.
    master: String,
    /// Slot ranges served (inclusive), importing/migrating markers left out.
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    fn parse(line: &str) -> Option<NodeLine> {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            return None;
        }
        let port = f[1].split([':', '@']).nth(1)?.parse().ok()?;
        let slots = f[8..]
            .iter()
            .filter(|r| !r.starts_with('['))
            .filter_map(|r| match r.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => r.parse().ok().map(|s| (s, s)),
            })
            .collect();
        Some(NodeLine {
            port,
            flags: f[2].split(',').map(str::to_owned).collect(),
            master: f[3].to_owned(),
            slots,
        })
    }

    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// Polls `check` every 50 ms until it returns `None`; panics with its last answer (what is
/// still wrong) after `limit`.
fn wait_for(limit: Duration, mut check: impl FnMut() -> Option<String>) {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            None => return,
            Some(wrong) => assert!(Instant::now() < deadline, "still, after {limit:?}: {wrong}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl RedisCluster {
    /// Three masters, no replicas; returns once every node reports `cluster_state:ok`.
    pub fn start() -> RedisCluster {
        Self::create(0, DEFAULT_NODE_TIMEOUT_MS)
    }

    /// Three masters, each with one replica, and a `cluster-node-timeout` of 1 s, so that a
    /// killed master's replica is promoted within a few seconds. Returns once the cluster is ok
    /// on every node and every replica is in sync with its master.
    pub fn start_with_replicas() -> RedisCluster {
        Self::create(1, 1_000)
    }

    fn create(replicas: usize, node_timeout_ms: u32) -> RedisCluster {
        require("redis-cli");
        let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
            .map(|_| RedisServer::start_node(Some(node_timeout_ms), |_| None))
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let dead = vec![false; nodes.len()];
        let cluster = RedisCluster { nodes, dead };
        cluster.wait_healthy(Duration::from_secs(60));
        cluster
    }

    /// Waits until every live node reports `cluster_state:ok`, all of them agree on which node
    /// serves each slot, and every replica's link to its master is up.
    pub fn wait_healthy(&self, limit: Duration) {
        wait_for(limit, || {
            let mut owners: Option<Vec<(u16, u16, u16)>> = None;
            for i in self.live() {
                let port = self.nodes[i].port;
                let info = redis_cli(port, &["CLUSTER", "INFO"]);
                if !info.contains("cluster_state:ok") {
                    return Some(format!("node {port}: {info}\n{}", self.nodes[i].log()));
                }
                let view = self.view(i);
                let mut served: Vec<(u16, u16, u16)> = view
                    .iter()
                    .filter(|l| l.has("master") && !l.has("fail"))
                    .flat_map(|l| l.slots.iter().map(|&(a, b)| (a, b, l.port)))
                    .collect();
                served.sort_unstable();
                match &owners {
                    Some(o) if *o != served => {
                        return Some(format!("node {port} sees other owners: {served:?}"))
                    }
                    _ => owners = Some(served),
                }
                let Some(me) = view.iter().find(|l| l.has("myself")) else {
                    return Some(format!("node {port}: no `myself` line"));
                };
                if me.has("slave") {
                    let repl = redis_cli(port, &["INFO", "replication"]);
                    if !repl.contains("master_link_status:up") {
                        return Some(format!("replica {port} not in sync: {repl}"));
                    }
                }
            }
            None
        });
    }

    /// Seed URLs of every node started (killed ones included: clients must cope).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("redis://127.0.0.1:{}", n.port)).collect()
    }

    /// The nodes not killed.
    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| !self.dead[i])
    }

    /// The port of some live node, to ask about the cluster.
    fn any_port(&self) -> u16 {
        self.live().map(|i| self.nodes[i].port).next().expect("a live node")
    }

    /// Node `i`'s `CLUSTER NODES` view.
    fn view(&self, i: usize) -> Vec<NodeLine> {
        redis_cli(self.nodes[i].port, &["CLUSTER", "NODES"]).lines().filter_map(NodeLine::parse).collect()
    }

    fn index_of(&self, port: u16) -> usize {
        self.nodes.iter().position(|n| n.port == port).expect("a known node")
    }

    /// The cluster node id of node `i`.
    pub fn node_id(&self, i: usize) -> String {
        redis_cli(self.nodes[i].port, &["CLUSTER", "MYID"])
    }

    /// The hash slot of `key` (or of a channel name), as the server computes it.
    pub fn slot_of(&self, key: &str) -> u16 {
        redis_cli(self.any_port(), &["CLUSTER", "KEYSLOT", key]).parse().expect("a slot number")
    }

    /// Which node serves `slot` now, as the first live node sees it.
    pub fn owner_of(&self, slot: u16) -> usize {
        self.owners().of(slot)
    }

    /// Which node serves every slot now, as the first live node sees it: one `CLUSTER NODES`
    /// for any number of look-ups.
    pub fn owners(&self) -> SlotOwners {
        let i = self.live().next().expect("a live node");
        let ranges = self
            .view(i)
            .iter()
            .filter(|l| l.has("master") && !l.has("fail"))
            .flat_map(|l| {
                let node = self.index_of(l.port);
                l.slots.iter().map(move |&(a, b)| (a, b, node))
            })
            .collect();
        SlotOwners { ranges }
    }

    /// The replica of master `master`.
    pub fn replica_of(&self, master: usize) -> usize {
        let id = self.node_id(master);
        let view = self.view(master);
        match view.iter().find(|l| l.has("slave") && l.master == id) {
            Some(l) => self.index_of(l.port),
            None => panic!("node {} has no replica", self.nodes[master].port),
        }
    }

    /// Kill node `i` (SIGKILL), as a crash would.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
        self.dead[i] = true;
    }

    /// Waits until master `master`'s replica has every write the master has acknowledged, so a
    /// failover loses nothing.
    pub fn wait_replicated(&self, master: usize) {
        let port = self.nodes[master].port;
        wait_for(Duration::from_secs(20), || {
            let info = redis_cli(port, &["INFO", "replication"]);
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_default()
            };
            let master_offset: u64 = field("master_repl_offset:").parse().unwrap_or(u64::MAX);
            let replica_offset: u64 = field("slave0:")
                .split(',')
                .find_map(|kv| kv.strip_prefix("offset="))
                .and_then(|o| o.parse().ok())
                .unwrap_or(0);
            (replica_offset < master_offset).then(|| format!("replica behind: {info}"))
        });
    }

    /// Graceful failover: `CLUSTER FAILOVER` on replica `replica`, which becomes the master of
    /// its shard once it has caught up; returns when the whole cluster agrees.
    pub fn failover(&self, replica: usize) {
        assert_eq!(redis_cli(self.nodes[replica].port, &["CLUSTER", "FAILOVER"]), "OK");
        self.wait_promoted(replica);
    }

    /// Waits until node `node` is a master serving slots and the cluster is healthy again
    /// (after [`RedisCluster::failover`], or after its master was killed).
    pub fn wait_promoted(&self, node: usize) {
        let port = self.nodes[node].port;
        wait_for(Duration::from_secs(30), || {
            let role = redis_cli(port, &["ROLE"]);
            if !role.starts_with("master") {
                return Some(format!("node {port} is not a master yet: {role}"));
            }
            match self.view(node).into_iter().find(|l| l.has("myself")) {
                Some(me) if !me.slots.is_empty() => None,
                _ => Some(format!("node {port} serves no slot yet")),
            }
        });
        self.wait_healthy(Duration::from_secs(30));
    }

    /// Migrate `slot` with its keys to master `to`, the way `redis-cli --cluster reshard` does:
    /// IMPORTING/MIGRATING, MIGRATE every key, then SETSLOT NODE on every master.
    pub fn migrate_slot(&self, slot: u16, to: usize) {
        let from = self.owner_of(slot);
        assert_ne!(from, to, "slot {slot} is already on node {to}");
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let s = slot.to_string();
        let (fp, tp) = (self.nodes[from].port, self.nodes[to].port);
        assert_eq!(redis_cli(tp, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]), "OK");
        assert_eq!(redis_cli(fp, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]), "OK");
        loop {
            let keys = redis_cli(fp, &["CLUSTER", "GETKEYSINSLOT", &s, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let tp_s = tp.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", tp_s.as_str(), "", "0", "5000", "KEYS"];
            args.extend(keys);
            assert_eq!(redis_cli(fp, &args), "OK");
        }
        let masters: Vec<usize> = self
            .live()
            .filter(|&i| self.view(i).iter().any(|l| l.has("myself") && l.has("master")))
            .collect();
        for i in masters {
            assert_eq!(redis_cli(self.nodes[i].port, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]), "OK");
        }
        assert_eq!(self.owner_of(slot), to);
    }
}

#[cfg(test)]
mod tests {
    use super::key_slot;

    #[test]
    fn key_slots_follow_the_cluster_specification() {
        // The specification's check value: CRC16/XMODEM("123456789") = 0x31C3.
        assert_eq!(key_slot(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"), "an empty tag hashes the whole key");
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }
}
