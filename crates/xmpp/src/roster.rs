//! Roster items (RFC 6121 §2.1) and their XML form.

use crate::ns;
use crate::subscription::SubState;
use jid::BareJid;
use starling_xml::Element;

/// One contact in a user's roster.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RosterItem {
    /// The contact (always a bare JID, §2.1.2.2).
    pub jid: String,
    /// Handle the user gave the contact.
    pub name: Option<String>,
    /// Groups, in the order the client sent them, without duplicates.
    pub groups: Vec<String>,
    /// Subscription state including pending flags.
    pub state: SubState,
    /// A record kept only for an unanswered inbound subscription request (RFC 6121 §3.1.3): it is
    /// not part of the roster the user sees until the user acts on it.
    #[serde(default)]
    pub hidden: bool,
}

impl RosterItem {
    /// A new item for `jid` with no subscription.
    pub fn new(jid: &BareJid) -> RosterItem {
        RosterItem {
            jid: jid.to_string(),
            name: None,
            groups: Vec::new(),
            state: SubState::default(),
            hidden: false,
        }
    }

    /// `<item/>` as sent in roster results and pushes (§2.1.2).
    pub fn to_element(&self) -> Element {
        let mut item = Element::new("item", ns::ROSTER).with_attr("jid", self.jid.clone());
        if let Some(name) = &self.name {
            item.set_attr("name", name.clone());
        }
        item.set_attr("subscription", self.state.subscription.as_str());
        if self.state.pending_out {
            item.set_attr("ask", "subscribe");
        }
        if self.state.preapproved {
            item.set_attr("approved", "true");
        }
        for g in &self.groups {
            item.append_child(Element::new("group", ns::ROSTER).with_text(g.clone()));
        }
        item
    }

    /// `<item subscription='remove'/>` as pushed after a removal (§2.5.2).
    pub fn removed_element(jid: &str) -> Element {
        Element::new("item", ns::ROSTER).with_attr("jid", jid).with_attr("subscription", "remove")
    }
}

/// What a client asked for in a roster set (§2.3, §2.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RosterSet {
    /// Add or update an item: name and groups are the client's; subscription state is the server's.
    Update {
        /// Contact.
        jid: BareJid,
        /// Handle.
        name: Option<String>,
        /// Groups.
        groups: Vec<String>,
    },
    /// Remove the item (and cancel subscriptions both ways, §2.5.2).
    Remove {
        /// Contact.
        jid: BareJid,
    },
}

/// Why a roster set was refused (§2.3.3), mapped to stanza errors by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RosterSetError {
    /// Not exactly one item, a 'subscription' other than 'remove', or duplicate groups (§2.3.3).
    #[error("bad-request")]
    BadRequest,
    /// The 'jid' is not a valid JID.
    #[error("jid-malformed")]
    JidMalformed,
    /// A group or name too long (not-acceptable, §2.3.3).
    #[error("not-acceptable")]
    NotAcceptable,
}

impl From<RosterSetError> for crate::StanzaError {
    fn from(e: RosterSetError) -> crate::StanzaError {
        match e {
            RosterSetError::BadRequest => crate::StanzaError::BadRequest,
            RosterSetError::JidMalformed => crate::StanzaError::JidMalformed,
            RosterSetError::NotAcceptable => crate::StanzaError::NotAcceptable,
        }
    }
}

/// Longest group name or handle accepted (ejabberd and Prosody use similar caps).
pub const MAX_ROSTER_TEXT: usize = 1024;

