//! [`Name`]: an element name, namespace URI or attribute name that costs no allocation when it
//! is one of the few hundred bytes of vocabulary XMPP uses over and over.
//!
//! Every parsed element has a name and a namespace, and most have `to`, `from`, `id` or `type`
//! attributes; as owned strings that was two to five allocations per element, the largest share
//! of a login's (and of a routed message's) allocations. Names written in code are `&'static
//! str` and are kept as such; names read off the wire are looked up in a fixed table
//! ([`Name::interned`]) and only the rare ones outside it are copied.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::ops::Deref;

/// A name or namespace: a `&'static str` when it is known, an owned `String` otherwise. Compares,
/// hashes and orders as its text.
#[derive(Clone, PartialOrd, Ord)]
pub struct Name(Cow<'static, str>);

/// Names and namespaces read off the wire without allocating: the XMPP core and IM vocabulary
/// (RFC 6120, RFC 6121) and the extensions every client sends (disco, ping, caps, delay,
/// receipts, chat states, carbons, vCard).
const KNOWN: &[&str] = &[
    // Namespaces.
    "jabber:client",
    "jabber:server",
    "jabber:component:accept",
    "http://etherx.jabber.org/streams",
    "urn:ietf:params:xml:ns:xmpp-sasl",
    "urn:ietf:params:xml:ns:xmpp-tls",
    "urn:ietf:params:xml:ns:xmpp-bind",
    "urn:ietf:params:xml:ns:xmpp-session",
    "urn:ietf:params:xml:ns:xmpp-stanzas",
    "urn:ietf:params:xml:ns:xmpp-streams",
    "jabber:iq:roster",
    "jabber:iq:register",
    "jabber:iq:private",
    "jabber:iq:version",
    "jabber:iq:last",
    "http://jabber.org/protocol/disco#info",
    "http://jabber.org/protocol/disco#items",
    "http://jabber.org/protocol/caps",
    "http://jabber.org/protocol/chatstates",
    "urn:xmpp:ping",
    "urn:xmpp:delay",
    "urn:xmpp:receipts",
    "urn:xmpp:carbons:2",
    "urn:xmpp:sm:3",
    "vcard-temp",
    "vcard-temp:x:update",
    "http://www.w3.org/XML/1998/namespace",
    // Element names.
    "stream",
    "features",
    "message",
    "presence",
    "iq",
    "body",
    "subject",
    "thread",
    "show",
    "status",
    "priority",
    "error",
    "text",
    "query",
    "item",
    "group",
    "bind",
    "resource",
    "jid",
    "session",
    "auth",
    "response",
    "challenge",
    "success",
    "failure",
    "abort",
    "starttls",
    "proceed",
    "mechanisms",
    "mechanism",
    "required",
    "optional",
    "ping",
    "delay",
    "x",
    "c",
    "active",
    "composing",
    "paused",
    "inactive",
    "gone",
    "request",
    "received",
    "identity",
    "feature",
    "vCard",
    "photo",
    "username",
    "password",
    "instructions",
    "register",
    "remove",
    "ver",
    // Attribute names.
    "to",
    "from",
    "id",
    "type",
    "xml:lang",
    "version",
    "name",
    "subscription",
    "ask",
    "approved",
    "node",
    "var",
    "category",
    "stamp",
    "code",
    "by",
    "hash",
    "lang",
];

/// [`KNOWN`] grouped by length, so a lookup compares a handful of candidates, not the table.
fn by_length() -> &'static [Vec<&'static str>] {
    static TABLE: std::sync::OnceLock<Vec<Vec<&'static str>>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let longest = KNOWN.iter().map(|k| k.len()).max().unwrap_or(0);
        let mut table = vec![Vec::new(); longest + 1];
        for k in KNOWN {
            table[k.len()].push(*k);
        }
        table
    })
}

impl Name {
    /// `s` as a name: borrowed from the table of known names when it is there, copied otherwise.
    pub fn interned(s: &str) -> Name {
        // The last byte tells most candidates of a length apart (namespaces share prefixes).
        let last = s.as_bytes().last();
        let known = by_length()
            .get(s.len())
            .and_then(|same| same.iter().find(|k| k.as_bytes().last() == last && **k == s));
        match known {
            Some(k) => Name(Cow::Borrowed(k)),
            None => Name(Cow::Owned(s.to_owned())),
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&'static str> for Name {
    fn from(s: &'static str) -> Name {
        Name(Cow::Borrowed(s))
    }
}

impl From<String> for Name {
    fn from(s: String) -> Name {
        Name(Cow::Owned(s))
    }
}

impl Default for Name {
    fn default() -> Name {
        Name(Cow::Borrowed(""))
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        *self.0 == *other.0
    }
}

impl Eq for Name {}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<Name> for str {
    fn eq(&self, other: &Name) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        *self == other.as_str()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names_are_borrowed_and_others_owned() {
        assert!(matches!(Name::interned("jabber:client").0, Cow::Borrowed(_)));
        assert!(matches!(Name::interned("message").0, Cow::Borrowed(_)));
        assert!(matches!(Name::interned("urn:example:unknown").0, Cow::Owned(_)));
        // Matching is exact: a known prefix or another case is not the known name.
        assert!(matches!(Name::interned("messages").0, Cow::Owned(_)));
        assert!(matches!(Name::interned("Message").0, Cow::Owned(_)));
    }

    #[test]
    fn compares_and_hashes_as_its_text_however_it_is_held() {
        use std::collections::HashSet;
        let borrowed = Name::from("body");
        let owned = Name::from(String::from("body"));
        assert_eq!(borrowed, owned);
        assert_eq!(borrowed, "body");
        assert_eq!("body", owned);
        assert_ne!(borrowed, "bodies");
        let set: HashSet<Name> = [borrowed].into_iter().collect();
        assert!(set.contains(&owned));
        assert!(set.contains("body"));
        assert_eq!(owned.to_string(), "body");
        assert_eq!(format!("{owned:?}"), "\"body\"");
    }

    #[test]
    fn the_table_has_no_duplicates() {
        let mut seen = std::collections::HashSet::new();
        for k in KNOWN {
            assert!(seen.insert(k), "{k} listed twice");
        }
    }
}
