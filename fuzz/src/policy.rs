//! Target `policy`: response and request heads with any `Cache-Control`, `Expires`, `Age`,
//! `Date`, `Last-Modified`, `Vary`, `Pragma`, … and any `now` → `cache::policy`.
//!
//! Input: section 1 is a control line (`now=<secs> ms=<ms> shared=<0|1> heur=<per mille>
//! later=<secs after now>`), a request line (`GET http://…`) and request headers;
//! section 2 a status line and response headers; section 3 the headers of a later
//! request, judged against the stored entry at `now + later`.
//!
//! The invariants are in [`check_exchange`] (also used by `tests/properties.rs`).

use std::time::{Duration, SystemTime};

use cache::entry::Entry;
use cache::policy::{
    directives, evaluate, fresh_for, fresh_until, normalized, only_if_cached, request_no_store,
    storability, NoStoreReason, PolicyOptions, Storability, Verdict, MAX_FRESHNESS,
};
use http::{request, response, HeaderMap, Method};

use crate::input::{header_map, section, sections, time, Controls};
use crate::mutate::Shape;
use crate::{note, Target};

pub const TARGET: Target = Target {
    name: "policy",
    run,
    seeds,
    shape: Shape {
        dictionary: DICTIONARY,
        text: true,
        max_len: 2048,
    },
    stats: crate::no_stats,
};

/// Directive names, header names, dates (valid, obsolete forms, year 0 and 9999, garbage).
pub const DICTIONARY: &[&str] = &[
    "cache-control: ",
    "expires: ",
    "age: ",
    "date: ",
    "last-modified: ",
    "vary: ",
    "pragma: ",
    "set-cookie: ",
    "authorization: ",
    "cookie: ",
    "etag: ",
    "max-age=",
    "s-maxage=",
    "MAX-AGE=",
    "max-stale",
    "max-stale=",
    "min-fresh=",
    "no-store",
    "no-cache",
    "No-Store",
    "private",
    "private=\"set-cookie\"",
    "public",
    "must-revalidate",
    "proxy-revalidate",
    "immutable",
    "only-if-cached",
    "stale-while-revalidate=",
    "stale-if-error=",
    "=\"",
    "\"",
    ", ",
    ",",
    ";",
    "*",
    "GET ",
    "HEAD ",
    "POST ",
    "now=",
    "later=",
    "shared=1",
    "Sun, 06 Nov 1994 08:49:37 GMT",
    "Sunday, 06-Nov-94 08:49:37 GMT",
    "Sun Nov  6 08:49:37 1994",
    "Thu, 01 Jan 1970 00:00:00 GMT",
    "Mon, 01 Jan 0000 00:00:00 GMT",
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "Sat, 01 Jan 10000 00:00:00 GMT",
    "Thu, 18  Aug  2050 02:01:18 GMT",
    "Wed, 29 Feb 2023 00:00:00 GMT",
    "Tue, 32 Jan 2030 25:61:61 GMT",
    "0",
    "-1",
    "1.5",
];

pub fn seeds() -> Vec<Vec<u8>> {
    [
        "now=1700000000 later=30\nGET http://example.com/x\n--\n200\ncache-control: public, max-age=60\ndate: Tue, 14 Nov 2023 22:13:20 GMT\netag: \"v1\"\n--\n",
        "now=1700000000 shared=1 later=100\nGET http://example.com/x\naccept-encoding: gzip\n--\n200\ncache-control: max-age=18446744073709551615\nvary: accept-encoding\n--\naccept-encoding: gzip\n",
        "now=1700000000 later=10\nGET http://example.com/x\n--\n200\ncache-control: private, max-age=60\n--\ncache-control: no-cache\n",
        "now=1700000000 shared=1\nGET http://example.com/x\nauthorization: Basic eA==\n--\n200\ncache-control: max-age=60\nset-cookie: a=b\n--\n",
        "now=1700000000 later=7200\nGET http://example.com/x\n--\n200\ncache-control: max-age=60, stale-while-revalidate=86400, stale-if-error=600\nage: 7200, 0\n--\ncache-control: stale-if-error=100000\n",
        "now=1700000000 heur=100 later=3600\nGET http://example.com/x\n--\n200\ndate: Tue, 14 Nov 2023 22:13:20 GMT\nlast-modified: Sunday, 06-Nov-94 08:49:37 GMT\n--\n",
        "now=1700000000 later=1\nGET http://example.com/x\n--\n200\nexpires: Thu, 18  Aug  2050 02:01:18 GMT\npragma: no-cache\n--\npragma: no-cache\n",
        "now=-62135596800 later=-5\nGET http://example.com/x\n--\n301\ncache-control: MaX-AgE=\"5\", No-Store\nexpires: Fri, 31 Dec 9999 23:59:59 GMT\n--\nmax-stale\n",
        "now=253402300799 later=9223372036854775807\nHEAD http://example.com/x\n--\n200\ncache-control: max-age=60\nvary: *\n--\n",
        "now=1700000000 later=30\nGET http://example.com/x\n--\n404\ncache-control: s-maxage=100, max-age=1, must-revalidate\nage: 9223372036854775807\n--\ncache-control: min-fresh=10, max-age=0\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

pub fn run(data: &[u8]) {
    let s = sections(data);
    let first = section(&s, 0);
    let c = Controls::parse(first.first().copied().unwrap_or_default());
    let now = time(c.i64("now", 1_700_000_000), c.u64("ms", 0));
    let opts = PolicyOptions {
        shared: c.flag("shared"),
        heuristic_fraction: c.u64("heur", 100).min(1000) as f32 / 1000.0,
    };
    let later = add_secs(now, c.i64("later", 30));
    let line = first.get(1).copied().unwrap_or(b"GET http://example.com/x");
    let text = String::from_utf8_lossy(line);
    let (method, uri) = text.split_once(' ').unwrap_or(("GET", &text));
    let req = request_parts(method, uri, header_map(first.get(2..).unwrap_or_default()));
    let res_lines = section(&s, 1);
    let status = res_lines
        .first()
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| l.trim().parse::<u16>().ok())
        .unwrap_or(200);
    let res = response_parts(status, header_map(res_lines.get(1..).unwrap_or_default()));
    let req2 = request_parts("GET", uri, header_map(&section(&s, 2)));
    check_exchange(opts, &req, &res, now, &req2, later);
}

/// `t` moved by `secs` (either way), clamped where `SystemTime` ends.
pub fn add_secs(t: SystemTime, secs: i64) -> SystemTime {
    let d = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        t.checked_add(d).unwrap_or(t)
    } else {
        t.checked_sub(d).unwrap_or(t)
    }
}

