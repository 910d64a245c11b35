//! A small owned XML tree with namespaces resolved, and its serializer.
//!
//! The tree is what the [framer](crate::framer) produces for each stanza and what the rest of the
//! server builds replies with. Names are local names plus a resolved namespace URI; prefixes are
//! gone after parsing, and the writer only ever uses default-namespace declarations.

use crate::name::Name;

/// An element: local name, resolved namespace, attributes and children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    /// Local name (no prefix).
    pub name: Name,
    /// Resolved namespace URI ("" if none).
    pub ns: Name,
    /// Attributes in document order. Keys are local names, except the XML namespace's attributes,
    /// which keep the `xml:` prefix (`xml:lang`). Namespace declarations are not kept here;
    /// attributes in other namespaces are dropped by the parser.
    pub attrs: Vec<(Name, String)>,
    /// Child nodes in document order.
    pub children: Vec<Node>,
}

/// An element serialized self-contained (as by [`Element::to_bytes`]) with a place for one
/// attribute right after its name; made by [`Element::template`].
#[derive(Clone, Debug)]
pub struct Template {
    bytes: Vec<u8>,
    /// Where the attribute goes: after `<name` and the namespace declaration.
    at: usize,
    /// The attribute's name.
    attr: &'static str,
}

impl Template {
    /// The element's bytes with the attribute set to `value` (escaped): the bytes
    /// [`Element::to_bytes`] gives for the element with that attribute first.
    pub fn with(&self, value: &str) -> Vec<u8> {
        self.with_parts(&[value])
    }

    /// [`Template::with`] with the value given in parts, joined (a full JID from its bare JID,
    /// "/" and the resource, without formatting it first).
    pub fn with_parts(&self, value: &[&str]) -> Vec<u8> {
        let (head, tail) = self.bytes.split_at(self.at);
        let len: usize = value.iter().map(|p| p.len()).sum();
        let mut out = Vec::with_capacity(self.bytes.len() + self.attr.len() + len + 8);
        out.extend_from_slice(head);
        out.push(b' ');
        out.extend_from_slice(self.attr.as_bytes());
        out.extend_from_slice(b"='");
        for part in value {
            escape_into(&mut out, part, true);
        }
        out.push(b'\'');
        out.extend_from_slice(tail);
        out
    }

    /// The element's bytes without the attribute (for tests: delivery always sets it).
    #[cfg(test)]
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A child node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Character data (entities already resolved).
    Text(String),
}

impl Element {
    /// An empty element.
    pub fn new(name: impl Into<Name>, ns: impl Into<Name>) -> Element {
        Element { name: name.into(), ns: ns.into(), attrs: Vec::new(), children: Vec::new() }
    }

    /// Builder: set an attribute (replacing one of the same name).
    pub fn with_attr(mut self, name: impl Into<Name>, value: impl Into<String>) -> Element {
        self.set_attr(name, value);
        self
    }

    /// Builder: append a child element.
    pub fn with_child(mut self, child: Element) -> Element {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder: append text (merged with a preceding text node, like [`Element::append_text`]).
    pub fn with_text(mut self, text: impl Into<String>) -> Element {
        self.append_text(text);
        self
    }

    /// Whether this is `name` in namespace `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// An attribute's value.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Set an attribute, replacing an existing one of the same name.
    pub fn set_attr(&mut self, name: impl Into<Name>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((name, value)),
        }
    }

