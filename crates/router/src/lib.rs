//! The router: owner of sessions and of everything RFC 6121 decides.
//!
//! The router holds, for each online account, its bound resources (with their availability,
//! priority and directed-presence lists) and a cached copy of its roster. Connection holders
//! (the edge) bind sessions, pass client stanzas in with [`Router::handle_from_client`], and
//! receive stanzas through the [`Deliver`] sink they registered. The router never sees a socket.
//!
//! Modules:
//! - [`bus`]: presence fan-out between routers ([`PresenceBus`]; [`LocalBus`] in `serve`).
//! - [`delivery`]: where a stanza addressed to a local JID goes (RFC 6121 §8.5), offline storage.
//! - [`presence`]: broadcast, probes, directed presence (RFC 6121 §4).
//! - [`roster`]: roster get/set/remove and the subscription handshake (RFC 6121 §2, §3).
//! - [`services`]: iq services of the server and of accounts (disco, ping, version, vCard,
//!   private XML, registration changes, session).
//!
//! Concurrency: accounts are spread over mutex-guarded shards; no lock is held across an
//! `.await`, and store calls run on blocking threads.

pub mod bus;
pub mod delivery;
pub mod presence;
pub mod roster;
pub mod services;

pub use bus::{LocalBus, PresenceBus};
use starling_store::{Access, Store, StoreError};
use starling_xml::Element;
use starling_xmpp::roster::RosterItem;
use starling_xmpp::session::{Deliver, ToClient};
use starling_xmpp::stanza::{self, StanzaKind};
use starling_xmpp::{ns, BareJid, FullJid, Jid, StanzaError, StreamError};
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// A boxed, sendable future (routing recursion needs one).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Router settings, filled by the binary from its configuration.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// Domains whose accounts this router serves.
    pub domains: Vec<String>,
    /// Most offline messages kept per account (XEP-0160); more are bounced.
    pub offline_max: usize,
    /// Whether XEP-0077 registration is enabled (advertised in disco).
    pub registration_enabled: bool,
    /// Name and version answered to XEP-0092 queries.
    pub software_name: String,
    /// Version answered to XEP-0092 queries.
    pub software_version: String,
    /// PBKDF2 iterations for credentials derived here (in-band password change, XEP-0077).
    pub scram_iterations: u32,
}

impl Default for RouterConfig {
    fn default() -> RouterConfig {
        RouterConfig {
            domains: vec!["localhost".into()],
            offline_max: 1000,
            registration_enabled: false,
            software_name: "Starling".into(),
            software_version: env!("CARGO_PKG_VERSION").into(),
            scram_iterations: starling_store::DEFAULT_SCRAM_ITERATIONS,
        }
    }
}

/// Where the entity a stanza is addressed to is homed, as far as this router knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Home {
    /// This router owns it (always so in `serve`).
    Local,
    /// Another router owns it: forward the stanza there.
    Remote(u64),
    /// Nobody owns it right now (a slot between owners): the stanza cannot be routed.
    Unowned,
}

/// The rest of the cluster as the router sees it: who owns which bare JID or component domain,
/// and a way to hand a stanza to another router. `serve` uses [`SingleNode`]; a cluster
/// implements it over the slot table and router-to-router links.
pub trait Peers: Send + Sync + 'static {
    /// The home of a bare JID (`user@domain`) or of a component domain.
    fn home_of(&self, key: &str) -> Home;
    /// Queue `stanza` (addressed to `to`, 'from' stamped) for router `node`. Never blocks:
    /// false when the link to it is full or down, and the caller answers the sender with an error.
    fn forward(&self, node: u64, to: &Jid, stanza: &Element) -> bool;
}

/// One router that owns everything: the `serve` role.
#[derive(Debug, Default)]
pub struct SingleNode;

impl Peers for SingleNode {
    fn home_of(&self, _key: &str) -> Home {
        Home::Local
    }

    fn forward(&self, _node: u64, _to: &Jid, _stanza: &Element) -> bool {
        false
    }
}

/// Identifies one bound session, so a late unbind from a replaced connection cannot remove the
/// session that replaced it.
pub type SessionId = u64;

