//! What peers hand us: a stored entry, a body streaming in (stored through the key's fill),
//! or byte ranges for one request. Only requests whose response could be shared ask.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{header, request, Method};

use cache::fill::Head;
use cache::policy;
use cache::{Leader, Pending};

use super::{serve_entry, Outcome, Phase};
use crate::http::respond::{self, entry_headers, Source};
use crate::state::State;

/// May the mesh be asked for this request? Only requests whose response could be shared:
/// a GET without credentials (DESIGN.md, "Never shared").
pub(super) fn mesh_eligible(parts: &request::Parts) -> bool {
    parts.method == Method::GET
        && !parts.headers.contains_key(header::AUTHORIZATION)
        && !parts.headers.contains_key(header::COOKIE)
        && !policy::request_no_store(&parts.headers)
}

/// Serves what a peer has: an entry already stored, or a body streaming in, which is
/// stored through this key's fill (so other clients of this device join it).
pub(super) fn from_peer(
    state: &Arc<State>,
    parts: &request::Parts,
    key: &str,
    leader: Leader,
    found: mesh::Found,
) -> Outcome {
    if parts
        .extensions
        .get::<super::prefetch::Prefetch>()
        .is_none()
    {
        state.counters.peer_hits.fetch_add(1, Ordering::Relaxed);
    }
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
    // A peer's body is checked against its URL's rule and the client's stated integrity
    // too (never against a digest among the peer's headers: those are the signer's word,
    // already covered by its signature).
    let certified = if e.status == 200 {
        super::integrity::expected(parts, None)
    } else {
        Vec::new()
    };
    let from = e.attestation.clone().map(|a| (a, e.hash));
    let body = super::peer_body::whole(state.clone(), parts, &e, body);
    fill_from(state, parts, leader, e, body, from, certified, phase)
}

/// Stores `body` for `e` through the key's fill (checked against `certified`, and
/// against the attested hash `from_peer` names), serving it as it arrives.
#[allow(clippy::too_many_arguments)]
pub(super) fn fill_from(
    state: &Arc<State>,
    parts: &request::Parts,
    leader: Leader,
    e: cache::Entry,
    body: futures_util::stream::BoxStream<'static, Result<bytes::Bytes, crate::http::BoxError>>,
    from_peer: Option<(Vec<u8>, [u8; 32])>,
    certified: Vec<cache::certify::Certified>,
    phase: Phase,
) -> Outcome {
    let now = state.cache.now();
    let head = Head {
        policy: Some(Box::new(e.policy.clone())),
        status: e.status_code(),
        headers: e.header_map(),
        len: Some(e.len),
        vary: e.vary.clone(),
        variant: e.variant.clone(),
        shareable: e.shareable,
    };
    let pending = Pending {
        policy: e.policy.clone(),
        shareable: e.shareable,
        fresh_until: std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.fresh_until_ms),
        fetched_at: now,
        from_peer,
        certified,
    };
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
pub(super) fn from_peer_ranges(
    state: &State,
    parts: &request::Parts,
    p: mesh::PartialBody,
) -> Outcome {
    state.counters.peer_hits.fetch_add(1, Ordering::Relaxed);
    let headers = entry_headers(&p.entry, state.cache.now());
    let (status, len) = (p.entry.status_code(), Some(p.entry.len));
    let phase = Phase::PeerRange {
        peer: p.peer.clone(),
    };
    let res = respond::respond(parts, status, headers, len, Source::Peer(Arc::new(p)));
    Outcome::new(res, phase, None)
}
