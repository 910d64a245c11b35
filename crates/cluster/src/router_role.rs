//! The router side of the cluster.
//!
//! - [`ClusterPeers`] implements the router's [`Peers`]: homes come from the slot table, and
//!   stanzas for other routers leave on one outbound link per peer router.
//! - [`RouterLinks`] is the `Link` gRPC service: edges open a stream to register sessions and
//!   carry their stanzas (answers flow back on the same stream); other routers open one to
//!   hand over stanzas for entities this router owns.
//! - [`RouterLinks::watch_slots`] forgets, silently, the accounts of slots that moved away; their
//!   edges re-register those sessions with the new owner.

use crate::envelope;
use crate::link::{Outbox, ResponseStream};
use starling_registry::{slot_of, ClusterView, SLOT_COUNT};
use starling_router::{Home, Peers, Router, SessionId};
use starling_rpc::link::link_server::Link;
use starling_rpc::link::{item, Batch, CloseStream, Envelope, Hello, Role, SessionOpened};
use starling_xml::Element;
use starling_xmpp::session::{Deliver, ToClient};
use starling_xmpp::{BareJid, FullJid, Jid};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

/// Router-to-router forwards allowed before a stanza is dropped: slot tables converge within a
/// Raft round trip, so a stanza that keeps moving means the tables disagree.
pub const MAX_HOPS: u32 = 3;

/// How long a node waits for its own slot table to catch up with an epoch a peer already knows.
const EPOCH_CATCH_UP: Duration = Duration::from_secs(2);

/// Queue sizes of the links a router holds.
#[derive(Clone, Copy, Debug)]
pub struct LinkLimits {
    /// Envelopes queued towards one peer router.
    pub router_queue: usize,
    /// Items queued towards one edge (all its sessions share the link).
    pub edge_queue: usize,
}

impl Default for LinkLimits {
    fn default() -> LinkLimits {
        LinkLimits { router_queue: 65_536, edge_queue: 65_536 }
    }
}

/// Owner of a slot as this node sees it.
pub(crate) fn owner(view: &ClusterView, key: &str) -> Option<(u64, u64)> {
    view.slots.owner(slot_of(key))
}

/// One outbound link to a peer router.
struct PeerLink {
    /// The queue the link's stream drains.
    out: Outbox,
    /// When the link was opened: a link that broke right after opening is not redialled in a
    /// tight loop.
    opened: Instant,
}

/// The router's view of the other routers.
pub struct ClusterPeers {
    /// This router's node id.
    id: u64,
    /// The slot table and members, kept current by the registry.
    view: watch::Receiver<Arc<ClusterView>>,
    /// Outbound links by peer router id, dialled on first use.
    links: Mutex<HashMap<u64, PeerLink>>,
    /// Queue sizes.
    limits: LinkLimits,
}

impl ClusterPeers {
    /// Peers of router `id` as `view` describes them.
    pub fn new(id: u64, view: watch::Receiver<Arc<ClusterView>>, limits: LinkLimits) -> Arc<ClusterPeers> {
        Arc::new(ClusterPeers { id, view, links: Mutex::new(HashMap::new()), limits })
    }

    /// Queue an envelope for router `node`, dialling it when there is no live link.
    pub fn send(&self, node: u64, env: Envelope) -> bool {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(link) = links.get(&node) {
            if !link.out.is_closed() {
                return link.out.try_push(item::Item::Stanza(env));
            }
            if link.opened.elapsed() < Duration::from_millis(200) {
                return false;
            }
        }
        let Some(addr) = self.view.borrow().members.get(&node).map(|m| m.addr.clone()) else {
            return false;
        };
        let (out, stream) = Outbox::new(self.limits.router_queue, node);
        out.try_push(item::Item::Hello(Hello { node_id: self.id, role: Role::Router as i32 }));
        let ok = out.try_push(item::Item::Stanza(env));
        crate::metrics::link_connected(node);
        tokio::spawn(dial_router(node, addr, stream));
        links.insert(node, PeerLink { out, opened: Instant::now() });
        ok
    }
}

async fn dial_router(node: u64, addr: String, stream: crate::link::BatchStream) {
    let result = async {
        let channel = crate::connect(&addr).await?;
        let mut client = starling_rpc::link::link_client::LinkClient::new(channel);
        let mut replies = client.open(stream).await?.into_inner();
        // Routers send nothing back on this stream; reading it tells when the peer goes away.
        while let Some(r) = replies.next().await {
            r?;
        }
        Ok::<(), crate::ClusterError>(())
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(node, %addr, error = %e, "router link ended");
    }
}

