//! RFC 9111 decisions on top of `http-cache-semantics`: may this response be stored, may
//! it be shared, is a stored one fresh, and may a stale one be served
//! (`stale-while-revalidate`, `stale-if-error`, RFC 5861), which the library leaves to us.
//! The operator's freshness [`Rules`] (`[[cache.rule]]`) give a lifetime where RFC 9111
//! lets a cache choose one ([`storability_ruled`]).

use std::sync::Arc;
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
            .map(str::trim)
            .filter(|t| spaced_as_http_date(t))
            .and_then(|t| httpdate::parse_http_date(t).ok());
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

/// Request headers as the policy library should see them when it matches a stored
/// response's `Vary` (`vary`: the names, lower-case): [`normalized`], with each named header
/// as one field line in the form [`crate::key::vary_value`] gives it. The library compares
/// the raw values, while this cache selected the variant by the normalized ones (RFC 9111
/// 4.1 lets a cache remove whitespace, combine field lines and case-normalize
/// case-insensitive values): the stored policy keeps the normalized form too
/// ([`storability_ruled`]), so both sides agree.
pub fn request_view(headers: &HeaderMap, vary: &[String]) -> HeaderMap {
    let mut h = normalized(headers);
    for name in vary {
        let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        let Some(value) = crate::key::vary_value(name, headers)
            .and_then(|v| http::HeaderValue::from_str(&v).ok())
        else {
            continue;
        };
        h.insert(header, value);
    }
    h
}

