//! Discovery by mDNS, between two `meshcache run` processes in two network namespaces the
//! test creates (a veth pair, 10.78.0.1 ↔ 10.78.0.2, with the multicast route mDNS needs:
//! an offline LAN has no default route). Neither knows the other's ticket. Needs root and
//! `ip`; elsewhere the test says why it is skipped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::binary::BIN;
use crate::support::mesh::grouped;
use crate::support::sh;

struct Pair {
    a: String,
    b: String,
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Two namespaces joined by a veth pair; `n` tells the pairs of one test run apart (the
/// tests run in parallel in one process).
fn setup(n: u32) -> Result<Pair, String> {
    let tag = format!("{:x}{n}", std::process::id() & 0xffffff);
    let pair = Pair {
        a: format!("mma{tag}"),
        b: format!("mmb{tag}"),
    };
    sh(&["ip", "netns", "add", &pair.a])?;
    sh(&["ip", "netns", "add", &pair.b])?;
    let (va, vb) = (format!("ma{tag}"), format!("mb{tag}"));
    sh(&[
        "ip", "link", "add", &va, "type", "veth", "peer", "name", &vb,
    ])?;
    sh(&["ip", "link", "set", &va, "netns", &pair.a])?;
    sh(&["ip", "link", "set", &vb, "netns", &pair.b])?;
    for (ns, dev, ip) in [
        (&pair.a, &va, "10.78.0.1/24"),
        (&pair.b, &vb, "10.78.0.2/24"),
    ] {
        let x = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", ns.as_str()];
            v.extend_from_slice(args);
            sh(&v)
        };
        x(&["ip", "addr", "add", ip, "dev", dev])?;
        x(&["ip", "link", "set", dev, "up"])?;
        x(&["ip", "link", "set", "lo", "up"])?;
        // What docs/mesh.md tells users to do on a LAN without a default route.
        x(&["ip", "route", "add", "224.0.0.0/4", "dev", dev])?;
    }
    Ok(pair)
}

/// `meshcache run` inside `ns`; its log lines go to `tx`, each prefixed with `name`.
fn start_in(
    ns: &str,
    dir: &std::path::Path,
    mesh_addr: &str,
    name: &'static str,
    tx: mpsc::Sender<String>,
) -> Child {
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            BIN,
            "run",
            "--listen",
            "127.0.0.1:0",
            "--mesh-listen",
            mesh_addr,
            "--data-dir",
        ])
        .arg(dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meshcache");
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(format!("{name}: {line}"));
        }
    });
    child
}

/// Waits until, for each entry of `wanted`, some log line contains all its words.
/// The two processes log independently, so no order between them is assumed.
fn wait_for_all(
    rx: &mpsc::Receiver<String>,
    wanted: &[&[&str]],
    within: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let all_seen = wanted
            .iter()
            .all(|words| seen.iter().any(|l| words.iter().all(|w| l.contains(w))));
        if all_seen {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                return Err(format!(
                    "not all of {wanted:?} in {within:?}; log:\n{}",
                    seen.join("\n")
                ))
            }
        }
    }
}

/// Two `meshcache run` processes with data directories `dirs`, one in each of two new
/// namespaces, until their logs show all of `wanted` (or 30 s pass).
fn run_pair(n: u32, dirs: [&std::path::Path; 2], wanted: &[&[&str]]) {
    let pair = match setup(n) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "skipped: cannot create network namespaces here (needs root and iproute2): {e}"
            );
            return;
        }
    };
    let (tx, rx) = mpsc::channel();
    let mut a = start_in(&pair.a, dirs[0], "10.78.0.1:4919", "A", tx.clone());
    let mut b = start_in(&pair.b, dirs[1], "10.78.0.2:4919", "B", tx);
    let result = wait_for_all(&rx, wanted, Duration::from_secs(30));
    for c in [&mut a, &mut b] {
        let _ = Command::new("kill").arg(c.id().to_string()).status();
        let _ = c.wait();
    }
    result.unwrap();
    drop(pair);
}

#[test]
fn two_devices_in_namespaces_find_each_other_by_mdns() {
    let (dirs, _) = grouped(2);
    // Neither knows the other's ticket: whichever hears the other first by mDNS dials it
    // (the other learns it from that connection); both end up connected.
    run_pair(
        0,
        [dirs[0].path(), dirs[1].path()],
        &[
            &["new mesh peer", "source=\"mdns\""],
            &["A: ", "mesh peer connected"],
            &["B: ", "mesh peer connected"],
        ],
    );
}

#[test]
fn two_strangers_in_namespaces_find_each_other_by_mdns() {
    // No group, no ticket: the open mesh's own mDNS service (meshcache-open).
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    run_pair(
        1,
        [dirs[0].path(), dirs[1].path()],
        &[
            &["stranger added", "source=\"mdns\""],
            &["A: ", "connected to a stranger"],
            &["B: ", "connected to a stranger"],
        ],
    );
}
