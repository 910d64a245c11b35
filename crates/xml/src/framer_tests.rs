use super::*;
use crate::element::Node;
use proptest::prelude::*;

const STREAMS_NS: &str = "http://etherx.jabber.org/streams";

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0' xml:lang='en'>";

/// Every event until more bytes are needed, or the error.
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

/// The events after the standard header.
fn after_header(body: &str) -> Result<Vec<Event>, XmlError> {
    let mut ev = all(&format!("{HEADER}{body}"))?;
    assert!(matches!(ev.first(), Some(Event::StreamOpen(_))), "{ev:?}");
    ev.remove(0);
    Ok(ev)
}

/// The single stanza `body` parses into (after the standard header).
fn one(body: &str) -> Element {
    let ev = after_header(body).unwrap();
    assert_eq!(ev.len(), 1, "{ev:?}");
    stanza(&ev[0]).clone()
}

fn err(body: &str) -> XmlError {
    after_header(body).unwrap_err()
}

fn stanza(ev: &Event) -> &Element {
    match ev {
        Event::Stanza(e) => e,
        other => panic!("expected stanza, got {other:?}"),
    }
}

fn is_nwf(e: &XmlError) -> bool {
    matches!(e, XmlError::NotWellFormed(_))
}

fn is_restricted(e: &XmlError) -> bool {
    matches!(e, XmlError::RestrictedXml(_))
}

fn is_policy(e: &XmlError) -> bool {
    matches!(e, XmlError::PolicyViolation(_))
}

// ---------------------------------------------------------------------------------------------
// Stream header, close, reset, keepalives

#[test]
fn full_client_header() {
    let mut p = StreamParser::new(Limits::default());
    p.feed(HEADER.as_bytes());
    let Ok(Some(Event::StreamOpen(h))) = p.next_event() else { panic!("no header") };
    assert_eq!(h.name, "stream");
    assert_eq!(h.ns, STREAMS_NS);
    assert_eq!(h.default_ns.as_deref(), Some("jabber:client"));
    assert_eq!(h.attr("to"), Some("localhost"));
    assert_eq!(h.attr("version"), Some("1.0"));
    assert_eq!(h.attr("xml:lang"), Some("en"));
    assert_eq!(h.attr("xmlns"), None);
    assert_eq!(h.attrs.len(), 3, "namespace declarations are not attributes: {:?}", h.attrs);
    assert_eq!(p.next_event(), Ok(None));
    assert_eq!(p.buffered_len(), 0);
}

#[test]
fn header_without_declaration_and_double_quotes() {
    let ev = all("<stream:stream xmlns:stream=\"http://etherx.jabber.org/streams\" xmlns=\"jabber:server\" \
                   from=\"a.example\" id=\"x\">")
    .unwrap();
    let [Event::StreamOpen(h)] = ev.as_slice() else { panic!("{ev:?}") };
    assert_eq!(h.ns, STREAMS_NS);
    assert_eq!(h.default_ns.as_deref(), Some("jabber:server"));
    assert_eq!(h.attr("from"), Some("a.example"));
    assert_eq!(h.attr("id"), Some("x"));
}

#[test]
fn header_without_default_namespace() {
    let ev = all("<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><message/>").unwrap();
    let Event::StreamOpen(h) = &ev[0] else { panic!("{ev:?}") };
    assert_eq!(h.default_ns, None);
    assert!(stanza(&ev[1]).is("message", ""));
}

#[test]
fn header_byte_at_a_time() {
    let mut p = StreamParser::new(Limits::default());
    let bytes = HEADER.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        p.feed(std::slice::from_ref(b));
        let ev = p.next_event().unwrap();
        assert_eq!(ev.is_some(), i + 1 == bytes.len(), "at byte {i}");
    }
}

#[test]
fn stream_close() {
    let mut p = StreamParser::new(Limits::default());
    p.feed(format!("{HEADER}<presence/></stream:stream >\n ").as_bytes());
    assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
    assert!(matches!(p.next_event(), Ok(Some(Event::Stanza(_)))));
    assert_eq!(p.next_event(), Ok(Some(Event::StreamClose)));
    assert_eq!(p.next_event(), Ok(None));
    assert_eq!(p.buffered_len(), 0);
    // Only whitespace may follow.
    p.feed(b"<presence/>");
    assert!(is_nwf(&p.next_event().unwrap_err()));
}

#[test]
fn text_after_close_is_refused() {
    assert!(is_nwf(&err("</stream:stream>x")));
}

#[test]
fn empty_root_opens_and_closes() {
    let ev = all("<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>").unwrap();
    assert!(matches!(ev.as_slice(), [Event::StreamOpen(_), Event::StreamClose]), "{ev:?}");
}

#[test]
fn reset_then_new_header() {
    let mut p = StreamParser::new(Limits::default());
    p.feed(format!("{HEADER}<auth/>").as_bytes());
    assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
    assert!(matches!(p.next_event(), Ok(Some(Event::Stanza(_)))));
    p.reset();
    // A new stream, including a new XML declaration, and bytes that arrived with it.
    p.feed(format!("{HEADER}<iq type='set' id='b'/>").as_bytes());
    let Ok(Some(Event::StreamOpen(h))) = p.next_event() else { panic!("no second header") };
    assert_eq!(h.attr("to"), Some("localhost"));
    assert!(stanza(&p.next_event().unwrap().unwrap()).is("iq", "jabber:client"));
    assert_eq!(p.buffered_len(), 0);
}

