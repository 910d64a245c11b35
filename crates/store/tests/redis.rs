//! One conformance body run against the embedded backend, a real single `redis-server` and a real
//! three-node Redis Cluster, so the Redis backend is held to exactly the embedded one's behaviour;
//! plus Redis-only checks (reopening, server restarts, the accounts index, key layout).
//!
//! The tests start their own `redis-server` processes on free loopback ports, without persistence,
//! in temporary directories, and kill them on drop. If `redis-server` is missing they fail: the
//! project's test script installs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use starling_store::redis::DEFAULT_PREFIX;
use starling_store::{
    AccountStore, DocumentStore, EmbeddedStore, OfflineStore, RedisStore, RosterStore, Store, StoreError,
};
use starling_testkit::{free_port, require, RedisCluster, RedisServer};
use starling_xmpp::roster::RosterItem;
use starling_xmpp::sasl::{ScramCredentials, ScramHash};
use starling_xmpp::subscription::Subscription;
use starling_xmpp::BareJid;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// The shared body.

fn creds(password: &str) -> Vec<ScramCredentials> {
    vec![
        ScramCredentials::derive(ScramHash::Sha256, password, b"salt-256", 16).unwrap(),
        ScramCredentials::derive(ScramHash::Sha1, password, b"salt-1", 16).unwrap(),
    ]
}

fn item(jid: &str) -> RosterItem {
    RosterItem::new(&BareJid::new(jid).unwrap())
}

/// Everything the storage traits promise, on a fresh (empty) store.
fn conformance(s: &dyn Store) {
    accounts(s);
    removal_clears_everything(s);
    rosters(s);
    offline(s);
    documents(s);
    odd_names_stay_apart(s);
}

fn accounts(s: &dyn Store) {
    assert_eq!(s.list_accounts().unwrap(), Vec::<String>::new());
    assert!(s.credentials("a@d").unwrap().is_none());
    assert!(matches!(s.set_credentials("a@d", creds("pw")), Err(StoreError::NoSuchAccount)));

    s.create_account("c@d", creds("pw-c")).unwrap();
    s.create_account("a@d", creds("pw")).unwrap();
    assert!(matches!(s.create_account("a@d", creds("other")), Err(StoreError::AccountExists)));
    s.create_account("b@d", creds("pw-b")).unwrap();

    // The failed create did not overwrite.
    let stored = s.credentials("a@d").unwrap().unwrap();
    assert_eq!(stored, creds("pw"));
    assert!(stored.iter().all(|c| c.verify_password("pw")));

    s.set_credentials("a@d", creds("new")).unwrap();
    assert!(s.credentials("a@d").unwrap().unwrap().iter().all(|c| c.verify_password("new")));

    assert_eq!(s.list_accounts().unwrap(), vec!["a@d", "b@d", "c@d"]);
    assert!(!s.remove_account("nobody@d").unwrap());
    assert!(s.remove_account("a@d").unwrap());
    assert!(!s.remove_account("a@d").unwrap());
    assert!(s.credentials("a@d").unwrap().is_none());
    assert_eq!(s.list_accounts().unwrap(), vec!["b@d", "c@d"]);
    for u in ["b@d", "c@d"] {
        assert!(s.remove_account(u).unwrap());
    }
    assert_eq!(s.list_accounts().unwrap(), Vec::<String>::new());
}

fn removal_clears_everything(s: &dyn Store) {
    let u = "gone@d";
    s.create_account(u, creds("pw")).unwrap();
    s.put_roster_item(u, &item("x@d")).unwrap();
    s.put_roster_item(u, &item("y@d")).unwrap();
    assert!(s.push_offline(u, b"<message/>", 10).unwrap());
    s.set_document(u, "vcard", Some(b"<vCard/>")).unwrap();
    // A neighbour whose name extends the user's is untouched.
    s.create_account("gone@d.example", creds("pw")).unwrap();
    s.put_roster_item("gone@d.example", &item("x@d")).unwrap();

    assert!(s.remove_account(u).unwrap());
    assert_eq!(s.roster(u).unwrap(), (0, vec![]));
    assert!(s.roster_item(u, "x@d").unwrap().is_none());
    assert_eq!(s.count_offline(u).unwrap(), 0);
    assert!(s.take_offline(u).unwrap().is_empty());
    assert!(s.document(u, "vcard").unwrap().is_none());

    // Recreated, the account starts from nothing, roster version included.
    s.create_account(u, creds("pw2")).unwrap();
    assert_eq!(s.put_roster_item(u, &item("x@d")).unwrap(), 1);

    assert_eq!(s.roster("gone@d.example").unwrap().1, vec![item("x@d")]);
    for u in [u, "gone@d.example"] {
        assert!(s.remove_account(u).unwrap());
    }
}

