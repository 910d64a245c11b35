//! External components (XEP-0114, "jabber:component:accept").
//!
//! A component connects, names its domain in the stream header's 'to', proves it knows the
//! shared secret with `<handshake>hex(SHA-1(stream id + secret))</handshake>`, and then exchanges
//! stanzas for its domain. Inside the server stanzas live in `jabber:client`; this module moves
//! them between the two namespaces at the boundary.

use crate::io::{
    random_id, shutdown_within, write_all_within, write_stream_header, Conn, StreamId, STREAM_CLOSE,
};
use crate::{ChannelSink, Edge, SessionHost};
use starling_xml::{Element, Event, StreamParser};
use starling_xmpp::session::{parse_stored_stanza, ToClient};
use starling_xmpp::stanza::{kind_of, rewrite_content_ns};
use starling_xmpp::{ns, Jid, StreamError};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};

/// XEP-0114 §3: the handshake digest, lowercase hex of SHA-1(stream id ‖ secret).
pub fn handshake_digest(stream_id: &str, secret: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{stream_id}{secret}").as_bytes(),
    );
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `domain` is the component's domain or a subdomain of it (XEP-0114 allows both as 'from').
fn within(domain: &str, component: &str) -> bool {
    domain == component || domain.strip_suffix(component).is_some_and(|p| p.ends_with('.'))
}

