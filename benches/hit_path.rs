//! Hit-path benchmark: how much a cache hit through meshcache costs compared with asking
//! the origin directly, and how much latency a miss adds.
//!
//! Everything runs in one process on loopback: an in-process origin (hyper, 1 KiB bodies,
//! `cache-control: max-age=3600`), an in-process proxy (tempdir data directory) and the
//! load generator. Figures are ratios against a reference measured in the same run; there
//! are no pass/fail thresholds.
//!
//! `cargo bench --bench hit_path`; `MESHCACHE_BENCH_QUICK=1` shrinks durations and counts.
//! If `nginx` is on the PATH it is measured too, serving the same 1 KiB file.

mod common;
use common::pct;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use meshcache::{Proxy, Settings, SystemClock};
use tokio::net::{TcpListener, TcpStream};

const BODY_LEN: usize = 1024;
const WARM_URLS: usize = 100;

struct Config {
    quick: bool,
    cores: usize,
    conns: usize,
    duration: Duration,
    latency_count: usize,
}

impl Config {
    fn from_env() -> Self {
        let (quick, cores) = (common::quick(), common::cores());
        Self {
            quick,
            cores,
            conns: common::load_connections(cores),
            duration: common::load_duration(quick),
            latency_count: if quick { 300 } else { 2000 },
        }
    }
}

fn main() {
    let cfg = Config::from_env();
    common::block_on(cfg.cores, run(cfg));
}

