//! Sans-io XML for XMPP streams.
//!
//! - [`framer`]: [`StreamParser`], bytes in and [`Event`]s out (stream header, stanza, close), with
//!   RFC 6120 §11 restricted XML and size/depth/attribute limits enforced while framing.
//! - [`element`]: [`Element`], the small owned tree stanzas are parsed into, and its writer.
//!
//! No I/O and no async here: the edge reads sockets into [`StreamParser::buffer_mut`] and asks
//! for events; everything above works on [`Element`]s.

#![deny(missing_docs)]

pub mod element;
pub mod framer;

pub use element::{Element, Node};
pub use framer::{Event, Limits, StreamHeader, StreamParser, XmlError};
