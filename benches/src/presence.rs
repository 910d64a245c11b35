//! The presence fan-out scenario's pure parts.
//!
//! - [`Ring`]: U users on a ring, each a contact of the K/2 users either side of it, so every
//!   user has exactly K contacts and every subscription is mutual.
//! - [`RoundTag`]: what a presence change carries in its `<status/>` (`r{round}-{user}-{send_us}`),
//!   so a receiver can tell which change of which round it hears and when it was sent.
//! - [`RawFramer`]: finds where top-level stanzas end in an already open stream without
//!   building trees (quotes, nesting, self-closing tags, CDATA); the generator runs on one core and
//!   must keep up with the server, so the receive path scans bytes.
//! - [`scan_presence`]: the few fields of a `<presence>` stanza the receive path checks: type,
//!   `from`, status text.

use std::ops::Range;

/// U users on a ring, each with the K/2 next and K/2 previous users as contacts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    /// Users on the ring (U).
    pub users: usize,
    /// Contacts on each side (K/2).
    pub half: usize,
}

impl Ring {
    /// A ring of `users` with `contacts` per user; `contacts` must be even, at least 2 and
    /// smaller than `users` (so the two sides do not overlap and nobody is their own contact).
    pub fn new(users: usize, contacts: usize) -> Result<Ring, String> {
        if contacts < 2 || !contacts.is_multiple_of(2) {
            return Err(format!("contacts must be even and at least 2 (got {contacts})"));
        }
        if contacts >= users {
            return Err(format!("contacts ({contacts}) must be fewer than users ({users})"));
        }
        Ok(Ring { users, half: contacts / 2 })
    }

    /// Contacts per user (K).
    pub fn contacts(&self) -> usize {
        2 * self.half
    }

    /// Where `other` sits in `user`'s contact list (0..K: the next users first, then the previous
    /// ones), or `None` when it is not a contact.
    pub fn offset(&self, user: usize, other: usize) -> Option<usize> {
        if user >= self.users || other >= self.users {
            return None;
        }
        let d = (other + self.users - user) % self.users;
        if (1..=self.half).contains(&d) {
            Some(d - 1)
        } else if d != 0 && d >= self.users - self.half {
            Some(self.half + (self.users - d) - 1)
        } else {
            None
        }
    }

    /// The contact at `offset` (the inverse of [`Ring::offset`]).
    pub fn contact(&self, user: usize, offset: usize) -> usize {
        if offset < self.half {
            (user + offset + 1) % self.users
        } else {
            (user + self.users - (offset - self.half + 1)) % self.users
        }
    }

    /// Whether `user` starts the subscription handshake with the contact at `offset`: each pair
    /// is started once, by the user whose next neighbour the other is.
    pub fn initiates(&self, offset: usize) -> bool {
        offset < self.half
    }
}

/// The status text of a presence change: round, the changing user's index, send time (µs since
/// the generator's epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundTag {
    /// Round, from 1.
    pub round: u32,
    /// Index of the user who changed status.
    pub user: usize,
    /// When the change was sent, µs since the generator's epoch.
    pub sent_us: u64,
}

impl RoundTag {
    /// Parse `r{round}-{user}-{sent_us}`; `None` for any other text (e.g. no status).
    pub fn parse(text: &[u8]) -> Option<RoundTag> {
        let rest = text.strip_prefix(b"r")?;
        let mut it = rest.splitn(3, |&b| b == b'-');
        let round = parse_u64(it.next()?)?;
        let user = parse_u64(it.next()?)?;
        let sent_us = parse_u64(it.next()?)?;
        Some(RoundTag { round: u32::try_from(round).ok()?, user: usize::try_from(user).ok()?, sent_us })
    }

    /// The presence change that carries this tag.
    pub fn stanza(&self) -> String {
        format!("<presence><status>r{}-{}-{}</status></presence>", self.round, self.user, self.sent_us)
    }
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0')))
}