#[test]
fn reset_keeps_buffered_bytes() {
    let mut p = StreamParser::new(Limits::default());
    // The restarted header arrives in the same read as the stanza before it.
    p.feed(format!("{HEADER}<auth/>{HEADER}<presence/>").as_bytes());
    assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
    assert!(matches!(p.next_event(), Ok(Some(Event::Stanza(_)))));
    assert!(p.buffered_len() > 0);
    p.reset();
    assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
    assert!(matches!(p.next_event(), Ok(Some(Event::Stanza(_)))));
    assert_eq!(p.next_event(), Ok(None));
}

#[test]
fn reset_in_the_middle_of_a_partial_header() {
    let mut p = StreamParser::new(Limits::default());
    p.feed(&HEADER.as_bytes()[..30]);
    assert_eq!(p.next_event(), Ok(None));
    p.reset();
    p.feed(&HEADER.as_bytes()[30..]);
    assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
}

#[test]
fn whitespace_keepalives_are_consumed() {
    let mut p = StreamParser::new(Limits::default());
    p.feed(b"  \r\n");
    assert_eq!(p.next_event(), Ok(None));
    p.feed(HEADER.as_bytes());
    assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
    for _ in 0..1000 {
        p.feed(b" \n\t");
        assert_eq!(p.next_event(), Ok(None));
        assert_eq!(p.buffered_len(), 0);
    }
    p.feed(b" <presence/> \n <presence/>  ");
    assert!(matches!(p.next_event(), Ok(Some(Event::Stanza(_)))));
    assert!(matches!(p.next_event(), Ok(Some(Event::Stanza(_)))));
    assert_eq!(p.next_event(), Ok(None));
    assert_eq!(p.buffered_len(), 0);
}

#[test]
fn reading_into_buffer_mut() {
    let mut p = StreamParser::new(Limits::default());
    p.buffer_mut().extend_from_slice(HEADER.as_bytes());
    p.buffer_mut().extend_from_slice(b"<presence/>");
    assert_eq!(p.buffered_len(), HEADER.len() + 11);
    assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
    assert_eq!(p.buffered_len(), 11);
    assert!(matches!(p.next_event(), Ok(Some(Event::Stanza(_)))));
}

#[test]
fn shrinking_the_buffer_does_not_panic() {
    let mut p = StreamParser::new(Limits::default());
    p.feed(format!("{HEADER}<message><body>partial").as_bytes());
    assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
    assert_eq!(p.next_event(), Ok(None));
    p.buffer_mut().clear();
    assert!(p.next_event().is_err());
}

#[test]
fn errors_poison_the_parser() {
    let mut p = StreamParser::new(Limits::default());
    p.feed(format!("{HEADER}<!-- x -->").as_bytes());
    assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
    let first = p.next_event().unwrap_err();
    assert_eq!(first, XmlError::RestrictedXml("comment"));
    p.feed(b"<message/>");
    assert_eq!(p.next_event(), Err(first.clone()));
    p.reset();
    assert_eq!(p.next_event(), Err(first));
}

// ---------------------------------------------------------------------------------------------
// Stanzas, namespaces, text

#[test]
fn stanzas_get_the_stream_namespaces() {
    let ev = after_header(
        "<message to='a@b' xml:lang='fr'><body>hi</body></message>\
         <iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>\
         <stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
         <mechanism>PLAIN</mechanism></mechanisms></stream:features>",
    )
    .unwrap();
    assert_eq!(ev.len(), 3);
    let m = stanza(&ev[0]);
    assert!(m.is("message", "jabber:client"));
    assert_eq!(m.attr("to"), Some("a@b"));
    assert_eq!(m.attr("xml:lang"), Some("fr"));
    assert_eq!(m.get_child("body", "jabber:client").unwrap().text(), "hi");
    let iq = stanza(&ev[1]);
    assert!(iq.is("iq", "jabber:client"));
    assert!(iq.get_child("query", "jabber:iq:roster").is_some());
    let f = stanza(&ev[2]);
    assert!(f.is("features", STREAMS_NS));
    let mechs = f.get_child("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl").unwrap();
    assert_eq!(mechs.get_child("mechanism", "urn:ietf:params:xml:ns:xmpp-sasl").unwrap().text(), "PLAIN");
}

#[test]
fn prefixed_children_and_foreign_attributes() {
    let m = one("<message><p:x xmlns:p='urn:a' p:attr='dropped' plain='kept' xml:lang='de'>\
                 <p:y/><z/></p:x></message>");
    let x = m.get_child("x", "urn:a").unwrap();
    assert_eq!(x.attrs, vec![("plain".into(), "kept".to_string()), ("xml:lang".into(), "de".to_string())]);
    assert!(x.get_child("y", "urn:a").is_some());
    // The prefix declaration does not change the default namespace.
    assert!(x.get_child("z", "jabber:client").is_some());
    // Declarations are scoped: after </p:x> the prefix is unbound again.
    assert!(is_nwf(&err("<message><p:x xmlns:p='urn:a'/><p:y/></message>")));
}

#[test]
fn default_namespace_scoping_and_undeclaring() {
    let m = one("<message><x xmlns='urn:x'><y/><z xmlns=''/></x><body/></message>");
    let x = m.get_child("x", "urn:x").unwrap();
    assert!(x.get_child("y", "urn:x").is_some());
    assert!(x.get_child("z", "").is_some());
    assert!(m.get_child("body", "jabber:client").is_some());
}

#[test]
fn stanza_may_redeclare_stream_prefix() {
    let m = one("<stream:error xmlns:stream='urn:other'><text/></stream:error>");
    assert!(m.is("error", "urn:other"));
    let e = one("<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>");
    assert!(e.is("error", STREAMS_NS));
    assert!(e.get_child("conflict", "urn:ietf:params:xml:ns:xmpp-streams").is_some());
}

