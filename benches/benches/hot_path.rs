//! Criterion micro-benchmarks of the hot path, each on what one stanza or one login costs:
//!
//! - `xml_framing`: the framer (check, then parse) over a stream of 100-byte-body messages, in
//!   MB/s and stanzas/s; once fed whole, once as 1,500-byte reads (what a socket hands over);
//!   and over what a client sends in one SCRAM login, read by read as the generator sends it;
//! - `envelope`: a stanza into a cluster envelope, protobuf encode and decode, and open again on
//!   the receiving node;
//! - `routing`: the decision for one stanza: its kind, the recipient's slot and that slot's
//!   owner, and RFC 6121 §8.5's choice among the recipient's resources;
//! - `scram`: the server side of one SCRAM-SHA-1 and SCRAM-SHA-256 exchange with stored
//!   credentials (client-first, server-first, client-final verified), with the client's cached
//!   keys computed outside the measurement.
//!
//! `cargo bench -p starling-bench --bench hot_path`; figures and how to read them are in
//! docs/benchmarks.md.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use prost::Message;
use starling_cluster::envelope;
use starling_registry::{slot_of, SlotTable};
use starling_router::delivery::{select_resources, BareSelection};
use starling_rpc::link::Envelope;
use starling_xml::{Element, Event, Limits, StreamParser};
use starling_xmpp::sasl::{ScramClient, ScramCredentials, ScramHash, ScramServer};
use starling_xmpp::stanza::kind_of;
use std::hint::black_box;

const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

/// One message as a client sends it: 100-byte body, id, type, to.
fn message(i: usize) -> String {
    let body = format!("{i:08} {}", "x".repeat(91));
    format!("<message to='user{}@localhost/r' id='m{i}' type='chat'><body>{body}</body></message>", i % 1000)
}

/// A stream of `n` messages after the header.
fn stream(n: usize) -> Vec<u8> {
    let mut s = HEADER.to_vec();
    for i in 0..n {
        s.extend_from_slice(message(i).as_bytes());
    }
    s
}

/// Feed `bytes` in `chunk`-byte reads and count the stanzas.
fn frame(bytes: &[u8], chunk: usize) -> usize {
    let mut p = StreamParser::new(Limits::default());
    let mut n = 0;
    for piece in bytes.chunks(chunk) {
        p.feed(piece);
        while let Ok(Some(ev)) = p.next_event() {
            if let Event::Stanza(e) = ev {
                black_box(&e);
                n += 1;
            }
        }
    }
    n
}

/// What the load generator's client sends in one SCRAM-SHA-1 login, one read each: the header,
/// `<auth>`, `<response>`, then (the stream restarted) the header again, the bind request and
/// the close.
const LOGIN_READS: [&[u8]; 6] = [
    HEADER,
    b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>biwsbj11c2VyMSxyPWwwbm9uY2U=</auth>",
    b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>Yz1iaXdzLHI9bDBub25jZWt6eUsvRk1pOXB5RnhRL3hoZnJZNHg4\
      RlB0VGNzQUo1LHA9KzRTOGFEdHExYnUrV0YwcmdiZ0Z1WXdtMDhVPQ==</response>",
    HEADER,
    b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>l0</resource></bind></iq>",
    b"</stream:stream>",
];

/// Frame one login's reads (restarting the stream after the third, as SASL success does) and
/// count the events: two headers, three stanzas, the close.
fn frame_login() -> usize {
    let mut p = StreamParser::new(Limits::default());
    let mut n = 0;
    for (i, read) in LOGIN_READS.iter().enumerate() {
        if i == 3 {
            p.reset();
        }
        p.feed(read);
        while let Ok(Some(ev)) = p.next_event() {
            black_box(&ev);
            n += 1;
        }
    }
    n
}

