//! Feed sync benchmark (issue 11): how long a subscriber takes to be up to date once it
//! meets a device that holds its feed, and how many lookups a miss costs with the catalog
//! exchange and without it. Two parts, in one run, each reported against a reference
//! measured in the same run:
//!
//! 1. **Time from meeting to up to date.** An in-process origin serves an RSS 2.0 feed of
//!    100 items (Media RSS: each item a `<media:content medium="image" type="image/jpeg"
//!    fileSize=…>` of 150,000 bytes and a `<media:thumbnail>` of 8 KiB; every body
//!    distinct, `cache-control: max-age=3600`). Device A (in a group, no subscription) reads
//!    the document and all 200 media through its proxy, like a reader's app, and the bench
//!    waits until A has stored them. Then device B (same group, a fresh data directory, given
//!    A's ticket, `[[sync.feed]]` for the document, `from_origin = false`, budget 1 GiB;
//!    its settings made by `Settings::from_config` from a `config::Config`, as the binary's
//!    are) is started, and `/status.json` is polled every 10 ms until its feed shows
//!    `up_to_date: true` and `media_held == media_wanted`. Two cases: (a) `media =
//!    "thumbnails"` (100 thumbnails, ~0.8 MiB) and (b) `media = "all"` (the thumbnails and
//!    100 images, ~15.8 MB). Timed from just before B's proxy is started (data directory,
//!    CA, cache, mesh, engine) and from B's first connected peer (`Mesh::wait_for_peers`).
//!    References, per run: the same URLs (document + the media the case admits) fetched one
//!    after another on one keep-alive connection directly from the origin, and through B's
//!    proxy after the sync (local hits). Reported: the medians of 3 runs (a fresh B each),
//!    sync time / direct-origin time and sync time / local-hit time, with each run's
//!    figures (origin GETs during the sync, which must be 0: B may not ask the origin).
//!    The goal for (a) on loopback is ≤ 2 s; it is printed, not asserted.
//! 2. **Lookups per miss, with and without catalogs.** N = 5 devices in one group (device
//!    0's ticket given to the others, gossip connects the rest; all connected before
//!    anything is timed), `mesh.catalogs = true`, then the same workload on 5 fresh devices
//!    with `mesh.catalogs = false` (every miss asks every connected member: the reference).
//!    With catalogs, every device must hold N-1 catalogs (`mesh_catalogs`) before the
//!    workload starts. Workload (seeded xorshift, identical in both modes): M = 200
//!    objects of log-uniform sizes between 16 KiB and 512 KiB from the carriage bench's
//!    in-process origin; *seed* phase: each object fetched once, in order, by a random
//!    device (all first fetches: nobody holds it yet); *Zipf* phase: R = 400 requests,
//!    popularity Zipf(s = 1), each for a random device, 4 in flight, each on a new
//!    connection, body read to the end. No sleep anywhere between requests: catalogs
//!    follow commits asynchronously (long-poll deltas), and how late they are is part of
//!    what is measured (a key committed a moment ago and not yet announced costs an origin
//!    fetch). Reported per mode and phase: requests by source (`Cache-Status`: `hit` →
//!    local, `peer=` → a peer, else origin), misses (every request that was not a local
//!    hit; `/status.json`'s `misses` summed over the devices alongside), `mesh_lookups_sent`
//!    summed over the devices and per miss, `mesh_lookups_skipped` (misses on which no
//!    catalog matched, so no one was asked), the origin's GETs and bytes — catalogs must
//!    not make the carriage download more — and the p50 latency of the misses (a first
//!    fetch that no catalog matches waits the election window, a tenth of
//!    `lookup_timeout`, before going to the origin).
//!
//! Not measured here: a catalog's size on the wire per 10,000 entries and its false-hit
//! rate — `cargo bench --bench catalog` does that.
//!
//! Everything runs in one process on loopback (origins, proxies with their meshes on
//! 127.0.0.1 UDP ports without mDNS, the clients), so compare the ratios, not the absolute
//! figures. `cargo bench --bench sync`; `MESHCACHE_BENCH_QUICK=1`: 1 run per case, M = 100,
//! R = 200. `MESHCACHE_SYNC_PART=1` or `2` runs one part only. `MESHCACHE_SYNC_DIAG=1`
//! prints every change of B's status figures during a sync (the per-feed figures are
//! published at the end of each engine round). `RUST_LOG` (e.g. `meshcache=info`) logs the
//! proxies and meshes to stderr. No pass/fail thresholds: a sync that does not finish
//! within 60 s is reported with its status figures.

mod common;
use common::devices::{get_once, Conn, Device, Origin, Route, Source};
use common::rng::Rng;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use meshcache::{Proxy, Settings, SystemClock};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