#[test]
fn escapes_and_character_references() {
    let m = one("<message id='a&amp;b&lt;&gt;&apos;&quot;&#65;&#x42;'>\
                 <body>1 &lt; 2 &amp;&amp; 3 &gt; 2 &apos;&quot; &#x263A;&#9786;&#x1F600;</body></message>");
    assert_eq!(m.attr("id"), Some("a&b<>'\"AB"));
    assert_eq!(
        m.get_child("body", "jabber:client").unwrap().text(),
        "1 < 2 && 3 > 2 '\" \u{263A}\u{263A}\u{1F600}"
    );
    // Adjacent text and references are one text node.
    assert_eq!(m.get_child("body", "jabber:client").unwrap().children.len(), 1);
}

#[test]
fn attribute_and_line_end_normalization() {
    let m = one("<message a='x\ny\tz' b='x&#10;y&#9;z&#13;'><body>l1\r\nl2\rl3&#13;</body></message>");
    assert_eq!(m.attr("a"), Some("x y z"));
    assert_eq!(m.attr("b"), Some("x\ny\tz\r"));
    assert_eq!(m.get_child("body", "jabber:client").unwrap().text(), "l1\nl2\nl3\r");
}

#[test]
fn attribute_syntax() {
    // Whitespace around '=', both quote styles, the other quote inside, '>' inside a value, a CR
    // LF pair as one space.
    let m = one("<message a = \"it's\"\tb\n=\n'say \"hi\"' c='a>b' d='x\r\ny'/>");
    assert_eq!(m.attr("a"), Some("it's"));
    assert_eq!(m.attr("b"), Some("say \"hi\""));
    assert_eq!(m.attr("c"), Some("a>b"));
    assert_eq!(m.attr("d"), Some("x y"));
    for bad in [
        "<message a/>",
        "<message a='1' b/>",
        "<message a=1/>",
        "<message ='1'/>",
        "<message a='1'b='2'/>",
        "<message a='&bogus;'/>",
        "<message a='&#0;'/>",
        "<message a='&#+65;'/>",
        "<message a='&amp'/>",
        "<message a / >",
    ] {
        assert!(matches!(err(bad), XmlError::NotWellFormed(_)), "{bad}");
    }
}

#[test]
fn cdata_is_text_and_merges() {
    let m = one("<message><body>a <![CDATA[<not> & markup]]]]> b<![CDATA[]]>&amp;</body></message>");
    let body = m.get_child("body", "jabber:client").unwrap();
    assert_eq!(body.children, vec![Node::Text("a <not> & markup]] b&".into())]);
}

#[test]
fn whitespace_text_inside_stanzas_is_kept() {
    let m = one("<message>\n  <body> </body>\n</message>");
    assert_eq!(m.children.len(), 3);
    assert_eq!(m.children[0], Node::Text("\n  ".into()));
    assert_eq!(m.get_child("body", "jabber:client").unwrap().text(), " ");
}

#[test]
fn unicode_names_and_text() {
    let m = one("<message><caf\u{e9} xmlns='urn:\u{263A}'>\u{1F600} \u{e9}</caf\u{e9}></message>");
    assert_eq!(m.get_child("caf\u{e9}", "urn:\u{263A}").unwrap().text(), "\u{1F600} \u{e9}");
}

#[test]
fn tags_with_whitespace_and_gt_in_values() {
    let m = one("<message\n to = 'a>b' \t type=\"x'y\"\r\n><body\n>t</body\n></message >");
    assert_eq!(m.attr("to"), Some("a>b"));
    assert_eq!(m.attr("type"), Some("x'y"));
    assert_eq!(m.get_child("body", "jabber:client").unwrap().text(), "t");
}

#[test]
fn xml_prefix_is_predeclared_and_may_be_declared() {
    let m = one("<message xmlns:xml='http://www.w3.org/XML/1998/namespace' xml:lang='en'/>");
    assert_eq!(m.attrs, vec![("xml:lang".into(), "en".to_string())]);
}

// ---------------------------------------------------------------------------------------------
// Restricted XML

#[test]
fn comments_are_restricted() {
    for bad in ["<!-- c -->", "<message><!-- c --></message>", "<message><body>x<!--c--></body></message>"] {
        assert_eq!(err(bad), XmlError::RestrictedXml("comment"), "{bad}");
    }
    assert_eq!(all("<!-- c --><stream:stream>").unwrap_err(), XmlError::RestrictedXml("comment"));
}

#[test]
fn processing_instructions_are_restricted() {
    for bad in [
        "<?php x?>",
        "<message><?pi x?></message>",
        "<?xml version='1.0'?>",
        "<message><?xml version='1.0'?></message>",
    ] {
        assert_eq!(err(bad), XmlError::RestrictedXml("processing instruction"), "{bad}");
    }
    // Before the root: only one XML declaration, and only an XML declaration.
    for bad in [
        "<?pi x?><stream:stream>",
        "<?xml-stylesheet href='x'?><stream:stream>",
        "<?xml version='1.0'?><?xml version='1.0'?><stream:stream>",
        "<?xml version='1.0'?><?pi?><stream:stream>",
    ] {
        assert_eq!(all(bad).unwrap_err(), XmlError::RestrictedXml("processing instruction"), "{bad}");
    }
}

#[test]
fn dtds_are_restricted() {
    let laughs = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>\
                  <!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>]>\
                  <stream:stream xmlns:stream='http://etherx.jabber.org/streams'>&lol2;";
    assert_eq!(all(laughs).unwrap_err(), XmlError::RestrictedXml("document type declaration"));
    // Refused as soon as "<!D" arrives, without waiting for the rest.
    assert!(is_restricted(&all("<!D").unwrap_err()));
    for bad in [
        "<!DOCTYPE x>",
        "<!ENTITY x 'y'>",
        "<!ELEMENT x ANY>",
        "<!ATTLIST x y CDATA #IMPLIED>",
        "<!NOTATION x>",
    ] {
        assert!(is_restricted(&err(bad)), "{bad}");
        assert!(is_restricted(&err(&format!("<message>{bad}</message>"))), "{bad}");
    }
}

