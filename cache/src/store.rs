//! [`Cache`]: the handle the proxy uses. It ties the index, the body store, the memory
//! cache, the fills and eviction together.
//!
//! Durability order for a new entry (why a `kill -9` never leaves an entry pointing at a
//! partial body): the body is written to a spool file; only when the origin's body is
//! complete is the spool imported into the body store, tagged and synced; only then is the
//! index entry committed. At startup, spool files are deleted, and every index entry whose
//! body is not complete in the body store is dropped.

use std::collections::HashMap;
use std::fmt::Display;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use http::HeaderMap;
use http_cache_semantics::CachePolicy;

use crate::bodies::Bodies;
use crate::clock::{unix_ms, Clock};
use crate::entry::Entry;
use crate::error::StoreError;
use crate::fill::{Fill, Fills, Head, Join, Leader};
use crate::index::{Index, Released};
use crate::key::variant_key;
use crate::memory::MemCache;
use crate::policy::PolicyOptions;

/// Options of the cache. Every field documents its default.
#[derive(Debug, Clone)]
pub struct Options {
    /// Data directory (`index.redb`, `bodies/`, `spool/`). No default: the caller decides.
    pub dir: PathBuf,
    /// Total size of stored bodies before LRU eviction. Default 10 GiB.
    pub max_size: u64,
    /// Larger responses are not stored. Default 4 GiB.
    pub max_object_size: u64,
    /// Shared-cache rules (gateway). Default false (one device, one user).
    pub shared: bool,
    /// Heuristic freshness fraction. Default 0.1.
    pub heuristic_fraction: f32,
    /// The operator's freshness rules (`[[cache.rule]]`), for responses that state no
    /// freshness ([`crate::policy::storability_ruled`]). Default none.
    pub rules: crate::policy::Rules,
    /// Range misses starting within this many bytes fill the whole object. Default 16 MiB.
    pub range_offset_limit: u64,
    /// A fill with no readers left continues up to this size. Default 256 MiB.
    pub background_fill_max: u64,
    /// Memory for hot small bodies. Default 64 MiB.
    pub memory_cache_size: u64,
    /// Largest body kept in memory. Default 256 KiB.
    pub memory_object_max: u64,
    /// Variants kept per URL. Default 16.
    pub max_variants: usize,
    /// How often the body store reclaims released bodies. Default 30 s.
    pub gc_interval: Duration,
    /// How long the cache stays pass-through after the disk filled up. Default 60 s.
    pub disk_full_backoff: Duration,
    /// Free disk space always left alone: a response is stored only if, after the spool
    /// and its copy in the body store, this much would remain. Default 64 MiB.
    pub min_free_space: u64,
}

/// How often last-use times are written to the index.
const TOUCH_FLUSH_INTERVAL: Duration = Duration::from_secs(60);

/// Spool writes are batched up to this size.
const SPOOL_BATCH: u64 = 512 * 1024;

impl Options {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            max_size: 10 << 30,
            max_object_size: 4 << 30,
            shared: false,
            heuristic_fraction: 0.1,
            rules: crate::policy::Rules::default(),
            range_offset_limit: 16 << 20,
            background_fill_max: 256 << 20,
            memory_cache_size: 64 << 20,
            memory_object_max: 256 << 10,
            max_variants: 16,
            gc_interval: Duration::from_secs(30),
            disk_full_backoff: Duration::from_secs(60),
            min_free_space: 64 << 20,
        }
    }

    pub fn policy(&self) -> PolicyOptions {
        PolicyOptions {
            shared: self.shared,
            heuristic_fraction: self.heuristic_fraction,
        }
    }
}

/// Summary figures of the store.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub urls: u64,
    pub variants: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    pub fills_in_progress: usize,
    pub evictions: u64,
    pub pass_through: bool,
    /// Partial objects (byte ranges held without the whole) and the bytes they hold.
    pub partial_objects: u64,
    pub partial_bytes: u64,
}

/// What a fill will store once its body is complete.
#[derive(Debug)]
pub struct Pending {
    pub policy: CachePolicy,
    pub shareable: bool,
    pub fresh_until: SystemTime,
    /// When the response arrived from the origin (what an attestation records).
    pub fetched_at: SystemTime,
    /// A body from a peer: the attestation it came with (stored as is: trust stays with
    /// its signer) and the hash it attests, which the complete body must have.
    pub from_peer: Option<(Vec<u8>, [u8; 32])>,
    /// Digests the body must have ([`crate::certify`]: its URL's, the client's stated
    /// integrity, the origin's `Content-Digest`; any one value of them, one algorithm):
    /// the body is checked as it arrives, its last bytes held back until it matched, and
    /// it is stored only if it did. Empty: no check.
    pub certified: Vec<crate::certify::Certified>,
}

