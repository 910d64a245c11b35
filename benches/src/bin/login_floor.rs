//! `login-floor`: the floor under a SCRAM login on this machine.
//!
//! It answers the login storm's exchange (stream, SCRAM-SHA-1, restart, bind, close) with the
//! least work a server can do and still be correct for that one client: it frames the client's
//! stanzas with the storm's own raw framer, computes the real SCRAM exchange (one fixed set of
//! credentials for every user, derived once at start), and writes canned replies. No XML parsing,
//! no storage, no routing, no limits, no stream ids worth the name. What a login costs this
//! process (`loadgen --server-pid`) is what the kernel, the runtime and the SCRAM arithmetic cost
//! on this machine, i.e. what no real server can go below; a server's cost above it is its own.
//!
//! `--runtime multi` runs on the same multi-threaded runtime as `starling serve` (one worker when
//! pinned to one core), `current` on a single-threaded one.
//!
//! Never a server for clients: it accepts any user and is for loopback benchmarks only.

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::Parser;
use starling_bench::login::{self as raw, closed_stream, RawConn};
use starling_xmpp::sasl::{ScramCredentials, ScramHash, ScramServer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::{TcpSocket, TcpStream};

#[derive(Parser, Debug)]
#[command(about = "The least a server can do for a SCRAM login: the floor under login costs")]
struct Args {
    /// Where to listen (loopback).
    #[arg(long, default_value = "127.0.0.1:25299")]
    listen: SocketAddr,
    /// The domain the stream headers and bound JIDs name.
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// The password every user has.
    #[arg(long, default_value = "password")]
    password: String,
    /// `multi` (as `starling serve`) or `current` (single-threaded).
    #[arg(long, default_value = "multi")]
    runtime: String,
}

struct Floor {
    creds: ScramCredentials,
    domain: String,
    stream_ids: AtomicU64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = match args.runtime.as_str() {
        "multi" => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
        "current" => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        other => bail!("--runtime is multi or current, not {other}"),
    };
    let creds = ScramCredentials::derive(ScramHash::Sha1, &args.password, b"login-floor-salt", 4096)
        .map_err(|e| anyhow::anyhow!("deriving credentials: {e}"))?;
    let floor = Arc::new(Floor { creds, domain: args.domain, stream_ids: AtomicU64::new(0) });
    runtime.block_on(async move {
        // Accepted connections inherit TCP_NODELAY from the listener: no system call each.
        let socket = if args.listen.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.set_nodelay(true)?;
        socket.bind(args.listen).context("listening")?;
        let listener = socket.listen(4096)?;
        loop {
            let (tcp, _) = listener.accept().await?;
            let floor = floor.clone();
            tokio::spawn(async move {
                // A login the floor cannot answer ends the connection; the generator counts it.
                let _ = login(&floor, tcp).await;
            });
        }
    })
}

/// One client's exchange, answered step by step.
async fn login(floor: &Floor, tcp: TcpStream) -> Result<()> {
    let mut c = RawConn::new(tcp);
    c.header().await?;
    c.send(floor.header("<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism></mechanisms>").as_bytes()).await?;
    let mut scram = ScramServer::new(ScramHash::Sha1);
    let auth = c.stanza().await?;
    let first = B64.decode(raw::text(auth).unwrap_or_default().trim_ascii())?;
    let user = scram.client_first(&first).map_err(|e| anyhow::anyhow!("{e}"))?.username;
    let challenge = B64.encode(scram.server_first(&floor.creds));
    c.send(format!("<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{challenge}</challenge>").as_bytes())
        .await?;
    let response = c.stanza().await?;
    let fin = B64.decode(raw::text(response).unwrap_or_default().trim_ascii())?;
    let Ok(server_final) = scram.client_final(&fin) else {
        c.send(b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>").await?;
        return Ok(());
    };
    let server_final = B64.encode(server_final);
    c.send(format!("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{server_final}</success>").as_bytes())
        .await?;
    c.header().await?;
    c.send(floor.header("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>").as_bytes()).await?;
    let mut resource = 0u64;
    loop {
        let stanza = match c.stanza().await {
            Ok(s) => s,
            Err(e) if closed_stream(&e) => {
                c.send_last(b"</stream:stream>").await?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        // Only the bind request is answered; the storm sends nothing else before closing.
        let id = String::from_utf8_lossy(raw::attr(stanza, "id").unwrap_or_default()).into_owned();
        resource += 1;
        let jid = format!("{user}@{}/floor{resource}", floor.domain);
        c.send(
            format!("<iq type='result' id='{id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>{jid}</jid></bind></iq>")
                .as_bytes(),
        )
        .await?;
    }
}

impl Floor {
    /// The response stream header and features holding `features`.
    fn header(&self, features: &str) -> String {
        let id = self.stream_ids.fetch_add(1, Ordering::Relaxed);
        format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
             id='floor{id:016x}' from='{}' version='1.0' xml:lang='en'><stream:features>{features}</stream:features>",
            self.domain
        )
    }
}
