//! Roster management (RFC 6121 §2) and the server side of the subscription handshake (§3).
//!
//! The state transitions themselves are the pure functions of
//! [`starling_xmpp::subscription`]; this module applies their outcomes: it stores items, pushes
//! them to interested resources, forwards and delivers the presence stanzas, and sends the
//! presence that follows an approval or a cancellation.
//!
//! Every read-modify-write of an item runs under the account's roster lock
//! ([`Router::roster_lock`]), so concurrent roster sets and subscription changes of one account
//! apply one after the other instead of overwriting each other. Stanzas that follow a change
//! are routed after the lock is released.

use crate::{Router, CONTENT_NS};
use starling_xml::Element;
use starling_xmpp::roster::{parse_roster_set, RosterItem, RosterSet};
use starling_xmpp::session::ToClient;
use starling_xmpp::stanza::iq_result;
use starling_xmpp::subscription::{self, SubKind, SubState};
use starling_xmpp::{ns, BareJid, FullJid, Jid, StanzaError};
use std::sync::atomic::{AtomicU64, Ordering};

/// Ids for roster pushes; only uniqueness per stream matters.
static PUSH_ID: AtomicU64 = AtomicU64::new(1);

impl Router {
    /// `<query xmlns='jabber:iq:roster'/>` from the account's own session.
    pub(crate) async fn roster_iq(&self, from: &FullJid, iq: Element, query: Element) {
        let user = from.to_bare();
        match iq.attr("type") {
            Some("get") => {
                self.set_roster_interested(from);
                let key = user.to_string();
                let (ver, items) = match self.read(move |s| s.roster(&key)).await {
                    Ok(r) => r,
                    Err(_) => return self.bounce(&iq, StanzaError::InternalServerError),
                };
                let ver_s = ver.to_string();
                // §2.6.3: the client's version is current: empty result, changes come as pushes.
                if query.attr("ver") == Some(ver_s.as_str()) {
                    return self.reply_to_session(
                        from,
                        iq_result(&iq, starling_xmpp::bare_part(from.as_str()), None),
                    );
                }
                let mut q = Element::new("query", ns::ROSTER).with_attr("ver", ver_s);
                for item in items.iter().filter(|i| !i.hidden) {
                    q.append_child(item.to_element());
                }
                self.reply_to_session(from, iq_result(&iq, starling_xmpp::bare_part(from.as_str()), Some(q)));
            }
            Some("set") => match parse_roster_set(&query) {
                Err(e) => self.bounce(&iq, e.into()),
                Ok(RosterSet::Update { jid, name, groups }) => {
                    if jid == user {
                        // Prosody and ejabberd refuse self-items too; they confuse presence rules.
                        return self.bounce(&iq, StanzaError::NotAllowed);
                    }
                    {
                        let _roster = self.roster_lock(&user.to_string()).await;
                        let mut item =
                            self.load_item(&user, &jid).await.unwrap_or_else(|| RosterItem::new(&jid));
                        item.name = name;
                        item.groups = groups;
                        item.hidden = false;
                        self.save_item(&user, item).await;
                    }
                    self.reply_to_session(
                        from,
                        iq_result(&iq, starling_xmpp::bare_part(from.as_str()), None),
                    );
                }
                Ok(RosterSet::Remove { jid }) => {
                    let Some(item) = self.load_item(&user, &jid).await.filter(|i| !i.hidden) else {
                        return self.bounce(&iq, StanzaError::ItemNotFound);
                    };
                    // §2.5.2: cancel both directions before removing.
                    let st = item.state;
                    if st.subscription.has_to() || st.pending_out {
                        self.outbound_subscription(from, jid.clone(), SubKind::Unsubscribe).await;
                    }
                    if st.subscription.has_from() || st.pending_in {
                        self.outbound_subscription(from, jid.clone(), SubKind::Unsubscribed).await;
                    }
                    let _roster = self.roster_lock(&user.to_string()).await;
                    self.delete_item(&user, &jid, true).await;
                    drop(_roster);
                    self.reply_to_session(
                        from,
                        iq_result(&iq, starling_xmpp::bare_part(from.as_str()), None),
                    );
                }
            },
            _ => {}
        }
    }