/// Items of the feed.
const ITEMS: usize = 100;
const THUMB: usize = 8 * 1024;
const IMAGE: usize = 150_000;
/// The subscriber's status is read this often.
const POLL: Duration = Duration::from_millis(10);
/// A sync that takes longer is reported as not finished.
const SYNC_WAIT: Duration = Duration::from_secs(60);
const PEER_WAIT: Duration = Duration::from_secs(30);
const STORE_WAIT: Duration = Duration::from_secs(30);

/// Part 2.
const DEVICES: usize = 5;
const MIN_SIZE: f64 = 16.0 * 1024.0;
const MAX_SIZE: f64 = 512.0 * 1024.0;
const ZIPF_S: f64 = 1.0;
const IN_FLIGHT: usize = 4;
const SEED: u64 = 0x7379_6e63_6361_7473;

fn main() {
    common::init_log();
    let quick = common::quick();
    let cores = common::cores();
    common::block_on(cores, async move {
        println!(
            "sync: {} mode, {} cores; origins, proxies and clients share ONE process on loopback:",
            if quick { "quick" } else { "full" },
            cores
        );
        println!("      compare the ratios, not the absolute figures.");
        let part = std::env::var("MESHCACHE_SYNC_PART").unwrap_or_default();
        if part != "2" {
            feed_sync(if quick { 1 } else { 3 }).await;
        }
        if part != "1" {
            lookups(if quick { 100 } else { 200 }, if quick { 200 } else { 400 }).await;
        }
    });
}

// ---------------------------------------------------------------------------------------
// An origin of fixed bodies (the feed document and its media).

struct File {
    content_type: &'static str,
    body: Bytes,
}

struct Files {
    by_path: HashMap<String, File>,
    gets: AtomicU64,
    bytes: AtomicU64,
}

/// An in-process origin on 127.0.0.1:0 serving `files` with `cache-control: max-age=3600`,
/// counting GETs and body bytes.
struct StaticOrigin {
    addr: SocketAddr,
    files: Arc<Files>,
}

