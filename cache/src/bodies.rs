//! Bodies, content-addressed by BLAKE3, in an iroh-blobs file store (so the mesh can later
//! fetch them with verified streaming and byte ranges).
//!
//! Each body the index references has one named tag `b:<hex>`; deleting the tag lets the
//! store's periodic garbage collection reclaim the file (iroh-blobs has no public delete).
//! The store holds an exclusive lock and runs its own runtime: one process per data
//! directory, and [`Bodies::shutdown`] must be awaited before the directory is reopened.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use iroh_blobs::api::blobs::{AddPathOptions, ImportMode};
use iroh_blobs::api::proto::BlobStatus;
use iroh_blobs::api::proto::ExportRangesItem;
use iroh_blobs::store::fs::{options::Options, FsStore};
use iroh_blobs::store::GcConfig;
use iroh_blobs::{BlobFormat, Hash};

use crate::error::StoreError;

/// A freshly imported body, protected from garbage collection while this lives.
pub struct Imported {
    _tt: iroh_blobs::api::TempTag,
    pub hash: [u8; 32],
    pub size: u64,
}

impl Imported {
    pub(crate) fn new(tt: iroh_blobs::api::TempTag, hash: [u8; 32], size: u64) -> Imported {
        Imported {
            _tt: tt,
            hash,
            size,
        }
    }
}

/// Handle to the body store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Bodies {
    store: FsStore,
    paths: iroh_blobs::store::fs::options::PathOptions,
    /// Spool files adopted by reference (`adopt.rs`).
    adopted: std::sync::Arc<crate::adopt::Adopted>,
}

fn tag_name(hash: &[u8; 32]) -> String {
    format!("b:{}", Hash::from_bytes(*hash).to_hex())
}

/// Tag protecting a body being fetched from a peer until its entry is committed.
fn hold_name(hash: &[u8; 32]) -> String {
    format!("f:{}", Hash::from_bytes(*hash).to_hex())
}

/// Tries of an import the store refused as busy (see [`Bodies::import`]).
const BUSY_RETRIES: u64 = 40;

/// Why one try failed: the hash's actor was busy (try again), or anything else.
enum Failed {
    Busy(StoreError),
    Other(StoreError),
}

impl Failed {
    fn of(what: &'static str, e: &(dyn std::error::Error + 'static)) -> Failed {
        let err = StoreError::body(what, e);
        if is_busy(e) {
            Failed::Busy(err)
        } else {
            Failed::Other(err)
        }
    }
}

/// Runs `f` until it does not fail as busy, pausing a little longer each time, at most
/// [`BUSY_RETRIES`] times.
async fn retry_busy<T, F, Fut>(f: F) -> Result<T, StoreError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failed>>,
{
    let mut attempt = 0u64;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(Failed::Busy(e)) if attempt < BUSY_RETRIES => {
                attempt += 1;
                tracing::debug!(attempt, "body store busy with this hash: {e}");
                tokio::time::sleep(Duration::from_millis(5 * attempt)).await;
            }
            Err(Failed::Busy(e)) | Err(Failed::Other(e)) => return Err(e),
        }
    }
}

/// Is this the store refusing a command because the hash's actor inbox is full? It says
/// so with `io::ErrorKind::ResourceBusy`, somewhere down the chain of sources.
fn is_busy(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ResourceBusy)
        {
            return true;
        }
        cur = err.source();
    }
    // Some wrappers keep the io::Error without exposing it as a source.
    format!("{e:?}").contains("ResourceBusy")
}

fn store_err(what: &'static str) -> impl Fn(&(dyn std::error::Error + 'static)) -> StoreError {
    move |e| StoreError::body(what, e)
}