fn rosters(s: &dyn Store) {
    let u = "r@d";
    assert_eq!(s.roster(u).unwrap(), (0, vec![]));
    assert!(s.roster_item(u, "z@d").unwrap().is_none());
    assert_eq!(s.remove_roster_item(u, "z@d").unwrap(), None);
    assert_eq!(s.roster(u).unwrap().0, 0, "removing nothing bumps nothing");

    let mut z = item("z@d");
    assert_eq!(s.put_roster_item(u, &z).unwrap(), 1);
    z.name = Some("Zed".into());
    z.groups = vec!["Friends".into(), "Wörk".into()];
    z.state.subscription = Subscription::Both;
    z.state.pending_out = true;
    assert_eq!(s.put_roster_item(u, &z).unwrap(), 2, "replacing bumps too");
    let mut b = item("b@d");
    b.hidden = true;
    b.state.pending_in = true;
    assert_eq!(s.put_roster_item(u, &b).unwrap(), 3);
    assert_eq!(s.put_roster_item("ro@d", &item("m@d")).unwrap(), 1, "versions are per user");

    // Items come back sorted by contact and exactly as stored.
    assert_eq!(s.roster(u).unwrap(), (3, vec![b.clone(), z.clone()]));
    assert_eq!(s.roster_item(u, "z@d").unwrap(), Some(z));
    assert_eq!(s.roster_item(u, "b@d").unwrap(), Some(b));

    assert_eq!(s.remove_roster_item(u, "z@d").unwrap(), Some(4));
    assert_eq!(s.remove_roster_item(u, "z@d").unwrap(), None);
    let (ver, items) = s.roster(u).unwrap();
    assert_eq!((ver, items.len()), (4, 1));
    assert_eq!(s.roster("ro@d").unwrap(), (1, vec![item("m@d")]));
}

fn offline(s: &dyn Store) {
    let u = "o@d";
    assert_eq!(s.count_offline(u).unwrap(), 0);
    assert!(s.take_offline(u).unwrap().is_empty());
    assert!(!s.push_offline(u, b"never", 0).unwrap(), "max 0 stores nothing");
    assert!(s.push_offline(u, b"1", 3).unwrap());
    assert!(s.push_offline(u, b"2", 3).unwrap());
    let binary = [0u8, 0xff, b'\n', 0xc3, 0x28];
    assert!(s.push_offline(u, &binary, 3).unwrap());
    assert!(!s.push_offline(u, b"4", 3).unwrap());
    assert!(s.push_offline(u, b"4", 4).unwrap(), "the bound is per call");
    assert_eq!(s.count_offline(u).unwrap(), 4);
    assert!(s.push_offline("o2@d", b"other", 1).unwrap());
    assert_eq!(
        s.take_offline(u).unwrap(),
        vec![b"1".to_vec(), b"2".to_vec(), binary.to_vec(), b"4".to_vec()]
    );
    assert!(s.take_offline(u).unwrap().is_empty());
    assert_eq!(s.count_offline(u).unwrap(), 0);
    assert!(s.push_offline(u, b"after", 1).unwrap());
    assert_eq!(s.take_offline(u).unwrap(), vec![b"after".to_vec()]);
    assert_eq!(s.take_offline("o2@d").unwrap(), vec![b"other".to_vec()]);
}

