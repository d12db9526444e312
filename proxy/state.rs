//! What every request handler shares: the cache, the origin client, counters.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use http::{request, Request, Response, Version};
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
        self.origin.send(Request::from_parts(parts, body)).await
    }
}
