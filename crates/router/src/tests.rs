//! Router behaviour tests: real router, real embedded store, sessions as recording sinks.
//! Delivery is synchronous within each awaited call, so assertions need no waiting.

use super::*;
use starling_store::{derive_credentials, AccountStore, EmbeddedStore};
use starling_xmpp::subscription::{SubKind, Subscription};

#[derive(Default)]
struct Recorder {
    items: Mutex<Vec<ToClient>>,
}

impl Deliver for Recorder {
    fn deliver(&self, item: ToClient) -> bool {
        self.items.lock().unwrap().push(item);
        true
    }
}

impl Recorder {
    fn take(&self) -> Vec<ToClient> {
        std::mem::take(&mut *self.items.lock().unwrap())
    }
    fn stanzas(&self) -> Vec<Element> {
        self.take()
            .into_iter()
            .filter_map(|i| match i {
                ToClient::Stanza(e) => Some(e),
                ToClient::Raw(b) => starling_xmpp::session::parse_stored_stanza(&b).ok(),
                ToClient::Close(_) => None,
            })
            .collect()
    }
}

struct World {
    _dir: tempfile::TempDir,
    router: Router,
}

fn world(users: &[&str]) -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("db")).unwrap();
    for u in users {
        store.create_account(&format!("{u}@localhost"), derive_credentials("pw", 4096).unwrap()).unwrap();
    }
    let router = Router::new(RouterConfig::default(), Arc::new(store));
    World { _dir: dir, router }
}

fn full(s: &str) -> FullJid {
    FullJid::new(s).unwrap()
}

async fn online(w: &World, jid: &str) -> (FullJid, Arc<Recorder>, SessionId) {
    let j = full(jid);
    let r = Arc::new(Recorder::default());
    let id = w.router.bind(&j, r.clone()).await.unwrap();
    (j, r, id)
}

fn presence(priority: i8) -> Element {
    Element::new("presence", ns::CLIENT)
        .with_child(Element::new("priority", ns::CLIENT).with_text(priority.to_string()))
}

fn chat(from: &FullJid, to: &str, body: &str) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("type", "chat")
        .with_attr("from", from.to_string())
        .with_attr("to", to)
        .with_child(Element::new("body", ns::CLIENT).with_text(body))
}

fn sub(kind: &str, to: &str) -> Element {
    Element::new("presence", ns::CLIENT).with_attr("type", kind).with_attr("to", to)
}

fn bodies(es: &[Element]) -> Vec<String> {
    es.iter().filter_map(|e| e.get_child("body", ns::CLIENT)).map(|b| b.text()).collect()
}

#[tokio::test]
async fn bare_jid_message_goes_to_highest_priority_resource() {
    let w = world(&["alice", "bob"]);
    let (a1, r1, _) = online(&w, "alice@localhost/one").await;
    let (a2, r2, _) = online(&w, "alice@localhost/two").await;
    let (b, _rb, _) = online(&w, "bob@localhost/x").await;
    w.router.handle_from_client(&a1, presence(1)).await;
    w.router.handle_from_client(&a2, presence(5)).await;
    r1.take();
    r2.take();
    w.router.handle_from_client(&b, chat(&b, "alice@localhost", "hi")).await;
    assert!(bodies(&r1.stanzas()).is_empty());
    assert_eq!(bodies(&r2.stanzas()), vec!["hi"]);
    // A full JID reaches exactly that resource.
    w.router.handle_from_client(&b, chat(&b, "alice@localhost/one", "direct")).await;
    assert_eq!(bodies(&r1.stanzas()), vec!["direct"]);
    assert!(r2.stanzas().is_empty());
}

#[tokio::test]
async fn offline_messages_are_kept_and_delivered_with_delay_on_initial_presence() {
    let w = world(&["alice", "bob"]);
    let (b, rb, _) = online(&w, "bob@localhost/x").await;
    w.router.handle_from_client(&b, chat(&b, "alice@localhost", "while you were out")).await;
    assert!(rb.stanzas().is_empty(), "no error for a stored message");
    let (a, ra, _) = online(&w, "alice@localhost/phone").await;
    assert!(ra.stanzas().is_empty(), "nothing before initial presence");
    w.router.handle_from_client(&a, presence(0)).await;
    let got = ra.stanzas();
    let msg = got.iter().find(|e| e.name == "message").expect("offline message delivered");
    assert_eq!(bodies(std::slice::from_ref(msg)), vec!["while you were out"]);
    assert!(msg.get_child("delay", ns::DELAY).is_some());
    assert_eq!(msg.attr("from"), Some("bob@localhost/x"));
}

