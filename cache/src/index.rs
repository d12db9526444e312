//! The index: redb tables mapping each URL to its stored variants, and each body hash to
//! its size and the number of entries that reference it.
//!
//! Durability: every mutation is one write transaction committed with redb's default
//! (immediate) durability, so after `kill -9` the index is exactly the last committed state.
//! An entry is only inserted after its body is complete and tagged in the body store
//! (see `store.rs`), so a committed entry always points at a complete body.
//! `last_used` updates are kept in memory by the caller and flushed in batches: losing a
//! few of them in a crash only makes eviction order slightly less exact.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::entry::Entry;
use crate::error::StoreError;

const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
const BODIES: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("bodies");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The layout of `entries` rows. A file written with another version is emptied on open
/// (a cache may always forget): decoding old rows with new code would fail on every read.
const SCHEMA: u64 = 2;

/// Bodies whose last reference went away: release them from the body store.
pub type Released = Vec<[u8; 32]>;

#[derive(Debug)]
pub struct Index {
    db: Database,
}

fn decode(bytes: &[u8]) -> Result<Vec<Entry>, StoreError> {
    Ok(postcard::from_bytes(bytes)?)
}

impl Index {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = match Database::create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Locked(path.to_owned()))
            }
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
                if e.kind() == std::io::ErrorKind::WouldBlock =>
            {
                return Err(StoreError::Locked(path.to_owned()))
            }
            Err(e) => return Err(e.into()),
        };
        let tx = db.begin_write()?;
        tx.open_table(ENTRIES)?;
        tx.open_table(BODIES)?;
        let schema = tx.open_table(META)?.get("schema")?.map(|g| g.value());
        if schema != Some(SCHEMA) {
            let had_rows = tx.open_table(ENTRIES)?.len()? > 0;
            tx.delete_table(ENTRIES)?;
            tx.delete_table(BODIES)?;
            tx.open_table(ENTRIES)?;
            tx.open_table(BODIES)?;
            let mut meta = tx.open_table(META)?;
            meta.insert("total_bytes", 0)?;
            meta.insert("schema", SCHEMA)?;
            if had_rows {
                tracing::warn!(
                    "the cache index was written by another version of meshcache: starting empty"
                );
            }
        }
        tx.commit()?;
        Ok(Self { db })
    }

    /// All variants stored for a URL, newest first.
    pub fn get(&self, key: &str) -> Result<Vec<Entry>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(ENTRIES)?;
        match t.get(key)? {
            Some(v) => decode(v.value()),
            None => Ok(Vec::new()),
        }
    }

    /// Stores `entry` under `key` with a fresh id, replacing the variant it stands for
    /// and keeping at most `max_variants` (newest first).
    pub fn insert(
        &self,
        key: &str,
        entry: Entry,
        max_variants: usize,
    ) -> Result<Released, StoreError> {
        let (released, _) = self.insert_many(&[(key.to_string(), entry)], max_variants)?;
        Ok(released)
    }

    /// Inserts several entries in one transaction (one commit, one fsync: the store's
    /// group commit); returns the bodies released and, per item, the entry as stored.
    pub fn insert_many(
        &self,
        items: &[(String, Entry)],
        max_variants: usize,
    ) -> Result<(Released, Vec<Option<Entry>>), StoreError> {
        let tx = self.db.begin_write()?;
        let mut released = Vec::new();
        let mut stored = Vec::with_capacity(items.len());
        {
            let mut entries = tx.open_table(ENTRIES)?;
            let mut bodies = tx.open_table(BODIES)?;
            let mut meta = tx.open_table(META)?;
            for (key, entry) in items {
                let key = key.as_str();
                let mut list = match entries.get(key)? {
                    Some(v) => decode(v.value())?,
                    None => Vec::new(),
                };
                // The entry's id is assigned in the same transaction.
                let mut entry = entry.clone();
                let id = meta.get("next_id")?.map(|g| g.value()).unwrap_or(1);
                meta.insert("next_id", id + 1)?;
                entry.id = id;
                add_ref(&mut bodies, &mut meta, &entry.hash, entry.len)?;
                let mut dropped: Vec<Entry> = Vec::new();
                list.retain(|e| {
                    let same = e.variant == entry.variant && e.vary == entry.vary;
                    if same {
                        dropped.push(e.clone());
                    }
                    !same
                });
                list.insert(0, entry.clone());
                while list.len() > max_variants.max(1) {
                    dropped.extend(list.pop());
                }
                for e in dropped {
                    released.extend(drop_ref(&mut bodies, &mut meta, &e.hash)?);
                }
                entries.insert(key, postcard::to_stdvec(&list)?.as_slice())?;
                stored.push(list.into_iter().find(|e| e.id == id));
            }
            // Released means unreferenced at the end of the transaction: a body one item
            // dropped and a later one took up again stays.
            released.sort_unstable();
            released.dedup();
            let mut still = Vec::new();
            for h in released {
                if bodies.get(h.as_slice())?.is_none() {
                    still.push(h);
                }
            }
            released = still;
        }
        tx.commit()?;
        Ok((released, stored))
    }

    /// Rewrites one entry in place (after a 304, or to record last use).
    pub fn update(
        &self,
        key: &str,
        id: u64,
        f: impl FnOnce(&mut Entry),
    ) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let found = {
            let mut entries = tx.open_table(ENTRIES)?;
            let mut list = match entries.get(key)? {
                Some(v) => decode(v.value())?,
                None => Vec::new(),
            };
            let found = match list.iter_mut().find(|e| e.id == id) {
                Some(e) => {
                    f(e);
                    true
                }
                None => false,
            };
            if found {
                entries.insert(key, postcard::to_stdvec(&list)?.as_slice())?;
            }
            found
        };
        tx.commit()?;
        Ok(found)
    }

    /// Records last-use times in one transaction.
    pub fn touch(&self, touched: &[(String, u64, u64)]) -> Result<(), StoreError> {
        if touched.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write()?;
        {
            let mut entries = tx.open_table(ENTRIES)?;
            for (key, id, at) in touched {
                let mut list = match entries.get(key.as_str())? {
                    Some(v) => decode(v.value())?,
                    None => continue,
                };
                if let Some(e) = list.iter_mut().find(|e| e.id == *id) {
                    e.last_used_ms = e.last_used_ms.max(*at);
                    entries.insert(key.as_str(), postcard::to_stdvec(&list)?.as_slice())?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes every variant of a URL (`None`) or one variant (`Some(id)`).
    pub fn remove(&self, key: &str, id: Option<u64>) -> Result<(Released, usize), StoreError> {
        let tx = self.db.begin_write()?;
        let mut released = Vec::new();
        let count;
        {
            let mut entries = tx.open_table(ENTRIES)?;
            let mut bodies = tx.open_table(BODIES)?;
            let mut meta = tx.open_table(META)?;
            let list = match entries.get(key)? {
                Some(v) => decode(v.value())?,
                None => Vec::new(),
            };
            let (gone, kept): (Vec<Entry>, Vec<Entry>) = list
                .into_iter()
                .partition(|e| id.is_none_or(|id| e.id == id));
            for e in &gone {
                released.extend(drop_ref(&mut bodies, &mut meta, &e.hash)?);
            }
            count = gone.len();
            if kept.is_empty() {
                entries.remove(key)?;
            } else {
                entries.insert(key, postcard::to_stdvec(&kept)?.as_slice())?;
            }
        }
        tx.commit()?;
        Ok((released, count))
    }

    /// Every entry with its URL (for listing, eviction and the startup check).
    pub fn all(&self) -> Result<Vec<(String, Entry)>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(ENTRIES)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            for e in decode(v.value())? {
                out.push((k.value().to_string(), e));
            }
        }
        Ok(out)
    }

    /// Every body hash the index references.
    pub fn body_hashes(&self) -> Result<Vec<[u8; 32]>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(BODIES)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, _) = row?;
            if let Ok(h) = <[u8; 32]>::try_from(k.value()) {
                out.push(h);
            }
        }
        Ok(out)
    }

    /// The body table: hash, size and reference count of every referenced body.
    pub fn body_rows(&self) -> Result<Vec<([u8; 32], u64, u64)>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(BODIES)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let h = <[u8; 32]>::try_from(k.value())
                .map_err(|_| StoreError::Index("a body key is not 32 bytes".into()))?;
            let (len, refs) = v.value();
            out.push((h, len, refs));
        }
        Ok(out)
    }

    /// Sum of the sizes of distinct stored bodies.
    pub fn total_bytes(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(META)?;
        Ok(t.get("total_bytes")?.map(|g| g.value()).unwrap_or(0))
    }

    /// Number of URLs and of variants.
    pub fn counts(&self) -> Result<(u64, u64), StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(ENTRIES)?;
        let mut urls = 0;
        let mut variants = 0;
        for row in t.iter()? {
            let (_, v) = row?;
            urls += 1;
            variants += decode(v.value())?.len() as u64;
        }
        Ok((urls, variants))
    }
}

