//! What every request handler shares: the cache, the origin client, counters.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use http::{request, Method, Request, Response, Version};
use hyper::body::Incoming;

use cache::Cache;

use crate::headers::Via;
use crate::origin::{Origin, OriginError};
use crate::Body;

/// Request and byte counters for the status page.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
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

pub struct State {
    pub cache: Cache,
    pub origin: Origin,
    pub via: Via,
    pub counters: Counters,
    pub started: Instant,
    pub listen: SocketAddr,
    pub access_log: bool,
    /// HTTPS interception; `None` when no CA could be set up.
    pub tls: Option<crate::tls::Tls>,
    /// Nearby devices; `None` when the mesh is off (or could not start).
    pub mesh: Option<mesh::Mesh>,
}

impl State {
    /// Sends a request (already stripped of hop-by-hop fields) to its origin, adding `Via`.
    pub async fn send(
        &self,
        mut parts: request::Parts,
        body: Body,
    ) -> Result<Response<Incoming>, OriginError> {
        self.via.append(&mut parts.headers);
        parts.version = Version::HTTP_11;
        // GET and HEAD go out without a body: if a pooled connection turns out to have
        // been closed by the origin meanwhile (servers time idle connections out sooner
        // than we do), send them once more on a fresh connection.
        let retry =
            (parts.method == Method::GET || parts.method == Method::HEAD).then(|| parts.clone());
        match (
            self.origin.send(Request::from_parts(parts, body)).await,
            retry,
        ) {
            (Err(OriginError::Protocol(msg)), Some(parts)) if stale_connection(&msg) => {
                tracing::debug!("origin connection was closed under us ({msg}); retrying once");
                self.origin
                    .send(Request::from_parts(parts, crate::empty()))
                    .await
            }
            (other, _) => other,
        }
    }
}

/// Errors that mean a reused connection was already dead, not that the origin failed.
fn stale_connection(msg: &str) -> bool {
    let msg = msg.to_ascii_lowercase();
    [
        "connection reset",
        "broken pipe",
        "connection closed before message completed",
    ]
    .iter()
    .any(|m| msg.contains(m))
}
