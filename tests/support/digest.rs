//! Digests the tests state or expect: SHA-256 as bytes, hex and base64, the generated body.

use base64::Engine;

/// The generated body of `len` bytes (what `Reply::generated(len)` sends).
pub fn generated(len: u64) -> Vec<u8> {
    (0..len).map(super::pattern).collect()
}

pub fn sha256(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .to_vec()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// An apt-style `by-hash` path under `prefix` for `body`.
pub fn by_hash(prefix: &str, body: &[u8]) -> String {
    format!("{prefix}/by-hash/SHA256/{}", hex(&sha256(body)))
}

/// An RFC 9530 `Content-Digest` / `Repr-Digest` value for `body` (`sha-256=:<base64>:`).
pub fn digest_field(body: &[u8]) -> String {
    format!("sha-256=:{}:", b64(&sha256(body)))
}
