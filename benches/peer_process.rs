//! Peer transfers between separate processes, as real devices make them: device A and
//! device B are two `meshcache run` processes (the release binary `cargo bench` builds), in
//! one mesh group on loopback, each with its own temporary data directory and its mesh
//! endpoint on a 127.0.0.1 UDP port, no mDNS. The group is made with `meshcache group
//! create` in A's data directory and `group join` in B's; B knows A by A's mesh ticket
//! (`mesh.peers`). The origin (`common::devices::Origin`: generated bodies,
//! `cache-control: max-age=3600`, GETs counted per object) and the HTTP clients run in this
//! process, so a body from a peer crosses three processes: A's store → iroh QUIC → B
//! (verified, stored) → this client.
//!
//! 1. Large objects, every GET on a new TCP connection: A fetches 3 distinct objects from
//!    the origin (misses); then a local hit on A of each (the reference); then B fetches
//!    each once (from A, over the mesh); then a local hit on B of each. After every miss
//!    and every peer transfer the object is polled until it is a plain hit (committed)
//!    before the next GET. Per transfer: MB/s from connecting to the last byte, first body
//!    byte (ms from connecting), and the ratio to the local hit on A of the same object.
//!    B's first transfer is the first on its fresh mesh connection to A: its own row.
//! 2. CPU and memory of each process over each of those phases: user+sys seconds
//!    (/proc/<pid>/stat) per GB (10^9 bytes) moved, and the peak VmRSS sampled every 10 ms.
//! 3. 1 KiB objects: A fetches K distinct URLs (misses, with B connected: the mesh is asked
//!    first); B fetches each once (from A), then each again (local hits), sequentially on
//!    one keep-alive connection per device: p50/p99 of each, the ratio of the p50s, and the
//!    issue's target (3 × local-hit p50 + 0.1 ms) beside the peer p50.
//!
//! Every body is compared byte for byte with the one the origin generated, a body from A
//! must say `peer=` in its `Cache-Status`, and at the end the origin must have seen exactly
//! one GET per object (B never went to the origin); anything else is printed as a WARNING.
//! A transfer from A that breaks off is finished by B from the origin (`Range` +
//! `If-Range`; this origin ignores `Range` and sends it all again) and still says `peer=`:
//! only the origin's count shows it, and the devices' log (on stderr: warnings, and the
//! `peers failed` lines) says why.
//! There are no pass/fail thresholds. The origin, the clients and both devices share the
//! machine's cores: read the ratios (references measured in the same run), not the
//! absolute figures.
//!
//! `cargo bench --bench peer_process` (about a minute once built): 100 MiB objects and
//! K = 200; `MESHCACHE_BENCH_QUICK=1`: 32 MiB and K = 50; `MESHCACHE_BENCH_SIZE=<bytes>`
//! sets the large objects' size.

mod common;
use common::devices::{wait_hit, Conn, Origin, Pattern, Route, Verified};
use common::pct;
use common::process::ProxyProcess;
use common::procfs::{cpu_secs, PeakRss};

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LARGE: u64 = 3;
const SMALL_LEN: u64 = 1024;
/// Body ids of the small objects start here (the large ones are 1, 2, 3).
const SMALL_ID: u64 = 1000;
const PEER_WAIT: Duration = Duration::from_secs(30);
const STORE_WAIT: Duration = Duration::from_secs(60);

/// An object: its URL, and the size and id of the origin's body.
type Object = (String, (u64, u64));

fn main() {
    let quick = common::quick();
    let size: u64 = match std::env::var("MESHCACHE_BENCH_SIZE") {
        Ok(v) => v.parse().expect("MESHCACHE_BENCH_SIZE: a byte count"),
        Err(_) if quick => 32 << 20,
        Err(_) => 100 << 20,
    };
    let k = if quick { 50 } else { 200 };
    let cores = common::cores();
    let mode = if quick { "quick" } else { "full" };
    let mib = size as f64 / (1 << 20) as f64;
    println!("peer_process: {mode} mode, {LARGE} objects of {size} bytes ({mib:.0} MiB), {k} of {SMALL_LEN} B, {cores} cores");
    common::block_on(cores, run(size, k, cores));
}

