//! Filling a partial object's holes for one request: every hole from a peer whose copy is
//! this very representation, else each hole from the origin (`Range` + `If-Range`), in
//! order. The client gets held bytes and new ones in one body; the new ones are kept.
//!
//! Only the holes are fetched (a held run shorter than [`GAP`] between two holes is fetched
//! again with them, one request instead of two). The first hole is asked before the
//! response starts: its answer says whether the representation is still the one held. The
//! others are asked when the client's body reaches them; one answered with anything but
//! its range ends the client's body with an error (never bytes of two representations).

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use http::header::{self, HeaderValue};
use http::{request, HeaderMap, StatusCode};

use cache::partial::{content_range, validator_of, Meta, Writer};
use cache::Partial;

use super::tee::tee;
use super::{combinable, hv, if_range, representation_headers};
use crate::flow::peer::mesh_eligible;
use crate::flow::{origin_error, Outcome, Phase};
use crate::http::headers::CLIENT_CONDITIONALS;
use crate::http::respond::{self, Source};
use crate::http::{stream_body, BoxError};
use crate::origin::OriginError;
use crate::state::State;

/// Held runs shorter than this between two holes are fetched again with them.
const GAP: u64 = 64 << 10;

/// The ranges to fetch for `missing` (sorted, disjoint): neighbours closer than [`GAP`]
/// merged.
pub(super) fn holes(missing: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::with_capacity(missing.len());
    for m in missing {
        match out.last_mut() {
            Some(last) if m.start - last.end < GAP => last.end = m.end,
            _ => out.push(m.clone()),
        }
    }
    out
}

