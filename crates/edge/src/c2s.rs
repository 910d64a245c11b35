//! One client connection (RFC 6120): stream header, STARTTLS, SASL, in-band registration,
//! resource binding, then the bound session's stanza loop.
//!
//! The connection is a single task: it reads into the framer's buffer, handles every complete
//! element, and writes what the router queued for it, batching queued stanzas into one write.

use crate::features::{self, Stage};
use crate::io::{
    random_id, read_into, shutdown_within, write_all_within, write_last_within, write_stream_header, Conn,
    StreamId, STREAM_CLOSE,
};
use crate::{ChannelSink, Edge, QueueReceiver, SessionHost};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use starling_store::Access;
use starling_xml::{Element, Event, StreamHeader, StreamParser};
use starling_xmpp::sasl::{parse_plain, SaslFailure, ScramCredentials, ScramHash, ScramServer};
use starling_xmpp::session::ToClient;
use starling_xmpp::stanza::{error_reply, kind_of, kind_of_bytes};
use starling_xmpp::{ns, BareJid, FullJid, Jid, StanzaError, StreamError};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{sleep_until, timeout_at, Instant};

/// [`error_reply`], counted in `starling_stanza_errors_total`: every error the server generates
/// goes through here.
fn counted_error_reply(stanza: &Element, error: StanzaError, domain: &str) -> Element {
    starling_telemetry::stanza_error(error.condition());
    error_reply(stanza, error, domain)
}

/// `out` becomes the SASL element `name` (RFC 6120 §6.4) carrying `data` in base64, or empty
/// when there is none: what `Element::write_to` writes for it, without building the element.
fn write_sasl(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    out.clear();
    out.extend_from_slice(b"<");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b" xmlns='");
    out.extend_from_slice(ns::SASL.as_bytes());
    if data.is_empty() {
        out.extend_from_slice(b"'/>");
        return;
    }
    out.extend_from_slice(b"'>");
    let at = out.len();
    out.resize(at + base64::encoded_len(data.len(), true).unwrap_or(0), 0);
    let written = B64.encode_slice(data, &mut out[at..]).unwrap_or(0);
    out.truncate(at + written);
    out.extend_from_slice(b"</");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b">");
}

/// Failed SASL attempts allowed on one stream before it is closed (RFC 6120 §6.4.5: 2 to 5).
const MAX_AUTH_ATTEMPTS_PER_STREAM: u32 = 3;
/// Queued stanzas written per batch.
const WRITE_BATCH: usize = 64;

/// Free space a read wants in the connection's buffer (the parser starts with this much).
const READ_SPARE: usize = 4096;

/// Where the stream is in its negotiation.
#[derive(Debug)]
enum Phase {
    /// Before authentication.
    PreAuth,
    /// SCRAM exchange under way.
    Scram {
        /// The server side of the exchange.
        server: Box<ScramServer>,
        /// The account, once client-first named it and it exists; None means decoy (unknown user).
        account: Option<BareJid>,
        /// Whether client-first has been processed (otherwise the next response is client-first).
        started: bool,
        /// The mechanism's hash, to pick the matching stored credentials.
        hash: ScramHash,
    },
    /// Authenticated, waiting for resource binding.
    Authenticated(BareJid),
    /// Bound: stanzas flow.
    Bound {
        /// The session's full JID.
        jid: FullJid,
        /// The router's id for this bind.
        id: u64,
    },
}

/// What the caller of [`Client::drive`] does next.
enum Step {
    /// Upgrade the socket to TLS and start a new stream.
    StartTls,
    /// The resource is bound: negotiation is over, the session's stanzas flow from here.
    Bound,
    /// Close the connection.
    Close,
}

/// Who handles a stream's events: [`Negotiation`] until the resource is bound, then
/// [`Session`]. Two types rather than a flag, so that the bound session's loop, whose state
/// every idle connection keeps, holds none of the negotiation's (larger) futures: those live in
/// one box for the negotiation's duration.
trait Handling<H: SessionHost> {
    /// Whether [`Client::drive`] returns [`Step::Bound`] as soon as the resource is bound.
    const UNTIL_BOUND: bool;
    /// Handle one event of the stream.
    fn on_event<'a>(
        client: &'a mut Client<H>,
        conn: &'a mut Conn,
        ev: Event,
    ) -> impl std::future::Future<Output = Option<Step>> + Send + 'a;
}

/// Before binding: STARTTLS, SASL, registration, binding.
struct Negotiation;

/// A bound session.
struct Session;

impl<H: SessionHost> Handling<H> for Negotiation {
    const UNTIL_BOUND: bool = true;
    fn on_event<'a>(
        client: &'a mut Client<H>,
        conn: &'a mut Conn,
        ev: Event,
    ) -> impl std::future::Future<Output = Option<Step>> + Send + 'a {
        client.on_negotiation_event(conn, ev)
    }
}

impl<H: SessionHost> Handling<H> for Session {
    const UNTIL_BOUND: bool = false;
    fn on_event<'a>(
        client: &'a mut Client<H>,
        conn: &'a mut Conn,
        ev: Event,
    ) -> impl std::future::Future<Output = Option<Step>> + Send + 'a {
        client.on_session_event(conn, ev)
    }
}