/// True unless `date` has a run of spaces that no HTTP-date form allows (`httpdate` reads
/// `Thu, 18  Aug  2050 …` leniently). The one place two spaces are valid: asctime's day
/// of the month below 10, `Thu Aug  8 02:01:18 2050` (RFC 9110 5.6.7, `date3`).
fn spaced_as_http_date(date: &str) -> bool {
    match date.find("  ") {
        None => true,
        Some(7) => {
            let rest = &date[9..];
            rest.as_bytes().first().is_some_and(u8::is_ascii_digit) && !rest.contains("  ")
        }
        Some(_) => false,
    }
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

/// The statuses the policy library stores at all (its `UNDERSTOOD_STATUSES`, RFC 7234's
/// "understood by the cache"), and among them those it gives heuristic freshness.
const LIBRARY_STATUSES: &[u16] = &[
    200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501,
];

/// The status the policy library should judge a response with `status` as, when that is
/// not `status` itself. RFC 9111 3 lets a cache store a response with any final status
/// (RFC 7234's "understood by the cache" is gone; only `must-understand`, 206 and 304 ask
/// for it), but the library refuses every status outside its own list. A final status it
/// does not list (299, 400, 500, 503, 599, …) is judged as 302: a status it stores, with
/// explicit freshness or `public` only, and that is not heuristically cacheable (RFC 9110
/// 15.1) — exactly what RFC 9111 3 and 4.2.2 allow for the others. Not with
/// `must-understand` (5.2.2.3: a status this cache does not know, not stored), nor for 206
/// (partial content has its own storage) or 304.
fn library_status(status: http::StatusCode, headers: &HeaderMap) -> Option<http::StatusCode> {
    let code = status.as_u16();
    let stand_in = code >= 200
        && code != 206
        && code != 304
        && !LIBRARY_STATUSES.contains(&code)
        && !has_directive(headers, "cache-control", "must-understand");
    stand_in.then_some(http::StatusCode::FOUND)
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
    let mut as_get = req.clone();
    as_get.method = Method::GET;
    // The stored response's Vary is not known here: every header in the form Vary matching
    // compares (only the verdict is used, not the library's revalidation request).
    let names: Vec<String> = req
        .headers
        .keys()
        .filter(|n| *n != http::header::CACHE_CONTROL && *n != http::header::PRAGMA)
        .map(|n| n.as_str().to_string())
        .collect();
    as_get.headers = request_view(&req.headers, &names);
    matches!(
        policy.before_request(&as_get, library_time(now)),
        BeforeRequest::Fresh(_)
    )
}

/// An operator's freshness rule (`[[cache.rule]]`, like Squid's `refresh_pattern`): a
/// response for a URL that `url` matches is fresh for `fresh_for` where RFC 9111 lets a
/// cache choose the lifetime itself (see [`storability_ruled`]).
#[derive(Debug, Clone)]
pub struct Rule {
    /// Searched for in the cache key (the normalized absolute URL, [`crate::key::primary_key`]).
    pub url: regex::Regex,
    /// The freshness lifetime it gives, in whole seconds (at most [`MAX_FRESHNESS`]).
    pub fresh_for: Duration,
}

/// The freshness rules in the configuration's order: the first whose `url` matches applies.
/// Cheap to clone. Default: none.
#[derive(Debug, Clone, Default)]
pub struct Rules(Arc<[Rule]>);

impl Rules {
    pub fn new(rules: Vec<Rule>) -> Self {
        Self(rules.into())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first rule that matches `url`, with its number: 1 for the first rule of the
    /// configuration (what `Cache-Status` shows as `detail=rule-1`).
    pub fn first_match(&self, url: &str) -> Option<(usize, &Rule)> {
        self.0
            .iter()
            .enumerate()
            .find(|(_, r)| r.url.is_match(url))
            .map(|(i, r)| (i + 1, r))
    }
}

/// Decides whether a response to `req` may be stored, under which policy, and whether it
/// may ever be shared with peers. No freshness rules: [`storability_ruled`] without any.
pub fn storability(
    opts: PolicyOptions,
    req: &request::Parts,
    res: &response::Parts,
    now: SystemTime,
) -> Storability {
    storability_ruled(opts, &Rules::default(), "", req, res, now).0
}

/// True when RFC 9111 lets a cache choose a stored response's freshness lifetime itself
/// (4.2.2, heuristic freshness) — exactly where the policy library applies its
/// `Last-Modified` heuristic, for a response it finds storable (so one whose status is
/// heuristically cacheable, or that is marked `public`): no explicit expiration time
/// (`max-age`, `Expires`, in a shared cache `s-maxage`), and nothing that forbids reuse
/// without revalidation (`no-cache`, also as a `Pragma` without `Cache-Control`; in a
/// shared cache `proxy-revalidate`, and a `Set-Cookie` unless `public` or `immutable`).
/// `headers` as [`normalized`] made them.
fn heuristic_allowed(headers: &HeaderMap, shared: bool) -> bool {
    let cc = directives(headers, "cache-control");
    let has = |d: &str| cc.iter().any(|(k, _)| k == d);
    let pragma_no_cache = !headers.contains_key(http::header::CACHE_CONTROL)
        && headers
            .get_all(http::header::PRAGMA)
            .iter()
            .any(|v| v.to_str().is_ok_and(|p| p.contains("no-cache")));
    let explicit = has("max-age")
        || headers.contains_key(http::header::EXPIRES)
        || (shared && has("s-maxage"));
    let forbidden = has("no-cache")
        || pragma_no_cache
        || (shared
            && (has("proxy-revalidate")
                || (headers.contains_key(http::header::SET_COOKIE)
                    && !has("public")
                    && !has("immutable"))));
    !explicit && !forbidden
}

/// `res` as the policy library sees it under a rule: with an explicit `max-age` of the
/// rule's lifetime. Only the stored policy sees this; the stored headers (served to
/// clients, attested to peers) stay the origin's.
fn with_lifetime(res: &response::Parts, fresh_for: Duration) -> response::Parts {
    let mut r = res.clone();
    let secs = fresh_for.min(MAX_FRESHNESS).as_secs();
    if let Ok(v) = http::HeaderValue::from_str(&format!("max-age={secs}")) {
        r.headers.append(http::header::CACHE_CONTROL, v);
    }
    r
}

/// [`storability`] under the operator's freshness rules: where RFC 9111 lets a cache
/// choose a response's freshness lifetime (see `heuristic_allowed`) and a rule matches
/// `url` (the cache key), the first such rule's `fresh_for` is the lifetime, in place of
/// the `Last-Modified` heuristic; its number (from 1) comes back with the decision. It
/// never overrides `no-store`, `private` (shared), `no-cache` or an explicit lifetime,
/// and never makes a response storable that the library would not store.
///
/// The lifetime is kept in the stored policy (as a `max-age` that only the policy sees),
/// so a stored entry stays fresh until its `fresh_until` whatever the rules are later; a
/// `304` applies the rules again ([`refreshed`]). An entry stored only because of a rule
/// (no validators, nothing else that would make it reusable) is not shareable: peers judge
/// freshness from the origin's headers alone, and could not use it.
pub fn storability_ruled(
    opts: PolicyOptions,
    rules: &Rules,
    url: &str,
    req: &request::Parts,
    res: &response::Parts,
    now: SystemTime,
) -> (Storability, Option<usize>) {
    if req.method != Method::GET {
        return (Storability::No(NoStoreReason::Method), None);
    }
    let (req, mut res) = (&normalized_req(req), normalized_res(res));
    if let Some(status) = library_status(res.status, &res.headers) {
        res.status = status;
    }
    let res = &res;
    let (real_now, now) = (now, library_time(now));
    if crate::key::vary_names(&res.headers).is_none() {
        return (Storability::No(NoStoreReason::VaryStar), None);
    }
    let shared_policy =
        CachePolicy::new_options(req, res, now, cache_options(true, opts.heuristic_fraction));
    let has_set_cookie = res.headers.contains_key(http::header::SET_COOKIE);
    let credentials = req.headers.contains_key(http::header::AUTHORIZATION)
        || req.headers.contains_key(http::header::COOKIE);
    let mut shareable = shared_policy.is_storable() && !has_set_cookie && !credentials;
    let policy = if opts.shared {
        if !shared_policy.is_storable() {
            return (Storability::No(reason(req, res)), None);
        }
        // A shared cache that stored a Set-Cookie would hand one user's cookie to the next.
        if has_set_cookie {
            return (Storability::No(NoStoreReason::SetCookie), None);
        }
        shared_policy
    } else {
        let p =
            CachePolicy::new_options(req, res, now, cache_options(false, opts.heuristic_fraction));
        if !p.is_storable() {
            return (Storability::No(reason(req, res)), None);
        }
        p
    };
    let validators = res.headers.contains_key(http::header::ETAG)
        || res.headers.contains_key(http::header::LAST_MODIFIED);
    let stale_usable = directive_secs(&res.headers, "stale-while-revalidate").is_some()
        || directive_secs(&res.headers, "stale-if-error").is_some();
    let reusable = |ttl: Duration| !ttl.is_zero() || validators || stale_usable;
    let mut ttl = policy.time_to_live(now);
    let rule = if rules.is_empty() || !heuristic_allowed(&res.headers, opts.shared) {
        None
    } else {
        rules.first_match(url)
    };
    let ruled;
    let res = match rule {
        Some((_, r)) => {
            // Shared only if it would have been stored without the rule.
            shareable &= reusable(ttl);
            ruled = with_lifetime(res, r.fresh_for);
            let p = CachePolicy::new_options(
                req,
                &ruled,
                now,
                cache_options(opts.shared, opts.heuristic_fraction),
            );
            ttl = p.time_to_live(now);
            &ruled
        }
        None => res,
    };
    if !reusable(ttl) {
        return (Storability::No(NoStoreReason::NotReusable), None);
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
    // The Vary-named fields in the form later requests are matched in (`request_view`).
    let view = request_view(&kept.headers, &names);
    for name in &names {
        if let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) {
            kept.headers.remove(&n);
            for v in view.get_all(&n) {
                kept.headers.append(n.clone(), v.clone());
            }
        }
    }
    let policy = CachePolicy::new_options(
        &kept,
        res,
        now,
        cache_options(opts.shared, opts.heuristic_fraction),
    );
    let store = Storability::Store {
        policy: Box::new(policy),
        shareable,
        fresh_until: fresh_until(real_now, ttl),
    };
    (store, rule.map(|(n, _)| n))
}

/// The policy of an entry that a `304` refreshed (RFC 9111 4.3.4), when its stored
/// headers before the update (`before`) or after it (`after`) state no freshness of their
/// own: rebuilt from `after` as a response to `req` that arrived at `now`, so the rules
/// apply again — or no longer, if the configuration changed since it was stored — with
/// the rule that applied. `None` (explicit freshness before and after, or a response that
/// may no longer be stored): keep the library's updated policy.
#[allow(clippy::too_many_arguments)]
pub fn refreshed(
    opts: PolicyOptions,
    rules: &Rules,
    url: &str,
    req: &request::Parts,
    status: http::StatusCode,
    before: &HeaderMap,
    after: &HeaderMap,
    now: SystemTime,
) -> Option<(CachePolicy, Option<usize>)> {
    if !heuristic_allowed(&normalized(before), opts.shared)
        && !heuristic_allowed(&normalized(after), opts.shared)
    {
        return None;
    }
    let mut res = response::Builder::new()
        .status(status)
        .body(())
        .ok()?
        .into_parts()
        .0;
    res.headers = after.clone();
    let mut as_get = req.clone();
    as_get.method = Method::GET;
    match storability_ruled(opts, rules, url, &as_get, &res, now) {
        (Storability::Store { policy, .. }, rule) => Some((*policy, rule)),
        (Storability::No(_), _) => None,
    }
}

/// The rule that keeps a fresh `entry` fresh, for `Cache-Status`: the first rule matching
/// `url` (its cache key), when the entry's headers state no freshness of their own and its
/// freshness lifetime is that rule's `fresh_for` (what [`storability_ruled`] gave it).
pub fn rule_of(
    rules: &Rules,
    url: &str,
    entry: &Entry,
    now: SystemTime,
    shared: bool,
) -> Option<usize> {
    if rules.is_empty() {
        return None;
    }
    let (n, rule) = rules.first_match(url)?;
    let now = library_time(now);
    let lifetime = entry.policy.time_to_live(now) + entry.policy.age(now);
    let given = rule.fresh_for.min(MAX_FRESHNESS).as_secs();
    (lifetime.as_secs() == given && heuristic_allowed(&normalized(&entry.header_map()), shared))
        .then_some(n)
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
    as_get.headers = request_view(&req.headers, &entry.vary);
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

    /// RFC 9110 5.6.7: recipients MUST accept the obsolete RFC 850 and asctime forms; an
    /// asctime date before the 10th writes its day with a leading space.
    #[test]
    fn an_asctime_expires_with_a_one_digit_day_is_a_valid_date() {
        for (text, read) in [
            ("Mon Aug  8 02:01:18 2050", "Mon, 08 Aug 2050 02:01:18 GMT"),
            ("Thu Aug 18 02:01:18 2050", "Thu, 18 Aug 2050 02:01:18 GMT"),
            (
                "Thursday, 18-Aug-50 02:01:18 GMT",
                "Thu, 18 Aug 2050 02:01:18 GMT",
            ),
            (
                "Thu, 18 Aug 2050 02:01:18 GMT",
                "Thu, 18 Aug 2050 02:01:18 GMT",
            ),
            // Runs of spaces anywhere else: not an HTTP-date, so already expired.
            ("Thu, 18  Aug  2050 02:01:18 GMT", "0"),
            ("Thu Aug  8  02:01:18 2050", "0"),
            ("Thu  Aug 8 02:01:18 2050", "0"),
            ("Thu Aug   8 02:01:18 2050", "0"),
        ] {
            let mut h = HeaderMap::new();
            h.insert("expires", text.parse().unwrap());
            assert_eq!(normalized(&h)["expires"], read, "{text}");
        }
    }

    fn rules(list: &[(&str, u64)]) -> Rules {
        Rules::new(
            list.iter()
                .map(|(url, secs)| Rule {
                    url: regex::Regex::new(url).unwrap(),
                    fresh_for: Duration::from_secs(*secs),
                })
                .collect(),
        )
    }

    const URL: &str = "http://example.com/x";

    fn ruled(
        opts: PolicyOptions,
        rules: &Rules,
        status: u16,
        headers: &[(&str, &str)],
    ) -> (Storability, Option<usize>) {
        let mut r = res(headers);
        r.status = http::StatusCode::from_u16(status).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        storability_ruled(opts, rules, URL, &req(&[]), &r, now)
    }

    fn lifetime(s: &Storability) -> Option<Duration> {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        match s {
            Storability::Store { fresh_until, .. } => fresh_until.duration_since(now).ok(),
            Storability::No(_) => None,
        }
    }

    #[test]
    fn a_matching_rule_makes_a_response_that_states_nothing_storable_and_fresh() {
        let day = 86_400;
        let r = rules(&[("^http://other/", 60), ("example\\.com/", day)]);
        for opts in [SHARED, DEVICE] {
            let (s, rule) = ruled(opts, &r, 200, &[]);
            assert_eq!(rule, Some(2));
            assert_eq!(lifetime(&s), Some(Duration::from_secs(day)));
            let Storability::Store {
                policy, shareable, ..
            } = s
            else {
                unreachable!()
            };
            assert!(!shareable, "stored only because of the rule: kept here");
            let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            assert!(fresh_for(
                &policy,
                &req(&[]),
                now + Duration::from_secs(day - 1)
            ));
            assert!(!fresh_for(
                &policy,
                &req(&[]),
                now + Duration::from_secs(day)
            ));
            // Unmatched: unchanged.
            let (s, rule) = ruled(opts, &rules(&[("^https://", day)]), 200, &[]);
            assert!(matches!(s, Storability::No(NoStoreReason::NotReusable)));
            assert_eq!(rule, None);
        }
    }

    #[test]
    fn a_rule_replaces_the_last_modified_heuristic_and_keeps_shareability() {
        let lm =
            httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(1_800_000_000 - 100 * 86_400));
        let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let headers = [("last-modified", lm.as_str()), ("date", date.as_str())];
        let (s, rule) = ruled(SHARED, &Rules::default(), 200, &headers);
        assert_eq!(
            (lifetime(&s), rule),
            (Some(Duration::from_secs(864_000)), None)
        );
        let (s, rule) = ruled(SHARED, &rules(&[("", 60)]), 200, &headers);
        assert_eq!(
            (lifetime(&s), rule),
            (Some(Duration::from_secs(60)), Some(1))
        );
        assert!(matches!(
            s,
            Storability::Store {
                shareable: true,
                ..
            }
        ));
    }

    #[test]
    fn a_rule_never_overrides_what_the_response_states() {
        let r = rules(&[("", 86_400)]);
        let stated: &[(&[(&str, &str)], PolicyOptions)] = &[
            (&[("cache-control", "no-store")], DEVICE),
            (&[("cache-control", "private")], SHARED),
            (&[("cache-control", "no-cache")], DEVICE),
            (&[("cache-control", "No-Cache, etag-less")], SHARED),
            (&[("pragma", "no-cache")], DEVICE),
            (&[("cache-control", "max-age=0")], DEVICE),
            (&[("cache-control", "max-age=0, public")], SHARED),
            (&[("cache-control", "max-age=30")], DEVICE),
            (&[("cache-control", "s-maxage=30")], SHARED),
            (&[("cache-control", "proxy-revalidate")], SHARED),
            (&[("expires", "Thu, 01 Jan 1970 00:00:00 GMT")], DEVICE),
            (&[("expires", "garbage")], SHARED),
            (&[("vary", "*")], DEVICE),
        ];
        for (headers, opts) in stated {
            let (with_rule, rule) = ruled(*opts, &r, 200, headers);
            let (without, _) = ruled(*opts, &Rules::default(), 200, headers);
            assert_eq!(rule, None, "{headers:?}");
            assert_eq!(
                format!("{with_rule:?}"),
                format!("{without:?}"),
                "{headers:?}"
            );
        }
        // Statuses a cache may not give heuristic freshness to, unless marked public.
        for status in [302, 307, 500] {
            assert_eq!(ruled(DEVICE, &r, status, &[]).1, None, "{status}");
        }
        let (s, rule) = ruled(DEVICE, &r, 302, &[("cache-control", "public")]);
        assert_eq!(
            (lifetime(&s), rule),
            (Some(Duration::from_secs(86_400)), Some(1))
        );
        for status in [203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
            assert_eq!(ruled(SHARED, &r, status, &[]).1, Some(1), "{status}");
        }
        // `private` on one device: kept for its user, and the rule applies.
        let (s, rule) = ruled(DEVICE, &r, 200, &[("cache-control", "private")]);
        assert_eq!(
            (lifetime(&s), rule),
            (Some(Duration::from_secs(86_400)), Some(1))
        );
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let r = rules(&[("^http://nope/", 1), ("/x$", 120), ("example", 60)]);
        let (s, rule) = ruled(DEVICE, &r, 200, &[]);
        assert_eq!(
            (lifetime(&s), rule),
            (Some(Duration::from_secs(120)), Some(2))
        );
    }

    #[test]
    fn rule_of_names_the_rule_only_for_the_lifetime_it_gave() {
        let r = rules(&[("", 600)]);
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let entry = |headers: &[(&str, &str)], rules: &Rules| {
            let (Storability::Store { policy, .. }, _) =
                storability_ruled(DEVICE, rules, URL, &req(&[]), &res(headers), now)
            else {
                panic!("stored")
            };
            Entry {
                id: 1,
                variant: String::new(),
                vary: Vec::new(),
                policy: *policy,
                status: 200,
                headers: Entry::headers_from_map(&res(headers).headers),
                hash: [0; 32],
                len: 0,
                stored_at_ms: 0,
                fresh_until_ms: 0,
                last_used_ms: 0,
                shareable: false,
                attestation: None,
                head_map: Default::default(),
            }
        };
        let later = now + Duration::from_secs(100);
        let ruled = entry(&[], &r);
        assert_eq!(rule_of(&r, URL, &ruled, later, false), Some(1));
        assert_eq!(rule_of(&Rules::default(), URL, &ruled, later, false), None);
        let other = rules(&[("", 601)]);
        assert_eq!(rule_of(&other, URL, &ruled, later, false), None);
        let explicit = entry(&[("cache-control", "max-age=600")], &r);
        assert_eq!(rule_of(&r, URL, &explicit, later, false), None);
    }

    #[test]
    fn a_304_applies_the_rules_again() {
        let r = rules(&[("", 600)]);
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let bare = res(&[("etag", "\"a\"")]).headers;
        let refresh = |rules: &Rules, after: &HeaderMap| {
            refreshed(
                DEVICE,
                rules,
                URL,
                &req(&[]),
                http::StatusCode::OK,
                &bare,
                after,
                now,
            )
        };
        let (p, rule) = refresh(&r, &bare).expect("rebuilt");
        assert_eq!(
            (p.time_to_live(now), rule),
            (Duration::from_secs(600), Some(1))
        );
        // The rule is gone: no freshness of its own, revalidated each time.
        let (p, rule) = refresh(&Rules::default(), &bare).expect("rebuilt");
        assert_eq!((p.time_to_live(now), rule), (Duration::ZERO, None));
        // The 304 states a lifetime: that one.
        let stated = res(&[
            ("etag", "\"a\""),
            (
                "expires",
                &httpdate::fmt_http_date(now + Duration::from_secs(30)),
            ),
        ])
        .headers;
        let (p, rule) = refresh(&r, &stated).expect("rebuilt");
        assert_eq!((p.time_to_live(now), rule), (Duration::from_secs(30), None));
        // Explicit before and after: the library's policy stays.
        let explicit = res(&[("cache-control", "max-age=5")]).headers;
        assert!(refreshed(
            DEVICE,
            &r,
            URL,
            &req(&[]),
            http::StatusCode::OK,
            &explicit,
            &explicit,
            now
        )
        .is_none());
    }

    #[test]
    fn responses_with_any_final_status_and_explicit_freshness_are_stored() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let with = |status: u16, headers: &[(&str, &str)]| {
            let mut r = res(headers);
            r.status = http::StatusCode::from_u16(status).unwrap();
            storability(SHARED, &req(&[]), &r, now)
        };
        for status in [299, 400, 499, 500, 502, 503, 504, 599] {
            let Storability::Store {
                policy,
                fresh_until,
                ..
            } = with(status, &[("cache-control", "max-age=60")])
            else {
                panic!("{status} with max-age is stored");
            };
            assert_eq!(fresh_until, now + Duration::from_secs(60), "{status}");
            assert!(fresh_for(&policy, &req(&[]), now), "{status}");
            // No heuristic freshness for them: Last-Modified alone stores nothing...
            let lm = httpdate::fmt_http_date(now - Duration::from_secs(86_400));
            let date = httpdate::fmt_http_date(now);
            let heuristic = [("last-modified", lm.as_str()), ("date", date.as_str())];
            assert!(
                matches!(with(status, &heuristic), Storability::No(_)),
                "{status} is not heuristically cacheable"
            );
            // ...unless it is marked public (RFC 9111 4.2.2).
            let mut public = heuristic.to_vec();
            public.push(("cache-control", "public"));
            assert!(
                matches!(with(status, &public), Storability::Store { .. }),
                "{status} marked public"
            );
            // A status this cache does not know, with must-understand: never stored.
            assert!(
                matches!(
                    with(status, &[("cache-control", "max-age=60, must-understand")]),
                    Storability::No(_)
                ),
                "{status} with must-understand"
            );
        }
        // Partial content is not this path's to store.
        assert!(matches!(
            with(206, &[("cache-control", "max-age=60")]),
            Storability::No(_)
        ));
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
