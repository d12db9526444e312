//! HTTPS interception: the CONNECT side of the local CA.
//!
//! A CONNECT to a host that is not on the passthrough list is answered 200, then the
//! client's TLS handshake is completed with a leaf certificate for the name it asked for
//! (SNI, else the CONNECT host), minted by `certs`; the decrypted stream is served as
//! HTTP/1.1 or HTTP/2 (ALPN) and every request goes through the same stack under its
//! `https://` URL. A client that rejects our certificate (a pinned app) has its host
//! learned: it is tunnelled blindly from then on, for `learned_passthrough_ttl`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::uri::Authority;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::AlertDescription;
use tokio_rustls::LazyConfigAcceptor;

use crate::state::State;

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
            learned: Learned::load(learned_file, learned_ttl),
        }
    }

    /// True when `host` must be tunnelled blindly: configured, or learned.
    pub fn is_passthrough(&self, host: &str) -> bool {
        !self.intercept || matches_any(&self.passthrough, host) || self.learned.contains(host)
    }

    /// Hosts learned from clients that refused our certificate, with expiry (unix secs).
    pub fn learned(&self) -> Vec<(String, u64)> {
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

/// The learned-passthrough list, persisted as `host expiry` lines (written atomically).
struct Learned {
    file: PathBuf,
    ttl: Duration,
    hosts: Mutex<HashMap<String, u64>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Learned {
    fn load(file: PathBuf, ttl: Duration) -> Self {
        let now = now_secs();
        let hosts = std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (h, t) = l.split_once(' ')?;
                let t: u64 = t.trim().parse().ok()?;
                (t > now).then(|| (h.to_string(), t))
            })
            .collect();
        Self {
            file,
            ttl,
            hosts: Mutex::new(hosts),
        }
    }

    fn contains(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts.get(&host).is_some_and(|t| *t > now_secs())
    }

    fn list(&self) -> Vec<(String, u64)> {
        let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = hosts.iter().map(|(h, t)| (h.clone(), *t)).collect();
        v.sort();
        v
    }

    fn add(&self, host: &str) {
        let text = {
            let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
            hosts.insert(host.to_ascii_lowercase(), now_secs() + self.ttl.as_secs());
            hosts
                .iter()
                .map(|(h, t)| format!("{h} {t}\n"))
                .collect::<String>()
        };
        let tmp = self.file.with_extension("tmp");
        let res = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.file));
        if let Err(e) = res {
            tracing::warn!(file = %self.file.display(), "could not persist learned passthrough: {e}");
        }
    }
}

/// Was the handshake failure the client refusing our certificate?
fn client_refused_certificate(e: &std::io::Error) -> bool {
    let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return false;
    };
    matches!(
        inner,
        rustls::Error::AlertReceived(
            AlertDescription::UnknownCA
                | AlertDescription::BadCertificate
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::AccessDenied
        )
    )
}

/// Completes the client's TLS handshake on a stream (an upgraded CONNECT, or a
/// redirected connection) and serves the decrypted requests for `authority`.
pub async fn intercept<IO>(state: Arc<State>, peer: SocketAddr, io: IO, authority: Authority)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Some(tls) = state.tls.as_ref() else {
        return;
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = match tokio::time::timeout(Duration::from_secs(10), acceptor).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%authority, "not a TLS ClientHello: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%authority, "no ClientHello within 10 s");
            return;
        }
    };
    let name = start
        .client_hello()
        .server_name()
        .map(str::to_owned)
        .unwrap_or_else(|| host.clone());
    let config = match tls.leaves.server_config(&name, &[b"h2", b"http/1.1"]) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%name, "cannot mint a certificate: {e}");
            return;
        }
    };
    let stream = match start.into_stream(config).await {
        Ok(s) => s,
        Err(e) => {
            if client_refused_certificate(&e) {
                tls.learned.add(&host);
                tracing::warn!(%host, "the client refused our certificate (pinned app?): tunnelling {host} blindly from now on");
            } else {
                tracing::debug!(%authority, "TLS handshake with the client failed: {e}");
            }
            return;
        }
    };
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let state = state.clone();
        let authority = authority.clone();
        async move {
            // Inside the tunnel requests are origin-form (HTTP/1.1) or carry :authority
            // (HTTP/2); the tunnel's target is where they go, under https.
            let pq = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            if let Ok(uri) = format!("https://{authority}{pq}").parse() {
                *req.uri_mut() = uri;
            }
            Ok::<_, std::convert::Infallible>(crate::edge::handle_boxed(state, peer, req).await)
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
        .await
    {
        tracing::debug!("intercepted connection: {e}");
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
}
