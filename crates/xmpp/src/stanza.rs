//! Views over the three stanza kinds (RFC 6120 §8) and the replies every server builds from them.

use crate::{ns, StanzaError};
use jid::Jid;
use starling_xml::{Element, Name};

/// The three stanza kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StanzaKind {
    /// `<message/>`
    Message,
    /// `<presence/>`
    Presence,
    /// `<iq/>`
    Iq,
}

impl StanzaKind {
    /// Element name.
    pub fn as_str(self) -> &'static str {
        match self {
            StanzaKind::Message => "message",
            StanzaKind::Presence => "presence",
            StanzaKind::Iq => "iq",
        }
    }
}

/// Whether `ns` is a content namespace stanzas may travel in (client, server or component streams).
pub fn is_content_ns(ns: &str) -> bool {
    ns == ns::CLIENT || ns == ns::SERVER || ns == ns::COMPONENT_ACCEPT
}

/// The kind of a top-level element, if it is a stanza at all.
pub fn kind_of(e: &Element) -> Option<StanzaKind> {
    if !is_content_ns(&e.ns) {
        return None;
    }
    match e.name.as_str() {
        "message" => Some(StanzaKind::Message),
        "presence" => Some(StanzaKind::Presence),
        "iq" => Some(StanzaKind::Iq),
        _ => None,
    }
}

/// The kind of a serialized top-level stanza (`<message …`, `<presence …`, `<iq …`), from its
/// first bytes; `None` for anything else.
pub fn kind_of_bytes(bytes: &[u8]) -> Option<StanzaKind> {
    let rest = bytes.strip_prefix(b"<")?;
    let name_end = rest.iter().position(|b| matches!(b, b' ' | b'/' | b'>' | b'\t' | b'\r' | b'\n'))?;
    match &rest[..name_end] {
        b"message" => Some(StanzaKind::Message),
        b"presence" => Some(StanzaKind::Presence),
        b"iq" => Some(StanzaKind::Iq),
        _ => None,
    }
}

/// Borrowed view of a stanza with its addressing parsed.
#[derive(Debug)]
pub struct StanzaView<'a> {
    /// The stanza element.
    pub element: &'a Element,
    /// Its kind.
    pub kind: StanzaKind,
}

impl<'a> StanzaView<'a> {
    /// A view if `e` is a stanza.
    pub fn new(element: &'a Element) -> Option<StanzaView<'a>> {
        kind_of(element).map(|kind| StanzaView { element, kind })
    }

    /// The 'type' attribute, with RFC defaults: "normal" for messages, "available" (None) for presence.
    pub fn type_attr(&self) -> Option<&'a str> {
        self.element.attr("type")
    }

    /// The 'id' attribute.
    pub fn id(&self) -> Option<&'a str> {
        self.element.attr("id")
    }

    /// Parsed 'to'. `Ok(None)` when absent; `Err` when present but not a valid JID.
    pub fn to(&self) -> Result<Option<Jid>, StanzaError> {
        parse_jid_attr(self.element, "to")
    }

    /// Parsed 'from'.
    pub fn from(&self) -> Result<Option<Jid>, StanzaError> {
        parse_jid_attr(self.element, "from")
    }
}

fn parse_jid_attr(e: &Element, name: &str) -> Result<Option<Jid>, StanzaError> {
    match e.attr(name) {
        None => Ok(None),
        Some(s) => crate::parse_jid(s).map(Some).map_err(|_| StanzaError::JidMalformed),
    }
}

/// RFC 6120 §8.3.1: an error reply to `stanza`: addresses swapped, type='error', same id,
/// the original payload kept (it helps the sender correlate), plus the `<error/>` child.
/// `server_from` is used as 'from' when the stanza had no 'to' (it was addressed to the account or server).
pub fn error_reply(stanza: &Element, error: StanzaError, server_from: &str) -> Element {
    let mut reply = Element::new(stanza.name.clone(), stanza.ns.clone());
    if let Some(id) = stanza.attr("id") {
        reply.set_attr("id", id);
    }
    reply.set_attr("type", "error");
    reply.set_attr("from", stanza.attr("to").unwrap_or(server_from));
    if let Some(from) = stanza.attr("from") {
        reply.set_attr("to", from);
    }
    for child in stanza.elements() {
        if child.name != "error" {
            reply.append_child(child.clone());
        }
    }
    reply.append_child(error.to_element(&stanza.ns));
    reply
}