// ---------------------------------------------------------------------------------------------
// Limits

#[test]
fn size_limit_applies_before_the_stanza_completes() {
    let limits = Limits { max_stanza_bytes: 500, ..Limits::default() };
    let mut p = StreamParser::new(limits);
    p.feed(HEADER.as_bytes());
    assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
    p.feed(b"<message><body>");
    assert_eq!(p.next_event(), Ok(None));
    p.feed("x".repeat(600).as_bytes());
    assert!(is_policy(&p.next_event().unwrap_err()));
    // Also in the middle of a tag or an attribute value.
    let tag = format!("{HEADER}<message to='{}", "x".repeat(600));
    assert!(is_policy(&events(tag.as_bytes(), limits).unwrap_err()));
    let cdata = format!("{HEADER}<message><![CDATA[{}", "x".repeat(600));
    assert!(is_policy(&events(cdata.as_bytes(), limits).unwrap_err()));
}

#[test]
fn size_limit_is_exact() {
    let stanza = |n: usize| format!("<message>{}</message>", "x".repeat(n - 19));
    assert_eq!(stanza(100).len(), 100);
    let limits = Limits { max_stanza_bytes: 100, ..Limits::default() };
    // The header counts against the limit too: keep it short.
    let header = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
    let ok = format!("{header}{}", stanza(100));
    assert_eq!(events(ok.as_bytes(), limits).unwrap().len(), 2);
    let bad = format!("{header}{}", stanza(101));
    assert!(is_policy(&events(bad.as_bytes(), limits).unwrap_err()));
    // The whitespace before a stanza does not count.
    let spaced = format!("{header}{}{}", " ".repeat(1000), stanza(100));
    assert_eq!(events(spaced.as_bytes(), limits).unwrap().len(), 2);
}

#[test]
fn size_limit_bounds_the_header_and_declaration() {
    let limits = Limits { max_stanza_bytes: 64, ..Limits::default() };
    let header = format!("<stream:stream xmlns:stream='{STREAMS_NS}' to='{}'>", "x".repeat(100));
    assert!(is_policy(&events(header.as_bytes(), limits).unwrap_err()));
    let unterminated = format!("<stream:stream to='{}", "x".repeat(100));
    assert!(is_policy(&events(unterminated.as_bytes(), limits).unwrap_err()));
    let decl = format!("<?xml version='1.0' {}", " ".repeat(100));
    assert!(is_policy(&events(decl.as_bytes(), limits).unwrap_err()));
    let close = format!("<stream:stream xmlns:stream='{STREAMS_NS}'></stream:stream{}>", " ".repeat(100));
    assert!(is_policy(&events(close.as_bytes(), limits).unwrap_err()));
}

#[test]
fn depth_limit() {
    let limits = Limits { max_depth: 3, ..Limits::default() };
    let ok = format!("{HEADER}<a><b><c/></b></a><a><b><c>t</c></b></a>");
    assert_eq!(events(ok.as_bytes(), limits).unwrap().len(), 3);
    // Refused as soon as the fourth level opens.
    let deep = format!("{HEADER}<a><b><c><d>");
    assert!(is_policy(&events(deep.as_bytes(), limits).unwrap_err()));
    let deep_empty = format!("{HEADER}<a><b><c><d/>");
    assert!(is_policy(&events(deep_empty.as_bytes(), limits).unwrap_err()));
    let limits = Limits { max_depth: 1, ..Limits::default() };
    assert!(is_policy(&events(format!("{HEADER}<a><b/></a>").as_bytes(), limits).unwrap_err()));
    assert_eq!(events(format!("{HEADER}<a>t</a><b/>").as_bytes(), limits).unwrap().len(), 3);
}

#[test]
fn attribute_limit() {
    // The header has 5 attributes (namespace declarations count).
    let limits = Limits { max_attrs: 5, ..Limits::default() };
    let ok = format!(
        "{HEADER}<a x='1' y='2' z='3' u='4' v='5'/><a xmlns='urn:a' xmlns:p='urn:p' x='1' y='2' z='3'/>"
    );
    assert_eq!(events(ok.as_bytes(), limits).unwrap().len(), 3);
    let attrs = format!("{HEADER}<a x='1' y='2' z='3' u='4' v='5' w='6'/>");
    assert!(is_policy(&events(attrs.as_bytes(), limits).unwrap_err()));
    let decls = format!("{HEADER}<a><b xmlns='urn:b' xmlns:p='urn:p' x='1' y='2' z='3' w='4'/></a>");
    assert!(is_policy(&events(decls.as_bytes(), limits).unwrap_err()));
    let limits = Limits { max_attrs: 4, ..Limits::default() };
    assert!(is_policy(&events(HEADER.as_bytes(), limits).unwrap_err()));
}

