//! Incremental framing of an XMPP stream: bytes in, [`Event`]s out.
//!
//! Two stages, as in mini-redis's connection framing:
//!
//! 1. **Check.** A cheap, resumable lexer scans the buffered bytes to find where the next
//!    top-level construct (XML declaration, stream header, stanza, stream end tag) ends. It tracks
//!    quotes inside tags, nesting depth, CDATA sections and the names of open elements, and it
//!    enforces the size and depth limits and the RFC 6120 §11.1 restricted-XML rules as it goes, so
//!    an oversize, too deep, mismatched or forbidden construct is refused as soon as it shows up,
//!    without waiting for (or buffering) the rest of it. The lexer's state survives between calls,
//!    so feeding a stanza one byte at a time costs O(n) overall.
//! 2. **Parse.** Only a complete construct is parsed, on exactly that slice, into an [`Element`]
//!    (or a [`StreamHeader`]); attributes are split and checked, namespaces are resolved against
//!    the stream root's declarations, references are resolved and line ends normalized, and the
//!    bytes are consumed from the buffer. The parse stage is the framer's own: the lexer has
//!    already found the structure, so what is left is a single pass over the slice. It replaced
//!    quick-xml's reader, which is kept in the tests as the oracle of a differential property
//!    test (same events, same kind of error, for any input). quick-xml still reads the XML
//!    declaration.
//!
//! Every error is reported at a position determined by the bytes alone, so any chunking of the
//! same input yields the same events and the same error.

use crate::element::Element;
use crate::name::Name;
use bytes::{Buf, BytesMut};
use quick_xml::events::Event as QEvent;
use std::borrow::Cow;

/// The XML namespace, bound to the `xml` prefix by definition.
pub const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// The namespace of namespace declarations, which may never be bound to a prefix.
const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

/// Limits applied while framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest top-level element (stanza), counted in raw bytes from its '<' to the end of its end
    /// tag. Default 256 KiB. The stream header and the XML declaration are bounded by it too.
    pub max_stanza_bytes: usize,
    /// Deepest nesting inside a stanza (the stanza itself is depth 1). Default 64.
    pub max_depth: usize,
    /// Most attributes on one element (namespace declarations count). Default 64.
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
    /// Local name of the root element (should be "stream").
    pub name: Name,
    /// Resolved namespace of the root element (should be `http://etherx.jabber.org/streams`).
    pub ns: Name,
    /// Default namespace declared on the root (xmlns='jabber:client'), if any.
    pub default_ns: Option<Name>,
    /// Other attributes (to, from, version, id, xml:lang), same key rules as [`Element::attrs`].
    pub attrs: Vec<(Name, String)>,
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
    /// The stream's root start tag arrived (after an optional `<?xml ...?>` declaration).
    StreamOpen(StreamHeader),
    /// A complete top-level child of the root, namespaces resolved using the root's declarations
    /// as context (so `<message/>` inside a stream with `xmlns='jabber:client'` gets ns
    /// "jabber:client"; `<stream:features/>` gets the streams namespace).
    Stanza(Element),
    /// The root's end tag (`</stream:stream>`) arrived.
    StreamClose,
}

/// Why the stream cannot continue. Each variant maps to one RFC 6120 stream error.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum XmlError {
    /// Not well-formed XML: mismatched/unknown end tag, bad syntax, undefined entity, unbound
    /// prefix, invalid UTF-8, characters not allowed in XML 1.0, non-whitespace text at stream
    /// level, junk before root.
    #[error("not well-formed: {0}")]
    NotWellFormed(String),
    /// Restricted XML (RFC 6120 §11.1): comment, processing instruction (other than the initial
    /// XML declaration), DOCTYPE / DTD, entity declaration.
    #[error("restricted XML: {0}")]
    RestrictedXml(&'static str),
    /// A limit was exceeded (size, depth, attribute count).
    #[error("policy violation: {0}")]
    PolicyViolation(String),
}

fn nwf(msg: impl Into<String>) -> XmlError {
    XmlError::NotWellFormed(msg.into())
}

/// Lexer state at `pos`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lex {
    /// Character data inside a stanza, or whitespace between constructs.
    Text,
    /// Just after `<`.
    Open,
    /// Inside a start tag or (`end`) an end tag.
    Tag {
        /// `</…>`.
        end: bool,
        /// The quote character of the attribute value we are in, or 0.
        quote: u8,
        /// Whether an attribute value closed just before `pos`, so whitespace, `/` or `>` must
        /// follow.
        after_value: bool,
    },
    /// After `<!`, with this many bytes of `[CDATA[` matched.
    Bang(u8),
    /// Inside a CDATA section, with this many consecutive `]` just seen (capped at 2).
    CData(u8),
    /// After `<?`, with this many bytes of `xml` matched.
    Pi(u8),
    /// Inside the XML declaration; whether the last byte was `?`.
    Decl(bool),
}

/// What is remembered of the stream root while it is open.
#[derive(Debug)]
struct Root {
    /// Its qualified name as written, to check its end tag.
    qname: Vec<u8>,
    /// Namespace declarations in scope at stream level: `xml`, then the root's own.
    scope: Vec<(Name, Name)>,
}

