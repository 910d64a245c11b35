//! Delivery of stanzas addressed to local accounts (RFC 6121 §8.5), offline storage
//! (XEP-0160, with XEP-0203 delay stamps), and the fate of stanzas a session's queue still held
//! when its stream ended ([`undelivered_fate`], [`Router::reroute_undelivered`]).

use crate::{Home, Router, SessionId, Target, CONTENT_NS};
use starling_xml::Element;
use starling_xmpp::delay::delay_element;
use starling_xmpp::ns;
use starling_xmpp::session::{parse_stored_stanza, ToClient};
use starling_xmpp::stanza::{self, StanzaKind};
use starling_xmpp::{BareJid, FullJid, Jid, StanzaError};
use std::time::SystemTime;

/// Which of an account's resources a message to its bare JID goes to (RFC 6121 §8.5.2.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BareSelection {
    /// The available resources with the highest non-negative priority (chat, normal, error).
    HighestPriority,
    /// Every available resource with non-negative priority (headline).
    AllNonNegative,
}

/// Pure selection over (priority if available) per resource. Returns the indices chosen.
pub fn select_resources(priorities: &[Option<i8>], how: BareSelection) -> Vec<usize> {
    let eligible = priorities.iter().enumerate().filter_map(|(i, p)| p.filter(|p| *p >= 0).map(|p| (i, p)));
    match how {
        BareSelection::AllNonNegative => eligible.map(|(i, _)| i).collect(),
        BareSelection::HighestPriority => {
            let all: Vec<(usize, i8)> = eligible.collect();
            let Some(max) = all.iter().map(|(_, p)| *p).max() else { return Vec::new() };
            all.into_iter().filter(|(_, p)| *p == max).map(|(i, _)| i).collect()
        }
    }
}

/// Whether a message for an account without an available resource is kept offline
/// (XEP-0160 §3; RFC 6121 §8.5.2.2.1 lets the server store, bounce or silently ignore
/// chat and normal messages). Only chat and normal messages with a body are kept, as ejabberd and
/// Prosody do: a bodyless one (a chat state, a receipt) means nothing once read hours later.
pub fn offline_storable(message: &Element) -> bool {
    matches!(message.attr("type").unwrap_or("normal"), "chat" | "normal")
        && message.elements().any(|c| c.name == "body" && (c.ns == message.ns || c.ns == ns::CLIENT))
}

/// What becomes of a stanza that was queued to a session of `account` but never written to its
/// stream, because the stream ended first (clean close, lost connection, conflict, write timeout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undelivered {
    /// Deliver it again to this address under the usual rules (RFC 6121 §8.5): the session is
    /// gone, so a message to its full JID is handled as for a resource that does not exist
    /// (§8.5.3.2.1: another resource of the account, else offline storage, else an error).
    Reroute(Jid),
    /// Answer the sender with this error: an iq request to a resource that went away
    /// (§8.5.3.2.1 prescribes `service-unavailable`, which also does not tell the requester
    /// that the resource just existed).
    Bounce(StanzaError),
    /// Nothing more to do: presence (a later probe or initial presence re-sends what matters,
    /// and pending subscription requests live in the roster, §3.1.3), iq results and errors,
    /// server-generated roster pushes, and anything not addressed to the account.
    Drop,
}

/// The decision for one undelivered stanza (pure; see [`Undelivered`]).
pub fn undelivered_fate(stanza: &Element, account: &BareJid) -> Undelivered {
    let to = stanza.attr("to").and_then(|t| Jid::new(t).ok());
    match stanza::kind_of(stanza) {
        Some(StanzaKind::Message) => match to {
            Some(to) if to.to_bare() == *account => Undelivered::Reroute(to),
            _ => Undelivered::Drop,
        },
        Some(StanzaKind::Iq) if matches!(stanza.attr("type"), Some("get" | "set")) => {
            // A roster push comes from the account's own bare JID: nobody waits for its answer.
            let from_server = match stanza.attr("from").map(Jid::new) {
                None => true,
                Some(Ok(from)) => from.is_bare() && from.to_bare() == *account,
                Some(Err(_)) => true,
            };
            if from_server {
                Undelivered::Drop
            } else {
                Undelivered::Bounce(StanzaError::ServiceUnavailable)
            }
        }
        _ => Undelivered::Drop,
    }
}

