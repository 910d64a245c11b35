//! The queue from the routing side to one connection: bounded, single reader, and holding no
//! memory while it is empty.
//!
//! Most sessions are idle most of the time, and an idle session should cost as little as
//! possible. A tokio `mpsc` channel allocates a block of 32 slots up front and keeps it (3 KB
//! for `ToClient`), which was a sixth of an idle session's memory. This queue is a `VecDeque`
//! behind a mutex that is only ever held for a push or a pop, and it gives its buffer back
//! whenever the reader empties it.

use starling_xmpp::session::{Deliver, ToClient};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// What the writing side and the reading side share.
struct Shared {
    state: Mutex<State>,
    /// Wakes the reader; `notify_one` keeps a permit when the reader is not waiting, so no
    /// wake-up is lost between its check and its wait.
    wake: Notify,
    /// Items the queue holds at most.
    capacity: usize,
}

#[derive(Default)]
struct State {
    items: VecDeque<ToClient>,
    /// The reader closed the queue or went away: every delivery fails from now on.
    closed: bool,
    /// The writing side ([`ChannelSink`]) is gone: once drained, the reader sees the end.
    sink_gone: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Only pushes and pops run under the lock; a poisoned lock still holds a valid queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The [`Deliver`] side of a connection: a bounded queue read by the connection's task.
pub struct ChannelSink {
    shared: Arc<Shared>,
}

/// The connection task's side of the queue.
pub struct QueueReceiver {
    shared: Arc<Shared>,
}

impl ChannelSink {
    /// A sink and the receiver the connection task reads; at most `capacity` items (at least
    /// one) wait in it.
    pub fn new(capacity: usize) -> (Arc<ChannelSink>, QueueReceiver) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            capacity: capacity.max(1),
        });
        (Arc::new(ChannelSink { shared: shared.clone() }), QueueReceiver { shared })
    }
}

impl Drop for ChannelSink {
    fn drop(&mut self) {
        self.shared.lock().sink_gone = true;
        self.shared.wake.notify_one();
    }
}

impl Deliver for ChannelSink {
    fn deliver(&self, item: ToClient) -> bool {
        self.try_deliver(item).is_ok()
    }

    fn try_deliver(&self, item: ToClient) -> Result<(), ToClient> {
        let mut state = self.shared.lock();
        if state.closed {
            return Err(item);
        }
        if state.items.len() >= self.shared.capacity {
            drop(state);
            tracing::debug!("session queue full; stanza not queued");
            return Err(item);
        }
        let was_empty = state.items.is_empty();
        state.items.push_back(item);
        drop(state);
        // The reader drains everything queued once woken, so only the first item wakes it.
        if was_empty {
            self.shared.wake.notify_one();
        }
        Ok(())
    }
}

impl QueueReceiver {
    /// The next item, waiting for one; None once the sink is gone and the queue is drained.
    pub async fn recv(&mut self) -> Option<ToClient> {
        loop {
            {
                let mut state = self.shared.lock();
                if let Some(item) = pop(&mut state) {
                    return Some(item);
                }
                if state.sink_gone {
                    return None;
                }
            }
            self.shared.wake.notified().await;
        }
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Option<ToClient> {
        pop(&mut self.shared.lock())
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.shared.lock().items.is_empty()
    }

    /// Refuse every later delivery; what is queued stays to be read.
    pub fn close(&mut self) {
        self.shared.lock().closed = true;
    }
}

impl Drop for QueueReceiver {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.closed = true;
        state.items = VecDeque::new();
    }
}

/// Take the oldest item; an emptied queue gives its buffer back (an idle session holds none).
fn pop(state: &mut State) -> Option<ToClient> {
    let item = state.items.pop_front()?;
    if state.items.is_empty() {
        state.items = VecDeque::new();
    }
    Some(item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_xmpp::StreamError;

    fn raw(n: u8) -> ToClient {
        ToClient::Raw(vec![n])
    }

    fn byte(item: Option<ToClient>) -> Option<u8> {
        match item? {
            ToClient::Raw(b) => b.first().copied(),
            _ => None,
        }
    }

    #[tokio::test]
    async fn items_arrive_in_order_and_the_end_follows_the_last() {
        let (sink, mut rx) = ChannelSink::new(8);
        assert!(rx.is_empty());
        for n in 0..3 {
            assert!(sink.deliver(raw(n)));
        }
        assert!(!rx.is_empty());
        assert_eq!(byte(rx.recv().await), Some(0));
        assert_eq!(byte(rx.try_recv()), Some(1));
        drop(sink);
        assert_eq!(byte(rx.recv().await), Some(2));
        assert!(rx.recv().await.is_none(), "the sink is gone and the queue drained");
    }

    #[tokio::test]
    async fn a_full_queue_hands_the_item_back() {
        let (sink, mut rx) = ChannelSink::new(2);
        assert!(sink.try_deliver(raw(1)).is_ok());
        assert!(sink.try_deliver(raw(2)).is_ok());
        let back = sink.try_deliver(raw(3)).err();
        assert_eq!(byte(back), Some(3));
        assert_eq!(byte(rx.recv().await), Some(1));
        assert!(sink.deliver(raw(4)), "room again after a read");
    }

    #[tokio::test]
    async fn a_closed_or_dropped_receiver_refuses_deliveries() {
        let (sink, mut rx) = ChannelSink::new(4);
        assert!(sink.deliver(raw(1)));
        rx.close();
        assert!(!sink.deliver(ToClient::Close(StreamError::Conflict)));
        assert_eq!(byte(rx.try_recv()), Some(1), "what was queued before the close is still read");
        let (sink, rx) = ChannelSink::new(4);
        drop(rx);
        assert!(!sink.deliver(raw(1)));
    }

    #[tokio::test]
    async fn a_waiting_reader_is_woken_by_a_delivery_from_another_task() {
        let (sink, mut rx) = ChannelSink::new(4);
        let reader = tokio::spawn(async move { byte(rx.recv().await) });
        tokio::task::yield_now().await;
        assert!(sink.deliver(raw(7)));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader).await;
        assert_eq!(got.ok().and_then(Result::ok).flatten(), Some(7));
    }

    #[test]
    fn an_emptied_queue_holds_no_buffer() {
        let (sink, mut rx) = ChannelSink::new(64);
        for n in 0..40 {
            assert!(sink.deliver(raw(n)));
        }
        while rx.try_recv().is_some() {}
        assert_eq!(rx.shared.lock().items.capacity(), 0);
    }
}
