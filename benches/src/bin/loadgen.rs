//! `loadgen`: an XMPP load generator that speaks to any server (Starling, Prosody, ejabberd).
//!
//! Scenarios (each bounded in count and time, loopback only, one JSON line of results at the end):
//! - `login`: N logins at concurrency C, measured on a second storm once the generator has each
//!   user's salted password cached (the first, cold storm is reported apart) → logins/s, latency
//!   p50/p99, failures, server CPU per login.
//! - `idle`: N authenticated sessions held → server RSS growth per session.
//! - `messages`: P sender→receiver pairs, fixed total rate or unlimited, body size B, for D seconds →
//!   delivered/s, latency p50/p90/p99/max, loss, reordering, server CPU per delivered message.
//! - `presence`: U users in a ring, each mutually subscribed to K neighbours; in each of R rounds
//!   every user changes status once → deliveries/s, delivery latency, the time for all of a
//!   change's contacts to hear it, server CPU per delivery. `--setup` (or the `presence-setup`
//!   scenario alone) first makes the rosters with the ordinary subscription protocol, so it works
//!   on any server; the rosters persist in the server's storage, so later runs can skip it.
//!
//! Accounts `{prefix}{i}@{domain}` (or the names of `--users-file`) with one shared password must
//! exist. The generator runs on a current-thread runtime so it can be pinned to one core
//! (`taskset -c 1`).
//!
//! For a cluster: `--addr2` sends the receivers of `messages` to another edge, `--server-pid`
//! takes every server process (CPU summed, and reported per process), `--users-file` picks the
//! accounts (so pairs can be chosen by their home routers), and the `messages` result carries
//! the longest gap between deliveries (`max_gap_ms`, the recovery time when a router is killed
//! mid-run) and when the lost messages were sent.

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::Parser;
use starling_bench::login::{self as raw, RawConn};
use starling_bench::presence::{scan_presence, RawFramer, Ring, RoundTag};
use starling_xml::{Element, Event, Limits, StreamParser};
use starling_xmpp::ns;
use starling_xmpp::sasl::{ScramClient, ScramHash};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The generator allocates per login too (names, stanzas, close tasks); mimalloc makes that
/// cheaper, so its one core is the limit less often. The server keeps glibc's allocator
/// (docs/benchmarks.md, "Tried and not kept").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug, Clone)]
#[command(about = "XMPP load generator")]
struct Args {
    /// login | idle | messages | presence | presence-setup
    #[arg(long)]
    scenario: String,
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:5222")]
    addr: SocketAddr,
    /// Where the receivers of `messages` connect (another edge of a cluster); default `--addr`.
    #[arg(long)]
    addr2: Option<SocketAddr>,
    /// XMPP domain.
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// Account name prefix: accounts are {prefix}1 … {prefix}N.
    #[arg(long, default_value = "user")]
    prefix: String,
    /// Password of every account.
    #[arg(long, default_value = "password")]
    password: String,
    /// plain | scram-sha-1 | scram-sha-256
    #[arg(long, default_value = "plain")]
    mech: String,
    /// Negotiate STARTTLS, trusting this CA/certificate file.
    #[arg(long)]
    tls_ca: Option<String>,
    /// Clients (login, idle) or users (presence).
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Concurrent logins in flight.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Measured (warm) login storms, one after another, after the cold one: more rounds make the
    /// server's CPU per login (read in 10 ms ticks) more precise.
    #[arg(long, default_value_t = 3)]
    login_rounds: usize,
    /// Sender/receiver pairs (messages).
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// Total offered messages per second; 0 = as fast as the window allows.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Unacknowledged messages allowed per pair when unlimited.
    #[arg(long, default_value_t = 64)]
    window: u64,
    /// Measurement seconds (messages, idle hold); in presence, the bound on each round and on
    /// the wait for the initial presences.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Message body bytes.
    #[arg(long, default_value_t = 100)]
    body: usize,
    /// Contacts per user (presence): K/2 on each side of the ring; even, fewer than the users.
    #[arg(long, default_value_t = 50)]
    contacts: usize,
    /// Rounds of presence changes (presence); at most 63.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Make the ring's mutual subscriptions before measuring (presence). Harmless on rosters that
    /// already have them.
    #[arg(long)]
    setup: bool,
    /// Subscription handshakes a user has in flight at once during setup.
    #[arg(long, default_value_t = 8)]
    setup_window: usize,
    /// Bound on the setup, seconds (logins excluded).
    #[arg(long, default_value_t = 600)]
    setup_timeout: u64,
    /// Users whose roster is fetched again after setup to check every contact is `both`.
    #[arg(long, default_value_t = 100)]
    verify_sample: usize,
    /// Server process ids (comma-separated), to measure their CPU time and memory (summed, and
    /// CPU per process).
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Further process ids (comma-separated, e.g. Redis) whose CPU is reported apart, not summed.
    #[arg(long, value_delimiter = ',')]
    aux_pid: Vec<u32>,
    /// Account names (local parts), one a line, instead of {prefix}1 … {prefix}N: account i is
    /// line i; in `messages` pair p is lines 2p (sender) and 2p+1 (receiver).
    #[arg(long)]
    users_file: Option<String>,
    /// The names read from `--users-file`.
    #[arg(skip)]
    names: Arc<Vec<String>>,
    /// Label for the result line.
    #[arg(long, default_value = "")]
    label: String,
}

/// A connection's transport: TCP, then possibly TLS after STARTTLS.
enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Only while switching to TLS.
    Switching,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Switching => std::task::Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Switching => std::task::Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Switching => std::task::Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Switching => std::task::Poll::Ready(Ok(())),
        }
    }
}

/// One client connection.
struct Conn {
    io: Stream,
    parser: StreamParser,
    out: Vec<u8>,
}

/// Salted passwords by user, as real clients cache them (one run uses one mechanism).
type SaltCache = Rc<std::cell::RefCell<HashMap<String, Vec<u8>>>>;

impl Conn {
    async fn send(&mut self, data: &[u8]) -> Result<()> {
        self.io.write_all(data).await?;
        self.io.flush().await?;
        Ok(())
    }

    async fn next(&mut self) -> Result<Event> {
        loop {
            if let Some(ev) = self.parser.next_event().map_err(|e| anyhow!("bad XML from server: {e}"))? {
                return Ok(ev);
            }
            let buf = self.parser.buffer_mut();
            if buf.capacity() - buf.len() < 2048 {
                // Empty, this only reclaims the buffer's consumed front (no allocation).
                buf.reserve(if buf.is_empty() { 4096 } else { 16 * 1024 });
            }
            if self.io.read_buf(self.parser.buffer_mut()).await? == 0 {
                bail!("connection closed by server");
            }
        }
    }

    /// Close the stream as RFC 6120 §4.4 asks (see `RawConn::close_stream`): our closing tag,
    /// then the server's (or the end of the connection) before the socket is dropped.
    async fn close_stream(&mut self) -> Result<()> {
        self.send(b"</stream:stream>").await?;
        loop {
            match self.next().await {
                Ok(Event::StreamClose) => return Ok(()),
                Ok(_) => continue,
                // The connection ended without the server's tag (or with what does not parse):
                // nothing more to wait for.
                Err(_) => return Ok(()),
            }
        }
    }

    /// Stanzas already complete in the read buffer (none when it holds only a partial one).
    fn parsed(&mut self) -> Result<Vec<Element>> {
        let mut out = Vec::new();
        while let Some(ev) = self.parser.next_event().map_err(|e| anyhow!("bad XML from server: {e}"))? {
            if let Event::Stanza(e) = ev {
                out.push(e);
            }
        }
        Ok(out)
    }

    async fn element(&mut self) -> Result<Element> {
        loop {
            match self.next().await? {
                Event::Stanza(e) => return Ok(e),
                Event::StreamOpen(_) => continue,
                Event::StreamClose => bail!("stream closed by server"),
            }
        }
    }

    async fn open(&mut self, domain: &str) -> Result<Element> {
        // A stream (re)start: the server sends nothing between its last answer and our header,
        // so the parser only forgets the old stream and keeps its buffer.
        self.parser.reset();
        self.send(stream_header(domain).as_bytes()).await?;
        loop {
            let e = self.element().await?;
            if e.is("features", ns::STREAM) {
                return Ok(e);
            }
        }
    }
}

/// The client's stream header.
fn stream_header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
    )
}

/// `<auth/>` with a base64 initial response.
fn auth_stanza(mechanism: &str, payload: &[u8]) -> Vec<u8> {
    format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>{}</auth>",
        B64.encode(payload)
    )
    .into_bytes()
}

/// `<response/>` with a base64 payload.
fn response_stanza(payload: &[u8]) -> Vec<u8> {
    format!("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>", B64.encode(payload))
        .into_bytes()
}

/// The bind request (id `b`).
fn bind_stanza(resource: &str) -> Vec<u8> {
    format!(
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
    )
    .into_bytes()
}

/// The legacy session request (id `s`), for a server that requires it.
const SESSION_REQUEST: &[u8] =
    b"<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>";

