//! The connection type shared by client and component streams, and small stream-writing helpers.

use starling_xml::element::escape_into;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// A client or component connection: plain TCP, or TLS over TCP (after STARTTLS or direct TLS).
pub enum Conn {
    /// Unencrypted.
    Plain(TcpStream),
    /// Encrypted; boxed because the TLS state is large and most of a connection's life is spent here.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Conn {
    /// Whether the stream is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Write all of `buf` and flush, failing with [`std::io::ErrorKind::TimedOut`] as soon as one
/// write (or the final flush) makes no progress for `limit`: a peer that stops reading cannot
/// hold its connection, and what the connection holds, forever. A slow peer that keeps taking
/// bytes is not cut off, however long the whole buffer takes.
pub async fn write_all_within<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut buf: &[u8],
    limit: Duration,
) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = within(limit, w.write(buf)).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    within(limit, w.flush()).await
}

/// Run `io`, failing with [`std::io::ErrorKind::TimedOut`] if it is still waiting after
/// `limit`. What finishes when first polled (nearly every write: the socket buffer has room)
/// sets no timer and reads no clock.
async fn within<T>(limit: Duration, io: impl Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    let mut io = std::pin::pin!(io);
    if let Poll::Ready(r) = poll_once(io.as_mut()).await {
        return r;
    }
    tokio::time::timeout(limit, io)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write made no progress"))?
}

/// Poll `f` once, from inside an async function: `Ready` with its output if it finished.
pub(crate) async fn poll_once<F: Future>(mut f: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx))).await
}

/// [`write_all_within`] for the last bytes of a connection that is closed right after. On plain
/// TCP they are first offered to the kernel with `MSG_MORE`, which holds them back: the close
/// then sends them and the FIN in one segment, one packet (and one pass through the peer's
/// receive path) fewer per connection. Whatever the kernel does not take at once goes the
/// ordinary way, which also pushes what was held.
///
/// Only for a connection whose peer has nothing more to send (it closed its stream): closing a
/// socket with unread bytes resets it, and a reset discards bytes still held back.
pub async fn write_last_within(conn: &mut Conn, mut buf: &[u8], limit: Duration) -> std::io::Result<()> {
    if let Conn::Plain(tcp) = conn {
        let held = tcp.try_io(tokio::io::Interest::WRITABLE, || {
            socket2::SockRef::from(&*tcp).send_with_flags(buf, libc::MSG_MORE | libc::MSG_NOSIGNAL)
        });
        if let Ok(n) = held {
            buf = &buf[n..];
        }
    }
    if buf.is_empty() {
        return Ok(());
    }
    write_all_within(conn, buf, limit).await
}

/// Shut the write side down (TLS close_notify included), giving up after `limit`.
pub async fn shutdown_within<W: AsyncWrite + Unpin>(w: &mut W, limit: Duration) {
    let _ = tokio::time::timeout(limit, w.shutdown()).await;
}

/// N unpredictable bytes (see [`starling_xmpp::random`]).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The system RNG failing is not recoverable in any useful way; fall back to a time-based
    // value rather than panicking, ids stay unique enough for stream ids.
    if starling_xmpp::random::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> ((i % 16) * 8)) as u8;
        }
    }
    b
}

/// A random lowercase hex string of `2 * 12` characters (stream ids, generated resources).
pub fn random_id() -> String {
    let mut id = Vec::with_capacity(24);
    push_random_id(&mut id);
    String::from_utf8(id).unwrap_or_default()
}