/// Why the stream cannot be framed further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The peer closed its stream (`</stream:stream>`).
    StreamClosed,
    /// A stanza grew beyond the framer's limit.
    TooLarge,
    /// Something other than a stream header came where the header was expected.
    NoStreamHeader,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameError::StreamClosed => "stream closed by the peer",
            FrameError::TooLarge => "stanza too large",
            FrameError::NoStreamHeader => "no stream header where one was expected",
        })
    }
}

impl std::error::Error for FrameError {}

/// Finds complete top-level stanzas in the bytes of a stream whose header has already been read.
///
/// It only tracks what decides where a stanza ends: `<`, quotes inside tags, end and
/// self-closing tags, CDATA, comments and processing instructions. It does not check
/// well-formedness (the servers measured are trusted); an incomplete construct is scanned again
/// when more bytes arrive, which costs little because tags are short.
#[derive(Debug, Default)]
pub struct RawFramer {
    /// Received, not yet consumed bytes.
    buf: Vec<u8>,
    /// Where scanning resumes: a construct starts here, or text continues.
    pos: usize,
    /// Open elements of the current stanza (0 between stanzas).
    depth: usize,
    /// Where the current stanza starts (meaningful while `depth > 0`).
    start: usize,
}

/// Largest stanza the framer buffers (a roster of thousands of items fits).
const MAX_STANZA: usize = 16 << 20;

impl RawFramer {
    /// A framer that starts with bytes already read (what the login's parser left buffered).
    pub fn with_bytes(bytes: Vec<u8>) -> RawFramer {
        RawFramer { buf: bytes, ..RawFramer::default() }
    }

    /// The buffer to read into: only append to it (e.g. `read_buf`).
    pub fn buffer_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// The bytes of a range returned by [`RawFramer::next_stanza`], valid until [`RawFramer::compact`].
    pub fn bytes(&self, r: Range<usize>) -> &[u8] {
        &self.buf[r]
    }

    /// The next complete stanza, `Ok(None)` when more bytes are needed.
    pub fn next_stanza(&mut self) -> Result<Option<Range<usize>>, FrameError> {
        let b = &self.buf;
        loop {
            if self.depth == 0 {
                // Between stanzas only whitespace (keepalives) comes.
                match b[self.pos..].iter().position(|&c| c == b'<') {
                    Some(i) => self.pos += i,
                    None => {
                        self.pos = b.len();
                        return Ok(None);
                    }
                }
                self.start = self.pos;
            } else {
                if self.pos - self.start > MAX_STANZA {
                    return Err(FrameError::TooLarge);
                }
                match b[self.pos..].iter().position(|&c| c == b'<') {
                    Some(i) => self.pos += i,
                    None => {
                        self.pos = b.len();
                        return Ok(None);
                    }
                }
            }
            let Some(&kind) = b.get(self.pos + 1) else { return Ok(None) };
            match kind {
                b'/' => {
                    let Some(end) = find(b, self.pos, b">") else { return Ok(None) };
                    self.pos = end + 1;
                    if self.depth == 0 {
                        return Err(FrameError::StreamClosed);
                    }
                    self.depth -= 1;
                    if self.depth == 0 {
                        return Ok(Some(self.start..self.pos));
                    }
                }
                b'!' | b'?' => {
                    let close: &[u8] = if b[self.pos..].starts_with(b"<![CDATA[") {
                        b"]]>"
                    } else if b[self.pos..].starts_with(b"<!--") {
                        b"-->"
                    } else if kind == b'?' {
                        b"?>"
                    } else if b.len() < self.pos + 9 {
                        return Ok(None);
                    } else {
                        b">"
                    };
                    let Some(end) = find(b, self.pos + 2, close) else { return Ok(None) };
                    self.pos = end + close.len();
                }
                _ => {
                    let Some(end) = tag_end(b, self.pos) else { return Ok(None) };
                    self.pos = end + 1;
                    if b[end - 1] != b'/' {
                        self.depth += 1;
                    } else if self.depth == 0 {
                        return Ok(Some(self.start..self.pos));
                    }
                }
            }
        }
    }