/// The SCRAM hash of `--mech`, `None` for PLAIN.
fn scram_hash(mech: &str) -> Result<Option<ScramHash>> {
    Ok(match mech {
        "plain" => None,
        "scram-sha-1" => Some(ScramHash::Sha1),
        "scram-sha-256" => Some(ScramHash::Sha256),
        other => bail!("unknown mechanism {other}"),
    })
}

/// A SCRAM client for `user`, with the salted password from the cache when there is one.
fn scram_client(hash: ScramHash, args: &Args, user: &str, resource: &str, cache: &SaltCache) -> ScramClient {
    let sc = ScramClient::new(hash, user, &args.password, &format!("{resource}nonce"));
    match cache.borrow().get(user) {
        Some(s) => sc.with_salted_password(s.clone()),
        None => sc,
    }
}

/// Keep the salted password the exchange derived, as a client does after its first login.
fn remember_salt(cache: &SaltCache, user: &str, sc: &ScramClient) {
    if let Some(s) = sc.salted_password() {
        if !cache.borrow().contains_key(user) {
            cache.borrow_mut().insert(user.to_owned(), s.to_vec());
        }
    }
}

/// [`login`] for the login storm on plain TCP, reading the replies raw (see
/// `starling_bench::login`): the same exchange as a client's (stream, SASL with the mutual
/// authentication checked, restart, bind, the legacy session only where required) at a
/// fraction of the generator's cost.
async fn login_raw(
    args: &Args,
    header: &[u8],
    user: &str,
    resource: &str,
    cache: &SaltCache,
) -> Result<RawConn> {
    let tcp = TcpStream::connect(args.addr).await?;
    tcp.set_nodelay(true)?;
    let mut c = RawConn::new(tcp);
    c.send(header).await?;
    c.header().await?;
    if !raw::is_element(c.stanza().await?, "stream:features") {
        bail!("expected stream features");
    }
    match scram_hash(&args.mech)? {
        None => {
            c.send(&auth_stanza("PLAIN", format!("\0{user}\0{}", args.password).as_bytes())).await?;
            if !raw::is_element(c.stanza().await?, "success") {
                bail!("authentication failed for {user}");
            }
        }
        Some(hash) => {
            let mut sc = scram_client(hash, args, user, resource, cache);
            c.send(&auth_stanza(hash.mechanism(), &sc.client_first())).await?;
            let ch = c.stanza().await?;
            if !raw::is_element(ch, "challenge") {
                bail!("authentication failed for {user}: {}", String::from_utf8_lossy(ch));
            }
            let server_first = B64.decode(raw::text(ch).unwrap_or_default().trim_ascii())?;
            let fin = sc.handle_server_first(&server_first).map_err(|e| anyhow!("scram: {e}"))?;
            remember_salt(cache, user, &sc);
            c.send(&response_stanza(&fin)).await?;
            let success = c.stanza().await?;
            if !raw::is_element(success, "success") {
                bail!("authentication failed for {user}: {}", String::from_utf8_lossy(success));
            }
            let server_final = B64.decode(raw::text(success).unwrap_or_default().trim_ascii())?;
            sc.verify_server_final(&server_final).map_err(|e| anyhow!("server signature: {e}"))?;
        }
    }
    c.send(header).await?;
    c.header().await?;
    let features = c.stanza().await?;
    if !raw::is_element(features, "stream:features") {
        bail!("expected stream features after authentication");
    }
    let session = raw::needs_session(features);
    c.send(&bind_stanza(resource)).await?;
    loop {
        let e = c.stanza().await?;
        if raw::attr(e, "id") == Some(b"b") {
            if raw::attr(e, "type") != Some(b"result") {
                bail!("bind failed: {}", String::from_utf8_lossy(e));
            }
            break;
        }
    }
    if session {
        c.send(SESSION_REQUEST).await?;
        while raw::attr(c.stanza().await?, "id") != Some(b"s") {}
    }
    Ok(c)
}

fn tls_connector(ca: &str) -> Result<tokio_rustls::TlsConnector> {
    use rustls_pki_types::pem::PemObject;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(ca)? {
        roots.add(c?)?;
    }
    let cfg = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

/// What the generator accepts from a server: stanzas up to 1 MiB (a large roster).
fn reply_limits() -> Limits {
    Limits { max_stanza_bytes: 1 << 20, ..Limits::default() }
}

/// Whether the features after authentication ask for the legacy session request: offered and
/// not marked `<optional/>` (RFC 6121 dropped it; servers that keep it for old clients mark it
/// optional, and clients such as Conversations, Gajim and slixmpp then skip it, as here).
fn needs_session(features: &Element) -> bool {
    features.get_child("session", ns::SESSION).is_some_and(|s| s.get_child("optional", ns::SESSION).is_none())
}

/// Connect, (STARTTLS,) authenticate, bind and optionally send initial presence.
async fn login(args: &Args, user: &str, resource: &str, cache: &SaltCache, presence: bool) -> Result<Conn> {
    login_at(args, args.addr, user, resource, cache, presence).await
}

/// [`login`] to a given address.
async fn login_at(
    args: &Args,
    addr: SocketAddr,
    user: &str,
    resource: &str,
    cache: &SaltCache,
    presence: bool,
) -> Result<Conn> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut c = Conn { io: Stream::Tcp(tcp), parser: StreamParser::new(reply_limits()), out: Vec::new() };
    let f = c.open(&args.domain).await?;
    if let Some(ca) = &args.tls_ca {
        if f.get_child("starttls", ns::TLS).is_none() {
            bail!("server offers no STARTTLS");
        }
        c.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>").await?;
        let p = c.element().await?;
        if !p.is("proceed", ns::TLS) {
            bail!("STARTTLS refused");
        }
        let Stream::Tcp(tcp) = std::mem::replace(&mut c.io, Stream::Switching) else {
            bail!("STARTTLS twice");
        };
        let name = rustls_pki_types::ServerName::try_from(args.domain.clone())?;
        c.io = Stream::Tls(Box::new(tls_connector(ca)?.connect(name, tcp).await?));
        c.open(&args.domain).await?;
    }
    let success = match scram_hash(&args.mech)? {
        None => {
            c.send(&auth_stanza("PLAIN", format!("\0{user}\0{}", args.password).as_bytes())).await?;
            c.element().await?
        }
        Some(hash) => {
            let mut sc = scram_client(hash, args, user, resource, cache);
            c.send(&auth_stanza(hash.mechanism(), &sc.client_first())).await?;
            let ch = c.element().await?;
            let fin =
                sc.handle_server_first(&B64.decode(ch.text().trim())?).map_err(|e| anyhow!("scram: {e}"))?;
            remember_salt(cache, user, &sc);
            c.send(&response_stanza(&fin)).await?;
            c.element().await?
        }
    };
    if !success.is("success", ns::SASL) {
        bail!("authentication failed for {user}: {}", success.to_string_lossy());
    }
    let features = c.open(&args.domain).await?;
    c.send(&bind_stanza(resource)).await?;
    loop {
        let e = c.element().await?;
        if e.attr("id") == Some("b") {
            if e.attr("type") != Some("result") {
                bail!("bind failed: {}", e.to_string_lossy());
            }
            break;
        }
    }
    if needs_session(&features) {
        // The legacy session (RFC 3921) of a server that still requires it.
        c.send(SESSION_REQUEST).await?;
        loop {
            if c.element().await?.attr("id") == Some("s") {
                break;
            }
        }
    }
    if presence {
        c.send(b"<presence/>").await?;
    }
    Ok(c)
}

/// Server process counters from /proc.
#[derive(Clone, Copy, Debug, Default)]
struct ProcSample {
    cpu_seconds: f64,
    rss_bytes: u64,
}

fn sample_pid(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after "pid (comm)": state is [0]; utime is field 14 overall → index 11 here.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 =
        status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(ProcSample { cpu_seconds: ticks / 100.0, rss_bytes: rss_kb * 1024 })
}

/// Samples of several processes (None for one that is gone).
fn sample_all(pids: &[u32]) -> Vec<Option<ProcSample>> {
    pids.iter().map(|p| sample_pid(*p)).collect()
}

/// CPU between two samples of the same processes: the sum over those present in both (None
/// when none is), a JSON object of seconds per pid, and the pids gone in between.
fn cpu_between(pids: &[u32], before: &[Option<ProcSample>], after: &[Option<ProcSample>]) -> CpuDelta {
    let mut total = None;
    let mut per = Vec::new();
    let mut gone = Vec::new();
    for (i, pid) in pids.iter().enumerate() {
        match (before.get(i).copied().flatten(), after.get(i).copied().flatten()) {
            (Some(b), Some(a)) => {
                let d = a.cpu_seconds - b.cpu_seconds;
                total = Some(total.unwrap_or(0.0) + d);
                per.push(format!("\"{pid}\":{d:.3}"));
            }
            _ => gone.push(pid.to_string()),
        }
    }
    CpuDelta { total, per_pid: format!("{{{}}}", per.join(",")), gone: format!("[{}]", gone.join(",")) }
}

struct CpuDelta {
    total: Option<f64>,
    per_pid: String,
    gone: String,
}

impl CpuDelta {
    /// Microseconds per unit of work, or `null`.
    fn per(&self, units: u64, decimals: usize) -> String {
        match self.total {
            Some(t) => format!("{:.*}", decimals, t * 1e6 / units.max(1) as f64),
            None => "null".into(),
        }
    }

