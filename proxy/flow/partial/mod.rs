//! Partial objects in the request flow (the store side is `cache::partial`).
//!
//! - A range the cache does not fill whole (a seek far ahead, or a suffix range of an
//!   object of unknown length) is forwarded as the client asked; a 206 the cache may store
//!   starts a partial object, its bytes written as they pass ([`forward_and_keep`]).
//! - A later request for bytes the partial object holds is a hit ([`from_partial`]).
//! - A request that needs bytes it lacks gets them from a peer whose copy is the same
//!   representation, else asks the origin for the holes only, one range each (`Range` with
//!   `If-Range`): the client gets held bytes and new ones in one body, the new ones are
//!   kept, and when every byte is held the object becomes a complete entry ([`holes`]).
//! - A 200 to such a request (the representation changed) drops the partial object.
//! - A seek a peer answers is kept too ([`keep_peer_ranges`]).
//!
//! [`tee`] writes a body into the partial object as it passes to the client.

mod holes;
mod tee;

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use http::header::{self, HeaderValue};
use http::{request, HeaderMap, StatusCode};

use cache::key::{variant_key, vary_names};
use cache::partial::{content_range, validator_of, Meta, Writer};
use cache::policy::{self, Storability, Verdict};
use cache::{Entry, Partial};

use super::{origin_error, rule_url, Outcome, Phase};
use crate::http::headers::{strip_hop_by_hop, CLIENT_CONDITIONALS};
use crate::http::range::{self, Ranges};
use crate::http::respond::{self, Source};
use crate::http::{empty, stream_body, BoxError};
use crate::state::State;

/// A request the partial object of its key may answer, alone or with the origin's help;
/// `None` when it cannot (another variant, not fresh for this request, several ranges
/// with holes, another request filling it now): the usual miss path follows.
pub(super) async fn from_partial(
    state: &Arc<State>,
    parts: &request::Parts,
    p: Arc<Partial>,
    vary_miss: bool,
) -> Option<Outcome> {
    let cache = &state.cache;
    let meta = p.meta();
    if variant_key(&meta.vary, &parts.headers) != meta.variant {
        return None;
    }
    let now = cache.now();
    if cache::clock::unix_ms(now) >= meta.fresh_until_ms {
        // Stale bytes are not combined with new ones (their validators may not say
        // whether the representation changed): the object goes, a new one may start.
        cache.drop_partial(&p);
        return None;
    }
    let entry = as_entry(&meta);
    if !matches!(
        policy::evaluate(&entry, parts, now, cache.options().shared),
        Verdict::Fresh
    ) {
        return None;
    }
    let headers = entry.header_map();
    let total = meta.total;
    let wanted: Vec<Range<u64>> = match ranges_for(parts, &headers, total) {
        Ranges::Full => std::iter::once(0..total).collect(),
        Ranges::Unsatisfiable => Vec::new(),
        Ranges::Partial(list) => list,
    };
    let missing: Vec<Range<u64>> = wanted
        .iter()
        .flat_map(|r| meta.missing(r.clone()))
        .collect();
    if missing.is_empty() {
        p.touch(cache::clock::unix_ms(now));
        state.counters.hits.fetch_add(1, Ordering::Relaxed);
        // Served from the cache: with `Age` (RFC 9111 4), as a stored entry is.
        let res = respond::respond(
            parts,
            StatusCode::OK,
            respond::entry_headers(&entry, now),
            Some(total),
            Source::Partial(p),
        );
        return Some(Outcome::new(res, Phase::PartialHit, None));
    }
    if wanted.len() != 1 {
        return None;
    }
    let writer = p.try_writer()?;
    let want = wanted[0].clone();
    let out = holes::fill_holes(
        state, parts, p, writer, &meta, headers, want, &missing, vary_miss,
    );
    Some(out.await)
}

/// What a request asks for, given the representation's headers (`If-Range` included).
fn ranges_for(parts: &request::Parts, headers: &HeaderMap, total: u64) -> Ranges {
    if range::if_range_matches(&parts.headers, headers) {
        range::parse(&parts.headers, total)
    } else {
        Ranges::Full
    }
}

