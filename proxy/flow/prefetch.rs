//! Requests the proxy makes for itself (feed sync): the same flow as a client's GET — so
//! what arrives is an ordinary entry, stored through the key's fill, checked as any body
//! from a peer or the origin — with two differences carried in the request's extensions
//! (which no client can set): [`Prefetch`] says whether the origin may be asked at all
//! (else a miss nobody nearby can answer is a `504` with `not-nearby`), and
//! [`mesh::Nearby`] bounds what a peer's offer may be (newer than the copy here, no larger
//! than the budget allows) before a byte moves.

use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, StatusCode, Uri};

use cache::key::primary_key;

use super::{decide, miss, serve_entry, Decision, Outcome, Phase};
use crate::state::State;

/// A request made by the sync engine.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prefetch {
    /// The origin may be asked when nobody nearby has it.
    pub from_origin: bool,
}

/// What the sync engine wants of one URL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Want {
    /// A copy fetched from the origin after this time (ms since the epoch), from a peer:
    /// the one stored here is not looked at. `None`: what is stored will do.
    pub newer_than_ms: Option<u64>,
    /// The most bytes it may take.
    pub max_len: u64,
    pub from_origin: bool,
    /// With the owner's rights (local destinations allowed): the feed documents the
    /// config names, and media on the same host. Media elsewhere are fetched as any
    /// client's would be (a feed must not make the device reach into the LAN).
    pub admin: bool,
}

/// Fetches `uri` for the sync engine. The outcome's phase says where it came from
/// (`Hit`: it was here already); its body must be read to the end for the entry to be
/// stored (a peer's or the origin's fill goes on if it is dropped, see `cache::fill`).
pub(crate) async fn prefetch(state: &Arc<State>, uri: &Uri, want: Want) -> Outcome {
    let Some(key) = primary_key(uri) else {
        return super::local_error(
            StatusCode::BAD_REQUEST,
            "bad-url",
            format!("meshcache: cannot prefetch {uri}\n"),
        );
    };
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(uri.clone())
        .header(header::ACCEPT, "*/*")
        .header(header::USER_AGENT, "meshcache-sync")
        .body(())
        .expect("a GET with a valid URI builds");
    if let Some(host) = uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(header::HOST, host);
    }
    let (mut parts, ()) = req.into_parts();
    parts.extensions.insert(crate::client::Client::new(
        state.listen,
        want.admin,
        Arc::new(()),
    ));
    parts.extensions.insert(Prefetch {
        from_origin: want.from_origin,
    });
    parts.extensions.insert(mesh::Nearby {
        newer_than_ms: want.newer_than_ms.unwrap_or(0),
        max_len: want.max_len,
    });
    if want.newer_than_ms.is_some() {
        return miss::miss(state, parts, key, None, false).await;
    }
    match decide(state, &parts, &key) {
        Decision::Fresh(e) | Decision::StaleWhileRevalidate(e, _) => {
            serve_entry(state, &parts, e, Phase::Hit, None)
        }
        // Stale here: refreshed only where the origin may be asked; else it stands.
        Decision::Revalidate(stale) if want.from_origin => {
            miss::miss(state, parts, key, Some(stale), false).await
        }
        Decision::Revalidate(stale) => serve_entry(state, &parts, stale.entry, Phase::Hit, None),
        Decision::Miss { .. } | Decision::OnlyIfCached(_) => {
            miss::miss(state, parts, key, None, false).await
        }
    }
}

/// The answer to a prefetch that nobody nearby could serve and the origin may not.
pub(crate) fn not_nearby(uri: &http::Uri) -> Outcome {
    super::local_error(
        StatusCode::GATEWAY_TIMEOUT,
        "not-nearby",
        format!("meshcache: {uri}: no device nearby has it (sync.from_origin is off)\n"),
    )
}

/// May a prefetch take a response of this length from the origin? Only one whose length
/// is known and within its bound (the fill would go on past the budget otherwise).
pub(crate) fn origin_len_ok(parts: &http::request::Parts, len: Option<u64>) -> bool {
    match parts.extensions.get::<mesh::Nearby>() {
        Some(n) if parts.extensions.get::<Prefetch>().is_some() => {
            len.is_some_and(|l| l <= n.max_len)
        }
        _ => true,
    }
}
