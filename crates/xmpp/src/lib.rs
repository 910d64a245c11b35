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
