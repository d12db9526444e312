//! `Range` requests (RFC 9110 14): parsing a byte-range set against a known length, and
//! `If-Range`. Multiple ranges are answered as `multipart/byteranges`.

use std::ops::Range;

use http::HeaderMap;

/// What to send for a request's `Range` header, given the representation's length.
#[derive(Debug, PartialEq, Eq)]
pub enum Ranges {
    /// No (usable) Range header: the whole representation, 200.
    Full,
    /// Satisfiable ranges, in request order, overlapping ones coalesced: 206.
    Partial(Vec<Range<u64>>),
    /// None of the ranges overlaps the representation: 416.
    Unsatisfiable,
}

/// Largest number of ranges honoured in one request; more is treated as abuse and
/// answered with the whole representation (RFC 9110 14.2 allows ignoring Range).
const MAX_RANGES: usize = 16;

/// Interprets the `Range` header for a representation of `len` bytes.
pub fn parse(headers: &HeaderMap, len: u64) -> Ranges {
    let Some(value) = headers
        .get(http::header::RANGE)
        .and_then(|v| v.to_str().ok())
    else {
        return Ranges::Full;
    };
    let Some(set) = value.trim().strip_prefix("bytes=") else {
        return Ranges::Full;
    };
    let mut out: Vec<Range<u64>> = Vec::new();
    let mut any = false;
    for spec in set.split(',') {
        let spec = spec.trim();
        if spec.is_empty() {
            continue;
        }
        any = true;
        let Some((a, b)) = spec.split_once('-') else {
            return Ranges::Full;
        };
        let (a, b) = (a.trim(), b.trim());
        let r = if a.is_empty() {
            // suffix: the last N bytes
            let Ok(n) = b.parse::<u64>() else {
                return Ranges::Full;
            };
            if n == 0 {
                continue;
            }
            if len == 0 {
                // The last N bytes of nothing: no range can say so (RFC 9110 14.1.1 calls
                // it satisfiable, `Content-Range` has no form for it), so the whole, empty
                // representation.
                return Ranges::Full;
            }
            len.saturating_sub(n)..len
        } else {
            let Ok(start) = a.parse::<u64>() else {
                return Ranges::Full;
            };
            let end = if b.is_empty() {
                len
            } else {
                let Ok(last) = b.parse::<u64>() else {
                    return Ranges::Full;
                };
                if last < start {
                    return Ranges::Full;
                }
                last.saturating_add(1).min(len)
            };
            if start >= len {
                continue;
            }
            start..end
        };
        out.push(r);
    }
    if !any || out.len() > MAX_RANGES {
        return Ranges::Full;
    }
    if out.is_empty() {
        return Ranges::Unsatisfiable;
    }
    Ranges::Partial(coalesce(out))
}

