//! Target `key`: request targets and headers → `cache::key`.
//!
//! Input: the first line is a request target (any bytes, parsed as a `Uri`), the other
//! lines of the first section are request headers; section 2 holds response headers
//! (`Vary`), section 3 a second request's headers.
//!
//! Invariants: `primary_key` is deterministic, its result parses, is its own key
//! (normalization is idempotent) and keeps the scheme, host, effective port and path and
//! query of the target — two targets that reach different origins or resources never share
//! a key. `vary_names` is sorted, lower-case, without duplicates, and ignores the order of
//! `Vary` fields. `variant_key` is deterministic, ignores the order in which differently
//! named fields were added, and is equal for two requests exactly when each varied header
//! is absent in both or present in both with the same values (split at commas, optional
//! whitespace trimmed).

use cache::key::{primary_key, variant_key, vary_names};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};

use crate::input::{hash, header_pairs, section, sections};
use crate::mutate::Shape;
use crate::rng::Rng;
use crate::{note, Target};

pub const TARGET: Target = Target {
    name: "key",
    run,
    seeds,
    shape: Shape {
        dictionary: DICTIONARY,
        text: true,
        max_len: 2048,
    },
    stats: crate::no_stats,
};

const DICTIONARY: &[&str] = &[
    "http://",
    "https://",
    "HTTP://",
    "ftp://",
    "example.com",
    "EXAMPLE.COM",
    ":80",
    ":443",
    ":8080",
    ":0",
    ":",
    ":65535",
    ":65536",
    ":99999",
    ":080",
    "@",
    "user:pw@",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "127.0.0.1",
    "%2F",
    "%41",
    "?",
    "#frag",
    "/",
    "//",
    "vary: ",
    "accept-encoding: ",
    "Accept-Language: ",
    "cookie: ",
    "*",
    ", ",
    ",",
    "gzip",
    "br",
    " ",
    "\t",
    "\u{a0}",
    "--\n",
];

