//! Presence (RFC 6121 §4): initial and subsequent broadcast, unavailable broadcast, probes
//! (explicit and the implicit probe of initial presence), directed presence.

use crate::{Availability, Home, Router, CONTENT_NS};
use starling_xml::{Element, Template};
use starling_xmpp::session::ToClient;
use starling_xmpp::subscription::SubKind;
use starling_xmpp::{BareJid, FullJid, Jid, StanzaError};
use std::collections::HashSet;

/// RFC 6121 §4.7.2.3: priority is an integer -128..=127; absent means 0.
/// An out-of-range or non-numeric value is a bad request.
pub fn parse_priority(presence: &Element) -> Result<i8, StanzaError> {
    match presence.get_child("priority", &presence.ns) {
        None => Ok(0),
        Some(p) => p.text().trim().parse::<i8>().map_err(|_| StanzaError::BadRequest),
    }
}

/// What a presence stanza from a client asks the server to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceAction {
    /// Broadcast availability (or unavailability) to subscribers (§4.2, §4.4, §4.5).
    Broadcast {
        /// type='unavailable'
        unavailable: bool,
    },
    /// Directed presence to one entity (§4.6).
    Directed {
        /// type='unavailable'
        unavailable: bool,
    },
    /// Subscription management (§3).
    Subscription(SubKind),
    /// Explicit probe (§4.3).
    Probe,
    /// A presence error travelling back to its sender.
    Error,
    /// Anything else: answered with bad-request.
    Invalid,
}

/// Classify a client's presence stanza by 'type' and whether it has a 'to' (pure).
pub fn classify(type_attr: Option<&str>, has_to: bool) -> PresenceAction {
    match (type_attr, has_to) {
        (None, false) => PresenceAction::Broadcast { unavailable: false },
        (Some("unavailable"), false) => PresenceAction::Broadcast { unavailable: true },
        (None, true) => PresenceAction::Directed { unavailable: false },
        (Some("unavailable"), true) => PresenceAction::Directed { unavailable: true },
        (Some("probe"), true) => PresenceAction::Probe,
        (Some("error"), _) => PresenceAction::Error,
        (Some(t), true) => {
            SubKind::parse(t).map(PresenceAction::Subscription).unwrap_or(PresenceAction::Invalid)
        }
        _ => PresenceAction::Invalid,
    }
}

impl Router {
    /// A presence stanza from a local client session.
    pub(crate) async fn outbound_presence(&self, from: &FullJid, to: Option<Jid>, mut stanza: Element) {
        match classify(stanza.attr("type"), to.is_some()) {
            PresenceAction::Broadcast { unavailable } => {
                stanza.remove_attr("to");
                if unavailable {
                    let directed = self.mark_unavailable(from);
                    if let Some(directed) = directed {
                        self.broadcast_unavailable(from, directed, Some(stanza)).await;
                    }
                } else {
                    self.broadcast_available(from, stanza).await;
                }
            }
            PresenceAction::Directed { unavailable } => {
                let Some(to) = to else { return };
                self.note_directed(from, &to, unavailable);
                stanza.set_attr("to", to.to_string());
                self.route(to, stanza).await;
            }
            PresenceAction::Subscription(kind) => {
                let Some(to) = to else { return };
                self.outbound_subscription(from, to.to_bare(), kind).await;
            }
            PresenceAction::Probe => {
                let Some(to) = to else { return };
                let probe = Element::new("presence", CONTENT_NS)
                    .with_attr("type", "probe")
                    .with_attr("from", starling_xmpp::bare_part(from.as_str()).to_owned())
                    .with_attr("to", starling_xmpp::bare_part(to.as_str()).to_owned());
                self.route(Jid::from(to.to_bare()), probe).await;
            }
            PresenceAction::Error => {
                if let Some(to) = to {
                    self.route(to, stanza).await;
                }
            }
            PresenceAction::Invalid => self.bounce(&stanza, StanzaError::BadRequest),
        }
    }

    /// Inbound presence for a local account (§4.2.3, §4.3.2, §4.6.3, §3.x for subscriptions).
    pub(crate) async fn inbound_presence(&self, to: Jid, stanza: Element) {
        let from = match stanza.attr("from").map(Jid::new) {
            Some(Ok(j)) => j,
            _ => return,
        };
        match stanza.attr("type") {
            None | Some("unavailable") | Some("error") => self.deliver_presence(&to, stanza),
            Some("probe") => self.answer_probe(&to.to_bare(), &from, true).await,
            Some(t) => {
                if let Some(kind) = SubKind::parse(t) {
                    self.inbound_subscription(&to.to_bare(), &from.to_bare(), kind, stanza).await;
                }
            }
        }
    }

