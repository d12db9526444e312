//! Hit-path benchmark: meshcache against nginx with `proxy_cache`, side by side in one run —
//! the figures of issue 12's table (hits at 1 KiB and 100 KiB, CPU per hit, a 200 MiB hit,
//! the RSS during it, the latency a miss adds), each as a ratio against nginx measured in the
//! same run. There are no pass/fail thresholds.
//!
//! What runs, all on loopback:
//! - an in-process origin (hyper, `cache-control: max-age=3600`): 100 objects of 1 KiB
//!   (`/1k/N`), 100 of 100 KiB (`/100k/N`), one of 200 MiB (`/big`; 64 MiB in quick mode),
//!   and 1 KiB bodies at any other path (the misses' never-seen URLs); every body is
//!   different (meshcache's store is content-addressed: identical bodies would be one blob);
//! - the `meshcache` binary, twice, each a separate process with a data directory of its own
//!   (so its CPU time and memory can be read from /proc): `cache.shared = true`, mesh off,
//!   log level `info` (the default), once with `log.access = false` and once with
//!   `log.access = true` (one line per request on stderr, which goes to a file in its temp
//!   dir). It is used as a forward proxy: absolute-form requests
//!   (`GET http://127.0.0.1:ORIGIN_PORT/1k/7 HTTP/1.1`). The binary is the one `cargo bench`
//!   builds for the package (`target/release/meshcache`, passed to the bench as
//!   `CARGO_BIN_EXE_meshcache`; nothing to build by hand);
//! - **nginx** (Debian's package) as the reference: a reverse proxy with `proxy_cache` on the
//!   same origin (`proxy_cache_path` in a temp dir, the origin's `max-age=3600` honoured,
//!   `proxy_cache_valid 200 1h` as fallback, `proxy_buffering on`, an upstream pool of 32
//!   keep-alive connections, `sendfile on` as in Debian's nginx.conf but `tcp_nopush off`
//!   — Debian's `on` (TCP_CORK) stalled every 100 KiB keep-alive hit ~40 ms on loopback —,
//!   `worker_processes` = cores), two listeners on one cache zone, one with `access_log off`
//!   and one with an access log (format `combined`, to a file); origin-form requests
//!   (`GET /1k/7`). See `common/nginx.rs`. **It needs nginx installed**:
//!   `apt-get install -y nginx-light` (or `nginx`) as root; started as
//!   `nginx -p <tmp> -c <tmp>/nginx.conf -e <tmp>/error.log -g 'daemon off;'` (with
//!   `user root;` when run as root) and stopped at the end. Without it the nginx columns say
//!   `skipped` and why, and the rest still runs;
//! - the load generator, in this process: a tokio runtime with one worker per core and raw
//!   HTTP/1.1 over keep-alive connections, like wrk (a request written, its response read and
//!   its body length checked, no pipelining, no per-request allocation).
//!
//! **The machine has 2 cores and the load generator (and, on misses, the origin) shares them
//! with the proxy under test**: req/s is bounded by the client as much as by the proxy, so
//! read the ratios, not the absolute figures. CPU per request is the proxy's own:
//! utime + stime from /proc/<pid>/stat over the timed window divided by the requests
//! completed in it (for nginx summed over master, workers and cache manager); the client's
//! CPU per request is shown beside it.
//!
//! Every object is fetched once through each proxy before anything is timed and checked to
//! be a hit on a second fetch; hits that are not reported as hits (`Cache-Status` of
//! meshcache, `X-Cache-Status` of nginx) are counted and shown.
//!
//! Measurements (targets interleaved run by run, so drifting background load hits all alike):
//! - 1 KiB and 100 KiB hits: 64 keep-alive connections, 3 s per run after 0.5 s to settle,
//!   median of 3 runs: req/s, proxy CPU µs per request;
//! - the 200 MiB hit: one connection reading the whole body, median of 3: MB/s, the proxy's
//!   RSS sampled every 10 ms during it (peak; for nginx the sum over its processes);
//! - 1 KiB latency: sequential GETs, one keep-alive connection per target, in blocks of 25
//!   per target with the targets in a shuffled order each round; misses use never-seen URLs;
//!   the added p50 of a miss is the proxy's p50 minus the origin's own (direct) p50; hits
//!   are measured the same way.
//!
//! `cargo bench --bench hit_path` (about 2 minutes); `MESHCACHE_BENCH_QUICK=1` for a short
//! run (1 s runs, a 64 MiB big object, 300 latency samples).

mod common;
use common::nginx::{self, Nginx, NginxOptions};
use common::{pct, procfs};

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const SMALL: usize = KIB;
const MEDIUM: usize = 100 * KIB;
/// Objects of each small size, requested round-robin by the load.
const OBJECTS: usize = 100;
/// Keep-alive connections of a load run (issue 12: wrk with 64 connections).
const CONNS: usize = 64;
/// Runs per figure; the median is reported.
const RUNS: usize = 3;
/// Sequential latency requests a target gets in a row before the next target's turn.
const LATENCY_BLOCK: usize = 25;

struct Config {
    quick: bool,
    cores: usize,
    /// Timed part of a load run.
    duration: Duration,
    /// Untimed start of a load run (connections opened, steady state reached).
    settle: Duration,
    big_len: usize,
    latency_count: usize,
}

impl Config {
    fn from_env() -> Self {
        let (quick, cores) = (common::quick(), common::cores());
        Self {
            quick,
            cores,
            duration: Duration::from_secs(if quick { 1 } else { 3 }),
            settle: Duration::from_millis(if quick { 250 } else { 500 }),
            big_len: if quick { 64 * MIB } else { 200 * MIB },
            latency_count: if quick { 300 } else { 2000 },
        }
    }
}