    /// Mark a bound session as interested in roster pushes, as fetching the roster does
    /// (RFC 6121 §2.1.6); also used when a session is re-registered at a new owner.
    pub fn set_roster_interested(&self, from: &FullJid) {
        let key = starling_xmpp::bare_part(from.as_str()).to_owned();
        let mut shard = self.shard(&key);
        if let Some(a) = shard.get_mut(&key) {
            if let Some(s) = a.sessions.iter_mut().find(|s| s.resource == from.resource().as_str()) {
                s.roster_interested = true;
            }
        }
    }

    /// Deliver a reply straight to one of our sessions.
    pub(crate) fn reply_to_session(&self, to: &FullJid, reply: Element) {
        if let Some(t) = self.session_target(to) {
            t.sink.deliver(ToClient::Stanza(reply));
        }
    }

    /// The item for `contact` in `user`'s roster: the cache when online, else the store.
    pub(crate) async fn load_item(&self, user: &BareJid, contact: &BareJid) -> Option<RosterItem> {
        let key = user.to_string();
        let c = contact.to_string();
        {
            let shard = self.shard(&key);
            if let Some(a) = shard.get(&key) {
                return a.roster.get(&c).cloned();
            }
        }
        self.read(move |s| s.roster_item(&key, &c)).await.ok().flatten()
    }

    /// Store an item, refresh the cache, and push it to interested resources unless hidden.
    /// The caller holds `user`'s roster lock and read the item under it.
    pub(crate) async fn save_item(&self, user: &BareJid, item: RosterItem) {
        let key = user.to_string();
        let stored = item.clone();
        let ver = match self.blocking(move |s| s.put_roster_item(&key, &stored)).await {
            Ok(v) => v,
            Err(e) => return tracing::warn!(error = %e, "roster write failed"),
        };
        let key = user.to_string();
        let push = (!item.hidden).then(|| item.to_element());
        let (contact, wants) = (item.jid.clone(), crate::wants_presence(&item));
        let online = match self.shard(&key).get_mut(&key) {
            Some(a) => {
                a.roster.insert(item.jid.clone(), item);
                true
            }
            None => false,
        };
        if online {
            self.set_interest(&key, &contact, wants);
        }
        if let Some(push) = push {
            self.roster_push(user, ver, push);
        }
    }

    /// Remove an item; push the removal if the user could see it. The caller holds `user`'s
    /// roster lock.
    pub(crate) async fn delete_item(&self, user: &BareJid, contact: &BareJid, visible: bool) {
        let key = user.to_string();
        let c = contact.to_string();
        let ver = match self.blocking(move |s| s.remove_roster_item(&key, &c)).await {
            Ok(v) => v,
            Err(e) => return tracing::warn!(error = %e, "roster write failed"),
        };
        let key = user.to_string();
        let online = match self.shard(&key).get_mut(&key) {
            Some(a) => {
                a.roster.remove(&contact.to_string());
                true
            }
            None => false,
        };
        if online {
            self.set_interest(&key, &contact.to_string(), false);
        }
        if let (Some(ver), true) = (ver, visible) {
            self.roster_push(user, ver, RosterItem::removed_element(&contact.to_string()));
        }
    }

    /// §2.1.6: a roster push to every resource that requested the roster.
    fn roster_push(&self, user: &BareJid, ver: u64, item: Element) {
        let key = user.to_string();
        let targets: Vec<(String, _)> = {
            let shard = self.shard(&key);
            let Some(a) = shard.get(&key) else { return };
            a.sessions
                .iter()
                .filter(|s| s.roster_interested)
                .map(|s| (format!("{key}/{}", s.resource), s.sink.clone()))
                .collect()
        };
        for (jid, sink) in targets {
            let push = Element::new("iq", CONTENT_NS)
                .with_attr("type", "set")
                .with_attr("id", format!("push{}", PUSH_ID.fetch_add(1, Ordering::Relaxed)))
                .with_attr("from", key.clone())
                .with_attr("to", jid)
                .with_child(
                    Element::new("query", ns::ROSTER)
                        .with_attr("ver", ver.to_string())
                        .with_child(item.clone()),
                );
            sink.deliver(ToClient::Stanza(push));
        }
    }