    fn total_json(&self) -> String {
        self.total.map_or("null".into(), |t| format!("{t:.3}"))
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn user(args: &Args, i: usize) -> String {
    match args.names.get(i) {
        Some(n) => n.clone(),
        None => format!("{}{}", args.prefix, i + 1),
    }
}

/// One login of a storm, bounded in time: user `i` logs in with resource `l{i}` and its stream
/// is handed to `closing` to be closed. Returns how long the login took (connect to bound).
async fn storm_login(
    args: &Args,
    header: &[u8],
    i: usize,
    cache: &SaltCache,
    closing: &Closing,
) -> Result<Duration> {
    let t = Instant::now();
    let name = user(args, i % args.clients.max(1));
    let resource = format!("l{i}");
    let bound = Duration::from_secs(30);
    // Plain TCP reads the replies raw; STARTTLS takes the full client path.
    if args.tls_ca.is_none() {
        let mut c = tokio::time::timeout(bound, login_raw(args, header, &name, &resource, cache))
            .await
            .map_err(|_| anyhow!("login timed out"))??;
        let took = t.elapsed();
        close_later(closing, bound, async move { c.close_stream().await });
        Ok(took)
    } else {
        let mut c = tokio::time::timeout(bound, login(args, &name, &resource, cache, false))
            .await
            .map_err(|_| anyhow!("login timed out"))??;
        let took = t.elapsed();
        close_later(closing, bound, async move { c.close_stream().await });
        Ok(took)
    }
}

/// The closes of a storm's streams, left running while the storm goes on (see [`login_storm`]).
type Closing = Rc<RefCell<Vec<tokio::task::JoinHandle<()>>>>;

/// Run `close` (bounded by `bound`) alongside the storm, into `closing`.
fn close_later(closing: &Closing, bound: Duration, close: impl std::future::Future + 'static) {
    closing.borrow_mut().push(tokio::task::spawn_local(async move {
        let _ = tokio::time::timeout(bound, close).await;
    }));
}

/// Wait until every stream in `closing` is closed.
async fn all_closed(closing: &Closing) {
    let handles = std::mem::take(&mut *closing.borrow_mut());
    for h in handles {
        let _ = h.await;
    }
}

/// One storm: every client logs in once (at most `concurrency` at a time) and closes its stream.
/// Returns the login latencies (µs) of the successes, the failures and the elapsed seconds.
///
/// A client closes as RFC 6120 §4.4 asks (its closing tag, then the server's, then the socket),
/// but outside the storm's concurrency and its clock: those closes go into `closing`, for the
/// caller to await. How long a server takes to answer a closing stream is not part of a login
/// (ejabberd takes ~100 ms after a bound session), and must neither hold the next logins back
/// nor leave the server idle between storms.
async fn login_storm(args: &Args, cache: &SaltCache, closing: &Closing) -> (Vec<u64>, usize, f64) {
    let shared = Rc::new(args.clone());
    let header: Rc<[u8]> = stream_header(&args.domain).into_bytes().into();
    // `concurrency` clients, each logging in the next user as soon as its last login is done:
    // no task, permit or latency list per login.
    let next = Rc::new(Cell::new(0usize));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.clamp(1, args.clients.max(1)) {
        let (args, cache, header, closing, next) =
            (shared.clone(), cache.clone(), header.clone(), closing.clone(), next.clone());
        workers.push(tokio::task::spawn_local(async move {
            let (mut lat, mut failures) = (Vec::new(), 0usize);
            loop {
                let i = next.get();
                if i >= args.clients {
                    break;
                }
                next.set(i + 1);
                match storm_login(&args, &header, i, &cache, &closing).await {
                    Ok(took) => lat.push(took.as_micros() as u64),
                    Err(_) => failures += 1,
                }
            }
            (lat, failures)
        }));
    }
    let mut lat = Vec::with_capacity(args.clients);
    let mut failures = 0;
    for w in workers {
        match w.await {
            Ok((l, f)) => {
                lat.extend(l);
                failures += f;
            }
            Err(_) => failures += 1,
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    (lat, failures, elapsed)
}

/// The login storm, first cold, then `login_rounds` times warm: in the cold pass the generator
/// derives every user's salted password (PBKDF2, as a client does once per account); the
/// measured passes use the cached one, as real clients do on every later login. Without the
/// cold pass the generator's own PBKDF2 is the limit, not the server. The cold pass's rate is
/// reported as `cold_logins_per_s`; latencies, failures, rates and CPU are over the warm passes.
async fn scenario_login(args: &Args) -> Result<String> {
    let cache: SaltCache = Rc::default();
    let closing = Closing::default();
    let (cold, _, cold_elapsed) = login_storm(args, &cache, &closing).await;
    all_closed(&closing).await;
    let before = sample_all(&args.server_pid);
    let gen_before = sample_pid(std::process::id());
    let (mut lat, mut failures, mut elapsed) = (Vec::new(), 0, 0.0);
    for _ in 0..args.login_rounds.max(1) {
        let (l, f, e) = login_storm(args, &cache, &closing).await;
        lat.extend(l);
        failures += f;
        elapsed += e;
    }
    // The server's CPU takes in every close, the last storm's too.
    all_closed(&closing).await;
    let after = sample_all(&args.server_pid);
    let gen_cpu = match (gen_before, sample_pid(std::process::id())) {
        (Some(b), Some(a)) => format!("{:.3}", a.cpu_seconds - b.cpu_seconds),
        _ => "null".to_owned(),
    };
    lat.sort_unstable();
    let delta = cpu_between(&args.server_pid, &before, &after);
    let cpu = delta.per(lat.len() as u64, 1);
    Ok(format!(
        "{{\"scenario\":\"login\",\"label\":\"{}\",\"mech\":\"{}\",\"tls\":{},\"clients\":{},\"concurrency\":{},\
         \"rounds\":{},\"ok\":{},\"failures\":{},\"seconds\":{:.3},\"logins_per_s\":{:.1},\"p50_ms\":{:.2},\
         \"p99_ms\":{:.2},\"cold_logins_per_s\":{:.1},\"server_cpu_us_per_login\":{},\"server_cpu_s\":{},\
         \"server_cpu_s_per_pid\":{},\"generator_cpu_s\":{}}}",
        args.label,
        args.mech,
        args.tls_ca.is_some(),
        args.clients,
        args.concurrency,
        args.login_rounds.max(1),
        lat.len(),
        failures,
        elapsed,
        lat.len() as f64 / elapsed,
        percentile(&lat, 0.5) as f64 / 1000.0,
        percentile(&lat, 0.99) as f64 / 1000.0,
        cold.len() as f64 / cold_elapsed,
        cpu,
        delta.total_json(),
        delta.per_pid,
        gen_cpu
    ))
}

async fn scenario_idle(args: &Args) -> Result<String> {
    let cache: SaltCache = Rc::default();
    let rss = |pids: &[u32]| -> Option<u64> {
        if pids.is_empty() {
            return None;
        }
        sample_all(pids).iter().map(|s| s.map(|s| s.rss_bytes)).sum()
    };
    let before = rss(&args.server_pid).ok_or_else(|| anyhow!("idle needs --server-pid"))?;
    let mut conns = Vec::with_capacity(args.clients);
    let sem = Rc::new(tokio::sync::Semaphore::new(args.concurrency));
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let (sem, args, cache) = (sem.clone(), args.clone(), cache.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let _p = sem.acquire().await.map_err(|e| anyhow!("{e}"))?;
            login(&args, &user(&args, i), "idle", &cache, true).await
        }));
    }
    for t in tasks {
        conns.push(t.await.map_err(|e| anyhow!("{e}"))??);
    }
    // Let the server settle (allocator, queues) before reading its memory.
    tokio::time::sleep(Duration::from_secs(args.duration.min(5))).await;
    let after = rss(&args.server_pid).ok_or_else(|| anyhow!("server gone"))?;
    let per = (after.saturating_sub(before)) as f64 / conns.len() as f64;
    drop(conns);
    Ok(format!(
        "{{\"scenario\":\"idle\",\"label\":\"{}\",\"tls\":{},\"sessions\":{},\"rss_before_bytes\":{},\
         \"rss_after_bytes\":{},\"bytes_per_session\":{:.0},\"server_pids\":{}}}",
        args.label,
        args.tls_ca.is_some(),
        args.clients,
        before,
        after,
        per,
        args.server_pid.len()
    ))
}

/// Sequence numbers tracked per pair for loss analysis (beyond this, loss is only counted).
const TRACK_SEQS: usize = 4_000_000;

/// Per-pair receive statistics.
#[derive(Default)]
struct PairStats {
    received: u64,
    last_seq: Option<u64>,
    reordered: u64,
    duplicates: u64,
    latencies_us: Vec<u64>,
    /// Which sequence numbers arrived (up to [`TRACK_SEQS`]).
    seen: Vec<bool>,
    /// The last delivery (µs since the epoch) and the longest gap between two deliveries.
    last_recv_us: Option<u64>,
    max_gap_us: u64,
    max_gap_at_us: u64,
    errors: u64,
}

/// Gaps in the merged delivery stream of all pairs.
#[derive(Default)]
struct AllGaps {
    last_us: Option<u64>,
    max_gap_us: u64,
    max_gap_at_us: u64,
}

fn is_error_message(e: &Element) -> bool {
    e.name == "message" && e.attr("type") == Some("error")
}

/// The defined condition of an error stanza (`service-unavailable`, …).
fn error_condition(e: &Element) -> String {
    e.get_child("error", ns::CLIENT)
        .and_then(|err| err.elements().find(|c| c.name != "text").map(|c| c.name.to_string()))
        .unwrap_or_else(|| "none".into())
}

async fn scenario_messages(args: &Args) -> Result<String> {
    let cache: SaltCache = Rc::default();
    let body_pad = "x".repeat(args.body.saturating_sub(24));
    let raddr = args.addr2.unwrap_or(args.addr);
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for p in 0..args.pairs {
        senders.push(login_at(args, args.addr, &user(args, 2 * p), "s", &cache, true).await?);
        receivers.push(login_at(args, raddr, &user(args, 2 * p + 1), "r", &cache, true).await?);
    }
    let epoch = Instant::now();
    eprintln!("loadgen: measuring ({} pairs, {} s)", args.pairs, args.duration);
    let run_for = Duration::from_secs(args.duration);
    let sent_total = Rc::new(std::cell::Cell::new(0u64));
    let stats: Vec<Rc<std::cell::RefCell<PairStats>>> = (0..args.pairs).map(|_| Rc::default()).collect();
    let sent_at: Vec<Rc<std::cell::RefCell<Vec<u64>>>> = (0..args.pairs).map(|_| Rc::default()).collect();
    let all_gaps: Rc<std::cell::RefCell<AllGaps>> = Rc::default();
    let acked: Vec<Rc<std::cell::Cell<u64>>> = (0..args.pairs).map(|_| Rc::default()).collect();
    let notify: Vec<Rc<tokio::sync::Notify>> = (0..args.pairs).map(|_| Rc::default()).collect();
    let sender_errors = Rc::new(std::cell::Cell::new(0u64));
    let conditions: Rc<std::cell::RefCell<std::collections::BTreeMap<String, u64>>> = Rc::default();
    let stop_at = epoch + run_for;

    let mut rtasks = Vec::new();
    for (p, mut r) in receivers.into_iter().enumerate() {
        let (st, ack, n, all) = (stats[p].clone(), acked[p].clone(), notify[p].clone(), all_gaps.clone());
        rtasks.push(tokio::task::spawn_local(async move {
            // Drain presence noise; count messages; stop shortly after the senders.
            let deadline = stop_at + Duration::from_secs(3);
            loop {
                let ev = match tokio::time::timeout_at(deadline.into(), r.next()).await {
                    Ok(Ok(ev)) => ev,
                    _ => break,
                };
                let Event::Stanza(e) = ev else { continue };
                if e.name != "message" {
                    continue;
                }
                if is_error_message(&e) {
                    st.borrow_mut().errors += 1;
                    continue;
                }
                let Some(body) = e.get_child("body", ns::CLIENT).map(|b| b.text()) else { continue };
                let mut it = body.split(' ');
                let (Some(seq), Some(t)) = (it.next(), it.next()) else { continue };
                let (Ok(seq), Ok(t)) = (seq.parse::<u64>(), t.parse::<u64>()) else { continue };
                let now = epoch.elapsed().as_micros() as u64;
                let mut s = st.borrow_mut();
                s.received += 1;
                if s.last_seq.is_some_and(|l| seq < l) {
                    s.reordered += 1;
                }
                s.last_seq = Some(seq);
                if let Ok(i) = usize::try_from(seq) {
                    if i < TRACK_SEQS {
                        if s.seen.len() <= i {
                            s.seen.resize(i + 1, false);
                        }
                        if s.seen[i] {
                            s.duplicates += 1;
                        }
                        s.seen[i] = true;
                    }
                }
                if s.latencies_us.len() < 2_000_000 {
                    s.latencies_us.push(now.saturating_sub(t));
                }
                if let Some(last) = s.last_recv_us {
                    if now - last > s.max_gap_us {
                        s.max_gap_us = now - last;
                        s.max_gap_at_us = last;
                    }
                }
                s.last_recv_us = Some(now);
                let mut g = all.borrow_mut();
                if let Some(last) = g.last_us {
                    if now.saturating_sub(last) > g.max_gap_us {
                        g.max_gap_us = now - last;
                        g.max_gap_at_us = last;
                    }
                }
                g.last_us = Some(now);
                ack.set(ack.get() + 1);
                n.notify_one();
            }
            r
        }));
    }
    let before = sample_all(&args.server_pid);
    let aux_before = sample_all(&args.aux_pid);
    let gen_before = sample_pid(std::process::id());
    let per_pair_rate = if args.rate == 0 { 0.0 } else { args.rate as f64 / args.pairs as f64 };
    let mut stasks = Vec::new();
    for (p, mut s) in senders.into_iter().enumerate() {
        let to = format!("{}@{}/r", user(args, 2 * p + 1), args.domain);
        let (ack, n, sent_total, pad) =
            (acked[p].clone(), notify[p].clone(), sent_total.clone(), body_pad.clone());
        let (times, errors, conds) = (sent_at[p].clone(), sender_errors.clone(), conditions.clone());
        let window = args.window;
        let phase = p as f64 / args.pairs.max(1) as f64;
        stasks.push(tokio::task::spawn_local(async move {
            let mut seq = 0u64;
            let start = Instant::now();
            // While waiting, read what the server sends the sender (errors for messages it
            // could not deliver), so they are counted and never fill the socket.
            let mut closed = false;
            while Instant::now() < stop_at {
                let wait = if per_pair_rate > 0.0 {
                    // Paced: send what the schedule says is due, else sleep a millisecond. Each
                    // pair's schedule is shifted by its share of the interval, so the offered
                    // rate is spread evenly over time instead of every pair sending at the same
                    // instant (a burst of one message per pair every interval).
                    let due = (start.elapsed().as_secs_f64() * per_pair_rate - phase).max(0.0) as u64;
                    (seq >= due).then_some(Duration::from_millis(1))
                } else {
                    (seq.saturating_sub(ack.get()) >= window).then_some(Duration::from_millis(50))
                };
                if let Some(wait) = wait {
                    let unlimited = per_pair_rate == 0.0;
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = n.notified(), if unlimited => {}
                        got = s.io.read_buf(s.parser.buffer_mut()), if !closed => {
                            match got {
                                Ok(0) | Err(_) => closed = true,
                                Ok(_) => match s.parsed() {
                                    Ok(els) => {
                                        for e in els.iter().filter(|e| is_error_message(e)) {
                                            errors.set(errors.get() + 1);
                                            *conds.borrow_mut().entry(error_condition(e)).or_default() += 1;
                                        }
                                    }
                                    Err(_) => closed = true,
                                },
                            }
                        }
                    }
                    continue;
                }
                s.out.clear();
                let burst =
                    if per_pair_rate > 0.0 { 1 } else { window.saturating_sub(seq - ack.get()).clamp(1, 16) };
                let t = epoch.elapsed().as_micros() as u64;
                {
                    let mut times = times.borrow_mut();
                    for _ in 0..burst {
                        let m =
                            format!("<message to='{to}' type='chat'><body>{seq} {t} {pad}</body></message>");
                        s.out.extend_from_slice(m.as_bytes());
                        if times.len() < TRACK_SEQS {
                            times.push(t);
                        }
                        seq += 1;
                    }
                }
                let out = std::mem::take(&mut s.out);
                if s.send(&out).await.is_err() {
                    break;
                }
                s.out = out;
            }
            sent_total.set(sent_total.get() + seq);
            s
        }));
    }
    let mut keep = Vec::new();
    for t in stasks {
        keep.push(t.await.map_err(|e| anyhow!("{e}"))?);
    }
    let send_elapsed = epoch.elapsed().as_secs_f64();
    let send_end_us = epoch.elapsed().as_micros() as u64;
    let mut rkeep = Vec::new();
    for t in rtasks {
        rkeep.push(t.await.map_err(|e| anyhow!("{e}"))?);
    }
    let after = sample_all(&args.server_pid);
    let aux_after = sample_all(&args.aux_pid);
    let gen_cpu = match (gen_before, sample_pid(std::process::id())) {
        (Some(b), Some(a)) => format!("{:.3}", a.cpu_seconds - b.cpu_seconds),
        _ => "null".into(),
    };
    let mut lat: Vec<u64> = Vec::new();
    let (mut received, mut reordered, mut duplicates, mut rerrors) = (0u64, 0u64, 0u64, 0u64);
    // The longest silence of any pair: between two deliveries, or from the last delivery (or
    // the start, if none came) to the end of sending.
    let (mut max_gap, mut max_gap_at, mut gappy_pairs) = (0u64, 0u64, 0u64);
    let (mut lost_seqs, mut lost_first, mut lost_last, mut tracked) = (0u64, None::<u64>, None::<u64>, true);
    for (p, s) in stats.iter().enumerate() {
        let s = s.borrow();
        received += s.received;
        reordered += s.reordered;
        duplicates += s.duplicates;
        rerrors += s.errors;
        lat.extend_from_slice(&s.latencies_us);
        let (mut gap, mut at) = (s.max_gap_us, s.max_gap_at_us);
        let last = s.last_recv_us.unwrap_or(0);
        if send_end_us.saturating_sub(last) > gap {
            (gap, at) = (send_end_us.saturating_sub(last), last);
        }
        if gap > 1_000_000 {
            gappy_pairs += 1;
        }
        if gap > max_gap {
            (max_gap, max_gap_at) = (gap, at);
        }
        let times = sent_at[p].borrow();
        if times.len() >= TRACK_SEQS {
            tracked = false;
        }
        for (i, t) in times.iter().enumerate() {
            if !s.seen.get(i).copied().unwrap_or(false) {
                lost_seqs += 1;
                lost_first = Some(lost_first.map_or(*t, |f| f.min(*t)));
                lost_last = Some(lost_last.map_or(*t, |l| l.max(*t)));
            }
        }
    }
    let all = all_gaps.borrow();
    let all_gap = all.max_gap_us.max(send_end_us.saturating_sub(all.last_us.unwrap_or(0)));
    lat.sort_unstable();
    let sent = sent_total.get();
    let delta = cpu_between(&args.server_pid, &before, &after);
    let aux = cpu_between(&args.aux_pid, &aux_before, &aux_after);
    let cpu = delta.per(received, 2);
    let ms = |us: Option<u64>| us.map_or("null".into(), |v| format!("{:.1}", v as f64 / 1000.0));
    drop((keep, rkeep));
    Ok(format!(
        "{{\"scenario\":\"messages\",\"label\":\"{}\",\"pairs\":{},\"offered_rate\":{},\"body_bytes\":{},\
         \"seconds\":{:.2},\"sent\":{},\"delivered\":{},\"lost\":{},\"reordered\":{},\"delivered_per_s\":{:.0},\
         \"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"server_cpu_us_per_msg\":{},\
         \"two_addrs\":{},\"server_pids\":{},\"server_cpu_s\":{},\"server_cpu_s_per_pid\":{},\
         \"server_pids_gone\":{},\"aux_cpu_s_per_pid\":{},\"max_gap_ms\":{:.1},\"max_gap_at_ms\":{:.1},\
         \"max_gap_all_ms\":{:.1},\"pairs_gap_over_1s\":{},\"lost_seqs\":{},\"lost_tracked\":{},\
         \"lost_first_sent_ms\":{},\"lost_last_sent_ms\":{},\"duplicates\":{},\"errors_to_senders\":{},\
         \"errors_to_receivers\":{},\"error_conditions\":{{{}}},\"generator_cpu_s\":{}}}",
        args.label,
        args.pairs,
        args.rate,
        args.body,
        send_elapsed,
        sent,
        received,
        sent.saturating_sub(received),
        reordered,
        received as f64 / send_elapsed,
        percentile(&lat, 0.5) as f64 / 1000.0,
        percentile(&lat, 0.9) as f64 / 1000.0,
        percentile(&lat, 0.99) as f64 / 1000.0,
        lat.last().copied().unwrap_or(0) as f64 / 1000.0,
        cpu,
        args.addr2.is_some_and(|a| a != args.addr),
        args.server_pid.len(),
        delta.total_json(),
        delta.per_pid,
        delta.gone,
        aux.per_pid,
        max_gap as f64 / 1000.0,
        max_gap_at as f64 / 1000.0,
        all_gap as f64 / 1000.0,
        gappy_pairs,
        lost_seqs,
        tracked,
        ms(lost_first),
        ms(lost_last),
        duplicates,
        sender_errors.get(),
        rerrors,
        conditions.borrow().iter().map(|(k, v)| format!("\"{k}\":{v}")).collect::<Vec<_>>().join(","),
        gen_cpu
    ))
}

