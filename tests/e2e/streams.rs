//! Bad input gets the right RFC 6120 stream error, and nothing else is disturbed.

use crate::support::*;
use anyhow::{Context, Result};

const TLS_NS: &str = "urn:ietf:params:xml:ns:xmpp-tls";

/// A plain-TCP connection with an open stream (features read).
async fn opened(server: &TestServer) -> Result<Client> {
    let mut c = Client::connect(server.c2s).await?;
    c.open().await?;
    Ok(c)
}

/// A TLS connection with an open stream, not authenticated.
async fn opened_tls(server: &TestServer) -> Result<Client> {
    let mut c = Client::connect(server.c2s).await?;
    c.starttls_and_open(&server.cert()).await?;
    Ok(c)
}

/// One abusive input and the stream error it must get.
struct Abuse {
    /// What the case is, for failure messages.
    name: &'static str,
    /// Whether the client first opens a normal stream (else the bytes are the stream header).
    open_first: bool,
    /// What the client sends.
    bytes: String,
    /// The expected RFC 6120 §4.9.3 condition.
    condition: &'static str,
}

fn abuse(name: &'static str, open_first: bool, bytes: impl Into<String>, condition: &'static str) -> Abuse {
    Abuse { name, open_first, bytes: bytes.into(), condition }
}

#[tokio::test]
async fn stream_errors_for_bad_xml_and_headers() -> Result<()> {
    let server = TestServer::start(standard_users().env("STARLING_C2S__MAX_STANZA_BYTES", "4096"))?;
    let header = |ns: &str, version: &str| {
        format!(
            "<stream:stream xmlns='{ns}' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='{version}'>"
        )
    };
    let many_attrs: String = (0..100).map(|i| format!(" a{i}='v'")).collect();
    let cases = [
        abuse("mismatched end tag", true, "<message><body>x</message>", "not-well-formed"),
        abuse("undefined entity", true, "<message><body>&bogus;</body></message>", "not-well-formed"),
        // Restricted XML (RFC 6120 §11.1): comments, processing instructions, DTDs, entities.
        abuse("comment", true, "<!-- hello -->", "restricted-xml"),
        abuse("processing instruction", true, "<?php echo 1; ?>", "restricted-xml"),
        abuse(
            "DTD with entity declarations",
            false,
            format!(
                "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;'>]>{}",
                header("jabber:client", "1.0")
            ),
            "restricted-xml",
        ),
        abuse("entity declaration inside a stanza", true, "<message><!ENTITY x 'y'></message>", "restricted-xml"),
        // Limits: size (policy-violation before the stanza completes), depth, attributes.
        abuse("oversize stanza", true, format!("<message><body>{}", "a".repeat(8192)), "policy-violation"),
        abuse("excessive nesting", true, "<a>".repeat(200), "policy-violation"),
        abuse("too many attributes", true, format!("<message{many_attrs}/>"), "policy-violation"),
        // Headers: unknown host, wrong content and stream namespaces, unsupported version.
        abuse("unknown host", false, Client::header("nowhere.example"), "host-unknown"),
        abuse("server namespace on c2s", false, header("jabber:server", "1.0"), "invalid-namespace"),
        abuse(
            "wrong stream namespace",
            false,
            "<stream:stream xmlns='jabber:client' xmlns:stream='urn:example:not-streams' to='localhost' version='1.0'>",
            "invalid-namespace",
        ),
        abuse("unsupported version", false, header("jabber:client", "2.0"), "unsupported-version"),
    ];
    for case in cases {
        let mut c =
            if case.open_first { opened(&server).await? } else { Client::connect(server.c2s).await? };
        c.send(&case.bytes).await?;
        c.expect_stream_error(case.condition).await.with_context(|| case.name)?;
        // Nothing else is disturbed: a normal client still logs in and exchanges a message.
        assert_healthy(&server).await.with_context(|| format!("after {}", case.name))?;
    }
    Ok(())
}

