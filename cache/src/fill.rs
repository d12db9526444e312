//! Single-flight fills: concurrent misses for one URL make one origin request, and every
//! waiter streams the body as it arrives.
//!
//! The first request for a key becomes the leader ([`Join::Leader`]) and fetches from the
//! origin; later ones follow the same [`Fill`]. Once the leader has a storable response it
//! calls [`Leader::start`]: a task then writes the origin body to a spool file and publishes
//! how much is written. Every reader (leader included) tails the spool at its own pace, so
//! memory stays bounded whatever the object's size and however slow a reader is. The fill
//! does not belong to any client: one that disconnects does not stop it; when every reader
//! is gone, a large fill stops (see `background_fill_max`).
//!
//! The spool file is removed when the last handle to the fill is dropped, so a reader that
//! arrives just as the fill commits can still read it.
//!
//! Readers that keep up never read the spool back: the fill keeps its most recent chunks in
//! memory ([`Recent`]: what is not in the file yet, plus up to [`RECENT_KEEP`] bytes that
//! are) and publishes each chunk as it arrives, before it is written. Only a reader that
//! falls further behind reads the file, and only below the window, where everything has been
//! written. So a client streams a miss at the origin's pace, the spool write is off its path,
//! and memory stays bounded (one batch plus the window per fill).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http::{HeaderMap, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;

/// The response head of a fill, as the origin sent it (hop-by-hop fields removed).
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// Body length when the origin declared it.
    pub len: Option<u64>,
    /// `Vary` names and the leader's variant key: a follower whose own variant key differs
    /// must not use this response.
    pub vary: Vec<String>,
    pub variant: String,
    /// The policy the response will be stored under: a follower joins only if it would
    /// accept this response as a fresh hit (its own `no-cache`, `min-fresh`, … apply).
    pub policy: Option<Box<http_cache_semantics::CachePolicy>>,
    /// The stored entry will be shareable with peers (so peers may wait for this fill).
    pub shareable: bool,
}

#[derive(Debug, Clone)]
pub enum FillState {
    /// The leader is waiting for the origin's response head.
    Waiting,
    /// The leader will not fill (error, or a response that may not be shared): followers
    /// must fetch for themselves.
    Abandoned,
    Streaming {
        head: Arc<Head>,
        written: u64,
        /// `Some(true)`: the whole body is in the spool; `Some(false)`: the fill failed and
        /// readers must fail rather than end early.
        done: Option<bool>,
    },
}

/// One in-progress fill.
#[derive(Debug)]
pub struct Fill {
    pub key: String,
    pub spool: PathBuf,
    state: watch::Sender<FillState>,
    readers: AtomicUsize,
    ever_read: AtomicBool,
    /// Set for small bodies: they are kept in memory instead of a spool file (no file
    /// operations on the miss path of a small object).
    memory: std::sync::OnceLock<Mutex<Vec<Bytes>>>,
    /// The latest chunks of a spooled body (see the module docs).
    recent: Mutex<Recent>,
    /// True once the fill is over and forgotten (committed, failed or abandoned).
    finished: watch::Sender<bool>,
}

impl Drop for Fill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.spool);
    }
}

/// Bytes already in the spool file that stay in memory for readers slightly behind.
pub const RECENT_KEEP: u64 = 512 * 1024;

/// The tail of a spooled body held in memory: chunks from offset `start` on. Everything
/// below `start` is in the spool file (a chunk leaves only once written), so a reader
/// either finds its bytes here or in the file.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    start: u64,
    len: u64,
    chunks: VecDeque<Bytes>,
}

impl Recent {
    /// Drops the oldest chunks that are in the file (below `flushed`) while more than
    /// [`RECENT_KEEP`] bytes would remain.
    fn trim(&mut self, flushed: u64) {
        while let Some(c) = self.chunks.front() {
            let n = c.len() as u64;
            if self.start + n > flushed || self.len - n < RECENT_KEEP {
                break;
            }
            self.chunks.pop_front();
            self.start += n;
            self.len -= n;
        }
    }

    /// The bytes from `pos` up to `end` in one chunk, if `pos` is inside the window.
    fn slice(&self, pos: u64, end: u64) -> Option<Bytes> {
        if pos < self.start {
            return None;
        }
        slice_of(&self.chunks, self.start, pos, end)
    }
}