/// Per-connection state.
struct Client<H: SessionHost> {
    /// Shared edge state.
    edge: Arc<Edge<H>>,
    /// Remote address, for rate limiting and logs.
    peer: SocketAddr,
    /// Framer over the current stream (replaced on stream restarts after TLS).
    parser: StreamParser,
    /// Negotiation phase.
    phase: Phase,
    /// Whether the stream is encrypted.
    tls: bool,
    /// Whether our header for the current stream was sent (stream errors need one first).
    header_sent: bool,
    /// The domain the client addressed, once known.
    domain: String,
    /// SASL failures on this connection.
    auth_failures: u32,
    /// Queue from the router, present once bound.
    rx: Option<QueueReceiver>,
    /// Output buffer reused across writes.
    out: Vec<u8>,
    /// The queued items serialized into `out` and not yet known to be written: if the write
    /// fails (the client stopped reading, the connection broke) they go back to the router with
    /// the rest of the queue instead of vanishing. Cleared after every successful write.
    unwritten: Vec<ToClient>,
    /// The SASL mechanism of the current attempt, for the authentication metric.
    mechanism: &'static str,
    /// Connect time plus the handshake timeout.
    handshake_deadline: Instant,
    /// When bytes last arrived from the client: the idle timeout counts from here.
    last_received: Instant,
    /// A write made no progress within the write timeout: the client stopped reading, so
    /// nothing more is written to it (not even a stream error) and the connection is dropped.
    write_stalled: bool,
}

/// Serve one client connection to its end.
pub async fn run<H: SessionHost>(edge: Arc<Edge<H>>, tcp: TcpStream, peer: SocketAddr, direct_tls: bool) {
    let handshake_deadline = Instant::now() + edge.cfg.handshake_timeout;
    let mut conn = if direct_tls {
        let Some(acceptor) = edge.direct_tls.clone() else { return };
        let Some(tls) = Box::pin(accept_tls(acceptor, tcp, handshake_deadline, peer)).await else { return };
        tls
    } else {
        Conn::Plain(tcp)
    };
    let mut client = Client {
        parser: StreamParser::new(edge.cfg.limits),
        edge,
        peer,
        phase: Phase::PreAuth,
        tls: conn.is_tls(),
        header_sent: false,
        domain: String::new(),
        auth_failures: 0,
        rx: None,
        out: Vec::new(),
        unwritten: Vec::new(),
        mechanism: "",
        handshake_deadline,
        last_received: Instant::now(),
        write_stalled: false,
    };
    let mut open = crate::counters::ConnectionGauge::new(direct_tls, client.tls);
    loop {
        let step = if matches!(client.phase, Phase::Bound { .. }) {
            client.drive::<Session>(&mut conn).await
        } else {
            // Negotiation (STARTTLS, SASL, binding) runs as one boxed future: its state is
            // larger than a bound session's, and it lives only until the resource is bound, so
            // it must not stay in the connection's state for the session's whole life. One box
            // per negotiation, not one per handshake stanza.
            Box::pin(client.drive::<Negotiation>(&mut conn)).await
        };
        match step {
            Step::Close => break,
            Step::Bound => {}
            Step::StartTls => {
                let Some(acceptor) = client.edge.starttls.clone() else { break };
                let tcp = match conn {
                    Conn::Plain(tcp) => tcp,
                    tls => {
                        conn = tls;
                        break;
                    }
                };
                // Only the small result outlives the handshake's boxed state.
                let Some(tls) = Box::pin(accept_tls(acceptor, tcp, handshake_deadline, peer)).await else {
                    Box::pin(client.finish()).await;
                    return;
                };
                conn = tls;
                client.tls = true;
                open.encrypted();
                client.header_sent = false;
                // RFC 6120 §5.4.3.3: nothing sent before the TLS handshake survives it.
                client.parser = StreamParser::new(client.edge.cfg.limits);
            }
        }
    }
    // TLS ends with close_notify. Plain TCP needs nothing before the close: a shutdown(2) first
    // was one more system call per connection, and one that failed whenever the client had
    // closed first, as most do after their `</stream:stream>`.
    if !client.write_stalled && matches!(conn, Conn::Tls(_)) {
        shutdown_within(&mut conn, client.edge.cfg.write_timeout).await;
    }
    drop(conn);
    // Boxed, like the other once-per-connection steps, to keep the connection's state small.
    Box::pin(client.finish()).await;
}

