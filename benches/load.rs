//! Front-door load benchmark: does a crowd of connections that cost the proxy nothing useful
//! — silent sockets that never send a request head, and slow readers trickling a 10 MiB
//! hit at ~10 KiB/s — slow down a normal client's cache hits, and what do they cost in
//! memory?
//!
//! The proxy is the built `meshcache` binary in its own process (its memory and sockets
//! are read from /proc); the origin, the load and the measuring client are in this process.
//! The measuring client runs on a runtime of its own (this thread), so its requests never
//! queue behind the load's tasks; all of them still share the machine's cores with the
//! proxy. The load comes from 127.0.0.2, 127.0.0.3, … (each socket bound to its source
//! address before connecting) so that no address exceeds `listen.max_connections_per_client`;
//! the measuring client is 127.0.0.1. All traffic is on loopback.
//!
//! Reported: p50 / p99 of sequential 1 KiB hits on one keep-alive connection, unloaded and
//! with the load held, their ratio, and the proxy's peak RSS; then, once the load is
//! closed, the unloaded run once more (how steady the machine was), and per run the CPU the
//! proxy and everything else on the machine used. No pass/fail thresholds; the bench panics
//! only if its setup fails (proxy not started, load not in place).
//!
//! `cargo bench --bench load`: 5,000 silent connections and 1,000 slow readers, 5 s per
//! measurement. `MESHCACHE_BENCH_QUICK=1`: 500 and 100, 2 s. Override the counts with
//! `MESHCACHE_BENCH_SILENT=<n>` / `MESHCACHE_BENCH_SLOW=<n>`.

mod common;

use common::pct;
use common::process::ProxyProcess;
use common::procfs::{clock_ticks, cpu_secs as proc_cpu_secs, status_kib as proc_status_kib};

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// The small objects the measuring client asks for (each 1 KiB, distinct bytes).
const SMALL_OBJECTS: usize = 4;
const SMALL_LEN: usize = 1024;
/// The object the slow readers trickle.
const BIG_PATH: &str = "/big";
const BIG_LEN: usize = 10 << 20;

/// Proxy limits for this bench: room for the whole load (and the measuring client).
const MAX_CONNECTIONS: usize = 8192;
const MAX_PER_CLIENT: usize = 256;
/// Long enough that the silent sockets are not closed during the run (the default is 10 s;
/// with it, the silent half of the load would be gone before the loaded measurement).
const HEADER_READ_TIMEOUT_S: u64 = 120;
/// Load connections per source address: under the per-client cap, with room to spare.
const PER_ADDRESS: usize = 200;

/// Slow readers: `SLOW_READ` bytes every `SLOW_TICK`, i.e. 10 KiB/s.
const SLOW_READ: usize = 2048;
const SLOW_TICK: Duration = Duration::from_millis(200);
/// The slow readers' socket receive buffer (set before connect, which turns the kernel's
/// receive autotuning off): without it the kernel would absorb megabytes of each body and
/// the proxy would not really hold 1,000 unfinished responses.
const SLOW_RCVBUF: u32 = 32 * 1024;

/// Connections opened at once while setting up the load.
const CONNECT_CONCURRENCY: usize = 128;

struct Plan {
    quick: bool,
    cores: usize,
    silent: usize,
    slow: usize,
    measure: Duration,
}

impl Plan {
    fn from_env() -> Self {
        let quick = common::quick();
        let count = |var: &str, full: usize, quick_n: usize| match std::env::var(var) {
            Ok(v) => v.parse().unwrap_or_else(|_| panic!("{var}: a number")),
            Err(_) if quick => quick_n,
            Err(_) => full,
        };
        Plan {
            quick,
            cores: common::cores(),
            silent: count("MESHCACHE_BENCH_SILENT", 5000, 500),
            slow: count("MESHCACHE_BENCH_SLOW", 1000, 100),
            measure: common::load_duration(quick),
        }
    }

    fn silent_addresses(&self) -> usize {
        self.silent.div_ceil(PER_ADDRESS)
    }
}

