//! The request flow (DESIGN.md, "One request"): classify, look up, revalidate, fill with
//! one origin fetch per object, serve, and invalidate on unsafe methods.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::header::{self, HeaderValue};
use http::{request, Method, Request, Response, StatusCode, Uri};
use http_cache_semantics::AfterResponse;
use hyper::body::Incoming;

use cache::fill::Head;
use cache::key::{primary_key, variant_key, vary_names};
use cache::policy::{self, Storability, Verdict};
use cache::{Entry, Join, Leader, Pending};

use crate::headers::{strip_hop_by_hop, Phase};
use crate::origin::OriginError;
use crate::respond::{self, entry_headers, Source};
use crate::state::State;
use crate::{empty, text, Body, BoxError};

/// How long a request waits for a just-finished download to be stored.
const COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

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

fn origin_error(e: &OriginError, uri: &Uri) -> Outcome {
    tracing::info!(%uri, "origin failed: {e}");
    local_error(
        e.status(),
        "origin-error",
        format!("meshcache: {uri}: {e}\n"),
    )
}

/// A stale entry that may stand in if revalidation fails.
struct Stale {
    entry: Entry,
    revalidation: http::HeaderMap,
    serve_on_error: bool,
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
        cached(state, parts, key).await
    } else {
        unsafe_or_other(state, parts, body, key).await
    }
}

async fn cached(state: &Arc<State>, parts: request::Parts, key: String) -> Outcome {
    let cache = &state.cache;
    let now = cache.now();
    let entry = match cache.lookup(&key, &parts.headers) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(%key, "index lookup failed, forwarding: {e}");
            None
        }
    };
    let Some(entry) = entry else {
        if policy::only_if_cached(&parts.headers) {
            return local_error(
                StatusCode::GATEWAY_TIMEOUT,
                "only-if-cached",
                "meshcache: not in cache (only-if-cached)\n".into(),
            );
        }
        let vary_miss = cache.lookup_any(&key);
        return miss(state, parts, key, None, vary_miss).await;
    };
    match policy::evaluate(&entry, &parts, now, cache.options().shared) {
        Verdict::Fresh => {
            cache.touch(&key, entry.id);
            state.counters.hits.fetch_add(1, Ordering::Relaxed);
            serve_entry(state, &parts, entry, Phase::Hit, None)
        }
        Verdict::Revalidate {
            headers,
            serve_stale_while_revalidating,
            serve_stale_on_error,
        } => {
            if policy::only_if_cached(&parts.headers) {
                return local_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "only-if-cached",
                    "meshcache: stored response is stale (only-if-cached)\n".into(),
                );
            }
            if serve_stale_while_revalidating {
                background_revalidate(state, &parts, key.clone(), &entry, headers);
                cache.touch(&key, entry.id);
                state.counters.hits.fetch_add(1, Ordering::Relaxed);
                return serve_entry(state, &parts, entry, Phase::StaleWhileRevalidate, None);
            }
            let stale = Stale {
                entry,
                revalidation: headers,
                serve_on_error: serve_stale_on_error,
            };
            miss(state, parts, key, Some(stale), false).await
        }
    }
}

fn serve_entry(
    state: &State,
    parts: &request::Parts,
    entry: Entry,
    phase: Phase,
    fwd: Option<u16>,
) -> Outcome {
    let headers = entry_headers(&entry, state.cache.now());
    let status = entry.status_code();
    let len = Some(entry.len);
    let res = respond::respond(
        parts,
        status,
        headers,
        len,
        Source::Entry(state.cache.clone(), Box::new(entry)),
    );
    Outcome::new(res, phase, fwd)
}

/// Serves stale while a background task revalidates (RFC 5861 `stale-while-revalidate`).
fn background_revalidate(
    state: &Arc<State>,
    parts: &request::Parts,
    key: String,
    entry: &Entry,
    revalidation: http::HeaderMap,
) {
    let state = state.clone();
    let mut parts = parts.clone();
    parts.method = Method::GET;
    parts.headers.remove(header::RANGE);
    let stale = Stale {
        entry: entry.clone(),
        revalidation,
        serve_on_error: false,
    };
    tokio::spawn(async move {
        if let Join::Leader(leader) = state.cache.join_fill(&key) {
            // The response is dropped: the fill (if any) carries on in the background.
            let _ = lead(&state, parts, key, leader, Some(stale), false).await;
        }
    });
}