#[tokio::test]
async fn messages_to_unknown_accounts_and_domains_bounce() {
    let w = world(&["bob"]);
    let (b, rb, _) = online(&w, "bob@localhost/x").await;
    w.router.handle_from_client(&b, chat(&b, "nobody@localhost", "hello?")).await;
    let err = rb.stanzas().pop().expect("error reply");
    assert_eq!(err.attr("type"), Some("error"));
    assert!(err.to_string_lossy().contains("service-unavailable"));
    w.router.handle_from_client(&b, chat(&b, "x@elsewhere.example", "hello?")).await;
    let err = rb.stanzas().pop().expect("error reply");
    assert!(err.to_string_lossy().contains("remote-server-not-found"));
}

#[tokio::test]
async fn newer_bind_of_the_same_resource_wins() {
    let w = world(&["alice"]);
    let (j, old, old_id) = online(&w, "alice@localhost/r").await;
    let (_, new, _) = online(&w, "alice@localhost/r").await;
    assert!(matches!(old.take().as_slice(), [ToClient::Close(StreamError::Conflict)]));
    // The replaced connection's late unbind must not remove the new session.
    w.router.unbind(&j, old_id, Vec::new()).await;
    assert_eq!(w.router.session_count(), 1);
    w.router.handle_from_client(&j, chat(&j, "alice@localhost/r", "self")).await;
    assert_eq!(bodies(&new.stanzas()), vec!["self"]);
}

#[tokio::test]
async fn subscription_handshake_then_presence_flows_and_unavailable_on_disconnect() {
    let w = world(&["alice", "bob"]);
    let (a, ra, _) = online(&w, "alice@localhost/a").await;
    let (b, rb, b_id) = online(&w, "bob@localhost/b").await;
    // Both fetch the roster (to receive pushes) and go online.
    let get = |id: &str| {
        Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("id", id)
            .with_child(Element::new("query", ns::ROSTER))
    };
    w.router.handle_from_client(&a, get("r1")).await;
    w.router.handle_from_client(&b, get("r2")).await;
    w.router.handle_from_client(&a, presence(0)).await;
    w.router.handle_from_client(&b, presence(0)).await;
    ra.take();
    rb.take();

    w.router.handle_from_client(&a, sub("subscribe", "bob@localhost")).await;
    let to_alice = ra.stanzas();
    let push = to_alice.iter().find(|e| e.name == "iq").expect("roster push to alice");
    assert!(push.to_string_lossy().contains("ask='subscribe'"), "{}", push.to_string_lossy());
    let to_bob = rb.stanzas();
    let req = to_bob.iter().find(|e| e.attr("type") == Some("subscribe")).expect("request delivered");
    assert_eq!(req.attr("from"), Some("alice@localhost"));

    w.router.handle_from_client(&b, sub("subscribed", "alice@localhost")).await;
    let to_alice = ra.stanzas();
    assert!(to_alice.iter().any(|e| e.attr("type") == Some("subscribed")));
    assert!(
        to_alice.iter().any(|e| e.name == "presence"
            && e.attr("type").is_none()
            && e.attr("from") == Some("bob@localhost/b")),
        "bob's presence follows the approval"
    );
    let item = w.router.load_item(&a.to_bare(), &b.to_bare()).await.unwrap();
    assert_eq!(item.state.subscription, Subscription::To);
    let item = w.router.load_item(&b.to_bare(), &a.to_bare()).await.unwrap();
    assert_eq!(item.state.subscription, Subscription::From);
    rb.take();

    // Bob's presence changes reach alice; alice's do not reach bob (he has no subscription).
    w.router.handle_from_client(&b, presence(3)).await;
    assert!(ra.stanzas().iter().any(|e| e.attr("from") == Some("bob@localhost/b")));
    w.router.handle_from_client(&a, presence(2)).await;
    assert!(!rb
        .stanzas()
        .iter()
        .any(|e| e.name == "presence" && e.attr("from") == Some("alice@localhost/a")));

    // Bob's connection drops: alice hears unavailable.
    w.router.unbind(&b, b_id, Vec::new()).await;
    assert!(ra
        .stanzas()
        .iter()
        .any(|e| e.attr("type") == Some("unavailable") && e.attr("from") == Some("bob@localhost/b")));
}