/// Append `2 * 12` random lowercase hex characters to `out`.
fn push_random_id(out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in random_bytes::<12>() {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

/// The stream id to put in a server's stream header.
pub enum StreamId<'a> {
    /// A fresh random id.
    Fresh,
    /// This one (a component's handshake digest covers it).
    Given(&'a str),
}

/// Append the server's stream header (RFC 6120 §4.7) to `out`. `to` echoes the initiator's
/// 'from' when it sent one.
pub fn write_stream_header(
    out: &mut Vec<u8>,
    content_ns: &str,
    from: &str,
    to: Option<&str>,
    id: StreamId<'_>,
    version: bool,
) {
    // The header's fixed text and a fresh id take about 190 bytes; the features follow.
    out.reserve(256 + content_ns.len() + from.len() + to.map_or(0, str::len));
    out.extend_from_slice(b"<?xml version='1.0'?><stream:stream xmlns='");
    escape_into(out, content_ns, true);
    out.extend_from_slice(b"' xmlns:stream='");
    out.extend_from_slice(starling_xmpp::ns::STREAM.as_bytes());
    out.extend_from_slice(b"' id='");
    match id {
        StreamId::Fresh => push_random_id(out),
        StreamId::Given(id) => escape_into(out, id, true),
    }
    out.extend_from_slice(b"' from='");
    escape_into(out, from, true);
    if let Some(to) = to {
        out.extend_from_slice(b"' to='");
        escape_into(out, to, true);
    }
    out.extend_from_slice(b"'");
    if version {
        out.extend_from_slice(b" version='1.0' xml:lang='en'");
    }
    out.push(b'>');
}

/// The closing tag of a stream.
pub const STREAM_CLOSE: &[u8] = b"</stream:stream>";

/// Read what the peer sent into `buf`. On a plain TCP stream with no buffer allocated (an idle
/// connection released it), wait until the socket is readable and only then reserve, so an idle
/// session holds no read buffer. TLS streams keep their own buffers; they read directly.
///
/// The read itself goes through `poll_read`, which clears the socket's readiness after a short
/// read (the kernel buffer is then known to be empty): the next wait sleeps in epoll instead of
/// waking at once for a `recv` that can only fail with `EAGAIN`. That was one wasted system call
/// in every read of a login.
pub async fn read_into(conn: &mut Conn, buf: &mut bytes::BytesMut) -> std::io::Result<usize> {
    match conn {
        Conn::Plain(tcp) if buf.capacity() == 0 => loop {
            tcp.readable().await?;
            buf.reserve(READ_CHUNK);
            let attempt = poll_once(std::pin::pin!(tcp.read_buf(buf))).await;
            match attempt {
                Poll::Ready(r) => return r,
                // The readiness was stale: wait again holding nothing, as before.
                Poll::Pending => *buf = bytes::BytesMut::new(),
            }
        },
        _ => conn.read_buf(buf).await,
    }
}

/// Bytes reserved for one read on a connection that had released its buffer.
const READ_CHUNK: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_idle_plain_connection_reads_without_a_buffer_held_in_advance() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let mut conn = Conn::Plain(listener.accept().await.unwrap().0);
        let mut buf = bytes::BytesMut::new();
        {
            let reading = read_into(&mut conn, &mut buf);
            tokio::pin!(reading);
            assert!(poll_once(reading.as_mut()).await.is_pending(), "nothing sent yet");
            peer.write_all(b"<presence/>").await.unwrap();
            assert_eq!(reading.await.unwrap(), 11);
        }
        assert_eq!(&buf[..], b"<presence/>");
        // The successful read left the socket's readiness set; the next wait finds it stale
        // (nothing to read) and must not keep the buffer it reserved for the attempt.
        let mut idle = bytes::BytesMut::new();
        {
            let reading = read_into(&mut conn, &mut idle);
            tokio::pin!(reading);
            assert!(poll_once(reading.as_mut()).await.is_pending(), "nothing more sent");
        }
        assert_eq!(idle.capacity(), 0, "a connection waiting for bytes holds no read buffer");
        drop(peer);
        assert_eq!(read_into(&mut conn, &mut bytes::BytesMut::new()).await.unwrap(), 0, "end of stream");
    }

    #[tokio::test]
    async fn the_last_bytes_arrive_before_the_end_of_the_stream() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let mut conn = Conn::Plain(listener.accept().await.unwrap().0);
        // Held back by the kernel until the close...
        write_last_within(&mut conn, STREAM_CLOSE, Duration::from_secs(5)).await.unwrap();
        drop(conn);
        // ...which sends them, then the end of the stream.
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), peer.read_to_end(&mut got)).await.unwrap().unwrap();
        assert_eq!(got, STREAM_CLOSE);
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_times_the_write_out() {
        let (mut ours, _theirs) = tokio::io::duplex(1024);
        let start = std::time::Instant::now();
        let r = write_all_within(&mut ours, &[b'x'; 64 * 1024], Duration::from_millis(200)).await;
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(5), "{took:?}");
    }

    #[tokio::test]
    async fn a_slow_peer_that_keeps_reading_is_not_cut_off() {
        let (mut ours, mut theirs) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut chunk = [0u8; 64];
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                match theirs.read(&mut chunk).await {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
            }
        });
        // 16 reads of 64 bytes, 20 ms apart: the whole write takes longer than the limit, but
        // every single write makes progress well within it.
        let data = vec![b'y'; 1024];
        let start = std::time::Instant::now();
        write_all_within(&mut ours, &data, Duration::from_millis(150)).await.unwrap();
        assert!(start.elapsed() > Duration::from_millis(150), "{:?}", start.elapsed());
        drop(ours);
        assert_eq!(reader.await.unwrap(), data);
    }
}
