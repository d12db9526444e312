//! Attestations: what binds a URL to bytes (DESIGN.md, "The mesh: trust and privacy").
//!
//! BLAKE3 proves that bytes match a hash; it cannot prove that the hash is what the origin
//! sent for a URL. So the device that fetched a response from the origin signs, with its
//! endpoint key, a [`Claim`]: URL key, variant, status, headers, body hash, size and fetch
//! time. The attestation travels with the entry from peer to peer; trust is placed in the
//! signer, never in the peer relaying it. It also carries, per group of the signer, a MAC
//! that any member of that group can check ([`GroupProof`]): a device can trust an entry
//! signed by a member it never met.
//!
//! [`origin_digest`] parses `Content-Digest` / `Repr-Digest` (RFC 9530, sha-256 or
//! sha-512). A digest binds a body only when this device received it from the origin
//! itself: inside an attestation it is the signer's word like everything else.

use iroh::{PublicKey, SecretKey, Signature};
use serde::{Deserialize, Serialize};

use crate::group::{mac_eq, Group, GroupId};

/// Domain separation: a signature over a claim can never be taken for anything else.
const SIGN_CONTEXT: &[u8] = b"meshcache attestation v1\0";
/// Attestations larger than this are refused (headers are bounded by the proxy anyway).
pub const MAX_ATTESTATION: usize = 64 * 1024;
const CLAIM_VERSION: u8 = 1;

/// What the signer states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub version: u8,
    pub signer: [u8; 32],
    /// The normalized URL ([`cache::key::primary_key`]).
    pub key: String,
    /// `Vary` names and the variant key of the request the response was fetched for.
    pub vary: Vec<String>,
    pub variant: String,
    pub status: u16,
    /// End-to-end response headers as the origin sent them (hop-by-hop removed).
    pub headers: Vec<(String, Vec<u8>)>,
    pub hash: [u8; 32],
    pub size: u64,
    /// When the response was received from the origin (ms since the Unix epoch).
    pub fetched_at_ms: u64,
}

/// A MAC proving that the signer knows the secret of group `group`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupProof {
    pub group: GroupId,
    pub mac: [u8; 32],
}

/// A signed claim, as stored in the index and sent to peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// The postcard encoding of the [`Claim`]: signed as is, so nobody re-encodes it.
    pub claim: Vec<u8>,
    pub signature: Vec<u8>,
    pub groups: Vec<GroupProof>,
}

/// Why an attestation was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttestError {
    #[error("malformed attestation")]
    Malformed,
    #[error("attestation is larger than {MAX_ATTESTATION} bytes")]
    TooLarge,
    #[error("unsupported attestation version {0}")]
    Version(u8),
    #[error("bad signature")]
    BadSignature,
}

impl Attestation {
    /// Signs `claim` (whose `signer` must be `key`'s public key) and adds a proof for each
    /// of `groups`.
    pub fn sign(key: &SecretKey, claim: &Claim, groups: &[Group]) -> Vec<u8> {
        let bytes = postcard::to_stdvec(claim).unwrap_or_default();
        let mut msg = SIGN_CONTEXT.to_vec();
        msg.extend_from_slice(&bytes);
        let signature = key.sign(&msg).to_bytes().to_vec();
        let digest = *blake3::hash(&bytes).as_bytes();
        let groups = groups
            .iter()
            .map(|g| GroupProof {
                group: g.id(),
                mac: g.attest_mac(&claim.signer, &digest),
            })
            .collect();
        postcard::to_stdvec(&Attestation {
            claim: bytes,
            signature,
            groups,
        })
        .unwrap_or_default()
    }

    /// Decodes and checks the signature; returns the claim it vouches for.
    pub fn verify(bytes: &[u8]) -> Result<(Attestation, Claim), AttestError> {
        if bytes.len() > MAX_ATTESTATION {
            return Err(AttestError::TooLarge);
        }
        let a: Attestation = postcard::from_bytes(bytes).map_err(|_| AttestError::Malformed)?;
        let claim: Claim = postcard::from_bytes(&a.claim).map_err(|_| AttestError::Malformed)?;
        if claim.version != CLAIM_VERSION {
            return Err(AttestError::Version(claim.version));
        }
        let signer = PublicKey::from_bytes(&claim.signer).map_err(|_| AttestError::BadSignature)?;
        let sig =
            <[u8; 64]>::try_from(a.signature.as_slice()).map_err(|_| AttestError::BadSignature)?;
        let mut msg = SIGN_CONTEXT.to_vec();
        msg.extend_from_slice(&a.claim);
        signer
            .verify(&msg, &Signature::from_bytes(&sig))
            .map_err(|_| AttestError::BadSignature)?;
        Ok((a, claim))
    }

    /// The fetch time in an attestation this device stored itself (its own store is
    /// trusted: the signature was checked when the entry came in, or made here). Not for
    /// bytes from the network.
    pub fn stored_fetched_at_ms(bytes: &[u8]) -> Option<u64> {
        let a: Attestation = postcard::from_bytes(bytes).ok()?;
        let claim: Claim = postcard::from_bytes(&a.claim).ok()?;
        Some(claim.fetched_at_ms)
    }

    /// True when one of the signer's group proofs checks with one of `groups`.
    pub fn signed_by_member(&self, claim: &Claim, groups: &[Group]) -> bool {
        let digest = *blake3::hash(&self.claim).as_bytes();
        self.groups.iter().any(|p| {
            groups
                .iter()
                .any(|g| g.id() == p.group && mac_eq(&g.attest_mac(&claim.signer, &digest), &p.mac))
        })
    }
}

