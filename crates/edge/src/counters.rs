//! Per-kind stanza counters with their label children looked up once, so counting a stanza on
//! the hot path is one atomic add (`with_label_values` hashes the labels on every call).

use starling_telemetry::{metrics, IntCounter};
use starling_xmpp::stanza::StanzaKind;
use std::sync::LazyLock;

const KINDS: [StanzaKind; 3] = [StanzaKind::Message, StanzaKind::Presence, StanzaKind::Iq];

static IN: LazyLock<[IntCounter; 3]> =
    LazyLock::new(|| KINDS.map(|k| metrics().stanzas_in.with_label_values(&[k.as_str()])));
static OUT: LazyLock<[IntCounter; 3]> =
    LazyLock::new(|| KINDS.map(|k| metrics().stanzas_out.with_label_values(&[k.as_str()])));

fn index(kind: StanzaKind) -> usize {
    match kind {
        StanzaKind::Message => 0,
        StanzaKind::Presence => 1,
        StanzaKind::Iq => 2,
    }
}

/// A stanza of `kind` arrived from a client or component (`starling_stanzas_in_total`).
pub(crate) fn stanza_in(kind: StanzaKind) {
    IN[index(kind)].inc();
}

/// A stanza of `kind` was written to a client or component (`starling_stanzas_out_total`).
pub(crate) fn stanza_out(kind: Option<StanzaKind>) {
    if let Some(k) = kind {
        OUT[index(k)].inc();
    }
}