/// Where the holes' bytes come from.
enum From {
    /// A peer that sent every hole (verified against its attested hash as they arrive).
    Peer(Arc<mesh::PartialBody>),
    /// The origin: the first hole's body (asked already), the others asked when reached.
    Origin(Option<BoxStream<'static, Result<Bytes, BoxError>>>),
}

/// Answers `want` (one range; the whole object when the client asked for none) with the
/// held bytes of `p` and the bytes of its `missing` parts, fetched now and kept.
#[allow(clippy::too_many_arguments)]
pub(super) async fn fill_holes(
    state: &Arc<State>,
    parts: &request::Parts,
    p: Arc<Partial>,
    writer: Writer,
    meta: &Meta,
    headers: HeaderMap,
    want: Range<u64>,
    missing: &[Range<u64>],
    vary_miss: bool,
) -> Outcome {
    let holes = holes(missing);
    let writer = Arc::new(writer);
    if let Some(found) = peer_holes(state, parts, meta, &holes).await {
        let phase = Phase::PartialPeer {
            peer: found.peer.clone(),
        };
        let from = From::Peer(Arc::new(found));
        let fill = Fill {
            p,
            writer,
            head: headers,
            meta: meta.clone(),
            holes,
        };
        return serve(state, parts, fill, want, from, phase, None);
    }
    let (first, head, fwd) = match ask_origin(state, parts, meta, &headers, holes[0].clone()).await
    {
        Err(e) => return origin_error(&e, &parts.uri),
        Ok((Answer::Fits(body, head), fwd)) => (body, head, fwd),
        Ok((Answer::Other(rparts, body), _)) => {
            drop(writer);
            return not_this_range(state, parts, &p, meta, rparts, body, vary_miss).await;
        }
    };
    let fill = Fill {
        p,
        writer,
        head,
        meta: meta.clone(),
        holes,
    };
    serve(
        state,
        parts,
        fill,
        want,
        From::Origin(Some(first)),
        Phase::PartialFill,
        fwd,
    )
}

/// What the origin said to a hole's range.
enum Answer {
    /// The bytes asked for, of the representation held, and the head to keep (the new
    /// response's fields over the stored ones, RFC 9111 3.4).
    Fits(BoxStream<'static, Result<Bytes, BoxError>>, HeaderMap),
    /// Anything else, as it came.
    Other(
        http::response::Parts,
        BoxStream<'static, Result<Bytes, BoxError>>,
    ),
}

/// Asks the origin for `hole` of the representation held (`If-Range` with its validator).
async fn ask_origin(
    state: &Arc<State>,
    parts: &request::Parts,
    meta: &Meta,
    head: &HeaderMap,
    hole: Range<u64>,
) -> Result<(Answer, Option<u16>), OriginError> {
    let mut oreq = parts.clone();
    for h in CLIENT_CONDITIONALS {
        oreq.headers.remove(h);
    }
    let spec = if hole.end == meta.total {
        format!("bytes={}-", hole.start)
    } else {
        format!("bytes={}-{}", hole.start, hole.end - 1)
    };
    oreq.headers.insert(header::RANGE, hv(spec));
    if let Some(v) = if_range(head) {
        oreq.headers.insert(header::IF_RANGE, v);
    }
    let (rparts, body) = super::send(state, oreq).await?;
    let fwd = Some(rparts.status.as_u16());
    let fits = rparts.status == StatusCode::PARTIAL_CONTENT
        && content_range(&rparts.headers) == Some((hole, meta.total))
        && combinable(meta, &rparts.headers);
    if !fits {
        return Ok((Answer::Other(rparts, body), fwd));
    }
    let mut new_head = representation_headers(&rparts.headers, meta.total);
    for (name, value) in head.iter() {
        if !new_head.contains_key(name) {
            new_head.append(name.clone(), value.clone());
        }
    }
    Ok((Answer::Fits(body, new_head), fwd))
}

/// The first hole's range was answered with something else.
async fn not_this_range(
    state: &Arc<State>,
    parts: &request::Parts,
    p: &Arc<Partial>,
    meta: &Meta,
    rparts: http::response::Parts,
    body: BoxStream<'static, Result<Bytes, BoxError>>,
    vary_miss: bool,
) -> Outcome {
    let fwd = Some(rparts.status.as_u16());
    if matches!(rparts.status.as_u16(), 206 | 416) {
        // Another range, length or validator: no answer to the client's request, which is
        // sent as the client made it; what is held is no longer trusted.
        tracing::warn!(key = %meta.key, status = %rparts.status,
            range = ?rparts.headers.get(header::CONTENT_RANGE),
            "the origin answered a hole's range with another; partial object dropped");
        state.cache.drop_partial(p);
        drop(body);
        return crate::flow::uncached_miss(state, parts, vary_miss, "partial-mismatch").await;
    }
    if rparts.status == StatusCode::OK {
        // The representation changed (If-Range did not match): what is held is old.
        tracing::info!(key = %meta.key, "the origin sent a new representation; partial object dropped");
        state.cache.drop_partial(p);
    }
    let len = crate::flow::content_length(&rparts.headers);
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
    Outcome::new(res, phase, fwd)
}

/// Every hole from one peer whose copy is this very representation (same strong
/// validator, same length).
async fn peer_holes(
    state: &Arc<State>,
    parts: &request::Parts,
    meta: &Meta,
    holes: &[Range<u64>],
) -> Option<mesh::PartialBody> {
    let mesh = state.mesh.as_ref().filter(|_| mesh_eligible(parts))?;
    let ours = meta.validator()?;
    let total = meta.total;
    let list = holes.to_vec();
    let want = move |len| {
        if len == total {
            list.clone()
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
    Some(found)
}

/// Bytes `r` of what a peer sent, keeping its body held while they are read.
fn peer_read(
    found: &Arc<mesh::PartialBody>,
    r: Range<u64>,
) -> BoxStream<'static, Result<Bytes, BoxError>> {
    let keep = found.clone();
    found
        .read(r)
        .map(move |item| {
            let _ = &keep;
            item.map_err(BoxError::from)
        })
        .boxed()
}

/// A partial object being filled for one response.
pub(super) struct Fill {
    pub p: Arc<Partial>,
    pub writer: Arc<Writer>,
    /// The head to keep with the bytes.
    pub head: HeaderMap,
    pub meta: Meta,
    /// What to fetch, in order.
    pub holes: Vec<Range<u64>>,
}

/// The response for `want`: held runs read from the partial object, holes from `from`
/// (written into it as they pass), in order; 200 when the client asked for no range,
/// else 206.
fn serve(
    state: &Arc<State>,
    parts: &request::Parts,
    fill: Fill,
    want: Range<u64>,
    from: From,
    phase: Phase,
    fwd: Option<u16>,
) -> Outcome {
    let Fill {
        p,
        writer,
        head,
        meta,
        holes,
    } = fill;
    let total = meta.total;
    let mut from = from;
    let mut first = match from {
        From::Origin(ref mut b) => b.take(),
        From::Peer(_) => None,
    };
    let mut pieces: Vec<BoxStream<'static, Result<Bytes, BoxError>>> = Vec::new();
    let mut pos = want.start;
    for h in &holes {
        if pos < h.start {
            pieces.push(p.read(pos..h.start).map_err(BoxError::from).boxed());
        }
        let bytes = match (&from, first.take()) {
            (From::Peer(found), _) => peer_read(found, h.clone()),
            (From::Origin(_), Some(body)) => body,
            (From::Origin(_), None) => {
                let later = Later {
                    state: state.clone(),
                    parts: parts.clone(),
                    meta: meta.clone(),
                };
                pieces.push(later.hole(p.clone(), writer.clone(), h.clone(), head.clone()));
                pos = h.end;
                continue;
            }
        };
        pieces.push(tee(
            state,
            p.clone(),
            writer.clone(),
            h.clone(),
            bytes,
            head.clone(),
        ));
        pos = h.end;
    }
    if pos < want.end {
        pieces.push(p.read(pos..want.end).map_err(BoxError::from).boxed());
    }
    drop(writer);
    let client = futures_util::stream::iter(pieces).flatten();
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
    let mut res = respond::build(status, out_head, stream_body(client.boxed()));
    let fetched: u64 = holes.iter().map(|h| h.end - h.start).sum();
    let held = (want.end - want.start).saturating_sub(fetched);
    res.extensions_mut().insert(crate::flow::HeldBytes(held));
    Outcome::new(res, phase, fwd)
}

/// What a hole asked later needs of the request.
struct Later {
    state: Arc<State>,
    parts: request::Parts,
    meta: Meta,
}

impl Later {
    /// The hole's bytes, asked of the origin when the client's body gets here.
    fn hole(
        self,
        p: Arc<Partial>,
        writer: Arc<Writer>,
        hole: Range<u64>,
        head: HeaderMap,
    ) -> BoxStream<'static, Result<Bytes, BoxError>> {
        futures_util::stream::once(async move {
            let Later { state, parts, meta } = self;
            match ask_origin(&state, &parts, &meta, &head, hole.clone()).await {
                Ok((Answer::Fits(body, _), _)) => Ok(tee(&state, p, writer, hole, body, head)),
                Ok((Answer::Other(rparts, _), _)) => {
                    if rparts.status == StatusCode::OK {
                        state.cache.drop_partial(&p);
                    }
                    let why = format!(
                        "the origin answered a later hole's range with {}: the representation changed while it was filled",
                        rparts.status
                    );
                    tracing::warn!(key = %meta.key, "{why}");
                    Err(BoxError::from(why))
                }
                Err(e) => Err(BoxError::from(e.to_string())),
            }
        })
        .try_flatten()
        .boxed()
    }
}

/// A seek a peer answered (it holds the whole object): its bytes are kept as a partial
/// object of this representation, so the next seek inside them is a hit here.
pub(super) fn keep_from_peer(
    state: &Arc<State>,
    parts: &request::Parts,
    fill: Fill,
    found: mesh::PartialBody,
    want: Range<u64>,
) -> Outcome {
    state.counters.peer_hits.fetch_add(1, Ordering::Relaxed);
    let phase = Phase::PartialPeer {
        peer: found.peer.clone(),
    };
    serve(
        state,
        parts,
        fill,
        want,
        From::Peer(Arc::new(found)),
        phase,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_closer_than_the_gap_are_fetched_as_one() {
        let m = [0..10, 20..30, 200_000..300_000, 300_100..400_000];
        assert_eq!(holes(&m), vec![0..30, 200_000..400_000]);
        let far = [0..1, 100_000..100_001];
        assert_eq!(holes(&far), far.to_vec());
    }
}
