//! What the server stores survives a restart of the real binary (rosters, subscriptions, vCards,
//! private XML), and the `user` CLI works against a running server through its admin socket.

use crate::support::*;
use anyhow::{Context, Result};
use starling_xml::Element;
use starling_xmpp::ns;

/// Send an iq and wait for its answer (skipping pushes and presence on the way).
async fn iq(c: &mut Client, id: &str, xml: &str) -> Result<Element> {
    c.send(xml).await?;
    let reply = c.wait_for(&format!("iq {id}"), |e| e.name == "iq" && e.attr("id") == Some(id)).await?;
    anyhow::ensure!(reply.attr("type") == Some("result"), "iq {id} failed: {}", reply.to_string_lossy());
    Ok(reply)
}

/// The roster item for `jid` in a roster result.
fn roster_item<'a>(roster: &'a Element, jid: &str) -> Option<&'a Element> {
    roster.get_child("query", ns::ROSTER)?.elements().find(|i| i.attr("jid") == Some(jid))
}

#[tokio::test]
async fn rosters_vcards_and_private_xml_survive_a_restart() -> Result<()> {
    let mut server = TestServer::start(standard_users())?;
    {
        let mut alice = server.login("alice", "alicepw", "a").await?;
        let mut bob = server.login("bob", "bobpw", "b").await?;
        for c in [&mut alice, &mut bob] {
            iq(c, "r0", "<iq type='get' id='r0'><query xmlns='jabber:iq:roster'/></iq>").await?;
            c.presence().await?;
        }
        // A roster item with a name and a group, and a subscription alice -> bob.
        iq(
            &mut alice,
            "rs",
            "<iq type='set' id='rs'><query xmlns='jabber:iq:roster'>\
             <item jid='carol@localhost' name='Carol'><group>Friends</group></item></query></iq>",
        )
        .await?;
        alice.send("<presence to='bob@localhost' type='subscribe'/>").await?;
        bob.wait_for("subscribe", |e| e.attr("type") == Some("subscribe")).await?;
        bob.send("<presence to='alice@localhost' type='subscribed'/>").await?;
        alice
            .wait_for("roster push with subscription to", |e| {
                e.name == "iq" && e.to_string_lossy().contains("subscription='to'")
            })
            .await?;
        iq(
            &mut alice,
            "vs",
            "<iq type='set' id='vs'><vCard xmlns='vcard-temp'><FN>Alice Liddell</FN>\
             <NICKNAME>al</NICKNAME></vCard></iq>",
        )
        .await?;
        iq(
            &mut alice,
            "ps",
            "<iq type='set' id='ps'><query xmlns='jabber:iq:private'>\
             <prefs xmlns='urn:example:prefs'><theme>dark</theme></prefs></query></iq>",
        )
        .await?;
        // Bob's round trip makes sure his side of the subscription has been processed too.
        iq(&mut bob, "sync", "<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
            .await?;
    }
    server.restart()?;

    let mut alice = server.login("alice", "alicepw", "a2").await?;
    let roster =
        iq(&mut alice, "rg", "<iq type='get' id='rg'><query xmlns='jabber:iq:roster'/></iq>").await?;
    let carol = roster_item(&roster, "carol@localhost").context("carol lost from the roster")?;
    assert_eq!(carol.attr("name"), Some("Carol"));
    assert_eq!(carol.get_child("group", ns::ROSTER).map(|g| g.text()).as_deref(), Some("Friends"));
    let bob_item = roster_item(&roster, "bob@localhost").context("bob lost from the roster")?;
    assert_eq!(bob_item.attr("subscription"), Some("to"));

    let vcard = iq(&mut alice, "vg", "<iq type='get' id='vg'><vCard xmlns='vcard-temp'/></iq>").await?;
    let card = vcard.get_child("vCard", ns::VCARD).context("no vCard")?;
    assert_eq!(card.get_child("FN", ns::VCARD).map(|f| f.text()).as_deref(), Some("Alice Liddell"));
    assert_eq!(card.get_child("NICKNAME", ns::VCARD).map(|f| f.text()).as_deref(), Some("al"));

    let private = iq(
        &mut alice,
        "pg",
        "<iq type='get' id='pg'><query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'/></query></iq>",
    )
    .await?;
    let prefs = private
        .get_child("query", ns::PRIVATE)
        .and_then(|q| q.get_child("prefs", "urn:example:prefs"))
        .context("no private prefs")?;
    assert_eq!(prefs.get_child("theme", "urn:example:prefs").map(|t| t.text()).as_deref(), Some("dark"));

    // Bob's side: alice is subscribed from, and others see alice's vCard too.
    let mut bob = server.login("bob", "bobpw", "b2").await?;
    let roster = iq(&mut bob, "rg", "<iq type='get' id='rg'><query xmlns='jabber:iq:roster'/></iq>").await?;
    let alice_item = roster_item(&roster, "alice@localhost").context("alice lost from bob's roster")?;
    assert_eq!(alice_item.attr("subscription"), Some("from"));
    let vcard =
        iq(&mut bob, "vo", "<iq type='get' id='vo' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>")
            .await?;
    assert!(vcard.to_string_lossy().contains("Alice Liddell"), "{}", vcard.to_string_lossy());
    assert_healthy(&server).await
}

#[tokio::test]
async fn user_commands_work_while_the_server_runs() -> Result<()> {
    let server = TestServer::start(standard_users())?;
    // The database is held by the running server: these go through the admin socket.
    assert!(server.dir.path().join("admin.sock").exists(), "no admin socket");
    let out = server.cli(&["user", "add", "yuki@localhost", "--password", "first"])?;
    assert!(out.contains("yuki@localhost"), "{out}");
    assert!(server.cli(&["user", "add", "yuki@localhost", "--password", "again"]).is_err());
    let list = server.cli(&["user", "list"])?;
    let mut names: Vec<&str> = list.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    names.sort_unstable();
    assert_eq!(names, vec!["alice@localhost", "bob@localhost", "carol@localhost", "yuki@localhost"]);

    // The new account logs in at once, without a restart.
    let mut yuki = server.login("yuki", "first", "y").await?;
    iq(&mut yuki, "p", "<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await?;

    server.cli(&["user", "passwd", "yuki@localhost", "--password", "second"])?;
    assert!(server.login("yuki", "first", "y2").await.is_err(), "old password still accepted");
    server.login("yuki", "second", "y3").await?;

    server.cli(&["user", "remove", "yuki@localhost"])?;
    assert!(server.login("yuki", "second", "y4").await.is_err(), "removed account still logs in");
    assert!(!server.cli(&["user", "list"])?.contains("yuki"));
    assert_healthy(&server).await
}
