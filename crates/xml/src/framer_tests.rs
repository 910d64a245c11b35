use super::*;
use proptest::prelude::*;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0' xml:lang='en'>";

fn events(input: &[u8], limits: Limits) -> Result<Vec<Event>, XmlError> {
    let mut p = StreamParser::new(limits);
    p.feed(input);
    let mut out = Vec::new();
    while let Some(e) = p.next_event()? {
        out.push(e);
    }
    Ok(out)
}

fn all(input: &str) -> Result<Vec<Event>, XmlError> {
    events(input.as_bytes(), Limits::default())
}

fn stanza(ev: &Event) -> &Element {
    match ev {
        Event::Stanza(e) => e,
        other => panic!("expected stanza, got {other:?}"),
    }
}

#[test]
fn header_stanzas_and_close() {
    let input = format!(
        "{HEADER}<message to='a@b' xml:lang='fr'><body>hi &amp; &#x263A; &lt;3</body></message> \n\
         <iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq><stream:features/></stream:stream>"
    );
    let ev = all(&input).unwrap();
    assert_eq!(ev.len(), 5);
    match &ev[0] {
        Event::StreamOpen(h) => {
            assert_eq!(h.name, "stream");
            assert_eq!(h.ns, "http://etherx.jabber.org/streams");
            assert_eq!(h.default_ns.as_deref(), Some("jabber:client"));
            assert_eq!(h.attr("to"), Some("localhost"));
            assert_eq!(h.attr("xml:lang"), Some("en"));
        }
        other => panic!("{other:?}"),
    }
    let m = stanza(&ev[1]);
    assert!(m.is("message", "jabber:client"));
    assert_eq!(m.attr("xml:lang"), Some("fr"));
    assert_eq!(m.get_child("body", "jabber:client").unwrap().text(), "hi & \u{263A} <3");
    let iq = stanza(&ev[2]);
    assert!(iq.get_child("query", "jabber:iq:roster").is_some());
    assert!(stanza(&ev[3]).is("features", "http://etherx.jabber.org/streams"));
    assert_eq!(ev[4], Event::StreamClose);
}

#[test]
fn prefixes_and_cdata() {
    let input = format!("{HEADER}<message><p:x xmlns:p='urn:a' p:attr='dropped' plain='kept'><p:y/></p:x><body><![CDATA[<not> & markup]]]]></body></message>");
    let ev = all(&input).unwrap();
    let m = stanza(&ev[1]);
    let x = m.get_child("x", "urn:a").unwrap();
    assert_eq!(x.attrs, vec![("plain".to_string(), "kept".to_string())]);
    assert!(x.get_child("y", "urn:a").is_some());
    assert_eq!(m.get_child("body", "jabber:client").unwrap().text(), "<not> & markup]]");
}

#[test]
fn restricted_xml_is_refused() {
    for bad in ["<!-- c -->", "<?php x?>", "<message><!-- c --></message>", "<message><?pi x?></message>"] {
        let err = all(&format!("{HEADER}{bad}")).unwrap_err();
        assert!(matches!(err, XmlError::RestrictedXml(_)), "{bad}: {err:?}");
    }
    let lol = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>]><stream:stream>";
    assert!(matches!(all(lol).unwrap_err(), XmlError::RestrictedXml(_)));
}

#[test]
fn malformed_is_not_well_formed() {
    for bad in [
        "<message><body></message>",
        "<message a='1' a='2'/>",
        "<x:message/>",
        "<message>&foo;</message>",
        "<message>&#0;</message>",
        "hello",
        "<message a='<'/>",
        "</stream:other>",
    ] {
        let err = all(&format!("{HEADER}{bad}")).unwrap_err();
        assert!(matches!(err, XmlError::NotWellFormed(_)), "{bad}: {err:?}");
    }
    assert!(matches!(events(b"<a>\xff</a>", Limits::default()), Err(XmlError::NotWellFormed(_))));
    let mut with_header = HEADER.as_bytes().to_vec();
    with_header.extend_from_slice(b"<message>\x01</message>");
    assert!(matches!(events(&with_header, Limits::default()), Err(XmlError::NotWellFormed(_))));
}

#[test]
fn limits_apply_before_the_stanza_completes() {
    // The header itself has 5 attributes (namespace declarations count).
    let limits = Limits { max_stanza_bytes: 500, max_depth: 3, max_attrs: 5 };
    let big = format!("{HEADER}<message><body>{}", "x".repeat(600));
    assert!(matches!(events(big.as_bytes(), limits), Err(XmlError::PolicyViolation(_))));
    let deep = format!("{HEADER}<a><b><c><d>");
    assert!(matches!(events(deep.as_bytes(), limits), Err(XmlError::PolicyViolation(_))));
    let attrs = format!("{HEADER}<a x='1' y='2' z='3' u='4' v='5' w='6'/>");
    assert!(matches!(events(attrs.as_bytes(), limits), Err(XmlError::PolicyViolation(_))));
    let ok = format!("{HEADER}<a><b><c/></b></a>");
    assert_eq!(events(ok.as_bytes(), limits).unwrap().len(), 2);
}

