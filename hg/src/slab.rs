//! The table of a context's operations in flight: a slab whose tokens are a slot index and that slot's generation, so a look-up is an index and a compare, not a hash.
//!
//! Mercury keeps no table at all (NA's operation record points back at its handle); we keep
//! one because every NA completion names its hg operation by a `u64` token. A token is
//! `generation << 32 | index`. A slot's generation starts at 1 and moves on each time its
//! operation is removed, so a token that outlived its operation (a late reply after a cancel,
//! mercury #470) finds a different generation and is not mistaken for the slot's next user —
//! unless that one slot was reused 2³² − 1 times meanwhile. No token is 0 (hg's sentinel for
//! unexpected receives). Freed slots are reused last-freed first (their lines are likely still
//! in cache); the table never shrinks, so its size is the largest number of operations that
//! were ever in flight at once.

/// One slot: its generation and, while in use, its operation.
struct Slot<T> {
    gen: u32,
    val: Option<T>,
}

/// A slab of `T`s named by `u64` tokens (see the module comment).
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    /// Indices of the empty slots, the next to use last.
    free: Vec<u32>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

#[inline]
fn token(gen: u32, index: u32) -> u64 {
    u64::from(gen) << 32 | u64::from(index)
}

#[inline]
fn split(token: u64) -> (u32, usize) {
    ((token >> 32) as u32, token as u32 as usize)
}

impl<T> Slab<T> {
    /// Stores `val`; returns its token.
    #[inline(always)]
    pub(crate) fn insert(&mut self, val: T) -> u64 {
        let i = self.vacant();
        // One destination for `val` whichever way the slot was found, so that the caller's
        // value can be built in place.
        let slot = &mut self.slots[i as usize];
        slot.val = Some(val);
        token(slot.gen, i)
    }

    /// The index of an empty slot, taken off the free list or pushed.
    #[inline]
    fn vacant(&mut self) -> u32 {
        if let Some(i) = self.free.pop() {
            return i;
        }
        let i = u32::try_from(self.slots.len()).expect("fewer than 2^32 operations in flight");
        self.slots.push(Slot { gen: 1, val: None });
        i
    }

    /// The operation `token` names, if it is still there.
    #[inline]
    pub(crate) fn get(&self, token: u64) -> Option<&T> {
        let (gen, i) = split(token);
        match self.slots.get(i) {
            Some(s) if s.gen == gen => s.val.as_ref(),
            _ => None,
        }
    }

    /// [`Slab::get`], mutable.
    #[inline]
    pub(crate) fn get_mut(&mut self, token: u64) -> Option<&mut T> {
        let (gen, i) = split(token);
        match self.slots.get_mut(i) {
            Some(s) if s.gen == gen => s.val.as_mut(),
            _ => None,
        }
    }

    /// Takes the operation `token` names out; its token is dead from then on.
    #[inline]
    pub(crate) fn remove(&mut self, token: u64) -> Option<T> {
        let (gen, i) = split(token);
        let s = self.slots.get_mut(i).filter(|s| s.gen == gen)?;
        let val = s.val.take()?;
        // Generation 0 is skipped so that no token is 0.
        s.gen = s.gen.checked_add(1).unwrap_or(1);
        self.free.push(i as u32);
        Some(val)
    }

    /// The operations in flight with their tokens, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.val.as_ref().map(|v| (token(s.gen, i as u32), v)))
    }

    /// The tokens in flight.
    pub(crate) fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter().map(|(t, _)| t)
    }

    /// The operations in flight.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.iter().map(|(_, v)| v)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn tokens_name_their_operation_until_removed() {
        let mut s = Slab::default();
        let a = s.insert("a");
        let b = s.insert("b");
        assert_ne!(a, b);
        assert_ne!(a, 0);
        assert_eq!(s.get(a), Some(&"a"));
        assert_eq!(s.iter().count(), 2);
        *s.get_mut(b).unwrap() = "B";
        assert_eq!(s.remove(b), Some("B"));
        assert_eq!(s.remove(b), None, "a token dies with its operation");
        // The slot is reused, under a new generation: the old token finds nothing.
        let c = s.insert("c");
        assert_eq!(c as u32, b as u32, "same slot");
        assert_ne!(c, b);
        assert_eq!(s.get(b), None);
        assert_eq!(s.get_mut(b), None);
        assert_eq!(s.get(c), Some(&"c"));
        assert_eq!(s.get(u64::MAX), None);
        assert_eq!(s.get(0), None);
        let mut all: Vec<_> = s.iter().map(|(t, v)| (t, *v)).collect();
        all.sort();
        let mut want = vec![(a, "a"), (c, "c")];
        want.sort();
        assert_eq!(all, want);
        assert_eq!(s.keys().count(), 2);
        assert_eq!(s.values().count(), 2);
    }

    #[test]
    fn generation_wraps_past_zero() {
        let mut s = Slab::default();
        let t = s.insert(1);
        s.slots[0].gen = u32::MAX;
        let t_max = token(u32::MAX, 0);
        assert_eq!(s.get(t), None);
        assert_eq!(s.remove(t_max), Some(1));
        let u = s.insert(2);
        assert_eq!(u >> 32, 1, "generation 0 is skipped");
        assert_ne!(u, 0);
    }

    proptest! {
        /// Against a map: every token names what was stored under it until it is removed,
        /// and tokens never repeat while their slot's generation has not wrapped.
        #[test]
        fn behaves_as_a_map(ops in proptest::collection::vec((any::<bool>(), any::<u8>()), 1..300)) {
            let mut s = Slab::default();
            let mut model: HashMap<u64, u32> = HashMap::new();
            let mut dead = Vec::new();
            let mut live: Vec<u64> = Vec::new();
            for (n, (add, pick)) in ops.into_iter().enumerate() {
                if add || live.is_empty() {
                    let t = s.insert(n as u32);
                    prop_assert!(!model.contains_key(&t) && !dead.contains(&t) && t != 0);
                    model.insert(t, n as u32);
                    live.push(t);
                } else {
                    let t = live.swap_remove(usize::from(pick) % live.len());
                    prop_assert_eq!(s.remove(t), model.remove(&t));
                    dead.push(t);
                }
                prop_assert_eq!(s.iter().count(), model.len());
                for t in &dead {
                    prop_assert!(s.get(*t).is_none());
                }
                for (t, v) in &model {
                    prop_assert_eq!(s.get(*t), Some(v));
                }
            }
        }
    }
}