impl Bodies {
    /// Opens (or creates) the store in `dir`.
    pub async fn open(dir: &Path, gc_interval: Duration) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(dir.to_owned(), e))?;
        let mut opts = Options::new(dir);
        let paths = opts.path.clone();
        opts.gc = Some(GcConfig {
            interval: gc_interval,
            add_protected: None,
        });
        let adopted = std::sync::Arc::new(crate::adopt::Adopted::open(dir)?);
        let store = FsStore::load_with_opts(dir.join("blobs.db"), opts)
            .await
            .map_err(|e| StoreError::Body(format!("open body store in {}: {e}", dir.display())))?;
        Ok(Self {
            store,
            paths,
            adopted,
        })
    }

    /// Imports a complete file (copying it). The body stays protected from garbage
    /// collection while the returned [`Imported`] lives; [`Bodies::pin`] protects it for good.
    ///
    /// The store runs each content hash in one actor with a bounded inbox: a burst of
    /// imports of the same bytes (many URLs, one body) finds it full and is refused as
    /// busy. That is a wait, not a failure: tried again with a growing pause (about 4 s
    /// in all) before it is one.
    pub async fn import(&self, path: &Path) -> Result<Imported, StoreError> {
        retry_busy(|| self.import_once(path)).await
    }

    async fn import_once(&self, path: &Path) -> Result<Imported, Failed> {
        // The store imports only absolute paths (a relative data directory is allowed).
        let path = std::path::absolute(path)
            .map_err(|e| Failed::Other(StoreError::Io(path.to_owned(), e)))?;
        let opts = AddPathOptions {
            path,
            mode: ImportMode::Copy,
            format: BlobFormat::Raw,
        };
        let tt = self
            .store
            .blobs()
            .add_path_with_opts(opts)
            .temp_tag()
            .await
            .map_err(|e| Failed::of("import body", &e))?;
        let hash: [u8; 32] = tt.hash().into();
        let size = match self.store.blobs().status(tt.hash()).await {
            Ok(BlobStatus::Complete { size }) => size,
            Ok(other) => {
                return Err(Failed::Other(StoreError::Body(format!(
                    "imported body is {other:?}"
                ))))
            }
            Err(e) => return Err(Failed::of("body status", &e)),
        };
        Ok(Imported {
            _tt: tt,
            hash,
            size,
        })
    }

    /// Imports a body held in memory (small objects); a busy store is waited for as in
    /// [`Bodies::import`].
    pub async fn import_bytes(&self, bytes: Bytes) -> Result<Imported, StoreError> {
        retry_busy(|| self.import_bytes_once(bytes.clone())).await
    }

    async fn import_bytes_once(&self, bytes: Bytes) -> Result<Imported, Failed> {
        let size = bytes.len() as u64;
        let tt = self
            .store
            .blobs()
            .add_bytes(bytes)
            .temp_tag()
            .await
            .map_err(|e| Failed::of("import body", &e))?;
        let hash: [u8; 32] = tt.hash().into();
        Ok(Imported {
            _tt: tt,
            hash,
            size,
        })
    }

    /// Tags a body (not yet durable: see [`Bodies::sync`]).
    pub async fn tag(&self, hash: &[u8; 32]) -> Result<(), StoreError> {
        self.store
            .tags()
            .set(
                tag_name(hash),
                iroh_blobs::HashAndFormat::raw(Hash::from_bytes(*hash)),
            )
            .await
            .map_err(|e| store_err("tag body")(&e))
    }

    /// Makes the tags set so far durable, so an index entry written afterwards never
    /// points at a body that garbage collection may take.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.store
            .sync_db()
            .await
            .map_err(|e| store_err("sync body store")(&e))
    }

    /// The iroh-blobs store itself, for the mesh: serving bodies to peers and fetching
    /// theirs into it with verified streaming.
    pub fn store(&self) -> iroh_blobs::api::Store {
        (*self.store).clone()
    }

    /// Protects a body that is being fetched (possibly partial) from garbage collection
    /// until [`Bodies::unhold`]; a crash leaves the tag, which the next start removes.
    pub async fn hold(&self, hash: &[u8; 32]) -> Result<(), StoreError> {
        self.store
            .tags()
            .set(
                hold_name(hash),
                iroh_blobs::HashAndFormat::raw(Hash::from_bytes(*hash)),
            )
            .await
            .map_err(|e| store_err("tag body")(&e))
    }

    pub async fn unhold(&self, hash: &[u8; 32]) {
        if let Err(e) = self.store.tags().delete(hold_name(hash)).await {
            tracing::warn!("untag held body: {e}");
        }
    }

    /// Drops every hold (at startup: whatever was being fetched is abandoned).
    pub async fn clear_holds(&self) -> Result<(), StoreError> {
        self.store
            .tags()
            .delete_prefix("f:")
            .await
            .map_err(|e| store_err("untag held bodies")(&e))?;
        Ok(())
    }

    /// Lets garbage collection reclaim a body no entry references any more.
    pub async fn release(&self, hash: &[u8; 32]) -> Result<(), StoreError> {
        self.store
            .tags()
            .delete(tag_name(hash))
            .await
            .map_err(|e| store_err("untag body")(&e))?;
        Ok(())
    }

    pub(crate) fn adopted(&self) -> &crate::adopt::Adopted {
        &self.adopted
    }

    /// True when the store holds the body complete, whatever its size.
    pub(crate) async fn status_complete(&self, hash: &[u8; 32]) -> bool {
        matches!(
            self.store.blobs().status(Hash::from_bytes(*hash)).await,
            Ok(BlobStatus::Complete { .. })
        )
    }

    /// True when the body is stored completely with the expected size.
    pub async fn is_complete(&self, hash: &[u8; 32], len: u64) -> bool {
        matches!(
            self.store.blobs().status(Hash::from_bytes(*hash)).await,
            Ok(BlobStatus::Complete { size }) if size == len
        )
    }

    /// Hashes of all tagged bodies.
    pub async fn tagged(&self) -> Result<Vec<[u8; 32]>, StoreError> {
        let mut out = Vec::new();
        let mut s = self
            .store
            .tags()
            .list_prefix("b:")
            .await
            .map_err(|e| store_err("list tags")(&e))?;
        while let Some(t) = s.next().await {
            let t = t.map_err(|e| store_err("list tags")(&e))?;
            out.push(t.hash.into());
        }
        Ok(out)
    }

    /// Hashes of every blob in the store, tagged or not, complete or not.
    pub async fn all_blobs(&self) -> Result<Vec<[u8; 32]>, StoreError> {
        let hashes = self
            .store
            .blobs()
            .list()
            .hashes()
            .await
            .map_err(|e| store_err("list bodies")(&e))?;
        Ok(hashes.into_iter().map(Into::into).collect())
    }

    /// Reads the whole of a (small) body.
    pub async fn read_all(&self, hash: &[u8; 32]) -> Result<Bytes, StoreError> {
        self.store
            .blobs()
            .get_bytes(Hash::from_bytes(*hash))
            .await
            .map_err(|e| store_err("read body")(&e))
    }

    /// Streams `range` of a complete body. Large complete bodies are plain files in the
    /// store (`PathOptions::data_path`), read directly (in chunks that grow while the
    /// reader keeps up): going through the store's actor costs a message per 16 KiB and
    /// was 3-5x slower. Anything else
    /// (inlined small bodies, a file that is gone) goes through the store's API.
    pub fn read_range(
        &self,
        hash: &[u8; 32],
        range: Range<u64>,
    ) -> futures_util::stream::BoxStream<'static, Result<Bytes, StoreError>> {
        let path = self.paths.data_path(&Hash::from_bytes(*hash));
        let adopted = self.adopted.path(hash);
        let this = self.clone();
        let hash = *hash;
        futures_util::stream::once(async move {
            // The store's own data file, else the adopted spool file (`adopt.rs`).
            let opened = tokio::task::spawn_blocking(move || {
                std::fs::File::open(&path)
                    .map(|f| (f, path))
                    .or_else(|_| std::fs::File::open(&adopted).map(|f| (f, adopted)))
            })
            .await;
            match opened {
                Ok(Ok((file, path))) => file_range(file, path, range).boxed(),
                _ => this.read_range_via_store(&hash, range).boxed(),
            }
        })
        .flatten()
        .boxed()
    }

    /// Streams `range` of a body through the store's API, clipped exactly to the range.
    /// Unlike [`Bodies::read_range`] this never reads the data file directly, so it is
    /// right for a partial body (only its fetched, verified ranges may be asked for).
    pub fn read_range_via_store(
        &self,
        hash: &[u8; 32],
        range: Range<u64>,
    ) -> impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
        let Range { start, end } = range.clone();
        self.store
            .blobs()
            .export_ranges(Hash::from_bytes(*hash), range)
            .stream()
            .filter_map(move |item| async move {
                match item {
                    ExportRangesItem::Size(_) => None,
                    ExportRangesItem::Data(leaf) => {
                        let leaf_end = leaf.offset + leaf.data.len() as u64;
                        let s = start.max(leaf.offset);
                        let e = end.min(leaf_end);
                        if s >= e {
                            return None;
                        }
                        let a = (s - leaf.offset) as usize;
                        let b = (e - leaf.offset) as usize;
                        Some(Ok(leaf.data.slice(a..b)))
                    }
                    ExportRangesItem::Error(e) => Some(Err(store_err("read body")(&e))),
                }
            })
    }

    /// Flushes and closes the store; required before the directory is opened again.
    pub async fn shutdown(&self) {
        if let Err(e) = self.store.shutdown().await {
            tracing::warn!("body store shutdown: {e}");
        }
    }
}