/// The incremental stream parser. See the [module documentation](self).
#[derive(Debug)]
pub struct StreamParser {
    /// Received, not yet consumed bytes. Index 0 is the first unconsumed byte.
    buf: BytesMut,
    /// Limits.
    limits: Limits,
    /// How far the lexer has scanned `buf`.
    pos: usize,
    /// Lexer state at `pos`.
    lex: Lex,
    /// Open elements: 0 before the root, 1 inside the root, 2 inside a stanza, …
    depth: usize,
    /// Where the pending top-level construct (declaration, root tag, stanza, root end tag)
    /// starts in `buf`; `None` between constructs.
    start: Option<usize>,
    /// Where the markup being lexed (its `<`) starts in `buf`.
    tag_start: usize,
    /// The open root, once its start tag has been parsed.
    root: Option<Root>,
    /// Whether an XML declaration may still come (nothing but whitespace seen in this stream).
    decl_allowed: bool,
    /// Whether the root has been closed; only whitespace may follow (until a reset).
    closed: bool,
    /// Name ranges in `buf` of the open elements of the current stanza, so that a mismatched end
    /// tag is refused at once rather than after waiting for bytes that can never balance it.
    open: Vec<(usize, usize)>,
    /// An event to hand out before scanning further (the close of an empty root).
    pending: Option<Event>,
    /// The parse stage's working lists, kept between stanzas.
    scratch: Scratch,
    /// The error that poisoned the parser.
    error: Option<XmlError>,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Bytes that matter to the lexer inside a tag outside attribute values.
const TAG_SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    table[b'"' as usize] = true;
    table[b'\'' as usize] = true;
    table[b'<' as usize] = true;
    table[b'>' as usize] = true;
    table
};

/// How far [`lex_tag`] got.
enum TagScan {
    /// The buffer ended inside the tag: where, and the state to resume in.
    Partial { at: usize, quote: u8, after_value: bool },
    /// The tag's `>` is at `at`.
    Closed { at: usize },
}

/// Lex a tag from `at` (inside it, in attribute value `quote` or none, `after_value` if a value
/// just closed) to its `>` or the end of `buf`, refusing `<` anywhere in it and a value not
/// followed by whitespace, `/` or `>`.
fn lex_tag(buf: &[u8], mut at: usize, quote: u8, mut after_value: bool) -> Result<TagScan, XmlError> {
    if quote != 0 {
        match value_end(buf, at, quote)? {
            Some(next) => {
                at = next;
                after_value = true;
            }
            None => return Ok(TagScan::Partial { at: buf.len(), quote, after_value: false }),
        }
    }
    loop {
        let Some(&c) = buf.get(at) else {
            return Ok(TagScan::Partial { at, quote: 0, after_value });
        };
        if after_value && !(is_ws(c) || c == b'/' || c == b'>') {
            return Err(nwf("missing whitespace between attributes"));
        }
        let Some(i) = buf[at..].iter().position(|&c| TAG_SPECIAL[usize::from(c)]) else {
            return Ok(TagScan::Partial { at: buf.len(), quote: 0, after_value: false });
        };
        at += i;
        match buf[at] {
            b'>' => return Ok(TagScan::Closed { at }),
            b'<' => return Err(nwf("'<' inside a tag")),
            quote => match value_end(buf, at + 1, quote)? {
                Some(next) => {
                    at = next;
                    after_value = true;
                }
                None => return Ok(TagScan::Partial { at: buf.len(), quote, after_value: false }),
            },
        }
    }
}