fn main() {
    let cfg = Config::from_env();
    common::block_on(cfg.cores, run(cfg));
}

// ---------------------------------------------------------------------------------------
// Targets

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Origin,
    Meshcache,
    Nginx,
}

/// Whose CPU time and memory a target's figures are.
#[derive(Clone, Copy)]
enum Procs {
    None,
    /// One process (meshcache).
    Pid(u32),
    /// A master and its children (nginx).
    Tree(u32),
}

#[derive(Clone)]
struct Target {
    name: &'static str,
    kind: Kind,
    addr: SocketAddr,
    /// `Some(origin)`: a forward proxy, asked with absolute-form requests for this origin.
    absolute: Option<SocketAddr>,
    procs: Procs,
}

impl Target {
    fn is_proxy(&self) -> bool {
        self.kind != Kind::Origin
    }

    fn request(&self, path: &str) -> Vec<u8> {
        match self.absolute {
            Some(o) => format!("GET http://{o}{path} HTTP/1.1\r\nHost: {o}\r\n\r\n"),
            None => format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr),
        }
        .into_bytes()
    }

    fn pids(&self) -> Vec<u32> {
        match self.procs {
            Procs::None => Vec::new(),
            Procs::Pid(p) => vec![p],
            Procs::Tree(master) => {
                let mut v = vec![master];
                v.extend(nginx::children(master));
                v
            }
        }
    }

    fn cpu(&self) -> HashMap<u32, f64> {
        self.pids()
            .into_iter()
            .filter_map(|p| Some((p, procfs::cpu_secs(p)?)))
            .collect()
    }
}

/// CPU seconds used between two readings (a process that appeared in between counts whole).
fn cpu_used(before: &HashMap<u32, f64>, after: &HashMap<u32, f64>) -> f64 {
    after
        .iter()
        .map(|(p, a)| a - before.get(p).copied().unwrap_or(0.0))
        .sum()
}

fn self_cpu() -> f64 {
    procfs::cpu_secs(std::process::id()).unwrap_or(0.0)
}

