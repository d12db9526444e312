//! Partial objects: byte ranges of a representation held without the whole of it — a
//! player that seeks far into a video, or reads its last bytes first, stores what it got
//! (RFC 9111 3.3: a cache MAY store a 206), later ranges inside what is held are served
//! from it, holes are filled with ranges from the origin, and once every byte has arrived
//! the object becomes one complete entry like any other.
//!
//! Why not the body store: iroh-blobs keeps verified partial blobs, but only of a blob
//! whose BLAKE3 hash is known in advance (a peer's attested copy). Bytes from an origin
//! come without one; their hash is known only when the last byte is in. So a partial
//! object lives in `partial/` of the data directory: `<n>.body`, a sparse file written at
//! the offsets the bytes belong to, and `<n>.meta`, what is held and the response head.
//!
//! Durability order: bytes are written, the body file is synced, and only then is the
//! range added to the meta file (written to a temporary file, synced, renamed over the
//! old one). A crash leaves a meta file that lists only bytes on disk; bytes written after
//! it are never read. At start, meta files that do not parse, body files without a meta
//! file and temporary files are deleted.
//!
//! Combining (RFC 9111 3.4): bytes are added to a partial object only from responses with
//! the same complete length and the same validators (strong `ETag`, else `Last-Modified`);
//! the proxy asks for holes with `If-Range`, so a changed representation answers 200 and
//! the partial object is dropped. A partial object without validators is combined only
//! while it is fresh. Partial objects are never offered to peers: only a complete entry
//! carries an attestation.

use std::collections::HashMap;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use http::{header, HeaderMap};
use http_cache_semantics::CachePolicy;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// What is known of a partial object, as its meta file keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// The URL key ([`crate::key::primary_key`]).
    pub key: String,
    /// [`crate::key::variant_key`] of the request that started it, and the `Vary` names.
    pub variant: String,
    pub vary: Vec<String>,
    /// The freshness of the representation (built from the 206 as if it were its 200).
    pub policy: CachePolicy,
    /// The representation's headers: the 206's, without `Content-Range`, with the complete
    /// `Content-Length`.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The complete length (`Content-Range: bytes a-b/total`).
    pub total: u64,
    /// Byte ranges held, sorted, disjoint and not touching.
    pub held: Vec<(u64, u64)>,
    pub fresh_until_ms: u64,
    pub fetched_at_ms: u64,
    pub last_used_ms: u64,
    /// Whether the complete entry may be shared with peers (as a 200 from the origin
    /// would be) — and the object has a strong validator.
    pub shareable: bool,
}

impl Meta {
    /// The representation headers as a map.
    pub fn header_map(&self) -> HeaderMap {
        crate::entry::Entry::map_of(&self.headers)
    }

    /// The validator two responses must share to be combined: a strong `ETag`, else
    /// `Last-Modified`; `None` when the response has neither.
    pub fn validator(&self) -> Option<String> {
        validator_of(&self.header_map())
    }

    /// The parts of `r` not held.
    pub fn missing(&self, r: Range<u64>) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let mut pos = r.start;
        for &(a, b) in &self.held {
            if b <= pos {
                continue;
            }
            if a >= r.end {
                break;
            }
            if a > pos {
                out.push(pos..a.min(r.end));
            }
            pos = pos.max(b);
            if pos >= r.end {
                break;
            }
        }
        if pos < r.end {
            out.push(pos..r.end);
        }
        out
    }

    /// Bytes held.
    pub fn held_bytes(&self) -> u64 {
        self.held.iter().map(|(a, b)| b - a).sum()
    }

    pub fn complete(&self) -> bool {
        self.held.len() == 1 && self.held[0] == (0, self.total)
    }

    fn add(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        let mut all = std::mem::take(&mut self.held);
        all.push((r.start, r.end.min(self.total)));
        all.sort_unstable();
        for (a, b) in all {
            match self.held.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => self.held.push((a, b)),
            }
        }
    }
}

/// The validator of a response head for combining: a strong `ETag`, else `Last-Modified`.
pub fn validator_of(h: &HeaderMap) -> Option<String> {
    if let Some(e) = h.get(header::ETAG).and_then(|v| v.to_str().ok()) {
        let e = e.trim();
        // A weak ETag cannot combine ranges (RFC 9110 8.8.3.2).
        return (!e.starts_with("W/")).then(|| e.to_string());
    }
    h.get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .map(|v| format!("lm:{}", v.trim()))
}

