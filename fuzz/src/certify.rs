//! Target `certify`: request targets (and an `Accept` value) → `cache::certify`, the rule
//! table of URLs that name their content's hash.
//!
//! Input: the first line is the URL, the rest (if any) the `Accept` value, which is also
//! given to the `Meshcache-Integrity` and `Content-Digest` parsers.
//!
//! Invariants: no panic; a certified URL's digest has its algorithm's length; the answer is
//! deterministic; the streaming check accepts the bytes whose hash a by-digest URL names
//! and refuses others (a round trip through the rule); a stated digest (client or origin)
//! has one algorithm and its length.

use cache::certify::{certify, Alg, Check};
use http::{HeaderValue, Uri};

use crate::mutate::Shape;
use crate::{note, Target};

pub const TARGET: Target = Target {
    name: "certify",
    run,
    seeds,
    shape: Shape {
        dictionary: DICTIONARY,
        text: true,
        max_len: 512,
    },
    stats: crate::no_stats,
};

const DICTIONARY: &[&str] = &[
    "/by-hash/SHA256/",
    "/by-hash/SHA512/",
    "/by-hash/MD5Sum/",
    "/v2/",
    "/blobs/sha256:",
    "/manifests/sha512:",
    "files.pythonhosted.org",
    "/packages/",
    "/ipfs/",
    "?format=raw",
    "application/vnd.ipld.raw",
    "/.well-known/meshcache/by-digest/",
    "sha-256/",
    "blake2b-256/",
    "Qm",
    "bafkrei",
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    "%2F",
    "//",
    "sha256-",
    "sha384-",
    "sha512-",
    "sha-256=:",
    "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
];

pub fn seeds() -> Vec<Vec<u8>> {
    [
        "http://deb.debian.org/debian/dists/stable/main/binary-amd64/by-hash/SHA256/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "https://registry-1.docker.io/v2/library/debian/blobs/sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "https://files.pythonhosted.org/packages/ab/cd/0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab/pkg-1.0.tar.gz",
        "http://gw/ipfs/bafkreif2pall7dybz7vecqka3zo24irdwabwdi4wc55jznaq75q7eaavvu?format=raw",
        "http://gw/ipfs/QmRKs2ZfuwvmZA3QAWmCqrGUjV9pxtBUDP3wuc6iVGnjA2\napplication/vnd.ipld.raw",
        "http://h/.well-known/meshcache/by-digest/sha-256/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "http://example.org/ordinary/file.txt",
        "http://example.org/photo.jpg\nsha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0= sha512-x?y",
        "http://example.org/photo.jpg\nsha-256=:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=:, md5=:A:",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (url, accept) = text.split_once('\n').unwrap_or((&text, ""));
    let Ok(uri) = url.parse::<Uri>() else {
        note(1);
        return;
    };
    let accept = HeaderValue::from_str(accept).ok().filter(|a| !a.is_empty());
    stated(accept.as_ref());
    let got = certify(&uri, accept.as_ref());
    assert_eq!(got, certify(&uri, accept.as_ref()), "deterministic");
    let Some(c) = got else {
        note(2);
        return;
    };
    note(3 + c.rule.len() as u64);
    let want = match c.alg {
        Alg::Sha256 | Alg::Blake2b256 => 32,
        Alg::Sha384 => 48,
        Alg::Sha512 => 64,
    };
    assert_eq!(c.digest.len(), want, "{url}: digest length for {:?}", c.alg);
    // A by-digest URL built from these bytes' own hash certifies exactly these bytes.
    let body = data;
    let sha: String = ring_sha256(body);
    let own: Uri = format!("http://h/.well-known/meshcache/by-digest/sha-256/{sha}")
        .parse()
        .unwrap();
    let own = certify(&own, None).expect("a by-digest URL certifies");
    let mut k = Check::new(&own);
    k.update(body);
    assert!(k.finish().is_ok(), "the bytes its URL names");
    let mut k = Check::new(&own);
    k.update(body);
    k.update(b"x");
    assert!(k.finish().is_err(), "one byte more is another body");
}

/// The client's `Meshcache-Integrity` and the origin's `Content-Digest` parsers on the same
/// bytes: whatever they accept has the algorithm's length and one algorithm.
fn stated(value: Option<&HeaderValue>) {
    let Some(v) = value else { return };
    if let Ok(list) = cache::certify::integrity(v) {
        note(40);
        assert!(!list.is_empty());
        assert!(list
            .iter()
            .all(|c| c.alg == list[0].alg && c.rule == "integrity"));
    }
    let mut h = http::HeaderMap::new();
    h.insert("content-digest", v.clone());
    let list = cache::certify::stated_digest(&h);
    if !list.is_empty() {
        note(41);
        assert!(list
            .iter()
            .all(|c| c.alg == list[0].alg && c.header_value().is_some()));
    }
}

fn ring_sha256(body: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
