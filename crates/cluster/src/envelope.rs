//! Stanzas in and out of [`Envelope`]s.
//!
//! An envelope carries the routing fields a forwarder needs next to the stanza serialized
//! self-contained (explicit `xmlns` on the top element, RFC 6120 §4.8.3: bytes cut out of a
//! stream would otherwise lose the stream's default namespace). Forwarders read the fields;
//! only the node that processes the stanza parses the bytes.

use starling_rpc::link::{Envelope, StanzaKind as WireKind, TraceContext};
use starling_telemetry::trace::{adopt, current_context, TARGET};
use starling_xml::{Element, XmlError};
use starling_xmpp::stanza::{kind_of, StanzaKind};
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, the clock routing latency is measured on.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// An envelope for `stanza`; `session`, `component` and `epoch` are set by the caller.
pub fn wrap(stanza: &Element) -> Envelope {
    wrap_bytes(stanza, stanza.to_bytes())
}

/// An envelope around bytes already serialized from `stanza`.
pub fn wrap_bytes(stanza: &Element, bytes: Vec<u8>) -> Envelope {
    let kind = match kind_of(stanza) {
        Some(StanzaKind::Message) => WireKind::Message,
        Some(StanzaKind::Presence) => WireKind::Presence,
        Some(StanzaKind::Iq) => WireKind::Iq,
        None => WireKind::Unspecified,
    };
    Envelope {
        from: stanza.attr("from").unwrap_or_default().to_owned(),
        to: stanza.attr("to").unwrap_or_default().to_owned(),
        kind: kind as i32,
        r#type: stanza.attr("type").unwrap_or_default().to_owned(),
        id: stanza.attr("id").unwrap_or_default().to_owned(),
        stanza: bytes,
        entered_us: now_us(),
        // The span this stanza travels in, so the next node continues the same trace.
        trace: current_context().map(|(traceparent, tracestate)| TraceContext { traceparent, tracestate }),
        ..Envelope::default()
    }
}

/// A hop of a stanza's trip, for its span.
#[derive(Clone, Copy, Debug)]
pub enum Hop {
    /// The sender's router applies outbound rules and routes it.
    RouterRoute,
    /// The recipient's router applies inbound rules (§8.5) and delivers it.
    RouterDeliver,
    /// The recipient's edge writes it to the client.
    EdgeDeliver,
}

/// The span of one hop, a child of the span the envelope was sent from (if any).
pub fn span(hop: Hop, env: &Envelope) -> tracing::Span {
    let span = match hop {
        Hop::RouterRoute => tracing::info_span!(target: TARGET, "router.route", kind = env.kind),
        Hop::RouterDeliver => tracing::info_span!(target: TARGET, "router.deliver", kind = env.kind),
        Hop::EdgeDeliver => tracing::info_span!(target: TARGET, "edge.deliver", kind = env.kind),
    };
    if let Some(t) = &env.trace {
        adopt(&span, &t.traceparent, &t.tracestate);
    }
    span
}

/// The stanza inside an envelope. Bytes that do not parse as one stanza are refused: a peer
/// node is trusted to route, not to be well-formed on our behalf.
pub fn open(env: &Envelope) -> Result<Element, XmlError> {
    starling_xmpp::session::parse_stored_stanza(&env.stanza)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_the_stanza_and_fills_the_routing_fields() {
        let m = Element::new("message", starling_xmpp::ns::CLIENT)
            .with_attr("from", "a@x/r")
            .with_attr("to", "b@x")
            .with_attr("type", "chat")
            .with_attr("id", "1")
            .with_child(Element::new("body", starling_xmpp::ns::CLIENT).with_text("hi <&>"));
        let env = wrap(&m);
        assert_eq!(env.kind, WireKind::Message as i32);
        assert_eq!(
            (env.from.as_str(), env.to.as_str(), env.r#type.as_str(), env.id.as_str()),
            ("a@x/r", "b@x", "chat", "1")
        );
        assert_eq!(open(&env).unwrap(), m);
    }

    #[test]
    fn garbage_bytes_are_refused() {
        let env = Envelope { stanza: b"<message><unclosed>".to_vec(), ..Envelope::default() };
        assert!(open(&env).is_err());
    }
}
