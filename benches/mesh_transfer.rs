//! Mesh-transfer benchmark: what getting a body from a nearby device over iroh costs,
//! against a plain TCP transfer and a local hit measured in the same run.
//!
//! Everything runs in one process on loopback: an in-process origin (generated bodies,
//! `cache-control: max-age=3600`, counting what it serves), device A and device B (each an
//! in-process proxy with its own temp data directory and the mesh on a 127.0.0.1 UDP
//! port, no mDNS, one shared group, B given A's ticket), and the clients.
//!
//! 1. Large object: A fetches it from the origin (a miss, stored); a fresh B (new data
//!    directory, new key) then asks for it and gets the body from A over iroh. B's wall
//!    time covers the whole response (lookup, transfer into B's store, serving it to the
//!    client), on a new TCP connection. References: a plain tokio TCP transfer of the same
//!    bytes on loopback (256 KiB writes) and a local hit on A. Each is repeated 3 times
//!    (a fresh B each time); the medians are reported.
//! 2. 1 KiB objects: A fetches K distinct URLs (misses); a fresh B fetches each once (peer
//!    fetches), then each again (local hits), sequentially on ONE keep-alive connection
//!    per phase. p50/p99 latency of each, and the ratio of the p50s.
//!
//! Figures are ratios against references measured in the same run; there are no
//! pass/fail thresholds.
//!
//! `cargo bench --bench mesh_transfer`. Large body: 200 MiB and K = 200, or 32 MiB and
//! K = 50 with `MESHCACHE_BENCH_QUICK=1`; `MESHCACHE_BENCH_SIZE=<bytes>` sets the body.
//! `RUST_LOG` (e.g. `meshcache_mesh=debug`) logs the proxies and meshes to stderr.

mod common;
use common::devices::{get_once, wait_hit, Conn, Device, Origin, Route};
use common::pct;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LARGE: &str = "/large.bin";
const SMALL_LEN: u64 = 1024;
const TCP_CHUNK: usize = 256 * 1024;
const REPEATS: usize = 3;
const PEER_WAIT: Duration = Duration::from_secs(20);
const STORE_WAIT: Duration = Duration::from_secs(60);

fn main() {
    common::init_log();
    let quick = common::quick();
    let size: u64 = match std::env::var("MESHCACHE_BENCH_SIZE") {
        Ok(v) => v.parse().expect("MESHCACHE_BENCH_SIZE: a byte count"),
        Err(_) if quick => 32 << 20,
        Err(_) => 200 << 20,
    };
    let k = if quick { 50 } else { 200 };
    let cores = common::cores();
    common::block_on(cores, run(quick, size, k, cores));
}

/// One timed transfer of the large object.
struct Transfer {
    elapsed: Duration,
    ttfb: Duration,
    bytes: u64,
    cache_status: String,
}

