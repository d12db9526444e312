//! `meshcache-open/1`: what strangers say to each other. One bidirectional stream per
//! lookup, one request, one answer, framed as `meshcache/1` is (length + postcard, at most
//! [`crate::proto::MAX_MESSAGE`], under a deadline). No handshake: a stranger proves
//! nothing about itself, so nothing it says is taken on its word.
//!
//! A lookup names a tag, never a URL:
//! - [`content_tag`]: derived from a digest the asker got from somewhere the stranger does
//!   not control (the URL, the client, the origin). The answer names the body's BLAKE3
//!   hash and size; the asker checks the bytes against its digest.
//! - [`key_tag`]: derived from the cache key. The answer is attestations, which count only
//!   when signed by someone the asker trusts.
//!
//! A tag hides a URL only from someone who does not already know the URL (a dictionary of
//! public URLs or hashes maps tags back): it keeps URLs off the wire, not from the peer
//! that holds the same object.

use serde::{Deserialize, Serialize};

use cache::certify::Certified;

pub const ALPN: &[u8] = b"meshcache-open/1";

/// The tag a lookup by digest names: BLAKE3 in key-derivation mode over the algorithm's
/// name and the digest (so equal digests under different names never collide).
pub fn content_tag(c: &Certified) -> [u8; 32] {
    let mut m = Vec::with_capacity(16 + c.digest.len());
    m.extend_from_slice(c.alg.name().as_bytes());
    m.push(0);
    m.extend_from_slice(&c.digest);
    blake3::derive_key("meshcache open-mesh v1 content tag", &m)
}

/// The tag a lookup by signer names: derived from the cache key.
pub fn key_tag(key: &str) -> [u8; 32] {
    blake3::derive_key("meshcache open-mesh v1 key tag", key.as_bytes())
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum OpenRequest {
    /// Do you hold a body with this content tag? With `wait_ms`, the asker was told
    /// [`OpenAnswer::Fetching`] and waits up to that long for the download to end.
    Content { tag: [u8; 32], wait_ms: u32 },
    /// Which attestations do you hold for the cache key with this tag?
    Signed { tag: [u8; 32] },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum OpenAnswer {
    NotFound,
    /// A body: its BLAKE3 hash (what the blobs protocol fetches) and size.
    Content {
        hash: [u8; 32],
        size: u64,
    },
    /// Attestations (at most [`crate::proto::MAX_OFFERS`]), as signed.
    Signed(Vec<Vec<u8>>),
    /// Not yet: this device is downloading it from the origin now (ask again with a wait).
    Fetching,
}

#[cfg(test)]
mod tests {
    use super::*;
    use cache::certify::Alg;

    #[test]
    fn tags_differ_by_algorithm_digest_and_kind() {
        let c = |alg, d: u8| Certified {
            rule: "integrity",
            alg,
            digest: vec![d; 32],
        };
        let a = content_tag(&c(Alg::Sha256, 1));
        assert_eq!(a, content_tag(&c(Alg::Sha256, 1)), "deterministic");
        assert_ne!(a, content_tag(&c(Alg::Blake2b256, 1)));
        assert_ne!(a, content_tag(&c(Alg::Sha256, 2)));
        assert_ne!(key_tag("http://a/"), key_tag("http://b/"));
        // The rule that found the digest does not change the tag: the same body found
        // by URL rule, client or origin is the same object.
        let mut r = c(Alg::Sha256, 1);
        r.rule = "apt-by-hash";
        assert_eq!(a, content_tag(&r));
    }

    #[test]
    fn messages_round_trip() {
        for m in [
            OpenRequest::Content {
                tag: [7; 32],
                wait_ms: 5,
            },
            OpenRequest::Signed { tag: [9; 32] },
        ] {
            let b = postcard::to_stdvec(&m).unwrap();
            assert_eq!(postcard::from_bytes::<OpenRequest>(&b).unwrap(), m);
        }
        let a = OpenAnswer::Content {
            hash: [1; 32],
            size: 5,
        };
        let b = postcard::to_stdvec(&a).unwrap();
        assert_eq!(postcard::from_bytes::<OpenAnswer>(&b).unwrap(), a);
    }
}