async fn run(size: u64, k: u64, cores: usize) {
    let route: Route = Arc::new(move |path: &str| match path.strip_prefix("/large/") {
        Some(i) => Some((size, i.parse::<u64>().ok()? + 1)),
        None => Some((
            SMALL_LEN,
            SMALL_ID + path.strip_prefix("/small/")?.parse::<u64>().ok()?,
        )),
    });
    let origin = Origin::start(route).await;

    // Two devices in one group, each its own process and data directory.
    let (dir_a, dir_b) = (tempdir(), tempdir());
    let group = meshcache(dir_a.path(), &["group", "create"]);
    meshcache(dir_b.path(), &["group", "join", &group]);
    let mut a = ProxyProcess::start(dir_a.path(), &config(&[]));
    let (a_id, a_ticket) = a.mesh.clone().expect("A runs the mesh");
    let started = Instant::now();
    let mut b = ProxyProcess::start(dir_b.path(), &config(&[a_ticket]));
    let connected = match wait_peers(b.addr, PEER_WAIT).await {
        true => format!("{:.0} ms after B's start", ms(started.elapsed())),
        false => format!("WARNING: not within {PEER_WAIT:?}"),
    };
    let bin = env!("CARGO_BIN_EXE_meshcache");
    let (pa, pb) = (a.pid(), b.pid());
    println!(
        "devices: `{bin} run`, A pid {pa} on {} (mesh id {}…),",
        a.addr,
        &a_id[..10]
    );
    println!("  B pid {pb} on {}; B connected to A {connected}", b.addr);
    println!(
        "note: the origin, the clients and both devices share the {cores} cores: read the ratios."
    );
    let pattern = Pattern::default();
    let mut bench = Bench {
        pids: [pa, pb],
        pattern,
        bodies: 0,
        bad: 0,
    };

    // --- Large objects -------------------------------------------------------------------
    let large = objects(&origin, "large", size, 1, LARGE);
    let miss = bench.each_new(a.addr, &large, Want::Miss, "A's miss").await;
    let hit_a = bench.each_new(a.addr, &large, Want::Hit, "A's hit").await;
    let peer = bench.each_new(b.addr, &large, Want::Peer, "B from A").await;
    // A second GET at the origin: B lost the transfer from A and finished it from there.
    let gets = |id: &u64| origin.served_id(*id).gets;
    let refetched: Vec<bool> = large.iter().map(|(_, (_, id))| gets(id) > 1).collect();
    let hit_b = bench.each_new(b.addr, &large, Want::Hit, "B's hit").await;

    println!();
    println!("large objects: {LARGE} distinct objects, every GET on a new TCP connection; MB = 10^6 bytes;");
    println!(
        "  MB/s from connecting to the last byte; 1st ms = from connecting to the first body byte;"
    );
    println!("  vs hit A = peer MB/s / MB/s of the local hit on A of the same object in this run;");
    println!(
        "  commit s = from the peer transfer's last byte to the object being a plain hit on B"
    );
    println!(
        "  {:26}        miss on A   local hit on A      peer A -> B   local hit on B",
        ""
    );
    let unit = "     MB/s  1st ms".repeat(4);
    println!("  {:<26}{unit}  vs hit A  commit s", "object");
    let ratio: Vec<f64> = peer
        .got
        .iter()
        .zip(&hit_a.got)
        .map(|(p, h)| p.mb_per_s() / h.mb_per_s())
        .collect();
    let commit: Vec<f64> = peer.commit.iter().map(Duration::as_secs_f64).collect();
    for i in (0..large.len()).map(Some).chain([None]) {
        let mut line = match i {
            Some(0) => "1 (B's fresh mesh conn.)".to_string(),
            Some(i) => (i + 1).to_string(),
            None => "median of 3".to_string(),
        };
        let star = i.is_some_and(|i| refetched[i]);
        line = format!("  {:<26}", line + if star { " *" } else { "" });
        for p in [&miss, &hit_a, &peer, &hit_b] {
            let (rate, first) = match i {
                Some(i) => (p.got[i].mb_per_s(), p.got[i].ttfb_ms()),
                None => (
                    median(p.got.iter().map(Verified::mb_per_s)),
                    median(p.got.iter().map(Verified::ttfb_ms)),
                ),
            };
            line += &format!(" {rate:>8.0} {first:>7.1}");
        }
        let (r, c) = match i {
            Some(i) => (ratio[i], commit[i]),
            None => (
                median(ratio.iter().copied()),
                median(commit.iter().copied()),
            ),
        };
        println!("{line} {r:>9.2} {c:>9.2}");
    }
    if refetched.contains(&true) {
        println!("  * WARNING: B lost the transfer from A and finished it from the origin (its Cache-Status");
        println!("    still says peer=): not a peer transfer; the origin sent this object twice");
    }
    let (first, later) = (&peer.got[0], &peer.got[1..]);
    println!(
        "  first transfer on the fresh mesh connection: {:.0} MB/s, 1st byte {:.1} ms, {:.2}× the hit on A;",
        first.mb_per_s(),
        first.ttfb_ms(),
        ratio[0]
    );
    println!(
        "  the two after it (mean): {:.0} MB/s, 1st byte {:.1} ms, {:.2}× the hit on A",
        median(later.iter().map(Verified::mb_per_s)),
        median(later.iter().map(Verified::ttfb_ms)),
        median(ratio[1..].iter().copied())
    );
    println!(
        "  Cache-Status of B's first transfer: {}",
        first.cache_status
    );

    let gb = (size * LARGE) as f64 / 1e9;
    println!();
    println!(
        "CPU: user+sys seconds per GB moved ({gb:.3} GB per phase; /proc/<pid>/stat, 10 ms ticks);"
    );
    println!("  RSS: peak VmRSS sampled every 10 ms during the phase");
    println!(
        "  {:<42} {:>8} {:>8} {:>10} {:>10}",
        "phase", "A s/GB", "B s/GB", "A RSS MiB", "B RSS MiB"
    );
    for (name, p) in [
        ("misses on A (origin -> A)", &miss),
        ("local hits on A (reference for A)", &hit_a),
        ("peer A -> B (A sends; B receives, stores)", &peer),
        ("local hits on B (reference for B)", &hit_b),
    ] {
        let cpu = p
            .cpu
            .map(|c| c.map_or("-".into(), |c| format!("{:.2}", c / gb)));
        let rss = p.rss_kib.map(|k| k as f64 / 1024.0);
        println!(
            "  {name:<42} {:>8} {:>8} {:>10.1} {:>10.1}",
            cpu[0], cpu[1], rss[0], rss[1]
        );
    }
    let times = |x: Option<f64>, y: Option<f64>| {
        x.zip(y)
            .map_or("-".into(), |(x, y)| format!("{:.1}×", x / y))
    };
    let (send, receive) = (
        times(peer.cpu[0], hit_a.cpu[0]),
        times(peer.cpu[1], hit_b.cpu[1]),
    );
    println!("  sending costs A {send} the CPU of its local hits; receiving costs B {receive} the CPU of its local hits");

    // --- 1 KiB objects --------------------------------------------------------------------
    let small = objects(&origin, "small", SMALL_LEN, SMALL_ID, k);
    let mut c = Conn::open(a.addr).await.expect("connect to A");
    let lat_miss = bench
        .sequential(&mut c, a.addr, &small, Want::Miss, "A's 1 KiB miss")
        .await;
    let mut c = Conn::open(b.addr).await.expect("connect to B");
    let lat_peer = bench
        .sequential(&mut c, b.addr, &small, Want::Peer, "B's 1 KiB from A")
        .await;
    let lat_hit = bench
        .sequential(&mut c, b.addr, &small, Want::Hit, "B's 1 KiB hit")
        .await;

    println!();
    println!("1 KiB objects: {k} distinct URLs, sequential GETs on one keep-alive connection per device (request to last byte)");
    println!(
        "  {:<26} {:>8} {:>8} {:>16}",
        "fetch", "p50 µs", "p99 µs", "p50 vs hit on B"
    );
    let hit50 = pct(&lat_hit, 50.0);
    for (name, l) in [
        ("miss on A (origin)", &lat_miss),
        ("peer: B from A", &lat_peer),
        ("local hit on B", &lat_hit),
    ] {
        let p50 = pct(l, 50.0);
        println!(
            "  {name:<26} {p50:>8.0} {:>8.0} {:>16.2}",
            pct(l, 99.0),
            p50 / hit50
        );
    }
    let (peer50, target) = (pct(&lat_peer, 50.0), 3.0 * hit50 + 100.0);
    let times = peer50 / target;
    println!("  the issue's target, 3 × local-hit p50 + 0.1 ms = {target:.0} µs; peer p50 {peer50:.0} µs = {times:.2}× the target");

    // --- What came from where -------------------------------------------------------------
    println!();
    let ids: Vec<u64> = large.iter().chain(&small).map(|(_, (_, id))| *id).collect();
    let not_once: Vec<String> = ids
        .iter()
        .filter(|id| gets(id) != 1)
        .map(|id| format!("object {id}: {} GETs", gets(id)))
        .collect();
    let verdict = match not_once.len() {
        0 => "exactly one GET per object: B never went to the origin".to_string(),
        n => format!(
            "WARNING: {n} objects not fetched exactly once ({}): a transfer from A that failed \
             is finished from the origin (`peers failed` in the devices' log, on stderr)",
            not_once.join(", ")
        ),
    };
    let (total, bytes) = origin.served();
    println!(
        "origin: {total} GETs, {bytes} body bytes, for {} objects; {verdict}",
        ids.len()
    );
    let bad = if bench.bad > 0 {
        " (WARNING: see above)"
    } else {
        ""
    };
    println!(
        "bodies: {} received, {} whole, identical to the origin's and from the expected source{bad}",
        bench.bodies,
        bench.bodies - bench.bad
    );
    let (sa, sb) = (status(a.addr).await, status(b.addr).await);
    let (to_peers, from_peers) = (
        figure(&sa, "mesh_bytes_to_peers"),
        figure(&sb, "bytes_from_peers"),
    );
    let (peer_hits, from_origin) = (figure(&sb, "peer_hits"), figure(&sb, "bytes_from_origin"));
    println!("status.json: A mesh_bytes_to_peers {to_peers}; B bytes_from_peers {from_peers}, peer_hits {peer_hits}, bytes_from_origin {from_origin}");
    for (name, p) in [("A", &mut a), ("B", &mut b)] {
        let (status, log) = (p.stop(), p.log());
        println!(
            "{name}: stopped with SIGTERM: {status}; logged {} WARN, {} ERROR",
            log.warn, log.error
        );
        for line in log.first.iter().take(5) {
            println!("    {line}");
        }
    }
}

