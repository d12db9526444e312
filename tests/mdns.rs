//! Discovery by mDNS, between two `meshcache run` processes in two network namespaces the
//! test creates (a veth pair, 10.78.0.1 ↔ 10.78.0.2, with the multicast route mDNS needs:
//! an offline LAN has no default route). Neither knows the other's ticket. Needs root and
//! `ip`; elsewhere the test says why it is skipped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::binary::BIN;
use crate::support::mesh::{create_group, join_group};

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

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

fn setup() -> Result<Pair, String> {
    let tag = format!("{:x}", std::process::id() & 0xffffff);
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

/// `meshcache run` inside `ns`, its log lines sent to the returned channel.
fn start_in(ns: &str, dir: &std::path::Path, mesh_addr: &str) -> (Child, mpsc::Receiver<String>) {
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
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meshcache");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Waits for a log line containing all of `words`; returns it.
fn wait_line(
    rx: &mpsc::Receiver<String>,
    words: &[&str],
    within: Duration,
) -> Result<String, String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if words.iter().all(|w| line.contains(w)) => return Ok(line),
            Ok(line) => seen.push(line),
            Err(_) => {
                return Err(format!(
                    "no line with {words:?} in {within:?}; log:\n{}",
                    seen.join("\n")
                ))
            }
        }
    }
}

#[test]
fn two_devices_in_namespaces_find_each_other_by_mdns() {
    let pair = match setup() {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "skipped: cannot create network namespaces here (needs root and iproute2): {e}"
            );
            return;
        }
    };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let group = create_group(da.path());
    join_group(db.path(), &group);
    let (mut a, ra) = start_in(&pair.a, da.path(), "10.78.0.1:4919");
    let (mut b, rb) = start_in(&pair.b, db.path(), "10.78.0.2:4919");
    let a_id = wait_line(
        &ra,
        &["meshcache: mesh endpoint", "ticket"],
        Duration::from_secs(30),
    )
    .unwrap();
    let a_id = a_id
        .split("mesh endpoint ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let found = wait_line(&rb, &["new mesh peer", "mdns"], Duration::from_secs(30));
    let connected =
        found.and_then(|_| wait_line(&rb, &["mesh peer connected"], Duration::from_secs(30)));
    for c in [&mut a, &mut b] {
        let _ = Command::new("kill").arg(c.id().to_string()).status();
        let _ = c.wait();
    }
    let line = connected.unwrap();
    assert!(
        line.contains(&a_id[..10]) || line.contains(&a_id),
        "B connected to A: {line}"
    );
    drop(pair);
}
