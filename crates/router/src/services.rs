//! Iq services answered by the server: for the server's domain (disco, ping, version,
//! registration changes, legacy session) and for accounts (roster, vCard, private XML, ping,
//! disco of an account).

use crate::Router;
use starling_store::derive_credentials;
use starling_xml::Element;
use starling_xmpp::session::ToClient;
use starling_xmpp::stanza::{error_reply, iq_result};
use starling_xmpp::{ns, BareJid, FullJid, StanzaError, StreamError};

/// [`error_reply`], counted in `starling_stanza_errors_total`: every error the server generates
/// goes through here.
fn counted_error_reply(stanza: &Element, error: StanzaError, domain: &str) -> Element {
    starling_telemetry::stanza_error(error.condition());
    error_reply(stanza, error, domain)
}

/// Features the server's disco#info lists (XEP-0030 §3.1).
pub fn server_features(registration: bool) -> Vec<&'static str> {
    let mut f = vec![
        ns::DISCO_INFO,
        ns::DISCO_ITEMS,
        ns::PING,
        ns::VERSION,
        ns::VCARD,
        ns::PRIVATE,
        ns::ROSTER_VER,
        ns::PRE_APPROVAL,
        ns::OFFLINE,
        ns::DELAY,
    ];
    if registration {
        f.push(ns::REGISTER);
    }
    f
}

fn disco_info(identity: (&str, &str, &str), features: &[&str]) -> Element {
    let mut q = Element::new("query", ns::DISCO_INFO).with_child(
        Element::new("identity", ns::DISCO_INFO)
            .with_attr("category", identity.0)
            .with_attr("type", identity.1)
            .with_attr("name", identity.2),
    );
    for f in features {
        q.append_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", *f));
    }
    q
}

/// The one payload child of an iq get/set (RFC 6120 §8.2.3: exactly one), or None.
fn single_payload(iq: &Element) -> Option<&Element> {
    let mut it = iq.elements();
    let first = it.next()?;
    it.next().is_none().then_some(first)
}

/// Answers that need no account context: ping, version and disco of the server. Used for
/// requests from components; returns the reply (result or error) addressed to the sender.
pub fn answer_server_iq_static(router: &Router, iq: &Element) -> Element {
    let domain = iq.attr("to").unwrap_or(router.primary_domain()).to_owned();
    let Some(payload) = single_payload(iq) else {
        return counted_error_reply(iq, StanzaError::BadRequest, &domain);
    };
    let get = iq.attr("type") == Some("get");
    match (payload.name.as_str(), payload.ns.as_str(), get) {
        ("ping", ns::PING, true) => iq_result(iq, &domain, None),
        ("query", ns::VERSION, true) => iq_result(
            iq,
            &domain,
            Some(
                Element::new("query", ns::VERSION)
                    .with_child(Element::new("name", ns::VERSION).with_text(router.cfg.software_name.clone()))
                    .with_child(
                        Element::new("version", ns::VERSION).with_text(router.cfg.software_version.clone()),
                    ),
            ),
        ),
        ("query", ns::DISCO_INFO, true) if payload.attr("node").is_none() => iq_result(
            iq,
            &domain,
            Some(disco_info(("server", "im", "Starling"), &server_features(router.cfg.registration_enabled))),
        ),
        ("query", ns::DISCO_ITEMS, true) if payload.attr("node").is_none() => {
            let mut q = Element::new("query", ns::DISCO_ITEMS);
            for c in router.component_domains() {
                q.append_child(Element::new("item", ns::DISCO_ITEMS).with_attr("jid", c));
            }
            iq_result(iq, &domain, Some(q))
        }
        ("query", ns::DISCO_INFO, true) | ("query", ns::DISCO_ITEMS, true) => {
            counted_error_reply(iq, StanzaError::ItemNotFound, &domain)
        }
        // Known, read-only services asked to change something (RFC 6120 §8.3.3.3).
        ("ping", ns::PING, false) | ("query", ns::VERSION | ns::DISCO_INFO | ns::DISCO_ITEMS, false) => {
            counted_error_reply(iq, StanzaError::FeatureNotImplemented, &domain)
        }
        _ => counted_error_reply(iq, StanzaError::ServiceUnavailable, &domain),
    }
}