/// Chunk sizes for reading a data file. A reader that keeps up gets large chunks (few
/// syscalls, full speed); one that does not — a slow client, a stalled connection — gets
/// small ones: the chunk a connection cannot send yet stays in memory (in hyper's write
/// queue) until it can, so 1,000 slow readers must not each hold a large one.
const SMALL_CHUNK: usize = 16 * 1024;
const LARGE_CHUNK: usize = 256 * 1024;
/// The reader counts as keeping up once it has taken this much without pausing: more than
/// the kernel's send buffer (up to `tcp_wmem`'s 4 MiB by default, which autotuning grants
/// even to a slow reader) and hyper's can absorb, or a slow reader would pass for one that
/// keeps up. (Measured in bytes, not time: a fast machine reads 48 MiB in 30 ms.)
const KEEPING_UP: u64 = 8 << 20;
/// A pause longer than this between chunks means the reader does not keep up (a reader at
/// 10 KiB/s pauses 1.6 s per small chunk; a scheduling hiccup is shorter than this).
const PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Where a file read is.
struct FileRead {
    file: std::sync::Arc<std::fs::File>,
    pos: u64,
    /// Bytes taken since the reader last paused.
    streak: u64,
    /// When the last chunk was handed over.
    handed: Option<std::time::Instant>,
}