#[tokio::test]
async fn subscription_request_to_offline_user_arrives_at_next_login() {
    let w = world(&["alice", "bob"]);
    let (a, _ra, _) = online(&w, "alice@localhost/a").await;
    w.router.handle_from_client(&a, sub("subscribe", "bob@localhost")).await;
    let (b, rb, _) = online(&w, "bob@localhost/b").await;
    // Not shown in bob's roster while pending.
    let get = Element::new("iq", ns::CLIENT)
        .with_attr("type", "get")
        .with_attr("id", "r")
        .with_child(Element::new("query", ns::ROSTER));
    w.router.handle_from_client(&b, get).await;
    let roster = rb.stanzas().pop().unwrap();
    assert_eq!(roster.get_child("query", ns::ROSTER).unwrap().elements().count(), 0);
    w.router.handle_from_client(&b, presence(0)).await;
    let got = rb.stanzas();
    assert!(got
        .iter()
        .any(|e| e.attr("type") == Some("subscribe") && e.attr("from") == Some("alice@localhost")));
}

#[tokio::test]
async fn roster_set_and_remove_push_and_version() {
    let w = world(&["alice"]);
    let (a, ra, _) = online(&w, "alice@localhost/a").await;
    let set = Element::new("iq", ns::CLIENT).with_attr("type", "set").with_attr("id", "s1").with_child(
        Element::new("query", ns::ROSTER).with_child(
            Element::new("item", ns::ROSTER)
                .with_attr("jid", "carol@localhost")
                .with_attr("name", "Carol")
                .with_child(Element::new("group", ns::ROSTER).with_text("Friends")),
        ),
    );
    let get = Element::new("iq", ns::CLIENT)
        .with_attr("type", "get")
        .with_attr("id", "g1")
        .with_child(Element::new("query", ns::ROSTER));
    w.router.handle_from_client(&a, get.clone()).await;
    ra.take();
    w.router.handle_from_client(&a, set).await;
    let got = ra.stanzas();
    let result = got.iter().find(|e| e.attr("id") == Some("s1") && e.attr("type") == Some("result"));
    // RFC 6120 §8.1.2.1: the server answers for the account: no 'from' or the bare JID.
    assert_eq!(result.expect("roster set result").attr("from"), Some("alice@localhost"));
    let push = got.iter().find(|e| e.attr("type") == Some("set")).expect("push");
    let ver = push.get_child("query", ns::ROSTER).unwrap().attr("ver").unwrap().to_owned();
    // Asking with the current version returns an empty result (RFC 6121 §2.6.3).
    let mut cached = get.clone();
    cached.get_child_mut("query", ns::ROSTER).unwrap().set_attr("ver", ver);
    w.router.handle_from_client(&a, cached).await;
    let r = ra.stanzas().pop().unwrap();
    assert!(r.get_child("query", ns::ROSTER).is_none());
    assert_eq!(r.attr("from"), Some("alice@localhost"));
    // Removing an unknown item is item-not-found.
    let rm = |jid: &str| {
        Element::new("iq", ns::CLIENT).with_attr("type", "set").with_attr("id", "rm").with_child(
            Element::new("query", ns::ROSTER).with_child(
                Element::new("item", ns::ROSTER).with_attr("jid", jid).with_attr("subscription", "remove"),
            ),
        )
    };
    w.router.handle_from_client(&a, rm("dave@localhost")).await;
    assert!(ra.stanzas().pop().unwrap().to_string_lossy().contains("item-not-found"));
    w.router.handle_from_client(&a, rm("carol@localhost")).await;
    let got = ra.stanzas();
    assert!(got.iter().any(|e| e.to_string_lossy().contains("subscription='remove'")));
}

