//! Carriage benchmark: how much origin traffic nearby devices save when N devices (a
//! train carriage) browse the same media-like objects, and what latency each source gives.
//! Three parts, in one run:
//!
//! 1. **Group carriage**: N devices in one group, against the same workload on N devices
//!    without the mesh (the reference).
//! 2. **Stranger carriage**: N devices that share NO group (the open mesh only); device 0
//!    is a carriage operator's gateway (`mesh.operator`), whose id the others list in
//!    `mesh.operators`. Run twice: *chain* (every device is given the gateway's open ticket
//!    and device i-1's; dial-backs add i+1, so the gateway knows everyone and device i
//!    the gateway, i-1 and i+1) and *all known* (device i is given every earlier device's
//!    ticket: everyone knows everyone, as mDNS gives in a real carriage). Each run waits
//!    until every device has a stranger connected (then up to 10 s for the expected
//!    picture). Four classes of object, a quarter each (object i: class i % 4):
//!    self-certifying (`/.well-known/meshcache/by-digest/sha-256/<hex of the body>`),
//!    integrity-stated (ordinary URL, the request carries `Meshcache-Integrity:
//!    sha256-…`), gateway-attested (ordinary URL, `public, max-age=3600`) and ordinary
//!    (`max-age=3600`, no digest: never taken from a stranger, so its ratio is the
//!    each-device-its-own-copy one). The gateway takes no requests of the workload: it
//!    **pre-fetches** every gateway-attested object the workload asks for before the
//!    timed run (counted as origin traffic), so its signature is what the others take
//!    (from it, or relayed by a stranger that had it). The origin's bodies are
//!    deterministic, so the bench computes their SHA-256 (`ring`) for the URLs and the
//!    integrity header.
//! 3. **Throughput**: one 32 MiB object to a fresh device (new data directory) from one
//!    stranger (by-digest URL: verified against the SHA-256 as well as BLAKE3; the device
//!    knows only that stranger) against the same size from a group peer (two devices in
//!    one group; an ordinary URL, and the same by-digest URL). Warm-up once, then 3 rounds
//!    (fresh devices each), median.
//!
//! Everything runs in one process on loopback: in-process origins (generated bodies,
//! `cache-control: max-age=3600` unless stated, counting GETs, HEADs and body bytes, in
//! all and per object), N in-process proxies (own temp data directories; the group mesh
//! and the open mesh on 127.0.0.1 UDP ports, no mDNS; group carriage: each given device
//! 0's ticket, gossip connects the rest) and the clients. Workloads (seeded xorshift,
//! identical in the runs of a part): M objects of log-uniform sizes between 50 KiB and
//! 4 MiB, popularity Zipf(s = 1), R requests each for a random device (stranger carriage:
//! devices 1..N-1), at most 8 in flight across the carriage, each on a new TCP
//! connection, body read to the end. `lookup_timeout` is the default (50 ms).
//!
//! Reported: origin bytes served / bytes of the distinct objects requested (1.0: each
//! object crossed the uplink once; without sharing up to N), per class for the stranger
//! carriage, with origin GETs and HEADs; latency p50/p99 by source (`Cache-Status`: `hit`
//! → local, `detail=stranger-url|client|origin` → a stranger's body checked against a
//! digest, `peer=` → a group peer, or in the stranger carriage an attestation of the
//! gateway, otherwise origin); the stranger carriage's origin fetches that a stranger the
//! device knew already held (a miss of the open mesh, as opposed to concurrent first
//! fetches or a holder it does not know); and MB/s of the throughput part with the ratio
//! to the group peer. There are no pass/fail thresholds.
//!
//! `cargo bench --bench carriage`: N = 10; group carriage M = 200, R = 600; stranger
//! carriage M = 80, R = 300. `MESHCACHE_BENCH_QUICK=1`: M = 60, R = 200 and M = 40,
//! R = 120. `MESHCACHE_CARRIAGE_N=<devices>` overrides N (the stranger carriage needs 3).
//! `MESHCACHE_CARRIAGE_DIAG=1` prints, per device, where each gateway-attested response
//! came from (G gateway, r relayed, l local, O origin). `RUST_LOG` (e.g.
//! `meshcache_mesh=debug`) logs the proxies and meshes to stderr.

