//! What the index keeps for one stored response (one variant of one URL).

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_cache_semantics::CachePolicy;
use serde::{Deserialize, Serialize};

/// One stored variant: the policy that decides its freshness, the response head, and the
/// content address of its body in the body store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Unique within this cache; names the variant in `purge` and logs.
    pub id: u64,
    /// [`crate::key::variant_key`] of the request that stored it.
    pub variant: String,
    /// The `Vary` header names of the response (lower case, sorted).
    pub vary: Vec<String>,
    /// RFC 9111 state (response time, directives, validators).
    pub policy: CachePolicy,
    pub status: u16,
    /// End-to-end response headers as stored (hop-by-hop fields already removed).
    pub headers: Vec<(String, Vec<u8>)>,
    /// BLAKE3 hash of the body: its address in the body store.
    pub hash: [u8; 32],
    pub len: u64,
    pub stored_at_ms: u64,
    /// When it stops being fresh (ms since epoch); staleness is measured from here.
    pub fresh_until_ms: u64,
    pub last_used_ms: u64,
    /// May be announced to and served to peers (DESIGN.md, "Never shared").
    pub shareable: bool,
    /// The signed binding of this URL to these bytes (made by the device that fetched it
    /// from the origin; see the mesh crate). Only shareable entries carry one.
    pub attestation: Option<Vec<u8>>,
    /// `headers` as a map, built on first use and kept: a stored entry is served many
    /// times, and parsing its headers again for every hit was a measurable part of a hit's
    /// cost. Not stored (rebuilt after a load); change `headers` with
    /// [`Entry::set_headers`], which forgets it.
    #[serde(skip)]
    pub head_map: HeadMap,
}

/// The lazily built header map of an [`Entry`].
#[derive(Debug, Clone, Default)]
pub struct HeadMap(std::sync::OnceLock<HeaderMap>);

impl Entry {
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK)
    }

    /// The stored response headers as a map.
    pub fn header_map(&self) -> HeaderMap {
        self.head_map
            .0
            .get_or_init(|| Self::map_of(&self.headers))
            .clone()
    }

    /// Stored headers as a map (fields that do not parse are left out).
    pub fn map_of(headers: &[(String, Vec<u8>)]) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                map.append(n, v);
            }
        }
        map
    }

    /// Replaces the stored headers (and forgets the map built from the old ones).
    pub fn set_headers(&mut self, headers: Vec<(String, Vec<u8>)>) {
        self.headers = headers;
        self.head_map = HeadMap::default();
    }

    pub fn headers_from_map(map: &HeaderMap) -> Vec<(String, Vec<u8>)> {
        map.iter()
            .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    pub fn hash_hex(&self) -> String {
        iroh_blobs::Hash::from_bytes(self.hash).to_hex()
    }
}