/// Bytes one client connection's task keeps for its state (the future of [`run`]) whatever it
/// is doing: an idle session pays for the largest state any stanza's handling needs, so this is
/// the figure to keep small (idle memory per session).
pub fn connection_state_size<H: SessionHost>() -> usize {
    fn output_size<A, B, C, D, F: std::future::Future>(_: &impl Fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    output_size(&run::<H>)
}

/// The TLS handshake (direct TLS or after `<proceed/>`), bounded by the handshake deadline.
async fn accept_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    deadline: Instant,
    peer: SocketAddr,
) -> Option<Conn> {
    match timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => Some(Conn::Tls(Box::new(s))),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

impl<H: SessionHost> Client<H> {
    /// Read, handle and write until the stream ends or asks for TLS, or (negotiating) until
    /// the resource is bound; `M` handles the events (see [`Handling`]).
    async fn drive<M: Handling<H>>(&mut self, conn: &mut Conn) -> Step {
        let mut shutdown = self.edge.shutdown_signal();
        // Both waits live as long as this loop, not one read: each made afresh cost a timer
        // registration and a waiter registration (and their removal) on every read.
        let mut shutdown = std::pin::pin!(shutdown.changed());
        // The timer is lazy: it stays at the deadline it was set to while reads push the idle
        // deadline back, and when it fires early it is set again to the deadline of then.
        let mut timer = std::pin::pin!(sleep_until(self.deadline()));
        loop {
            loop {
                match self.parser.next_event() {
                    Ok(Some(ev)) => {
                        if let Some(step) = M::on_event(self, conn, ev).await {
                            return step;
                        }
                        if M::UNTIL_BOUND && matches!(self.phase, Phase::Bound { .. }) {
                            // What is still buffered is the bound session's.
                            return Step::Bound;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(peer = %self.peer, error = %e, "closing stream on bad XML");
                        self.stream_error(conn, e.into()).await;
                        return Step::Close;
                    }
                }
            }
            let idle = self.parser.buffered_len() == 0;
            if idle && matches!(conn, Conn::Plain(_)) && matches!(self.phase, Phase::Bound { .. }) {
                // Idle memory: a bound session with nothing half-read holds no buffer while it
                // waits (`read_into` reserves once bytes are there). A stream still logging in
                // keeps its buffer for the next step of the handshake, which comes at once: it
                // lives no longer than the handshake timeout, and freeing it between steps cost
                // an allocation per read of every login.
                self.parser.release_idle_buffer();
            } else {
                let buf = self.parser.buffer_mut();
                if buf.capacity() - buf.len() < READ_SPARE {
                    // Empty, the reservation only reclaims the consumed front of the buffer
                    // (no allocation); part-filled, it grows for a large stanza.
                    buf.reserve(if idle { READ_SPARE } else { 2 * READ_SPARE });
                }
            }
            tokio::select! {
                r = read_into(conn, self.parser.buffer_mut()) => match r {
                    Ok(0) | Err(_) => return Step::Close,
                    Ok(_) => self.last_received = Instant::now(),
                },
                item = recv(&mut self.rx) => {
                    if let Some(step) = self.write_queued(conn, item).await {
                        return step;
                    }
                }
                _ = &mut timer => {
                    let deadline = self.deadline();
                    if Instant::now() < deadline {
                        timer.as_mut().reset(deadline);
                        continue;
                    }
                    self.stream_error(conn, StreamError::ConnectionTimeout).await;
                    return Step::Close;
                }
                _ = &mut shutdown => {
                    self.stream_error(conn, StreamError::SystemShutdown).await;
                    return Step::Close;
                }
            }
        }
    }

    /// When the stream times out if nothing more arrives: the handshake deadline until the
    /// resource is bound, then the idle timeout after the last received byte. Only bytes from
    /// the client push it back: a session that is only written to (a flood of messages,
    /// presence noise) still idles out. Within one phase it only ever moves later.
    fn deadline(&self) -> Instant {
        match self.phase {
            Phase::Bound { .. } => self.last_received + self.edge.cfg.idle_timeout,
            _ => self.handshake_deadline,
        }
    }

    /// Write one queued item and whatever else is queued right now, in one write.
    async fn write_queued(&mut self, conn: &mut Conn, first: Option<ToClient>) -> Option<Step> {
        let Some(first) = first else {
            // The router dropped the sink: the session is gone.
            self.stream_error(conn, StreamError::InternalServerError).await;
            return Some(Step::Close);
        };
        self.out.clear();
        self.unwritten.clear();
        let mut next = Some(first);
        let mut n = 0;
        while let Some(item) = next.take() {
            match item {
                ToClient::Stanza(e) => {
                    crate::counters::stanza_out(kind_of(&e));
                    e.write_to(&mut self.out, ns::CLIENT);
                    self.unwritten.push(ToClient::Stanza(e));
                }
                ToClient::Raw(bytes) => {
                    crate::counters::stanza_out(kind_of_bytes(&bytes));
                    self.out.extend_from_slice(&bytes);
                    self.unwritten.push(ToClient::Raw(bytes));
                }
                ToClient::Close(err) => {
                    if !self.out.is_empty() && self.flush_out(conn).await.is_err() {
                        return Some(Step::Close);
                    }
                    self.unwritten.clear();
                    self.out.clear();
                    self.stream_error(conn, err).await;
                    return Some(Step::Close);
                }
            }
            n += 1;
            if n < WRITE_BATCH {
                next = self.rx.as_mut().and_then(|rx| rx.try_recv());
            }
        }
        if self.flush_out(conn).await.is_err() {
            return Some(Step::Close);
        }
        if self.rx.as_ref().is_none_or(|rx| rx.is_empty()) {
            // Nothing more to write right now: an idle session keeps no write buffers.
            self.out = Vec::new();
            self.unwritten = Vec::new();
        } else {
            self.unwritten.clear();
        }
        None
    }

    /// Write the output buffer, bounded by the write timeout.
    async fn flush_out(&mut self, conn: &mut Conn) -> std::io::Result<()> {
        if self.write_stalled {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        let r = write_all_within(conn, &self.out, self.edge.cfg.write_timeout).await;
        self.out.clear();
        if let Err(e) = &r {
            if e.kind() == std::io::ErrorKind::TimedOut {
                self.write_stalled = true;
                tracing::info!(
                    peer = %self.peer,
                    timeout = ?self.edge.cfg.write_timeout,
                    "client stopped reading; dropping the connection"
                );
            }
        }
        r
    }

    async fn send(&mut self, conn: &mut Conn, e: &Element) -> Option<Step> {
        self.out.clear();
        e.write_to(&mut self.out, ns::CLIENT);
        self.flush_out(conn).await.err().map(|_| Step::Close)
    }

    /// Send a stream error (our header first if not yet sent) and the stream close.
    async fn stream_error(&mut self, conn: &mut Conn, err: StreamError) {
        self.out.clear();
        if self.write_stalled {
            return;
        }
        if !self.header_sent {
            let from = if self.domain.is_empty() {
                self.edge.cfg.domains.first().cloned().unwrap_or_default()
            } else {
                self.domain.clone()
            };
            write_stream_header(&mut self.out, ns::CLIENT, &from, None, StreamId::Fresh, true);
        }
        self.out.extend_from_slice(b"<stream:error>");
        Element::new(err.condition(), ns::STREAM_ERRORS).write_to(&mut self.out, ns::CLIENT);
        self.out.extend_from_slice(b"</stream:error>");
        self.out.extend_from_slice(STREAM_CLOSE);
        let _ = self.flush_out(conn).await;
    }

    /// End of connection: tell the router the session is gone, handing back what was queued
    /// to it and never written.
    async fn finish(&mut self) {
        if let Phase::Bound { jid, id } = std::mem::replace(&mut self.phase, Phase::PreAuth) {
            let undelivered = self.take_undelivered();
            self.edge.host.unbind(&jid, id, undelivered).await;
        }
    }

    /// The failed batch and everything still queued, in the order they were queued. The queue
    /// is closed first: from then on a delivery to this session fails at once and the router
    /// handles that stanza itself, so nothing can slip in behind the drain.
    fn take_undelivered(&mut self) -> Vec<ToClient> {
        let mut left = std::mem::take(&mut self.unwritten);
        if let Some(rx) = self.rx.as_mut() {
            rx.close();
            while let Some(item) = rx.try_recv() {
                if !matches!(item, ToClient::Close(_)) {
                    left.push(item);
                }
            }
        }
        left
    }

    /// Negotiation's events: the stream header, then STARTTLS, SASL, registration, binding.
    async fn on_negotiation_event(&mut self, conn: &mut Conn, ev: Event) -> Option<Step> {
        match ev {
            Event::StreamOpen(h) => self.on_header(conn, h).await,
            Event::StreamClose => self.on_stream_close(conn).await,
            Event::Stanza(e) => {
                if !self.header_sent {
                    // Parser guarantees a header first; defensive.
                    self.stream_error(conn, StreamError::NotWellFormed).await;
                    return Some(Step::Close);
                }
                match &self.phase {
                    Phase::Authenticated(_) => self.on_pre_bind(conn, e).await,
                    Phase::PreAuth | Phase::Scram { .. } => self.on_pre_auth(conn, e).await,
                    // `drive` returns as soon as the resource is bound.
                    Phase::Bound { .. } => self.on_stanza(conn, e).await,
                }
            }
        }
    }

    /// A bound session's events: its stanzas, and the end of its stream.
    async fn on_session_event(&mut self, conn: &mut Conn, ev: Event) -> Option<Step> {
        match ev {
            Event::Stanza(e) if matches!(self.phase, Phase::Bound { .. }) => self.on_stanza(conn, e).await,
            Event::StreamClose => self.on_stream_close(conn).await,
            // The root stays open while bound, so no header comes, and the phase never goes back.
            Event::StreamOpen(_) | Event::Stanza(_) => {
                self.stream_error(conn, StreamError::InternalServerError).await;
                Some(Step::Close)
            }
        }
    }

    /// The client closed its stream: close ours (RFC 6120 §4.4), and the connection right after
    /// (the closing tag and the FIN go out together).
    async fn on_stream_close(&mut self, conn: &mut Conn) -> Option<Step> {
        if !self.write_stalled {
            let _ = write_last_within(conn, STREAM_CLOSE, self.edge.cfg.write_timeout).await;
        }
        Some(Step::Close)
    }

    /// RFC 6120 §4.7, §4.9.1: check the initiator's header, answer with ours and the features.
    async fn on_header(&mut self, conn: &mut Conn, h: StreamHeader) -> Option<Step> {
        if let Some(to) = h.attr("to") {
            self.domain = to.to_owned();
        }
        let check = check_header(&h, |d| self.edge.serves(d));
        if let Err(err) = check {
            if err == StreamError::HostUnknown {
                self.domain.clear();
            }
            self.stream_error(conn, err).await;
            return Some(Step::Close);
        }
        self.out.clear();
        write_stream_header(&mut self.out, ns::CLIENT, &self.domain, h.attr("from"), StreamId::Fresh, true);
        self.header_sent = true;
        self.out.extend_from_slice(self.edge.features.get(self.stage()));
        self.flush_out(conn).await.err().map(|_| Step::Close)
    }

    /// Whether authentication may happen on this stream now.
    fn auth_allowed(&self) -> bool {
        features::auth_allowed(&self.edge.cfg, self.edge.starttls.is_some(), self.tls)
    }

    /// The negotiation stage whose stream features this stream is offered (RFC 6120 §4.3.2).
    fn stage(&self) -> Stage {
        match self.phase {
            Phase::PreAuth | Phase::Scram { .. } => Stage::BeforeAuth { tls: self.tls },
            Phase::Authenticated(_) | Phase::Bound { .. } => Stage::AfterAuth,
        }
    }

    async fn on_pre_auth(&mut self, conn: &mut Conn, e: Element) -> Option<Step> {
        if e.is("starttls", ns::TLS) {
            if self.tls || self.edge.starttls.is_none() || !matches!(self.phase, Phase::PreAuth) {
                self.out.clear();
                Element::new("failure", ns::TLS).write_to(&mut self.out, ns::CLIENT);
                self.out.extend_from_slice(STREAM_CLOSE);
                let _ = self.flush_out(conn).await;
                return Some(Step::Close);
            }
            let proceed = Element::new("proceed", ns::TLS);
            if let Some(step) = self.send(conn, &proceed).await {
                return Some(step);
            }
            return Some(Step::StartTls);
        }
        if e.ns == ns::SASL {
            return self.on_sasl(conn, e).await;
        }
        if e.is("iq", ns::CLIENT) && e.get_child("query", ns::REGISTER).is_some() {
            return self.on_register(conn, e).await;
        }
        if self.edge.starttls.is_some() && !self.tls && self.edge.cfg.starttls_required {
            // RFC 6120 §5.3.1: TLS is mandatory-to-negotiate here.
            self.stream_error(conn, StreamError::PolicyViolation).await;
        } else {
            self.stream_error(conn, StreamError::NotAuthorized).await;
        }
        Some(Step::Close)
    }

    async fn sasl_failure(&mut self, conn: &mut Conn, failure: SaslFailure) -> Option<Step> {
        self.phase = Phase::PreAuth;
        let counts = matches!(
            failure,
            SaslFailure::NotAuthorized | SaslFailure::MalformedRequest | SaslFailure::IncorrectEncoding
        );
        crate::counters::authentication(self.mechanism, false);
        if counts {
            self.edge.limiter.record_failure(self.peer.ip());
            self.auth_failures += 1;
        }
        let f = Element::new("failure", ns::SASL).with_child(Element::new(failure.condition(), ns::SASL));
        if let Some(step) = self.send(conn, &f).await {
            return Some(step);
        }
        if self.auth_failures >= MAX_AUTH_ATTEMPTS_PER_STREAM {
            self.stream_error(conn, StreamError::PolicyViolation).await;
            return Some(Step::Close);
        }
        None
    }

    fn decode_payload(e: &Element) -> Result<Vec<u8>, SaslFailure> {
        let text = e.text();
        let t = text.trim();
        if t.is_empty() || t == "=" {
            return Ok(Vec::new());
        }
        B64.decode(t).map_err(|_| SaslFailure::IncorrectEncoding)
    }

    async fn on_sasl(&mut self, conn: &mut Conn, e: Element) -> Option<Step> {
        match e.name.as_str() {
            "auth" => {
                if !matches!(self.phase, Phase::PreAuth) {
                    return self.sasl_failure(conn, SaslFailure::MalformedRequest).await;
                }
                if !self.auth_allowed() {
                    return self.sasl_failure(conn, SaslFailure::EncryptionRequired).await;
                }
                if !self.edge.limiter.allowed(self.peer.ip()) {
                    let f = self.sasl_failure(conn, SaslFailure::TemporaryAuthFailure).await;
                    if f.is_some() {
                        return f;
                    }
                    self.stream_error(conn, StreamError::PolicyViolation).await;
                    return Some(Step::Close);
                }
                let payload = match Self::decode_payload(&e) {
                    Ok(p) => p,
                    Err(f) => return self.sasl_failure(conn, f).await,
                };
                let mech = e.attr("mechanism").unwrap_or_default();
                self.mechanism = match mech {
                    "PLAIN" => "PLAIN",
                    other => ScramHash::from_mechanism(other).map(ScramHash::mechanism).unwrap_or(""),
                };
                if mech == "PLAIN" {
                    return self.plain(conn, &payload).await;
                }
                let Some(hash) = ScramHash::from_mechanism(mech) else {
                    return self.sasl_failure(conn, SaslFailure::InvalidMechanism).await;
                };
                self.phase = Phase::Scram {
                    server: Box::new(ScramServer::new(hash)),
                    account: None,
                    started: false,
                    hash,
                };
                if payload.is_empty() {
                    // No initial response: ask for client-first with an empty challenge.
                    return self.send(conn, &Element::new("challenge", ns::SASL)).await;
                }
                self.scram_step(conn, &payload).await
            }
            "response" => {
                if !matches!(self.phase, Phase::Scram { .. }) {
                    return self.sasl_failure(conn, SaslFailure::MalformedRequest).await;
                }
                match Self::decode_payload(&e) {
                    Ok(p) => self.scram_step(conn, &p).await,
                    Err(f) => self.sasl_failure(conn, f).await,
                }
            }
            "abort" => self.sasl_failure(conn, SaslFailure::Aborted).await,
            _ => self.sasl_failure(conn, SaslFailure::MalformedRequest).await,
        }
    }

    /// Look up an account's credentials (in place where the store's reads are local).
    async fn credentials(&self, user: &BareJid) -> Option<Vec<ScramCredentials>> {
        let accounts = self.edge.accounts.clone();
        let key = user.as_str().to_owned();
        starling_store::call(&accounts, Access::Read, move |a| a.credentials(&key)).await.ok()?
    }

    /// The account named by a SASL username on this stream's domain.
    fn account_for(&self, username: &str) -> Option<BareJid> {
        if username.is_empty() || username.contains('@') || username.contains('/') {
            return None;
        }
        starling_xmpp::parse_jid(&format!("{username}@{}", self.domain)).ok().map(|j| j.to_bare())
    }

    async fn scram_step(&mut self, conn: &mut Conn, payload: &[u8]) -> Option<Step> {
        let Phase::Scram { started, .. } = &self.phase else { return None };
        if !*started {
            let first = {
                let Phase::Scram { server, .. } = &mut self.phase else { return None };
                server.client_first(payload)
            };
            let first = match first {
                Ok(f) => f,
                Err(f) => return self.sasl_failure(conn, f).await,
            };
            let account = self.account_for(&first.username);
            if let (Some(authz), Some(acc)) = (&first.authzid, &account) {
                if Jid::new(authz).map(|j| j.to_bare() != *acc).unwrap_or(true) {
                    return self.sasl_failure(conn, SaslFailure::InvalidAuthzid).await;
                }
            }
            let creds = match &account {
                Some(a) => self.credentials(a).await,
                None => None,
            };
            let Phase::Scram { server, account: slot, started, hash } = &mut self.phase else { return None };
            let hash = *hash;
            let known = creds.and_then(|cs| cs.into_iter().find(|c| c.hash == hash));
            let (creds, account) = match known {
                Some(c) => (c, account),
                None => (
                    ScramCredentials::decoy_with_iterations(
                        hash,
                        &first.username,
                        &self.edge.decoy_secret,
                        self.edge.cfg.scram_iterations,
                    ),
                    None,
                ),
            };
            let server_first = server.server_first(&creds);
            *slot = account;
            *started = true;
            write_sasl(&mut self.out, "challenge", &server_first);
            return self.flush_out(conn).await.err().map(|_| Step::Close);
        }
        let result = {
            let Phase::Scram { server, .. } = &mut self.phase else { return None };
            server.client_final(payload)
        };
        let account = match &self.phase {
            Phase::Scram { account, .. } => account.clone(),
            _ => None,
        };
        match (result, account) {
            (Ok(server_final), Some(acc)) => self.authenticated(conn, acc, &server_final).await,
            (Ok(_), None) | (Err(_), _) => self.sasl_failure(conn, SaslFailure::NotAuthorized).await,
        }
    }

    async fn plain(&mut self, conn: &mut Conn, payload: &[u8]) -> Option<Step> {
        let creds = match parse_plain(payload) {
            Ok(c) => c,
            Err(f) => return self.sasl_failure(conn, f).await,
        };
        let account = self.account_for(&creds.authcid);
        if let (Some(authz), Some(account)) = (&creds.authzid, &account) {
            if Jid::new(authz).map(|j| j.to_bare() != *account).unwrap_or(true) {
                return self.sasl_failure(conn, SaslFailure::InvalidAuthzid).await;
            }
        }
        let stored = match &account {
            Some(a) => self.credentials(a).await.unwrap_or_default(),
            None => Vec::new(),
        };
        let candidates = PlainCandidates::new(
            stored,
            &creds.authcid,
            &self.edge.decoy_secret,
            self.edge.cfg.scram_iterations,
        );
        match (candidates.verify(creds.password, &self.edge.key_derivations).await, account) {
            (true, Some(account)) => self.authenticated(conn, account, &[]).await,
            _ => self.sasl_failure(conn, SaslFailure::NotAuthorized).await,
        }
    }

    /// SASL succeeded: `<success/>` carrying the mechanism's additional data (SCRAM's
    /// server-final message; none for PLAIN), and the stream restarts (RFC 6120 §6.4.6).
    async fn authenticated(&mut self, conn: &mut Conn, account: BareJid, data: &[u8]) -> Option<Step> {
        tracing::debug!(peer = %self.peer, %account, "authenticated");
        crate::counters::authentication(self.mechanism, true);
        self.phase = Phase::Authenticated(account);
        self.header_sent = false;
        self.parser.reset();
        write_sasl(&mut self.out, "success", data);
        self.flush_out(conn).await.err().map(|_| Step::Close)
    }

    /// XEP-0077 before authentication: the form, and account creation.
    async fn on_register(&mut self, conn: &mut Conn, iq: Element) -> Option<Step> {
        let reply = self.register_reply(&iq).await;
        self.send(conn, &reply).await
    }

    async fn register_reply(&self, iq: &Element) -> Element {
        let domain = self.domain.clone();
        if !self.edge.cfg.registration_enabled {
            return counted_error_reply(iq, StanzaError::ServiceUnavailable, &domain);
        }
        if !self.auth_allowed() {
            return counted_error_reply(iq, StanzaError::NotAuthorized, &domain);
        }
        let Some(query) = iq.get_child("query", ns::REGISTER) else {
            return counted_error_reply(iq, StanzaError::BadRequest, &domain);
        };
        let mut result = Element::new("iq", ns::CLIENT).with_attr("type", "result");
        if let Some(id) = iq.attr("id") {
            result.set_attr("id", id);
        }
        match iq.attr("type") {
            Some("get") => result.with_child(
                Element::new("query", ns::REGISTER)
                    .with_child(
                        Element::new("instructions", ns::REGISTER)
                            .with_text("Choose a username and password."),
                    )
                    .with_child(Element::new("username", ns::REGISTER))
                    .with_child(Element::new("password", ns::REGISTER)),
            ),
            Some("set") => {
                if query.get_child("remove", ns::REGISTER).is_some() {
                    return counted_error_reply(iq, StanzaError::Forbidden, &domain);
                }
                if !self.edge.limiter.allowed(self.peer.ip()) {
                    return counted_error_reply(iq, StanzaError::ResourceConstraint, &domain);
                }
                let username =
                    query.get_child("username", ns::REGISTER).map(|u| u.text()).unwrap_or_default();
                let password =
                    query.get_child("password", ns::REGISTER).map(|p| p.text()).unwrap_or_default();
                if username.is_empty() || password.is_empty() {
                    return counted_error_reply(iq, StanzaError::NotAcceptable, &domain);
                }
                let Some(account) = self.account_for(&username) else {
                    return counted_error_reply(iq, StanzaError::JidMalformed, &domain);
                };
                // Every registration counts against the address, so one address cannot mass-create accounts.
                self.edge.limiter.record_failure(self.peer.ip());
                let accounts = self.edge.accounts.clone();
                let iterations = self.edge.cfg.scram_iterations;
                let key = account.to_string();
                let Ok(_slot) = self.edge.key_derivations.acquire().await else {
                    return counted_error_reply(iq, StanzaError::InternalServerError, &domain);
                };
                let created = tokio::task::spawn_blocking(move || {
                    let creds = starling_store::derive_credentials(&password, iterations)
                        .map_err(|_| StanzaError::NotAcceptable)?;
                    accounts.create_account(&key, creds).map_err(|e| match e {
                        starling_store::StoreError::AccountExists => StanzaError::Conflict,
                        _ => StanzaError::InternalServerError,
                    })
                })
                .await
                .unwrap_or(Err(StanzaError::InternalServerError));
                match created {
                    Ok(()) => {
                        tracing::info!(%account, "account registered in-band");
                        result
                    }
                    Err(e) => counted_error_reply(iq, e, &domain),
                }
            }
            _ => counted_error_reply(iq, StanzaError::BadRequest, &domain),
        }
    }

    /// Authenticated, not yet bound: only resource binding is accepted (RFC 6120 §7.1).
    async fn on_pre_bind(&mut self, conn: &mut Conn, iq: Element) -> Option<Step> {
        let Phase::Authenticated(account) = &self.phase else { return None };
        let bind = iq
            .get_child("bind", ns::BIND)
            .filter(|_| iq.is("iq", ns::CLIENT) && iq.attr("type") == Some("set"));
        let full = bind.map(|bind| {
            let requested =
                bind.get_child("resource", ns::BIND).map(|r| r.text()).filter(|r| !r.trim().is_empty());
            format!("{account}/{}", requested.unwrap_or_else(random_id))
        });
        let Some(full) = full else {
            self.stream_error(conn, StreamError::NotAuthorized).await;
            return Some(Step::Close);
        };
        // RFC 6120 §7.7.2.1: a resource that fails Resourceprep is a bad request.
        let Ok(Ok(jid)) = starling_xmpp::parse_jid(&full).map(Jid::try_into_full) else {
            return self
                .send(conn, &counted_error_reply(&iq, StanzaError::BadRequest, &self.domain.clone()))
                .await;
        };
        let (sink, rx) = ChannelSink::new(self.edge.cfg.session_queue);
        let Some(id) = self.edge.host.bind(&jid, sink).await else {
            return self
                .send(conn, &counted_error_reply(&iq, StanzaError::InternalServerError, &self.domain.clone()))
                .await;
        };
        self.rx = Some(rx);
        self.phase = Phase::Bound { jid: jid.clone(), id };
        let mut result = Element::new("iq", ns::CLIENT).with_attr("type", "result");
        if let Some(i) = iq.attr("id") {
            result.set_attr("id", i);
        }
        let result = result.with_child(
            Element::new("bind", ns::BIND)
                .with_child(Element::new("jid", ns::BIND).with_text(jid.as_str().to_owned())),
        );
        tracing::debug!(peer = %self.peer, %jid, "bound");
        self.send(conn, &result).await
    }

    /// A stanza from the bound session: check it, stamp 'from', hand it to the router.
    async fn on_stanza(&mut self, conn: &mut Conn, mut e: Element) -> Option<Step> {
        if e.ns != ns::CLIENT || kind_of(&e).is_none() {
            // RFC 6120 §4.9.3.21
            self.stream_error(conn, StreamError::UnsupportedStanzaType).await;
            return Some(Step::Close);
        }
        // The session's JID is borrowed, not copied, for each stanza: only the error paths
        // need `self` mutably, and they return.
        let jid = self.bound_jid()?;
        // RFC 6120 §8.1.2.1: the server stamps 'from'; a different one is refused.
        let from_ok = match e.attr("from").map(Jid::new) {
            None => true,
            Some(Ok(j)) => match j.try_as_full() {
                Ok(f) => f == jid,
                Err(b) => b.as_str() == starling_xmpp::bare_part(jid.as_str()),
            },
            Some(Err(_)) => false,
        };
        if !from_ok {
            self.stream_error(conn, StreamError::InvalidFrom).await;
            return Some(Step::Close);
        }
        e.set_attr("from", jid.as_str().to_owned());
        if e.name == "iq" {
            let typ_ok = matches!(e.attr("type"), Some("get" | "set" | "result" | "error"));
            if !typ_ok || e.attr("id").is_none() {
                // RFC 6120 §8.2.3: id and type are required.
                if e.attr("type") != Some("error") {
                    let reply = counted_error_reply(&e, StanzaError::BadRequest, &self.domain.clone());
                    return self.send(conn, &reply).await;
                }
                return None;
            }
            if matches!(e.attr("type"), Some("get" | "set")) && e.elements().count() != 1 {
                let reply = counted_error_reply(&e, StanzaError::BadRequest, &self.domain.clone());
                return self.send(conn, &reply).await;
            }
        }
        if let Some(kind) = kind_of(&e) {
            crate::counters::stanza_in(kind);
        }
        // Boxed: the routing side's future (the whole router, in `serve`) would otherwise be
        // part of every connection's state, idle ones included.
        let jid = self.bound_jid()?;
        Box::pin(self.edge.host.handle(jid, e)).await;
        None
    }

    /// The session's full JID, once bound.
    fn bound_jid(&self) -> Option<&FullJid> {
        match &self.phase {
            Phase::Bound { jid, .. } => Some(jid),
            _ => None,
        }
    }
}

/// What a PLAIN password is checked against.
///
/// A known account's stored credentials; for an unknown account (or one without credentials),
/// decoys with the configured iteration count, one per hash as a real account has. A wrong
/// password then costs the same PBKDF2 work whether or not the account exists, so the time to
/// `<not-authorized/>` does not tell an attacker which usernames exist.
struct PlainCandidates {
    /// Credentials to derive against.
    creds: Vec<ScramCredentials>,
    /// Whether they are the account's own (decoys never verify).
    real: bool,
}

impl PlainCandidates {
    fn new(stored: Vec<ScramCredentials>, username: &str, decoy_secret: &[u8], iterations: u32) -> Self {
        if !stored.is_empty() {
            return PlainCandidates { creds: stored, real: true };
        }
        let creds = [ScramHash::Sha256, ScramHash::Sha1]
            .into_iter()
            .map(|h| ScramCredentials::decoy_with_iterations(h, username, decoy_secret, iterations))
            .collect();
        PlainCandidates { creds, real: false }
    }

    /// Derive and compare on the blocking pool (PBKDF2 is deliberately slow: never on an async
    /// worker), once one of `slots` is free. Every candidate is tried on a mismatch, decoys
    /// included.
    async fn verify(self, password: String, slots: &Semaphore) -> bool {
        let PlainCandidates { creds, real } = self;
        let Ok(_slot) = slots.acquire().await else { return false };
        let matched = tokio::task::spawn_blocking(move || creds.iter().any(|c| c.verify_password(&password)))
            .await
            .unwrap_or(false);
        matched && real
    }
}

/// RFC 6120 §4.9.1 checks on an initiating stream header, in the order a server reports them.
pub fn check_header(h: &StreamHeader, serves: impl Fn(&str) -> bool) -> Result<(), StreamError> {
    if h.name != "stream" || h.ns != ns::STREAM {
        return Err(StreamError::InvalidNamespace);
    }
    if h.default_ns.as_deref() != Some(ns::CLIENT) {
        return Err(StreamError::InvalidNamespace);
    }
    match h.attr("version").and_then(|v| v.split('.').next()).and_then(|m| m.trim().parse::<u32>().ok()) {
        Some(1) => {}
        _ => return Err(StreamError::UnsupportedVersion),
    }
    match h.attr("to") {
        Some(to) if serves(to) => Ok(()),
        _ => Err(StreamError::HostUnknown),
    }
}

/// Receive from an optional queue; pending forever when there is none.
async fn recv(rx: &mut Option<QueueReceiver>) -> Option<ToClient> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(attrs: &[(&str, &str)], default_ns: Option<&str>) -> StreamHeader {
        StreamHeader {
            name: "stream".into(),
            ns: ns::STREAM.into(),
            default_ns: default_ns.map(starling_xml::Name::interned),
            attrs: attrs.iter().map(|(k, v)| (starling_xml::Name::interned(k), v.to_string())).collect(),
        }
    }

    #[test]
    fn sasl_elements_are_written_as_the_element_would_write_itself() {
        for (name, data) in
            [("challenge", &b"r=abc,s=c2FsdA==,i=4096"[..]), ("success", b"v=xyz"), ("success", b"")]
        {
            let mut element = Element::new(name, ns::SASL);
            if !data.is_empty() {
                element = element.with_text(B64.encode(data));
            }
            let mut expected = Vec::new();
            element.write_to(&mut expected, ns::CLIENT);
            let mut out = b"left over".to_vec();
            write_sasl(&mut out, name, data);
            assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected));
        }
    }

    #[test]
    fn plain_for_an_unknown_account_derives_decoys_with_the_configured_iterations() {
        let c = PlainCandidates::new(Vec::new(), "ghost", b"secret", 12_345);
        assert!(!c.real);
        let hashes: Vec<ScramHash> = c.creds.iter().map(|c| c.hash).collect();
        assert_eq!(hashes, vec![ScramHash::Sha256, ScramHash::Sha1], "one decoy per stored hash");
        assert!(c.creds.iter().all(|c| c.iterations == 12_345));
        let stored = starling_store::derive_credentials("pw", 4096).unwrap();
        let known = PlainCandidates::new(stored.clone(), "alice", b"secret", 12_345);
        assert!(known.real);
        assert_eq!(known.creds, stored);
    }

    #[tokio::test]
    async fn a_password_is_derived_only_in_a_free_slot() {
        // One iteration: the derivation itself takes microseconds, so only the wait for the
        // slot can hold the check back.
        let stored = vec![ScramCredentials::derive(ScramHash::Sha256, "pw", b"salt", 1).unwrap()];
        let slots = Semaphore::new(1);
        let taken = slots.acquire().await.unwrap();
        let check = PlainCandidates::new(stored, "alice", b"secret", 1).verify("pw".into(), &slots);
        tokio::pin!(check);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(300), &mut check).await.is_err(),
            "derived while every slot was taken"
        );
        drop(taken);
        assert!(check.await, "the right password, once a slot is free");
        assert_eq!(slots.available_permits(), 1, "the slot is given back");
    }

    #[tokio::test]
    async fn plain_failures_cost_the_same_for_known_and_unknown_accounts() {
        // Enough iterations that the PBKDF2 work dominates everything else in the check.
        let iterations = 100_000;
        let stored = starling_store::derive_credentials("right", iterations).unwrap();
        let known = PlainCandidates::new(stored.clone(), "alice", b"secret", iterations);
        let slots = Semaphore::new(1);
        assert!(known.verify("right".into(), &slots).await);
        let slots = &slots;
        let time = |c: PlainCandidates| async move {
            let start = std::time::Instant::now();
            assert!(!c.verify("wrong".into(), slots).await);
            start.elapsed()
        };
        let known = time(PlainCandidates::new(stored, "alice", b"secret", iterations)).await;
        let unknown = time(PlainCandidates::new(Vec::new(), "ghost", b"secret", iterations)).await;
        // Loose bounds (a shared machine is noisy): skipping the derivation would make the
        // unknown case thousands of times faster, not a little.
        assert!(unknown * 4 > known && known * 4 > unknown, "known {known:?}, unknown {unknown:?}");
    }

    #[test]
    fn header_checks_in_order() {
        let serves = |d: &str| d == "localhost";
        let ok = header(&[("to", "localhost"), ("version", "1.0")], Some(ns::CLIENT));
        assert_eq!(check_header(&ok, serves), Ok(()));
        let bad_ns = header(&[("to", "localhost"), ("version", "1.0")], Some("jabber:server"));
        assert_eq!(check_header(&bad_ns, serves), Err(StreamError::InvalidNamespace));
        let old = header(&[("to", "localhost")], Some(ns::CLIENT));
        assert_eq!(check_header(&old, serves), Err(StreamError::UnsupportedVersion));
        let v2 = header(&[("to", "localhost"), ("version", "2.0")], Some(ns::CLIENT));
        assert_eq!(check_header(&v2, serves), Err(StreamError::UnsupportedVersion));
        let host = header(&[("to", "example.org"), ("version", "1.0")], Some(ns::CLIENT));
        assert_eq!(check_header(&host, serves), Err(StreamError::HostUnknown));
        let mut wrong_root = ok.clone();
        wrong_root.ns = "urn:nope".into();
        assert_eq!(check_header(&wrong_root, serves), Err(StreamError::InvalidNamespace));
    }
}