mod common;
use common::devices::{
    body_sha256, get_once, get_once_with, wait_hit, Device, Extra, Origin, Route, Source,
};
use common::pct;
use common::rng::Rng;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
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
    /// Objects and requests of the stranger carriage.
    stranger_objects: usize,
    stranger_requests: usize,
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
        stranger_objects: if quick { 40 } else { 80 },
        stranger_requests: if quick { 120 } else { 300 },
    };
    common::block_on(cfg.cores, run(cfg));
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

    if cfg.devices >= 3 {
        stranger_carriage(&cfg, Topology::Chain).await;
        stranger_carriage(&cfg, Topology::All).await;
        throughput().await;
    } else {
        println!();
        println!("stranger carriage: skipped (needs at least 3 devices)");
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

// ---------------------------------------------------------------------------------------
// The stranger carriage

const STRANGER_SEED: u64 = 0x7374_7261_6e67_6572;
const STRANGER_WAIT: Duration = Duration::from_secs(30);
/// After every device has a stranger: how long to wait for the dial-backs to complete the
/// expected picture (gateway: everyone; device i: gateway, i-1, i+1).
const SETTLE_WAIT: Duration = Duration::from_secs(10);
const STORE_WAIT: Duration = Duration::from_secs(60);
/// The object of the throughput comparison.
const BIG: u64 = 32 << 20;
const REPEATS: usize = 3;

/// The four kinds of object of the stranger carriage, a quarter each (object i is of kind
/// `i % 4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// `/.well-known/meshcache/by-digest/sha-256/<hex of the body>`.
    Certified,
    /// An ordinary URL; the request carries `Meshcache-Integrity`.
    Integrity,
    /// An ordinary URL, `public, max-age=3600`, fetched by the gateway beforehand.
    Gateway,
    /// An ordinary URL, `max-age=3600`: nothing binds it.
    Ordinary,
}

const CLASSES: [Class; 4] = [
    Class::Certified,
    Class::Integrity,
    Class::Gateway,
    Class::Ordinary,
];

impl Class {
    fn of(i: usize) -> Class {
        CLASSES[i % 4]
    }

    fn name(self) -> &'static str {
        match self {
            Class::Certified => "self-certifying",
            Class::Integrity => "integrity",
            Class::Gateway => "gateway-attested",
            Class::Ordinary => "ordinary",
        }
    }
}

/// Where a response of the stranger carriage came from, by its `Cache-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Via {
    Local,
    /// `detail=stranger-url|client|origin`: a stranger's body checked against a digest.
    Stranger(&'static str),
    /// `peer=` without `detail=stranger-`: a trusted signer's attestation relayed (here:
    /// the gateway's, from the gateway itself or from a stranger that had it).
    Attested,
    Origin,
}

impl Via {
    fn of(cs: &str) -> Via {
        for by in ["url", "client", "origin"] {
            if cs.contains(&format!("detail=stranger-{by}")) {
                return Via::Stranger(by);
            }
        }
        if cs.contains("peer=") {
            Via::Attested
        } else if cs.contains("; hit") {
            Via::Local
        } else {
            Via::Origin
        }
    }

    fn name(self) -> String {
        match self {
            Via::Local => "local hit".into(),
            Via::Stranger(by) => format!("stranger-{by}"),
            Via::Attested => "attested".into(),
            Via::Origin => "origin".into(),
        }
    }
}

/// The `peer="…"` of a `Cache-Status`.
fn peer_of(cs: &str) -> Option<String> {
    let rest = &cs[cs.find("peer=\"")? + 6..];
    Some(rest[..rest.find('"')?].to_string())
}

/// One object of the stranger carriage.
struct Object {
    class: Class,
    size: u64,
    /// Body id at the origin.
    id: u64,
    path: String,
    /// `sha256-<base64>` of the body.
    integrity: String,
}

/// The stranger carriage's workload: objects, and requests as (object, device); device 0
/// (the gateway) takes no requests.
struct StrangerWorkload {
    objects: Vec<Object>,
    requests: Vec<(usize, usize)>,
}

