//! The cluster registry (WIP).
pub mod error;
pub mod slots;
pub mod state;
pub mod store;
pub mod view;

pub use error::RegistryError;
pub use slots::{rebalance, slot_of, SlotOwner, SlotTable, SLOT_COUNT};
pub use state::{ClusterState, Command, Member, MemberRole, MemberState, Response};
pub use view::ClusterView;