#[test]
fn byte_at_a_time_large_stanza_is_linear() {
    let body = "y".repeat(200_000);
    let input = format!("{HEADER}<message><body a='{body}'>{body}<![CDATA[{body}]]></body></message>");
    let mut p = StreamParser::new(Limits { max_stanza_bytes: 1 << 20, ..Limits::default() });
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    for b in input.as_bytes() {
        p.feed(std::slice::from_ref(b));
        while let Some(ev) = p.next_event().unwrap() {
            got.push(ev);
        }
    }
    assert_eq!(got.len(), 2);
    assert_eq!(stanza(&got[1]).get_child("body", "jabber:client").unwrap().text().len(), 400_000);
    // Quadratic rescanning would take minutes here.
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// Not well-formed

#[test]
fn malformed_stanzas_are_not_well_formed() {
    for bad in [
        // Mismatched and stray end tags.
        "<message><body></message>",
        "<message></body>",
        "<a></a ></b>",
        "</stream:other>",
        "</message>",
        "<message></message x>",
        "<message></>",
        // Attributes.
        "<message a='1' a='2'/>",
        "<message a='<'/>",
        "<message a/>",
        "<message a=1/>",
        "<message a='&foo;'/>",
        "<message a='&#1;'/>",
        "<message a='&amp'/>",
        // Prefixes and namespace declarations.
        "<x:message/>",
        "<message x:a='1'/>",
        "<message xmlns:p=''/>",
        "<message xmlns:xml='urn:not-xml'/>",
        "<message xmlns:p='http://www.w3.org/XML/1998/namespace'/>",
        "<message xmlns:xmlns='urn:x'/>",
        "<xmlns:message/>",
        "<xml:message/>",
        // Names.
        "<1message/>",
        "<:message/>",
        "<message:/>",
        "<a:b:c xmlns:a='urn:a'/>",
        "< message/>",
        "<message/ >",
        "<message 1a='x'/>",
        "<message a='1'b='2'/>",
        "<message a='1'/b='2'/>",
        // Entities and characters.
        "<message>&foo;</message>",
        "<message>&amp</message>",
        "<message>a & b</message>",
        "<message>&#0;</message>",
        "<message>&#1;</message>",
        "<message>&#xD800;</message>",
        "<message>&#xFFFE;</message>",
        "<message>&#x110000;</message>",
        "<message>&#xZZ;</message>",
        "<message>\u{FFFF}</message>",
        "<message>]]></message>",
        // Stream level.
        "hello",
        "<![CDATA[x]]>",
        "<!x>",
        "<message><![CDAT[x]]></message>",
    ] {
        let e = err(bad);
        assert!(is_nwf(&e), "{bad}: {e:?}");
    }
}

#[test]
fn mismatched_end_tag_is_refused_at_once() {
    let mut p = StreamParser::new(Limits::default());
    p.feed(format!("{HEADER}<message><body><x></body>").as_bytes());
    assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
    assert!(is_nwf(&p.next_event().unwrap_err()));
}

#[test]
fn bad_bytes_are_not_well_formed() {
    let cases: [&[u8]; 6] = [
        b"<message>\xff</message>",
        b"<message>\xc3</message>",
        b"<message>\x01</message>",
        b"<message a='\x0b'/>",
        b"<message>\x00</message>",
        b"\x0c",
    ];
    for bad in cases {
        let mut input = HEADER.as_bytes().to_vec();
        input.extend_from_slice(bad);
        let e = events(&input, Limits::default()).unwrap_err();
        assert!(is_nwf(&e), "{bad:?}: {e:?}");
    }
    assert!(is_nwf(&events(b"<stream:stream to='\xff'>", Limits::default()).unwrap_err()));
}

#[test]
fn junk_before_the_root() {
    for bad in [
        "hello<stream:stream>",
        "</stream:stream>",
        "<![CDATA[x]]><stream:stream>",
        "<?xml version='1.0'?>x<stream:stream>",
        "<?xml version='2.0'?><stream:stream>",
        "<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream>",
        "<?xml encoding='UTF-8'?><stream:stream>",
        "<stream:stream>",
        "<1stream/>",
    ] {
        let e = all(bad).unwrap_err();
        assert!(is_nwf(&e), "{bad}: {e:?}");
    }
    let ok = "<?xml version='1.0' encoding='utf-8' standalone='yes' ?>\n<stream:stream xmlns:stream='s'>";
    assert_eq!(all(ok).unwrap().len(), 1);
}

#[test]
fn root_end_tag_must_match() {
    assert!(is_nwf(&err("</stream>")));
    assert!(is_nwf(&err("</stream:streamx>")));
    assert!(is_nwf(&err("</ stream:stream>")));
    assert_eq!(after_header("</stream:stream\t>").unwrap(), vec![Event::StreamClose]);
}

// ---------------------------------------------------------------------------------------------
// Property tests

fn sample_stream() -> String {
    format!(
        "{HEADER}  <message to='a@b' id='x&apos;1'><body>caf\u{e9} &lt;b&gt; <![CDATA[raw & ]]]]>&#x263A;</body>\
         <x xmlns='urn:x'><y a=\"q'>\"/></x><p:z xmlns:p='urn:p' p:q='1'/></message>\n<presence/>\
         <iq type='set' id='2'>\n <query xmlns='jabber:iq:roster'><item jid='b@c' name='B'><group>G</group>\
         </item></query></iq> <stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\
         </stream:features>\r\n</stream:stream> "
    )
}

/// Feed `bytes` split at `cuts`, draining events after every piece; the events and the error.
fn chunked(bytes: &[u8], cuts: &[usize], limits: Limits) -> (Vec<Event>, Option<XmlError>) {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut p = StreamParser::new(limits);
    let mut got = Vec::new();
    let mut last = 0;
    for c in cuts.into_iter().chain(std::iter::once(bytes.len())) {
        p.feed(&bytes[last..c]);
        last = c;
        loop {
            match p.next_event() {
                Ok(Some(e)) => got.push(e),
                Ok(None) => break,
                Err(e) => return (got, Some(e)),
            }
        }
    }
    (got, None)
}

const BAD_STREAMS: &[&str] = &[
    "<message><body></message>",
    "<message>&foo;</message>",
    "<message><!-- x --></message>",
    "<message a='1' a='2'/>",
    "<message><a><b><c><d><e><f><g><h><i/></h></g></f></e></d></c></b></a></message>",
    "<message>\u{1}</message>",
    "text",
    "<message><body>way too long for the limit ... way too long for the limit ... way too long</body></message>",
];

fn arb_text() -> impl Strategy<Value = String> + Clone {
    "[a-z &<>'\"\u{e9}\u{263A}\u{1F600}\r\n\t\\]]{0,12}"
}

fn arb_element(depth: u32) -> impl Strategy<Value = Element> {
    let name = prop::sample::select(vec!["a", "b", "message", "body", "x-y", "caf\u{e9}"]);
    let ns = prop::sample::select(vec!["jabber:client", "urn:x", "urn:y:z", "", "http://a/?b&c='d'"]);
    let attrs =
        prop::collection::vec((prop::sample::select(vec!["id", "to", "type", "xml:lang"]), arb_text()), 0..3);
    let leaf = (name.clone(), ns.clone(), attrs.clone(), arb_text()).prop_map(|(n, s, attrs, t)| {
        let mut e = Element::new(n, s);
        for (k, v) in attrs {
            e.set_attr(k, v);
        }
        e.with_text(t)
    });
    leaf.prop_recursive(depth, 24, 4, move |inner| {
        (
            name.clone(),
            ns.clone(),
            attrs.clone(),
            prop::collection::vec(
                prop_oneof![inner.prop_map(Node::Element), arb_text().prop_map(Node::Text)],
                0..5,
            ),
        )
            .prop_map(|(n, s, attrs, kids)| {
                let mut e = Element::new(n, s);
                for (k, v) in attrs {
                    e.set_attr(k, v);
                }
                for k in kids {
                    match k {
                        Node::Element(c) => e.append_child(c),
                        Node::Text(t) => e.append_text(t),
                    }
                }
                e
            })
    })
}

/// Write `e` into a stream whose default namespace is jabber:client and parse it back.
fn roundtrip(e: &Element, parent_ns: &str) -> Element {
    let mut input = HEADER.as_bytes().to_vec();
    let mut written = Vec::new();
    e.write_to(&mut written, parent_ns);
    input.extend_from_slice(&written);
    let ev = events(&input, Limits { max_stanza_bytes: 1 << 20, ..Limits::default() }).unwrap();
    assert_eq!(ev.len(), 2, "{}", String::from_utf8_lossy(&written));
    stanza(&ev[1]).clone()
}

/// Up to `max` bytes, about half of them drawn from XML's markup characters, so that tags,
/// quotes, references and declarations turn up often among the noise.
fn arb_markup_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![any::<u8>(), prop::sample::select(b"<>/='\"!?[]-&#;: \nax".to_vec())],
        0..max,
    )
}

