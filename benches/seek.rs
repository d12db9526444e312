//! Seek benchmark: what a video player seeking around a large object costs through
//! meshcache's partial objects, against the same reads straight from the origin.
//!
//! A "player" reads 16 ranges of 2 MiB at fixed pseudo-random offsets, all beyond the
//! first 16 MiB (the default `cache.range_offset_limit`, so the proxy keeps them as a
//! partial object instead of filling the whole object):
//!
//! 1. straight from the origin (the reference), plus one full GET straight from the origin;
//! 2. through the proxy, first time: the first seek is forwarded and its 206 kept
//!    (`fwd=miss; stored; detail=partial`), the others fill holes of that partial object
//!    (`fwd=partial; stored`, asked of the origin with `Range` + `If-Range`);
//! 3. through the proxy again: every one a hit from the partial object
//!    (`hit; detail=partial`), the origin not asked;
//! 4. one full GET through the proxy (the holes asked of the origin, `fwd=partial;
//!    stored`); once `/status.json` shows the object as one complete entry, one more full
//!    GET: a plain `hit`.
//!
//! The proxy is the built `meshcache` binary in its own process (mesh off, loopback only);
//! the origin is in this process (hyper on port 0), honours single `Range`s and `If-Range`
//! with a strong `ETag`, generates its body from a deterministic pattern and counts every
//! body byte it hands to a connection. Every byte a client receives is checked against the
//! pattern; a wrong byte, a wrong status or `Content-Range`, or an unexpected
//! `Cache-Status` is a panic. Figures are ratios against the origin-direct reference
//! measured in the same run; there are no pass/fail thresholds on speed.
//!
//! The scenario runs `ROUNDS` times, each round on a URL of its own (`/video-<n>.bin`, so
//! it starts with nothing held); the table shows medians, ratios taken within a round.
//!
//! `cargo bench --bench seek`. Object size: 256 MiB, or 64 MiB with
//! `MESHCACHE_BENCH_QUICK=1`.

mod common;

use common::process::ProxyProcess;
use common::procfs::{cpu_secs, status_kib};
use common::rng::Rng;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const MIB: u64 = 1 << 20;
const CHUNK: usize = 64 * 1024;
/// Seeks per pass, and the length of each.
const SEEKS: usize = 16;
const SEEK_LEN: u64 = 2 * MIB;
/// The default `cache.range_offset_limit`: seeks start beyond it.
const OFFSET_LIMIT: u64 = 16 * MIB;
/// The scenario is run this many times (each on a URL of its own); the table shows medians.
const ROUNDS: usize = 3;
/// The seed of the seek offsets (the same offsets in every run).
const SEED: u64 = 0x5eec_2026_0b1e_c7a1;
/// How long the completed object may take to become one entry.
const COMPLETE_DEADLINE: Duration = Duration::from_secs(60);

fn main() {
    let quick = common::quick();
    let size = if quick { 64 * MIB } else { 256 * MIB };
    check_range_parser();
    let cores = common::cores();
    common::block_on(cores, run(quick, size, cores));
}

/// One measured phase: its responses and what the proxy and the origin did meanwhile.
struct Phase {
    gets: Vec<Got>,
    /// Proxy CPU seconds (user + sys) during the phase; `None` for origin-direct phases.
    cpu: Option<f64>,
    origin_requests: u64,
    origin_bytes: u64,
}

impl Phase {
    fn bytes(&self) -> u64 {
        self.gets.iter().map(|g| g.bytes).sum()
    }

    /// Body bytes over the sum of the requests' times (sent to last byte).
    fn mb_per_s(&self) -> f64 {
        let secs: f64 = self.gets.iter().map(|g| g.elapsed.as_secs_f64()).sum();
        self.bytes() as f64 / secs / 1e6
    }

    /// First-byte p50, in milliseconds.
    fn ttfb_p50_ms(&self) -> f64 {
        let t: Vec<Duration> = self.gets.iter().map(|g| g.ttfb).collect();
        common::pct(&t, 50.0) / 1000.0
    }