async fn run(cfg: Config) {
    println!(
        "hit_path: {} mode, {} cores, {} keep-alive connections, {} s per load run, {} B bodies",
        if cfg.quick { "quick" } else { "full" },
        cfg.cores,
        cfg.conns,
        cfg.duration.as_secs(),
        BODY_LEN
    );
    println!(
        "note: load generator, origin and proxy run in ONE process and share the same {} cores;",
        cfg.cores
    );
    println!("      compare the ratios, not the absolute figures.");

    let origin = start_origin().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = Settings::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    settings.access_log = false;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let proxy = Proxy::start_on(settings, listener, Arc::new(SystemClock))
        .await
        .expect("start proxy");
    let paddr = proxy.addr();

    // Warm the cache, then check every warmed URL is now a hit.
    let mut c = Conn::open(paddr).await;
    let mut not_stored = 0;
    for i in 0..WARM_URLS {
        let r = c
            .get(&abs(origin, &format!("/hot/{i}")))
            .await
            .expect("warm request");
        if !r.cache_status.contains("stored") {
            not_stored += 1;
        }
    }
    let mut not_hit = Vec::new();
    for i in 0..WARM_URLS {
        let r = c
            .get(&abs(origin, &format!("/hot/{i}")))
            .await
            .expect("check request");
        if !r.cache_status.contains("hit") {
            not_hit.push(r.cache_status);
        }
    }
    drop(c);
    println!(
        "warm-up: {WARM_URLS} URLs fetched through the proxy; {} not reported `stored`, {} not a hit on re-fetch",
        not_stored,
        not_hit.len()
    );
    if let Some(s) = not_hit.first() {
        println!("WARNING: a warmed URL was not a hit; first cache-status: {s:?}");
    }

    // Throughput.
    let direct = load(&cfg, origin, Target::Origin(origin)).await;
    let hits = load(&cfg, paddr, Target::Proxy(origin)).await;
    let nginx = match which("nginx") {
        Some(bin) => Some(nginx_load(&cfg, &bin).await),
        None => None,
    };

    println!();
    println!(
        "throughput: {} connections x {} s, GET of {} B bodies, keep-alive",
        cfg.conns,
        cfg.duration.as_secs(),
        BODY_LEN
    );
    println!(
        "  {:<24} {:>12} {:>10} {:>8} {:>10}",
        "target", "requests", "req/s", "errors", "vs origin"
    );
    print_load("origin direct", &direct, direct.rate());
    print_load("proxy (cache hits)", &hits, direct.rate());
    match &nginx {
        Some(Ok(n)) => print_load("nginx static file", n, direct.rate()),
        Some(Err(e)) => println!("  {:<24} skipped: {e}", "nginx static file"),
        None => println!("  {:<24} skipped: nginx not installed", "nginx static file"),
    }
    if hits.other > 0 {
        println!(
            "  WARNING: {} of {} proxied responses were not hits (first cache-status: {:?})",
            hits.other,
            hits.requests,
            hits.first_other.as_deref().unwrap_or("")
        );
    }
    println!(
        "  ratio proxy-hit / origin req/s: {:.2}",
        hits.rate() / direct.rate()
    );

    // Latency: sequential requests over one keep-alive connection.
    let n = cfg.latency_count;
    let mut c = Conn::open(origin).await;
    let mut lat_direct = Vec::with_capacity(n);
    for i in 0..n {
        let path = format!("/direct/{i}");
        let t = Instant::now();
        c.get_origin_form(origin, &path)
            .await
            .expect("direct request");
        lat_direct.push(t.elapsed());
    }
    drop(c);
    let mut c = Conn::open(paddr).await;
    let mut miss_status = (0usize, None::<String>);
    let mut lat_miss = Vec::with_capacity(n);
    for i in 0..n {
        let url = abs(origin, &format!("/miss/{i}"));
        let t = Instant::now();
        let r = c.get(&url).await.expect("miss request");
        lat_miss.push(t.elapsed());
        if !r.cache_status.contains("fwd=miss") {
            miss_status.0 += 1;
            miss_status.1.get_or_insert(r.cache_status);
        }
    }
    let mut hit_status = (0usize, None::<String>);
    let mut lat_hit = Vec::with_capacity(n);
    for i in 0..n {
        let url = abs(origin, &format!("/hot/{}", i % WARM_URLS));
        let t = Instant::now();
        let r = c.get(&url).await.expect("hit request");
        lat_hit.push(t.elapsed());
        if !r.cache_status.contains("hit") {
            hit_status.0 += 1;
            hit_status.1.get_or_insert(r.cache_status);
        }
    }
    drop(c);

    println!();
    println!(
        "latency: {n} sequential GETs on one keep-alive connection (misses use never-seen URLs)"
    );
    println!(
        "  {:<24} {:>10} {:>10} {:>14}",
        "path", "p50 us", "p99 us", "p50 vs origin"
    );
    let (d50, d99) = (pct(&lat_direct, 50.0), pct(&lat_direct, 99.0));
    let row = |name: &str, l: &[Duration]| {
        let (p50, p99) = (pct(l, 50.0), pct(l, 99.0));
        println!(
            "  {:<24} {:>10.0} {:>10.0} {:>14.2}",
            name,
            p50,
            p99,
            p50 / d50
        );
    };
    row("origin direct", &lat_direct);
    row("proxy miss (new URL)", &lat_miss);
    row("proxy hit", &lat_hit);
    let (m50, m99) = (pct(&lat_miss, 50.0), pct(&lat_miss, 99.0));
    println!(
        "  miss / origin ratio: p50 {:.2}, p99 {:.2}; added by a miss: p50 {:.0} us, p99 {:.0} us",
        m50 / d50,
        m99 / d99,
        m50 - d50,
        m99 - d99
    );
    if miss_status.0 > 0 {
        println!(
            "  WARNING: {} misses were not reported `fwd=miss` (first: {:?})",
            miss_status.0,
            miss_status.1.unwrap_or_default()
        );
    }
    if hit_status.0 > 0 {
        println!(
            "  WARNING: {} hit-path requests were not hits (first: {:?})",
            hit_status.0,
            hit_status.1.unwrap_or_default()
        );
    }

    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Origin

async fn start_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().unwrap();
    let body = Bytes::from(vec![b'x'; BODY_LEN]);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let body = body.clone();
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/octet-stream")
                                .header("cache-control", "max-age=3600")
                                .header("content-length", BODY_LEN)
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

fn abs(origin: SocketAddr, path: &str) -> String {
    format!("http://{origin}{path}")
}

// ---------------------------------------------------------------------------------------
// Client

struct Resp {
    cache_status: String,
}

struct Conn {
    send: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        Self::try_open(addr).await.expect("connect")
    }

    async fn try_open(addr: SocketAddr) -> Result<Conn, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Conn { send })
    }

    /// Absolute-form GET (through a proxy).
    async fn get(&mut self, url: &str) -> Result<Resp, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        self.send(uri, &host).await
    }

    /// Origin-form GET (straight to a server).
    async fn get_origin_form(&mut self, server: SocketAddr, path: &str) -> Result<Resp, String> {
        let uri: hyper::Uri = path.parse().map_err(|e| format!("{path}: {e}"))?;
        self.send(uri, &server.to_string()).await
    }

    async fn send(&mut self, uri: hyper::Uri, host: &str) -> Result<Resp, String> {
        self.send
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let req = Request::builder()
            .uri(uri)
            .header("host", host)
            .body(Empty::new())
            .unwrap();
        let res = self
            .send
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = res.status();
        let cache_status = res
            .headers()
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        if body.len() != BODY_LEN {
            return Err(format!("body of {} bytes, expected {BODY_LEN}", body.len()));
        }
        Ok(Resp { cache_status })
    }
}

