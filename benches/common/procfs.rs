//! What a bench reads about a process from /proc (Linux) and about a directory from the
//! file system: resident memory (and its peak over a phase, [`PeakRss`]), open descriptors,
//! CPU time, disk usage.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A `kB` field of /proc/<pid>/status (`VmRSS`, `VmHWM`, …), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The peak `VmRSS` of some processes, sampled every 10 ms on a thread of its own from
/// [`PeakRss::start`] to [`PeakRss::stop`].
pub struct PeakRss {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u64>>,
}

impl PeakRss {
    pub fn start(pids: &[u32]) -> PeakRss {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, pids) = (stop.clone(), pids.to_vec());
        let thread = std::thread::spawn(move || {
            let mut peak = vec![0; pids.len()];
            loop {
                for (p, pid) in peak.iter_mut().zip(&pids) {
                    *p = (*p).max(status_kib(*pid, "VmRSS").unwrap_or(0));
                }
                if flag.load(Ordering::Relaxed) {
                    return peak;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        });
        PeakRss { stop, thread }
    }

    /// The peak of each process (in the order given), in KiB.
    pub fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Open file descriptors of `pid` (entries of /proc/<pid>/fd) and how many of them are
/// sockets.
pub fn fd_count(pid: u32) -> Option<(usize, usize)> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let (mut all, mut sockets) = (0, 0);
    for e in dir.filter_map(|e| e.ok()) {
        all += 1;
        if std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")) {
            sockets += 1;
        }
    }
    Some((all, sockets))
}

/// User + system CPU seconds used so far by `pid` (/proc/<pid>/stat, clock ticks).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`, which may contain spaces: utime is field 14, stime 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 if unknown).
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Disk usage of a directory tree.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskUsage {
    /// Blocks allocated (what `du` reports), in bytes.
    pub allocated: u64,
    /// Sum of file lengths (`du --apparent-size`), in bytes.
    pub apparent: u64,
    pub files: u64,
}

/// Disk usage of `path` and everything below it, symlinks not followed. Files that vanish
/// during the walk (a live store deletes them) are skipped; a missing `path` is zero.
pub fn disk_usage(path: &Path) -> DiskUsage {
    use std::os::unix::fs::MetadataExt;
    let mut u = DiskUsage::default();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        u.allocated += m.blocks() * 512;
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        } else {
            u.apparent += m.len();
            u.files += 1;
        }
    }
    u
}