/// Just past the `quote` closing the attribute value that runs from `at`, or `None` if `buf`
/// ends first; `<` in the value is refused.
fn value_end(buf: &[u8], at: usize, quote: u8) -> Result<Option<usize>, XmlError> {
    match memchr::memchr2(quote, b'<', buf.get(at..).unwrap_or_default()) {
        Some(i) if buf[at + i] == b'<' => Err(nwf("'<' in an attribute value")),
        Some(i) => Ok(Some(at + i + 1)),
        None => Ok(None),
    }
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
            root: None,
            decl_allowed: true,
            closed: false,
            open: Vec::new(),
            pending: None,
            scratch: Scratch::default(),
            error: None,
        }
    }

    /// A parser already inside a stream whose root declared `default_ns` (and nothing else),
    /// holding `bytes`: what [`parse_element`] runs.
    fn new_inside_stream(limits: Limits, default_ns: &'static str, bytes: &[u8]) -> StreamParser {
        let scope = vec![(Name::from("xml"), Name::from(XML_NS)), (Name::default(), Name::from(default_ns))];
        StreamParser {
            buf: BytesMut::from(bytes),
            limits,
            pos: 0,
            lex: Lex::Text,
            depth: 1,
            start: None,
            tag_start: 0,
            root: Some(Root { qname: Vec::new(), scope }),
            decl_allowed: false,
            closed: false,
            open: Vec::new(),
            pending: None,
            scratch: Scratch::default(),
            error: None,
        }
    }

    /// Append received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The internal buffer, so a caller can `read_buf` straight into it. Only append to it.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Give the buffer's memory back when nothing is buffered, so an idle connection holds no
    /// read buffer; the next reader reserves again.
    pub fn release_idle_buffer(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
        self.scratch = Scratch::default();
    }

    /// Bytes received but not yet consumed by an event.
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    /// Stream restart (after STARTTLS / SASL success, RFC 6120 §4.3.3): forget the root and
    /// expect a new header (optionally preceded by an XML declaration). Keeps unconsumed buffered
    /// bytes; they are scanned again as the start of the new stream. A poisoned parser stays
    /// poisoned.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.lex = Lex::Text;
        self.depth = 0;
        self.start = None;
        self.tag_start = 0;
        self.root = None;
        self.decl_allowed = true;
        self.closed = false;
        self.open.clear();
        self.pending = None;
    }

    /// Next complete event, `Ok(None)` if more bytes are needed. After an `Err` the parser is
    /// poisoned and keeps returning the same error. Never panics on any input.
    pub fn next_event(&mut self) -> Result<Option<Event>, XmlError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if let Some(ev) = self.pending.take() {
            return Ok(Some(ev));
        }
        let result = self.scan();
        if let Err(e) = &result {
            self.error = Some(e.clone());
        }
        result
    }

    /// Consume `buf[..end]`; `end` is where the lexer stands after a complete construct.
    fn consume(&mut self, end: usize) {
        let end = end.min(self.buf.len());
        self.buf.advance(end);
        self.pos = self.pos.saturating_sub(end);
        self.tag_start = self.tag_start.saturating_sub(end);
        self.start = None;
    }

    /// Markup starts at `pos` (a `<`).
    fn open_markup(&mut self) {
        self.tag_start = self.pos;
        self.lex = Lex::Open;
        self.pos += 1;
    }

    /// Run the lexer until an event, an error, or the end of the buffer.
    fn scan(&mut self) -> Result<Option<Event>, XmlError> {
        if self.pos > self.buf.len() {
            // Only possible if the caller shrank the buffer through `buffer_mut`.
            return Err(nwf("buffered bytes were removed under the parser"));
        }
        loop {
            let len = self.buf.len();
            if self.pos >= len {
                if self.lex == Lex::Text && self.depth <= 1 && self.start.is_none() {
                    // Whitespace between constructs: drop it so keepalives do not pile up.
                    self.consume(self.pos);
                }
                return Ok(None);
            }
            // The pending construct may not extend to index `cap`.
            let cap = match self.start {
                Some(s) => s.saturating_add(self.limits.max_stanza_bytes),
                None => usize::MAX,
            };
            if self.pos >= cap {
                return Err(XmlError::PolicyViolation(format!(
                    "stanza larger than {} bytes",
                    self.limits.max_stanza_bytes
                )));
            }
            let end = len.min(cap);
            let b = self.buf[self.pos];
            match self.lex {
                Lex::Text if self.depth >= 2 => match memchr::memchr(b'<', &self.buf[self.pos..end]) {
                    Some(i) => {
                        self.pos += i;
                        self.open_markup();
                    }
                    None => self.pos = end,
                },
                Lex::Text => {
                    if b == b'<' {
                        if self.closed {
                            return Err(nwf("markup after the end of the stream"));
                        }
                        self.start = Some(self.pos);
                        self.open_markup();
                    } else if is_ws(b) {
                        self.pos += 1;
                    } else if self.closed {
                        return Err(nwf("text after the end of the stream"));
                    } else if self.depth == 0 {
                        return Err(nwf("junk before the stream header"));
                    } else {
                        return Err(nwf("text outside a stanza"));
                    }
                }
                Lex::Open => {
                    self.pos += 1;
                    self.lex = match b {
                        b'/' => Lex::Tag { end: true, quote: 0, after_value: false },
                        b'!' => Lex::Bang(0),
                        b'?' if self.depth == 0 && self.decl_allowed => Lex::Pi(0),
                        b'?' => return Err(XmlError::RestrictedXml("processing instruction")),
                        _ => Lex::Tag { end: false, quote: 0, after_value: false },
                    };
                }
                Lex::Bang(got) => {
                    const CDATA: &[u8] = b"[CDATA[";
                    if got == 0 {
                        match b {
                            b'-' => return Err(XmlError::RestrictedXml("comment")),
                            b'D' => return Err(XmlError::RestrictedXml("document type declaration")),
                            b'E' => return Err(XmlError::RestrictedXml("entity or element declaration")),
                            b'A' | b'N' => return Err(XmlError::RestrictedXml("markup declaration")),
                            b'[' if self.depth < 2 => return Err(nwf("CDATA section outside a stanza")),
                            b'[' => {}
                            _ => return Err(nwf("bad markup after '<!'")),
                        }
                    } else if CDATA.get(usize::from(got)) != Some(&b) {
                        return Err(nwf("bad CDATA section start"));
                    }
                    self.pos += 1;
                    self.lex =
                        if usize::from(got) + 1 == CDATA.len() { Lex::CData(0) } else { Lex::Bang(got + 1) };
                }
                Lex::CData(mut brackets) => {
                    let mut i = self.pos;
                    let mut done = false;
                    while i < end {
                        let c = self.buf[i];
                        i += 1;
                        if c == b'>' && brackets == 2 {
                            done = true;
                            break;
                        }
                        brackets = if c == b']' { (brackets + 1).min(2) } else { 0 };
                    }
                    self.pos = i;
                    self.lex = if done { Lex::Text } else { Lex::CData(brackets) };
                }
                Lex::Pi(got) => {
                    if let Some(&want) = b"xml".get(usize::from(got)) {
                        if b != want {
                            return Err(XmlError::RestrictedXml("processing instruction"));
                        }
                        self.lex = Lex::Pi(got + 1);
                    } else if is_ws(b) {
                        self.lex = Lex::Decl(false);
                    } else {
                        return Err(XmlError::RestrictedXml("processing instruction"));
                    }
                    self.pos += 1;
                }
                Lex::Decl(question) => {
                    // Up to the next `>`: it ends the declaration if a `?` comes just before.
                    let Some(i) = memchr::memchr(b'>', &self.buf[self.pos..end]) else {
                        self.lex = Lex::Decl(self.buf[end - 1] == b'?');
                        self.pos = end;
                        continue;
                    };
                    let gt = self.pos + i;
                    let before = if i == 0 { question } else { self.buf[gt - 1] == b'?' };
                    self.pos = gt + 1;
                    if before {
                        self.lex = Lex::Text;
                        let start = self.start.unwrap_or(self.tag_start);
                        check_decl(&self.buf[start..self.pos])?;
                        self.decl_allowed = false;
                        self.consume(self.pos);
                    } else {
                        self.lex = Lex::Decl(false);
                    }
                }
                Lex::Tag { end: end_tag, quote, after_value } => {
                    // The whole tag as far as the buffer goes, in this one turn: the lexer only
                    // needs its quotes (to skip values), a stray `<`, and its `>`.
                    match lex_tag(&self.buf[..end], self.pos, quote, after_value)? {
                        TagScan::Partial { at, quote, after_value } => {
                            self.pos = at;
                            self.lex = Lex::Tag { end: end_tag, quote, after_value };
                        }
                        TagScan::Closed { at } => {
                            self.pos = at + 1;
                            self.lex = Lex::Text;
                            // An empty-element tag ends in `/>`; whitespace may not come between,
                            // but a `/` before whitespace is taken as meant for it, so the parse
                            // stage refuses the tag at once instead of waiting for an end tag.
                            let inside = &self.buf[self.tag_start + 1..at];
                            let empty = inside.iter().rev().find(|&&c| !is_ws(c)) == Some(&b'/');
                            if let Some(ev) = self.tag_complete(end_tag, empty)? {
                                return Ok(Some(ev));
                            }
                        }
                    }
                }
            }
        }
    }

    /// The name range of the start tag that just ended: from after `<` to whitespace, `/` or `>`.
    fn start_tag_name(&self) -> (usize, usize) {
        let from = self.tag_start + 1;
        let to = self.buf[from..self.pos]
            .iter()
            .position(|&c| is_ws(c) || c == b'/' || c == b'>')
            .map_or(self.pos, |i| from + i);
        (from, to)
    }

    /// The name of the end tag that just ended, checking it is `</name S? >`.
    fn end_tag_name(&self) -> Result<&[u8], XmlError> {
        let tag = self.buf.get(self.tag_start + 2..self.pos.saturating_sub(1)).unwrap_or(&[]);
        let len = tag.iter().position(|&c| is_ws(c)).unwrap_or(tag.len());
        let (name, rest) = tag.split_at(len);
        if name.is_empty() || !rest.iter().all(|&c| is_ws(c)) {
            return Err(nwf(format!("malformed end tag </{}>", String::from_utf8_lossy(tag))));
        }
        Ok(name)
    }

    /// A tag ended at `pos` (just after its `>`). Returns an event when it completed a
    /// top-level construct.
    fn tag_complete(&mut self, end_tag: bool, empty: bool) -> Result<Option<Event>, XmlError> {
        let tag_end = self.pos;
        if end_tag {
            let name = self.end_tag_name()?;
            return match self.depth {
                0 => Err(nwf("end tag before the stream header")),
                1 => {
                    let root = self.root.as_ref().map(|r| r.qname.as_slice()).unwrap_or(&[]);
                    if name != root {
                        return Err(nwf(format!(
                            "unexpected end tag </{}> at stream level",
                            String::from_utf8_lossy(name)
                        )));
                    }
                    self.consume(tag_end);
                    self.depth = 0;
                    self.root = None;
                    self.closed = true;
                    Ok(Some(Event::StreamClose))
                }
                depth => {
                    let open = self.open.last().and_then(|&(a, b)| self.buf.get(a..b)).unwrap_or(&[]);
                    if name != open {
                        return Err(nwf(format!(
                            "</{}> does not close <{}>",
                            String::from_utf8_lossy(name),
                            String::from_utf8_lossy(open)
                        )));
                    }
                    self.open.pop();
                    self.depth = depth - 1;
                    if self.depth == 1 {
                        self.stanza_complete(tag_end).map(Some)
                    } else {
                        Ok(None)
                    }
                }
            };
        }
        match self.depth {
            0 => {
                let start = self.start.unwrap_or(self.tag_start);
                #[cfg(test)]
                let parse_header = if oracle::active() { oracle::parse_header } else { parse_header };
                let (header, root) = parse_header(&self.buf[start..tag_end], &self.limits)?;
                self.consume(tag_end);
                self.decl_allowed = false;
                if empty {
                    // `<stream:stream .../>`: a stream that opens and closes at once.
                    self.closed = true;
                    self.pending = Some(Event::StreamClose);
                } else {
                    self.depth = 1;
                    self.root = Some(root);
                }
                Ok(Some(Event::StreamOpen(header)))
            }
            depth => {
                // This element sits at stanza depth `depth` (the stanza itself is 1).
                if depth > self.limits.max_depth {
                    return Err(XmlError::PolicyViolation(format!(
                        "nesting deeper than {}",
                        self.limits.max_depth
                    )));
                }
                if empty {
                    return if depth == 1 { self.stanza_complete(tag_end).map(Some) } else { Ok(None) };
                }
                let name = self.start_tag_name();
                self.open.push(name);
                self.depth = depth + 1;
                Ok(None)
            }
        }
    }

    /// The stanza ending at `end` is complete: parse and consume it.
    fn stanza_complete(&mut self, end: usize) -> Result<Event, XmlError> {
        let start = self.start.unwrap_or(0);
        let scope = self.root.as_ref().map(|r| r.scope.as_slice()).unwrap_or(&[]);
        #[cfg(test)]
        let parse_stanza = if oracle::active() { oracle::parse_stanza } else { parse_stanza };
        let element = parse_stanza(&self.buf[start..end], scope, &self.limits, &mut self.scratch)?;
        self.consume(end);
        self.open.clear();
        Ok(Event::Stanza(element))
    }
}

