//! Adopting a complete spool file into the body store instead of copying it: the body is
//! written to disk once.
//!
//! A fill writes its body to a spool file (readers tail it). Importing that file with
//! iroh-blobs' default `ImportMode::Copy` writes every byte a second time (ext4 has no
//! reflink), which measured as most of the CPU of a large miss and doubles the flash
//! wear of every download on a phone. Instead the spool file is hard-linked as
//! `bodies/adopted/<blake3 hex>` and imported with `ImportMode::TryReference`: the store
//! records it as external data and reads it there (and serves it to peers from there).
//!
//! The store never deletes external files, so this module does, and names them by hash so
//! that every part agrees on where a body lives without asking the store:
//!
//! - [`Bodies::adopt`] (under [`Adopted::lock`]): if the store already holds the hash
//!   complete, nothing is linked; else the spool is linked (a leftover file of the same
//!   name holds the same bytes: it is replaced) and imported by reference.
//! - [`Bodies::sweep_adopted`] (under the same lock): deletes each adopted file whose hash
//!   is neither tagged nor complete in the store any more — after eviction released it and
//!   garbage collection removed the store's entry, or after a crash between link and
//!   commit. It runs at open and after every collection interval.
//! - Readers (`Bodies::read_range`) open the store's own data file, else the adopted one;
//!   an open file stays readable after a sweep unlinks it.
//!
//! The name is the BLAKE3 hash the fill computed while writing the spool; the store hashes
//! the file again to build its outboard (iroh-blobs has no import of data plus outboard),
//! and an adoption whose hash does not come out as named is undone and reported.

use std::path::{Path, PathBuf};

use iroh_blobs::api::blobs::{AddPathOptions, ImportMode};
use iroh_blobs::{BlobFormat, Hash, HashAndFormat};

use crate::bodies::{Bodies, Imported};
use crate::error::StoreError;

/// Bodies at most this large are kept inline by the store (its default): never adopted.
pub(crate) const INLINE_MAX: u64 = 16 * 1024;

/// The directory of adopted files and the lock that orders adoptions and sweeps.
#[derive(Debug)]
pub(crate) struct Adopted {
    pub dir: PathBuf,
    pub lock: tokio::sync::Mutex<()>,
}

impl Adopted {
    pub fn open(bodies_dir: &Path) -> Result<Adopted, StoreError> {
        let dir = bodies_dir.join("adopted");
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::Io(dir.clone(), e))?;
        // The store imports only absolute paths (a relative data directory is allowed).
        let dir = std::path::absolute(&dir).map_err(|e| StoreError::Io(dir.clone(), e))?;
        Ok(Adopted {
            dir,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn path(&self, hash: &[u8; 32]) -> PathBuf {
        self.dir.join(Hash::from_bytes(*hash).to_hex().as_str())
    }
}

impl Bodies {
    /// Makes the complete spool file at `spool` — `size` bytes whose BLAKE3 hash is `hash`
    /// — a body of the store without copying it (see the module docs). Falls back to a
    /// copying import when the file cannot be linked (another file system) or is small
    /// enough for the store to inline.
    pub async fn adopt(
        &self,
        spool: &Path,
        hash: [u8; 32],
        size: u64,
    ) -> Result<Imported, StoreError> {
        if size <= INLINE_MAX {
            return self.import(spool).await;
        }
        let adopted = self.adopted();
        let _order = adopted.lock.lock().await;
        let store = self.store();
        if self.is_complete(&hash, size).await {
            // Already held (another URL with the same body): protect it, link nothing —
            // unless garbage collection took it before the protection held.
            let tt = store
                .tags()
                .temp_tag(HashAndFormat::raw(Hash::from_bytes(hash)))
                .await
                .map_err(|e| StoreError::body("protect body", &e))?;
            if self.is_complete(&hash, size).await {
                return Ok(Imported::new(tt, hash, size));
            }
        }
        let target = adopted.path(&hash);
        let linked = {
            let (spool, target) = (spool.to_owned(), target.clone());
            tokio::task::spawn_blocking(move || {
                // A leftover of an earlier adoption holds the same bytes, but may be on
                // its way out: this link replaces it.
                let _ = std::fs::remove_file(&target);
                std::fs::hard_link(&spool, &target)
            })
            .await
            .map_err(|e| StoreError::Body(format!("link spool: {e}")))?
        };
        if let Err(e) = linked {
            tracing::debug!("spool not linked ({e}): copying it into the store");
            drop(_order);
            return self.import(spool).await;
        }
        crate::failpoint::point("spool-adopted");
        let opts = AddPathOptions {
            path: target.clone(),
            mode: ImportMode::TryReference,
            format: BlobFormat::Raw,
        };
        let imported = async {
            let tt = store
                .blobs()
                .add_path_with_opts(opts)
                .temp_tag()
                .await
                .map_err(|e| StoreError::body("adopt body", &e))?;
            let got: [u8; 32] = tt.hash().into();
            if got != hash {
                return Err(StoreError::Body(format!(
                    "adopted body hashes to {}, not {}",
                    Hash::from_bytes(got).to_hex(),
                    Hash::from_bytes(hash).to_hex()
                )));
            }
            Ok(Imported::new(tt, hash, size))
        }
        .await;
        if imported.is_err() {
            let _ = std::fs::remove_file(&target);
        }
        imported
    }

    /// Deletes the adopted files the store no longer has a use for (see the module docs).
    /// Returns how many were deleted.
    pub async fn sweep_adopted(&self) -> Result<usize, StoreError> {
        let adopted = self.adopted();
        let _order = adopted.lock.lock().await;
        let dir = adopted.dir.clone();
        let names = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<String>> {
            let mut names = Vec::new();
            for e in std::fs::read_dir(&dir)? {
                names.push(e?.file_name().to_string_lossy().into_owned());
            }
            Ok(names)
        })
        .await
        .map_err(|e| StoreError::Body(format!("list adopted bodies: {e}")))?
        .map_err(|e| StoreError::Io(adopted.dir.clone(), e))?;
        let tagged: std::collections::HashSet<[u8; 32]> =
            self.tagged().await?.into_iter().collect();
        let mut deleted = 0;
        for name in names {
            let path = adopted.dir.join(&name);
            let Ok(hash) = name.parse::<Hash>() else {
                // Not ours to keep (a stray file): adopted names are hashes.
                let _ = std::fs::remove_file(&path);
                continue;
            };
            let hash: [u8; 32] = hash.into();
            if tagged.contains(&hash) || self.status_complete(&hash).await {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => deleted += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::Io(path, e)),
            }
        }
        if deleted > 0 {
            tracing::debug!(deleted, "deleted adopted bodies the store let go of");
        }
        Ok(deleted)
    }

    /// Hashes of the adopted files on disk (for `Cache::check`).
    pub fn adopted_files(&self) -> Vec<[u8; 32]> {
        let Ok(rd) = std::fs::read_dir(&self.adopted().dir) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_string_lossy().parse::<Hash>().ok())
            .map(Into::into)
            .collect()
    }
}