    /// Presence to a full JID goes to that session; to a bare JID, to every available resource
    /// (§8.5.2.1.2, §8.5.3.1).
    pub(crate) fn deliver_presence(&self, to: &Jid, stanza: Element) {
        match to.try_as_full() {
            Ok(full) => {
                if let Some(t) = self.session_target(full) {
                    t.sink.deliver(ToClient::Stanza(stanza));
                }
            }
            // Every available resource, as the broadcasts do: serialized once, copied per
            // resource (§8.5.2.1.1: presence to a bare JID goes to all available resources).
            Err(bare) => self.deliver_template(bare.as_str(), &stanza.template("to"), Some(to.as_str())),
        }
    }

    /// The current presences of `bare`'s available resources, each with 'from' set.
    pub(crate) fn current_presences(&self, bare: &BareJid) -> Vec<Element> {
        let key = bare.to_string();
        let shard = self.shard(&key);
        let Some(account) = shard.get(&key) else { return Vec::new() };
        account.sessions.iter().filter_map(|s| s.available.as_ref().map(|a| a.presence.clone())).collect()
    }

    /// Initial or subsequent available presence (§4.2.2, §4.4.2).
    async fn broadcast_available(&self, from: &FullJid, mut presence: Element) {
        let priority = match parse_priority(&presence) {
            Ok(p) => p,
            Err(e) => return self.bounce(&presence, e),
        };
        presence.set_attr("from", from.to_string());
        let bare = from.to_bare();
        let key = bare.to_string();
        let (initial, subscribers, watched, pending_in) = {
            let mut shard = self.shard(&key);
            let Some(account) = shard.get_mut(&key) else { return };
            let Some(session) = account.sessions.iter_mut().find(|s| s.resource == from.resource().as_str())
            else {
                return;
            };
            let initial = session.available.is_none();
            session.available = Some(Availability { priority, presence: presence.clone() });
            let visible = account.roster.values().filter(|i| !i.hidden);
            let subscribers: Vec<String> =
                visible.clone().filter(|i| i.state.subscription.has_from()).map(|i| i.jid.clone()).collect();
            let watched: Vec<String> =
                visible.filter(|i| i.state.subscription.has_to()).map(|i| i.jid.clone()).collect();
            let pending_in: Vec<String> =
                account.roster.values().filter(|i| i.state.pending_in).map(|i| i.jid.clone()).collect();
            (initial, subscribers, watched, pending_in)
        };
        // Serialized once; every copy below differs only in its 'to'.
        let template = presence.template("to");
        // §4.2.2: to the user's own available resources, including the sender.
        self.deliver_template(&key, &template, None);
        // §4.2.2 / §4.4.2: to every contact with a subscription from the user; those homed
        // on other routers get it through the bus, published once.
        let local: Vec<String> = subscribers.into_iter().filter(|c| !self.bus_delivers(c)).collect();
        self.presence_to_contacts(&presence, &template, local).await;
        if self.bus.distributes() {
            self.bus.publish(from, &presence);
        }
        if !initial {
            return;
        }
        // §4.2.2: the implicit probe of every contact the user is subscribed to: answered here
        // for local contacts, from the bus's last presences for the others (one read).
        let (remote, local): (Vec<String>, Vec<String>) =
            watched.into_iter().partition(|c| self.bus_delivers(c));
        for contact in local {
            if let Ok(cj) = BareJid::new(&contact) {
                self.answer_probe(&cj, &Jid::from(from.clone()), false).await;
            }
        }
        if !remote.is_empty() {
            let presences = self.bus.current(remote.clone()).await;
            if let Some(t) = self.session_target(from) {
                for mut p in presences {
                    let known = p
                        .attr("from")
                        .and_then(|f| FullJid::new(f).ok())
                        .is_some_and(|f| remote.iter().any(|r| r == starling_xmpp::bare_part(f.as_str())));
                    if known {
                        p.set_attr("to", from.to_string());
                        t.sink.deliver(ToClient::Stanza(p));
                    }
                }
            }
        }
        // §3.1.3: subscription requests that arrived while the user was offline.
        if let Some(t) = self.session_target(from) {
            for contact in pending_in {
                let req = Element::new("presence", CONTENT_NS)
                    .with_attr("type", "subscribe")
                    .with_attr("from", contact)
                    .with_attr("to", bare.to_string());
                t.sink.deliver(ToClient::Stanza(req));
            }
        }
        // XEP-0160: offline messages go to the first resource with non-negative priority.
        if priority >= 0 {
            self.flush_offline(from).await;
        }
    }

