//! [`Cache::check`]: an fsck for the data directory. It proves what the durability order in
//! `store.rs` promises — after any crash and the reconciliation at open, the index and the
//! body store agree — and is what `meshcache cache check` prints and the crash tests assert.
//!
//! What must hold:
//! - every index entry's body is complete in the body store, with the entry's length, and
//!   its bytes hash to the entry's BLAKE3 hash (read and hashed, not trusted);
//! - the body table counts exactly the entries that reference each body, with their length,
//!   and the recorded total is the sum of its lengths (the size accounting eviction uses);
//! - the tagged bodies are exactly the referenced ones (no orphan tag keeps garbage alive,
//!   no referenced body lacks the tag that protects it);
//! - no blob outside those remains once garbage collection has run (orphans collected),
//!   and no adopted spool file (`adopt.rs`) outlives its body's last entry.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::error::StoreError;
use crate::store::Cache;

/// What [`Cache::check`] found. [`CheckReport::problems`] is empty when all is well.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Index entries (variants).
    pub entries: u64,
    /// Distinct bodies the index references.
    pub bodies: u64,
    /// The size total the index records (what eviction compares with `max_size`).
    pub bytes_recorded: u64,
    /// The sum of the referenced bodies' lengths.
    pub bytes_counted: u64,
    /// Blobs in the body store no entry references, after waiting for collection.
    pub unreferenced_blobs: u64,
    /// Every inconsistency, one line each.
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn is_consistent(&self) -> bool {
        self.problems.is_empty()
    }
}

fn hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

impl Cache {
    /// Checks the index against the body store (see the module docs). Waits up to
    /// `collect_within` for garbage collection to remove unreferenced blobs (open the cache
    /// with a short `gc_interval` to make that quick).
    pub async fn check(&self, collect_within: Duration) -> Result<CheckReport, StoreError> {
        let mut r = CheckReport::default();
        let entries = self.list().await?;
        let index = self.index();
        let rows = index.body_rows()?;
        r.entries = entries.len() as u64;
        r.bodies = rows.len() as u64;
        r.bytes_recorded = index.total_bytes()?;
        r.bytes_counted = rows.iter().map(|(_, len, _)| len).sum();
        if r.bytes_recorded != r.bytes_counted {
            r.problems.push(format!(
                "size accounting: the index records {} bytes, its bodies add up to {}",
                r.bytes_recorded, r.bytes_counted
            ));
        }

        let mut refs: HashMap<[u8; 32], (u64, u64)> = HashMap::new();
        for (key, e) in &entries {
            let slot = refs.entry(e.hash).or_insert((e.len, 0));
            slot.1 += 1;
            if slot.0 != e.len {
                r.problems.push(format!(
                    "{key}: body {} has length {} here and {} in another entry",
                    e.hash_hex(),
                    e.len,
                    slot.0
                ));
            }
        }
        let table: HashMap<[u8; 32], (u64, u64)> =
            rows.iter().map(|(h, len, n)| (*h, (*len, *n))).collect();
        for (h, want) in &refs {
            match table.get(h) {
                Some(got) if got == want => {}
                Some((len, n)) => r.problems.push(format!(
                    "body {}: the body table says {len} bytes × {n} references, the entries {} bytes × {}",
                    hex(h),
                    want.0,
                    want.1
                )),
                None => r
                    .problems
                    .push(format!("body {}: referenced but not in the body table", hex(h))),
            }
        }
        for h in table.keys().filter(|h| !refs.contains_key(*h)) {
            r.problems.push(format!(
                "body {}: in the body table, no entry uses it",
                hex(h)
            ));
        }

        // Every entry's body: complete, of its length, and its bytes hash to its hash.
        for (h, (len, _)) in &refs {
            if !self.has_body(h, *len).await {
                r.problems.push(format!(
                    "body {}: not complete with {len} bytes in the body store",
                    hex(h)
                ));
                continue;
            }
            let mut hasher = blake3::Hasher::new();
            let mut n = 0u64;
            let mut stream = self.body_by_hash(h, 0..*len);
            let mut failed = None;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(b) => {
                        n += b.len() as u64;
                        hasher.update(&b);
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                r.problems.push(format!("body {}: unreadable: {e}", hex(h)));
            } else if n != *len || *hasher.finalize().as_bytes() != *h {
                r.problems.push(format!(
                    "body {}: its {n} bytes do not hash to its name",
                    hex(h)
                ));
            }
        }

        let tagged: HashSet<[u8; 32]> = self.bodies().tagged().await?.into_iter().collect();
        for h in refs.keys().filter(|h| !tagged.contains(*h)) {
            r.problems.push(format!(
                "body {}: referenced but not tagged (garbage collection may take it)",
                hex(h)
            ));
        }
        for h in tagged.iter().filter(|h| !refs.contains_key(*h)) {
            r.problems
                .push(format!("body {}: tagged but no entry uses it", hex(h)));
        }

        // Orphans (imported before a crash, never tagged; or released) go with the next
        // garbage collection.
        let deadline = Instant::now() + collect_within;
        loop {
            let blobs = self.bodies().all_blobs().await?;
            let orphans: Vec<_> = blobs
                .iter()
                .filter(|h| !refs.contains_key(*h) && !tagged.contains(*h))
                .collect();
            r.unreferenced_blobs = orphans.len() as u64;
            if orphans.is_empty() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if r.unreferenced_blobs > 0 {
            r.problems.push(format!(
                "{} unreferenced blob(s) still in the body store after {collect_within:?}",
                r.unreferenced_blobs
            ));
        }
        // Adopted spool files (adopt.rs): once the store let go of a body, its file goes
        // with the next sweep; none may remain for a body no entry uses.
        self.bodies().sweep_adopted().await?;
        for h in self.bodies().adopted_files() {
            if !refs.contains_key(&h) {
                r.unreferenced_blobs += 1;
                r.problems.push(format!(
                    "body {}: an adopted file no entry uses is still on disk",
                    hex(&h)
                ));
            }
        }
        Ok(r)
    }
}
