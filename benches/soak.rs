//! Soak run: the built `meshcache` binary under mixed traffic for a long time (30 minutes by
//! default), restarted once half-way, watched from /proc. Does its memory, its open
//! descriptors or its store on disk grow, and does any body it serves differ from what
//! the origin sent?
//!
//! The proxy runs in its own process ([`ProxyProcess`], its own temporary data directory,
//! `cache.max_size` small so that eviction runs all the time, mesh off). The origin (hyper,
//! on 127.0.0.1:0) and the client tasks are in this process. Every body is generated from
//! its URL (and, for revalidated URLs, from the version in its `ETag`), so each client
//! checks every byte it receives against what the origin sends for that URL — complete
//! bodies, ranges and the prefix of abandoned ones. A body that differs, or that ends
//! cleanly but short, is a **mismatch**: the bench exits non-zero if there is one.
//!
//! The traffic, per request of each client task (weights in [`ACTIONS`]):
//! - `hit`: one of 200 small objects (1–64 KiB), `max-age=3600` — hits once stored;
//! - `hit-large`: one of 8 large objects (1–4 MiB);
//! - `miss`: a URL never asked before (mostly 1–64 KiB, one in ten 256 KiB–1 MiB): these
//!   fill the store and keep eviction busy;
//! - `range`: one range (`a-b`, `a-` or `-n`) of a hot object: a 206 whose `Content-Range`
//!   and bytes are checked;
//! - `revalidate`: one of 50 objects with `max-age=0` and an `ETag` whose version changes
//!   every 20 s: the proxy revalidates each time (mostly 304s from the origin, a new body
//!   when the version moved); a quarter of them carry the client's own `If-None-Match`;
//! - `abort`: a large object (hot, or one in five a new URL of 0.5–2 MiB, whose fill goes
//!   on without the client) of which the client reads a part, then closes the connection;
//! - `reset`: an object whose origin kills the connection mid-body on two requests in
//!   three (half of them one of 20 hot URLs of 64 KiB–1 MiB — once a complete copy is stored
//!   they are hits —, half new URLs of 64–512 KiB). A failed request here is expected; a short or wrong body is not.
//!
//! Half-way through, the proxy is stopped with SIGTERM and started again on the same data
//! directory (a new port; clients reconnect). Requests that fail while it is down are
//! counted as `restart`, not as errors.
//!
//! Every `SOAK_SAMPLE_SECS` the bench samples /proc/<pid> (VmRSS, number of open
//! descriptors, CPU), the disk usage of the data directory (allocated blocks, as `du`),
//! the proxy's `/status.json` (bytes its index holds, evictions), and the clients' counts.
//! At the end: the table of samples, the responses by `Cache-Status`, the errors by kind,
//! and a summary per proxy lifetime — start (first sample after the warm-up), end (last
//! sample), max — with verdicts:
//! - RSS grew if end − start > max(20 % of start, 16 MiB);
//! - descriptors grew if end − start > 2 × clients + 16 (each client has at most one
//!   connection to the proxy, and the proxy one to the origin for it);
//! - the store is within its limit if at every sample the disk usage of the data directory
//!   ≤ `cache.max_size` + overhead, the overhead being 32 MiB (the two redb databases —
//!   index and body store —, iroh-blobs' outboards, the CA) + 2 × clients × the largest
//!   object (spool files of fills under way and their copy being imported) + what the
//!   origin sent in the last `gc` + one sample interval (evicted bodies stay on disk until
//!   the body store's garbage collection, every 30 s, deletes them); and the index never
//!   holds more than `cache.max_size` + clients × the largest object (eviction runs after a
//!   commit that went over the limit).
//!
//! Verdicts are printed, not enforced: the exit status is non-zero only for mismatches.
//!
//! `cargo bench --bench soak`. Environment:
//! - `SOAK_SECS` — length of the run, default 1800 (the restart is at half of it);
//! - `SOAK_SAMPLE_SECS` — sample interval, default 10;
//! - `SOAK_WARMUP_SECS` — warm-up after each start, default a tenth of the run, at most 120;
//! - `SOAK_CLIENTS` — concurrent client tasks, default 8;
//! - `SOAK_CACHE_MAX` — `cache.max_size` as the config takes it, default `"96MiB"`;
//! - `SOAK_THINK_MS` — mean pause of a client between two requests, default 50.

mod common;

use common::process::{ProxyLog, ProxyProcess};
use common::{pct, procfs};

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// Hot sets: how many distinct URLs of each kind are asked for again and again.
const HOT_SMALL: u64 = 200;
const HOT_LARGE: u64 = 8;
const HOT_REVALIDATE: u64 = 50;
const HOT_RESET: u64 = 20;
/// The largest object of the run (`hit-large`, `abort` of a new URL).
const MAX_OBJECT: u64 = 4 * MIB;
/// A revalidated object's version (in its `ETag`) changes this often.
const VERSION_PERIOD_S: u64 = 20;
/// The origin's generated bodies go out this much at a time.
const CHUNK: u64 = 64 * KIB;
/// A request (head and whole body) that takes longer is an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The body store's garbage collection interval (`cache::Options::gc_interval`).
const GC_INTERVAL_S: u64 = 30;
/// Fixed part of the documented store overhead (databases, outboards, CA).
const STORE_FIXED_OVERHEAD: u64 = 32 * MIB;

// ---------------------------------------------------------------------------------------
// The plan

struct Plan {
    secs: u64,
    sample: u64,
    warmup: u64,
    clients: usize,
    cache_max: String,
    cache_max_bytes: u64,
    think_ms: u64,
}

impl Plan {
    fn from_env() -> Plan {
        fn num(var: &str, default: u64) -> u64 {
            match std::env::var(var) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{var}: a whole number, not {v:?}")),
                Err(_) => default,
            }
        }
        let secs = num("SOAK_SECS", 1800).max(1);
        let sample = num("SOAK_SAMPLE_SECS", 10).max(1);
        let warmup = num("SOAK_WARMUP_SECS", (secs / 10).min(120));
        let cache_max = std::env::var("SOAK_CACHE_MAX").unwrap_or_else(|_| "96MiB".into());
        let cache_max_bytes = cache_max
            .parse::<config::ByteSize>()
            .unwrap_or_else(|e| panic!("SOAK_CACHE_MAX {cache_max:?}: {e}"))
            .bytes();
        assert!(
            cache_max_bytes >= 2 * MAX_OBJECT,
            "SOAK_CACHE_MAX: at least {} MiB (twice the largest object)",
            2 * MAX_OBJECT / MIB
        );
        Plan {
            secs,
            sample,
            warmup,
            clients: num("SOAK_CLIENTS", 8).max(1) as usize,
            cache_max,
            cache_max_bytes,
            think_ms: num("SOAK_THINK_MS", 50),
        }
    }

    fn config(&self) -> String {
        format!(
            r#"[cache]
max_size = "{}"
max_object_size = "{}MiB"
memory_cache_size = "16MiB"

[log]
level = "warn"
access = false

[mesh]
enabled = false
"#,
            self.cache_max,
            2 * MAX_OBJECT / MIB
        )
    }

    /// What the store may hold on disk beyond `cache.max_size`, `recent_origin` being what
    /// the origin sent in the last GC interval and sample (see the module docs).
    fn store_overhead(&self, recent_origin: u64) -> u64 {
        STORE_FIXED_OVERHEAD + 2 * self.clients as u64 * MAX_OBJECT + recent_origin
    }

    fn fd_tolerance(&self) -> i64 {
        2 * self.clients as i64 + 16
    }
}

