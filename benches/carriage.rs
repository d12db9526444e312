//! Carriage benchmark: how much origin traffic the mesh saves when N devices in one group
//! (a train carriage) browse the same media-like objects, and what latency each source
//! gives. The reference is the same workload on N devices without the mesh, in the same
//! run.
//!
//! Everything runs in one process on loopback: an in-process origin (generated bodies,
//! `cache-control: max-age=3600`, counting GETs and body bytes), N in-process proxies
//! (own temp data directories; with the mesh: one group, UDP on 127.0.0.1, no mDNS, each
//! given device 0's ticket, gossip connects the rest) and the clients. Workload (seeded
//! xorshift, identical in both runs): M objects of log-uniform sizes between 50 KiB and
//! 4 MiB, popularity Zipf(s = 1), R requests each for a random device, at most 8 in
//! flight across the carriage, each on a new TCP connection, body read to the end.
//!
//! Reported: origin bytes served / bytes of the distinct objects requested (1.0: each
//! object crossed the uplink once; without the mesh up to N), origin GETs, and latency
//! p50/p99 by source (`Cache-Status`: `hit` → local, `peer=` → peer, otherwise origin).
//! There are no pass/fail thresholds.
//!
//! `cargo bench --bench carriage`: N = 10, M = 200, R = 600; `MESHCACHE_BENCH_QUICK=1`:
//! M = 60, R = 200; `MESHCACHE_CARRIAGE_N=<devices>` overrides N.
//! `RUST_LOG` (e.g. `meshcache_mesh=debug`) logs the proxies and meshes to stderr.

mod common;
use common::devices::{get_once, Device, Origin, Route, Source};
use common::pct;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

const MIN_SIZE: f64 = 50.0 * 1024.0;
const MAX_SIZE: f64 = 4.0 * 1024.0 * 1024.0;
const ZIPF_S: f64 = 1.0;
const IN_FLIGHT: usize = 8;
const SEED: u64 = 0x6d65_7368_6361_6368;
const PEER_WAIT: Duration = Duration::from_secs(30);

struct Config {
    quick: bool,
    cores: usize,
    devices: usize,
    objects: usize,
    requests: usize,
}

fn main() {
    common::init_log();
    let quick = common::quick();
    let devices = match std::env::var("MESHCACHE_CARRIAGE_N") {
        Ok(v) => v
            .parse()
            .expect("MESHCACHE_CARRIAGE_N: a number of devices"),
        Err(_) => 10,
    };
    assert!(devices >= 1, "MESHCACHE_CARRIAGE_N: at least 1");
    let cfg = Config {
        quick,
        cores: common::cores(),
        devices,
        objects: if quick { 60 } else { 200 },
        requests: if quick { 200 } else { 600 },
    };
    common::block_on(cfg.cores, run(cfg));
}

/// xorshift64: deterministic, good enough for a workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        ((self.unit() * n as f64) as usize).min(n - 1)
    }
}

/// The workload: object sizes, and the requests as (object, device).
struct Workload {
    sizes: Vec<u64>,
    requests: Vec<(usize, usize)>,
}

impl Workload {
    fn new(cfg: &Config) -> Workload {
        let mut rng = Rng(SEED);
        let (lo, hi) = (MIN_SIZE.ln(), MAX_SIZE.ln());
        let sizes: Vec<u64> = (0..cfg.objects)
            .map(|_| (lo + rng.unit() * (hi - lo)).exp() as u64)
            .collect();
        // Object i has popularity rank i + 1.
        let weights: Vec<f64> = (0..cfg.objects)
            .map(|i| 1.0 / ((i + 1) as f64).powf(ZIPF_S))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut cdf = Vec::with_capacity(cfg.objects);
        let mut acc = 0.0;
        for w in &weights {
            acc += w / total;
            cdf.push(acc);
        }
        let requests = (0..cfg.requests)
            .map(|_| {
                let u = rng.unit();
                let obj = cdf.partition_point(|&c| c < u).min(cfg.objects - 1);
                (obj, rng.below(cfg.devices))
            })
            .collect();
        Workload { sizes, requests }
    }

