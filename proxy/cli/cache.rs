//! `meshcache cache …`: the cache's data directory inspected or changed while the proxy is
//! stopped (a data directory belongs to one process at a time).

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use meshcache::{Cache, SystemClock};

use crate::CacheCommand;

pub(crate) async fn run(dir: &Path, opts: cache::Options, command: CacheCommand) -> Result<()> {
    if !dir.exists() {
        bail!(
            "no cache in {} (has the proxy run with this data directory?)",
            dir.display()
        );
    }
    let check = matches!(command, CacheCommand::Check);
    let mut opts = opts;
    if check {
        // Collect the garbage the open's reconciliation released, so that what remains
        // unreferenced is a real problem.
        opts.gc_interval = std::time::Duration::from_millis(100);
    }
    let cache = Cache::open(opts, Arc::new(SystemClock))
        .await
        .with_context(|| {
            format!(
                "opening the cache in {} (is the proxy running? stop it first)",
                dir.display()
            )
        })?;
    let result = async {
        match command {
            CacheCommand::Stats => {
                let s = cache.stats().await?;
                println!("directory:  {}", dir.display());
                println!("urls:       {}", s.urls);
                println!("variants:   {}", s.variants);
                println!(
                    "bytes:      {} of {} ({:.1}%)",
                    s.bytes,
                    s.max_bytes,
                    100.0 * s.bytes as f64 / s.max_bytes.max(1) as f64
                );
            }
            CacheCommand::List => {
                for (key, e) in cache.list().await? {
                    println!(
                        "{}\t{}\t{}\t{}{}",
                        e.status,
                        e.len,
                        e.hash_hex(),
                        key,
                        if e.shareable { "" } else { "\t(private)" }
                    );
                }
            }
            CacheCommand::Purge { url } => {
                let uri: http::Uri = url.parse().with_context(|| format!("not a URL: {url}"))?;
                let key = cache::key::primary_key(&uri)
                    .with_context(|| format!("not an http(s) URL: {url}"))?;
                let n = cache.invalidate(&key).await?;
                println!("purged {n} variant(s) of {key}");
            }
            CacheCommand::Clear => {
                let n = cache.clear().await?;
                println!("removed {n} entries");
            }
            CacheCommand::Check => {
                let r = cache.check(std::time::Duration::from_secs(10)).await?;
                println!("directory:  {}", dir.display());
                println!("entries:    {}", r.entries);
                println!("bodies:     {} (each read and hashed)", r.bodies);
                println!(
                    "bytes:      {} recorded, {} counted",
                    r.bytes_recorded, r.bytes_counted
                );
                println!("orphans:    {}", r.unreferenced_blobs);
                for p in &r.problems {
                    println!("problem:    {p}");
                }
                if !r.is_consistent() {
                    bail!("{} problem(s) in {}", r.problems.len(), dir.display());
                }
                println!("consistent");
            }
        }
        anyhow::Ok(())
    }
    .await;
    cache.shutdown().await;
    result
}