impl StrangerWorkload {
    fn new(cfg: &Config) -> StrangerWorkload {
        let mut rng = Rng(STRANGER_SEED);
        let (lo, hi) = (MIN_SIZE.ln(), MAX_SIZE.ln());
        let b64 = base64::engine::general_purpose::STANDARD;
        let objects: Vec<Object> = (0..cfg.stranger_objects)
            .map(|i| {
                let size = (lo + rng.unit() * (hi - lo)).exp() as u64;
                let id = 1_000 + i as u64;
                let class = Class::of(i);
                let sha = body_sha256(size, id);
                let path = match class {
                    Class::Certified => {
                        let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
                        format!("/.well-known/meshcache/by-digest/sha-256/{hex}")
                    }
                    Class::Integrity => format!("/media/int/{i}.jpg"),
                    Class::Gateway => format!("/channel/{i}.mp4"),
                    Class::Ordinary => format!("/news/{i}.jpg"),
                };
                Object {
                    class,
                    size,
                    id,
                    path,
                    integrity: format!("sha256-{}", b64.encode(sha)),
                }
            })
            .collect();
        let n = objects.len();
        let weights: Vec<f64> = (0..n)
            .map(|i| 1.0 / ((i + 1) as f64).powf(ZIPF_S))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for w in &weights {
            acc += w / total;
            cdf.push(acc);
        }
        let requests = (0..cfg.stranger_requests)
            .map(|_| {
                let u = rng.unit();
                let obj = cdf.partition_point(|&c| c < u).min(n - 1);
                (obj, 1 + rng.below(cfg.devices - 1))
            })
            .collect();
        StrangerWorkload { objects, requests }
    }

    /// Distinct objects requested.
    fn distinct(&self) -> BTreeSet<usize> {
        self.requests.iter().map(|r| r.0).collect()
    }

    /// Bytes the origin would send if each device fetched its own copy, per class.
    fn per_device_bytes(&self, class: Class) -> u64 {
        let set: BTreeSet<(usize, usize)> = self.requests.iter().copied().collect();
        set.iter()
            .filter(|(o, _)| self.objects[*o].class == class)
            .map(|&(o, _)| self.objects[o].size)
            .sum()
    }
}

/// One request's result in the stranger carriage.
struct Done {
    obj: usize,
    dev: usize,
    /// Since the start of the timed run.
    start: Duration,
    elapsed: Duration,
    result: Result<Via, String>,
    /// The `peer="…"` of its `Cache-Status`, if any.
    peer: Option<String>,
}

/// Who knows whom in the stranger carriage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    /// Device i is given the gateway's open ticket and device i-1's; dial-backs add
    /// device i+1: the gateway knows everyone, device i knows the gateway, i-1 and i+1.
    Chain,
    /// Device i is given every earlier device's open ticket: everyone knows everyone
    /// (what mDNS gives in a real carriage).
    All,
}

impl Topology {
    fn name(self) -> &'static str {
        match self {
            Topology::Chain => "chain",
            Topology::All => "all known",
        }
    }

    /// The strangers device `i` of `n` should end up connected to.
    fn strangers(self, i: usize, n: usize) -> Vec<usize> {
        match self {
            Topology::Chain if i > 0 => [0, i - 1, i + 1]
                .into_iter()
                .filter(|&j| j < n)
                .collect::<BTreeSet<usize>>()
                .into_iter()
                .collect(),
            _ => (0..n).filter(|&j| j != i).collect(),
        }
    }

    /// The open tickets device `i` is given.
    fn tickets(self, i: usize, tickets: &[String]) -> Vec<String> {
        match self {
            Topology::Chain if i >= 2 => vec![tickets[0].clone(), tickets[i - 1].clone()],
            Topology::Chain => vec![tickets[0].clone()],
            Topology::All => tickets[..i].to_vec(),
        }
    }
}