impl StaticOrigin {
    async fn start(by_path: HashMap<String, File>) -> StaticOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().unwrap();
        let files = Arc::new(Files {
            by_path,
            gets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        });
        let serving = files.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let files = serving.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let r = serve_file(&req, &files);
                        async move { Ok::<_, Infallible>(r) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        StaticOrigin { addr, files }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// (GETs, body bytes) so far.
    fn served(&self) -> (u64, u64) {
        (
            self.files.gets.load(Ordering::Relaxed),
            self.files.bytes.load(Ordering::Relaxed),
        )
    }
}

fn serve_file(req: &Request<Incoming>, files: &Files) -> Response<Full<Bytes>> {
    let Some(f) = files.by_path.get(req.uri().path()) else {
        return Response::builder()
            .status(404)
            .body(Full::new(Bytes::new()))
            .unwrap();
    };
    let head = Response::builder()
        .header("content-type", f.content_type)
        .header("cache-control", "max-age=3600")
        .header("content-length", f.body.len());
    if req.method() != hyper::Method::GET {
        return head.body(Full::new(Bytes::new())).unwrap();
    }
    files.gets.fetch_add(1, Ordering::Relaxed);
    files
        .bytes
        .fetch_add(f.body.len() as u64, Ordering::Relaxed);
    head.body(Full::new(f.body.clone())).unwrap()
}

/// `len` deterministic bytes of their own for `seed` (xorshift64 from an FNV hash of it).
fn content(seed: &str, len: usize) -> Bytes {
    let mut x: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        x = (x ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    x |= 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn thumb_path(n: usize) -> String {
    format!("/thumbs/{n}.jpg")
}

fn image_path(n: usize) -> String {
    format!("/images/{n}.jpg")
}

/// The RSS 2.0 document: item n (1..=ITEMS) published at 10:00 + n minutes on
/// 1 December 2026, with its image as `media:content` and its thumbnail next to it
/// (feed-rs keeps a `media:thumbnail` only with a `media:content` in its scope).
fn rss() -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\"?>\n<rss version=\"2.0\" xmlns:media=\"http://search.yahoo.com/mrss/\">\n\
         <channel><title>Carriage photos</title><link>http://example.org/</link>\
         <description>sync bench</description>\n",
    );
    for n in 1..=ITEMS {
        s.push_str(&format!(
            "<item><title>Photo {n}</title><guid>photo-{n}</guid>\
             <pubDate>Tue, 01 Dec 2026 {:02}:{:02}:00 GMT</pubDate>\n  \
             <media:content url=\"{}\" type=\"image/jpeg\" medium=\"image\" fileSize=\"{IMAGE}\"/>\
             <media:thumbnail url=\"{}\"/>\n</item>\n",
            10 + n / 60,
            n % 60,
            image_path(n),
            thumb_path(n)
        ));
    }
    s.push_str("</channel></rss>\n");
    s
}

// ---------------------------------------------------------------------------------------
// Status

/// `/status.json` of the proxy at `addr` (the bench is a loopback client: an admin, so it
/// gets the mesh and sync figures).
async fn status_json(addr: SocketAddr) -> Result<Value, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let req = Request::get("/status.json")
        .header("host", "meshcache.local")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let res = send
        .send_request(req)
        .await
        .map_err(|e| format!("status.json: {e}"))?;
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("status.json body: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("status.json does not parse: {e}"))
}

fn num(v: &Value, name: &str) -> u64 {
    v[name].as_u64().unwrap_or(0)
}

/// The subscriber's feed is up to date and holds every media object its settings admit.
fn synced(v: &Value) -> bool {
    let f = &v["sync_feeds"][0];
    f["up_to_date"] == true
        && f["media_wanted"].as_u64().is_some_and(|w| w > 0)
        && f["media_held"] == f["media_wanted"]
}

/// The figures of a status that matter here (no tickets): sync, mesh, requests.
fn figures(v: &Value) -> String {
    let Some(m) = v.as_object() else {
        return v.to_string();
    };
    let keep: serde_json::Map<String, Value> = m
        .iter()
        .filter(|(k, _)| {
            (k.starts_with("sync_") || k.starts_with("mesh_") || k.starts_with("stored_"))
                && !k.contains("ticket")
                || ["requests", "hits", "misses", "errors", "peer_hits"].contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Value::Object(keep).to_string()
}

/// Polls `addr`'s status until `done` holds; the last status either way.
async fn wait_status(
    addr: SocketAddr,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Result<Value, Value> {
    let deadline = Instant::now() + within;
    loop {
        let v = match status_json(addr).await {
            Ok(v) if done(&v) => return Ok(v),
            Ok(v) => v,
            Err(e) => Value::String(e),
        };
        if Instant::now() >= deadline {
            return Err(v);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Part 1: time from meeting to up to date.

/// Device B: a proxy in `group`, knowing `peer` (a ticket), subscribed to `feed_url`. Its
/// settings come from a `config::Config` through `Settings::from_config`, as the binary's
/// do (the feed documents the mesh watches are derived there).
async fn subscriber(
    group: &mesh::Group,
    peer: &str,
    feed_url: &str,
    media: config::Media,
) -> Device {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh_dir = dir.path().join("mesh");
    std::fs::create_dir_all(&mesh_dir).expect("mesh dir");
    mesh::Groups::open(&mesh_dir)
        .and_then(|gs| gs.add(group))
        .expect("write the group");
    let mut cfg = config::Config::default();
    cfg.mesh.enabled = true;
    cfg.mesh.listen = "127.0.0.1:0".parse().unwrap();
    cfg.mesh.open_listen = "127.0.0.1:0".parse().unwrap();
    cfg.mesh.mdns = false;
    cfg.mesh.peers = vec![peer.to_string()];
    cfg.sync = config::Sync {
        budget: config::ByteSize(1 << 30),
        from_origin: false,
        feed: vec![config::Feed {
            url: feed_url.to_string(),
            media,
            max_item: config::ByteSize(8 << 20),
        }],
    };
    let mut s = Settings::from_config(&cfg, dir.path().to_path_buf());
    s.listen = "127.0.0.1:0".parse().unwrap();
    s.access_log = false;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let proxy = Proxy::start_on(s, listener, Arc::new(SystemClock))
        .await
        .expect("start proxy");
    assert!(proxy.mesh().is_some(), "B's mesh did not start");
    Device { proxy, dir }
}

/// GETs `urls` one after another on one keep-alive connection to `addr` (a proxy, or the
/// origin itself); the time, and how many were 200s of the right length that `ok` accepts.
async fn sequential(
    addr: SocketAddr,
    urls: &[(String, u64)],
    ok: impl Fn(&str) -> bool,
) -> (Duration, usize) {
    let mut good = 0;
    let t = Instant::now();
    let Ok(mut c) = Conn::open(addr).await else {
        return (t.elapsed(), 0);
    };
    for (url, len) in urls {
        match c.get(url).await {
            Ok(g) if g.status == 200 && g.bytes == *len && ok(&g.cache_status) => good += 1,
            Ok(g) => println!(
                "  WARNING: {url} via {addr}: status {}, {} of {len} bytes, {}",
                g.status, g.bytes, g.cache_status
            ),
            Err(e) => println!("  WARNING: {url} via {addr}: {e}"),
        }
    }
    (t.elapsed(), good)
}

/// One subscriber run's figures.
struct Run {
    start: Duration,
    /// From start to the first connected peer.
    peer: Option<Duration>,
    /// From start to up to date.
    synced: Option<Duration>,
    direct: Duration,
    local: Option<Duration>,
}

async fn feed_sync(repeats: usize) {
    let diag = std::env::var_os("MESHCACHE_SYNC_DIAG").is_some();
    let mut files = HashMap::new();
    let doc = rss();
    // Check what the parser makes of the document: 100 items, each a thumbnail and an image.
    let probe = meshcache::parse_feed("http://origin.test/feed.xml", doc.as_bytes())
        .expect("the bench's feed parses");
    let kinds: BTreeMap<String, usize> =
        probe
            .iter()
            .flat_map(|i| i.media.iter())
            .fold(BTreeMap::new(), |mut m, x| {
                *m.entry(format!("{:?}", x.kind)).or_insert(0) += 1;
                m
            });
    assert_eq!(probe.len(), ITEMS, "items parsed");
    assert_eq!(
        kinds.get("Thumbnail").copied(),
        Some(ITEMS),
        "thumbnails parsed: {kinds:?}"
    );
    assert_eq!(
        kinds.get("Image").copied(),
        Some(ITEMS),
        "images parsed: {kinds:?}"
    );
    let doc_len = doc.len() as u64;
    files.insert(
        "/feed.xml".to_string(),
        File {
            content_type: "application/rss+xml",
            body: Bytes::from(doc),
        },
    );
    for n in 1..=ITEMS {
        for (path, len) in [(thumb_path(n), THUMB), (image_path(n), IMAGE)] {
            files.insert(
                path.clone(),
                File {
                    content_type: "image/jpeg",
                    body: content(&path, len),
                },
            );
        }
    }
    let origin = StaticOrigin::start(files).await;
    let feed_url = origin.url("/feed.xml");
    let doc_url = (feed_url.clone(), doc_len);
    let thumbs: Vec<(String, u64)> = (1..=ITEMS)
        .map(|n| (origin.url(&thumb_path(n)), THUMB as u64))
        .collect();
    let images: Vec<(String, u64)> = (1..=ITEMS)
        .map(|n| (origin.url(&image_path(n)), IMAGE as u64))
        .collect();
    let mut all = vec![doc_url.clone()];
    all.extend(thumbs.iter().cloned());
    all.extend(images.iter().cloned());
    let all_bytes: u64 = all.iter().map(|u| u.1).sum();

    println!();
    println!(
        "feed sync: an RSS feed of {ITEMS} items, each a {THUMB} B thumbnail and a {IMAGE} B image \
         (document {doc_len} B; {} objects, {:.1} MB in all)",
        all.len(),
        all_bytes as f64 / 1e6
    );

    // A: a reader, not subscribed, whose app read the feed and everything it shows.
    let group = mesh::Group::generate().expect("group");
    let a = Device::start(Some(&group), &[]).await;
    let t = Instant::now();
    let (_, read) = sequential(a.addr(), &all, |_| true).await;
    let stored = wait_status(a.addr(), STORE_WAIT, |v| {
        num(v, "stored_variants") >= all.len() as u64
    })
    .await;
    if let Err(v) = &stored {
        println!(
            "WARNING: A has not stored all {} objects after {STORE_WAIT:?}: {}",
            all.len(),
            figures(v)
        );
    }
    println!(
        "  A read {read} of {} objects through its proxy and stored them in {:.2} s",
        all.len(),
        t.elapsed().as_secs_f64()
    );
    let ticket = a.mesh().ticket();

    let cases = [
        ("(a) thumbnails", config::Media::Thumbnails),
        ("(b) all media", config::Media::All),
    ];
    let mut results: Vec<(&str, usize, u64, Vec<Run>)> = Vec::new();
    for (label, media) in cases {
        let mut urls = vec![doc_url.clone()];
        urls.extend(thumbs.iter().cloned());
        if media == config::Media::All {
            urls.extend(images.iter().cloned());
        }
        let wanted = urls.len() - 1;
        let bytes: u64 = urls.iter().map(|u| u.1).sum();
        println!();
        println!(
            "  {label}: media = {:?}, {wanted} media + the document, {:.2} MB; B: fresh data directory, from_origin = false, A's ticket",
            format!("{media:?}").to_lowercase(),
            bytes as f64 / 1e6
        );
        let mut runs = Vec::new();
        for r in 1..=repeats {
            let (gets0, _) = origin.served();
            let t0 = Instant::now();
            let b = subscriber(&group, &ticket, &feed_url, media).await;
            let start = t0.elapsed();
            let m = b.mesh().clone();
            let peer_task =
                tokio::spawn(
                    async move { m.wait_for_peers(1, SYNC_WAIT).await.then(Instant::now) },
                );
            let deadline = t0 + SYNC_WAIT;
            let mut polls = 0u64;
            let mut seen = String::new();
            let outcome = loop {
                polls += 1;
                let v = match status_json(b.addr()).await {
                    Ok(v) => v,
                    Err(e) => Value::String(e),
                };
                if diag {
                    let f = &v["sync_feeds"][0];
                    let now = format!(
                        "peers {} catalogs {} items {} media {}/{} up_to_date {} fetched {} error {}",
                        v["mesh_peers_connected"],
                        v["mesh_catalogs"],
                        f["items_newest"],
                        f["media_held"],
                        f["media_wanted"],
                        f["up_to_date"],
                        v["sync_fetched"],
                        f["last_error"]
                    );
                    if now != seen {
                        println!("  diag run {r}: {:>6} ms {now}", t0.elapsed().as_millis());
                        seen = now;
                    }
                }
                if synced(&v) {
                    break Ok((Instant::now(), v));
                }
                if Instant::now() >= deadline {
                    break Err(v);
                }
                tokio::time::sleep(POLL).await;
            };
            let peer_at = peer_task.await.ok().flatten();
            let (gets1, _) = origin.served();
            let peer = peer_at.map(|p| p.saturating_duration_since(t0));
            let (synced_in, v) = match outcome {
                Ok((at, v)) => (Some(at - t0), v),
                Err(v) => {
                    println!(
                        "  run {r}: WARNING: B is not up to date after {SYNC_WAIT:?} ({polls} polls); its status: {}",
                        figures(&v)
                    );
                    (None, v)
                }
            };
            let f = &v["sync_feeds"][0];
            if synced_in.is_some() {
                println!(
                    "  run {r}: started {:.0} ms, peer {}, up to date {} ms ({:.0} ms after the peer); \
                     items {}, media {}/{}, {} B held, sync_fetched {}, used today {} B, origin GETs during the sync {}, last_error {}",
                    start.as_secs_f64() * 1e3,
                    peer.map_or("-".into(), |p| format!("{:.0} ms", p.as_secs_f64() * 1e3)),
                    synced_in.map_or("-".into(), |s| format!("{:.0}", s.as_secs_f64() * 1e3)),
                    match (synced_in, peer) {
                        (Some(s), Some(p)) => (s.saturating_sub(p)).as_secs_f64() * 1e3,
                        _ => f64::NAN,
                    },
                    f["items_newest"],
                    f["media_held"],
                    f["media_wanted"],
                    f["bytes"],
                    v["sync_fetched"],
                    v["sync_used_today"],
                    gets1 - gets0,
                    f["last_error"]
                );
            }
            // References: the same URLs straight from the origin, then as local hits on B.
            let (direct, n_direct) = sequential(origin.addr, &urls, |_| true).await;
            if n_direct != urls.len() {
                println!(
                    "  run {r}: WARNING: {n_direct} of {} direct fetches were right",
                    urls.len()
                );
            }
            let local = if synced_in.is_some() {
                let (d, hits) =
                    sequential(b.addr(), &urls, |cs| Source::of(cs) == Source::Local).await;
                if hits != urls.len() {
                    println!(
                        "  run {r}: WARNING: only {hits} of {} were local hits on B after the sync",
                        urls.len()
                    );
                }
                Some(d)
            } else {
                None
            };
            b.stop().await;
            runs.push(Run {
                start,
                peer,
                synced: synced_in,
                direct,
                local,
            });
        }
        results.push((label, wanted, bytes, runs));
    }
    a.stop().await;

    let median = |mut v: Vec<Duration>, n: usize| -> Option<Duration> {
        v.sort_unstable();
        (v.len() == n).then(|| v[v.len() / 2])
    };
    let ms = |d: Option<Duration>| {
        d.map_or("-".to_string(), |d| format!("{:.0}", d.as_secs_f64() * 1e3))
    };
    let ratio = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.1}", a.as_secs_f64() / b.as_secs_f64()),
        _ => "-".into(),
    };
    println!();
    println!(
        "time from meeting to up to date: ms, median of {repeats} (a fresh B each); references: the same URLs on one keep-alive connection"
    );
    println!(
        "  {:<16} {:>6} {:>9} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "case",
        "media",
        "MB",
        "start",
        "from start",
        "from peer",
        "direct",
        "local hit",
        "vs direct",
        "vs local"
    );
    for (label, wanted, bytes, runs) in &results {
        let n = runs.len();
        let start = median(runs.iter().map(|r| r.start).collect(), n);
        let synced = median(runs.iter().filter_map(|r| r.synced).collect(), n);
        let from_peer = median(
            runs.iter()
                .filter_map(|r| Some(r.synced?.saturating_sub(r.peer?)))
                .collect(),
            n,
        );
        let direct = median(runs.iter().map(|r| r.direct).collect(), n);
        let local = median(runs.iter().filter_map(|r| r.local).collect(), n);
        println!(
            "  {:<16} {:>6} {:>9.2} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            label,
            wanted,
            *bytes as f64 / 1e6,
            ms(start),
            ms(synced),
            ms(from_peer),
            ms(direct),
            ms(local),
            ratio(synced, direct),
            ratio(synced, local)
        );
    }
    println!(
        "  (start: B's proxy started; from start / from peer: until B's status showed up_to_date with media_held == media_wanted,"
    );
    println!(
        "   polled every {} ms; direct: GET from the origin; local hit: GET through B after the sync; vs: sync time / reference)",
        POLL.as_millis()
    );
    if let Some((_, _, _, runs)) = results.first() {
        let synced = median(runs.iter().filter_map(|r| r.synced).collect(), runs.len());
        println!(
            "  issue 11's goal for (a) on loopback: ≤ 2000 ms from meeting; measured {} ms from B's start",
            ms(synced)
        );
    }
}

// ---------------------------------------------------------------------------------------
// Part 2: lookups per miss with and without catalogs.

/// Object sizes, the device that fetches each object first, and the Zipf requests as
/// (object, device).
struct Workload {
    sizes: Vec<u64>,
    seed: Vec<usize>,
    requests: Vec<(usize, usize)>,
}

impl Workload {
    fn new(objects: usize, requests: usize) -> Workload {
        let mut rng = Rng(SEED);
        let (lo, hi) = (MIN_SIZE.ln(), MAX_SIZE.ln());
        let sizes: Vec<u64> = (0..objects)
            .map(|_| (lo + rng.unit() * (hi - lo)).exp() as u64)
            .collect();
        let seed = (0..objects).map(|_| rng.below(DEVICES)).collect();
        // Object i has popularity rank i + 1.
        let weights: Vec<f64> = (0..objects)
            .map(|i| 1.0 / ((i + 1) as f64).powf(ZIPF_S))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut cdf = Vec::with_capacity(objects);
        let mut acc = 0.0;
        for w in &weights {
            acc += w / total;
            cdf.push(acc);
        }
        let requests = (0..requests)
            .map(|_| {
                let u = rng.unit();
                let obj = cdf.partition_point(|&c| c < u).min(objects - 1);
                (obj, rng.below(DEVICES))
            })
            .collect();
        Workload {
            sizes,
            seed,
            requests,
        }
    }
}

/// Status figures summed over the devices.
#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    lookups_sent: u64,
    lookups_skipped: u64,
    lookups_answered: u64,
    misses: u64,
}

impl std::ops::Sub for Sums {
    type Output = Sums;
    fn sub(self, o: Sums) -> Sums {
        Sums {
            lookups_sent: self.lookups_sent - o.lookups_sent,
            lookups_skipped: self.lookups_skipped - o.lookups_skipped,
            lookups_answered: self.lookups_answered - o.lookups_answered,
            misses: self.misses - o.misses,
        }
    }
}

async fn sums(devices: &[Device]) -> Sums {
    let mut s = Sums::default();
    for d in devices {
        match status_json(d.addr()).await {
            Ok(v) => {
                s.lookups_sent += num(&v, "mesh_lookups_sent");
                s.lookups_skipped += num(&v, "mesh_lookups_skipped");
                s.lookups_answered += num(&v, "mesh_lookups_answered");
                s.misses += num(&v, "misses");
            }
            Err(e) => println!("  WARNING: status of {}: {e}", d.addr()),
        }
    }
    s
}

/// One phase of one mode.
struct Phase {
    mode: &'static str,
    phase: &'static str,
    by_source: BTreeMap<Source, usize>,
    errors: Vec<String>,
    sums: Sums,
    origin_gets: u64,
    origin_bytes: u64,
    wall: Duration,
    /// Latencies of the requests that were not local hits.
    miss_latency: Vec<Duration>,
}

impl Phase {
    fn requests(&self) -> usize {
        self.by_source.values().sum::<usize>() + self.errors.len()
    }

    /// Requests that were not local hits (errors included).
    fn misses(&self) -> usize {
        self.requests() - self.by_source.get(&Source::Local).copied().unwrap_or(0)
    }

    fn add(&self, o: &Phase, phase: &'static str) -> Phase {
        let mut by_source = self.by_source.clone();
        for (s, n) in &o.by_source {
            *by_source.entry(*s).or_default() += n;
        }
        let mut errors = self.errors.clone();
        errors.extend(o.errors.iter().cloned());
        let mut miss_latency = self.miss_latency.clone();
        miss_latency.extend(o.miss_latency.iter().copied());
        Phase {
            mode: self.mode,
            phase,
            by_source,
            errors,
            sums: Sums {
                lookups_sent: self.sums.lookups_sent + o.sums.lookups_sent,
                lookups_skipped: self.sums.lookups_skipped + o.sums.lookups_skipped,
                lookups_answered: self.sums.lookups_answered + o.sums.lookups_answered,
                misses: self.sums.misses + o.sums.misses,
            },
            origin_gets: self.origin_gets + o.origin_gets,
            origin_bytes: self.origin_bytes + o.origin_bytes,
            wall: self.wall + o.wall,
            miss_latency,
        }
    }
}

/// Runs `requests` (object, device), `in_flight` at a time, each on a new connection.
#[allow(clippy::too_many_arguments)]
async fn phase(
    mode: &'static str,
    name: &'static str,
    w: &Workload,
    origin: &Origin,
    devices: &[Device],
    requests: Vec<(usize, usize)>,
    in_flight: usize,
) -> Phase {
    let addrs: Vec<SocketAddr> = devices.iter().map(|d| d.addr()).collect();
    let before = sums(devices).await;
    let (g0, b0) = origin.served();
    let t = Instant::now();
    let results: Vec<(Duration, Result<Source, String>)> = futures_util::stream::iter(requests)
        .map(|(obj, dev)| {
            let url = origin.url(&format!("/obj/{obj}"));
            let addr = addrs[dev];
            let want = w.sizes[obj];
            async move {
                let t = Instant::now();
                let r = match get_once(addr, &url).await {
                    Ok(g) if g.status == 200 && g.bytes == want => Ok(Source::of(&g.cache_status)),
                    Ok(g) => Err(format!(
                        "{url} on device {dev}: status {}, {} of {want} bytes, {}",
                        g.status, g.bytes, g.cache_status
                    )),
                    Err(e) => Err(format!("{url} on device {dev}: {e}")),
                };
                (t.elapsed(), r)
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let wall = t.elapsed();
    let (g1, b1) = origin.served();
    let after = sums(devices).await;
    let mut by_source = BTreeMap::new();
    let mut errors = Vec::new();
    let mut miss_latency = Vec::new();
    for (took, r) in results {
        match r {
            Ok(s) => {
                *by_source.entry(s).or_default() += 1;
                if s != Source::Local {
                    miss_latency.push(took);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    Phase {
        mode,
        phase: name,
        by_source,
        errors,
        sums: after - before,
        origin_gets: g1 - g0,
        origin_bytes: b1 - b0,
        wall,
        miss_latency,
    }
}

/// The workload on N fresh devices with `mesh.catalogs = catalogs`: the seed phase, then
/// the Zipf phase.
async fn carriage(w: &Workload, origin: &Origin, catalogs: bool) -> (Phase, Phase) {
    let mode = if catalogs { "catalogs" } else { "no catalogs" };
    let group = mesh::Group::generate().expect("group");
    let mut devices = vec![Device::start_mesh(Some(&group), |m| m.catalogs = catalogs).await];
    let first = devices[0].mesh().ticket();
    for _ in 1..DEVICES {
        let t = first.clone();
        devices.push(
            Device::start_mesh(Some(&group), |m| {
                m.peers = vec![t];
                m.catalogs = catalogs;
            })
            .await,
        );
    }
    let t = Instant::now();
    let ok = futures_util::future::join_all(
        devices
            .iter()
            .map(|d| d.mesh().wait_for_peers(DEVICES - 1, PEER_WAIT)),
    )
    .await;
    let formed = t.elapsed();
    if !ok.iter().all(|&b| b) {
        let counts: Vec<String> = devices
            .iter()
            .map(|d| d.mesh().connected_peers().to_string())
            .collect();
        println!(
            "  WARNING ({mode}): not every device has {} peers after {PEER_WAIT:?}: {}",
            DEVICES - 1,
            counts.join(" ")
        );
    }
    let mut held = Vec::new();
    for d in &devices {
        let r = if catalogs {
            wait_status(d.addr(), PEER_WAIT, |v| {
                num(v, "mesh_catalogs") >= (DEVICES - 1) as u64
            })
            .await
        } else {
            status_json(d.addr()).await.map_err(Value::String)
        };
        match r {
            Ok(v) => held.push(num(&v, "mesh_catalogs").to_string()),
            Err(v) => {
                println!(
                    "  WARNING ({mode}): device {} does not hold {} catalogs after {PEER_WAIT:?}: {}",
                    d.addr(),
                    DEVICES - 1,
                    figures(&v)
                );
                held.push("?".into());
            }
        }
    }
    println!(
        "  {mode}: every device had {} peers after {:.2} s; catalogs held per device before the workload: {}",
        DEVICES - 1,
        formed.as_secs_f64(),
        held.join(" ")
    );
    let seed: Vec<(usize, usize)> = w.seed.iter().copied().enumerate().collect();
    let seeded = phase(mode, "seed", w, origin, &devices, seed, 1).await;
    let zipf = phase(
        mode,
        "zipf",
        w,
        origin,
        &devices,
        w.requests.clone(),
        IN_FLIGHT,
    )
    .await;
    for d in devices {
        d.stop().await;
    }
    (seeded, zipf)
}

async fn lookups(objects: usize, requests: usize) {
    let w = Workload::new(objects, requests);
    let total: u64 = w.sizes.iter().sum();
    let distinct = {
        let mut s: Vec<usize> = w.requests.iter().map(|r| r.0).collect();
        s.sort_unstable();
        s.dedup();
        s.len()
    };
    println!();
    println!(
        "lookups per miss: {DEVICES} devices in one group; {objects} objects ({:.1} MiB, log-uniform {:.0}..{:.0} KiB) \
         each fetched first by a random device (seed, one at a time), then {requests} requests (Zipf s={ZIPF_S}, \
         {distinct} distinct objects, the most popular {} times) for random devices, {IN_FLIGHT} in flight, no sleeps",
        total as f64 / (1 << 20) as f64,
        MIN_SIZE / 1024.0,
        MAX_SIZE / 1024.0,
        w.requests.iter().filter(|r| r.0 == 0).count()
    );
    let sizes = w.sizes.clone();
    let route: Route = Arc::new(move |path: &str| {
        let i: usize = path.strip_prefix("/obj/")?.parse().ok()?;
        Some((*sizes.get(i)?, i as u64))
    });
    let origin = Origin::start(route).await;
    let (with_seed, with_zipf) = carriage(&w, &origin, true).await;
    let (without_seed, without_zipf) = carriage(&w, &origin, false).await;
    let with_all = with_seed.add(&with_zipf, "all");
    let without_all = without_seed.add(&without_zipf, "all");

    println!();
    println!(
        "lookups per miss (misses: requests that were not local hits; lookups: mesh_lookups_sent summed over the devices)"
    );
    println!(
        "  {:<12} {:<5} {:>5} {:>6} {:>5} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>11} {:>9} {:>11} {:>7}",
        "mode",
        "phase",
        "reqs",
        "local",
        "peer",
        "origin",
        "misses",
        "(status)",
        "lookups",
        "per miss",
        "skipped",
        "origin GETs",
        "origin MB",
        "miss p50 ms",
        "wall s"
    );
    let rows = [
        &with_seed,
        &with_zipf,
        &with_all,
        &without_seed,
        &without_zipf,
        &without_all,
    ];
    for p in rows {
        let n = |s: Source| p.by_source.get(&s).copied().unwrap_or(0);
        println!(
            "  {:<12} {:<5} {:>5} {:>6} {:>5} {:>6} {:>6} {:>8} {:>8} {:>8.2} {:>8} {:>11} {:>9.2} {:>11} {:>7.2}",
            p.mode,
            p.phase,
            p.requests(),
            n(Source::Local),
            n(Source::Peer),
            n(Source::Origin),
            p.misses(),
            p.sums.misses,
            p.sums.lookups_sent,
            p.sums.lookups_sent as f64 / p.misses().max(1) as f64,
            p.sums.lookups_skipped,
            p.origin_gets,
            p.origin_bytes as f64 / 1e6,
            if p.miss_latency.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1}", common::pct(&p.miss_latency, 50.0) / 1e3)
            },
            p.wall.as_secs_f64()
        );
        if let Some(e) = p.errors.first() {
            println!(
                "  {:<12} {:<5} WARNING: {} errors; first: {e}",
                p.mode,
                p.phase,
                p.errors.len()
            );
        }
    }
    let per = |p: &Phase| p.sums.lookups_sent as f64 / p.misses().max(1) as f64;
    println!(
        "  lookups per miss with catalogs / without: seed {:.2}, zipf {:.2}, all {:.2} (without catalogs a miss asks all {} members)",
        per(&with_seed) / per(&without_seed).max(f64::MIN_POSITIVE),
        per(&with_zipf) / per(&without_zipf).max(f64::MIN_POSITIVE),
        per(&with_all) / per(&without_all).max(f64::MIN_POSITIVE),
        DEVICES - 1
    );
    println!(
        "  origin GETs with catalogs {} vs without {} ({} distinct objects: {} is each fetched once); zipf phase {} vs {}",
        with_all.origin_gets,
        without_all.origin_gets,
        objects,
        objects,
        with_zipf.origin_gets,
        without_zipf.origin_gets
    );
    println!(
        "  (status misses: /status.json `misses` summed, every request that reached the miss path, peer answers included)"
    );
}
