//! Large-object benchmark: throughput of one big download through meshcache (as a miss,
//! then as a hit) against the same download straight from the origin, and the proxy's
//! peak memory while doing it.
//!
//! The proxy is the built `meshcache` binary in its own process (so its memory can be
//! read from /proc); the origin is in this process and generates a deterministic body
//! 64 KiB at a time, never holding it whole. Every byte received is checked against the
//! pattern. Figures are ratios against a reference measured in the same run; there are no
//! pass/fail thresholds.
//!
//! `cargo bench --bench large_object`. Body size: 1 GiB, or 128 MiB with
//! `MESHCACHE_BENCH_QUICK=1`, or `MESHCACHE_BENCH_SIZE=<bytes>`.

mod common;

use common::process::ProxyProcess;
use common::procfs::{cpu_secs as proc_cpu_secs, status_kib as proc_status_kib};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const CHUNK: usize = 64 * 1024;
const PATH: &str = "/large.bin";

fn main() {
    let quick = common::quick();
    let size: u64 = match std::env::var("MESHCACHE_BENCH_SIZE") {
        Ok(v) => v.parse().expect("MESHCACHE_BENCH_SIZE: a byte count"),
        Err(_) if quick => 128 << 20,
        Err(_) => 1 << 30,
    };
    let cores = common::cores();
    common::block_on(cores, run(quick, size, cores));
}

