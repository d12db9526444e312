//! A small map bounded in size that forgets its least recently used entry.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// At most `capacity` entries; inserting beyond that drops the least recently used one.
/// `get` counts as a use. Every operation is O(log n).
pub(crate) struct BoundedMap<K, V> {
    capacity: usize,
    /// Key → (value, tick of its last use).
    entries: HashMap<K, (V, u64)>,
    /// Tick of last use → key: the first entry is the least recently used.
    order: BTreeMap<u64, K>,
    tick: u64,
}

impl<K: Hash + Eq + Clone, V: Clone> BoundedMap<K, V> {
    /// A map holding at most `capacity` entries (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        BoundedMap {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
        }
    }

    /// The value for `key`, now the most recently used.
    pub(crate) fn get(&mut self, key: &K) -> Option<V> {
        let tick = self.next_tick();
        let (value, last) = self.entries.get_mut(key)?;
        let old = std::mem::replace(last, tick);
        let value = value.clone();
        if let Some(k) = self.order.remove(&old) {
            self.order.insert(tick, k);
        }
        Some(value)
    }

    /// Inserts `key` (replacing its value if present) as the most recently used entry,
    /// dropping the least recently used one if the map is full.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        let tick = self.next_tick();
        if let Some((_, old)) = self.entries.remove(&key) {
            self.order.remove(&old);
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.order.insert(tick, key.clone());
        self.entries.insert(key, (value, tick));
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }
}

#[cfg(test)]
mod tests {
    use super::BoundedMap;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut map = BoundedMap::new(2);
        map.insert("a", 1);
        map.insert("b", 2);
        assert_eq!(map.get(&"a"), Some(1)); // "b" is now the oldest
        map.insert("c", 3);
        assert_eq!(map.len(), 2);
        assert_eq!(map.get(&"b"), None);
        assert_eq!(map.get(&"a"), Some(1));
        assert_eq!(map.get(&"c"), Some(3));
    }

    #[test]
    fn insert_replaces_the_value_for_a_key() {
        let mut map = BoundedMap::new(2);
        map.insert("a", 1);
        map.insert("b", 2);
        map.insert("a", 3);
        assert_eq!(map.len(), 2);
        assert_eq!(map.get(&"a"), Some(3));
        map.insert("c", 4); // "b" was the least recently used
        assert_eq!(map.get(&"b"), None);
    }

    #[test]
    fn zero_capacity_still_holds_one() {
        let mut map = BoundedMap::new(0);
        map.insert("a", 1);
        map.insert("b", 2);
        assert_eq!(map.len(), 1);
        assert_eq!(map.get(&"b"), Some(2));
    }
}