    /// Distinct objects requested and their total size.
    fn distinct(&self) -> (usize, u64) {
        let set: BTreeSet<usize> = self.requests.iter().map(|r| r.0).collect();
        (set.len(), set.iter().map(|&o| self.sizes[o]).sum())
    }

    /// What the origin would serve without any sharing between devices: each object once
    /// per device that asks for it.
    fn per_device_bytes(&self) -> u64 {
        let set: BTreeSet<(usize, usize)> = self.requests.iter().copied().collect();
        set.iter().map(|&(o, _)| self.sizes[o]).sum()
    }
}

/// What one run of the workload gave.
struct Outcome {
    label: &'static str,
    origin_requests: u64,
    origin_bytes: u64,
    wall: Duration,
    /// Latencies by source.
    by_source: BTreeMap<Source, Vec<Duration>>,
    errors: usize,
    first_error: Option<String>,
    /// Responses whose `Cache-Status` said collapsed (counted as local).
    collapsed: usize,
    /// Bytes received by the clients.
    client_bytes: u64,
    /// Time until every device had N-1 peers (mesh only).
    connect: Option<Duration>,
}

async fn run(cfg: Config) {
    let w = Arc::new(Workload::new(&cfg));
    let (distinct, distinct_bytes) = w.distinct();
    let total_size: u64 = w.sizes.iter().sum();
    println!(
        "carriage: {} mode, {} devices, {} objects ({:.1} MiB, log-uniform {:.0} KiB..{:.0} KiB), {} requests, Zipf s={}, {} in flight, {} cores",
        if cfg.quick { "quick" } else { "full" },
        cfg.devices,
        cfg.objects,
        total_size as f64 / (1 << 20) as f64,
        MIN_SIZE / 1024.0,
        MAX_SIZE / 1024.0,
        cfg.requests,
        ZIPF_S,
        IN_FLIGHT,
        cfg.cores
    );
    println!(
        "workload: {distinct} distinct objects requested ({:.1} MiB); most popular object {} times; {:.1} MiB if each device fetched its own",
        distinct_bytes as f64 / (1 << 20) as f64,
        w.requests.iter().filter(|r| r.0 == 0).count(),
        w.per_device_bytes() as f64 / (1 << 20) as f64
    );
    println!(
        "note: origin, {} proxies and the clients run in ONE process on loopback and share the {} cores;",
        cfg.devices, cfg.cores
    );
    println!("      compare the ratios, not the absolute figures.");

    let sizes = w.sizes.clone();
    let route: Route = Arc::new(move |path: &str| {
        let i: usize = path.strip_prefix("/obj/")?.parse().ok()?;
        Some((*sizes.get(i)?, i as u64))
    });
    let origin = Arc::new(Origin::start(route).await);

    let reference = run_workload(&cfg, &w, &origin, false).await;
    let meshed = run_workload(&cfg, &w, &origin, true).await;

    println!();
    println!(
        "origin traffic: origin bytes / bytes of the {distinct} distinct objects requested ({distinct_bytes} bytes)"
    );
    println!(
        "  {:<12} {:>14} {:>10} {:>12} {:>10} {:>8} {:>10}",
        "run", "origin bytes", "ratio", "origin GETs", "wall s", "errors", "MB/s out"
    );
    for o in [&reference, &meshed] {
        println!(
            "  {:<12} {:>14} {:>10.3} {:>12} {:>10.2} {:>8} {:>10.1}",
            o.label,
            o.origin_bytes,
            o.origin_bytes as f64 / distinct_bytes as f64,
            o.origin_requests,
            o.wall.as_secs_f64(),
            o.errors,
            o.client_bytes as f64 / o.wall.as_secs_f64() / 1e6
        );
    }
    println!(
        "  ratio without mesh {:.3}, with mesh {:.3}; the mesh cut origin bytes to {:.1}% of the no-mesh run",
        reference.origin_bytes as f64 / distinct_bytes as f64,
        meshed.origin_bytes as f64 / distinct_bytes as f64,
        100.0 * meshed.origin_bytes as f64 / reference.origin_bytes.max(1) as f64
    );
    if let Some(c) = meshed.connect {
        println!(
            "  mesh formed (every device with {} peers) in {:.2} s",
            cfg.devices - 1,
            c.as_secs_f64()
        );
    }

    println!();
    println!("latency by source: ms from connecting to the last body byte");
    println!(
        "  {:<12} {:<10} {:>8} {:>10} {:>10}",
        "run", "source", "count", "p50 ms", "p99 ms"
    );
    for o in [&reference, &meshed] {
        for (src, l) in &o.by_source {
            println!(
                "  {:<12} {:<10} {:>8} {:>10.1} {:>10.1}",
                o.label,
                src.name(),
                l.len(),
                pct(l, 50.0) / 1e3,
                pct(l, 99.0) / 1e3
            );
        }
        if o.collapsed > 0 {
            println!(
                "  {:<12} ({} of the local hits were collapsed onto a fill under way)",
                o.label, o.collapsed
            );
        }
        if let Some(e) = &o.first_error {
            println!("  {:<12} WARNING: {} errors; first: {e}", o.label, o.errors);
        }
    }
}

