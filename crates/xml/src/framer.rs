//! Incremental framing of an XMPP stream: bytes in, [`Event`]s out.
//!
//! Two stages, as in mini-redis's connection framing: a cheap, resumable lexer *checks* whether a
//! complete top-level construct is buffered (enforcing size, depth and restricted-XML rules as it
//! goes, so an oversize or forbidden construct is refused before it is buffered whole), and only
//! then quick-xml *parses* that slice into an [`Element`]. The lexer keeps its state between calls,
//! so feeding a stanza one byte at a time costs O(n), and any chunking yields the same events.

use crate::element::Element;
use bytes::{Buf, BytesMut};
use quick_xml::events::{BytesStart, Event as QEvent};
use quick_xml::XmlVersion;

/// The XML namespace, bound to the `xml` prefix by definition.
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// Limits applied while framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest top-level element (stanza) in raw bytes, from its `<` to the end of its end tag.
    pub max_stanza_bytes: usize,
    /// Deepest nesting inside a stanza (the stanza itself is depth 1).
    pub max_depth: usize,
    /// Most attributes on one element (namespace declarations count).
    pub max_attrs: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_stanza_bytes: 256 * 1024, max_depth: 64, max_attrs: 64 }
    }
}

/// The stream's root start tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    /// Local name of the root (should be `stream`).
    pub name: String,
    /// Resolved namespace of the root (should be `http://etherx.jabber.org/streams`).
    pub ns: String,
    /// Default namespace declared on the root (`jabber:client`), if any.
    pub default_ns: Option<String>,
    /// Other attributes (to, from, version, id, xml:lang), keyed like [`Element::attrs`].
    pub attrs: Vec<(String, String)>,
}

impl StreamHeader {
    /// An attribute's value.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// What the framer produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The root start tag arrived (after an optional XML declaration).
    StreamOpen(StreamHeader),
    /// A complete top-level child of the root, namespaces resolved in the root's context.
    Stanza(Element),
    /// The root's end tag arrived.
    StreamClose,
}

/// Why the stream cannot continue. Each maps to one RFC 6120 stream error.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum XmlError {
    /// Not well-formed (or not namespace-well-formed) XML, invalid UTF-8, illegal characters,
    /// text at stream level.
    #[error("not well-formed: {0}")]
    NotWellFormed(String),
    /// A construct RFC 6120 §11.1 forbids: comment, processing instruction, DTD, entity declaration.
    #[error("restricted XML: {0}")]
    RestrictedXml(&'static str),
    /// A limit was exceeded.
    #[error("policy violation: {0}")]
    PolicyViolation(String),
}

/// Lexer state at `pos`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lex {
    /// Character data (or whitespace between stanzas).
    Text,
    /// Just after `<`.
    Open,
    /// Inside a start or end tag.
    Tag {
        /// `</…>`
        end: bool,
        /// The quote character of the attribute value we are in, or 0.
        quote: u8,
        /// Whether the last significant character was `/` (an empty-element tag).
        slash: bool,
    },
    /// After `<!`, matching `[CDATA[` (count of bytes matched).
    Bang(u8),
    /// Inside CDATA; count of consecutive `]` seen (capped at 2).
    CData(u8),
    /// After `<?`, matching `xml` (count of bytes matched).
    Pi(u8),
    /// Inside the XML declaration; whether the last byte was `?`.
    Decl(bool),
}

/// The incremental stream parser.
pub struct StreamParser {
    /// Received, not yet consumed bytes.
    buf: BytesMut,
    /// Limits.
    limits: Limits,
    /// How far the lexer has scanned `buf`.
    pos: usize,
    /// Lexer state at `pos`.
    lex: Lex,
    /// Element depth: 0 before the root, 1 inside the root, 2 inside a stanza, …
    depth: usize,
    /// Where the current top-level construct (root tag or stanza) starts in `buf`.
    start: Option<usize>,
    /// Where the tag being lexed starts in `buf`.
    tag_start: usize,
    /// The root's qualified name, as written (to check its end tag).
    root_qname: Option<String>,
    /// Namespace declarations in scope at stream level (from the root), plus `xml`.
    root_scope: Vec<(String, String)>,
    /// Whether the root has been closed; only whitespace may follow.
    closed: bool,
    /// Names of the open elements inside the current stanza, concatenated, so a mismatched end
    /// tag is refused at once instead of waiting for bytes that will never balance it.
    open_names: String,
    /// End offsets of each name in `open_names`.
    open_ends: Vec<usize>,
    /// The error that poisoned the parser.
    error: Option<XmlError>,
}

