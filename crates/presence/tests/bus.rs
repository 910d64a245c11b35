//! The Redis presence bus against real `redis-server` processes: a single server (restarted
//! mid-test) and a three-master Redis Cluster with a slot migrated under a live subscription.
//! Two buses stand for two routers; every wait is on a condition, bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use starling_presence::{channel_of, BusConfig, RedisBus};
use starling_router::PresenceBus;
use starling_testkit::{RedisCluster, RedisServer};
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