    /// Mark a session unavailable; returns its directed-presence list if it was available.
    fn mark_unavailable(&self, from: &FullJid) -> Option<HashSet<String>> {
        let key = starling_xmpp::bare_part(from.as_str()).to_owned();
        let mut shard = self.shard(&key);
        let account = shard.get_mut(&key)?;
        let session = account.sessions.iter_mut().find(|s| s.resource == from.resource().as_str())?;
        session.available.take()?;
        Some(std::mem::take(&mut session.directed))
    }

    /// Unavailable presence from `from` to its subscribers, own resources and directed-presence
    /// recipients (§4.5.2). `stanza` is the client's own unavailable presence (status kept), or
    /// None when the server generates it (disconnect, §4.5.3).
    pub(crate) async fn broadcast_unavailable(
        &self,
        from: &FullJid,
        directed: HashSet<String>,
        stanza: Option<Element>,
    ) {
        let mut presence = stanza.unwrap_or_else(|| Element::new("presence", CONTENT_NS));
        presence.set_attr("type", "unavailable");
        presence.set_attr("from", from.to_string());
        presence.remove_attr("to");
        let bare = from.to_bare();
        let mut recipients: Vec<String> =
            self.subscribers_of(&bare).await.into_iter().filter(|c| !self.bus_delivers(c)).collect();
        for d in directed {
            if !recipients.contains(&d) {
                recipients.push(d);
            }
        }
        if self.bus.distributes() {
            self.bus.publish(from, &presence);
        }
        let template = presence.template("to");
        self.deliver_template(&bare.to_string(), &template, None);
        self.presence_to_contacts(&presence, &template, recipients).await;
    }

    /// A broadcast presence ('from' stamped, no 'to', serialized once as `template`) to each
    /// of `contacts`. Available resources of local accounts get the template's bytes addressed
    /// to the contact's bare JID, which is what routing it would deliver (§4.2.3 inbound
    /// processing of a bare-JID presence) without a copy of the tree per contact; anything else
    /// (a full JID of directed presence, a component, an account homed on another router, a
    /// malformed JID) is routed as a stanza.
    async fn presence_to_contacts(&self, presence: &Element, template: &Template, contacts: Vec<String>) {
        for contact in contacts {
            let local_account = !contact.contains('/') && self.served_home(&contact) == Some(Home::Local);
            if local_account {
                self.deliver_template(&contact, template, Some(&contact));
            } else if let Ok(to) = Jid::new(&contact) {
                let mut p = presence.clone();
                p.set_attr("to", contact);
                self.route(to, p).await;
            }
        }
    }

    /// `template` to every available resource of the local account `bare`, addressed `to`,
    /// or each to its own full JID when `to` is None.
    pub(crate) fn deliver_template(&self, bare: &str, template: &Template, to: Option<&str>) {
        let shard = self.shard(bare);
        let Some(account) = shard.get(bare) else { return };
        // The sinks only queue (they never call back into the router), so the shard stays
        // locked for the loop rather than copying the targets out.
        for s in account.sessions.iter().filter(|s| s.available.is_some()) {
            let bytes = match to {
                Some(to) => template.with(to),
                None => template.with_parts(&[bare, "/", &s.resource]),
            };
            s.sink.deliver(ToClient::Raw(bytes));
        }
    }