    /// The distinct `Cache-Status` values, with how many responses had each.
    fn statuses(&self) -> String {
        let mut seen: Vec<(String, usize)> = Vec::new();
        for g in &self.gets {
            match seen.iter_mut().find(|(s, _)| *s == g.cache_status) {
                Some((_, n)) => *n += 1,
                None => seen.push((g.cache_status.clone(), 1)),
            }
        }
        seen.iter()
            .map(|(s, n)| format!("{n}× {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What one round found: its phases (in the order of [`LABELS`]) and how the object became
/// an entry.
struct Round {
    phases: Vec<Phase>,
    became_entry: String,
    /// What the origin saw for the proxy in this round.
    origin_log: Vec<String>,
}

const LABELS: [&str; 6] = [
    "origin direct, 16 seeks",
    "origin direct, full GET",
    "proxy, 16 seeks, first time",
    "proxy, 16 seeks again",
    "proxy, full GET (holes filled)",
    "proxy, full GET (complete entry)",
];

async fn run(quick: bool, size: u64, cores: usize) {
    let base = Arc::new(base_block());
    let origin = Origin::start(size, base.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut proxy = ProxyProcess::start(
        dir.path(),
        "[log]\nlevel = \"warn\"\naccess = false\n\n[mesh]\nenabled = false\n",
    );
    let pid = proxy.pid();
    let seeks = seek_offsets(size);

    println!(
        "seek: {} mode, object {} bytes ({} MiB), {SEEKS} seeks of {} MiB beyond {} MiB, {ROUNDS} rounds, {} cores",
        if quick { "quick" } else { "full" },
        size,
        size / MIB,
        SEEK_LEN / MIB,
        OFFSET_LIMIT / MIB,
        cores
    );
    println!(
        "proxy: `meshcache run` as a separate process (pid {pid}) on {}, mesh off; origin {} and the player in this process",
        proxy.addr, origin.addr
    );
    println!(
        "seek offsets (in the order read): {}",
        seeks
            .iter()
            .map(|r| r.start.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let rss_start = status_kib(pid, "VmRSS");
    let cpu_start = cpu_secs(pid);
    let mut rounds = Vec::new();
    for n in 0..ROUNDS {
        let r = round(n, &origin, &proxy, &seeks, size, &base).await;
        rounds.push(r);
    }
    let cpu_total = cpu_secs(pid).zip(cpu_start).map(|(b, a)| b - a);
    let hwm = status_kib(pid, "VmHWM");
    let rss_end = status_kib(pid, "VmRSS");

    // The table: medians over the rounds; ratios taken within each round, then the median.
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!();
    println!("  medians of {ROUNDS} rounds (each round a new URL: the same scenario from an empty cache);");
    println!(
        "  MB = 10^6 bytes; MB/s = body bytes / sum of request times (request sent to last byte);"
    );
    println!("  first byte = request sent to first body byte (p50 over the phase's requests);");
    println!("  vs ref: seeks against the origin-direct seeks, full GETs against the origin-direct full GET,");
    println!("  in the same round; proxy CPU = user+sys seconds the proxy used during the phase;");
    println!("  origin = requests and body bytes it sent (per round)");
    println!(
        "  {:<34} {:>4} {:>7} {:>6} {:>10} {:>6} {:>9} {:>7} {:>10}  cache-status (round 1)",
        "phase", "GETs", "MB/s", "vs ref", "1st byte", "vs ref", "proxy CPU", "origin", "origin"
    );
    println!(
        "  {:<34} {:>4} {:>7} {:>6} {:>10} {:>6} {:>9} {:>7} {:>10}",
        "", "", "", "", "p50 ms", "", "s", "reqs", "MiB"
    );
    for (i, label) in LABELS.iter().enumerate() {
        // Seeks against the first row, full GETs against the second.
        let reference = if i == 1 || i >= 4 { 1 } else { 0 };
        let each = |f: &dyn Fn(&Round) -> f64| median(rounds.iter().map(f).collect());
        let p0 = &rounds[0].phases[i];
        let cpu = p0
            .cpu
            .map(|_| each(&|r| r.phases[i].cpu.unwrap_or(f64::NAN)));
        println!(
            "  {:<34} {:>4} {:>7.0} {:>6.2} {:>10.2} {:>6.2} {:>9} {:>7} {:>10.2}  {}",
            label,
            p0.gets.len(),
            each(&|r| r.phases[i].mb_per_s()),
            each(&|r| r.phases[i].mb_per_s() / r.phases[reference].mb_per_s()),
            each(&|r| r.phases[i].ttfb_p50_ms()),
            each(&|r| r.phases[i].ttfb_p50_ms() / r.phases[reference].ttfb_p50_ms()),
            cpu.map_or("-".into(), |c| format!("{c:.2}")),
            p0.origin_requests,
            p0.origin_bytes as f64 / MIB as f64,
            p0.statuses()
        );
    }

    // What the origin sent for the proxy (phases 2-4), against the object.
    let proxied = |r: &Round| -> (u64, u64) {
        let p = &r.phases[2..];
        (
            p.iter().map(|p| p.origin_bytes).sum(),
            p.iter().map(|p| p.origin_requests).sum(),
        )
    };
    let (bytes, reqs) = proxied(&rounds[0]);
    let same = rounds.iter().all(|r| proxied(r) == (bytes, reqs));
    let all: u64 = rounds
        .iter()
        .flat_map(|r| &r.phases)
        .map(|p| p.origin_bytes)
        .sum();
    let all_reqs: u64 = rounds
        .iter()
        .flat_map(|r| &r.phases)
        .map(|p| p.origin_requests)
        .sum();
    let held = SEEKS as u64 * SEEK_LEN;
    let holes = size - held;
    println!();
    println!(
        "  origin bytes for the proxy (phases 2-4), per round: {bytes} bytes in {reqs} requests = {:.4} × the object \
         ({size} bytes), {} bytes more than one download{}",
        bytes as f64 / size as f64,
        bytes as i64 - size as i64,
        if same {
            format!(" (the same in all {ROUNDS} rounds)")
        } else {
            format!(
                " (rounds differ: {:?})",
                rounds.iter().map(proxied).collect::<Vec<_>>()
            )
        }
    );
    println!(
        "  origin over the whole run (origin-direct references included): {all} bytes in {all_reqs} requests = {:.4} × the object",
        all as f64 / size as f64
    );
    // The span the full GET needed: from the first hole to the last (the seeks sorted by
    // offset; holes lie before, between and after them).
    let mut sorted = seeks.clone();
    sorted.sort_by_key(|r| r.start);
    let first_hole = if sorted[0].start > 0 {
        0
    } else {
        sorted[0].end
    };
    let last_hole = if sorted[SEEKS - 1].end < size {
        size
    } else {
        sorted[SEEKS - 1].start
    };
    let span = last_hole - first_hole;
    println!(
        "  claim \"one download in all\" (origin bytes for phases 2-4 = the object): {}, {:.4} ×",
        if bytes == size { "met" } else { "NOT met" },
        bytes as f64 / size as f64
    );
    println!(
        "  the full GET: the origin sent {} bytes; the holes were {holes} bytes; the span from the \
         first hole to the last ({first_hole}-{}) is {span} bytes, {} of them already held",
        rounds[0].phases[4].origin_bytes,
        last_hole - 1,
        span - holes
    );
    println!("  what the origin saw for the proxy (round 1):");
    for s in &rounds[0].origin_log {
        println!("    {s}");
    }
    for (n, r) in rounds.iter().enumerate() {
        println!("  round {}: {}", n + 1, r.became_entry);
    }
    let mib = |k: Option<u64>| k.map_or("-".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
    println!(
        "  proxy: CPU {} s over the run; memory (MiB): VmRSS at start {}, peak (VmHWM) {}, VmRSS at end {}",
        cpu_total.map_or("-".into(), |c| format!("{c:.2}")),
        mib(rss_start),
        mib(hwm),
        mib(rss_end)
    );
    let log = proxy.log();
    println!("  proxy log: {} warnings, {} errors", log.warn, log.error);
    for l in &log.first {
        println!("    {l}");
    }
    let t = Instant::now();
    let status = proxy.stop();
    println!(
        "  proxy stopped with SIGTERM in {:.2} s: {status}",
        t.elapsed().as_secs_f64()
    );
}

/// One round of the scenario on URL `/video-<n>.bin` (the proxy holds nothing of it yet);
/// panics on a wrong byte, status or `Cache-Status`.
async fn round(
    n: usize,
    origin: &Origin,
    proxy: &ProxyProcess,
    seeks: &[Range<u64>],
    size: u64,
    base: &[u8],
) -> Round {
    let pid = Some(proxy.pid());
    let path = format!("/video-{n}.bin");
    let host = origin.addr.to_string();
    let url = format!("http://{host}{path}");
    let (direct, via) = (origin.addr, proxy.addr);
    let r1 = n + 1;

    // 1. The reference: the seeks and one full GET straight from the origin.
    let mut phases = Vec::new();
    let mut p = origin.begin(None);
    for (i, r) in seeks.iter().enumerate() {
        let what = format!("round {r1}: origin direct seek {i}");
        p.gets
            .push(fetch(direct, &path, &host, Some(r.clone()), size, base, &what).await);
    }
    phases.push(origin.end(p, None));
    let mut p = origin.begin(None);
    let what = format!("round {r1}: origin direct full GET");
    p.gets
        .push(fetch(direct, &path, &host, None, size, base, &what).await);
    phases.push(origin.end(p, None));
    let after_reference = origin.log_len();

    // 2. The seeks through the proxy, first time: each kept in the partial object.
    let mut p = origin.begin(pid);
    for (i, r) in seeks.iter().enumerate() {
        let what = format!("round {r1}: first-time seek {i} through the proxy");
        let g = fetch(via, &url, &host, Some(r.clone()), size, base, &what).await;
        let cs = params(&g.cache_status);
        let kept_miss = i == 0 && has(&cs, &["fwd=miss", "stored", "detail=partial"]);
        let kept_fill = i > 0 && has(&cs, &["fwd=partial", "stored"]);
        assert!(
            kept_miss || kept_fill,
            "{what} (bytes={}-{}): Cache-Status {:?}; expected {}",
            r.start,
            r.end - 1,
            g.cache_status,
            if i == 0 {
                "`fwd=miss; stored; detail=partial` (the seek forwarded, its 206 kept)"
            } else {
                "`fwd=partial; stored` (a hole of the partial object filled from the origin)"
            }
        );
        p.gets.push(g);
    }
    let p2 = origin.end(p, pid);
    assert_eq!(
        p2.origin_requests, SEEKS as u64,
        "round {r1}: first-time seeks: the origin saw {} requests, one per seek expected",
        p2.origin_requests
    );
    phases.push(p2);

    // 3. The same seeks again: hits from the partial object, the origin not asked.
    let mut p = origin.begin(pid);
    for (i, r) in seeks.iter().enumerate() {
        let what = format!("round {r1}: repeated seek {i} through the proxy");
        let g = fetch(via, &url, &host, Some(r.clone()), size, base, &what).await;
        assert!(
            params(&g.cache_status) == ["hit", "detail=partial"],
            "{what} (bytes={}-{}): Cache-Status {:?}, expected `meshcache; hit; detail=partial`",
            r.start,
            r.end - 1,
            g.cache_status
        );
        p.gets.push(g);
    }
    let p3 = origin.end(p, pid);
    assert!(
        p3.origin_requests == 0 && p3.origin_bytes == 0,
        "round {r1}: repeated seeks: the origin was asked {} times ({} bytes); every byte was held",
        p3.origin_requests,
        p3.origin_bytes
    );
    phases.push(p3);

    // 4. One full GET through the proxy: the holes asked of the origin.
    let mut p = origin.begin(pid);
    let what = format!("round {r1}: full GET through the proxy");
    let g = fetch(via, &url, &host, None, size, base, &what).await;
    assert!(
        has(&params(&g.cache_status), &["fwd=partial", "stored"]),
        "{what}: Cache-Status {:?}, expected `fwd=partial; stored`",
        g.cache_status
    );
    let filled_at = Instant::now();
    p.gets.push(g);
    phases.push(origin.end(p, pid));

    // Until the partial object is one complete entry (this round's is the n+1-th), then a
    // plain hit.
    let became_entry = wait_complete(via, n as u64 + 1, filled_at).await;
    let mut p = origin.begin(pid);
    let what = format!("round {r1}: full GET of the completed entry");
    let g = fetch(via, &url, &host, None, size, base, &what).await;
    let cs = params(&g.cache_status);
    assert!(
        cs.first().map(String::as_str) == Some("hit")
            && !cs
                .iter()
                .any(|c| c.starts_with("fwd") || c.contains("partial") || c.contains("collapsed")),
        "{what}: Cache-Status {:?}, expected a plain `meshcache; hit`",
        g.cache_status
    );
    p.gets.push(g);
    let p5 = origin.end(p, pid);
    assert!(
        p5.origin_requests == 0,
        "{what}: the origin was asked {} times",
        p5.origin_requests
    );
    phases.push(p5);
    Round {
        phases,
        became_entry,
        origin_log: origin.log_since(after_reference),
    }
}

/// The `Cache-Status` parameters after `meshcache` (`hit`, `fwd=partial`, `stored`, …).
fn params(cache_status: &str) -> Vec<String> {
    let mut it = cache_status.split(';').map(|s| s.trim().to_owned());
    match it.next().as_deref() {
        Some("meshcache") => it.collect(),
        _ => vec![format!("not meshcache's: {cache_status}")],
    }
}

fn has(params: &[String], want: &[&str]) -> bool {
    want.iter().all(|w| params.iter().any(|p| p == w))
}

/// The seeks: one in each of 16 equal slots beyond `OFFSET_LIMIT`, at a pseudo-random
/// offset inside it (never touching the next: a hole between any two), read in a
/// pseudo-random order.
fn seek_offsets(size: u64) -> Vec<Range<u64>> {
    let lo = OFFSET_LIMIT + 1;
    let slot = (size - lo) / SEEKS as u64;
    assert!(
        slot > SEEK_LEN + 1,
        "object of {size} bytes too small for {SEEKS} seeks of {SEEK_LEN} beyond {OFFSET_LIMIT}"
    );
    let mut rng = Rng(SEED);
    let mut v: Vec<Range<u64>> = (0..SEEKS as u64)
        .map(|i| {
            let a = lo + i * slot + rng.next() % (slot - SEEK_LEN - 1);
            a..a + SEEK_LEN
        })
        .collect();
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
    v
}

/// The proxy's `/status.json` (an admin client's), asked through the proxy.
async fn status_json(proxy: SocketAddr) -> Result<serde_json::Value, String> {
    let mut conn = common::devices::Conn::open(proxy).await?;
    let body = conn.get_body("http://meshcache.local/status.json").await?;
    serde_json::from_slice(&body).map_err(|e| format!("status.json: {e}"))
}

/// Polls `/status.json` until no partial object is left and one variant is stored (the
/// partial object became a complete entry); panics after [`COMPLETE_DEADLINE`].
async fn wait_complete(proxy: SocketAddr, variants_then: u64, since: Instant) -> String {
    let deadline = Instant::now() + COMPLETE_DEADLINE;
    let mut last = String::new();
    let mut polls = 0;
    while Instant::now() < deadline {
        polls += 1;
        match status_json(proxy).await {
            Ok(v) => {
                let (partial, variants) =
                    (v["partial_objects"].as_u64(), v["stored_variants"].as_u64());
                if partial == Some(0) && variants == Some(variants_then) {
                    return format!(
                        "complete entry: /status.json showed partial_objects 0, stored_variants {variants_then} \
                         {:.2} s after the full GET's last byte ({polls} polls)",
                        since.elapsed().as_secs_f64()
                    );
                }
                last = format!("partial_objects {partial:?}, stored_variants {variants:?}");
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "the filled partial object did not become one complete entry within {COMPLETE_DEADLINE:?} \
         of the full GET (last /status.json: {last})"
    );
}

// ---------------------------------------------------------------------------------------
// The body pattern: chunk `c` (64 KiB) is the base block with its first 8 bytes xored with
// `c` (little-endian), so misplaced or repeated chunks show; the base block's own period
// (131,072 bytes) is longer than a chunk, so a shift inside one shows too.

fn base_block() -> Vec<u8> {
    (0..CHUNK as u64)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8)
        .collect()
}

/// The object's bytes `pos..pos + len`, inside one chunk.
fn pattern(base: &[u8], pos: u64, len: usize) -> Bytes {
    let off = (pos % CHUNK as u64) as usize;
    debug_assert!(off + len <= CHUNK);
    let stamp = (pos / CHUNK as u64).to_le_bytes();
    let mut v = base[off..off + len].to_vec();
    for (j, b) in v.iter_mut().enumerate().take(8usize.saturating_sub(off)) {
        *b ^= stamp[off + j];
    }
    Bytes::from(v)
}

/// Checks received bytes against the pattern as they arrive, from `pos`.
struct Verifier<'a> {
    base: &'a [u8],
    pos: u64,
    first_mismatch: Option<(u64, u8, u8)>,
}

impl Verifier<'_> {
    fn feed(&mut self, mut d: &[u8]) {
        while !d.is_empty() {
            let off = (self.pos % CHUNK as u64) as usize;
            let n = d.len().min(CHUNK - off);
            let (seg, rest) = d.split_at(n);
            if self.first_mismatch.is_none() {
                let want = pattern(self.base, self.pos, n);
                if seg != &want[..] {
                    let j = seg.iter().zip(&want[..]).position(|(a, b)| a != b).unwrap();
                    self.first_mismatch = Some((self.pos + j as u64, seg[j], want[j]));
                }
            }
            self.pos += n as u64;
            d = rest;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The origin: `/video-<n>.bin` are the objects (one per round); single ranges (`bytes=a-b`, `bytes=a-`, `bytes=-n`)
// answered with 206 and `Content-Range`, `If-Range` with the strong `ETag`; every request
// and every body byte handed to a connection counted.

struct Origin {
    addr: SocketAddr,
    seen: Arc<Seen>,
}

#[derive(Default)]
struct Seen {
    requests: AtomicU64,
    /// Body bytes handed to connections, all requests together.
    bytes: Arc<AtomicU64>,
    log: Mutex<Vec<Asked>>,
}

/// One request the origin answered.
struct Asked {
    method: Method,
    range: Option<String>,
    if_range: Option<String>,
    status: u16,
    span: Option<Range<u64>>,
    /// Body bytes handed to the connection for it.
    sent: Arc<AtomicU64>,
}

impl std::fmt::Display for Asked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} Range: {} If-Range: {} -> {}",
            self.method,
            self.range.as_deref().unwrap_or("-"),
            self.if_range.as_deref().unwrap_or("-"),
            self.status
        )?;
        if let Some(s) = &self.span {
            write!(f, " bytes {}-{}", s.start, s.end.saturating_sub(1))?;
        }
        write!(f, ", {} body bytes sent", self.sent.load(Ordering::Relaxed))
    }
}

type OriginBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

impl Origin {
    async fn start(size: u64, base: Arc<Vec<u8>>) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let counters = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (base, seen) = (base.clone(), counters.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let res = answer(&req, size, base.clone(), &seen);
                        async move { Ok::<_, Infallible>(res) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Origin { addr, seen }
    }

    fn log_len(&self) -> usize {
        self.seen.log.lock().unwrap().len()
    }

    fn log_since(&self, from: usize) -> Vec<String> {
        self.seen.log.lock().unwrap()[from..]
            .iter()
            .map(|a| a.to_string())
            .collect()
    }

    /// A phase starts: the origin's counters and the proxy's CPU now.
    fn begin(&self, proxy: Option<u32>) -> Phase {
        Phase {
            gets: Vec::new(),
            cpu: proxy.and_then(cpu_secs),
            origin_requests: self.seen.requests.load(Ordering::SeqCst),
            origin_bytes: self.seen.bytes.load(Ordering::SeqCst),
        }
    }

    /// A phase ends: what the origin and the proxy did since [`Origin::begin`].
    fn end(&self, mut p: Phase, proxy: Option<u32>) -> Phase {
        p.cpu = proxy.and_then(cpu_secs).zip(p.cpu).map(|(b, a)| b - a);
        p.origin_requests = self.seen.requests.load(Ordering::SeqCst) - p.origin_requests;
        p.origin_bytes = self.seen.bytes.load(Ordering::SeqCst) - p.origin_bytes;
        p
    }
}

/// What a `Range` asks of an object of `size` bytes.
#[derive(Debug, PartialEq)]
enum Asks {
    /// No range this origin answers (malformed, or several): the whole object, 200.
    Whole,
    Span(Range<u64>),
    Unsatisfiable,
}

/// One byte range (`bytes=a-b`, `bytes=a-`, `bytes=-n`); anything else is ignored.
fn parse_range(v: &str, size: u64) -> Asks {
    let Some(spec) = v
        .trim()
        .split_once('=')
        .filter(|(unit, _)| unit.trim().eq_ignore_ascii_case("bytes"))
        .map(|(_, s)| s.trim())
    else {
        return Asks::Whole;
    };
    if spec.contains(',') {
        return Asks::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Asks::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.trim(), b.trim()) {
        ("", n) => match num(n) {
            Some(0) => Asks::Unsatisfiable,
            Some(_) if size == 0 => Asks::Unsatisfiable,
            Some(n) => Asks::Span(size.saturating_sub(n)..size),
            None => Asks::Whole,
        },
        (a, "") => match num(a) {
            Some(a) if a >= size => Asks::Unsatisfiable,
            Some(a) => Asks::Span(a..size),
            None => Asks::Whole,
        },
        (a, b) => match (num(a), num(b)) {
            (Some(a), Some(b)) if b < a => Asks::Whole,
            (Some(a), Some(_)) if a >= size => Asks::Unsatisfiable,
            (Some(a), Some(b)) => Asks::Span(a..(b + 1).min(size)),
            _ => Asks::Whole,
        },
    }
}

fn check_range_parser() {
    let s = 1000;
    assert_eq!(parse_range("bytes=0-99", s), Asks::Span(0..100));
    assert_eq!(parse_range("bytes=990-2000", s), Asks::Span(990..1000));
    assert_eq!(parse_range("bytes=900-", s), Asks::Span(900..1000));
    assert_eq!(parse_range("bytes=-100", s), Asks::Span(900..1000));
    assert_eq!(parse_range("bytes=-5000", s), Asks::Span(0..1000));
    assert_eq!(parse_range("bytes=1000-", s), Asks::Unsatisfiable);
    assert_eq!(parse_range("bytes=-0", s), Asks::Unsatisfiable);
    assert_eq!(parse_range("bytes=5-4", s), Asks::Whole);
    assert_eq!(parse_range("bytes=0-1,5-6", s), Asks::Whole);
    assert_eq!(parse_range("items=0-1", s), Asks::Whole);
}

/// The object at `path` (`/video-<n>.bin`), by its strong validator; `None` for any
/// other path. Every such object has the same bytes (the pattern), each its own `ETag`.
fn etag(path: &str, size: u64) -> Option<String> {
    let n = path.strip_prefix("/video-")?.strip_suffix(".bin")?;
    n.bytes()
        .all(|c| c.is_ascii_digit())
        .then(|| format!("\"seek-{n}-{size}-v1\""))
}

fn answer(
    req: &Request<Incoming>,
    size: u64,
    base: Arc<Vec<u8>>,
    seen: &Seen,
) -> Response<OriginBody> {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    let header = |n: &str| {
        req.headers()
            .get(n)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let mut asked = Asked {
        method: req.method().clone(),
        range: header("range"),
        if_range: header("if-range"),
        status: 404,
        span: None,
        sent: Arc::new(AtomicU64::new(0)),
    };
    let tag = etag(req.uri().path(), size);
    let res = if let (Some(tag), true) = (tag, matches!(*req.method(), Method::GET | Method::HEAD))
    {
        // If-Range: the range only of this very representation (strong comparison).
        let current = asked.if_range.as_deref().is_none_or(|v| v.trim() == tag);
        let asks = match (&asked.range, current) {
            (Some(r), true) => parse_range(r, size),
            _ => Asks::Whole,
        };
        let b = Response::builder()
            .header("content-type", "video/mp4")
            .header("cache-control", "max-age=3600")
            .header("etag", tag.as_str())
            .header("accept-ranges", "bytes");
        match asks {
            Asks::Unsatisfiable => {
                asked.status = 416;
                b.status(416)
                    .header("content-range", format!("bytes */{size}"))
                    .body(Empty::new().boxed_unsync())
                    .unwrap()
            }
            Asks::Whole | Asks::Span(_) => {
                let (status, span) = match asks {
                    Asks::Span(r) => (206, r),
                    _ => (200, 0..size),
                };
                asked.status = status;
                asked.span = Some(span.clone());
                let mut b = b
                    .status(status)
                    .header("content-length", span.end - span.start);
                if status == 206 {
                    b = b.header(
                        "content-range",
                        format!("bytes {}-{}/{size}", span.start, span.end - 1),
                    );
                }
                if req.method() == Method::HEAD {
                    b.body(Empty::new().boxed_unsync()).unwrap()
                } else {
                    let mine = asked.sent.clone();
                    let total = seen.bytes.clone();
                    b.body(body(base, span, mine, total)).unwrap()
                }
            }
        }
    } else {
        Response::builder()
            .status(404)
            .body(Empty::new().boxed_unsync())
            .unwrap()
    };
    seen.log.lock().unwrap().push(asked);
    res
}

/// Bytes `span` of the object, generated a chunk at a time as the connection takes them.
fn body(
    base: Arc<Vec<u8>>,
    span: Range<u64>,
    mine: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
) -> OriginBody {
    let chunks = futures_util::stream::unfold(span.start, move |pos| {
        let (base, mine, total) = (base.clone(), mine.clone(), total.clone());
        let end = span.end;
        async move {
            if pos >= end {
                return None;
            }
            let n = (end - pos).min(CHUNK as u64 - pos % CHUNK as u64) as usize;
            mine.fetch_add(n as u64, Ordering::Relaxed);
            total.fetch_add(n as u64, Ordering::SeqCst);
            let data = pattern(&base, pos, n);
            Some((Ok::<_, Infallible>(Frame::data(data)), pos + n as u64))
        }
    });
    StreamBody::new(chunks.boxed()).boxed_unsync()
}

// ---------------------------------------------------------------------------------------
// The player

/// One response, its body received and checked.
struct Got {
    cache_status: String,
    bytes: u64,
    ttfb: Duration,
    elapsed: Duration,
}

/// GETs `target` (origin-form path or absolute URL) from `addr` on a new connection, with
/// `Range: bytes=a-b` for `range`; checks status, `Content-Range`, `Content-Length` and
/// every body byte, and panics on anything wrong, naming `what`.
async fn fetch(
    addr: SocketAddr,
    target: &str,
    host: &str,
    range: Option<Range<u64>>,
    size: u64,
    base: &[u8],
    what: &str,
) -> Got {
    let stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{what}: connect {addr}: {e}"));
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap_or_else(|e| panic!("{what}: handshake: {e}"));
    tokio::spawn(conn);
    let mut req = Request::builder().uri(target).header("host", host);
    if let Some(r) = &range {
        req = req.header("range", format!("bytes={}-{}", r.start, r.end - 1));
    }
    let req = req.body(Empty::<Bytes>::new()).unwrap();
    let start = Instant::now();
    let res = send
        .send_request(req)
        .await
        .unwrap_or_else(|e| panic!("{what}: request: {e}"));
    let get = |n: &str| {
        res.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let cache_status = get("cache-status").unwrap_or_else(|| "-".into());
    let want = range.clone().unwrap_or(0..size);
    let (status, content_range) = match &range {
        Some(r) => (
            StatusCode::PARTIAL_CONTENT,
            Some(format!("bytes {}-{}/{size}", r.start, r.end - 1)),
        ),
        None => (StatusCode::OK, None),
    };
    assert!(
        res.status() == status && get("content-range") == content_range,
        "{what}: status {} Content-Range {:?} (Cache-Status {cache_status:?}), expected {status} {content_range:?}",
        res.status(),
        get("content-range")
    );
    let len = want.end - want.start;
    assert!(
        get("content-length").and_then(|v| v.parse().ok()) == Some(len),
        "{what}: Content-Length {:?}, expected {len} (Cache-Status {cache_status:?})",
        get("content-length")
    );
    let mut body = res.into_body();
    let mut v = Verifier {
        base,
        pos: want.start,
        first_mismatch: None,
    };
    let mut ttfb = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap_or_else(|e| {
            panic!(
                "{what}: body failed after {} of {len} bytes (Cache-Status {cache_status:?}): {e}",
                v.pos - want.start
            )
        });
        if let Some(data) = frame.data_ref() {
            ttfb.get_or_insert_with(|| start.elapsed());
            v.feed(data);
        }
    }
    let elapsed = start.elapsed();
    if let Some((at, got, expected)) = v.first_mismatch {
        panic!(
            "{what}: wrong byte at offset {at} of the object (byte {} of the response): {got:#04x}, \
             expected {expected:#04x} (Cache-Status {cache_status:?})",
            at - want.start
        );
    }
    let bytes = v.pos - want.start;
    assert!(
        bytes == len,
        "{what}: {bytes} body bytes, {len} expected (Cache-Status {cache_status:?})"
    );
    Got {
        cache_status,
        bytes,
        ttfb: ttfb.unwrap_or(elapsed),
        elapsed,
    }
}
