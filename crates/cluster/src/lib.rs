//! The cluster: the same edge and router as `serve`, wired over gRPC.
//!
//! - [`link`]: bounded queues drained as batches onto long-lived bidirectional gRPC streams,
//!   and the backpressure policy of each direction.
//! - [`envelope`]: stanzas in and out of envelopes (routing fields + self-contained bytes).
//! - [`router_role`]: the router's `Link` service, its [`starling_router::Peers`] over the slot
//!   table, and slot-move handling.
//! - [`edge_role`]: the edge's [`starling_edge::SessionHost`] over links to routers, with
//!   re-registration when slots move or links break.
//!
//! Stanza path: client → edge (parse, limits, stamp 'from') → link → router of the sender
//! (outbound rules) → link → router of the recipient (inbound rules, §8.5) → link → edge of the
//! recipient → client. Hops collapse when the homes coincide.

pub mod edge_role;
pub mod envelope;
pub mod link;
pub mod router_role;

mod metrics;

pub use edge_role::EdgeHost;
pub use router_role::{ClusterPeers, LinkLimits, RouterLinks};

use std::time::Duration;

/// Cluster transport failures.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A peer address is not a valid URI.
    #[error("bad peer address {0}")]
    Address(String),
    /// Connecting to a peer failed.
    #[error(transparent)]
    Connect(#[from] tonic::transport::Error),
    /// The peer answered with a gRPC error.
    #[error(transparent)]
    Status(#[from] tonic::Status),
}

/// A gRPC channel to `addr` (`host:port`).
pub async fn connect(addr: &str) -> Result<tonic::transport::Channel, ClusterError> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|_| ClusterError::Address(addr.to_owned()))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(endpoint.connect().await?)
}