/// A stream whose root declares only the default namespace, as `parse_element` assumes.
const PLAIN_ROOT: &[u8] = b"<stream xmlns='jabber:client'>";

/// What a stream gives until more bytes are needed: its events, then the kind of error if any
/// (messages differ between the parse stages; the stream error they map to must not).
fn outcome(data: &[u8], limits: Limits) -> (Vec<Event>, Option<std::mem::Discriminant<XmlError>>) {
    let mut p = StreamParser::new(limits);
    p.feed(data);
    let mut out = Vec::new();
    loop {
        match p.next_event() {
            Ok(Some(e)) => out.push(e),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(std::mem::discriminant(&e))),
        }
    }
}

/// The framer's parse stage against the quick-xml one it replaced (`framer_oracle.rs`): the same
/// events and the same kind of error for the same bytes.
fn same_as_oracle(data: &[u8]) -> Result<(), TestCaseError> {
    let limits = Limits { max_stanza_bytes: 400, max_depth: 6, max_attrs: 6 };
    let ours = outcome(data, limits);
    let old = oracle::with_oracle(|| outcome(data, limits));
    prop_assert_eq!(ours, old, "input: {:?}", String::from_utf8_lossy(data));
    Ok(())
}

/// Character data and attribute values built from the pieces that need care: references (good,
/// undefined, out of range, malformed), line ends, tabs, `]]>`, quotes, non-ASCII.
fn arb_xml_text() -> impl Strategy<Value = String> {
    let pieces = vec![
        "a",
        "z9",
        " ",
        "&lt;",
        "&gt;",
        "&amp;",
        "&apos;",
        "&quot;",
        "&#60;",
        "&#x3C;",
        "&#x3c;",
        "&#X41;",
        "&#0;",
        "&#9;",
        "&#10;",
        "&#13;",
        "&#xD;",
        "&#;",
        "&#x;",
        "&#+65;",
        "&#-1;",
        "&#0065;",
        "&#xD800;",
        "&#xFFFE;",
        "&#x10FFFF;",
        "&#x110000;",
        "&#99999999999;",
        "&bogus;",
        "&lt",
        "&",
        "\r\n",
        "\r",
        "\n",
        "\t",
        "]]>",
        "]]",
        "]",
        ">",
        "'",
        "\"",
        "é",
        "\u{2028}",
        "&#x85;",
    ];
    prop::collection::vec(prop::sample::select(pieces), 0..8).prop_map(|v| v.concat())
}

