//! A bounded in-memory cache of small hot bodies, keyed by hash, least recently used out.
//! It saves a round trip to the body store on the hit path for small objects.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bytes::Bytes;

#[derive(Debug)]
pub struct MemCache {
    inner: Mutex<Inner>,
    capacity: u64,
    object_max: u64,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<[u8; 32], (Bytes, u64)>,
    order: BTreeMap<u64, [u8; 32]>,
    tick: u64,
    size: u64,
}

impl MemCache {
    pub fn new(capacity: u64, object_max: u64) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity,
            object_max: object_max.min(capacity),
        }
    }

    pub fn fits(&self, len: u64) -> bool {
        len <= self.object_max
    }

    pub fn get(&self, hash: &[u8; 32]) -> Option<Bytes> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *g;
        inner.tick += 1;
        let tick = inner.tick;
        let (bytes, t) = inner.map.get_mut(hash)?;
        inner.order.remove(t);
        *t = tick;
        inner.order.insert(tick, *hash);
        Some(bytes.clone())
    }

    pub fn insert(&self, hash: [u8; 32], bytes: Bytes) {
        let len = bytes.len() as u64;
        if !self.fits(len) {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *g;
        if inner.map.contains_key(&hash) {
            return;
        }
        while inner.size + len > self.capacity {
            let Some((_, victim)) = inner.order.pop_first() else {
                break;
            };
            if let Some((b, _)) = inner.map.remove(&victim) {
                inner.size -= b.len() as u64;
            }
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.order.insert(tick, hash);
        inner.map.insert(hash, (bytes, tick));
        inner.size += len;
    }

    pub fn remove(&self, hash: &[u8; 32]) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((b, t)) = g.map.remove(hash) {
            g.order.remove(&t);
            g.size -= b.len() as u64;
        }
    }
}