/// UTF-8 with no character XML 1.0 forbids.
fn checked_str(bytes: &[u8]) -> Result<&str, XmlError> {
    // One branch-free pass over the bytes (it vectorizes) finds whether any is a C0 control
    // other than whitespace, or is not ASCII; only then is the slower search needed.
    let (mut control, mut high) = (false, false);
    for &b in bytes {
        control |= b < 0x20 && !is_ws(b);
        high |= b >= 0x80;
    }
    if control {
        if let Some(b) = bytes.iter().find(|&&b| b < 0x20 && !is_ws(b)) {
            return Err(nwf(format!("character U+{b:04X} is not allowed in XML")));
        }
    }
    let s = std::str::from_utf8(bytes).map_err(|_| nwf("invalid UTF-8"))?;
    // Every ASCII character left is an XML character; beyond ASCII some are not (U+FFFE, U+FFFF).
    if high {
        if let Some(c) = s.chars().find(|&c| !is_xml_char(c)) {
            return Err(nwf(format!("character U+{:04X} is not allowed in XML", u32::from(c))));
        }
    }
    Ok(s)
}

/// Whether `c` is a character XML 1.0 allows (§2.2 Char).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// XML 1.0 (5th edition) NameStartChar, without `:`.
fn is_name_start_char(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

/// XML 1.0 (5th edition) NameChar, without `:`.
fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// Namespaces in XML's NCName.
fn is_ncname(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_ascii() {
        // The common case, without decoding characters or testing the non-ASCII ranges.
        let start = |c: u8| c.is_ascii_alphabetic() || c == b'_';
        return b.first().is_some_and(|&c| start(c))
            && b[1..].iter().all(|&c| start(c) || c.is_ascii_digit() || c == b'-' || c == b'.');
    }
    let mut chars = s.chars();
    chars.next().is_some_and(is_name_start_char) && chars.all(is_name_char)
}

/// Split a QName into (prefix, local part); the prefix is "" when there is none.
fn split_qname(s: &str) -> Result<(&str, &str), XmlError> {
    // One pass over an ASCII name: each part must start with a letter or `_` and go on with
    // letters, digits, `_`, `-` or `.`; at most one `:` may split it, with a part each side.
    let mut colon = None;
    let mut part_start = true;
    let mut ok = true;
    for (i, &c) in s.as_bytes().iter().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => part_start = false,
            b'0'..=b'9' | b'-' | b'.' => ok &= !part_start,
            b':' => {
                ok &= !part_start && colon.is_none();
                colon = Some(i);
                part_start = true;
            }
            0x80.. => return split_qname_unicode(s),
            _ => ok = false,
        }
    }
    if !ok || part_start {
        return Err(nwf(format!("bad name '{s}'")));
    }
    Ok(match colon {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => ("", s),
    })
}