impl Claim {
    pub fn new_v1(signer: [u8; 32], key: &str, entry: &cache::Entry, fetched_at_ms: u64) -> Self {
        Claim {
            version: CLAIM_VERSION,
            signer,
            key: key.to_string(),
            vary: entry.vary.clone(),
            variant: entry.variant.clone(),
            status: entry.status,
            headers: entry.headers.clone(),
            hash: entry.hash,
            size: entry.len,
            fetched_at_ms,
        }
    }
}

/// An origin-provided digest of the body (RFC 9530): algorithm and expected bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginDigest {
    pub algorithm: &'static ring::digest::Algorithm,
    pub expected: Vec<u8>,
}

/// The strongest `Content-Digest` / `Repr-Digest` we can check (sha-512, then sha-256).
/// Only an identity-encoded body makes `Repr-Digest` equal to the content's digest, so
/// `Repr-Digest` is used only without `Content-Encoding`.
pub fn origin_digest(headers: &[(String, Vec<u8>)]) -> Option<OriginDigest> {
    use base64::Engine;
    let encoded = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-encoding"));
    let mut best: Option<OriginDigest> = None;
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        let usable = name == "content-digest" || (name == "repr-digest" && !encoded);
        if !usable {
            continue;
        }
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        for member in value.split(',') {
            let Some((alg, rest)) = member.trim().split_once('=') else {
                continue;
            };
            let algorithm = match alg.trim().to_ascii_lowercase().as_str() {
                "sha-512" => &ring::digest::SHA512,
                "sha-256" => &ring::digest::SHA256,
                _ => continue,
            };
            let b64 = rest.trim().trim_start_matches(':').trim_end_matches(':');
            let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(b64) else {
                continue;
            };
            if expected.len() != algorithm.output_len() {
                continue;
            }
            let better = match &best {
                None => true,
                Some(b) => algorithm.output_len() > b.algorithm.output_len(),
            };
            if better {
                best = Some(OriginDigest {
                    algorithm,
                    expected,
                });
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(signer: &SecretKey) -> Claim {
        Claim {
            version: CLAIM_VERSION,
            signer: *signer.public().as_bytes(),
            key: "http://example.com/a".into(),
            vary: vec![],
            variant: String::new(),
            status: 200,
            headers: vec![("cache-control".into(), b"max-age=60".to_vec())],
            hash: [7; 32],
            size: 1234,
            fetched_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn a_signed_claim_verifies_and_any_change_breaks_it() {
        let key = SecretKey::generate();
        let c = claim(&key);
        let bytes = Attestation::sign(&key, &c, &[]);
        let (_, got) = Attestation::verify(&bytes).unwrap();
        assert_eq!(got, c);
        // Tampering with the claim (here: the hash) breaks the signature.
        let mut a: Attestation = postcard::from_bytes(&bytes).unwrap();
        let mut forged = c.clone();
        forged.hash = [8; 32];
        a.claim = postcard::to_stdvec(&forged).unwrap();
        let tampered = postcard::to_stdvec(&a).unwrap();
        assert_eq!(
            Attestation::verify(&tampered).unwrap_err(),
            AttestError::BadSignature
        );
        // Claiming another signer breaks it too.
        let other = SecretKey::generate();
        let mut stolen = c.clone();
        stolen.signer = *other.public().as_bytes();
        let mut a: Attestation = postcard::from_bytes(&bytes).unwrap();
        a.claim = postcard::to_stdvec(&stolen).unwrap();
        assert!(Attestation::verify(&postcard::to_stdvec(&a).unwrap()).is_err());
        assert_eq!(
            Attestation::verify(b"junk").unwrap_err(),
            AttestError::Malformed
        );
    }

    #[test]
    fn group_proofs_check_only_with_the_group() {
        let key = SecretKey::generate();
        let g = Group::generate().unwrap();
        let other = Group::generate().unwrap();
        let c = claim(&key);
        let bytes = Attestation::sign(&key, &c, std::slice::from_ref(&g));
        let (a, c) = Attestation::verify(&bytes).unwrap();
        assert!(a.signed_by_member(&c, std::slice::from_ref(&g)));
        assert!(!a.signed_by_member(&c, std::slice::from_ref(&other)));
        let unsigned = Attestation::sign(&key, &c, &[]);
        let (a, c) = Attestation::verify(&unsigned).unwrap();
        assert!(!a.signed_by_member(&c, &[g]));
    }

    #[test]
    fn origin_digests_are_parsed() {
        use base64::Engine;
        let body = b"hello";
        let d = ring::digest::digest(&ring::digest::SHA256, body);
        let b64 = base64::engine::general_purpose::STANDARD.encode(d.as_ref());
        let h = vec![(
            "Content-Digest".to_string(),
            format!("unknown=:AAAA:, sha-256=:{b64}:").into_bytes(),
        )];
        let got = origin_digest(&h).unwrap();
        assert_eq!(got.expected, d.as_ref());
        // Repr-Digest of an encoded representation is not the content's digest.
        let h = vec![
            (
                "repr-digest".to_string(),
                format!("sha-256=:{b64}:").into_bytes(),
            ),
            ("content-encoding".to_string(), b"gzip".to_vec()),
        ];
        assert!(origin_digest(&h).is_none());
        assert!(origin_digest(&[("content-digest".into(), b"sha-256=:short:".to_vec())]).is_none());
    }
}