/// The bytes from `pos` up to `end` within one of `chunks` (the first at offset `start`).
fn slice_of<'a>(
    chunks: impl IntoIterator<Item = &'a Bytes>,
    start: u64,
    pos: u64,
    end: u64,
) -> Option<Bytes> {
    let mut off = start;
    for c in chunks {
        let next = off + c.len() as u64;
        if pos < next {
            let a = (pos - off) as usize;
            let b = (end.min(next) - off) as usize;
            return Some(c.slice(a..b));
        }
        off = next;
    }
    None
}

impl Fill {
    /// Waits for the response head; `None` when the leader abandoned the fill.
    pub async fn head(&self) -> Option<Arc<Head>> {
        let mut rx = self.state.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                FillState::Waiting => {}
                FillState::Abandoned => return None,
                FillState::Streaming { head, .. } => return Some(head.clone()),
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    }

    /// True when the fill failed or was abandoned: nothing more will come of it.
    pub fn failed(&self) -> bool {
        matches!(
            &*self.state.borrow(),
            FillState::Abandoned
                | FillState::Streaming {
                    done: Some(false),
                    ..
                }
        )
    }

    /// True when the whole body has arrived (it may still be committing).
    pub fn body_complete(&self) -> bool {
        matches!(
            &*self.state.borrow(),
            FillState::Streaming {
                done: Some(true),
                ..
            }
        )
    }

    /// Waits until the fill is over: its entry committed (or the fill failed).
    pub async fn finished(&self) {
        let mut rx = self.finished.subscribe();
        let _ = rx.wait_for(|f| *f).await;
    }

    /// The response head, if the fill is streaming.
    pub fn head_now(&self) -> Option<Arc<Head>> {
        match &*self.state.borrow() {
            FillState::Streaming { head, .. } => Some(head.clone()),
            _ => None,
        }
    }

    /// Bytes written to the spool so far.
    pub fn written(&self) -> u64 {
        match &*self.state.borrow() {
            FillState::Streaming { written, .. } => *written,
            _ => 0,
        }
    }

    pub fn readers(&self) -> usize {
        self.readers.load(Ordering::Acquire)
    }

    /// True once any reader has attached (a fill with no reader yet is not abandoned:
    /// its leader is about to read).
    pub fn ever_read(&self) -> bool {
        self.ever_read.load(Ordering::Acquire)
    }

    /// Streams bytes `range` of the body (clipped to the body's end) as they arrive.
    pub fn read(
        self: &Arc<Self>,
        range: Range<u64>,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        self.readers.fetch_add(1, Ordering::AcqRel);
        self.ever_read.store(true, Ordering::Release);
        let st = ReadState {
            guard: ReaderGuard(self.clone()),
            rx: self.state.subscribe(),
            file: None,
            file_pos: 0,
            pos: range.start,
            end: range.end,
            finished: false,
        };
        futures_util::stream::unfold(st, |mut st| async move {
            if st.finished {
                return None;
            }
            match st.next().await {
                Ok(Some(b)) => Some((Ok(b), st)),
                Ok(None) => None,
                Err(e) => {
                    st.finished = true;
                    Some((Err(e), st))
                }
            }
        })
    }

    /// True when the body is kept in memory rather than spooled.
    pub(crate) fn in_memory(&self) -> bool {
        self.memory.get().is_some()
    }

    /// Appends a chunk of an in-memory body (before publishing it).
    pub(crate) fn push_memory(&self, chunk: Bytes) {
        if let Some(m) = self.memory.get() {
            m.lock().unwrap_or_else(|e| e.into_inner()).push(chunk);
        }
    }

    /// The whole in-memory body, once complete.
    pub(crate) fn memory_body(&self) -> Option<Bytes> {
        let m = self.memory.get()?.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = BytesMut::with_capacity(m.iter().map(Bytes::len).sum());
        for c in m.iter() {
            out.extend_from_slice(c);
        }
        Some(out.freeze())
    }

    /// The in-memory bytes from `pos`, at most up to `end`: a slice of one chunk.
    fn memory_slice(&self, pos: u64, end: u64) -> Option<Bytes> {
        let m = self.memory.get()?.lock().unwrap_or_else(|e| e.into_inner());
        slice_of(m.iter(), 0, pos, end)
    }

    /// Appends a chunk of a spooled body to the in-memory window (before publishing it).
    pub(crate) fn push_recent(&self, chunk: Bytes) {
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        r.len += chunk.len() as u64;
        r.chunks.push_back(chunk);
    }

    /// Says the spool file now holds the first `flushed` bytes (the window may shrink).
    pub(crate) fn spooled(&self, flushed: u64) {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .trim(flushed);
    }

    fn recent_slice(&self, pos: u64, end: u64) -> Option<Bytes> {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .slice(pos, end)
    }

