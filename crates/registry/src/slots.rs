//! Slots: a bare JID (or a component domain) hashes to one of [`SLOT_COUNT`] slots, and each
//! slot has at most one owning router under an epoch.
//!
//! The hash must give the same slot in every process of every version of the cluster, so it is
//! a fixed function (FNV-1a, 64 bit) over the ASCII-lowercased key, never a randomly seeded
//! hasher. JIDs reach here already normalized (nodeprep/nameprep); lowercasing again only makes
//! the function robust to a caller that forgot.

use serde::{Deserialize, Serialize};

/// Number of slots. Fixed for the life of a cluster: changing it re-homes every account.
pub const SLOT_COUNT: u16 = 4096;

/// The slot of a bare JID or component domain.
pub fn slot_of(key: &str) -> u16 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(SLOT_COUNT)) as u16
}

/// The owner of one slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotOwner {
    /// Router node id; 0 = no owner.
    pub router: u64,
    /// Epoch of the assignment; every move gets a new, larger one (fencing).
    pub epoch: u64,
}

/// Owner of every slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotTable {
    /// Index = slot; always [`SLOT_COUNT`] entries.
    owners: Vec<SlotOwner>,
}

impl Default for SlotTable {
    fn default() -> SlotTable {
        SlotTable { owners: vec![SlotOwner::default(); SLOT_COUNT as usize] }
    }
}

impl SlotTable {
    /// Every slot owned by `router` at `epoch` (a single-router cluster, or `serve`).
    pub fn all_owned_by(router: u64, epoch: u64) -> SlotTable {
        SlotTable { owners: vec![SlotOwner { router, epoch }; SLOT_COUNT as usize] }
    }

    /// The owner and epoch of `slot`, if it has an owner.
    pub fn owner(&self, slot: u16) -> Option<(u64, u64)> {
        self.owners.get(slot as usize).filter(|o| o.router != 0).map(|o| (o.router, o.epoch))
    }

    /// Set the owner of `slot`.
    pub fn assign(&mut self, slot: u16, router: u64, epoch: u64) {
        if let Some(o) = self.owners.get_mut(slot as usize) {
            *o = SlotOwner { router, epoch };
        }
    }

    /// Apply moves from [`rebalance`], all under one new epoch.
    pub fn apply(&mut self, moves: &[(u16, u64)], epoch: u64) {
        for (slot, router) in moves {
            self.assign(*slot, *router, epoch);
        }
    }

    /// How many slots `router` owns.
    pub fn owned_by(&self, router: u64) -> usize {
        self.owners.iter().filter(|o| o.router == router && router != 0).count()
    }

    /// How many slots have no owner.
    pub fn unowned(&self) -> usize {
        self.owners.iter().filter(|o| o.router == 0).count()
    }
}

