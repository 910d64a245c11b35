//! The Redis presence bus against real `redis-server` processes: a single server (restarted
//! mid-test), a three-master Redis Cluster with a slot migrated under a live subscription, and
//! a Redis Cluster with replicas whose masters fail over (gracefully, and killed so that a
//! replica is promoted). Two buses stand for two routers; every wait is on a condition, bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use starling_presence::{channel_of, BusConfig, RedisBus};
use starling_router::PresenceBus;
use starling_testkit::{key_slot, RedisCluster, RedisServer};
use starling_xml::Element;
use starling_xmpp::{ns, FullJid};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

fn bus(urls: Vec<String>, node_id: u64) -> (Arc<RedisBus>, UnboundedReceiver<Element>) {
    RedisBus::start(BusConfig { urls, prefix: "starling:".into(), node_id, ttl: Duration::from_secs(30) })
        .unwrap()
}

fn available(from: &str, status: &str) -> (FullJid, Element) {
    let jid = FullJid::new(from).unwrap();
    let p = Element::new("presence", ns::CLIENT)
        .with_attr("from", from)
        .with_child(Element::new("status", ns::CLIENT).with_text(status));
    (jid, p)
}

fn status_of(p: &Element) -> Option<String> {
    p.get_child("status", ns::CLIENT).map(|s| s.text())
}