async fn miss(
    state: &Arc<State>,
    parts: request::Parts,
    key: String,
    stale: Option<Stale>,
    vary_miss: bool,
) -> Outcome {
    let cache = &state.cache;
    state.counters.misses.fetch_add(1, Ordering::Relaxed);
    if cache.pass_through() {
        // The disk is full: stored entries are still served, nothing new is stored.
        return forward_uncached(state, &parts, Phase::Bypass("disk-full")).await;
    }
    if parts.method == Method::HEAD {
        // A HEAD while a GET fills the object is answered from the fill's head.
        if let Some(fill) = cache.fill_in_progress(&key) {
            if let Some(head) = fill
                .head_now()
                .filter(|h| collapsible(h, &parts, cache.now()))
            {
                return from_fill(&parts, fill, &head);
            }
        }
        // Otherwise a HEAD miss is forwarded as is; only a GET fills.
        return uncached_miss(state, &parts, vary_miss, "head").await;
    }
    if policy::request_no_store(&parts.headers) {
        return uncached_miss(state, &parts, vary_miss, "no-store").await;
    }
    // A Range miss fills the whole object only when its first byte is near the start (or
    // near where an ongoing fill has got to); a seek far ahead is forwarded as a range.
    if let Some(first) = crate::range::first_byte(&parts.headers) {
        let limit = cache.options().range_offset_limit;
        let reach = cache
            .fill_in_progress(&key)
            .map(|f| f.written())
            .unwrap_or(0)
            + limit;
        if first > reach {
            // A seek far ahead: a peer holding the object sends just those bytes.
            let mesh = state
                .mesh
                .as_ref()
                .filter(|_| mesh_eligible(&parts) && !parts.headers.contains_key(header::IF_RANGE));
            if let Some(m) = mesh {
                let want = |len| match crate::range::parse(&parts.headers, len) {
                    crate::range::Ranges::Partial(list) => list,
                    _ => Vec::new(),
                };
                if let Some(p) = m.find_ranges(&key, &parts, want).await {
                    return from_peer_ranges(state, &parts, p);
                }
            }
            return uncached_miss(state, &parts, vary_miss, "range-forwarded").await;
        }
    }
    match cache.join_fill(&key) {
        Join::Leader(leader) => {
            // Under the key's single-flight lock: ask nearby devices before the origin,
            // and tell them meanwhile that this device is on it.
            let mesh = state
                .mesh
                .as_ref()
                .filter(|_| stale.is_none() && mesh_eligible(&parts));
            let seek = mesh.map(|m| m.seek(&key));
            if let Some(m) = mesh {
                if let Some(found) = m.find(&key, &parts, false).await {
                    return from_peer(state, &parts, &key, leader, found);
                }
            }
            if let Some(s) = &seek {
                s.fetching();
            }
            let out = lead(state, parts, key, leader, stale, vary_miss).await;
            drop(seek);
            out
        }
        Join::Follower(fill) => {
            let Some(head) = fill.head().await else {
                // The leader did not fill: it refreshed a stale entry, or the response may
                // not be shared. Look once more, then go alone.
                if let Ok(Some(e)) = cache.lookup(&key, &parts.headers) {
                    if matches!(
                        policy::evaluate(&e, &parts, cache.now(), cache.options().shared),
                        Verdict::Fresh
                    ) {
                        cache.touch(&key, e.id);
                        return serve_entry(state, &parts, e, Phase::Hit, None);
                    }
                }
                return uncached_miss(state, &parts, vary_miss, "not-collapsible").await;
            };
            // Joining is a hit on a response that is still arriving: only if this request
            // would accept that response as fresh.
            let acceptable = head
                .policy
                .as_ref()
                .is_some_and(|p| policy::fresh_for(p, &parts, cache.now()));
            if !acceptable {
                // A download that has just finished is about to be stored: wait for it,
                // then take the normal path (a stored entry can be revalidated).
                if fill.body_complete()
                    && tokio::time::timeout(COMMIT_WAIT, fill.finished())
                        .await
                        .is_ok()
                    && cache.lookup_any(&key)
                {
                    return Box::pin(cached(state, parts, key)).await;
                }
                return uncached_miss(state, &parts, vary_miss, "not-collapsible").await;
            }
            if variant_key(&head.vary, &parts.headers) != head.variant {
                return uncached_miss(state, &parts, true, "other-variant").await;
            }
            state.counters.hits.fetch_add(1, Ordering::Relaxed);
            from_fill(&parts, fill, &head)
        }
    }
}

/// May the mesh be asked for this request? Only requests whose response could be shared:
/// a GET without credentials (DESIGN.md, "Never shared").
fn mesh_eligible(parts: &request::Parts) -> bool {
    parts.method == Method::GET
        && !parts.headers.contains_key(header::AUTHORIZATION)
        && !parts.headers.contains_key(header::COOKIE)
        && !policy::request_no_store(&parts.headers)
}

