//! Partial objects: a seek far into a video is kept, a seek again inside it is a hit, the
//! hole is filled with a range from the origin, and the object becomes one complete entry.
//! The origin here honours `Range` and `If-Range` as a real one does.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::support::origin::{ReplyBody, Seen};
use crate::support::{check_pattern, get, open_with, pattern, Origin, Reply, TestProxy};

const LEN: u64 = 4 << 20;

fn expected(r: std::ops::Range<u64>) -> Vec<u8> {
    r.map(pattern).collect()
}

/// What an origin that supports ranges answers: a 206 of the range asked for, or the whole
/// representation (no Range, or an `If-Range` that does not match the current `etag`).
pub(crate) fn ranged(seen: &Seen, len: u64, etag: &str, cache_control: &str) -> Reply {
    let if_range_ok = seen
        .headers
        .get("if-range")
        .is_none_or(|v| v.to_str().unwrap() == etag);
    let range = seen
        .headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .filter(|_| if_range_ok)
        .and_then(|spec| {
            let (a, b) = spec.split_once('-')?;
            if a.is_empty() {
                let n: u64 = b.parse().ok()?;
                return Some(len - n.min(len)..len);
            }
            let a: u64 = a.parse().ok()?;
            let b = if b.is_empty() {
                len
            } else {
                b.parse::<u64>().ok()? + 1
            };
            Some(a..b.min(len))
        });
    let reply = match range {
        Some(r) => Reply::ok(Bytes::from(expected(r.clone())))
            .header(
                "content-range",
                format!("bytes {}-{}/{len}", r.start, r.end - 1),
            )
            .with_status(206),
        None => Reply::generated(len),
    };
    reply
        .header("etag", etag)
        .header("cache-control", cache_control)
        .header("accept-ranges", "bytes")
}

fn video_origin(etag: Arc<AtomicU32>) -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
    move |seen| {
        let tag = format!("\"v{}\"", etag.load(Ordering::SeqCst));
        ranged(seen, LEN, &tag, "max-age=600")
    }
}

async fn proxy() -> TestProxy {
    // Seeks beyond 64 KiB are not filled whole: the partial object path.
    TestProxy::start_with(|s| s.cache.range_offset_limit = 64 << 10).await
}

/// A video origin (one representation, `"v1"`), a proxy, and the video's URL.
async fn video() -> (Origin, TestProxy, String) {
    let origin = Origin::builder()
        .route("/v.mp4", video_origin(Arc::new(AtomicU32::new(1))))
        .run()
        .await;
    let url = origin.url("/v.mp4");
    (origin, proxy().await, url)
}

