//! Self-certifying URLs: URLs that name the hash of their own content (the first rung of
//! the open mesh, `docs/mesh.md`). A body fetched for such a URL — from the origin or from
//! a peer — is hashed as it arrives and committed only if it matches; until it does, the
//! last [`HOLD_BACK`] bytes are held back from every reader, so no client ever receives a
//! complete body that does not match its URL. A matching response is immutable by
//! definition: stored and reused even when the origin states no freshness (as many mirrors
//! do), see [`immutable_unless_stated`].
//!
//! The rules are data, versioned by [`RULES_VERSION`]; each has a test. Only algorithms with
//! no known collisions count (no MD5, SHA-1, CRC).

use http::{HeaderMap, HeaderValue, Uri};

/// The version of the rule table (bumped whenever a rule is added or changed).
pub const RULES_VERSION: u32 = 1;

/// Bytes held back from readers until the whole body matched: a small body is held
/// wholly, a large one loses nothing but its last 64 KiB of head start.
pub const HOLD_BACK: u64 = 64 << 10;

/// What a self-certifying response's freshness is, when the origin states none: a year,
/// `immutable` (RFC 8246).
pub const IMMUTABLE: &str = "max-age=31536000, immutable";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Sha256,
    Sha512,
    Blake2b256,
}

impl Alg {
    fn len(self) -> usize {
        match self {
            Alg::Sha256 | Alg::Blake2b256 => 32,
            Alg::Sha512 => 64,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::Sha256 => "sha-256",
            Alg::Sha512 => "sha-512",
            Alg::Blake2b256 => "blake2b-256",
        }
    }
}

/// The hash a URL names, and by which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certified {
    pub rule: &'static str,
    pub alg: Alg,
    pub digest: Vec<u8>,
}

fn unhex(s: &str, alg: Alg) -> Option<Vec<u8>> {
    if s.len() != alg.len() * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

fn certified(rule: &'static str, alg: Alg, hex: &str) -> Option<Certified> {
    Some(Certified {
        rule,
        alg,
        digest: unhex(hex, alg)?,
    })
}

/// The hash `uri` names, if it matches a rule. `accept` is the request's `Accept` (IPFS
/// gateways answer a CID with the raw block only when asked for it).
pub fn certify(uri: &Uri, accept: Option<&HeaderValue>) -> Option<Certified> {
    let path = uri.path();
    let segs: Vec<&str> = path.split('/').collect();
    let n = segs.len();
    // apt: …/by-hash/SHA256/<hex> (and SHA512), any host.
    if n >= 3 && segs[n - 3] == "by-hash" {
        match segs[n - 2] {
            "SHA256" => return certified("apt-by-hash", Alg::Sha256, segs[n - 1]),
            "SHA512" => return certified("apt-by-hash", Alg::Sha512, segs[n - 1]),
            _ => {}
        }
    }
    // OCI distribution: /v2/<name>/(blobs|manifests)/<alg>:<hex>, any host.
    if n >= 5 && segs[1] == "v2" && matches!(segs[n - 2], "blobs" | "manifests") {
        if let Some((alg, hex)) = segs[n - 1].split_once(':') {
            match alg {
                "sha256" => return certified("oci-digest", Alg::Sha256, hex),
                "sha512" => return certified("oci-digest", Alg::Sha512, hex),
                _ => {}
            }
        }
    }
    // PyPI: files.pythonhosted.org/packages/<2>/<2>/<60>/<file>, the BLAKE2b-256 of the file.
    if uri.host() == Some("files.pythonhosted.org")
        && n == 6
        && segs[1] == "packages"
        && segs[2].len() == 2
        && segs[3].len() == 2
        && segs[4].len() == 60
        && !segs[5].is_empty()
    {
        let hex = format!("{}{}{}", segs[2], segs[3], segs[4]);
        return certified("pypi", Alg::Blake2b256, &hex);
    }
    // IPFS: /ipfs/<cid> as a raw block (`?format=raw` or `Accept: application/vnd.ipld.raw`).
    if (n == 3 || (n == 4 && segs[3].is_empty())) && segs[1] == "ipfs" {
        let raw = uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "format=raw"))
            || accept.is_some_and(|a| a.as_bytes() == b"application/vnd.ipld.raw");
        if raw {
            let (alg, digest) = cid_multihash(segs[2])?;
            return Some(Certified {
                rule: "ipfs-raw",
                alg,
                digest,
            });
        }
    }
    // meshcache's own form: /.well-known/meshcache/by-digest/<alg>/<hex>, any host.
    if n == 6 && segs[1] == ".well-known" && segs[2] == "meshcache" && segs[3] == "by-digest" {
        let alg = match segs[4] {
            "sha-256" | "sha256" => Alg::Sha256,
            "sha-512" | "sha512" => Alg::Sha512,
            "blake2b-256" => Alg::Blake2b256,
            _ => return None,
        };
        return certified("by-digest", alg, segs[5]);
    }
    None
}