/// Serves what a peer has: an entry already stored, or a body streaming in, which is
/// stored through this key's fill (so other clients of this device join it).
fn from_peer(
    state: &Arc<State>,
    parts: &request::Parts,
    key: &str,
    leader: Leader,
    found: mesh::Found,
) -> Outcome {
    state.counters.peer_hits.fetch_add(1, Ordering::Relaxed);
    let phase = Phase::Peer {
        peer: found.peer,
        stale: found.stale,
    };
    let e = found.entry;
    let Some(body) = found.body else {
        drop(leader);
        state.cache.touch(key, e.id);
        return serve_entry(state, parts, e, phase, None);
    };
    let now = state.cache.now();
    let head = Head {
        policy: Some(Box::new(e.policy.clone())),
        status: e.status_code(),
        headers: e.header_map(),
        len: Some(e.len),
        vary: e.vary.clone(),
        variant: e.variant.clone(),
        shareable: true,
    };
    let pending = Pending {
        policy: e.policy.clone(),
        shareable: true,
        fresh_until: std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.fresh_until_ms),
        fetched_at: now,
        from_peer: e.attestation.clone().map(|a| (a, e.hash)),
    };
    let body = crate::peer_body::whole(state.clone(), parts, &e, body);
    let fill = state.cache.start_fill(leader, head, pending, body);
    let res = respond::respond(
        parts,
        e.status_code(),
        entry_headers(&e, now),
        Some(e.len),
        Source::Fill(fill),
    );
    Outcome::new(res, phase, None)
}

/// Serves byte ranges a peer just sent (nothing is stored).
fn from_peer_ranges(state: &State, parts: &request::Parts, p: mesh::PartialBody) -> Outcome {
    state.counters.peer_hits.fetch_add(1, Ordering::Relaxed);
    let headers = entry_headers(&p.entry, state.cache.now());
    let (status, len) = (p.entry.status_code(), Some(p.entry.len));
    let phase = Phase::PeerRange {
        peer: p.peer.clone(),
    };
    let res = respond::respond(parts, status, headers, len, Source::Peer(Arc::new(p)));
    Outcome::new(res, phase, None)
}

/// May this request take the response of a fill under way? Only the variant it selects,
/// and only if it would accept that response as a fresh hit (its own `no-cache`,
/// `min-fresh`, … apply).
fn collapsible(head: &Head, parts: &request::Parts, now: std::time::SystemTime) -> bool {
    variant_key(&head.vary, &parts.headers) == head.variant
        && head
            .policy
            .as_ref()
            .is_some_and(|p| policy::fresh_for(p, parts, now))
}

/// Serves a request from a fill under way (collapsed forwarding).
fn from_fill(parts: &request::Parts, fill: Arc<cache::Fill>, head: &Head) -> Outcome {
    let res = respond::respond(
        parts,
        head.status,
        head.headers.clone(),
        head.len,
        Source::Fill(fill),
    );
    Outcome::new(res, Phase::Collapsed, None)
}