fn documents(s: &dyn Store) {
    let u = "doc@d";
    let private = "private:{jabber:iq:private}storage";
    assert!(s.document(u, "vcard").unwrap().is_none());
    s.set_document(u, "vcard", None).unwrap();
    s.set_document(u, "vcard", Some(b"<vCard/>")).unwrap();
    s.set_document(u, private, Some(&[0, 1, 2, 0xff])).unwrap();
    assert_eq!(s.document(u, "vcard").unwrap().as_deref(), Some(&b"<vCard/>"[..]));
    s.set_document(u, "vcard", Some(b"<vCard><FN>x</FN></vCard>")).unwrap();
    assert_eq!(s.document(u, "vcard").unwrap().as_deref(), Some(&b"<vCard><FN>x</FN></vCard>"[..]));
    assert!(s.document("doc2@d", "vcard").unwrap().is_none());
    s.set_document(u, "vcard", None).unwrap();
    assert!(s.document(u, "vcard").unwrap().is_none());
    assert_eq!(s.document(u, private).unwrap().as_deref(), Some(&[0, 1, 2, 0xff][..]));
    s.set_document(u, "empty", Some(b"")).unwrap();
    assert_eq!(s.document(u, "empty").unwrap().as_deref(), Some(&b""[..]));
}

/// Local parts may hold braces and percent signs; they must neither collide nor break a backend.
fn odd_names_stay_apart(s: &dyn Store) {
    let users = ["}x{@d", "%7Dx%7B@d", "x@d", "{}@d", "}@d"];
    for (i, u) in users.iter().enumerate() {
        s.create_account(u, creds(&format!("pw{i}"))).unwrap();
        assert_eq!(s.put_roster_item(u, &item("c@d")).unwrap(), 1);
        assert!(s.push_offline(u, u.as_bytes(), 5).unwrap());
        s.set_document(u, "vcard", Some(u.as_bytes())).unwrap();
    }
    let mut sorted: Vec<String> = users.iter().map(|u| u.to_string()).collect();
    sorted.sort();
    assert_eq!(s.list_accounts().unwrap(), sorted);
    for (i, u) in users.iter().enumerate() {
        assert!(s.credentials(u).unwrap().unwrap()[0].verify_password(&format!("pw{i}")));
        assert_eq!(s.take_offline(u).unwrap(), vec![u.as_bytes().to_vec()]);
        assert_eq!(s.document(u, "vcard").unwrap().as_deref(), Some(u.as_bytes()));
        assert!(s.remove_account(u).unwrap());
    }
    assert_eq!(s.list_accounts().unwrap(), Vec::<String>::new());
}

/// The atomicity promises, under contention from several threads (several connections).
fn concurrency(s: &dyn Store) {
    const THREADS: usize = 8;
    const EACH: usize = 5;
    let (wins, pushed, versions) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                scope.spawn(move || {
                    let won = s.create_account("race@d", creds(&format!("pw{t}"))).is_ok();
                    let mut pushed = 0;
                    let mut versions = Vec::new();
                    for i in 0..EACH {
                        if s.push_offline("race@d", format!("{t}-{i}").as_bytes(), 10).unwrap() {
                            pushed += 1;
                        }
                        versions.push(s.put_roster_item("race@d", &item(&format!("c{t}-{i}@d"))).unwrap());
                    }
                    (won, pushed, versions)
                })
            })
            .collect();
        let mut wins = 0;
        let mut pushed = 0;
        let mut versions = Vec::new();
        for h in handles {
            let (w, p, v) = h.join().unwrap();
            wins += usize::from(w);
            pushed += p;
            versions.extend(v);
        }
        (wins, pushed, versions)
    });
    assert_eq!(wins, 1, "exactly one concurrent create wins");
    assert_eq!(pushed, 10, "the offline bound holds under contention");
    assert_eq!(s.count_offline("race@d").unwrap(), 10);
    let mut versions = versions;
    versions.sort_unstable();
    assert_eq!(versions, (1..=(THREADS * EACH) as u64).collect::<Vec<_>>(), "every bump is distinct");
    let (ver, items) = s.roster("race@d").unwrap();
    assert_eq!((ver, items.len()), ((THREADS * EACH) as u64, THREADS * EACH));
    assert_eq!(s.list_accounts().unwrap(), vec!["race@d"]);
    assert!(s.remove_account("race@d").unwrap());
}

// ---------------------------------------------------------------------------------------------
// The embedded backend, held to the same body.

#[test]
fn embedded_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(&dir.path().join("db.redb")).unwrap();
    conformance(&s);
    concurrency(&s);
}

// ---------------------------------------------------------------------------------------------
// Real redis-server processes.