/// Signs the binding of a URL to a stored response, for the mesh. The cache calls it for
/// every shareable entry it commits from the origin, and again after a 304 refreshed one.
pub trait Attester: Send + Sync {
    /// The attestation of `entry` under `key`, fetched (or revalidated) at `fetched_at`.
    fn attest(&self, key: &str, entry: &Entry, fetched_at: SystemTime) -> Option<Vec<u8>>;

    /// Called after every entry commit (from the origin or a peer), with the entry as
    /// stored: the mesh keeps its index of what strangers may ask for.
    fn committed(&self, _key: &str, _entry: &Entry) {}
}

/// A decoded index row: its entries, shared with every hit that serves one of them (a hit
/// clones an `Arc`, not the entry's policy and headers).
type Row = Arc<Vec<Arc<Entry>>>;

/// Recently decoded index rows. `generation` moves on every invalidation, so a lookup
/// that read the index before a concurrent write never caches what it read.
#[derive(Default)]
struct HotIndex {
    rows: HashMap<String, Row>,
    generation: u64,
}

/// Rows kept decoded in memory; beyond this the map is simply emptied.
const HOT_ROWS: usize = 8192;

/// Handle to the cache. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    opts: Options,
    clock: Arc<dyn Clock>,
    index: Arc<Index>,
    bodies: Bodies,
    fills: Arc<Fills>,
    memory: MemCache,
    spool_dir: PathBuf,
    /// Last-use times not yet written to the index: (key, id) -> ms.
    touched: Mutex<HashMap<(String, u64), u64>>,
    /// Serializes "tag body + commit entry" against "remove entry + untag body", so a
    /// body is never untagged while an entry that needs it is being committed.
    write_lock: tokio::sync::Mutex<()>,
    disk_full_until: AtomicU64,
    /// Decoded index rows of recently looked-up URLs, so a hit needs no redb read.
    hot: Mutex<HotIndex>,
    evicting: AtomicBool,
    evictions: AtomicU64,
    attester: std::sync::OnceLock<Arc<dyn Attester>>,
    /// Entries waiting for the next group commit (`insert_pinned`).
    queue: Mutex<Vec<Commit>>,
    /// Partial objects (206 responses), in `partial/`.
    partials: crate::partial::Partials,
}

/// An entry waiting to be committed, and where its outcome goes.
struct Commit {
    key: String,
    entry: Entry,
    done: tokio::sync::oneshot::Sender<Result<Entry, StoreError>>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Index(format!("index task: {e}")))?
}