/// The leader of a fill: one request to the origin for the whole representation.
async fn lead(
    state: &Arc<State>,
    parts: request::Parts,
    key: String,
    leader: Leader,
    stale: Option<Stale>,
    vary_miss: bool,
) -> Outcome {
    let cache = &state.cache;
    let mut oreq = parts.clone();
    // The fill fetches the whole representation for everyone: the client's range and its
    // own validators are answered locally from it.
    for h in crate::headers::CLIENT_CONDITIONALS {
        oreq.headers.remove(h);
    }
    if let Some(s) = &stale {
        for h in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
            if let Some(v) = s.revalidation.get(&h) {
                oreq.headers.insert(h, v.clone());
            }
        }
    }
    let sent_at = cache.now();
    let res = match state.send(oreq, empty()).await {
        Ok(r) => r,
        Err(e) => {
            if let Some(s) = stale {
                let disconnected = e.unreachable() || matches!(e, OriginError::Protocol(_));
                if s.serve_on_error || (disconnected && may_serve_disconnected(&s.entry)) {
                    drop(leader);
                    tracing::info!(%key, "origin failed ({e}); serving stale");
                    let why = if disconnected {
                        "origin-unreachable"
                    } else {
                        "stale-if-error"
                    };
                    return serve_entry(
                        state,
                        &parts,
                        s.entry,
                        Phase::StaleOnError(why.into()),
                        None,
                    );
                }
            }
            // Offline: a peer's copy, even one this device would call stale, beats an error.
            if let Some(m) = state
                .mesh
                .as_ref()
                .filter(|_| e.unreachable() && mesh_eligible(&parts))
            {
                if let Some(found) = m.find(&key, &parts, true).await {
                    tracing::info!(%key, peer = %found.peer, "origin unreachable; served from a peer");
                    return from_peer(state, &parts, &key, leader, found);
                }
            }
            drop(leader);
            return origin_error(&e, &parts.uri);
        }
    };
    let now = cache.now();
    let (mut rparts, rbody) = res.into_parts();
    let fwd = Some(rparts.status.as_u16());
    strip_hop_by_hop(&mut rparts.headers);
    if let Some(s) = &stale {
        if rparts.status == StatusCode::NOT_MODIFIED {
            drop(rbody);
            return revalidated(state, &parts, &key, leader, s, &rparts, sent_at).await;
        }
    }
    if let Some(s) = stale
        .as_ref()
        .filter(|s| s.serve_on_error && rparts.status.is_server_error())
    {
        drop(leader);
        let phase = Phase::StaleOnError("stale-if-error".into());
        return serve_entry(state, &parts, s.entry.clone(), phase, fwd);
    }
    let len = content_length(&rparts.headers);
    let decision = if rparts.status == StatusCode::PARTIAL_CONTENT
        || rparts.status == StatusCode::NOT_MODIFIED
    {
        Storability::No(policy::NoStoreReason::Status)
    } else if len.is_some_and(|n| n > cache.options().max_object_size) {
        Storability::No(policy::NoStoreReason::TooLarge)
    } else if cache.pass_through() || !cache.has_room(len) {
        Storability::No(policy::NoStoreReason::DiskFull)
    } else {
        policy::storability(cache.options().policy(), &parts, &rparts, now)
    };
    let stale_phase = stale.is_some();
    match decision {
        Storability::Store {
            policy,
            shareable,
            fresh_until,
        } => {
            let vary = vary_names(&rparts.headers).unwrap_or_default();
            let head = Head {
                policy: Some(policy.clone()),
                status: rparts.status,
                headers: rparts.headers.clone(),
                len,
                variant: variant_key(&vary, &parts.headers),
                vary,
                shareable,
            };
            let body = state.origin.body_stream(rbody);
            let fill = cache.start_fill(
                leader,
                head,
                Pending {
                    policy: *policy,
                    shareable,
                    fresh_until,
                    fetched_at: now,
                    from_peer: None,
                },
                body,
            );
            let phase = if stale_phase {
                Phase::StaleReplaced { stored: true }
            } else {
                Phase::Miss {
                    vary_miss,
                    stored: true,
                    detail: None,
                }
            };
            let res = respond::respond(
                &parts,
                rparts.status,
                rparts.headers,
                len,
                Source::Fill(fill),
            );
            Outcome::new(res, phase, fwd)
        }
        Storability::No(reason) => {
            drop(leader);
            tracing::debug!(%key, reason = reason.as_str(), "not stored");
            let body = state
                .origin
                .body_stream(rbody)
                .map_err(BoxError::from)
                .boxed();
            let phase = if stale_phase {
                Phase::StaleReplaced { stored: false }
            } else {
                Phase::Miss {
                    vary_miss,
                    stored: false,
                    detail: Some(reason.as_str()),
                }
            };
            let res = respond::respond(
                &parts,
                rparts.status,
                rparts.headers,
                len,
                Source::Stream(body),
            );
            Outcome::new(res, phase, fwd)
        }
    }
}

/// RFC 9111 4.2.4: a disconnected cache may serve stale, unless the response forbids it.
/// An origin that closes the connection without a response counts as disconnected.
fn may_serve_disconnected(entry: &Entry) -> bool {
    let h = entry.header_map();
    !policy::directives(&h, "cache-control")
        .iter()
        .any(|(k, _)| {
            k == "must-revalidate" || k == "proxy-revalidate" || k == "no-cache" || k == "s-maxage"
        })
}