/// [`split_qname`] for a name with characters beyond ASCII.
fn split_qname_unicode(s: &str) -> Result<(&str, &str), XmlError> {
    // A prefix, when there is a ':', must be an NCName (so a leading ':' is refused).
    let (prefix, local, prefix_ok) = match s.split_once(':') {
        Some((prefix, local)) => (prefix, local, is_ncname(prefix)),
        None => ("", s, true),
    };
    if !prefix_ok || !is_ncname(local) {
        return Err(nwf(format!("bad name '{s}'")));
    }
    Ok((prefix, local))
}

/// What an attribute of a start tag is, by its qualified name.
#[derive(Clone, Copy)]
enum AttributeKind<'a> {
    /// `xmlns`: declares the default namespace.
    DefaultNamespace,
    /// `xmlns:p`: declares prefix `p`.
    Namespace(&'a str),
    /// No prefix.
    Plain,
    /// `xml:…` (`xml:lang`).
    Xml,
    /// Another prefix: an attribute in some other namespace.
    Foreign,
}

/// Classify an attribute name, checking it is a QName. Lengths are compared before text: this
/// runs for every attribute of every stanza.
fn attribute_kind(key: &str) -> Result<AttributeKind<'_>, XmlError> {
    let (prefix, local) = split_qname(key)?;
    Ok(match prefix.len() {
        0 if local.len() == 5 && local == "xmlns" => AttributeKind::DefaultNamespace,
        0 => AttributeKind::Plain,
        5 if prefix == "xmlns" => AttributeKind::Namespace(local),
        3 if prefix == "xml" => AttributeKind::Xml,
        _ => AttributeKind::Foreign,
    })
}

fn lookup<'a>(scope: &'a [(Name, Name)], prefix: &str) -> Option<&'a Name> {
    scope.iter().rev().find(|(p, _)| *p == prefix).map(|(_, u)| u)
}

/// The namespace declarations in scope inside a stanza: the stream root's, shared and never
/// copied, under the stanza's own (innermost last), which are the only ones it allocates.
struct Scope<'r> {
    root: &'r [(Name, Name)],
    local: Vec<(Name, Name)>,
}

impl Scope<'_> {
    fn lookup(&self, prefix: &str) -> Option<&Name> {
        lookup(&self.local, prefix).or_else(|| lookup(self.root, prefix))
    }
}

/// The XML declarations nearly every client sends, accepted without parsing them.
const COMMON_DECLS: [&[u8]; 4] = [
    b"<?xml version='1.0'?>",
    b"<?xml version=\"1.0\"?>",
    b"<?xml version='1.0' encoding='UTF-8'?>",
    b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
];

/// Check an XML declaration (`<?xml version='1.0' encoding='UTF-8'?>`).
fn check_decl(raw: &[u8]) -> Result<(), XmlError> {
    if COMMON_DECLS.contains(&raw) {
        return Ok(());
    }
    parse_decl(raw)
}

/// [`check_decl`] by reading the declaration.
fn parse_decl(raw: &[u8]) -> Result<(), XmlError> {
    let s = checked_str(raw)?;
    let mut reader = quick_xml::Reader::from_str(s);
    match reader.read_event() {
        Ok(QEvent::Decl(decl)) => {
            let version = decl.version().map_err(|e| nwf(format!("bad XML declaration: {e}")))?;
            let digits = version.strip_prefix("1.").unwrap_or("");
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(nwf(format!("unsupported XML version {version}")));
            }
            if let Some(encoding) = decl.encoding() {
                let encoding = encoding.map_err(|e| nwf(format!("bad XML declaration: {e}")))?;
                if !encoding.eq_ignore_ascii_case("UTF-8") {
                    return Err(nwf(format!("unsupported encoding {encoding}")));
                }
            }
            Ok(())
        }
        Ok(_) => Err(nwf("bad XML declaration")),
        Err(e) => Err(nwf(e.to_string())),
    }
}

/// The attributes of a start tag: `(name, raw value)` pairs, the value as written between its
/// quotes. Syntax errors (no `=`, an unquoted or unterminated value, no whitespace before the
/// next attribute) end the iteration with an error.
struct Attributes<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<(&'a str, &'a str), XmlError>;

    fn next(&mut self) -> Option<Self::Item> {
        let s = skip_ws(self.rest);
        if s.is_empty() {
            return None;
        }
        let (key, value, rest) = match split_attribute(s) {
            Ok(parts) => parts,
            Err(e) => {
                self.rest = "";
                return Some(Err(e));
            }
        };
        if rest.as_bytes().first().is_some_and(|&c| !is_ws(c)) {
            self.rest = "";
            return Some(Err(nwf("missing whitespace between attributes")));
        }
        self.rest = rest;
        Some(Ok((key, value)))
    }
}