#[tokio::test]
async fn authentication_rules() -> Result<()> {
    let server = TestServer::start(standard_users().env("STARLING_AUTH__FAILURES_PER_MINUTE", "4"))?;

    // No mechanisms before TLS, and SASL on a plain stream is refused.
    let mut c = Client::connect(server.c2s).await?;
    let features = c.open().await?;
    assert!(features.get_child("starttls", TLS_NS).and_then(|s| s.get_child("required", TLS_NS)).is_some());
    assert!(features.get_child("mechanisms", starling_xmpp::ns::SASL).is_none());
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAGFsaWNlcHc=</auth>")
        .await?;
    let f = c.element().await?;
    assert_eq!(sasl_condition(&f), "encryption-required");

    // A stanza before TLS when TLS is required.
    let mut c = opened(&server).await?;
    c.send("<message to='bob@localhost'><body>x</body></message>").await?;
    c.expect_stream_error("policy-violation").await?;

    // A stanza after TLS but before authentication.
    let mut c = opened_tls(&server).await?;
    c.send("<message to='bob@localhost'><body>x</body></message>").await?;
    c.expect_stream_error("not-authorized").await?;

    // Wrong passwords: not-authorized (for known and unknown users alike), then rate limited.
    let mut c = opened_tls(&server).await?;
    let e = c.auth_scram(starling_xmpp::sasl::ScramHash::Sha256, "alice", "wrong").await.unwrap_err();
    assert!(e.to_string().contains("not-authorized"), "{e}");
    let e = c.auth_scram(starling_xmpp::sasl::ScramHash::Sha1, "nosuchuser", "wrong").await.unwrap_err();
    assert!(e.to_string().contains("not-authorized"), "{e}");
    let e = c.auth_plain("alice", "wrong").await.unwrap_err();
    assert!(e.to_string().contains("not-authorized"), "{e}");
    // Third failure on one stream closes it.
    c.expect_stream_error("policy-violation").await?;
    let mut c = opened_tls(&server).await?;
    let e = c.auth_plain("bob", "wrong").await.unwrap_err();
    assert!(e.to_string().contains("not-authorized"), "{e}");
    // The address has used its 4 failures this minute: even the right password is refused now.
    let e = c.auth_plain("bob", "bobpw").await.unwrap_err();
    assert!(e.to_string().contains("temporary-auth-failure"), "{e}");
    // The limit is per address: users elsewhere are unaffected.
    assert_healthy_from(&server, "127.0.0.2".parse()?).await
}

#[tokio::test]
async fn bound_session_rules_from_stamping_and_stanza_types() -> Result<()> {
    let server = TestServer::start(standard_users())?;
    let mut bob = server.login("bob", "bobpw", "desk").await?;

    // Spoofed 'from' is refused with invalid-from.
    let mut mallory = server.login("carol", "carolpw", "x").await?;
    mallory
        .send("<message from='alice@localhost/health-a' to='bob@localhost/desk'><body>spoof</body></message>")
        .await?;
    mallory.expect_stream_error("invalid-from").await?;

    // A 'from' of the sender's own bare JID is accepted and stamped with the full JID.
    let mut carol = server.login("carol", "carolpw", "y").await?;
    carol
        .send("<message from='carol@localhost' to='bob@localhost/desk'><body>stamped</body></message>")
        .await?;
    let m = bob.expect_message("stamped").await?;
    assert_eq!(m.attr("from"), Some("carol@localhost/y"));

    // Unknown top-level elements.
    carol.send("<foo xmlns='jabber:client'/>").await?;
    carol.expect_stream_error("unsupported-stanza-type").await?;

    // iq without an id is a bad request, the stream stays up.
    let mut dave = server.login("alice", "alicepw", "z").await?;
    dave.send("<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>").await?;
    let e = dave.element().await?;
    assert_eq!(e.attr("type"), Some("error"));
    assert!(e.to_string_lossy().contains("bad-request"));
    dave.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await?;
    let r = dave.wait_for("ping result", |e| e.attr("id") == Some("p1")).await?;
    assert_eq!(r.attr("type"), Some("result"));

    // Whitespace keepalives are fine; a clean close is answered with a close.
    dave.send("   \n  ").await?;
    dave.send("</stream:stream>").await?;
    dave.expect_closed().await?;

    assert_healthy(&server).await
}

#[tokio::test]
async fn silent_connections_time_out() -> Result<()> {
    let server = TestServer::start(
        standard_users()
            .env("STARLING_C2S__HANDSHAKE_TIMEOUT_SECS", "1")
            .env("STARLING_C2S__IDLE_TIMEOUT_SECS", "2"),
    )?;
    // A bound session that stays silent past the idle timeout; one that keeps sending
    // whitespace keepalives stays.
    let mut idle = server.login("carol", "carolpw", "idle").await?;
    let mut chatty = server.login("carol", "carolpw", "chatty").await?;
    let keepalive = tokio::spawn(async move {
        for _ in 0..6 {
            chatty.send(" ").await?;
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        chatty.send("<iq type='get' id='alive' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await?;
        chatty.wait_for("ping answer", |e| e.attr("id") == Some("alive")).await?;
        anyhow::Ok(())
    });
    idle.expect_stream_error("connection-timeout").await?;
    keepalive.await??;
    let mut c = Client::connect(server.c2s).await?;
    // Says nothing at all.
    c.expect_stream_error("connection-timeout").await?;
    // Half a header.
    let mut c = Client::connect(server.c2s).await?;
    c.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client'").await?;
    c.expect_stream_error("connection-timeout").await?;
    assert_healthy(&server).await
}
