//! The request flow (DESIGN.md, "One request"): classify, look up, revalidate, fill with
//! one origin fetch per object, serve, and invalidate on unsafe methods.
//!
//! A GET or HEAD is first turned into a [`Decision`] (what the stored state allows: fresh,
//! stale-while-revalidate, revalidate, miss, or an `only-if-cached` refusal), which
//! [`cached`] then carries out; the way a response was produced is a [`Phase`], which the
//! edge turns into `Cache-Status`. Submodules, in the order a miss meets them: [`miss`]
//! (join the key's fill, or go around it), [`peer`] and [`peer_body`] (what nearby devices
//! send), [`lead`] (the one origin request of a fill), [`revalidate`] (a 304), and
//! [`invalidate`] (unsafe methods).

mod integrity;
mod invalidate;
mod lead;
mod miss;
mod partial;
mod peer;
mod peer_body;
mod phase;
pub(crate) mod prefetch;
mod revalidate;
mod stranger;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::TryStreamExt;
use http::header::{self, HeaderValue};
use http::{request, Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use cache::key::primary_key;
use cache::policy::{self, Verdict};
use cache::Entry;

pub use phase::{HeldBytes, Phase, RuleApplied};

use crate::http::headers::strip_hop_by_hop;
use crate::http::respond::{self, entry_headers, Source};
use crate::http::{empty, stream_body, text, Body, BoxError};
use crate::origin::destination::Refused;
use crate::origin::OriginError;
use crate::state::State;

/// The result of one request before the edge adds `Cache-Status`, `Via` and logging.
pub struct Outcome {
    pub response: Response<Body>,
    pub phase: Phase,
    /// Status the origin answered with, when it was asked.
    pub fwd_status: Option<u16>,
}

impl Outcome {
    fn new(response: Response<Body>, phase: Phase, fwd_status: Option<u16>) -> Self {
        Self {
            response,
            phase,
            fwd_status,
        }
    }
}

/// An error answered by the proxy itself.
pub fn local_error(status: StatusCode, why: &'static str, message: String) -> Outcome {
    Outcome::new(text(status, message), Phase::Local(why), None)
}

pub(crate) fn origin_error(e: &OriginError, uri: &Uri) -> Outcome {
    if let OriginError::Refused(r) = e {
        return refused(r, &uri.to_string());
    }
    let fault = e.fault();
    tracing::info!(%uri, ?fault, "the request to the origin failed: {e}");
    let why = match fault {
        crate::origin::Fault::Client => "client-error",
        crate::origin::Fault::Origin => "origin-error",
        crate::origin::Fault::Upstream => "upstream-error",
    };
    local_error(e.status(), why, format!("meshcache: {uri}: {e}\n"))
}

/// A destination the policy refused: 403, naming the rule and the setting that changes it.
pub(crate) fn refused(r: &Refused, target: &str) -> Outcome {
    tracing::warn!(target, rule = r.rule_name(), "destination refused: {r}");
    local_error(
        StatusCode::FORBIDDEN,
        "destination-refused",
        format!("meshcache: refused {target}: {r}\n"),
    )
}

/// A stale entry that may stand in if revalidation fails.
pub(crate) struct Stale {
    entry: Arc<Entry>,
    revalidation: http::HeaderMap,
    serve_on_error: bool,
}

/// What the stored state allows for a GET or HEAD, before anything is fetched.
enum Decision {
    /// A stored entry that may be served as it is.
    Fresh(Arc<Entry>),
    /// A stale entry served at once while a background request refreshes it.
    StaleWhileRevalidate(Arc<Entry>, http::HeaderMap),
    /// A stale entry to revalidate with the origin (it may stand in if that fails).
    Revalidate(Stale),
    /// Nothing usable stored; `vary_miss` when the URL is stored for other `Vary` values.
    Miss { vary_miss: bool },
    /// `only-if-cached` and nothing fresh: 504 without asking anyone.
    OnlyIfCached(&'static str),
}

/// Reads the stored state for `key` and decides; nothing is fetched or changed here.
fn decide(state: &State, parts: &request::Parts, key: &str) -> Decision {
    let cache = &state.cache;
    let entry = match cache.lookup(key, &parts.headers) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(%key, "index lookup failed, forwarding: {e}");
            None
        }
    };
    let only_if_cached = policy::only_if_cached(&parts.headers);
    let Some(entry) = entry else {
        if only_if_cached {
            return Decision::OnlyIfCached("not in cache");
        }
        return Decision::Miss {
            vary_miss: cache.lookup_any(key),
        };
    };
    let now = cache.now();
    if policy::fresh_as_is(&entry, parts, now) {
        return Decision::Fresh(entry);
    }
    match policy::evaluate(&entry, parts, now, cache.options().shared) {
        Verdict::Fresh => Decision::Fresh(entry),
        Verdict::Revalidate { .. } if only_if_cached => {
            Decision::OnlyIfCached("stored response is stale")
        }
        Verdict::Revalidate {
            headers,
            serve_stale_while_revalidating: true,
            ..
        } => Decision::StaleWhileRevalidate(entry, headers),
        Verdict::Revalidate {
            headers,
            serve_stale_on_error,
            ..
        } => Decision::Revalidate(Stale {
            entry,
            revalidation: headers,
            serve_on_error: serve_stale_on_error,
        }),
    }
}