    /// Apply a changed state to an item: a hidden record that has returned to no state at all is
    /// deleted, anything else is saved.
    async fn apply_state(&self, user: &BareJid, mut item: RosterItem, existed: bool, state: SubState) {
        item.state = state;
        if item.hidden && state == SubState::default() {
            if existed {
                self.delete_item(user, &BareJid::new(&item.jid).unwrap_or_else(|_| user.clone()), false)
                    .await;
            }
        } else {
            self.save_item(user, item).await;
        }
    }

    /// The user sends subscribe/subscribed/unsubscribe/unsubscribed to `contact` (§3.x.2).
    pub(crate) async fn outbound_subscription(&self, from: &FullJid, contact: BareJid, kind: SubKind) {
        let user = from.to_bare();
        if contact == user {
            return;
        }
        let outcome = {
            let _roster = self.roster_lock(&user.to_string()).await;
            let existing = self.load_item(&user, &contact).await;
            let existed = existing.is_some();
            let mut item = existing.unwrap_or_else(|| RosterItem::new(&contact));
            let outcome = subscription::outbound(item.state, kind);
            if outcome.changed {
                if matches!(kind, SubKind::Subscribe | SubKind::Subscribed) {
                    item.hidden = false;
                }
                self.apply_state(&user, item, existed, outcome.state).await;
            }
            outcome
        };
        if outcome.forward {
            let p = Element::new("presence", CONTENT_NS)
                .with_attr("type", kind.as_str())
                .with_attr("from", user.to_string())
                .with_attr("to", contact.to_string());
            self.route(Jid::from(contact.clone()), p).await;
            match kind {
                // §3.1.5: after approving, the contact's server sends the user's current presence.
                SubKind::Subscribed => self.send_presence_to_contact(&user, &contact, false).await,
                // §3.2.2: after cancelling, unavailable from every available resource.
                SubKind::Unsubscribed => self.send_presence_to_contact(&user, &contact, true).await,
                _ => {}
            }
        }
    }

    /// A subscription stanza from `contact` arrives for local `user` (§3.x.3).
    pub(crate) async fn inbound_subscription(
        &self,
        user: &BareJid,
        contact: &BareJid,
        kind: SubKind,
        mut stanza: Element,
    ) {
        if !self.account_exists(user).await {
            if kind == SubKind::Subscribe {
                // §3.1.3: no such user: answer unsubscribed.
                let p = Element::new("presence", CONTENT_NS)
                    .with_attr("type", "unsubscribed")
                    .with_attr("from", user.to_string())
                    .with_attr("to", contact.to_string());
                self.route(Jid::from(contact.clone()), p).await;
            }
            return;
        }
        let outcome = {
            let _roster = self.roster_lock(&user.to_string()).await;
            let existing = self.load_item(user, contact).await;
            let existed = existing.is_some();
            let mut item = existing.unwrap_or_else(|| {
                let mut i = RosterItem::new(contact);
                i.hidden = true;
                i
            });
            let outcome = subscription::inbound(item.state, kind);
            if outcome.changed {
                if kind == SubKind::Subscribe && outcome.auto_reply_subscribed {
                    item.hidden = false;
                }
                self.apply_state(user, item, existed, outcome.state).await;
            }
            outcome
        };
        if outcome.auto_reply_subscribed {
            let p = Element::new("presence", CONTENT_NS)
                .with_attr("type", "subscribed")
                .with_attr("from", user.to_string())
                .with_attr("to", contact.to_string());
            self.route(Jid::from(contact.clone()), p).await;
            self.send_presence_to_contact(user, contact, false).await;
        }
        if outcome.forward {
            // Subscription stanzas travel between bare JIDs (§3.1.2).
            stanza.set_attr("from", contact.to_string());
            stanza.set_attr("to", user.to_string());
            self.deliver_presence(&Jid::from(user.clone()), stanza);
        }
        if kind == SubKind::Unsubscribe && outcome.changed {
            // §3.3.3: the contact (here: user) stops sharing presence.
            self.send_presence_to_contact(user, contact, true).await;
        }
    }
}
