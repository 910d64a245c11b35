//! The replicated state machine's data and commands (pure).
//!
//! [`ClusterState`] is what every registry node holds in memory: the members and the slot table.
//! It changes only by [`ClusterState::apply`] of a [`Command`] taken from the committed Raft log,
//! so it is the same on every node that applied the same log prefix. Nothing here reads a clock,
//! a random number or the environment: applying is a pure function, unit-tested below.

use crate::slots::{rebalance, SlotTable, SLOT_COUNT};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a member does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberRole {
    /// Holds client connections.
    Edge,
    /// Owns sessions of its slots.
    Router,
}

/// Where a member is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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

/// The registry's replicated data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Members by id: the routers (and any other node recorded by the leader).
    pub members: BTreeMap<u64, Member>,
    /// Owner and epoch of every slot.
    pub slots: SlotTable,
    /// The last epoch issued: every [`Command::AssignSlots`] that moves something takes the next
    /// one, so an epoch orders slot assignments across the whole cluster (fencing).
    pub epoch: u64,
}

/// A change to [`ClusterState`]: the application data of the Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Add a member or replace its record.
    UpsertMember(Member),
    /// Change a member's state; no-op for an unknown member.
    SetMemberState {
        /// The member.
        id: u64,
        /// Its new state.
        state: MemberState,
    },
    /// Forget a member. Its slots stay assigned until an [`Command::AssignSlots`] moves them,
    /// so writers put both in one [`Command::Batch`].
    RemoveMember {
        /// The member.
        id: u64,
    },
    /// Move slots: every `(slot, router)` pair gets the same new epoch (`epoch + 1`). Slots out
    /// of range are ignored; no moves, no new epoch.
    AssignSlots {
        /// `(slot, new owner)` pairs, as produced by [`rebalance`].
        moves: Vec<(u16, u64)>,
    },
    /// Several commands applied in order as one log entry, so that no node ever sees the state
    /// between them (a router marked Down while still owning slots, say).
    Batch(Vec<Command>),
}

/// The result of applying one log entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the entry changed the state (false for no-ops such as setting an unknown member's
    /// state, and for Raft's own blank and membership entries).
    pub changed: bool,
    /// The state's last issued epoch after the entry.
    pub epoch: u64,
}

impl ClusterState {
    /// Apply `cmd`; pure and deterministic.
    pub fn apply(&mut self, cmd: &Command) -> Response {
        let changed = self.apply_inner(cmd);
        Response { changed, epoch: self.epoch }
    }

    fn apply_inner(&mut self, cmd: &Command) -> bool {
        match cmd {
            Command::UpsertMember(m) => {
                if m.id == 0 || self.members.get(&m.id) == Some(m) {
                    return false;
                }
                self.members.insert(m.id, m.clone());
                true
            }
            Command::SetMemberState { id, state } => match self.members.get_mut(id) {
                Some(m) if m.state != *state => {
                    m.state = *state;
                    true
                }
                _ => false,
            },
            Command::RemoveMember { id } => self.members.remove(id).is_some(),
            Command::AssignSlots { moves } => {
                let moves: Vec<(u16, u64)> = moves.iter().copied().filter(|(s, _)| *s < SLOT_COUNT).collect();
                if moves.is_empty() {
                    return false;
                }
                self.epoch += 1;
                self.slots.apply(&moves, self.epoch);
                true
            }
            Command::Batch(cmds) => {
                let mut changed = false;
                for c in cmds {
                    changed |= self.apply_inner(c);
                }
                changed
            }
        }
    }

    /// Routers that take slots: role router, state active, sorted by id.
    pub fn active_routers(&self) -> Vec<u64> {
        active_routers(&self.members)
    }

    /// The moves that would balance the slot table over the active routers.
    pub fn rebalance_moves(&self) -> Vec<(u16, u64)> {
        rebalance(&self.slots, &self.active_routers())
    }

    /// `cmds` followed by the slot moves that balance the state they lead to, as one command
    /// (`None` when that would change nothing). This is how the leader writes every change of
    /// who is active: the state change and the slot moves it calls for land in one log entry.
    pub fn with_rebalance(&self, mut cmds: Vec<Command>) -> Option<Command> {
        let mut next = self.clone();
        for c in &cmds {
            next.apply(c);
        }
        let moves = next.rebalance_moves();
        if !moves.is_empty() {
            cmds.push(Command::AssignSlots { moves });
        }
        match cmds.len() {
            0 => None,
            1 => cmds.pop(),
            _ => Some(Command::Batch(cmds)),
        }
    }
}

