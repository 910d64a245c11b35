//! Sans-io XMPP for Starling: everything about the protocol that needs no socket.
//!
//! - [`ns`]: the namespaces Starling speaks.
//! - [`jid`]: JIDs (RFC 7622), re-exported from the `jid` crate.
//! - [`error`]: RFC 6120 stream errors (§4.9) and stanza errors (§8.3) and how they are written.
//! - [`stanza`]: small views over stanzas: kind, type, addressing, error replies.
//! - [`sasl`]: server-side SCRAM-SHA-1/256 and PLAIN, plus a SCRAM client for tests and load generation.
//! - [`subscription`]: the RFC 6121 subscription state machine (Appendix A) as pure functions.
//! - [`session`]: the [`session::Deliver`] boundary between connections and routing.
//! - [`roster`]: roster items and their XML form (RFC 6121 §2).

pub mod delay;
pub mod error;
pub mod ns;
pub mod random;
pub mod roster;
pub mod sasl;
pub mod session;
pub mod stanza;
pub mod subscription;

pub use error::{StanzaError, StanzaErrorType, StreamError};
pub use jid;
pub use jid::{BareJid, FullJid, Jid};
pub use stanza::{StanzaKind, StanzaView};
pub use starling_xml::{Element, Node};

#[cfg(test)]
mod jid_tests;

/// `s` as a JID (RFC 7622), refused when its prepared form does not parse back to itself.
///
/// The `jid` crate prepares each part with stringprep, whose tables are Unicode 3.2's. A code
/// point Unicode 3.2 had not assigned gets no case mapping there, yet normalization can still
/// turn it into a letter that has one: U+1F130 "🄰" becomes "A", which the next parse folds to
/// "a". Such a JID would name one account here and another wherever it is parsed again, so it
/// is refused, as RFC 3454 §7 keeps unassigned code points out of stored strings. Every JID
/// a client or an operator gives goes through this; what the server stored or stamped itself
/// was checked on its way in.
pub fn parse_jid(s: &str) -> Result<Jid, jid::Error> {
    let jid = Jid::new(s)?;
    let again = Jid::new(jid.as_str())?;
    if again == jid {
        return Ok(jid);
    }
    Err(if again.node() != jid.node() {
        jid::Error::NodePrep
    } else if again.domain() != jid.domain() {
        jid::Error::NamePrep
    } else {
        jid::Error::ResourcePrep
    })
}

/// The bare JID of a JID's canonical string (`BareJid`, `FullJid` or `Jid::as_str`): everything
/// before the first `/`. Localparts and domainparts cannot contain `/` (RFC 7622 §3.2, §3.3.1),
/// so this is the bare JID exactly, without building a `BareJid` and formatting it again.
pub fn bare_part(jid: &str) -> &str {
    jid.split_once('/').map_or(jid, |(bare, _)| bare)
}

#[cfg(test)]
mod bare_part_tests {
    use super::*;

    #[test]
    fn the_bare_part_is_the_bare_jid() {
        for s in
            ["juliet@example.com/balcony/with/slashes", "juliet@example.com", "example.com/r", "example.com"]
        {
            let jid = Jid::new(s).unwrap();
            assert_eq!(bare_part(jid.as_str()), jid.to_bare().as_str(), "{s}");
        }
    }
}