    pub(crate) fn publish(&self, written: u64, done: Option<bool>) {
        self.state.send_modify(|s| {
            if let FillState::Streaming {
                written: w,
                done: d,
                ..
            } = s
            {
                *w = written;
                *d = done;
            }
        });
    }
}

struct ReaderGuard(Arc<Fill>);
impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.0.readers.fetch_sub(1, Ordering::AcqRel);
    }
}

struct ReadState {
    guard: ReaderGuard,
    rx: watch::Receiver<FillState>,
    file: Option<tokio::fs::File>,
    /// Where `file`'s cursor is (reads from the window do not move it).
    file_pos: u64,
    pos: u64,
    end: u64,
    finished: bool,
}

const READ_CHUNK: u64 = 256 * 1024;

impl ReadState {
    async fn next(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if self.pos >= self.end {
                return Ok(None);
            }
            let (written, done) = match &*self.rx.borrow_and_update() {
                FillState::Streaming { written, done, .. } => (*written, *done),
                FillState::Waiting => (0, None),
                FillState::Abandoned => return Err(io::Error::other("fill abandoned")),
            };
            if written > self.pos && self.guard.0.in_memory() {
                let end = written.min(self.end);
                let Some(b) = self.guard.0.memory_slice(self.pos, end) else {
                    return Err(io::Error::other("in-memory body shorter than published"));
                };
                self.pos += b.len() as u64;
                return Ok(Some(b));
            }
            if written > self.pos {
                let end = written.min(self.end);
                if let Some(b) = self.guard.0.recent_slice(self.pos, end) {
                    self.pos += b.len() as u64;
                    return Ok(Some(b));
                }
                // Behind the window: these bytes are in the file.
                let want = (end - self.pos).min(READ_CHUNK) as usize;
                if self.file.is_none() {
                    self.file = Some(tokio::fs::File::open(&self.guard.0.spool).await?);
                    self.file_pos = 0;
                }
                let Some(file) = self.file.as_mut() else {
                    unreachable!()
                };
                if self.file_pos != self.pos {
                    file.seek(io::SeekFrom::Start(self.pos)).await?;
                    self.file_pos = self.pos;
                }
                let mut buf = BytesMut::zeroed(want);
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "spool shorter than published",
                    ));
                }
                buf.truncate(n);
                self.pos += n as u64;
                self.file_pos = self.pos;
                return Ok(Some(buf.freeze()));
            }
            match done {
                Some(true) => return Ok(None),
                Some(false) => return Err(io::Error::other(SourceBroke)),
                None => {}
            }
            if self.rx.changed().await.is_err() {
                return Err(io::Error::other("fill ended without finishing"));
            }
        }
    }
}

/// The table of in-progress fills.
#[derive(Debug)]
pub struct Fills {
    map: Mutex<HashMap<String, Arc<Fill>>>,
    spool_dir: PathBuf,
    seq: AtomicU64,
    /// Woken whenever a fill is forgotten (for shutdown to wait for commits).
    changed: tokio::sync::Notify,
}

/// Outcome of [`Fills::join`].
pub enum Join {
    Leader(Leader),
    Follower(Arc<Fill>),
}

/// The right (and duty) to fetch a key from the origin. Dropping it without
/// [`Leader::start`] abandons the fill and wakes the followers.
pub struct Leader {
    fills: Arc<Fills>,
    fill: Arc<Fill>,
    started: bool,
}

impl Leader {
    pub fn fill(&self) -> &Arc<Fill> {
        &self.fill
    }

    /// Publishes the response head and returns the fill, now streaming (the body is
    /// written by the fill task in `store.rs`), in memory when `in_memory`.
    pub fn start(mut self, head: Head, in_memory: bool) -> Arc<Fill> {
        self.started = true;
        if in_memory {
            let _ = self.fill.memory.set(Mutex::new(Vec::new()));
        }
        self.fill.state.send_replace(FillState::Streaming {
            head: Arc::new(head),
            written: 0,
            done: None,
        });
        self.fill.clone()
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if !self.started {
            self.fill.state.send_replace(FillState::Abandoned);
            self.fills.remove(&self.fill);
        }
    }
}