impl StreamParser {
    /// A parser expecting a stream header.
    pub fn new(limits: Limits) -> StreamParser {
        StreamParser {
            buf: BytesMut::with_capacity(4096),
            limits,
            pos: 0,
            lex: Lex::Text,
            depth: 0,
            start: None,
            tag_start: 0,
            root_qname: None,
            root_scope: Vec::new(),
            closed: false,
            open_names: String::new(),
            open_ends: Vec::new(),
            error: None,
        }
    }

    /// Append received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The internal buffer, for reading straight into it.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes received and not yet consumed by an event.
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    /// Stream restart (RFC 6120 §4.3.3): forget the root and expect a new header. Unconsumed
    /// bytes stay buffered.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.lex = Lex::Text;
        self.depth = 0;
        self.start = None;
        self.root_qname = None;
        self.root_scope.clear();
        self.closed = false;
        self.open_names.clear();
        self.open_ends.clear();
        self.error = None;
    }

    fn fail<T>(&mut self, e: XmlError) -> Result<T, XmlError> {
        self.error = Some(e.clone());
        Err(e)
    }

    /// Consume `buf[..end]`, which must be where the lexer stands.
    fn consume(&mut self, end: usize) {
        self.buf.advance(end);
        self.pos -= end;
        self.tag_start = self.tag_start.saturating_sub(end);
        self.start = None;
    }

    /// The next complete event; `Ok(None)` when more bytes are needed. After an error the
    /// parser keeps returning it.
    pub fn next_event(&mut self) -> Result<Option<Event>, XmlError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        loop {
            if self.pos >= self.buf.len() {
                if self.lex == Lex::Text && self.depth <= 1 && self.start.is_none() {
                    // Whitespace between stanzas: drop it so the buffer does not grow.
                    let end = self.pos;
                    self.consume(end);
                }
                return Ok(None);
            }
            let b = self.buf[self.pos];
            match self.lex {
                Lex::Text => {
                    if b == b'<' {
                        self.tag_start = self.pos;
                        if self.depth <= 1 {
                            if self.closed {
                                return self
                                    .fail(XmlError::NotWellFormed("data after the stream closed".into()));
                            }
                            self.start = Some(self.pos);
                        }
                        self.lex = Lex::Open;
                    } else if self.depth <= 1 && !matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
                        return self.fail(XmlError::NotWellFormed("text outside a stanza".into()));
                    }
                    self.pos += 1;
                }
                Lex::Open => {
                    self.lex = match b {
                        b'/' => Lex::Tag { end: true, quote: 0, slash: false },
                        b'!' => Lex::Bang(0),
                        b'?' => {
                            if self.depth > 0 || self.root_qname.is_some() {
                                return self.fail(XmlError::RestrictedXml("processing instruction"));
                            }
                            Lex::Pi(0)
                        }
                        _ => Lex::Tag { end: false, quote: 0, slash: false },
                    };
                    self.pos += 1;
                }
                Lex::Bang(got) => {
                    if got == 0 {
                        match b {
                            b'-' => return self.fail(XmlError::RestrictedXml("comment")),
                            b'D' | b'E' | b'A' | b'N' => {
                                return self.fail(XmlError::RestrictedXml("document type declaration"))
                            }
                            b'[' => {}
                            _ => return self.fail(XmlError::NotWellFormed("bad markup after <!".into())),
                        }
                    } else if b != b"[CDATA["[got as usize] {
                        return self.fail(XmlError::NotWellFormed("bad CDATA section".into()));
                    }
                    self.pos += 1;
                    self.lex = if got + 1 == 7 {
                        if self.depth < 2 {
                            return self.fail(XmlError::NotWellFormed("CDATA outside a stanza".into()));
                        }
                        Lex::CData(0)
                    } else {
                        Lex::Bang(got + 1)
                    };
                }
                Lex::CData(brackets) => {
                    self.lex = match b {
                        b']' => Lex::CData((brackets + 1).min(2)),
                        b'>' if brackets == 2 => Lex::Text,
                        _ => Lex::CData(0),
                    };
                    self.pos += 1;
                }
                Lex::Pi(got) => {
                    if got < 3 {
                        if b != b"xml"[got as usize] {
                            return self.fail(XmlError::RestrictedXml("processing instruction"));
                        }
                        self.lex = Lex::Pi(got + 1);
                    } else if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
                        self.lex = Lex::Decl(false);
                    } else {
                        return self.fail(XmlError::RestrictedXml("processing instruction"));
                    }
                    self.pos += 1;
                }
                Lex::Decl(q) => {
                    self.pos += 1;
                    if b == b'>' && q {
                        self.lex = Lex::Text;
                        let end = self.pos;
                        self.consume(end);
                    } else {
                        self.lex = Lex::Decl(b == b'?');
                    }
                }
                Lex::Tag { end, quote, slash } => {
                    self.pos += 1;
                    if quote != 0 {
                        if b == quote {
                            self.lex = Lex::Tag { end, quote: 0, slash: false };
                        } else if b == b'<' {
                            return self.fail(XmlError::NotWellFormed("'<' in an attribute value".into()));
                        }
                    } else if b == b'"' || b == b'\'' {
                        self.lex = Lex::Tag { end, quote: b, slash: false };
                    } else if b == b'>' {
                        self.lex = Lex::Text;
                        if let Some(ev) = self.tag_complete(end, slash)? {
                            return Ok(Some(ev));
                        }
                    } else if b == b'/' {
                        self.lex = Lex::Tag { end, quote, slash: true };
                    } else if !matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
                        self.lex = Lex::Tag { end, quote, slash: false };
                    }
                }
            }
            if let Some(s) = self.start {
                if self.pos - s > self.limits.max_stanza_bytes {
                    return self.fail(XmlError::PolicyViolation(format!(
                        "stanza larger than {} bytes",
                        self.limits.max_stanza_bytes
                    )));
                }
            }
        }
    }

    /// A tag ended at `pos`. Returns an event when a top-level construct completed.
    /// The element name of the tag that just ended at `pos` (starting at `tag_start`).
    fn tag_name(&self, tag_start: usize, end_tag: bool) -> String {
        let from = tag_start + if end_tag { 2 } else { 1 };
        let bytes = &self.buf[from..self.pos];
        let len = bytes
            .iter()
            .position(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'/' | b'>'))
            .unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..len]).into_owned()
    }

    fn tag_complete(&mut self, end_tag: bool, empty: bool) -> Result<Option<Event>, XmlError> {
        let end = self.pos;
        let tag_start = self.tag_start;
        if self.depth >= 2 && !empty {
            let name = self.tag_name(tag_start, end_tag);
            if end_tag {
                let from = self.open_ends.len().checked_sub(2).map(|i| self.open_ends[i]).unwrap_or(0);
                let open = self.open_names.get(from..).unwrap_or("");
                if open != name {
                    return self.fail(XmlError::NotWellFormed(format!("</{name}> does not close <{open}>")));
                }
                self.open_names.truncate(from);
                self.open_ends.pop();
            } else {
                self.open_names.push_str(&name);
                self.open_ends.push(self.open_names.len());
            }
        } else if self.depth == 1 && !end_tag && !empty {
            let name = self.tag_name(tag_start, false);
            self.open_names.clear();
            self.open_ends.clear();
            self.open_names.push_str(&name);
            self.open_ends.push(self.open_names.len());
        }
        if end_tag {
            match self.depth {
                0 => return self.fail(XmlError::NotWellFormed("end tag before the stream header".into())),
                1 => {
                    let start = self.start.unwrap_or(0);
                    let raw = self.buf[start..end].to_vec();
                    let name = std::str::from_utf8(&raw[2..raw.len() - 1]).unwrap_or("").trim();
                    if Some(name) != self.root_qname.as_deref() {
                        return self.fail(XmlError::NotWellFormed(format!("unexpected end tag </{name}>")));
                    }
                    self.consume(end);
                    self.depth = 0;
                    self.closed = true;
                    return Ok(Some(Event::StreamClose));
                }
                2 => {
                    self.depth = 1;
                    return self.stanza_complete(end).map(Some);
                }
                _ => {
                    self.depth -= 1;
                    return Ok(None);
                }
            }
        }
        if empty {
            return match self.depth {
                0 => self.fail(XmlError::NotWellFormed("the stream root cannot be empty".into())),
                1 => self.stanza_complete(end).map(Some),
                _ => Ok(None),
            };
        }
        match self.depth {
            0 => {
                let start = self.start.unwrap_or(0);
                let header = self.parse_header(start, end)?;
                self.consume(end);
                self.depth = 1;
                Ok(Some(Event::StreamOpen(header)))
            }
            d => {
                self.depth = d + 1;
                if self.depth - 1 > self.limits.max_depth {
                    return self.fail(XmlError::PolicyViolation(format!(
                        "nesting deeper than {}",
                        self.limits.max_depth
                    )));
                }
                Ok(None)
            }
        }
    }

    fn stanza_complete(&mut self, end: usize) -> Result<Event, XmlError> {
        let start = self.start.unwrap_or(0);
        let parsed =
            checked_str(&self.buf[start..end]).and_then(|s| parse_element(s, &self.root_scope, &self.limits));
        match parsed {
            Ok(e) => {
                self.consume(end);
                Ok(Event::Stanza(e))
            }
            Err(e) => self.fail(e),
        }
    }

    fn parse_header(&mut self, start: usize, end: usize) -> Result<StreamHeader, XmlError> {
        let parsed = checked_str(&self.buf[start..end]).and_then(|s| {
            let mut reader = quick_xml::Reader::from_str(s);
            match reader.read_event() {
                Ok(QEvent::Start(bs)) => {
                    let mut scope = vec![("xml".to_owned(), XML_NS.to_owned())];
                    let (el, qname) = build(&bs, &mut scope, &self.limits)?;
                    let default_ns = scope.iter().rev().find(|(p, _)| p.is_empty()).map(|(_, u)| u.clone());
                    Ok((StreamHeader { name: el.name, ns: el.ns, default_ns, attrs: el.attrs }, qname, scope))
                }
                Ok(_) => Err(XmlError::NotWellFormed("expected a stream header".into())),
                Err(e) => Err(XmlError::NotWellFormed(e.to_string())),
            }
        });
        match parsed {
            Ok((header, qname, scope)) => {
                self.root_qname = Some(qname);
                self.root_scope = scope;
                Ok(header)
            }
            Err(e) => self.fail(e),
        }
    }
}