/// A read at `pos` that does not move a shared cursor.
#[cfg(unix)]
fn read_at(file: &std::fs::File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, pos)
}

#[cfg(windows)]
fn read_at(file: &std::fs::File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, pos)
}

fn file_range(
    file: std::fs::File,
    path: std::path::PathBuf,
    range: Range<u64>,
) -> impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
    let start = FileRead {
        file: std::sync::Arc::new(file),
        pos: range.start,
        streak: 0,
        handed: None,
    };
    futures_util::stream::unfold(Some(start), move |st| {
        let path = path.clone();
        async move {
            let mut st = st?;
            if st.pos >= range.end {
                return None;
            }
            if st.handed.is_some_and(|t| t.elapsed() > PAUSE) {
                st.streak = 0;
            }
            let chunk = if st.streak >= KEEPING_UP {
                LARGE_CHUNK
            } else {
                SMALL_CHUNK
            };
            let want = ((range.end - st.pos) as usize).min(chunk);
            let (file, pos) = (st.file.clone(), st.pos);
            // A positional read into a buffer of exactly this chunk's size (tokio's File
            // would keep a buffer of its own, as large as the largest read, per reader).
            // Small chunks are read in place — from the page cache that is a few µs, as
            // nginx reads in its event loop — because a blocking-pool thread per reader
            // (a thousand slow readers each waking now and then) costs far more memory
            // than the read; large chunks, for readers that keep up, go to that pool.
            let read_chunk = move || {
                let mut buf = vec![0u8; want];
                let n = read_at(&file, &mut buf, pos)?;
                buf.truncate(n);
                Ok::<_, std::io::Error>(buf)
            };
            let read = if want <= SMALL_CHUNK {
                read_chunk()
            } else {
                tokio::task::spawn_blocking(read_chunk)
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            };
            match read {
                Ok(buf) if buf.is_empty() => Some((
                    Err(StoreError::Body(format!(
                        "{} ends at {pos}",
                        path.display()
                    ))),
                    None,
                )),
                Ok(buf) => {
                    st.pos += buf.len() as u64;
                    st.streak += buf.len() as u64;
                    st.handed = Some(std::time::Instant::now());
                    Some((Ok(Bytes::from(buf)), Some(st)))
                }
                Err(e) => Some((Err(StoreError::Io(path.clone(), e)), None)),
            }
        }
    })
}
