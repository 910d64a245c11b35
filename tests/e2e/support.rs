//! Test support: the real `starling` binary started on loopback with its own data directory, and a
//! small raw-bytes XMPP client that can speak every step (and misstep) of a stream.

#![allow(dead_code)]

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use starling_xml::{Element, Event, Limits, StreamParser};
use starling_xmpp::ns;
use starling_xmpp::sasl::{ScramClient, ScramHash};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single expected event may take before the test fails.
pub const STEP: Duration = Duration::from_secs(10);

pub const BIN: &str = env!("CARGO_BIN_EXE_starling");

/// A running server process.
pub struct TestServer {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub c2s: SocketAddr,
    pub direct_tls: SocketAddr,
    pub component: Option<SocketAddr>,
    /// The operator endpoint (`/metrics`, `/livez`, `/readyz`).
    pub http: Option<SocketAddr>,
    /// The options it was started with.
    pub env_opts: Options,
    /// Server stdout after the listener lines, kept so the pipe never fills.
    _drain: Option<std::thread::JoinHandle<()>>,
}

/// Options for a test server.
#[derive(Clone, Default)]
pub struct Options {
    /// Extra TOML appended to the base config (sections must not repeat the base ones: the
    /// base writes only top-level keys and `[c2s]` listen addresses via environment).
    pub toml: String,
    /// Environment overrides (`STARLING_…`).
    pub env: Vec<(String, String)>,
    /// Accounts to create before start.
    pub users: Vec<(String, String)>,
    /// Whether a component listener is expected.
    pub components: bool,
}

impl Options {
    pub fn users(mut self, users: &[(&str, &str)]) -> Self {
        self.users = users.iter().map(|(u, p)| (u.to_string(), p.to_string())).collect();
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }
    pub fn toml(mut self, t: &str) -> Self {
        self.toml.push_str(t);
        self.toml.push('\n');
        self
    }
    pub fn component(mut self, domain: &str, secret: &str) -> Self {
        self.components = true;
        self.env("STARLING_COMPONENTS__SECRETS", &format!("{{ \"{domain}\" = \"{secret}\" }}"))
    }
}

fn base_env(dir: &Path) -> Vec<(String, String)> {
    vec![
        ("STARLING_DATA_DIR".into(), format!("\"{}\"", dir.display())),
        ("STARLING_C2S__LISTEN".into(), "127.0.0.1:0".into()),
        ("STARLING_C2S__DIRECT_TLS_LISTEN".into(), "127.0.0.1:0".into()),
        ("STARLING_COMPONENTS__LISTEN".into(), "127.0.0.1:0".into()),
        ("STARLING_HTTP__LISTEN".into(), "127.0.0.1:0".into()),
        ("STARLING_LOG__LEVEL".into(), "debug".into()),
    ]
}