fn rss_tolerance_kib(start_kib: u64) -> u64 {
    (start_kib / 5).max(16 * 1024)
}

// ---------------------------------------------------------------------------------------
// Bodies: every byte follows from the URL

/// The kinds of object the origin serves, by the first segment of the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `/s/…`, `/l/…`, `/u/…`: plain, `max-age=3600`.
    Plain(u8),
    /// `/v/…`: `max-age=0` and a versioned `ETag`.
    Revalidate,
    /// `/x/…`: the origin resets two requests in three mid-body.
    Reset,
}

/// An object: `/<kind>/<id>/<size>`.
#[derive(Debug, Clone, Copy)]
struct Obj {
    kind: Kind,
    id: u64,
    size: u64,
}

impl Obj {
    fn letter(&self) -> u8 {
        match self.kind {
            Kind::Plain(c) => c,
            Kind::Revalidate => b'v',
            Kind::Reset => b'x',
        }
    }

    fn path(&self) -> String {
        format!("/{}/{}/{}", self.letter() as char, self.id, self.size)
    }

    fn parse(path: &str) -> Option<Obj> {
        let mut it = path.strip_prefix('/')?.split('/');
        let kind = match it.next()? {
            "s" => Kind::Plain(b's'),
            "l" => Kind::Plain(b'l'),
            "u" => Kind::Plain(b'u'),
            "v" => Kind::Revalidate,
            "x" => Kind::Reset,
            _ => return None,
        };
        let id = it.next()?.parse().ok()?;
        let size = it.next()?.parse().ok()?;
        if it.next().is_some() {
            return None;
        }
        Some(Obj { kind, id, size })
    }

    /// The seed of the body of version `version` (0 unless revalidated).
    fn seed(&self, version: u64) -> u64 {
        mix(mix(self.letter() as u64) ^ mix(self.id) ^ version.wrapping_mul(0xA24B_AED4_963E_E407))
    }

    /// A hot object: its size follows from its kind and id.
    fn hot(kind: Kind, id: u64) -> Obj {
        let mut o = Obj { kind, id, size: 0 };
        let h = mix(o.seed(u64::MAX));
        o.size = match kind {
            Kind::Plain(b'l') => MIB + h % (MAX_OBJECT - MIB),
            Kind::Plain(_) => KIB + h % (63 * KIB),
            Kind::Revalidate => 512 + h % (32 * KIB),
            Kind::Reset => 64 * KIB + h % MIB,
        };
        o
    }
}

/// The `ETag` of version `v` of revalidated object `id`, and back.
fn etag(id: u64, v: u64) -> String {
    format!("\"v{id}.{v}\"")
}

fn etag_version(tag: &str) -> Option<u64> {
    tag.trim_start_matches("W/")
        .trim_matches('"')
        .split_once('.')?
        .1
        .parse()
        .ok()
}

/// splitmix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Byte `pos` of a body with `seed` is byte `pos % 8` of word `pos / 8`.
fn word(seed: u64, i: u64) -> [u8; 8] {
    mix(seed ^ i.wrapping_mul(0xD6E8_FEB8_6659_FD93)).to_le_bytes()
}

/// Bytes `pos..pos + out.len()` of the body with `seed`.
fn fill(seed: u64, mut pos: u64, out: &mut [u8]) {
    let mut i = 0;
    while i < out.len() {
        let w = word(seed, pos >> 3);
        let s = (pos & 7) as usize;
        let n = (8 - s).min(out.len() - i);
        out[i..i + n].copy_from_slice(&w[s..s + n]);
        i += n;
        pos += n as u64;
    }
}

/// The offset in `data` of its first byte that differs from the body with `seed` at `pos`.
fn first_difference(seed: u64, mut pos: u64, data: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < data.len() {
        let w = word(seed, pos >> 3);
        let s = (pos & 7) as usize;
        let n = (8 - s).min(data.len() - i);
        if data[i..i + n] != w[s..s + n] {
            return (0..n).find(|&k| data[i + k] != w[s + k]).map(|k| i + k);
        }
        i += n;
        pos += n as u64;
    }
    None
}

/// Version of revalidated object `id` now (each id moves at its own moment).
fn current_version(id: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    (now + id * 7) / VERSION_PERIOD_S
}

// ---------------------------------------------------------------------------------------
// Origin

#[derive(Default)]
struct OriginStats {
    requests: AtomicU64,
    not_modified: AtomicU64,
    resets: AtomicU64,
    bytes: AtomicU64,
}

type OriginBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