/// A `Content-Range: bytes a-b/total` value: the range and the complete length; `None`
/// for an unknown length (`*`) or anything malformed.
pub fn content_range(h: &HeaderMap) -> Option<(Range<u64>, u64)> {
    let v = h.get(header::CONTENT_RANGE)?.to_str().ok()?.trim();
    let rest = v.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b, total): (u64, u64, u64) = (
        a.trim().parse().ok()?,
        b.trim().parse().ok()?,
        total.trim().parse().ok()?,
    );
    (a <= b && b < total).then_some((a..b + 1, total))
}

/// One partial object. Its bytes are read with [`Partial::read`] (held ranges only) and
/// added by whoever holds [`Partial::writer`].
pub struct Partial {
    path: PathBuf,
    meta_path: PathBuf,
    meta: Mutex<Meta>,
    writer: Arc<tokio::sync::Mutex<()>>,
    /// One meta file write at a time.
    persisting: tokio::sync::Mutex<()>,
    removed: AtomicBool,
}

/// The right to add bytes to a partial object (one writer at a time; others go around).
pub type Writer = tokio::sync::OwnedMutexGuard<()>;

impl Partial {
    pub fn meta(&self) -> Meta {
        lock(&self.meta).clone()
    }

    pub fn key(&self) -> String {
        lock(&self.meta).key.clone()
    }

    /// Takes the right to add bytes, if no one else has it now.
    pub fn try_writer(&self) -> Option<Writer> {
        self.writer.clone().try_lock_owned().ok()
    }

    /// Whether every byte of `r` is held.
    pub fn holds(&self, r: Range<u64>) -> bool {
        lock(&self.meta).missing(r).is_empty()
    }

    /// Writes `bytes` at `offset` (not yet held: see [`Partial::commit`]).
    pub async fn write_at(&self, offset: u64, bytes: Vec<Bytes>) -> Result<(), StoreError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| StoreError::Io(path.clone(), e))?;
            let mut at = offset;
            for b in &bytes {
                f.write_all_at(b, at)
                    .map_err(|e| StoreError::Io(path.clone(), e))?;
                at += b.len() as u64;
            }
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Body(format!("partial writer: {e}")))?
    }

    /// Marks bytes `r` (written with [`Partial::write_at`]) as held: readers may take
    /// them from now on (the page cache has them); they are durable after the next
    /// [`Partial::persist`].
    pub fn mark(&self, r: Range<u64>) {
        lock(&self.meta).add(r);
    }

    /// Makes what is held durable, with `headers` as the new representation headers when
    /// given: the body file is synced before the meta file that lists the bytes replaces
    /// the old one, so a crash never leaves a meta file naming bytes that are not on disk.
    pub async fn persist(&self, headers: Option<HeaderMap>) -> Result<(), StoreError> {
        let _one = self.persisting.lock().await;
        if self.removed.load(Ordering::Acquire) {
            return Ok(());
        }
        let meta = {
            let mut m = lock(&self.meta);
            if let Some(h) = headers {
                m.headers = crate::entry::Entry::headers_from_map(&h);
            }
            m.clone()
        };
        let (path, meta_path) = (self.path.clone(), self.meta_path.clone());
        tokio::task::spawn_blocking(move || {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_data())
                .map_err(|e| StoreError::Io(path.clone(), e))?;
            write_meta(&meta_path, &meta)
        })
        .await
        .map_err(|e| StoreError::Body(format!("partial writer: {e}")))?
    }

    /// Streams `r`, which must be held. The file is opened now, so a reader keeps its bytes
    /// even if the object is completed (and its file deleted) while it reads.
    pub fn read(&self, r: Range<u64>) -> BoxStream<'static, Result<Bytes, StoreError>> {
        let fail = |e: StoreError| futures_util::stream::once(async move { Err(e) }).boxed();
        if !self.holds(r.clone()) {
            let msg = format!(
                "bytes {}-{} of a partial object are not held",
                r.start, r.end
            );
            return fail(StoreError::Body(msg));
        }
        if r.is_empty() {
            return futures_util::stream::empty().boxed();
        }
        match std::fs::File::open(&self.path) {
            Ok(f) => read_file(self.path.clone(), Arc::new(f), r),
            Err(e) => fail(StoreError::Io(self.path.clone(), e)),
        }
    }

    pub fn touch(&self, now_ms: u64) {
        lock(&self.meta).last_used_ms = now_ms;
    }

    pub(crate) fn body_path(&self) -> &Path {
        &self.path
    }
}

