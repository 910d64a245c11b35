//! What a node tells its operators.
//!
//! - [`metrics`]: every metric the node exports (names in `docs/metrics.md`), in one registry.
//! - [`http`]: the HTTP endpoint serving `/metrics`, `/livez` and `/readyz`.
//! - [`trace`]: OTLP export and W3C trace context for a stanza's trip through the cluster.

pub mod http;
mod registry;
pub mod trace;

pub use prometheus::{IntCounter, IntGauge};
pub use registry::{metrics, stanza_error, Collector, Metrics};