async fn start_origin(stats: Arc<OriginStats>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let stats = stats.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let r = answer(&req, &stats);
                    async move { Ok::<_, std::convert::Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn empty_body() -> OriginBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

fn answer(req: &Request<Incoming>, stats: &Arc<OriginStats>) -> Response<OriginBody> {
    let Some(obj) = Obj::parse(req.uri().path()) else {
        return Response::builder().status(404).body(empty_body()).unwrap();
    };
    let n = stats.requests.fetch_add(1, Ordering::Relaxed);
    let mut head = Response::builder().header("content-type", "application/octet-stream");
    let mut version = 0;
    if obj.kind == Kind::Revalidate {
        version = current_version(obj.id);
        let tag = etag(obj.id, version);
        let matches = req
            .headers()
            .get_all(hyper::header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
        head = head
            .header("cache-control", "max-age=0")
            .header("etag", &tag);
        if matches {
            stats.not_modified.fetch_add(1, Ordering::Relaxed);
            return head.status(304).body(empty_body()).unwrap();
        }
    } else {
        head = head.header("cache-control", "max-age=3600");
    }
    head = head.header("content-length", obj.size);
    if req.method() == hyper::Method::HEAD {
        return head.body(empty_body()).unwrap();
    }
    // Resets: two requests in three, somewhere in the middle of the body.
    let cut = (obj.kind == Kind::Reset && mix(n) % 3 != 0).then(|| {
        stats.resets.fetch_add(1, Ordering::Relaxed);
        obj.size / 8 + mix(n ^ 1) % (obj.size * 3 / 4).max(1)
    });
    let end = cut.unwrap_or(obj.size);
    let seed = obj.seed(version);
    let stats = stats.clone();
    let chunks = futures_util::stream::unfold(Some(0u64), move |pos| {
        let stats = stats.clone();
        async move {
            let pos = pos?;
            if pos >= end {
                // The end of a reset body: an error makes hyper drop the connection.
                return cut.map(|_| {
                    let e = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "soak reset");
                    (Err(e), None)
                });
            }
            let n = (end - pos).min(CHUNK) as usize;
            let mut v = vec![0u8; n];
            fill(seed, pos, &mut v);
            stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
            Some((Ok(Frame::data(Bytes::from(v))), Some(pos + n as u64)))
        }
    });
    head.body(http_body_util::StreamBody::new(chunks.boxed()).boxed_unsync())
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Clients

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Hit,
    HitLarge,
    Miss,
    Range,
    Revalidate,
    Abort,
    Reset,
}

/// The mix: each request of a client is one of these, with these weights.
const ACTIONS: [(Action, u64); 7] = [
    (Action::Hit, 40),
    (Action::HitLarge, 6),
    (Action::Miss, 14),
    (Action::Range, 12),
    (Action::Revalidate, 16),
    (Action::Abort, 5),
    (Action::Reset, 7),
];

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Hit => "hit",
            Action::HitLarge => "hit-large",
            Action::Miss => "miss",
            Action::Range => "range",
            Action::Revalidate => "revalidate",
            Action::Abort => "abort",
            Action::Reset => "reset",
        }
    }

    fn pick(rng: &mut Rng) -> Action {
        let total: u64 = ACTIONS.iter().map(|a| a.1).sum();
        let mut r = rng.below(total);
        for (a, w) in ACTIONS {
            if r < w {
                return a;
            }
            r -= w;
        }
        unreachable!()
    }
}

/// xorshift64*: each client its own, so a run is the same mix whatever the scheduling.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// What the clients share with the main thread.
struct Shared {
    origin: SocketAddr,
    proxy: Mutex<SocketAddr>,
    /// 1 for the first proxy process, 2 after the restart: connections to an older one
    /// are dropped, and responses are counted per life.
    generation: AtomicU64,
    restarting: AtomicBool,
    stop: AtomicBool,
    /// Ids of new URLs (`miss`, and the new ones of `abort` and `reset`).
    unique: AtomicU64,
    think_ms: u64,
    done: AtomicU64,
    errors: AtomicU64,
    expected: AtomicU64,
    mismatches: AtomicU64,
    verified_bytes: AtomicU64,
    tally: Mutex<Tally>,
}

#[derive(Default)]
struct Tally {
    /// (life, action, `Cache-Status`) → responses (complete or aborted as planned).
    statuses: BTreeMap<(u64, &'static str, String), u64>,
    /// (class, action, what failed) → requests.
    failures: BTreeMap<(&'static str, &'static str, String), u64>,
    failure_examples: Vec<String>,
    mismatch_examples: Vec<String>,
    /// Complete and checked, by action.
    ok: BTreeMap<&'static str, u64>,
    aborted: u64,
    /// Range requests answered with the whole body.
    range_whole: u64,
    /// Requests with the client's own `If-None-Match` answered 304.
    client_304: u64,
    /// `hit` latencies (request to last byte), by life.
    hit_latency: BTreeMap<u64, Vec<Duration>>,
}

const EXPECTED_RESET: &str = "expected: origin reset";
const EXPECTED_RESTART: &str = "expected: restart";
const UNEXPECTED: &str = "unexpected";

impl Shared {
    fn proxy(&self) -> SocketAddr {
        *self.proxy.lock().unwrap()
    }

