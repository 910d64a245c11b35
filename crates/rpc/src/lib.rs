//! Generated code for the cluster protocol (`proto/`): the data-plane [`link`] service that
//! carries stanza envelopes between edges and routers, and the control-plane [`registry`]
//! service (Raft RPCs, cluster-state watch, administration). No logic lives here.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// `starling.link.v1`: envelopes, sessions, batches.
pub mod link {
    tonic::include_proto!("starling.link.v1");
}

/// `starling.registry.v1`: Raft RPCs, members, slot table, administration.
pub mod registry {
    tonic::include_proto!("starling.registry.v1");
}

pub use prost;
pub use tonic;
