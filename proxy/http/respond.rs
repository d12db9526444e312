//! Building the response a client gets from a stored or arriving body: conditional
//! requests answered locally (RFC 9110 13), HEAD, single and multiple ranges (RFC 9110 14),
//! `Age`.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use http::header::{self, HeaderValue};
use http::{request, HeaderMap, Method, Response, StatusCode};

use cache::{Cache, Entry, Fill};

use super::body::{empty, stream_body, Body, BoxError};
use super::range::{self, Ranges};

/// Where the body bytes come from.
pub enum Source {
    /// A stored entry.
    Entry(Cache, Arc<Entry>),
    /// A fill under way (this request's own or another's).
    Fill(Arc<Fill>),
    /// A body streamed straight from the origin, not stored.
    Stream(BoxStream<'static, Result<Bytes, BoxError>>),
    /// Ranges of a peer's body, fetched for this request (only those may be read).
    Peer(Arc<mesh::PartialBody>),
    /// A partial object (only ranges it holds are read: `respond` is given it only then).
    Partial(Arc<cache::Partial>),
}

impl Source {
    fn range(self, r: Range<u64>) -> BoxStream<'static, Result<Bytes, BoxError>> {
        match self {
            Source::Entry(cache, e) => cache.body(&e, r).map_err(BoxError::from).boxed(),
            Source::Fill(f) => f.read(r).map_err(BoxError::from).boxed(),
            Source::Stream(s) => skip_take(s, r).boxed(),
            Source::Partial(p) => p.read(r).map_err(BoxError::from).boxed(),
            Source::Peer(p) => {
                // The stream keeps the partial body (and its hold in the store) alive.
                let keep = p.clone();
                p.read(r)
                    .map(move |item| {
                        let _ = &keep;
                        item.map_err(BoxError::from)
                    })
                    .boxed()
            }
        }
    }

    fn fork(&self) -> Option<Source> {
        match self {
            Source::Entry(c, e) => Some(Source::Entry(c.clone(), e.clone())),
            Source::Fill(f) => Some(Source::Fill(f.clone())),
            Source::Stream(_) => None,
            Source::Peer(p) => Some(Source::Peer(p.clone())),
            Source::Partial(p) => Some(Source::Partial(p.clone())),
        }
    }
}

/// A stream narrowed to bytes `r` of what it yields.
fn skip_take(
    s: BoxStream<'static, Result<Bytes, BoxError>>,
    r: Range<u64>,
) -> impl futures_util::Stream<Item = Result<Bytes, BoxError>> {
    let mut pos = 0u64;
    s.try_filter_map(move |chunk| {
        let start = pos;
        let end = pos + chunk.len() as u64;
        pos = end;
        let (a, b) = (r.start.max(start), r.end.min(end));
        let out = (a < b).then(|| chunk.slice((a - start) as usize..(b - start) as usize));
        futures_util::future::ready(Ok(out))
    })
    .take_while({
        let end = r.end;
        let mut seen = 0u64;
        move |c| {
            let go = seen < end;
            if let Ok(b) = c {
                seen += b.len() as u64;
            }
            futures_util::future::ready(go)
        }
    })
}

fn etag_matches_weak(list: &str, etag: Option<&str>) -> bool {
    let Some(etag) = etag else {
        return list.trim() == "*";
    };
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let target = strip(etag);
    list.split(',')
        .any(|t| t.trim() == "*" || strip(t) == target)
}

/// True when the client's conditionals say it already has this representation (304).
fn not_modified(req: &HeaderMap, res: &HeaderMap) -> bool {
    let etag = res.get(header::ETAG).and_then(|v| v.to_str().ok());
    if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        return etag_matches_weak(inm, etag);
    }
    let ims = req
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let lm = res
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    matches!((ims, lm), (Some(ims), Some(lm)) if lm <= ims)
}

/// Fields a 304 carries (RFC 9110 15.4.5).
const NOT_MODIFIED_KEEP: &[&str] = &[
    "cache-control",
    "content-location",
    "date",
    "etag",
    "expires",
    "vary",
    "last-modified",
    "age",
];

