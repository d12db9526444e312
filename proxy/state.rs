//! What every request handler shares: the cache, the origin client and destination policy,
//! interception, the mesh, the listeners' options and shutdown signal, counters, latency
//! histograms.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;

use http::{request, Method, Request, Response, Version};
use hyper::body::Incoming;

use cache::Cache;

use crate::client::Client;
use crate::client::Permits;
use crate::http::headers::Via;
use crate::http::Body;
use crate::origin::destination::Destinations;
use crate::origin::{Origin, OriginError};
use crate::settings::ServerOptions;
use crate::tls::Tls;

/// Request and byte counters for the status page and `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    /// Requests by how they were answered (`listen/edge.rs`).
    pub outcomes: Outcomes,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub bytes_to_clients: AtomicU64,
    /// Bytes to clients by where the body came from.
    pub bytes_from_cache: AtomicU64,
    pub bytes_from_peers: AtomicU64,
    pub bytes_from_origin: AtomicU64,
    pub peer_hits: AtomicU64,
    pub errors: AtomicU64,
}

/// Requests by how they were answered, under the access log's phase names
/// (`Phase::as_str`: `hit`, `miss`, `peer`, `revalidated`, `bypass`, …), counted when the
/// response head is ready. A short list behind a lock rather than one field per phase: a
/// new phase is counted without a change here (a dozen names; the lock is held for a scan).
#[derive(Debug, Default)]
pub struct Outcomes(std::sync::Mutex<Vec<(&'static str, u64)>>);

impl Outcomes {
    pub fn add(&self, phase: &'static str) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match all.iter_mut().find(|(p, _)| *p == phase) {
            Some((_, n)) => *n += 1,
            None => all.push((phase, 1)),
        }
    }

    /// Every phase seen so far and its count, by name.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        all.sort_unstable();
        all
    }
}

/// Latency histograms for `/metrics`: with [`Outcomes`], the only figures kept for it
/// (every other metric is read at scrape time from the counters above, the cache, the mesh
/// and feed sync). Seconds.
#[derive(Debug)]
pub struct Latency {
    /// From sending a fill leader's request to the origin to its response head
    /// (`flow/lead.rs`: misses and revalidations; failures are not timed).
    pub origin: Histogram,
    /// Asking nearby devices on a miss (`flow/miss.rs`, `Mesh::find`): lookups, then until
    /// a peer answered the body's transfer (its first bytes), or until no peer had it.
    pub peer_found: Histogram,
    pub peer_none: Histogram,
}

/// Origins answer in milliseconds to tens of seconds (`origin.response_header_timeout`).
const ORIGIN_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Peers on the LAN answer within `mesh.lookup_timeout` (50 ms), a peer still fetching
/// within `mesh.peer_fill_wait` (30 s).
const PEER_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

impl Default for Latency {
    fn default() -> Self {
        Latency {
            origin: Histogram::new(ORIGIN_BUCKETS),
            peer_found: Histogram::new(PEER_BUCKETS),
            peer_none: Histogram::new(PEER_BUCKETS),
        }
    }
}

impl Latency {
    /// Records a peer lookup that started at `asked`.
    pub fn peer(&self, asked: Instant, found: bool) {
        let h = if found {
            &self.peer_found
        } else {
            &self.peer_none
        };
        h.observe(asked.elapsed().as_secs_f64());
    }
}

pub struct State {
    pub cache: Cache,
    pub origin: Origin,
    pub via: Via,
    pub counters: Counters,
    pub latency: Latency,
    pub started: Instant,
    pub listen: SocketAddr,
    pub access_log: bool,
    /// HTTPS interception; `None` when no CA could be set up.
    pub tls: Option<Tls>,
    /// Nearby devices; `None` when the mesh is off (or could not start).
    pub mesh: Option<mesh::Mesh>,
    /// Why the mesh is off although it is configured on: it could not start.
    pub mesh_error: Option<String>,
    /// Where clients may make the proxy connect.
    pub destinations: Destinations,
    /// The client side's limits (tunnels and interceptions read them too).
    pub server: ServerOptions,
    /// Turns true when the proxy shuts down.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// The connection permits (for the count of open connections).
    pub(crate) permits: Arc<Permits>,
    /// Origins (host and port) that stated a `Content-Digest` / `Repr-Digest` to this
    /// device: only for these does a miss first ask the origin for a `HEAD` (whose digest
    /// lets a stranger send the body). Others never pay the extra round trip.
    pub(crate) digest_hosts: DigestHosts,
    /// Feed sync (its figures for the status page); `None` without subscriptions.
    pub(crate) sync: Option<Arc<SyncFigures>>,
}