async fn stranger_carriage(cfg: &Config, topology: Topology) {
    let w = Arc::new(StrangerWorkload::new(cfg));
    let distinct = w.distinct();
    let n = cfg.devices;
    println!();
    println!(
        "stranger carriage ({}): {n} devices in NO group; device 0 is a carriage operator's gateway (mesh.operator, \
         trusted by the others through mesh.operators) that takes no requests itself; {} objects ({} per class, \
         log-uniform {:.0} KiB..{:.0} KiB), {} requests over devices 1..{} ({} distinct objects), Zipf s={}, {} in flight",
        topology.name(),
        w.objects.len(),
        w.objects.len() / 4,
        MIN_SIZE / 1024.0,
        MAX_SIZE / 1024.0,
        w.requests.len(),
        n - 1,
        distinct.len(),
        ZIPF_S,
        IN_FLIGHT
    );

    let paths: HashMap<String, (u64, u64)> = w
        .objects
        .iter()
        .map(|o| (o.path.clone(), (o.size, o.id)))
        .collect();
    let route: Route = Arc::new(move |path: &str| paths.get(path).copied());
    let extra: Extra = Arc::new(|path: &str| {
        if path.starts_with("/channel/") {
            vec![("cache-control", "public, max-age=3600".to_string())]
        } else {
            Vec::new()
        }
    });
    let origin = Origin::start_with(route, extra).await;

    // The gateway, then devices 1..n, given open tickets as the topology says.
    let gateway = Device::start_mesh(None, |m| m.operator = true).await;
    let gw_id = gateway.mesh().id();
    let gw_open_id = gateway
        .mesh()
        .open_status()
        .expect("the gateway's open mesh")
        .id;
    let mut tickets = vec![gateway
        .mesh()
        .open_ticket()
        .expect("the gateway's open mesh")];
    let mut devices = vec![gateway];
    for i in 1..n {
        let open_peers = topology.tickets(i, &tickets);
        let d = Device::start_mesh(None, |m| {
            m.open_peers = open_peers;
            m.operators = vec![gw_id.clone()];
        })
        .await;
        tickets.push(d.mesh().open_ticket().expect("open mesh"));
        devices.push(d);
    }
    let t = Instant::now();
    let ok =
        futures_util::future::join_all(devices.iter().map(|d| d.wait_strangers(1, STRANGER_WAIT)))
            .await;
    let formed = t.elapsed();
    futures_util::future::join_all(
        devices
            .iter()
            .enumerate()
            .map(|(i, d)| d.wait_strangers(topology.strangers(i, n).len(), SETTLE_WAIT)),
    )
    .await;
    let counts: Vec<String> = devices.iter().map(|d| d.strangers().to_string()).collect();
    if ok.iter().all(|&b| b) {
        println!(
            "  every device had a stranger after {:.2} s; strangers connected per device (0 = gateway): {}",
            formed.as_secs_f64(),
            counts.join(" ")
        );
    } else {
        println!(
            "WARNING: not every device has a stranger after {STRANGER_WAIT:?}; strangers connected per device: {}",
            counts.join(" ")
        );
    }

    // The gateway fetches the gateway-attested objects first (counted as origin traffic).
    let before: Vec<_> = w.objects.iter().map(|o| origin.served_id(o.id)).collect();
    let gw_addr = devices[0].addr();
    let mut prefetched = 0;
    for &o in distinct
        .iter()
        .filter(|&&o| w.objects[o].class == Class::Gateway)
    {
        let url = origin.url(&w.objects[o].path);
        match get_once(gw_addr, &url).await {
            Ok(g) if g.status == 200 && g.bytes == w.objects[o].size => prefetched += 1,
            Ok(g) => println!("WARNING: gateway prefetch of {url}: {g:?}"),
            Err(e) => println!("WARNING: gateway prefetch of {url}: {e}"),
        }
        if let Err(e) = wait_hit(gw_addr, &url, STORE_WAIT).await {
            println!("WARNING: gateway prefetch: {e}");
        }
    }

    let addrs: Vec<_> = devices.iter().map(|d| d.addr()).collect();
    let start = Instant::now();
    let done: Vec<Done> = futures_util::stream::iter(w.requests.clone())
        .map(|(obj, dev)| {
            let o = &w.objects[obj];
            let url = origin.url(&o.path);
            let addr = addrs[dev];
            let (want, class, integrity) = (o.size, o.class, o.integrity.clone());
            async move {
                let headers: Vec<(&str, &str)> = if class == Class::Integrity {
                    vec![("meshcache-integrity", integrity.as_str())]
                } else {
                    Vec::new()
                };
                let t = Instant::now();
                let r = get_once_with(addr, &url, &headers).await;
                let elapsed = t.elapsed();
                let started = t - start;
                let result = r.and_then(|g| {
                    if g.status != 200 || g.bytes != want {
                        Err(format!(
                            "{url} on device {dev}: status {}, {} of {want} bytes, {:?}",
                            g.status, g.bytes, g.cache_status
                        ))
                    } else {
                        Ok((Via::of(&g.cache_status), peer_of(&g.cache_status)))
                    }
                });
                let (result, peer) = match result {
                    Ok((via, peer)) => (Ok(via), peer),
                    Err(e) => (Err(e), None),
                };
                Done {
                    obj,
                    dev,
                    start: started,
                    elapsed,
                    result,
                    peer,
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let wall = start.elapsed();
    let after: Vec<_> = w.objects.iter().map(|o| origin.served_id(o.id)).collect();

    println!(
        "  gateway prefetched {prefetched} gateway-attested objects before the timed run; timed run {:.2} s",
        wall.as_secs_f64()
    );
    println!();
    println!(
        "origin traffic by class: origin bytes (gateway prefetch included) / bytes of the distinct objects requested"
    );
    println!(
        "  {:<17} {:>8} {:>12} {:>12} {:>7} {:>6} {:>6} {:>12}",
        "class", "distinct", "distinct B", "origin B", "ratio", "GETs", "HEADs", "own copies"
    );
    let mut rows: Vec<(String, Vec<Class>)> = CLASSES
        .iter()
        .map(|c| (c.name().to_string(), vec![*c]))
        .collect();
    rows.push((
        "eligible (1-3)".into(),
        vec![Class::Certified, Class::Integrity, Class::Gateway],
    ));
    rows.push(("all".into(), CLASSES.to_vec()));
    for (name, classes) in &rows {
        let in_class = |o: usize| classes.contains(&w.objects[o].class);
        let d: Vec<usize> = distinct.iter().copied().filter(|&o| in_class(o)).collect();
        let dbytes: u64 = d.iter().map(|&o| w.objects[o].size).sum();
        let (mut gets, mut heads, mut obytes) = (0, 0, 0);
        for o in (0..w.objects.len()).filter(|&o| in_class(o)) {
            gets += after[o].gets - before[o].gets;
            heads += after[o].heads - before[o].heads;
            obytes += after[o].bytes - before[o].bytes;
        }
        let own: u64 = classes.iter().map(|&c| w.per_device_bytes(c)).sum();
        println!(
            "  {:<17} {:>8} {:>12} {:>12} {:>7.3} {:>6} {:>6} {:>12.3}",
            name,
            d.len(),
            dbytes,
            obytes,
            obytes as f64 / dbytes.max(1) as f64,
            gets,
            heads,
            own as f64 / dbytes.max(1) as f64
        );
    }
    println!(
        "  (own copies: the ratio if every device fetched its own copy; HEADs: digest probes sent to the origin \
         before asking strangers)"
    );

    println!();
    println!("served by, per class (requests)");
    let vias: BTreeSet<Via> = done
        .iter()
        .filter_map(|d| d.result.as_ref().ok().copied())
        .collect();
    let mut header = format!("  {:<17} {:>8}", "class", "requests");
    for v in &vias {
        header.push_str(&format!(" {:>15}", v.name()));
    }
    println!("{header}");
    for c in CLASSES {
        let of: Vec<&Done> = done
            .iter()
            .filter(|d| w.objects[d.obj].class == c)
            .collect();
        let mut line = format!("  {:<17} {:>8}", c.name(), of.len());
        for v in &vias {
            let k = of
                .iter()
                .filter(|d| d.result.as_ref().ok() == Some(v))
                .count();
            line.push_str(&format!(" {k:>15}"));
        }
        println!("{line}");
    }

    println!();
    println!("latency by source: ms from connecting to the last body byte");
    println!(
        "  {:<17} {:>8} {:>10} {:>10}",
        "source", "count", "p50 ms", "p99 ms"
    );
    let mut by: BTreeMap<Via, Vec<Duration>> = BTreeMap::new();
    let mut errors = Vec::new();
    for d in &done {
        match &d.result {
            Ok(v) => by.entry(*v).or_default().push(d.elapsed),
            Err(e) => errors.push(e.clone()),
        }
    }
    for (v, l) in &by {
        println!(
            "  {:<17} {:>8} {:>10.1} {:>10.1}",
            v.name(),
            l.len(),
            pct(l, 50.0) / 1e3,
            pct(l, 99.0) / 1e3
        );
    }
    if let Some(e) = errors.first() {
        println!("  WARNING: {} errors; first: {e}", errors.len());
    }

    // Origin fetches a stranger could have spared: of an eligible object that a stranger
    // this device knows had already received in full (or the gateway had prefetched)
    // before the request started. Concurrent first fetches, and objects held only by
    // devices this one does not know, are not counted.
    let mut held: HashMap<(usize, usize), Duration> = HashMap::new();
    for d in done.iter().filter(|d| d.result.is_ok()) {
        let end = d.start + d.elapsed;
        held.entry((d.dev, d.obj))
            .and_modify(|e| *e = (*e).min(end))
            .or_insert(end);
    }
    let mut spared = BTreeMap::<Class, (usize, Vec<usize>)>::new();
    for d in &done {
        let class = w.objects[d.obj].class;
        if class == Class::Ordinary || d.result.as_ref().ok() != Some(&Via::Origin) {
            continue;
        }
        let e = spared.entry(class).or_default();
        e.0 += 1;
        let known = topology.strangers(d.dev, n).into_iter().any(|j| {
            (j == 0 && class == Class::Gateway)
                || held.get(&(j, d.obj)).is_some_and(|&end| end < d.start)
        });
        if known {
            e.1.push(d.dev);
        }
    }
    let line: Vec<String> = spared
        .iter()
        .map(|(c, (all, devs))| {
            let on = if devs.is_empty() {
                String::new()
            } else {
                let devs: Vec<String> = devs.iter().map(|d| d.to_string()).collect();
                format!(" (on devices {})", devs.join(" "))
            };
            format!("{} {} of {all}{on}", c.name(), devs.len())
        })
        .collect();
    println!(
        "  origin fetches of eligible objects that a known stranger already held: {}",
        if line.is_empty() {
            "none went to the origin".to_string()
        } else {
            line.join(", ")
        }
    );
    let attested: Vec<&Done> = done
        .iter()
        .filter(|d| d.result.as_ref().ok() == Some(&Via::Attested))
        .collect();
    let direct = attested
        .iter()
        .filter(|d| d.peer.as_deref() == Some(gw_open_id.as_str()))
        .count();
    println!(
        "  attested responses: {direct} from the gateway itself, {} relayed by other strangers",
        attested.len() - direct
    );
    if std::env::var_os("MESHCACHE_CARRIAGE_DIAG").is_some() {
        for dev in 1..n {
            let mine: Vec<String> = done
                .iter()
                .filter(|d| d.dev == dev && w.objects[d.obj].class == Class::Gateway)
                .map(|d| {
                    match (&d.result, &d.peer) {
                        (Ok(Via::Attested), Some(p)) if *p == gw_open_id => "G",
                        (Ok(Via::Attested), _) => "r",
                        (Ok(Via::Local), _) => "l",
                        (Ok(Via::Origin), _) => "O",
                        _ => "?",
                    }
                    .to_string()
                })
                .collect();
            println!("  diag device {dev}: gateway-class {}", mine.join(""));
        }
    }
    for d in devices {
        d.stop().await;
    }
}

/// One timed fetch of the big object on a fresh device.
async fn timed(d: &Device, url: &str, ok: impl Fn(&str) -> bool) -> Option<Duration> {
    let t = Instant::now();
    match get_once(d.addr(), url).await {
        Ok(g) if g.status == 200 && g.bytes == BIG && ok(&g.cache_status) => Some(t.elapsed()),
        Ok(g) => {
            println!(
                "WARNING: {url}: status {}, {} of {BIG} bytes, {:?}",
                g.status, g.bytes, g.cache_status
            );
            None
        }
        Err(e) => {
            println!("WARNING: {url}: {e}");
            None
        }
    }
}

/// The verified stranger path against the group path: one 32 MiB object to a fresh
/// device from one stranger, and from a group peer; warm-up once, then 3 runs, medians.
async fn throughput() {
    const DIGEST: u64 = 1;
    const PLAIN: u64 = 2;
    let sha = body_sha256(BIG, DIGEST);
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    let by_digest = format!("/.well-known/meshcache/by-digest/sha-256/{hex}");
    let bd = by_digest.clone();
    let route: Route = Arc::new(move |path: &str| {
        if path == bd {
            Some((BIG, DIGEST))
        } else if path == "/big/plain.bin" {
            Some((BIG, PLAIN))
        } else {
            None
        }
    });
    let origin = Origin::start(route).await;
    let (digest_url, plain_url) = (origin.url(&by_digest), origin.url("/big/plain.bin"));

    // The holders: A alone (the stranger), C in a group (the peer).
    let a = Device::start_mesh(None, |_| {}).await;
    let group = mesh::Group::generate().expect("group");
    let c = Device::start(Some(&group), &[]).await;
    for (d, url) in [(&a, &digest_url), (&c, &plain_url), (&c, &digest_url)] {
        if let Err(e) = get_once(d.addr(), url).await {
            println!("WARNING: holder's fetch of {url}: {e}");
        }
        if let Err(e) = wait_hit(d.addr(), url, STORE_WAIT).await {
            println!("WARNING: {e}");
        }
    }
    let (a_ticket, c_ticket) = (
        a.mesh().open_ticket().expect("open mesh"),
        c.mesh().ticket(),
    );

    // (label, times) per path; each round is a fresh device.
    let mut stranger = Vec::new();
    let mut group_plain = Vec::new();
    let mut group_digest = Vec::new();
    for round in 0..=REPEATS {
        let b = Device::start_mesh(None, |m| m.open_peers = vec![a_ticket.clone()]).await;
        if !b.wait_strangers(1, STRANGER_WAIT).await {
            println!("WARNING: the fresh device has no stranger after {STRANGER_WAIT:?}");
        }
        let s = timed(&b, &digest_url, |cs| cs.contains("detail=stranger-url")).await;
        b.stop().await;
        for (url, out) in [
            (&plain_url, &mut group_plain),
            (&digest_url, &mut group_digest),
        ] {
            let d = Device::start(Some(&group), std::slice::from_ref(&c_ticket)).await;
            if !d.mesh().wait_for_peers(1, PEER_WAIT).await {
                println!("WARNING: the fresh group device has no peer after {PEER_WAIT:?}");
            }
            let g = timed(&d, url, |cs| {
                cs.contains("peer=") && !cs.contains("detail=stranger")
            })
            .await;
            d.stop().await;
            if round > 0 {
                out.extend(g);
            }
        }
        if round > 0 {
            stranger.extend(s);
        }
    }
    let (gets, _) = origin.served();
    let median = |v: &mut Vec<Duration>| -> Option<Duration> {
        v.sort_unstable();
        v.get(v.len() / 2).copied().filter(|_| v.len() == REPEATS)
    };
    let mb_s = |d: Duration| BIG as f64 / d.as_secs_f64() / 1e6;
    println!();
    println!(
        "throughput: one {} MiB object to a fresh device (new data directory), warm-up once, median of {REPEATS}",
        BIG >> 20
    );
    println!(
        "  {:<52} {:>9} {:>9} {:>9}",
        "path", "median s", "MB/s", "vs group"
    );
    let g = median(&mut group_plain);
    let rows = [
        ("group peer, ordinary URL (two devices in one group)", g),
        ("group peer, the by-digest URL", median(&mut group_digest)),
        (
            "one stranger, by-digest URL (sha-256 checked)",
            median(&mut stranger),
        ),
    ];
    for (label, m) in rows {
        match m {
            Some(m) => println!(
                "  {:<52} {:>9.3} {:>9.1} {:>9}",
                label,
                m.as_secs_f64(),
                mb_s(m),
                g.map_or("-".into(), |g| format!(
                    "{:.2}",
                    g.as_secs_f64() / m.as_secs_f64()
                ))
            ),
            None => println!("  {label:<52} FAILED (see the warnings above)"),
        }
    }
    println!("  origin GETs: {gets} (one per holder and URL: 3)");
    a.stop().await;
    c.stop().await;
}