fn varint(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(9) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, &b[i + 1..]));
        }
    }
    None
}

/// The multihash of a CID (v0: base58btc `Qm…`; v1: base32 lower-case `b…`), if its
/// algorithm is one we check.
fn cid_multihash(cid: &str) -> Option<(Alg, Vec<u8>)> {
    let multihash: Vec<u8> = if cid.len() == 46 && cid.starts_with("Qm") {
        base58(cid)?
    } else if let Some(rest) = cid.strip_prefix('b') {
        let mut spec = data_encoding::Specification::new();
        spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
        let bytes = spec.encoding().ok()?.decode(rest.as_bytes()).ok()?;
        let (version, rest) = varint(&bytes)?;
        let (_codec, rest) = varint(rest)?;
        if version != 1 {
            return None;
        }
        rest.to_vec()
    } else {
        return None;
    };
    let (code, rest) = varint(&multihash)?;
    let (len, digest) = varint(rest)?;
    let alg = match code {
        0x12 => Alg::Sha256,
        0x13 => Alg::Sha512,
        0xb220 => Alg::Blake2b256,
        _ => return None,
    };
    (len as usize == alg.len() && digest.len() == alg.len()).then(|| (alg, digest.to_vec()))
}

fn base58(s: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut out: Vec<u8> = Vec::new();
    for c in s.bytes() {
        let mut carry = ALPHABET.iter().position(|&a| a == c)? as u32;
        for b in out.iter_mut().rev() {
            carry += u32::from(*b) * 58;
            *b = carry as u8;
            carry >>= 8;
        }
        while carry > 0 {
            out.insert(0, carry as u8);
            carry >>= 8;
        }
    }
    let zeros = s.bytes().take_while(|&c| c == b'1').count();
    let mut v = vec![0u8; zeros];
    v.extend(out);
    Some(v)
}

/// Hashes a body as it arrives and says whether it matched.
pub struct Check {
    expected: Certified,
    state: State,
}

enum State {
    Ring(Box<ring::digest::Context>),
    Blake2b(Box<blake2b_simd::State>),
}