    /// Remove an attribute, returning its value.
    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let pos = self.attrs.iter().position(|(k, _)| k == name)?;
        Some(self.attrs.remove(pos).1)
    }

    /// Append a child element.
    pub fn append_child(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// Append text, merging with a preceding text node (so adjacent text stays one node).
    /// Empty text adds nothing.
    pub fn append_text(&mut self, text: impl Into<String>) {
        let text = text.into();
        if text.is_empty() {
            return;
        }
        if let Some(Node::Text(t)) = self.children.last_mut() {
            t.push_str(&text);
        } else {
            self.children.push(Node::Text(text));
        }
    }

    /// Append the text `f` writes, merged with a preceding text node like
    /// [`Element::append_text`], without building it in a string of its own first. `size` is
    /// what `f` is expected to write, reserved up front.
    pub(crate) fn append_text_with<E>(
        &mut self,
        size: usize,
        f: impl FnOnce(&mut String) -> Result<(), E>,
    ) -> Result<(), E> {
        if let Some(Node::Text(t)) = self.children.last_mut() {
            t.reserve(size);
            return f(t);
        }
        let mut text = String::with_capacity(size);
        f(&mut text)?;
        if !text.is_empty() {
            self.children.push(Node::Text(text));
        }
        Ok(())
    }

    /// Child elements.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// Child elements, mutable.
    pub fn elements_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.children.iter_mut().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child `name` in `ns`.
    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(name, ns))
    }

    /// The first child `name` in `ns`, mutable.
    pub fn get_child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.elements_mut().find(|e| e.is(name, ns))
    }

    /// Remove and return the first child `name` in `ns`.
    pub fn remove_child(&mut self, name: &str, ns: &str) -> Option<Element> {
        let pos = self.children.iter().position(|n| matches!(n, Node::Element(e) if e.is(name, ns)))?;
        match self.children.remove(pos) {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        }
    }

    /// The first child element.
    pub fn first_element(&self) -> Option<&Element> {
        self.elements().next()
    }

    /// The concatenated direct text children.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                s.push_str(t);
            }
        }
        s
    }

    /// Serialize. `parent_ns` is the default namespace in scope where this element is written; an
    /// `xmlns='..'` declaration is emitted only when `self.ns` differs from it (children likewise
    /// relative to their parent). Uses only default-namespace declarations (never prefixes);
    /// `xml:` attributes are written as-is. Attribute values use single quotes; `&`, `<`, `>`,
    /// `'`, `"` are escaped in attributes and `&`, `<`, `>` in text. CR (and TAB, LF in
    /// attributes) are written as character references so that they survive re-parsing.
    ///
    /// The caller keeps names valid and text free of characters XML 1.0 forbids (anything parsed
    /// by the framer already is).
    pub fn write_to(&self, out: &mut Vec<u8>, parent_ns: &str) {
        self.write_name(out, parent_ns);
        self.write_rest(out);
    }

    /// `<name` and the namespace declaration when it differs from the parent's.
    fn write_name(&self, out: &mut Vec<u8>, parent_ns: &str) {
        out.push(b'<');
        out.extend_from_slice(self.name.as_bytes());
        if self.ns != parent_ns {
            out.extend_from_slice(b" xmlns='");
            escape_into(out, &self.ns, true);
            out.push(b'\'');
        }
    }

    /// The attributes, the children and the end tag.
    fn write_rest(&self, out: &mut Vec<u8>) {
        self.write_attrs(out, "");
        self.write_children(out);
    }

    /// The attributes but `skip`.
    fn write_attrs(&self, out: &mut Vec<u8>, skip: &str) {
        for (k, v) in self.attrs.iter().filter(|(k, _)| *k != skip) {
            out.push(b' ');
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"='");
            escape_into(out, v, true);
            out.push(b'\'');
        }
    }

    /// `/>`, or `>`, the children and the end tag.
    fn write_children(&self, out: &mut Vec<u8>) {
        if self.children.is_empty() {
            out.extend_from_slice(b"/>");
            return;
        }
        out.push(b'>');
        for c in &self.children {
            match c {
                Node::Element(e) => e.write_to(out, &self.ns),
                Node::Text(t) => escape_into(out, t, false),
            }
        }
        out.extend_from_slice(b"</");
        out.extend_from_slice(self.name.as_bytes());
        out.push(b'>');
    }

    /// Self-contained serialization (declares its namespace when it has one).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.write_to(&mut out, "");
        out
    }

    /// Serialize once for many copies that differ in attribute `attr` only (a presence
    /// broadcast: the same stanza, another 'to' for each contact). The element's own `attr`,
    /// if any, is left out. Each [`Template::with`] then costs one copy of the bytes, not a
    /// tree clone and a serialization.
    pub fn template(&self, attr: &'static str) -> Template {
        let mut bytes = Vec::with_capacity(128);
        self.write_name(&mut bytes, "");
        let at = bytes.len();
        self.write_attrs(&mut bytes, attr);
        self.write_children(&mut bytes);
        Template { bytes, at, attr }
    }

    /// [`Element::to_bytes`] as a string, for logs and tests.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.to_bytes()).into_owned()
    }
}

/// Escape text (`attr == false`) or a single-quoted attribute value (`attr == true`) into `out`,
/// as [`Element::write_to`] does.
pub fn escape_into(out: &mut Vec<u8>, s: &str, attr: bool) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let rep: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'\'' if attr => b"&apos;",
            b'"' if attr => b"&quot;",
            // Keep CR, and in attributes TAB and LF, from being normalized away on re-parse.
            b'\r' => b"&#13;",
            b'\n' if attr => b"&#10;",
            b'\t' if attr => b"&#9;",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(rep);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_namespaces_only_where_they_change() {
        let e = Element::new("message", "jabber:client")
            .with_attr("to", "a'b\"<&>")
            .with_child(Element::new("body", "jabber:client").with_text("1 < 2 & 3 > 2"))
            .with_child(Element::new("x", "urn:x"));
        let mut out = Vec::new();
        e.write_to(&mut out, "jabber:client");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<message to='a&apos;b&quot;&lt;&amp;&gt;'><body>1 &lt; 2 &amp; 3 &gt; 2</body><x xmlns='urn:x'/></message>"
        );
    }

    #[test]
    fn accessors() {
        let mut e = Element::new("iq", "c").with_attr("id", "1").with_child(Element::new("q", "n"));
        assert_eq!(e.attr("id"), Some("1"));
        e.set_attr("id", "2");
        assert_eq!(e.attr("id"), Some("2"));
        assert_eq!(e.remove_attr("id").as_deref(), Some("2"));
        assert!(e.get_child("q", "n").is_some());
        assert!(e.remove_child("q", "n").is_some());
        assert!(e.first_element().is_none());
        e.append_text("a");
        e.append_text("b");
        assert_eq!(e.text(), "ab");
        assert_eq!(e.children.len(), 1);
    }

    #[test]
    fn a_template_gives_the_bytes_of_the_element_with_the_attribute_first() {
        let presence = Element::new("presence", "jabber:client")
            .with_attr("from", "a@x/r")
            .with_child(Element::new("show", "jabber:client").with_text("away"));
        let template = presence.template("to");
        assert_eq!(template.bytes(), presence.to_bytes().as_slice());
        for to in ["b@x", "o'brien@x/<r>"] {
            let mut expected = presence.clone();
            expected.attrs.insert(0, ("to".into(), to.into()));
            assert_eq!(template.with(to), expected.to_bytes(), "to={to}");
            assert_eq!(template.with_parts(&["o'brien@x", "/", "<r>"]), template.with("o'brien@x/<r>"));
        }
        // The element's own value of the attribute is replaced, never repeated.
        let addressed = presence.clone().with_attr("to", "old@x");
        assert_eq!(addressed.template("to").with("b@x"), template.with("b@x"));
        let empty = Element::new("presence", "").template("to");
        assert_eq!(empty.with("b@x"), b"<presence to='b@x'/>");
    }
}