/// An `<iq type='result'/>` answering `iq`, optionally carrying a payload.
pub fn iq_result(iq: &Element, server_from: &str, payload: Option<Element>) -> Element {
    let mut reply = Element::new("iq", iq.ns.clone()).with_attr("type", "result");
    if let Some(id) = iq.attr("id") {
        reply.set_attr("id", id);
    }
    reply.set_attr("from", iq.attr("to").unwrap_or(server_from));
    if let Some(from) = iq.attr("from") {
        reply.set_attr("to", from);
    }
    if let Some(p) = payload {
        reply.append_child(p);
    }
    reply
}

/// Whether an error reply may be sent for this stanza: never for stanzas of type 'error'
/// (RFC 6120 §8.3.1: an entity must not respond to an error with an error), never for iq results.
pub fn may_bounce(stanza: &Element) -> bool {
    !matches!(stanza.attr("type"), Some("error") | Some("result"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_stanzas_are_told_apart_by_their_first_bytes() {
        assert_eq!(kind_of_bytes(b"<message to='a@b'><body>x</body></message>"), Some(StanzaKind::Message));
        assert_eq!(kind_of_bytes(b"<presence/>"), Some(StanzaKind::Presence));
        assert_eq!(kind_of_bytes(b"<iq\ttype='get'/>"), Some(StanzaKind::Iq));
        assert_eq!(kind_of_bytes(b"<messages/>"), None);
        assert_eq!(kind_of_bytes(b"<iqx/>"), None);
        assert_eq!(kind_of_bytes(b"<message"), None, "no end of name yet");
        assert_eq!(kind_of_bytes(b" <iq/>"), None);
        assert_eq!(kind_of_bytes(b""), None);
    }

    #[test]
    fn error_reply_swaps_addresses_and_keeps_id() {
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("id", "a1")
            .with_attr("type", "get")
            .with_attr("from", "u@d/r")
            .with_attr("to", "x@d")
            .with_child(Element::new("query", "urn:q"));
        let r = error_reply(&iq, StanzaError::ServiceUnavailable, "d");
        assert_eq!(r.attr("type"), Some("error"));
        assert_eq!(r.attr("to"), Some("u@d/r"));
        assert_eq!(r.attr("from"), Some("x@d"));
        assert_eq!(r.attr("id"), Some("a1"));
        assert!(r.get_child("query", "urn:q").is_some());
        assert!(r.get_child("error", ns::CLIENT).is_some());
    }

    #[test]
    fn kinds_need_a_content_namespace() {
        assert_eq!(kind_of(&Element::new("message", ns::CLIENT)), Some(StanzaKind::Message));
        assert_eq!(kind_of(&Element::new("message", "urn:other")), None);
        assert_eq!(kind_of(&Element::new("foo", ns::CLIENT)), None);
    }

    #[test]
    fn malformed_to_is_jid_malformed() {
        let m = Element::new("message", ns::CLIENT).with_attr("to", "a@b@c/");
        let v = StanzaView::new(&m).unwrap();
        assert_eq!(v.to().unwrap_err(), StanzaError::JidMalformed);
    }

    #[test]
    fn errors_are_never_bounced() {
        let m = Element::new("message", ns::CLIENT).with_attr("type", "error");
        assert!(!may_bounce(&m));
    }
}

/// Move a stanza from one content namespace to another, recursively (children that inherited
/// the stream's namespace, like `<body/>`, move with it). Used where component streams
/// (`jabber:component:accept`) meet client streams (`jabber:client`).
pub fn rewrite_content_ns(e: &mut Element, from_ns: &str, to_ns: &str) {
    if e.ns == from_ns {
        e.ns = Name::interned(to_ns);
    }
    for child in e.elements_mut() {
        rewrite_content_ns(child, from_ns, to_ns);
    }
}

#[cfg(test)]
mod rewrite_tests {
    use super::*;

    #[test]
    fn rewrite_moves_inherited_children_only() {
        let mut m = Element::new("message", ns::COMPONENT_ACCEPT)
            .with_child(Element::new("body", ns::COMPONENT_ACCEPT).with_text("hi"))
            .with_child(Element::new("x", "urn:other"));
        rewrite_content_ns(&mut m, ns::COMPONENT_ACCEPT, ns::CLIENT);
        assert_eq!(m.ns, ns::CLIENT);
        assert!(m.get_child("body", ns::CLIENT).is_some());
        assert!(m.get_child("x", "urn:other").is_some());
    }
}