/// The source address of load connection `i` of a group whose addresses start at
/// 127.0.0.(2 + `first`).
fn source(first: usize, i: usize) -> Ipv4Addr {
    let n = 2 + first + i / PER_ADDRESS;
    assert!(
        n <= 254,
        "too many load connections for 127.0.0.2–127.0.0.254"
    );
    Ipv4Addr::new(127, 0, 0, n as u8)
}

fn main() {
    let plan = Plan::from_env();
    let started = Instant::now();
    let nofile = raise_nofile(plan.silent + plan.slow + 1024);

    // Origin and load: a multi-thread runtime whose tasks run on its workers whatever the
    // main thread does. The measuring client: a current-thread runtime on this thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.cores)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");

    let origin = rt.block_on(start_origin());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut proxy = ProxyProcess::start(dir.path(), &proxy_config(origin));
    let pid = proxy.pid();
    let proxy_nofile = proc_limit_nofile(pid);

    println!(
        "load: {} mode, {} cores; {} silent connections + {} slow readers; {:.0} s per measurement",
        if plan.quick { "quick" } else { "full" },
        plan.cores,
        plan.silent,
        plan.slow,
        plan.measure.as_secs_f64()
    );
    println!(
        "proxy: `meshcache run` as a separate process (pid {pid}) on {}; origin {origin}, load and client in this process",
        proxy.addr
    );
    println!(
        "config: max_connections {MAX_CONNECTIONS}, max_connections_per_client {MAX_PER_CLIENT}, \
         header_read_timeout \"{HEADER_READ_TIMEOUT_S}s\" and idle_timeout \"{HEADER_READ_TIMEOUT_S}s\""
    );
    println!(
        "        (raised from 10 s / 75 s so the silent sockets stay open for the whole run), cache.shared, mesh off"
    );
    println!(
        "RLIMIT_NOFILE (soft/hard): bench {}/{} (was {}/{}), proxy {} (inherited from the bench)",
        nofile.2,
        nofile.1,
        nofile.0,
        nofile.1,
        proxy_nofile.as_deref().unwrap_or("?")
    );
    println!(
        "machine load average at start: {} (other work on these cores distorts the latencies; see `other CPU`)",
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "?".into())
    );
    let rss_start = proc_status_kib(pid, "VmRSS");

    // 1. Warm the cache.
    rt.block_on(warm(proxy.addr, origin));
    let rss_warm = proc_status_kib(pid, "VmRSS");
    println!(
        "warm: {SMALL_OBJECTS} x 1 KiB and 1 x 10 MiB fetched once through the proxy, each confirmed a hit"
    );

    // 2. Unloaded baseline.
    let unloaded = phase(&client_rt, proxy.addr, origin, plan.measure, pid);

    // 3. Load: silent sockets, then slow readers; check it is in place.
    let sockets_idle = proc_socket_count(pid);
    let t = Instant::now();
    let silent = rt.block_on(open_silent(proxy.addr, plan.silent));
    let silent_setup = t.elapsed();
    let t = Instant::now();
    let slow = rt.block_on(SlowReaders::start(
        proxy.addr,
        origin,
        plan.slow,
        plan.silent_addresses(),
    ));
    rt.block_on(slow.wait_in_place(Duration::from_secs(60)));
    let slow_setup = t.elapsed();
    // A little slack: a connection of the warm-up or the baseline may close meanwhile.
    let sockets_loaded = wait_sockets(
        pid,
        (sockets_idle + plan.silent + plan.slow).saturating_sub(4),
    );
    let held_silent = count_silent_open(&silent);
    if held_silent.open != plan.silent {
        panic!(
            "load not in place: of {} silent connections {} are open, {} were closed by the proxy, \
             {} got bytes (a refusal?)",
            plan.silent, held_silent.open, held_silent.closed, held_silent.answered
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_load = proc_status_kib(pid, "VmRSS");
    println!(
        "load in place: {} silent connections from 127.0.0.2–{} (opened in {:.1} s), {} slow readers from {}–{} \
         (all had a 200 hit head and body bytes {:.1} s after the first connect); the proxy holds {} sockets ({} before)",
        plan.silent,
        source(0, plan.silent.saturating_sub(1)),
        silent_setup.as_secs_f64(),
        plan.slow,
        source(plan.silent_addresses(), 0),
        source(plan.silent_addresses(), plan.slow.saturating_sub(1)),
        slow_setup.as_secs_f64(),
        sockets_loaded,
        sockets_idle
    );

    // 4. Loaded.
    let bytes0 = slow.total_bytes();
    let t = Instant::now();
    let loaded = phase(&client_rt, proxy.addr, origin, plan.measure, pid);
    let slow_rate = (slow.total_bytes() - bytes0) as f64 / t.elapsed().as_secs_f64() / 1024.0;

    // Still held?
    let after_silent = count_silent_open(&silent);
    let after_slow = slow.snapshot();
    let sockets_end = proc_socket_count(pid);

    // 5. Memory.
    let rss_end = proc_status_kib(pid, "VmRSS");
    let hwm = proc_status_kib(pid, "VmHWM");

    // The load goes; the baseline once more, to show how steady the machine was.
    slow.stop();
    drop(silent);
    let t = Instant::now();
    while proc_socket_count(pid) > sockets_idle + 4 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let sockets_closed = proc_socket_count(pid);
    let rss_closed = proc_status_kib(pid, "VmRSS");
    let again = phase(&client_rt, proxy.addr, origin, plan.measure, pid);

    // 6. Report.
    let mib = |k: Option<u64>| k.map_or("-".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
    println!();
    println!(
        "  1 KiB hits, sequential, one keep-alive connection from 127.0.0.1 ({SMALL_OBJECTS} URLs in turn)"
    );
    println!(
        "  {:<16} {:>8} {:>7} {:>7} {:>7} {:>7} {:>8} {:>7} {:>7} {:>9} {:>9}",
        "phase",
        "requests",
        "req/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max ms",
        "not hit",
        "proxy CPU",
        "other CPU"
    );
    for (name, p) in [
        ("unloaded", &unloaded),
        ("loaded", &loaded),
        ("unloaded again", &again),
    ] {
        let l = &p.m.latencies;
        let secs = |c: Option<f64>| c.map_or("-".into(), |c| format!("{c:.2} s"));
        println!(
            "  {:<16} {:>8} {:>7.0} {:>7.0} {:>7.0} {:>7.0} {:>8.0} {:>7.1} {:>7} {:>9} {:>9}",
            name,
            l.len(),
            l.len() as f64 / p.m.elapsed.as_secs_f64(),
            pct(l, 50.0),
            pct(l, 90.0),
            pct(l, 99.0),
            pct(l, 99.9),
            l.iter().max().unwrap().as_secs_f64() * 1e3,
            p.m.not_hit + p.m.errors,
            secs(p.proxy_cpu),
            secs(p.other_cpu),
        );
        if p.m.errors > 0 {
            println!(
                "    {} requests failed (reconnected); first: {}",
                p.m.errors, p.m.first_error
            );
        }
    }
    println!(
        "  proxy CPU: user+sys seconds of the proxy during the phase; other CPU: busy time of the machine \
         (/proc/stat) minus this bench's and the proxy's — other processes, steal"
    );
    let ratio = |a: &Phase, p: f64| pct(&loaded.m.latencies, p) / pct(&a.m.latencies, p);
    println!();
    println!("  {:<46} {:>10} {:>8}", "", "figure", "target");
    println!(
        "  {:<46} {:>10.2} {:>8}",
        "loaded / unloaded p50",
        ratio(&unloaded, 50.0),
        ""
    );
    println!(
        "  {:<46} {:>10.2} {:>8}",
        "loaded / unloaded p99",
        ratio(&unloaded, 99.0),
        "≤ 2.0"
    );
    println!(
        "  {:<46} {:>10.2} {:>8}",
        "(loaded / unloaded-again p99)",
        ratio(&again, 99.0),
        ""
    );
    println!(
        "  {:<46} {:>10} {:>8}",
        "proxy peak RSS (VmHWM), MiB",
        mib(hwm),
        "≤ 128"
    );
    println!(
        "  {:<46} {:>10} {:>8}",
        "proxy RSS with the load held, MiB",
        mib(rss_end),
        ""
    );
    println!(
        "  {:<46} {:>10} {:>8}",
        "silent connections held (before / after)",
        format!("{}/{}", held_silent.open, after_silent.open),
        plan.silent
    );
    println!(
        "  {:<46} {:>10} {:>8}",
        "slow readers held (before / after)",
        format!("{}/{}", plan.slow, after_slow.alive),
        plan.slow
    );
    println!("  (before / after: when the loaded measurement started / ended)");
    println!();
    println!(
        "  proxy RSS (MiB): start {}, after warm-up {}, load in place {}, after the loaded run {}, \
         load closed {}; peak {}",
        mib(rss_start),
        mib(rss_warm),
        mib(rss_load),
        mib(rss_end),
        mib(rss_closed),
        mib(hwm)
    );
    if let (Some(a), Some(b)) = (rss_warm, rss_end) {
        println!(
            "  RSS the load added: {:.1} MiB, {:.1} KiB per held connection",
            (b as f64 - a as f64) / 1024.0,
            (b as f64 - a as f64) / (plan.silent + plan.slow).max(1) as f64
        );
    }
    println!(
        "  proxy sockets: {sockets_idle} before the load, {sockets_loaded} with it, {sockets_end} after the loaded run, \
         {sockets_closed} once the load closed"
    );
    println!(
        "  slow readers during the loaded run: {:.0} KiB/s in all ({:.1} KiB/s each, {:.0} asked for); \
         each has received {}–{} KiB of {} KiB",
        slow_rate,
        slow_rate / plan.slow.max(1) as f64,
        SLOW_READ as f64 / SLOW_TICK.as_secs_f64() / 1024.0,
        after_slow.min_bytes / 1024,
        after_slow.max_bytes / 1024,
        BIG_LEN / 1024
    );
    if after_slow.ended + after_slow.failed > 0 {
        println!(
            "  WARNING: {} slow readers saw their connection end, {} failed; first: {}",
            after_slow.ended, after_slow.failed, after_slow.first_error
        );
    }
    if after_silent.open != plan.silent {
        println!(
            "  WARNING: {} silent connections were closed during the loaded run",
            plan.silent - after_silent.open
        );
    }

    // 7. Clean up: the load is closed already; stop the proxy.
    let t = Instant::now();
    let status = proxy.stop();
    println!(
        "  proxy stopped with SIGTERM in {:.2} s: {status}; whole run {:.0} s",
        t.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    drop(rt);
}

/// One measurement and the CPU the machine spent meanwhile.
struct Phase {
    m: Measurement,
    proxy_cpu: Option<f64>,
    other_cpu: Option<f64>,
}

fn phase(
    client_rt: &tokio::runtime::Runtime,
    proxy: SocketAddr,
    origin: SocketAddr,
    dur: Duration,
    pid: u32,
) -> Phase {
    let me = std::process::id();
    let before = (proc_cpu_secs(pid), proc_cpu_secs(me), system_busy_secs());
    let m = client_rt.block_on(measure(proxy, origin, dur));
    let after = (proc_cpu_secs(pid), proc_cpu_secs(me), system_busy_secs());
    let proxy_cpu = after.0.zip(before.0).map(|(b, a)| b - a);
    let other_cpu = match (proxy_cpu, after.1.zip(before.1), after.2.zip(before.2)) {
        (Some(p), Some((m1, m0)), Some((b1, b0))) => Some(((b1 - b0) - (m1 - m0) - p).max(0.0)),
        _ => None,
    };
    Phase {
        m,
        proxy_cpu,
        other_cpu,
    }
}

// ---------------------------------------------------------------------------------------
// Resource limit

/// Raises this process's RLIMIT_NOFILE soft limit to its hard limit (the proxy, spawned
/// later, inherits it). Returns (old soft, hard, new soft); panics if `need` does not fit.
fn raise_nofile(need: usize) -> (libc::rlim_t, libc::rlim_t, libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            panic!("getrlimit: {}", std::io::Error::last_os_error());
        }
        let old = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            panic!("setrlimit: {}", std::io::Error::last_os_error());
        }
        if lim.rlim_cur < need as libc::rlim_t {
            panic!(
                "RLIMIT_NOFILE hard limit {} is below the {need} descriptors this load needs \
                 (raise it, or lower MESHCACHE_BENCH_SILENT / MESHCACHE_BENCH_SLOW)",
                lim.rlim_max
            );
        }
        (old, lim.rlim_max, lim.rlim_cur)
    }
}