    fn record(&self, r: &Req, outcome: Outcome, during_restart: bool, life: u64, took: Duration) {
        self.done.fetch_add(1, Ordering::Relaxed);
        let action = r.action.name();
        let mut t = self.tally.lock().unwrap();
        match outcome {
            Outcome::Done {
                cache_status, note, ..
            } => {
                *t.ok.entry(action).or_default() += 1;
                *t.statuses.entry((life, action, cache_status)).or_default() += 1;
                match note {
                    Some(Note::RangeWhole) => t.range_whole += 1,
                    Some(Note::Client304) => t.client_304 += 1,
                    None => {}
                }
                if r.action == Action::Hit {
                    t.hit_latency.entry(life).or_default().push(took);
                }
            }
            Outcome::Aborted { cache_status } => {
                t.aborted += 1;
                *t.statuses.entry((life, action, cache_status)).or_default() += 1;
            }
            Outcome::Fail(Fail::Mismatch(detail)) => {
                self.mismatches.fetch_add(1, Ordering::Relaxed);
                if t.mismatch_examples.len() < 20 {
                    t.mismatch_examples
                        .push(format!("life {life}, {action} {}: {detail}", r.url));
                }
            }
            Outcome::Fail(f) => {
                let class = if r.action == Action::Reset && f.may_be_reset() {
                    EXPECTED_RESET
                } else if during_restart {
                    EXPECTED_RESTART
                } else {
                    UNEXPECTED
                };
                if class == UNEXPECTED {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    if t.failure_examples.len() < 20 {
                        t.failure_examples.push(format!(
                            "life {life}, {action} {}: {}: {}",
                            r.url,
                            f.kind(),
                            f.detail()
                        ));
                    }
                } else {
                    self.expected.fetch_add(1, Ordering::Relaxed);
                }
                *t.failures.entry((class, action, f.kind())).or_default() += 1;
            }
        }
    }
}

/// One request as planned before it is sent.
struct Req {
    action: Action,
    obj: Obj,
    url: String,
    /// Inclusive byte range asked for.
    range: Option<(String, u64, u64)>,
    if_none_match: Option<String>,
    /// Leave after this many body bytes.
    abort_at: Option<u64>,
}

impl Req {
    fn choose(action: Action, rng: &mut Rng, sh: &Shared, etags: &HashMap<u64, String>) -> Req {
        let unique = || sh.unique.fetch_add(1, Ordering::Relaxed);
        let mut range = None;
        let mut if_none_match = None;
        let mut abort_at = None;
        let obj = match action {
            Action::Hit => Obj::hot(Kind::Plain(b's'), rng.below(HOT_SMALL)),
            Action::HitLarge => Obj::hot(Kind::Plain(b'l'), rng.below(HOT_LARGE)),
            Action::Miss => {
                let size = if rng.below(10) == 0 {
                    256 * KIB + rng.below(768 * KIB)
                } else {
                    KIB + rng.below(63 * KIB)
                };
                Obj {
                    kind: Kind::Plain(b'u'),
                    id: unique(),
                    size,
                }
            }
            Action::Range => {
                let o = if rng.below(10) < 7 {
                    Obj::hot(Kind::Plain(b'l'), rng.below(HOT_LARGE))
                } else {
                    Obj::hot(Kind::Plain(b's'), rng.below(HOT_SMALL))
                };
                let n = o.size;
                range = Some(match rng.below(10) {
                    0..=5 => {
                        let a = rng.below(n);
                        // Sometimes past the end: the answer stops at the last byte.
                        let b = a + rng.below((n - a).min(MIB) + 100);
                        (format!("bytes={a}-{b}"), a, b.min(n - 1))
                    }
                    6 | 7 => {
                        let a = rng.below(n);
                        (format!("bytes={a}-"), a, n - 1)
                    }
                    _ => {
                        let k = 1 + rng.below(n.min(512 * KIB));
                        (format!("bytes=-{k}"), n - k, n - 1)
                    }
                });
                o
            }
            Action::Revalidate => {
                let id = rng.below(HOT_REVALIDATE);
                if rng.below(4) == 0 {
                    if_none_match = etags.get(&id).cloned();
                }
                Obj::hot(Kind::Revalidate, id)
            }
            Action::Abort => {
                let o = if rng.below(10) < 8 {
                    Obj::hot(Kind::Plain(b'l'), rng.below(HOT_LARGE))
                } else {
                    Obj {
                        kind: Kind::Plain(b'u'),
                        id: unique(),
                        size: 512 * KIB + rng.below(1536 * KIB),
                    }
                };
                abort_at = Some(rng.below(o.size * 4 / 5));
                o
            }
            Action::Reset => {
                if rng.below(2) == 0 {
                    Obj::hot(Kind::Reset, rng.below(HOT_RESET))
                } else {
                    Obj {
                        kind: Kind::Reset,
                        id: 1_000_000_000 + unique(),
                        size: 64 * KIB + rng.below(448 * KIB),
                    }
                }
            }
        };
        Req {
            action,
            url: format!("http://{}{}", sh.origin, obj.path()),
            obj,
            range,
            if_none_match,
            abort_at,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Note {
    RangeWhole,
    Client304,
}

enum Outcome {
    /// The whole response arrived and every byte is what the origin sent.
    Done {
        cache_status: String,
        note: Option<Note>,
        /// The `ETag` of a revalidated object's 200.
        etag: Option<String>,
    },
    /// The client left mid-body as planned; what it read was right.
    Aborted {
        cache_status: String,
    },
    Fail(Fail),
}

#[derive(Debug)]
enum Fail {
    Connect(String),
    /// Sending the request or waiting for the head failed.
    Request(String),
    Status(u16, String),
    /// The body ended with an error (connection closed or reset before its end).
    Body(String),
    /// Wrong bytes, a wrong length, a wrong `Content-Range`: a failure of the run.
    Mismatch(String),
    Timeout,
}

impl Fail {
    fn kind(&self) -> String {
        match self {
            Fail::Connect(_) => "connect".into(),
            Fail::Request(_) => "request (no response head)".into(),
            Fail::Status(s, cs) => format!("status {s} ({cs})"),
            Fail::Body(_) => "body cut off".into(),
            Fail::Mismatch(_) => "mismatch".into(),
            Fail::Timeout => format!("timeout ({} s)", REQUEST_TIMEOUT.as_secs()),
        }
    }

    fn detail(&self) -> &str {
        match self {
            Fail::Connect(d) | Fail::Request(d) | Fail::Body(d) | Fail::Mismatch(d) => d,
            Fail::Status(_, cs) => cs,
            Fail::Timeout => "",
        }
    }

    /// What an origin reset mid-body can look like through the proxy.
    fn may_be_reset(&self) -> bool {
        match self {
            Fail::Request(_) | Fail::Body(_) => true,
            Fail::Status(s, _) => *s == 502 || *s == 504,
            _ => false,
        }
    }
}

/// One HTTP/1.1 keep-alive connection to the proxy; dropping it closes the socket.
struct Conn {
    send: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    task: JoinHandle<()>,
    generation: u64,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Conn {
    async fn open(addr: SocketAddr, generation: u64) -> Result<Conn, Fail> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| Fail::Connect(format!("{addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Fail::Connect(format!("handshake: {e}")))?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            send,
            task,
            generation,
        })
    }
}

/// The connection of this client to the current proxy, opened if need be.
async fn connection<'a>(slot: &'a mut Option<Conn>, sh: &Shared) -> Result<&'a mut Conn, Fail> {
    let generation = sh.generation.load(Ordering::Acquire);
    if slot.as_ref().is_none_or(|c| c.generation != generation) {
        *slot = None;
        *slot = Some(Conn::open(sh.proxy(), generation).await?);
    }
    Ok(slot.as_mut().unwrap())
}

fn header<'a>(res: &'a Response<Incoming>, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Sends `r` and reads its answer, checking every byte.
async fn execute(r: &Req, slot: &mut Option<Conn>, sh: &Shared) -> Outcome {
    match exchange(r, slot, sh).await {
        Ok(o) => o,
        Err(f) => Outcome::Fail(f),
    }
}

async fn exchange(r: &Req, slot: &mut Option<Conn>, sh: &Shared) -> Result<Outcome, Fail> {
    let conn = connection(slot, sh).await?;
    conn.send
        .ready()
        .await
        .map_err(|e| Fail::Request(format!("connection: {e}")))?;
    let mut req = Request::builder()
        .uri(&r.url)
        .header("host", sh.origin.to_string());
    if let Some((spec, _, _)) = &r.range {
        req = req.header("range", spec);
    }
    if let Some(tag) = &r.if_none_match {
        req = req.header("if-none-match", tag);
    }
    let res = conn
        .send
        .send_request(req.body(Empty::new()).unwrap())
        .await
        .map_err(|e| Fail::Request(e.to_string()))?;
    let status = res.status().as_u16();
    let cache_status = header(&res, "cache-status")
        .unwrap_or("-")
        .trim_start_matches("meshcache; ")
        .to_owned();
    let content_length: Option<u64> = header(&res, "content-length").and_then(|v| v.parse().ok());
    let bad = |what: String| {
        Fail::Mismatch(format!(
            "{what} (status {status}, cache-status {cache_status:?})"
        ))
    };
    let o = r.obj;
    let tag = header(&res, "etag").map(str::to_owned);
    // What the body must be: bytes `start..start + len` of the body with `seed`.
    let (seed, start, len, note) = match (status, &r.range) {
        (206, Some((_, a, b))) => {
            let want = format!("bytes {a}-{b}/{}", o.size);
            let got = header(&res, "content-range").unwrap_or("-");
            if got != want {
                return Err(bad(format!("content-range {got:?}, expected {want:?}")));
            }
            (o.seed(0), *a, b - a + 1, None)
        }
        (200, range) => {
            let version = match o.kind {
                Kind::Revalidate => {
                    let tag = header(&res, "etag").unwrap_or("-");
                    match etag_version(tag) {
                        Some(v) => v,
                        None => return Err(bad(format!("etag {tag:?}"))),
                    }
                }
                _ => 0,
            };
            (
                o.seed(version),
                0,
                o.size,
                range.as_ref().map(|_| Note::RangeWhole),
            )
        }
        (304, _) if r.if_none_match.is_some() => {
            let sent = r.if_none_match.as_deref().unwrap_or("");
            if let Some(tag) = header(&res, "etag").filter(|t| *t != sent) {
                return Err(bad(format!(
                    "304 with etag {tag:?} for if-none-match {sent:?}"
                )));
            }
            (0, 0, 0, Some(Note::Client304))
        }
        _ => return Err(Fail::Status(status, cache_status)),
    };
    if content_length.is_some_and(|l| l != len) {
        return Err(bad(format!(
            "content-length {}, expected {len}",
            content_length.unwrap()
        )));
    }
    let mut body = res.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Fail::Body(format!("after {got} of {len} bytes: {e}")))?;
        let Some(d) = frame.data_ref() else { continue };
        if got + d.len() as u64 > len {
            return Err(bad(format!("body longer than {len} bytes")));
        }
        if let Some(i) = first_difference(seed, start + got, d) {
            return Err(bad(format!(
                "byte {} of the object differs (body byte {})",
                start + got + i as u64,
                got + i as u64
            )));
        }
        got += d.len() as u64;
        sh.verified_bytes
            .fetch_add(d.len() as u64, Ordering::Relaxed);
        if r.abort_at.is_some_and(|a| got >= a) && got < len {
            *slot = None;
            return Ok(Outcome::Aborted { cache_status });
        }
    }
    if got != len {
        return Err(bad(format!(
            "body ended cleanly after {got} of {len} bytes"
        )));
    }
    if r.abort_at == Some(0) {
        // Left right after the head.
        *slot = None;
        return Ok(Outcome::Aborted { cache_status });
    }
    Ok(Outcome::Done {
        cache_status,
        note,
        etag: tag.filter(|_| status == 200 && o.kind == Kind::Revalidate),
    })
}

