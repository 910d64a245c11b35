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

    /// Every slot's owner, index = slot.
    pub fn owners(&self) -> &[SlotOwner] {
        &self.owners
    }

    /// Slots that had an owner in `before` and have another one here (a slot gaining its first
    /// owner is not a move).
    pub fn moved_since(&self, before: &SlotTable) -> usize {
        self.owners
            .iter()
            .zip(&before.owners)
            .filter(|(now, was)| was.router != 0 && now.router != was.router)
            .count()
    }

    /// A table from exactly [`SLOT_COUNT`] owners (index = slot); `None` for any other length.
    pub fn from_owners(owners: Vec<SlotOwner>) -> Option<SlotTable> {
        (owners.len() == SLOT_COUNT as usize).then_some(SlotTable { owners })
    }

    /// Slot counts per owning router (unowned slots are not counted).
    pub fn loads(&self) -> std::collections::BTreeMap<u64, usize> {
        let mut m = std::collections::BTreeMap::new();
        for o in self.owners.iter().filter(|o| o.router != 0) {
            *m.entry(o.router).or_insert(0) += 1;
        }
        m
    }
}

/// Moves that bring `current` to a balanced assignment over the `active` routers (every slot
/// owned by an active router, loads differing by at most one) while moving as few slots as
/// possible:
///
/// 1. Each active router gets a target of `SLOT_COUNT / n` slots; the `SLOT_COUNT % n` routers
///    that already hold the most (ties: lower id) may keep one more. Giving the spare slots to
///    the most loaded routers is what makes the number of moves minimal: a router keeps
///    `min(load, target)` of its slots, and this choice maximizes that sum.
/// 2. Slots whose owner is not active (or that have none) are freed, and so is the surplus of
///    every router above its target (its highest-numbered slots).
/// 3. Freed slots go, in slot order, to the least-loaded router below its target (ties: lower id).
///
/// Deterministic: the same inputs give the same moves on every node, and a table it produced
/// gives no moves when asked again with the same routers.
pub fn rebalance(current: &SlotTable, active: &[u64]) -> Vec<(u16, u64)> {
    let mut routers: Vec<u64> = active.iter().copied().filter(|r| *r != 0).collect();
    routers.sort_unstable();
    routers.dedup();
    if routers.is_empty() {
        return Vec::new();
    }
    let n = routers.len();
    let total = SLOT_COUNT as usize;
    let index = |r: u64| routers.binary_search(&r).ok();
    let mut load = vec![0usize; n];
    for o in &current.owners {
        if let Some(i) = index(o.router) {
            load[i] += 1;
        }
    }
    // Targets: the spare `total % n` slots stay with the routers that hold the most already.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|i| (std::cmp::Reverse(load[*i]), *i));
    let mut target = vec![total / n; n];
    for i in order.iter().take(total % n) {
        target[*i] += 1;
    }
    // Free the orphans, then each overloaded router's highest slots.
    let mut surplus: Vec<usize> = (0..n).map(|i| load[i].saturating_sub(target[i])).collect();
    let mut free: Vec<u16> = Vec::new();
    for slot in (0..SLOT_COUNT).rev() {
        match current.owner(slot).and_then(|(r, _)| index(r)) {
            None => free.push(slot),
            Some(i) if surplus[i] > 0 => {
                surplus[i] -= 1;
                load[i] -= 1;
                free.push(slot);
            }
            Some(_) => {}
        }
    }
    free.sort_unstable();
    let mut moves = Vec::with_capacity(free.len());
    for slot in free {
        let Some(i) = (0..n).filter(|i| load[*i] < target[*i]).min_by_key(|i| (load[*i], *i)) else { break };
        load[i] += 1;
        moves.push((slot, routers[i]));
    }
    moves
}

/// Whether `table` is what [`rebalance`] aims for over `active`: every slot owned by an active
/// router and the loads of the active routers within one of each other.
pub fn is_balanced(table: &SlotTable, active: &[u64]) -> bool {
    rebalance(table, active).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn moves_count_changed_owners_not_first_assignments() {
        let empty = SlotTable::default();
        let one = SlotTable::all_owned_by(1, 1);
        assert_eq!(one.moved_since(&empty), 0);
        let mut two = one.clone();
        let moves = rebalance(&two, &[1, 2]);
        two.apply(&moves, 2);
        assert_eq!(two.moved_since(&one), moves.len());
        assert_eq!(two.moved_since(&two), 0);
    }

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
    fn a_balanced_table_is_left_alone_whoever_holds_the_spare_slots() {
        // 4096 = 1366 + 1365 + 1365; here router 3 (not the lowest id) holds the spare slot.
        let mut t = SlotTable::default();
        for s in 0..SLOT_COUNT {
            let r = if s < 1365 {
                1
            } else if s < 2730 {
                2
            } else {
                3
            };
            t.assign(s, r, 1);
        }
        assert_eq!(t.owned_by(3), 1366);
        assert!(rebalance(&t, &[1, 2, 3]).is_empty());
        assert!(is_balanced(&t, &[1, 2, 3]));
        assert!(!is_balanced(&t, &[1, 2]));
    }

    #[test]
    fn unowned_slots_are_filled_without_moving_owned_ones() {
        let mut t = SlotTable::default();
        t.apply(&rebalance(&t, &[1, 2]), 1);
        t.assign(7, 0, 2);
        t.assign(9, 0, 2);
        let moves = rebalance(&t, &[1, 2]);
        assert_eq!(moves.iter().map(|m| m.0).collect::<Vec<_>>(), vec![7, 9]);
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
                prop_assert!(rebalance(&t, &routers).is_empty(), "rebalancing is idempotent");
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