// ---------------------------------------------------------------------------------------
// Origin

async fn start_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().unwrap();
    let small: Arc<Vec<Bytes>> = Arc::new(
        (0..SMALL_OBJECTS)
            .map(|i| Bytes::from(vec![b'a' + i as u8; SMALL_LEN]))
            .collect(),
    );
    let big = Bytes::from(
        (0..BIG_LEN)
            .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[3])
            .collect::<Vec<u8>>(),
    );
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (small, big) = (small.clone(), big.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let body = match req.uri().path() {
                        BIG_PATH => Some(big.clone()),
                        p => p
                            .strip_prefix("/small/")
                            .and_then(|n| n.parse::<usize>().ok())
                            .and_then(|n| small.get(n).cloned()),
                    };
                    async move {
                        Ok::<_, Infallible>(match body {
                            Some(b) => Response::builder()
                                .header("content-type", "application/octet-stream")
                                .header("cache-control", "max-age=3600")
                                .body(Full::new(b))
                                .unwrap(),
                            None => Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        })
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

fn small_url(origin: SocketAddr, i: usize) -> String {
    format!("http://{origin}/small/{i}")
}

// ---------------------------------------------------------------------------------------
// The normal client

/// One keep-alive HTTP/1.1 connection to the proxy.
struct Conn {
    send: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

struct Got {
    status: u16,
    cache_status: String,
    len: usize,
}

impl Conn {
    async fn open(proxy: SocketAddr) -> Result<Conn, String> {
        let stream = TcpStream::connect(proxy)
            .await
            .map_err(|e| format!("connect {proxy}: {e}"))?;
        stream.set_nodelay(true).ok();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Conn { send })
    }

    async fn request(&mut self, method: &str, url: &str, host: &str) -> Result<Got, String> {
        self.send
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let req = Request::builder()
            .method(method)
            .uri(url)
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = self
            .send
            .send_request(req)
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let status = res.status().as_u16();
        let cache_status = res
            .headers()
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{method} {url}: body: {e}"))?
            .to_bytes();
        Ok(Got {
            status,
            cache_status,
            len: body.len(),
        })
    }
}

/// Each object through the proxy once, then until it is a plain hit (the fill committed).
async fn warm(proxy: SocketAddr, origin: SocketAddr) {
    let host = origin.to_string();
    let mut conn = Conn::open(proxy)
        .await
        .unwrap_or_else(|e| panic!("warm-up: {e}"));
    let mut urls: Vec<(String, usize)> = (0..SMALL_OBJECTS)
        .map(|i| (small_url(origin, i), SMALL_LEN))
        .collect();
    urls.push((format!("http://{origin}{BIG_PATH}"), BIG_LEN));
    for (url, len) in &urls {
        let g = conn
            .request("GET", url, &host)
            .await
            .unwrap_or_else(|e| panic!("warm-up: {e}"));
        if g.status != 200 || g.len != *len {
            panic!(
                "warm-up: GET {url} through the proxy: status {}, {} bytes (expected 200, {len}), cache-status {:?}",
                g.status, g.len, g.cache_status
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for (url, len) in &urls {
        loop {
            let g = conn
                .request("GET", url, &host)
                .await
                .unwrap_or_else(|e| panic!("warm-up: {e}"));
            if g.status == 200
                && g.len == *len
                && g.cache_status.contains("hit")
                && !g.cache_status.contains("collapsed")
            {
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "warm-up: {url} is not a hit 30 s after it was fetched (last: status {}, cache-status {:?})",
                    g.status, g.cache_status
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

struct Measurement {
    latencies: Vec<Duration>,
    elapsed: Duration,
    not_hit: usize,
    errors: usize,
    first_error: String,
}

/// Sequential 1 KiB hits on one keep-alive connection for `dur` (after 200 unrecorded).
async fn measure(proxy: SocketAddr, origin: SocketAddr, dur: Duration) -> Measurement {
    let host = origin.to_string();
    let urls: Vec<String> = (0..SMALL_OBJECTS).map(|i| small_url(origin, i)).collect();
    let mut conn = Conn::open(proxy)
        .await
        .unwrap_or_else(|e| panic!("measuring client: {e}"));
    for i in 0..200 {
        conn.request("GET", &urls[i % urls.len()], &host)
            .await
            .unwrap_or_else(|e| panic!("measuring client, warm-up: {e}"));
    }
    let mut m = Measurement {
        latencies: Vec::with_capacity(1 << 16),
        elapsed: Duration::ZERO,
        not_hit: 0,
        errors: 0,
        first_error: String::new(),
    };
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < dur {
        let url = &urls[i % urls.len()];
        i += 1;
        let t = Instant::now();
        match conn.request("GET", url, &host).await {
            Ok(g) => {
                m.latencies.push(t.elapsed());
                if g.status != 200 || g.len != SMALL_LEN || !g.cache_status.contains("hit") {
                    m.not_hit += 1;
                }
            }
            Err(e) => {
                m.errors += 1;
                if m.first_error.is_empty() {
                    m.first_error = e;
                }
                conn = Conn::open(proxy)
                    .await
                    .unwrap_or_else(|e| panic!("measuring client: reconnect: {e}"));
            }
        }
    }
    m.elapsed = start.elapsed();
    if m.latencies.is_empty() {
        panic!("measuring client: no request succeeded ({})", m.first_error);
    }
    m
}

// ---------------------------------------------------------------------------------------
// The load

async fn connect_from(
    src: Ipv4Addr,
    proxy: SocketAddr,
    rcvbuf: Option<u32>,
) -> Result<TcpStream, String> {
    let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n)
            .map_err(|e| format!("SO_RCVBUF: {e}"))?;
    }
    sock.bind(SocketAddr::new(IpAddr::V4(src), 0))
        .map_err(|e| format!("bind {src}: {e}"))?;
    tokio::time::timeout(Duration::from_secs(20), sock.connect(proxy))
        .await
        .map_err(|_| format!("connect from {src}: timed out"))?
        .map_err(|e| format!("connect from {src}: {e}"))
}

/// Opens `n` connections that never send anything.
async fn open_silent(proxy: SocketAddr, n: usize) -> Vec<TcpStream> {
    let results: Vec<Result<TcpStream, String>> = futures_util::stream::iter(0..n)
        .map(|i| connect_from(source(0, i), proxy, None))
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let mut streams = Vec::with_capacity(n);
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(s) => streams.push(s),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        panic!(
            "load not in place: {} of {n} silent connections failed; first: {}",
            errors.len(),
            errors[0]
        );
    }
    streams
}

struct SilentState {
    open: usize,
    closed: usize,
    answered: usize,
}

/// Peeks at every silent connection without blocking (`recv` with `MSG_PEEK |
/// MSG_DONTWAIT`, so nothing is consumed and the reactor's view does not matter): still
/// open with nothing received, closed by the proxy, or answered (a 503 refusal would be).
fn count_silent_open(streams: &[TcpStream]) -> SilentState {
    use std::os::fd::AsRawFd;
    let mut s = SilentState {
        open: 0,
        closed: 0,
        answered: 0,
    };
    let mut buf = [0u8; 1];
    for st in streams {
        // SAFETY: a valid socket descriptor and a 1-byte buffer.
        let n = unsafe {
            libc::recv(
                st.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => s.closed += 1,
            n if n > 0 => s.answered += 1,
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    s.open += 1;
                } else {
                    s.closed += 1;
                }
            }
        }
    }
    s
}

/// One slow reader's progress.
#[derive(Default)]
struct SlowState {
    /// Body bytes received.
    bytes: AtomicU64,
    /// 1 once the response head arrived with status 200 and a hit.
    head_ok: AtomicUsize,
    /// 1 when the connection ended (EOF) before the whole body.
    ended: AtomicUsize,
    /// 1 on any failure (connect, non-200, error).
    failed: AtomicUsize,
}

struct SlowReaders {
    states: Arc<Vec<SlowState>>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

struct SlowSnapshot {
    alive: usize,
    ended: usize,
    failed: usize,
    min_bytes: u64,
    max_bytes: u64,
    first_error: String,
}

impl SlowReaders {
    /// Starts `n` slow readers from addresses 127.0.0.(2 + `first_address`) on.
    async fn start(
        proxy: SocketAddr,
        origin: SocketAddr,
        n: usize,
        first_address: usize,
    ) -> SlowReaders {
        let states: Arc<Vec<SlowState>> = Arc::new((0..n).map(|_| SlowState::default()).collect());
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let request = Arc::new(format!(
            "GET http://{origin}{BIG_PATH} HTTP/1.1\r\nHost: {origin}\r\n\r\n"
        ));
        // Connect them (a bounded number at once), then each reads on its own.
        let streams: Vec<(usize, Result<TcpStream, String>)> = futures_util::stream::iter(0..n)
            .map(|i| async move {
                (
                    i,
                    connect_from(source(first_address, i), proxy, Some(SLOW_RCVBUF)).await,
                )
            })
            .buffer_unordered(CONNECT_CONCURRENCY)
            .collect()
            .await;
        let mut tasks = Vec::with_capacity(n);
        for (i, stream) in streams {
            let (states, errors, stop, request) = (
                states.clone(),
                errors.clone(),
                stop.clone(),
                request.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let st = &states[i];
                let r = match stream {
                    Ok(s) => slow_read(s, &request, st, &stop, i).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = r {
                    st.failed.store(1, Ordering::Relaxed);
                    errors.lock().unwrap().push(format!("slow reader {i}: {e}"));
                }
            }));
        }
        SlowReaders {
            states,
            errors,
            tasks,
            stop,
        }
    }

    /// Waits until every reader has its `200` hit head and some body bytes; panics if one
    /// fails or `within` passes.
    async fn wait_in_place(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let s = self.snapshot();
            if s.failed + s.ended > 0 {
                panic!(
                    "load not in place: {} slow readers failed, {} saw their connection end; first: {}",
                    s.failed, s.ended, s.first_error
                );
            }
            let ready = self
                .states
                .iter()
                .filter(|st| {
                    st.head_ok.load(Ordering::Relaxed) == 1 && st.bytes.load(Ordering::Relaxed) > 0
                })
                .count();
            if ready == self.states.len() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "load not in place: after {:.0} s only {ready} of {} slow readers have a 200 hit and body bytes",
                    within.as_secs_f64(),
                    self.states.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn total_bytes(&self) -> u64 {
        self.states
            .iter()
            .map(|s| s.bytes.load(Ordering::Relaxed))
            .sum()
    }

    fn snapshot(&self) -> SlowSnapshot {
        let mut s = SlowSnapshot {
            alive: 0,
            ended: 0,
            failed: 0,
            min_bytes: u64::MAX,
            max_bytes: 0,
            first_error: self
                .errors
                .lock()
                .unwrap()
                .first()
                .cloned()
                .unwrap_or_default(),
        };
        for st in self.states.iter() {
            let (ended, failed) = (
                st.ended.load(Ordering::Relaxed),
                st.failed.load(Ordering::Relaxed),
            );
            s.ended += ended;
            s.failed += failed;
            if ended + failed == 0 {
                s.alive += 1;
            }
            let b = st.bytes.load(Ordering::Relaxed);
            s.min_bytes = s.min_bytes.min(b);
            s.max_bytes = s.max_bytes.max(b);
        }
        if self.states.is_empty() {
            s.min_bytes = 0;
        }
        s
    }

    /// Ends every reader and closes its connection.
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Sends the request for the big hit, reads the response head, then the body at
/// `SLOW_READ` bytes per `SLOW_TICK` until the body is complete or the bench stops.
async fn slow_read(
    mut s: TcpStream,
    request: &str,
    st: &SlowState,
    stop: &AtomicBool,
    i: usize,
) -> Result<(), String> {
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send request: {e}"))?;
    // The head: read small pieces until the blank line.
    let mut head = Vec::with_capacity(1024);
    let mut buf = vec![0u8; SLOW_READ];
    let body_start = loop {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .map_err(|_| "no response head within 30 s".to_string())?
            .map_err(|e| format!("read head: {e}"))?;
        if n == 0 {
            return Err(format!(
                "connection closed before the response head ({:?})",
                String::from_utf8_lossy(&head)
            ));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if head.len() > 64 << 10 {
            return Err("response head over 64 KiB".into());
        }
    };
    let text = String::from_utf8_lossy(&head[..body_start]).to_ascii_lowercase();
    let status_line = text.lines().next().unwrap_or("").to_owned();
    if !status_line.starts_with("http/1.1 200") {
        return Err(format!("status line {status_line:?}"));
    }
    let cache_status = text
        .lines()
        .find_map(|l| l.strip_prefix("cache-status:"))
        .unwrap_or("")
        .trim()
        .to_owned();
    if !cache_status.contains("hit") {
        return Err(format!("not a hit: cache-status {cache_status:?}"));
    }
    let mut got = (head.len() - body_start) as u64;
    st.bytes.store(got, Ordering::Relaxed);
    st.head_ok.store(1, Ordering::Relaxed);
    // Stagger the readers over one tick so they do not all wake at once.
    let offset = SLOW_TICK.mul_f64((i % 97) as f64 / 97.0);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, SLOW_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while got < BIG_LEN as u64 && !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let want = SLOW_READ.min((BIG_LEN as u64 - got) as usize);
        let n = s
            .read(&mut buf[..want])
            .await
            .map_err(|e| format!("read body after {got} bytes: {e}"))?;
        if n == 0 {
            st.ended.store(1, Ordering::Relaxed);
            return Err(format!("connection ended after {got} body bytes"));
        }
        got += n as u64;
        st.bytes.store(got, Ordering::Relaxed);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The proxy process

/// The proxy's configuration for the run: room for the whole load, deadlines raised so the
/// silent sockets stay, the loopback origin opened to the load's (non-admin) clients.
fn proxy_config(origin: SocketAddr) -> String {
    format!(
        r#"[listen]
forward = "127.0.0.1:0"
max_connections = {MAX_CONNECTIONS}
max_connections_per_client = {MAX_PER_CLIENT}
header_read_timeout = "{HEADER_READ_TIMEOUT_S}s"
idle_timeout = "{HEADER_READ_TIMEOUT_S}s"
allow = ["127.0.0.0/8"]

[origin]
# The load's clients (127.0.0.2 and up) are not admins; should the proxy need the origin
# for them, this loopback origin ({origin}) is theirs to reach too.
allow = ["127.0.0.1/32"]

[cache]
shared = true

[log]
level = "warn"
access = false

[mesh]
enabled = false
"#
    )
}

// ---------------------------------------------------------------------------------------
// /proc

/// The sockets `pid` has open (its descriptors that are sockets).
fn proc_socket_count(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

/// Waits until the proxy holds at least `want` sockets (it accepted the whole load);
/// panics after 30 s.
fn wait_sockets(pid: u32, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = proc_socket_count(pid);
        if n >= want {
            return n;
        }
        if Instant::now() > deadline {
            panic!(
                "load not in place: the proxy holds {n} sockets, {want} expected (not all load connections accepted)"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The "Max open files" line of /proc/<pid>/limits, as "soft/hard".
fn proc_limit_nofile(pid: u32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let l = s.lines().find(|l| l.starts_with("Max open files"))?;
    let f: Vec<&str> = l["Max open files".len()..].split_whitespace().collect();
    Some(format!("{}/{}", f.first()?, f.get(1)?))
}

/// Busy CPU seconds of the whole machine so far (all cores; /proc/stat: user, nice,
/// system, irq, softirq, steal).
fn system_busy_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<f64> = s
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| f.get(i).copied().unwrap_or(0.0))
        .sum::<f64>();
    Some(busy / clock_ticks())
}