/// Origins known to state digests, most recently seen first (bounded).
pub(crate) struct DigestHosts(std::sync::Mutex<lru::LruCache<String, ()>>);

/// Origins remembered as stating digests.
pub(crate) const DIGEST_HOSTS: usize = 1024;

impl Default for DigestHosts {
    fn default() -> Self {
        Self(std::sync::Mutex::new(lru::LruCache::new(
            std::num::NonZeroUsize::new(DIGEST_HOSTS).unwrap(),
        )))
    }
}

impl DigestHosts {
    pub fn saw(&self, uri: &http::Uri) {
        if let Some(a) = uri.authority() {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .put(a.as_str().to_ascii_lowercase(), ());
        }
    }

    pub fn states_digests(&self, uri: &http::Uri) -> bool {
        uri.authority().is_some_and(|a| {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&a.as_str().to_ascii_lowercase())
        })
    }
}

impl State {
    /// Client connections open now (tunnels included).
    pub fn connections(&self) -> usize {
        self.permits.in_use()
    }

    /// Sends a request (already stripped of hop-by-hop fields) to its origin, adding `Via`.
    /// The destination policy is the one of the request's [`Client`] (in its extensions;
    /// without one, the stricter one). GET and HEAD go out without a body (`body` is not
    /// sent) and are repeatable: see [`State::send_idempotent`].
    pub async fn send(
        &self,
        parts: request::Parts,
        body: Body,
    ) -> Result<Response<Incoming>, OriginError> {
        if parts.method == Method::GET || parts.method == Method::HEAD {
            return self.send_idempotent(parts, bytes::Bytes::new()).await;
        }
        self.send_once(parts, body).await
    }

    /// Sends an idempotent request (RFC 9110 9.2.2: GET, HEAD, PUT, DELETE, OPTIONS, TRACE)
    /// whose body is in memory, once more on a fresh connection if a pooled one turns out
    /// to have been closed by the origin meanwhile (servers time idle connections out
    /// sooner than we do; repeating the request is what idempotent allows).
    pub async fn send_idempotent(
        &self,
        parts: request::Parts,
        body: bytes::Bytes,
    ) -> Result<Response<Incoming>, OriginError> {
        let body_of = |b: &bytes::Bytes| {
            if b.is_empty() {
                crate::http::empty()
            } else {
                crate::http::full(b.clone())
            }
        };
        let again = parts.clone();
        match self.send_once(parts, body_of(&body)).await {
            Err(OriginError::Protocol {
                detail,
                dead_connection: true,
            }) => {
                tracing::debug!("origin connection was closed under us ({detail}); retrying once");
                self.send_once(again, body_of(&body)).await
            }
            other => other,
        }
    }

    async fn send_once(
        &self,
        mut parts: request::Parts,
        body: Body,
    ) -> Result<Response<Incoming>, OriginError> {
        let admin = parts.extensions.get::<Client>().is_some_and(|c| c.admin);
        self.via.append(&mut parts.headers);
        parts.version = Version::HTTP_11;
        self.origin
            .send(Request::from_parts(parts, body), admin)
            .await
    }
}

/// Feed sync's figures: written by the engine (`sync/engine.rs`), read by the status page.
#[derive(Debug, Default)]
pub struct SyncFigures {
    /// The day's budget, and what was used of it today.
    pub budget: u64,
    pub used_today: AtomicU64,
    /// Objects prefetched, and prefetches that failed.
    pub fetched: AtomicU64,
    pub failed: AtomicU64,
    /// Per feed, in config order.
    pub feeds: Vec<std::sync::Mutex<FeedStatus>>,
}

/// One feed's state, as `/status.json` shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FeedStatus {
    pub url: String,
    /// Items in the newest version of the document held here.
    pub items_newest: u64,
    /// Media of those items that `media` and `max_item` admit, and how many are here.
    pub media_wanted: u64,
    pub media_held: u64,
    /// Bytes of the document and the media held.
    pub bytes: u64,
    /// Peers the document or media came from.
    pub peers: Vec<String>,
    /// When something last arrived for this feed.
    pub synced_at_unix_ms: Option<u64>,
    /// The newest document any connected peer holds is here, and so is every admitted
    /// media object a connected peer's catalog lists.
    pub up_to_date: bool,
    pub last_error: Option<String>,
}
