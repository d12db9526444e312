//! The built `meshcache` binary, run as a user runs it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_meshcache");

/// A `meshcache run` process.
pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
    /// Its mesh endpoint id and ticket, when the mesh runs.
    pub mesh: Option<(String, String)>,
    /// Its open-mesh (stranger) id and ticket, when the open mesh runs.
    pub open: Option<(String, String)>,
    /// Its stderr lines from the start (read as they come).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Running {
    /// Starts `meshcache run` on a free loopback port with `dir` as its data directory and
    /// waits until it says where it listens.
    /// The mesh endpoint is bound to loopback on a free port (unless `extra` names
    /// `--mesh-listen` / `--open-listen`), without mDNS (tests never send multicast onto
    /// the machine's network).
    pub fn start(dir: &Path, extra: &[&str]) -> Running {
        Self::start_with_env(dir, extra, &[])
    }

    /// [`Running::start`] with extra environment variables for the process (the test's
    /// own environment is never changed).
    pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &Path)]) -> Running {
        let mut cmd = Command::new(BIN);
        cmd.env("RUST_LOG", "warn");
        // `meshcache run` takes an upstream proxy from these, as curl does: the tests'
        // origins are on loopback, reached directly unless a test sets one itself.
        for v in [
            "http_proxy",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
        ] {
            cmd.env_remove(v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.args(["run", "--listen", "127.0.0.1:0"]);
        // A test may choose the mesh's addresses itself (a fixed port two devices share).
        for flag in ["--mesh-listen", "--open-listen"] {
            if !extra.contains(&flag) {
                cmd.args([flag, "127.0.0.1:0"]);
            }
        }
        let mut child = cmd
            .args(["--no-mdns", "--data-dir"])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn meshcache");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut mesh = None;
        let mut open = None;
        let mut startup = Vec::new();
        let addr = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("meshcache exited before listening: {startup:#?}"))
                .unwrap();
            startup.push(line.clone());
            if let Some(rest) = line.split("mesh endpoint ").nth(1) {
                let mut words = rest.split_whitespace();
                let id = words.next().unwrap().to_string();
                let ticket = words.nth(1).unwrap().to_string();
                mesh = Some((id, ticket));
            }
            if let Some(rest) = line.split("meshcache: open mesh ").nth(1) {
                let mut words = rest.split_whitespace();
                let id = words.next().unwrap().to_string();
                let ticket = words.nth(1).unwrap().to_string();
                open = Some((id, ticket));
            }
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        // Keep draining stderr so the process never blocks on a full pipe.
        let log = std::sync::Arc::new(std::sync::Mutex::new(startup));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Running {
            child,
            addr,
            mesh,
            open,
            log,
        }
    }

    /// SIGTERM, then wait: a clean shutdown.
    pub fn stop(mut self) {
        signal(&self.child, "TERM");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "meshcache exited with {status}");
    }

    /// SIGKILL: a crash.
    pub fn kill9(mut self) {
        signal(&self.child, "KILL");
        let _ = self.child.wait();
    }
}

/// A test that fails (panics) before stopping its proxy must not leave it running.
impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Runs `meshcache ARGS…` to completion.
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run meshcache")
}

/// `curl -s -D - -x http://PROXY URL`: the response head and body as text.
pub fn curl(proxy: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "60", "-D", "-", "-x"])
        .arg(format!("http://{proxy}"))
        .args(args)
        .output()
        .expect("curl is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
