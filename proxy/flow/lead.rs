//! The leader of a fill: one request to the origin for the whole representation, on which
//! every follower waits. A 304 freshens the stale entry; a storable response starts the fill;
//! anything else streams through uncached; an origin failure may fall back to the stale entry
//! or, offline, to a peer's copy.

use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use http::{header, request, Method, StatusCode};

use cache::fill::Head;
use cache::key::{variant_key, vary_names};
use cache::policy::{self, Storability};
use cache::{Entry, Join, Leader, Pending};

use super::integrity;
use super::peer::{from_peer, mesh_eligible};
use super::revalidate::revalidated;
use super::{content_length, origin_error, rule_url, ruled, serve_entry, Outcome, Phase, Stale};
use crate::http::headers::{strip_hop_by_hop, CLIENT_CONDITIONALS};
use crate::http::respond::{self, Source};
use crate::http::{empty, BoxError};
use crate::origin::OriginError;
use crate::state::State;

/// Serves stale while a background task revalidates (RFC 5861 `stale-while-revalidate`).
pub(super) fn background_revalidate(
    state: &Arc<State>,
    parts: &request::Parts,
    key: String,
    entry: &Arc<Entry>,
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

/// The leader of a fill: one request to the origin for the whole representation.
pub(super) async fn lead(
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
    for h in CLIENT_CONDITIONALS {
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
    let asked = std::time::Instant::now();
    let res = match state.send(oreq, empty()).await {
        Ok(r) => {
            state.latency.origin.observe(asked.elapsed().as_secs_f64());
            r
        }
        Err(e) => {
            if let Some(s) = stale {
                let disconnected = e.unreachable() || matches!(e, OriginError::Protocol { .. });
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
                if let Some(found) = super::stranger::find(state, m, &parts).await {
                    tracing::info!(%key, "origin unreachable; served from a stranger");
                    return super::stranger::serve(state, &parts, leader, found);
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
    // A URL that names its content's hash, a client that states it, an origin that states
    // it: checked by the fill (a body that does not match is never stored, nor released
    // whole). A body pinned by its hash is immutable unless the origin says otherwise.
    let certified = if rparts.status == StatusCode::OK {
        integrity::expected(&parts, Some(&rparts.headers))
    } else {
        Vec::new()
    };
    if certified.iter().any(|c| c.rule == "origin-digest") {
        state.digest_hosts.saw(&parts.uri);
    }
    let stated = parts.headers.contains_key(cache::certify::INTEGRITY);
    if certified.iter().any(|c| c.rule != "origin-digest") {
        cache::certify::immutable_unless_stated(&mut rparts.headers);
        integrity::add_content_digest(&mut rparts.headers, &certified);
    }
    if stated && rparts.status != StatusCode::OK && rparts.status != StatusCode::NOT_MODIFIED {
        // Only a 200 has a body that can match what the client stated.
        drop(leader);
        drop(rbody);
        return integrity::mismatch(
            &parts.uri,
            &format!("the origin answered {} where a body that matches Meshcache-Integrity was asked for", rparts.status),
        );
    }
    let opts = cache.options();
    let (decision, rule) = if rparts.status == StatusCode::PARTIAL_CONTENT
        || rparts.status == StatusCode::NOT_MODIFIED
    {
        (Storability::No(policy::NoStoreReason::Status), None)
    } else if len.is_some_and(|n| n > opts.max_object_size)
        || !super::prefetch::origin_len_ok(&parts, len)
    {
        (Storability::No(policy::NoStoreReason::TooLarge), None)
    } else if cache.pass_through() || !cache.has_room(len) {
        (Storability::No(policy::NoStoreReason::DiskFull), None)
    } else {
        let url = rule_url(&parts);
        policy::storability_ruled(opts.policy(), &opts.rules, &url, &parts, &rparts, now)
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
                    certified,
                },
                body,
            );
            // A body the client stated the hash of: checked before the response starts
            // when it is small enough, so a mismatch is a clean 502.
            if stated && len.is_some_and(|n| n <= integrity::WAIT_MAX) {
                fill.finished().await;
                if !fill.body_complete() {
                    return integrity::mismatch(
                        &parts.uri,
                        "the origin's body does not hash to the digest the client stated (Meshcache-Integrity), or it broke off",
                    );
                }
            }
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
            ruled(Outcome::new(res, phase, fwd), rule)
        }
        Storability::No(reason) => {
            drop(leader);
            tracing::debug!(%key, reason = reason.as_str(), "not stored");
            let mut body = state
                .origin
                .body_stream(rbody)
                .map_err(BoxError::from)
                .boxed();
            if !certified.is_empty() {
                body = match integrity::check_body(body, len, &certified, &parts.uri).await {
                    Ok(b) => b,
                    Err(bad) => return *bad,
                };
            }
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