/// Reads `r` of a file in chunks, off the async workers.
fn read_file(
    path: PathBuf,
    file: Arc<std::fs::File>,
    r: Range<u64>,
) -> BoxStream<'static, Result<Bytes, StoreError>> {
    const CHUNK: u64 = 256 * 1024;
    // One chunk is read ahead while the one before it is sent (the reads are blocking
    // calls off the async workers); an error ends the stream.
    let starts = (r.start..r.end).step_by(CHUNK as usize);
    futures_util::stream::iter(starts)
        .map(move |pos| {
            let (path, file) = (path.clone(), file.clone());
            let n = CHUNK.min(r.end - pos);
            tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; n as usize];
                file.read_exact_at(&mut buf, pos)
                    .map_err(|e| StoreError::Io(path.clone(), e))?;
                Ok(Bytes::from(buf))
            })
        })
        .buffered(2)
        .map(|joined| {
            joined.unwrap_or_else(|e| Err(StoreError::Body(format!("partial reader: {e}"))))
        })
        .scan(false, |failed, item| {
            let out = (!*failed).then_some(item);
            if let Some(Err(_)) = &out {
                *failed = true;
            }
            futures_util::future::ready(out.map(Some))
        })
        .filter_map(futures_util::future::ready)
        .boxed()
}

