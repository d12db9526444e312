//! The client states the hash (the open mesh's second rung, `docs/mesh.md`): a request
//! with `Meshcache-Integrity: sha256-<base64>` (SRI syntax) is served only a body that
//! hashes to it — from the store, a group peer, a stranger or the origin.
//!
//! Such a request is its own cache key (the URL's key and the stated digest, see
//! [`keyed`]): a body accepted because *this* client named its hash is never served to a
//! request that did not name the same hash, so one passenger cannot plant a body for
//! another. Everything stored under that key was checked against the digest (the fill's
//! [`cache::certify::Check`]).
//!
//! A mismatch from the origin is a `502` that says so when the body is at most
//! [`WAIT_MAX`] (it is checked before the response starts); a larger body streams with its
//! last 64 KiB held back and is cut off on a mismatch. Nothing is stored for it.

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use http::{request, HeaderMap, StatusCode};

use cache::certify::{self, Certified, Check};

use super::{local_error, Outcome};
use crate::http::BoxError;

/// Bodies up to this size are checked before the response starts (so a mismatch is a
/// clean `502`); larger ones stream, their end held back.
pub const WAIT_MAX: u64 = 16 << 20;

/// The digests the request states, or the `400` for a value that cannot be checked.
pub(super) fn stated(parts: &request::Parts) -> Result<Option<Vec<Certified>>, Box<Outcome>> {
    let Some(v) = parts.headers.get(certify::INTEGRITY) else {
        return Ok(None);
    };
    certify::integrity(v).map(Some).map_err(|e| {
        Box::new(local_error(
            StatusCode::BAD_REQUEST,
            "bad-integrity",
            format!("meshcache: {e}\n"),
        ))
    })
}

/// The cache key of a request that states `digests`: the URL's key, then `#integrity=`
/// and the smallest stated value (a request URI never has a fragment, so no URL's key
/// looks like this).
pub(super) fn keyed(key: &str, digests: &[Certified]) -> String {
    let mut values: Vec<String> = digests.iter().map(Certified::sri).collect();
    values.sort();
    format!("{key}#integrity={}", values.first().map_or("", |v| v))
}

/// Every digest the body of a `200` for this request must have: its URL's rule, the
/// client's stated integrity, and the digest the origin itself states in `origin`'s
/// headers (a response this device received over its own connection).
pub(super) fn expected(parts: &request::Parts, origin: Option<&HeaderMap>) -> Vec<Certified> {
    let mut out: Vec<Certified> =
        certify::certify(&parts.uri, parts.headers.get(http::header::ACCEPT))
            .into_iter()
            .collect();
    if let Some(Ok(list)) = parts
        .headers
        .get(certify::INTEGRITY)
        .map(certify::integrity)
    {
        out.extend(list);
    }
    if let Some(h) = origin {
        out.extend(certify::stated_digest(h));
    }
    out
}

/// Adds a `Content-Digest` for the first checkable digest when the response has none: the
/// fill stores the body only if it matches, so the stored header is true (and lets this
/// device answer strangers who ask by that digest).
pub(super) fn add_content_digest(headers: &mut HeaderMap, expected: &[Certified]) {
    if headers.contains_key("content-digest") {
        return;
    }
    if let Some(v) = expected.iter().find_map(|c| c.header_value()) {
        headers.insert("content-digest", v);
    }
}

/// A body that is not stored, checked against `expected`: collected and checked first when
/// it is at most [`WAIT_MAX`] (`Err` is the `502`), else streamed with its last
/// [`certify::HOLD_BACK`] bytes held until it matched.
pub(super) async fn check_body(
    body: BoxStream<'static, Result<Bytes, BoxError>>,
    len: Option<u64>,
    expected: &[Certified],
    uri: &http::Uri,
) -> Result<BoxStream<'static, Result<Bytes, BoxError>>, Box<Outcome>> {
    if len.is_some_and(|n| n <= WAIT_MAX) {
        let mut check = Check::all(expected);
        let mut all = Vec::new();
        let mut body = body;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(b) => {
                    check.update(&b);
                    all.extend_from_slice(&b);
                }
                Err(e) => return Err(Box::new(mismatch(uri, &format!("the body broke: {e}")))),
            }
        }
        return match check.finish() {
            Ok(()) => Ok(futures_util::stream::once(async move { Ok(Bytes::from(all)) }).boxed()),
            Err(e) => Err(Box::new(mismatch(uri, &e))),
        };
    }
    Ok(certify::held_back(body, Check::all(expected), |_| {}))
}

/// The `502` for a body that does not match what was stated.
pub(super) fn mismatch(uri: &http::Uri, why: &str) -> Outcome {
    tracing::warn!(%uri, "refused the origin's body: {why}");
    local_error(
        StatusCode::BAD_GATEWAY,
        "integrity-mismatch",
        format!("meshcache: {uri}: {why}; nothing was stored\n"),
    )
}