// ---- presence: the ring's rosters (setup) and the fan-out measurement ----

/// Where user `i` of the presence ring connects: with `--addr2`, odd users go there, so half of
/// every user's contacts sit on the other edge.
fn presence_addr(args: &Args, i: usize) -> SocketAddr {
    match args.addr2 {
        Some(a) if i % 2 == 1 => a,
        _ => args.addr,
    }
}

/// The bare JID of user `i`.
fn bare_jid(args: &Args, i: usize) -> String {
    format!("{}@{}", user(args, i), args.domain)
}

/// Bare JID → user index, for the receive paths.
fn jid_index(args: &Args) -> HashMap<Vec<u8>, usize> {
    (0..args.clients).map(|i| (bare_jid(args, i).into_bytes(), i)).collect()
}

/// A bound for the login of all `users` (each login is bounded on its own as well).
fn logins_bound(users: usize) -> Duration {
    Duration::from_secs(60 + users as u64 / 10)
}

/// The hard bound on a whole run of `args.scenario`.
fn run_bound_secs(args: &Args) -> u64 {
    let logins = logins_bound(args.clients).as_secs();
    let setup = args.scenario == "presence-setup" || (args.scenario == "presence" && args.setup);
    let setup_secs = if setup { logins + args.setup_timeout + 60 } else { 0 };
    let measure_secs =
        if args.scenario == "presence" { logins + (u64::from(args.rounds) + 1) * args.duration } else { 0 };
    args.duration + 300 + setup_secs + measure_secs
}