/// A request head; an invalid method or URI is replaced by `GET http://example.com/x`.
pub fn request_parts(method: &str, uri: &str, headers: HeaderMap) -> request::Parts {
    let mut parts = request::Builder::new()
        .method(method)
        .uri(uri.trim())
        .body(())
        .or_else(|_| request::Builder::new().uri("http://example.com/x").body(()))
        .expect("a valid request")
        .into_parts()
        .0;
    parts.headers = headers;
    parts
}

/// A response head; a status outside 100..=999 is replaced by 200.
pub fn response_parts(status: u16, headers: HeaderMap) -> response::Parts {
    let mut parts = response::Builder::new()
        .status(status)
        .body(())
        .or_else(|_| response::Builder::new().status(200).body(()))
        .expect("a valid response")
        .into_parts()
        .0;
    parts.headers = headers;
    parts
}

fn has(headers: &HeaderMap, name: &str, directive: &str) -> bool {
    directives(headers, name)
        .iter()
        .any(|(k, _)| k == directive)
}

/// The latest time the cache may consider `now + MAX_FRESHNESS`.
fn horizon(now: SystemTime) -> Option<SystemTime> {
    now.checked_add(MAX_FRESHNESS)
}

/// Checks every policy function on one exchange (stored at `now`) and a later request.
///
/// - `directives` names are lower-case; `normalized` is idempotent.
/// - `fresh_until` never goes before `now` or beyond `now + MAX_FRESHNESS`.
/// - `storability`: only GET; `Vary: *`, `no-store` (response or request) never stored;
///   in a shared cache `private` and `Set-Cookie` never stored; a shareable response is
///   never private, never sets a cookie, never answers credentials.
/// - A stored entry: `evaluate` and `fresh_for` agree; a request with `no-cache` is never
///   answered fresh; the entry is fresh halfway through its lifetime and stale after it.
pub fn check_exchange(
    opts: PolicyOptions,
    req: &request::Parts,
    res: &response::Parts,
    now: SystemTime,
    req2: &request::Parts,
    later: SystemTime,
) {
    for h in [&req.headers, &res.headers, &req2.headers] {
        for name in ["cache-control", "pragma"] {
            for (k, _) in directives(h, name) {
                assert_eq!(k, k.to_ascii_lowercase());
            }
        }
        let n = normalized(h);
        assert_eq!(normalized(&n), n, "normalized is not idempotent for {h:?}");
    }
    for ttl in [
        Duration::ZERO,
        Duration::from_secs(60),
        MAX_FRESHNESS,
        MAX_FRESHNESS + Duration::from_nanos(1),
        Duration::MAX,
    ] {
        let t = fresh_until(now, ttl);
        assert!(t >= now, "fresh_until before now");
        if let Some(h) = horizon(now) {
            assert!(t <= h, "fresh_until beyond now + MAX_FRESHNESS");
        }
    }
    let _ = only_if_cached(&req.headers);
    assert_eq!(
        request_no_store(&req.headers),
        has(&req.headers, "cache-control", "no-store")
    );

    let verdict = storability(opts, req, res, now);
    let res_no_store = has(&res.headers, "cache-control", "no-store");
    let req_no_store = has(&req.headers, "cache-control", "no-store");
    let private = has(&res.headers, "cache-control", "private");
    let set_cookie = res.headers.contains_key(http::header::SET_COOKIE);
    let credentials = req.headers.contains_key(http::header::AUTHORIZATION)
        || req.headers.contains_key(http::header::COOKIE);
    let (policy, shareable, until) = match verdict {
        Storability::No(reason) => {
            note(1 + reason as u64);
            if req.method != Method::GET {
                assert_eq!(reason, NoStoreReason::Method);
            } else if cache::key::vary_names(&res.headers).is_none() {
                assert_eq!(reason, NoStoreReason::VaryStar);
            }
            return;
        }
        Storability::Store {
            policy,
            shareable,
            fresh_until,
        } => (policy, shareable, fresh_until),
    };
    note(20 + u64::from(shareable));
    assert_eq!(req.method, Method::GET, "a {} response stored", req.method);
    assert!(
        cache::key::vary_names(&res.headers).is_some(),
        "Vary: * stored"
    );
    assert!(!res_no_store, "a no-store response is storable");
    assert!(
        !req_no_store,
        "the response to a no-store request is storable"
    );
    if opts.shared {
        assert!(!private, "a private response is storable in a shared cache");
        assert!(
            !set_cookie,
            "a Set-Cookie response is storable in a shared cache"
        );
    }
    if shareable {
        assert!(!private, "a private response is shareable");
        assert!(!set_cookie, "a Set-Cookie response is shareable");
        assert!(!credentials, "a response to credentials is shareable");
    }
    assert!(until >= now, "fresh until before it was stored");
    if let Some(h) = horizon(now) {
        assert!(until <= h, "fresh for longer than MAX_FRESHNESS");
    }

    let entry = entry_for(*policy, res, now, until, shareable);
    let fresh = |r: &request::Parts, at: SystemTime| {
        let v = evaluate(&entry, r, at, opts.shared);
        let by_fresh_for = fresh_for(&entry.policy, r, at);
        let fresh = matches!(v, Verdict::Fresh);
        assert_eq!(
            fresh, by_fresh_for,
            "evaluate ({v:?}) and fresh_for ({by_fresh_for}) disagree"
        );
        // The hit path's shortcut agrees with the library on requests for the same key
        // (its precondition: same URL, same Host).
        let same_key = r.uri == req.uri && r.headers.get("host") == req.headers.get("host");
        if same_key && cache::policy::fresh_as_is(&entry, r, at) {
            assert!(fresh, "fresh_as_is says fresh, evaluate says {v:?}");
        }
        fresh
    };
    let now_fresh = fresh(req2, later);
    note(30 + u64::from(now_fresh));
    if now_fresh {
        assert!(
            !has(&req2.headers, "cache-control", "no-cache"),
            "fresh for a no-cache request"
        );
    }
    // The same request (its varied headers only), halfway through and after the lifetime.
    let plain = {
        let mut r = request_parts("GET", &req.uri.to_string(), HeaderMap::new());
        for name in cache::key::vary_names(&res.headers).unwrap_or_default() {
            for v in req.headers.get_all(name.as_str()) {
                if let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) {
                    r.headers.append(n, v.clone());
                }
            }
        }
        r
    };
    let lifetime = until.duration_since(now).unwrap_or_default();
    let simple = !has(&res.headers, "cache-control", "no-cache")
        && !res.headers.contains_key(http::header::PRAGMA);
    // Outside 1900..=9999 the policy sees a clamped clock (`library_time`): no panic, but
    // no meaningful lifetime either.
    let in_range = |t: SystemTime| cache::policy::library_time(t) == t;
    if !in_range(now) || !in_range(until + Duration::from_secs(2)) {
        return;
    }
    if simple && lifetime >= Duration::from_secs(4) {
        assert!(
            fresh(&plain, now + lifetime / 2),
            "stale halfway through a lifetime of {lifetime:?}"
        );
    }
    if lifetime + Duration::from_secs(86_400) < MAX_FRESHNESS {
        if let Some(after) = until.checked_add(Duration::from_secs(2)) {
            assert!(
                !fresh(&plain, after),
                "fresh after its lifetime of {lifetime:?}"
            );
        }
    }
}

fn entry_for(
    policy: http_cache_semantics::CachePolicy,
    res: &response::Parts,
    now: SystemTime,
    until: SystemTime,
    shareable: bool,
) -> Entry {
    let ms = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    Entry {
        id: 1,
        variant: String::new(),
        // As the store records it: the response's `Vary` names.
        vary: cache::key::vary_names(&res.headers).unwrap_or_default(),
        policy,
        status: res.status.as_u16(),
        headers: Entry::headers_from_map(&res.headers),
        hash: [0; 32],
        len: 0,
        stored_at_ms: ms(now),
        fresh_until_ms: ms(until),
        last_used_ms: ms(now),
        shareable,
        attestation: None,
        head_map: Default::default(),
    }
}