impl Cache {
    /// Opens the cache in `opts.dir`, creating it if needed, and drops whatever a crash
    /// left half-done.
    pub async fn open(opts: Options, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let dir = opts.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::Io(dir.clone(), e))?;
        let spool_dir = dir.join("spool");
        let _ = std::fs::remove_dir_all(&spool_dir);
        std::fs::create_dir_all(&spool_dir).map_err(|e| StoreError::Io(spool_dir.clone(), e))?;
        // The index first: its file lock tells a second process clearly that the
        // directory is in use, before the body store's own lock does less clearly.
        let index_path = dir.join("index.redb");
        let index = Arc::new(blocking(move || Index::open(&index_path)).await?);
        let bodies = Bodies::open(&dir.join("bodies"), opts.gc_interval).await?;
        // Partial objects may hold up to a quarter of the cache's size.
        let partials = crate::partial::Partials::open(dir.join("partial"), opts.max_size / 4)?;
        let cache = Cache {
            inner: Arc::new(Inner {
                memory: MemCache::new(opts.memory_cache_size, opts.memory_object_max),
                fills: Arc::new(Fills::new(spool_dir.clone())),
                opts,
                clock,
                index,
                bodies,
                spool_dir,
                touched: Mutex::new(HashMap::new()),
                write_lock: tokio::sync::Mutex::new(()),
                disk_full_until: AtomicU64::new(0),
                hot: Mutex::new(HotIndex::default()),
                evicting: AtomicBool::new(false),
                evictions: AtomicU64::new(0),
                attester: std::sync::OnceLock::new(),
                queue: Mutex::new(Vec::new()),
                partials,
            }),
        };
        cache.reconcile().await?;
        // A partial object completed just before a crash may still be there beside its
        // entry: the entry wins.
        for key in cache.inner.partials.keys() {
            if cache.lookup_any(&key) {
                cache.inner.partials.remove(&key);
            }
        }
        // Adopted spool files the store let go of (adopt.rs): at start, and after each
        // collection interval. The task ends when the cache is gone.
        if let Err(e) = cache.inner.bodies.sweep_adopted().await {
            tracing::warn!("sweep adopted bodies: {e}");
        }
        let weak = Arc::downgrade(&cache.inner);
        let every = cache.inner.opts.gc_interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { break };
                if let Err(e) = inner.bodies.sweep_adopted().await {
                    tracing::warn!("sweep adopted bodies: {e}");
                }
            }
        });
        // Last-use times reach the index in batches: every minute, before eviction, and
        // at shutdown. The task ends when the cache is gone.
        let weak = Arc::downgrade(&cache.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TOUCH_FLUSH_INTERVAL).await;
                let Some(inner) = weak.upgrade() else { break };
                if let Err(e) = (Cache { inner }).flush_touched().await {
                    tracing::warn!("flush last-use times: {e}");
                }
            }
        });
        Ok(cache)
    }

    /// Drops index entries whose body is not complete, and untags bodies no entry uses.
    async fn reconcile(&self) -> Result<(), StoreError> {
        let i = &self.inner;
        let index = i.index.clone();
        let all = blocking(move || index.all()).await?;
        let mut dropped = 0;
        for (key, e) in &all {
            if !i.bodies.is_complete(&e.hash, e.len).await {
                let index = i.index.clone();
                let (k, id) = (key.clone(), e.id);
                blocking(move || index.remove(&k, Some(id))).await?;
                dropped += 1;
            }
        }
        if dropped > 0 {
            tracing::warn!(dropped, "dropped index entries whose body was incomplete");
        }
        i.bodies.clear_holds().await?;
        let index = i.index.clone();
        let referenced: std::collections::HashSet<[u8; 32]> = blocking(move || index.body_hashes())
            .await?
            .into_iter()
            .collect();
        for h in i.bodies.tagged().await? {
            if !referenced.contains(&h) {
                i.bodies.release(&h).await?;
            }
        }
        Ok(())
    }

    pub(crate) fn index(&self) -> &Index {
        &self.inner.index
    }

    pub(crate) fn bodies(&self) -> &Bodies {
        &self.inner.bodies
    }

    /// Sets who signs shareable entries (once; the mesh, when it runs).
    pub fn set_attester(&self, attester: Arc<dyn Attester>) {
        let _ = self.inner.attester.set(attester);
    }

    /// The body store, for the mesh (see [`Bodies::store`]).
    pub fn blobs(&self) -> iroh_blobs::api::Store {
        self.inner.bodies.store()
    }

    /// Protects a body being fetched from a peer; see [`Bodies::hold`].
    pub async fn hold(&self, hash: &[u8; 32]) -> Result<(), StoreError> {
        self.inner.bodies.hold(hash).await
    }

    pub async fn unhold(&self, hash: &[u8; 32]) {
        self.inner.bodies.unhold(hash).await
    }

    /// Every stored variant of `key`, newest first.
    pub fn variants(&self, key: &str) -> Result<Vec<Entry>, StoreError> {
        Ok(self.row(key)?.iter().map(|e| (**e).clone()).collect())
    }

    /// True when the body is complete in the store with this length.
    pub async fn has_body(&self, hash: &[u8; 32], len: u64) -> bool {
        self.inner.bodies.is_complete(hash, len).await
    }

    /// Stores an entry whose body is already complete in the body store (fetched from a
    /// peer). Returns the entry as stored (with its id).
    pub async fn insert_entry(&self, key: &str, entry: Entry) -> Result<Entry, StoreError> {
        if !self.has_body(&entry.hash, entry.len).await {
            return Err(StoreError::Body(format!(
                "body {} is not complete with {} bytes",
                entry.hash_hex(),
                entry.len
            )));
        }
        self.insert_pinned(key, entry).await
    }

    /// Tags the entry's body, then commits the entry — in a group with whatever other
    /// entries are waiting (see [`Cache::commit_group`]).
    async fn insert_pinned(&self, key: &str, entry: Entry) -> Result<Entry, StoreError> {
        let i = &self.inner;
        let (done, mut result) = tokio::sync::oneshot::channel();
        lock(&i.queue).push(Commit {
            key: key.to_string(),
            entry,
            done,
        });
        let w = i.write_lock.lock().await;
        // Whoever holds the write lock commits every entry queued by then: ours may have
        // gone with the group before us.
        if let Ok(r) = result.try_recv() {
            return r;
        }
        let group = std::mem::take(&mut *lock(&i.queue));
        self.commit_group(group).await;
        drop(w);
        self.maybe_evict();
        result
            .await
            .unwrap_or_else(|_| Err(StoreError::Index(format!("{key}: commit dropped"))))
    }

    /// Group commit (under the write lock): tags every body, makes the tags durable with
    /// one sync, then writes every entry in one index transaction (one fsync). The order
    /// per entry is the one a single commit has (body tagged and synced before its entry),
    /// so a crash anywhere leaves what `reconcile` repairs. Under a burst of misses this
    /// turns two fsyncs per object into two per group.
    async fn commit_group(&self, group: Vec<Commit>) {
        let i = &self.inner;
        let mut tagged = Vec::with_capacity(group.len());
        for c in group {
            match i.bodies.tag(&c.entry.hash).await {
                Ok(()) => tagged.push(c),
                Err(e) => {
                    let _ = c.done.send(Err(e));
                }
            }
        }
        if tagged.is_empty() {
            return;
        }
        crate::failpoint::point("body-tagged");
        if let Err(e) = i.bodies.sync().await {
            let msg = e.to_string();
            for c in tagged {
                let _ = c.done.send(Err(StoreError::Body(msg.clone())));
            }
            return;
        }
        crate::failpoint::point("body-synced");
        let index = i.index.clone();
        let max_variants = i.opts.max_variants;
        let items: Vec<(String, Entry)> = tagged
            .iter()
            .map(|c| (c.key.clone(), c.entry.clone()))
            .collect();
        let result = blocking(move || index.insert_many(&items, max_variants)).await;
        for c in &tagged {
            self.forget(&c.key);
            // A complete entry makes a partial object of the same URL useless.
            i.partials.remove(&c.key);
        }
        let (released, stored) = match result {
            Ok(r) => r,
            Err(e) => {
                let msg = e.to_string();
                for c in tagged {
                    let _ = c.done.send(Err(StoreError::Index(msg.clone())));
                }
                return;
            }
        };
        crate::failpoint::point("index-committed");
        for (c, stored) in tagged.into_iter().zip(stored) {
            if let (Some(a), Some(e)) = (i.attester.get(), stored.as_ref()) {
                a.committed(&c.key, e);
            }
            let key = c.key;
            let _ =
                c.done.send(stored.ok_or_else(|| {
                    StoreError::Index(format!("{key}: entry vanished after insert"))
                }));
        }
        self.release(released).await;
    }

    pub fn options(&self) -> &Options {
        &self.inner.opts
    }

    pub fn now(&self) -> SystemTime {
        self.inner.clock.now()
    }

    /// True while the cache stores nothing because the disk filled up.
    pub fn pass_through(&self) -> bool {
        unix_ms(self.now()) < self.inner.disk_full_until.load(Ordering::Relaxed)
    }

    /// True when the disk can take a body of `len` bytes (unknown: 0) twice over (the
    /// spool, then its copy in the body store) and still keep `min_free_space` free.
    /// A disk already below `min_free_space` turns the cache into a pass-through.
    pub fn has_room(&self, len: Option<u64>) -> bool {
        let Some(free) = crate::disk::available(&self.inner.spool_dir) else {
            return true;
        };
        let min = self.inner.opts.min_free_space;
        if free < min {
            self.note_disk_full(&format_args!(
                "{free} bytes free, below min_free_space {min}"
            ));
            return false;
        }
        free - min >= len.unwrap_or(0).saturating_mul(2)
    }

    fn note_disk_full(&self, err: &dyn Display) {
        let until = unix_ms(self.now()) + self.inner.opts.disk_full_backoff.as_millis() as u64;
        self.inner.disk_full_until.store(until, Ordering::Relaxed);
        tracing::error!(
            "disk full ({err}): caching suspended for {:?}, requests pass through",
            self.inner.opts.disk_full_backoff
        );
    }

    /// The stored variant of `key` that a request with these headers selects, newest
    /// first. Freshness is judged by the caller ([`crate::policy::evaluate`]).
    pub fn lookup(
        &self,
        key: &str,
        req_headers: &HeaderMap,
    ) -> Result<Option<Arc<Entry>>, StoreError> {
        let list = self.row(key)?;
        Ok(list
            .iter()
            .find(|e| e.variant == variant_key(&e.vary, req_headers))
            .cloned())
    }

    /// The decoded index row of `key`, from memory when possible.
    fn row(&self, key: &str) -> Result<Row, StoreError> {
        let generation = {
            let hot = self.inner.hot.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(row) = hot.rows.get(key) {
                return Ok(row.clone());
            }
            hot.generation
        };
        let row: Row = Arc::new(
            self.inner
                .index
                .get(key)?
                .into_iter()
                .map(Arc::new)
                .collect(),
        );
        let mut hot = self.inner.hot.lock().unwrap_or_else(|e| e.into_inner());
        if hot.generation == generation {
            if hot.rows.len() >= HOT_ROWS {
                hot.rows.clear();
            }
            hot.rows.insert(key.to_string(), row.clone());
        }
        Ok(row)
    }

    /// Forgets the decoded row of `key` after a write to it.
    fn forget(&self, key: &str) {
        let mut hot = self.inner.hot.lock().unwrap_or_else(|e| e.into_inner());
        hot.rows.remove(key);
        hot.generation += 1;
    }

    /// Records a use of an entry (for LRU); written to the index in batches.
    pub fn touch(&self, key: &str, id: u64) {
        let now = unix_ms(self.now());
        let mut t = self.inner.touched.lock().unwrap_or_else(|e| e.into_inner());
        t.insert((key.to_string(), id), now);
    }

    /// Writes pending last-use times to the index.
    pub async fn flush_touched(&self) -> Result<(), StoreError> {
        let batch: Vec<(String, u64, u64)> = {
            let mut t = self.inner.touched.lock().unwrap_or_else(|e| e.into_inner());
            t.drain().map(|((k, id), at)| (k, id, at)).collect()
        };
        let index = self.inner.index.clone();
        blocking(move || index.touch(&batch)).await
    }

    /// Streams `range` of a stored body.
    pub fn body(
        &self,
        entry: &Entry,
        range: Range<u64>,
    ) -> BoxStream<'static, Result<Bytes, StoreError>> {
        let i = &self.inner;
        let range = range.start.min(entry.len)..range.end.min(entry.len);
        if range.is_empty() {
            return futures_util::stream::empty().boxed();
        }
        if i.memory.fits(entry.len) {
            if let Some(b) = i.memory.get(&entry.hash) {
                let part = b.slice(range.start as usize..range.end as usize);
                return futures_util::stream::once(async move { Ok(part) }).boxed();
            }
            let this = self.clone();
            let (hash, len) = (entry.hash, entry.len);
            return futures_util::stream::once(async move {
                let b = this.inner.bodies.read_all(&hash).await?;
                if b.len() as u64 != len {
                    return Err(StoreError::Body(format!(
                        "body {} has {} bytes, expected {len}",
                        Bytes::len(&b),
                        len
                    )));
                }
                this.inner.memory.insert(hash, b.clone());
                Ok(b.slice(range.start as usize..range.end as usize))
            })
            .boxed();
        }
        i.bodies.read_range(&entry.hash, range)
    }

    /// Streams `range` of a complete body by its hash (shared files have no entry).
    pub fn body_by_hash(
        &self,
        hash: &[u8; 32],
        range: Range<u64>,
    ) -> BoxStream<'static, Result<Bytes, StoreError>> {
        self.inner.bodies.read_range(hash, range)
    }

    /// Streams `range` of a partially stored body (fetched ranges only) through the
    /// body store, which knows which ranges it holds.
    pub fn partial_body(
        &self,
        hash: &[u8; 32],
        range: Range<u64>,
    ) -> BoxStream<'static, Result<Bytes, StoreError>> {
        self.inner.bodies.read_range_via_store(hash, range).boxed()
    }

    /// Becomes the leader of a fill for `key`, or follows the one under way.
    pub fn join_fill(&self, key: &str) -> Join {
        self.inner.fills.join(key)
    }

    /// Keys being filled now whose response will be shareable.
    pub fn shareable_fills(&self) -> Vec<String> {
        self.inner.fills.shareable_keys()
    }

    /// The fill under way for `key`, if any.
    pub fn fill_in_progress(&self, key: &str) -> Option<Arc<Fill>> {
        self.inner.fills.get(key)
    }

    /// Starts filling: the body goes to the spool as it arrives and is committed when
    /// complete. Read it with [`Fill::read`].
    pub fn start_fill<S, E>(
        &self,
        leader: Leader,
        head: Head,
        pending: Pending,
        body: S,
    ) -> Arc<Fill>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let expected = head.len;
        let in_memory = expected.is_some_and(|n| n <= self.inner.opts.memory_object_max);
        let fill = leader.start(head, in_memory);
        let this = self.clone();
        let f = fill.clone();
        tokio::spawn(async move {
            this.run_fill(f, pending, body, expected).await;
        });
        fill
    }

    /// True when any variant of `key` is stored (to tell a vary-miss from a miss).
    pub fn lookup_any(&self, key: &str) -> bool {
        self.row(key).map(|l| !l.is_empty()).unwrap_or(false)
    }

    async fn run_fill<S, E>(
        &self,
        fill: Arc<Fill>,
        pending: Pending,
        body: S,
        expected: Option<u64>,
    ) where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let opts = &self.inner.opts;
        let mut written = 0u64;
        let mut spool_hash: Option<[u8; 32]> = None;
        let mut check =
            (!pending.certified.is_empty()).then(|| crate::certify::Check::all(&pending.certified));
        let hold_back = if check.is_some() {
            crate::certify::HOLD_BACK
        } else {
            0
        };
        let result: Result<(), String> = async {
            let mut body = std::pin::pin!(body);
            if fill.in_memory() {
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|e| format!("origin body: {e}"))?;
                    if expected.is_some_and(|n| written + chunk.len() as u64 > n) {
                        return Err("origin sent more than its Content-Length".into());
                    }
                    written += chunk.len() as u64;
                    if let Some(c) = &mut check {
                        c.update(&chunk);
                    }
                    fill.push_memory(chunk);
                    fill.publish(written.saturating_sub(hold_back), None);
                }
            } else {
                // The spool's BLAKE3 hash is computed as it is written (by the writer,
                // off the async workers): it names the file the store adopts (adopt.rs).
                let mut file = Some((
                    std::fs::File::create(&fill.spool).map_err(|e| self.spool_error(e))?,
                    Box::new(blake3::Hasher::new()),
                ));
                // Each chunk is published as it arrives (readers take it from the fill's
                // window in memory); the spool file is written in batches, off their path.
                let mut pending: Vec<Bytes> = Vec::new();
                let mut pending_len = 0u64;
                let mut received = 0u64;
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|e| format!("origin body: {e}"))?;
                    if expected.is_some_and(|n| received + chunk.len() as u64 > n) {
                        return Err("origin sent more than its Content-Length".into());
                    }
                    received += chunk.len() as u64;
                    pending_len += chunk.len() as u64;
                    if let Some(c) = &mut check {
                        c.update(&chunk);
                    }
                    fill.push_recent(chunk.clone());
                    pending.push(chunk);
                    fill.publish(received.saturating_sub(hold_back), None);
                    if pending_len >= SPOOL_BATCH {
                        written = self.flush_spool(&fill, &mut file, &mut pending, written).await?;
                        pending_len = 0;
                        // Every client left before the end: stop a large download nobody
                        // wants. (Not once every byte has arrived: a client that read it all
                        // from the window has not left, and only the spool write remains.)
                        if fill.readers() == 0
                            && (fill.ever_read() || written > 1 << 20)
                            && expected.unwrap_or(written) > opts.background_fill_max
                            && expected.is_none_or(|n| received < n)
                        {
                            return Err("every client left and the object is too large to finish in the background".into());
                        }
                    }
                }
                written = self.flush_spool(&fill, &mut file, &mut pending, written).await?;
                spool_hash = file.map(|(_, h)| *h.finalize().as_bytes());
            }
            if expected.is_some_and(|n| n != written) {
                return Err(format!("origin closed after {written} of {} bytes", expected.unwrap_or(0)));
            }
            // The last bytes are released (below) only to a body that matched its URL.
            if let Some(c) = check.take() {
                c.finish()?;
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                fill.publish(written, Some(true));
                crate::failpoint::point("spool-complete");
                if written > opts.max_object_size {
                    tracing::debug!(key = %fill.key, written, "not stored: larger than max_object_size");
                } else if !self.pass_through() {
                    if let Err(e) = self.commit(&fill, pending, written, spool_hash).await {
                        if e.is_disk_full() {
                            self.note_disk_full(&e);
                        } else {
                            tracing::warn!(key = %fill.key, "not stored: {e}");
                        }
                    }
                }
            }
            Err(e) => {
                fill.publish(written.saturating_sub(hold_back), Some(false));
                tracing::info!(key = %fill.key, written, "fill aborted: {e}");
            }
        }
        self.inner.fills.remove(&fill);
    }

    /// Writes a batch to the spool (one blocking call, no copy) and tells the fill, whose
    /// in-memory window may then let go of it; returns the new written count.
    async fn flush_spool(
        &self,
        fill: &Fill,
        file: &mut Option<(std::fs::File, Box<blake3::Hasher>)>,
        pending: &mut Vec<Bytes>,
        written: u64,
    ) -> Result<u64, String> {
        if pending.is_empty() {
            return Ok(written);
        }
        let batch = std::mem::take(pending);
        let n = written + batch.iter().map(|c| c.len() as u64).sum::<u64>();
        let Some((mut f, mut hasher)) = file.take() else {
            return Err("spool file closed after an error".into());
        };
        let (f, result) = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let r = batch.iter().try_for_each(|c| {
                hasher.update(c);
                f.write_all(c)
            });
            ((f, hasher), r)
        })
        .await
        .map_err(|e| format!("spool writer: {e}"))?;
        result.map_err(|e| self.spool_error(e))?;
        *file = Some(f);
        fill.spooled(n);
        Ok(n)
    }

    fn spool_error(&self, e: std::io::Error) -> String {
        let err = StoreError::Io(self.inner.spool_dir.clone(), e);
        if err.is_disk_full() {
            self.note_disk_full(&err);
        }
        err.to_string()
    }

    /// Imports the complete body and commits its entry; `spool_hash` is the spool file's
    /// BLAKE3 hash (a spooled body is adopted, not copied: `adopt.rs`).
    async fn commit(
        &self,
        fill: &Fill,
        pending: Pending,
        len: u64,
        spool_hash: Option<[u8; 32]>,
    ) -> Result<(), StoreError> {
        let i = &self.inner;
        let head = match fill.head_now() {
            Some(h) => h,
            None => return Ok(()),
        };
        let memory = fill.memory_body();
        let imported = match &memory {
            Some(bytes) => i.bodies.import_bytes(bytes.clone()).await?,
            None => match spool_hash {
                Some(hash) => i.bodies.adopt(&fill.spool, hash, len).await?,
                None => i.bodies.import(&fill.spool).await?,
            },
        };
        if imported.size != len {
            return Err(StoreError::Body(format!(
                "imported {} bytes, expected {len}",
                imported.size
            )));
        }
        crate::failpoint::point(if pending.from_peer.is_some() {
            "peer-body-imported"
        } else {
            "body-imported"
        });
        if let Some((_, hash)) = &pending.from_peer {
            if *hash != imported.hash {
                return Err(StoreError::Body(
                    "the body from a peer does not have the attested hash".into(),
                ));
            }
        }
        let now = unix_ms(self.now());
        let mut entry = Entry {
            id: 0,
            variant: head.variant.clone(),
            vary: head.vary.clone(),
            policy: pending.policy,
            status: head.status.as_u16(),
            headers: Entry::headers_from_map(&head.headers),
            hash: imported.hash,
            len,
            stored_at_ms: now,
            fresh_until_ms: unix_ms(pending.fresh_until),
            last_used_ms: now,
            shareable: pending.shareable,
            attestation: pending.from_peer.map(|(a, _)| a),
            head_map: Default::default(),
        };
        if entry.shareable && entry.attestation.is_none() {
            if let Some(a) = i.attester.get() {
                entry.attestation = a.attest(&fill.key, &entry, pending.fetched_at);
            }
        }
        let imported_hash = imported.hash;
        // `imported` keeps the body safe from garbage collection until it is tagged.
        let result = self.insert_pinned(&fill.key, entry).await;
        drop(imported);
        result?;
        if let Some(bytes) = memory {
            i.memory.insert(imported_hash, bytes);
        }
        Ok(())
    }

    async fn release(&self, released: Released) {
        for h in released {
            self.inner.memory.remove(&h);
            if let Err(e) = self.inner.bodies.release(&h).await {
                tracing::warn!("release body: {e}");
            }
        }
    }

    /// Replaces a stored entry's policy and headers after a 304 (RFC 9111 4.3.4).
    pub async fn freshen(
        &self,
        key: &str,
        id: u64,
        policy: CachePolicy,
        headers: HeaderMap,
        fresh_until: SystemTime,
    ) -> Result<(), StoreError> {
        let index = self.inner.index.clone();
        let k = key.to_string();
        let headers = Entry::headers_from_map(&headers);
        let fresh = unix_ms(fresh_until);
        let attester = self.inner.attester.get().cloned();
        let now = self.now();
        let key_for_attest = k.clone();
        let result = blocking(move || {
            index.update(&k, id, move |e| {
                e.policy = policy;
                e.set_headers(headers);
                e.fresh_until_ms = fresh;
                // The 304 came from the origin to this device: it vouches for the new
                // headers (same body) from now on.
                if e.shareable {
                    if let Some(a) = attester {
                        e.attestation = a.attest(&key_for_attest, e, now);
                    }
                }
                crate::failpoint::point("refresh-midway");
            })
        })
        .await;
        self.forget(key);
        result.map(|_| ())
    }

    /// The partial object of `key`, if one is held.
    pub fn partial(&self, key: &str) -> Option<Arc<crate::partial::Partial>> {
        self.inner.partials.get(key)
    }

    /// Starts a partial object (see [`crate::partial`]); `None` in pass-through (disk
    /// full) or when it could not be created (logged).
    pub fn begin_partial(
        &self,
        meta: crate::partial::Meta,
    ) -> Option<Arc<crate::partial::Partial>> {
        if self.pass_through() || meta.total > self.inner.opts.max_object_size {
            return None;
        }
        match self.inner.partials.begin(meta) {
            Ok(p) => Some(p),
            Err(e) => {
                if e.is_disk_full() {
                    self.note_disk_full(&e);
                } else {
                    tracing::warn!("partial object not started: {e}");
                }
                None
            }
        }
    }

    /// Marks a task writing into a partial object: [`Cache::shutdown`] waits for it.
    pub fn partial_task(&self) -> crate::partial::BusyGuard {
        self.inner.partials.task()
    }

    /// Drops `p` if it is still its key's partial object.
    pub fn drop_partial(&self, p: &Arc<crate::partial::Partial>) {
        self.inner.partials.remove_this(p);
    }

    /// Number of partial objects and the bytes they hold.
    pub fn partial_stats(&self) -> (u64, u64) {
        self.inner.partials.stats()
    }

    /// Turns a partial object that holds every byte into a complete entry (a 200 with
    /// the representation's headers), which replaces it. The body is imported into the
    /// body store (its BLAKE3 hash is computed then) before the entry is committed, as
    /// for any fill.
    pub async fn complete_partial(
        &self,
        p: &Arc<crate::partial::Partial>,
    ) -> Result<Entry, StoreError> {
        let i = &self.inner;
        let meta = p.meta();
        if !meta.complete() {
            return Err(StoreError::Body(
                "the partial object is not complete".into(),
            ));
        }
        let imported = i.bodies.import(p.body_path()).await?;
        if imported.size != meta.total {
            return Err(StoreError::Body(format!(
                "imported {} bytes, expected {}",
                imported.size, meta.total
            )));
        }
        let now = unix_ms(self.now());
        let mut entry = Entry {
            id: 0,
            variant: meta.variant.clone(),
            vary: meta.vary.clone(),
            policy: meta.policy.clone(),
            status: 200,
            headers: meta.headers.clone(),
            hash: imported.hash,
            len: meta.total,
            stored_at_ms: now,
            fresh_until_ms: meta.fresh_until_ms,
            last_used_ms: now,
            shareable: meta.shareable,
            attestation: None,
            head_map: Default::default(),
        };
        if entry.shareable {
            if let Some(a) = i.attester.get() {
                let fetched = SystemTime::UNIX_EPOCH + Duration::from_millis(meta.fetched_at_ms);
                entry.attestation = a.attest(&meta.key, &entry, fetched);
            }
        }
        // The commit drops the partial object of the key (see `commit_group`).
        let result = self.insert_pinned(&meta.key, entry).await;
        drop(imported);
        result
    }

    /// Removes every stored variant of a URL key. Returns how many were removed.
    pub async fn invalidate(&self, key: &str) -> Result<usize, StoreError> {
        let _w = self.inner.write_lock.lock().await;
        let index = self.inner.index.clone();
        let k = key.to_string();
        let result = blocking(move || index.remove(&k, None)).await;
        self.forget(key);
        self.inner.partials.remove(key);
        let (released, n) = result?;
        self.release(released).await;
        Ok(n)
    }

    /// Removes everything.
    pub async fn clear(&self) -> Result<usize, StoreError> {
        self.inner.partials.clear();
        let index = self.inner.index.clone();
        let keys: Vec<String> = blocking(move || index.all())
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut n = 0;
        for k in keys {
            n += self.invalidate(&k).await?;
        }
        Ok(n)
    }

    /// Every stored entry with its URL key.
    pub async fn list(&self) -> Result<Vec<(String, Entry)>, StoreError> {
        let index = self.inner.index.clone();
        blocking(move || index.all()).await
    }

    pub async fn stats(&self) -> Result<Stats, StoreError> {
        let index = self.inner.index.clone();
        let ((urls, variants), bytes) =
            blocking(move || Ok((index.counts()?, index.total_bytes()?))).await?;
        let (partial_objects, partial_bytes) = self.inner.partials.stats();
        Ok(Stats {
            urls,
            variants,
            bytes,
            max_bytes: self.inner.opts.max_size,
            fills_in_progress: self.inner.fills.in_progress(),
            evictions: self.inner.evictions.load(Ordering::Relaxed),
            pass_through: self.pass_through(),
            partial_objects,
            partial_bytes,
        })
    }

    fn maybe_evict(&self) {
        let i = &self.inner;
        let over = i
            .index
            .total_bytes()
            .map(|t| t > i.opts.max_size)
            .unwrap_or(false);
        if !over || i.evicting.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.evict().await {
                tracing::warn!("eviction: {e}");
            }
            this.inner.evicting.store(false, Ordering::Release);
        });
    }

    /// Evicts least recently used entries until the store is at 90 % of `max_size`.
    pub async fn evict(&self) -> Result<u64, StoreError> {
        let i = &self.inner;
        self.flush_touched().await?;
        let target = i.opts.max_size / 10 * 9;
        let mut all = self.list().await?;
        all.sort_by_key(|(_, e)| e.last_used_ms);
        let mut evicted = 0;
        for (key, e) in all {
            if i.index.total_bytes()? <= target {
                break;
            }
            let _w = i.write_lock.lock().await;
            let index = i.index.clone();
            let k = key.clone();
            let result = blocking(move || index.remove(&k, Some(e.id))).await;
            self.forget(&key);
            let (released, n) = result?;
            crate::failpoint::point("eviction-midway");
            self.release(released).await;
            evicted += n as u64;
        }
        i.evictions.fetch_add(evicted, Ordering::Relaxed);
        if evicted > 0 {
            tracing::info!(evicted, "evicted least recently used entries");
        }
        Ok(evicted)
    }

    /// Waits (up to 30 s) for fills under way to finish and commit, flushes pending
    /// state and closes the body store. Await before reopening.
    pub async fn shutdown(&self) {
        if tokio::time::timeout(Duration::from_secs(30), self.inner.fills.idle())
            .await
            .is_err()
        {
            tracing::warn!("shutdown: fills still under way after 30 s are abandoned");
        }
        if tokio::time::timeout(Duration::from_secs(30), self.inner.partials.idle())
            .await
            .is_err()
        {
            tracing::warn!(
                "shutdown: partial objects still being written after 30 s are abandoned"
            );
        }
        if let Err(e) = self.flush_touched().await {
            tracing::warn!("flush last-use times: {e}");
        }
        self.inner.bodies.shutdown().await;
    }
}

/// Locks a std mutex, taking it over from a thread that panicked while holding it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