    /// Contacts with a subscription from `bare` (they see its presence), from the cached roster
    /// when online, else from the store.
    pub(crate) async fn subscribers_of(&self, bare: &BareJid) -> Vec<String> {
        let key = bare.to_string();
        {
            let shard = self.shard(&key);
            if let Some(account) = shard.get(&key) {
                return account
                    .roster
                    .values()
                    .filter(|i| !i.hidden && i.state.subscription.has_from())
                    .map(|i| i.jid.clone())
                    .collect();
            }
        }
        match self.read(move |s| s.roster(&key)).await {
            Ok((_, items)) => items
                .into_iter()
                .filter(|i| !i.hidden && i.state.subscription.has_from())
                .map(|i| i.jid)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Keep the session's directed-presence list (§4.6.2): entities that got available presence
    /// from it without a subscription, which must get its unavailable presence later.
    fn note_directed(&self, from: &FullJid, to: &Jid, unavailable: bool) {
        let key = starling_xmpp::bare_part(from.as_str()).to_owned();
        let target = to.to_string();
        let mut shard = self.shard(&key);
        let Some(account) = shard.get_mut(&key) else { return };
        let subscribed = account
            .roster
            .get(starling_xmpp::bare_part(to.as_str()))
            .is_some_and(|i| i.state.subscription.has_from());
        let Some(session) = account.sessions.iter_mut().find(|s| s.resource == from.resource().as_str())
        else {
            return;
        };
        if unavailable {
            session.directed.remove(&target);
        } else if session.available.is_some() && !subscribed {
            session.directed.insert(target);
        }
    }

    /// §4.3.2: answer a probe of `target` by `prober`. Only a prober with a subscription to the
    /// target (the target's item has 'from') learns anything. `explicit` probes that find the
    /// target offline get unavailable; unauthorized explicit probes get unsubscribed.
    pub(crate) async fn answer_probe(&self, target: &BareJid, prober: &Jid, explicit: bool) {
        let prober_bare = prober.to_bare();
        if !self.serves(target.domain().as_str()) {
            if let Some(sink) = self.component_sink(target.domain().as_str()) {
                let probe = Element::new("presence", CONTENT_NS)
                    .with_attr("type", "probe")
                    .with_attr("from", prober_bare.to_string())
                    .with_attr("to", target.to_string());
                sink.deliver(ToClient::Stanza(probe));
            }
            return;
        }
        let allowed = if prober_bare == *target {
            true
        } else {
            let key = target.to_string();
            let contact = prober_bare.to_string();
            let cached = {
                let shard = self.shard(&key);
                shard
                    .get(&key)
                    .map(|a| a.roster.get(&contact).is_some_and(|i| i.state.subscription.has_from()))
            };
            match cached {
                Some(v) => v,
                None => matches!(
                    self.read(move |s| s.roster_item(&key, &contact)).await,
                    Ok(Some(i)) if i.state.subscription.has_from()
                ),
            }
        };
        let reply_to = prober.clone();
        if !allowed {
            if explicit {
                let p = Element::new("presence", CONTENT_NS)
                    .with_attr("type", "unsubscribed")
                    .with_attr("from", target.to_string())
                    .with_attr("to", prober_bare.to_string());
                self.deliver_presence(&Jid::from(prober_bare), p);
            }
            return;
        }
        let presences = self.current_presences(target);
        if presences.is_empty() {
            if explicit {
                let p = Element::new("presence", CONTENT_NS)
                    .with_attr("type", "unavailable")
                    .with_attr("from", target.to_string())
                    .with_attr("to", reply_to.to_string());
                self.deliver_presence(&reply_to, p);
            }
            return;
        }
        for mut p in presences {
            p.set_attr("to", reply_to.to_string());
            self.deliver_presence(&reply_to, p);
        }
    }

    /// Send the current presence of every available resource of `user` to `contact` (after
    /// approving a subscription, §3.1.5), or unavailable from each (after cancelling, §3.2.2).
    pub(crate) async fn send_presence_to_contact(
        &self,
        user: &BareJid,
        contact: &BareJid,
        unavailable: bool,
    ) {
        let presences = self.current_presences(user);
        for p in presences {
            let mut p = if unavailable {
                let from = p.attr("from").unwrap_or_default().to_owned();
                Element::new("presence", CONTENT_NS).with_attr("type", "unavailable").with_attr("from", from)
            } else {
                p
            };
            p.set_attr("to", contact.to_string());
            self.route(Jid::from(contact.clone()), p).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_type_and_to() {
        assert_eq!(classify(None, false), PresenceAction::Broadcast { unavailable: false });
        assert_eq!(classify(Some("unavailable"), false), PresenceAction::Broadcast { unavailable: true });
        assert_eq!(classify(None, true), PresenceAction::Directed { unavailable: false });
        assert_eq!(classify(Some("subscribe"), true), PresenceAction::Subscription(SubKind::Subscribe));
        assert_eq!(classify(Some("subscribe"), false), PresenceAction::Invalid);
        assert_eq!(classify(Some("probe"), true), PresenceAction::Probe);
        assert_eq!(classify(Some("bogus"), true), PresenceAction::Invalid);
    }

    #[test]
    fn priority_parsing() {
        let p = Element::new("presence", CONTENT_NS);
        assert_eq!(parse_priority(&p), Ok(0));
        let p = p.with_child(Element::new("priority", CONTENT_NS).with_text(" -5 "));
        assert_eq!(parse_priority(&p), Ok(-5));
        let bad = Element::new("presence", CONTENT_NS)
            .with_child(Element::new("priority", CONTENT_NS).with_text("300"));
        assert_eq!(parse_priority(&bad), Err(StanzaError::BadRequest));
    }
}