/// `name S? = S? quote value quote` at the start of `s`: the name, the raw value and what follows.
fn split_attribute(s: &str) -> Result<(&str, &str, &str), XmlError> {
    let name_len = s.bytes().position(|c| c == b'=' || is_ws(c)).unwrap_or(s.len());
    let (key, after) = s.split_at(name_len);
    if key.is_empty() {
        return Err(nwf("attribute without a name"));
    }
    let Some(after) = skip_ws(after).strip_prefix('=') else {
        return Err(nwf(format!("attribute '{key}' without a value")));
    };
    let after = skip_ws(after);
    let quote = match after.as_bytes().first() {
        Some(&q @ (b'"' | b'\'')) => q as char,
        _ => return Err(nwf(format!("attribute '{key}' has an unquoted value"))),
    };
    let body = &after[1..];
    let end = body
        .bytes()
        .position(|c| c == quote as u8)
        .ok_or_else(|| nwf(format!("attribute '{key}' has an unterminated value")))?;
    Ok((key, &body[..end], &body[end + 1..]))
}

/// `s` without its leading XML whitespace.
fn skip_ws(s: &str) -> &str {
    // Whitespace is ASCII, so the index is a character boundary.
    &s[s.bytes().position(|c| !is_ws(c)).unwrap_or(s.len())..]
}

/// Where the first of the bytes `wanted` tells is in `s` (all ASCII, so a character boundary).
fn find_byte(s: &str, wanted: impl Fn(u8) -> bool) -> Option<usize> {
    s.bytes().position(wanted)
}

/// A character or entity reference at the start of `s` (just after its `&`): the character and
/// the bytes it takes up to and including its `;`. Only XML's five predefined entities and
/// references to characters XML allows resolve (RFC 6120 §11.1 forbids declaring others).
fn reference(s: &str) -> Result<(char, usize), XmlError> {
    let end = s.find(';').ok_or_else(|| nwf("unterminated reference"))?;
    let body = &s[..end];
    let c = match body {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => body.strip_prefix('#').and_then(|n| {
            let (digits, radix) = match n.strip_prefix('x') {
                Some(hex) => (hex, 16),
                None => (n, 10),
            };
            // CharRef is '&#' [0-9]+ ';' or '&#x' [0-9a-fA-F]+ ';': no sign, no other prefix.
            let ok = !digits.is_empty() && digits.bytes().all(|b| (b as char).is_digit(radix));
            ok.then(|| u32::from_str_radix(digits, radix).ok()).flatten().and_then(char::from_u32)
        }),
    };
    match c.filter(|&c| is_xml_char(c)) {
        Some(c) => Ok((c, end + 1)),
        None => {
            let shown: String = body.chars().take(16).collect();
            Err(nwf(format!("undefined or illegal reference &{shown};")))
        }
    }
}

/// An attribute value normalized as XML 1.0 §3.3.3 says for CDATA attributes: references
/// resolved, and each literal tab, line feed, carriage return or CR LF pair one space (a
/// referenced one is kept). Borrowed when there is nothing to do.
fn attribute_value(raw: &str) -> Result<Cow<'_, str>, XmlError> {
    if !raw.bytes().any(|b| matches!(b, b'&' | b'\t' | b'\n' | b'\r')) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = find_byte(rest, |c| matches!(c, b'&' | b'\t' | b'\n' | b'\r')) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        rest = match tail.as_bytes()[0] {
            b'&' => {
                let (c, used) = reference(&tail[1..])?;
                out.push(c);
                &tail[1 + used..]
            }
            b'\r' if tail.as_bytes().get(1) == Some(&b'\n') => {
                out.push(' ');
                &tail[2..]
            }
            _ => {
                out.push(' ');
                &tail[1..]
            }
        };
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// Character data as XML 1.0 delivers it: references resolved, and line ends normalized
/// (§2.11: CR LF and a lone CR become LF; a referenced CR is kept), appended to `out`.
fn push_text(out: &mut String, raw: &str, references: bool) -> Result<(), XmlError> {
    let mut rest = raw;
    while let Some(i) = find_byte(rest, |c| c == b'\r' || (references && c == b'&')) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        rest = if tail.as_bytes()[0] == b'&' {
            let (c, used) = reference(&tail[1..])?;
            out.push(c);
            &tail[1 + used..]
        } else {
            out.push('\n');
            if tail.as_bytes().get(1) == Some(&b'\n') {
                &tail[2..]
            } else {
                &tail[1..]
            }
        };
    }
    out.push_str(rest);
    Ok(())
}

/// Build an element (without children) from a start tag's name and attributes (the text after
/// the name, up to `>` or `/>`), pushing its namespace declarations onto `scope.local`.
fn start_element(
    qname: &str,
    attributes: &str,
    scope: &mut Scope<'_>,
    limits: &Limits,
) -> Result<Element, XmlError> {
    // The raw bytes were checked for characters XML forbids; only a reference can bring one in,
    // and `reference` refuses those.
    let attrs =
        Attributes { rest: attributes }.map(|a| a.and_then(|(key, raw)| Ok((key, attribute_value(raw)?))));
    element_from_tag(qname, attrs, scope, limits)
}

