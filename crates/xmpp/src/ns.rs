//! XML namespaces used by Starling, one constant per namespace.

/// RFC 6120 §4.8.1: the stream root.
pub const STREAM: &str = "http://etherx.jabber.org/streams";
/// RFC 6120: the client content namespace.
pub const CLIENT: &str = "jabber:client";
/// RFC 6120: server-to-server content namespace (accepted as a synonym inside the server).
pub const SERVER: &str = "jabber:server";
/// XEP-0114: external components' content namespace.
pub const COMPONENT_ACCEPT: &str = "jabber:component:accept";
/// RFC 6120 §4.9.3: stream error conditions.
pub const STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// RFC 6120 §8.3: stanza error conditions.
pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// RFC 6120 §5: STARTTLS.
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// RFC 6120 §6: SASL.
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// RFC 6120 §7: resource binding.
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// RFC 3921 §3 (kept by RFC 6121 as optional): session establishment, for old clients.
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// RFC 6121 §2: roster.
pub const ROSTER: &str = "jabber:iq:roster";
/// RFC 6121 §2.6: roster versioning stream feature.
pub const ROSTER_VER: &str = "urn:xmpp:features:rosterver";
/// RFC 6121 §3.4: subscription pre-approval stream feature.
pub const PRE_APPROVAL: &str = "urn:xmpp:features:pre-approval";
/// XEP-0030: service discovery.
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// XEP-0030: service discovery items.
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// XEP-0199: XMPP ping.
pub const PING: &str = "urn:xmpp:ping";
/// XEP-0092: software version.
pub const VERSION: &str = "jabber:iq:version";
/// XEP-0054: vcard-temp.
pub const VCARD: &str = "vcard-temp";
/// XEP-0049: private XML storage.
pub const PRIVATE: &str = "jabber:iq:private";
/// XEP-0077: in-band registration.
pub const REGISTER: &str = "jabber:iq:register";
/// XEP-0077: in-band registration stream feature.
pub const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
/// XEP-0203: delayed delivery.
pub const DELAY: &str = "urn:xmpp:delay";
/// XEP-0160 / XEP-0013 discovery feature for offline storage.
pub const OFFLINE: &str = "msgoffline";
/// XEP-0368 / RFC 7590 ALPN protocol id for direct TLS.
pub const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";
