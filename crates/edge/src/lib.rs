//! The edge: where client and component connections end.
//!
//! The edge owns sockets and everything about a stream that is not routing: the stream header,
//! STARTTLS and direct TLS, SASL, resource binding, limits and timeouts, and the checks that make
//! every stanza it forwards trustworthy (a well-formed stanza, 'from' stamped by the server).
//! It hands bound sessions and their stanzas to a [`SessionHost`] — the in-process router in
//! `serve`, a link to remote routers in a cluster.
//!
//! Modules:
//! - [`c2s`]: one client connection, from the first byte to the last (RFC 6120).
//! - [`component`]: one external component connection (XEP-0114).
//! - [`io`]: the connection type (plain or TLS) and the read/write helpers both use.
//! - [`tls`]: rustls server configuration, certificate loading and self-signed generation.
//! - [`limiter`]: failed-authentication rate limiting per address.
//! - `queue`: the bounded queue from the routing side to one connection ([`ChannelSink`]).

pub mod c2s;
pub mod component;
mod counters;
mod features;
pub mod io;
pub mod limiter;
mod queue;
pub mod tls;

pub use queue::{ChannelSink, QueueReceiver};

use starling_store::AccountStore;
use starling_xml::{Element, Limits};
use starling_xmpp::session::{Deliver, ToClient};
use starling_xmpp::FullJid;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// What the edge needs from the routing side. Implemented by the binary over the in-process
/// router; a cluster implements it over gRPC links.
pub trait SessionHost: Send + Sync + 'static {
    /// Bind a full JID to a sink; returns an id that identifies this bind for [`SessionHost::unbind`].
    fn bind(&self, jid: &FullJid, sink: Arc<dyn Deliver>) -> impl Future<Output = Option<u64>> + Send;
    /// A stanza from the bound session `from` ('from' already stamped).
    fn handle(&self, from: &FullJid, stanza: Element) -> impl Future<Output = ()> + Send;
    /// The session ended. `undelivered` is what was queued to it and never written to the
    /// stream (the rest of its queue, and a batch whose write failed): the routing side decides
    /// what becomes of it (re-delivery, offline storage, error replies), so nothing queued to a
    /// session is lost silently with its connection.
    fn unbind(&self, jid: &FullJid, id: u64, undelivered: Vec<ToClient>) -> impl Future<Output = ()> + Send;
    /// A component authenticated for `domain`; false if one is already connected.
    fn component_connected(&self, domain: &str, sink: Arc<dyn Deliver>) -> bool;
    /// The component for `domain` went away.
    fn component_disconnected(&self, domain: &str);
    /// A stanza from the component of `domain` ('from' checked to be within it).
    fn handle_from_component(&self, domain: &str, stanza: Element) -> impl Future<Output = ()> + Send;
}

/// Edge settings.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    /// Domains clients may open streams to.
    pub domains: Vec<String>,
    /// Refuse authentication until the stream is encrypted (RFC 6120 §5.3.1 "mandatory-to-negotiate").
    pub starttls_required: bool,
    /// Allow SASL on unencrypted streams. For local development only.
    pub allow_plaintext_auth: bool,
    /// Offer XEP-0077 in-band registration before authentication.
    pub registration_enabled: bool,
    /// XML limits per stanza.
    pub limits: Limits,
    /// Time from connect to a bound session (or authenticated component) before the connection is dropped.
    pub handshake_timeout: Duration,
    /// Time without any received byte after which a bound session is closed with `<connection-timeout/>`.
    /// Only bytes from the client count (whitespace keepalives included); writes to it do not.
    pub idle_timeout: Duration,
    /// Time one write to a client or component may make no progress (the peer stopped reading)
    /// before the connection is dropped.
    pub write_timeout: Duration,
    /// Time without any received byte after which an authenticated component is closed with
    /// `<connection-timeout/>`; None (the default) never drops a quiet component.
    pub component_idle_timeout: Option<Duration>,
    /// Failed authentications allowed per remote address per minute; beyond, `<temporary-auth-failure/>`.
    pub auth_failures_per_minute: u32,
    /// Most simultaneous connections per listener set; further ones are refused at accept.
    pub max_connections: usize,
    /// Stanzas queued towards one session before it counts as unable to keep up.
    pub session_queue: usize,
    /// SCRAM iteration count for accounts created by in-band registration.
    pub scram_iterations: u32,
    /// External components (XEP-0114): domain → shared secret.
    pub components: HashMap<String, String>,
}

impl Default for EdgeConfig {
    fn default() -> EdgeConfig {
        EdgeConfig {
            domains: vec!["localhost".into()],
            starttls_required: true,
            allow_plaintext_auth: false,
            registration_enabled: false,
            limits: Limits::default(),
            handshake_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            write_timeout: Duration::from_secs(30),
            component_idle_timeout: None,
            auth_failures_per_minute: 5,
            max_connections: 100_000,
            session_queue: 4096,
            scram_iterations: starling_store::DEFAULT_SCRAM_ITERATIONS,
            components: HashMap::new(),
        }
    }
}