#[tokio::test]
async fn server_answers_ping_disco_version_and_unknown_iq() {
    let w = world(&["alice"]);
    let (a, ra, _) = online(&w, "alice@localhost/a").await;
    let iq = |id: &str, child: Element| {
        Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("id", id)
            .with_attr("to", "localhost")
            .with_child(child)
    };
    w.router.handle_from_client(&a, iq("p", Element::new("ping", ns::PING))).await;
    assert_eq!(ra.stanzas().pop().unwrap().attr("type"), Some("result"));
    w.router.handle_from_client(&a, iq("d", Element::new("query", ns::DISCO_INFO))).await;
    assert!(ra.stanzas().pop().unwrap().to_string_lossy().contains("urn:xmpp:ping"));
    w.router.handle_from_client(&a, iq("v", Element::new("query", ns::VERSION))).await;
    assert!(ra.stanzas().pop().unwrap().to_string_lossy().contains("Starling"));
    w.router.handle_from_client(&a, iq("u", Element::new("query", "urn:unknown"))).await;
    assert!(ra.stanzas().pop().unwrap().to_string_lossy().contains("service-unavailable"));
    let mut set = iq("s", Element::new("query", ns::VERSION));
    set.set_attr("type", "set");
    w.router.handle_from_client(&a, set).await;
    assert!(ra.stanzas().pop().unwrap().to_string_lossy().contains("feature-not-implemented"));
}

#[tokio::test]
async fn vcard_and_private_storage_roundtrip() {
    let w = world(&["alice", "bob"]);
    let (a, ra, _) = online(&w, "alice@localhost/a").await;
    let (b, rb, _) = online(&w, "bob@localhost/b").await;
    let vcard = Element::new("vCard", ns::VCARD).with_child(Element::new("FN", ns::VCARD).with_text("Alice"));
    let set = Element::new("iq", ns::CLIENT).with_attr("type", "set").with_attr("id", "v").with_child(vcard);
    w.router.handle_from_client(&a, set).await;
    assert_eq!(ra.stanzas().pop().unwrap().attr("type"), Some("result"));
    let get = Element::new("iq", ns::CLIENT)
        .with_attr("type", "get")
        .with_attr("id", "vg")
        .with_attr("to", "alice@localhost")
        .with_child(Element::new("vCard", ns::VCARD));
    w.router.handle_from_client(&b, get).await;
    let got = rb.stanzas().pop().unwrap().to_string_lossy();
    assert!(got.contains("Alice"), "{got}");

    let private = |kind: &str, child: Element| {
        Element::new("iq", ns::CLIENT)
            .with_attr("type", kind)
            .with_attr("id", "p")
            .with_child(Element::new("query", ns::PRIVATE).with_child(child))
    };
    let note =
        Element::new("notes", "storage:rosternotes").with_child(Element::new("note", "storage:rosternotes"));
    w.router.handle_from_client(&a, private("set", note)).await;
    assert_eq!(ra.stanzas().pop().unwrap().attr("type"), Some("result"));
    w.router.handle_from_client(&a, private("get", Element::new("notes", "storage:rosternotes"))).await;
    assert!(ra.stanzas().pop().unwrap().to_string_lossy().contains("<note"));
    w.router.handle_from_client(&a, private("set", Element::new("x", "jabber:iq:roster"))).await;
    assert!(ra.stanzas().pop().unwrap().to_string_lossy().contains("not-acceptable"));
}

