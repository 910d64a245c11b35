//! What a node tells its operators.
//!
//! - [`metrics`]: every metric the node exports (names in `docs/metrics.md`), in one registry.
//! - [`http`]: the HTTP endpoint serving `/metrics`, `/livez` and `/readyz`.

pub mod http;
mod registry;

pub use registry::{metrics, Metrics};
