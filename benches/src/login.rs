//! The login storm's cheap client side: what it reads off the server's raw stanza bytes.
//!
//! A login storm measures the server, so the generator's own cost per login must stay well
//! below the server's: on one core it otherwise becomes the limit (a full XML parse of every
//! reply was about a third of its user time). The storm's logins frame the server's replies with
//! [`RawFramer`](crate::presence::RawFramer) and read only what a client must check from them:
//! which element arrived, its text (SASL payloads are base64, which needs no unescaping), an
//! attribute of its start tag, and whether the features ask for the legacy session. The servers
//! measured are trusted to send well-formed XML; anything unexpected fails the login.

pub use crate::presence::is_element;
use crate::presence::{attributes, find, tag_end, FrameError, RawFramer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The character data of a simple element `<name …>text</name>` (empty for `<name …/>`), as
/// written: base64 and other entity-free text needs no unescaping.
pub fn text(stanza: &[u8]) -> Option<&[u8]> {
    let end = tag_end(stanza, 0)?;
    if stanza[end - 1] == b'/' {
        return Some(&[]);
    }
    let body = &stanza[end + 1..];
    let close = body.iter().position(|&c| c == b'<')?;
    Some(&body[..close])
}

/// An attribute of the element's start tag, as written (not unescaped).
pub fn attr<'a>(stanza: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let end = tag_end(stanza, 0)?;
    let name_end = stanza.iter().position(|&c| matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b'>' | b'/'))?;
    attributes(&stanza[name_end..end]).find(|(k, _)| *k == name.as_bytes()).map(|(_, v)| v)
}

/// Whether stream features offer the legacy session (RFC 3921) without marking it
/// `<optional/>`: only then does a client send the session request (RFC 6121 dropped it;
/// Conversations, Gajim and slixmpp skip an optional one, as the generator does).
pub fn needs_session(features: &[u8]) -> bool {
    let Some(at) = find(features, 0, b"urn:ietf:params:xml:ns:xmpp-session") else { return false };
    // The session element is the one whose namespace this is: its `<optional/>` child, if any,
    // comes before its end (or it is empty).
    let Some(open) = features[..at].iter().rposition(|&c| c == b'<') else { return true };
    let Some(open_end) = tag_end(features, open) else { return true };
    if features[open_end - 1] == b'/' {
        return true;
    }
    let inside_end = find(features, open_end, b"</").unwrap_or(features.len());
    find(&features[..inside_end], open_end, b"<optional").is_none()
}

/// A TCP stream read with a [`RawFramer`]: the login storm's client side, and the login-floor
/// server's.
pub struct RawConn {
    tcp: TcpStream,
    framer: RawFramer,
}

impl RawConn {
    /// Frame what arrives on `tcp` from the start (no stream header read yet).
    pub fn new(tcp: TcpStream) -> RawConn {
        RawConn { tcp, framer: RawFramer::default() }
    }