#[tokio::test]
async fn legacy_session_without_to_is_answered() {
    let w = world(&["alice"]);
    let (a, ra, _) = online(&w, "alice@localhost/a").await;
    let iq = Element::new("iq", ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("id", "sess")
        .with_child(Element::new("session", ns::SESSION));
    w.router.handle_from_client(&a, iq).await;
    let reply = ra.stanzas().pop().expect("a reply");
    assert_eq!((reply.attr("id"), reply.attr("type")), (Some("sess"), Some("result")));
}

fn headline(from: &FullJid, to: &str, body: &str) -> Element {
    let mut m = chat(from, to, body);
    m.set_attr("type", "headline");
    m
}

fn ping_to(from: &FullJid, to: &str, id: &str) -> Element {
    Element::new("iq", ns::CLIENT)
        .with_attr("type", "get")
        .with_attr("id", id)
        .with_attr("from", from.to_string())
        .with_attr("to", to)
        .with_child(Element::new("ping", ns::PING))
}

fn queued(stanzas: Vec<Element>) -> Vec<ToClient> {
    stanzas.into_iter().map(ToClient::Stanza).collect()
}

#[tokio::test]
async fn an_ended_sessions_queue_goes_to_another_resource_then_offline() {
    let w = world(&["alice", "bob"]);
    let (phone, _rp, phone_id) = online(&w, "alice@localhost/phone").await;
    let (laptop, rl, laptop_id) = online(&w, "alice@localhost/laptop").await;
    let (b, rb, _) = online(&w, "bob@localhost/b").await;
    w.router.handle_from_client(&phone, presence(5)).await;
    w.router.handle_from_client(&laptop, presence(0)).await;
    rl.take();
    rb.take();

    // The phone's connection ends with stanzas still queued to it.
    let left = vec![
        chat(&b, "alice@localhost/phone", "to the phone"),
        chat(&b, "alice@localhost", "to alice"),
        headline(&b, "alice@localhost/phone", "news"),
        ping_to(&b, "alice@localhost/phone", "p1"),
        Element::new("presence", ns::CLIENT).with_attr("from", "bob@localhost/b"),
    ];
    w.router.unbind(&phone, phone_id, queued(left)).await;
    // Messages reach the other available resource (§8.5.3.2.1 then §8.5.2.1.1); the iq request
    // is answered; the presence is dropped.
    let got = rl.stanzas();
    assert_eq!(bodies(&got), vec!["to the phone", "to alice", "news"]);
    assert!(!got.iter().any(|e| e.name == "presence" && e.attr("from") == Some("bob@localhost/b")));
    let to_bob = rb.stanzas();
    let err = to_bob.iter().find(|e| e.attr("id") == Some("p1")).expect("the ping is answered");
    assert_eq!(err.attr("type"), Some("error"));
    assert_eq!(err.attr("from"), Some("alice@localhost/phone"));
    assert!(err.to_string_lossy().contains("service-unavailable"));

    // The last resource goes too: chat and normal messages with a body are kept offline; a
    // bodyless chat state and a headline are not.
    let chat_state = Element::new("message", ns::CLIENT)
        .with_attr("type", "chat")
        .with_attr("from", "bob@localhost/b")
        .with_attr("to", "alice@localhost/laptop")
        .with_child(Element::new("composing", "http://jabber.org/protocol/chatstates"));
    let mut normal = chat(&b, "alice@localhost", "normal one");
    normal.set_attr("type", "normal");
    let left = vec![
        chat(&b, "alice@localhost/laptop", "for later"),
        chat_state,
        headline(&b, "alice@localhost/laptop", "stale news"),
        normal,
    ];
    w.router.unbind(&laptop, laptop_id, queued(left)).await;
    assert!(rb.stanzas().is_empty(), "stored messages are not errors");
    let (again, ra, _) = online(&w, "alice@localhost/again").await;
    w.router.handle_from_client(&again, presence(0)).await;
    let got = ra.stanzas();
    let offline: Vec<&Element> = got.iter().filter(|e| e.name == "message").collect();
    assert_eq!(offline.len(), 2, "{got:?}");
    assert_eq!(bodies(&got), vec!["for later", "normal one"]);
    assert!(offline.iter().all(|m| m.get_child("delay", ns::DELAY).is_some()));
}

#[tokio::test]
async fn a_replaced_sessions_queue_goes_to_the_session_that_replaced_it() {
    let w = world(&["alice", "bob"]);
    let (j, _old, old_id) = online(&w, "alice@localhost/r").await;
    let b = full("bob@localhost/b");
    let (_, new, _) = online(&w, "alice@localhost/r").await;
    new.take();
    w.router.unbind(&j, old_id, queued(vec![chat(&b, "alice@localhost/r", "queued before")])).await;
    assert_eq!(bodies(&new.stanzas()), vec!["queued before"]);
}

#[tokio::test]
async fn a_returned_stanza_skips_the_session_that_could_not_take_it() {
    // A cluster edge returns a stanza its connection's queue refused while the session is still
    // bound: it must not come straight back to that session.
    let w = world(&["alice", "bob"]);
    let (a, ra, a_id) = online(&w, "alice@localhost/a").await;
    w.router.handle_from_client(&a, presence(0)).await;
    ra.take();
    let b = full("bob@localhost/b");
    let back = queued(vec![chat(&b, "alice@localhost/a", "refused")]);
    w.router.reroute_undelivered(&a.to_bare(), Some(a_id), back).await;
    assert!(ra.stanzas().is_empty());
    let stored = w.router.store.take_offline("alice@localhost").unwrap();
    assert_eq!(stored.len(), 1, "kept offline instead");
}

fn roster_set(contact: &str, name: &str) -> Element {
    Element::new("iq", ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("id", format!("set-{contact}"))
        .with_child(
            Element::new("query", ns::ROSTER).with_child(
                Element::new("item", ns::ROSTER).with_attr("jid", contact).with_attr("name", name),
            ),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_roster_changes_of_one_account_are_all_kept() {
    // Each contact gets a roster set (a name) and an inbound subscription request (pending_in)
    // at once; whatever the order, the item must end up with both.
    let w = Arc::new(world(&["alice"]));
    let (a, _ra, _) = online(&w, "alice@localhost/a").await;
    let contacts: Vec<String> = (0..40).map(|i| format!("c{i}@localhost")).collect();
    let mut tasks = Vec::new();
    for c in &contacts {
        let (w1, a1, c1) = (w.clone(), a.clone(), c.clone());
        tasks.push(tokio::spawn(async move {
            w1.router.handle_from_client(&a1, roster_set(&c1, &format!("name of {c1}"))).await
        }));
        let (w2, user, c2) = (w.clone(), a.to_bare(), c.clone());
        tasks.push(tokio::spawn(async move {
            let contact = BareJid::new(&c2).unwrap();
            let p = Element::new("presence", ns::CLIENT)
                .with_attr("type", "subscribe")
                .with_attr("from", c2.clone())
                .with_attr("to", "alice@localhost");
            w2.router.inbound_subscription(&user, &contact, SubKind::Subscribe, p).await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut lost = Vec::new();
    for c in &contacts {
        let cached = w.router.load_item(&a.to_bare(), &BareJid::new(c).unwrap()).await;
        let stored = w.router.store.roster_item("alice@localhost", c).unwrap();
        for (place, item) in [("cache", cached), ("store", stored)] {
            let ok = item.as_ref().is_some_and(|i| {
                i.name.as_deref() == Some(format!("name of {c}").as_str()) && i.state.pending_in && !i.hidden
            });
            if !ok {
                lost.push(format!("{place} {c}: {item:?}"));
            }
        }
    }
    assert!(lost.is_empty(), "lost updates:\n{}", lost.join("\n"));
}

/// A broadcast is serialized once and copied per recipient with its own 'to': every resource of
/// the sender gets it addressed to its full JID, every resource of a subscribed contact to the
/// contact's bare JID, and nobody without a subscription hears it.
#[tokio::test]
async fn a_broadcast_reaches_own_resources_and_every_resource_of_each_subscriber() {
    let w = world(&["alice", "bob", "carol"]);
    let (a1, ra1, _) = online(&w, "alice@localhost/one").await;
    let (a2, ra2, _) = online(&w, "alice@localhost/two").await;
    let (b1, rb1, _) = online(&w, "bob@localhost/x").await;
    let (b2, rb2, _) = online(&w, "bob@localhost/y").await;
    let (c, rc, _) = online(&w, "carol@localhost/z").await;
    for (j, _) in [(&a2, &ra2), (&b1, &rb1), (&b2, &rb2), (&c, &rc)] {
        w.router.handle_from_client(j, presence(0)).await;
    }
    // bob subscribes to alice and she approves: bob sees alice's presence, carol does not.
    w.router.handle_from_client(&b1, sub("subscribe", "alice@localhost")).await;
    w.router.handle_from_client(&a1, sub("subscribed", "bob@localhost")).await;
    for r in [&ra1, &ra2, &rb1, &rb2, &rc] {
        r.take();
    }
    let away = presence(3).with_child(Element::new("show", ns::CLIENT).with_text("away"));
    w.router.handle_from_client(&a1, away).await;
    let heard = |r: &Recorder| -> Vec<Element> {
        r.stanzas().into_iter().filter(|e| e.name == "presence" && e.attr("type").is_none()).collect()
    };
    for (r, to) in [(&ra1, "alice@localhost/one"), (&ra2, "alice@localhost/two")] {
        let got = heard(r);
        assert_eq!(got.len(), 1, "{to}: {got:?}");
        assert_eq!(got[0].attr("to"), Some(to));
        assert_eq!(got[0].attr("from"), Some("alice@localhost/one"));
    }
    for r in [&rb1, &rb2] {
        let got = heard(r);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].attr("to"), Some("bob@localhost"));
        assert_eq!(got[0].attr("from"), Some("alice@localhost/one"));
        let show = got[0].get_child("show", ns::CLIENT).map(|s| s.text());
        assert_eq!(show.as_deref(), Some("away"));
        assert_eq!(got[0].attrs.iter().filter(|(k, _)| k == "to").count(), 1, "one 'to' only");
    }
    assert!(heard(&rc).is_empty(), "carol has no subscription to alice");
}