#[test]
fn errors_poison_the_parser() {
    let mut p = StreamParser::new(Limits::default());
    p.feed(format!("{HEADER}<!-- x -->").as_bytes());
    assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
    assert!(p.next_event().is_err());
    p.feed(b"<message/>");
    assert!(p.next_event().is_err());
}

#[test]
fn reset_accepts_a_new_header_and_keeps_buffered_bytes() {
    let mut p = StreamParser::new(Limits::default());
    p.feed(HEADER.as_bytes());
    assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
    p.reset();
    p.feed(format!("{HEADER}<presence/>").as_bytes());
    assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
    assert!(matches!(p.next_event(), Ok(Some(Event::Stanza(_)))));
    assert_eq!(p.buffered_len(), 0);
}

#[test]
fn whitespace_keepalives_are_consumed() {
    let mut p = StreamParser::new(Limits::default());
    p.feed(HEADER.as_bytes());
    p.next_event().unwrap();
    for _ in 0..1000 {
        p.feed(b" \n");
        assert_eq!(p.next_event().unwrap(), None);
    }
    assert_eq!(p.buffered_len(), 0);
}

#[test]
fn byte_at_a_time_large_stanza_is_linear_enough() {
    let body = "y".repeat(200_000);
    let input = format!("{HEADER}<message><body a='{body}'>{body}</body></message>");
    let mut p = StreamParser::new(Limits { max_stanza_bytes: 1 << 20, ..Limits::default() });
    let mut got = 0;
    for b in input.as_bytes() {
        p.feed(std::slice::from_ref(b));
        while p.next_event().unwrap().is_some() {
            got += 1;
        }
    }
    assert_eq!(got, 2);
}

fn sample_stream() -> String {
    format!(
        "{HEADER}  <message to='a@b' id='x&apos;1'><body>caf\u{e9} &lt;b&gt; <![CDATA[raw & ]]></body>\
         <x xmlns='urn:x'><y a=\"q'\"/></x></message>\n<presence/><iq type='set' id='2'>\
         <query xmlns='jabber:iq:roster'><item jid='b@c' name='B'><group>G</group></item></query></iq>\
         </stream:stream>"
    )
}

fn arb_element(depth: u32) -> impl Strategy<Value = Element> {
    let name = prop::sample::select(vec!["a", "b", "message", "body", "x"]);
    let ns = prop::sample::select(vec!["jabber:client", "urn:x", "urn:y:z"]);
    let text = "[a-z &<>'\"\u{e9}\u{263A}\r\n\t]{0,12}";
    let attrs =
        prop::collection::vec((prop::sample::select(vec!["id", "to", "type", "xml:lang"]), text), 0..3);
    let leaf =
        (name.clone(), ns.clone(), attrs.clone(), prop::option::of(text)).prop_map(|(n, s, attrs, t)| {
            let mut e = Element::new(n, s);
            for (k, v) in attrs {
                e.set_attr(k, v);
            }
            if let Some(t) = t.filter(|t| !t.is_empty()) {
                e.append_text(t);
            }
            e
        });
    leaf.prop_recursive(depth, 16, 4, move |inner| {
        (name.clone(), ns.clone(), prop::collection::vec(inner, 0..4)).prop_map(|(n, s, kids)| {
            let mut e = Element::new(n, s);
            for k in kids {
                e.append_child(k);
            }
            e
        })
    })
}

/// CR is normalized away in text by XML rules unless escaped; the writer escapes it, so the
/// round trip is exact.
fn roundtrip(e: &Element) -> Element {
    let mut input = HEADER.as_bytes().to_vec();
    e.write_to(&mut input, "jabber:client");
    let ev = events(&input, Limits { max_stanza_bytes: 1 << 20, ..Limits::default() }).unwrap();
    stanza(&ev[1]).clone()
}

proptest! {
    #[test]
    fn any_chunking_yields_the_same_events(cuts in prop::collection::vec(0usize..600, 0..40)) {
        let input = sample_stream();
        let expected = all(&input).unwrap();
        let bytes = input.as_bytes();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut p = StreamParser::new(Limits::default());
        let mut got = Vec::new();
        let mut last = 0;
        for c in cuts.into_iter().chain(std::iter::once(bytes.len())) {
            p.feed(&bytes[last..c]);
            last = c;
            while let Some(e) = p.next_event().unwrap() {
                got.push(e);
            }
        }
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn written_elements_parse_back_equal(e in arb_element(3)) {
        prop_assert_eq!(roundtrip(&e), e);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut p = StreamParser::new(Limits { max_stanza_bytes: 300, max_depth: 8, max_attrs: 8 });
        p.feed(HEADER.as_bytes());
        p.feed(&data);
        for _ in 0..100 {
            match p.next_event() {
                Ok(Some(_)) => continue,
                _ => break,
            }
        }
    }
}