/// One client task: requests in the mix, one at a time, with a pause between them.
async fn client(i: usize, sh: Arc<Shared>) {
    let mut rng = Rng(mix(i as u64 + 1) | 1);
    let mut slot: Option<Conn> = None;
    let mut etags: HashMap<u64, String> = HashMap::new();
    while !sh.stop.load(Ordering::Relaxed) {
        let action = Action::pick(&mut rng);
        let r = Req::choose(action, &mut rng, &sh, &etags);
        let life = sh.generation.load(Ordering::Acquire);
        let restarting = sh.restarting.load(Ordering::Acquire);
        let t = Instant::now();
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, execute(&r, &mut slot, &sh))
            .await
            .unwrap_or(Outcome::Fail(Fail::Timeout));
        let took = t.elapsed();
        let during_restart = restarting
            || sh.restarting.load(Ordering::Acquire)
            || sh.generation.load(Ordering::Acquire) != life;
        let mut pause = Duration::from_millis(rng.below(2 * sh.think_ms + 1));
        match &outcome {
            Outcome::Done { etag: Some(t), .. } => {
                etags.insert(r.obj.id, t.clone());
            }
            Outcome::Done { .. } => {}
            Outcome::Fail(f) => {
                slot = None;
                if matches!(f, Fail::Connect(_)) {
                    pause = pause.max(Duration::from_millis(100));
                }
            }
            Outcome::Aborted { .. } => slot = None,
        }
        sh.record(&r, outcome, during_restart, life, took);
        tokio::time::sleep(pause).await;
    }
}

// ---------------------------------------------------------------------------------------
// Samples

struct Sample {
    /// Seconds since the traffic started.
    t: f64,
    life: u64,
    rss_kib: Option<u64>,
    fds: Option<usize>,
    sockets: Option<usize>,
    /// Proxy CPU since the previous sample, in % of one core.
    cpu_pct: Option<f64>,
    data: procfs::DiskUsage,
    bodies: u64,
    body_files: u64,
    spool: u64,
    status: Option<ProxyStatus>,
    done: u64,
    errors: u64,
    expected: u64,
    mismatches: u64,
    origin_bytes: u64,
    /// The disk usage the store may reach at this sample (limit + overhead).
    allowed: u64,
}

#[derive(Debug, Clone, Copy)]
struct ProxyStatus {
    urls: u64,
    stored_bytes: u64,
    evictions: u64,
    fills: u64,
}

/// The proxy's `/status.json` (this process is an admin client), over a plain HTTP/1.0
/// connection so the answer ends with the connection.
fn proxy_status(addr: SocketAddr) -> Option<ProxyStatus> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /status.json HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let at = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let v: serde_json::Value = serde_json::from_slice(&buf[at + 4..]).ok()?;
    let n = |k: &str| v.get(k).and_then(|x| x.as_u64());
    Some(ProxyStatus {
        urls: n("stored_urls")?,
        stored_bytes: n("stored_bytes")?,
        evictions: n("evictions")?,
        fills: n("fills_in_progress")?,
    })
}