/// Wait (bounded) until the server processes use under 5 % of a core over half a second, so a
/// measurement does not start while the server still works off what came before (e.g. the
/// departures of the setup's sessions); returns the seconds waited.
async fn wait_server_quiet(pids: &[u32], bound: Duration) -> f64 {
    let t0 = Instant::now();
    if pids.is_empty() {
        return 0.0;
    }
    let mut prev = sample_all(pids);
    while t0.elapsed() < bound {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = sample_all(pids);
        if cpu_between(pids, &prev, &now).total.is_none_or(|s| s < 0.025) {
            break;
        }
        prev = now;
    }
    t0.elapsed().as_secs_f64()
}

/// Wait until `done()` holds, woken by `notify`; false if `deadline` passes first.
async fn wait_until(notify: &tokio::sync::Notify, deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if tokio::time::timeout_at(deadline.into(), notify.notified()).await.is_err() {
            return done();
        }
    }
}

/// Log in users 0..U at `--concurrency`, each with `f` (which may do more after the login) and
/// bounded in time; every failure is an error naming the user.
async fn log_in_all<T, F, Fut>(args: &Args, f: F) -> Result<Vec<T>>
where
    T: 'static,
    F: Fn(Args, usize, SaltCache) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + 'static,
{
    let cache: SaltCache = Rc::default();
    let sem = Rc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let sem = sem.clone();
        let fut = f(args.clone(), i, cache.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let _permit = sem.acquire().await.map_err(|e| anyhow!("{e}"))?;
            tokio::time::timeout(Duration::from_secs(60), fut)
                .await
                .map_err(|_| anyhow!("login timed out"))?
        }));
    }
    let deadline = Instant::now() + logins_bound(args.clients);
    let mut out = Vec::with_capacity(tasks.len());
    for (i, t) in tasks.into_iter().enumerate() {
        let r =
            tokio::time::timeout_at(deadline.into(), t).await.map_err(|_| anyhow!("logins took too long"))?;
        out.push(r.map_err(|e| anyhow!("{e}"))?.with_context(|| format!("user {}", user(args, i)))?);
    }
    Ok(out)
}

/// A user's view of one of its ring contacts during setup (from its roster and the pushes).
#[derive(Clone, Copy, Default)]
struct SubView {
    /// The user is subscribed to the contact's presence (`to` or `both`).
    to: bool,
    /// The contact is subscribed to the user's presence (`from` or `both`).
    from: bool,
    /// The user sent the contact a `subscribe` in this run.
    asked: bool,
    /// A handshake this user started with the contact holds one of its window's places.
    in_flight: bool,
}

impl SubView {
    fn both(&self) -> bool {
        self.to && self.from
    }
}

/// What the setup counted (summed over users).
#[derive(Default)]
struct SetupTally {
    /// Users that sent initial presence (their requests can now be delivered).
    available: usize,
    /// Users whose every ring contact is `both`.
    complete: usize,
    /// Ring items already `both` in the rosters fetched at login.
    already_both: u64,
    /// `subscribe` sent (handshakes started, and subscriptions back).
    subscribes: u64,
    /// `subscribed` sent (approvals).
    approvals: u64,
    /// Roster pushes received, and those that made an item `both`.
    pushes: u64,
    both_pushes: u64,
    /// Presence from accounts that are not ring contacts (left unanswered).
    strangers: u64,
    /// Users whose roster was fetched again, their ring items that are `both`, those that are not.
    verified_users: usize,
    verified_both: u64,
    verified_missing: u64,
    /// Sessions that ended early.
    failed: u64,
}

/// Shared by the setup's user tasks.
struct SetupCtx {
    ring: Ring,
    index: HashMap<Vec<u8>, usize>,
    window: usize,
    tally: RefCell<SetupTally>,
    notify: tokio::sync::Notify,
}

/// What the setup's controller tells a user task.
enum SetupCmd {
    /// Start the handshakes this user owes.
    Start,
    /// Fetch the roster again and check it.
    Verify,
}

