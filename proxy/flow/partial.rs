//! Partial objects in the request flow (the store side is `cache::partial`).
//!
//! - A range the cache does not fill whole (a seek far ahead, or a suffix range of an
//!   object of unknown length) is forwarded as the client asked; a 206 the cache may store
//!   starts a partial object, its bytes written as they pass ([`forward_and_keep`]).
//! - A later request for bytes the partial object holds is a hit ([`from_partial`]).
//! - A request that needs bytes it lacks asks the origin for the span of the holes only
//!   (`Range` with `If-Range`): the client gets held bytes and new ones in one body, the new
//!   ones are kept, and when every byte is held the object becomes a complete entry.
//! - A 200 to that request (the representation changed) drops the partial object.

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

use super::peer::mesh_eligible;
use super::{origin_error, rule_url, Outcome, Phase};
use crate::http::headers::{strip_hop_by_hop, CLIENT_CONDITIONALS};
use crate::http::range::{self, Ranges};
use crate::http::respond::{self, Source};
use crate::http::{empty, stream_body, BoxError};
use crate::state::State;

/// Bytes written to a partial object are made durable (and held) at least this often.
const COMMIT_EVERY: u64 = 8 << 20;

/// Writes to the partial object's file are batched up to this size.
const WRITE_BATCH: u64 = 1 << 20;

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
        let res = respond::respond(
            parts,
            StatusCode::OK,
            headers,
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
    let span = missing[0].start..missing[missing.len() - 1].end;
    Some(
        fill_holes(
            state, parts, p, writer, &meta, headers, want, span, vary_miss,
        )
        .await,
    )
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

/// Fills `span` (the holes of `want`) from a peer holding the same representation, else
/// from the origin, and answers `want` with held bytes before it, the new bytes (kept as
/// they pass), and held bytes after it.
#[allow(clippy::too_many_arguments)]
async fn fill_holes(
    state: &Arc<State>,
    parts: &request::Parts,
    p: Arc<Partial>,
    writer: Writer,
    meta: &Meta,
    headers: HeaderMap,
    want: Range<u64>,
    span: Range<u64>,
    vary_miss: bool,
) -> Outcome {
    if let Some((body, peer)) = peer_span(state, parts, meta, span.clone()).await {
        let phase = Phase::PartialPeer { peer };
        return serve_filled(
            state, parts, p, writer, meta.total, headers, want, span, body, phase, None,
        );
    }
    let cache = &state.cache;
    let mut oreq = parts.clone();
    for h in CLIENT_CONDITIONALS {
        oreq.headers.remove(h);
    }
    let spec = if span.end == meta.total {
        format!("bytes={}-", span.start)
    } else {
        format!("bytes={}-{}", span.start, span.end - 1)
    };
    oreq.headers.insert(header::RANGE, hv(spec));
    if let Some(v) = if_range(&headers) {
        oreq.headers.insert(header::IF_RANGE, v);
    }
    let asked = std::time::Instant::now();
    let res = match state.send(oreq, empty()).await {
        Ok(r) => {
            state.latency.origin.observe(asked.elapsed().as_secs_f64());
            r
        }
        Err(e) => return origin_error(&e, &parts.uri),
    };
    let (mut rparts, rbody) = res.into_parts();
    strip_hop_by_hop(&mut rparts.headers);
    rparts.version = http::Version::HTTP_11;
    let fwd = Some(rparts.status.as_u16());
    let body = state
        .origin
        .body_stream(rbody)
        .map_err(BoxError::from)
        .boxed();
    let fits = rparts.status == StatusCode::PARTIAL_CONTENT
        && content_range(&rparts.headers) == Some((span.clone(), meta.total))
        && combinable(meta, &rparts.headers);
    if !fits && matches!(rparts.status.as_u16(), 206 | 416) {
        // An answer to our range that is not the one asked for (another range, another
        // length or validator): it is no answer to the client's request, which is sent
        // as the client made it, and what is held is no longer trusted.
        tracing::warn!(key = %meta.key, status = %rparts.status, range = ?rparts.headers.get(header::CONTENT_RANGE),
            "the origin answered a hole's range with another; partial object dropped");
        cache.drop_partial(&p);
        drop(writer);
        drop(body);
        return super::uncached_miss(state, parts, vary_miss, "partial-mismatch").await;
    }
    if !fits {
        if rparts.status == StatusCode::OK {
            // The representation changed (If-Range did not match): what is held is old.
            tracing::info!(key = %meta.key, "the origin sent a new representation; partial object dropped");
            cache.drop_partial(&p);
        }
        drop(writer);
        let len = super::content_length(&rparts.headers);
        let phase = Phase::Miss {
            vary_miss,
            stored: false,
            detail: Some("partial-changed"),
        };
        let res = respond::respond(
            parts,
            rparts.status,
            rparts.headers,
            len,
            Source::Stream(body),
        );
        return Outcome::new(res, phase, fwd);
    }
    // The stored head takes the new response's fields (RFC 9111 3.4).
    let mut new_head = representation_headers(&rparts.headers, meta.total);
    for (name, value) in headers.iter() {
        if !new_head.contains_key(name) {
            new_head.append(name.clone(), value.clone());
        }
    }
    serve_filled(
        state,
        parts,
        p,
        writer,
        meta.total,
        new_head,
        want,
        span,
        body,
        Phase::PartialFill,
        fwd,
    )
}

/// Bytes `span` from a peer whose copy is this very representation (same strong
/// validator, same length): verified against the peer's attested hash as they arrive.
async fn peer_span(
    state: &Arc<State>,
    parts: &request::Parts,
    meta: &Meta,
    span: Range<u64>,
) -> Option<(BoxStream<'static, Result<Bytes, BoxError>>, String)> {
    let mesh = state.mesh.as_ref().filter(|_| mesh_eligible(parts))?;
    let ours = meta.validator()?;
    let total = meta.total;
    let s = span.clone();
    let want = move |len| {
        if len == total {
            vec![s.clone()]
        } else {
            Vec::new()
        }
    };
    let found = mesh.find_ranges(&meta.key, parts, want).await?;
    if validator_of(&found.entry.header_map()).as_deref() != Some(ours.as_str()) {
        tracing::debug!(key = %meta.key, "a peer holds another representation; not combined");
        return None;
    }
    state.counters.peer_hits.fetch_add(1, Ordering::Relaxed);
    Some(peer_stream(found, span))
}

/// Bytes `r` of what a peer sent, keeping its body held while they are read.
fn peer_stream(
    found: mesh::PartialBody,
    r: Range<u64>,
) -> (BoxStream<'static, Result<Bytes, BoxError>>, String) {
    let peer = found.peer.clone();
    let found = Arc::new(found);
    let keep = found.clone();
    let body = found
        .read(r)
        .map(move |item| {
            let _ = &keep;
            item.map_err(BoxError::from)
        })
        .boxed();
    (body, peer)
}

/// The response for `want`: held bytes before `span`, `body` (bytes `span`, written to
/// the partial object as they pass), held bytes after it; 200 when the client asked for
/// no range, else 206.
#[allow(clippy::too_many_arguments)]
fn serve_filled(
    state: &Arc<State>,
    parts: &request::Parts,
    p: Arc<Partial>,
    writer: Writer,
    total: u64,
    head: HeaderMap,
    want: Range<u64>,
    span: Range<u64>,
    body: BoxStream<'static, Result<Bytes, BoxError>>,
    phase: Phase,
    fwd: Option<u16>,
) -> Outcome {
    let teed = tee(state, p.clone(), writer, span.clone(), body, head.clone());
    let before = p.read(want.start..span.start);
    let after = p.read(span.end..want.end);
    let client = before
        .map_err(BoxError::from)
        .chain(teed)
        .chain(after.map_err(BoxError::from));
    let mut out_head = head;
    let status = if parts.headers.contains_key(header::RANGE) && want != (0..total) {
        out_head.insert(
            header::CONTENT_RANGE,
            hv(format!("bytes {}-{}/{total}", want.start, want.end - 1)),
        );
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    out_head.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(want.end - want.start),
    );
    out_head.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let res = respond::build(status, out_head, stream_body(client.boxed()));
    Outcome::new(res, phase, fwd)
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
    state.counters.peer_hits.fetch_add(1, Ordering::Relaxed);
    let total = e.len;
    let (body, peer) = peer_stream(found, want.clone());
    let phase = Phase::PartialPeer { peer };
    serve_filled(
        state,
        parts,
        p,
        writer,
        total,
        head,
        want.clone(),
        want,
        body,
        phase,
        None,
    )
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
    let asked = std::time::Instant::now();
    let res = match state.send(parts.clone(), empty()).await {
        Ok(r) => {
            state.latency.origin.observe(asked.elapsed().as_secs_f64());
            r
        }
        Err(e) => return origin_error(&e, &parts.uri),
    };
    let (mut rparts, rbody) = res.into_parts();
    strip_hop_by_hop(&mut rparts.headers);
    rparts.version = http::Version::HTTP_11;
    let fwd = Some(rparts.status.as_u16());
    let body = state
        .origin
        .body_stream(rbody)
        .map_err(BoxError::from)
        .boxed();
    let started = start(state, parts, key, &rparts, now);
    let (body, stored) = match started {
        Some((p, writer, span, head)) => (tee(state, p, writer, span, body, head), true),
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

/// Passes `body` (bytes `span` of the representation) to the client while writing it to
/// the partial object; makes what arrived durable and held, and completes the object when
/// it holds every byte. Bytes beyond `span` or a body cut short end the client's body with
/// an error (never a short clean one); a client that leaves stops the download unless
/// little remains.
fn tee(
    state: &Arc<State>,
    p: Arc<Partial>,
    writer: Writer,
    span: Range<u64>,
    body: BoxStream<'static, Result<Bytes, BoxError>>,
    head: HeaderMap,
) -> BoxStream<'static, Result<Bytes, BoxError>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, BoxError>>(16);
    let cache = state.cache.clone();
    let background_max = cache.options().background_fill_max;
    tokio::spawn(async move {
        let mut writer = Some(writer);
        let mut body = body;
        let mut client = Some(tx);
        let mut pos = span.start;
        let mut written = span.start;
        let mut persisted = span.start;
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batch_len = 0u64;
        let mut store_failed = false;
        let mut failure: Option<String> = None;
        loop {
            let chunk = match body.next().await {
                None => {
                    if pos != span.end {
                        failure = Some(format!(
                            "the origin closed after {} of {} bytes",
                            pos - span.start,
                            span.end - span.start
                        ));
                    }
                    break;
                }
                Some(Err(e)) => {
                    failure = Some(format!("origin body: {e}"));
                    break;
                }
                Some(Ok(chunk)) => chunk,
            };
            let n = chunk.len() as u64;
            if pos + n > span.end {
                failure = Some("the origin sent more than its Content-Range".into());
                break;
            }
            pos += n;
            batch_len += n;
            batch.push(chunk.clone());
            let last = pos == span.end;
            // The last chunk goes to the client only once every byte is written and held:
            // a client that asks again as soon as its body ends finds them.
            if !store_failed && (batch_len >= WRITE_BATCH || last) {
                batch_len = 0;
                match p.write_at(written, std::mem::take(&mut batch)).await {
                    Ok(()) => {
                        p.mark(written..pos);
                        written = pos;
                    }
                    Err(e) => {
                        tracing::warn!("partial object write: {e}");
                        store_failed = true;
                    }
                }
                if last {
                    writer = None;
                }
                if written - persisted >= COMMIT_EVERY {
                    if let Err(e) = p.persist(None).await {
                        tracing::warn!("partial object: {e}");
                        store_failed = true;
                    }
                    persisted = written;
                }
            }
            if let Some(c) = &client {
                if c.send(Ok(chunk)).await.is_err() {
                    client = None;
                }
            }
            if client.is_none() && span.end - pos > background_max {
                tracing::debug!(key = %p.key(), "the client left; partial fill stopped");
                break;
            }
        }
        if let Some(why) = &failure {
            if let Some(c) = client.take() {
                let _ = c.send(Err(why.clone().into())).await;
            }
        }
        drop(client);
        if !batch.is_empty() && !store_failed && p.write_at(written, batch).await.is_ok() {
            p.mark(written..pos);
            written = pos;
        }
        drop(writer);
        cache::failpoint::point("partial-marked");
        let whole = failure.is_none() && !store_failed && written == span.end;
        if let Err(e) = p.persist(whole.then_some(head)).await {
            tracing::warn!("partial object: {e}");
            return;
        }
        cache::failpoint::point("partial-persisted");
        if p.meta().complete() {
            match cache.complete_partial(&p).await {
                Ok(_) => tracing::debug!(key = %p.key(), "partial object completed"),
                Err(e) => tracing::warn!(key = %p.key(), "partial object not completed: {e}"),
            }
        }
    });
    tokio_stream_of(rx)
}

fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>,
) -> BoxStream<'static, Result<Bytes, BoxError>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

fn hv(s: String) -> HeaderValue {
    HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static(""))
}