impl Peers for ClusterPeers {
    fn home_of(&self, key: &str) -> Home {
        match owner(&self.view.borrow(), key) {
            Some((r, _)) if r == self.id => Home::Local,
            Some((r, _)) => Home::Remote(r),
            None => Home::Unowned,
        }
    }

    fn forward(&self, node: u64, to: &Jid, stanza: &Element) -> bool {
        let mut env = envelope::wrap(stanza);
        env.to = to.to_string();
        env.hops = 1;
        self.send(node, env)
    }
}

/// A session or component on an edge, as the router reaches it: items on the edge's link.
struct EdgeSink {
    /// The link back to the edge.
    out: Outbox,
    /// The edge's session id (0 for a component).
    session: u64,
    /// The component's domain (empty for a session).
    component: String,
}

impl Deliver for EdgeSink {
    fn deliver(&self, item: ToClient) -> bool {
        let env = |bytes: Vec<u8>, e: Option<&Element>| {
            let mut env = match e {
                Some(e) => envelope::wrap_bytes(e, bytes),
                None => Envelope { stanza: bytes, ..Envelope::default() },
            };
            env.session = self.session;
            env.component.clone_from(&self.component);
            item::Item::Stanza(env)
        };
        let it = match item {
            ToClient::Stanza(e) => env(e.to_bytes(), Some(&e)),
            ToClient::Raw(bytes) => env(bytes, None),
            // A component's stream is closed by its own edge; sessions hear the condition.
            ToClient::Close(_) if self.session == 0 => return true,
            ToClient::Close(err) => item::Item::CloseStream(CloseStream {
                session: self.session,
                condition: err.condition().into(),
            }),
        };
        self.out.try_push(it)
    }
}

/// The `Link` service of a router.
#[derive(Clone)]
pub struct RouterLinks {
    /// This router's node id.
    id: u64,
    /// The session-owning router.
    router: Arc<Router>,
    /// Homes and outbound links.
    peers: Arc<ClusterPeers>,
    /// The slot table.
    view: watch::Receiver<Arc<ClusterView>>,
    /// Queue sizes.
    limits: LinkLimits,
}

impl RouterLinks {
    /// The link service of router `id`.
    pub fn new(id: u64, router: Arc<Router>, peers: Arc<ClusterPeers>, limits: LinkLimits) -> RouterLinks {
        let view = peers.view.clone();
        RouterLinks { id, router, peers, view, limits }
    }

