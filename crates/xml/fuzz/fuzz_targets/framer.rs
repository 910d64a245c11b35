//! Fuzz the framer with arbitrary bytes in arbitrary chunks.
//!
//! Input layout: one flags byte (bit 0: prefix a valid stream header so the stanza path is
//! exercised; high nibble: how many chunk-size bytes follow), the chunk sizes, then the stream.
//!
//! Checked: no panic; the same events and the same error whether the input is fed whole or in
//! chunks; a poisoned parser repeats its error; every stanza accepted writes back out
//! ([`Element::write_to`]) and parses to an equal element.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling_xml::{Element, Event, Limits, StreamParser, XmlError};

const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

/// Small limits, so the fuzzer reaches them.
const LIMITS: Limits = Limits { max_stanza_bytes: 4096, max_depth: 16, max_attrs: 16 };

/// For re-parsing written stanzas: escaping may lengthen them, and a written element may carry
/// an `xmlns` declaration it inherited before.
const REPARSE_LIMITS: Limits = Limits { max_stanza_bytes: 1 << 20, max_depth: 64, max_attrs: 64 };

/// Feed `data` in pieces of `sizes` bytes (cycled; 0 or no sizes means "all the rest"),
/// draining events after each piece.
fn run(data: &[u8], sizes: &[u8], limits: Limits) -> (Vec<Event>, Option<XmlError>) {
    let mut p = StreamParser::new(limits);
    let mut events = Vec::new();
    let mut rest = data;
    let mut i = 0;
    loop {
        let n = match sizes.get(i % sizes.len().max(1)) {
            Some(&n) if n > 0 => usize::from(n).min(rest.len()),
            _ => rest.len(),
        };
        let (chunk, tail) = rest.split_at(n);
        p.feed(chunk);
        rest = tail;
        i += 1;
        loop {
            match p.next_event() {
                Ok(Some(e)) => events.push(e),
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(p.next_event(), Err(e.clone()), "a poisoned parser repeats its error");
                    return (events, Some(e));
                }
            }
        }
        if rest.is_empty() {
            return (events, None);
        }
    }
}

/// Write `e` inside a jabber:client stream and parse it back.
fn reparse(e: &Element) -> Element {
    let mut input = HEADER.to_vec();
    e.write_to(&mut input, "jabber:client");
    let (events, error) = run(&input, &[], REPARSE_LIMITS);
    assert_eq!(error, None, "{}", String::from_utf8_lossy(&input));
    match events.as_slice() {
        [Event::StreamOpen(_), Event::Stanza(back)] => back.clone(),
        other => panic!("unexpected events {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else { return };
    let (sizes, body) = data.split_at(usize::from(flags >> 4).min(data.len()));
    let mut input = Vec::with_capacity(HEADER.len() + body.len());
    if flags & 1 != 0 {
        input.extend_from_slice(HEADER);
    }
    input.extend_from_slice(body);

    let whole = run(&input, &[], LIMITS);
    let chunked = run(&input, sizes, LIMITS);
    assert_eq!(whole, chunked);

    for event in &whole.0 {
        if let Event::Stanza(e) = event {
            assert_eq!(&reparse(e), e);
        }
    }
});