/// Parse the `<query xmlns='jabber:iq:roster'>` of a roster set.
pub fn parse_roster_set(query: &Element) -> Result<RosterSet, RosterSetError> {
    let mut items = query.elements().filter(|e| e.is("item", ns::ROSTER));
    let item = items.next().ok_or(RosterSetError::BadRequest)?;
    if items.next().is_some() {
        return Err(RosterSetError::BadRequest);
    }
    let raw = item.attr("jid").ok_or(RosterSetError::BadRequest)?;
    let jid = crate::parse_jid(raw).map_err(|_| RosterSetError::JidMalformed)?;
    let jid = jid.to_bare();
    match item.attr("subscription") {
        Some("remove") => return Ok(RosterSet::Remove { jid }),
        None | Some("none") | Some("to") | Some("from") | Some("both") => {}
        Some(_) => return Err(RosterSetError::BadRequest),
    }
    let name = item.attr("name").filter(|n| !n.is_empty()).map(str::to_owned);
    if name.as_ref().is_some_and(|n| n.len() > MAX_ROSTER_TEXT) {
        return Err(RosterSetError::NotAcceptable);
    }
    let mut groups: Vec<String> = Vec::new();
    for g in item.elements().filter(|e| e.is("group", ns::ROSTER)) {
        let text = g.text();
        if text.is_empty() || text.len() > MAX_ROSTER_TEXT {
            return Err(RosterSetError::NotAcceptable);
        }
        if groups.contains(&text) {
            return Err(RosterSetError::BadRequest);
        }
        groups.push(text);
    }
    Ok(RosterSet::Update { jid, name, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(items: Vec<Element>) -> Element {
        let mut q = Element::new("query", ns::ROSTER);
        for i in items {
            q.append_child(i);
        }
        q
    }

    #[test]
    fn update_with_groups() {
        let q = query(vec![Element::new("item", ns::ROSTER)
            .with_attr("jid", "Juliet@Example.com/balcony")
            .with_attr("name", "Jules")
            .with_child(Element::new("group", ns::ROSTER).with_text("Friends"))]);
        match parse_roster_set(&q).unwrap() {
            RosterSet::Update { jid, name, groups } => {
                assert_eq!(jid.to_string(), "juliet@example.com");
                assert_eq!(name.as_deref(), Some("Jules"));
                assert_eq!(groups, vec!["Friends".to_string()]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(parse_roster_set(&query(vec![])), Err(RosterSetError::BadRequest));
        let two = query(vec![
            Element::new("item", ns::ROSTER).with_attr("jid", "a@b"),
            Element::new("item", ns::ROSTER).with_attr("jid", "c@b"),
        ]);
        assert_eq!(parse_roster_set(&two), Err(RosterSetError::BadRequest));
        let dup = query(vec![Element::new("item", ns::ROSTER)
            .with_attr("jid", "a@b")
            .with_child(Element::new("group", ns::ROSTER).with_text("x"))
            .with_child(Element::new("group", ns::ROSTER).with_text("x"))]);
        assert_eq!(parse_roster_set(&dup), Err(RosterSetError::BadRequest));
        let bad = query(vec![Element::new("item", ns::ROSTER).with_attr("jid", "@@")]);
        assert_eq!(parse_roster_set(&bad), Err(RosterSetError::JidMalformed));
        let sub = query(vec![Element::new("item", ns::ROSTER)
            .with_attr("jid", "a@b")
            .with_attr("subscription", "bogus")]);
        assert_eq!(parse_roster_set(&sub), Err(RosterSetError::BadRequest));
    }

    #[test]
    fn remove() {
        let q = query(vec![Element::new("item", ns::ROSTER)
            .with_attr("jid", "a@b")
            .with_attr("subscription", "remove")]);
        assert!(matches!(parse_roster_set(&q), Ok(RosterSet::Remove { .. })));
    }

    #[test]
    fn item_element_shows_ask_and_approved() {
        let mut item = RosterItem::new(&BareJid::new("a@b").unwrap());
        item.state.pending_out = true;
        item.state.preapproved = true;
        let e = item.to_element();
        assert_eq!(e.attr("ask"), Some("subscribe"));
        assert_eq!(e.attr("approved"), Some("true"));
        assert_eq!(e.attr("subscription"), Some("none"));
    }
}