fn write_meta(path: &Path, meta: &Meta) -> Result<(), StoreError> {
    use std::io::Write;
    let tmp = path.with_extension("meta.tmp");
    let bytes =
        postcard::to_stdvec(meta).map_err(|e| StoreError::Body(format!("partial meta: {e}")))?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| StoreError::Io(tmp.clone(), e))?;
    f.write_all(&bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| StoreError::Io(tmp.clone(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| StoreError::Io(path.to_owned(), e))
}

/// Tasks writing into partial objects, so shutdown can wait for them.
#[derive(Default)]
struct Busy {
    n: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One task writing into a partial object; dropped when it is done.
pub struct BusyGuard(Arc<Busy>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Every partial object of the cache, by URL key (one per URL: a new one replaces an
/// older one that cannot be combined with it).
pub struct Partials {
    dir: PathBuf,
    /// Most bytes held by all partial objects together; the least recently used go first.
    budget: u64,
    map: Mutex<HashMap<String, Arc<Partial>>>,
    next: AtomicU64,
    busy: Arc<Busy>,
}

impl Partials {
    /// Opens `dir`, keeping every partial object whose meta file parses and whose body
    /// file is there (see the module's durability order), deleting the rest.
    pub fn open(dir: PathBuf, budget: u64) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::Io(dir.clone(), e))?;
        let mut map = HashMap::new();
        let mut next = 0u64;
        let mut keep = std::collections::HashSet::new();
        let entries = std::fs::read_dir(&dir).map_err(|e| StoreError::Io(dir.clone(), e))?;
        let names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        for path in names
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "meta"))
        {
            let body = path.with_extension("body");
            let meta: Option<Meta> = std::fs::read(path)
                .ok()
                .and_then(|b| postcard::from_bytes(&b).ok());
            let body_len = std::fs::metadata(&body).map(|m| m.len()).ok();
            match (meta, body_len) {
                (Some(meta), Some(_)) if meta.held.last().is_none_or(|l| l.1 <= meta.total) => {
                    if let Some(n) = path
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .and_then(|s| s.parse::<u64>().ok())
                    {
                        next = next.max(n + 1);
                    }
                    keep.insert(path.clone());
                    keep.insert(body.clone());
                    let p = Arc::new(Partial {
                        path: body,
                        meta_path: path.clone(),
                        meta: Mutex::new(meta.clone()),
                        writer: Arc::new(tokio::sync::Mutex::new(())),
                        persisting: tokio::sync::Mutex::new(()),
                        removed: AtomicBool::new(false),
                    });
                    if let Some(old) = map.insert(meta.key.clone(), p) {
                        let _ = std::fs::remove_file(&old.path);
                        let _ = std::fs::remove_file(&old.meta_path);
                    }
                }
                _ => {
                    tracing::warn!(path = %path.display(), "dropped a partial object that did not load")
                }
            }
        }
        for p in &names {
            if !keep.contains(p) {
                let _ = std::fs::remove_file(p);
            }
        }
        Ok(Self {
            dir,
            budget,
            map: Mutex::new(map),
            next: AtomicU64::new(next),
            busy: Arc::default(),
        })
    }

    /// The keys of every partial object.
    pub fn keys(&self) -> Vec<String> {
        lock(&self.map).keys().cloned().collect()
    }

    /// Marks a task writing into a partial object until the guard is dropped.
    pub fn task(&self) -> BusyGuard {
        self.busy.n.fetch_add(1, Ordering::AcqRel);
        BusyGuard(self.busy.clone())
    }

    /// Waits until no task writes into a partial object.
    pub async fn idle(&self) {
        loop {
            let notified = self.busy.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.busy.n.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<Partial>> {
        lock(&self.map).get(key).cloned()
    }

    /// Starts a partial object (replacing any other one of the key), with nothing held yet.
    pub fn begin(&self, meta: Meta) -> Result<Arc<Partial>, StoreError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{n}.body"));
        let meta_path = self.dir.join(format!("{n}.meta"));
        let f = std::fs::File::create(&path).map_err(|e| StoreError::Io(path.clone(), e))?;
        // Sparse: the length is known, the bytes arrive at their offsets.
        f.set_len(meta.total)
            .map_err(|e| StoreError::Io(path.clone(), e))?;
        let mut meta = meta;
        meta.held.clear();
        write_meta(&meta_path, &meta)?;
        let key = meta.key.clone();
        let p = Arc::new(Partial {
            path,
            meta_path,
            meta: Mutex::new(meta),
            writer: Arc::new(tokio::sync::Mutex::new(())),
            persisting: tokio::sync::Mutex::new(()),
            removed: AtomicBool::new(false),
        });
        if let Some(old) = lock(&self.map).insert(key.clone(), p.clone()) {
            remove_files(&old);
        }
        self.trim(&key);
        Ok(p)
    }

    /// Drops the partial object of `key` (a complete entry replaced it, the representation
    /// changed, or the URL was invalidated).
    pub fn remove(&self, key: &str) {
        if let Some(p) = lock(&self.map).remove(key) {
            remove_files(&p);
        }
    }

    /// Drops `p` if it is still the partial object of its key.
    pub fn remove_this(&self, p: &Arc<Partial>) {
        let key = p.key();
        let mut map = lock(&self.map);
        if map.get(&key).is_some_and(|q| Arc::ptr_eq(q, p)) {
            map.remove(&key);
            drop(map);
            remove_files(p);
        }
    }

    pub fn clear(&self) {
        let all: Vec<Arc<Partial>> = lock(&self.map).drain().map(|(_, p)| p).collect();
        for p in all {
            remove_files(&p);
        }
    }

    /// Number of partial objects and the bytes they hold.
    pub fn stats(&self) -> (u64, u64) {
        let map = lock(&self.map);
        let bytes = map.values().map(|p| lock(&p.meta).held_bytes()).sum();
        (map.len() as u64, bytes)
    }

    /// Keeps the bytes all partial objects hold within the budget, dropping the least
    /// recently used first; `keep` (the object just begun) is spared. Run when an object
    /// begins: one that grows past the budget alone goes at the next.
    fn trim(&self, keep: &str) {
        let mut victims = Vec::new();
        {
            let map = lock(&self.map);
            let mut all: Vec<(u64, u64, String)> = map
                .iter()
                .map(|(k, p)| {
                    let m = lock(&p.meta);
                    (m.last_used_ms, m.held_bytes(), k.clone())
                })
                .collect();
            let mut total: u64 = all.iter().map(|a| a.1).sum();
            all.sort();
            for (_, size, k) in all {
                if total <= self.budget {
                    break;
                }
                if k != keep {
                    total -= size;
                    victims.push(k);
                }
            }
        }
        for k in victims {
            tracing::debug!(key = %k, "partial object dropped to stay within its budget");
            self.remove(&k);
        }
    }
}

fn remove_files(p: &Partial) {
    p.removed.store(true, Ordering::Release);
    let _ = std::fs::remove_file(&p.meta_path);
    let _ = std::fs::remove_file(&p.path);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(total: u64, held: &[(u64, u64)]) -> Meta {
        let req = http::Request::get("http://a/x").body(()).unwrap();
        let res = http::Response::builder()
            .header("cache-control", "max-age=60")
            .body(())
            .unwrap();
        Meta {
            key: "http://a/x".into(),
            variant: String::new(),
            vary: vec![],
            policy: CachePolicy::new(&req, &res),
            headers: vec![],
            total,
            held: held.to_vec(),
            fresh_until_ms: 0,
            fetched_at_ms: 0,
            last_used_ms: 0,
            shareable: false,
        }
    }

    #[test]
    fn missing_lists_the_holes_of_a_range() {
        let m = meta(100, &[(10, 20), (50, 60)]);
        assert_eq!(m.missing(0..100), vec![0..10, 20..50, 60..100]);
        assert_eq!(m.missing(12..18), Vec::<Range<u64>>::new());
        assert_eq!(m.missing(15..55), vec![20..50]);
        assert_eq!(m.missing(60..70), vec![60..70]);
    }

    #[test]
    fn added_ranges_merge_and_make_the_object_complete() {
        let mut m = meta(100, &[]);
        m.add(50..100);
        m.add(10..20);
        assert_eq!(m.held, vec![(10, 20), (50, 100)]);
        m.add(20..50);
        assert_eq!(m.held, vec![(10, 100)]);
        assert!(!m.complete());
        m.add(0..10);
        assert!(m.complete());
    }

    #[test]
    fn content_range_needs_a_known_length_and_a_sane_range() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_RANGE, "bytes 5-9/10".parse().unwrap());
        assert_eq!(content_range(&h), Some((5..10, 10)));
        for bad in [
            "bytes 5-9/*",
            "bytes 9-5/10",
            "bytes 5-10/10",
            "items 1-2/3",
            "bytes 5-9",
        ] {
            h.insert(header::CONTENT_RANGE, bad.parse().unwrap());
            assert_eq!(content_range(&h), None, "{bad}");
        }
    }

    #[test]
    fn only_strong_validators_combine() {
        let mut h = HeaderMap::new();
        assert_eq!(validator_of(&h), None);
        h.insert(
            header::LAST_MODIFIED,
            "Tue, 01 Jan 2030 00:00:00 GMT".parse().unwrap(),
        );
        assert!(validator_of(&h).is_some());
        h.insert(header::ETAG, "W/\"a\"".parse().unwrap());
        assert_eq!(validator_of(&h), None);
        h.insert(header::ETAG, "\"a\"".parse().unwrap());
        assert_eq!(validator_of(&h).as_deref(), Some("\"a\""));
    }

    #[tokio::test]
    async fn held_bytes_survive_a_reopen_and_unheld_ones_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let parts = Partials::open(dir.path().join("partial"), 1 << 20).unwrap();
        let p = parts.begin(meta(10, &[])).unwrap();
        p.write_at(5, vec![Bytes::from_static(b"56789")])
            .await
            .unwrap();
        p.mark(5..10);
        p.persist(None).await.unwrap();
        // Written and marked, never persisted (a crash before the meta file was replaced).
        p.write_at(0, vec![Bytes::from_static(b"01")])
            .await
            .unwrap();
        p.mark(0..2);
        drop(p);
        drop(parts);
        let parts = Partials::open(dir.path().join("partial"), 1 << 20).unwrap();
        let p = parts.get("http://a/x").unwrap();
        assert_eq!(p.meta().held, vec![(5, 10)]);
        let got: Vec<Bytes> = p.read(6..10).map(|b| b.unwrap()).collect().await;
        assert_eq!(got.concat(), b"6789");
        let err: Vec<_> = p.read(0..2).collect().await;
        assert!(err[0].is_err(), "bytes not held are never read");
    }

    #[tokio::test]
    async fn leftovers_are_deleted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("partial");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("7.body"), b"orphan").unwrap();
        std::fs::write(d.join("8.meta"), b"not postcard").unwrap();
        std::fs::write(d.join("9.meta.tmp"), b"half").unwrap();
        let parts = Partials::open(d.clone(), 1 << 20).unwrap();
        assert_eq!(parts.stats(), (0, 0));
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
    }

    #[test]
    fn the_least_recently_used_go_first_when_over_budget() {
        let dir = tempfile::tempdir().unwrap();
        let parts = Partials::open(dir.path().join("partial"), 150).unwrap();
        let mut a = meta(100, &[]);
        a.key = "a".into();
        a.last_used_ms = 1;
        let pa = parts.begin(a).unwrap();
        lock(&pa.meta).held = vec![(0, 100)];
        let mut b = meta(100, &[]);
        b.key = "b".into();
        b.last_used_ms = 2;
        let pb = parts.begin(b).unwrap();
        lock(&pb.meta).held = vec![(0, 100)];
        assert!(
            parts.get("a").is_some(),
            "200 bytes held, but b has just begun"
        );
        let mut c = meta(100, &[]);
        c.key = "c".into();
        c.last_used_ms = 3;
        parts.begin(c).unwrap();
        assert!(
            parts.get("a").is_none(),
            "a, the least recently used, was dropped"
        );
        assert!(parts.get("b").is_some() && parts.get("c").is_some());
    }
}
