//! Methods other than GET and HEAD: forwarded with their body streamed; a successful unsafe
//! method invalidates the URL and its same-origin `Location` / `Content-Location`
//! (RFC 9111 4.4). A POST's response that names the URL as its `Content-Location` with
//! explicit freshness is stored as the URL's response for later GETs ([`post`]).

mod post;

use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use http::{header, request, Method, Response, Uri};
use hyper::body::Incoming;

use cache::key::primary_key;

use super::{origin_error, Outcome, Phase};
use crate::http::headers::strip_hop_by_hop;
use crate::http::{stream_body, Body, BoxError};
use crate::origin::ClientBodyError;
use crate::state::State;

/// Methods other than GET/HEAD: forwarded with their body streamed; a successful unsafe
/// method invalidates the URL and its `Location` / `Content-Location` (RFC 9111 4.4).
pub(super) async fn unsafe_or_other(
    state: &Arc<State>,
    parts: request::Parts,
    body: Incoming,
    key: String,
) -> Outcome {
    let is_unsafe = !matches!(parts.method, Method::OPTIONS | Method::TRACE);
    // A failure reading the client's body is the client's fault: marked so, it becomes a
    // 400 rather than a 502 when the origin request fails on it.
    let body: Body =
        http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_err(body, |e| {
            BoxError::from(ClientBodyError(e))
        }));
    let uri = parts.uri.clone();
    // A POST's response may become the URL's GET response (see `post_answers_gets`).
    let post = (parts.method == Method::POST).then(|| parts.clone());
    let sent = match replayable(&parts) {
        // Small bodies of idempotent methods are read first, so the request can be sent
        // again if the pooled connection it went on was closed under it (servers close idle
        // keep-alive connections sooner than we let go of them: node's 5 s).
        Some(limit) => match read_small(body, limit).await {
            Ok(bytes) => state.send_idempotent(parts, bytes).await,
            Err(e) => Err(e),
        },
        None => state.send(parts, body).await,
    };
    let res = match sent {
        Ok(r) => r,
        Err(e) => return origin_error(&e, &uri),
    };
    let (mut rparts, rbody) = res.into_parts();
    strip_hop_by_hop(&mut rparts.headers);
    rparts.version = http::Version::HTTP_11;
    if is_unsafe && (rparts.status.is_success() || rparts.status.is_redirection()) {
        let mut keys = vec![key];
        for h in [header::LOCATION, header::CONTENT_LOCATION] {
            if let Some(k) = rparts
                .headers
                .get(&h)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| resolve(&uri, v))
            {
                keys.push(k);
            }
        }
        for k in keys {
            match state.cache.invalidate(&k).await {
                Ok(n) if n > 0 => tracing::debug!(key = %k, n, "invalidated"),
                Ok(_) => {}
                Err(e) => tracing::warn!(key = %k, "invalidate: {e}"),
            }
        }
    }
    let fwd = Some(rparts.status.as_u16());
    let body = state.origin.body_stream(rbody).map_err(BoxError::from);
    if let Some(post) = post.filter(|_| post_answers_gets(&uri, &rparts.headers)) {
        return post::store(state, post, rparts, body.boxed());
    }
    Outcome::new(
        Response::from_parts(rparts, stream_body(body)),
        Phase::Bypass("method"),
        fwd,
    )
}

/// RFC 9110 9.3.3: a response to a POST is the URL's representation for later GETs only
/// when it says so — a `Content-Location` that is the request's own URL — and states its
/// freshness explicitly (`max-age`, `s-maxage` or `Expires`).
fn post_answers_gets(uri: &Uri, h: &http::HeaderMap) -> bool {
    let same = h
        .get(header::CONTENT_LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| resolve(uri, v))
        .is_some_and(|k| primary_key(uri).is_some_and(|own| own == k));
    let cc = cache::policy::directives(h, "cache-control");
    let explicit = h.contains_key(header::EXPIRES)
        || cc.iter().any(|(k, _)| k == "max-age" || k == "s-maxage");
    same && explicit
}

/// Largest body read into memory to make an idempotent request repeatable.
const REPLAYABLE_MAX: u64 = 64 << 10;

/// For an idempotent method (RFC 9110 9.2.2) with a body of known, small length: that
/// length. Others stream their body and are sent once.
fn replayable(parts: &request::Parts) -> Option<u64> {
    let idempotent = matches!(
        parts.method,
        Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    if !idempotent || parts.headers.contains_key(header::TRANSFER_ENCODING) {
        return None;
    }
    let len = super::content_length(&parts.headers).unwrap_or(0);
    (len <= REPLAYABLE_MAX).then_some(len)
}

/// Reads a body of at most `limit` bytes; a failure is the client's (a 400, as when the
/// body is streamed).
async fn read_small(
    mut body: Body,
    limit: u64,
) -> Result<bytes::Bytes, crate::origin::OriginError> {
    use http_body_util::BodyExt;
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| crate::origin::OriginError::ClientBody(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if (out.len() + data.len()) as u64 > limit {
                return Err(crate::origin::OriginError::ClientBody(
                    "the body is longer than its Content-Length".into(),
                ));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

/// Resolves a `Location`-style reference against the request URI (RFC 3986, with the
/// `url` crate); only references on the same origin are returned (RFC 9111 4.4: never
/// invalidate another origin's entries).
fn resolve(base: &Uri, reference: &str) -> Option<String> {
    let base_url = url::Url::parse(&base.to_string()).ok()?;
    let abs: Uri = base_url.join(reference).ok()?.as_str().parse().ok()?;
    let k = primary_key(&abs)?;
    let base_key = primary_key(base)?;
    let origin_of = |k: &str| k.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    (origin_of(&k) == origin_of(&base_key)).then_some(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_resolution_stays_on_the_same_origin() {
        let base: Uri = "http://a.example/x/y".parse().unwrap();
        assert_eq!(resolve(&base, "/z").as_deref(), Some("http://a.example/z"));
        assert_eq!(
            resolve(&base, "http://A.example:80/q").as_deref(),
            Some("http://a.example/q")
        );
        assert_eq!(resolve(&base, "http://b.example/q"), None);
        assert_eq!(resolve(&base, "//b.example/q"), None);
        assert_eq!(resolve(&base, "z").as_deref(), Some("http://a.example/x/z"));
        assert_eq!(
            resolve(&base, "../w?q=1").as_deref(),
            Some("http://a.example/w?q=1")
        );
    }
}