/// Give `stanza` to every target but `exclude`; whether any took it.
fn deliver_to(targets: &[Target], stanza: &Element, exclude: Option<SessionId>) -> bool {
    let mut delivered = false;
    for t in targets.iter().filter(|t| Some(t.id) != exclude) {
        delivered |= t.sink.deliver(ToClient::Stanza(stanza.clone()));
    }
    delivered
}

impl Router {
    /// Stanzas that were queued to a session of `account` and never written, because its
    /// stream ended: each gets its [`undelivered_fate`]. Serve and cluster both end here (the
    /// edge hands the queue back with the unbind, or returns stanzas that reached it after).
    ///
    /// `exclude` is the session they were queued to when it may still be bound here (a
    /// cluster edge returning a stanza its connection could not take): re-delivery skips it,
    /// as direct delivery skips a session whose sink refuses a stanza.
    pub async fn reroute_undelivered(
        &self,
        account: &BareJid,
        exclude: Option<SessionId>,
        items: Vec<ToClient>,
    ) {
        let mut rerouted = 0usize;
        for item in items {
            let stanza = match item {
                ToClient::Stanza(e) => e,
                ToClient::Raw(bytes) => match parse_stored_stanza(&bytes) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(error = %e, "unreadable undelivered stanza dropped");
                        continue;
                    }
                },
                ToClient::Close(_) => continue,
            };
            match undelivered_fate(&stanza, account) {
                Undelivered::Reroute(to) => {
                    rerouted += 1;
                    match self.peers.home_of(&account.to_string()) {
                        Home::Local => self.deliver_message(to, stanza, exclude).await,
                        // The account moved meanwhile (cluster): its new owner decides.
                        Home::Remote(_) | Home::Unowned => self.route(to, stanza).await,
                    }
                }
                Undelivered::Bounce(error) => self.bounce(&stanza, error),
                Undelivered::Drop => {}
            }
        }
        if rerouted > 0 {
            tracing::debug!(%account, rerouted, "messages of an ended session delivered again");
        }
    }

    /// Inbound processing for a local JID with a localpart.
    pub(crate) async fn deliver_local(&self, to: Jid, stanza: Element) {
        match stanza::kind_of(&stanza) {
            Some(StanzaKind::Message) => self.deliver_message(to, stanza, None).await,
            Some(StanzaKind::Presence) => self.inbound_presence(to, stanza).await,
            Some(StanzaKind::Iq) => self.deliver_iq(to, stanza).await,
            None => {}
        }
    }

    /// Available sessions of `bare` picked by `how`.
    pub(crate) fn bare_targets(&self, bare: &BareJid, how: BareSelection) -> Vec<Target> {
        let key = bare.to_string();
        let shard = self.shard(&key);
        let Some(account) = shard.get(&key) else { return Vec::new() };
        let prios: Vec<Option<i8>> =
            account.sessions.iter().map(|s| s.available.as_ref().map(|a| a.priority)).collect();
        select_resources(&prios, how).into_iter().map(|i| account.sessions[i].target()).collect()
    }

    /// RFC 6121 §8.5.2 (bare JID) and §8.5.3 (full JID) for messages. The session `exclude`
    /// (if any) counts as unable to take this stanza.
    async fn deliver_message(&self, to: Jid, stanza: Element, exclude: Option<SessionId>) {
        let kind = stanza.attr("type").unwrap_or("normal").to_owned();
        if let Ok(full) = to.try_as_full() {
            if let Some(t) = self.session_target(full).filter(|t| Some(t.id) != exclude) {
                // §8.5.3.1: a connected resource gets it, available or not.
                if t.sink.deliver(ToClient::Stanza(stanza.clone())) {
                    return;
                }
            }
            // §8.5.3.2.1: no such resource.
            match kind.as_str() {
                "groupchat" => return self.bounce(&stanza, StanzaError::ServiceUnavailable),
                "error" => return,
                _ => {}
            }
        }
        let bare = to.to_bare();
        if kind == "groupchat" {
            // §8.5.2.1.1: groupchat to a bare JID is an error.
            return self.bounce(&stanza, StanzaError::ServiceUnavailable);
        }
        let how =
            if kind == "headline" { BareSelection::AllNonNegative } else { BareSelection::HighestPriority };
        let delivered = deliver_to(&self.bare_targets(&bare, how), &stanza, exclude);
        if delivered {
            return;
        }
        // §8.5.2.2: no available resource.
        match kind.as_str() {
            "chat" | "normal" => {
                if !self.account_exists(&bare).await {
                    return self.bounce(&stanza, StanzaError::ServiceUnavailable);
                }
                if offline_storable(&stanza) {
                    self.store_offline(&bare, stanza, exclude).await;
                }
            }
            "headline" | "error" => {}
            _ => self.bounce(&stanza, StanzaError::ServiceUnavailable),
        }
    }

    /// Keep a message for an offline account (XEP-0160), stamped with XEP-0203 delay.
    async fn store_offline(&self, bare: &BareJid, mut stanza: Element, exclude: Option<SessionId>) {
        let _offline = self.offline_lock(&bare.to_string()).await;
        // A resource that became available since the message chose storage has already had its
        // flush (or is waiting for this lock): it gets the message now.
        if deliver_to(&self.bare_targets(bare, BareSelection::HighestPriority), &stanza, exclude) {
            return;
        }
        stanza.ns = CONTENT_NS.into();
        if stanza.get_child("delay", starling_xmpp::ns::DELAY).is_none() {
            stanza.append_child(delay_element(bare.domain().as_str(), SystemTime::now()));
        }
        let bytes = stanza.to_bytes();
        let user = bare.to_string();
        let max = self.cfg.offline_max;
        match self.blocking(move |s| s.push_offline(&user, &bytes, max)).await {
            Ok(true) => starling_telemetry::metrics().offline_stored.inc(),
            Ok(false) => self.bounce(&stanza, StanzaError::ServiceUnavailable),
            Err(e) => {
                tracing::warn!(error = %e, "offline store failed");
                self.bounce(&stanza, StanzaError::InternalServerError)
            }
        }
    }

    /// Hand stored offline messages to a resource that just became available with a
    /// non-negative priority (XEP-0160 §4: on initial presence).
    pub(crate) async fn flush_offline(&self, full: &FullJid) {
        let user = starling_xmpp::bare_part(full.as_str()).to_owned();
        let _offline = self.offline_lock(&user).await;
        // Most logins find nothing stored: a read says so without taking the store's write lock
        // (and, where reads are local, without leaving this thread). The offline lock keeps
        // anything from being stored between the two calls.
        let key = user.clone();
        match self.read(move |s| s.count_offline(&key)).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => return tracing::warn!(error = %e, "reading offline messages failed"),
        }
        let stored = match self.blocking(move |s| s.take_offline(&user)).await {
            Ok(v) => v,
            Err(e) => return tracing::warn!(error = %e, "reading offline messages failed"),
        };
        if stored.is_empty() {
            return;
        }
        let Some(target) = self.session_target(full) else {
            // The session went away meanwhile: keep the messages.
            let user = starling_xmpp::bare_part(full.as_str()).to_owned();
            let max = usize::MAX;
            let _ = self
                .blocking(move |s| {
                    for b in &stored {
                        s.push_offline(&user, b, max)?;
                    }
                    Ok(())
                })
                .await;
            return;
        };
        let m = starling_telemetry::metrics();
        m.offline_delivered.inc_by(stored.len() as u64);
        if !stored.is_empty() {
            m.offline_queue.observe(stored.len() as f64);
        }
        for bytes in stored {
            match parse_stored_stanza(&bytes) {
                Ok(mut m) => {
                    m.set_attr("to", full.to_string());
                    target.sink.deliver(ToClient::Stanza(m));
                }
                Err(e) => tracing::warn!(error = %e, "unreadable offline message dropped"),
            }
        }
    }

    /// RFC 6121 §8.5.2.1.3 / §8.5.3: iq to a local account.
    async fn deliver_iq(&self, to: Jid, stanza: Element) {
        let is_request = matches!(stanza.attr("type"), Some("get") | Some("set"));
        match to.try_as_full() {
            Ok(full) => {
                if let Some(t) = self.session_target(full) {
                    if t.sink.deliver(ToClient::Stanza(stanza.clone())) {
                        return;
                    }
                }
                if is_request {
                    self.bounce(&stanza, StanzaError::ServiceUnavailable);
                }
            }
            Err(bare) => {
                // The server answers on behalf of the account (§8.5.2.1.3).
                if is_request {
                    self.iq_to_other_account(bare, stanza).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_priority_wins_and_ties_all_get_it() {
        let p = [Some(1), Some(5), None, Some(5), Some(-1)];
        assert_eq!(select_resources(&p, BareSelection::HighestPriority), vec![1, 3]);
        assert_eq!(select_resources(&p, BareSelection::AllNonNegative), vec![0, 1, 3]);
    }

    fn msg(typ: &str, to: &str, body: bool) -> Element {
        let mut m = Element::new("message", ns::CLIENT)
            .with_attr("type", typ)
            .with_attr("from", "bob@localhost/x")
            .with_attr("to", to);
        if body {
            m.append_child(Element::new("body", ns::CLIENT).with_text("hi"));
        }
        m
    }

    fn iq(typ: &str, from: &str) -> Element {
        Element::new("iq", ns::CLIENT)
            .with_attr("type", typ)
            .with_attr("id", "q1")
            .with_attr("from", from)
            .with_attr("to", "alice@localhost/phone")
            .with_child(Element::new("ping", "urn:xmpp:ping"))
    }

    #[test]
    fn only_chat_and_normal_messages_with_a_body_go_offline() {
        assert!(offline_storable(&msg("chat", "alice@localhost", true)));
        assert!(offline_storable(&msg("normal", "alice@localhost", true)));
        let untyped =
            Element::new("message", ns::CLIENT).with_child(Element::new("body", ns::CLIENT).with_text("hi"));
        assert!(offline_storable(&untyped), "no type means normal");
        assert!(!offline_storable(&msg("chat", "alice@localhost", false)), "a chat state alone");
        for typ in ["groupchat", "headline", "error"] {
            assert!(!offline_storable(&msg(typ, "alice@localhost", true)), "{typ}");
        }
    }

    #[test]
    fn undelivered_messages_to_the_account_are_routed_again() {
        let alice = BareJid::new("alice@localhost").unwrap();
        for to in ["alice@localhost", "alice@localhost/phone"] {
            for typ in ["chat", "normal", "headline", "groupchat", "error"] {
                // Which of these end offline, at another resource or nowhere is §8.5's business.
                assert_eq!(
                    undelivered_fate(&msg(typ, to, true), &alice),
                    Undelivered::Reroute(Jid::new(to).unwrap()),
                    "{typ} to {to}"
                );
            }
        }
        assert_eq!(undelivered_fate(&msg("chat", "carol@localhost", true), &alice), Undelivered::Drop);
        let no_to = Element::new("message", ns::CLIENT).with_attr("type", "chat");
        assert_eq!(undelivered_fate(&no_to, &alice), Undelivered::Drop);
    }

    #[test]
    fn undelivered_iq_requests_are_answered_and_the_rest_dropped() {
        let alice = BareJid::new("alice@localhost").unwrap();
        for typ in ["get", "set"] {
            assert_eq!(
                undelivered_fate(&iq(typ, "bob@localhost/x"), &alice),
                Undelivered::Bounce(StanzaError::ServiceUnavailable)
            );
        }
        for typ in ["result", "error"] {
            assert_eq!(undelivered_fate(&iq(typ, "bob@localhost/x"), &alice), Undelivered::Drop);
        }
        // A roster push from the server on the account's behalf: no one to answer.
        assert_eq!(undelivered_fate(&iq("set", "alice@localhost"), &alice), Undelivered::Drop);
        let presence = Element::new("presence", ns::CLIENT).with_attr("from", "bob@localhost/x");
        assert_eq!(undelivered_fate(&presence, &alice), Undelivered::Drop);
        let subscribe = presence.with_attr("type", "subscribe").with_attr("to", "alice@localhost");
        assert_eq!(undelivered_fate(&subscribe, &alice), Undelivered::Drop);
    }

    #[test]
    fn negative_and_unavailable_resources_get_nothing() {
        let p = [Some(-1), None];
        assert!(select_resources(&p, BareSelection::HighestPriority).is_empty());
        assert!(select_resources(&p, BareSelection::AllNonNegative).is_empty());
    }
}