pub fn seeds() -> Vec<Vec<u8>> {
    [
        "http://example.com/a?b=C\naccept-encoding: gzip, br\naccept-language: en\n--\nvary: Accept-Encoding, accept-language\nvary: Accept-Encoding\n--\naccept-encoding: gzip\naccept-encoding: br\n",
        "HTTPS://Example.COM:443/x\n--\nvary: Accept\n--\naccept: text/html\n",
        "http://[::1]:8080/p?q\nuser-agent: x\n--\nvary: user-agent, *\n--\n",
        "http://example.com\naccept: \n--\nvary: accept\n--\n",
        "http://example.com:65536/x\n--\n--\n",
        "http://user:pw@example.com/x\n--\n--\n",
        "/relative\n--\nvary: origin\n--\norigin: http://a\n",
        "http://a?q\naccept-encoding: gzip,  br\n--\nvary: accept-encoding\n--\naccept-encoding: gzip\naccept-encoding: br\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

pub fn run(data: &[u8]) {
    let s = sections(data);
    let first = section(&s, 0);
    let target = first.first().copied().unwrap_or_default();
    let req_a = first.get(1..).unwrap_or_default();
    let res = header_pairs(&section(&s, 1));
    let req_b = header_pairs(&section(&s, 2));
    let req_a = header_pairs(req_a);

    if let Ok(uri) = Uri::try_from(target) {
        check_primary_key(&uri);
    } else {
        note(1);
    }

    let res_map = map(&res);
    let names = vary_names(&res_map);
    let mut rng = Rng::new(hash(data));
    // The order of Vary fields does not matter.
    let mut shuffled = res.clone();
    shuffle(&mut shuffled, &mut rng);
    assert_eq!(
        names,
        vary_names(&map(&shuffled)),
        "vary_names depends on field order"
    );
    let Some(names) = names else {
        note(2);
        return;
    };
    note(3 + names.len() as u64);
    for w in names.windows(2) {
        assert!(w[0] < w[1], "vary names not sorted and unique: {names:?}");
    }
    for n in &names {
        assert!(!n.is_empty() && n != "*", "{names:?}");
        assert_eq!(*n, n.to_ascii_lowercase(), "{names:?}");
    }
    check_variant_key(&names, &req_a, &req_b, &mut rng);
    // And against a near copy of the first request: one varied field touched.
    let near = perturb(&names, &req_a, &mut rng);
    check_variant_key(&names, &req_a, &near, &mut rng);
}

/// `req` with one field of a varied header changed a little: a byte added at its end
/// (whitespace, a comma, a non-breaking space, bytes that are not UTF-8), emptied, or
/// removed; or such a field added.
fn perturb(
    names: &[String],
    req: &[(HeaderName, HeaderValue)],
    rng: &mut Rng,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = req.to_vec();
    let Some(name) = names.get(rng.below(names.len())) else {
        return out;
    };
    let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
        return out;
    };
    let tails: &[&[u8]] = &[
        b" ",
        b"\t",
        b",",
        b", ",
        "\u{a0}".as_bytes(),
        b"\xff",
        b"\xfe",
        b"\xc3",
    ];
    let at: Vec<usize> = (0..out.len()).filter(|&i| out[i].0 == name).collect();
    match (at.is_empty(), rng.below(4)) {
        (true, _) | (false, 0) => {
            let v: &[u8] = if rng.one_in(2) {
                b""
            } else {
                tails[rng.below(tails.len())]
            };
            if let Ok(v) = HeaderValue::from_bytes(v) {
                out.push((name, v));
            }
        }
        (false, 1) => out.retain(|(n, _)| *n != name),
        (false, 2) => out[*rng.pick(&at)].1 = HeaderValue::from_static(""),
        (false, _) => {
            let i = *rng.pick(&at);
            let mut v = out[i].1.as_bytes().to_vec();
            let tail = tails[rng.below(tails.len())];
            v.extend_from_slice(tail);
            if let Ok(v) = HeaderValue::from_bytes(&v) {
                out[i].1 = v;
            }
        }
    }
    out
}

fn map(pairs: &[(HeaderName, HeaderValue)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (n, v) in pairs {
        m.append(n.clone(), v.clone());
    }
    m
}

fn shuffle<T>(v: &mut [T], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
}

/// The port written in an authority: `Ok(None)` when there is none (or it is empty),
/// `Err` when it is not a valid port number.
fn written_port(authority: &http::uri::Authority) -> Result<Option<u16>, ()> {
    let host = authority.host();
    let s = authority.as_str();
    let after = s.rfind(host).map_or("", |i| &s[i + host.len()..]);
    match after.strip_prefix(':') {
        None if after.is_empty() => Ok(None),
        None => Err(()),
        Some("") => Ok(None),
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => p.parse().map(Some).map_err(|_| ()),
        Some(_) => Err(()),
    }
}

/// Checks [`primary_key`] of a target that parsed.
pub fn check_primary_key(uri: &Uri) {
    let key = primary_key(uri);
    assert_eq!(key, primary_key(uri), "primary_key is not deterministic");
    let Some(key) = key else {
        note(10);
        return;
    };
    note(11);
    let parsed: Uri = key
        .parse()
        .unwrap_or_else(|e| panic!("key {key:?} of {uri} does not parse: {e}"));
    assert_eq!(
        primary_key(&parsed).as_deref(),
        Some(key.as_str()),
        "the key of {uri} is not its own key"
    );
    let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
    assert_eq!(parsed.scheme_str(), Some(scheme.as_str()), "{uri} → {key}");
    let (a, b) = (uri.authority().unwrap(), parsed.authority().unwrap());
    assert_eq!(b.host(), a.host().to_ascii_lowercase(), "{uri} → {key}");
    let default = if scheme == "https" { 443 } else { 80 };
    let port = written_port(a)
        .unwrap_or_else(|()| panic!("{uri} has no valid port, yet its key is {key}"))
        .unwrap_or(default);
    let key_port = written_port(b).unwrap().unwrap_or(default);
    assert_eq!(port, key_port, "{uri} → {key}: another port");
    let pq = uri.path_and_query().map_or("", |p| p.as_str());
    let key_pq = parsed.path_and_query().map_or("", |p| p.as_str());
    assert!(
        key_pq == pq || key_pq == format!("/{pq}"),
        "{uri} → {key}: path and query changed"
    );
}

/// What a varied request header is, for the variant key: absent, or its values split at
/// commas with optional whitespace trimmed (RFC 9111 4.1).
fn model(names: &[String], req: &[(HeaderName, HeaderValue)]) -> Vec<Option<Vec<Vec<u8>>>> {
    names
        .iter()
        .map(|n| {
            let values: Vec<&HeaderValue> = req
                .iter()
                .filter(|(k, _)| k.as_str() == n)
                .map(|(_, v)| v)
                .collect();
            if values.is_empty() {
                return None;
            }
            Some(
                values
                    .iter()
                    .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                    .map(|p| p.trim_ascii().to_vec())
                    .collect(),
            )
        })
        .collect()
}

/// Checks [`variant_key`] for two requests.
pub fn check_variant_key(
    names: &[String],
    a: &[(HeaderName, HeaderValue)],
    b: &[(HeaderName, HeaderValue)],
    rng: &mut Rng,
) {
    let key_a = variant_key(names, &map(a));
    assert_eq!(key_a, variant_key(names, &map(a)), "not deterministic");
    // Insert the fields grouped by name in a random order of names: the same key.
    let mut groups: Vec<HeaderName> = Vec::new();
    for (n, _) in a {
        if !groups.contains(n) {
            groups.push(n.clone());
        }
    }
    shuffle(&mut groups, rng);
    let mut reordered = HeaderMap::new();
    for g in &groups {
        for (n, v) in a.iter().filter(|(n, _)| n == g) {
            reordered.append(n.clone(), v.clone());
        }
    }
    assert_eq!(
        key_a,
        variant_key(names, &reordered),
        "variant key depends on the order of differently named fields"
    );
    let key_b = variant_key(names, &map(b));
    let same = model(names, a) == model(names, b);
    note(if same { 100 } else { 101 });
    assert_eq!(
        key_a == key_b,
        same,
        "variant keys {key_a:?} and {key_b:?} of {:?} and {:?} (varying on {names:?})",
        model(names, a),
        model(names, b)
    );
}