impl Router {
    /// An iq request from a local session to its server's domain.
    pub(crate) async fn server_iq(&self, from: &FullJid, iq: Element) {
        let domain = iq.attr("to").unwrap_or(self.primary_domain()).to_owned();
        let Some(payload) = single_payload(&iq).cloned() else {
            return self.bounce(&iq, StanzaError::BadRequest);
        };
        let set = iq.attr("type") == Some("set");
        match (payload.name.as_str(), payload.ns.as_str()) {
            // RFC 3921 §3: legacy session establishment; nothing left to do (RFC 6121 Appendix E).
            ("session", ns::SESSION) => self.reply_to_session(from, iq_result(&iq, &domain, None)),
            ("query", ns::REGISTER) => self.register_iq(from, &iq, &payload, set).await,
            _ => {
                let reply = answer_server_iq_static(self, &iq);
                self.reply_to_session(from, reply);
            }
        }
    }

    /// XEP-0077 for an authenticated session: form, password change, account removal.
    async fn register_iq(&self, from: &FullJid, iq: &Element, query: &Element, set: bool) {
        let domain = iq.attr("to").unwrap_or(self.primary_domain()).to_owned();
        let user = from.to_bare();
        if !set {
            let q = Element::new("query", ns::REGISTER)
                .with_child(Element::new("registered", ns::REGISTER))
                .with_child(
                    Element::new("username", ns::REGISTER)
                        .with_text(user.node().map(|n| n.to_string()).unwrap_or_default()),
                )
                .with_child(Element::new("password", ns::REGISTER));
            return self.reply_to_session(from, iq_result(iq, &domain, Some(q)));
        }
        if query.get_child("remove", ns::REGISTER).is_some() {
            let key = user.to_string();
            if self.blocking(move |s| s.remove_account(&key)).await.is_err() {
                return self.bounce(iq, StanzaError::InternalServerError);
            }
            self.reply_to_session(from, iq_result(iq, &domain, None));
            // XEP-0077 §3.2: the account is gone; every session of it ends.
            for t in self.all_sessions(&user) {
                t.sink.deliver(ToClient::Close(StreamError::NotAuthorized));
            }
            return;
        }
        let password = query.get_child("password", ns::REGISTER).map(|p| p.text());
        let username = query.get_child("username", ns::REGISTER).map(|p| p.text());
        let Some(password) = password.filter(|p| !p.is_empty()) else {
            return self.bounce(iq, StanzaError::BadRequest);
        };
        if username.is_some_and(|u| user.node().map(|n| n.as_str() != u).unwrap_or(true)) {
            return self.bounce(iq, StanzaError::NotAllowed);
        }
        // PBKDF2 is deliberately slow: derive on the blocking pool, with the configured count.
        let key = user.to_string();
        let iterations = self.cfg.scram_iterations;
        let changed = self
            .blocking(move |s| match derive_credentials(&password, iterations) {
                Ok(creds) => s.set_credentials(&key, creds).map(|()| true),
                Err(_) => Ok(false),
            })
            .await;
        match changed {
            Ok(true) => self.reply_to_session(from, iq_result(iq, &domain, None)),
            Ok(false) => self.bounce(iq, StanzaError::NotAcceptable),
            Err(_) => self.bounce(iq, StanzaError::InternalServerError),
        }
    }

    /// Every bound session of an account.
    pub(crate) fn all_sessions(&self, user: &BareJid) -> Vec<crate::Target> {
        let key = user.to_string();
        let shard = self.shard(&key);
        shard.get(&key).map(|a| a.sessions.iter().map(|s| s.target()).collect()).unwrap_or_default()
    }

    /// An iq from a session addressed to its own account (no 'to', or its bare JID).
    pub(crate) async fn account_iq(&self, from: &FullJid, account: &BareJid, iq: Element) {
        if !matches!(iq.attr("type"), Some("get") | Some("set")) {
            return;
        }
        let Some(payload) = single_payload(&iq).cloned() else {
            return self.bounce(&iq, StanzaError::BadRequest);
        };
        let set = iq.attr("type") == Some("set");
        let bare = account.to_string();
        match (payload.name.as_str(), payload.ns.as_str()) {
            ("query", ns::ROSTER) => self.roster_iq(from, iq, payload).await,
            ("vCard", ns::VCARD) if set => {
                let bytes = payload.to_bytes();
                let key = bare.clone();
                match self.blocking(move |s| s.set_document(&key, "vcard", Some(&bytes))).await {
                    Ok(()) => self.reply_to_session(from, iq_result(&iq, &bare, None)),
                    Err(_) => self.bounce(&iq, StanzaError::InternalServerError),
                }
            }
            ("vCard", ns::VCARD) => {
                let vcard = self.load_vcard(&bare).await;
                self.reply_to_session(from, iq_result(&iq, &bare, Some(vcard)));
            }
            ("query", ns::PRIVATE) => self.private_iq(from, &iq, &payload, set).await,
            // RFC 3921 §3 session establishment, which old clients send without a 'to': the
            // server's no-op answer (RFC 6121 Appendix E), as for one addressed to the domain.
            ("session", ns::SESSION) if set => {
                self.reply_to_session(from, iq_result(&iq, account.domain().as_str(), None))
            }
            ("ping", ns::PING) if !set => self.reply_to_session(from, iq_result(&iq, &bare, None)),
            ("query", ns::DISCO_INFO) if !set => {
                let q = disco_info(("account", "registered", ""), &[ns::DISCO_INFO, ns::VCARD]);
                self.reply_to_session(from, iq_result(&iq, &bare, Some(q)));
            }
            ("query", ns::DISCO_ITEMS) if !set => {
                let q = Element::new("query", ns::DISCO_ITEMS);
                self.reply_to_session(from, iq_result(&iq, &bare, Some(q)));
            }
            _ => self.bounce(&iq, StanzaError::ServiceUnavailable),
        }
    }

