//! A fill read by clients at different paces, on a real store in a temp directory: readers
//! that keep up take chunks from the fill's in-memory window, a reader that starts far
//! behind reads the spool file below the window, and each gets every byte, in order.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use http_cache_semantics::CachePolicy;
use meshcache_cache::clock::SystemClock;
use meshcache_cache::fill::{Head, RECENT_KEEP};
use meshcache_cache::{Cache, Join, Options, Pending};

const CHUNK: usize = 64 << 10;
const CHUNKS: usize = 64; // 4 MiB: far more than the window

fn chunk(i: usize) -> Bytes {
    Bytes::from(vec![(i % 251) as u8; CHUNK])
}

fn policy() -> CachePolicy {
    let req = http::Request::get("http://example.test/big")
        .body(())
        .unwrap();
    let res = http::Response::builder()
        .header("cache-control", "max-age=600")
        .body(())
        .unwrap();
    CachePolicy::new(&req, &res)
}

async fn read_all(fill: &Arc<meshcache_cache::fill::Fill>, from: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut s = std::pin::pin!(fill.read(from..u64::MAX));
    while let Some(b) = s.next().await {
        out.extend_from_slice(&b.expect("a byte range of the fill"));
    }
    out
}

fn expected(from: usize) -> Vec<u8> {
    (0..CHUNKS)
        .flat_map(|i| chunk(i).to_vec())
        .skip(from)
        .collect()
}

/// The head and pending commit of a 200 with `len` bytes, fresh for 10 minutes.
fn head_and_pending(len: u64) -> (Head, Pending) {
    let head = Head {
        status: http::StatusCode::OK,
        headers: http::HeaderMap::new(),
        len: Some(len),
        vary: Vec::new(),
        variant: String::new(),
        policy: None,
        shareable: false,
    };
    let pending = Pending {
        policy: policy(),
        shareable: false,
        fresh_until: SystemTime::now() + Duration::from_secs(600),
        fetched_at: SystemTime::now(),
        from_peer: None,
        certified: Vec::new(),
    };
    (head, pending)
}

/// Fills `key` with the CHUNKS chunks through a real fill; returns the fill.
async fn fill_with_chunks(cache: &Cache, key: &str) -> Arc<meshcache_cache::fill::Fill> {
    let Join::Leader(leader) = cache.join_fill(key) else {
        panic!("the first request leads");
    };
    let (head, pending) = head_and_pending((CHUNK * CHUNKS) as u64);
    let body = futures_util::stream::iter((0..CHUNKS).map(|i| Ok::<_, String>(chunk(i))));
    cache.start_fill(leader, head, pending, body)
}

/// A spooled body is adopted by the body store, not copied: one file on disk, named by its
/// hash, read back by hits; when its last entry goes, the file goes too.
#[tokio::test]
async fn a_spooled_body_is_adopted_not_copied_and_deleted_with_its_last_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = Options::new(dir.path().to_path_buf());
    opts.gc_interval = Duration::from_millis(50);
    let cache = Cache::open(opts, Arc::new(SystemClock)).await.unwrap();
    let key = "http://example.test/adopted";
    let fill = fill_with_chunks(&cache, key).await;
    assert_eq!(read_all(&fill, 0).await, expected(0));
    fill.finished().await;
    drop(fill);
    let entry = cache
        .lookup(key, &http::HeaderMap::new())
        .unwrap()
        .expect("stored");
    let hex: String = entry.hash.iter().map(|b| format!("{b:02x}")).collect();
    let adopted = dir.path().join("bodies/adopted").join(&hex);
    assert_eq!(
        std::fs::metadata(&adopted).map(|m| m.len()).ok(),
        Some(entry.len),
        "the spool file became the body"
    );
    let copies: Vec<_> = std::fs::read_dir(dir.path().join("bodies/data"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !copies.iter().any(
            |n| n.to_string_lossy().starts_with(&hex) && n.to_string_lossy().ends_with(".data")
        ),
        "a second copy of the body was written: {copies:?}"
    );
    // A hit reads it back.
    let mut got = Vec::new();
    let mut s = cache.body(&entry, 0..entry.len);
    while let Some(b) = s.next().await {
        got.extend_from_slice(&b.unwrap());
    }
    assert!(got == expected(0), "the hit's bytes differ");
    // The same body at another URL: nothing linked again, one file for both.
    let other = fill_with_chunks(&cache, "http://example.test/same-bytes").await;
    other.finished().await;
    drop(other);
    assert_eq!(
        std::fs::read_dir(dir.path().join("bodies/adopted"))
            .unwrap()
            .count(),
        1
    );
    let report = cache.check(Duration::from_secs(5)).await.unwrap();
    assert!(report.is_consistent(), "{:?}", report.problems);
    // Its last entry gone, garbage collection and the sweep take the file.
    cache.invalidate(key).await.unwrap();
    assert!(adopted.exists(), "still used by the other URL");
    cache
        .invalidate("http://example.test/same-bytes")
        .await
        .unwrap();
    let report = cache.check(Duration::from_secs(5)).await.unwrap();
    assert!(report.is_consistent(), "{:?}", report.problems);
    assert!(
        !adopted.exists(),
        "the adopted file outlived its last entry"
    );
}