async fn run_workload(
    cfg: &Config,
    w: &Arc<Workload>,
    origin: &Arc<Origin>,
    mesh: bool,
) -> Outcome {
    let label = if mesh { "mesh" } else { "no mesh" };
    let group = if mesh {
        Some(mesh::Group::generate().expect("group"))
    } else {
        None
    };
    let mut devices = vec![Device::start(group.as_ref(), &[]).await];
    let first: Vec<String> = if mesh {
        vec![devices[0].mesh().ticket()]
    } else {
        Vec::new()
    };
    for _ in 1..cfg.devices {
        devices.push(Device::start(group.as_ref(), &first).await);
    }
    let mut connect = None;
    if mesh {
        let t = Instant::now();
        let want = cfg.devices - 1;
        let waits = devices
            .iter()
            .map(|d| d.mesh().wait_for_peers(want, PEER_WAIT));
        let ok = futures_util::future::join_all(waits).await;
        if ok.iter().all(|&b| b) {
            connect = Some(t.elapsed());
        } else {
            let counts: Vec<String> = devices
                .iter()
                .map(|d| d.mesh().connected_peers().to_string())
                .collect();
            println!(
                "WARNING: not every device has {want} peers after {PEER_WAIT:?}; connected peers per device: {}",
                counts.join(" ")
            );
        }
    }

    let addrs: Vec<_> = devices.iter().map(|d| d.addr()).collect();
    let (req0, bytes0) = origin.served();
    let start = Instant::now();
    let results: Vec<_> = futures_util::stream::iter(w.requests.clone())
        .map(|(obj, dev)| {
            let url = origin.url(&format!("/obj/{obj}"));
            let addr = addrs[dev];
            let want = w.sizes[obj];
            async move {
                let t = Instant::now();
                let r = get_once(addr, &url).await;
                let elapsed = t.elapsed();
                let r = r.and_then(|g| {
                    if g.status != 200 || g.bytes != want {
                        Err(format!(
                            "{url} on device {dev}: status {}, {} of {want} bytes, {:?}",
                            g.status, g.bytes, g.cache_status
                        ))
                    } else {
                        Ok(g)
                    }
                });
                (elapsed, r)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let wall = start.elapsed();
    let (req1, bytes1) = origin.served();

    let mut o = Outcome {
        label,
        origin_requests: req1 - req0,
        origin_bytes: bytes1 - bytes0,
        wall,
        by_source: BTreeMap::new(),
        errors: 0,
        first_error: None,
        collapsed: 0,
        client_bytes: 0,
        connect,
    };
    for (elapsed, r) in results {
        match r {
            Ok(g) => {
                if g.cache_status.contains("collapsed") {
                    o.collapsed += 1;
                }
                o.client_bytes += g.bytes;
                o.by_source
                    .entry(Source::of(&g.cache_status))
                    .or_default()
                    .push(elapsed);
            }
            Err(e) => {
                o.errors += 1;
                o.first_error.get_or_insert(e);
            }
        }
    }
    for d in devices {
        d.stop().await;
    }
    o
}