fn coalesce(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    if ranges.len() < 2 {
        return ranges;
    }
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// The first byte a Range header asks for, without knowing the length (for deciding
/// whether a miss should fill the whole object). Suffix ranges count as unknown (`None`).
pub fn first_byte(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(http::header::RANGE)?.to_str().ok()?;
    let set = value.trim().strip_prefix("bytes=")?;
    set.split(',')
        .filter_map(|s| s.trim().split_once('-'))
        .map(|(a, _)| a.trim().parse::<u64>().ok())
        .try_fold(u64::MAX, |min, s| s.map(|s| min.min(s)))
}

/// `If-Range` (RFC 9110 13.1.5): the range applies only if the validator matches the
/// stored representation (strong ETag comparison, or an exact Last-Modified date).
pub fn if_range_matches(req: &HeaderMap, res: &HeaderMap) -> bool {
    let Some(v) = req.get(http::header::IF_RANGE) else {
        return true;
    };
    // Compared as bytes: an entity-tag may hold obs-text (RFC 9110 8.8.3), which `to_str`
    // refuses, and an If-Range that cannot be read is a condition that failed.
    let v = v.as_bytes().trim_ascii();
    if v.starts_with(b"\"") || v.starts_with(b"W/") {
        let etag = res.get(http::header::ETAG).map(|e| e.as_bytes());
        return !v.starts_with(b"W/")
            && etag.is_some_and(|e| !e.starts_with(b"W/") && e.trim_ascii() == v);
    }
    let Ok(v) = std::str::from_utf8(v) else {
        return false;
    };
    let lm = res
        .get(http::header::LAST_MODIFIED)
        .and_then(|e| e.to_str().ok());
    match (
        httpdate::parse_http_date(v),
        lm.and_then(|l| httpdate::parse_http_date(l).ok()),
    ) {
        (Ok(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn r(v: &str, len: u64) -> Ranges {
        let mut h = HeaderMap::new();
        h.insert("range", v.parse().unwrap());
        parse(&h, len)
    }

    #[test]
    fn single_suffix_open_and_clipped() {
        assert_eq!(r("bytes=0-99", 1000), Ranges::Partial(vec![0..100]));
        assert_eq!(r("bytes=-100", 1000), Ranges::Partial(vec![900..1000]));
        assert_eq!(r("bytes=990-", 1000), Ranges::Partial(vec![990..1000]));
        assert_eq!(r("bytes=990-5000", 1000), Ranges::Partial(vec![990..1000]));
        assert_eq!(r("bytes=-5000", 1000), Ranges::Partial(vec![0..1000]));
    }

    #[test]
    fn multiple_are_coalesced() {
        assert_eq!(
            r("bytes=0-9, 20-29", 100),
            Ranges::Partial(vec![0..10, 20..30])
        );
        assert_eq!(r("bytes=0-9,5-19", 100), Ranges::Partial(vec![0..20]));
    }

    #[test]
    fn unsatisfiable_and_invalid() {
        assert_eq!(r("bytes=1000-", 1000), Ranges::Unsatisfiable);
        assert_eq!(r("bytes=-0", 1000), Ranges::Unsatisfiable);
        assert_eq!(r("bytes=5-2", 1000), Ranges::Full);
        assert_eq!(r("items=0-1", 1000), Ranges::Full);
        assert_eq!(r("bytes=abc", 1000), Ranges::Full);
    }

    /// Found by the `range` fuzz target: `bytes=-5` of an empty body was the empty range
    /// `0..0`, and the 206 built from it wrote `Content-Range: bytes 0-{0 - 1}/0` (a panic in
    /// debug builds, `0-18446744073709551615` in release).
    #[test]
    fn suffix_range_of_an_empty_representation_is_the_whole_of_it() {
        assert_eq!(r("bytes=-5", 0), Ranges::Full);
        assert_eq!(r("bytes=0-0, -5", 0), Ranges::Full);
        assert_eq!(r("bytes=0-", 0), Ranges::Unsatisfiable);
        assert_eq!(r("bytes=-0", 0), Ranges::Unsatisfiable);
    }

    #[test]
    fn first_byte_of_set() {
        let mut h = HeaderMap::new();
        h.insert("range", "bytes=500-600, 100-200".parse().unwrap());
        assert_eq!(first_byte(&h), Some(100));
        h.insert("range", "bytes=-100".parse().unwrap());
        assert_eq!(first_byte(&h), None);
    }

    /// Found by the `range` fuzz target: an If-Range with a byte beyond ASCII (legal in
    /// an entity-tag) was taken for no If-Range at all, so the range was served from a
    /// representation whose ETag had changed — the client splices two versions.
    #[test]
    fn if_range_with_non_ascii_bytes_is_compared_not_ignored() {
        let mut req = HeaderMap::new();
        let mut res = HeaderMap::new();
        res.insert("etag", HeaderValue::from_bytes(b"\"v\xe9\"").unwrap());
        req.insert("if-range", HeaderValue::from_bytes(b"\"v\xe8\"").unwrap());
        assert!(!if_range_matches(&req, &res));
        req.insert("if-range", HeaderValue::from_bytes(b"\"v\xe9\"").unwrap());
        assert!(if_range_matches(&req, &res));
        req.insert(
            "if-range",
            HeaderValue::from_bytes(b"Sun, 06 Nov 1994 \xff").unwrap(),
        );
        res.insert(
            "last-modified",
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert!(!if_range_matches(&req, &res));
        req.insert("if-range", HeaderValue::from_bytes(b"W/\"v\xe9\"").unwrap());
        assert!(!if_range_matches(&req, &res));
    }

    #[test]
    fn if_range_strong_etag_only() {
        let mut req = HeaderMap::new();
        let mut res = HeaderMap::new();
        res.insert("etag", "\"v1\"".parse().unwrap());
        req.insert("if-range", "\"v1\"".parse().unwrap());
        assert!(if_range_matches(&req, &res));
        req.insert("if-range", "\"v2\"".parse().unwrap());
        assert!(!if_range_matches(&req, &res));
        res.insert("etag", "W/\"v2\"".parse().unwrap());
        assert!(!if_range_matches(&req, &res));
    }
}
