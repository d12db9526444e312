//! What the benchmarks share: how they read their environment, their runtime,
//! percentiles, (`devices`) what the mesh benches start and ask, (`process`) the
//! binary in a process of its own and (`procfs`) what /proc says about it. Included by each
//! bench with `mod common;`.

// Each bench uses a different subset.
#![allow(dead_code)]

/// Origin, devices and client of the mesh benches.
pub mod devices;
pub mod nginx;
/// The `meshcache` binary as a separate process.
pub mod process;
/// /proc readings of a process (memory, descriptors, CPU) and disk usage of a directory.
pub mod procfs;
/// A deterministic random source for workloads.
pub mod rng;

use std::time::Duration;

/// `MESHCACHE_BENCH_QUICK=1`: shorter runs and smaller objects.
pub fn quick() -> bool {
    std::env::var("MESHCACHE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Concurrent connections of a load run.
pub fn load_connections(cores: usize) -> usize {
    (2 * cores).clamp(4, 16)
}

/// Length of one load run.
pub fn load_duration(quick: bool) -> Duration {
    Duration::from_secs(if quick { 2 } else { 5 })
}

/// With `RUST_LOG` set, logs of the in-process proxies and meshes go to stderr (e.g.
/// `RUST_LOG=meshcache_mesh=debug`); without, nothing is logged.
pub fn init_log() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// Runs a bench's async body on a runtime with one worker per core.
pub fn block_on<F: std::future::Future>(cores: usize, f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// The `p`-th percentile of `samples`, in microseconds (nearest rank).
pub fn pct(samples: &[Duration], p: f64) -> f64 {
    let mut v: Vec<Duration> = samples.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1].as_secs_f64() * 1e6
}