/// The partial object as the entry it will become (for freshness and headers).
fn as_entry(meta: &Meta) -> Entry {
    let mut headers = meta.header_map();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.total));
    Entry {
        id: 0,
        variant: meta.variant.clone(),
        vary: meta.vary.clone(),
        policy: meta.policy.clone(),
        status: 200,
        headers: Entry::headers_from_map(&headers),
        hash: [0; 32],
        len: meta.total,
        stored_at_ms: meta.fetched_at_ms,
        fresh_until_ms: meta.fresh_until_ms,
        last_used_ms: meta.last_used_ms,
        shareable: false,
        attestation: None,
        head_map: Default::default(),
    }
}

/// A seek a peer answered (it holds the whole object): its bytes are kept as a partial
/// object of this representation, so the next seek inside them is a hit here. Several
/// ranges, or a key that has a partial object already, are served as before, not kept.
pub(super) fn keep_peer_ranges(
    state: &Arc<State>,
    parts: &request::Parts,
    key: &str,
    found: mesh::PartialBody,
) -> Outcome {
    let cache = &state.cache;
    let e = &found.entry;
    let single = match range::parse(&parts.headers, e.len) {
        Ranges::Partial(list) if list.len() == 1 => Some(list[0].clone()),
        _ => None,
    };
    let (Some(want), None, 200) = (single, cache.partial(key), e.status) else {
        return super::peer::from_peer_ranges(state, parts, found);
    };
    let head = e.header_map();
    let now_ms = cache::clock::unix_ms(cache.now());
    let meta = Meta {
        key: key.to_string(),
        variant: e.variant.clone(),
        vary: e.vary.clone(),
        policy: e.policy.clone(),
        headers: e.headers.clone(),
        total: e.len,
        held: Vec::new(),
        fresh_until_ms: e.fresh_until_ms,
        fetched_at_ms: e.stored_at_ms,
        last_used_ms: now_ms,
        // Bytes from a peer are verified against its attestation, which this device does
        // not sign again: the completed entry is not offered to others.
        shareable: false,
    };
    if validator_of(&head).is_none() || variant_key(&e.vary, &parts.headers) != e.variant {
        return super::peer::from_peer_ranges(state, parts, found);
    }
    let Some(p) = cache.begin_partial(meta) else {
        return super::peer::from_peer_ranges(state, parts, found);
    };
    let Some(writer) = p.try_writer() else {
        return super::peer::from_peer_ranges(state, parts, found);
    };
    let fill = holes::Fill {
        meta: p.meta(),
        p,
        writer: Arc::new(writer),
        head,
        holes: vec![want.clone()],
    };
    holes::keep_from_peer(state, parts, fill, found, want)
}

/// May bytes of a response with these headers join what the partial object holds? Same
/// validator; without one on either side, only because the object is fresh (checked by
/// the caller) and the lengths agree (checked by `Content-Range`).
fn combinable(meta: &Meta, h: &HeaderMap) -> bool {
    match (meta.validator(), validator_of(h)) {
        (Some(a), Some(b)) => a == b,
        (None, None) => true,
        _ => false,
    }
}

/// The `If-Range` value that asks for a range only of this very representation: a strong
/// `ETag`, else `Last-Modified`.
fn if_range(h: &HeaderMap) -> Option<HeaderValue> {
    match h.get(header::ETAG) {
        Some(e) if !e.as_bytes().starts_with(b"W/") => Some(e.clone()),
        Some(_) => None,
        None => h.get(header::LAST_MODIFIED).cloned(),
    }
}

/// A 206's headers as those of the complete representation.
fn representation_headers(h: &HeaderMap, total: u64) -> HeaderMap {
    let mut out = h.clone();
    out.remove(header::CONTENT_RANGE);
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    out
}

