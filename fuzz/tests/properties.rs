//! Property test: arbitrary `Cache-Control`, `Expires`, `Age`, `Date`, `Last-Modified`,
//! `Vary`, `Pragma` and `Range` values — from dictionaries of interesting tokens and random
//! values: huge numbers, negative ones, fractions, garbage dates, dates at year 0 and 9999,
//! duplicated directives — through storability, freshness, age and range parsing.
//!
//! Deterministic (fixed seed, fixed number of cases); a failing case prints the seed, its
//! index and its headers. Besides what `meshcache_fuzz::policy::check_exchange` and
//! `meshcache_fuzz::range::check` assert, the headline properties are spelled out here:
//! the freshness lifetime is at most `MAX_FRESHNESS`, `no-store` is never storable,
//! `private` is never storable in a shared cache, ranges lie within the length.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cache::policy::{
    directives, normalized, storability, PolicyOptions, Storability, MAX_FRESHNESS,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use meshcache_fuzz::policy::{add_secs, check_exchange, request_parts, response_parts};
use meshcache_fuzz::rng::Rng;

const SEED: u64 = 0x7072_6f70_6572_7479;
const CASES: usize = 20_000;

const DIRECTIVES: &[&str] = &[
    "max-age",
    "s-maxage",
    "no-store",
    "no-cache",
    "private",
    "public",
    "must-revalidate",
    "proxy-revalidate",
    "immutable",
    "stale-while-revalidate",
    "stale-if-error",
    "max-stale",
    "min-fresh",
    "only-if-cached",
    "no-transform",
    "must-understand",
    "MAX-AGE",
    "No-Store",
    "PRIVATE",
    "x-unknown",
];

const NUMBERS: &[&str] = &[
    "0",
    "1",
    "60",
    "-1",
    "-60",
    "1.5",
    "0.0001",
    "1e9",
    "007",
    "",
    "\"60\"",
    "\"\"",
    "2147483647",
    "2147483648",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999",
    "abc",
];

fn number(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => rng.next_u64().to_string(),
        1 => (rng.below(100_000) as i64 - 1000).to_string(),
        _ => rng.pick(NUMBERS).to_string(),
    }
}

fn cache_control(rng: &mut Rng) -> String {
    let n = 1 + rng.below(5);
    let mut parts = Vec::new();
    for _ in 0..n {
        let d = rng.pick(DIRECTIVES);
        let part = match rng.below(4) {
            0 => d.to_string(),
            1 => format!("{d}={}", number(rng)),
            2 => format!("{d} = {}", number(rng)),
            _ => format!("{d}={}", number(rng)),
        };
        // Duplicated directives, sometimes with another value.
        if rng.one_in(4) {
            parts.push(format!("{d}={}", number(rng)));
        }
        parts.push(part);
    }
    parts.join(if rng.one_in(3) { "," } else { ", " })
}

fn date(rng: &mut Rng) -> String {
    let fixed = [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
        "Mon, 01 Jan 0000 00:00:00 GMT",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "Sat, 01 Jan 10000 00:00:00 GMT",
        "Thu, 01 Jan 1970 00:00:00 GMT",
        "Wed, 31 Dec 1969 23:59:59 GMT",
        "Thu, 18  Aug  2050 02:01:18 GMT",
        "Tue, 29 Feb 2023 00:00:00 GMT",
        "Tue, 32 Jan 2030 25:61:61 GMT",
        "yesterday",
        "0",
        "-1",
        "",
    ];
    if rng.one_in(2) {
        rng.pick(&fixed).to_string()
    } else {
        // Any valid date from 1970 to 9999.
        let secs = rng.next_u64() % 253_402_300_799;
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
    }
}

fn age(rng: &mut Rng) -> String {
    let fixed = ["7200, 0", "60;x=1", "1.5", "-5", " 5 ", "abc", "0x10"];
    if rng.one_in(2) {
        rng.pick(&fixed).to_string()
    } else {
        number(rng)
    }
}

fn vary(rng: &mut Rng) -> String {
    let names = [
        "accept-encoding",
        "Accept-Language",
        "*",
        "",
        "cookie",
        "user-agent",
        "ACCEPT-ENCODING",
    ];
    let n = rng.below(4);
    (0..n)
        .map(|_| *rng.pick(&names))
        .collect::<Vec<_>>()
        .join(", ")
}

fn range_header(rng: &mut Rng, len: u64) -> String {
    let position = |rng: &mut Rng| -> String {
        match rng.below(6) {
            0 => len.saturating_sub(1).to_string(),
            1 => len.to_string(),
            2 => len.saturating_add(1).to_string(),
            3 => u64::MAX.to_string(),
            4 => (rng.next_u64() % len.saturating_add(10).max(1)).to_string(),
            _ => rng.pick(NUMBERS).to_string(),
        }
    };
    let max = if rng.one_in(5) { 20 } else { 3 };
    let n = 1 + rng.below(max);
    let specs: Vec<String> = (0..n)
        .map(|_| match rng.below(4) {
            0 => format!("-{}", position(rng)),
            1 => format!("{}-", position(rng)),
            2 => format!(" {} - {} ", position(rng), position(rng)),
            _ => format!("{}-{}", position(rng), position(rng)),
        })
        .collect();
    let unit = *rng.pick(&["bytes=", "bytes=", "bytes=", "Bytes=", "items=", ""]);
    format!("{unit}{}", specs.join(","))
}

fn put(h: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.append(HeaderName::from_static(name), v);
    }
}

