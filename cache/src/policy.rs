//! RFC 9111 decisions on top of `http-cache-semantics`: may this response be stored, may
//! it be shared, is a stored one fresh, and may a stale one be served
//! (`stale-while-revalidate`, `stale-if-error`, RFC 5861), which the library leaves to us.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{request, response, HeaderMap, Method};
use http_cache_semantics::{BeforeRequest, CacheOptions, CachePolicy};

use crate::clock::unix_ms;
use crate::entry::Entry;

/// Why a response was not stored (logged, and in `Cache-Status` as `detail=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoStoreReason {
    Method,
    NoStore,
    Private,
    Authorization,
    SetCookie,
    VaryStar,
    Status,
    NotReusable,
    TooLarge,
    DiskFull,
}

impl NoStoreReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::NoStore => "no-store",
            Self::Private => "private",
            Self::Authorization => "authorization",
            Self::SetCookie => "set-cookie",
            Self::VaryStar => "vary-star",
            Self::Status => "status",
            Self::NotReusable => "not-reusable",
            Self::TooLarge => "too-large",
            Self::DiskFull => "disk-full",
        }
    }
}

/// What may happen to a response from the origin.
#[derive(Debug)]
pub enum Storability {
    Store {
        policy: Box<CachePolicy>,
        /// Never true for anything DESIGN.md lists under "Never shared".
        shareable: bool,
        fresh_until: SystemTime,
    },
    No(NoStoreReason),
}

/// Options of the policy.
#[derive(Debug, Clone, Copy)]
pub struct PolicyOptions {
    /// RFC 9111 shared-cache rules for everything (a gateway). When false (one device, one
    /// user) `private` responses are stored too, but marked never-shareable.
    pub shared: bool,
    pub heuristic_fraction: f32,
}

fn cache_options(shared: bool, heuristic: f32) -> CacheOptions {
    CacheOptions {
        shared,
        cache_heuristic: heuristic,
        ..CacheOptions::default()
    }
}

/// Parses a `Cache-Control`-style header into (directive, argument) pairs, lower-cased.
pub fn directives(headers: &HeaderMap, name: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for v in headers.get_all(name) {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            match part.split_once('=') {
                Some((k, a)) => out.push((
                    k.trim().to_ascii_lowercase(),
                    Some(a.trim().trim_matches('"').to_string()),
                )),
                None => out.push((part.to_ascii_lowercase(), None)),
            }
        }
    }
    out
}

fn has_directive(headers: &HeaderMap, name: &str, directive: &str) -> bool {
    directives(headers, name)
        .iter()
        .any(|(k, _)| k == directive)
}

fn directive_secs(headers: &HeaderMap, directive: &str) -> Option<u64> {
    directives(headers, "cache-control")
        .into_iter()
        .find(|(k, _)| k == directive)
        .and_then(|(_, a)| a?.parse().ok())
}

/// The largest `Age` the policy library is given (RFC 9111 1.2.2's 2^31 seconds).
const MAX_AGE_SECS: u64 = 1 << 31;

