//! Delivery of stanzas addressed to local accounts (RFC 6121 §8.5) and offline storage
//! (XEP-0160, with XEP-0203 delay stamps).

use crate::{Router, Target, CONTENT_NS};
use starling_xml::Element;
use starling_xmpp::delay::delay_element;
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

impl Router {
    /// Inbound processing for a local JID with a localpart.
    pub(crate) async fn deliver_local(&self, to: Jid, stanza: Element) {
        match stanza::kind_of(&stanza) {
            Some(StanzaKind::Message) => self.deliver_message(to, stanza).await,
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
        select_resources(&prios, how)
            .into_iter()
            .map(|i| {
                let s = &account.sessions[i];
                Target { jid: format!("{key}/{}", s.resource), sink: s.sink.clone() }
            })
            .collect()
    }

    /// RFC 6121 §8.5.2 (bare JID) and §8.5.3 (full JID) for messages.
    async fn deliver_message(&self, to: Jid, stanza: Element) {
        let kind = stanza.attr("type").unwrap_or("normal").to_owned();
        if let Ok(full) = to.try_as_full() {
            if let Some(t) = self.session_target(full) {
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
        let targets = self.bare_targets(&bare, how);
        let mut delivered = false;
        for t in &targets {
            delivered |= t.sink.deliver(ToClient::Stanza(stanza.clone()));
        }
        if delivered {
            return;
        }
        // §8.5.2.2: no available resource.
        match kind.as_str() {
            "chat" | "normal" => {
                if !self.account_exists(&bare).await {
                    return self.bounce(&stanza, StanzaError::ServiceUnavailable);
                }
                self.store_offline(&bare, stanza).await;
            }
            "headline" | "error" => {}
            _ => self.bounce(&stanza, StanzaError::ServiceUnavailable),
        }
    }

    /// Keep a message for an offline account (XEP-0160), stamped with XEP-0203 delay.
    async fn store_offline(&self, bare: &BareJid, mut stanza: Element) {
        stanza.ns = CONTENT_NS.to_owned();
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
        let user = full.to_bare().to_string();
        let stored = match self.blocking(move |s| s.take_offline(&user)).await {
            Ok(v) => v,
            Err(e) => return tracing::warn!(error = %e, "reading offline messages failed"),
        };
        if stored.is_empty() {
            return;
        }
        let Some(target) = self.session_target(full) else {
            // The session went away meanwhile: keep the messages.
            let user = full.to_bare().to_string();
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

    #[test]
    fn negative_and_unavailable_resources_get_nothing() {
        let p = [Some(-1), None];
        assert!(select_resources(&p, BareSelection::HighestPriority).is_empty());
        assert!(select_resources(&p, BareSelection::AllNonNegative).is_empty());
    }
}
