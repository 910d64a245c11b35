//! The cluster's metrics, recorded in the node's registry (see `docs/metrics.md`).

use starling_telemetry::metrics;

/// A link to `peer` was (re)dialled.
pub(crate) fn link_connected(peer: u64) {
    metrics().link_reconnects.with_label_values(&[&peer.to_string()]).inc();
}

/// A stanza reached its recipient's edge `micros` after it entered the cluster.
pub(crate) fn routed(micros: u64) {
    metrics().routing_latency.observe(micros as f64 / 1e6);
}

/// This router now owns `n` slots.
pub(crate) fn slots_owned(n: usize) {
    metrics().slots_owned.set(n as i64);
}

/// This node saw `n` slots change owner (routers and edges alike).
pub(crate) fn slots_moved(n: usize) {
    metrics().slot_moves.inc_by(n as u64);
}