impl Transfer {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

async fn run(quick: bool, size: u64, k: usize, cores: usize) {
    println!(
        "mesh_transfer: {} mode, large body {} bytes ({:.0} MiB), {} small objects of {} B, {} cores",
        if quick { "quick" } else { "full" },
        size,
        size as f64 / (1 << 20) as f64,
        k,
        SMALL_LEN,
        cores
    );
    println!(
        "note: origin, devices A and B and the clients run in ONE process on loopback and share the {cores} cores;"
    );
    println!("      compare the ratios, not the absolute figures.");

    let route: Route = Arc::new(move |path: &str| {
        if path == LARGE {
            return Some((size, 0));
        }
        let i: u64 = path.strip_prefix("/small/")?.parse().ok()?;
        Some((SMALL_LEN, i + 1))
    });
    let origin = Origin::start(route).await;
    let group = mesh::Group::generate().expect("group");
    let a = Device::start(Some(&group), &[]).await;
    let ticket_a = a.mesh().ticket();
    let url = origin.url(LARGE);

    // --- Large object -------------------------------------------------------------------
    let t = Instant::now();
    let miss = get_once(a.addr(), &url).await.expect("A's miss");
    let miss = Transfer {
        elapsed: t.elapsed(),
        ttfb: miss.ttfb,
        bytes: miss.bytes,
        cache_status: miss.cache_status,
    };
    check(&miss, size, "A's first fetch", |cs| cs.contains("fwd=miss"));
    let t = Instant::now();
    if let Err(e) = wait_hit(a.addr(), &url, STORE_WAIT).await {
        println!("WARNING: {e}");
    }
    let commit = t.elapsed();

    let mut tcp = Vec::new();
    let mut local = Vec::new();
    let mut peer = Vec::new();
    let mut connect_times = Vec::new();
    for round in 0..REPEATS {
        tcp.push(tcp_transfer(size).await);

        let t = Instant::now();
        let g = get_once(a.addr(), &url).await.expect("A's hit");
        let hit = Transfer {
            elapsed: t.elapsed(),
            ttfb: g.ttfb,
            bytes: g.bytes,
            cache_status: g.cache_status,
        };
        check(&hit, size, "A's local hit", |cs| cs == "meshcache; hit");
        local.push(hit);

        let b = Device::start(Some(&group), std::slice::from_ref(&ticket_a)).await;
        let t = Instant::now();
        if !b.mesh().wait_for_peers(1, PEER_WAIT).await {
            println!(
                "WARNING: round {}: B not connected to A after {PEER_WAIT:?} ({} peers)",
                round + 1,
                b.mesh().connected_peers()
            );
        }
        connect_times.push(t.elapsed());
        let t = Instant::now();
        let g = get_once(b.addr(), &url).await.expect("B's fetch");
        let p = Transfer {
            elapsed: t.elapsed(),
            ttfb: g.ttfb,
            bytes: g.bytes,
            cache_status: g.cache_status,
        };
        check(&p, size, "B's fetch", |cs| cs.contains("peer="));
        peer.push(p);
        b.stop().await;
    }
    let (origin_requests, origin_bytes) = origin.served();

    println!();
    println!(
        "large object: {} bytes; median of {REPEATS} runs; MB = 10^6 bytes; time from connecting to the last byte",
        size
    );
    println!(
        "  {:<28} {:>8} {:>9} {:>9} {:>9} {:>11}  cache-status (last run)",
        "transfer", "MB/s", "seconds", "TTFB ms", "vs TCP", "vs local"
    );
    let tcp_med = median(&tcp);
    let local_med = median_by(&local);
    let peer_med = median_by(&peer);
    let tcp_rate = size as f64 / tcp_med.as_secs_f64() / 1e6;
    let row = |name: &str, rate: f64, secs: f64, ttfb: Option<Duration>, cs: &str| {
        println!(
            "  {:<28} {:>8.0} {:>9.3} {:>9} {:>9.2} {:>11.2}  {}",
            name,
            rate,
            secs,
            ttfb.map_or("-".into(), |t| format!("{:.1}", t.as_secs_f64() * 1e3)),
            rate / tcp_rate,
            rate / local_med.mb_per_s(),
            cs
        );
    };
    row(
        "plain TCP (loopback)",
        tcp_rate,
        tcp_med.as_secs_f64(),
        None,
        "-",
    );
    row(
        "origin miss on A (1 run)",
        miss.mb_per_s(),
        miss.elapsed.as_secs_f64(),
        Some(miss.ttfb),
        &miss.cache_status,
    );
    row(
        "local hit on A",
        local_med.mb_per_s(),
        local_med.elapsed.as_secs_f64(),
        Some(local_med.ttfb),
        &local.last().unwrap().cache_status,
    );
    row(
        "peer fetch on B (from A)",
        peer_med.mb_per_s(),
        peer_med.elapsed.as_secs_f64(),
        Some(peer_med.ttfb),
        &peer.last().unwrap().cache_status,
    );
    let rates = |v: &[Transfer]| {
        v.iter()
            .map(|t| format!("{:.0}", t.mb_per_s()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "  every run, MB/s: TCP {}; local hit {}; peer {}",
        tcp.iter()
            .map(|d| format!("{:.0}", size as f64 / d.as_secs_f64() / 1e6))
            .collect::<Vec<_>>()
            .join(", "),
        rates(&local),
        rates(&peer)
    );
    println!(
        "  ratios (median MB/s): peer / TCP {:.3}, peer / local hit {:.3}, local hit / TCP {:.3}",
        peer_med.mb_per_s() / tcp_rate,
        peer_med.mb_per_s() / local_med.mb_per_s(),
        local_med.mb_per_s() / tcp_rate
    );
    println!(
        "  A committed the miss to its body store {:.2} s after the miss's last byte; B connected to A in {} ms",
        commit.as_secs_f64(),
        connect_times
            .iter()
            .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    println!(
        "  origin: {origin_requests} GET(s), {origin_bytes} body bytes (1 GET, {size} bytes expected: B's bodies came from A)"
    );

    // --- 1 KiB objects ------------------------------------------------------------------
    let urls: Vec<String> = (0..k).map(|i| origin.url(&format!("/small/{i}"))).collect();
    let mut c = Conn::open(a.addr()).await.expect("connect to A");
    let mut lat_miss = Vec::with_capacity(k);
    let mut odd = Odd::default();
    for u in &urls {
        let t = Instant::now();
        let g = c.get(u).await.expect("A's small miss");
        lat_miss.push(t.elapsed());
        odd.note(&g, |cs| cs.contains("fwd=miss"));
    }
    drop(c);
    odd.warn("A's small misses");
    for u in &urls {
        if let Err(e) = wait_hit(a.addr(), u, STORE_WAIT).await {
            println!("WARNING: {e}");
            break;
        }
    }
    let (origin_before, _) = origin.served();
    let b = Device::start(Some(&group), std::slice::from_ref(&ticket_a)).await;
    if !b.mesh().wait_for_peers(1, PEER_WAIT).await {
        println!("WARNING: small objects: B not connected to A after {PEER_WAIT:?}");
    }
    let mut c = Conn::open(b.addr()).await.expect("connect to B");
    let mut lat_peer = Vec::with_capacity(k);
    let mut odd = Odd::default();
    for u in &urls {
        let t = Instant::now();
        let g = c.get(u).await.expect("B's peer fetch");
        lat_peer.push(t.elapsed());
        odd.note(&g, |cs| cs.contains("peer="));
    }
    odd.warn("B's first fetches (expected from A)");
    let mut lat_hit = Vec::with_capacity(k);
    let mut odd = Odd::default();
    for u in &urls {
        let t = Instant::now();
        let g = c.get(u).await.expect("B's local hit");
        lat_hit.push(t.elapsed());
        odd.note(&g, |cs| cs == "meshcache; hit");
    }
    odd.warn("B's second fetches (expected local hits)");
    drop(c);
    let (origin_after, _) = origin.served();

    println!();
    println!(
        "1 KiB objects: {k} distinct URLs, sequential GETs on one keep-alive connection per phase"
    );
    println!(
        "  {:<32} {:>10} {:>10} {:>14}",
        "fetch", "p50 us", "p99 us", "p50 vs local"
    );
    let h50 = pct(&lat_hit, 50.0);
    for (name, l) in [
        ("origin miss on A", &lat_miss),
        ("peer fetch on B (from A)", &lat_peer),
        ("local hit on B", &lat_hit),
    ] {
        println!(
            "  {:<32} {:>10.0} {:>10.0} {:>14.2}",
            name,
            pct(l, 50.0),
            pct(l, 99.0),
            pct(l, 50.0) / h50
        );
    }
    println!(
        "  ratio peer / local hit: p50 {:.2}, p99 {:.2}; origin GETs during B's fetches: {}",
        pct(&lat_peer, 50.0) / h50,
        pct(&lat_peer, 99.0) / pct(&lat_hit, 99.0),
        origin_after - origin_before
    );
    let m = b.mesh().counters();
    println!(
        "  B's mesh counters: lookups {}, peer hits {}, bytes from peers {}",
        m.lookups.load(std::sync::atomic::Ordering::Relaxed),
        m.peer_hits.load(std::sync::atomic::Ordering::Relaxed),
        m.bytes_from_peers
            .load(std::sync::atomic::Ordering::Relaxed)
    );

    b.stop().await;
    a.stop().await;
}

/// Prints a warning when a large transfer is short or not of the expected kind.
fn check(t: &Transfer, size: u64, what: &str, ok: impl Fn(&str) -> bool) {
    if t.bytes != size {
        println!("WARNING: {what}: {} body bytes, {size} expected", t.bytes);
    }
    if !ok(&t.cache_status) {
        println!(
            "WARNING: {what}: unexpected cache-status {:?}",
            t.cache_status
        );
    }
}

/// Small responses that were not what the phase expected.
#[derive(Default)]
struct Odd {
    count: usize,
    first: Option<String>,
}

impl Odd {
    fn note(&mut self, g: &common::devices::Got, ok: impl Fn(&str) -> bool) {
        if g.bytes != SMALL_LEN || !ok(&g.cache_status) {
            self.count += 1;
            self.first
                .get_or_insert_with(|| format!("{} bytes, {:?}", g.bytes, g.cache_status));
        }
    }

    fn warn(&self, what: &str) {
        if let Some(f) = &self.first {
            println!(
                "WARNING: {what}: {} not as expected (first: {f})",
                self.count
            );
        }
    }
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

/// The transfer of median duration.
fn median_by(v: &[Transfer]) -> &Transfer {
    let mut r: Vec<&Transfer> = v.iter().collect();
    r.sort_by_key(|t| t.elapsed);
    r[r.len() / 2]
}

/// A plain TCP transfer of `size` bytes on loopback: a writer sending 256 KiB chunks, a
/// reader counting bytes. Timed from connecting to the last byte read.
async fn tcp_transfer(size: u64) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let writer = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let buf = vec![0x5au8; TCP_CHUNK];
        let mut left = size;
        while left > 0 {
            let n = left.min(TCP_CHUNK as u64) as usize;
            s.write_all(&buf[..n]).await.expect("write");
            left -= n as u64;
        }
        let _ = s.shutdown().await;
    });
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut buf = vec![0u8; TCP_CHUNK];
    let mut got = 0u64;
    loop {
        let n = s.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let elapsed = start.elapsed();
    writer.await.expect("writer");
    assert_eq!(got, size, "TCP reference: short transfer");
    elapsed
}