/// A seek the cache does not fill whole: forwarded as asked; a 206 it may store starts a
/// partial object that keeps the bytes as they pass.
pub(super) async fn forward_and_keep(
    state: &Arc<State>,
    parts: &request::Parts,
    key: &str,
    vary_miss: bool,
) -> Outcome {
    let cache = &state.cache;
    let conditional = CLIENT_CONDITIONALS[1..]
        .iter()
        .any(|h| parts.headers.contains_key(h));
    // A client's own conditionals make the answer its own; a partial object that exists
    // already (another request is filling it) is not replaced.
    if conditional || cache.partial(key).is_some() {
        return super::uncached_miss(state, parts, vary_miss, "range-forwarded").await;
    }
    let now = cache.now();
    let (rparts, body) = match send(state, parts.clone()).await {
        Ok(r) => r,
        Err(e) => return origin_error(&e, &parts.uri),
    };
    let fwd = Some(rparts.status.as_u16());
    let started = start(state, parts, key, &rparts, now);
    let (body, stored) = match started {
        Some((p, writer, span, head)) => {
            (tee::tee(state, p, Arc::new(writer), span, body, head), true)
        }
        None => (body, false),
    };
    let phase = Phase::Miss {
        vary_miss,
        stored,
        detail: Some(if stored { "partial" } else { "range-forwarded" }),
    };
    // Relayed as the origin sent it (its Content-Range and Content-Length stand).
    let res = respond::build(rparts.status, rparts.headers, stream_body(body));
    Outcome::new(res, phase, fwd)
}

/// Starts a partial object for a 206 the cache may store: one range, a known complete
/// length, storable as its 200 would be.
fn start(
    state: &Arc<State>,
    parts: &request::Parts,
    key: &str,
    rparts: &http::response::Parts,
    now: std::time::SystemTime,
) -> Option<(Arc<Partial>, Writer, Range<u64>, HeaderMap)> {
    let cache = &state.cache;
    if rparts.status != StatusCode::PARTIAL_CONTENT {
        return None;
    }
    let (span, total) = content_range(&rparts.headers)?;
    if super::content_length(&rparts.headers).is_some_and(|n| n != span.end - span.start) {
        return None;
    }
    let head = representation_headers(&rparts.headers, total);
    let mut as_200 = rparts.clone();
    as_200.status = StatusCode::OK;
    as_200.headers = head.clone();
    let opts = cache.options();
    let url = rule_url(parts);
    let (decision, _) =
        policy::storability_ruled(opts.policy(), &opts.rules, &url, parts, &as_200, now);
    let Storability::Store {
        policy,
        shareable,
        fresh_until,
    } = decision
    else {
        return None;
    };
    let vary = vary_names(&head)?;
    let now_ms = cache::clock::unix_ms(now);
    let meta = Meta {
        key: key.to_string(),
        variant: variant_key(&vary, &parts.headers),
        vary,
        policy: *policy,
        headers: Entry::headers_from_map(&head),
        total,
        held: Vec::new(),
        fresh_until_ms: cache::clock::unix_ms(fresh_until),
        fetched_at_ms: now_ms,
        last_used_ms: now_ms,
        // Shared only once complete, and only with a strong validator to vouch that every
        // range came from one representation.
        shareable: shareable && validator_of(&head).is_some(),
    };
    let p = cache.begin_partial(meta)?;
    let writer = p.try_writer()?;
    Some((p, writer, span, head))
}

/// Sends a request to the origin: its response head (hop-by-hop fields removed) and body.
async fn send(
    state: &Arc<State>,
    req: request::Parts,
) -> Result<
    (
        http::response::Parts,
        BoxStream<'static, Result<Bytes, BoxError>>,
    ),
    crate::origin::OriginError,
> {
    let asked = std::time::Instant::now();
    let res = state.send(req, empty()).await?;
    state.latency.origin.observe(asked.elapsed().as_secs_f64());
    let (mut rparts, rbody) = res.into_parts();
    strip_hop_by_hop(&mut rparts.headers);
    rparts.version = http::Version::HTTP_11;
    let body = state
        .origin
        .body_stream(rbody)
        .map_err(BoxError::from)
        .boxed();
    Ok((rparts, body))
}

fn hv(s: String) -> HeaderValue {
    HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static(""))
}