/// Why a bind was refused.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The account does not belong to a served domain.
    #[error("domain not served")]
    NotServed,
    /// The store failed while loading the roster.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One bound resource.
pub(crate) struct Session {
    /// Which bind this is (see [`SessionId`]).
    pub(crate) id: SessionId,
    /// The resource part of the full JID.
    pub(crate) resource: String,
    /// Where stanzas for this session go.
    pub(crate) sink: Arc<dyn Deliver>,
    /// Last broadcast available presence and its priority; None until initial presence
    /// (RFC 6121 §4.2) and after unavailable.
    pub(crate) available: Option<Availability>,
    /// Whether the session asked for the roster, and so gets roster pushes (RFC 6121 §2.1.6).
    pub(crate) roster_interested: bool,
    /// JIDs this session sent directed presence to, which must hear its unavailable (§4.6.3).
    pub(crate) directed: HashSet<String>,
}

/// An available resource's presence.
#[derive(Clone)]
pub(crate) struct Availability {
    /// Priority, -128..=127 (RFC 6121 §4.7.2.3).
    pub(crate) priority: i8,
    /// The presence stanza as broadcast (with 'from' stamped, no 'to').
    pub(crate) presence: Element,
}

/// An online account: its sessions and its cached roster.
pub(crate) struct Account {
    /// Bound resources.
    pub(crate) sessions: Vec<Session>,
    /// Roster keyed by contact bare JID; loaded at first bind, written through on change.
    pub(crate) roster: HashMap<String, RosterItem>,
}

/// Number of account shards; a power of two well above the core count keeps contention low.
const SHARDS: usize = 64;

/// Number of shards of the presence-interest index.
const INTEREST_SHARDS: usize = 16;

/// Number of per-account locks of each kind (roster, offline). Accounts share a lock only when
/// they hash alike, and no code holds two at once, so sharing costs a little waiting and never a
/// deadlock.
const ACCOUNT_LOCKS: usize = 256;

/// Whether a roster item makes its owner want the contact's presence (subscription 'to' or
/// 'both', RFC 6121 §4.2.2; hidden items are subscriptions in progress, not yet shown).
pub(crate) fn wants_presence(item: &RosterItem) -> bool {
    !item.hidden && item.state.subscription.has_to()
}

/// The router. Cheap to share behind an `Arc`.
pub struct Router {
    /// Settings.
    pub(crate) cfg: RouterConfig,
    /// Durable state.
    pub(crate) store: Arc<dyn Store>,
    /// Online accounts, sharded by bare JID.
    shards: Vec<Mutex<HashMap<String, Account>>>,
    /// Hasher for shard selection.
    hasher: std::collections::hash_map::RandomState,
    /// Connected external components by domain (XEP-0114).
    components: RwLock<HashMap<String, Arc<dyn Deliver>>>,
    /// Source of session ids.
    next_session: AtomicU64,
    /// Who owns what in the cluster ([`SingleNode`] in `serve`).
    peers: Arc<dyn Peers>,
    /// Presence transport to other routers ([`LocalBus`] in `serve`).
    pub(crate) bus: Arc<dyn PresenceBus>,
    /// Contact bare JID → local online accounts that want its presence; kept only when the bus
    /// distributes (its 0 → 1 and 1 → 0 transitions drive [`PresenceBus::watch`]/`unwatch`).
    interest: Vec<Mutex<HashMap<String, HashSet<String>>>>,
    /// Serialize the read-modify-write of one account's roster (roster sets and removes,
    /// subscription transitions, the first load into the cache): without it two concurrent
    /// changes both read the old item and the second write loses the first. Sharded by bare
    /// JID, held across the store write, never while routing (see [`Router::roster_lock`]).
    roster_locks: Vec<tokio::sync::Mutex<()>>,
    /// Serialize storing an offline message with handing the stored ones out at initial
    /// presence (XEP-0160), per account: a message that chose offline storage just before a
    /// resource became available is otherwise stored after that resource's flush and waits for
    /// the next login.
    offline_locks: Vec<tokio::sync::Mutex<()>>,
}

