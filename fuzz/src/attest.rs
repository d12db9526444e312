//! Target `attest`: bytes → `mesh::attest::Attestation::verify` and
//! `mesh::attest::origin_digest`.
//!
//! Input: a mode byte, then: (0) attestation bytes as a peer sends them; (1) the parts of
//! a claim, a signing key, groups and tampering positions, built with `arbitrary`, signed,
//! then tampered with; (2) `name: value` header lines for `origin_digest`.
//!
//! Invariants: no panic; a verified attestation re-encodes to bytes that verify again to
//! the same claim; a signed claim verifies to itself and its group proofs check with
//! its groups only; tampered bytes never verify to another claim (no forgery); an origin
//! digest has the length of its algorithm, and with `Content-Encoding` comes from
//! `Content-Digest`.

use std::sync::atomic::{AtomicU64, Ordering};

use arbitrary::{Result as ArbResult, Unstructured};
use iroh::SecretKey;
use mesh::attest::{origin_digest, AttestError, Attestation, Claim, MAX_ATTESTATION};
use mesh::group::Group;

use crate::mutate::Shape;
use crate::tickets::group_from_secret;
use crate::{note, Target};

pub const TARGET: Target = Target {
    name: "attest",
    run,
    seeds,
    shape: Shape {
        dictionary: &[
            "content-digest: ",
            "repr-digest: ",
            "content-encoding: gzip\n",
            "sha-256=:",
            "sha-512=:",
            "=:",
            ":",
            ",",
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            "z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==",
        ],
        text: false,
        max_len: 8192,
    },
    stats,
};

static VERIFIED: AtomicU64 = AtomicU64::new(0);
static TRAILING: AtomicU64 = AtomicU64::new(0);

fn stats() -> String {
    format!(
        "verified {} attestations from raw bytes, {} of them with trailing bytes (accepted)",
        VERIFIED.load(Ordering::Relaxed),
        TRAILING.load(Ordering::Relaxed)
    )
}

/// A fixed signing key (seeds must be the same on every run).
pub fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes(&[n; 32])
}

pub fn example_claim(signer: &SecretKey) -> Claim {
    Claim {
        version: 1,
        signer: *signer.public().as_bytes(),
        key: "http://example.com/a".into(),
        vary: vec!["accept-encoding".into()],
        variant: "accept-encoding=gzip\n".into(),
        status: 200,
        headers: vec![
            ("cache-control".into(), b"max-age=60".to_vec()),
            (
                "content-digest".into(),
                b"sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:".to_vec(),
            ),
        ],
        hash: [7; 32],
        size: 1234,
        fetched_at_ms: 1_700_000_000_000,
    }
}

pub fn seeds() -> Vec<Vec<u8>> {
    let k = key(1);
    let c = example_claim(&k);
    let g = group_from_secret(&[3; 32]);
    let mut out = Vec::new();
    for groups in [vec![], vec![g]] {
        let mut v = vec![0];
        v.extend(Attestation::sign(&k, &c, &groups));
        out.push(v);
    }
    let mut big = c.clone();
    big.size = u64::MAX;
    big.fetched_at_ms = u64::MAX;
    big.version = 2;
    let mut v = vec![0];
    v.extend(Attestation::sign(&k, &big, &[]));
    out.push(v);
    out.push(b"\x00junk".to_vec());
    let mut structured = vec![1];
    structured.extend((0..200u32).map(|i| (i * 73 % 251) as u8));
    out.push(structured);
    out.push(b"\x02content-digest: sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:, sha-512=:z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==:\nrepr-digest: sha-256=:AAAA:\ncontent-encoding: gzip\n".to_vec());
    out
}

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => check_bytes(rest),
        1 => {
            let _ = signed(&mut Unstructured::new(rest));
        }
        _ => check_digest(rest),
    }
}

