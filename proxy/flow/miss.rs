//! A miss: nothing stored is usable. HEAD and `no-store` go straight through; a range far
//! ahead is asked of a peer or forwarded; otherwise the request joins the key's fill —
//! leading it (peers first, then the origin) or following one already under way.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{header, request, Method};

use cache::fill::Head;
use cache::key::variant_key;
use cache::policy::{self, Verdict};
use cache::Join;

use super::lead::lead;
use super::partial;
use super::peer::{from_peer, mesh_eligible};
use super::stranger;
use super::{cached, forward_uncached, serve_entry, uncached_miss, Outcome, Phase, Stale};
use crate::http::range;
use crate::http::respond::{self, Source};
use crate::state::State;

/// How long a request waits for a just-finished download to be stored.
const COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub(super) async fn miss(
    state: &Arc<State>,
    parts: request::Parts,
    key: String,
    stale: Option<Stale>,
    vary_miss: bool,
) -> Outcome {
    let cache = &state.cache;
    // Bytes of this URL held without the whole: they answer (a hit, not a miss), or the
    // origin or a peer fills the holes.
    if stale.is_none() && parts.method == Method::GET && !policy::request_no_store(&parts.headers) {
        if let Some(p) = cache.partial(&key) {
            if let Some(out) = partial::from_partial(state, &parts, p, vary_miss).await {
                if !matches!(out.phase, Phase::PartialHit) {
                    state.counters.misses.fetch_add(1, Ordering::Relaxed);
                }
                return out;
            }
        }
    }
    // The sync engine's own requests are not clients' misses (its figures are its own).
    if parts
        .extensions
        .get::<super::prefetch::Prefetch>()
        .is_none()
    {
        state.counters.misses.fetch_add(1, Ordering::Relaxed);
    }
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
    if let Some(first) = range::first_byte(&parts.headers) {
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
                let want = |len| match range::parse(&parts.headers, len) {
                    range::Ranges::Partial(list) => list,
                    _ => Vec::new(),
                };
                if let Some(p) = m.find_ranges(&key, &parts, want).await {
                    return partial::keep_peer_ranges(state, &parts, &key, p);
                }
            }
            return partial::forward_and_keep(state, &parts, &key, vary_miss).await;
        }
    } else if parts.headers.contains_key(header::RANGE)
        && cache.fill_in_progress(&key).is_none()
        && matches!(range::parse(&parts.headers, u64::MAX), range::Ranges::Partial(ref l) if l.len() == 1)
    {
        // A suffix range (the last N bytes: a player reading an index at the end) of an
        // object of unknown length: forwarded, and kept as a partial object.
        return partial::forward_and_keep(state, &parts, &key, vary_miss).await;
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
                // A prefetch takes a copy this device would call stale: better than none.
                let prefetch = parts
                    .extensions
                    .get::<super::prefetch::Prefetch>()
                    .is_some();
                let asked = std::time::Instant::now();
                let found = m.find(&key, &parts, prefetch).await;
                state.latency.peer(asked, found.is_some());
                if let Some(found) = found {
                    return from_peer(state, &parts, &key, leader, found);
                }
                // Strangers, for a body whose digest this device knows.
                if let Some(found) = stranger::find(state, m, &parts).await {
                    return stranger::serve(state, &parts, leader, found);
                }
            }
            if parts
                .extensions
                .get::<super::prefetch::Prefetch>()
                .is_some_and(|p| !p.from_origin)
            {
                drop(leader);
                return super::prefetch::not_nearby(&parts.uri);
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
