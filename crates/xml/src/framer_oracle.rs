//! The parse stage as it was with quick-xml, kept as the oracle of a differential test: the
//! framer's own parse stage must build the same element, or refuse with the same kind of error,
//! for any input the lexer lets through.

use super::*;
use quick_xml::events::{BytesStart, Event as QEvent};
use quick_xml::XmlVersion;
use std::cell::Cell;

thread_local! {
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
}

/// Whether the parser on this thread parses with the oracle (inside [`with_oracle`]).
pub(super) fn active() -> bool {
    ACTIVE.with(Cell::get)
}

/// Run `f` with the framer parsing headers and stanzas the old way.
pub(super) fn with_oracle<T>(f: impl FnOnce() -> T) -> T {
    ACTIVE.with(|a| a.set(true));
    let out = f();
    ACTIVE.with(|a| a.set(false));
    out
}

/// The old start tag: quick-xml splits and normalizes the attributes.
pub(super) fn start_element(
    bs: &BytesStart<'_>,
    scope: &mut Scope<'_>,
    limits: &Limits,
) -> Result<Element, XmlError> {
    let mut attributes = bs.attributes();
    attributes.with_checks(false);
    let attrs = attributes.map(|attr| {
        let attr = attr.map_err(|e| nwf(e.to_string()))?;
        let referenced = attr.value.contains('&');
        let value = attr.normalized_value(XmlVersion::Implicit1_0).map_err(|e| nwf(e.to_string()))?;
        if referenced {
            if let Some(c) = value.chars().find(|&c| !is_xml_char(c)) {
                return Err(nwf(format!("character U+{:04X} is not allowed in XML", u32::from(c))));
            }
        }
        Ok((attr.key.into_inner(), value))
    });
    element_from_tag(bs.name().into_inner(), attrs, scope, limits)
}

/// Parse a complete root start tag into the header and what is kept of the root.
pub(super) fn parse_header(raw: &[u8], limits: &Limits) -> Result<(StreamHeader, Root), XmlError> {
    let s = checked_str(raw)?;
    let mut reader = quick_xml::Reader::from_str(s);
    let bs = match reader.read_event() {
        Ok(QEvent::Start(bs)) | Ok(QEvent::Empty(bs)) => bs,
        Ok(_) => return Err(nwf("expected the stream header")),
        Err(e) => return Err(nwf(e.to_string())),
    };
    let mut scope = Scope { root: &[], local: vec![(Name::from("xml"), Name::from(XML_NS))] };
    let element = start_element(&bs, &mut scope, limits)?;
    if usize::try_from(reader.buffer_position()).ok() != Some(s.len()) {
        return Err(nwf("malformed stream header"));
    }
    let scope = scope.local;
    let default_ns = scope.iter().rev().find(|(p, _)| p.is_empty()).map(|(_, u)| u.clone());
    let header = StreamHeader { name: element.name, ns: element.ns, default_ns, attrs: element.attrs };
    Ok((header, Root { qname: bs.name().into_inner().as_bytes().to_vec(), scope }))
}

/// Parse one complete element in the context of the stream root's namespace declarations.
pub(super) fn parse_stanza(
    raw: &[u8],
    root_scope: &[(Name, Name)],
    limits: &Limits,
    _scratch: &mut Scratch,
) -> Result<Element, XmlError> {
    let s = checked_str(raw)?;
    let mut reader = quick_xml::Reader::from_str(s);
    let mut scope = Scope { root: root_scope, local: Vec::new() };
    // Open elements, each with the scope length before its own declarations.
    let mut stack: Vec<(Element, usize)> = Vec::new();
    let finished = |element: Element, reader: &quick_xml::Reader<&[u8]>| {
        if usize::try_from(reader.buffer_position()).ok() == Some(s.len()) {
            Ok(element)
        } else {
            Err(nwf("malformed stanza"))
        }
    };
    loop {
        let event = reader.read_event().map_err(|e| nwf(e.to_string()))?;
        if let QEvent::Start(_) | QEvent::Empty(_) = &event {
            // The framer's lexer enforces this for a streamed stanza; `parse_element` relies on it.
            if stack.len() >= limits.max_depth {
                return Err(XmlError::PolicyViolation(format!("nesting deeper than {}", limits.max_depth)));
            }
        }
        match event {
            QEvent::Start(bs) => {
                let mark = scope.local.len();
                let element = start_element(&bs, &mut scope, limits)?;
                stack.push((element, mark));
            }
            QEvent::Empty(bs) => {
                let mark = scope.local.len();
                let element = start_element(&bs, &mut scope, limits)?;
                scope.local.truncate(mark);
                match stack.last_mut() {
                    Some((parent, _)) => parent.append_child(element),
                    None => return finished(element, &reader),
                }
            }
            QEvent::End(_) => {
                let Some((element, mark)) = stack.pop() else {
                    return Err(nwf("unbalanced end tag"));
                };
                scope.local.truncate(mark);
                match stack.last_mut() {
                    Some((parent, _)) => parent.append_child(element),
                    None => return finished(element, &reader),
                }
            }
            QEvent::Text(text) => {
                if text.contains("]]>") {
                    return Err(nwf("']]>' in character data"));
                }
                let Some((parent, _)) = stack.last_mut() else {
                    return Err(nwf("text outside the stanza"));
                };
                parent.append_text(text.xml10_content());
            }
            QEvent::CData(cdata) => {
                let Some((parent, _)) = stack.last_mut() else {
                    return Err(nwf("CDATA outside the stanza"));
                };
                parent.append_text(cdata.xml10_content());
            }
            QEvent::GeneralRef(r) => {
                let c = if r.is_char_ref() {
                    r.resolve_char_ref().ok().flatten().filter(|&c| is_xml_char(c))
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
                    return Err(nwf(format!("undefined or illegal reference &{};", &*r)));
                };
                let Some((parent, _)) = stack.last_mut() else {
                    return Err(nwf("reference outside the stanza"));
                };
                parent.append_text(c);
            }
            QEvent::Comment(_) => return Err(XmlError::RestrictedXml("comment")),
            QEvent::PI(_) | QEvent::Decl(_) => return Err(XmlError::RestrictedXml("processing instruction")),
            QEvent::DocType(_) => return Err(XmlError::RestrictedXml("document type declaration")),
            QEvent::Eof => return Err(nwf("truncated stanza")),
        }
    }
}
