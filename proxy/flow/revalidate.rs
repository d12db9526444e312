//! A 304 for a stale entry (RFC 9111 4.3.4): the stored headers are updated and the entry is
//! served; a 304 that names another validator means the stored body is not the current one.

use std::sync::Arc;

use http::{header, request, Method};
use http_cache_semantics::AfterResponse;

use cache::policy;
use cache::{Entry, Leader};

use super::{forward_uncached, rule_url, ruled, serve_entry, Outcome, Phase, Stale};
use crate::state::State;

/// Stored fields a 304 never replaces: they describe the stored body itself (RFC 9111 3.2
/// lets a cache keep "those fields necessary to assure integrity of the stored response").
/// Framing, and the digests of its bytes: a 304 does not resend the body, so a new
/// `Content-MD5` (RFC 1864), `Digest` (RFC 3230) or `Content-Digest` / `Repr-Digest`
/// (RFC 9530) would describe bytes this cache does not hold — and a stored digest is what
/// peers and strangers check the body against (`certify::stated_digest`, attestations).
const KEPT_ON_304: &[&str] = &[
    "content-length",
    "content-encoding",
    "content-range",
    "transfer-encoding",
    "content-md5",
    "digest",
    "content-digest",
    "repr-digest",
];

/// A 304 for a stale entry: update its stored headers and serve it (RFC 9111 4.3.4). An
/// entry whose headers state no freshness of their own gets its policy rebuilt from the
/// updated headers, so the operator's freshness rules apply again
/// ([`policy::refreshed`]).
pub(super) async fn revalidated(
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
    req_view.headers = policy::request_view(&as_get.headers, &stale.entry.vary);
    res_view.headers = policy::normalized(&rparts.headers);
    match stale.entry.policy.after_response(
        &req_view,
        &res_view,
        cache::policy::library_time(sent_at),
    ) {
        AfterResponse::NotModified(new_policy, _) => {
            let mut entry = stale.entry.clone();
            let mut headers = entry.header_map();
            for (name, value) in rparts.headers.iter() {
                // RFC 9111 3.2: the 304's fields replace the stored ones, except those the
                // stored body depends on (framing, and the digests that describe its bytes).
                if KEPT_ON_304.contains(&name.as_str()) {
                    continue;
                }
                headers.insert(name.clone(), value.clone());
            }
            let opts = cache.options();
            let (new_policy, rule) = policy::refreshed(
                opts.policy(),
                &opts.rules,
                &rule_url(parts),
                &as_get,
                entry.status_code(),
                &stored,
                &headers,
                sent_at,
            )
            .unwrap_or((new_policy, None));
            let now = cache.now();
            let fresh_until = policy::fresh_until(now, new_policy.time_to_live(now));
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
            let e = Arc::make_mut(&mut entry);
            e.policy = new_policy;
            e.set_headers(Entry::headers_from_map(&headers));
            e.fresh_until_ms = cache::clock::unix_ms(fresh_until);
            cache.touch(key, entry.id);
            ruled(
                serve_entry(state, parts, entry, Phase::Revalidated, Some(304)),
                rule,
            )
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
