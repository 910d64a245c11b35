//! The registry's data on the wire: [`ClusterView`] and members to and from their protobuf form
//! (`proto/starling/registry/v1/registry.proto`). The one place both directions live, used by the
//! node's service and by the client.

use crate::slots::{SlotOwner, SlotTable};
use crate::state::{Member, MemberRole, MemberState};
use crate::view::ClusterView;
use starling_rpc::registry as pb;
use std::collections::{BTreeMap, BTreeSet};

/// A role in its protobuf form.
pub fn role_to_proto(r: MemberRole) -> pb::MemberRole {
    match r {
        MemberRole::Edge => pb::MemberRole::Edge,
        MemberRole::Router => pb::MemberRole::Router,
    }
}

/// A role from its protobuf form (`None` for unspecified values).
pub fn role_from_proto(r: i32) -> Option<MemberRole> {
    match pb::MemberRole::try_from(r).ok()? {
        pb::MemberRole::Edge => Some(MemberRole::Edge),
        pb::MemberRole::Router => Some(MemberRole::Router),
        pb::MemberRole::Unspecified => None,
    }
}

fn state_to_proto(s: MemberState) -> pb::MemberState {
    match s {
        MemberState::Joining => pb::MemberState::Joining,
        MemberState::Active => pb::MemberState::Active,
        MemberState::Draining => pb::MemberState::Draining,
        MemberState::Down => pb::MemberState::Down,
    }
}

fn state_from_proto(s: i32) -> Option<MemberState> {
    match pb::MemberState::try_from(s).ok()? {
        pb::MemberState::Joining => Some(MemberState::Joining),
        pb::MemberState::Active => Some(MemberState::Active),
        pb::MemberState::Draining => Some(MemberState::Draining),
        pb::MemberState::Down => Some(MemberState::Down),
        pb::MemberState::Unspecified => None,
    }
}

/// A view in its protobuf form; `voters` marks which members vote in Raft.
pub fn view_to_proto(view: &ClusterView, voters: &BTreeSet<u64>) -> pb::ClusterState {
    pb::ClusterState {
        version: view.version,
        leader: view.leader.unwrap_or(0),
        members: view
            .members
            .values()
            .map(|m| pb::Member {
                id: m.id,
                role: role_to_proto(m.role) as i32,
                addr: m.addr.clone(),
                state: state_to_proto(m.state) as i32,
                voter: voters.contains(&m.id),
            })
            .collect(),
        slots: view
            .slots
            .owners()
            .iter()
            .map(|o| pb::SlotOwner { router: o.router, epoch: o.epoch })
            .collect(),
    }
}

/// A view from its protobuf form; `None` when the slot table has the wrong length or a member
/// has an unknown role or state (a peer of another version: better no view than a wrong one).
pub fn view_from_proto(state: pb::ClusterState) -> Option<ClusterView> {
    let slots = SlotTable::from_owners(
        state.slots.iter().map(|o| SlotOwner { router: o.router, epoch: o.epoch }).collect(),
    )?;
    let mut members = BTreeMap::new();
    for m in state.members {
        let member = Member {
            id: m.id,
            role: role_from_proto(m.role)?,
            addr: m.addr,
            state: state_from_proto(m.state)?,
        };
        members.insert(m.id, member);
    }
    Some(ClusterView {
        version: state.version,
        leader: (state.leader != 0).then_some(state.leader),
        members,
        slots,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_view_survives_the_round_trip() {
        let mut slots = SlotTable::all_owned_by(1, 3);
        slots.assign(7, 2, 4);
        let view = ClusterView {
            version: 9,
            leader: Some(2),
            members: BTreeMap::from([
                (
                    1,
                    Member {
                        id: 1,
                        role: MemberRole::Router,
                        addr: "a:1".into(),
                        state: MemberState::Active,
                    },
                ),
                (5, Member { id: 5, role: MemberRole::Edge, addr: "e:5".into(), state: MemberState::Down }),
            ]),
            slots,
        };
        let wire = view_to_proto(&view, &BTreeSet::from([1]));
        assert!(wire.members[0].voter && !wire.members[1].voter);
        assert_eq!(view_from_proto(wire).unwrap(), view);
    }

    #[test]
    fn a_short_table_or_unknown_role_is_refused() {
        let view = ClusterView::default();
        let mut wire = view_to_proto(&view, &BTreeSet::new());
        wire.slots.pop();
        assert!(view_from_proto(wire).is_none());
        let mut wire = view_to_proto(&view, &BTreeSet::new());
        wire.members.push(pb::Member { id: 3, role: 99, addr: String::new(), state: 2, voter: false });
        assert!(view_from_proto(wire).is_none());
    }
}