/// `/status.json` once `ready` says its figures are in (a response's bytes are counted
/// when its body is done, just after the client has it); panics after 30 s.
async fn status_when(
    p: &TestProxy,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..3000 {
        let r = get(p.addr(), "http://meshcache.local/status.json", &[]).await;
        let s: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        if ready(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the status never showed the figures waited for");
}

/// Waits until the URL is stored as a complete entry (the partial object is completed
/// after the response that filled its last hole ended).
async fn wait_complete(p: &TestProxy, url: &str) {
    let key = cache::key::primary_key(&url.parse().unwrap()).unwrap();
    for _ in 0..3000 {
        if p.cache().lookup_any(&key) && p.cache().partial(&key).is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{url} never became a complete entry");
}

#[tokio::test]
async fn a_seek_far_is_kept_and_a_seek_again_inside_it_is_a_hit() {
    let (origin, p, url) = video().await;
    let r = get(p.addr(), &url, &[("range", "bytes=3000000-")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some("bytes 3000000-4194303/4194304")
    );
    assert_eq!(r.body.as_ref(), expected(3_000_000..LEN).as_slice());
    assert!(
        r.cache_status().contains("stored; detail=partial"),
        "{}",
        r.cache_status()
    );
    assert_eq!(origin.seen("/v.mp4")[0].headers["range"], "bytes=3000000-");

    // Seek again, inside what is held: from the cache, the origin not asked.
    let r = get(p.addr(), &url, &[("range", "bytes=3500000-3500999")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some("bytes 3500000-3500999/4194304")
    );
    assert_eq!(r.body.as_ref(), expected(3_500_000..3_501_000).as_slice());
    assert_eq!(r.cache_status(), "meshcache; hit; detail=partial");
    p.clock.advance(Duration::from_secs(7));
    let r = get(p.addr(), &url, &[("range", "bytes=-100")]).await;
    assert_eq!(
        r.header("age"),
        Some("7"),
        "a response from the cache says its age"
    );
    assert_eq!(r.body.as_ref(), expected(LEN - 100..LEN).as_slice());
    assert_eq!(origin.hits("/v.mp4"), 1);
    // Nothing complete is stored yet: a partial object is not an entry.
    assert_eq!(p.cache().stats().await.unwrap().variants, 0);
    assert_eq!(p.cache().partial_stats(), (1, LEN - 3_000_000));
    // Operators see them: /metrics and /status.json, and the seek again counted as a hit.
    let m = get(p.addr(), "http://meshcache.local/metrics", &[])
        .await
        .text();
    assert!(m.contains("meshcache_partial_objects 1\n"), "{m}");
    assert!(
        m.contains(&format!("meshcache_partial_bytes {}\n", LEN - 3_000_000)),
        "{m}"
    );
    let s: serde_json::Value = serde_json::from_slice(
        &get(p.addr(), "http://meshcache.local/status.json", &[])
            .await
            .body,
    )
    .unwrap();
    assert_eq!(s["partial_objects"], 1);
    assert_eq!(
        (s["hits"].as_u64(), s["misses"].as_u64()),
        (Some(2), Some(1))
    );
}

#[tokio::test]
async fn filling_the_hole_makes_one_complete_entry() {
    let (origin, p, url) = video().await;
    get(p.addr(), &url, &[("range", "bytes=3000000-")]).await;

    // The whole object: only the hole is asked of the origin, for this representation.
    let r = get(p.addr(), &url, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len() as u64, LEN);
    assert!(
        r.body.as_ref() == expected(0..LEN).as_slice(),
        "the body is the object"
    );
    assert!(
        r.cache_status().contains("fwd=partial; stored"),
        "{}",
        r.cache_status()
    );
    let seen = origin.seen("/v.mp4");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].headers["range"], "bytes=0-2999999");
    assert_eq!(seen[1].headers["if-range"], "\"v1\"");

    wait_complete(&p, &url).await;
    let stats = p.cache().stats().await.unwrap();
    assert_eq!((stats.urls, stats.variants, stats.bytes), (1, 1, LEN));
    // Where the bytes came from: of the whole GET, the held ones were the cache's.
    let held = LEN - 3_000_000;
    let s = status_when(&p, |s| s["bytes_to_clients"] == held + LEN).await;
    assert_eq!(s["bytes_from_cache"], held, "{s}");
    assert_eq!(s["bytes_from_origin"], held + 3_000_000, "{s}");
    assert_eq!(p.cache().partial_stats(), (0, 0));
    let r = get(p.addr(), &url, &[]).await;
    assert_eq!(r.cache_status(), "meshcache; hit");
    assert!(r.body.as_ref() == expected(0..LEN).as_slice());
    let r = get(p.addr(), &url, &[("range", "bytes=100-199")]).await;
    assert_eq!(r.body.as_ref(), expected(100..200).as_slice());
    assert_eq!(origin.hits("/v.mp4"), 2);
}

#[tokio::test]
async fn a_range_that_straddles_a_hole_gets_held_and_new_bytes_in_one_body() {
    let (origin, p, url) = video().await;
    get(p.addr(), &url, &[("range", "bytes=1000000-1999999")]).await;
    get(p.addr(), &url, &[("range", "bytes=3000000-3999999")]).await;
    // Held, hole, held: the origin is asked for the hole only.
    let r = get(p.addr(), &url, &[("range", "bytes=1500000-3499999")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some("bytes 1500000-3499999/4194304")
    );
    assert!(r.body.as_ref() == expected(1_500_000..3_500_000).as_slice());
    assert_eq!(
        origin.seen("/v.mp4")[2].headers["range"],
        "bytes=2000000-2999999"
    );
    assert_eq!(p.cache().partial_stats(), (1, 3_000_000));
}

#[tokio::test]
async fn a_changed_representation_drops_the_partial_object() {
    let version = Arc::new(AtomicU32::new(1));
    let origin = Origin::builder()
        .route("/v.mp4", video_origin(version.clone()))
        .run()
        .await;
    let p = proxy().await;
    let url = origin.url("/v.mp4");
    get(p.addr(), &url, &[("range", "bytes=3000000-")]).await;
    version.store(2, Ordering::SeqCst);
    // If-Range "v1" no longer matches: the origin sends the whole new representation,
    // which the client gets; no old byte is mixed into it, and the old ones are gone.
    let r = get(p.addr(), &url, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some("\"v2\""));
    assert!(r.body.as_ref() == expected(0..LEN).as_slice());
    assert_eq!(p.cache().partial_stats(), (0, 0));
}

#[tokio::test]
async fn a_range_cut_short_by_the_origin_ends_the_clients_body_with_an_error() {
    let origin = Origin::builder()
        .route("/cut", |_| {
            Reply::status(206)
                .header("content-range", "bytes 3000000-3999999/4194304")
                .header("cache-control", "max-age=600")
                .header("etag", "\"c\"")
                .body(ReplyBody::Truncated {
                    declared: 1_000_000,
                    sent: 300_000,
                })
        })
        .run()
        .await;
    let p = proxy().await;
    let url = origin.url("/cut");
    let (head, body) = open_with(p.addr(), &url, &[("range", "bytes=3000000-3999999")]).await;
    assert_eq!(head.status, 206);
    let got = check_pattern(body, 0).await;
    assert!(got.is_err(), "a short body must not end cleanly: {got:?}");
    // What arrived is held (it is what the origin sent), the rest is not: a request for
    // the whole range asks the origin again. (The writer lets go once it has marked.)
    let key = cache::key::primary_key(&url.parse().unwrap()).unwrap();
    let partial = p.cache().partial(&key).expect("kept");
    for _ in 0..3000 {
        if partial.try_writer().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let held = partial.meta().held;
    assert!(
        held.len() == 1 && held[0].0 == 3_000_000 && held[0].1 < 3_300_001,
        "{held:?}"
    );
    assert!(!partial.holds(3_000_000..4_000_000));
}

#[tokio::test]
async fn a_range_the_cache_may_not_store_is_not_kept() {
    let origin = Origin::builder()
        .route("/private", |seen| {
            ranged(seen, LEN, "\"p\"", "private, max-age=600")
        })
        .route("/unknown-length", |_| {
            Reply::ok(Bytes::from(expected(3_000_000..3_000_010)))
                .with_status(206)
                .header("content-range", "bytes 3000000-3000009/*")
                .header("cache-control", "max-age=600")
        })
        .run()
        .await;
    let p = TestProxy::start_with(|s| {
        s.cache.range_offset_limit = 64 << 10;
        s.cache.shared = true;
    })
    .await;
    for path in ["/private", "/unknown-length"] {
        let r = get(
            p.addr(),
            &origin.url(path),
            &[("range", "bytes=3000000-3000009")],
        )
        .await;
        assert_eq!(r.status, 206, "{path}");
        assert_eq!(r.body.as_ref(), expected(3_000_000..3_000_010).as_slice());
        assert!(
            r.cache_status().contains("range-forwarded"),
            "{path}: {}",
            r.cache_status()
        );
    }
    assert_eq!(p.cache().partial_stats(), (0, 0));
}

#[tokio::test]
async fn a_partial_object_survives_a_restart() {
    let (origin, mut p, url) = video().await;
    get(p.addr(), &url, &[("range", "bytes=3000000-")]).await;
    p.restart().await;
    let r = get(p.addr(), &url, &[("range", "bytes=4000000-4000099")]).await;
    assert_eq!(r.cache_status(), "meshcache; hit; detail=partial");
    assert_eq!(r.body.as_ref(), expected(4_000_000..4_000_100).as_slice());
    assert_eq!(origin.hits("/v.mp4"), 1);
}

#[tokio::test]
async fn a_stale_partial_object_is_dropped_not_combined() {
    let (origin, p, url) = video().await;
    get(p.addr(), &url, &[("range", "bytes=3000000-")]).await;
    p.clock.advance(Duration::from_secs(601));
    let r = get(p.addr(), &url, &[("range", "bytes=3500000-3500099")]).await;
    assert_eq!(r.body.as_ref(), expected(3_500_000..3_500_100).as_slice());
    assert!(!r.cache_status().contains("hit"), "{}", r.cache_status());
    assert_eq!(origin.hits("/v.mp4"), 2);
}

/// Regression: an origin that answered a hole's range with another range had that 206
/// relayed to a client that asked for no range at all. Now the client's own request is
/// sent as it made it, and the partial object (no longer trusted) is dropped.
#[tokio::test]
async fn an_origin_answering_a_hole_with_another_range_is_not_relayed() {
    let asked = Arc::new(AtomicU32::new(0));
    let n = asked.clone();
    let origin = Origin::builder()
        .route("/odd.mp4", move |seen| {
            let first = n.fetch_add(1, Ordering::SeqCst) == 0;
            if !first && seen.headers.contains_key("range") {
                return Reply::ok(Bytes::from(expected(0..100)))
                    .with_status(206)
                    .header("content-range", format!("bytes 0-99/{LEN}"))
                    .header("etag", "\"o\"")
                    .header("cache-control", "max-age=600");
            }
            ranged(seen, LEN, "\"o\"", "max-age=600")
        })
        .run()
        .await;
    let p = proxy().await;
    let url = origin.url("/odd.mp4");
    get(p.addr(), &url, &[("range", "bytes=3000000-")]).await;
    let r = get(p.addr(), &url, &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.body.as_ref() == expected(0..LEN).as_slice());
    assert!(
        r.cache_status().contains("partial-mismatch"),
        "{}",
        r.cache_status()
    );
    assert_eq!(asked.load(Ordering::SeqCst), 3);
    assert!(!origin.seen("/odd.mp4")[2].headers.contains_key("range"));
    assert_eq!(p.cache().partial_stats(), (0, 0));
}

#[tokio::test]
async fn only_the_holes_are_asked_of_the_origin_one_range_each() {
    let (origin, p, url) = video().await;
    get(p.addr(), &url, &[("range", "bytes=1000000-1999999")]).await;
    get(p.addr(), &url, &[("range", "bytes=3000000-3999999")]).await;
    let r = get(p.addr(), &url, &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.body.as_ref() == expected(0..LEN).as_slice());
    let ranges: Vec<String> = origin.seen("/v.mp4")[2..]
        .iter()
        .map(|s| s.headers["range"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ranges,
        ["bytes=0-999999", "bytes=2000000-2999999", "bytes=4000000-"],
        "no held byte asked again"
    );
    wait_complete(&p, &url).await;
    assert_eq!(p.cache().stats().await.unwrap().bytes, LEN);
}

#[tokio::test]
async fn a_representation_that_changes_between_two_holes_ends_the_body_with_an_error() {
    let version = Arc::new(AtomicU32::new(1));
    let v = version.clone();
    let origin = Origin::builder()
        .route("/v.mp4", move |seen| {
            let tag = format!("\"v{}\"", v.load(Ordering::SeqCst));
            let reply = ranged(seen, LEN, &tag, "max-age=600");
            // The object is replaced just after its first hole was sent.
            if seen
                .headers
                .get("range")
                .is_some_and(|r| r == "bytes=0-999999")
            {
                v.store(2, Ordering::SeqCst);
            }
            reply
        })
        .run()
        .await;
    let p = proxy().await;
    let url = origin.url("/v.mp4");
    get(p.addr(), &url, &[("range", "bytes=1000000-1999999")]).await;
    let (head, body) = open_with(p.addr(), &url, &[]).await;
    assert_eq!(head.status, 200);
    let got = check_pattern(body, 0).await;
    assert!(
        got.is_err(),
        "bytes of two representations must not end cleanly: {got:?}"
    );
    assert_eq!(version.load(Ordering::SeqCst), 2);
    // The old bytes are dropped, not completed into an entry.
    assert_eq!(p.cache().partial_stats(), (0, 0));
    assert_eq!(p.cache().stats().await.unwrap().variants, 0);
}

/// Regression: once a write into a partial object failed (a full disk, a file gone), the
/// rest of the range was still gathered in memory for a write that would never come. Now
/// nothing more is kept after a failed write — and the client still gets every byte.
#[tokio::test]
async fn a_range_whose_partial_object_cannot_be_written_still_reaches_the_client_whole() {
    const RANGE: u64 = 3 << 20;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let origin = Origin::builder()
        .route("/g.mp4", move |_| {
            Reply::status(206)
                .header(
                    "content-range",
                    format!("bytes 4000000-{}/{}", 4_000_000 + RANGE - 1, 8 << 20),
                )
                .header("cache-control", "max-age=600")
                .header("etag", "\"g\"")
                .body(ReplyBody::Gated {
                    len: RANGE,
                    chunk: 64 << 10,
                    gate: g.clone(),
                })
        })
        .run()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let p = TestProxy::start_in(dir.path().to_path_buf(), |s| {
        s.cache.range_offset_limit = 64 << 10
    })
    .await;
    let url = origin.url("/g.mp4");
    let range = format!("bytes=4000000-{}", 4_000_000 + RANGE - 1);
    let (head, body) = open_with(p.addr(), &url, &[("range", &range)]).await;
    assert_eq!(head.status, 206);
    assert!(
        p.cache().partial_stats().0 == 1,
        "a partial object was begun"
    );
    // Its files vanish before the first write (1 MiB in): every write fails from then on.
    let mut removed = 0;
    for entry in walk(dir.path()) {
        if entry.parent().is_some_and(|d| d.ends_with("partial")) {
            std::fs::remove_file(&entry).unwrap();
            removed += 1;
        }
    }
    assert_eq!(removed, 2, "the body and meta files");
    gate.add_permits(1000);
    assert_eq!(check_pattern(body, 0).await, Ok(RANGE), "every byte, right");
    let key = cache::key::primary_key(&url.parse().unwrap()).unwrap();
    let partial = p.cache().partial(&key).expect("still listed");
    assert!(
        partial.meta().held.is_empty(),
        "nothing is held that was not written"
    );
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