impl Check {
    pub fn new(expected: &Certified) -> Self {
        let state = match expected.alg {
            Alg::Sha256 => State::Ring(Box::new(ring::digest::Context::new(&ring::digest::SHA256))),
            Alg::Sha512 => State::Ring(Box::new(ring::digest::Context::new(&ring::digest::SHA512))),
            Alg::Blake2b256 => State::Blake2b(Box::new(
                blake2b_simd::Params::new().hash_length(32).to_state(),
            )),
        };
        Check {
            expected: expected.clone(),
            state,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.state {
            State::Ring(c) => c.update(bytes),
            State::Blake2b(s) => {
                s.update(bytes);
            }
        }
    }

    /// `Ok` when the body hashed to the digest, else the error that says so.
    pub fn finish(self) -> Result<(), String> {
        let got: Vec<u8> = match self.state {
            State::Ring(c) => c.finish().as_ref().to_vec(),
            State::Blake2b(s) => s.finalize().as_bytes().to_vec(),
        };
        if got == self.expected.digest {
            Ok(())
        } else {
            Err(format!(
                "the body does not hash to the {} its URL names (rule {})",
                self.expected.alg.name(),
                self.expected.rule
            ))
        }
    }
}

/// A self-certifying response that states no freshness of its own (no `max-age`,
/// `s-maxage`, `Expires`, and nothing that forbids reuse) is fresh for a year and
/// `immutable`: its URL changes when its content does. Stated freshness, `no-store`,
/// `no-cache` and `private` are left as they are. Returns true when it added freshness.
pub fn immutable_unless_stated(headers: &mut HeaderMap) -> bool {
    let cc = crate::policy::directives(headers, "cache-control");
    let stated = headers.contains_key(http::header::EXPIRES)
        || cc.iter().any(|(name, _)| {
            matches!(
                name.as_str(),
                "max-age" | "s-maxage" | "no-store" | "no-cache" | "private"
            )
        });
    if stated {
        return false;
    }
    let value = match headers.get(http::header::CACHE_CONTROL) {
        Some(v) => format!("{}, {IMMUTABLE}", v.to_str().unwrap_or("")),
        None => IMMUTABLE.to_string(),
    };
    match HeaderValue::from_str(value.trim_start_matches(", ")) {
        Ok(v) => {
            headers.insert(http::header::CACHE_CONTROL, v);
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA256_ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn c(url: &str) -> Option<Certified> {
        certify(&url.parse().unwrap(), None)
    }

    fn check(cert: &Certified, body: &[u8]) -> Result<(), String> {
        let mut k = Check::new(cert);
        k.update(body);
        k.finish()
    }

    #[test]
    fn apt_by_hash() {
        let u = format!("http://deb.debian.org/debian/dists/stable/main/binary-amd64/by-hash/SHA256/{SHA256_ABC}");
        let cert = c(&u).unwrap();
        assert_eq!((cert.rule, cert.alg), ("apt-by-hash", Alg::Sha256));
        assert!(check(&cert, b"abc").is_ok());
        assert!(check(&cert, b"abd").is_err());
        assert!(
            c(&u.replace("SHA256", "MD5Sum")).is_none(),
            "MD5 proves nothing"
        );
        assert!(c(&u[..u.len() - 2]).is_none(), "a short digest");
        let sha512 = ring::digest::digest(&ring::digest::SHA512, b"abc");
        let hex: String = sha512.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let cert = c(&format!("http://m/by-hash/SHA512/{hex}")).unwrap();
        assert!(check(&cert, b"abc").is_ok());
    }

    #[test]
    fn oci_blobs_and_manifests() {
        for kind in ["blobs", "manifests"] {
            let cert = c(&format!(
                "https://registry-1.docker.io/v2/library/debian/{kind}/sha256:{SHA256_ABC}"
            ))
            .unwrap();
            assert_eq!(cert.rule, "oci-digest");
            assert!(check(&cert, b"abc").is_ok());
        }
        assert!(
            c("https://r/v2/library/debian/manifests/latest").is_none(),
            "a tag"
        );
        assert!(c(&format!("https://r/v3/x/blobs/sha256:{SHA256_ABC}")).is_none());
    }

    #[test]
    fn pypi_files() {
        let b2 = blake2b_simd::Params::new().hash_length(32).hash(b"abc");
        let hex: String = b2.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let u = format!(
            "https://files.pythonhosted.org/packages/{}/{}/{}/pkg-1.0.tar.gz",
            &hex[..2],
            &hex[2..4],
            &hex[4..]
        );
        let cert = c(&u).unwrap();
        assert_eq!((cert.rule, cert.alg), ("pypi", Alg::Blake2b256));
        assert!(check(&cert, b"abc").is_ok());
        assert!(check(&cert, b"abcd").is_err());
        assert!(c(&u.replace("files.pythonhosted.org", "example.org")).is_none());
    }

    #[test]
    fn ipfs_raw_blocks() {
        // CIDv1 raw, sha2-256 of "abc": multibase b, version 1, codec raw (0x55).
        let mut bytes = vec![0x01, 0x55, 0x12, 0x20];
        bytes.extend(unhex(SHA256_ABC, Alg::Sha256).unwrap());
        let mut spec = data_encoding::Specification::new();
        spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
        let cid = format!("b{}", spec.encoding().unwrap().encode(&bytes));
        let cert = c(&format!("http://gw/ipfs/{cid}?format=raw")).unwrap();
        assert_eq!(cert.rule, "ipfs-raw");
        assert!(check(&cert, b"abc").is_ok());
        assert!(
            c(&format!("http://gw/ipfs/{cid}")).is_none(),
            "not asked as a raw block"
        );
        let accept = HeaderValue::from_static("application/vnd.ipld.raw");
        assert!(certify(
            &format!("http://gw/ipfs/{cid}").parse().unwrap(),
            Some(&accept)
        )
        .is_some());
        // CIDv0 (base58btc) of the same multihash.
        let mh = [
            &[0x12u8, 0x20][..],
            &unhex(SHA256_ABC, Alg::Sha256).unwrap(),
        ]
        .concat();
        let b58 = {
            // Encode base58 the slow way for the test.
            let mut n = mh.clone();
            let mut out = Vec::new();
            while n.iter().any(|&b| b != 0) {
                let mut rem = 0u32;
                for b in n.iter_mut() {
                    let v = (rem << 8) | u32::from(*b);
                    *b = (v / 58) as u8;
                    rem = v % 58;
                }
                out.push(
                    b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"[rem as usize],
                );
            }
            out.reverse();
            String::from_utf8(out).unwrap()
        };
        assert!(b58.starts_with("Qm") && b58.len() == 46, "{b58}");
        let cert = c(&format!("http://gw/ipfs/{b58}?format=raw")).unwrap();
        assert!(check(&cert, b"abc").is_ok());
        assert!(c("http://gw/ipfs/bnotbase32!?format=raw").is_none());
    }

    #[test]
    fn meshcache_by_digest() {
        let cert = c(&format!(
            "http://any.host/.well-known/meshcache/by-digest/sha-256/{SHA256_ABC}"
        ))
        .unwrap();
        assert_eq!(cert.rule, "by-digest");
        assert!(check(&cert, b"abc").is_ok());
        assert!(c(&format!(
            "http://h/.well-known/meshcache/by-digest/md5/{SHA256_ABC}"
        ))
        .is_none());
        assert!(c("http://h/.well-known/meshcache/by-digest/sha-256/zz").is_none());
        assert!(c("http://h/ordinary/file.txt").is_none());
    }

    #[test]
    fn freshness_is_added_only_when_none_is_stated() {
        let mut h = HeaderMap::new();
        assert!(immutable_unless_stated(&mut h));
        assert_eq!(h["cache-control"], IMMUTABLE);
        let mut h = HeaderMap::new();
        h.insert("cache-control", HeaderValue::from_static("public"));
        assert!(immutable_unless_stated(&mut h));
        assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
        for stated in [
            "max-age=60",
            "no-store",
            "no-cache",
            "private",
            "s-maxage=5",
        ] {
            let mut h = HeaderMap::new();
            h.insert("cache-control", HeaderValue::from_static(stated));
            assert!(!immutable_unless_stated(&mut h), "{stated}");
            assert_eq!(h["cache-control"], stated);
        }
        let mut h = HeaderMap::new();
        h.insert(
            "expires",
            HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
        );
        assert!(!immutable_unless_stated(&mut h));
    }
}