/// Apply the `<item/>`s of a roster query to the views; returns (items seen on the ring, of which
/// became or are `both`, window places freed).
fn apply_roster(ctx: &SetupCtx, me: usize, query: &Element, views: &mut [SubView]) -> (u64, u64, usize) {
    let (mut seen, mut both, mut freed) = (0, 0, 0);
    for item in query.elements().filter(|e| e.name == "item") {
        let Some(jid) = item.attr("jid") else { continue };
        let Some(off) = ctx.index.get(jid.as_bytes()).and_then(|&o| ctx.ring.offset(me, o)) else { continue };
        let sub = item.attr("subscription").unwrap_or("none");
        let v = &mut views[off];
        v.to = matches!(sub, "to" | "both");
        v.from = matches!(sub, "from" | "both");
        seen += 1;
        if v.both() {
            both += 1;
            if v.in_flight {
                v.in_flight = false;
                freed += 1;
            }
        }
    }
    (seen, both, freed)
}

fn subscription_presence(out: &mut Vec<u8>, to: &str, kind: &str) {
    out.extend_from_slice(format!("<presence to='{to}' type='{kind}'/>").as_bytes());
}

/// Log in for setup: no initial presence yet, the roster fetched (which also asks for pushes,
/// RFC 6121 §2.1.6) and read into the views.
async fn setup_login(args: Args, me: usize, cache: SaltCache, ring: Ring) -> Result<(Conn, Vec<SubView>)> {
    let index = jid_index_subset(&args, me, ring);
    let mut c = login_at(&args, presence_addr(&args, me), &user(&args, me), "p", &cache, false).await?;
    c.send(b"<iq type='get' id='r0'><query xmlns='jabber:iq:roster'/></iq>").await?;
    let mut views = vec![SubView::default(); ring.contacts()];
    loop {
        let e = c.element().await?;
        if e.attr("id") != Some("r0") {
            continue;
        }
        let q =
            e.get_child("query", ns::ROSTER).ok_or_else(|| anyhow!("roster get: {}", e.to_string_lossy()))?;
        for item in q.elements().filter(|e| e.name == "item") {
            let (Some(jid), sub) = (item.attr("jid"), item.attr("subscription").unwrap_or("none")) else {
                continue;
            };
            if let Some(&off) = index.get(jid) {
                views[off].to = matches!(sub, "to" | "both");
                views[off].from = matches!(sub, "from" | "both");
            }
        }
        return Ok((c, views));
    }
}

/// The bare JIDs of `me`'s ring contacts → their offsets.
fn jid_index_subset(args: &Args, me: usize, ring: Ring) -> HashMap<String, usize> {
    (0..ring.contacts()).map(|o| (bare_jid(args, ring.contact(me, o)), o)).collect()
}