/// A 304 for a stale entry: update its stored headers and serve it (RFC 9111 4.3.4).
async fn revalidated(
    state: &Arc<State>,
    parts: &request::Parts,
    key: &str,
    leader: Leader,
    stale: &Stale,
    rparts: &http::response::Parts,
    sent_at: std::time::SystemTime,
) -> Outcome {
    let cache = &state.cache;
    let mut as_get = parts.clone();
    as_get.method = Method::GET;
    // We asked with this entry's own validators, so a 304 that carries none is about
    // this entry (many servers send bare 304s): lend it the stored ones, so that only a
    // 304 naming a different validator counts as "modified".
    let mut rparts = rparts.clone();
    let stored = stale.entry.header_map();
    for h in [header::ETAG, header::LAST_MODIFIED] {
        if !rparts.headers.contains_key(&h) {
            if let Some(v) = stored.get(&h) {
                rparts.headers.insert(h, v.clone());
            }
        }
    }
    let rparts = &rparts;
    let (mut req_view, mut res_view) = (as_get.clone(), rparts.clone());
    req_view.headers = policy::normalized(&as_get.headers);
    res_view.headers = policy::normalized(&rparts.headers);
    match stale
        .entry
        .policy
        .after_response(&req_view, &res_view, sent_at)
    {
        AfterResponse::NotModified(new_policy, _) => {
            let mut entry = stale.entry.clone();
            let mut headers = entry.header_map();
            for (name, value) in rparts.headers.iter() {
                // RFC 9111 3.2: the 304's fields replace the stored ones, except framing.
                if matches!(
                    name.as_str(),
                    "content-length" | "content-encoding" | "content-range" | "transfer-encoding"
                ) {
                    continue;
                }
                headers.insert(name.clone(), value.clone());
            }
            let now = cache.now();
            let fresh_until = now + new_policy.time_to_live(now);
            if let Err(e) = cache
                .freshen(
                    key,
                    entry.id,
                    new_policy.clone(),
                    headers.clone(),
                    fresh_until,
                )
                .await
            {
                tracing::warn!(%key, "could not record revalidation: {e}");
            }
            drop(leader);
            entry.policy = new_policy;
            entry.headers = Entry::headers_from_map(&headers);
            entry.fresh_until_ms = cache::clock::unix_ms(fresh_until);
            cache.touch(key, entry.id);
            serve_entry(state, parts, entry, Phase::Revalidated, Some(304))
        }
        AfterResponse::Modified(..) => {
            // The 304 does not match what is stored (RFC 9111 4.3.4): fetch it whole.
            drop(leader);
            let _ = cache.invalidate(key).await;
            let mut plain = parts.clone();
            for h in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
                plain.headers.remove(h);
            }
            forward_uncached(state, &plain, Phase::StaleReplaced { stored: false }).await
        }
    }
}

fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A miss forwarded without storing, and why.
async fn uncached_miss(
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
async fn forward_uncached(state: &Arc<State>, parts: &request::Parts, phase: Phase) -> Outcome {
    match state.send(parts.clone(), empty()).await {
        Err(e) => origin_error(&e, &parts.uri),
        Ok(res) => {
            let (mut rparts, body) = res.into_parts();
            strip_hop_by_hop(&mut rparts.headers);
            rparts.version = http::Version::HTTP_11;
            let fwd = Some(rparts.status.as_u16());
            let body = state.origin.body_stream(body).map_err(BoxError::from);
            Outcome::new(
                Response::from_parts(rparts, crate::stream_body(body)),
                phase,
                fwd,
            )
        }
    }
}

/// Methods other than GET/HEAD: forwarded with their body streamed; a successful unsafe
/// method invalidates the URL and its `Location` / `Content-Location` (RFC 9111 4.4).
async fn unsafe_or_other(
    state: &Arc<State>,
    parts: request::Parts,
    body: Incoming,
    key: String,
) -> Outcome {
    let is_unsafe = !matches!(parts.method, Method::OPTIONS | Method::TRACE);
    let body: Body = http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_err(
        body,
        BoxError::from,
    ));
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
        Response::from_parts(rparts, crate::stream_body(body)),
        Phase::Bypass("method"),
        fwd,
    )
}

/// Resolves a `Location`-style reference against the request URI; only references on the
/// same host are returned (RFC 9111 4.4: never invalidate another origin's entries).
fn resolve(base: &Uri, reference: &str) -> Option<String> {
    let abs: Uri = if reference.starts_with('/') && !reference.starts_with("//") {
        format!(
            "{}://{}{}",
            base.scheme_str()?,
            base.authority()?,
            reference
        )
        .parse()
        .ok()?
    } else {
        reference.parse().ok()?
    };
    let k = primary_key(&abs)?;
    let base_key = primary_key(base)?;
    let origin_of = |k: &str| k.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    (origin_of(&k) == origin_of(&base_key)).then_some(k)
}

/// Bytes as a body.
pub fn full(b: impl Into<Bytes>) -> Body {
    http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_err(
        http_body_util::Full::new(b.into()),
        |never| match never {},
    ))
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
    }
}
