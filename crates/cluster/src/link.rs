//! Batched, bounded links.
//!
//! Every link direction is a bounded queue of [`Item`]s drained by the gRPC stream as
//! [`Batch`]es: the first item waits, then whatever else is queued right now (up to
//! [`MAX_BATCH`]) rides in the same gRPC message. Under load batches grow by themselves; when idle
//! each item leaves at once, so batching adds no latency.
//!
//! Backpressure policy, decided per direction:
//! - edge → router carries client stanzas: [`Outbox::push`] waits for room, which stops reading
//!   that client's socket (TCP pushes back to the client; nobody else is slowed).
//! - router → edge and router → router: [`Outbox::try_push`] never waits (a router must not stall
//!   on one slow peer); a full queue refuses the item and the router answers the sender with an
//!   error (`resource-constraint`) or treats the recipient session as unable to keep up.

use starling_rpc::link::{item, Batch, Item};
use starling_telemetry::{metrics, IntCounter};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{LazyLock, Mutex, Once};
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Most items in one gRPC message.
pub const MAX_BATCH: usize = 512;

/// Every open link direction, read when `/metrics` is scraped (`starling_link_queue_depth`), so
/// queueing an item costs no metric update.
static LIVE: LazyLock<Mutex<Vec<LiveLink>>> = LazyLock::new(|| Mutex::new(Vec::new()));

/// A link direction's peer and a handle that does not keep the link open.
type LiveLink = (u64, mpsc::WeakSender<Item>);

/// Sum the queued items per peer over the links still open; forget closed ones.
fn collect_depths() {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let mut depth: HashMap<u64, usize> = HashMap::new();
    live.retain(|(peer, weak)| match weak.upgrade() {
        Some(tx) if !tx.is_closed() => {
            *depth.entry(*peer).or_default() += tx.max_capacity() - tx.capacity();
            true
        }
        _ => false,
    });
    let gauge = &metrics().link_queue_depth;
    gauge.reset();
    for (peer, d) in depth {
        gauge.with_label_values(&[&peer.to_string()]).set(i64::try_from(d).unwrap_or(i64::MAX));
    }
}

/// The sending side of one link direction.
#[derive(Clone)]
pub struct Outbox {
    /// Towards the gRPC stream.
    tx: mpsc::Sender<Item>,
    /// `starling_link_dropped_total{peer}` of this link's peer.
    dropped: IntCounter,
}

impl Outbox {
    /// A queue of `capacity` items towards node `peer` and the stream of batches that drains it.
    pub fn new(capacity: usize, peer: u64) -> (Outbox, BatchStream) {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| metrics().on_scrape(Box::new(collect_depths)));
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        if live.len() >= 256 {
            // Links come and go (re-dials); keep the list bounded even when nobody scrapes.
            live.retain(|(_, w)| w.upgrade().is_some_and(|t| !t.is_closed()));
        }
        live.push((peer, tx.downgrade()));
        drop(live);
        let dropped = metrics().link_dropped.with_label_values(&[&peer.to_string()]);
        (Outbox { tx, dropped }, BatchStream { rx })
    }

    /// Queue without waiting; false (and counted in `starling_link_dropped_total`) when full or
    /// closed.
    pub fn try_push(&self, it: item::Item) -> bool {
        match self.tx.try_send(Item { item: Some(it) }) {
            Ok(()) => true,
            Err(_) => {
                self.dropped.inc();
                false
            }
        }
    }

    /// Queue, waiting for room; false when the link is gone.
    pub async fn push(&self, it: item::Item) -> bool {
        self.tx.send(Item { item: Some(it) }).await.is_ok()
    }

    /// Items waiting to be sent.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Whether the draining stream has gone (the link broke).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The receiving side of an [`Outbox`]: a stream of batches for tonic to send.
pub struct BatchStream {
    /// Items queued by the [`Outbox`].
    rx: mpsc::Receiver<Item>,
}

impl BatchStream {
    fn poll_batch(&mut self, cx: &mut Context<'_>) -> Poll<Option<Batch>> {
        let first = match self.rx.poll_recv(cx) {
            Poll::Ready(Some(first)) => first,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        let mut items = Vec::with_capacity(8);
        items.push(first);
        while items.len() < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(it) => items.push(it),
                Err(_) => break,
            }
        }
        Poll::Ready(Some(Batch { items }))
    }
}

impl tokio_stream::Stream for BatchStream {
    type Item = Batch;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Batch>> {
        self.poll_batch(cx)
    }
}

/// A [`BatchStream`] as a tonic server response stream.
pub struct ResponseStream(pub BatchStream);

impl tokio_stream::Stream for ResponseStream {
    type Item = Result<Batch, tonic::Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_batch(cx).map(|b| b.map(Ok))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use starling_rpc::link::{Envelope, SessionClose};
    use tokio_stream::StreamExt;

    fn env(n: u64) -> item::Item {
        item::Item::Stanza(Envelope { session: n, ..Envelope::default() })
    }

    #[tokio::test]
    async fn queued_items_leave_in_one_batch_in_order() {
        let (out, mut stream) = Outbox::new(1000, 7001);
        for i in 0..700 {
            assert!(out.try_push(env(i)));
        }
        let a = stream.next().await.unwrap();
        let b = stream.next().await.unwrap();
        assert_eq!(a.items.len(), MAX_BATCH);
        assert_eq!(b.items.len(), 700 - MAX_BATCH);
        let ids: Vec<u64> = a
            .items
            .iter()
            .chain(&b.items)
            .map(|i| match &i.item {
                Some(item::Item::Stanza(e)) => e.session,
                _ => u64::MAX,
            })
            .collect();
        assert_eq!(ids, (0..700).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_without_waiting_and_counts() {
        let (out, stream) = Outbox::new(2, 7002);
        assert!(out.try_push(env(1)));
        assert!(out.try_push(env(2)));
        assert!(!out.try_push(env(3)));
        assert_eq!(out.depth(), 2);
        let text = metrics().encode();
        assert!(text.contains("starling_link_dropped_total{peer=\"7002\"} 1"), "{text}");
        assert!(text.contains("starling_link_queue_depth{peer=\"7002\"} 2"), "{text}");
        drop(stream);
        let text = metrics().encode();
        assert!(!text.contains("starling_link_queue_depth{peer=\"7002\"}"), "closed links leave: {text}");
        assert!(out.is_closed());
        assert!(!out.push(item::Item::SessionClose(SessionClose::default())).await);
    }

    #[tokio::test]
    async fn push_waits_for_room() {
        let (out, mut stream) = Outbox::new(1, 7003);
        assert!(out.try_push(env(1)));
        let waiter = tokio::spawn({
            let out = out.clone();
            async move { out.push(env(2)).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert_eq!(stream.next().await.unwrap().items.len(), 1);
        assert!(waiter.await.unwrap());
        assert_eq!(stream.next().await.unwrap().items.len(), 1);
    }
}
