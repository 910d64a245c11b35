//! A node's view of the registry: members and the slot table, at a version.

use crate::slots::SlotTable;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a member does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberRole {
    /// Holds client connections.
    Edge,
    /// Owns sessions of its slots.
    Router,
}

/// Where a member is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    /// Joined, not yet given slots.
    Joining,
    /// Serving.
    Active,
    /// Handing its slots to others before it leaves.
    Draining,
    /// Stopped answering; its slots were given away.
    Down,
}

/// One cluster member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Node id (never 0).
    pub id: u64,
    /// What it does.
    pub role: MemberRole,
    /// The `host:port` of its gRPC endpoint, which other nodes dial.
    pub addr: String,
    /// Its state.
    pub state: MemberState,
}

/// The registry as one node sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// Increases with every change.
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
        self.members
            .values()
            .filter(|m| m.role == MemberRole::Router && m.state == MemberState::Active)
            .map(|m| m.id)
            .collect()
    }
}
