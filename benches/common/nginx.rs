//! Debian's nginx as a reference caching proxy: a reverse proxy with `proxy_cache` in front
//! of a bench's origin, started on a configuration of its own in a temporary directory
//! (`nginx -p <dir> -c <dir>/nginx.conf -e <dir>/error.log -g 'daemon off;'`; pid file, error
//! log, temp and cache directories all in `<dir>`), stopped (SIGTERM to the master, SIGKILL
//! after 10 s) when dropped. Its processes (master, workers, cache manager) are found under
//! /proc so their CPU time and memory can be summed.
//!
//! Not installed by the build: `apt-get install -y nginx-light` (or `nginx`) on Debian; a
//! bench that wants it calls [`find`] and skips the reference, saying why, without it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::procfs;

/// The nginx binary: on the PATH, or in /usr/sbin (Debian's place, not on a user's PATH).
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
}

/// How the reference is set up.
pub struct NginxOptions {
    /// `worker_processes` (match the machine's cores).
    pub workers: usize,
    /// The origin it proxies to (`upstream`, with a pool of keep-alive connections).
    pub origin: SocketAddr,
}

/// A running nginx with two listeners on one shared cache zone: [`Nginx::addr`] without an
/// access log, [`Nginx::addr_logged`] with one (`<dir>/access.log`, format `combined`).
pub struct Nginx {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `access_log off`.
    pub addr: SocketAddr,
    /// The same cache with `access_log <dir>/access.log`.
    pub addr_logged: SocketAddr,
    /// `nginx -v`.
    pub version: String,
    /// The configuration file as written.
    pub conf: String,
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

impl Nginx {
    /// Writes the configuration, starts nginx and waits (≤ 10 s) until both listeners answer.
    pub fn start(bin: &Path, opts: &NginxOptions) -> Result<Nginx, String> {
        let version = Command::new(bin)
            .arg("-v")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
            .unwrap_or_default();
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let (port, port_logged) = (free_port()?, free_port()?);
        let p = dir.path().display().to_string();
        for sub in ["tmp", "cache"] {
            std::fs::create_dir_all(dir.path().join(sub)).map_err(|e| e.to_string())?;
        }
        // As root, workers would run as `nobody` and could not enter a 0700 temp dir.
        // SAFETY: geteuid has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;\n"
        } else {
            ""
        };
        let location = r#"        location = /__ready { return 204; }
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
            proxy_cache bench;
            # The origin's Cache-Control: max-age=3600 decides; this is the fallback.
            proxy_cache_valid 200 1h;
            add_header X-Cache-Status $upstream_cache_status always;
        }"#;
        let conf = format!(
            r#"{user}worker_processes {workers};
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    # sendfile on as in Debian's /etc/nginx/nginx.conf; not its tcp_nopush on: with it
    # (TCP_CORK) every 100 KiB keep-alive hit stalled about 40 ms on loopback (35 req/s on
    # one connection against 19,000 without).
    sendfile on;
    tcp_nopush off;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 100000000;
    access_log off;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    proxy_cache_path {p}/cache levels=1:2 keys_zone=bench:16m max_size=8g inactive=1h use_temp_path=off;
    upstream origin {{
        server {origin};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
{location}
    }}
    server {{
        listen 127.0.0.1:{port_logged};
        access_log {p}/access.log combined;
{location}
    }}
}}
"#,
            workers = opts.workers,
            origin = opts.origin,
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, &conf).map_err(|e| format!("write nginx.conf: {e}"))?;
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let mut nginx = Nginx {
            child: Some(child),
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            addr_logged: SocketAddr::from(([127, 0, 0, 1], port_logged)),
            version,
            conf,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if ready(nginx.addr) && ready(nginx.addr_logged) {
                return Ok(nginx);
            }
            let exited = nginx
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let log = nginx.error_log();
                let why = match exited {
                    Some(s) => format!("nginx exited ({s})"),
                    None => "nginx did not answer within 10 s".into(),
                };
                return Err(format!("{why}: {}", log.trim()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    pub fn access_log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// The master's pid (0 once stopped).
    pub fn master(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// The master and its children (workers, cache manager, cache loader while it runs).
    pub fn pids(&self) -> Vec<u32> {
        let master = self.master();
        if master == 0 {
            return Vec::new();
        }
        let mut pids = vec![master];
        pids.extend(children(master));
        pids
    }

    /// User + system CPU seconds used so far by each of [`Nginx::pids`].
    pub fn cpu_by_pid(&self) -> HashMap<u32, f64> {
        self.pids()
            .into_iter()
            .filter_map(|p| Some((p, procfs::cpu_secs(p)?)))
            .collect()
    }

    /// Sum of `VmRSS` of [`Nginx::pids`], in KiB (pages shared between them, such as the
    /// cache zone, are counted in each).
    pub fn rss_kib(&self) -> u64 {
        self.pids()
            .into_iter()
            .filter_map(|p| procfs::status_kib(p, "VmRSS"))
            .sum()
    }

    /// SIGTERM to the master (fast shutdown), SIGKILL after 10 s.
    pub fn stop(&mut self) -> String {
        let Some(mut child) = self.child.take() else {
            return "not running".into();
        };
        super::process::terminate(&mut child, Duration::from_secs(10))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `GET /__ready` answers 204.
fn ready(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /__ready HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < head.len() {
        match s.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    head[..got].starts_with(b"HTTP/1.1 204")
}

/// Processes whose parent is `parent` (a scan of /proc/<pid>/stat).
pub fn children(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent_of(pid) == Some(parent))
        .collect()
}

/// Field 4 of /proc/<pid>/stat.
fn parent_of(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}
