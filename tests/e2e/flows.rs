//! Whole flows against the real binary: logins, messages, offline delivery across a restart,
//! components, registration, shutdown and the account CLI.

use crate::support::*;
use anyhow::{Context, Result};
use starling_xmpp::ns;
use starling_xmpp::sasl::ScramHash;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn login_variants_and_direct_message() -> Result<()> {
    let server = TestServer::start(standard_users())?;
    // SCRAM-SHA-1 over STARTTLS.
    let mut a = Client::connect(server.c2s).await?;
    let f = a.starttls_and_open(&server.cert()).await?;
    let mechs: Vec<String> = f
        .get_child("mechanisms", ns::SASL)
        .map(|m| m.elements().map(|e| e.text()).collect())
        .unwrap_or_default();
    assert_eq!(mechs, vec!["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]);
    a.auth_scram(ScramHash::Sha1, "alice", "alicepw").await?;
    let jid = a.bind(None).await?;
    assert!(jid.starts_with("alice@localhost/") && jid.len() > "alice@localhost/".len(), "{jid}");

    // PLAIN over direct TLS with ALPN (XEP-0368).
    let mut b = Client::connect_direct_tls(server.direct_tls, &server.cert()).await?;
    let f = b.open().await?;
    assert!(f.get_child("starttls", ns::TLS).is_none(), "no STARTTLS inside TLS");
    b.auth_plain("bob", "bobpw").await?;
    assert_eq!(b.bind(Some("tablet")).await?, "bob@localhost/tablet");

    a.message("bob@localhost/tablet", "hello bob").await?;
    let m = b.expect_message("hello bob").await?;
    assert_eq!(m.attr("from"), Some(jid.as_str()));
    assert_eq!(m.attr("to"), Some("bob@localhost/tablet"));
    Ok(())
}

#[tokio::test]
async fn a_newer_session_for_the_same_resource_wins() -> Result<()> {
    let server = TestServer::start(standard_users())?;
    let mut first = server.login("alice", "alicepw", "phone").await?;
    let mut second = server.login("alice", "alicepw", "phone").await?;
    first.expect_stream_error("conflict").await?;
    let mut bob = server.login("bob", "bobpw", "b").await?;
    bob.message("alice@localhost/phone", "to the new one").await?;
    second.expect_message("to the new one").await?;
    Ok(())
}

#[tokio::test]
async fn offline_messages_survive_a_restart_and_arrive_with_delay() -> Result<()> {
    let mut server = TestServer::start(standard_users())?;
    {
        let mut bob = server.login("bob", "bobpw", "b").await?;
        bob.message("carol@localhost", "kept for you").await?;
        // Round trip a ping so the message has certainly been processed before the restart.
        bob.send("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await?;
        bob.wait_for("ping result", |e| e.attr("id") == Some("sync")).await?;
    }
    server.restart()?;
    let mut carol = server.login("carol", "carolpw", "c").await?;
    carol.presence().await?;
    let m = carol.expect_message("kept for you").await?;
    assert_eq!(m.attr("from"), Some("bob@localhost/b"));
    let delay = m.get_child("delay", ns::DELAY).context("delay stamp")?;
    assert_eq!(delay.attr("from"), Some("localhost"));
    assert!(delay.attr("stamp").is_some_and(|s| s.ends_with('Z')));
    // The restarted process delivered one queue of one message.
    let (_, m) = http_get(&server, "/metrics").await?;
    assert_eq!(sample(&m, "starling_offline_messages_delivered_total"), Some(1.0), "{m}");
    assert_eq!(sample(&m, "starling_offline_queue_messages_count"), Some(1.0), "{m}");
    assert_eq!(sample(&m, "starling_offline_queue_messages_bucket{le=\"1\"}"), Some(1.0), "{m}");
    Ok(())
}

#[tokio::test]
async fn presence_subscription_over_the_wire() -> Result<()> {
    let server = TestServer::start(standard_users())?;
    let mut alice = server.login("alice", "alicepw", "a").await?;
    let mut bob = server.login("bob", "bobpw", "b").await?;
    for c in [&mut alice, &mut bob] {
        c.send("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>").await?;
        c.wait_for("roster", |e| e.attr("id") == Some("r")).await?;
        c.presence().await?;
    }
    alice.send("<presence to='bob@localhost' type='subscribe'/>").await?;
    bob.wait_for("subscribe", |e| {
        e.attr("type") == Some("subscribe") && e.attr("from") == Some("alice@localhost")
    })
    .await?;
    bob.send("<presence to='alice@localhost' type='subscribed'/>").await?;
    alice
        .wait_for("roster push with subscription to", |e| {
            e.name == "iq" && e.to_string_lossy().contains("subscription='to'")
        })
        .await?;
    alice
        .wait_for("bob's presence", |e| e.name == "presence" && e.attr("from") == Some("bob@localhost/b"))
        .await?;
    // Bob leaves abruptly: alice hears unavailable.
    drop(bob);
    alice
        .wait_for("unavailable", |e| {
            e.attr("type") == Some("unavailable") && e.attr("from") == Some("bob@localhost/b")
        })
        .await?;
    Ok(())
}

#[tokio::test]
async fn component_round_trip() -> Result<()> {
    let server = TestServer::start(standard_users().component("echo.localhost", "s3cret"))?;
    let addr = server.component.context("component listener")?;
    let mut comp = tokio::net::TcpStream::connect(addr).await?;
    comp.write_all(
        b"<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='echo.localhost'>",
    )
    .await?;
    let mut parser = starling_xml::StreamParser::new(starling_xml::Limits::default());
    let starling_xml::Event::StreamOpen(h) = comp_next(&mut comp, &mut parser).await? else {
        anyhow::bail!("no header")
    };
    let id = h.attr("id").context("stream id")?.to_owned();
    let digest = starling_edge_digest(&id, "s3cret");
    comp.write_all(format!("<handshake>{digest}</handshake>").as_bytes()).await?;
    match comp_next(&mut comp, &mut parser).await? {
        starling_xml::Event::Stanza(e) if e.name == "handshake" => {}
        other => anyhow::bail!("handshake refused: {other:?}"),
    }
    let mut alice = server.login("alice", "alicepw", "a").await?;
    alice.message("bot@echo.localhost", "ping me back").await?;
    let starling_xml::Event::Stanza(m) = comp_next(&mut comp, &mut parser).await? else {
        anyhow::bail!("no stanza")
    };
    assert_eq!(m.ns, "jabber:component:accept");
    assert_eq!(m.attr("from"), Some("alice@localhost/a"));
    assert_eq!(
        m.get_child("body", "jabber:component:accept").map(|b| b.text()).as_deref(),
        Some("ping me back")
    );
    comp.write_all(
        b"<message from='bot@echo.localhost' to='alice@localhost/a' type='chat'><body>pong</body></message>",
    )
    .await?;
    let reply = alice.expect_message("pong").await?;
    assert_eq!(reply.attr("from"), Some("bot@echo.localhost"));

    // A component may not speak for other domains.
    comp.write_all(b"<message from='bob@localhost' to='alice@localhost/a'><body>forged</body></message>")
        .await?;
    loop {
        match comp_next(&mut comp, &mut parser).await {
            Ok(starling_xml::Event::Stanza(e)) if e.name == "error" => {
                assert!(e.to_string_lossy().contains("invalid-from"));
                break;
            }
            Ok(_) => continue,
            Err(e) => anyhow::bail!("expected invalid-from: {e}"),
        }
    }
    // A wrong secret is refused.
    let mut bad = tokio::net::TcpStream::connect(addr).await?;
    bad.write_all(
        b"<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='echo.localhost'><handshake>00</handshake>",
    )
    .await?;
    let mut p2 = starling_xml::StreamParser::new(starling_xml::Limits::default());
    loop {
        match comp_next(&mut bad, &mut p2).await {
            Ok(starling_xml::Event::Stanza(e)) if e.name == "error" => {
                assert!(e.to_string_lossy().contains("not-authorized"));
                break;
            }
            Ok(_) => continue,
            Err(e) => anyhow::bail!("expected not-authorized: {e}"),
        }
    }
    Ok(())
}

/// XEP-0114 handshake digest computed here independently of the server's code.
fn starling_edge_digest(id: &str, secret: &str) -> String {
    let d = ring_sha1(format!("{id}{secret}").as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn ring_sha1(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data).as_ref().to_vec()
}

/// The next event on a raw component connection.
async fn comp_next(
    comp: &mut tokio::net::TcpStream,
    parser: &mut starling_xml::StreamParser,
) -> Result<starling_xml::Event> {
    tokio::time::timeout(STEP, async {
        loop {
            if let Some(ev) = parser.next_event()? {
                return Ok(ev);
            }
            if comp.read_buf(parser.buffer_mut()).await? == 0 {
                anyhow::bail!("component connection closed");
            }
        }
    })
    .await?
}

#[tokio::test]
async fn in_band_registration_then_login() -> Result<()> {
    let server = TestServer::start(standard_users().env("STARLING_REGISTRATION__ENABLED", "true"))?;
    let mut c = Client::connect(server.c2s).await?;
    let f = c.starttls_and_open(&server.cert()).await?;
    assert!(f.get_child("register", ns::REGISTER_FEATURE).is_some());
    c.send("<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>").await?;
    let form = c.element().await?;
    assert!(form
        .get_child("query", ns::REGISTER)
        .and_then(|q| q.get_child("password", ns::REGISTER))
        .is_some());
    c.send("<iq type='set' id='r2'><query xmlns='jabber:iq:register'><username>dora</username><password>dorapw</password></query></iq>").await?;
    assert_eq!(c.element().await?.attr("type"), Some("result"));
    c.send("<iq type='set' id='r3'><query xmlns='jabber:iq:register'><username>dora</username><password>x</password></query></iq>").await?;
    assert!(c.element().await?.to_string_lossy().contains("conflict"));
    let mut d = server.login("dora", "dorapw", "d").await?;
    d.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await?;
    d.wait_for("ping", |e| e.attr("id") == Some("p")).await?;

    // Registration is off by default.
    let plain = TestServer::start(standard_users())?;
    let mut c = Client::connect(plain.c2s).await?;
    let f = c.starttls_and_open(&plain.cert()).await?;
    assert!(f.get_child("register", ns::REGISTER_FEATURE).is_none());
    c.send("<iq type='set' id='r2'><query xmlns='jabber:iq:register'><username>eve</username><password>evepw</password></query></iq>").await?;
    assert!(c.element().await?.to_string_lossy().contains("service-unavailable"));
    Ok(())
}

#[tokio::test]
async fn sigterm_closes_streams_with_system_shutdown() -> Result<()> {
    let mut server = TestServer::start(standard_users())?;
    let mut alice = server.login("alice", "alicepw", "a").await?;
    let status = tokio::task::spawn_blocking(move || {
        let st = server.stop();
        (server, st)
    });
    alice.expect_stream_error("system-shutdown").await?;
    let (_server, st) = status.await?;
    assert!(st?.success());
    Ok(())
}

#[tokio::test]
async fn a_single_threaded_server_serves_and_stops_cleanly() -> Result<()> {
    // `worker_threads = 1` (a one-core machine or pod): TLS, storage, routing and the shutdown
    // all run on the one thread.
    let mut server = TestServer::start(standard_users().env("STARLING_WORKER_THREADS", "1"))?;
    let mut alice = server.login("alice", "alicepw", "a").await?;
    let mut bob = server.login("bob", "bobpw", "b").await?;
    alice.message("bob@localhost/b", "one thread").await?;
    let m = bob.expect_message("one thread").await?;
    assert_eq!(m.attr("from"), Some("alice@localhost/a"));
    let status = tokio::task::spawn_blocking(move || {
        let st = server.stop();
        (server, st)
    });
    alice.expect_stream_error("system-shutdown").await?;
    bob.expect_stream_error("system-shutdown").await?;
    let (_server, st) = status.await?;
    assert!(st?.success());
    Ok(())
}

#[test]
fn user_cli_add_list_passwd_remove() -> Result<()> {
    let mut server = TestServer::start(Options::default())?;
    server.stop()?;
    server.cli(&["user", "add", "zed@localhost", "--password", "one"])?;
    assert!(server.cli(&["user", "add", "zed@localhost", "--password", "two"]).is_err());
    assert!(server.cli(&["user", "add", "zed@elsewhere.example", "--password", "x"]).is_err());
    assert_eq!(server.cli(&["user", "list"])?.trim(), "zed@localhost");
    server.cli(&["user", "passwd", "zed@localhost", "--password", "two"])?;
    server.restart()?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut c = Client::connect(server.c2s).await?;
        c.starttls_and_open(&server.cert()).await?;
        assert!(c.auth_plain("zed", "one").await.is_err());
        c.auth_plain("zed", "two").await
    })?;
    server.stop()?;
    server.cli(&["user", "remove", "zed@localhost"])?;
    assert_eq!(server.cli(&["user", "list"])?.trim(), "");
    let out = std::process::Command::new(BIN).arg("--version").output()?;
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    Ok(())
}

#[tokio::test]
async fn metrics_and_health_endpoints_follow_traffic() -> Result<()> {
    let server = TestServer::start(standard_users())?;
    assert_eq!(http_get(&server, "/livez").await?.0, 200);
    assert_eq!(http_get(&server, "/readyz").await?.0, 200);
    assert_eq!(http_get(&server, "/nope").await?.0, 404);
    let (status, before) = http_get(&server, "/metrics").await?;
    assert_eq!(status, 200);
    assert_eq!(sample(&before, "starling_build_info{role=\"serve\",version=\"0.1.0\"}"), Some(1.0));
    assert_eq!(sample(&before, "starling_sessions"), Some(0.0));

    // Two logins and a message (SCRAM-SHA-256 over STARTTLS), one failed login.
    let mut a = server.login("alice", "alicepw", "m-a").await?;
    let mut b = server.login("bob", "bobpw", "m-b").await?;
    a.message("bob@localhost/m-b", "counted").await?;
    b.expect_message("counted").await?;
    assert!(server.login("carol", "wrong", "m-c").await.is_err());
    // An iq to an account's bare JID for a namespace nobody serves: the server answers
    // service-unavailable, and counts it.
    a.send("<iq type='get' id='nx1' to='bob@localhost'><query xmlns='urn:example:none'/></iq>").await?;
    let err = a.wait_for("the iq error", |e| e.name == "iq" && e.attr("id") == Some("nx1")).await?;
    assert_eq!(err.attr("type"), Some("error"), "{err:?}");
    let (_, after) = http_get(&server, "/metrics").await?;
    assert_eq!(sample(&after, "starling_sessions"), Some(2.0), "{after}");
    let ok = sample(&after, "starling_auth_total{mechanism=\"SCRAM-SHA-256\",result=\"ok\"}").unwrap_or(0.0);
    assert!(ok >= 2.0, "auth ok = {ok}");
    let failed =
        sample(&after, "starling_auth_total{mechanism=\"SCRAM-SHA-256\",result=\"failed\"}").unwrap_or(0.0);
    assert!(failed >= 1.0, "auth failed = {failed}");
    assert!(sample(&after, "starling_stanzas_in_total{kind=\"message\"}").unwrap_or(0.0) >= 1.0);
    assert!(sample(&after, "starling_stanzas_out_total{kind=\"message\"}").unwrap_or(0.0) >= 1.0, "{after}");
    assert!(sample(&after, "starling_stanzas_out_total{kind=\"iq\"}").unwrap_or(0.0) >= 1.0, "{after}");
    assert!(!after.contains("kind=\"any\""), "{after}");
    let errors =
        sample(&after, "starling_stanza_errors_total{condition=\"service-unavailable\"}").unwrap_or(0.0);
    assert!(errors >= 1.0, "{after}");
    let open = sample(&after, "starling_connections{listener=\"c2s\",tls=\"true\"}").unwrap_or(0.0);
    assert!(open >= 2.0, "open TLS connections = {open}");

    // Sessions end: the gauge follows.
    drop(a);
    drop(b);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, now) = http_get(&server, "/metrics").await?;
        if sample(&now, "starling_sessions") == Some(0.0) {
            break;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "sessions gauge stuck: {now}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}
