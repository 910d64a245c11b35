//! The boundary between whoever holds a client's connection and whoever routes its stanzas.
//!
//! The router never touches sockets: it hands stanzas to a [`Deliver`] implementation that the
//! connection side provides (an in-process channel in `serve`, a gRPC link in a cluster).

use crate::StreamError;
use starling_xml::Element;

/// What the routing side sends towards a connected entity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToClient {
    /// A stanza to write to the stream.
    Stanza(Element),
    /// A stanza already serialized self-contained in the `jabber:client` namespace (as written by
    /// [`Element::to_bytes`]), e.g. as it arrived over a cluster link: a client stream writes the
    /// bytes as they are, without parsing them again.
    Raw(Vec<u8>),
    /// Close the stream with this error (e.g. `conflict` when a newer session took the resource).
    Close(StreamError),
}

/// A sink towards one connected session or component.
pub trait Deliver: Send + Sync {
    /// Queue `item` for the session. Returns false when the session is gone or cannot keep up
    /// (its queue is full); the caller then treats the session as unavailable for this stanza.
    fn deliver(&self, item: ToClient) -> bool;

    /// Like [`Deliver::deliver`], but a refused item comes back to the caller, who still owes it
    /// a fate (a cluster edge returns it to the router). The default copies the item first;
    /// queues that can hand a refused item back override it.
    fn try_deliver(&self, item: ToClient) -> Result<(), ToClient> {
        let kept = item.clone();
        if self.deliver(item) {
            Ok(())
        } else {
            Err(kept)
        }
    }
}

/// Parse one serialized, self-contained stanza (as written by [`Element::to_bytes`]).
/// Used for stanzas that were stored (offline messages) and are read back.
pub fn parse_stored_stanza(bytes: &[u8]) -> Result<Element, starling_xml::XmlError> {
    // Parsed as if inside a client stream, so a stanza without its own xmlns is jabber:client.
    let limits = starling_xml::Limits { max_stanza_bytes: bytes.len(), ..starling_xml::Limits::default() };
    starling_xml::parse_element(bytes, crate::ns::CLIENT, &limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_stanzas_parse_back() {
        let e =
            Element::new("vCard", "vcard-temp").with_child(Element::new("FN", "vcard-temp").with_text("A"));
        assert_eq!(parse_stored_stanza(&e.to_bytes()).unwrap(), e);
        assert!(parse_stored_stanza(b"<a>").is_err());
        assert!(parse_stored_stanza(b"<a/><b/>").is_err(), "bytes after the element");
        assert!(parse_stored_stanza(b"<a><!-- c --></a>").is_err(), "restricted XML");
        // Without its own xmlns, a stored stanza is in the client namespace, as in a stream.
        assert_eq!(parse_stored_stanza(b"<message><body>x</body></message>").unwrap().ns, crate::ns::CLIENT);
        let deep = "<a>".repeat(65) + &"</a>".repeat(65);
        assert!(parse_stored_stanza(deep.as_bytes()).is_err(), "deeper than the limit");
    }
}