/// Checks attestation bytes from a peer.
pub fn check_bytes(bytes: &[u8]) {
    let (a, claim) = match Attestation::verify(bytes) {
        Ok(v) => v,
        Err(e) => {
            note(match e {
                AttestError::Malformed => 1,
                AttestError::TooLarge => 2,
                AttestError::Version(_) => 3,
                AttestError::BadSignature => 4,
            });
            return;
        }
    };
    note(5);
    VERIFIED.fetch_add(1, Ordering::Relaxed);
    assert_eq!(claim.version, 1);
    let encoded = postcard::to_stdvec(&a).expect("encodes");
    if encoded.len() < bytes.len() {
        TRAILING.fetch_add(1, Ordering::Relaxed);
    }
    let (a2, c2) = Attestation::verify(&encoded).expect("a re-encoded attestation verifies");
    assert_eq!(a2, a);
    assert_eq!(c2, claim);
    let _ = a.signed_by_member(&claim, &[group_from_secret(&[3; 32])]);
    let _ = origin_digest(&claim.headers);
}

fn headers(u: &mut Unstructured) -> ArbResult<Vec<(String, Vec<u8>)>> {
    let n = u.int_in_range(0..=6)?;
    (0..n)
        .map(|_| {
            let name = match u.int_in_range(0..=3)? {
                0 => "content-digest".to_string(),
                1 => "cache-control".to_string(),
                _ => u.arbitrary()?,
            };
            Ok((name, u.arbitrary()?))
        })
        .collect()
}

/// Signs a claim built from `u`, verifies it, then tampers with it.
fn signed(u: &mut Unstructured) -> ArbResult<()> {
    let k = SecretKey::from_bytes(&u.arbitrary()?);
    let claim = Claim {
        version: 1,
        signer: *k.public().as_bytes(),
        key: u.arbitrary()?,
        vary: u.arbitrary()?,
        variant: u.arbitrary()?,
        status: u.arbitrary()?,
        headers: headers(u)?,
        hash: u.arbitrary()?,
        size: u.arbitrary()?,
        fetched_at_ms: u.arbitrary()?,
    };
    let n = u.int_in_range(0..=2)?;
    let groups: Vec<Group> = (0..n)
        .map(|_| u.arbitrary().map(|s: [u8; 32]| group_from_secret(&s)))
        .collect::<ArbResult<_>>()?;
    let bytes = Attestation::sign(&k, &claim, &groups);
    if bytes.len() > MAX_ATTESTATION {
        assert_eq!(Attestation::verify(&bytes), Err(AttestError::TooLarge));
        return Ok(());
    }
    let (a, c) = Attestation::verify(&bytes).expect("a signed claim verifies");
    assert_eq!(c, claim, "verified to another claim");
    assert_eq!(a.signed_by_member(&c, &groups), !groups.is_empty());
    let stranger = group_from_secret(&[0xee; 32]);
    if !groups.contains(&stranger) {
        assert!(!a.signed_by_member(&c, &[stranger]));
    }
    note(50 + groups.len() as u64);
    let flips = u.int_in_range(1..=4)?;
    let mut tampered = bytes.clone();
    for _ in 0..flips {
        let i = u.choose_index(tampered.len())?;
        tampered[i] ^= u.int_in_range(1..=255)?;
    }
    if let Ok((a2, c2)) = Attestation::verify(&tampered) {
        note(60);
        assert_eq!(c2, claim, "tampered bytes verified to another claim");
        assert_eq!(a2.claim, a.claim, "the signed bytes changed");
    }
    Ok(())
}

/// Checks `origin_digest` on `name: value` lines (values as raw bytes).
fn check_digest(data: &[u8]) {
    let headers: Vec<(String, Vec<u8>)> = data
        .split(|&b| b == b'\n')
        .filter_map(|l| {
            let i = l.iter().position(|&b| b == b':')?;
            Some((
                String::from_utf8_lossy(&l[..i]).trim().to_string(),
                l[i + 1..].trim_ascii().to_vec(),
            ))
        })
        .collect();
    let d = origin_digest(&headers);
    assert_eq!(d, origin_digest(&headers), "not deterministic");
    let Some(d) = d else {
        note(70);
        return;
    };
    note(71 + d.algorithm.output_len() as u64);
    assert_eq!(d.expected.len(), d.algorithm.output_len());
    let encoded = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-encoding"));
    if encoded {
        assert!(
            headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-digest")),
            "Repr-Digest used for an encoded body"
        );
    }
}