/// Handles an absolute-form request (not CONNECT, not for the proxy itself).
pub async fn proxy(state: &Arc<State>, req: Request<Incoming>) -> Outcome {
    let Some(key) = primary_key(req.uri()) else {
        return local_error(
            StatusCode::BAD_REQUEST,
            "bad-url",
            format!(
                "meshcache: cannot proxy {}: only http:// and https:// URLs with a host\n",
                req.uri()
            ),
        );
    };
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // RFC 9112 3.2.2: a proxy replaces Host with the authority of the absolute-form target.
    if let Some(host) = parts
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(header::HOST, host);
    }
    if parts.method == Method::GET || parts.method == Method::HEAD {
        // A request that states its body's hash is a key of its own (see `integrity`).
        let key = match integrity::stated(&parts) {
            Ok(Some(digests)) => integrity::keyed(&key, &digests),
            Ok(None) => key,
            Err(bad) => return *bad,
        };
        cached(state, parts, key).await
    } else {
        invalidate::unsafe_or_other(state, parts, body, key).await
    }
}

/// Carries out the [`Decision`] for a GET or HEAD.
pub(crate) async fn cached(state: &Arc<State>, parts: request::Parts, key: String) -> Outcome {
    let cache = &state.cache;
    match decide(state, &parts, &key) {
        Decision::Fresh(entry) => {
            cache.touch(&key, entry.id);
            state.counters.hits.fetch_add(1, Ordering::Relaxed);
            let opts = cache.options();
            let rule = if opts.rules.is_empty() {
                None
            } else {
                let url = rule_url(&parts);
                policy::rule_of(&opts.rules, &url, &entry, cache.now(), opts.shared)
            };
            ruled(serve_entry(state, &parts, entry, Phase::Hit, None), rule)
        }
        Decision::StaleWhileRevalidate(entry, headers) => {
            lead::background_revalidate(state, &parts, key.clone(), &entry, headers);
            cache.touch(&key, entry.id);
            state.counters.hits.fetch_add(1, Ordering::Relaxed);
            serve_entry(state, &parts, entry, Phase::StaleWhileRevalidate, None)
        }
        Decision::Revalidate(stale) => miss::miss(state, parts, key, Some(stale), false).await,
        Decision::Miss { vary_miss } => miss::miss(state, parts, key, None, vary_miss).await,
        Decision::OnlyIfCached(why) => local_error(
            StatusCode::GATEWAY_TIMEOUT,
            "only-if-cached",
            format!("meshcache: {why} (only-if-cached)\n"),
        ),
    }
}

pub(crate) fn serve_entry(
    state: &State,
    parts: &request::Parts,
    entry: impl Into<Arc<Entry>>,
    phase: Phase,
    fwd: Option<u16>,
) -> Outcome {
    let entry = entry.into();
    let headers = entry_headers(&entry, state.cache.now());
    let status = entry.status_code();
    let len = Some(entry.len);
    let res = respond::respond(
        parts,
        status,
        headers,
        len,
        Source::Entry(state.cache.clone(), entry),
    );
    Outcome::new(res, phase, fwd)
}

/// What the operator's freshness rules match: the request's URL as the cache keys it (a
/// request that states its body's hash has a key of its own; its URL is matched).
pub(crate) fn rule_url(parts: &request::Parts) -> String {
    primary_key(&parts.uri).unwrap_or_default()
}

/// `out`, marked as made fresh by freshness rule `rule` (for `Cache-Status`).
pub(crate) fn ruled(mut out: Outcome, rule: Option<usize>) -> Outcome {
    if let Some(n) = rule {
        out.response.extensions_mut().insert(RuleApplied(n));
    }
    out
}

pub(crate) fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A miss forwarded without storing, and why.
pub(crate) async fn uncached_miss(
    state: &Arc<State>,
    parts: &request::Parts,
    vary_miss: bool,
    why: &'static str,
) -> Outcome {
    let phase = Phase::Miss {
        vary_miss,
        stored: false,
        detail: Some(why),
    };
    forward_uncached(state, parts, phase).await
}

/// Forwards a GET/HEAD to the origin and streams the answer back, storing nothing.
pub(crate) async fn forward_uncached(
    state: &Arc<State>,
    parts: &request::Parts,
    phase: Phase,
) -> Outcome {
    match state.send(parts.clone(), empty()).await {
        Err(e) => origin_error(&e, &parts.uri),
        Ok(res) => {
            let (mut rparts, body) = res.into_parts();
            strip_hop_by_hop(&mut rparts.headers);
            rparts.version = http::Version::HTTP_11;
            let fwd = Some(rparts.status.as_u16());
            let body = state.origin.body_stream(body).map_err(BoxError::from);
            Outcome::new(Response::from_parts(rparts, stream_body(body)), phase, fwd)
        }
    }
}
