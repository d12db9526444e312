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
    Sha384,
    Sha512,
    Blake2b256,
}

impl Alg {
    fn len(self) -> usize {
        match self {
            Alg::Sha256 | Alg::Blake2b256 => 32,
            Alg::Sha384 => 48,
            Alg::Sha512 => 64,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::Sha256 => "sha-256",
            Alg::Sha384 => "sha-384",
            Alg::Sha512 => "sha-512",
            Alg::Blake2b256 => "blake2b-256",
        }
    }

    /// Which of two algorithms counts when a value names several (SRI: the strongest).
    fn strength(self) -> u8 {
        match self {
            Alg::Sha256 | Alg::Blake2b256 => 1,
            Alg::Sha384 => 2,
            Alg::Sha512 => 3,
        }
    }
}

/// The request header in which a client states what the body must hash to (Subresource
/// Integrity syntax: `sha256-<base64>`, also sha384 and sha512; several values separated
/// by spaces, the strongest algorithm counts).
pub const INTEGRITY: &str = "meshcache-integrity";

/// A hash the body must have, and who says so: the rule of a self-certifying URL
/// (`apt-by-hash`, `oci-digest`, `pypi`, `ipfs-raw`, `by-digest`), the client's
/// [`INTEGRITY`] header (`integrity`), or the origin's own `Content-Digest` /
/// `Repr-Digest` received by this device (`origin-digest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certified {
    pub rule: &'static str,
    pub alg: Alg,
    pub digest: Vec<u8>,
}

impl Certified {
    /// Who stated the digest, for error messages.
    pub fn who(&self) -> String {
        match self.rule {
            "integrity" => "the client stated (Meshcache-Integrity)".into(),
            "origin-digest" => "the origin stated (Content-Digest / Repr-Digest)".into(),
            rule => format!("its URL names (rule {rule})"),
        }
    }

    /// The digest in Subresource Integrity syntax (`sha256-<base64>`).
    pub fn sri(&self) -> String {
        format!(
            "{}-{}",
            self.alg.name().replace('-', ""),
            data_encoding::BASE64.encode(&self.digest)
        )
    }

    /// The digest as an RFC 9530 `Content-Digest` value (`sha-256=:…:`), for the
    /// algorithms that registry has.
    pub fn header_value(&self) -> Option<HeaderValue> {
        let name = match self.alg {
            Alg::Sha256 => "sha-256",
            Alg::Sha512 => "sha-512",
            Alg::Sha384 | Alg::Blake2b256 => return None,
        };
        let b64 = data_encoding::BASE64.encode(&self.digest);
        HeaderValue::from_str(&format!("{name}=:{b64}:")).ok()
    }
}

/// The client's [`INTEGRITY`] header: the values of its strongest algorithm, at least one.
/// Unknown algorithms are skipped (as SRI does); a value with none we know, or a digest of
/// the wrong length, is an error (the client asked for a check we cannot make).
pub fn integrity(value: &HeaderValue) -> Result<Vec<Certified>, String> {
    let text = value
        .to_str()
        .map_err(|_| "Meshcache-Integrity is not ASCII".to_string())?;
    let mut out: Vec<Certified> = Vec::new();
    for token in text.split_ascii_whitespace() {
        // SRI options follow a '?' and are ignored.
        let token = token.split('?').next().unwrap_or("");
        let Some((alg, b64)) = token.split_once('-') else {
            continue;
        };
        let alg = match alg {
            "sha256" => Alg::Sha256,
            "sha384" => Alg::Sha384,
            "sha512" => Alg::Sha512,
            _ => continue,
        };
        let digest = data_encoding::BASE64
            .decode(b64.as_bytes())
            .map_err(|_| format!("Meshcache-Integrity: {token:?} is not base64"))?;
        if digest.len() != alg.len() {
            return Err(format!(
                "Meshcache-Integrity: a {} digest has {} bytes, not {}",
                alg.name(),
                digest.len(),
                alg.len()
            ));
        }
        out.push(Certified {
            rule: "integrity",
            alg,
            digest,
        });
    }
    strongest(out)
        .ok_or_else(|| "Meshcache-Integrity names no sha256, sha384 or sha512 digest".to_string())
}

/// The digest an origin states for a whole `200` body (RFC 9530 `Content-Digest`, else
/// `Repr-Digest` — the same bytes for a complete response; `sha-256` and `sha-512`),
/// strongest algorithm only. Empty when it states none we can check. Counts only when
/// this device received it from the origin over its own connection.
pub fn stated_digest(headers: &HeaderMap) -> Vec<Certified> {
    for name in ["content-digest", "repr-digest"] {
        let mut out = Vec::new();
        for v in headers.get_all(name) {
            let Ok(text) = v.to_str() else { continue };
            for member in text.split(',') {
                let Some((alg, value)) = member.trim().split_once('=') else {
                    continue;
                };
                let alg = match alg.trim() {
                    "sha-256" => Alg::Sha256,
                    "sha-512" => Alg::Sha512,
                    _ => continue,
                };
                let Some(b64) = value
                    .trim()
                    .strip_prefix(':')
                    .and_then(|v| v.strip_suffix(':'))
                else {
                    continue;
                };
                match data_encoding::BASE64.decode(b64.as_bytes()) {
                    Ok(d) if d.len() == alg.len() => out.push(Certified {
                        rule: "origin-digest",
                        alg,
                        digest: d,
                    }),
                    _ => continue,
                }
            }
        }
        if let Some(s) = strongest(out) {
            return s;
        }
    }
    Vec::new()
}