impl TestServer {
    pub fn start(opts: Options) -> Result<TestServer> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("starling.toml");
        std::fs::write(&config, &opts.toml)?;
        let mut s = TestServer {
            child: None,
            dir,
            config,
            c2s: "0.0.0.0:0".parse()?,
            direct_tls: "0.0.0.0:0".parse()?,
            component: None,
            http: None,
            env_opts: opts.clone(),
            _drain: None,
        };
        for (u, p) in &opts.users {
            s.cli(&["user", "add", &format!("{u}@localhost"), "--password", p])?;
        }
        s.spawn()?;
        Ok(s)
    }

    /// Run a CLI command against this server's config (server must be stopped for user commands).
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = self.command().args(args).output()?;
        if !out.status.success() {
            bail!("starling {:?} failed: {}", args, String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&self.config);
        c.env_clear();
        if let Ok(path) = std::env::var("PATH") {
            c.env("PATH", path);
        }
        for (k, v) in base_env(self.dir.path()).into_iter().chain(self.env_opts.env.clone()) {
            c.env(k, v);
        }
        c
    }

    fn spawn(&mut self) -> Result<()> {
        let mut child = self
            .command()
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(self.dir.path().join("stderr.log"))?))
            .spawn()
            .context("spawning starling")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let expected = if self.env_opts.components { 3 } else { 2 };
        let (tx, rx) = std::sync::mpsc::channel();
        let drain = std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
        });
        let mut seen = 0;
        while seen < expected {
            let line = rx
                .recv_timeout(STEP)
                .map_err(|_| anyhow!("server did not announce its listeners; stderr:\n{}", self.stderr()))?;
            let Some((what, addr)) =
                line.strip_prefix("starling: ").and_then(|l| l.split_once(" listening on "))
            else {
                continue;
            };
            let addr: SocketAddr = addr.trim().parse()?;
            match what {
                "c2s" => self.c2s = addr,
                "c2s-direct-tls" => self.direct_tls = addr,
                "component" => self.component = Some(addr),
                // Announced first and not counted: every server has one.
                "http" => {
                    self.http = Some(addr);
                    continue;
                }
                _ => continue,
            }
            seen += 1;
        }
        self.child = Some(child);
        self._drain = Some(drain);
        Ok(())
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("tls").join("cert.pem")
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let Some(mut child) = self.child.take() else { bail!("not running") };
        Command::new("kill").arg("-TERM").arg(child.id().to_string()).status()?;
        let deadline = std::time::Instant::now() + STEP;
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(st);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                bail!("server did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.stop()?;
        }
        self.spawn()
    }

    /// A logged-in, bound client over STARTTLS + SCRAM-SHA-256.
    pub async fn login(&self, user: &str, password: &str, resource: &str) -> Result<Client> {
        self.login_from("127.0.0.1".parse()?, user, password, resource).await
    }

    /// Like [`TestServer::login`], from another loopback source address.
    pub async fn login_from(
        &self,
        source: std::net::IpAddr,
        user: &str,
        password: &str,
        resource: &str,
    ) -> Result<Client> {
        let mut c = Client::connect_from(self.c2s, source).await?;
        c.starttls_and_open(&self.cert()).await?;
        c.auth_scram(ScramHash::Sha256, user, password).await?;
        c.bind(Some(resource)).await?;
        Ok(c)
    }

    /// Like [`TestServer::login`] over a socket with a tiny receive buffer, for a client that
    /// is going to stop reading: the server's writes stall after a few kilobytes.
    pub async fn login_small_window(&self, user: &str, password: &str, resource: &str) -> Result<Client> {
        let mut c = Client::connect_with(self.c2s, "127.0.0.1".parse()?, Some(4096)).await?;
        c.starttls_and_open(&self.cert()).await?;
        c.auth_scram(ScramHash::Sha256, user, password).await?;
        c.bind(Some(resource)).await?;
        Ok(c)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A raw XMPP client.
pub struct Client {
    io: Option<Pin<Box<dyn Io>>>,
    tcp: Option<TcpStream>,
    parser: StreamParser,
    pub jid: Option<String>,
}

pub fn tls_connector(cert: &Path, alpn: bool) -> Result<tokio_rustls::TlsConnector> {
    use rustls_pki_types::pem::PemObject;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(cert)? {
        roots.add(c?)?;
    }
    let mut cfg = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    if alpn {
        cfg.alpn_protocols = vec![b"xmpp-client".to_vec()];
    }
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Result<Client> {
        Client::connect_from(addr, "127.0.0.1".parse()?).await
    }

    /// Connect from a given loopback source address (limits are per address).
    pub async fn connect_from(addr: SocketAddr, source: std::net::IpAddr) -> Result<Client> {
        Client::connect_with(addr, source, None).await
    }

    /// Connect from `source`, with the socket's receive buffer set to `rcvbuf` bytes if given.
    pub async fn connect_with(
        addr: SocketAddr,
        source: std::net::IpAddr,
        rcvbuf: Option<u32>,
    ) -> Result<Client> {
        let sock = tokio::net::TcpSocket::new_v4()?;
        if let Some(size) = rcvbuf {
            sock.set_recv_buffer_size(size)?;
        }
        sock.bind(SocketAddr::new(source, 0))?;
        let tcp = sock.connect(addr).await?;
        Ok(Client {
            io: None,
            tcp: Some(tcp),
            parser: StreamParser::new(Limits { max_stanza_bytes: 1 << 22, ..Limits::default() }),
            jid: None,
        })
    }

    /// Direct TLS (XEP-0368) with ALPN.
    pub async fn connect_direct_tls(addr: SocketAddr, cert: &Path) -> Result<Client> {
        let mut c = Client::connect(addr).await?;
        let tcp = c.tcp.take().ok_or_else(|| anyhow!("no tcp"))?;
        let name = rustls_pki_types::ServerName::try_from("localhost")?;
        let tls = tls_connector(cert, true)?.connect(name, tcp).await?;
        let (_, conn) = tls.get_ref();
        if conn.alpn_protocol() != Some(b"xmpp-client") {
            bail!("ALPN xmpp-client not negotiated");
        }
        c.io = Some(Box::pin(tls));
        Ok(c)
    }

    pub async fn send(&mut self, data: &str) -> Result<()> {
        match (&mut self.io, &mut self.tcp) {
            (Some(io), _) => {
                io.write_all(data.as_bytes()).await?;
                io.flush().await?;
            }
            (None, Some(tcp)) => tcp.write_all(data.as_bytes()).await?,
            _ => bail!("not connected"),
        }
        Ok(())
    }

    pub async fn send_element(&mut self, e: &Element) -> Result<()> {
        let mut out = Vec::new();
        e.write_to(&mut out, ns::CLIENT);
        self.send(std::str::from_utf8(&out)?).await
    }

    async fn read_some(&mut self) -> Result<usize> {
        let buf = self.parser.buffer_mut();
        buf.reserve(8192);
        let n = match (&mut self.io, &mut self.tcp) {
            (Some(io), _) => io.read_buf(buf).await?,
            (None, Some(tcp)) => tcp.read_buf(buf).await?,
            _ => bail!("not connected"),
        };
        Ok(n)
    }

    /// The next event from the server, failing after [`STEP`].
    pub async fn next(&mut self) -> Result<Event> {
        tokio::time::timeout(STEP, async {
            loop {
                if let Some(ev) = self.parser.next_event().map_err(|e| anyhow!("server sent bad XML: {e}"))? {
                    return Ok(ev);
                }
                if self.read_some().await? == 0 {
                    bail!("connection closed");
                }
            }
        })
        .await
        .map_err(|_| anyhow!("timed out waiting for the server"))?
    }

    /// The next stanza-level element.
    pub async fn element(&mut self) -> Result<Element> {
        loop {
            match self.next().await? {
                Event::Stanza(e) => return Ok(e),
                Event::StreamOpen(_) => continue,
                Event::StreamClose => bail!("stream closed"),
            }
        }
    }

    /// Wait for an element matching `pred`, skipping others (presence noise, pushes).
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Element) -> bool) -> Result<Element> {
        loop {
            let e = self.element().await.with_context(|| format!("waiting for {what}"))?;
            if pred(&e) {
                return Ok(e);
            }
        }
    }

    /// The server closes the stream with this stream error condition, then the connection.
    pub async fn expect_stream_error(&mut self, condition: &str) -> Result<()> {
        loop {
            match self.next().await {
                Ok(Event::Stanza(e)) if e.is("error", ns::STREAM) => {
                    let got = e.elements().find(|c| c.ns == ns::STREAM_ERRORS && c.name != "text");
                    let got = got.map(|c| c.name.clone()).unwrap_or_default();
                    if got != condition {
                        bail!("expected stream error {condition}, got {got}");
                    }
                    return self.expect_closed().await;
                }
                Ok(Event::Stanza(_)) | Ok(Event::StreamOpen(_)) => continue,
                Ok(Event::StreamClose) => bail!("stream closed without the error {condition}"),
                Err(e) => bail!("expected stream error {condition}: {e}"),
            }
        }
    }

    /// The server ends the stream and closes the connection.
    pub async fn expect_closed(&mut self) -> Result<()> {
        tokio::time::timeout(STEP, async {
            loop {
                match self.parser.next_event() {
                    Ok(Some(Event::StreamClose)) | Ok(Some(_)) => continue,
                    Ok(None) => {}
                    Err(_) => {}
                }
                match self.read_some().await {
                    Ok(0) | Err(_) => return Ok(()),
                    Ok(_) => {}
                }
            }
        })
        .await
        .map_err(|_| anyhow!("connection not closed"))?
    }

    pub fn header(domain: &str) -> String {
        format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
        )
    }

    /// Open a stream to localhost and return the features.
    pub async fn open(&mut self) -> Result<Element> {
        self.parser = StreamParser::new(Limits { max_stanza_bytes: 1 << 22, ..Limits::default() });
        self.send(&Client::header("localhost")).await?;
        match self.next().await? {
            Event::StreamOpen(_) => {}
            other => bail!("expected stream header, got {other:?}"),
        }
        let f = self.element().await?;
        if !f.is("features", ns::STREAM) {
            bail!("expected features, got {}", f.to_string_lossy());
        }
        Ok(f)
    }

    pub async fn starttls_and_open(&mut self, cert: &Path) -> Result<Element> {
        let f = self.open().await?;
        if f.get_child("starttls", ns::TLS).is_none() {
            bail!("no starttls offered");
        }
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>").await?;
        let p = self.element().await?;
        if !p.is("proceed", ns::TLS) {
            bail!("expected proceed, got {}", p.to_string_lossy());
        }
        let tcp = self.tcp.take().ok_or_else(|| anyhow!("no tcp"))?;
        let name = rustls_pki_types::ServerName::try_from("localhost")?;
        let tls = tls_connector(cert, false)?.connect(name, tcp).await?;
        self.io = Some(Box::pin(tls));
        self.open().await
    }

    /// SCRAM with the given hash. Returns Err with the failure condition on refusal.
    pub async fn auth_scram(&mut self, hash: ScramHash, user: &str, password: &str) -> Result<()> {
        let mut client = ScramClient::new(hash, user, password, "testclientnonce0123456789");
        let first = client.client_first();
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{}'>{}</auth>",
            hash.mechanism(),
            B64.encode(first)
        ))
        .await?;
        let ch = self.element().await?;
        if !ch.is("challenge", ns::SASL) {
            bail!("sasl: {}", sasl_condition(&ch));
        }
        let server_first = B64.decode(ch.text().trim())?;
        let fin = client.handle_server_first(&server_first).map_err(|e| anyhow!("scram: {e:?}"))?;
        self.send(&format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            B64.encode(fin)
        ))
        .await?;
        let ok = self.element().await?;
        if !ok.is("success", ns::SASL) {
            bail!("sasl: {}", sasl_condition(&ok));
        }
        client
            .verify_server_final(&B64.decode(ok.text().trim())?)
            .map_err(|e| anyhow!("server signature: {e:?}"))?;
        self.open().await?;
        Ok(())
    }

    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Result<()> {
        let payload = B64.encode(format!("\0{user}\0{password}"));
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{payload}</auth>"
        ))
        .await?;
        let r = self.element().await?;
        if !r.is("success", ns::SASL) {
            bail!("sasl: {}", sasl_condition(&r));
        }
        self.open().await?;
        Ok(())
    }

    pub async fn bind(&mut self, resource: Option<&str>) -> Result<String> {
        let res = resource.map(|r| format!("<resource>{r}</resource>")).unwrap_or_default();
        self.send(&format!(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{res}</bind></iq>"
        ))
        .await?;
        let r = self.element().await?;
        let jid = r
            .get_child("bind", ns::BIND)
            .and_then(|b| b.get_child("jid", ns::BIND))
            .map(|j| j.text())
            .ok_or_else(|| anyhow!("bind failed: {}", r.to_string_lossy()))?;
        self.jid = Some(jid.clone());
        Ok(jid)
    }

    pub async fn presence(&mut self) -> Result<()> {
        self.send("<presence/>").await
    }

    pub async fn message(&mut self, to: &str, body: &str) -> Result<()> {
        let m = Element::new("message", ns::CLIENT)
            .with_attr("to", to)
            .with_attr("type", "chat")
            .with_attr("id", "m1")
            .with_child(Element::new("body", ns::CLIENT).with_text(body));
        self.send_element(&m).await
    }

    pub async fn expect_message(&mut self, body: &str) -> Result<Element> {
        self.wait_for(&format!("message {body:?}"), |e| {
            e.name == "message" && e.get_child("body", ns::CLIENT).map(|b| b.text()).as_deref() == Some(body)
        })
        .await
    }
}

