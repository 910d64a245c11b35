//! A node's read-only view of the registry: members and the slot table, at a version.

use crate::slots::SlotTable;
use crate::state::Member;
use std::collections::BTreeMap;

/// The registry as one node sees it; published through a `tokio::sync::watch` channel by
/// [`crate::Registry::view`] (routers) and [`crate::RegistryClient::watch`] (edges, the CLI).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// The Raft log index the state was read at; increases with every change.
    pub version: u64,
    /// The registry leader, when known.
    pub leader: Option<u64>,
    /// Members by id.
    pub members: BTreeMap<u64, Member>,
    /// Owner of every slot.
    pub slots: SlotTable,
}

impl ClusterView {
    /// Routers that take slots.
    pub fn active_routers(&self) -> Vec<u64> {
        crate::state::active_routers(&self.members)
    }
}
