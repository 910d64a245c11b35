//! The edge side of the cluster: [`EdgeHost`] is the edge's [`SessionHost`] when routers are
//! other processes.
//!
//! Each bound session is registered with the router that owns its bare JID's slot (found in the
//! slot table the edge watches), under the slot's epoch. Client stanzas go to that router on the
//! edge's link to it; the router's answers come back on the same link and are written to the
//! client as they arrived, without parsing. When a slot moves, or a router link breaks, every
//! affected session is re-registered with the slot's current owner, carrying its last broadcast
//! presence and roster interest, so the new owner takes over without the client noticing.

use crate::envelope;
use crate::link::Outbox;
use crate::router_role::owner;
use starling_edge::SessionHost;
use starling_registry::ClusterView;
use starling_rpc::link::{
    item, ComponentClose, ComponentOpen, Hello, Role, SessionClose, SessionOpen, SessionOpened, Undelivered,
};
use starling_xml::Element;
use starling_xmpp::session::{Deliver, ToClient};
use starling_xmpp::stanza::error_reply;
use starling_xmpp::{ns, FullJid, Jid, StanzaError, StreamError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio_stream::StreamExt;

/// How long a session registration may take before the bind fails.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a live session may wait to be taken back after its router went away: long enough
/// for the registry to notice a dead router (`down_after`, an election if it led) and move its
/// slots.
const REREGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause before re-dialling a router whose link just broke.
const REDIAL_PAUSE: Duration = Duration::from_millis(300);

/// One session bound through this edge.
struct EdgeSession {
    /// Its full JID.
    jid: FullJid,
    /// The connection's queue.
    sink: Arc<dyn Deliver>,
    /// The router it is registered with (0 while registering), and under which epoch.
    router: u64,
    /// Epoch of the slot when it was registered.
    epoch: u64,
    /// Last broadcast presence the client sent, handed to a new owner on re-registration.
    presence: Vec<u8>,
    /// Whether the client fetched its roster (it gets pushes; RFC 6121 §2.1.6).
    roster_interested: bool,
}

/// A component connected through this edge.
struct EdgeComponent {
    /// The component connection's queue.
    sink: Arc<dyn Deliver>,
    /// The router it is registered with, and the slot's epoch then.
    router: u64,
    /// Epoch of the domain's slot when registered.
    epoch: u64,
}

/// One link to a router.
struct RouterLink {
    /// The queue the link's stream drains.
    out: Outbox,
}

/// State shared by the host and its link tasks.
struct Shared {
    /// This edge's node id (sent in Hello).
    id: u64,
    /// The slot table and members.
    view: watch::Receiver<Arc<ClusterView>>,
    /// Links by router id.
    links: Mutex<HashMap<u64, RouterLink>>,
    /// Sessions by the edge's session id.
    sessions: Mutex<HashMap<u64, EdgeSession>>,
    /// Full JID → session id, for stanzas the connection hands over by JID.
    by_jid: Mutex<HashMap<String, u64>>,
    /// Registrations waiting for the router's answer.
    pending: Mutex<HashMap<u64, oneshot::Sender<SessionOpened>>>,
    /// Components by domain.
    components: Mutex<HashMap<String, EdgeComponent>>,
    /// Source of session ids.
    next: AtomicU64,
    /// Items queued towards one router.
    queue: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The edge's [`SessionHost`] over gRPC links to routers.
#[derive(Clone)]
pub struct EdgeHost {
    /// Shared with link tasks.
    shared: Arc<Shared>,
}

impl EdgeHost {
    /// A host for edge `id` following `view`; `queue` items may wait per router link. Starts the
    /// task that re-registers sessions when slots move.
    pub fn new(id: u64, view: watch::Receiver<Arc<ClusterView>>, queue: usize) -> EdgeHost {
        let shared = Arc::new(Shared {
            id,
            view,
            links: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            by_jid: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            components: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            queue,
        });
        tokio::spawn(follow_slots(shared.clone()));
        EdgeHost { shared }
    }

    /// Sessions bound through this edge.
    pub fn session_count(&self) -> usize {
        lock(&self.shared.sessions).len()
    }
}

impl Shared {
    /// The live link to `router`, dialling it when there is none.
    fn link(self: &Arc<Self>, router: u64) -> Option<Outbox> {
        let mut links = lock(&self.links);
        if let Some(l) = links.get(&router) {
            if !l.out.is_closed() {
                return Some(l.out.clone());
            }
        }
        let addr = self.view.borrow().members.get(&router).map(|m| m.addr.clone())?;
        let (out, stream) = Outbox::new(self.queue, router);
        out.try_push(item::Item::Hello(Hello { node_id: self.id, role: Role::Edge as i32 }));
        crate::metrics::link_connected(router);
        tokio::spawn(run_link(self.clone(), router, addr, stream));
        links.insert(router, RouterLink { out: out.clone() });
        Some(out)
    }

    /// Register session `sid` with the current owner of its slot; true once accepted.
    async fn register(self: &Arc<Self>, sid: u64, reregister: bool) -> bool {
        let patience = if reregister { REREGISTER_TIMEOUT } else { OPEN_TIMEOUT };
        let deadline = tokio::time::Instant::now() + patience;
        let mut view = self.view.clone();
        loop {
            let Some((jid, presence, roster_interested)) = lock(&self.sessions)
                .get(&sid)
                .map(|s| (s.jid.clone(), s.presence.clone(), s.roster_interested))
            else {
                return false;
            };
            let bare = jid.to_bare().to_string();
            let placed = owner(&view.borrow_and_update(), &bare);
            if let Some((router, epoch)) = placed {
                if let Some(reply) = self
                    .open(router, sid, &jid, epoch, presence, roster_interested, reregister, deadline)
                    .await
                {
                    if reply.ok {
                        if let Some(s) = lock(&self.sessions).get_mut(&sid) {
                            s.router = router;
                            s.epoch = epoch;
                        }
                        return true;
                    }
                    if reply.error != "stale-epoch" {
                        tracing::warn!(%jid, error = %reply.error, "router refused the session");
                        return false;
                    }
                }
                // The slot moved while we asked (its router may have died): ask the new owner.
                if owner(&view.borrow_and_update(), &bare) != placed {
                    continue;
                }
            }
            // No owner, a stale table or a broken link: wait for the table to change.
            match tokio::time::timeout_at(deadline, view.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return false,
                Err(_) => return false,
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn open(
        self: &Arc<Self>,
        router: u64,
        sid: u64,
        jid: &FullJid,
        epoch: u64,
        presence: Vec<u8>,
        roster_interested: bool,
        reregister: bool,
        deadline: tokio::time::Instant,
    ) -> Option<SessionOpened> {
        let out = self.link(router)?;
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(sid, tx);
        let open = SessionOpen {
            session: sid,
            jid: jid.to_string(),
            slot: u32::from(starling_registry::slot_of(&jid.to_bare().to_string())),
            epoch,
            presence,
            roster_interested,
            reregister,
        };
        if !out.push(item::Item::SessionOpen(open)).await {
            lock(&self.pending).remove(&sid);
            return None;
        }
        // Stop waiting when the slot moves: a router that died never answers.
        let mut table = self.view.clone();
        let bare = jid.to_bare().to_string();
        let moved = async move {
            while table.changed().await.is_ok() {
                if owner(&table.borrow_and_update(), &bare) != Some((router, epoch)) {
                    return;
                }
            }
            std::future::pending::<()>().await
        };
        let reply = tokio::select! {
            r = tokio::time::timeout_at(deadline, rx) => r.ok().and_then(Result::ok),
            () = moved => None,
        };
        lock(&self.pending).remove(&sid);
        reply
    }

    /// Register component `domain` with the owner of its slot.
    async fn register_component(self: Arc<Self>, domain: String) {
        let placed = owner(&self.view.borrow(), &domain);
        let Some((router, epoch)) = placed else { return };
        let Some(out) = self.link(router) else { return };
        if out.push(item::Item::ComponentOpen(ComponentOpen { domain: domain.clone(), epoch })).await {
            if let Some(c) = lock(&self.components).get_mut(&domain) {
                c.router = router;
                c.epoch = epoch;
            }
        }
    }

    /// Re-register whatever is not registered with its slot's current owner.
    fn repair(self: &Arc<Self>) {
        let view = self.view.borrow().clone();
        let stale: Vec<u64> = lock(&self.sessions)
            .iter()
            .filter(|(_, s)| s.router != 0)
            .filter(|(_, s)| owner(&view, &s.jid.to_bare().to_string()) != Some((s.router, s.epoch)))
            .map(|(sid, _)| *sid)
            .collect();
        for sid in stale {
            if let Some(s) = lock(&self.sessions).get_mut(&sid) {
                // Not registered anywhere until the new owner accepts it.
                s.router = 0;
            }
            let shared = self.clone();
            tokio::spawn(async move {
                if !shared.register(sid, true).await {
                    shared.lost(sid);
                }
            });
        }
        let comps: Vec<String> = lock(&self.components)
            .iter()
            .filter(|(d, c)| owner(&view, d) != Some((c.router, c.epoch)))
            .map(|(d, _)| d.clone())
            .collect();
        for d in comps {
            tokio::spawn(self.clone().register_component(d));
        }
    }

    /// A session no router would take back: close its stream so the client reconnects.
    fn lost(&self, sid: u64) {
        if let Some(s) = lock(&self.sessions).get(&sid) {
            tracing::warn!(jid = %s.jid, "session could not be re-registered; closing it");
            s.sink.deliver(ToClient::Close(StreamError::InternalServerError));
        }
    }

    /// Hand stanzas for session `session` of `account` that its connection will never write
    /// back to `router`, which decides their fate ([`Undelivered`]).
    fn give_back(self: &Arc<Self>, router: u64, session: u64, account: String, stanzas: Vec<Vec<u8>>) {
        let n = stanzas.len();
        let sent = self.link(router).is_some_and(|out| {
            out.try_push(item::Item::Undelivered(Undelivered { session, account, stanzas }))
        });
        if !sent {
            tracing::warn!(router, stanzas = n, "undelivered stanzas lost: the router link cannot take them");
        }
    }

    /// The account of session `session`, or of the envelope's recipient `to` when the session
    /// is gone.
    fn account_of(&self, session: u64, to: &str) -> Option<String> {
        match lock(&self.sessions).get(&session) {
            Some(s) => Some(s.jid.to_bare().to_string()),
            None => Jid::new(to).ok().map(|j| j.to_bare().to_string()),
        }
    }

    /// An item router `router` sent on its link.
    fn on_router_item(self: &Arc<Self>, router: u64, it: item::Item) {
        match it {
            item::Item::Stanza(env) if !env.component.is_empty() => {
                let sink = lock(&self.components).get(&env.component).map(|c| c.sink.clone());
                let _span = envelope::span(envelope::Hop::EdgeDeliver, &env).entered();
                if let Some(sink) = sink {
                    sink.deliver(ToClient::Raw(env.stanza));
                }
            }
            item::Item::Stanza(env) => {
                let sink = lock(&self.sessions).get(&env.session).map(|s| s.sink.clone());
                if env.entered_us != 0 {
                    crate::metrics::routed(envelope::now_us().saturating_sub(env.entered_us));
                }
                let _span = envelope::span(envelope::Hop::EdgeDeliver, &env).entered();
                // Only a refused stanza needs its account (no allocation on the delivered path).
                let refused = match sink {
                    Some(sink) => match sink.try_deliver(ToClient::Raw(env.stanza)) {
                        Ok(()) => None,
                        // The connection's queue is full or its stream is ending.
                        Err(ToClient::Raw(bytes)) => {
                            self.account_of(env.session, &env.to).map(|a| (a, bytes))
                        }
                        Err(_) => None,
                    },
                    // The session ended while this was on its way.
                    None => Jid::new(&env.to).ok().map(|to| (to.to_bare().to_string(), env.stanza)),
                };
                if let Some((account, bytes)) = refused {
                    self.give_back(router, env.session, account, vec![bytes]);
                }
            }
            item::Item::CloseStream(c) => {
                if let Some(s) = lock(&self.sessions).get(&c.session) {
                    s.sink.deliver(ToClient::Close(StreamError::from_condition(&c.condition)));
                }
            }
            item::Item::SessionOpened(reply) => {
                if let Some(tx) = lock(&self.pending).remove(&reply.session) {
                    let _ = tx.send(reply);
                }
            }
            _ => {}
        }
    }
}

/// Dial `router`, then pass everything it sends to [`Shared::from_router`] until the link
/// breaks; then re-register the sessions it held.
async fn run_link(shared: Arc<Shared>, router: u64, addr: String, stream: crate::link::BatchStream) {
    let mut established = false;
    let result = async {
        let channel = crate::connect(&addr).await?;
        let mut client = starling_rpc::link::link_client::LinkClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        let mut replies = client.open(stream).await?.into_inner();
        established = true;
        while let Some(batch) = replies.next().await {
            for it in batch?.items.into_iter().filter_map(|i| i.item) {
                shared.on_router_item(router, it);
            }
        }
        Ok::<(), crate::ClusterError>(())
    }
    .await;
    if established {
        tracing::info!(router, %addr, error = ?result.err(), "router link ended");
    } else {
        // A dead router is re-dialled every REDIAL_PAUSE until its slots move: once per outage
        // is enough at INFO (the link's reconnect counter shows the rest).
        tracing::debug!(router, %addr, error = ?result.err(), "router not reachable");
    }
    // The router dropped our sessions with the link; give them back to whoever owns them now.
    tokio::time::sleep(REDIAL_PAUSE).await;
    for s in lock(&shared.sessions).values_mut().filter(|s| s.router == router) {
        s.epoch = 0;
    }
    for c in lock(&shared.components).values_mut().filter(|c| c.router == router) {
        c.epoch = 0;
    }
    shared.repair();
}

/// Re-register sessions whenever the slot table changes.
async fn follow_slots(shared: Arc<Shared>) {
    let mut view = shared.view.clone();
    let mut before = view.borrow().slots.clone();
    while view.changed().await.is_ok() {
        let now = view.borrow_and_update().slots.clone();
        crate::metrics::slots_moved(now.moved_since(&before));
        before = now;
        shared.repair();
    }
}

impl SessionHost for EdgeHost {
    async fn bind(&self, jid: &FullJid, sink: Arc<dyn Deliver>) -> Option<u64> {
        let shared = &self.shared;
        let sid = shared.next.fetch_add(1, Ordering::Relaxed);
        lock(&shared.sessions).insert(
            sid,
            EdgeSession {
                jid: jid.clone(),
                sink,
                router: 0,
                epoch: 0,
                presence: Vec::new(),
                roster_interested: false,
            },
        );
        if shared.register(sid, false).await {
            lock(&shared.by_jid).insert(jid.to_string(), sid);
            Some(sid)
        } else {
            lock(&shared.sessions).remove(&sid);
            None
        }
    }

    async fn handle(&self, from: &FullJid, stanza: Element) {
        let shared = &self.shared;
        let Some(sid) = lock(&shared.by_jid).get(&from.to_string()).copied() else { return };
        let target = {
            let mut sessions = lock(&shared.sessions);
            let Some(s) = sessions.get_mut(&sid) else { return };
            // Remember what a new owner would need to take the session over.
            if stanza.name == "presence" && stanza.attr("to").is_none() {
                match stanza.attr("type") {
                    None => s.presence = stanza.to_bytes(),
                    Some("unavailable") => s.presence.clear(),
                    _ => {}
                }
            } else if stanza.name == "iq"
                && stanza.attr("type") == Some("get")
                && stanza.get_child("query", ns::ROSTER).is_some()
            {
                s.roster_interested = true;
            }
            (s.router, s.epoch, s.sink.clone())
        };
        let (router, epoch, sink) = target;
        // The first span of the stanza's trip; the envelope carries its context on.
        let span = tracing::info_span!(target: starling_telemetry::trace::TARGET, "edge.receive", stanza = %stanza.name);
        let mut env = {
            let _in = span.enter();
            envelope::wrap(&stanza)
        };
        env.session = sid;
        env.epoch = epoch;
        let sent = match shared.link(router) {
            Some(out) if router != 0 => out.push(item::Item::Stanza(env)).await,
            _ => false,
        };
        if !sent && starling_xmpp::stanza::may_bounce(&stanza) {
            // The owner is changing hands; the client hears it rather than losing the stanza
            // silently (RFC 6120 §8.3.3.19 'wait' type).
            starling_telemetry::stanza_error(StanzaError::ServiceUnavailable.condition());
            let reply = error_reply(&stanza, StanzaError::ServiceUnavailable, from.domain().as_str());
            sink.deliver(ToClient::Stanza(reply));
        }
    }

    async fn unbind(&self, jid: &FullJid, id: u64, undelivered: Vec<ToClient>) {
        let shared = &self.shared;
        let removed = lock(&shared.sessions).remove(&id);
        {
            let mut by_jid = lock(&shared.by_jid);
            if by_jid.get(&jid.to_string()) == Some(&id) {
                by_jid.remove(&jid.to_string());
            }
        }
        let registered = removed.map(|s| s.router).filter(|r| *r != 0);
        if let Some(router) = registered {
            if let Some(out) = shared.link(router) {
                out.push(item::Item::SessionClose(SessionClose { session: id, jid: jid.to_string() })).await;
            }
        }
        let stanzas: Vec<Vec<u8>> = undelivered
            .into_iter()
            .filter_map(|i| match i {
                ToClient::Stanza(e) => Some(e.to_bytes()),
                ToClient::Raw(bytes) => Some(bytes),
                ToClient::Close(_) => None,
            })
            .collect();
        if stanzas.is_empty() {
            return;
        }
        // The account's current owner decides (the router it was registered with may be the one
        // whose death ended the session); after the SessionClose on the same link when it is
        // the same router, so the session is gone there first.
        let bare = jid.to_bare().to_string();
        let owner_now = owner(&shared.view.borrow(), &bare).map(|(r, _)| r);
        let n = stanzas.len();
        let sent = match owner_now.or(registered).and_then(|r| shared.link(r)) {
            Some(out) => {
                out.push(item::Item::Undelivered(Undelivered { session: id, account: bare, stanzas })).await
            }
            None => false,
        };
        if !sent {
            tracing::warn!(%jid, stanzas = n, "undelivered stanzas of an ended session lost: no router");
        }
    }

    fn component_connected(&self, domain: &str, sink: Arc<dyn Deliver>) -> bool {
        {
            let mut comps = lock(&self.shared.components);
            if comps.contains_key(domain) {
                return false;
            }
            comps.insert(domain.to_owned(), EdgeComponent { sink, router: 0, epoch: 0 });
        }
        tokio::spawn(self.shared.clone().register_component(domain.to_owned()));
        true
    }

    fn component_disconnected(&self, domain: &str) {
        let Some(c) = lock(&self.shared.components).remove(domain) else { return };
        if let Some(out) = self.shared.link(c.router) {
            out.try_push(item::Item::ComponentClose(ComponentClose { domain: domain.to_owned() }));
        }
    }

    async fn handle_from_component(&self, domain: &str, stanza: Element) {
        let router = lock(&self.shared.components).get(domain).map(|c| c.router).unwrap_or(0);
        let mut env = envelope::wrap(&stanza);
        env.component = domain.to_owned();
        if let Some(out) = self.shared.link(router).filter(|_| router != 0) {
            out.push(item::Item::Stanza(env)).await;
        }
    }
}