fn rss_kib(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    Some(
        pids.iter()
            .filter_map(|&p| procfs::status_kib(p, "VmRSS"))
            .sum(),
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// ---------------------------------------------------------------------------------------
// The run

async fn run(cfg: Config) {
    let started = Instant::now();
    println!(
        "hit_path: {} mode, {} cores, {CONNS} keep-alive connections, {} s per load run (+{} ms to settle), median of {RUNS} runs",
        if cfg.quick { "quick" } else { "full" },
        cfg.cores,
        cfg.duration.as_secs(),
        cfg.settle.as_millis(),
    );
    println!(
        "note: the load generator runs in this process and shares the machine's {} cores with the proxy",
        cfg.cores
    );
    println!("      under test: compare the ratios, not the absolute figures.");
    println!("load average at start: {}", loadavg());

    let origin = start_origin(cfg.big_len).await;
    println!("origin: {origin} (in-process hyper)");

    let mc = MeshProc::start(false).expect("start meshcache");
    let mc_log = MeshProc::start(true).expect("start meshcache with access log");
    println!(
        "meshcache: {} run (shared cache, mesh off): {} (access log off, pid {}), {} (access log on, pid {})",
        env!("CARGO_BIN_EXE_meshcache"),
        mc.addr,
        mc.pid(),
        mc_log.addr,
        mc_log.pid()
    );
    let nginx: Result<Nginx, String> = match nginx::find() {
        None => Err("nginx not installed (apt-get install -y nginx-light)".into()),
        Some(bin) => Nginx::start(
            &bin,
            &NginxOptions {
                workers: cfg.cores,
                origin,
            },
        )
        .map_err(|e| format!("nginx did not start: {e}")),
    };
    match &nginx {
        Ok(n) => println!(
            "nginx: {} with proxy_cache, {} workers: {} (access_log off), {} (access log on), master pid {}, conf {}/nginx.conf",
            n.version,
            cfg.cores,
            n.addr,
            n.addr_logged,
            n.master(),
            n.dir().display()
        ),
        Err(e) => println!("nginx: skipped: {e}"),
    }

    let mut targets = vec![
        Target {
            name: "origin direct",
            kind: Kind::Origin,
            addr: origin,
            absolute: None,
            procs: Procs::None,
        },
        Target {
            name: "meshcache",
            kind: Kind::Meshcache,
            addr: mc.addr,
            absolute: Some(origin),
            procs: Procs::Pid(mc.pid()),
        },
        Target {
            name: "meshcache +log",
            kind: Kind::Meshcache,
            addr: mc_log.addr,
            absolute: Some(origin),
            procs: Procs::Pid(mc_log.pid()),
        },
    ];
    if let Ok(n) = &nginx {
        for (name, addr) in [("nginx", n.addr), ("nginx +log", n.addr_logged)] {
            targets.push(Target {
                name,
                kind: Kind::Nginx,
                addr,
                absolute: None,
                procs: Procs::Tree(n.master()),
            });
        }
    }

    // Warm every proxy: each object fetched once, then checked to be a hit.
    println!();
    for t in targets.iter().filter(|t| t.is_proxy()) {
        warm(t, cfg.big_len).await;
    }

    // Hits under load.
    let sizes = [(SMALL, "/1k/"), (MEDIUM, "/100k/")];
    let mut loads: Vec<Vec<Vec<RunResult>>> = Vec::new(); // size, target, run
    for (len, prefix) in sizes {
        let reqs: Vec<Arc<Vec<Vec<u8>>>> = targets
            .iter()
            .map(|t| {
                Arc::new(
                    (0..OBJECTS)
                        .map(|i| t.request(&format!("{prefix}{i}")))
                        .collect(),
                )
            })
            .collect();
        let mut per_target: Vec<Vec<RunResult>> = targets.iter().map(|_| Vec::new()).collect();
        for _ in 0..RUNS {
            for (ti, t) in targets.iter().enumerate() {
                let r = load(&cfg, t, reqs[ti].clone(), len as u64).await;
                per_target[ti].push(r);
            }
        }
        print_load(&cfg, len, &targets, &per_target);
        loads.push(per_target);
    }

    // The big hit.
    let mut bigs: Vec<Vec<BigResult>> = targets.iter().map(|_| Vec::new()).collect();
    for _ in 0..RUNS {
        for (ti, t) in targets.iter().enumerate() {
            bigs[ti].push(big_get(t, cfg.big_len as u64).await);
        }
    }
    print_big(&cfg, &targets, &bigs);

    // Latency.
    let lat = latency(&cfg, &targets).await;
    print_latency(&cfg, &targets, &lat);

    print_summary(&cfg, &targets, &loads, &bigs, &lat, nginx.as_ref().err());

    // Logs and shutdown.
    println!();
    for (name, p) in [("meshcache", &mc), ("meshcache +log", &mc_log)] {
        let s = p.log_summary();
        println!(
            "{name}: stderr {} lines ({:.1} MiB), {} access-log lines, {} WARN, {} ERROR",
            s.lines,
            s.bytes as f64 / MIB as f64,
            s.access,
            s.warn,
            s.error
        );
        for l in &s.first {
            println!("    {l}");
        }
    }
    let (mut mc, mut mc_log) = (mc, mc_log);
    println!("meshcache stopped: {}; {}", mc.stop(), mc_log.stop());
    if let Ok(mut n) = nginx {
        let access = std::fs::read(n.access_log_path()).unwrap_or_default();
        println!(
            "nginx +log: access log {} lines ({:.1} MiB)",
            access.iter().filter(|&&b| b == b'\n').count(),
            access.len() as f64 / MIB as f64
        );
        let errors: Vec<String> = n
            .error_log()
            .lines()
            .filter(|l| {
                ["[error]", "[crit]", "[alert]", "[emerg]", "[warn]"]
                    .iter()
                    .any(|k| l.contains(k))
            })
            .take(10)
            .map(str::to_owned)
            .collect();
        println!("nginx error log: {} warnings or errors shown", errors.len());
        for l in errors {
            println!("    {l}");
        }
        println!("nginx stopped: {}", n.stop());
    }
    println!("load average at end: {}", loadavg());
    println!("hit_path: done in {:.0} s", started.elapsed().as_secs_f64());
}

async fn warm(t: &Target, big_len: usize) {
    let mut paths: Vec<(String, usize)> = Vec::new();
    for i in 0..OBJECTS {
        paths.push((format!("/1k/{i}"), SMALL));
        paths.push((format!("/100k/{i}"), MEDIUM));
    }
    paths.push(("/big".into(), big_len));
    let mut c = RawConn::open(t.addr, 256 * KIB)
        .await
        .expect("connect for warm-up");
    let (mut first_hits, mut not_hit, mut first_not_hit) = (0, 0, None);
    for pass in 0..2 {
        for (path, len) in &paths {
            let r = tokio::time::timeout(Duration::from_secs(120), c.get(&t.request(path)))
                .await
                .unwrap_or_else(|_| panic!("{}: warm-up GET {path} timed out", t.name))
                .unwrap_or_else(|e| panic!("{}: warm-up GET {path}: {e}", t.name));
            if r.status != 200 || r.body_len != *len as u64 {
                panic!(
                    "{}: warm-up GET {path}: status {}, {} bytes (expected {len}), cache status {:?}",
                    t.name, r.status, r.body_len, c.cache_status
                );
            }
            if r.close {
                c = RawConn::open(t.addr, 256 * KIB).await.expect("reconnect");
            }
            match (pass, r.class) {
                (0, Class::Hit) => first_hits += 1,
                (1, Class::Hit) => {}
                (1, _) => {
                    not_hit += 1;
                    first_not_hit.get_or_insert_with(|| c.cache_status.clone());
                }
                _ => {}
            }
        }
    }
    println!(
        "warm-up {}: {} objects fetched ({} already hits: a shared cache zone), {} not a hit on re-fetch",
        t.name,
        paths.len(),
        first_hits,
        not_hit
    );
    if let Some(s) = first_not_hit {
        println!("  WARNING: a warmed object was not a hit; first cache status: {s:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Origin

struct Bodies {
    small: Vec<Bytes>,
    medium: Vec<Bytes>,
    big: Bytes,
}

/// `len` bytes of `tag` and a newline, repeated: a body of its own for each object.
fn body_of(tag: &str, len: usize) -> Bytes {
    let unit = format!("{tag}\n");
    Bytes::from(unit.bytes().cycle().take(len).collect::<Vec<u8>>())
}

impl Bodies {
    fn for_path(&self, path: &str) -> Bytes {
        let nth = |prefix: &str| path.strip_prefix(prefix)?.parse::<usize>().ok();
        if let Some(b) = nth("/1k/").and_then(|i| self.small.get(i)) {
            b.clone()
        } else if let Some(b) = nth("/100k/").and_then(|i| self.medium.get(i)) {
            b.clone()
        } else if path == "/big" {
            self.big.clone()
        } else {
            body_of(path, SMALL)
        }
    }
}

async fn start_origin(big_len: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().unwrap();
    let bodies = Arc::new(Bodies {
        small: (0..OBJECTS)
            .map(|i| body_of(&format!("/1k/{i}"), SMALL))
            .collect(),
        medium: (0..OBJECTS)
            .map(|i| body_of(&format!("/100k/{i}"), MEDIUM))
            .collect(),
        big: Bytes::from((0..big_len).map(|i| (i % 251) as u8).collect::<Vec<u8>>()),
    });
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let body = bodies.for_path(req.uri().path());
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/octet-stream")
                                .header("cache-control", "max-age=3600")
                                .header("content-length", body.len())
                                .body(Full::new(body))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------
// meshcache as a separate process, its stderr (the access log) to a file

struct MeshProc {
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
    // Dropped after the process is stopped (fields drop after `Drop::drop`).
    _dir: tempfile::TempDir,
}

#[derive(Default)]
struct LogSummary {
    lines: u64,
    bytes: u64,
    access: u64,
    warn: u64,
    error: u64,
    first: Vec<String>,
}

impl MeshProc {
    /// `meshcache run --config <tmp>/bench.toml --data-dir <tmp>/data`, stderr to
    /// `<tmp>/stderr.log`; the address is read from the `listening` line there.
    fn start(access_log: bool) -> Result<MeshProc, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let conf = dir.path().join("bench.toml");
        std::fs::write(
            &conf,
            format!(
                r#"[listen]
forward = "127.0.0.1:0"

[origin]
# The bench's loopback origin.
allow = ["127.0.0.1/32"]

[cache]
shared = true

[log]
level = "info"
access = {access_log}

[mesh]
enabled = false
"#
            ),
        )
        .map_err(|e| e.to_string())?;
        let log = dir.path().join("stderr.log");
        let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new(env!("CARGO_BIN_EXE_meshcache"))
            .arg("run")
            .arg("--config")
            .arg(&conf)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(|e| format!("spawn meshcache: {e}"))?;
        let mut p = MeshProc {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&p.log).unwrap_or_default();
            let found = text.lines().find_map(|l| {
                l.strip_prefix("meshcache: proxy listening on http://")?
                    .split_whitespace()
                    .next()?
                    .trim_end_matches('/')
                    .parse::<SocketAddr>()
                    .ok()
            });
            if let Some(a) = found {
                p.addr = a;
                return Ok(p);
            }
            let exited = p.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                return Err(format!(
                    "meshcache did not report its address (exit: {exited:?}): {}",
                    text.trim()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    fn log_summary(&self) -> LogSummary {
        use std::io::BufRead;
        let mut s = LogSummary::default();
        let Ok(f) = std::fs::File::open(&self.log) else {
            return s;
        };
        for line in std::io::BufReader::new(f).lines() {
            let Ok(line) = line else { break };
            s.lines += 1;
            s.bytes += line.len() as u64 + 1;
            if line.contains("meshcache::access") {
                s.access += 1;
                continue;
            }
            match line.split_whitespace().nth(1) {
                Some("WARN") => s.warn += 1,
                Some("ERROR") => s.error += 1,
                _ => continue,
            }
            if s.first.len() < 5 {
                s.first.push(line);
            }
        }
        s
    }

    /// SIGTERM, then wait (SIGKILL after 30 s).
    fn stop(&mut self) -> String {
        let Some(mut child) = self.child.take() else {
            return "not running".into();
        };
        common::process::terminate(&mut child, Duration::from_secs(30))
    }
}

impl Drop for MeshProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Client: raw HTTP/1.1 over one keep-alive connection

/// What a `Cache-Status` (meshcache) or `X-Cache-Status` (nginx) field says.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Class {
    Hit,
    Miss,
    Other,
    Absent,
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct Reply {
    status: u16,
    body_len: u64,
    class: Class,
    /// The server will close the connection.
    close: bool,
}

struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    /// The last response's cache status field (reused, not reallocated).
    cache_status: String,
}

impl RawConn {
    async fn open(addr: SocketAddr, buf: usize) -> Result<RawConn, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(RawConn {
            stream,
            buf: vec![0; buf],
            pos: 0,
            len: 0,
            cache_status: String::new(),
        })
    }

    /// Sends `req` (a complete request head) and reads the whole response, discarding the
    /// body.
    async fn get(&mut self, req: &[u8]) -> Result<Reply, String> {
        self.stream
            .write_all(req)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.read_reply().await
    }

    /// Reads more bytes, first moving unread ones to the front if the buffer is full.
    async fn fill(&mut self) -> Result<(), String> {
        if self.pos == self.len {
            self.pos = 0;
            self.len = 0;
        }
        if self.len == self.buf.len() {
            if self.pos == 0 {
                return Err("response head larger than the read buffer".into());
            }
            self.buf.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.pos = 0;
        }
        let n = self
            .stream
            .read(&mut self.buf[self.len..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed by the server".into());
        }
        self.len += n;
        Ok(())
    }

    /// The next line, without its CRLF, as a range of `buf` (valid until the next read).
    async fn line(&mut self) -> Result<(usize, usize), String> {
        loop {
            if let Some(i) = find(&self.buf[self.pos..self.len], b"\r\n") {
                let r = (self.pos, self.pos + i);
                self.pos += i + 2;
                return Ok(r);
            }
            self.fill().await?;
        }
    }

    async fn read_reply(&mut self) -> Result<Reply, String> {
        let head_end = loop {
            if let Some(i) = find(&self.buf[self.pos..self.len], b"\r\n\r\n") {
                break self.pos + i + 4;
            }
            self.fill().await?;
        };
        let head = &self.buf[self.pos..head_end];
        let mut lines = head
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = std::str::from_utf8(status_line)
            .ok()
            .and_then(|s| s.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {:?}", String::from_utf8_lossy(status_line)))?;
        let (mut length, mut chunked, mut close, mut class) = (None, false, false, Class::Absent);
        self.cache_status.clear();
        for l in lines {
            let Some(colon) = l.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = (&l[..colon], l[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"content-length") {
                length = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok());
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = contains_ci(value, b"chunked");
            } else if name.eq_ignore_ascii_case(b"connection") {
                close = contains_ci(value, b"close");
            } else if name.eq_ignore_ascii_case(b"cache-status")
                || name.eq_ignore_ascii_case(b"x-cache-status")
            {
                self.cache_status.push_str(&String::from_utf8_lossy(value));
                class = if contains_ci(value, b"hit") {
                    Class::Hit
                } else if contains_ci(value, b"miss") {
                    Class::Miss
                } else {
                    Class::Other
                };
            }
        }
        self.pos = head_end;
        let body_len = if chunked {
            self.skip_chunked().await?
        } else if let Some(n) = length {
            self.skip(n).await?;
            n
        } else if status == 204 || status == 304 {
            0
        } else {
            return Err(format!(
                "status {status} without a content-length (cache status {:?})",
                self.cache_status
            ));
        };
        Ok(Reply {
            status,
            body_len,
            class,
            close,
        })
    }

    async fn skip(&mut self, mut n: u64) -> Result<(), String> {
        loop {
            let avail = (self.len - self.pos) as u64;
            if avail >= n {
                self.pos += n as usize;
                return Ok(());
            }
            n -= avail;
            self.pos = 0;
            self.len = 0;
            let got = self
                .stream
                .read(&mut self.buf[..])
                .await
                .map_err(|e| format!("read body: {e}"))?;
            if got == 0 {
                return Err(format!("connection closed {n} bytes before the body's end"));
            }
            self.len = got;
        }
    }

    async fn skip_chunked(&mut self) -> Result<u64, String> {
        let mut total = 0;
        loop {
            let (a, b) = self.line().await?;
            let text = String::from_utf8_lossy(&self.buf[a..b]);
            let size = u64::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size line {text:?}"))?;
            if size == 0 {
                loop {
                    let (a, b) = self.line().await?;
                    if a == b {
                        return Ok(total);
                    }
                }
            }
            self.skip(size).await?;
            total += size;
            let (a, b) = self.line().await?;
            if a != b {
                return Err("chunk not followed by CRLF".into());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Load: 64 keep-alive connections, back-to-back requests

#[derive(Default)]
struct RunResult {
    requests: u64,
    secs: f64,
    /// CPU seconds of the proxy's processes over the timed window (None: the origin).
    proxy_cpu: Option<f64>,
    /// CPU seconds of this process (load generator, origin) over the window.
    client_cpu: f64,
    errors: u64,
    first_error: Option<String>,
    not_hit: u64,
    first_not_hit: Option<String>,
}

impl RunResult {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.secs
    }

    fn proxy_us(&self) -> Option<f64> {
        Some(self.proxy_cpu? * 1e6 / self.requests.max(1) as f64)
    }

    fn client_us(&self) -> f64 {
        self.client_cpu * 1e6 / self.requests.max(1) as f64
    }
}

#[derive(Default)]
struct TaskStats {
    errors: u64,
    first_error: Option<String>,
    not_hit: u64,
    first_not_hit: Option<String>,
}

async fn load(cfg: &Config, t: &Target, reqs: Arc<Vec<Vec<u8>>>, body_len: u64) -> RunResult {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(CONNS);
    for task in 0..CONNS {
        let (stop, count, reqs) = (stop.clone(), count.clone(), reqs.clone());
        let (addr, proxy) = (t.addr, t.is_proxy());
        tasks.push(tokio::spawn(async move {
            let mut s = TaskStats::default();
            let mut conn: Option<RawConn> = None;
            let mut i = task * 13;
            while !stop.load(Ordering::Relaxed) {
                if conn.is_none() {
                    match RawConn::open(addr, 64 * KIB).await {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            s.errors += 1;
                            s.first_error.get_or_insert(e);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let c = conn.as_mut().unwrap();
                let req = &reqs[i % reqs.len()];
                i += 1;
                match c.get(req).await {
                    Ok(r) if r.status == 200 && r.body_len == body_len => {
                        count.fetch_add(1, Ordering::Relaxed);
                        if proxy && r.class != Class::Hit {
                            s.not_hit += 1;
                            s.first_not_hit
                                .get_or_insert_with(|| c.cache_status.clone());
                        }
                        if r.close {
                            conn = None;
                        }
                    }
                    Ok(r) => {
                        s.errors += 1;
                        s.first_error.get_or_insert_with(|| {
                            format!(
                                "status {}, {} bytes (expected {body_len}), cache status {:?}",
                                r.status, r.body_len, c.cache_status
                            )
                        });
                        if r.close {
                            conn = None;
                        }
                    }
                    Err(e) => {
                        s.errors += 1;
                        s.first_error.get_or_insert(e);
                        conn = None;
                    }
                }
            }
            s
        }));
    }
    tokio::time::sleep(cfg.settle).await;
    let t0 = Instant::now();
    let (n0, cpu0, self0) = (count.load(Ordering::Relaxed), t.cpu(), self_cpu());
    tokio::time::sleep(cfg.duration).await;
    let secs = t0.elapsed().as_secs_f64();
    let (n1, cpu1, self1) = (count.load(Ordering::Relaxed), t.cpu(), self_cpu());
    stop.store(true, Ordering::Relaxed);
    let mut r = RunResult {
        requests: n1 - n0,
        secs,
        proxy_cpu: t.is_proxy().then(|| cpu_used(&cpu0, &cpu1)),
        client_cpu: self1 - self0,
        ..Default::default()
    };
    for task in tasks {
        let abort = task.abort_handle();
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(s)) => {
                r.errors += s.errors;
                r.not_hit += s.not_hit;
                if r.first_error.is_none() {
                    r.first_error = s.first_error;
                }
                if r.first_not_hit.is_none() {
                    r.first_not_hit = s.first_not_hit;
                }
            }
            _ => {
                abort.abort();
                r.errors += 1;
                r.first_error
                    .get_or_insert_with(|| "a connection hung (no answer within 10 s)".into());
            }
        }
    }
    r
}

// ---------------------------------------------------------------------------------------
// The big hit: one connection, the whole body, RSS sampled meanwhile

struct BigResult {
    /// MB/s (10^6 bytes per second).
    rate: Result<f64, String>,
    peak_rss_kib: Option<u64>,
    cache_status: String,
}

async fn big_get(t: &Target, len: u64) -> BigResult {
    let req = t.request("/big");
    let pids = t.pids();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = (!pids.is_empty()).then(|| {
        let stop = stop.clone();
        let pids = pids.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            loop {
                peak = peak.max(rss_kib(&pids).unwrap_or(0));
                if stop.load(Ordering::Relaxed) {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    });
    let result = async {
        let mut c = RawConn::open(t.addr, MIB).await?;
        let start = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(120), c.get(&req))
            .await
            .map_err(|_| "timed out after 120 s".to_string())??;
        let secs = start.elapsed().as_secs_f64();
        if r.status != 200 || r.body_len != len {
            return Err(format!(
                "status {}, {} bytes (expected {len}), cache status {:?}",
                r.status, r.body_len, c.cache_status
            ));
        }
        if t.is_proxy() && r.class != Class::Hit {
            return Err(format!("not a hit: {:?}", c.cache_status));
        }
        Ok((len as f64 / secs / 1e6, c.cache_status.clone()))
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    let peak_rss_kib = sampler.map(|h| h.join().unwrap_or(0));
    match result {
        Ok((rate, cache_status)) => BigResult {
            rate: Ok(rate),
            peak_rss_kib,
            cache_status,
        },
        Err(e) => BigResult {
            rate: Err(e),
            peak_rss_kib,
            cache_status: String::new(),
        },
    }
}

// ---------------------------------------------------------------------------------------
// Latency: sequential requests, interleaved across targets request by request

struct Latency {
    miss: Vec<Vec<Duration>>,
    hit: Vec<Vec<Duration>>,
    /// Per target: misses that were not (stored) misses, and the first such status.
    wrong_miss: Vec<(u64, Option<String>)>,
    wrong_hit: Vec<(u64, Option<String>)>,
}

async fn latency(cfg: &Config, targets: &[Target]) -> Latency {
    let n = cfg.latency_count;
    let mut conns = Vec::new();
    for t in targets {
        conns.push(RawConn::open(t.addr, 64 * KIB).await.expect("connect"));
    }
    let mut lat = Latency {
        miss: targets.iter().map(|_| Vec::with_capacity(n)).collect(),
        hit: targets.iter().map(|_| Vec::with_capacity(n)).collect(),
        wrong_miss: targets.iter().map(|_| (0, None)).collect(),
        wrong_hit: targets.iter().map(|_| (0, None)).collect(),
    };
    let mut rng = common::rng::Rng(0x9e37_79b9_7f4a_7c15);
    for miss in [true, false] {
        for block in 0..n.div_ceil(LATENCY_BLOCK) {
            // A block of sequential requests per target, the targets in a new order each
            // round (no target always runs right after another, e.g. on warm nginx workers).
            let mut order: Vec<usize> = (0..targets.len()).collect();
            for k in (1..order.len()).rev() {
                order.swap(k, rng.below(k + 1));
            }
            for ti in order {
                let t = &targets[ti];
                for i in block * LATENCY_BLOCK..((block + 1) * LATENCY_BLOCK).min(n) {
                    // Each target its own never-seen URLs (the two nginx listeners share a cache).
                    let path = if miss {
                        format!("/miss/{ti}/{i}")
                    } else {
                        format!("/1k/{}", i % OBJECTS)
                    };
                    let req = t.request(&path);
                    let c = &mut conns[ti];
                    let start = Instant::now();
                    let r = tokio::time::timeout(Duration::from_secs(30), c.get(&req))
                        .await
                        .unwrap_or_else(|_| Err("timed out after 30 s".into()))
                        .unwrap_or_else(|e| panic!("{}: GET {path}: {e}", t.name));
                    let took = start.elapsed();
                    if r.close {
                        *c = RawConn::open(t.addr, 64 * KIB).await.expect("reconnect");
                    }
                    assert!(
                        r.status == 200 && r.body_len == SMALL as u64,
                        "{}: GET {path}: status {}, {} bytes",
                        t.name,
                        r.status,
                        r.body_len
                    );
                    let ok = !t.is_proxy()
                        || if miss {
                            r.class == Class::Miss
                                && (t.kind != Kind::Meshcache || c.cache_status.contains("stored"))
                        } else {
                            r.class == Class::Hit
                        };
                    let (list, wrong) = if miss {
                        (&mut lat.miss[ti], &mut lat.wrong_miss[ti])
                    } else {
                        (&mut lat.hit[ti], &mut lat.wrong_hit[ti])
                    };
                    list.push(took);
                    if !ok {
                        wrong.0 += 1;
                        wrong.1.get_or_insert_with(|| c.cache_status.clone());
                    }
                }
            }
        }
    }
    lat
}

// ---------------------------------------------------------------------------------------
// Output

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// `12,345`.
fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if x < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

fn size_name(len: usize) -> String {
    if len >= MIB {
        format!("{} MiB", len / MIB)
    } else {
        format!("{} KiB", len / KIB)
    }
}

fn print_load(cfg: &Config, len: usize, targets: &[Target], runs: &[Vec<RunResult>]) {
    println!();
    println!(
        "{} hits: {CONNS} keep-alive connections, {} s per run, {RUNS} runs (targets interleaved run by run)",
        size_name(len),
        cfg.duration.as_secs()
    );
    println!(
        "  {:<16} {:>9} {:>9} {:>9} {:>11} {:>12} {:>13} {:>7} {:>8}",
        "target",
        "run 1",
        "run 2",
        "run 3",
        "req/s (med)",
        "proxy us/req",
        "client us/req",
        "errors",
        "not hit"
    );
    for (t, rs) in targets.iter().zip(runs) {
        let rates: Vec<String> = rs.iter().map(|r| thousands(r.rate())).collect();
        let rate = median(rs.iter().map(RunResult::rate).collect()).unwrap_or(0.0);
        let proxy = median(rs.iter().filter_map(RunResult::proxy_us).collect())
            .map_or("–".into(), |v| format!("{v:.1}"));
        let client = median(rs.iter().map(RunResult::client_us).collect()).unwrap_or(0.0);
        println!(
            "  {:<16} {:>9} {:>9} {:>9} {:>11} {:>12} {:>13.1} {:>7} {:>8}",
            t.name,
            rates.first().map_or("", String::as_str),
            rates.get(1).map_or("", String::as_str),
            rates.get(2).map_or("", String::as_str),
            thousands(rate),
            proxy,
            client,
            rs.iter().map(|r| r.errors).sum::<u64>(),
            rs.iter().map(|r| r.not_hit).sum::<u64>(),
        );
        if let Some(e) = rs.iter().find_map(|r| r.first_error.as_deref()) {
            println!("    first error: {e}");
        }
        if let Some(s) = rs.iter().find_map(|r| r.first_not_hit.as_deref()) {
            println!("    WARNING: responses that were not hits; first cache status: {s:?}");
        }
    }
}

fn print_big(cfg: &Config, targets: &[Target], bigs: &[Vec<BigResult>]) {
    println!();
    println!(
        "{} hit: one connection reading the whole body, {RUNS} runs; proxy RSS sampled every 10 ms during it",
        size_name(cfg.big_len)
    );
    println!(
        "  {:<16} {:>9} {:>9} {:>9} {:>12} {:>16}  cache status",
        "target", "run 1", "run 2", "run 3", "MB/s (med)", "peak RSS MiB"
    );
    for (t, rs) in targets.iter().zip(bigs) {
        let cell = |r: Option<&BigResult>| match r.map(|r| &r.rate) {
            Some(Ok(v)) => thousands(*v),
            Some(Err(_)) => "error".into(),
            None => String::new(),
        };
        let rate = median(rs.iter().filter_map(|r| r.rate.clone().ok()).collect());
        let rss = rs.iter().filter_map(|r| r.peak_rss_kib).max();
        println!(
            "  {:<16} {:>9} {:>9} {:>9} {:>12} {:>16}  {}",
            t.name,
            cell(rs.first()),
            cell(rs.get(1)),
            cell(rs.get(2)),
            rate.map_or("–".into(), thousands),
            rss.map_or("–".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
            rs.iter()
                .map(|r| r.cache_status.as_str())
                .find(|s| !s.is_empty())
                .unwrap_or("")
        );
        if let Some(e) = rs.iter().find_map(|r| r.rate.as_ref().err()) {
            println!("    error: {e}");
        }
    }
}

fn print_latency(cfg: &Config, targets: &[Target], lat: &Latency) {
    println!();
    println!(
        "1 KiB latency: {} sequential GETs per target, one keep-alive connection each, in blocks of {LATENCY_BLOCK} (targets shuffled each round)",
        cfg.latency_count
    );
    println!("  (misses: never-seen URLs, fetched from the origin and stored; added = proxy minus origin direct)");
    println!(
        "  {:<16} {:>10} {:>10} {:>12} {:>12} {:>9} {:>9}",
        "target", "miss p50", "miss p99", "added p50", "added p99", "hit p50", "hit p99"
    );
    let (d50, d99) = (pct(&lat.miss[0], 50.0), pct(&lat.miss[0], 99.0));
    for (ti, t) in targets.iter().enumerate() {
        let (m50, m99) = (pct(&lat.miss[ti], 50.0), pct(&lat.miss[ti], 99.0));
        let added = |v: f64| {
            if t.is_proxy() {
                format!("{:+.0}", v)
            } else {
                "–".into()
            }
        };
        println!(
            "  {:<16} {:>10.0} {:>10.0} {:>12} {:>12} {:>9.0} {:>9.0}",
            t.name,
            m50,
            m99,
            added(m50 - d50),
            added(m99 - d99),
            pct(&lat.hit[ti], 50.0),
            pct(&lat.hit[ti], 99.0),
        );
        if let (k @ 1.., Some(s)) = (lat.wrong_miss[ti].0, &lat.wrong_miss[ti].1) {
            println!("    WARNING: {k} misses were not stored misses; first cache status: {s:?}");
        }
        if let (k @ 1.., Some(s)) = (lat.wrong_hit[ti].0, &lat.wrong_hit[ti].1) {
            println!("    WARNING: {k} hits were not hits; first cache status: {s:?}");
        }
    }
    println!("  (all figures in us)");
}

/// One row of the summary: its label, the figure, how to print it.
type SummaryRow<'a> = (
    String,
    Box<dyn Fn(usize) -> Option<f64> + 'a>,
    fn(f64) -> String,
);

fn print_summary(
    cfg: &Config,
    targets: &[Target],
    loads: &[Vec<Vec<RunResult>>],
    bigs: &[Vec<BigResult>],
    lat: &Latency,
    nginx_skipped: Option<&String>,
) {
    // Column → target index.
    let idx = |name: &str| targets.iter().position(|t| t.name == name);
    let (o, m, ml, n, nl) = (
        idx("origin direct"),
        idx("meshcache"),
        idx("meshcache +log"),
        idx("nginx"),
        idx("nginx +log"),
    );
    type Metric<'a> = Box<dyn Fn(usize) -> Option<f64> + 'a>;
    let rate = |s: usize| -> Metric {
        Box::new(move |ti| median(loads[s][ti].iter().map(RunResult::rate).collect()))
    };
    let cpu = |s: usize| -> Metric {
        Box::new(move |ti| {
            median(
                loads[s][ti]
                    .iter()
                    .filter_map(RunResult::proxy_us)
                    .collect(),
            )
        })
    };
    let big: Metric = Box::new(|ti| {
        median(
            bigs[ti]
                .iter()
                .filter_map(|r| r.rate.clone().ok())
                .collect(),
        )
    });
    let rss: Metric = Box::new(|ti| {
        bigs[ti]
            .iter()
            .filter_map(|r| r.peak_rss_kib)
            .max()
            .map(|k| k as f64 / 1024.0)
    });
    let d50 = pct(&lat.miss[0], 50.0);
    let added: Metric = Box::new(move |ti| {
        targets[ti]
            .is_proxy()
            .then(|| pct(&lat.miss[ti], 50.0) - d50)
    });
    let hit50: Metric = Box::new(|ti| Some(pct(&lat.hit[ti], 50.0)));

    let big_name = size_name(cfg.big_len);
    let rows: Vec<SummaryRow> = vec![
        ("1 KiB hits, req/s".into(), rate(0), thousands),
        ("CPU per 1 KiB hit, us".into(), cpu(0), |v| {
            format!("{v:.1}")
        }),
        ("100 KiB hits, req/s".into(), rate(1), thousands),
        ("CPU per 100 KiB hit, us".into(), cpu(1), |v| {
            format!("{v:.1}")
        }),
        (format!("{big_name} hit, MB/s"), big, thousands),
        (format!("RSS during the {big_name} hit, MiB"), rss, |v| {
            format!("{v:.1}")
        }),
        ("1 KiB miss, added p50 latency, us".into(), added, |v| {
            format!("{v:+.0}")
        }),
        (
            "1 KiB hit, p50 latency (sequential), us".into(),
            hit50,
            |v| format!("{v:.0}"),
        ),
    ];

    println!();
    println!(
        "summary: medians of {RUNS} runs; ratios meshcache / nginx, both measured in this run"
    );
    println!(
        "  {:<40} {:>13} {:>11} {:>11} {:>9} {:>15} {:>11} {:>9}",
        "", "origin direct", "meshcache", "nginx", "ratio", "meshcache +log", "nginx +log", "ratio"
    );
    let cell = |ti: Option<usize>, f: &Metric, fmt: fn(f64) -> String| -> String {
        ti.and_then(f).map_or("–".into(), fmt)
    };
    let ratio = |a: Option<usize>, b: Option<usize>, f: &Metric| -> String {
        match (a.and_then(f), b.and_then(f)) {
            (Some(x), Some(y)) if y > 0.0 && x >= 0.0 => format!("{:.2}x", x / y),
            _ => "–".into(),
        }
    };
    for (label, f, fmt) in &rows {
        println!(
            "  {:<40} {:>13} {:>11} {:>11} {:>9} {:>15} {:>11} {:>9}",
            label,
            cell(o, f, *fmt),
            cell(m, f, *fmt),
            cell(n, f, *fmt),
            ratio(m, n, f),
            cell(ml, f, *fmt),
            cell(nl, f, *fmt),
            ratio(ml, nl, f),
        );
    }
    println!("  ratio > 1 is better for req/s and MB/s; < 1 is better for CPU, RSS and latency.");
    println!("  CPU: the proxy's utime+stime over the timed window / requests (nginx: master + workers + cache manager);");
    println!("  RSS: peak of samples every 10 ms during the transfers (nginx: summed over its processes).");
    if let Some(why) = nginx_skipped {
        println!("  nginx columns skipped: {why}");
    }
}