    /// Between stanzas: skip the peer's stream header (an optional `<?xml …?>` declaration, then
    /// the `<stream:stream …>` start tag) and consume it. `Ok(false)` when it has not fully
    /// arrived yet (nothing is consumed then); an error when something else comes first.
    pub fn skip_stream_header(&mut self) -> Result<bool, FrameError> {
        let b = &self.buf;
        let mut at = self.pos;
        loop {
            while b.get(at).is_some_and(|c| c.is_ascii_whitespace()) {
                at += 1;
            }
            if at + 1 >= b.len() {
                return Ok(false);
            }
            if b[at] != b'<' {
                return Err(FrameError::NoStreamHeader);
            }
            if b[at + 1] == b'?' {
                let Some(end) = find(b, at + 2, b"?>") else { return Ok(false) };
                at = end + 2;
                continue;
            }
            const ROOT: &[u8] = b"<stream:stream";
            if b.len() < at + ROOT.len() + 1 {
                return Ok(false);
            }
            if !b[at..].starts_with(ROOT)
                || !matches!(b[at + ROOT.len()], b' ' | b'\t' | b'\r' | b'\n' | b'>')
            {
                return Err(FrameError::NoStreamHeader);
            }
            let Some(end) = tag_end(b, at) else { return Ok(false) };
            if b[end - 1] == b'/' {
                // `<stream:stream …/>`: opened and closed at once.
                return Err(FrameError::StreamClosed);
            }
            self.pos = end + 1;
            self.depth = 0;
            self.compact();
            return Ok(true);
        }
    }

    /// Drop the bytes of the stanzas already returned (their ranges become invalid).
    pub fn compact(&mut self) {
        let cut = if self.depth == 0 { self.pos } else { self.start };
        self.buf.drain(..cut);
        self.pos -= cut;
        self.start = self.start.saturating_sub(cut);
    }
}

/// Where `needle` starts in `b` at or after `from`.
pub(crate) fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|i| from + i)
}

/// The `>` that ends the tag starting at `from` (a `<`), skipping quoted attribute values.
pub(crate) fn tag_end(b: &[u8], from: usize) -> Option<usize> {
    let mut quote = 0u8;
    for (i, &c) in b.iter().enumerate().skip(from + 1) {
        if quote != 0 {
            if c == quote {
                quote = 0;
            }
        } else if c == b'"' || c == b'\'' {
            quote = c;
        } else if c == b'>' {
            return Some(i);
        }
    }
    None
}

/// Whether `stanza` is an element named `name` (its start tag's qualified name, as written).
pub fn is_element(stanza: &[u8], name: &str) -> bool {
    stanza.first() == Some(&b'<')
        && stanza[1..].starts_with(name.as_bytes())
        && matches!(stanza.get(1 + name.len()), Some(b' ' | b'\t' | b'\r' | b'\n' | b'>' | b'/'))
}

/// What the receive path needs from a `<presence>` stanza.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceView<'a> {
    /// The `type` attribute (`None`: available).
    pub kind: Option<&'a [u8]>,
    /// The bare JID of `from` (up to the `/`), if present.
    pub from_bare: Option<&'a [u8]>,
    /// The text of the first `<status>` child, as sent (not unescaped: the tags need no escaping).
    pub status: Option<&'a [u8]>,
}

