//! Per-kind stanza counters and per-listener connection counters with their label children
//! looked up once, so counting a stanza or a connection is one atomic add (`with_label_values`
//! hashes the labels and takes a lock on every call).

use starling_telemetry::{metrics, IntCounter, IntGauge};
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

/// A client listener's children of `starling_connections` (plain, then TLS) and of
/// `starling_connections_accepted_total`.
struct ListenerCounters {
    open: [IntGauge; 2],
    accepted: IntCounter,
}

/// The plain (`c2s`) listener's counters, then the direct TLS (`c2s_direct_tls`) one's.
static LISTENERS: LazyLock<[ListenerCounters; 2]> = LazyLock::new(|| {
    ["c2s", "c2s_direct_tls"].map(|listener| ListenerCounters {
        open: ["false", "true"].map(|tls| metrics().connections.with_label_values(&[listener, tls])),
        accepted: metrics().connections_accepted.with_label_values(&[listener]),
    })
});

/// Counts a client connection in `starling_connections` while it lives.
pub(crate) struct ConnectionGauge {
    listener: &'static ListenerCounters,
    /// The gauge it is counted in now.
    open: &'static IntGauge,
}

impl ConnectionGauge {
    /// A connection accepted on the direct TLS listener or the plain one, encrypted or not.
    pub(crate) fn new(direct_tls: bool, tls: bool) -> ConnectionGauge {
        let listener = &LISTENERS[usize::from(direct_tls)];
        listener.accepted.inc();
        let open = &listener.open[usize::from(tls)];
        open.inc();
        ConnectionGauge { listener, open }
    }

    /// The connection switched to TLS (STARTTLS).
    pub(crate) fn encrypted(&mut self) {
        self.open.dec();
        self.open = &self.listener.open[1];
        self.open.inc();
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// The SASL mechanisms `starling_auth_total` counts, as their label.
const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"];

/// `starling_auth_total`'s children: per mechanism, `failed` then `ok`.
static AUTH: LazyLock<[[IntCounter; 2]; 3]> = LazyLock::new(|| {
    MECHANISMS.map(|m| ["failed", "ok"].map(|result| metrics().auth.with_label_values(&[m, result])))
});

/// An authentication with `mechanism` succeeded or failed (`starling_auth_total`); an attempt
/// with no mechanism this server offers is not counted.
pub(crate) fn authentication(mechanism: &str, ok: bool) {
    if let Some(i) = MECHANISMS.iter().position(|m| *m == mechanism) {
        AUTH[i][usize::from(ok)].inc();
    }
}
