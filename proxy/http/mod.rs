//! Stateless HTTP helpers: the body type ([`body`]), header plumbing ([`headers`]:
//! hop-by-hop, `Via`), `Range` parsing ([`range`]) and building a response from a stored or
//! arriving body ([`respond`]: conditionals, HEAD, ranges, multipart).

pub(crate) mod body;
pub(crate) mod headers;
pub(crate) mod range;
pub(crate) mod respond;

pub use body::{empty, full, stream_body, text, Body, BoxError};

/// A random number, good enough for identifiers (multipart boundaries, the `Via`
/// pseudonym, spool names), not for secrets: std's per-process random hash keys, mixed with
/// the time.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
