//! Test support shared by the suites (dev-dependency only): free loopback ports and real
//! `redis-server` processes, started without persistence in temporary directories and killed
//! on drop. A missing `redis-server` fails the test with the command that installs it.

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
pub fn free_port(with_bus: bool) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 2_000) as u16 * 10;
    for _ in 0..5_000 {
        let p = base + NEXT.fetch_add(1, Ordering::Relaxed) % 25_000;
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
}

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
            match Self::spawn_in(dir, free_port(false), false, true) {
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
        match Self::spawn_in(dir, self.port, false, self.durable) {
            Ok(s) => *self = s,
            Err((_, log)) => panic!("redis-server did not come back on port {}:\n{log}", self.port),
        }
    }

    /// Starts a server on a free port (or `port(attempt)`'s answer), retrying on another port if
    /// it dies at startup (another process took the port in between). `cluster` enables Redis
    /// Cluster mode.
    pub fn start_with(cluster: bool, port: impl Fn(usize) -> Option<u16>) -> RedisServer {
        require("redis-server");
        let mut last = String::new();
        for attempt in 0..5 {
            let p = port(attempt).unwrap_or_else(|| free_port(cluster));
            match Self::spawn(p, cluster) {
                Ok(s) => return s,
                Err(log) => last = log,
            }
        }
        panic!("redis-server would not start; last log:\n{last}");
    }

    fn spawn(port: u16, cluster: bool) -> Result<RedisServer, String> {
        Self::spawn_in(tempfile::tempdir().unwrap(), port, cluster, false).map_err(|(_, log)| log)
    }

    /// Start a server in `dir`; on failure the directory comes back with the log.
    fn spawn_in(
        dir: tempfile::TempDir,
        port: u16,
        cluster: bool,
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
        if cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-config-file", &format!("nodes-{port}.conf")]);
            cmd.args(["--cluster-node-timeout", "5000"]);
        }
        let child = cmd.spawn().expect("spawn redis-server");
        let mut server = RedisServer { child, port, dir, durable };
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

/// A real Redis Cluster of three masters (no replicas) on loopback, built with
/// `redis-cli --cluster create`; every node is killed on drop.
pub struct RedisCluster {
    /// The masters.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Start three nodes and join them; returns once every node reports `cluster_state:ok`.
    pub fn start() -> RedisCluster {
        require("redis-cli");
        let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_with(true, |_| None)).collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(60);
        for node in &cluster.nodes {
            loop {
                let info = redis_cli(node.port, &["CLUSTER", "INFO"]);
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster not ok after 60 s:\n{info}\n{}", node.log());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// Seed URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("redis://127.0.0.1:{}", n.port)).collect()
    }

    /// The cluster node id of node `i`.
    pub fn node_id(&self, i: usize) -> String {
        redis_cli(self.nodes[i].port, &["CLUSTER", "MYID"])
    }

    /// The hash slot of `key` (or of a channel name).
    pub fn slot_of(&self, key: &str) -> u16 {
        redis_cli(self.nodes[0].port, &["CLUSTER", "KEYSLOT", key]).parse().expect("a slot number")
    }

    /// Which node serves `slot` now (by its own `CLUSTER NODES` view of node 0).
    pub fn owner_of(&self, slot: u16) -> usize {
        let nodes = redis_cli(self.nodes[0].port, &["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let serves = fields.iter().skip(8).any(|r| match r.split_once('-') {
                Some((a, b)) => {
                    a.parse::<u16>().is_ok_and(|a| a <= slot) && b.parse::<u16>().is_ok_and(|b| slot <= b)
                }
                None => r.parse::<u16>().is_ok_and(|s| s == slot),
            });
            if serves {
                let port: u16 =
                    fields[1].split([':', '@']).nth(1).and_then(|p| p.parse().ok()).expect("a port");
                return self.nodes.iter().position(|n| n.port == port).expect("a known node");
            }
        }
        panic!("nobody serves slot {slot}:\n{nodes}");
    }

    /// Migrate `slot` with its keys to node `to`, the way `redis-cli --cluster reshard` does:
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
        for n in &self.nodes {
            assert_eq!(redis_cli(n.port, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]), "OK");
        }
        assert_eq!(self.owner_of(slot), to);
    }
}
