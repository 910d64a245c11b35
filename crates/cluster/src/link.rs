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
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Most items in one gRPC message.
pub const MAX_BATCH: usize = 512;

/// Counters of one link direction, read by metrics.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Items refused because the queue was full (or the link gone).
    pub dropped: AtomicU64,
    /// Items sent.
    pub sent: AtomicU64,
}

/// The sending side of one link direction.
#[derive(Clone)]
pub struct Outbox {
    /// Towards the gRPC stream.
    tx: mpsc::Sender<Item>,
    /// Shared counters.
    stats: Arc<LinkStats>,
}

impl Outbox {
    /// A queue of `capacity` items and the stream of batches that drains it.
    pub fn new(capacity: usize) -> (Outbox, BatchStream) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let stats = Arc::new(LinkStats::default());
        (Outbox { tx, stats: stats.clone() }, BatchStream { rx, stats })
    }

    /// Queue without waiting; false when full or closed.
    pub fn try_push(&self, it: item::Item) -> bool {
        match self.tx.try_send(Item { item: Some(it) }) {
            Ok(()) => true,
            Err(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
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

    /// The link's counters.
    pub fn stats(&self) -> &Arc<LinkStats> {
        &self.stats
    }
}

/// The receiving side of an [`Outbox`]: a stream of batches for tonic to send.
pub struct BatchStream {
    /// Items queued by the [`Outbox`].
    rx: mpsc::Receiver<Item>,
    /// Shared counters.
    stats: Arc<LinkStats>,
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
        self.stats.sent.fetch_add(items.len() as u64, Ordering::Relaxed);
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
        let (out, mut stream) = Outbox::new(1000);
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
        assert_eq!(out.stats().sent.load(Ordering::Relaxed), 700);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_without_waiting_and_counts() {
        let (out, stream) = Outbox::new(2);
        assert!(out.try_push(env(1)));
        assert!(out.try_push(env(2)));
        assert!(!out.try_push(env(3)));
        assert_eq!(out.depth(), 2);
        assert_eq!(out.stats().dropped.load(Ordering::Relaxed), 1);
        drop(stream);
        assert!(out.is_closed());
        assert!(!out.push(item::Item::SessionClose(SessionClose::default())).await);
    }

    #[tokio::test]
    async fn push_waits_for_room() {
        let (out, mut stream) = Outbox::new(1);
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