impl Fills {
    pub fn new(spool_dir: PathBuf) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            spool_dir,
            seq: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Becomes the leader for `key`, or follows the fill already under way.
    pub fn join(self: &Arc<Self>, key: &str) -> Join {
        // std Mutex: nothing awaits while it is held.
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = map.get(key) {
            // A fill that failed is on its way out of the table: a request that comes
            // now (a client retrying the body it just saw cut off) starts afresh rather
            // than joining it and failing again.
            if !f.failed() {
                return Join::Follower(f.clone());
            }
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let fill = Arc::new(Fill {
            key: key.to_string(),
            spool: self
                .spool_dir
                .join(format!("fill-{}-{n}", std::process::id())),
            state: watch::Sender::new(FillState::Waiting),
            readers: AtomicUsize::new(0),
            ever_read: AtomicBool::new(false),
            memory: std::sync::OnceLock::new(),
            recent: Mutex::default(),
            finished: watch::Sender::new(false),
        });
        map.insert(key.to_string(), fill.clone());
        Join::Leader(Leader {
            fills: self.clone(),
            fill,
            started: false,
        })
    }

    /// The fill under way for `key`, if any.
    pub fn get(&self, key: &str) -> Option<Arc<Fill>> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Forgets a fill (it finished, failed or was abandoned); only if it is still the one
    /// registered for its key.
    pub fn remove(&self, fill: &Arc<Fill>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&fill.key).is_some_and(|f| Arc::ptr_eq(f, fill)) {
            map.remove(&fill.key);
        }
        drop(map);
        fill.finished.send_replace(true);
        self.changed.notify_waiters();
    }

    /// Waits until no fill is under way.
    pub async fn idle(&self) {
        loop {
            let notified = self.changed.notified();
            if self.in_progress() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Keys whose fill is under way and will be shareable (what a peer may wait for).
    pub fn shareable_keys(&self) -> Vec<String> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|f| f.head_now().is_some_and(|h| h.shareable))
            .map(|f| f.key.clone())
            .collect()
    }

    pub fn in_progress(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// What a reader of a fill gets when the body broke off at its source (the origin, or the
/// peers it came from) before its end: the reader's client sees an abort, never a short
/// clean body, and the access log blames the source.
#[derive(Debug, thiserror::Error)]
#[error("the body broke off at its source before its end")]
pub struct SourceBroke;

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> Head {
        Head {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            len: Some(10),
            vary: Vec::new(),
            variant: String::new(),
            policy: None,
            shareable: false,
        }
    }

    /// Regression (open_hostile, under load): a client retrying a body it saw cut off
    /// joined the failed fill before it left the table, and was cut off again.
    #[test]
    fn a_request_after_a_fill_failed_leads_a_new_one_instead_of_joining_it() {
        let dir = tempfile::tempdir().unwrap();
        let fills = Arc::new(Fills::new(dir.path().to_path_buf()));
        let Join::Leader(leader) = fills.join("k") else {
            panic!("the first request leads");
        };
        let fill = leader.start(head(), true);
        assert!(
            matches!(fills.join("k"), Join::Follower(_)),
            "joins while it streams"
        );
        fill.publish(5, Some(false));
        assert!(fill.failed());
        let Join::Leader(again) = fills.join("k") else {
            panic!("a failed fill was joined");
        };
        // The failed fill leaving the table does not take the new one with it.
        fills.remove(&fill);
        assert!(fills
            .get("k")
            .is_some_and(|f| Arc::ptr_eq(&f, again.fill())));
    }

    fn recent(chunks: &[usize]) -> Recent {
        let mut r = Recent::default();
        for (i, n) in chunks.iter().enumerate() {
            r.len += *n as u64;
            r.chunks.push_back(Bytes::from(vec![i as u8; *n]));
        }
        r
    }

    #[test]
    fn the_window_lets_go_only_of_written_chunks_and_keeps_recent_keep_bytes() {
        let k = RECENT_KEEP as usize;
        let mut r = recent(&[k / 2, k / 2, k / 2, k / 2]);
        // Nothing written yet: everything stays, whatever its size.
        r.trim(0);
        assert_eq!((r.start, r.chunks.len()), (0, 4));
        // All written: the oldest go while at least RECENT_KEEP bytes remain.
        r.trim(2 * RECENT_KEEP);
        assert_eq!((r.start, r.len), (RECENT_KEEP, RECENT_KEEP));
        assert_eq!(r.slice(0, u64::MAX), None, "below the window: the file's");
        let b = r.slice(RECENT_KEEP + 3, RECENT_KEEP + 10).unwrap();
        assert_eq!(b.len(), 7);
        assert_eq!(b[0], 2);
        // A slice never crosses a chunk boundary, and ends at `end`.
        let b = r.slice(RECENT_KEEP + (k / 2) as u64 - 1, u64::MAX).unwrap();
        assert_eq!((b.len(), b[0]), (1, 2));
        assert_eq!(r.slice(2 * RECENT_KEEP, u64::MAX), None, "past the end");
    }
}
