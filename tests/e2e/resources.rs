//! Connections cannot hold resources forever: a client that stops reading is dropped after the
//! write timeout (and what was still queued to it reaches it at its next login), the idle
//! timeout counts only what the client sends, and components are not subject to the clients'
//! idle timeout. Limits of zero are refused at start.

use crate::support::*;
use anyhow::{bail, Context, Result};
use starling_xml::{Element, Event, Limits, StreamParser};
use starling_xmpp::ns;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A chat message with a body of `size` bytes.
fn big_message(to: &str, i: usize, size: usize) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("to", to)
        .with_attr("type", "chat")
        .with_attr("id", format!("flood{i}"))
        .with_child(Element::new("body", ns::CLIENT).with_text("x".repeat(size)))
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() -> Result<()> {
    let server = TestServer::start(standard_users().env("STARLING_C2S__WRITE_TIMEOUT_SECS", "1"))?;
    // Bob logs in and never reads again; alice floods him with far more than socket buffers hold.
    let mut bob = server.login_small_window("bob", "bobpw", "deaf").await?;
    let mut alice = server.login("alice", "alicepw", "flood").await?;
    wait_for_sessions(&server, 2.0, STEP).await?;
    for i in 0..500 {
        alice.send_element(&big_message("bob@localhost/deaf", i, 16 * 1024)).await?;
    }
    // Round trip a ping so the whole flood has reached the router.
    alice.send("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await?;
    alice.wait_for("ping result", |e| e.attr("id") == Some("sync")).await?;
    let flooded = Instant::now();
    // Bob's session ends within the write timeout (plus slack for a loaded machine), alice's stays.
    wait_for_sessions(&server, 1.0, Duration::from_secs(6)).await.context("bob's session not dropped")?;
    assert!(flooded.elapsed() < Duration::from_secs(7), "{:?}", flooded.elapsed());
    // Bob's side sees what the kernel had buffered, then the end of the connection.
    bob.expect_closed().await?;
    alice.send("<iq type='get' id='alive' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await?;
    alice.wait_for("ping result", |e| e.attr("id") == Some("alive")).await?;
    assert_healthy(&server).await
}

#[tokio::test]
async fn a_backlog_left_by_a_dropped_connection_is_delivered_at_the_next_login() -> Result<()> {
    use std::collections::BTreeSet;
    const FLOOD: usize = 500;
    let server = TestServer::start(standard_users().env("STARLING_C2S__WRITE_TIMEOUT_SECS", "1"))?;
    // Bob is online and available, then stops reading; alice sends him far more than socket
    // buffers hold, so most of it is still queued to his session when the write timeout drops it.
    let mut bob = server.login_small_window("bob", "bobpw", "deaf").await?;
    bob.presence().await?;
    let mut alice = server.login("alice", "alicepw", "flood").await?;
    wait_for_sessions(&server, 2.0, STEP).await?;
    for i in 0..FLOOD {
        alice.send_element(&big_message("bob@localhost/deaf", i, 16 * 1024)).await?;
    }
    alice.send("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await?;
    alice.wait_for("ping result", |e| e.attr("id") == Some("sync")).await?;
    wait_for_sessions(&server, 1.0, Duration::from_secs(6)).await.context("bob's session not dropped")?;

    // What reached bob's first connection: whatever the kernel had buffered, up to the close.
    let id_of = |e: &Element| {
        e.attr("id").and_then(|id| id.strip_prefix("flood")).and_then(|n| n.parse::<usize>().ok())
    };
    let mut first = BTreeSet::new();
    while let Ok(ev) = bob.next().await {
        if let Event::Stanza(e) = ev {
            if e.name == "message" {
                first.extend(id_of(&e));
            }
        }
    }
    assert!(first.len() < FLOOD, "the flood never backed up; the test proves nothing");

    // At the next login every message bob did not get is delivered (from offline storage,
    // XEP-0160, or straight to the new session if it is up before the last one is stored), and
    // alice heard no error for any of them.
    let mut bob = server.login("bob", "bobpw", "back").await?;
    bob.presence().await?;
    let mut missing: BTreeSet<usize> = (0..FLOOD).filter(|i| !first.contains(i)).collect();
    let backlog = missing.len();
    while !missing.is_empty() {
        let m = bob
            .wait_for("a message of the backlog", |e| e.name == "message")
            .await
            .with_context(|| format!("{} of {backlog} queued messages never arrived", missing.len()))?;
        assert_eq!(m.attr("from"), Some("alice@localhost/flood"));
        if let Some(i) = id_of(&m) {
            missing.remove(&i);
        }
    }
    alice.send("<iq type='get' id='after' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await?;
    let reply = alice
        .wait_for("ping result", |e| e.attr("id") == Some("after") || e.attr("type") == Some("error"))
        .await?;
    assert_eq!(reply.attr("id"), Some("after"), "alice got an error: {}", reply.to_string_lossy());
    assert_healthy(&server).await
}

#[tokio::test]
async fn only_received_bytes_keep_a_session_from_idling_out() -> Result<()> {
    let server = TestServer::start(standard_users().env("STARLING_C2S__IDLE_TIMEOUT_SECS", "2"))?;
    // Bob only receives; carol receives the same traffic and sends whitespace keepalives.
    let mut bob = server.login("bob", "bobpw", "listener").await?;
    let bound = Instant::now();
    let mut carol = server.login("carol", "carolpw", "pinger").await?;
    let mut alice = server.login("alice", "alicepw", "talker").await?;
    let talker = tokio::spawn(async move {
        for i in 0..24 {
            alice.message("bob@localhost/listener", &format!("to bob {i}")).await?;
            alice.message("carol@localhost/pinger", &format!("to carol {i}")).await?;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::Ok(alice)
    });
    let pinger = tokio::spawn(async move {
        let start = Instant::now();
        let mut seen = 0;
        while start.elapsed() < Duration::from_secs(5) {
            carol.send(" ").await?;
            // Read what arrived meanwhile, so carol is a live reader too.
            let until = tokio::time::Instant::now() + Duration::from_millis(400);
            while let Ok(e) = tokio::time::timeout_at(until, carol.element()).await {
                if e?.name == "message" {
                    seen += 1;
                }
            }
        }
        anyhow::Ok((carol, seen))
    });
    // Bob keeps receiving messages, yet is closed once he has sent nothing for 2 s.
    let mut received = 0;
    loop {
        match bob.next().await {
            Ok(Event::Stanza(e)) if e.name == "message" => received += 1,
            Ok(Event::Stanza(e)) if e.is("error", ns::STREAM) => {
                let condition = e.first_element().map(|c| c.name.clone()).unwrap_or_default();
                assert_eq!(condition, "connection-timeout");
                break;
            }
            Ok(Event::Stanza(_)) | Ok(Event::StreamOpen(_)) => {}
            Ok(Event::StreamClose) => bail!("stream closed without connection-timeout"),
            Err(e) => bail!("expected connection-timeout: {e}"),
        }
    }
    let idle_for = bound.elapsed();
    assert!(received > 0, "bob received nothing before timing out");
    assert!(
        idle_for >= Duration::from_millis(1500) && idle_for < Duration::from_millis(4500),
        "bob timed out after {idle_for:?} (idle timeout 2 s, traffic to him for 6 s)"
    );
    bob.expect_closed().await?;
    // Carol, who kept sending whitespace, is still there after the traffic stops.
    let (mut carol, seen) = pinger.await??;
    assert!(seen > 0, "carol received nothing");
    carol.send("<iq type='get' id='alive' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await?;
    carol.wait_for("ping answer", |e| e.attr("id") == Some("alive")).await?;
    talker.await??;
    assert_healthy(&server).await
}

/// A raw XEP-0114 connection, authenticated for `domain`.
async fn component(
    addr: std::net::SocketAddr,
    domain: &str,
    secret: &str,
) -> Result<(TcpStream, StreamParser)> {
    let mut comp = TcpStream::connect(addr).await?;
    comp.write_all(
        format!(
            "<stream:stream xmlns='jabber:component:accept' \
             xmlns:stream='http://etherx.jabber.org/streams' to='{domain}'>"
        )
        .as_bytes(),
    )
    .await?;
    let mut parser = StreamParser::new(Limits::default());
    let Event::StreamOpen(h) = component_next(&mut comp, &mut parser).await? else { bail!("no header") };
    let id = h.attr("id").context("stream id")?;
    let digest =
        ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, format!("{id}{secret}").as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    comp.write_all(format!("<handshake>{hex}</handshake>").as_bytes()).await?;
    match component_next(&mut comp, &mut parser).await? {
        Event::Stanza(e) if e.name == "handshake" => Ok((comp, parser)),
        other => bail!("handshake refused: {other:?}"),
    }
}

/// The next event on a raw component connection.
async fn component_next(comp: &mut TcpStream, parser: &mut StreamParser) -> Result<Event> {
    tokio::time::timeout(STEP, async {
        loop {
            if let Some(ev) = parser.next_event()? {
                return Ok(ev);
            }
            if comp.read_buf(parser.buffer_mut()).await? == 0 {
                bail!("component connection closed");
            }
        }
    })
    .await?
}

#[tokio::test]
async fn components_are_not_dropped_by_the_client_idle_timeout() -> Result<()> {
    let server = TestServer::start(
        standard_users().env("STARLING_C2S__IDLE_TIMEOUT_SECS", "1").component("echo.localhost", "s3cret"),
    )?;
    let (mut comp, mut parser) =
        component(server.component.context("component listener")?, "echo.localhost", "s3cret").await?;
    // Quiet for three client idle timeouts: still connected, and it still carries stanzas.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut alice = server.login("alice", "alicepw", "a").await?;
    alice.message("bot@echo.localhost", "still there?").await?;
    match component_next(&mut comp, &mut parser).await? {
        Event::Stanza(m) if m.name == "message" => assert_eq!(m.attr("from"), Some("alice@localhost/a")),
        other => bail!("expected alice's message, got {other:?}"),
    }
    comp.write_all(
        b"<message from='bot@echo.localhost' to='alice@localhost/a' type='chat'><body>yes</body></message>",
    )
    .await?;
    alice.expect_message("yes").await?;
    Ok(())
}

#[tokio::test]
async fn a_component_idle_timeout_applies_when_configured() -> Result<()> {
    let server = TestServer::start(
        standard_users()
            .env("STARLING_COMPONENTS__IDLE_TIMEOUT_SECS", "1")
            .component("echo.localhost", "s3cret"),
    )?;
    let addr = server.component.context("component listener")?;
    let (mut quiet, mut quiet_parser) = component(addr, "echo.localhost", "s3cret").await?;
    let since = Instant::now();
    loop {
        match component_next(&mut quiet, &mut quiet_parser).await {
            Ok(Event::Stanza(e)) if e.name == "error" => {
                assert!(e.to_string_lossy().contains("connection-timeout"), "{}", e.to_string_lossy());
                break;
            }
            Ok(_) => continue,
            Err(e) => bail!("expected connection-timeout: {e}"),
        }
    }
    assert!(since.elapsed() < Duration::from_secs(4), "{:?}", since.elapsed());
    // A component that keeps sending whitespace stays past the timeout.
    let (mut chatty, mut chatty_parser) = component(addr, "echo.localhost", "s3cret").await?;
    for _ in 0..6 {
        chatty.write_all(b" ").await?;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let mut alice = server.login("alice", "alicepw", "a").await?;
    alice.message("bot@echo.localhost", "hello").await?;
    match component_next(&mut chatty, &mut chatty_parser).await? {
        Event::Stanza(m) if m.name == "message" => Ok(()),
        other => bail!("expected alice's message, got {other:?}"),
    }
}

#[test]
fn serve_refuses_obviously_wrong_values_at_start_naming_the_key() -> Result<()> {
    for (var, key) in [
        ("STARLING_C2S__WRITE_TIMEOUT_SECS", "c2s.write_timeout_secs"),
        ("STARLING_C2S__IDLE_TIMEOUT_SECS", "c2s.idle_timeout_secs"),
        ("STARLING_C2S__SESSION_QUEUE", "c2s.session_queue"),
        ("STARLING_C2S__MAX_CONNECTIONS", "c2s.max_connections"),
        ("STARLING_C2S__MAX_DEPTH", "c2s.max_depth"),
    ] {
        let dir = tempfile::tempdir()?;
        let out = std::process::Command::new(BIN)
            .arg("serve")
            .env_clear()
            .env("STARLING_DATA_DIR", format!("\"{}\"", dir.path().display()))
            .env("STARLING_C2S__LISTEN", "127.0.0.1:0")
            .env("STARLING_C2S__DIRECT_TLS_LISTEN", "127.0.0.1:0")
            .env("STARLING_HTTP__LISTEN", "127.0.0.1:0")
            .env(var, "0")
            .output()?;
        assert!(!out.status.success(), "{key} = 0 accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{key}: {stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).is_empty(), "{key}: something started");
    }
    Ok(())
}

/// The server's thread count (`Threads:` in /proc).
fn threads(server: &TestServer) -> Result<usize> {
    let pid = server.child.as_ref().context("server not running")?.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .context("no Threads: line")
}

#[tokio::test]
async fn a_burst_of_plain_logins_derives_passwords_a_core_at_a_time() -> Result<()> {
    // PLAIN makes the server derive the password (PBKDF2). Each derivation runs on the blocking
    // pool, whose threads live on for seconds after; a burst must queue for a slot per core
    // instead of starting a thread per login.
    let server = TestServer::start(standard_users().env("STARLING_WORKER_THREADS", "1"))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let burst = 4 * cores + 8;
    let mut clients = Vec::new();
    for _ in 0..burst {
        let mut c = Client::connect(server.c2s).await?;
        c.starttls_and_open(&server.cert()).await?;
        clients.push(c);
    }
    let before = threads(&server)?;
    // Every request is on its way before any answer is read.
    let auth = format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "\0alice\0alicepw")
    );
    for c in &mut clients {
        c.send(&auth).await?;
    }
    for c in &mut clients {
        let r = c.element().await?;
        assert!(r.is("success", ns::SASL), "{}", r.to_string_lossy());
    }
    // A derivation's slot is free again a moment before its thread is back in the pool, so the
    // pool may start one more thread per slot; without the slots it starts one per login.
    let grown = threads(&server)?.saturating_sub(before);
    assert!(grown <= 2 * cores + 1, "{burst} PLAIN logins started {grown} threads ({cores} cores)");
    assert_healthy(&server).await
}