/// Builds the response for `req` from a representation with these status, headers, length
/// and body source.
pub fn respond(
    req: &request::Parts,
    status: StatusCode,
    mut headers: HeaderMap,
    len: Option<u64>,
    source: Source,
) -> Response<Body> {
    let is_head = req.method == Method::HEAD;
    if status == StatusCode::OK && not_modified(&req.headers, &headers) {
        let mut h = HeaderMap::new();
        for name in NOT_MODIFIED_KEEP {
            for v in headers.get_all(*name) {
                h.append(*name, v.clone());
            }
        }
        return build(StatusCode::NOT_MODIFIED, h, empty());
    }
    if let Some(len) = len {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    let rangeable = status == StatusCode::OK && len.is_some();
    if rangeable {
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    let len_v = len.unwrap_or(0);
    let ranges = if rangeable && range::if_range_matches(&req.headers, &headers) {
        range::parse(&req.headers, len_v)
    } else {
        Ranges::Full
    };
    // A body passing through uncached can be read once only: several ranges of it cannot
    // be cut out, so such a request gets the whole representation (RFC 9110 14.2 allows
    // ignoring Range).
    let ranges = match ranges {
        Ranges::Partial(list) if list.len() > 1 && matches!(source, Source::Stream(_)) => {
            Ranges::Full
        }
        other => other,
    };
    match ranges {
        Ranges::Full => {
            let body = if is_head {
                empty()
            } else {
                stream_body(source.range(0..len.unwrap_or(u64::MAX)))
            };
            build(status, headers, body)
        }
        Ranges::Unsatisfiable => {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_RANGE, hv(format!("bytes */{len_v}")));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            build(StatusCode::RANGE_NOT_SATISFIABLE, h, empty())
        }
        Ranges::Partial(list) if list.len() == 1 => {
            let r = list[0].clone();
            headers.insert(
                header::CONTENT_RANGE,
                hv(format!("bytes {}-{}/{len_v}", r.start, r.end - 1)),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(r.end - r.start));
            let body = if is_head {
                empty()
            } else {
                stream_body(source.range(r))
            };
            build(StatusCode::PARTIAL_CONTENT, headers, body)
        }
        Ranges::Partial(list) => multipart(headers, len_v, list, source, is_head),
    }
}

fn multipart(
    mut headers: HeaderMap,
    len: u64,
    list: Vec<Range<u64>>,
    source: Source,
    is_head: bool,
) -> Response<Body> {
    let boundary = format!("meshcache{:016x}", super::random_u64());
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let mut total = 0u64;
    let mut parts: Vec<BoxStream<'static, Result<Bytes, BoxError>>> = Vec::new();
    for r in &list {
        let head = format!(
            "\r\n--{boundary}\r\nContent-Type: {ctype}\r\nContent-Range: bytes {}-{}/{len}\r\n\r\n",
            r.start,
            r.end - 1
        );
        total += head.len() as u64 + (r.end - r.start);
        parts.push(futures_util::stream::once(async move { Ok(Bytes::from(head)) }).boxed());
        // `respond` never sends a pass-through stream here, so a fork always exists.
        if let Some(s) = source.fork() {
            parts.push(s.range(r.clone()));
        }
    }
    let tail = format!("\r\n--{boundary}--\r\n");
    total += tail.len() as u64;
    parts.push(futures_util::stream::once(async move { Ok(Bytes::from(tail)) }).boxed());
    headers.insert(
        header::CONTENT_TYPE,
        hv(format!("multipart/byteranges; boundary={boundary}")),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    headers.remove(header::CONTENT_RANGE);
    let body = if is_head {
        empty()
    } else {
        stream_body(futures_util::stream::iter(parts).flatten())
    };
    build(StatusCode::PARTIAL_CONTENT, headers, body)
}

fn hv(s: String) -> HeaderValue {
    HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static(""))
}

pub fn build(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    res
}

/// The response head of a stored entry, with `Age` for `now`.
pub fn entry_headers(entry: &Entry, now: std::time::SystemTime) -> HeaderMap {
    let mut h = entry.header_map();
    h.insert(
        header::AGE,
        HeaderValue::from(entry.policy.age(now).as_secs()),
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_uses_weak_comparison_and_star() {
        let mut res = HeaderMap::new();
        res.insert("etag", "W/\"a\"".parse().unwrap());
        let mut req = HeaderMap::new();
        req.insert("if-none-match", "\"x\", \"a\"".parse().unwrap());
        assert!(not_modified(&req, &res));
        req.insert("if-none-match", "\"b\"".parse().unwrap());
        assert!(!not_modified(&req, &res));
        req.insert("if-none-match", "*".parse().unwrap());
        assert!(not_modified(&req, &res));
    }

    #[test]
    fn if_modified_since_compares_dates_and_yields_to_if_none_match() {
        let mut res = HeaderMap::new();
        res.insert(
            "last-modified",
            "Tue, 01 Jan 2030 00:00:00 GMT".parse().unwrap(),
        );
        let mut req = HeaderMap::new();
        req.insert(
            "if-modified-since",
            "Tue, 01 Jan 2030 00:00:00 GMT".parse().unwrap(),
        );
        assert!(not_modified(&req, &res));
        req.insert(
            "if-modified-since",
            "Mon, 31 Dec 2029 00:00:00 GMT".parse().unwrap(),
        );
        assert!(!not_modified(&req, &res));
        req.insert(
            "if-modified-since",
            "Tue, 01 Jan 2030 00:00:00 GMT".parse().unwrap(),
        );
        req.insert("if-none-match", "\"zzz\"".parse().unwrap());
        assert!(!not_modified(&req, &res));
    }

    #[tokio::test]
    async fn skip_take_narrows_a_stream() {
        let chunks: Vec<Result<Bytes, BoxError>> = vec![
            Ok(Bytes::from_static(b"hello ")),
            Ok(Bytes::from_static(b"world")),
        ];
        let s = futures_util::stream::iter(chunks).boxed();
        let out: Vec<Bytes> = skip_take(s, 4..8).try_collect().await.unwrap();
        assert_eq!(out.concat(), b"o wo");
    }
}