    /// Write all of `data`.
    pub async fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.tcp.write_all(data).await
    }

    /// Write the connection's last bytes, to be closed right after: offered with `MSG_MORE`,
    /// so the close sends them and the FIN in one segment (as `starling serve` does when a
    /// client closes its stream); what the kernel does not take at once is written as usual.
    pub async fn send_last(&mut self, data: &[u8]) -> std::io::Result<()> {
        let tcp = &self.tcp;
        let held = tcp.try_io(tokio::io::Interest::WRITABLE, || {
            socket2::SockRef::from(tcp).send_with_flags(data, libc::MSG_MORE | libc::MSG_NOSIGNAL)
        });
        let rest = match held {
            Ok(n) => &data[n..],
            Err(_) => data,
        };
        self.tcp.write_all(rest).await
    }

    /// Close the stream as RFC 6120 §4.4 asks of the side that closes first: send
    /// `</stream:stream>`, then wait for the peer's own closing tag (or its end of the
    /// connection) before the socket is dropped. A client that drops the socket at once makes
    /// the peer's reply meet a closed socket, and every connection end in a reset.
    pub async fn close_stream(&mut self) -> std::io::Result<()> {
        self.send(b"</stream:stream>").await?;
        loop {
            match self.stanza().await {
                Ok(_) => continue,
                Err(e) if closed_stream(&e) || e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Read more of the stream (what earlier stanzas' ranges pointed at is dropped).
    async fn fill(&mut self) -> std::io::Result<()> {
        self.framer.compact();
        let buf = self.framer.buffer_mut();
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        if self.tcp.read_buf(buf).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed by peer"));
        }
        Ok(())
    }

    /// Wait for the peer's stream header.
    pub async fn header(&mut self) -> std::io::Result<()> {
        while !self.framer.skip_stream_header().map_err(invalid)? {
            self.fill().await?;
        }
        Ok(())
    }

    /// The next stanza's bytes (valid until the next read). The peer closing its stream is an
    /// error of kind `InvalidData` wrapping [`FrameError::StreamClosed`] (see [`closed_stream`]).
    pub async fn stanza(&mut self) -> std::io::Result<&[u8]> {
        loop {
            if let Some(r) = self.framer.next_stanza().map_err(invalid)? {
                return Ok(self.framer.bytes(r));
            }
            self.fill().await?;
        }
    }
}

fn invalid(e: FrameError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

/// Whether an error of [`RawConn`] is the peer's `</stream:stream>`.
pub fn closed_stream(e: &std::io::Error) -> bool {
    e.get_ref().and_then(|e| e.downcast_ref::<FrameError>()) == Some(&FrameError::StreamClosed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn elements_are_told_by_their_whole_name() {
        assert!(is_element(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>", "success"));
        assert!(is_element(b"<challenge>abc</challenge>", "challenge"));
        assert!(!is_element(b"<successor/>", "success"));
        assert!(!is_element(b"<failure><not-authorized/></failure>", "success"));
        assert!(is_element(b"<stream:features><bind/></stream:features>", "stream:features"));
    }

    #[test]
    fn text_and_attributes_are_read_as_written() {
        let ch = b"<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>cj1hYmMscz1k</challenge>";
        assert_eq!(text(ch), Some(&b"cj1hYmMscz1k"[..]));
        assert_eq!(text(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"), Some(&b""[..]));
        let iq = b"<iq type=\"result\" id='b' to='u@x/r'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
            <jid>u@x/r</jid></bind></iq>";
        assert_eq!(attr(iq, "id"), Some(&b"b"[..]));
        assert_eq!(attr(iq, "type"), Some(&b"result"[..]));
        assert_eq!(attr(iq, "from"), None);
        // An attribute of a child is not the stanza's.
        assert_eq!(attr(b"<iq id='x'><bind type='no'/></iq>", "type"), None);
    }

    /// A connected pair on loopback: the client's `RawConn` (past the peer's stream header) and
    /// the peer's socket.
    async fn pair() -> (RawConn, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("address")).await.expect("connect");
        let (mut peer, _) = listener.accept().await.expect("accept");
        peer.write_all(
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
            xmlns:stream='http://etherx.jabber.org/streams' id='x' version='1.0'>",
        )
        .await
        .expect("header");
        let mut c = RawConn::new(client);
        c.header().await.expect("header read");
        (c, peer)
    }

    /// Read from the peer's side until `want` has arrived.
    async fn read_until(peer: &mut tokio::net::TcpStream, want: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        while !got.windows(want.len()).any(|w| w == want) {
            let mut buf = [0u8; 256];
            let n = peer.read(&mut buf).await.expect("peer read");
            assert!(n > 0, "the client closed before sending {:?}", String::from_utf8_lossy(want));
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[tokio::test]
    async fn closing_sends_the_tag_and_waits_for_the_peer_s_own() {
        let bound = std::time::Duration::from_secs(5);
        // The peer answers with a stanza, then its closing tag, and keeps its socket open: the
        // close ends on the tag (it would hang, and time out, if it waited for the socket).
        let (mut c, mut peer) = pair().await;
        let closing = tokio::spawn(async move { tokio::time::timeout(bound, c.close_stream()).await });
        assert!(read_until(&mut peer, b"</stream:stream>").await.ends_with(b"</stream:stream>"));
        assert!(!closing.is_finished(), "the close did not wait for the peer's tag");
        peer.write_all(b"<message to='a@b'><body>late</body></message></stream:stream>")
            .await
            .expect("reply");
        let closed = closing.await.expect("task");
        assert!(matches!(closed, Ok(Ok(()))), "{closed:?}");
        // Then the client's socket is closed.
        let mut rest = [0u8; 16];
        assert_eq!(peer.read(&mut rest).await.expect("end"), 0);

        // A peer that closes its socket without a tag ends the close as well.
        let (mut c, mut peer) = pair().await;
        let closing = tokio::spawn(async move { tokio::time::timeout(bound, c.close_stream()).await });
        read_until(&mut peer, b"</stream:stream>").await;
        drop(peer);
        let closed = closing.await.expect("task");
        assert!(matches!(closed, Ok(Ok(()))), "{closed:?}");
    }

    #[test]
    fn the_session_is_needed_only_when_offered_and_not_optional() {
        let bind = "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>";
        let optional = format!(
            "<stream:features>{bind}<session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>\
             <sm xmlns='urn:xmpp:sm:3'/></stream:features>"
        );
        let required = format!(
            "<stream:features>{bind}<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>\
             <ver xmlns='urn:xmpp:features:rosterver'><optional/></ver></stream:features>"
        );
        let required_open = format!(
            "<stream:features><session xmlns='urn:ietf:params:xml:ns:xmpp-session'></session>{bind}\
             <c><optional/></c></stream:features>"
        );
        let none = format!("<stream:features>{bind}</stream:features>");
        assert!(!needs_session(optional.as_bytes()));
        assert!(needs_session(required.as_bytes()));
        assert!(needs_session(required_open.as_bytes()));
        assert!(!needs_session(none.as_bytes()));
    }
}