    /// The stored vCard, or an empty one (XEP-0054 §3.1: empty vCard when none was published).
    async fn load_vcard(&self, bare: &str) -> Element {
        let key = bare.to_owned();
        let stored = self.read(move |s| s.document(&key, "vcard")).await.ok().flatten();
        stored
            .and_then(|b| starling_xmpp::session::parse_stored_stanza(&b).ok())
            .unwrap_or_else(|| Element::new("vCard", ns::VCARD))
    }

    /// XEP-0049: get/set of private XML fragments keyed by their element name and namespace.
    async fn private_iq(&self, from: &FullJid, iq: &Element, query: &Element, set: bool) {
        let bare = starling_xmpp::bare_part(from.as_str()).to_owned();
        let children: Vec<Element> = query.elements().cloned().collect();
        if children.is_empty() || (!set && children.len() != 1) {
            return self.bounce(iq, StanzaError::BadRequest);
        }
        // XEP-0049 §4: jabber:* namespaces are reserved.
        if children.iter().any(|c| c.ns.starts_with("jabber:") || c.ns.is_empty()) {
            return self.bounce(iq, StanzaError::NotAcceptable);
        }
        if set {
            for c in children {
                let key = bare.clone();
                let doc = format!("private:{{{}}}{}", c.ns, c.name);
                let bytes = c.to_bytes();
                if self.blocking(move |s| s.set_document(&key, &doc, Some(&bytes))).await.is_err() {
                    return self.bounce(iq, StanzaError::InternalServerError);
                }
            }
            return self.reply_to_session(from, iq_result(iq, &bare, None));
        }
        let wanted = &children[0];
        let key = bare.clone();
        let doc = format!("private:{{{}}}{}", wanted.ns, wanted.name);
        let stored = self.read(move |s| s.document(&key, &doc)).await.ok().flatten();
        let value = stored
            .and_then(|b| starling_xmpp::session::parse_stored_stanza(&b).ok())
            .unwrap_or_else(|| wanted.clone());
        let q = Element::new("query", ns::PRIVATE).with_child(value);
        self.reply_to_session(from, iq_result(iq, &bare, Some(q)));
    }

    /// An iq request to another account's bare JID: the server answers for it
    /// (RFC 6121 §8.5.2.1.3): vCard, disco, ping; anything else is service-unavailable.
    pub(crate) async fn iq_to_other_account(&self, target: &BareJid, iq: Element) {
        if !self.account_exists(target).await {
            return self.bounce(&iq, StanzaError::ServiceUnavailable);
        }
        let bare = target.to_string();
        let get = iq.attr("type") == Some("get");
        let payload = single_payload(&iq).map(|p| (p.name.clone(), p.ns.clone()));
        let reply = match payload.as_ref().map(|(n, s)| (n.as_str(), s.as_str(), get)) {
            Some(("vCard", ns::VCARD, true)) => {
                let v = self.load_vcard(&bare).await;
                iq_result(&iq, &bare, Some(v))
            }
            Some(("ping", ns::PING, true)) => iq_result(&iq, &bare, None),
            Some(("query", ns::DISCO_INFO, true)) => iq_result(
                &iq,
                &bare,
                Some(disco_info(("account", "registered", ""), &[ns::DISCO_INFO, ns::VCARD])),
            ),
            None => counted_error_reply(&iq, StanzaError::BadRequest, &bare),
            _ => counted_error_reply(&iq, StanzaError::ServiceUnavailable, &bare),
        };
        self.send_reply(reply).await;
    }
}