/// The condition inside a SASL failure, or the element itself.
pub fn sasl_condition(e: &Element) -> String {
    if e.is("failure", ns::SASL) {
        e.first_element().map(|c| c.name.to_string()).unwrap_or_default()
    } else {
        e.to_string_lossy()
    }
}

/// A normal user still logs in and exchanges a message: run after every abusive case.
pub async fn assert_healthy(server: &TestServer) -> Result<()> {
    assert_healthy_from(server, "127.0.0.1".parse()?).await
}

/// [`assert_healthy`] with both clients connecting from `source`.
pub async fn assert_healthy_from(server: &TestServer, source: std::net::IpAddr) -> Result<()> {
    let mut a = server.login_from(source, "alice", "alicepw", "health-a").await.context("alice login")?;
    let mut b = server.login_from(source, "bob", "bobpw", "health-b").await.context("bob login")?;
    a.message("bob@localhost/health-b", "still alive").await?;
    let m = b.expect_message("still alive").await?;
    if m.attr("from") != Some("alice@localhost/health-a") {
        bail!("unexpected from: {:?}", m.attr("from"));
    }
    Ok(())
}

/// `GET path` on the operator endpoint: (status code, body).
pub async fn http_get(server: &TestServer, path: &str) -> Result<(u16, String)> {
    http_get_at(server.http.ok_or_else(|| anyhow!("no http listener announced"))?, path).await
}

/// `GET path` on the operator endpoint at `addr`: (status code, body).
pub async fn http_get_at(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(STEP, tokio::net::TcpStream::connect(addr)).await??;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(STEP, s.read_to_end(&mut raw)).await??;
    let text = String::from_utf8(raw)?;
    let status =
        text.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| anyhow!("bad reply {text}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// The `starling_sessions` gauge: bound client sessions right now.
pub async fn session_count(server: &TestServer) -> Result<f64> {
    let (_, text) = http_get(server, "/metrics").await?;
    sample(&text, "starling_sessions").ok_or_else(|| anyhow!("no starling_sessions in /metrics"))
}

/// Wait until the `starling_sessions` gauge reads `n`, failing after `within`.
pub async fn wait_for_sessions(server: &TestServer, n: f64, within: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let now = session_count(server).await?;
        if now == n {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("starling_sessions is {now}, expected {n} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one sample line (`name{labels} value`) in Prometheus text, if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

pub fn standard_users() -> Options {
    Options::default().users(&[("alice", "alicepw"), ("bob", "bobpw"), ("carol", "carolpw")])
}
