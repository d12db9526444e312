//! Which hosts are tunnelled blindly instead of intercepted: `tls.passthrough` patterns for
//! everyone, and hosts *learned* from a client that refused our certificate (a pinned app,
//! or a device without the CA).
//!
//! A learned host is tunnelled for **that client address only**, for
//! `tls.learned_passthrough_ttl`: one passenger's pinned app (or a hostile client refusing on
//! purpose) does not change what anyone else gets. The list is bounded
//! ([`LEARNED_MAX`] pairs; the least recently learned or used go first) and persisted as
//! `address host expiry` lines, written atomically.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lru::LruCache;

/// Most (client, host) pairs remembered.
pub const LEARNED_MAX: usize = 4096;

/// What interception needs: the leaf minting, the host lists.
pub struct Tls {
    pub intercept: bool,
    pub ca: Arc<certs::Ca>,
    pub leaves: certs::Leaves,
    passthrough: Vec<String>,
    learned: Learned,
}

impl Tls {
    pub fn new(
        intercept: bool,
        ca: Arc<certs::Ca>,
        passthrough: Vec<String>,
        learned_file: PathBuf,
        learned_ttl: Duration,
    ) -> Self {
        Self {
            intercept,
            leaves: certs::Leaves::new(ca.clone(), 1000),
            ca,
            passthrough: passthrough
                .into_iter()
                .map(|p| p.to_ascii_lowercase())
                .collect(),
            learned: Learned::load(learned_file, learned_ttl, LEARNED_MAX),
        }
    }

    /// True when `host` must be tunnelled blindly for `client`: configured, or learned
    /// from this client.
    pub fn is_passthrough(&self, host: &str, client: IpAddr) -> bool {
        !self.intercept
            || matches_any(&self.passthrough, host)
            || self.learned.contains(client, host)
    }

    /// Records that `client` refused our certificate for `host`.
    pub fn learn(&self, client: IpAddr, host: &str) {
        self.learned.add(client, host)
    }

    /// Learned (client, host) pairs with expiry (unix secs).
    pub fn learned(&self) -> Vec<(IpAddr, String, u64)> {
        self.learned.list()
    }
}

/// `"host"` exactly, `"*.domain"` its subdomains, `".domain"` the domain and subdomains.
pub fn matches_any(patterns: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    patterns.iter().any(|p| {
        if let Some(d) = p.strip_prefix("*.") {
            host.ends_with(&format!(".{d}"))
        } else if let Some(d) = p.strip_prefix('.') {
            host == d || host.ends_with(&format!(".{d}"))
        } else {
            host == *p
        }
    })
}

type Pairs = LruCache<(IpAddr, String), u64>;

/// The learned-passthrough list.
struct Learned {
    file: PathBuf,
    ttl: Duration,
    // std's lock: nothing awaits while it is held (the file is written after it is released).
    pairs: Mutex<Pairs>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn key(client: IpAddr, host: &str) -> (IpAddr, String) {
    (
        client.to_canonical(),
        host.trim_end_matches('.').to_ascii_lowercase(),
    )
}

impl Learned {
    fn load(file: PathBuf, ttl: Duration, max: usize) -> Self {
        let now = now_secs();
        let mut pairs = LruCache::new(NonZeroUsize::new(max.max(1)).unwrap_or(NonZeroUsize::MIN));
        // Oldest first, so that the newest end up most recent. Lines of the earlier
        // `host expiry` format (global) are dropped: they named no client.
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let mut rows: Vec<(IpAddr, String, u64)> = text
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let ip: IpAddr = it.next()?.parse().ok()?;
                let host = it.next()?.to_string();
                let t: u64 = it.next()?.parse().ok()?;
                (t > now).then_some((ip, host, t))
            })
            .collect();
        rows.sort_by_key(|r| r.2);
        for (ip, host, t) in rows {
            pairs.put(key(ip, &host), t);
        }
        Self {
            file,
            ttl,
            pairs: Mutex::new(pairs),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pairs> {
        self.pairs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn contains(&self, client: IpAddr, host: &str) -> bool {
        let k = key(client, host);
        let mut pairs = self.lock();
        match pairs.get(&k) {
            Some(t) if *t > now_secs() => true,
            Some(_) => {
                pairs.pop(&k);
                false
            }
            None => false,
        }
    }

    fn list(&self) -> Vec<(IpAddr, String, u64)> {
        let mut v: Vec<_> = self
            .lock()
            .iter()
            .map(|((ip, h), t)| (*ip, h.clone(), *t))
            .collect();
        v.sort();
        v
    }

    fn add(&self, client: IpAddr, host: &str) {
        let text = {
            let mut pairs = self.lock();
            pairs.put(key(client, host), now_secs() + self.ttl.as_secs());
            pairs
                .iter()
                .map(|((ip, h), t)| format!("{ip} {h} {t}\n"))
                .collect::<String>()
        };
        let tmp = self.file.with_extension("tmp");
        let res = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.file));
        if let Err(e) = res {
            tracing::warn!(file = %self.file.display(), "could not persist learned passthrough: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passthrough_patterns() {
        let p: Vec<String> = vec![
            "bank.example".into(),
            "*.pinned.example".into(),
            ".all.example".into(),
        ];
        assert!(matches_any(&p, "bank.example"));
        assert!(matches_any(&p, "BANK.example."));
        assert!(!matches_any(&p, "www.bank.example"));
        assert!(matches_any(&p, "api.pinned.example"));
        assert!(!matches_any(&p, "pinned.example"));
        assert!(matches_any(&p, "all.example"));
        assert!(matches_any(&p, "x.y.all.example"));
        assert!(!matches_any(&p, "notall.example"));
    }

    #[test]
    fn learned_hosts_are_per_client_bounded_and_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("learned.txt");
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        let b: IpAddr = "10.0.0.3".parse().unwrap();
        let l = Learned::load(file.clone(), Duration::from_secs(60), 3);
        l.add(a, "Pinned.example");
        assert!(l.contains(a, "pinned.example"));
        assert!(
            !l.contains(b, "pinned.example"),
            "another client still intercepted"
        );
        for h in ["x1.example", "x2.example", "x3.example"] {
            l.add(b, h);
        }
        assert!(
            !l.contains(a, "pinned.example"),
            "the oldest pair was dropped"
        );
        assert_eq!(l.list().len(), 3);
        let again = Learned::load(file, Duration::from_secs(60), 3);
        assert!(again.contains(b, "x3.example"));
        assert!(!again.contains(a, "pinned.example"));
    }
}
