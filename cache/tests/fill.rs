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