/// One user during setup: answers every `subscribe` from a ring contact with `subscribed` (and a
/// `subscribe` back when not yet subscribed), starts the handshakes it owes (with its next K/2
/// neighbours) at most `window` at a time, and follows its roster through the pushes.
async fn setup_user(
    ctx: Rc<SetupCtx>,
    args: Args,
    me: usize,
    mut c: Conn,
    mut views: Vec<SubView>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<SetupCmd>,
) -> Result<()> {
    let ring = ctx.ring;
    let jid = |off: usize| bare_jid(&args, ring.contact(me, off));
    c.send(b"<presence/>").await?;
    {
        let mut t = ctx.tally.borrow_mut();
        t.available += 1;
        t.already_both += views.iter().filter(|v| v.both()).count() as u64;
    }
    ctx.notify.notify_one();
    let mut queue: VecDeque<usize> = VecDeque::new();
    let mut in_flight = 0usize;
    let mut complete = false;
    let mut out = Vec::new();
    loop {
        // Start queued handshakes while the window has room.
        while in_flight < ctx.window {
            let Some(off) = queue.pop_front() else { break };
            if views[off].to {
                continue;
            }
            subscription_presence(&mut out, &jid(off), "subscribe");
            views[off].asked = true;
            views[off].in_flight = true;
            in_flight += 1;
            ctx.tally.borrow_mut().subscribes += 1;
        }
        if !out.is_empty() {
            c.send(&out).await?;
            out.clear();
        }
        if !complete && views.iter().all(SubView::both) {
            complete = true;
            ctx.tally.borrow_mut().complete += 1;
            ctx.notify.notify_one();
        }
        let ev = tokio::select! {
            cmd = rx.recv() => {
                match cmd {
                    Some(SetupCmd::Start) => {
                        for (off, v) in views.iter_mut().enumerate() {
                            if v.to {
                                continue;
                            }
                            if ring.initiates(off) {
                                queue.push_back(off);
                            } else if v.from {
                                // A half-made pair (an earlier run stopped midway): the contact
                                // sees us but we do not see it; it will approve.
                                subscription_presence(&mut out, &jid(off), "subscribe");
                                v.asked = true;
                                ctx.tally.borrow_mut().subscribes += 1;
                            }
                        }
                    }
                    Some(SetupCmd::Verify) => {
                        out.extend_from_slice(b"<iq type='get' id='v'><query xmlns='jabber:iq:roster'/></iq>");
                    }
                    None => break,
                }
                continue;
            }
            ev = c.next() => ev?,
        };
        let e = match ev {
            Event::Stanza(e) => e,
            Event::StreamOpen(_) => continue,
            Event::StreamClose => bail!("stream closed by server"),
        };
        match e.name.as_str() {
            "presence" => {
                let Some(from) = e.attr("from") else { continue };
                let from_bare = from.split('/').next().unwrap_or(from);
                let other = ctx.index.get(from_bare.as_bytes()).copied();
                if other == Some(me) {
                    continue; // our own presence, echoed (§4.2.2)
                }
                let Some(off) = other.and_then(|o| ring.offset(me, o)) else {
                    ctx.tally.borrow_mut().strangers += 1;
                    continue;
                };
                if e.attr("type") == Some("subscribe") {
                    // RFC 6121 §3.1.4: approve; §3.1.1: and subscribe back if not yet subscribed.
                    subscription_presence(&mut out, from_bare, "subscribed");
                    let mut t = ctx.tally.borrow_mut();
                    t.approvals += 1;
                    let v = &mut views[off];
                    if !v.to && !v.asked {
                        subscription_presence(&mut out, from_bare, "subscribe");
                        v.asked = true;
                        t.subscribes += 1;
                    }
                }
            }
            "iq" => {
                let Some(q) = e.get_child("query", ns::ROSTER) else { continue };
                match (e.attr("type"), e.attr("id")) {
                    // A push (§2.1.6). Not acknowledged: no server needs the result, and at
                    // K = 500 it would double the setup's traffic.
                    (Some("set"), _) => {
                        let (seen, both, freed) = apply_roster(&ctx, me, q, &mut views);
                        in_flight -= freed.min(in_flight);
                        let mut t = ctx.tally.borrow_mut();
                        t.pushes += seen;
                        t.both_pushes += both;
                    }
                    (Some("result"), Some("v")) => {
                        let mut fresh = vec![SubView::default(); ring.contacts()];
                        let (_, both, _) = apply_roster(&ctx, me, q, &mut fresh);
                        let mut t = ctx.tally.borrow_mut();
                        t.verified_users += 1;
                        t.verified_both += both;
                        t.verified_missing += ring.contacts() as u64 - both;
                        drop(t);
                        ctx.notify.notify_one();
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let _ = c.send(b"</stream:stream>").await;
    Ok(())
}

/// `presence-setup`: make every user of the ring mutually subscribed (`both`) with its K
/// contacts, with the ordinary protocol; then fetch a sample of rosters again to check.
async fn scenario_presence_setup(args: &Args) -> Result<String> {
    let ring = Ring::new(args.clients, args.contacts).map_err(|e| anyhow!(e))?;
    let t0 = Instant::now();
    let logins = log_in_all(args, |a, i, cache| setup_login(a, i, cache, ring)).await?;
    let login_s = t0.elapsed().as_secs_f64();
    let ctx = Rc::new(SetupCtx {
        ring,
        index: jid_index(args),
        window: args.setup_window.max(1),
        tally: RefCell::default(),
        notify: tokio::sync::Notify::new(),
    });
    let mut txs = Vec::with_capacity(args.clients);
    let mut tasks = Vec::with_capacity(args.clients);
    for (i, (c, views)) in logins.into_iter().enumerate() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        txs.push(tx);
        let (ctx, args) = (ctx.clone(), args.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let r = setup_user(ctx.clone(), args, i, c, views, rx).await;
            if r.is_err() {
                ctx.tally.borrow_mut().failed += 1;
                ctx.notify.notify_one();
            }
            r
        }));
    }
    let users = args.clients;
    let t1 = Instant::now();
    let deadline = t1 + Duration::from_secs(args.setup_timeout);
    let all_available = wait_until(&ctx.notify, deadline, || ctx.tally.borrow().available == users).await;
    if !all_available {
        bail!("setup: only {} of {users} users became available", ctx.tally.borrow().available);
    }
    for tx in &txs {
        let _ = tx.send(SetupCmd::Start);
    }
    let complete = wait_until(&ctx.notify, deadline, || {
        let t = ctx.tally.borrow();
        t.complete == users || t.failed > 0
    })
    .await
        && ctx.tally.borrow().complete == users;
    let setup_s = t1.elapsed().as_secs_f64();
    // Check a sample of rosters as the server now stores them.
    let stride = (users / args.verify_sample.max(1)).max(1);
    let sample: Vec<usize> = (0..users).step_by(stride).collect();
    for &i in &sample {
        let _ = txs[i].send(SetupCmd::Verify);
    }
    let verify_deadline = Instant::now() + Duration::from_secs(30);
    wait_until(&ctx.notify, verify_deadline, || ctx.tally.borrow().verified_users >= sample.len()).await;
    drop(txs);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let t = ctx.tally.borrow();
    let verified_ok = t.verified_users == sample.len() && t.verified_missing == 0;
    eprintln!(
        "loadgen: setup {} in {setup_s:.1} s ({} of {users} users complete, sample {}/{} verified)",
        if complete && verified_ok { "done" } else { "INCOMPLETE" },
        t.complete,
        t.verified_users,
        sample.len()
    );
    Ok(format!(
        "{{\"scenario\":\"presence-setup\",\"label\":\"{}\",\"users\":{users},\"contacts\":{},\"pairs\":{},\
         \"two_addrs\":{},\"login_s\":{login_s:.2},\"setup_s\":{setup_s:.2},\"complete\":{},\
         \"users_complete\":{},\"items_already_both\":{},\"subscribes_sent\":{},\"approvals_sent\":{},\
         \"roster_pushes\":{},\"both_pushes\":{},\"strangers\":{},\"failed_sessions\":{},\
         \"verified_users\":{},\"verified_items_both\":{},\"verified_items_missing\":{},\"verified_ok\":{}}}",
        args.label,
        ring.contacts(),
        users * ring.half,
        args.addr2.is_some_and(|a| a != args.addr),
        complete,
        t.complete,
        t.already_both,
        t.subscribes,
        t.approvals,
        t.pushes,
        t.both_pushes,
        t.strangers,
        t.failed,
        t.verified_users,
        t.verified_both,
        t.verified_missing,
        verified_ok
    ))
}

/// One round's deliveries.
struct RoundTally {
    /// First and last change sent, last delivery (µs since the epoch).
    first_send_us: u64,
    last_send_us: u64,
    last_recv_us: u64,
    /// Deliveries of this round's changes.
    received: u64,
    /// Per changing user: when its change was sent, how many contacts heard it, the last of them.
    sent_at_us: Vec<u64>,
    heard: Vec<u32>,
    last_heard_us: Vec<u64>,
}

impl RoundTally {
    fn new(users: usize) -> RoundTally {
        RoundTally {
            first_send_us: u64::MAX,
            last_send_us: 0,
            last_recv_us: 0,
            received: 0,
            sent_at_us: vec![0; users],
            heard: vec![0; users],
            last_heard_us: vec![0; users],
        }
    }
}

/// What the measurement counted.
struct FanoutTally {
    rounds: Vec<RoundTally>,
    /// Send → receipt of every delivery (µs), up to [`MAX_LATENCIES`].
    latencies_us: Vec<u64>,
    /// Users that heard the initial presence of all their contacts.
    initial_complete: usize,
    /// A change heard twice by the same contact.
    duplicates: u64,
    /// Presence from a non-contact, or a tag that does not match its sender.
    strangers: u64,
    /// A user's own changes echoed to it (§4.2.2), ignored.
    self_echoes: u64,
    /// Presence errors received.
    errors: u64,
    /// Sessions that ended early.
    failed: u64,
    /// Logins tried again after a failure.
    login_retries: u64,
}

/// Latencies kept for the percentiles (beyond, deliveries are only counted).
const MAX_LATENCIES: usize = 20_000_000;

/// Shared by the measurement's user tasks.
struct FanoutCtx {
    ring: Ring,
    index: HashMap<Vec<u8>, usize>,
    epoch: Instant,
    tally: RefCell<FanoutTally>,
    notify: tokio::sync::Notify,
}

/// What one user has heard from its contacts.
struct Hearing {
    /// Whose initial presence arrived, and how many.
    initial: Vec<bool>,
    initial_count: usize,
    /// Per contact, the rounds heard (bit r).
    rounds: Vec<u64>,
}

/// One stanza received by user `me` at `now_us`: a cheap byte scan, then the checks that it is
/// an available presence from a contact carrying a tag that names that contact.
fn hear(ctx: &FanoutCtx, me: usize, st: &[u8], now_us: u64, h: &mut Hearing) {
    let Some(p) = scan_presence(st) else { return };
    if let Some(kind) = p.kind {
        if kind == b"error" {
            ctx.tally.borrow_mut().errors += 1;
        }
        return;
    }
    let Some(&sender) = p.from_bare.and_then(|f| ctx.index.get(f)) else {
        ctx.tally.borrow_mut().strangers += 1;
        return;
    };
    let tag = p.status.and_then(RoundTag::parse);
    if sender == me {
        if tag.is_some() {
            ctx.tally.borrow_mut().self_echoes += 1;
        }
        return;
    }
    let Some(off) = ctx.ring.offset(me, sender) else {
        ctx.tally.borrow_mut().strangers += 1;
        return;
    };
    let mut t = ctx.tally.borrow_mut();
    let Some(tag) = tag else {
        if !h.initial[off] {
            h.initial[off] = true;
            h.initial_count += 1;
            if h.initial_count == ctx.ring.contacts() {
                t.initial_complete += 1;
                drop(t);
                ctx.notify.notify_one();
            }
        }
        return;
    };
    let bit = 1u64 << (tag.round & 63);
    if tag.user != sender || tag.round == 0 || tag.round as usize > t.rounds.len() {
        t.strangers += 1;
        return;
    }
    if h.rounds[off] & bit != 0 {
        t.duplicates += 1;
        return;
    }
    h.rounds[off] |= bit;
    if t.latencies_us.len() < MAX_LATENCIES {
        t.latencies_us.push(now_us.saturating_sub(tag.sent_us));
    }
    let expected = (ctx.ring.users * ctx.ring.contacts()) as u64;
    let rt = &mut t.rounds[tag.round as usize - 1];
    rt.received += 1;
    rt.heard[sender] += 1;
    rt.last_heard_us[sender] = rt.last_heard_us[sender].max(now_us);
    rt.last_recv_us = rt.last_recv_us.max(now_us);
    if rt.received == expected {
        drop(t);
        ctx.notify.notify_one();
    }
}

/// One user during the measurement: reads and scans everything it receives; on a command, sends
/// that round's change (stamped when written).
async fn fanout_user(
    ctx: Rc<FanoutCtx>,
    me: usize,
    mut c: Conn,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<u32>,
) -> Result<()> {
    let k = ctx.ring.contacts();
    let mut framer = RawFramer::with_bytes(c.parser.buffer_mut().to_vec());
    let mut io = c.io;
    let mut h = Hearing { initial: vec![false; k], initial_count: 0, rounds: vec![0; k] };
    let mut now_us = ctx.epoch.elapsed().as_micros() as u64;
    loop {
        loop {
            match framer.next_stanza() {
                Ok(Some(r)) => hear(&ctx, me, framer.bytes(r), now_us, &mut h),
                Ok(None) => break,
                Err(e) => bail!("{e}"),
            }
        }
        framer.compact();
        framer.buffer_mut().reserve(64 * 1024);
        tokio::select! {
            cmd = rx.recv() => {
                let Some(round) = cmd else { break };
                let sent_us = ctx.epoch.elapsed().as_micros() as u64;
                {
                    let mut t = ctx.tally.borrow_mut();
                    let rt = &mut t.rounds[round as usize - 1];
                    rt.sent_at_us[me] = sent_us;
                    rt.first_send_us = rt.first_send_us.min(sent_us);
                    rt.last_send_us = rt.last_send_us.max(sent_us);
                }
                io.write_all(RoundTag { round, user: me, sent_us }.stanza().as_bytes()).await?;
                io.flush().await?;
            }
            got = io.read_buf(framer.buffer_mut()) => {
                if got? == 0 {
                    bail!("connection closed by server");
                }
                now_us = ctx.epoch.elapsed().as_micros() as u64;
            }
        }
    }
    let _ = io.write_all(b"</stream:stream>").await;
    Ok(())
}

/// `presence`: log the ring's users in, wait for their contacts' initial presence, then
/// `--rounds` rounds in which every user changes status once (all at once, or `--rate` changes
/// per second), each round bounded by `--duration`. With `--setup`, runs `presence-setup` first.
async fn scenario_presence(args: &Args) -> Result<String> {
    let setup_line = if args.setup { Some(scenario_presence_setup(args).await?) } else { None };
    let ring = Ring::new(args.clients, args.contacts).map_err(|e| anyhow!(e))?;
    if args.rounds == 0 || args.rounds > 63 {
        bail!("--rounds must be 1..=63");
    }
    let users = args.clients;
    let k = ring.contacts();
    let ctx = Rc::new(FanoutCtx {
        ring,
        index: jid_index(args),
        epoch: Instant::now(),
        tally: RefCell::new(FanoutTally {
            rounds: (0..args.rounds).map(|_| RoundTally::new(users)).collect(),
            latencies_us: Vec::with_capacity((users * k * args.rounds as usize).min(MAX_LATENCIES)),
            initial_complete: 0,
            duplicates: 0,
            strangers: 0,
            self_echoes: 0,
            errors: 0,
            failed: 0,
            login_retries: 0,
        }),
        notify: tokio::sync::Notify::new(),
    });
    let settle_s = wait_server_quiet(&args.server_pid, Duration::from_secs(120)).await;
    eprintln!(
        "loadgen: presence: logging in {users} users ({k} contacts each) after {settle_s:.1} s of settling"
    );
    let t0 = Instant::now();
    let mut txs = Vec::with_capacity(users);
    let mut rxs = Vec::with_capacity(users);
    for _ in 0..users {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        txs.push(tx);
        rxs.push(Cell::new(Some(rx)));
    }
    let rxs = Rc::new(rxs);
    // Each user's task logs in (initial presence included) and goes straight on reading, so the
    // presences that logins set off never pile up unread.
    let tasks = log_in_all(args, |a, i, cache| {
        let (ctx, rxs) = (ctx.clone(), rxs.clone());
        async move {
            // A server still busy (e.g. with the departures of the setup's sessions) may refuse a
            // bind with a `wait` error (RFC 6120 §8.3.2): try again a few times.
            let mut attempt = 0;
            let c = loop {
                match login_at(&a, presence_addr(&a, i), &user(&a, i), "p", &cache, true).await {
                    Ok(c) => break c,
                    Err(e) if attempt < 3 => {
                        attempt += 1;
                        ctx.tally.borrow_mut().login_retries += 1;
                        eprintln!("loadgen: user {i}: {e:#}; retrying");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            let rx = rxs[i].take().ok_or_else(|| anyhow!("user {i} twice"))?;
            Ok(tokio::task::spawn_local(async move {
                let r = fanout_user(ctx.clone(), i, c, rx).await;
                if let Err(e) = &r {
                    eprintln!("loadgen: user {i}: {e}");
                    ctx.tally.borrow_mut().failed += 1;
                }
                r
            }))
        }
    })
    .await?;
    let login_s = t0.elapsed().as_secs_f64();
    let round_bound = Duration::from_secs(args.duration.max(1));
    let t1 = Instant::now();
    let initial_ok =
        wait_until(&ctx.notify, t1 + round_bound, || ctx.tally.borrow().initial_complete == users).await;
    let initial_wait_s = t1.elapsed().as_secs_f64();
    let initial_complete = ctx.tally.borrow().initial_complete;
    eprintln!(
        "loadgen: measuring ({users} users logged in in {login_s:.1} s; {initial_complete} heard all \
         initial presences after {initial_wait_s:.1} s{})",
        if initial_ok { "" } else { ", timed out" }
    );

    let before = sample_all(&args.server_pid);
    let aux_before = sample_all(&args.aux_pid);
    let gen_before = sample_pid(std::process::id());
    let m0 = Instant::now();
    let expected = (users * k) as u64;
    let mut timed_out = Vec::new();
    for round in 1..=args.rounds {
        let start = Instant::now();
        for (u, tx) in txs.iter().enumerate() {
            if args.rate > 0 {
                tokio::time::sleep_until(
                    (start + Duration::from_secs_f64(u as f64 / args.rate as f64)).into(),
                )
                .await;
            }
            let _ = tx.send(round);
        }
        let idx = round as usize - 1;
        let done = wait_until(&ctx.notify, Instant::now() + round_bound, || {
            ctx.tally.borrow().rounds[idx].received >= expected
        })
        .await;
        if !done {
            timed_out.push(round);
        }
        let t = ctx.tally.borrow();
        let rt = &t.rounds[idx];
        eprintln!(
            "loadgen: round {round}: {} of {expected} deliveries in {:.3} s{}",
            rt.received,
            rt.last_recv_us.saturating_sub(rt.first_send_us) as f64 / 1e6,
            if done { "" } else { " (timed out)" }
        );
    }
    let measure_s = m0.elapsed().as_secs_f64();
    let after = sample_all(&args.server_pid);
    let aux_after = sample_all(&args.aux_pid);
    let gen_cpu = match (gen_before, sample_pid(std::process::id())) {
        (Some(b), Some(a)) => Some(a.cpu_seconds - b.cpu_seconds),
        _ => None,
    };
    drop(txs);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }

    let mut t = ctx.tally.borrow_mut();
    let received: u64 = t.rounds.iter().map(|r| r.received).sum();
    let mut rates = Vec::new();
    let mut round_secs = Vec::new();
    let mut all_heard = Vec::new();
    for rt in &t.rounds {
        let secs = rt.last_recv_us.saturating_sub(rt.first_send_us) as f64 / 1e6;
        round_secs.push(secs);
        rates.push(if secs > 0.0 { rt.received as f64 / secs } else { 0.0 });
        for s in 0..users {
            if rt.heard[s] as usize == k {
                all_heard.push(rt.last_heard_us[s].saturating_sub(rt.sent_at_us[s]));
            }
        }
    }
    let mut sorted_rates = rates.clone();
    sorted_rates.sort_by(f64::total_cmp);
    let median_rate = sorted_rates[sorted_rates.len() / 2];
    t.latencies_us.sort_unstable();
    all_heard.sort_unstable();
    let lat = &t.latencies_us;
    let delta = cpu_between(&args.server_pid, &before, &after);
    let aux = cpu_between(&args.aux_pid, &aux_before, &aux_after);
    let list = |v: &[f64], d: usize| v.iter().map(|x| format!("{x:.*}", d)).collect::<Vec<_>>().join(",");
    let line = format!(
        "{{\"scenario\":\"presence\",\"label\":\"{}\",\"users\":{users},\"contacts\":{k},\"rounds\":{},\
         \"rate\":{},\"two_addrs\":{},\"settle_s\":{settle_s:.1},\"login_s\":{login_s:.2},\"login_retries\":{},\"initial_wait_s\":{initial_wait_s:.2},\
         \"initial_complete_users\":{initial_complete},\"expected\":{},\"received\":{received},\"lost\":{},\
         \"duplicates\":{},\"strangers\":{},\"self_echoes\":{},\"errors\":{},\"failed_sessions\":{},\
         \"rounds_timed_out\":[{}],\"deliveries_per_s\":{median_rate:.0},\"deliveries_per_s_rounds\":[{}],\
         \"round_s\":[{}],\"p50_us\":{},\"p99_us\":{},\"max_us\":{},\"changes\":{},\"changes_all_heard\":{},\
         \"all_heard_p50_us\":{},\"all_heard_p99_us\":{},\"all_heard_max_us\":{},\"measure_s\":{measure_s:.3},\
         \"server_cpu_us_per_delivery\":{},\"server_cpu_s\":{},\"server_pids\":{},\"server_cpu_s_per_pid\":{},\
         \"server_pids_gone\":{},\"aux_cpu_s_per_pid\":{},\"generator_cpu_s\":{},\
         \"generator_cpu_us_per_delivery\":{}}}",
        args.label,
        args.rounds,
        args.rate,
        args.addr2.is_some_and(|a| a != args.addr),
        t.login_retries,
        expected * u64::from(args.rounds),
        (expected * u64::from(args.rounds)).saturating_sub(received),
        t.duplicates,
        t.strangers,
        t.self_echoes,
        t.errors,
        t.failed,
        timed_out.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
        list(&rates, 0),
        list(&round_secs, 4),
        percentile(lat, 0.5),
        percentile(lat, 0.99),
        lat.last().copied().unwrap_or(0),
        users * args.rounds as usize,
        all_heard.len(),
        percentile(&all_heard, 0.5),
        percentile(&all_heard, 0.99),
        all_heard.last().copied().unwrap_or(0),
        delta.per(received, 3),
        delta.total_json(),
        args.server_pid.len(),
        delta.per_pid,
        delta.gone,
        aux.per_pid,
        gen_cpu.map_or("null".into(), |g| format!("{g:.3}")),
        gen_cpu.map_or("null".into(), |g| format!("{:.3}", g * 1e6 / received.max(1) as f64)),
    );
    Ok(match setup_line {
        Some(s) => format!("{s}\n{line}"),
        None => line,
    })
}

async fn main_async(args: Args) -> Result<String> {
    match args.scenario.as_str() {
        "login" => scenario_login(&args).await,
        "idle" => scenario_idle(&args).await,
        "messages" => scenario_messages(&args).await,
        "presence-setup" => scenario_presence_setup(&args).await,
        "presence" => scenario_presence(&args).await,
        other => bail!("unknown scenario {other}"),
    }
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if let Some(f) = &args.users_file {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {f}"))?;
        args.names =
            Arc::new(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect());
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    // Hard bound on the whole run, whatever the scenario.
    let limit = Duration::from_secs(run_bound_secs(&args));
    let line = local
        .block_on(&rt, async move { tokio::time::timeout(limit, main_async(args)).await })
        .context("run exceeded its time bound")??;
    println!("{line}");
    Ok(())
}