/// A `meshcache` command on a device's data directory (`<dir>/data`, as
/// [`ProxyProcess::start`] uses it); its stdout.
fn meshcache(dir: &Path, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_meshcache"));
    let out = cmd
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .output();
    let out = out.expect("run meshcache");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "meshcache {args:?}: {err}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A device's config: the mesh on a free loopback UDP port (the open mesh too), no mDNS,
/// knowing `peers`; everything else the defaults of an on-device proxy. Warnings are
/// logged, and why a body from a peer had to be finished by the origin.
fn config(peers: &[String]) -> String {
    format!(
        r#"[log]
level = "warn,meshcache::flow::peer_body=info,meshcache_mesh::stream=info"
access = false

[origin]
# The bench's loopback origin.
allow = ["127.0.0.1/32"]

[mesh]
listen = "127.0.0.1:0"
open_listen = "127.0.0.1:0"
mdns = false
peers = {peers:?}
"#
    )
}

/// `n` objects at `/<prefix>/<i>`, of `size` bytes, with body ids from `first_id`.
fn objects(origin: &Origin, prefix: &str, size: u64, first_id: u64, n: u64) -> Vec<Object> {
    let url = |i| origin.url(&format!("/{prefix}/{i}"));
    (0..n).map(|i| (url(i), (size, first_id + i))).collect()
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The middle value (the mean of the middle two for an even count).
fn median(v: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = v.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Polls `/status.json` until at least one peer is connected; false after `within`.
async fn wait_peers(addr: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if figure(&status(addr).await, "mesh_peers_connected") >= 1 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// `/status.json` of the proxy at `addr` (the full one: this client is an admin), or
/// `Null` when it cannot be read.
async fn status(addr: SocketAddr) -> serde_json::Value {
    let body = match Conn::open(addr).await {
        Ok(mut c) => c.get_body("http://meshcache.local/status.json").await,
        Err(e) => Err(e),
    };
    body.ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn figure(status: &serde_json::Value, name: &str) -> u64 {
    status.get(name).and_then(|v| v.as_u64()).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Measuring

/// Where a response's body should have come from, by its `Cache-Status`.
#[derive(Clone, Copy, PartialEq)]
enum Want {
    Miss,
    Peer,
    Hit,
}

impl Want {
    fn matches(self, cs: &str) -> bool {
        match self {
            Want::Miss => cs.contains("fwd=miss") && !cs.contains("peer="),
            Want::Peer => cs.contains("peer="),
            Want::Hit => cs == "meshcache; hit",
        }
    }
}

/// The devices' pids, the origin's bodies, and the tally of the bodies received: all, and
/// those not whole, not the origin's or not from the expected source (the first few are
/// printed as they happen).
struct Bench {
    pids: [u32; 2],
    pattern: Pattern,
    bodies: u64,
    bad: u64,
}

/// A phase of large transfers: each GET, the wait after it until the object was a plain
/// hit (zero for hits), and the CPU seconds and peak RSS of A and B over the phase.
struct Phase {
    got: Vec<Verified>,
    commit: Vec<Duration>,
    cpu: [Option<f64>; 2],
    rss_kib: [u64; 2],
}

impl Bench {
    fn note(&mut self, what: &str, v: &Verified, want: Want) {
        self.bodies += 1;
        if v.problem.is_none() && want.matches(&v.cache_status) {
            return;
        }
        self.bad += 1;
        if self.bad <= 10 {
            let problem = v.problem.as_deref().unwrap_or("body ok");
            println!(
                "WARNING: {what}: {problem}; cache-status {:?}",
                v.cache_status
            );
        }
    }

    /// Each object on a new connection to `addr`; after each that was not a hit, waits
    /// until it is a plain hit there (committed to the store) before the next.
    async fn each_new(
        &mut self,
        addr: SocketAddr,
        objects: &[Object],
        want: Want,
        what: &str,
    ) -> Phase {
        let cpu = self.pids.map(cpu_secs);
        let rss = PeakRss::start(&self.pids);
        let (mut got, mut commit) = (Vec::new(), Vec::new());
        for (url, body) in objects {
            let start = Instant::now();
            let v = match Conn::open(addr).await {
                Ok(mut c) => c.get_verified(url, *body, &self.pattern, start).await,
                Err(e) => Verified {
                    problem: Some(e),
                    ..Verified::default()
                },
            };
            self.note(what, &v, want);
            let t = Instant::now();
            if want != Want::Hit {
                if let Err(e) = wait_hit(addr, url, STORE_WAIT).await {
                    println!("WARNING: {what}: {e}");
                }
            }
            commit.push(t.elapsed());
            got.push(v);
        }
        let after = self.pids.map(cpu_secs);
        let cpu = [0, 1].map(|i| Some(after[i]? - cpu[i]?));
        let rss = rss.stop();
        Phase {
            got,
            commit,
            cpu,
            rss_kib: [0, 1].map(|i| rss.get(i).copied().unwrap_or(0)),
        }
    }

    /// Sequential GETs of the small `objects` on `c`, a connection to `addr`; the latency
    /// of each. Then, unless they were hits, waits until each is a plain hit on `addr`.
    async fn sequential(
        &mut self,
        c: &mut Conn,
        addr: SocketAddr,
        objects: &[Object],
        want: Want,
        what: &str,
    ) -> Vec<Duration> {
        let mut lat = Vec::with_capacity(objects.len());
        for (url, body) in objects {
            let v = c
                .get_verified(url, *body, &self.pattern, Instant::now())
                .await;
            self.note(what, &v, want);
            lat.push(v.elapsed);
        }
        for (url, _) in objects.iter().filter(|_| want != Want::Hit) {
            if let Err(e) = wait_hit(addr, url, STORE_WAIT).await {
                println!("WARNING: {what}: {e}");
                break;
            }
        }
        lat
    }
}