/// UTF-8 with no characters XML 1.0 forbids (controls other than TAB, LF, CR).
fn checked_str(bytes: &[u8]) -> Result<&str, XmlError> {
    if let Some(b) = bytes.iter().find(|b| **b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) {
        return Err(XmlError::NotWellFormed(format!("character 0x{b:02x} is not allowed")));
    }
    let s = std::str::from_utf8(bytes).map_err(|_| XmlError::NotWellFormed("invalid UTF-8".into()))?;
    if s.contains(['\u{FFFE}', '\u{FFFF}']) {
        return Err(XmlError::NotWellFormed("non-character in input".into()));
    }
    Ok(s)
}

/// Whether `c` is a character XML 1.0 allows (§2.2).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

fn lookup<'a>(scope: &'a [(String, String)], prefix: &str) -> Option<&'a str> {
    scope.iter().rev().find(|(p, _)| p == prefix).map(|(_, u)| u.as_str())
}

/// Build an element (no children) from a start tag, pushing its namespace declarations onto
/// `scope`. Returns the element and its qualified name as written.
fn build(
    bs: &BytesStart<'_>,
    scope: &mut Vec<(String, String)>,
    limits: &Limits,
) -> Result<(Element, String), XmlError> {
    let qname = bs.name().as_ref().to_owned();
    let mut plain: Vec<(String, String)> = Vec::new();
    let mut count = 0usize;
    for attr in bs.attributes() {
        let attr = attr.map_err(|e| XmlError::NotWellFormed(e.to_string()))?;
        count += 1;
        if count > limits.max_attrs {
            return Err(XmlError::PolicyViolation(format!("more than {} attributes", limits.max_attrs)));
        }
        let key = attr.key.as_ref().to_owned();
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| XmlError::NotWellFormed(e.to_string()))?
            .into_owned();
        if !value.chars().all(is_xml_char) {
            return Err(XmlError::NotWellFormed("illegal character in an attribute".into()));
        }
        if key == "xmlns" {
            scope.push((String::new(), value));
        } else if let Some(p) = key.strip_prefix("xmlns:") {
            if p == "xmlns" || (p == "xml" && value != XML_NS) || value.is_empty() {
                return Err(XmlError::NotWellFormed(format!("bad namespace declaration for {p}")));
            }
            scope.push((p.to_owned(), value));
        } else {
            plain.push((key, value));
        }
    }
    let (prefix, local) = match qname.split_once(':') {
        Some((p, l)) => (p, l),
        None => ("", qname.as_str()),
    };
    let ns = match lookup(scope, prefix) {
        Some(u) => u.to_owned(),
        None if prefix.is_empty() => String::new(),
        None => return Err(XmlError::NotWellFormed(format!("unbound prefix {prefix}"))),
    };
    let mut el = Element::new(local, ns);
    for (k, v) in plain {
        match k.split_once(':') {
            None => el.attrs.push((k, v)),
            Some(("xml", _)) => el.attrs.push((k, v)),
            Some((p, _)) => {
                if lookup(scope, p).is_none() {
                    return Err(XmlError::NotWellFormed(format!("unbound prefix {p}")));
                }
                // Attributes in foreign namespaces are not used by XMPP core; dropped.
            }
        }
    }
    Ok((el, qname))
}