    /// The tonic service to add to the node's gRPC server.
    pub fn service(self) -> starling_rpc::link::link_server::LinkServer<RouterLinks> {
        starling_rpc::link::link_server::LinkServer::new(self)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    /// Follow the slot table: when slots move away, forget their accounts without presence
    /// broadcasts (the sessions live on at their edges, which re-register them with the new
    /// owner) and drop components homed there. Runs until the view's sender is gone.
    pub async fn watch_slots(self) {
        let mut view = self.view.clone();
        let mut owned = vec![false; SLOT_COUNT as usize];
        let mut before = view.borrow().slots.clone();
        loop {
            let now: Vec<bool> = {
                let v = view.borrow_and_update();
                crate::metrics::slots_moved(v.slots.moved_since(&before));
                before = v.slots.clone();
                (0..SLOT_COUNT).map(|s| matches!(v.slots.owner(s), Some((r, _)) if r == self.id)).collect()
            };
            let lost: Vec<bool> = owned.iter().zip(&now).map(|(was, is)| *was && !*is).collect();
            if lost.iter().any(|l| *l) {
                let n = self.router.evict(|bare| lost[slot_of(bare) as usize]);
                for domain in self.router.component_domains() {
                    if lost[slot_of(&domain) as usize] {
                        self.router.component_disconnected(&domain);
                    }
                }
                let moved = lost.iter().filter(|l| **l).count();
                tracing::info!(
                    slots = moved,
                    sessions = n,
                    "slots moved away; their sessions re-register elsewhere"
                );
            }
            crate::metrics::slots_owned(now.iter().filter(|o| **o).count());
            owned = now;
            if view.changed().await.is_err() {
                return;
            }
        }
    }

    /// Whether this router owns `key`'s slot at `epoch`, waiting briefly for the local table when
    /// the peer already knows a newer epoch. Err carries the epoch this router knows.
    async fn owns_at(&self, key: &str, epoch: u64) -> Result<(), u64> {
        let deadline = tokio::time::Instant::now() + EPOCH_CATCH_UP;
        let mut view = self.view.clone();
        loop {
            let current = owner(&view.borrow_and_update(), key);
            match current {
                Some((r, e)) if r == self.id && e == epoch => return Ok(()),
                Some((_, e)) if e >= epoch => return Err(e),
                _ => {}
            }
            // The peer is ahead of us: wait for our copy of the table.
            if tokio::time::timeout_at(deadline, view.changed()).await.is_err() {
                return Err(current.map(|(_, e)| e).unwrap_or(0));
            }
        }
    }

    /// A stanza another router handed over.
    async fn on_forwarded(&self, env: Envelope) {
        let Ok(to) = Jid::new(&env.to) else { return };
        let key = if to.node().is_some() { to.to_bare().to_string() } else { to.domain().to_string() };
        match self.peers.home_of(&key) {
            Home::Local => {}
            Home::Remote(node) if env.hops < MAX_HOPS => {
                let mut env = env;
                env.hops += 1;
                self.peers.send(node, env);
                return;
            }
            _ => {
                tracing::debug!(to = %env.to, hops = env.hops, "dropping a stanza nobody owns");
                return;
            }
        }
        match envelope::open(&env) {
            Ok(stanza) => {
                let span = envelope::span(envelope::Hop::RouterDeliver, &env);
                self.router.handle_forwarded(to, stanza).instrument(span).await
            }
            Err(e) => tracing::warn!(error = %e, "unparsable stanza from a peer router"),
        }
    }
}

/// The sessions and components one edge registered over its link.
#[derive(Default)]
struct EdgeState {
    /// Edge session id → the bound JID and the router's id for the bind.
    sessions: HashMap<u64, (FullJid, SessionId)>,
    /// Component domains the edge registered.
    components: Vec<String>,
}

impl RouterLinks {
    async fn serve_edge(&self, edge: u64, mut batches: Streaming<Batch>, out: Outbox, mut state: EdgeState) {
        while let Some(batch) = batches.next().await {
            let Ok(batch) = batch else { break };
            for it in batch.items.into_iter().filter_map(|i| i.item) {
                self.edge_item(&mut state, &out, it).await;
            }
        }
        tracing::info!(edge, sessions = state.sessions.len(), "edge link closed; its sessions end");
        // What the edge had queued for them died with the link (see docs/architecture.md).
        for (_, (jid, sid)) in state.sessions.drain() {
            self.router.unbind(&jid, sid, Vec::new()).await;
        }
        for domain in state.components {
            self.router.component_disconnected(&domain);
        }
    }

    async fn edge_item(&self, state: &mut EdgeState, out: &Outbox, it: item::Item) {
        match it {
            item::Item::Stanza(env) if !env.component.is_empty() => match envelope::open(&env) {
                Ok(stanza) => self.router.handle_from_component(&env.component, stanza).await,
                Err(e) => tracing::warn!(error = %e, "unparsable stanza from an edge"),
            },
            item::Item::Stanza(env) => {
                let Some((jid, _)) = state.sessions.get(&env.session) else {
                    return tracing::debug!(session = env.session, "stanza for an unknown session dropped");
                };
                match envelope::open(&env) {
                    Ok(stanza) => {
                        let span = envelope::span(envelope::Hop::RouterRoute, &env);
                        self.router.handle_from_client(jid, stanza).instrument(span).await
                    }
                    Err(e) => tracing::warn!(error = %e, "unparsable stanza from an edge"),
                }
            }
            item::Item::SessionOpen(open) => {
                let reply = self.open_session(state, out, open).await;
                out.try_push(item::Item::SessionOpened(reply));
            }
            item::Item::SessionClose(close) => {
                // The queue the session left, if any, follows as an Undelivered item.
                if let Some((jid, sid)) = state.sessions.remove(&close.session) {
                    self.router.unbind(&jid, sid, Vec::new()).await;
                }
            }
            item::Item::Undelivered(u) => {
                let Ok(account) = BareJid::new(&u.account) else {
                    return tracing::debug!(account = %u.account, "undelivered stanzas for a bad JID dropped");
                };
                // Still bound here when its connection's queue was full: skip it this time.
                let exclude = state.sessions.get(&u.session).map(|(_, sid)| *sid);
                let items = u.stanzas.into_iter().map(ToClient::Raw).collect();
                self.router.reroute_undelivered(&account, exclude, items).await;
            }
            item::Item::ComponentOpen(c) => {
                let sink = Arc::new(EdgeSink { out: out.clone(), session: 0, component: c.domain.clone() });
                // A component re-registered after a slot move replaces its old entry.
                self.router.component_disconnected(&c.domain);
                if self.router.component_connected(&c.domain, sink) && !state.components.contains(&c.domain) {
                    state.components.push(c.domain);
                }
            }
            item::Item::ComponentClose(c) => {
                state.components.retain(|d| *d != c.domain);
                self.router.component_disconnected(&c.domain);
            }
            item::Item::Hello(_) | item::Item::SessionOpened(_) | item::Item::CloseStream(_) => {}
        }
    }