/// The values of the strongest algorithm among `list`, or `None` when it is empty.
fn strongest(list: Vec<Certified>) -> Option<Vec<Certified>> {
    let best = list.iter().map(|c| c.alg.strength()).max()?;
    Some(
        list.into_iter()
            .filter(|c| c.alg.strength() == best)
            .collect(),
    )
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

/// Hashes a body as it arrives and says whether it matched. Several statements can apply
/// at once (the URL's rule and the client's integrity): each must be met, by any one of
/// its values.
pub struct Check {
    /// Per statement (rule): its accepted digests (one algorithm) and the hasher.
    parts: Vec<(Vec<Certified>, State)>,
}

enum State {
    Ring(Box<ring::digest::Context>),
    Blake2b(Box<blake2b_simd::State>),
}

impl State {
    fn new(alg: Alg) -> Self {
        let ring = |a| State::Ring(Box::new(ring::digest::Context::new(a)));
        match alg {
            Alg::Sha256 => ring(&ring::digest::SHA256),
            Alg::Sha384 => ring(&ring::digest::SHA384),
            Alg::Sha512 => ring(&ring::digest::SHA512),
            Alg::Blake2b256 => State::Blake2b(Box::new(
                blake2b_simd::Params::new().hash_length(32).to_state(),
            )),
        }
    }
}

impl Check {
    pub fn new(expected: &Certified) -> Self {
        Self::all(std::slice::from_ref(expected))
    }

    /// A check of every statement among `expected` (grouped by rule; within a rule any
    /// value of its first algorithm passes). An empty list passes anything.
    pub fn all(expected: &[Certified]) -> Self {
        let mut parts: Vec<(Vec<Certified>, State)> = Vec::new();
        for c in expected {
            match parts.iter_mut().find(|(v, _)| v[0].rule == c.rule) {
                Some((v, _)) if v[0].alg == c.alg => v.push(c.clone()),
                Some(_) => {}
                None => parts.push((vec![c.clone()], State::new(c.alg))),
            }
        }
        Check { parts }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        for (_, state) in &mut self.parts {
            match state {
                State::Ring(c) => c.update(bytes),
                State::Blake2b(s) => {
                    s.update(bytes);
                }
            }
        }
    }

    /// `Ok` when the body hashed to every statement, else the error that says which not.
    pub fn finish(self) -> Result<(), String> {
        for (expected, state) in self.parts {
            let got: Vec<u8> = match state {
                State::Ring(c) => c.finish().as_ref().to_vec(),
                State::Blake2b(s) => s.finalize().as_bytes().to_vec(),
            };
            if !expected.iter().any(|c| c.digest == got) {
                let c = &expected[0];
                return Err(format!(
                    "the body does not hash to the {} {}",
                    c.alg.name(),
                    c.who()
                ));
            }
        }
        Ok(())
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

/// Streams `body`, holding back its last [`HOLD_BACK`] bytes until the whole matched
/// `check`; a mismatch (or a body error) ends the stream with an error, and a mismatch
/// first calls `on_mismatch` with the reason (a stranger's body: ban it). So no reader
/// ever receives a complete body that does not match.
pub fn held_back<E>(
    body: futures_util::stream::BoxStream<'static, Result<bytes::Bytes, E>>,
    check: Check,
    on_mismatch: impl FnOnce(&str) + Send + 'static,
) -> futures_util::stream::BoxStream<'static, Result<bytes::Bytes, E>>
where
    E: From<String> + Send + 'static,
{
    use futures_util::StreamExt;
    struct St<E, F> {
        body: futures_util::stream::BoxStream<'static, Result<bytes::Bytes, E>>,
        check: Option<Check>,
        held: Vec<u8>,
        on_mismatch: Option<F>,
    }
    let st = St {
        body,
        check: Some(check),
        held: Vec::new(),
        on_mismatch: Some(on_mismatch),
    };
    futures_util::stream::unfold(st, |mut st| async move {
        let hold = HOLD_BACK as usize;
        loop {
            st.check.as_ref()?;
            match st.body.next().await {
                Some(Ok(b)) => {
                    if let Some(c) = &mut st.check {
                        c.update(&b);
                    }
                    st.held.extend_from_slice(&b);
                    if st.held.len() > hold {
                        let out: Vec<u8> = st.held.drain(..st.held.len() - hold).collect();
                        return Some((Ok(bytes::Bytes::from(out)), st));
                    }
                }
                Some(Err(e)) => {
                    st.check = None;
                    return Some((Err(e), st));
                }
                None => {
                    let c = st.check.take()?;
                    return Some(match c.finish() {
                        Ok(()) => (Ok(bytes::Bytes::from(std::mem::take(&mut st.held))), st),
                        Err(e) => {
                            if let Some(f) = st.on_mismatch.take() {
                                f(&e);
                            }
                            (Err(E::from(e)), st)
                        }
                    });
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests;