/// Serve one component connection to its end.
pub async fn run<H: SessionHost>(edge: Arc<Edge<H>>, tcp: TcpStream, peer: SocketAddr) {
    let mut conn = Conn::Plain(tcp);
    let mut parser = StreamParser::new(edge.cfg.limits);
    let mut out = Vec::with_capacity(4096);
    let handshake_deadline = Instant::now() + edge.cfg.handshake_timeout;
    let mut shutdown = edge.shutdown_signal();
    let stream_id = random_id();
    // The domain once the header named a configured one; the registration once authenticated.
    let mut domain: Option<String> = None;
    let mut header_sent = false;
    let mut rx = None;
    // When bytes last arrived: the component idle timeout (if any) counts from here.
    let mut last_received = Instant::now();
    // A write made no progress within the write timeout: nothing more is written.
    let mut stalled = false;
    let write_timeout = edge.cfg.write_timeout;

    let close = |out: &mut Vec<u8>, header_sent: bool, from: &str, err: Option<StreamError>| {
        out.clear();
        if !header_sent {
            write_stream_header(out, ns::COMPONENT_ACCEPT, from, None, StreamId::Fresh, false);
        }
        if let Some(err) = err {
            out.extend_from_slice(b"<stream:error>");
            Element::new(err.condition(), ns::STREAM_ERRORS).write_to(out, ns::COMPONENT_ACCEPT);
            out.extend_from_slice(b"</stream:error>");
        }
        out.extend_from_slice(STREAM_CLOSE);
    };

    'conn: loop {
        loop {
            let ev = match parser.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(e) => {
                    close(&mut out, header_sent, domain.as_deref().unwrap_or(""), Some(e.into()));
                    break 'conn;
                }
            };
            match ev {
                Event::StreamOpen(h) => {
                    let to = h.attr("to").unwrap_or_default().to_owned();
                    if h.ns != ns::STREAM || h.default_ns.as_deref() != Some(ns::COMPONENT_ACCEPT) {
                        close(&mut out, header_sent, &to, Some(StreamError::InvalidNamespace));
                        break 'conn;
                    }
                    if !edge.cfg.components.contains_key(&to) {
                        close(&mut out, header_sent, &to, Some(StreamError::HostUnknown));
                        break 'conn;
                    }
                    out.clear();
                    write_stream_header(
                        &mut out,
                        ns::COMPONENT_ACCEPT,
                        &to,
                        None,
                        StreamId::Given(&stream_id),
                        false,
                    );
                    header_sent = true;
                    domain = Some(to);
                }
                Event::StreamClose => {
                    close(&mut out, true, "", None);
                    break 'conn;
                }
                Event::Stanza(mut e) => {
                    let Some(d) = domain.clone() else { break 'conn };
                    if rx.is_none() {
                        let secret = edge.cfg.components.get(&d).cloned().unwrap_or_default();
                        let expected = handshake_digest(&stream_id, &secret);
                        let good = e.is("handshake", ns::COMPONENT_ACCEPT)
                            && starling_xmpp::sasl::constant_time_eq(
                                e.text().trim().to_ascii_lowercase().as_bytes(),
                                expected.as_bytes(),
                            );
                        if !good {
                            tracing::info!(%peer, domain = %d, "component handshake refused");
                            close(&mut out, true, &d, Some(StreamError::NotAuthorized));
                            break 'conn;
                        }
                        let (sink, r) = ChannelSink::new(edge.cfg.session_queue);
                        if !edge.host.component_connected(&d, sink) {
                            close(&mut out, true, &d, Some(StreamError::Conflict));
                            break 'conn;
                        }
                        tracing::info!(%peer, domain = %d, "component connected");
                        rx = Some(r);
                        out.clear();
                        Element::new("handshake", ns::COMPONENT_ACCEPT)
                            .write_to(&mut out, ns::COMPONENT_ACCEPT);
                    } else {
                        let Some(kind) = kind_of(&e).filter(|_| e.ns == ns::COMPONENT_ACCEPT) else {
                            close(&mut out, true, &d, Some(StreamError::UnsupportedStanzaType));
                            break 'conn;
                        };
                        crate::counters::stanza_in(kind);
                        let from_ok = e
                            .attr("from")
                            .and_then(|f| Jid::new(f).ok())
                            .is_some_and(|j| within(j.domain().as_str(), &d));
                        if !from_ok {
                            close(&mut out, true, &d, Some(StreamError::InvalidFrom));
                            break 'conn;
                        }
                        rewrite_content_ns(&mut e, ns::COMPONENT_ACCEPT, ns::CLIENT);
                        edge.host.handle_from_component(&d, e).await;
                    }
                }
            }
            if !out.is_empty() {
                if let Err(e) = write_all_within(&mut conn, &out, write_timeout).await {
                    stalled = e.kind() == std::io::ErrorKind::TimedOut;
                    out.clear();
                    break 'conn;
                }
                out.clear();
            }
        }
        // Before the handshake the handshake deadline applies; afterwards a component is never
        // dropped for being quiet unless `component_idle_timeout` is set (XEP-0114 components
        // commonly send nothing for hours), and then only received bytes count.
        let idle = match (&rx, edge.cfg.component_idle_timeout) {
            (None, _) => Some(handshake_deadline),
            (Some(_), Some(t)) => Some(last_received + t),
            (Some(_), None) => None,
        };
        tokio::select! {
            r = conn.read_buf(parser.buffer_mut()) => match r {
                Ok(0) | Err(_) => { out.clear(); break 'conn; }
                Ok(_) => last_received = Instant::now(),
            },
            item = async { match rx.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                out.clear();
                // Pre-serialized stanzas are parsed back here: a component's stream has another
                // default namespace, so the content namespace must be rewritten.
                let item = match item {
                    Some(ToClient::Raw(bytes)) => match parse_stored_stanza(&bytes) {
                        Ok(e) => Some(ToClient::Stanza(e)),
                        Err(e) => { tracing::warn!(error = %e, "dropping unparsable stanza for a component"); continue 'conn; }
                    },
                    other => other,
                };
                match item {
                    Some(ToClient::Raw(_)) => {}
                    Some(ToClient::Stanza(mut e)) => {
                        crate::counters::stanza_out(kind_of(&e));
                        rewrite_content_ns(&mut e, ns::CLIENT, ns::COMPONENT_ACCEPT);
                        e.write_to(&mut out, ns::COMPONENT_ACCEPT);
                        if let Err(e) = write_all_within(&mut conn, &out, write_timeout).await {
                            stalled = e.kind() == std::io::ErrorKind::TimedOut;
                            out.clear();
                            break 'conn;
                        }
                        out.clear();
                    }
                    Some(ToClient::Close(err)) => { close(&mut out, true, "", Some(err)); break 'conn; }
                    None => { close(&mut out, true, "", Some(StreamError::InternalServerError)); break 'conn; }
                }
            }
            _ = async { match idle { Some(at) => sleep_until(at).await, None => std::future::pending().await } } => {
                close(&mut out, header_sent, domain.as_deref().unwrap_or(""), Some(StreamError::ConnectionTimeout));
                break 'conn;
            }
            _ = shutdown.changed() => {
                close(&mut out, header_sent, domain.as_deref().unwrap_or(""), Some(StreamError::SystemShutdown));
                break 'conn;
            }
        }
    }
    if stalled {
        tracing::info!(%peer, timeout = ?write_timeout, "component stopped reading; dropping the connection");
    } else {
        if !out.is_empty() {
            let _ = write_all_within(&mut conn, &out, write_timeout).await;
        }
        shutdown_within(&mut conn, write_timeout).await;
    }
    if let (Some(d), Some(_)) = (domain, rx) {
        edge.host.component_disconnected(&d);
        tracing::info!(%peer, domain = %d, "component disconnected");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_xep_0114_example() {
        // Stream id 3BF96D32, secret "sunshine" (XEP-0114 §3); digest computed independently with Python hashlib.
        assert_eq!(handshake_digest("3BF96D32", "sunshine"), "8e2449516c688436d4ca76dad7e0c43ca1c20b18");
    }

    #[test]
    fn subdomains_are_within() {
        assert!(within("comp.localhost", "comp.localhost"));
        assert!(within("a.comp.localhost", "comp.localhost"));
        assert!(!within("xcomp.localhost", "comp.localhost"));
        assert!(!within("localhost", "comp.localhost"));
    }
}