/// A copy of a message head as the policy library should see it. It matches directive
/// names case-sensitively and parses dates leniently, so: `Cache-Control` and `Pragma`
/// directive names are lower-cased; a list-valued or parameterised `Age` counts by its
/// first number (`7200, 0` → `7200`), one that is not a number at all (`abc`, `-1`,
/// `7200.0`) is ignored, one above 2^31 is 2^31; an `Expires`
/// that is not a valid HTTP-date becomes `0`, which RFC 9111 5.3 says means "already
/// expired".
pub fn normalized(headers: &HeaderMap) -> HeaderMap {
    let mut h = headers.clone();
    for name in [http::header::CACHE_CONTROL, http::header::PRAGMA] {
        let values: Vec<http::HeaderValue> = h
            .get_all(&name)
            .iter()
            .map(|v| {
                let text = String::from_utf8_lossy(v.as_bytes());
                let lowered = text
                    .split(',')
                    .map(|d| match d.split_once('=') {
                        Some((k, a)) => format!("{}={}", k.trim().to_ascii_lowercase(), a.trim()),
                        None => d.trim().to_ascii_lowercase(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                http::HeaderValue::from_str(&lowered).unwrap_or_else(|_| v.clone())
            })
            .collect();
        if !values.is_empty() {
            h.remove(&name);
            for v in values {
                h.append(&name, v);
            }
        }
    }
    if let Some(age) = h.get(http::header::AGE).and_then(|v| v.to_str().ok()) {
        // The first element, without parameters; anything but a plain number is ignored.
        let first = age
            .split(',')
            .next()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        let plain = !first.is_empty() && first.bytes().all(|b| b.is_ascii_digit());
        let value = if !plain {
            "0".to_string()
        } else if first.parse::<u64>().map_or(true, |n| n > MAX_AGE_SECS) {
            // RFC 9111 1.2.2: a delta-seconds too large to compute with is 2^31. The
            // library adds the time since storing to the Age, and overflow panics.
            MAX_AGE_SECS.to_string()
        } else {
            first.to_string()
        };
        if value != age {
            h.insert(
                http::header::AGE,
                http::HeaderValue::from_str(&value).unwrap_or(http::HeaderValue::from_static("0")),
            );
        }
    }
    // The library reads dates as RFC 2822 only; HTTP also allows the obsolete RFC 850 and
    // asctime forms (RFC 9110 5.6.7). Rewrite valid ones as IMF-fixdate.
    for name in [
        http::header::EXPIRES,
        http::header::DATE,
        http::header::LAST_MODIFIED,
    ] {
        let Some(v) = h.get(&name) else { continue };
        let parsed = v
            .to_str()
            .ok()
            .filter(|t| !t.contains("  "))
            .and_then(|t| httpdate::parse_http_date(t.trim()).ok());
        match parsed {
            Some(t) => {
                if let Ok(v) = http::HeaderValue::from_str(&httpdate::fmt_http_date(t)) {
                    h.insert(&name, v);
                }
            }
            // An invalid Expires means "already expired"; other invalid dates are ignored.
            None if name == http::header::EXPIRES => {
                h.insert(&name, http::HeaderValue::from_static("0"));
            }
            None => {
                h.remove(&name);
            }
        }
    }
    h
}

fn normalized_req(req: &request::Parts) -> request::Parts {
    let mut r = req.clone();
    r.headers = normalized(&req.headers);
    r
}

fn normalized_res(res: &response::Parts) -> response::Parts {
    let mut r = res.clone();
    r.headers = normalized(&res.headers);
    r
}

/// `now` as the policy library may see it. On every fresh answer it writes `now` as an
/// RFC 2822 `Date` and unwraps that, which fails before 1900 and after 9999 (a panic on
/// each hit for a device whose clock is that far off): such a clock is clamped to them.
pub fn library_time(now: SystemTime) -> SystemTime {
    // 1900-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
    let first = UNIX_EPOCH
        .checked_sub(Duration::from_secs(2_208_988_800))
        .unwrap_or(UNIX_EPOCH);
    let last = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    now.clamp(first, last)
}

/// True when `req` would accept a response stored under `policy` as fresh right now
/// (used before joining a fill still under way).
pub fn fresh_for(policy: &CachePolicy, req: &request::Parts, now: SystemTime) -> bool {
    let mut as_get = normalized_req(req);
    as_get.method = Method::GET;
    matches!(
        policy.before_request(&as_get, library_time(now)),
        BeforeRequest::Fresh(_)
    )
}

/// Decides whether a response to `req` may be stored, under which policy, and whether it
/// may ever be shared with peers.
pub fn storability(
    opts: PolicyOptions,
    req: &request::Parts,
    res: &response::Parts,
    now: SystemTime,
) -> Storability {
    if req.method != Method::GET {
        return Storability::No(NoStoreReason::Method);
    }
    let (req, res) = (&normalized_req(req), &normalized_res(res));
    let (real_now, now) = (now, library_time(now));
    if crate::key::vary_names(&res.headers).is_none() {
        return Storability::No(NoStoreReason::VaryStar);
    }
    let shared_policy =
        CachePolicy::new_options(req, res, now, cache_options(true, opts.heuristic_fraction));
    let has_set_cookie = res.headers.contains_key(http::header::SET_COOKIE);
    let credentials = req.headers.contains_key(http::header::AUTHORIZATION)
        || req.headers.contains_key(http::header::COOKIE);
    let shareable = shared_policy.is_storable() && !has_set_cookie && !credentials;
    let policy = if opts.shared {
        if !shared_policy.is_storable() {
            return Storability::No(reason(req, res));
        }
        // A shared cache that stored a Set-Cookie would hand one user's cookie to the next.
        if has_set_cookie {
            return Storability::No(NoStoreReason::SetCookie);
        }
        shared_policy
    } else {
        let p =
            CachePolicy::new_options(req, res, now, cache_options(false, opts.heuristic_fraction));
        if !p.is_storable() {
            return Storability::No(reason(req, res));
        }
        p
    };
    let ttl = policy.time_to_live(now);
    let validators = res.headers.contains_key(http::header::ETAG)
        || res.headers.contains_key(http::header::LAST_MODIFIED);
    let stale_usable = directive_secs(&res.headers, "stale-while-revalidate").is_some()
        || directive_secs(&res.headers, "stale-if-error").is_some();
    if ttl.is_zero() && !validators && !stale_usable {
        return Storability::No(NoStoreReason::NotReusable);
    }
    // The stored policy keeps only the request fields that select the variant: never the
    // client's credentials or cookies, which would otherwise sit in the index (and, later,
    // travel to peers).
    let names = crate::key::vary_names(&res.headers).unwrap_or_default();
    let mut kept = request::Builder::new()
        .method(Method::GET)
        .uri(req.uri.clone())
        .body(())
        .map(|r| r.into_parts().0)
        .unwrap_or_else(|_| req.clone());
    kept.headers = HeaderMap::new();
    for name in names.iter().map(String::as_str).chain(["host"]) {
        for v in req.headers.get_all(name) {
            if let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) {
                kept.headers.append(n, v.clone());
            }
        }
    }
    let policy = CachePolicy::new_options(
        &kept,
        res,
        now,
        cache_options(opts.shared, opts.heuristic_fraction),
    );
    Storability::Store {
        policy: Box::new(policy),
        shareable,
        fresh_until: fresh_until(real_now, ttl),
    }
}

/// The longest freshness lifetime this cache works with: 100 years. An origin (or a peer's
/// attested headers) may say `max-age=18446744073709551615`; `now + that` does not exist
/// as a time, so lifetimes are clamped here rather than overflow (which panics).
pub const MAX_FRESHNESS: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `now + ttl`, with `ttl` clamped to [`MAX_FRESHNESS`]: never overflows.
pub fn fresh_until(now: SystemTime, ttl: Duration) -> SystemTime {
    let ttl = ttl.min(MAX_FRESHNESS);
    now.checked_add(ttl).unwrap_or(now)
}

fn reason(req: &request::Parts, res: &response::Parts) -> NoStoreReason {
    if has_directive(&res.headers, "cache-control", "no-store")
        || has_directive(&req.headers, "cache-control", "no-store")
    {
        NoStoreReason::NoStore
    } else if has_directive(&res.headers, "cache-control", "private") {
        NoStoreReason::Private
    } else if req.headers.contains_key(http::header::AUTHORIZATION) {
        NoStoreReason::Authorization
    } else {
        NoStoreReason::Status
    }
}

/// What the cache may do with a stored entry for a request.
#[derive(Debug)]
pub enum Verdict {
    /// Serve it as is.
    Fresh,
    /// Ask the origin first, with these request headers (validators added).
    Revalidate {
        headers: HeaderMap,
        /// `stale-while-revalidate` allows serving it now and revalidating in the background.
        serve_stale_while_revalidating: bool,
        /// `stale-if-error` allows serving it if the origin fails.
        serve_stale_on_error: bool,
    },
}

/// Judges a stored entry against a new GET or HEAD request. The entry's variant has
/// already been matched by the caller.
/// The common hit, decided without the library: a request that says nothing about caching
/// (no `Cache-Control`, no `Pragma`) for an entry that varies on nothing and is still
/// fresh. [`evaluate`] would answer `Fresh` too, but only after building a response head
/// that is thrown away — a large part of a hit's cost.
///
/// Only for an entry selected by this request's own cache key (the URL and `Host` then
/// match by construction, which the library checks again); the property tests hold it to
/// [`evaluate`] on such requests.
pub fn fresh_as_is(entry: &Entry, req: &request::Parts, now: SystemTime) -> bool {
    entry.vary.is_empty()
        && !req.headers.contains_key(http::header::CACHE_CONTROL)
        && !req.headers.contains_key(http::header::PRAGMA)
        && !entry.policy.is_stale(library_time(now))
}

pub fn evaluate(entry: &Entry, req: &request::Parts, now: SystemTime, shared: bool) -> Verdict {
    // A HEAD is answered from a stored GET: judge it as the GET it stands for.
    let mut as_get = request::Builder::new()
        .method(Method::GET)
        .uri(req.uri.clone())
        .body(())
        .map(|r| r.into_parts().0)
        .unwrap_or_else(|_| req.clone());
    as_get.headers = normalized(&req.headers);
    match entry.policy.before_request(&as_get, library_time(now)) {
        BeforeRequest::Fresh(_) => Verdict::Fresh,
        BeforeRequest::Stale { request, .. } => {
            let res_headers = entry.header_map();
            let staleness =
                Duration::from_millis(unix_ms(now).saturating_sub(entry.fresh_until_ms));
            let strict = has_directive(&res_headers, "cache-control", "must-revalidate")
                || has_directive(&res_headers, "cache-control", "proxy-revalidate")
                || has_directive(&res_headers, "cache-control", "no-cache")
                // s-maxage carries proxy-revalidate's meaning for a shared cache (RFC 9111 5.2.2.10).
                || (shared && has_directive(&res_headers, "cache-control", "s-maxage"));
            let req_cc = directives(&req.headers, "cache-control");
            let req_wants_origin = req_cc
                .iter()
                .any(|(k, _)| k == "no-cache" || k == "max-age" || k == "min-fresh")
                || has_directive(&req.headers, "pragma", "no-cache");
            let within = |d: &str| {
                directive_secs(&res_headers, d)
                    .is_some_and(|secs| staleness <= Duration::from_secs(secs))
            };
            let swr = !strict && !req_wants_origin && within("stale-while-revalidate");
            let sie_req = req_cc
                .iter()
                .find(|(k, _)| k == "stale-if-error")
                .and_then(|(_, a)| a.as_ref()?.parse::<u64>().ok())
                .is_some_and(|secs| staleness <= Duration::from_secs(secs));
            let sie = !strict && (within("stale-if-error") || sie_req);
            Verdict::Revalidate {
                headers: request.headers,
                serve_stale_while_revalidating: swr,
                serve_stale_on_error: sie,
            }
        }
    }
}

/// True when the request forbids using the network (`only-if-cached`).
pub fn only_if_cached(req: &HeaderMap) -> bool {
    has_directive(req, "cache-control", "only-if-cached")
}

/// True when the request asks that nothing about it be stored.
pub fn request_no_store(req: &HeaderMap) -> bool {
    has_directive(req, "cache-control", "no-store")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_lifetimes_are_clamped_not_overflowed() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            fresh_until(now, Duration::from_secs(u64::MAX)),
            now + MAX_FRESHNESS
        );
        assert_eq!(
            fresh_until(now, Duration::from_secs(60)),
            now + Duration::from_secs(60)
        );
    }

    /// Found by the `policy` fuzz target: with a clock before 1900 (or after 9999) every
    /// fresh hit panicked inside http-cache-semantics, which formats `now` as an RFC 2822
    /// date and unwraps it.
    #[test]
    fn a_clock_before_1900_or_after_9999_does_not_panic_a_fresh_hit() {
        let r = res(&[("cache-control", "max-age=60")]);
        for secs in [
            -62_135_596_800i64,
            -2_208_988_801,
            253_402_300_800,
            300_000_000_000,
        ] {
            let now = if secs < 0 {
                UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            } else {
                UNIX_EPOCH + Duration::from_secs(secs as u64)
            };
            let Storability::Store {
                policy,
                fresh_until,
                ..
            } = storability(DEVICE, &req(&[]), &r, now)
            else {
                panic!("not stored at {secs}");
            };
            assert_eq!(fresh_until, now + Duration::from_secs(60));
            assert!(fresh_for(&policy, &req(&[]), now), "{secs}");
        }
    }

    /// Found by the `policy` fuzz target: `Age: 18446744073709551615` made the policy
    /// library overflow (a panic) adding the time since storing, on every later lookup.
    #[test]
    fn an_age_of_u64_max_is_clamped_not_overflowed() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for age in [
            "18446744073709551615",
            "99999999999999999999999",
            "2147483649",
        ] {
            let mut h = HeaderMap::new();
            h.insert("age", age.parse().unwrap());
            assert_eq!(normalized(&h)["age"], "2147483648", "{age}");
            let r = res(&[
                ("cache-control", "max-age=60"),
                ("age", age),
                ("etag", "\"x\""),
            ]);
            let Storability::Store { policy, .. } = storability(DEVICE, &req(&[]), &r, now) else {
                panic!("an entry with a validator is stored");
            };
            assert!(!fresh_for(
                &policy,
                &req(&[]),
                now + Duration::from_secs(10)
            ));
        }
        let mut h = HeaderMap::new();
        h.insert("age", "2147483648".parse().unwrap());
        assert_eq!(normalized(&h)["age"], "2147483648");
    }

    fn req(headers: &[(&str, &str)]) -> request::Parts {
        let mut b = request::Builder::new().uri("http://example.com/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }
    fn res(headers: &[(&str, &str)]) -> response::Parts {
        let mut b = response::Builder::new().status(200);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }
    const SHARED: PolicyOptions = PolicyOptions {
        shared: true,
        heuristic_fraction: 0.1,
    };
    const DEVICE: PolicyOptions = PolicyOptions {
        shared: false,
        heuristic_fraction: 0.1,
    };

    #[test]
    fn private_is_kept_on_device_but_never_shareable() {
        let now = SystemTime::now();
        let r = res(&[("cache-control", "private, max-age=60")]);
        assert!(matches!(
            storability(SHARED, &req(&[]), &r, now),
            Storability::No(NoStoreReason::Private)
        ));
        match storability(DEVICE, &req(&[]), &r, now) {
            Storability::Store { shareable, .. } => assert!(!shareable),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn authorization_and_cookie_requests_are_never_shareable() {
        let now = SystemTime::now();
        let r = res(&[("cache-control", "public, max-age=60")]);
        for h in [("authorization", "Basic eA=="), ("cookie", "a=b")] {
            match storability(DEVICE, &req(&[h]), &r, now) {
                Storability::Store { shareable, .. } => assert!(!shareable, "{h:?}"),
                other => panic!("{other:?}"),
            }
        }
        match storability(DEVICE, &req(&[]), &r, now) {
            Storability::Store { shareable, .. } => assert!(shareable),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn shared_cache_refuses_set_cookie_and_authorization() {
        let now = SystemTime::now();
        let r = res(&[("cache-control", "max-age=60"), ("set-cookie", "a=b")]);
        assert!(matches!(
            storability(SHARED, &req(&[]), &r, now),
            Storability::No(NoStoreReason::SetCookie)
        ));
        let r = res(&[("cache-control", "max-age=60")]);
        assert!(matches!(
            storability(SHARED, &req(&[("authorization", "x")]), &r, now),
            Storability::No(NoStoreReason::Authorization)
        ));
    }

    #[test]
    fn no_store_vary_star_and_useless_responses_are_not_stored() {
        let now = SystemTime::now();
        let nostore = res(&[("cache-control", "no-store")]);
        assert!(matches!(
            storability(DEVICE, &req(&[]), &nostore, now),
            Storability::No(NoStoreReason::NoStore)
        ));
        let star = res(&[("cache-control", "max-age=60"), ("vary", "*")]);
        assert!(matches!(
            storability(DEVICE, &req(&[]), &star, now),
            Storability::No(NoStoreReason::VaryStar)
        ));
        let bare = res(&[]);
        assert!(matches!(
            storability(DEVICE, &req(&[]), &bare, now),
            Storability::No(NoStoreReason::NotReusable)
        ));
    }

    #[test]
    fn normalization_for_the_policy_library() {
        let mut h = HeaderMap::new();
        h.insert("cache-control", "MaX-AgE=60, No-CaChE".parse().unwrap());
        h.insert("age", "7200, 0".parse().unwrap());
        h.insert(
            "expires",
            "Thu, 18  Aug  2050 02:01:18 GMT".parse().unwrap(),
        );
        h.insert(
            "last-modified",
            "Sunday, 06-Nov-94 08:49:37 GMT".parse().unwrap(),
        );
        let n = normalized(&h);
        assert_eq!(n["cache-control"], "max-age=60, no-cache");
        assert_eq!(n["age"], "7200");
        for (age, read) in [
            ("7200;foo=bar", "7200"),
            ("7200.0", "0"),
            ("-7200", "0"),
            ("abc", "0"),
        ] {
            let mut h = HeaderMap::new();
            h.insert("age", age.parse().unwrap());
            assert_eq!(normalized(&h)["age"], read, "{age}");
        }
        assert_eq!(n["expires"], "0");
        assert_eq!(n["last-modified"], "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn directives_parse_arguments() {
        let mut h = HeaderMap::new();
        h.insert(
            "cache-control",
            "max-age=\"5\", No-Cache, stale-if-error=30"
                .parse()
                .unwrap(),
        );
        let d = directives(&h, "cache-control");
        assert_eq!(d[0], ("max-age".into(), Some("5".into())));
        assert_eq!(d[1], ("no-cache".into(), None));
        assert_eq!(directive_secs(&h, "stale-if-error"), Some(30));
    }
}
