//! Stream features (RFC 6120 §4.3.2), serialized once per edge.
//!
//! What a client is offered depends only on the edge's settings, on whether its stream is
//! encrypted, and on whether it has authenticated. Those make three variants, built when the
//! edge starts, so a login copies bytes instead of building and serializing a tree each time.

use crate::EdgeConfig;
use starling_xml::Element;
use starling_xmpp::ns;

/// The serialized `<stream:features>` of each negotiation stage.
#[derive(Debug, Clone)]
pub(crate) struct StreamFeatures {
    before_auth_plain: Vec<u8>,
    before_auth_tls: Vec<u8>,
    after_auth: Vec<u8>,
}

/// Where a stream is in its negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Not yet authenticated; `tls` when the stream is encrypted.
    BeforeAuth { tls: bool },
    /// Authenticated: resource binding and what goes with it.
    AfterAuth,
}

/// Whether authentication may happen on a stream (`tls`: it is encrypted).
pub(crate) fn auth_allowed(cfg: &EdgeConfig, starttls_offered: bool, tls: bool) -> bool {
    tls || cfg.allow_plaintext_auth || (!starttls_offered && !cfg.starttls_required)
}

impl StreamFeatures {
    /// The features of an edge with these settings; `starttls_offered` when it has a certificate.
    pub(crate) fn new(cfg: &EdgeConfig, starttls_offered: bool) -> StreamFeatures {
        let bytes = |stage| {
            let mut out = b"<stream:features>".to_vec();
            for f in elements(cfg, starttls_offered, stage) {
                f.write_to(&mut out, ns::CLIENT);
            }
            out.extend_from_slice(b"</stream:features>");
            out
        };
        StreamFeatures {
            before_auth_plain: bytes(Stage::BeforeAuth { tls: false }),
            before_auth_tls: bytes(Stage::BeforeAuth { tls: true }),
            after_auth: bytes(Stage::AfterAuth),
        }
    }

    /// The serialized features for `stage`.
    pub(crate) fn get(&self, stage: Stage) -> &[u8] {
        match stage {
            Stage::BeforeAuth { tls: false } => &self.before_auth_plain,
            Stage::BeforeAuth { tls: true } => &self.before_auth_tls,
            Stage::AfterAuth => &self.after_auth,
        }
    }
}

/// The feature elements offered at `stage`.
fn elements(cfg: &EdgeConfig, starttls_offered: bool, stage: Stage) -> Vec<Element> {
    let mut f = Vec::new();
    match stage {
        Stage::BeforeAuth { tls } => {
            if !tls && starttls_offered {
                let mut st = Element::new("starttls", ns::TLS);
                if cfg.starttls_required {
                    st.append_child(Element::new("required", ns::TLS));
                }
                f.push(st);
            }
            if auth_allowed(cfg, starttls_offered, tls) {
                let mut mechs = Element::new("mechanisms", ns::SASL);
                for m in ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"] {
                    mechs.append_child(Element::new("mechanism", ns::SASL).with_text(m));
                }
                f.push(mechs);
                if cfg.registration_enabled {
                    f.push(Element::new("register", ns::REGISTER_FEATURE));
                }
            }
        }
        Stage::AfterAuth => {
            f.push(Element::new("bind", ns::BIND));
            f.push(Element::new("session", ns::SESSION).with_child(Element::new("optional", ns::SESSION)));
            f.push(Element::new("ver", ns::ROSTER_VER));
            f.push(Element::new("sub", ns::PRE_APPROVAL));
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: &StreamFeatures, stage: Stage) -> String {
        String::from_utf8(f.get(stage).to_vec()).unwrap()
    }

    #[test]
    fn starttls_required_hides_sasl_until_the_stream_is_encrypted() {
        let cfg = EdgeConfig { starttls_required: true, ..EdgeConfig::default() };
        let f = StreamFeatures::new(&cfg, true);
        let plain = text(&f, Stage::BeforeAuth { tls: false });
        assert!(
            plain.contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"),
            "{plain}"
        );
        assert!(!plain.contains("mechanisms"), "{plain}");
        let tls = text(&f, Stage::BeforeAuth { tls: true });
        assert!(!tls.contains("starttls"), "{tls}");
        assert!(
            tls.contains("<mechanism>SCRAM-SHA-256</mechanism><mechanism>SCRAM-SHA-1</mechanism>"),
            "{tls}"
        );
    }

    #[test]
    fn plaintext_auth_for_local_development_offers_both() {
        let cfg = EdgeConfig {
            starttls_required: false,
            allow_plaintext_auth: true,
            registration_enabled: true,
            ..EdgeConfig::default()
        };
        let plain = text(&StreamFeatures::new(&cfg, true), Stage::BeforeAuth { tls: false });
        assert!(plain.contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"), "{plain}");
        assert!(plain.contains("<mechanism>PLAIN</mechanism>"), "{plain}");
        assert!(plain.contains("<register xmlns='http://jabber.org/features/iq-register'/>"), "{plain}");
    }

    #[test]
    fn after_auth_offers_bind_and_session_and_roster_features() {
        let f = StreamFeatures::new(&EdgeConfig::default(), true);
        let after = text(&f, Stage::AfterAuth);
        assert!(
            after.starts_with("<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"),
            "{after}"
        );
        assert!(after.contains("<optional/></session>"), "{after}");
        assert!(after.ends_with("</stream:features>"), "{after}");
        assert!(!after.contains("mechanisms"), "{after}");
    }
}
