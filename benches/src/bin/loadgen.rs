//! `loadgen`: an XMPP load generator that speaks to any server (Starling, Prosody, ejabberd).
//!
//! Scenarios (each bounded in count and time, loopback only, one JSON line of results at the end):
//! - `login`: N logins at concurrency C → logins/s, latency p50/p99, failures, server CPU per login.
//! - `idle`: N authenticated sessions held → server RSS growth per session.
//! - `messages`: P sender→receiver pairs, fixed total rate or unlimited, body size B, for D seconds →
//!   delivered/s, latency p50/p90/p99/max, loss, reordering, server CPU per delivered message.
//! - `presence`: U users in a ring, each mutually subscribed to K neighbours; every user changes
//!   status once → deliveries/s and the time for all contacts to hear.
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
use starling_xml::{Element, Event, Limits, StreamParser};
use starling_xmpp::ns;
use starling_xmpp::sasl::{ScramClient, ScramHash};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug, Clone)]
#[command(about = "XMPP load generator")]
struct Args {
    /// login | idle | messages | presence
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
    /// Sender/receiver pairs (messages).
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// Total offered messages per second; 0 = as fast as the window allows.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Unacknowledged messages allowed per pair when unlimited.
    #[arg(long, default_value_t = 64)]
    window: u64,
    /// Measurement seconds (messages, idle hold).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Message body bytes.
    #[arg(long, default_value_t = 100)]
    body: usize,
    /// Contacts per user (presence).
    #[arg(long, default_value_t = 50)]
    contacts: usize,
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

/// Salted passwords by (mechanism, user), as real clients cache them.
type SaltCache = Rc<std::cell::RefCell<HashMap<(String, String), Vec<u8>>>>;

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
            self.parser.buffer_mut().reserve(16 * 1024);
            if self.io.read_buf(self.parser.buffer_mut()).await? == 0 {
                bail!("connection closed by server");
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
        self.parser = StreamParser::new(Limits { max_stanza_bytes: 1 << 20, ..Limits::default() });
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
        );
        self.send(header.as_bytes()).await?;
        loop {
            let e = self.element().await?;
            if e.is("features", ns::STREAM) {
                return Ok(e);
            }
        }
    }
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
    let mut c = Conn { io: Stream::Tcp(tcp), parser: StreamParser::new(Limits::default()), out: Vec::new() };
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
    let success = match args.mech.as_str() {
        "plain" => {
            let payload = B64.encode(format!("\0{user}\0{}", args.password));
            c.send(
                format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{payload}</auth>")
                    .as_bytes(),
            )
            .await?;
            c.element().await?
        }
        m => {
            let hash = match m {
                "scram-sha-1" => ScramHash::Sha1,
                "scram-sha-256" => ScramHash::Sha256,
                other => bail!("unknown mechanism {other}"),
            };
            let key = (m.to_owned(), user.to_owned());
            let mut sc = ScramClient::new(hash, user, &args.password, &format!("{resource}nonce"));
            if let Some(s) = cache.borrow().get(&key) {
                sc = sc.with_salted_password(s.clone());
            }
            c.send(
                format!(
                    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{}'>{}</auth>",
                    hash.mechanism(),
                    B64.encode(sc.client_first())
                )
                .as_bytes(),
            )
            .await?;
            let ch = c.element().await?;
            let fin =
                sc.handle_server_first(&B64.decode(ch.text().trim())?).map_err(|e| anyhow!("scram: {e}"))?;
            if let Some(s) = sc.salted_password() {
                cache.borrow_mut().insert(key, s.to_vec());
            }
            c.send(
                format!("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>", B64.encode(fin))
                    .as_bytes(),
            )
            .await?;
            c.element().await?
        }
    };
    if !success.is("success", ns::SASL) {
        bail!("authentication failed for {user}: {}", success.to_string_lossy());
    }
    c.open(&args.domain).await?;
    c.send(
        format!(
            "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
        )
        .as_bytes(),
    )
    .await?;
    loop {
        let e = c.element().await?;
        if e.attr("id") == Some("b") {
            if e.attr("type") != Some("result") {
                bail!("bind failed: {}", e.to_string_lossy());
            }
            break;
        }
    }
    // Legacy session for servers that still want it (harmless elsewhere).
    c.send(b"<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>").await?;
    loop {
        if c.element().await?.attr("id") == Some("s") {
            break;
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

async fn scenario_login(args: &Args) -> Result<String> {
    let cache: SaltCache = Rc::default();
    let sem = Rc::new(tokio::sync::Semaphore::new(args.concurrency));
    let before = sample_all(&args.server_pid);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let sem = sem.clone();
        let args = args.clone();
        let cache = cache.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let _permit = sem.acquire().await.map_err(|e| anyhow!("{e}"))?;
            let t = Instant::now();
            let name = user(&args, i % args.clients.max(1));
            let mut c = tokio::time::timeout(
                Duration::from_secs(30),
                login(&args, &name, &format!("l{i}"), &cache, false),
            )
            .await
            .map_err(|_| anyhow!("login timed out"))??;
            let took = t.elapsed();
            let _ = c.send(b"</stream:stream>").await;
            anyhow::Ok(took)
        }));
    }
    let mut lat = Vec::new();
    let mut failures = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(d)) => lat.push(d.as_micros() as u64),
            _ => failures += 1,
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = sample_all(&args.server_pid);
    lat.sort_unstable();
    let delta = cpu_between(&args.server_pid, &before, &after);
    let cpu = delta.per(lat.len() as u64, 1);
    Ok(format!(
        "{{\"scenario\":\"login\",\"label\":\"{}\",\"mech\":\"{}\",\"tls\":{},\"clients\":{},\"concurrency\":{},\
         \"ok\":{},\"failures\":{},\"seconds\":{:.3},\"logins_per_s\":{:.1},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\
         \"server_cpu_us_per_login\":{},\"server_cpu_s\":{},\"server_cpu_s_per_pid\":{}}}",
        args.label,
        args.mech,
        args.tls_ca.is_some(),
        args.clients,
        args.concurrency,
        lat.len(),
        failures,
        elapsed,
        lat.len() as f64 / elapsed,
        percentile(&lat, 0.5) as f64 / 1000.0,
        percentile(&lat, 0.99) as f64 / 1000.0,
        cpu,
        delta.total_json(),
        delta.per_pid
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
        .and_then(|err| err.elements().find(|c| c.name != "text").map(|c| c.name.clone()))
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
        stasks.push(tokio::task::spawn_local(async move {
            let mut seq = 0u64;
            let start = Instant::now();
            // While waiting, read what the server sends the sender (errors for messages it
            // could not deliver), so they are counted and never fill the socket.
            let mut closed = false;
            while Instant::now() < stop_at {
                let wait = if per_pair_rate > 0.0 {
                    // Paced: send what the schedule says is due, else sleep a millisecond.
                    let due = (start.elapsed().as_secs_f64() * per_pair_rate) as u64;
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

async fn main_async(args: Args) -> Result<String> {
    match args.scenario.as_str() {
        "login" => scenario_login(&args).await,
        "idle" => scenario_idle(&args).await,
        "messages" => scenario_messages(&args).await,
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
    let limit = Duration::from_secs(args.duration + 300);
    let line = local
        .block_on(&rt, async move { tokio::time::timeout(limit, main_async(args)).await })
        .context("run exceeded its time bound")??;
    println!("{line}");
    Ok(())
}