fn mib(b: u64) -> f64 {
    b as f64 / MIB as f64
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

const TABLE_HEAD: &str = "      t life   RSS MiB    fds socks  CPU%  store MiB  bodies  files  spool  index MiB  urls  evict  fills  requests  req/s  errors  expected  mismatch";

fn print_row(s: &Sample, prev: Option<&Sample>) {
    let rate = prev.map_or(0.0, |p| (s.done - p.done) as f64 / (s.t - p.t).max(1e-9));
    let st = s.status;
    println!(
        "  {:>5.0} {:>4} {:>9} {:>6} {:>5} {:>5} {:>10.1} {:>7.1} {:>6} {:>6.1} {:>10} {:>5} {:>6} {:>6} {:>9} {:>6.0} {:>7} {:>9} {:>9}",
        s.t,
        s.life,
        s.rss_kib.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
        opt(s.fds),
        opt(s.sockets),
        s.cpu_pct.map_or("-".into(), |c| format!("{c:.0}")),
        mib(s.data.allocated),
        mib(s.bodies),
        s.body_files,
        mib(s.spool),
        st.map_or("-".into(), |x| format!("{:.1}", mib(x.stored_bytes))),
        opt(st.map(|x| x.urls)),
        opt(st.map(|x| x.evictions)),
        opt(st.map(|x| x.fills)),
        s.done,
        rate,
        s.errors,
        s.expected,
        s.mismatches
    );
}

// ---------------------------------------------------------------------------------------
// The run

fn main() -> ExitCode {
    let plan = Plan::from_env();
    let cores = common::cores();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let origin_stats = Arc::new(OriginStats::default());
    let origin = rt.block_on(start_origin(origin_stats.clone()));
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = plan.config();
    let mut proxy = ProxyProcess::start(dir.path(), &config);
    let mut pids = vec![proxy.pid()];

    println!(
        "soak: {} s ({:.1} min), a sample every {} s, warm-up {} s after each start; {} clients \
         (pause 0–{} ms between requests), {cores} cores",
        plan.secs,
        plan.secs as f64 / 60.0,
        plan.sample,
        plan.warmup,
        plan.clients,
        2 * plan.think_ms
    );
    println!(
        "proxy: `meshcache run` as a separate process (pid {}) on {}, data dir {}; origin {origin}, clients in this process",
        proxy.pid(),
        proxy.addr,
        data.display()
    );
    println!(
        "config: cache.max_size \"{}\" ({} bytes), max_object_size \"{}MiB\", memory_cache_size \"16MiB\", mesh off, log warn",
        plan.cache_max,
        plan.cache_max_bytes,
        2 * MAX_OBJECT / MIB
    );
    let weights: Vec<String> = ACTIONS
        .iter()
        .map(|(a, w)| format!("{} {w}", a.name()))
        .collect();
    println!("mix (weights): {}", weights.join(", "));
    println!(
        "restart: SIGTERM and a new process on the same data dir at t = {} s",
        plan.secs / 2
    );

    let sh = Arc::new(Shared {
        origin,
        proxy: Mutex::new(proxy.addr),
        generation: AtomicU64::new(1),
        restarting: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        unique: AtomicU64::new(0),
        think_ms: plan.think_ms,
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        expected: AtomicU64::new(0),
        mismatches: AtomicU64::new(0),
        verified_bytes: AtomicU64::new(0),
        tally: Mutex::new(Tally::default()),
    });
    let tasks: Vec<JoinHandle<()>> = (0..plan.clients)
        .map(|i| rt.spawn(client(i, sh.clone())))
        .collect();

    let start = Instant::now();
    let end = start + Duration::from_secs(plan.secs);
    let restart_at = start + Duration::from_secs(plan.secs / 2);
    let mut restarted = false;
    let mut life_starts = vec![0.0f64];
    let mut logs: Vec<ProxyLog> = Vec::new();
    let mut stops: Vec<(String, Duration)> = Vec::new();
    let mut restart_report = String::new();
    let mut samples: Vec<Sample> = Vec::new();
    let mut cpu_prev: Option<(f64, Instant)> = None;
    let mut next = start + Duration::from_secs(plan.sample);

    println!();
    println!("{TABLE_HEAD}");
    loop {
        let wake = if restarted {
            next
        } else {
            next.min(restart_at)
        };
        let now = Instant::now();
        if wake > now {
            std::thread::sleep(wake - now);
        }
        if !restarted && Instant::now() >= restart_at {
            restarted = true;
            let before = proxy_status(proxy.addr);
            sh.restarting.store(true, Ordering::Release);
            let t = Instant::now();
            let status = proxy.stop();
            let took = t.elapsed();
            logs.push(proxy.log());
            let left = procfs::disk_usage(&data);
            let spool_left = procfs::disk_usage(&data.join("cache").join("spool"));
            let t = Instant::now();
            proxy = ProxyProcess::start(dir.path(), &config);
            let up = t.elapsed();
            *sh.proxy.lock().unwrap() = proxy.addr;
            sh.generation.fetch_add(1, Ordering::AcqRel);
            sh.restarting.store(false, Ordering::Release);
            let after = proxy_status(proxy.addr);
            pids.push(proxy.pid());
            life_starts.push(start.elapsed().as_secs_f64());
            cpu_prev = None;
            restart_report = format!(
                "restart at t = {:.0} s: SIGTERM → exit in {:.2} s ({status}); data dir while stopped {:.1} MiB \
                 (spool {} files, {:.1} MiB); new process (pid {}) on {} in {:.2} s; index before: {}, after: {}",
                life_starts[1],
                took.as_secs_f64(),
                mib(left.allocated),
                spool_left.files,
                mib(spool_left.allocated),
                proxy.pid(),
                proxy.addr,
                up.as_secs_f64(),
                before.map_or("-".into(), |s| format!("{} urls, {:.1} MiB", s.urls, mib(s.stored_bytes))),
                after.map_or("-".into(), |s| format!("{} urls, {:.1} MiB", s.urls, mib(s.stored_bytes))),
            );
            stops.push((status, took));
            println!("  -- {restart_report}");
            continue;
        }
        // A sample.
        let pid = proxy.pid();
        let cpu = procfs::cpu_secs(pid);
        let now = Instant::now();
        let cpu_pct = match (cpu, cpu_prev) {
            (Some(c), Some((c0, t0))) => Some((c - c0) / (now - t0).as_secs_f64() * 100.0),
            _ => None,
        };
        cpu_prev = cpu.map(|c| (c, now));
        let t = start.elapsed().as_secs_f64();
        let origin_bytes = origin_stats.bytes.load(Ordering::Relaxed);
        // What the origin sent in the last GC interval and sample.
        let window = (GC_INTERVAL_S + plan.sample) as f64;
        let base = samples
            .iter()
            .rev()
            .find(|s| s.t <= t - window)
            .map_or(0, |s| s.origin_bytes);
        let fds = procfs::fd_count(pid);
        let bodies = procfs::disk_usage(&data.join("cache").join("bodies"));
        let s = Sample {
            t,
            life: sh.generation.load(Ordering::Acquire),
            rss_kib: procfs::status_kib(pid, "VmRSS"),
            fds: fds.map(|f| f.0),
            sockets: fds.map(|f| f.1),
            cpu_pct,
            data: procfs::disk_usage(&data),
            bodies: bodies.allocated,
            body_files: bodies.files,
            spool: procfs::disk_usage(&data.join("cache").join("spool")).allocated,
            status: proxy_status(proxy.addr),
            done: sh.done.load(Ordering::Relaxed),
            errors: sh.errors.load(Ordering::Relaxed),
            expected: sh.expected.load(Ordering::Relaxed),
            mismatches: sh.mismatches.load(Ordering::Relaxed),
            origin_bytes,
            allowed: plan.cache_max_bytes + plan.store_overhead(origin_bytes - base),
        };
        print_row(&s, samples.last());
        samples.push(s);
        next += Duration::from_secs(plan.sample);
        if Instant::now() >= end || next > end + Duration::from_millis(500) {
            break;
        }
    }

    // Stop the clients (a request under way may take up to its timeout), then the proxy.
    sh.stop.store(true, Ordering::Release);
    let waited = rt.block_on(async {
        let all = futures_util::future::join_all(tasks);
        tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(5), all)
            .await
            .is_ok()
    });
    let t = Instant::now();
    let status = proxy.stop();
    stops.push((status, t.elapsed()));
    logs.push(proxy.log());
    let run_secs = start.elapsed().as_secs_f64();

    let report = Report {
        plan: &plan,
        samples: &samples,
        life_starts: &life_starts,
        pids: &pids,
    };
    println!();
    println!(
        "run: {run_secs:.0} s; clients stopped{}",
        if waited {
            ""
        } else {
            " (some did not finish within the request timeout)"
        }
    );
    if !restart_report.is_empty() {
        println!("{restart_report}");
    }
    for (i, (status, took)) in stops.iter().enumerate() {
        println!(
            "proxy {} (pid {}) stopped with SIGTERM in {:.2} s: {status}",
            i + 1,
            pids.get(i).copied().unwrap_or(0),
            took.as_secs_f64()
        );
    }
    let t = sh.tally.lock().unwrap();
    report.requests(&t, &sh, &origin_stats);
    report.statuses(&t);
    report.logs(&logs);
    let mismatches = sh.mismatches.load(Ordering::Relaxed);
    report.summary(mismatches);
    drop(rt);
    if mismatches > 0 {
        println!("FAIL: {mismatches} bodies differ from what the origin sent");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

// ---------------------------------------------------------------------------------------
// The report

struct Report<'a> {
    plan: &'a Plan,
    samples: &'a [Sample],
    life_starts: &'a [f64],
    pids: &'a [u32],
}

/// start / end / max of one curve over some samples.
struct Curve {
    start: f64,
    end: f64,
    max: f64,
}

impl Curve {
    fn of(samples: &[&Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<Curve> {
        let v: Vec<f64> = samples.iter().filter_map(|s| f(s)).collect();
        Some(Curve {
            start: *v.first()?,
            end: *v.last()?,
            max: v.iter().copied().fold(f64::MIN, f64::max),
        })
    }
}

impl Report<'_> {
    /// The samples of proxy life `life` (1-based) after its warm-up, or all of that life's
    /// samples if none is after it.
    fn life(&self, life: u64) -> Vec<&Sample> {
        let from = self.life_starts[life as usize - 1] + self.plan.warmup as f64;
        let all: Vec<&Sample> = self.samples.iter().filter(|s| s.life == life).collect();
        let warm: Vec<&Sample> = all.iter().copied().filter(|s| s.t >= from).collect();
        if warm.is_empty() {
            all
        } else {
            warm
        }
    }

    fn requests(&self, t: &Tally, sh: &Shared, origin: &OriginStats) {
        println!();
        println!(
            "requests: {} finished — {} complete and checked, {} aborted by the client as planned, \
             {} failed as expected, {} failed unexpectedly, {} mismatches; {:.1} MiB of bodies checked",
            sh.done.load(Ordering::Relaxed),
            t.ok.values().sum::<u64>(),
            t.aborted,
            sh.expected.load(Ordering::Relaxed),
            sh.errors.load(Ordering::Relaxed),
            sh.mismatches.load(Ordering::Relaxed),
            mib(sh.verified_bytes.load(Ordering::Relaxed))
        );
        let ok: Vec<String> = t.ok.iter().map(|(a, n)| format!("{a} {n}")).collect();
        println!("  complete by kind: {}", ok.join(", "));
        println!(
            "  range requests answered with the whole body: {}; client If-None-Match answered 304: {}",
            t.range_whole, t.client_304
        );
        println!(
            "  origin: {} requests, {} answered 304, {} reset mid-body, {:.1} MiB of bodies sent",
            origin.requests.load(Ordering::Relaxed),
            origin.not_modified.load(Ordering::Relaxed),
            origin.resets.load(Ordering::Relaxed),
            mib(origin.bytes.load(Ordering::Relaxed))
        );
        if !t.failures.is_empty() {
            println!("  failures by kind:");
            for ((class, action, kind), n) in &t.failures {
                println!("    {n:>7}  {class:<24} {action:<11} {kind}");
            }
        }
        for e in &t.failure_examples {
            println!("    unexpected: {e}");
        }
        for e in &t.mismatch_examples {
            println!("    MISMATCH: {e}");
        }
        for (life, l) in &t.hit_latency {
            if !l.is_empty() {
                println!(
                    "  `hit` latency, life {life}: p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms ({} requests)",
                    pct(l, 50.0) / 1e3,
                    pct(l, 99.0) / 1e3,
                    l.iter().max().unwrap().as_secs_f64() * 1e3,
                    l.len()
                );
            }
        }
    }

    fn statuses(&self, t: &Tally) {
        println!();
        println!("responses by Cache-Status (complete or aborted as planned):");
        let lives = self.life_starts.len() as u64;
        let mut rows: BTreeMap<(&str, &str), Vec<u64>> = BTreeMap::new();
        for ((life, action, cs), n) in &t.statuses {
            rows.entry((action, cs.as_str()))
                .or_insert_with(|| vec![0; lives as usize])[*life as usize - 1] += n;
        }
        let head: Vec<String> = (1..=lives)
            .map(|l| format!("{:>8}", format!("life {l}")))
            .collect();
        println!("  {:<11} {:<44} {}", "kind", "cache-status", head.join(" "));
        for ((action, cs), v) in rows {
            let v: Vec<String> = v.iter().map(|n| format!("{n:>8}")).collect();
            println!("  {action:<11} {cs:<44} {}", v.join(" "));
        }
    }

    fn logs(&self, logs: &[ProxyLog]) {
        println!();
        for (i, l) in logs.iter().enumerate() {
            println!(
                "proxy {} log: {} lines, {} WARN, {} ERROR",
                i + 1,
                l.lines,
                l.warn,
                l.error
            );
            // The same message once, with how often it came among the first ones kept.
            let mut seen: BTreeMap<String, (usize, u64)> = BTreeMap::new();
            for (k, line) in l.first.iter().enumerate() {
                let msg = line.split_once(' ').map_or(line.as_str(), |x| x.1).trim();
                seen.entry(msg.to_owned()).or_insert((k, 0)).1 += 1;
            }
            let mut v: Vec<(String, (usize, u64))> = seen.into_iter().collect();
            v.sort_by_key(|x| x.1 .0);
            for (msg, (_, n)) in v.iter().take(12) {
                println!("    {n:>3} × {msg}");
            }
        }
    }

    fn summary(&self, mismatches: u64) {
        let p = self.plan;
        println!();
        println!(
            "summary: start = first sample at least {} s after the proxy started, end = its last sample, max over its samples",
            p.warmup
        );
        println!(
            "  {:<18} {:>4} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}  verdict",
            "", "life", "pid", "start", "end", "max", "end-start", "tolerance"
        );
        let mut lines: Vec<String> = Vec::new();
        let lives = self.life_starts.len() as u64;
        for life in 1..=lives {
            let s = self.life(life);
            let pid = self.pids.get(life as usize - 1).copied().unwrap_or(0);
            if let Some(c) = Curve::of(&s, |x| x.rss_kib.map(|k| k as f64 / 1024.0)) {
                let tol = rss_tolerance_kib((c.start * 1024.0) as u64) as f64 / 1024.0;
                let grew = c.end - c.start > tol;
                println!(
                    "  {:<18} {:>4} {:>8} {:>10.1} {:>10.1} {:>10.1} {:>+10.1} {:>10.1}  {}",
                    "RSS MiB",
                    life,
                    pid,
                    c.start,
                    c.end,
                    c.max,
                    c.end - c.start,
                    tol,
                    if grew { "GREW" } else { "steady" }
                );
                if grew {
                    lines.push(format!("RSS grew in life {life}"));
                }
            }
            if let Some(c) = Curve::of(&s, |x| x.fds.map(|f| f as f64)) {
                let tol = p.fd_tolerance() as f64;
                let grew = c.end - c.start > tol;
                println!(
                    "  {:<18} {:>4} {:>8} {:>10.0} {:>10.0} {:>10.0} {:>+10.0} {:>10.0}  {}",
                    "open fds",
                    life,
                    pid,
                    c.start,
                    c.end,
                    c.max,
                    c.end - c.start,
                    tol,
                    if grew { "GREW" } else { "steady" }
                );
                if grew {
                    lines.push(format!("descriptors grew in life {life}"));
                }
            }
            if let Some(c) = Curve::of(&s, |x| Some(mib(x.data.allocated))) {
                println!(
                    "  {:<18} {:>4} {:>8} {:>10.1} {:>10.1} {:>10.1} {:>+10.1} {:>10}",
                    "store MiB (du)",
                    life,
                    pid,
                    c.start,
                    c.end,
                    c.max,
                    c.end - c.start,
                    ""
                );
            }
            if let Some(c) = Curve::of(&s, |x| x.status.map(|st| mib(st.stored_bytes))) {
                println!(
                    "  {:<18} {:>4} {:>8} {:>10.1} {:>10.1} {:>10.1} {:>+10.1} {:>10}",
                    "index MiB",
                    life,
                    pid,
                    c.start,
                    c.end,
                    c.max,
                    c.end - c.start,
                    ""
                );
            }
        }
        // The whole run: the first sample after the first warm-up, the last sample.
        let mut all: Vec<&Sample> = self.life(1);
        let after = all.last().map_or(f64::MIN, |l| l.t);
        all.extend(self.samples.iter().filter(|s| s.t > after));
        let whole = |name: &str, f: &dyn Fn(&Sample) -> Option<f64>| {
            if let Some(c) = Curve::of(&all, f) {
                println!(
                    "  {:<18} {:>4} {:>8} {:>10.1} {:>10.1} {:>10.1} {:>+10.1}",
                    name,
                    "all",
                    "",
                    c.start,
                    c.end,
                    c.max,
                    c.end - c.start
                );
            }
        };
        whole("RSS MiB", &|x| x.rss_kib.map(|k| k as f64 / 1024.0));
        whole("open fds", &|x| x.fds.map(|f| f as f64));
        whole("store MiB (du)", &|x| Some(mib(x.data.allocated)));
        whole("index MiB", &|x| x.status.map(|st| mib(st.stored_bytes)));

        // The store against its limit, at every sample.
        let limit = p.cache_max_bytes;
        let worst = self.samples.iter().max_by(|a, b| {
            (a.data.allocated as f64 / a.allowed as f64)
                .total_cmp(&(b.data.allocated as f64 / b.allowed as f64))
        });
        let over: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.data.allocated > s.allowed)
            .collect();
        let max_du = self
            .samples
            .iter()
            .map(|s| s.data.allocated)
            .max()
            .unwrap_or(0);
        println!(
            "  store on disk: max {:.1} MiB = {:.2} × cache.max_size ({:.0} MiB); allowed at each sample: max_size + {} MiB \
             + 2 × {} clients × {} MiB + origin bytes of the last {} s",
            mib(max_du),
            max_du as f64 / limit as f64,
            mib(limit),
            STORE_FIXED_OVERHEAD / MIB,
            p.clients,
            MAX_OBJECT / MIB,
            GC_INTERVAL_S + p.sample
        );
        if let Some(w) = worst {
            println!(
                "    closest to the bound: t = {:.0} s, {:.1} MiB of {:.1} MiB allowed",
                w.t,
                mib(w.data.allocated),
                mib(w.allowed)
            );
        }
        let index_bound = limit + p.clients as u64 * MAX_OBJECT;
        let index_max = self
            .samples
            .iter()
            .filter_map(|s| s.status.map(|st| st.stored_bytes))
            .max()
            .unwrap_or(0);
        println!(
            "  index (stored_bytes): max {:.1} MiB; bound max_size + {} clients × {} MiB = {:.1} MiB",
            mib(index_max),
            p.clients,
            MAX_OBJECT / MIB,
            mib(index_bound)
        );
        if !over.is_empty() {
            lines.push(format!(
                "store over its bound at {} of {} samples (first at t = {:.0} s)",
                over.len(),
                self.samples.len(),
                over[0].t
            ));
        }
        if index_max > index_bound {
            lines.push("index over cache.max_size + its slack".into());
        }
        println!();
        println!(
            "verdict: RSS {}, descriptors {}, store {}, bodies {}",
            if lines.iter().any(|l| l.starts_with("RSS")) {
                "GREW"
            } else {
                "steady"
            },
            if lines.iter().any(|l| l.starts_with("desc")) {
                "GREW"
            } else {
                "steady"
            },
            if lines
                .iter()
                .any(|l| l.starts_with("store") || l.starts_with("index"))
            {
                "OVER its limit"
            } else {
                "within its limit"
            },
            if mismatches == 0 {
                "all as sent".to_string()
            } else {
                format!("{mismatches} MISMATCHES")
            }
        );
        for l in &lines {
            println!("  - {l}");
        }
    }
}
