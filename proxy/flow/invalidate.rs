//! Methods other than GET and HEAD: forwarded with their body streamed; a successful unsafe
//! method invalidates the URL and its same-origin `Location` / `Content-Location`
//! (RFC 9111 4.4).

use std::sync::Arc;

use futures_util::TryStreamExt;
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
    let res = match state.send(parts, body).await {
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
    Outcome::new(
        Response::from_parts(rparts, stream_body(body)),
        Phase::Bypass("method"),
        fwd,
    )
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