/// Regression: a client that read the whole body from the fill's window, and so ended
/// while the last batch was still being written to the spool, counted as "every client
/// left": a large fill was aborted and not stored (`cargo bench --bench large_object`: the
/// request after the miss went to the origin again, 2 runs of 3). The exact interleaving
/// depends on the scheduler and is not forced here; what is checked is the outcome for a
/// reader that reads to the declared end while the fill is under way: the body is stored.
#[tokio::test]
async fn a_client_that_read_every_byte_before_the_spool_was_written_does_not_abort_the_fill() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = Options::new(dir.path().to_path_buf());
    opts.background_fill_max = 1 << 20;
    let cache = Cache::open(opts, Arc::new(SystemClock)).await.unwrap();
    let key = "http://example.test/large";
    let Join::Leader(leader) = cache.join_fill(key) else {
        panic!("the first request leads");
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(1);
    let len = (CHUNK * CHUNKS) as u64;
    assert!(len > 1 << 20, "larger than background_fill_max");
    let (head, pending) = head_and_pending(len);
    let fill = cache.start_fill(leader, head, pending, tokio_stream_from(rx));
    // As a response with a known length reads it: up to its end, not to the fill's end;
    // and keeping up (each chunk is sent once the reader has the one before).
    let (progress, mut read) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let reader = {
        let fill = fill.clone();
        tokio::spawn(async move {
            let mut out = Vec::new();
            let mut s = std::pin::pin!(fill.read(0..len));
            while let Some(b) = s.next().await {
                out.extend_from_slice(&b.expect("a byte range of the fill"));
                let _ = progress.send(out.len() as u64);
            }
            out
        })
    };
    for i in 0..CHUNKS {
        tx.send(Ok(chunk(i))).await.unwrap();
        if i + 1 < CHUNKS {
            while read.recv().await.expect("the reader is reading") < ((i + 1) * CHUNK) as u64 {}
        }
    }
    drop(tx);
    assert_eq!(reader.await.unwrap(), expected(0));
    fill.finished().await;
    assert!(
        cache
            .lookup(key, &http::HeaderMap::new())
            .unwrap()
            .is_some(),
        "the fill was aborted: not stored"
    );
}

#[tokio::test]
async fn a_reader_far_behind_the_window_reads_the_spool_and_gets_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(
        Options::new(dir.path().to_path_buf()),
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    let Join::Leader(leader) = cache.join_fill("http://example.test/big") else {
        panic!("the first request leads");
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(1);
    let len = (CHUNK * CHUNKS) as u64;
    let (head, pending) = head_and_pending(len);
    let body = tokio_stream_from(rx);
    let fill = cache.start_fill(leader, head, pending, body);

    // A reader that keeps up: it reads each chunk as soon as it is sent.
    let keeper = {
        let fill = fill.clone();
        tokio::spawn(async move { read_all(&fill, 0).await })
    };
    for i in 0..CHUNKS {
        tx.send(Ok(chunk(i))).await.unwrap();
    }
    // Every chunk has been handed to the fill; wait until it has all been published (the
    // keeper's read of the whole body proves it), then start a reader at 0: its first
    // bytes left the window long ago, so they come from the spool file.
    drop(tx);
    assert_eq!(keeper.await.unwrap(), expected(0));
    assert!(
        len > 4 * RECENT_KEEP,
        "the body must be far larger than the window"
    );
    let late = read_all(&fill, 0).await;
    assert_eq!(late.len() as u64, len);
    assert_eq!(late, expected(0), "the late reader got other bytes");
    // And one that starts in the middle of a chunk, inside the last part of the body.
    let from = (len - RECENT_KEEP / 2 + 17) as usize;
    assert_eq!(read_all(&fill, from as u64).await, expected(from));
    fill.finished().await;
    // The committed body is the same bytes.
    assert!(cache.lookup_any("http://example.test/big"));
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
) -> impl futures_util::Stream<Item = Result<Bytes, String>> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Regression: with a relative data directory (`meshcache run --data-dir d1`), large bodies
/// were not stored: the body store imports only absolute paths ("adopt body: Error::Io").
#[tokio::test]
async fn a_relative_data_directory_stores_spooled_bodies() {
    let dir = tempfile::tempdir().unwrap();
    // The same directory, relative to the current one.
    let cwd = std::env::current_dir().unwrap();
    let mut relative = std::path::PathBuf::new();
    for _ in cwd.components().skip(1) {
        relative.push("..");
    }
    relative.push(dir.path().strip_prefix("/").unwrap());
    assert!(relative.is_relative());
    let cache = Cache::open(Options::new(relative), Arc::new(SystemClock))
        .await
        .unwrap();
    let key = "http://example.test/relative";
    let fill = fill_with_chunks(&cache, key).await;
    assert_eq!(read_all(&fill, 0).await, expected(0));
    fill.finished().await;
    assert!(
        cache
            .lookup(key, &http::HeaderMap::new())
            .unwrap()
            .is_some(),
        "not stored"
    );
}
