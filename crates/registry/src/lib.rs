//! The cluster registry: who is in the cluster and which router owns which slot.
//!
//! - [`slots`]: the slot function, the slot table with epochs, and rebalancing (pure).
//! - [`view`]: a node's read-only view of the registry (members and slot table), which edges and
//!   routers follow through a `tokio::sync::watch` channel.
//!
//! The Raft replication of this state (openraft, durable log and snapshots, membership changes)
//! is issue 3's remaining work; see `docs/status.md`.

pub mod slots;
pub mod view;

pub use slots::{rebalance, slot_of, SlotOwner, SlotTable, SLOT_COUNT};
pub use view::{ClusterView, Member, MemberRole, MemberState};