/// Build an element (without children) from its qualified name and its attributes (qualified
/// name and normalized value each, in document order): resolve its namespace, check and push
/// its namespace declarations onto `scope.local`, refuse an attribute given twice, and drop the
/// attributes of other namespaces.
fn element_from_tag<'a>(
    qname: &str,
    attributes: impl Iterator<Item = Result<(&'a str, Cow<'a, str>), XmlError>>,
    scope: &mut Scope<'_>,
    limits: &Limits,
) -> Result<Element, XmlError> {
    let (prefix, local) = split_qname(qname)?;
    // Attributes go straight into the element's list; one with a namespace prefix (rare) is
    // checked, and dropped, once every declaration of the tag is known.
    let mut attrs: Vec<(Name, String)> = Vec::new();
    let mut prefixed = false;
    let declared = scope.local.len();
    for (count, attr) in attributes.enumerate() {
        if count >= limits.max_attrs {
            return Err(XmlError::PolicyViolation(format!("more than {} attributes", limits.max_attrs)));
        }
        let (key, value) = attr?;
        let kind = attribute_kind(key)?;
        // Unique Att Spec (XML 1.0 §3.1), against what this tag has given so far.
        let twice = match kind {
            AttributeKind::DefaultNamespace => scope.local[declared..].iter().any(|(p, _)| p.is_empty()),
            AttributeKind::Namespace(p) => scope.local[declared..].iter().any(|(q, _)| *q == p),
            AttributeKind::Plain | AttributeKind::Xml | AttributeKind::Foreign => {
                attrs.iter().any(|(k, _)| *k == key)
            }
        };
        if twice {
            return Err(nwf(format!("attribute '{key}' given twice")));
        }
        match kind {
            AttributeKind::DefaultNamespace => {
                if value == XML_NS || value == XMLNS_NS {
                    return Err(nwf(format!("{value} cannot be the default namespace")));
                }
                // Interned: every element in its scope then shares the URI without a copy.
                scope.local.push((Name::default(), Name::interned(&value)));
            }
            AttributeKind::Namespace(p) => {
                let reserved = p == "xmlns" || (p == "xml") != (value == XML_NS) || value == XMLNS_NS;
                if reserved || value.is_empty() {
                    return Err(nwf(format!("bad namespace declaration xmlns:{p}='{value}'")));
                }
                scope.local.push((Name::interned(p), Name::interned(&value)));
            }
            AttributeKind::Plain | AttributeKind::Xml => {
                attrs.push((Name::interned(key), value.into_owned()))
            }
            AttributeKind::Foreign => {
                prefixed = true;
                attrs.push((Name::interned(key), value.into_owned()));
            }
        }
    }
    let ns = match scope.lookup(prefix) {
        Some(uri) => uri.clone(),
        None if prefix.is_empty() => Name::default(),
        None => return Err(nwf(format!("unbound prefix '{prefix}'"))),
    };
    if ns == XML_NS {
        return Err(nwf("elements cannot be in the XML namespace"));
    }
    if prefixed {
        let mut unbound = None;
        attrs.retain(|(key, _)| match key.split_once(':') {
            None | Some(("xml", _)) => true,
            Some((p, _)) => {
                if scope.lookup(p).is_none() && unbound.is_none() {
                    unbound = Some(p.to_owned());
                }
                // Attributes in other namespaces carry nothing XMPP core uses: dropped.
                false
            }
        });
        if let Some(p) = unbound {
            return Err(nwf(format!("unbound prefix '{p}'")));
        }
    }
    let mut element = Element::new(Name::interned(local), ns);
    element.attrs = attrs;
    Ok(element)
}

/// A start tag's inside (between `<` and `>`) split into its name, its attribute text, and
/// whether it is an empty-element tag (`…/>`).
fn split_start_tag(inside: &str) -> (&str, &str, bool) {
    let (inside, empty) = match inside.strip_suffix('/') {
        Some(i) => (i, true),
        None => (inside, false),
    };
    let name_len = find_byte(inside, is_ws).unwrap_or(inside.len());
    let (name, attributes) = inside.split_at(name_len);
    (name, attributes, empty)
}

/// Where the tag starting at `from` (a `<`) ends: the index of its `>`, skipping quoted values.
fn tag_end(s: &[u8], from: usize) -> Option<usize> {
    let mut at = from + 1;
    loop {
        at += memchr::memchr3(b'>', b'"', b'\'', s.get(at..)?)?;
        let c = s[at];
        if c == b'>' {
            return Some(at);
        }
        at += 1 + memchr::memchr(c, s.get(at + 1..)?)? + 1;
    }
}

/// Parse a complete root start tag into the header and what is kept of the root.
fn parse_header(raw: &[u8], limits: &Limits) -> Result<(StreamHeader, Root), XmlError> {
    let s = checked_str(raw)?;
    // Exactly one tag: its first unquoted `>` is the last byte.
    if !s.starts_with('<') || tag_end(s.as_bytes(), 0) != Some(s.len().saturating_sub(1)) {
        return Err(nwf("malformed stream header"));
    }
    let inside = &s[1..s.len() - 1];
    let (qname, attributes, _) = split_start_tag(inside);
    let mut scope = Scope { root: &[], local: vec![(Name::from("xml"), Name::from(XML_NS))] };
    let element = start_element(qname, attributes, &mut scope, limits)?;
    let scope = scope.local;
    let default_ns = scope.iter().rev().find(|(p, _)| p.is_empty()).map(|(_, u)| u.clone());
    let header = StreamHeader { name: element.name, ns: element.ns, default_ns, attrs: element.attrs };
    Ok((header, Root { qname: qname.as_bytes().to_vec(), scope }))
}

/// Parse one self-contained element (a stanza stored, or carried in a cluster envelope) outside
/// any stream: its namespaces resolve as inside a stream whose default namespace is
/// `default_ns`. It goes through the same lexer and parser as a streamed stanza, so the same
/// input is accepted or refused with the same error (restricted XML, well-formedness, the size,
/// depth and attribute limits); anything but whitespace after the element is refused. Only the
/// stream header is skipped: no synthetic header is written and parsed for each element.
pub fn parse_element(raw: &[u8], default_ns: &'static str, limits: &Limits) -> Result<Element, XmlError> {
    let mut p = StreamParser::new_inside_stream(*limits, default_ns, raw);
    match p.next_event()? {
        Some(Event::Stanza(element)) => match p.next_event()? {
            None if p.buffered_len() == 0 => Ok(element),
            _ => Err(nwf("bytes after the element")),
        },
        _ => Err(nwf("not one complete element")),
    }
}