struct Case {
    opts: PolicyOptions,
    now: SystemTime,
    later: SystemTime,
    req: HeaderMap,
    res: HeaderMap,
    req2: HeaderMap,
    status: u16,
    len: u64,
}

fn case(rng: &mut Rng) -> Case {
    let mut res = HeaderMap::new();
    let mut req = HeaderMap::new();
    let mut req2 = HeaderMap::new();
    for _ in 0..rng.below(3) {
        put(&mut res, "cache-control", cache_control(rng));
    }
    for (name, p) in [
        ("expires", 3),
        ("date", 2),
        ("last-modified", 2),
        ("etag", 4),
        ("set-cookie", 8),
        ("pragma", 8),
    ] {
        if rng.one_in(p) {
            let v = match name {
                "etag" => "\"v1\"".to_string(),
                "set-cookie" => "a=b".to_string(),
                "pragma" => "no-cache".to_string(),
                _ => date(rng),
            };
            put(&mut res, name, v);
        }
    }
    if rng.one_in(2) {
        put(&mut res, "age", age(rng));
    }
    if rng.one_in(3) {
        put(&mut res, "vary", vary(rng));
    }
    if rng.one_in(4) {
        put(&mut req, "cache-control", cache_control(rng));
    }
    if rng.one_in(8) {
        put(&mut req, "authorization", "Basic eA==".into());
    }
    if rng.one_in(8) {
        put(&mut req, "cookie", "a=b".into());
    }
    for h in [&mut req, &mut req2] {
        if rng.one_in(2) {
            put(
                h,
                "accept-encoding",
                rng.pick(&["gzip", "br", ""]).to_string(),
            );
        }
    }
    if rng.one_in(2) {
        put(&mut req2, "cache-control", cache_control(rng));
    }
    if rng.one_in(6) {
        put(&mut req2, "pragma", "no-cache".into());
    }
    let len = match rng.below(4) {
        0 => 0,
        1 => 1,
        2 => u64::MAX,
        _ => rng.next_u64() % 100_000,
    };
    let range = range_header(rng, len);
    put(&mut req2, "range", range);
    if rng.one_in(3) {
        put(
            &mut req2,
            "if-range",
            if rng.one_in(2) {
                "\"v1\"".into()
            } else {
                date(rng)
            },
        );
    }
    let now_secs: i64 = match rng.below(5) {
        0 => -(rng.below(70_000_000_000) as i64),
        1 => 253_402_300_799,
        2 => rng.next_u64() as i64 >> 20,
        _ => 1_600_000_000 + rng.below(400_000_000) as i64,
    };
    let now = meshcache_fuzz::input::time(now_secs, rng.below(1000) as u64);
    let later = add_secs(now, rng.below(10_000_000) as i64 - 1000);
    Case {
        opts: PolicyOptions {
            shared: rng.one_in(2),
            heuristic_fraction: rng.below(1001) as f32 / 1000.0,
        },
        now,
        later,
        req,
        res,
        req2,
        status: *rng.pick(&[200, 200, 200, 203, 204, 206, 301, 304, 404, 500, 999]),
        len,
    }
}

fn check(c: &Case) {
    let req = request_parts("GET", "http://example.com/x", c.req.clone());
    let res = response_parts(c.status, c.res.clone());
    let req2 = request_parts("GET", "http://example.com/x", c.req2.clone());

    // Age as the policy library sees it: a plain number, or nothing.
    if let Some(age) = normalized(&c.res).get("age") {
        assert!(age.as_bytes().iter().all(u8::is_ascii_digit), "{age:?}");
    }
    let has = |h: &HeaderMap, d: &str| directives(h, "cache-control").iter().any(|(k, _)| k == d);
    match storability(c.opts, &req, &res, c.now) {
        Storability::Store { fresh_until, .. } => {
            assert!(!has(&c.res, "no-store"), "no-store stored");
            assert!(
                !(c.opts.shared && has(&c.res, "private")),
                "private stored shared"
            );
            let lifetime = fresh_until.duration_since(c.now).unwrap_or_default();
            assert!(lifetime <= MAX_FRESHNESS, "lifetime {lifetime:?}");
        }
        Storability::No(_) => {}
    }
    check_exchange(c.opts, &req, &res, c.now, &req2, c.later);

    let stored = {
        let mut h = c.res.clone();
        h.remove("range");
        h
    };
    meshcache_fuzz::range::check(&c.req2, &stored, c.len);
}

#[test]
fn policy_and_ranges_hold_for_generated_headers() {
    let mut rng = Rng::new(SEED);
    let mut stored = 0;
    for i in 0..CASES {
        let c = case(&mut rng);
        let outcome = catch_unwind(AssertUnwindSafe(|| check(&c)));
        if let Err(e) = outcome {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "seed {SEED:#x}, case {i}: {msg}\nshared {} now {:?} later {:?} status {} len {}\nrequest {:?}\nresponse {:?}\nlater request {:?}",
                c.opts.shared, c.now, c.later, c.status, c.len, c.req, c.res, c.req2
            );
        }
        let req = request_parts("GET", "http://example.com/x", c.req.clone());
        let res = response_parts(c.status, c.res.clone());
        if matches!(
            storability(c.opts, &req, &res, c.now),
            Storability::Store { .. }
        ) {
            stored += 1;
        }
    }
    // The generator reaches both sides of the decision.
    assert!(
        stored > CASES / 20 && stored < CASES * 19 / 20,
        "{stored} of {CASES} stored"
    );
}