// ---------------------------------------------------------------------------------------
// Load

#[derive(Clone, Copy)]
enum Target {
    /// Origin-form requests straight to this server.
    Origin(SocketAddr),
    /// Absolute-form requests for this origin, through the proxy.
    Proxy(SocketAddr),
}

struct LoadResult {
    requests: u64,
    errors: u64,
    /// Proxied responses that were not hits.
    other: u64,
    first_other: Option<String>,
    first_error: Option<String>,
    elapsed: Duration,
}

impl LoadResult {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

fn print_load(name: &str, r: &LoadResult, reference: f64) {
    println!(
        "  {:<24} {:>12} {:>10.0} {:>8} {:>10.2}",
        name,
        r.requests,
        r.rate(),
        r.errors,
        r.rate() / reference
    );
    if let Some(e) = &r.first_error {
        println!("    first error: {e}");
    }
}

/// `cfg.conns` keep-alive connections to `addr`, each sending requests back to back for
/// `cfg.duration`. A failed connection is reopened (nginx closes after keepalive_requests).
async fn load(cfg: &Config, addr: SocketAddr, target: Target) -> LoadResult {
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..cfg.conns {
        let stop = stop.clone();
        let requests = requests.clone();
        tasks.push(tokio::spawn(async move {
            let (mut errors, mut other) = (0u64, 0u64);
            let (mut first_error, mut first_other) = (None, None);
            let mut conn: Option<Conn> = None;
            let mut i = t;
            while !stop.load(Ordering::Relaxed) {
                if conn.is_none() {
                    match Conn::try_open(addr).await {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let c = conn.as_mut().unwrap();
                let path = format!("/hot/{}", i % WARM_URLS);
                i += 1;
                let r = match target {
                    Target::Origin(server) => c.get_origin_form(server, &path).await,
                    Target::Proxy(origin) => c.get(&abs(origin, &path)).await,
                };
                match r {
                    Ok(r) => {
                        requests.fetch_add(1, Ordering::Relaxed);
                        if matches!(target, Target::Proxy(_)) && !r.cache_status.contains("hit") {
                            other += 1;
                            first_other.get_or_insert(r.cache_status);
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                        conn = None;
                    }
                }
            }
            (errors, other, first_error, first_other)
        }));
    }
    let start = Instant::now();
    let before = requests.load(Ordering::Relaxed);
    tokio::time::sleep(cfg.duration).await;
    let done = requests.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut r = LoadResult {
        requests: done - before,
        errors: 0,
        other: 0,
        first_other: None,
        first_error: None,
        elapsed,
    };
    for t in tasks {
        let (errors, other, fe, fo) = t.await.expect("load task");
        r.errors += errors;
        r.other += other;
        if r.first_error.is_none() {
            r.first_error = fe;
        }
        if r.first_other.is_none() {
            r.first_other = fo;
        }
    }
    r
}

// ---------------------------------------------------------------------------------------
// nginx (optional reference)

fn which(bin: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

struct NginxGuard(Child);

impl Drop for NginxGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// Serves a 1 KiB file from a temp dir with nginx and loads it like the origin.
async fn nginx_load(cfg: &Config, bin: &Path) -> Result<LoadResult, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = dir.path().join("www").join("hot");
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    for i in 0..WARM_URLS {
        std::fs::write(root.join(i.to_string()), vec![b'x'; BODY_LEN])
            .map_err(|e| e.to_string())?;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        l.local_addr().map_err(|e| e.to_string())?.port()
    };
    let p = dir.path().display();
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes {workers};\npid {p}/nginx.pid;\n\
         error_log {p}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {p}/client_body;\n\
         proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n\
         scgi_temp_path {p}/scgi;\n  keepalive_requests 100000000;\n  keepalive_timeout 75s;\n\
         server {{\n    listen 127.0.0.1:{port};\n    root {p}/www;\n\
         location / {{ add_header cache-control \"max-age=3600\"; }}\n  }}\n}}\n",
        workers = cfg.cores,
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
    let _guard = NginxGuard(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(mut c) = Conn::try_open(addr).await {
            if c.get_origin_form(addr, "/hot/0").await.is_ok() {
                break;
            }
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
            return Err(format!("nginx did not answer within 5 s: {}", log.trim()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(load(cfg, addr, Target::Origin(addr)).await)
}