fn connection(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url()).unwrap().get_connection().unwrap()
}

fn open(urls: &[String]) -> RedisStore {
    RedisStore::open(urls, DEFAULT_PREFIX).unwrap()
}

#[test]
fn redis_conformance() {
    let server = RedisServer::start();
    let s = open(&[server.url()]);
    assert!(!s.is_cluster());
    conformance(&s);
    concurrency(&s);
}

#[test]
fn redis_data_survives_reopening_and_prefixes_isolate() {
    let server = RedisServer::start();
    {
        let s = open(&[server.url()]);
        s.create_account("a@d", creds("pw")).unwrap();
        s.put_roster_item("a@d", &item("b@d")).unwrap();
        assert!(s.push_offline("a@d", b"<message/>", 10).unwrap());
        s.set_document("a@d", "vcard", Some(b"<vCard/>")).unwrap();
    }
    let s = open(&[server.url()]);
    assert!(s.credentials("a@d").unwrap().unwrap()[0].verify_password("pw"));
    assert_eq!(s.list_accounts().unwrap(), vec!["a@d"]);
    assert_eq!(s.roster("a@d").unwrap(), (1, vec![item("b@d")]));
    assert_eq!(s.take_offline("a@d").unwrap(), vec![b"<message/>".to_vec()]);
    assert_eq!(s.document("a@d", "vcard").unwrap().as_deref(), Some(&b"<vCard/>"[..]));

    // Another prefix on the same database is another, empty, store.
    let other = RedisStore::open(&[server.url()], "other:").unwrap();
    assert_eq!(other.prefix(), "other:");
    assert!(other.list_accounts().unwrap().is_empty());
    assert!(other.credentials("a@d").unwrap().is_none());
    other.create_account("a@d", creds("x")).unwrap();
    assert!(other.remove_account("a@d").unwrap());
    assert!(s.credentials("a@d").unwrap().is_some());
}

#[test]
fn redis_key_layout_is_the_documented_one() {
    let server = RedisServer::start();
    let s = open(&[server.url()]);
    let u = "k}{%@d";
    s.create_account(u, creds("pw")).unwrap();
    s.put_roster_item(u, &item("b@d")).unwrap();
    assert!(s.push_offline(u, b"m", 10).unwrap());
    s.set_document(u, "vcard", Some(b"v")).unwrap();
    let mut raw = connection(&server);
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut raw).unwrap();
    keys.sort();
    let t = "starling:{k%7D%7B%25@d}";
    assert_eq!(
        keys,
        vec![
            "starling:accounts".to_string(),
            format!("{t}:acct"),
            format!("{t}:doc"),
            format!("{t}:offline"),
            format!("{t}:roster"),
            format!("{t}:rosterver"),
        ]
    );
    let acct: Vec<u8> = redis::cmd("GET").arg(format!("{t}:acct")).query(&mut raw).unwrap();
    assert_eq!(starling_store::codec::decode_credentials(&acct).unwrap(), creds("pw"));
    assert_eq!(acct[0], 1, "the binary form of starling_store::codec");
    let it: Vec<u8> = redis::cmd("HGET").arg(format!("{t}:roster")).arg("b@d").query(&mut raw).unwrap();
    assert_eq!(serde_json::from_slice::<RosterItem>(&it).unwrap(), item("b@d"));
    let ver: u64 = redis::cmd("GET").arg(format!("{t}:rosterver")).query(&mut raw).unwrap();
    assert_eq!(ver, 1);
    assert!(s.remove_account(u).unwrap());
    let left: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut raw).unwrap();
    assert!(left.is_empty(), "remove_account left {left:?}");
}

#[test]
fn redis_accounts_index_is_repaired() {
    let server = RedisServer::start();
    let s = open(&[server.url()]);
    s.create_account("real@d", creds("pw")).unwrap();
    let mut raw = connection(&server);
    // An entry left by a create that died before writing the account.
    let _: i64 = redis::cmd("SADD").arg("starling:accounts").arg("ghost@d").query(&mut raw).unwrap();
    assert_eq!(s.list_accounts().unwrap(), vec!["real@d"]);
    let mut members: Vec<String> = redis::cmd("SMEMBERS").arg("starling:accounts").query(&mut raw).unwrap();
    members.sort();
    assert_eq!(members, vec!["real@d"]);
    // A ghost cannot block creating the account for real.
    let _: i64 = redis::cmd("SADD").arg("starling:accounts").arg("ghost@d").query(&mut raw).unwrap();
    s.create_account("ghost@d", creds("pw")).unwrap();
    assert_eq!(s.list_accounts().unwrap(), vec!["ghost@d", "real@d"]);
}

