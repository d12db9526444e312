//! A body from a stranger (the open mesh, docs/mesh.md): taken only when this device
//! already knows the digest the body must have, from somewhere the stranger does not
//! control — the URL (rung 1), the client's `Meshcache-Integrity` (rung 2), or the origin
//! itself (rung 3: a `HEAD` over this device's own connection whose `Content-Digest` /
//! `Repr-Digest` names it; sent only to origins that stated digests to this device
//! before, see `State::digest_hosts`). The mesh verifies the bytes (`Mesh::find_by_digest`); the
//! response headers are built **here** — from the rule or the origin's `HEAD` — never
//! taken from the stranger. (Rung 4, a trusted signer's attestation relayed by a
//! stranger, goes through `Mesh::find` like a member's offer.)

use std::sync::Arc;

use futures_util::StreamExt;

use http::header::{self, HeaderMap, HeaderValue};
use http::{request, Method, StatusCode};

use cache::certify::{self, Certified};
use cache::key::{variant_key, vary_names};
use cache::policy::{self, Storability};
use cache::{Entry, Leader};

use super::peer::fill_from;
use super::{integrity, Outcome, Phase};
use crate::http::headers::{strip_hop_by_hop, CLIENT_CONDITIONALS};
use crate::http::{empty, BoxError};
use crate::state::State;

/// What strangers hand over: the entry (headers ours) and its verified body.
pub(super) struct FromStranger {
    entry: Entry,
    body: mesh::open::StrangerBody,
    by: &'static str,
    expected: Vec<Certified>,
    mesh: mesh::Mesh,
}

/// Asks strangers for this request's body, when a digest for it is known here. `None`:
/// no stranger can serve it (the caller goes to the origin).
pub(super) async fn find(
    state: &Arc<State>,
    m: &mesh::Mesh,
    parts: &request::Parts,
) -> Option<FromStranger> {
    if !m.has_strangers() {
        return None;
    }
    let mut expected = integrity::expected(parts, None);
    let mut by = match expected.first().map(|c| c.rule) {
        Some("integrity") => "client",
        Some(_) => "url",
        None => "origin",
    };
    let mut origin_head = None;
    if expected.is_empty() {
        // Rung 3: the origin states the digest to us (a HEAD costs a round trip, not the
        // body: the body then comes from the stranger nearby) — asked only of origins
        // that stated digests to this device before, so the others cost nothing extra.
        if !state.digest_hosts.states_digests(&parts.uri) {
            return None;
        }
        let head = origin_head_digest(state, parts).await?;
        expected = certify::stated_digest(&head);
        origin_head = Some(head);
        by = "origin";
    }
    let body = m.find_by_digest(&expected).await?;
    let headers = match origin_head {
        Some(mut h) => {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.size));
            h
        }
        None => rule_headers(&expected, body.size),
    };
    let entry = entry_for(state, parts, headers, &body)?;
    Some(FromStranger {
        entry,
        body,
        by,
        expected,
        mesh: m.clone(),
    })
}

/// Serves (and stores) what [`find`] found through the key's fill. If the stranger stops
/// mid-way, the origin sends the rest (`peer_body::whole`: `Range`, checked against the
/// BLAKE3 hash the stranger named); then the whole is checked against the digest this
/// device knows before its last 64 KiB go out — so neither a forged body nor a stranger's
/// prefix spliced to the origin's rest is ever released whole. A mismatch bans the
/// stranger. A small body the mesh already fetched whole and checked is stored as it is.
pub(super) fn serve(
    state: &Arc<State>,
    parts: &request::Parts,
    leader: Leader,
    found: FromStranger,
) -> Outcome {
    let FromStranger {
        entry,
        body,
        by,
        expected,
        mesh,
    } = found;
    let phase = Phase::Stranger {
        peer: body.peer.clone(),
        by,
    };
    if body.checked {
        // A small body the mesh fetched whole and checked against the digests already:
        // it is in memory and cannot break off, so there is nothing to splice or check.
        let whole = body.body.map(|r| r.map_err(BoxError::from)).boxed();
        return fill_from(state, parts, leader, entry, whole, None, Vec::new(), phase);
    }
    let peer = body.peer.clone();
    let whole = super::peer_body::whole(state.clone(), parts, &entry, body.body);
    let checked = certify::held_back(whole, certify::Check::all(&expected), move |why| {
        mesh.ban_stranger(
            &peer,
            &format!(
                "sent a body that {}",
                why.replace("the body does not", "does not")
            ),
        );
    });
    fill_from(
        state,
        parts,
        leader,
        entry,
        checked,
        None,
        Vec::new(),
        phase,
    )
}

/// A `HEAD` to the origin over this device's own connection: its headers when it is a
/// `200` whose `Repr-Digest` we can check.
async fn origin_head_digest(state: &Arc<State>, parts: &request::Parts) -> Option<HeaderMap> {
    let mut req = parts.clone();
    req.method = Method::HEAD;
    for h in CLIENT_CONDITIONALS {
        req.headers.remove(h);
    }
    let res = state.send(req, empty()).await.ok()?;
    if res.status() != StatusCode::OK {
        return None;
    }
    let mut headers = res.into_parts().0.headers;
    strip_hop_by_hop(&mut headers);
    // A HEAD response has no content: its `Content-Digest` (if any) describes that, not
    // the body a GET would send. Only `Repr-Digest` speaks of the representation.
    headers.remove("content-digest");
    (!certify::stated_digest(&headers).is_empty()).then_some(headers)
}

/// Headers for a body pinned by its URL or the client's digest: nothing of the stranger's.
fn rule_headers(expected: &[Certified], size: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(certify::IMMUTABLE) {
        h.insert(header::CACHE_CONTROL, v);
    }
    integrity::add_content_digest(&mut h, expected);
    h
}

/// The entry the stranger's body will be stored as, with the freshness this device
/// decides from headers it built or got from the origin.
fn entry_for(
    state: &Arc<State>,
    parts: &request::Parts,
    headers: HeaderMap,
    body: &mesh::open::StrangerBody,
) -> Option<Entry> {
    let cache = &state.cache;
    let mut res = http::Response::new(());
    *res.headers_mut() = headers;
    let (rparts, _) = res.into_parts();
    let now = cache.now();
    let Storability::Store {
        policy,
        shareable,
        fresh_until,
    } = policy::storability(cache.options().policy(), parts, &rparts, now)
    else {
        return None;
    };
    let vary = vary_names(&rparts.headers)?;
    let now_ms = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Some(Entry {
        id: 0,
        variant: variant_key(&vary, &parts.headers),
        vary,
        policy: *policy,
        status: 200,
        headers: Entry::headers_from_map(&rparts.headers),
        hash: body.hash,
        len: body.size,
        stored_at_ms: now_ms,
        fresh_until_ms: fresh_until
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        last_used_ms: now_ms,
        shareable,
        attestation: None,
        head_map: Default::default(),
    })
}