/// Routers among `members` that take slots: role router, state active, sorted by id.
pub fn active_routers(members: &std::collections::BTreeMap<u64, Member>) -> Vec<u64> {
    members
        .values()
        .filter(|m| m.role == MemberRole::Router && m.state == MemberState::Active)
        .map(|m| m.id)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn router(id: u64, state: MemberState) -> Member {
        Member { id, role: MemberRole::Router, addr: format!("127.0.0.1:{}", 7000 + id), state }
    }

    fn three_active() -> ClusterState {
        let mut s = ClusterState::default();
        for id in 1..=3 {
            s.apply(&Command::UpsertMember(router(id, MemberState::Active)));
        }
        let cmd = s.with_rebalance(vec![]).unwrap();
        s.apply(&cmd);
        s
    }

    #[test]
    fn upsert_set_state_and_remove() {
        let mut s = ClusterState::default();
        assert!(s.apply(&Command::UpsertMember(router(1, MemberState::Joining))).changed);
        assert!(!s.apply(&Command::UpsertMember(router(1, MemberState::Joining))).changed, "same record");
        assert!(s.apply(&Command::SetMemberState { id: 1, state: MemberState::Active }).changed);
        assert_eq!(s.members[&1].state, MemberState::Active);
        assert!(!s.apply(&Command::SetMemberState { id: 9, state: MemberState::Down }).changed, "unknown");
        assert!(!s.apply(&Command::UpsertMember(router(0, MemberState::Active))).changed, "id 0");
        assert!(s.apply(&Command::RemoveMember { id: 1 }).changed);
        assert!(s.members.is_empty());
        assert!(!s.apply(&Command::RemoveMember { id: 1 }).changed);
    }

    #[test]
    fn each_assignment_takes_one_new_epoch() {
        let mut s = ClusterState::default();
        let r = s.apply(&Command::AssignSlots { moves: vec![(0, 1), (1, 1), (2, 2)] });
        assert_eq!(r, Response { changed: true, epoch: 1 });
        assert_eq!(s.slots.owner(0), Some((1, 1)));
        assert_eq!(s.slots.owner(2), Some((2, 1)));
        let r = s.apply(&Command::AssignSlots { moves: vec![(0, 2)] });
        assert_eq!(r.epoch, 2);
        assert_eq!(s.slots.owner(0), Some((2, 2)));
        assert_eq!(s.slots.owner(1), Some((1, 1)), "untouched slots keep their epoch");
        assert!(!s.apply(&Command::AssignSlots { moves: vec![] }).changed);
        assert!(!s.apply(&Command::AssignSlots { moves: vec![(SLOT_COUNT, 1)] }).changed);
        assert_eq!(s.epoch, 2, "no moves, no epoch");
    }

    #[test]
    fn a_down_router_loses_its_slots_in_the_same_entry() {
        let mut s = three_active();
        assert_eq!(s.slots.unowned(), 0);
        let owned = s.slots.owned_by(2);
        let cmd =
            s.with_rebalance(vec![Command::SetMemberState { id: 2, state: MemberState::Down }]).unwrap();
        let Command::Batch(parts) = &cmd else { panic!("a batch: {cmd:?}") };
        assert!(matches!(&parts[1], Command::AssignSlots { moves } if moves.len() == owned));
        let before = s.epoch;
        s.apply(&cmd);
        assert_eq!(s.slots.owned_by(2), 0);
        assert_eq!(s.epoch, before + 1);
        assert_eq!(s.active_routers(), vec![1, 3]);
        assert!(s.with_rebalance(vec![]).is_none(), "balanced: nothing to write");
    }

    #[test]
    fn draining_and_removing_hand_slots_over() {
        let mut s = three_active();
        let cmd =
            s.with_rebalance(vec![Command::SetMemberState { id: 3, state: MemberState::Draining }]).unwrap();
        s.apply(&cmd);
        assert_eq!(s.slots.owned_by(3), 0);
        let cmd = s.with_rebalance(vec![Command::RemoveMember { id: 1 }]).unwrap();
        s.apply(&cmd);
        assert_eq!(s.slots.owned_by(2), SLOT_COUNT as usize);
        assert!(!s.members.contains_key(&1));
    }

    #[test]
    fn applying_is_deterministic_and_round_trips_through_json() {
        let cmds = vec![
            Command::UpsertMember(router(1, MemberState::Active)),
            Command::UpsertMember(router(2, MemberState::Active)),
            Command::AssignSlots { moves: rebalance(&SlotTable::default(), &[1, 2]) },
            Command::Batch(vec![Command::SetMemberState { id: 2, state: MemberState::Down }]),
        ];
        let (mut a, mut b) = (ClusterState::default(), ClusterState::default());
        for c in &cmds {
            let json = serde_json::to_vec(c).unwrap();
            let back: Command = serde_json::from_slice(&json).unwrap();
            assert_eq!(&back, c);
            a.apply(c);
            b.apply(&back);
        }
        assert_eq!(a, b);
        let json = serde_json::to_vec(&a).unwrap();
        let back: ClusterState = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, a);
    }
}