/// A stanza-shaped string: one element with attributes (names, namespace declarations, both
/// quote styles, whitespace around `=`), text, CDATA and children, sometimes subtly malformed.
fn arb_stanza_text() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec!["a", "b:c", "message", "x", "stream:features", "1bad", "a:", ":a"]);
    let key = prop::sample::select(vec![
        "k",
        "to",
        "xmlns",
        "xmlns:b",
        "xmlns:stream",
        "xml:lang",
        "b:k",
        "xmlns:xml",
        "q:k",
        "k",
    ]);
    let eq = prop::sample::select(vec!["=", " = ", "\n=\t", "", "=="]);
    let quote = prop::sample::select(vec!["'", "\""]);
    let attr = (key, eq, quote, arb_xml_text(), any::<bool>()).prop_map(|(k, eq, q, v, closed)| {
        // `v` may hold the other quote, or this one (which ends the value early).
        format!(" {k}{eq}{q}{v}{}", if closed { q } else { "" })
    });
    let child = prop::sample::select(vec![
        "",
        "<b:c/>",
        "<x k='1'/>",
        "<x></x >",
        "<![CDATA[<&\r\n]]]>",
        "<y>&amp;</y>",
    ]);
    (name, prop::collection::vec(attr, 0..4), arb_xml_text(), child, arb_xml_text(), any::<bool>()).prop_map(
        |(name, attrs, t1, child, t2, empty)| {
            let attrs = attrs.concat();
            if empty {
                format!("<{name}{attrs}/>")
            } else {
                format!("<{name}{attrs}>{t1}{child}{t2}</{name}>")
            }
        },
    )
}

proptest! {
    // Cheap cases, and the parse stage's whole correctness argument: many of them.
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_parse_stage_agrees_with_quick_xml_on_any_bytes(data in arb_markup_bytes(300)) {
        let mut input = PLAIN_ROOT.to_vec();
        input.extend_from_slice(&data);
        same_as_oracle(&input)?;
        // And as a stream header (the XML declaration and root tag come from `data`).
        same_as_oracle(&data)?;
    }

    #[test]
    fn the_parse_stage_agrees_with_quick_xml_on_stanzas(stanzas in prop::collection::vec(arb_stanza_text(), 1..4)) {
        let mut input = b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' xmlns:b='urn:b'>".to_vec();
        input.extend_from_slice(stanzas.concat().as_bytes());
        same_as_oracle(&input)?;
    }

    #[test]
    fn the_parse_stage_agrees_with_quick_xml_on_headers(attrs in prop::collection::vec(arb_stanza_text(), 1..2)) {
        // A root start tag built from a stanza's start tag.
        let tag = attrs[0].split_inclusive('>').next().unwrap_or_default().replace("/>", ">");
        let input = format!("<?xml version='1.0'?>{tag}");
        same_as_oracle(input.as_bytes())?;
    }
}

