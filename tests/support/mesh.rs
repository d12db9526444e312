//! Mesh devices for the tests: `meshcache run` processes that share a group and know each
//! other by ticket, and helpers to read their status.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::binary::{run, Running};
use super::client;

/// Creates a group in `dir` (a data directory); returns its ticket.
pub fn create_group(dir: &Path) -> String {
    let out = run(&["group", "create", "--data-dir", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `n` data directories in one new group; returns them and the group's ticket.
pub fn grouped(n: usize) -> (Vec<tempfile::TempDir>, String) {
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let group = create_group(dirs[0].path());
    for d in &dirs[1..] {
        join_group(d.path(), &group);
    }
    (dirs, group)
}

pub fn join_group(dir: &Path, ticket: &str) {
    let out = run(&["group", "join", ticket, "--data-dir", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A device: a `meshcache run` process with the mesh on loopback.
pub struct Device {
    pub run: Running,
    pub id: String,
    pub ticket: String,
}

impl Device {
    /// Starts a device whose data directory is `dir` (already in its groups), with these
    /// peers.
    pub fn start(dir: &Path, peers: &[&str]) -> Device {
        Self::start_with_env(dir, peers, &[])
    }

    /// A device started with these extra `meshcache run` arguments (`--open-peer`,
    /// `--operator`, …), extra `[mesh]` settings, and the tests' lookup deadline.
    pub fn start_with_args(dir: &Path, mesh_toml: &str, extra: &[&str]) -> Device {
        let config = dir.join("test-mesh.toml");
        std::fs::write(
            &config,
            format!("[mesh]\nlookup_timeout = \"1s\"\n{mesh_toml}\n"),
        )
        .unwrap();
        let mut args: Vec<&str> = vec!["--config", config.to_str().unwrap()];
        args.extend_from_slice(extra);
        let run = Running::start(dir, &args);
        let (id, ticket) = run.mesh.clone().expect("the mesh runs");
        Device { run, id, ticket }
    }

    /// Its open-mesh ticket (a new identity every start).
    pub fn open_ticket(&self) -> String {
        self.run.open.clone().expect("the open mesh runs").1
    }

    /// Waits until at least `n` strangers are connected; panics after 30 s.
    pub async fn wait_strangers(&self, n: u64) {
        self.wait_figure("mesh_strangers_connected", n).await
    }

    /// Waits until `/status.json`'s figure `name` is at least `n` (a body stored after
    /// its response ended shows as open-mesh tags, for instance); panics after 30 s.
    pub async fn wait_figure(&self, name: &str, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.status().await;
            if figure(&s, name) >= n {
                return;
            }
            assert!(Instant::now() < deadline, "{name} never reached {n}: {s}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// [`Device::start`] with extra environment variables for the process.
    pub fn start_with_env(dir: &Path, peers: &[&str], env: &[(&str, &Path)]) -> Device {
        // Tests share two cores with many processes: a generous lookup deadline keeps a
        // slow answer from looking like no answer (the default is 50 ms, for a LAN).
        let config = dir.join("test-mesh.toml");
        std::fs::write(&config, "[mesh]\nlookup_timeout = \"1s\"\n").unwrap();
        let mut args: Vec<&str> = vec!["--config", config.to_str().unwrap()];
        for p in peers {
            args.push("--peer");
            args.push(p);
        }
        let run = Running::start_with_env(dir, &args, env);
        let (id, ticket) = run.mesh.clone().expect("the mesh runs");
        Device { run, id, ticket }
    }

    pub fn addr(&self) -> SocketAddr {
        self.run.addr
    }

    /// `/status.json` as text.
    pub async fn status(&self) -> String {
        client::get(self.addr(), "http://meshcache.local/status.json", &[])
            .await
            .text()
    }

    /// A number from `/status.json`.
    pub async fn figure(&self, name: &str) -> u64 {
        figure(&self.status().await, name)
    }

    /// Waits until at least `n` peers are connected (the handshake done); panics after
    /// 30 s with the status page.
    pub async fn wait_peers(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.status().await;
            if figure(&s, "mesh_peers_connected") >= n {
                return;
            }
            assert!(Instant::now() < deadline, "{n} peers never connected: {s}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stop(self) {
        self.run.stop()
    }
}

pub fn figure(status: &str, name: &str) -> u64 {
    let key = format!("\"{name}\":");
    status
        .split(&key)
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

/// A real iroh endpoint on loopback (port 0) with `secret`, relays off: what the tests'
/// hostile peers, strangers and outsiders speak from.
pub async fn loopback_endpoint(secret: iroh::SecretKey) -> iroh::Endpoint {
    iroh::Endpoint::builder(iroh::endpoint::presets::Minimal)
        .secret_key(secret)
        .relay_mode(iroh::RelayMode::Disabled)
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .unwrap()
        .bind()
        .await
        .unwrap()
}