/// Parse one complete element in the context of the stream root's namespace declarations.
///
/// The lexer has already found the element's extent and refused what restricted XML forbids,
/// unbalanced tags, `<` in attribute values and oversize or too deep input; this stage checks
/// the rest of the syntax (attributes, references, names) as it builds the tree, so it also
/// stands on its own.
fn parse_stanza(
    raw: &[u8],
    root_scope: &[(Name, Name)],
    limits: &Limits,
    scratch: &mut Scratch,
) -> Result<Element, XmlError> {
    let mut scope = Scope { root: root_scope, local: std::mem::take(&mut scratch.local) };
    let mut stack = std::mem::take(&mut scratch.stack);
    let parsed = parse_stanza_with(raw, &mut scope, &mut stack, limits);
    scope.local.clear();
    stack.clear();
    scratch.local = scope.local;
    scratch.stack = stack;
    parsed
}

/// The parse stage's working lists: the namespace declarations a stanza makes, and its open
/// elements. Kept between stanzas, so parsing one allocates only what it returns.
#[derive(Debug, Default)]
struct Scratch {
    local: Vec<(Name, Name)>,
    /// Each open element with where its qualified name is in the stanza, and the length of
    /// `local` before its declarations.
    stack: Vec<(Element, std::ops::Range<usize>, usize)>,
}

/// [`parse_stanza`] with its working lists (empty) lent.
fn parse_stanza_with(
    raw: &[u8],
    scope: &mut Scope<'_>,
    stack: &mut Vec<(Element, std::ops::Range<usize>, usize)>,
    limits: &Limits,
) -> Result<Element, XmlError> {
    let s = checked_str(raw)?;
    let b = s.as_bytes();
    let mut at = 0;
    loop {
        if at >= b.len() {
            return Err(nwf("truncated stanza"));
        }
        if b[at] != b'<' {
            // Character data, up to the next markup.
            let end = memchr::memchr(b'<', &b[at..]).map_or(s.len(), |i| at + i);
            let text = &s[at..end];
            if memchr::memchr(b'>', text.as_bytes()).is_some() && text.contains("]]>") {
                return Err(nwf("']]>' in character data"));
            }
            let Some((parent, _, _)) = stack.last_mut() else {
                return Err(nwf("text outside the stanza"));
            };
            parent.append_text_with(text.len(), |out| push_text(out, text, true))?;
            at = end;
            continue;
        }
        match b.get(at + 1) {
            Some(b'/') => {
                let end = s[at..].find('>').map(|i| at + i).ok_or_else(|| nwf("truncated stanza"))?;
                let name = s[at + 2..end].trim_end_matches([' ', '\t', '\r', '\n']);
                let Some((element, qname, mark)) = stack.pop() else {
                    return Err(nwf("unbalanced end tag"));
                };
                let qname = &s[qname];
                if name != qname {
                    return Err(nwf(format!("</{name}> does not close <{qname}>")));
                }
                scope.local.truncate(mark);
                at = end + 1;
                if let Some(done) = finished(stack, element, at == b.len()) {
                    return done;
                }
            }
            Some(b'!') => {
                const CDATA: &str = "<![CDATA[";
                if !s[at..].starts_with(CDATA) {
                    return Err(if s[at..].starts_with("<!--") {
                        XmlError::RestrictedXml("comment")
                    } else {
                        XmlError::RestrictedXml("document type declaration")
                    });
                }
                let from = at + CDATA.len();
                let end = s[from..].find("]]>").map(|i| from + i).ok_or_else(|| nwf("truncated stanza"))?;
                let Some((parent, _, _)) = stack.last_mut() else {
                    return Err(nwf("CDATA outside the stanza"));
                };
                parent.append_text_with(end - from, |out| push_text(out, &s[from..end], false))?;
                at = end + 3;
            }
            Some(b'?') => return Err(XmlError::RestrictedXml("processing instruction")),
            _ => {
                // The framer's lexer enforces this for a streamed stanza; `parse_element` relies on it.
                if stack.len() >= limits.max_depth {
                    return Err(XmlError::PolicyViolation(format!(
                        "nesting deeper than {}",
                        limits.max_depth
                    )));
                }
                let end = tag_end(b, at).ok_or_else(|| nwf("truncated stanza"))?;
                let (qname, attributes, empty) = split_start_tag(&s[at + 1..end]);
                // The name opens the tag, just after its `<`.
                let name_at = at + 1..at + 1 + qname.len();
                let mark = scope.local.len();
                let element = start_element(qname, attributes, scope, limits)?;
                at = end + 1;
                if !empty {
                    stack.push((element, name_at, mark));
                    continue;
                }
                scope.local.truncate(mark);
                if let Some(done) = finished(stack, element, at == b.len()) {
                    return done;
                }
            }
        }
    }
}

/// A complete element goes into its parent, if it has one. Otherwise it is the stanza, which
/// must end where the slice does (`at_end`): the parse is over, and this says how.
fn finished(
    stack: &mut [(Element, std::ops::Range<usize>, usize)],
    element: Element,
    at_end: bool,
) -> Option<Result<Element, XmlError>> {
    match stack.last_mut() {
        Some((parent, _, _)) => {
            parent.append_child(element);
            None
        }
        None if at_end => Some(Ok(element)),
        None => Some(Err(nwf("malformed stanza"))),
    }
}

#[cfg(test)]
#[path = "framer_oracle.rs"]
mod oracle;

#[cfg(test)]
#[path = "framer_tests.rs"]
mod tests;
