//! The cluster registry: members and slot ownership, replicated with Raft (openraft) between
//! routers over gRPC and durable in redb.
//!
//! - [`slots`]: the fixed slot hash, the slot table with epochs, minimal-move rebalancing (pure).
//! - [`state`]: the replicated state machine's data and commands (pure).
//! - [`store`]: openraft's log and state-machine storage on redb.
//! - [`node`]: a router's registry node: Raft, bootstrap/join, liveness, the leader's control.
//! - [`service`]: the node's `Registry` gRPC service; [`network`]: Raft RPCs to peers over it.
//! - [`client`]: administration, liveness reports and the watched view from outside Raft.
//! - [`wire`]: the view and members in their protobuf form.
pub mod client;
pub mod error;
pub mod network;
pub mod node;
pub mod service;
pub mod slots;
pub mod state;
pub mod store;
pub mod view;
pub mod wire;

pub use client::RegistryClient;
pub use error::RegistryError;
pub use node::{AdminOp, AdminOutcome, NodeConfig, RegistryNode, StartMode};
pub use slots::{rebalance, slot_of, SlotOwner, SlotTable, SLOT_COUNT};
pub use starling_rpc::registry as proto;
pub use state::{ClusterState, Command, Member, MemberRole, MemberState, Response};
pub use view::ClusterView;