#[test]
fn redis_reconnects_after_a_server_restart() {
    let server = RedisServer::start();
    let port = server.port;
    let s = open(&[server.url()]);
    s.create_account("a@d", creds("pw")).unwrap();
    drop(server);

    // Down: calls fail with a backend error naming the operation, and do not hang.
    let started = Instant::now();
    match s.count_offline("a@d") {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("redis count_offline"), "{msg}"),
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(15));

    // Back (empty: no persistence): the next calls reconnect by themselves.
    let back = RedisServer::start_with(false, |attempt| (attempt == 0).then_some(port));
    assert_eq!(back.port, port, "could not restart on the same port");
    assert!(s.credentials("a@d").unwrap().is_none());
    assert!(s.push_offline("a@d", b"m", 10).unwrap());
    s.create_account("a@d", creds("pw")).unwrap();
    assert_eq!(s.list_accounts().unwrap(), vec!["a@d"]);
}

#[test]
fn redis_stale_pooled_connections_do_not_fail_reads() {
    let server = RedisServer::start();
    let port = server.port;
    let s = open(&[server.url()]);
    s.create_account("a@d", creds("pw")).unwrap();
    drop(server);
    let back = RedisServer::start_with(false, |attempt| (attempt == 0).then_some(port));
    assert_eq!(back.port, port, "could not restart on the same port");
    // The pooled connection is dead; a read retries on a fresh one instead of failing.
    assert!(s.credentials("a@d").unwrap().is_none());
}

