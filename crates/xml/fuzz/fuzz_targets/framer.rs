//! Arbitrary bytes in arbitrary chunks: the framer must never panic, and must yield the same
//! events however the input is split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling_xml::{Limits, StreamParser};

fn run(chunks: &[&[u8]]) -> Vec<Result<starling_xml::Event, starling_xml::XmlError>> {
    let mut p = StreamParser::new(Limits { max_stanza_bytes: 4096, max_depth: 16, max_attrs: 16 });
    let mut out = Vec::new();
    for c in chunks {
        p.feed(c);
        loop {
            match p.next_event() {
                Ok(Some(e)) => out.push(Ok(e)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let at = (split as usize) % (rest.len() + 1);
    let whole = run(&[rest]);
    let split = run(&[&rest[..at], &rest[at..]]);
    assert_eq!(whole, split);
});