/// Moves that bring `current` to a balanced assignment over `active` routers while moving as
/// few slots as possible: slots of routers that are not active (and unowned slots) go to the
/// least-loaded active routers; then routers above their share give slots to routers below it.
/// Deterministic: the same inputs give the same moves on every node.
pub fn rebalance(current: &SlotTable, active: &[u64]) -> Vec<(u16, u64)> {
    let mut routers: Vec<u64> = active.iter().copied().filter(|r| *r != 0).collect();
    routers.sort_unstable();
    routers.dedup();
    if routers.is_empty() {
        return Vec::new();
    }
    let n = routers.len();
    let total = SLOT_COUNT as usize;
    // The first `total % n` routers (in id order) may hold one slot more than the others.
    let quota = |i: usize| total / n + usize::from(i < total % n);
    let index = |r: u64| routers.binary_search(&r).ok();
    let mut load: Vec<usize> = routers.iter().map(|r| current.owned_by(*r)).collect();
    let mut moves = Vec::new();
    // Slots to place: orphans first, then the surplus of overloaded routers (highest slots first,
    // so repeated rebalances pick the same ones).
    let mut free: Vec<u16> =
        (0..SLOT_COUNT).filter(|s| current.owner(*s).and_then(|(r, _)| index(r)).is_none()).collect();
    for (i, r) in routers.iter().enumerate() {
        if load[i] > quota(i) {
            let surplus = load[i] - quota(i);
            let mut mine: Vec<u16> =
                (0..SLOT_COUNT).filter(|s| current.owner(*s).map(|o| o.0) == Some(*r)).collect();
            free.extend(mine.split_off(mine.len() - surplus));
            load[i] = quota(i);
        }
    }
    for slot in free {
        let Some(i) = (0..n).filter(|i| load[*i] < quota(*i)).min_by_key(|i| (load[*i], *i)) else { break };
        load[i] += 1;
        moves.push((slot, routers[i]));
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spread(t: &SlotTable, routers: &[u64]) -> (usize, usize) {
        let counts: Vec<usize> = routers.iter().map(|r| t.owned_by(*r)).collect();
        (counts.iter().copied().min().unwrap_or(0), counts.iter().copied().max().unwrap_or(0))
    }

    #[test]
    fn the_slot_function_is_fixed_and_case_blind() {
        // Pinned values: a change here re-homes every account of every running cluster.
        assert_eq!(slot_of("alice@localhost"), slot_of("ALICE@localhost"));
        assert_eq!(slot_of(""), (0xcbf2_9ce4_8422_2325u64 % 4096) as u16);
        let a = slot_of("alice@localhost");
        assert!(a < SLOT_COUNT);
        assert_ne!(slot_of("alice@localhost"), slot_of("bob@localhost"));
    }

    #[test]
    fn a_fresh_table_is_spread_evenly() {
        let mut t = SlotTable::default();
        assert_eq!(t.unowned(), SLOT_COUNT as usize);
        let moves = rebalance(&t, &[3, 1, 2]);
        assert_eq!(moves.len(), SLOT_COUNT as usize);
        t.apply(&moves, 1);
        assert_eq!(t.unowned(), 0);
        let (min, max) = spread(&t, &[1, 2, 3]);
        assert!(max - min <= 1, "{min}..{max}");
        assert!(rebalance(&t, &[1, 2, 3]).is_empty(), "a balanced table stays put");
    }

    #[test]
    fn a_joining_router_takes_only_its_share() {
        let mut t = SlotTable::default();
        t.apply(&rebalance(&t, &[1, 2, 3]), 1);
        let moves = rebalance(&t, &[1, 2, 3, 4]);
        assert_eq!(moves.len(), SLOT_COUNT as usize / 4);
        assert!(moves.iter().all(|(_, r)| *r == 4));
        t.apply(&moves, 2);
        let (min, max) = spread(&t, &[1, 2, 3, 4]);
        assert!(max - min <= 1);
    }

    #[test]
    fn a_leaving_router_gives_up_only_its_own_slots() {
        let mut t = SlotTable::default();
        t.apply(&rebalance(&t, &[1, 2, 3]), 1);
        let before = t.clone();
        let moves = rebalance(&t, &[1, 3]);
        assert_eq!(moves.len(), before.owned_by(2));
        assert!(moves.iter().all(|(s, _)| before.owner(*s).map(|o| o.0) == Some(2)));
        t.apply(&moves, 2);
        assert_eq!(t.owned_by(2), 0);
        assert!(t.owner(moves[0].0).map(|o| o.1) == Some(2), "moved slots carry the new epoch");
        let (min, max) = spread(&t, &[1, 3]);
        assert!(max - min <= 1);
    }

    #[test]
    fn no_routers_no_moves() {
        assert!(rebalance(&SlotTable::all_owned_by(1, 1), &[]).is_empty());
    }

    proptest! {
        // Each case rebalances 4096 slots several times; 48 cases keep the debug run short.
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn any_sequence_of_memberships_stays_balanced_and_total(
            steps in proptest::collection::vec(proptest::collection::btree_set(1u64..8, 1..6), 1..6)
        ) {
            let mut t = SlotTable::default();
            for (epoch, set) in steps.iter().enumerate() {
                let routers: Vec<u64> = set.iter().copied().collect();
                let before = t.clone();
                let moves = rebalance(&t, &routers);
                t.apply(&moves, epoch as u64 + 1);
                prop_assert_eq!(t.unowned(), 0);
                let (min, max) = spread(&t, &routers);
                prop_assert!(max - min <= 1);
                // Never moves a slot that already sat with an active router below its share.
                for (slot, _) in &moves {
                    if let Some((r, _)) = before.owner(*slot) {
                        prop_assert!(!routers.contains(&r) || before.owned_by(r) > SLOT_COUNT as usize / routers.len());
                    }
                }
            }
        }
    }
}