async fn run(quick: bool, size: u64, cores: usize) {
    let base = Arc::new(base_block());
    let origin = start_origin(size, base.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut proxy = ProxyProcess::start(dir.path(), "[log]\nlevel = \"warn\"\naccess = false\n");

    println!(
        "large_object: {} mode, body {} bytes ({:.0} MiB), {} cores",
        if quick { "quick" } else { "full" },
        size,
        size as f64 / (1 << 20) as f64,
        cores
    );
    println!(
        "proxy: `meshcache run` as a separate process (pid {}) on {}; origin and client share this process",
        proxy.pid(),
        proxy.addr
    );
    let rss_start = proc_status_kib(proxy.pid(), "VmRSS");
    let pid = proxy.pid();
    let host = origin.to_string();
    let url = format!("http://{origin}{PATH}");

    // (label, download, proxy CPU seconds during it, proxy VmHWM after it)
    let mut rows = Vec::new();
    let d = download(origin, PATH, &host, size, &base).await;
    rows.push(("origin direct", d, None, None));
    let mut stored = String::new();
    for label in ["proxy miss", "proxy hit", "proxy hit (store)"] {
        if label == "proxy hit (store)" {
            // A request that arrives while the finished fill is still being imported into
            // the body store joins the fill and reads its spool (`detail=collapsed`). Wait
            // until the import is committed, so this last one reads the body store (and
            // the SIGTERM below does not interrupt an import).
            stored = wait_stored(proxy.addr, &url, &host, rows[1].1.finished).await;
        }
        let cpu = proc_cpu_secs(pid);
        let d = download(proxy.addr, &url, &host, size, &base).await;
        let cpu = proc_cpu_secs(pid).zip(cpu).map(|(b, a)| b - a);
        rows.push((label, d, cpu, proc_status_kib(pid, "VmHWM")));
    }
    let rss_end = proc_status_kib(pid, "VmRSS");

    let mib = |k: Option<u64>| k.map_or("-".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
    println!();
    println!("  MB = 10^6 bytes; time from sending the request to the last byte;");
    println!("  proxy CPU = user+sys seconds the proxy process used during the transfer;");
    println!("  frame KiB = mean size of the body chunks the client received");
    println!(
        "  {:<18} {:>7} {:>8} {:>8} {:>10} {:>10} {:>10} {:>10}  {:<8} cache-status",
        "transfer",
        "MB/s",
        "seconds",
        "TTFB ms",
        "vs direct",
        "proxy CPU",
        "VmHWM MiB",
        "frame KiB",
        "verified"
    );
    let reference = rows[0].1.mb_per_s();
    for (name, d, cpu, hwm) in &rows {
        println!(
            "  {:<18} {:>7.0} {:>8.2} {:>8.1} {:>10.2} {:>10} {:>10} {:>10.1}  {:<8} {}",
            name,
            d.mb_per_s(),
            d.elapsed.as_secs_f64(),
            d.ttfb.as_secs_f64() * 1000.0,
            d.mb_per_s() / reference,
            cpu.map_or("-".into(), |c| format!("{c:.2}")),
            mib(*hwm),
            d.bytes as f64 / d.frames.max(1) as f64 / 1024.0,
            d.verdict(size),
            d.cache_status
        );
        if let Some(e) = &d.error {
            println!("    ERROR: {e}");
        }
    }
    if !rows[1].1.cache_status.contains("fwd=miss") {
        println!("  WARNING: the first proxied download was not a miss");
    }
    for (name, d, _, _) in &rows[2..] {
        if !d.cache_status.contains("hit") {
            println!("  WARNING: `{name}` was not a hit");
        }
    }
    println!("  {stored}");
    println!(
        "  proxy memory (MiB): VmRSS at start {}, peak (VmHWM) at end {}, VmRSS at end {}",
        mib(rss_start),
        mib(rows.last().and_then(|r| r.3)),
        mib(rss_end)
    );

    let t = Instant::now();
    let status = proxy.stop();
    println!(
        "  proxy stopped with SIGTERM in {:.2} s: {status}",
        t.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------
// The body pattern: chunk `c` (64 KiB, the last one shorter) is the base block with its
// first 8 bytes xored with `c` (little-endian), so misplaced or repeated chunks show.

fn base_block() -> Vec<u8> {
    (0..CHUNK as u64)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8)
        .collect()
}

fn chunk(base: &[u8], c: u64, len: usize) -> Bytes {
    let mut v = base[..len].to_vec();
    for (b, s) in v.iter_mut().zip(c.to_le_bytes()) {
        *b ^= s;
    }
    Bytes::from(v)
}

/// Checks received bytes against the pattern as they arrive.
struct Verifier<'a> {
    base: &'a [u8],
    pos: u64,
    first_mismatch: Option<u64>,
}

impl Verifier<'_> {
    fn feed(&mut self, mut d: &[u8]) {
        while !d.is_empty() {
            let c = self.pos / CHUNK as u64;
            let off = (self.pos % CHUNK as u64) as usize;
            let n = d.len().min(CHUNK - off);
            let (seg, rest) = d.split_at(n);
            if self.first_mismatch.is_none() {
                let stamp = c.to_le_bytes();
                let head = 8usize.saturating_sub(off).min(n);
                for (j, &b) in seg[..head].iter().enumerate() {
                    if b != self.base[off + j] ^ stamp[off + j] {
                        self.first_mismatch.get_or_insert(self.pos + j as u64);
                    }
                }
                if self.first_mismatch.is_none() && seg[head..] != self.base[off + head..off + n] {
                    let j = seg[head..]
                        .iter()
                        .zip(&self.base[off + head..off + n])
                        .position(|(a, b)| a != b)
                        .unwrap_or(0);
                    self.first_mismatch = Some(self.pos + (head + j) as u64);
                }
            }
            self.pos += n as u64;
            d = rest;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Origin

async fn start_origin(size: u64, base: Arc<Vec<u8>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let base = base.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let base = base.clone();
                    async move { Ok::<_, Infallible>(answer(&req, size, base)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

type OriginBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn answer(req: &Request<Incoming>, size: u64, base: Arc<Vec<u8>>) -> Response<OriginBody> {
    if req.uri().path() != PATH {
        return Response::builder()
            .status(404)
            .body(Empty::new().boxed_unsync())
            .unwrap();
    }
    let chunks = futures_util::stream::unfold(0u64, move |pos| {
        let base = base.clone();
        async move {
            if pos >= size {
                return None;
            }
            let n = (size - pos).min(CHUNK as u64) as usize;
            let data = chunk(&base, pos / CHUNK as u64, n);
            Some((Ok::<_, Infallible>(Frame::data(data)), pos + n as u64))
        }
    });
    Response::builder()
        .header("content-type", "application/octet-stream")
        .header("cache-control", "max-age=3600")
        .header("content-length", size)
        .body(StreamBody::new(chunks.boxed()).boxed_unsync())
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Client

struct Download {
    bytes: u64,
    /// Body frames (data chunks) received.
    frames: u64,
    elapsed: Duration,
    /// When the last byte arrived.
    finished: Instant,
    ttfb: Duration,
    cache_status: String,
    first_mismatch: Option<u64>,
    error: Option<String>,
}

impl Download {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    fn verdict(&self, size: u64) -> String {
        if let Some(p) = self.first_mismatch {
            format!("BAD@{p}")
        } else if self.error.is_some() {
            "ERROR".into()
        } else if self.bytes != size {
            format!("SHORT {}", self.bytes)
        } else {
            "ok".into()
        }
    }
}

/// GETs `target` (origin-form path or absolute URL) from `addr` on a new connection,
/// checking every byte; the body is discarded.
async fn download(addr: SocketAddr, target: &str, host: &str, size: u64, base: &[u8]) -> Download {
    let mut d = Download {
        bytes: 0,
        frames: 0,
        elapsed: Duration::ZERO,
        finished: Instant::now(),
        ttfb: Duration::ZERO,
        cache_status: String::new(),
        first_mismatch: None,
        error: None,
    };
    let start = Instant::now();
    let r = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let req = Request::builder()
            .uri(target)
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = send
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        d.cache_status = res
            .headers()
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        if !res.status().is_success() {
            return Err(format!("{target}: status {}", res.status()));
        }
        let mut body = res.into_body();
        let mut v = Verifier {
            base,
            pos: 0,
            first_mismatch: None,
        };
        let mut first = true;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("body after {} bytes: {e}", v.pos))?;
            if let Some(data) = frame.data_ref() {
                if first {
                    d.ttfb = start.elapsed();
                    first = false;
                }
                d.frames += 1;
                v.feed(data);
            }
        }
        d.bytes = v.pos;
        d.first_mismatch = v.first_mismatch;
        if v.pos != size {
            return Err(format!(
                "{target}: {} bytes received, {size} expected",
                v.pos
            ));
        }
        Ok(())
    }
    .await;
    d.finished = Instant::now();
    d.elapsed = d.finished - start;
    if let Err(e) = r {
        d.error = Some(e);
    }
    d
}

/// Polls the proxy with HEAD until `url` is a plain hit (its fill committed to the body
/// store) or something else than a collapsed hit comes back; describes the outcome.
async fn wait_stored(proxy: SocketAddr, url: &str, host: &str, since: Instant) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        match head_status(proxy, url, host).await {
            Ok(cs) if cs.contains("hit") && !cs.contains("collapsed") => {
                return format!(
                    "body store commit: confirmed (HEAD got a plain hit) {:.2} s after the miss's last byte",
                    since.elapsed().as_secs_f64()
                );
            }
            Ok(cs) if cs.contains("collapsed") || cs.contains("detail=head") => last = cs,
            Ok(cs) => {
                return format!(
                    "WARNING: not stored? {:.2} s after the miss, HEAD got cache-status {cs:?}",
                    since.elapsed().as_secs_f64()
                )
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    format!("WARNING: body store commit not done 60 s after the miss (last: {last:?})")
}

async fn head_status(addr: SocketAddr, url: &str, host: &str) -> Result<String, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method("HEAD")
        .uri(url)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = send
        .send_request(req)
        .await
        .map_err(|e| format!("HEAD: {e}"))?;
    Ok(res
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned())
}

// ---------------------------------------------------------------------------------------
// The proxy process
