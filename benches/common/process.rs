//! The built `meshcache` binary as a separate process (so its memory and CPU can be read
//! from /proc): started on a config text, its address read from its stderr, stopped with
//! SIGTERM. What it logs is forwarded to this process's stderr and tallied ([`ProxyLog`]).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub struct ProxyProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// Its mesh endpoint id and ticket (for another device's `mesh.peers`), when the mesh
    /// runs: read from the `meshcache: mesh endpoint <id> ticket <ticket>` line.
    pub mesh: Option<(String, String)>,
    log: Arc<Mutex<ProxyLog>>,
}

/// The proxy's stderr so far: lines by level, and the first warnings and errors.
#[derive(Debug, Clone, Default)]
pub struct ProxyLog {
    pub lines: u64,
    pub warn: u64,
    pub error: u64,
    /// The first [`ProxyLog::KEEP`] WARN / ERROR lines (colour codes removed).
    pub first: Vec<String>,
}

impl ProxyLog {
    pub const KEEP: usize = 40;

    fn add(&mut self, line: &str) {
        self.lines += 1;
        let plain = strip_ansi(line);
        // tracing's format: `<timestamp> <LEVEL> <target>: <message>`.
        let level = plain.split_whitespace().nth(1).unwrap_or("");
        let counter = match level {
            "WARN" => &mut self.warn,
            "ERROR" => &mut self.error,
            _ => return,
        };
        *counter += 1;
        if self.first.len() < Self::KEEP {
            self.first.push(plain);
        }
    }
}

/// `line` without ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl ProxyProcess {
    /// `meshcache run --config <dir>/bench.toml --data-dir <dir>/data` with `config` as the
    /// file (it should set `listen.forward` to a port-0 loopback address, or leave it to
    /// `--listen 127.0.0.1:0`, which is added).
    pub fn start(dir: &Path, config: &str) -> ProxyProcess {
        let conf = dir.join("bench.toml");
        std::fs::write(&conf, config).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshcache"))
            .arg("run")
            .arg("--config")
            .arg(&conf)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn meshcache");
        // Read the real address from stderr, then keep forwarding stderr so the pipe never
        // fills up.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(ProxyLog::default()));
        let tally = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            // The mesh line comes before the listening one.
            let mut mesh = None;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("meshcache: proxy listening on http://") {
                    if let Some(tx) = tx.take() {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                        let _ = tx.send((addr, mesh.take()));
                        continue;
                    }
                }
                if let Some(rest) = line.strip_prefix("meshcache: mesh endpoint ") {
                    let mut words = rest.split_whitespace();
                    if let (Some(id), Some("ticket"), Some(ticket)) =
                        (words.next(), words.next(), words.next())
                    {
                        mesh = Some((id.to_owned(), ticket.to_owned()));
                    }
                }
                tally.lock().unwrap().add(&line);
                eprintln!("  [proxy] {line}");
            }
        });
        let (addr, mesh): (SocketAddr, _) = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok((a, mesh)) => (a.parse().expect("proxy address"), mesh),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("meshcache did not report its address within 30 s (exit: {status:?})");
            }
        };
        assert!(
            addr.ip().is_loopback(),
            "the proxy listens on {addr}, not on loopback"
        );
        ProxyProcess {
            child: Some(child),
            addr,
            mesh,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// What the proxy has logged so far (also after [`ProxyProcess::stop`]).
    pub fn log(&self) -> ProxyLog {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, then wait (SIGKILL after 30 s). Returns a description of the exit.
    pub fn stop(&mut self) -> String {
        let Some(mut child) = self.child.take() else {
            return "not running".into();
        };
        terminate(&mut child, Duration::from_secs(30))
    }
}

/// SIGTERM to `child`, then waits for it; SIGKILL after `grace`. Says how it ended.
pub fn terminate(child: &mut std::process::Child, grace: Duration) -> String {
    // SAFETY: kill has no memory-safety preconditions; the pid is our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return s.to_string(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let s = child.wait();
                return format!("did not exit within {grace:?} of SIGTERM; killed ({s:?})");
            }
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