/// The presence fields of a stanza's bytes, `None` when it is not a `<presence>`.
pub fn scan_presence(st: &[u8]) -> Option<PresenceView<'_>> {
    if !is_element(st, "presence") {
        return None;
    }
    let end = tag_end(st, 0)?;
    let mut view = PresenceView { kind: None, from_bare: None, status: None };
    for (name, value) in attributes(&st[b"<presence".len()..end]) {
        match name {
            b"type" => view.kind = Some(value),
            b"from" => {
                let bare = value.iter().position(|&c| c == b'/').map_or(value, |i| &value[..i]);
                view.from_bare = Some(bare);
            }
            _ => {}
        }
    }
    if st[end - 1] != b'/' {
        let body = &st[end + 1..];
        if let Some(i) = find(body, 0, b"<status") {
            if matches!(body.get(i + 7), Some(b'>' | b' ' | b'\t' | b'\r' | b'\n')) {
                let open_end = tag_end(body, i)?;
                if body[open_end - 1] != b'/' {
                    let text = &body[open_end + 1..];
                    let close = text.iter().position(|&c| c == b'<')?;
                    view.status = Some(&text[..close]);
                }
            }
        }
    }
    Some(view)
}

/// The `name='value'` pairs of a start tag's inside (after the element name, before `>`).
pub(crate) fn attributes(mut s: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    std::iter::from_fn(move || {
        let skip = s.iter().position(|c| !c.is_ascii_whitespace() && *c != b'/')?;
        s = &s[skip..];
        let eq = s.iter().position(|&c| c == b'=')?;
        let name = s[..eq].trim_ascii();
        let after = &s[eq + 1..];
        let q = after.iter().position(|c| !c.is_ascii_whitespace())?;
        let quote = after[q];
        if quote != b'"' && quote != b'\'' {
            return None;
        }
        let vstart = q + 1;
        let vlen = after[vstart..].iter().position(|&c| c == quote)?;
        let value = &after[vstart..vstart + vlen];
        s = &after[vstart + vlen + 1..];
        Some((name, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_offsets_are_a_bijection_onto_the_contacts() {
        let ring = Ring::new(10, 4).unwrap();
        for u in 0..10 {
            let contacts: Vec<usize> = (0..4).map(|o| ring.contact(u, o)).collect();
            for (o, &c) in contacts.iter().enumerate() {
                assert_eq!(ring.offset(u, c), Some(o), "user {u} contact {c}");
                // Mutual: u is a contact of c.
                assert!(ring.offset(c, u).is_some());
            }
            let mut sorted = contacts.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 4);
            assert!(!contacts.contains(&u));
            let non: Vec<usize> = (0..10).filter(|o| ring.offset(u, *o).is_none()).collect();
            assert_eq!(non.len(), 6, "user {u}: itself and the 5 beyond reach");
        }
        assert_eq!(ring.contact(0, 0), 1);
        assert_eq!(ring.contact(0, 2), 9);
        assert_eq!(ring.contact(9, 1), 1);
    }

    #[test]
    fn each_pair_is_initiated_exactly_once() {
        let ring = Ring::new(7, 6).unwrap();
        for u in 0..7 {
            for o in 0..6 {
                let c = ring.contact(u, o);
                let back = ring.offset(c, u).unwrap();
                assert_ne!(ring.initiates(o), ring.initiates(back), "pair {u}-{c}");
            }
        }
    }

    #[test]
    fn ring_refuses_odd_or_too_many_contacts() {
        assert!(Ring::new(10, 3).is_err());
        assert!(Ring::new(10, 10).is_err());
        assert!(Ring::new(10, 0).is_err());
        assert!(Ring::new(11, 10).is_ok());
    }

    #[test]
    fn round_tags_round_trip() {
        let t = RoundTag { round: 3, user: 17, sent_us: 123_456_789 };
        assert_eq!(RoundTag::parse(b"r3-17-123456789"), Some(t));
        assert!(t.stanza().contains("<status>r3-17-123456789</status>"));
        assert_eq!(RoundTag::parse(b"r3-17"), None);
        assert_eq!(RoundTag::parse(b"away"), None);
        assert_eq!(RoundTag::parse(b"r3-x-1"), None);
        assert_eq!(RoundTag::parse(b""), None);
    }

    fn frames(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Option<FrameError>) {
        let mut f = RawFramer::default();
        let mut out = Vec::new();
        for c in chunks {
            f.buffer_mut().extend_from_slice(c);
            loop {
                match f.next_stanza() {
                    Ok(Some(r)) => out.push(f.bytes(r).to_vec()),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e)),
                }
            }
            f.compact();
        }
        (out, None)
    }

    const STREAM: &[u8] = b" <presence from='a@x/r' to='b@x/r'><status>r1-0-5</status></presence>\n\
        <iq type='result' id='s'/><message a=\"x>y\"><body><![CDATA[<not/>]]></body></message>\
        <presence type='unavailable' from=\"c@x\"/></stream:stream>";

    #[test]
    fn framer_finds_stanzas_in_any_chunking() {
        let (whole, err) = frames(&[STREAM]);
        assert_eq!(err, Some(FrameError::StreamClosed));
        assert_eq!(whole.len(), 4);
        assert!(whole[0].starts_with(b"<presence") && whole[0].ends_with(b"</presence>"));
        assert_eq!(whole[1], b"<iq type='result' id='s'/>");
        assert!(whole[2].ends_with(b"</message>"));
        assert_eq!(whole[3], b"<presence type='unavailable' from=\"c@x\"/>");
        for split in 1..STREAM.len() {
            let (a, b) = STREAM.split_at(split);
            assert_eq!(frames(&[a, b]).0, whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(frames(&bytes).0, whole);
    }

    #[test]
    fn the_stream_header_is_skipped_in_any_chunking() {
        let input: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' from='x' \
            xmlns:stream='http://etherx.jabber.org/streams' id='a>b' version='1.0'>\
            <stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>";
        for split in 0..input.len() {
            let mut f = RawFramer::default();
            f.buffer_mut().extend_from_slice(&input[..split]);
            let mut skipped = f.skip_stream_header().unwrap();
            f.buffer_mut().extend_from_slice(&input[split..]);
            if !skipped {
                skipped = f.skip_stream_header().unwrap();
            }
            assert!(skipped, "split at {split}");
            let r = f.next_stanza().unwrap().unwrap();
            assert!(f.bytes(r).starts_with(b"<stream:features>"), "split at {split}");
        }
        let mut f = RawFramer::default();
        f.buffer_mut().extend_from_slice(b"<stream:stream xmlns='jabber:client'/>");
        assert_eq!(f.skip_stream_header(), Err(FrameError::StreamClosed));
        let mut f = RawFramer::default();
        f.buffer_mut().extend_from_slice(b"<message to='a'/>");
        assert_eq!(f.skip_stream_header(), Err(FrameError::NoStreamHeader));
        let mut f = RawFramer::default();
        f.buffer_mut().extend_from_slice(b"<stream:streams>");
        assert_eq!(f.skip_stream_header(), Err(FrameError::NoStreamHeader));
    }

    #[test]
    fn presence_fields_are_found_whatever_the_quoting() {
        let v = scan_presence(b"<presence xml:lang='en' to='b@x/r' from=\"a@x/res\"><priority>1</priority><status>r2-1-9</status></presence>").unwrap();
        assert_eq!(v.kind, None);
        assert_eq!(v.from_bare, Some(&b"a@x"[..]));
        assert_eq!(v.status, Some(&b"r2-1-9"[..]));
        let v = scan_presence(b"<presence type='unavailable' from='a@x/r'/>").unwrap();
        assert_eq!(v.kind, Some(&b"unavailable"[..]));
        assert_eq!(v.status, None);
        let v = scan_presence(b"<presence from='a@x'><statusx>no</statusx></presence>").unwrap();
        assert_eq!(v.status, None);
        assert_eq!(scan_presence(b"<presences from='a@x'/>"), None);
        assert_eq!(scan_presence(b"<message from='a@x'/>"), None);
    }
}