/// Shared state of all connections of one edge.
pub struct Edge<H: SessionHost> {
    /// Settings.
    pub cfg: EdgeConfig,
    /// The routing side.
    pub host: Arc<H>,
    /// Accounts for SASL and registration.
    pub accounts: Arc<dyn AccountStore>,
    /// TLS for STARTTLS (no ALPN) — None disables STARTTLS.
    pub starttls: Option<tokio_rustls::TlsAcceptor>,
    /// TLS for direct-TLS listeners (ALPN `xmpp-client`, XEP-0368).
    pub direct_tls: Option<tokio_rustls::TlsAcceptor>,
    /// Failed-auth limiter.
    pub limiter: limiter::AuthLimiter,
    /// Bounds simultaneous connections.
    connections: Arc<Semaphore>,
    /// Flips to true when the node shuts down; connections then close with `<system-shutdown/>`.
    shutdown: watch::Receiver<bool>,
    /// Secret mixed into decoy SCRAM salts so unknown users look like known ones.
    pub(crate) decoy_secret: [u8; 32],
    /// Password derivations (PBKDF2: PLAIN logins, decoys included, and in-band registration)
    /// allowed to run at once: one per core this process may use. A burst of them queues here
    /// instead of starting a blocking thread each, with its stack and allocator arena.
    pub(crate) key_derivations: Semaphore,
    /// The stream features of each negotiation stage, serialized once.
    pub(crate) features: features::StreamFeatures,
}

impl<H: SessionHost> Edge<H> {
    /// An edge; `shutdown` turning true closes every connection gracefully.
    pub fn new(
        cfg: EdgeConfig,
        host: Arc<H>,
        accounts: Arc<dyn AccountStore>,
        tls: Option<Arc<rustls::ServerConfig>>,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Edge<H>> {
        let (starttls, direct_tls) = match tls {
            Some(cfg) => {
                let mut direct = (*cfg).clone();
                direct.alpn_protocols = vec![starling_xmpp::ns::ALPN_XMPP_CLIENT.to_vec()];
                (
                    Some(tokio_rustls::TlsAcceptor::from(cfg)),
                    Some(tokio_rustls::TlsAcceptor::from(Arc::new(direct))),
                )
            }
            None => (None, None),
        };
        let limiter = limiter::AuthLimiter::new(cfg.auth_failures_per_minute, Duration::from_secs(60));
        let connections = Arc::new(Semaphore::new(cfg.max_connections));
        let features = features::StreamFeatures::new(&cfg, starttls.is_some());
        Arc::new(Edge {
            cfg,
            host,
            accounts,
            starttls,
            direct_tls,
            limiter,
            connections,
            shutdown,
            decoy_secret: io::random_bytes(),
            key_derivations: Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get())),
            features,
        })
    }

    /// Whether clients may open streams to `domain`.
    pub fn serves(&self, domain: &str) -> bool {
        self.cfg.domains.iter().any(|d| d == domain)
    }

    /// Accept client connections until shutdown. `direct_tls` selects XEP-0368 (TLS from the
    /// first byte) instead of STARTTLS.
    pub async fn serve_clients(self: Arc<Self>, listener: TcpListener, direct_tls: bool) {
        self.accept_loop(listener, move |edge, stream, peer, permit| async move {
            c2s::run(edge, stream, peer, direct_tls).await;
            drop(permit);
        })
        .await
    }

    /// Accept component connections (XEP-0114) until shutdown.
    pub async fn serve_components(self: Arc<Self>, listener: TcpListener) {
        self.accept_loop(listener, |edge, stream, peer, permit| async move {
            component::run(edge, stream, peer).await;
            drop(permit);
        })
        .await
    }

    async fn accept_loop<F, Fut>(self: Arc<Self>, listener: TcpListener, handler: F)
    where
        F: Fn(Arc<Self>, tokio::net::TcpStream, std::net::SocketAddr, OwnedSemaphorePermit) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut shutdown = self.shutdown.clone();
        // One wait for the whole loop, not a waiter registered and removed per connection.
        let mut shutdown = std::pin::pin!(shutdown.changed());
        let mut inherits_nodelay = None;
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = &mut shutdown => return,
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "connection limit reached; refusing");
                drop(stream);
                continue;
            };
            // Where the kernel copies TCP_NODELAY from the listener (Linux; `starling`'s listeners
            // set it), connections have it already: the first one tells, and the others then
            // save a setsockopt(2) each. Elsewhere it is set on each.
            if !*inherits_nodelay.get_or_insert_with(|| stream.nodelay().unwrap_or(false)) {
                let _ = stream.set_nodelay(true);
            }
            // The handler's future is the task: wrapping it in another `async` block would keep
            // it twice in the task's memory (the captured future and the awaited one). Boxed, the
            // few kilobytes of it are written once, in place, instead of being moved into the
            // task, into its cell and out again at the end (three copies of the whole state).
            tokio::spawn(Box::pin(handler(self.clone(), stream, peer, permit)));
        }
    }

    /// A receiver that resolves when the node starts shutting down.
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }
}