/// Publish from `from_bus` (again and again: a subscription in flight may miss the first
/// ones) until `inbox` receives a presence with `status`.
async fn publish_until_received(
    from_bus: &RedisBus,
    inbox: &mut UnboundedReceiver<Element>,
    from: &str,
    status: &str,
) -> Element {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (jid, p) = available(from, status);
    loop {
        from_bus.publish(&jid, &p);
        let wait = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(Some(got)) = tokio::time::timeout_at(wait, inbox.recv()).await {
            if status_of(&got).as_deref() == Some(status) {
                return got;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{status:?} never arrived");
    }
}

/// Ask `bus` for `contact`'s last presences until `pred` holds.
async fn current_until(bus: &RedisBus, contact: &str, what: &str, pred: impl Fn(&[Element]) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = bus.current(vec![contact.to_owned()]).await;
        if pred(&now) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: last presences {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_crosses_routers_and_survives_a_redis_restart() {
    let server = RedisServer::start();
    let port = server.port;
    let (one, mut inbox_one) = bus(vec![server.url()], 1);
    let (two, mut inbox_two) = bus(vec![server.url()], 2);
    two.watch("alice@localhost");

    // Published once by router 1, received by router 2; router 1 ignores its own message.
    let got = publish_until_received(&one, &mut inbox_two, "alice@localhost/phone", "first").await;
    assert_eq!(got.attr("from"), Some("alice@localhost/phone"));
    assert!(inbox_one.try_recv().is_err(), "a router does not hear itself");

    // The last presence is cached: a login on router 2 reads it with one call.
    current_until(&two, "alice@localhost", "alice's cached presence", |p| {
        p.len() == 1 && status_of(&p[0]).as_deref() == Some("first")
    })
    .await;
    // Unavailable clears the resource from the cache.
    let gone = Element::new("presence", ns::CLIENT)
        .with_attr("from", "alice@localhost/phone")
        .with_attr("type", "unavailable");
    one.publish(&FullJid::new("alice@localhost/phone").unwrap(), &gone);
    current_until(&two, "alice@localhost", "the cache cleared", |p| p.is_empty()).await;

    // After unwatch, nothing arrives.
    two.unwatch("alice@localhost");
    tokio::time::sleep(Duration::from_millis(200)).await;
    while inbox_two.try_recv().is_ok() {}
    let (jid, p) = available("alice@localhost/phone", "unwatched");
    one.publish(&jid, &p);
    two.watch("bob@localhost");
    publish_until_received(&one, &mut inbox_two, "bob@localhost/pc", "bob here").await;
    while let Ok(p) = inbox_two.try_recv() {
        assert_ne!(status_of(&p).as_deref(), Some("unwatched"), "an unwatched channel delivered");
    }

    // Redis restarts (empty: no persistence). Both buses reconnect, router 2 subscribes again,
    // router 1 republishes its last presences: presence works again and the cache is repaired.
    drop(server);
    let back = RedisServer::start_with(false, |attempt| (attempt == 0).then_some(port));
    assert_eq!(back.port, port, "could not restart Redis on the same port");
    publish_until_received(&one, &mut inbox_two, "bob@localhost/pc", "after the restart").await;
    current_until(&two, "alice@localhost", "alice's presence republished", |p| {
        p.iter().any(|e| status_of(e).as_deref() == Some("unwatched"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_subscriptions_survive_a_slot_migration() {
    let cluster = RedisCluster::start();
    let (one, _inbox_one) = bus(cluster.urls(), 1);
    let (two, mut inbox_two) = bus(cluster.urls(), 2);
    two.watch("carol@localhost");
    publish_until_received(&one, &mut inbox_two, "carol@localhost/r", "before").await;

    // Move carol's slot (channel and cached presence) to another master.
    let slot = cluster.slot_of(&channel_of("starling:", "carol@localhost"));
    let from = cluster.owner_of(slot);
    cluster.migrate_slot(slot, (from + 1) % 3);
    publish_until_received(&one, &mut inbox_two, "carol@localhost/r", "after the migration").await;
    current_until(&two, "carol@localhost", "the cache on the new owner", |p| {
        p.iter().any(|e| status_of(e).as_deref() == Some("after the migration"))
    })
    .await;
}

/// Contacts whose channels fall on every master of `cluster`, `per_master` of each, with the
/// master serving each.
fn contacts_on_every_master(cluster: &RedisCluster, per_master: usize) -> Vec<(String, usize)> {
    let owners = cluster.owners();
    let mut picked: Vec<(String, usize)> = Vec::new();
    for i in 0.. {
        let contact = format!("user{i}@localhost");
        let channel = channel_of("starling:", &contact);
        let owner = owners.of(key_slot(channel.as_bytes()));
        if picked.iter().filter(|(_, o)| *o == owner).count() < per_master {
            picked.push((contact, owner));
        }
        let masters: std::collections::HashSet<usize> = picked.iter().map(|(_, o)| *o).collect();
        if masters.len() == 3 && picked.len() == 3 * per_master {
            break;
        }
        assert!(i < 10_000, "contacts do not spread over the masters: {picked:?}");
    }
    picked
}

/// After `publish_until_received` showed the path works, a single publish arrives too: the
/// subscription is stable, not merely re-made now and then.
async fn published_once_arrives(
    from_bus: &RedisBus,
    inbox: &mut UnboundedReceiver<Element>,
    from: &str,
    status: &str,
) {
    let (jid, p) = available(from, status);
    from_bus.publish(&jid, &p);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, inbox.recv()).await {
            Ok(Some(got)) if status_of(&got).as_deref() == Some(status) => return,
            Ok(Some(_)) => {}
            other => panic!("{status:?}, published once, did not arrive: {other:?}"),
        }
    }
}

/// Which failure the shard of the watched contact goes through.
#[derive(Clone, Copy, Debug)]
enum Failure {
    /// `CLUSTER FAILOVER` on the replica: the old master becomes its replica.
    Graceful,
    /// The master is killed (SIGKILL); the cluster promotes its replica.
    MasterKilled,
}

/// Two routers' buses on a Redis Cluster with replicas; the shard holding a watched contact's
/// channel fails over. The watching bus keeps (or renews) its subscription by itself, presence
/// published afterwards reaches it, and the last-presence cache of contacts on every shard —
/// the failed-over one included — is readable again in one call.
async fn presence_survives(failure: Failure) {
    let mut cluster = RedisCluster::start_with_replicas();
    let (one, _inbox_one) = bus(cluster.urls(), 1);
    let (two, mut inbox_two) = bus(cluster.urls(), 2);
    let contacts = contacts_on_every_master(&cluster, 2);
    let (watched, master) = contacts[0].clone();
    two.watch(&watched);
    for (c, _) in &contacts {
        let (jid, p) = available(&format!("{c}/r"), &format!("{c} before"));
        one.publish(&jid, &p);
    }
    publish_until_received(&one, &mut inbox_two, &format!("{watched}/r"), "before").await;
    let names: Vec<String> = contacts.iter().map(|(c, _)| c.clone()).collect();
    current_until(&two, &names[1], "the cache before", |p| !p.is_empty()).await;

    let replica = cluster.replica_of(master);
    cluster.wait_replicated(master);
    let errors_before = starling_telemetry::metrics().redis_errors.get();
    let started = std::time::Instant::now();
    match failure {
        Failure::Graceful => cluster.failover(replica),
        Failure::MasterKilled => {
            cluster.kill(master);
            cluster.wait_promoted(replica);
        }
    }
    let slot = cluster.slot_of(&channel_of("starling:", &watched));
    assert_eq!(cluster.owner_of(slot), replica, "the replica serves the watched contact now");
    if matches!(failure, Failure::MasterKilled) {
        // Degraded visibly: the buses count the failures on the lost master.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while starling_telemetry::metrics().redis_errors.get() == errors_before {
            assert!(tokio::time::Instant::now() < deadline, "no Redis error counted for a killed master");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!("{failure:?}: the cluster agreed on the new master after {:?}", started.elapsed());

    // Presence flows again without the router watching anew, and then stays up.
    publish_until_received(&one, &mut inbox_two, &format!("{watched}/r"), "after the failover").await;
    published_once_arrives(&one, &mut inbox_two, &format!("{watched}/r"), "once more").await;
    eprintln!("{failure:?}: presence flowing again {:?} after the failure", started.elapsed());

    // The cache: every contact on every shard comes back in one read (the data of the
    // failed-over shard was replicated before the failure; the rest republished), and the
    // watched contact's entry is its latest presence. A write the cluster client retried across
    // the failover can land after a newer one; the bus's refresh (every third of the TTL, 10 s
    // here) writes the latest again, so the entry converges within the deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    loop {
        let now = two.current(names.clone()).await;
        let mut froms: Vec<String> = now.iter().filter_map(|p| p.attr("from").map(str::to_owned)).collect();
        froms.sort();
        froms.dedup();
        let mut want: Vec<String> = names.iter().map(|c| format!("{c}/r")).collect();
        want.sort();
        let watched_now = now.iter().find(|p| p.attr("from") == Some(&format!("{watched}/r")));
        let watched_status = watched_now.and_then(status_of);
        if froms == want && watched_status.as_deref() == Some("once more") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cache after the failover: {froms:?}, the watched contact's entry {watched_status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Repaired: the buses report Redis up again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while starling_telemetry::metrics().redis_up.get() != 1 {
        assert!(tokio::time::Instant::now() < deadline, "starling_redis_up stays 0 after the failover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_survives_a_graceful_failover() {
    presence_survives(Failure::Graceful).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_survives_a_killed_master_and_its_replica_promoted() {
    presence_survives(Failure::MasterKilled).await;
}

/// Publishes from `one` the presences of `contacts` (two resources for every third), then
/// expects `two` to read them all, and nothing for contacts without one, in one call.
async fn every_last_presence_comes_back(one: &RedisBus, two: &RedisBus, contacts: &[String], what: &str) {
    let mut want = Vec::new();
    for (i, c) in contacts.iter().enumerate() {
        let resources: &[&str] = if i % 3 == 0 { &["a", "b"] } else { &["a"] };
        for r in resources {
            let from = format!("{c}/{r}");
            let (jid, p) = available(&from, &format!("{what} {from}"));
            one.publish(&jid, &p);
            want.push((from.clone(), format!("{what} {from}")));
        }
    }
    want.sort();
    let mut asked = contacts.to_vec();
    asked.extend((0..5).map(|i| format!("nobody{i}@localhost")));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut got: Vec<(String, String)> = two
            .current(asked.clone())
            .await
            .iter()
            .map(|p| (p.attr("from").unwrap_or_default().to_owned(), status_of(p).unwrap_or_default()))
            .collect();
        got.sort();
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: read {} of {}: {got:?}",
            got.len(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_read_returns_every_contact_on_one_server() {
    let server = RedisServer::start();
    let (one, _inbox_one) = bus(vec![server.url()], 1);
    let (two, _inbox_two) = bus(vec![server.url()], 2);
    let contacts: Vec<String> = (0..60).map(|i| format!("user{i}@localhost")).collect();
    every_last_presence_comes_back(&one, &two, &contacts, "single").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_read_returns_every_contact_across_slots_and_nodes() {
    let cluster = RedisCluster::start();
    let (one, _inbox_one) = bus(cluster.urls(), 1);
    let (two, _inbox_two) = bus(cluster.urls(), 2);
    // Contacts on every master, and two that share a slot (read in one group).
    let mut contacts: Vec<String> =
        contacts_on_every_master(&cluster, 20).into_iter().map(|(c, _)| c).collect();
    let slot = |c: &str| key_slot(channel_of("starling:", c).as_bytes());
    for c in contacts.iter().take(3) {
        assert_eq!(
            slot(c),
            cluster.slot_of(&channel_of("starling:", c)),
            "the slot as the server computes it"
        );
    }
    let mut seen = std::collections::HashMap::new();
    let pair = (0..)
        .find_map(|i| {
            let c = format!("pair{i}@localhost");
            seen.insert(slot(&c), c.clone()).map(|other| (other, c))
        })
        .expect("two contacts in one slot");
    assert_eq!(slot(&pair.0), slot(&pair.1));
    contacts.extend([pair.0.clone(), pair.1]);
    every_last_presence_comes_back(&one, &two, &contacts, "cluster").await;

    // The shared slot moves to another master: its group is redirected, nothing is lost.
    let from = cluster.owner_of(slot(&pair.0));
    cluster.migrate_slot(slot(&pair.0), (from + 1) % 3);
    every_last_presence_comes_back(&one, &two, &contacts, "after the migration").await;
}