proptest! {
    #[test]
    fn a_lone_element_parses_back_as_written(e in arb_element(3)) {
        let mut written = Vec::new();
        e.write_to(&mut written, "jabber:client");
        let limits = Limits { max_stanza_bytes: 1 << 20, ..Limits::default() };
        prop_assert_eq!(parse_element(&written, "jabber:client", &limits), Ok(e.clone()));
        prop_assert_eq!(roundtrip(&e, "jabber:client"), e);
    }

    #[test]
    fn a_lone_element_is_accepted_or_refused_as_in_a_stream(
        data in arb_markup_bytes(300),
    ) {
        let limits = Limits { max_stanza_bytes: 200, max_depth: 6, max_attrs: 6 };
        let mut p = StreamParser::new(limits);
        p.feed(PLAIN_ROOT);
        p.feed(&data);
        let (mut stanzas, mut error) = (Vec::new(), None);
        loop {
            match p.next_event() {
                Ok(Some(Event::Stanza(e))) => stanzas.push(e),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        // In the stream, the bytes were exactly one element (whitespace aside).
        let lone = error.is_none() && stanzas.len() == 1 && p.buffered_len() == 0;
        match parse_element(&data, "jabber:client", &limits) {
            Ok(e) => {
                prop_assert!(lone, "accepted alone, not in a stream: {:?}", String::from_utf8_lossy(&data));
                prop_assert_eq!(&stanzas[0], &e);
            }
            Err(alone) => {
                prop_assert!(!lone, "refused alone ({alone}), accepted in a stream: {:?}", String::from_utf8_lossy(&data));
                if stanzas.is_empty() {
                    if let Some(streamed) = error {
                        prop_assert_eq!(alone, streamed);
                    }
                }
            }
        }
    }

    #[test]
    fn any_chunking_yields_the_same_events(cuts in prop::collection::vec(any::<usize>(), 0..40)) {
        let input = sample_stream();
        let expected = all(&input).unwrap();
        prop_assert_eq!(expected.len(), 6);
        let (got, error) = chunked(input.as_bytes(), &cuts, Limits::default());
        prop_assert_eq!(error, None);
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn any_chunking_yields_the_same_error(
        which in 0..BAD_STREAMS.len(),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let limits = Limits { max_stanza_bytes: 80, max_depth: 6, max_attrs: 8 };
        let input = format!("{HEADER}<presence/>{}<presence/>", BAD_STREAMS[which]);
        let whole = chunked(input.as_bytes(), &[], limits);
        prop_assert!(whole.1.is_some(), "{:?}", whole);
        prop_assert_eq!(chunked(input.as_bytes(), &cuts, limits), whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_chunk_alike(
        data in arb_markup_bytes(400),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let limits = Limits { max_stanza_bytes: 300, max_depth: 8, max_attrs: 8 };
        let mut input = HEADER.as_bytes().to_vec();
        input.extend_from_slice(&data);
        let whole = chunked(&input, &[], limits);
        prop_assert_eq!(&chunked(&input, &cuts, limits), &whole);
        let bare = chunked(&data, &[], limits);
        prop_assert_eq!(&chunked(&data, &cuts, limits), &bare);
        // Whatever was accepted writes back out and parses to the same element.
        for ev in whole.0.iter().chain(&bare.0) {
            if let Event::Stanza(e) = ev {
                prop_assert_eq!(&roundtrip(e, "jabber:client"), e);
            }
        }
    }

    #[test]
    fn mutated_streams_chunk_alike_and_round_trip(
        edits in prop::collection::vec((any::<usize>(), 0u8..3, prop::sample::select(
            b"<>/='\"!?[]-&#;: \nax\x01\xc3\xa9".to_vec())), 1..6),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut input = sample_stream().into_bytes();
        for (at, op, byte) in edits {
            let at = at % (input.len() + 1);
            match op {
                0 => input.insert(at, byte),
                1 if at < input.len() => { input.remove(at); }
                _ if at < input.len() => input[at] = byte,
                _ => {}
            }
        }
        let limits = Limits { max_stanza_bytes: 400, max_depth: 5, max_attrs: 6 };
        let whole = chunked(&input, &[], limits);
        prop_assert_eq!(&chunked(&input, &cuts, limits), &whole);
        for ev in &whole.0 {
            if let Event::Stanza(e) = ev {
                prop_assert_eq!(&roundtrip(e, "jabber:client"), e);
            }
        }
    }

    #[test]
    fn written_elements_parse_back_equal(e in arb_element(4)) {
        prop_assert_eq!(&roundtrip(&e, "jabber:client"), &e);
        // Self-contained serialization too (the stream's default namespace is jabber:client, but
        // to_bytes always declares; an empty namespace needs xmlns='' in that context).
        if !e.ns.is_empty() {
            let mut input = HEADER.as_bytes().to_vec();
            input.extend_from_slice(&e.to_bytes());
            let ev = events(&input, Limits { max_stanza_bytes: 1 << 20, ..Limits::default() }).unwrap();
            prop_assert_eq!(stanza(&ev[1]), &e);
        }
    }
}

#[test]
fn the_declarations_taken_on_sight_are_ones_the_full_check_accepts() {
    for decl in COMMON_DECLS {
        assert!(parse_decl(decl).is_ok(), "{}", String::from_utf8_lossy(decl));
        let stream = [decl, b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>"].concat();
        assert!(matches!(events(&stream, Limits::default()).unwrap()[..], [Event::StreamOpen(_)]));
    }
}

#[test]
fn ascii_names_are_checked_as_the_full_name_rules_check_them() {
    let full = |s: &str| {
        let mut chars = s.chars();
        chars.next().is_some_and(is_name_start_char) && chars.all(is_name_char)
    };
    for a in 0u8..128 {
        for b in [b'a', b'1', b'-', b'.', b'_', b':', b' ', b'\x7f', a] {
            let name = String::from_utf8(vec![a, b]).unwrap();
            assert_eq!(is_ncname(&name), full(&name), "{name:?}");
        }
        let one = String::from_utf8(vec![a]).unwrap();
        assert_eq!(is_ncname(&one), full(&one), "{one:?}");
    }
    assert!(!is_ncname(""));
    assert!(is_ncname("stream") && is_ncname("x-y.z_1") && is_ncname("é1") && !is_ncname("1é"));
}

#[test]
fn qualified_names_split_in_one_pass_as_the_full_rules_split_them() {
    // Every string of up to four characters over an alphabet of each class of byte, and one
    // beyond ASCII: the one-pass split and the split by the full NCName rules agree.
    let alphabet = ["a", "Z", "_", "1", "-", ".", ":", " ", "\t", "=", "/", "\u{7f}", "é"];
    let mut names = vec![String::new()];
    for _ in 0..4 {
        let longer: Vec<String> =
            names.iter().flat_map(|n| alphabet.iter().map(move |c| format!("{n}{c}"))).collect();
        names.extend(longer);
    }
    names.sort();
    names.dedup();
    for name in &names {
        let fast = split_qname(name).map_err(|_| ());
        let full = split_qname_unicode(name).map_err(|_| ());
        assert_eq!(fast, full, "{name:?}");
    }
    assert_eq!(split_qname("stream:features").unwrap(), ("stream", "features"));
    assert_eq!(split_qname("xml:lang").unwrap(), ("xml", "lang"));
    assert_eq!(split_qname("body").unwrap(), ("", "body"));
    for bad in ["", ":a", "a:", "a::b", "a:b:c", "1a", "a:1b", "-a", "a b"] {
        assert!(split_qname(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn an_attribute_given_twice_is_not_well_formed() {
    let nwf = |s: &str| {
        matches!(
            events(format!("{HEADER}{s}").as_bytes(), Limits::default()),
            Err(XmlError::NotWellFormed(_))
        )
    };
    for bad in [
        "<message to='a' to='b'/>",
        "<message to='a' id='1' to='a'><body/></message>",
        "<message><body xml:lang='en' xml:lang='de'/></message>",
        "<iq xmlns='jabber:client' xmlns='jabber:client'/>",
        "<iq xmlns:p='urn:p' xmlns:p='urn:q'/>",
        "<iq><query xmlns:p='urn:p' p:a='1' p:a='2'/></iq>",
    ] {
        assert!(nwf(bad), "{bad}");
    }
    // The same name on different elements, or a declaration and an attribute that only look
    // alike, are fine.
    let ok = format!("{HEADER}<message to='a'><body to='b' xmlns='urn:x' xmlns:to='urn:to'/></message>");
    assert_eq!(events(ok.as_bytes(), Limits::default()).unwrap().len(), 2);
    let header = format!("<stream:stream xmlns='jabber:client' xmlns:stream='{STREAMS_NS}' to='a' to='b'>");
    assert!(matches!(events(header.as_bytes(), Limits::default()), Err(XmlError::NotWellFormed(_))));
}