fn add_ref(
    bodies: &mut redb::Table<&[u8], (u64, u64)>,
    meta: &mut redb::Table<&str, u64>,
    hash: &[u8; 32],
    len: u64,
) -> Result<(), StoreError> {
    let current = bodies.get(hash.as_slice())?.map(|g| g.value());
    match current {
        Some((l, refs)) => {
            bodies.insert(hash.as_slice(), (l, refs + 1))?;
        }
        None => {
            bodies.insert(hash.as_slice(), (len, 1))?;
            let total = meta.get("total_bytes")?.map(|g| g.value()).unwrap_or(0);
            meta.insert("total_bytes", total + len)?;
        }
    }
    Ok(())
}

fn drop_ref(
    bodies: &mut redb::Table<&[u8], (u64, u64)>,
    meta: &mut redb::Table<&str, u64>,
    hash: &[u8; 32],
) -> Result<Option<[u8; 32]>, StoreError> {
    let current = bodies.get(hash.as_slice())?.map(|g| g.value());
    match current {
        Some((l, refs)) if refs > 1 => {
            bodies.insert(hash.as_slice(), (l, refs - 1))?;
            Ok(None)
        }
        Some((l, _)) => {
            bodies.remove(hash.as_slice())?;
            let total = meta.get("total_bytes")?.map(|g| g.value()).unwrap_or(0);
            meta.insert("total_bytes", total.saturating_sub(l))?;
            Ok(Some(*hash))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(variant: &str, hash: u8, len: u64) -> Entry {
        let req = http::Request::get("http://example.test/").body(()).unwrap();
        let res = http::Response::builder().body(()).unwrap();
        Entry {
            id: 0,
            variant: variant.to_string(),
            vary: Vec::new(),
            policy: http_cache_semantics::CachePolicy::new(&req, &res),
            status: 200,
            headers: Vec::new(),
            hash: [hash; 32],
            len,
            stored_at_ms: 0,
            fresh_until_ms: 0,
            last_used_ms: 0,
            shareable: false,
            attestation: None,
            head_map: Default::default(),
        }
    }

    /// In one group commit, a body that one entry lets go of and a later one takes up
    /// again is not released (releasing it would untag a body an entry needs).
    #[test]
    fn a_body_dropped_and_taken_up_again_in_one_group_is_not_released() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        index.insert("a", entry("", 1, 10), 16).unwrap();
        // "a" is replaced (body 1 loses its only reference), then "b" takes body 1.
        let (released, stored) = index
            .insert_many(
                &[
                    ("a".to_string(), entry("", 2, 20)),
                    ("b".to_string(), entry("", 1, 10)),
                ],
                16,
            )
            .unwrap();
        assert!(released.is_empty(), "released {released:?}");
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].as_ref().map(|e| e.hash), Some([2; 32]));
        assert_eq!(stored[1].as_ref().map(|e| e.hash), Some([1; 32]));
        assert_eq!(index.total_bytes().unwrap(), 30);
        // And a body no entry takes up again is released.
        let (released, _) = index
            .insert_many(&[("a".to_string(), entry("", 3, 5))], 16)
            .unwrap();
        assert_eq!(released, vec![[2; 32]]);
        assert_eq!(index.total_bytes().unwrap(), 15);
    }
}