/// A session's sink, collected under a lock and used after it.
pub(crate) struct Target {
    /// Which bind it is, so a re-delivery can skip the session that could not take a stanza.
    pub(crate) id: SessionId,
    /// Where its stanzas go.
    pub(crate) sink: Arc<dyn Deliver>,
}

impl Session {
    /// This session as a delivery target.
    pub(crate) fn target(&self) -> Target {
        Target { id: self.id, sink: self.sink.clone() }
    }
}

impl Router {
    /// A single-node router over `store`: it owns every account.
    pub fn new(cfg: RouterConfig, store: Arc<dyn Store>) -> Router {
        Router::with_peers(cfg, store, Arc::new(SingleNode))
    }

    /// A router that owns the accounts `peers` says are [`Home::Local`] and forwards the rest.
    pub fn with_peers(cfg: RouterConfig, store: Arc<dyn Store>, peers: Arc<dyn Peers>) -> Router {
        Router::with_bus(cfg, store, peers, Arc::new(LocalBus))
    }

    /// A router whose presences also travel over `bus` to the other routers.
    pub fn with_bus(
        cfg: RouterConfig,
        store: Arc<dyn Store>,
        peers: Arc<dyn Peers>,
        bus: Arc<dyn PresenceBus>,
    ) -> Router {
        Router {
            peers,
            bus,
            interest: (0..INTEREST_SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            roster_locks: (0..ACCOUNT_LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
            offline_locks: (0..ACCOUNT_LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
            cfg,
            store,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            components: RwLock::new(HashMap::new()),
            next_session: AtomicU64::new(1),
        }
    }

    /// Settings in force.
    pub fn config(&self) -> &RouterConfig {
        &self.cfg
    }

    /// Whether `domain` is one of ours (accounts live here).
    pub fn serves(&self, domain: &str) -> bool {
        self.cfg.domains.iter().any(|d| d == domain)
    }

    /// The first served domain, used as 'from' for server-generated stanzas without a better one.
    pub(crate) fn primary_domain(&self) -> &str {
        self.cfg.domains.first().map(String::as_str).unwrap_or("localhost")
    }

    pub(crate) fn shard(&self, bare: &str) -> MutexGuard<'_, HashMap<String, Account>> {
        let idx = (self.hasher.hash_one(bare) as usize) % SHARDS;
        // A poisoned shard means a panic elsewhere; the data is still consistent enough to keep serving.
        self.shards[idx].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lock that serializes changes to `bare`'s roster. Whoever holds it may read the item,
    /// write the store and the cache, and push; it must not route a stanza (routing can reach
    /// another account's roster, and two locks held at once could deadlock).
    pub(crate) async fn roster_lock(&self, bare: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let idx = (self.hasher.hash_one(bare) as usize) % ACCOUNT_LOCKS;
        self.roster_locks[idx].lock().await
    }

    /// The lock that serializes `bare`'s offline store and flush (see `offline_locks`). Its
    /// holder delivers to sinks and writes the store, and routes nothing but error replies.
    pub(crate) async fn offline_lock(&self, bare: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let idx = (self.hasher.hash_one(bare) as usize) % ACCOUNT_LOCKS;
        self.offline_locks[idx].lock().await
    }

    /// Run a store call that may write: on a blocking thread.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&(dyn Store + 'static)) -> Result<T, StoreError> + Send + 'static,
    {
        starling_store::call(&self.store, Access::Write, f).await
    }

    /// Run a store call that only reads: in place when the backend's reads are local.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&(dyn Store + 'static)) -> Result<T, StoreError> + Send + 'static,
    {
        starling_store::call(&self.store, Access::Read, f).await
    }

    /// Bind a resource (RFC 6120 §7). A session already bound to the same full JID is replaced:
    /// it receives `<conflict/>` and its unavailable presence is broadcast (the new session wins).
    pub async fn bind(&self, jid: &FullJid, sink: Arc<dyn Deliver>) -> Result<SessionId, BindError> {
        if !self.serves(jid.domain().as_str()) {
            return Err(BindError::NotServed);
        }
        let bare = starling_xmpp::bare_part(jid.as_str()).to_owned();
        let resource = jid.resource().as_str().to_owned();
        // Loading the roster and caching it is one step against concurrent roster changes:
        // a change written to the store after the load would otherwise be missing from the cache.
        let _roster = self.roster_lock(&bare).await;
        let online = self.shard(&bare).contains_key(&bare);
        let loaded = if online {
            None
        } else {
            let user = bare.clone();
            Some(self.read(move |s| s.roster(&user)).await?)
        };
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let mut watched = Vec::new();
        let replaced = {
            let mut shard = self.shard(&bare);
            let account = shard.entry(bare.clone()).or_insert_with(|| {
                let roster: HashMap<String, RosterItem> = loaded
                    .map(|(_, items)| items.into_iter().map(|i| (i.jid.clone(), i)).collect())
                    .unwrap_or_default();
                watched = roster.values().filter(|i| wants_presence(i)).map(|i| i.jid.clone()).collect();
                Account { sessions: Vec::new(), roster }
            });
            let old = account
                .sessions
                .iter()
                .position(|s| s.resource == resource)
                .map(|i| account.sessions.swap_remove(i));
            // Most accounts have one session: no room for four (a Vec's first growth).
            account.sessions.reserve_exact(1);
            account.sessions.push(Session {
                id,
                resource,
                sink,
                available: None,
                roster_interested: false,
                directed: HashSet::new(),
            });
            old
        };
        drop(_roster);
        for contact in watched {
            self.set_interest(&bare, &contact, true);
        }
        if replaced.is_none() {
            starling_telemetry::metrics().sessions.inc();
        }
        if let Some(old) = replaced {
            old.sink.deliver(ToClient::Close(StreamError::Conflict));
            if old.available.is_some() {
                self.broadcast_unavailable(jid, old.directed, None).await;
            }
        }
        Ok(id)
    }

    /// The session `id` for `jid` ended (stream closed or connection lost). Broadcasts its
    /// unavailable presence if it was available (RFC 6121 §4.5.2, and §4.5.3 for abrupt ends).
    ///
    /// `undelivered` is what was queued to the session and never written to its stream; once the
    /// session is out of the table it is handed to [`Router::reroute_undelivered`], so it is not
    /// lost with the connection. This runs even when the session is no longer bound here (it was
    /// replaced by a conflicting bind, or its slot moved): the queue still needs a home.
    pub async fn unbind(&self, jid: &FullJid, id: SessionId, undelivered: Vec<ToClient>) {
        let bare = starling_xmpp::bare_part(jid.as_str()).to_owned();
        let removed = 'removed: {
            let mut shard = self.shard(&bare);
            let Some(account) = shard.get_mut(&bare) else { break 'removed None };
            let Some(pos) = account.sessions.iter().position(|s| s.id == id) else { break 'removed None };
            let s = account.sessions.swap_remove(pos);
            starling_telemetry::metrics().sessions.dec();
            let gone = account.sessions.is_empty().then(|| shard.remove(&bare)).flatten();
            Some((s, gone))
        };
        if !undelivered.is_empty() {
            self.reroute_undelivered(&jid.to_bare(), Some(id), undelivered).await;
        }
        let Some((removed, gone)) = removed else { return };
        if let Some(account) = gone {
            self.drop_interests(&bare, &account);
        }
        if removed.available.is_some() {
            self.broadcast_unavailable(jid, removed.directed, None).await;
        }
    }

    /// Number of bound sessions (for metrics and tests).
    pub fn session_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.values().map(|a| a.sessions.len()).sum()).unwrap_or(0))
            .sum()
    }

    /// Register an external component for `domain` (XEP-0114). Refused when one is connected.
    pub fn component_connected(&self, domain: &str, sink: Arc<dyn Deliver>) -> bool {
        let mut map = self.components.write().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(domain) {
            return false;
        }
        map.insert(domain.to_owned(), sink);
        true
    }

    /// The component for `domain` disconnected.
    pub fn component_disconnected(&self, domain: &str) {
        self.components.write().unwrap_or_else(|e| e.into_inner()).remove(domain);
    }

    /// Connected component domains, sorted (disco#items of the server lists them).
    pub fn component_domains(&self) -> Vec<String> {
        let mut v: Vec<String> =
            self.components.read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        v.sort();
        v
    }

    pub(crate) fn component_sink(&self, domain: &str) -> Option<Arc<dyn Deliver>> {
        self.components.read().unwrap_or_else(|e| e.into_inner()).get(domain).cloned()
    }

    /// A stanza from a bound client session. The edge has already checked it is a stanza and
    /// stamped 'from' with the session's full JID (RFC 6120 §8.1.2.1).
    pub async fn handle_from_client(&self, from: &FullJid, mut stanza: Element) {
        let Some(kind) = stanza::kind_of(&stanza) else { return };
        // The edge stamps 'from' already; the router owns the guarantee, so it stamps it too.
        stanza.set_attr("from", from.as_str().to_owned());
        let to = match stanza.attr("to").map(Jid::new) {
            None => None,
            Some(Ok(j)) => Some(j),
            Some(Err(_)) => {
                self.bounce(&stanza, StanzaError::JidMalformed);
                return;
            }
        };
        match kind {
            StanzaKind::Message => self.outbound_message(from, to, stanza).await,
            StanzaKind::Presence => self.outbound_presence(from, to, stanza).await,
            StanzaKind::Iq => self.outbound_iq(from, to, stanza).await,
        }
    }

    /// A stanza from a connected component; 'from' was checked by the edge to be within
    /// `domain`. It is routed like any inbound stanza.
    pub async fn handle_from_component(&self, _domain: &str, stanza: Element) {
        if stanza::kind_of(&stanza).is_none() {
            return;
        }
        match stanza.attr("to").map(Jid::new) {
            Some(Ok(to)) => self.route(to, stanza).await,
            Some(Err(_)) => self.bounce(&stanza, StanzaError::JidMalformed),
            None => self.bounce(&stanza, StanzaError::BadRequest),
        }
    }

    async fn outbound_message(&self, from: &FullJid, to: Option<Jid>, mut stanza: Element) {
        // RFC 6121 §8.1.1.1 / RFC 6120 §10.3: no 'to' means the sender's own account.
        let to = to.unwrap_or_else(|| Jid::from(from.to_bare()));
        if to.node().is_none() && to.resource().is_none() && self.serves(to.domain().as_str()) {
            // Messages to the server itself: nothing here consumes them.
            self.bounce(&stanza, StanzaError::ServiceUnavailable);
            return;
        }
        stanza.set_attr("to", to.as_str().to_owned());
        self.route(to, stanza).await;
    }

    async fn outbound_iq(&self, from: &FullJid, to: Option<Jid>, stanza: Element) {
        let is_request = matches!(stanza.attr("type"), Some("get") | Some("set"));
        // RFC 6120 §10.3.3 / RFC 6121 §8.5.1: no 'to', or the own bare JID: the server answers
        // for the account.
        let Some(to) = to else { return self.account_iq(from, &from.to_bare(), stanza).await };
        if to.is_bare() && to.to_bare() == from.to_bare() {
            return self.account_iq(from, &from.to_bare(), stanza).await;
        }
        if to.is_bare() && to.node().is_none() && self.serves(to.domain().as_str()) {
            if is_request {
                self.server_iq(from, stanza).await
            }
            return;
        }
        self.route(to, stanza).await
    }

    /// Deliver a stanza that already has its 'from' stamped to wherever `to` points:
    /// a local account, the server, a component, or nowhere (remote domains are not federated).
    ///
    /// Boxed because routing recurses (an inbound subscription can answer with another stanza).
    pub(crate) fn route(&self, to: Jid, stanza: Element) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.route_now(to, stanza).await })
    }

    async fn route_now(&self, to: Jid, stanza: Element) {
        let domain = to.domain().as_str();
        if self.serves(domain) {
            if to.node().is_none() {
                return self.to_server(stanza).await;
            }
            match self.peers.home_of(starling_xmpp::bare_part(to.as_str())) {
                Home::Local => self.deliver_local(to, stanza).await,
                Home::Remote(node) => self.forward_or_bounce(node, &to, stanza),
                Home::Unowned => self.bounce(&stanza, StanzaError::ServiceUnavailable),
            }
        } else if let Some(sink) = self.component_sink(domain) {
            if !sink.deliver(ToClient::Stanza(stanza.clone())) {
                self.bounce(&stanza, StanzaError::ServiceUnavailable);
            }
        } else {
            match self.peers.home_of(domain) {
                // A component of another router's slot.
                Home::Remote(node) => self.forward_or_bounce(node, &to, stanza),
                // Without server-to-server federation every other domain is unreachable
                // (RFC 6120 §10.4.3).
                Home::Local | Home::Unowned => self.bounce(&stanza, StanzaError::RemoteServerNotFound),
            }
        }
    }

    /// Hand a stanza to the router that owns its recipient; when the link cannot take it, the
    /// sender hears `<resource-constraint/>` rather than silence (RFC 6120 §8.3.3.18).
    fn forward_or_bounce(&self, node: u64, to: &Jid, stanza: Element) {
        if !self.peers.forward(node, to, &stanza) {
            self.bounce(&stanza, StanzaError::ResourceConstraint);
        }
    }

    /// A stanza that another router forwarded because this router owns its recipient.
    /// Inbound processing runs here (RFC 6121 §8.5); if the slot moved again meanwhile, the
    /// stanza is forwarded on (the link bounds the hops).
    pub async fn handle_forwarded(&self, to: Jid, stanza: Element) {
        if stanza::kind_of(&stanza).is_none() {
            return;
        }
        self.route(to, stanza).await
    }

    /// A stanza addressed to a served domain itself (not from a local client, which goes through
    /// [`Router::outbound_iq`]): answer iq requests, ignore the rest.
    async fn to_server(&self, stanza: Element) {
        if stanza.name == "iq" && matches!(stanza.attr("type"), Some("get") | Some("set")) {
            if let Some(Ok(Ok(from))) = stanza.attr("from").map(|f| Jid::new(f).map(Jid::try_into_full)) {
                if self.serves(from.domain().as_str()) {
                    self.server_iq(&from, stanza).await;
                    return;
                }
            }
            let reply = services::answer_server_iq_static(self, &stanza);
            self.send_reply(reply).await;
        }
    }

    /// Send a server-generated reply (already addressed) to its 'to'.
    pub(crate) async fn send_reply(&self, reply: Element) {
        match reply.attr("to").map(Jid::new) {
            Some(Ok(to)) => self.route(to, reply).await,
            _ => tracing::debug!("reply without a valid 'to' dropped"),
        }
    }

    /// Answer `stanza` with an error, if errors may be sent for it (never for errors/results).
    /// The reply is routed back to its sender synchronously when the sender is a local session
    /// or component; other senders cannot exist without federation.
    pub(crate) fn bounce(&self, stanza: &Element, error: StanzaError) {
        if !stanza::may_bounce(stanza) {
            return;
        }
        starling_telemetry::stanza_error(error.condition());
        let reply = stanza::error_reply(stanza, error, self.primary_domain());
        let Some(Ok(to)) = reply.attr("to").map(Jid::new) else { return };
        let domain = to.domain().as_str();
        if self.serves(domain) {
            match self.peers.home_of(starling_xmpp::bare_part(to.as_str())) {
                Home::Local => {
                    if let Ok(full) = to.try_as_full() {
                        if let Some(t) = self.session_target(full) {
                            t.sink.deliver(ToClient::Stanza(reply));
                        }
                    }
                }
                // An error for a sender homed elsewhere (inbound processing failed here).
                // Error replies are never answered with errors, so this cannot loop.
                Home::Remote(node) => {
                    self.peers.forward(node, &to, &reply);
                }
                Home::Unowned => {}
            }
        } else if let Some(sink) = self.component_sink(domain) {
            sink.deliver(ToClient::Stanza(reply));
        } else if let Home::Remote(node) = self.peers.home_of(domain) {
            self.peers.forward(node, &to, &reply);
        }
    }

    /// Forget, without any presence broadcast, every online account `moved` says no longer
    /// belongs here (its slot moved to another router, whose edges re-register the sessions
    /// there). Returns how many sessions were dropped.
    pub fn evict(&self, moved: impl Fn(&str) -> bool) -> usize {
        let mut dropped = 0;
        let mut gone = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let leaving: Vec<String> = shard.keys().filter(|bare| moved(bare)).cloned().collect();
            for bare in leaving {
                if let Some(account) = shard.remove(&bare) {
                    dropped += account.sessions.len();
                    starling_telemetry::metrics().sessions.sub(account.sessions.len() as i64);
                    gone.push((bare, account));
                }
            }
        }
        for (bare, account) in gone {
            self.drop_interests(&bare, &account);
            self.bus.forget(&bare);
        }
        dropped
    }

    fn interest_shard(&self, contact: &str) -> MutexGuard<'_, HashMap<String, HashSet<String>>> {
        let idx = (self.hasher.hash_one(contact) as usize) % INTEREST_SHARDS;
        self.interest[idx].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record whether local `account` wants `contact`'s presence; the first and the last
    /// interested account subscribe and unsubscribe the bus.
    pub(crate) fn set_interest(&self, account: &str, contact: &str, on: bool) {
        if !self.bus.distributes() {
            return;
        }
        let mut index = self.interest_shard(contact);
        if on {
            let set = index.entry(contact.to_owned()).or_default();
            if set.insert(account.to_owned()) && set.len() == 1 {
                self.bus.watch(contact);
            }
        } else if let Some(set) = index.get_mut(contact) {
            if set.remove(account) && set.is_empty() {
                index.remove(contact);
                self.bus.unwatch(contact);
            }
        }
    }

    /// An account went offline here (or moved away): it no longer wants anyone's presence.
    fn drop_interests(&self, bare: &str, account: &Account) {
        for item in account.roster.values().filter(|i| wants_presence(i)) {
            self.set_interest(bare, &item.jid, false);
        }
    }

    /// A presence another router published on the bus: deliver it to the available resources
    /// of every local account that wants it (RFC 6121 §4.2.3 / §4.5.3 inbound processing; the
    /// interest index holds only accounts whose roster allows it).
    pub fn on_bus_presence(&self, presence: Element) {
        let Some(Ok(from)) = presence.attr("from").map(FullJid::new) else { return };
        let bare = starling_xmpp::bare_part(from.as_str()).to_owned();
        let accounts: Vec<String> =
            self.interest_shard(&bare).get(&bare).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        let template = presence.template("to");
        for account in accounts {
            if self.peers.home_of(&account) != Home::Local {
                continue;
            }
            self.deliver_template(&account, &template, None);
        }
    }

    /// Whether the bus, not this router, delivers presence to `contact` (a bare JID): a
    /// distributing bus and an account of a served domain homed on another router.
    pub(crate) fn bus_delivers(&self, contact: &str) -> bool {
        self.bus.distributes() && self.served_home(contact).is_some_and(|home| home != Home::Local)
    }

    /// Where the account `contact` (a bare JID) is homed, when its domain is one this server
    /// serves; `None` for a JID of another domain (and for a domain JID without a localpart).
    pub(crate) fn served_home(&self, contact: &str) -> Option<Home> {
        let (_, domain) = contact.split_once('@')?;
        self.serves(domain).then(|| self.peers.home_of(contact))
    }

    /// The sink of one bound session.
    pub(crate) fn session_target(&self, full: &FullJid) -> Option<Target> {
        let bare = starling_xmpp::bare_part(full.as_str()).to_owned();
        let shard = self.shard(&bare);
        let account = shard.get(&bare)?;
        account.sessions.iter().find(|s| s.resource == full.resource().as_str()).map(Session::target)
    }

    /// Whether an account exists (bound sessions imply it does).
    pub(crate) async fn account_exists(&self, bare: &BareJid) -> bool {
        let user = bare.to_string();
        if self.shard(&user).contains_key(&user) {
            return true;
        }
        matches!(self.read(move |s| s.credentials(&user)).await, Ok(Some(_)))
    }
}

/// The content namespace used for stanzas the router creates.
pub(crate) const CONTENT_NS: &str = ns::CLIENT;

#[cfg(test)]
mod tests;