/// Parse one complete element in the context of the stream's namespace declarations.
fn parse_element(s: &str, root_scope: &[(String, String)], limits: &Limits) -> Result<Element, XmlError> {
    let mut reader = quick_xml::Reader::from_str(s);
    let mut scope: Vec<(String, String)> = root_scope.to_vec();
    // (element, scope length before its declarations)
    let mut stack: Vec<(Element, usize)> = Vec::new();
    let bad = |e: quick_xml::Error| XmlError::NotWellFormed(e.to_string());
    loop {
        let ev = reader.read_event().map_err(bad)?;
        match ev {
            QEvent::Start(bs) => {
                let mark = scope.len();
                let (el, _) = build(&bs, &mut scope, limits)?;
                stack.push((el, mark));
            }
            QEvent::Empty(bs) => {
                let mark = scope.len();
                let (el, _) = build(&bs, &mut scope, limits)?;
                scope.truncate(mark);
                match stack.last_mut() {
                    Some((parent, _)) => parent.append_child(el),
                    None => return Ok(el),
                }
            }
            QEvent::End(_) => {
                let Some((el, mark)) = stack.pop() else {
                    return Err(XmlError::NotWellFormed("unbalanced end tag".into()));
                };
                scope.truncate(mark);
                match stack.last_mut() {
                    Some((parent, _)) => parent.append_child(el),
                    None => return Ok(el),
                }
            }
            QEvent::Text(t) => {
                let text = t.xml10_content();
                if let Some((parent, _)) = stack.last_mut() {
                    parent.append_text(text.into_owned());
                }
            }
            QEvent::CData(c) => {
                let text = c.xml10_content();
                if let Some((parent, _)) = stack.last_mut() {
                    parent.append_text(text.into_owned());
                }
            }
            QEvent::GeneralRef(r) => {
                let c = if r.is_char_ref() {
                    r.resolve_char_ref().map_err(bad)?.filter(|c| is_xml_char(*c))
                } else {
                    match &*r {
                        "lt" => Some('<'),
                        "gt" => Some('>'),
                        "amp" => Some('&'),
                        "apos" => Some('\''),
                        "quot" => Some('"'),
                        _ => None,
                    }
                };
                let Some(c) = c else {
                    return Err(XmlError::NotWellFormed(format!("undefined entity &{};", &*r)));
                };
                if let Some((parent, _)) = stack.last_mut() {
                    parent.append_text(c.to_string());
                }
            }
            QEvent::Comment(_) => return Err(XmlError::RestrictedXml("comment")),
            QEvent::PI(_) | QEvent::Decl(_) => return Err(XmlError::RestrictedXml("processing instruction")),
            QEvent::DocType(_) => return Err(XmlError::RestrictedXml("document type declaration")),
            QEvent::Eof => return Err(XmlError::NotWellFormed("truncated element".into())),
        }
    }
}

#[cfg(test)]
#[path = "framer_tests.rs"]
mod tests;