#[test]
fn redis_unreachable_server_is_a_backend_error() {
    require("redis-server");
    let port = free_port(false);
    match RedisStore::open(&[format!("redis://127.0.0.1:{port}/0")], DEFAULT_PREFIX) {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("redis connect"), "{msg}"),
        other => panic!("expected a backend error, got {other:?}"),
    }
    match RedisStore::open(&["not a url".to_string()], DEFAULT_PREFIX) {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("bad server URL"), "{msg}"),
        other => panic!("expected a backend error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// A real three-node Redis Cluster.

type Cluster = RedisCluster;

#[test]
fn redis_cluster_conformance() {
    let cluster = Cluster::start();
    let s = open(&cluster.urls());
    assert!(s.is_cluster());
    conformance(&s);
    concurrency(&s);

    // Users spread over the nodes, and one seed node with the flag finds them all.
    let users: Vec<String> = (0..30).map(|i| format!("user{i}@d")).collect();
    for u in &users {
        s.create_account(u, creds("pw")).unwrap();
        assert!(s.push_offline(u, b"m", 5).unwrap());
        s.put_roster_item(u, &item("c@d")).unwrap();
    }
    let holding = cluster
        .nodes
        .iter()
        .filter(|n| redis::cmd("DBSIZE").query::<i64>(&mut connection(n)).unwrap() > 0)
        .count();
    assert!(holding >= 2, "all keys landed on {holding} node(s)");
    // All of one user's keys share a slot, whatever the name.
    let mut raw = connection(&cluster.nodes[0]);
    for u in ["user0@d", "}x{@d", "{}@d", "%@d"] {
        let t = u.replace('%', "%25").replace('{', "%7B").replace('}', "%7D");
        let slots: Vec<i64> = ["acct", "doc", "offline", "roster", "rosterver"]
            .iter()
            .map(|k| {
                redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(format!("starling:{{{t}}}:{k}"))
                    .query(&mut raw)
                    .unwrap()
            })
            .collect();
        assert!(slots.windows(2).all(|w| w[0] == w[1]), "{u}: {slots:?}");
    }

    let one = open(&[format!("{}/?cluster=true", cluster.urls()[1])]);
    assert!(one.is_cluster());
    let mut expected = users.clone();
    expected.sort();
    assert_eq!(one.list_accounts().unwrap(), expected);
    for u in &users {
        assert_eq!(one.roster(u).unwrap(), (1, vec![item("c@d")]));
        assert_eq!(one.take_offline(u).unwrap(), vec![b"m".to_vec()]);
        assert!(one.remove_account(u).unwrap());
    }
    assert!(s.list_accounts().unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// A Redis Cluster with replicas whose masters fail over.

/// What every user was given before the failovers, checked (and extended) after each.
fn check_users(s: &RedisStore, users: &[String], round: u64, what: &str) {
    for u in users {
        let stored = s.credentials(u).unwrap_or_else(|e| panic!("{what}: credentials of {u}: {e}"));
        assert!(stored.expect("the account survives")[0].verify_password("pw"), "{what}: {u}");
        let (ver, items) = s.roster(u).unwrap_or_else(|e| panic!("{what}: roster of {u}: {e}"));
        assert_eq!(ver, round, "{what}: {u}'s roster version");
        assert_eq!(items.len() as u64, round, "{what}: {u}'s roster");
        assert_eq!(s.count_offline(u).unwrap(), round as usize, "{what}: {u}'s offline messages");
        // And writes work: one more of each.
        assert_eq!(s.put_roster_item(u, &item(&format!("c{round}@d"))).unwrap(), round + 1, "{what}: {u}");
        assert!(s.push_offline(u, format!("m{round}").as_bytes(), 10).unwrap(), "{what}: {u}");
    }
}

#[test]
fn redis_cluster_store_survives_failovers() {
    let mut cluster = Cluster::start_with_replicas();
    let s = open(&cluster.urls());
    // Users on every master.
    let owners = cluster.owners();
    let mut users: Vec<(String, usize)> = Vec::new();
    for i in 0..10_000 {
        let u = format!("user{i}@d");
        let owner = owners.of(starling_testkit::key_slot(format!("starling:{{{u}}}:acct").as_bytes()));
        if users.iter().filter(|(_, o)| *o == owner).count() < 3 {
            users.push((u, owner));
        }
        if users.len() == 9 {
            break;
        }
    }
    assert_eq!(users.len(), 9, "users do not spread over three masters");
    let names: Vec<String> = users.iter().map(|(u, _)| u.clone()).collect();
    for u in &names {
        s.create_account(u, creds("pw")).unwrap();
        s.put_roster_item(u, &item("c0@d")).unwrap();
        assert!(s.push_offline(u, b"m0", 10).unwrap());
    }

    // Graceful: the first shard's replica takes over.
    let first = users[0].1;
    let promoted = cluster.replica_of(first);
    cluster.wait_replicated(first);
    let started = Instant::now();
    cluster.failover(promoted);
    eprintln!("graceful failover agreed after {:?}", started.elapsed());
    check_users(&s, &names, 1, "after a graceful failover");

    // Crash: another shard's master is killed and its replica promoted. Meanwhile calls on that
    // shard fail or succeed, but within the store's bound: nothing hangs.
    let victim = users.iter().map(|(_, o)| *o).find(|&o| o != first && o != promoted).expect("another shard");
    let heir = cluster.replica_of(victim);
    cluster.wait_replicated(victim);
    let on_victim: Vec<&String> = users.iter().filter(|(_, o)| *o == victim).map(|(u, _)| u).collect();
    let started = Instant::now();
    cluster.kill(victim);
    let call = Instant::now();
    let during = s.count_offline(on_victim[0]);
    assert!(call.elapsed() < Duration::from_secs(15), "a call during the failover took {:?}", call.elapsed());
    match &during {
        Ok(n) => assert_eq!(*n, 2),
        Err(StoreError::Backend(msg)) => assert!(msg.contains("redis count_offline"), "{msg}"),
        Err(e) => panic!("unexpected error during the failover: {e}"),
    }
    cluster.wait_promoted(heir);
    eprintln!("killed master replaced after {:?} (call during it: {during:?})", started.elapsed());
    check_users(&s, &names, 2, "after a master was killed");
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(s.list_accounts().unwrap(), sorted);

    // A store opened afterwards, from the same seeds (one of them dead), works as well.
    let fresh = open(&cluster.urls());
    for u in &names {
        assert_eq!(fresh.take_offline(u).unwrap().len(), 3, "{u}");
    }
}