fn xml_framing(c: &mut Criterion) {
    const N: usize = 1000;
    let bytes = stream(N);
    let mut g = c.benchmark_group("xml_framing");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("messages_whole_MB", |b| {
        b.iter(|| assert_eq!(frame(black_box(&bytes), bytes.len()), N))
    });
    g.bench_function("messages_1500B_reads_MB", |b| b.iter(|| assert_eq!(frame(black_box(&bytes), 1500), N)));
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("messages_1500B_reads_stanzas", |b| {
        b.iter(|| assert_eq!(frame(black_box(&bytes), 1500), N))
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("one_login", |b| b.iter(|| assert_eq!(frame_login(), 6)));
    g.finish();
}

/// The message as the edge hands it on: parsed, with 'from' stamped.
fn stamped_message() -> Element {
    let mut p = StreamParser::new(Limits::default());
    p.feed(HEADER);
    p.feed(message(7).as_bytes());
    let mut found = None;
    while let Ok(Some(ev)) = p.next_event() {
        if let Event::Stanza(e) = ev {
            found = Some(e);
        }
    }
    let mut e = found.expect("the message parses");
    e.set_attr("from", "user6@localhost/s");
    e
}

fn envelope_round_trip(c: &mut Criterion) {
    let stanza = stamped_message();
    let wire = envelope::wrap(&stanza).encode_to_vec();
    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Elements(1));
    g.bench_function("wrap_and_encode", |b| b.iter(|| envelope::wrap(black_box(&stanza)).encode_to_vec()));
    g.bench_function("decode", |b| {
        b.iter(|| Envelope::decode(black_box(wire.as_slice())).map(|e| e.stanza.len()))
    });
    g.bench_function("decode_and_open", |b| {
        b.iter(|| {
            let env = Envelope::decode(black_box(wire.as_slice())).expect("decodes");
            envelope::open(&env).map(|e| e.children.len())
        })
    });
    g.finish();
}

fn routing(c: &mut Criterion) {
    let stanza = stamped_message();
    // Four routers owning the slots round-robin, as after a rebalance.
    let mut table = SlotTable::all_owned_by(1, 1);
    for slot in 0..starling_registry::SLOT_COUNT {
        table.assign(slot, u64::from(slot % 4) + 1, 2);
    }
    let priorities = [Some(0i8), None, Some(5), Some(5)];
    let mut g = c.benchmark_group("routing");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decide", |b| {
        b.iter(|| {
            let e = black_box(&stanza);
            let kind = kind_of(e);
            let to = e.attr("to").unwrap_or_default();
            let bare = to.split_once('/').map_or(to, |(bare, _)| bare);
            let owner = table.owner(slot_of(bare));
            let chosen = select_resources(black_box(&priorities), BareSelection::HighestPriority);
            (kind, owner, chosen)
        })
    });
    g.finish();
}

fn scram(c: &mut Criterion) {
    let mut g = c.benchmark_group("scram");
    g.throughput(Throughput::Elements(1));
    for (hash, name) in
        [(ScramHash::Sha1, "sha1_server_exchange"), (ScramHash::Sha256, "sha256_server_exchange")]
    {
        let creds = ScramCredentials::derive(hash, "password", b"0123456789abcdef", 4096).expect("derives");
        // The client's side once, outside the measurement: the server nonce is fixed so the
        // same client-final verifies every time.
        let mut client = ScramClient::new(hash, "user", "password", "clientnonce");
        let first = client.client_first();
        let mut server = ScramServer::with_nonce(hash, "servernonce");
        server.client_first(&first).expect("client-first");
        let server_first = server.server_first(&creds);
        let fin = client.handle_server_first(&server_first).expect("server-first");
        g.bench_function(name, |b| {
            b.iter_batched(
                || ScramServer::with_nonce(hash, "servernonce"),
                |mut server| {
                    server.client_first(black_box(&first)).expect("client-first");
                    server.server_first(&creds);
                    server.client_final(black_box(&fin)).expect("the proof verifies")
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(hot_path, xml_framing, envelope_round_trip, routing, scram);
criterion_main!(hot_path);