    async fn open_session(
        &self,
        state: &mut EdgeState,
        out: &Outbox,
        open: starling_rpc::link::SessionOpen,
    ) -> SessionOpened {
        let refuse = |error: &str, epoch: u64| SessionOpened {
            session: open.session,
            ok: false,
            error: error.into(),
            epoch,
        };
        let Ok(jid) = FullJid::new(&open.jid) else { return refuse("not-served", 0) };
        // Fencing: the edge must have routed by the epoch this router owns the slot under.
        if let Err(epoch) = self.owns_at(&jid.to_bare().to_string(), open.epoch).await {
            return refuse("stale-epoch", epoch);
        }
        let sink = Arc::new(EdgeSink { out: out.clone(), session: open.session, component: String::new() });
        let sid = match self.router.bind(&jid, sink).await {
            Ok(sid) => sid,
            Err(starling_router::BindError::NotServed) => return refuse("not-served", 0),
            Err(e) => {
                tracing::warn!(%jid, error = %e, "bind failed");
                return refuse("internal", 0);
            }
        };
        if let Some((old_jid, old_sid)) = state.sessions.insert(open.session, (jid.clone(), sid)) {
            if old_sid != sid {
                self.router.unbind(&old_jid, old_sid, Vec::new()).await;
            }
        }
        if open.reregister {
            // Take over the session's state from its previous owner.
            if open.roster_interested {
                self.router.set_roster_interested(&jid);
            }
            if !open.presence.is_empty() {
                if let Ok(presence) = starling_xmpp::session::parse_stored_stanza(&open.presence) {
                    self.router.handle_from_client(&jid, presence).await;
                }
            }
        }
        SessionOpened { session: open.session, ok: true, error: String::new(), epoch: open.epoch }
    }
}

#[tonic::async_trait]
impl Link for RouterLinks {
    type OpenStream = ResponseStream;

    async fn open(&self, request: Request<Streaming<Batch>>) -> Result<Response<ResponseStream>, Status> {
        let mut batches = request.into_inner();
        let first = batches.next().await.ok_or_else(|| Status::invalid_argument("empty link"))??;
        let mut items = first.items.into_iter().filter_map(|i| i.item);
        let Some(item::Item::Hello(hello)) = items.next() else {
            return Err(Status::invalid_argument("a link starts with Hello"));
        };
        let rest: Vec<item::Item> = items.collect();
        let peer = hello.node_id;
        let (out, stream) = Outbox::new(self.limits.edge_queue, peer);
        let this = self.clone();
        match Role::try_from(hello.role) {
            Ok(Role::Router) => {
                tokio::spawn(async move {
                    // Keep the reply stream open while the peer sends.
                    let _out = out;
                    for it in rest {
                        if let item::Item::Stanza(env) = it {
                            this.on_forwarded(env).await;
                        }
                    }
                    while let Some(Ok(batch)) = batches.next().await {
                        for it in batch.items.into_iter().filter_map(|i| i.item) {
                            if let item::Item::Stanza(env) = it {
                                this.on_forwarded(env).await;
                            }
                        }
                    }
                    tracing::debug!(peer, "inbound router link closed");
                });
            }
            Ok(Role::Edge) => {
                tracing::info!(edge = peer, "edge linked");
                tokio::spawn(async move {
                    let mut state = EdgeState::default();
                    for it in rest {
                        this.edge_item(&mut state, &out, it).await;
                    }
                    this.serve_edge(peer, batches, out, state).await;
                });
            }
            _ => return Err(Status::invalid_argument("unknown role")),
        }
        Ok(Response::new(ResponseStream(stream)))
    }
}
