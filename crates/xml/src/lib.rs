//! Sans-io XML for XMPP streams.
//!
//! Modules:
//!
//! - [`framer`]: [`StreamParser`], bytes in and [`Event`]s out: the stream header
//!   ([`StreamHeader`]), each top-level child of the root as a parsed [`Element`] (a stanza), and
//!   the stream close. It is built as "check, then parse": a resumable lexer finds where the next
//!   top-level construct ends and enforces [`Limits`] and RFC 6120 §11 restricted XML while the
//!   bytes arrive; only a complete construct is parsed (with quick-xml) and consumed. Failures are
//!   [`XmlError`]s, one variant per RFC 6120 stream error (`not-well-formed`, `restricted-xml`,
//!   `policy-violation`).
//! - [`element`]: [`Element`] and [`Node`], the small owned tree (namespaces resolved, entities
//!   unescaped) that stanzas are parsed into and replies are built from, and its writer
//!   ([`Element::write_to`], [`Element::to_bytes`]), whose output the framer parses back to an
//!   equal tree.
//!
//! - [`name`]: [`Name`], the element names, namespaces and attribute names of the tree: known
//!   XMPP vocabulary is never allocated.
//!
//! There is no I/O and no async here: the caller reads sockets into
//! [`StreamParser::buffer_mut`] (or [`StreamParser::feed`]s it) and asks for events; everything
//! above works on [`Element`]s. The `fuzz/` directory next to this crate holds a cargo-fuzz
//! target for the framer.

#![deny(missing_docs)]

pub mod element;
pub mod framer;
pub mod name;

pub use element::{Element, Node, Template};
pub use framer::{parse_element, Event, Limits, StreamHeader, StreamParser, XmlError};
pub use name::Name;
