//! A POST's response stored as the URL's response for later GETs (RFC 9110 9.3.3), when it
//! names the URL as its `Content-Location` and states its freshness. It is judged as the
//! response to a GET with the POST's headers (credentials and cookies count as they would),
//! filled like any miss, and never shared with peers: what a POST returns is too often
//! the poster's own.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use http::{request, Method, Response};

use cache::fill::Head;
use cache::key::{primary_key, variant_key, vary_names};
use cache::policy::{self, Storability};
use cache::{Join, Pending};

use crate::flow::{Outcome, Phase};
use crate::http::respond::{self, Source};
use crate::http::{stream_body, BoxError};
use crate::state::State;

pub(super) fn store(
    state: &Arc<State>,
    post: request::Parts,
    rparts: http::response::Parts,
    body: BoxStream<'static, Result<Bytes, BoxError>>,
) -> Outcome {
    let cache = &state.cache;
    let fwd = Some(rparts.status.as_u16());
    let pass = |rparts: http::response::Parts, body| {
        Outcome::new(
            Response::from_parts(rparts, stream_body(body)),
            Phase::Bypass("method"),
            fwd,
        )
    };
    let Some(key) = primary_key(&post.uri) else {
        return pass(rparts, body);
    };
    let mut as_get = post.clone();
    as_get.method = Method::GET;
    let opts = cache.options();
    let len = crate::flow::content_length(&rparts.headers);
    if cache.pass_through() || !cache.has_room(len) || len.is_some_and(|n| n > opts.max_object_size)
    {
        return pass(rparts, body);
    }
    let url = crate::flow::rule_url(&as_get);
    let now = cache.now();
    let (decision, _) =
        policy::storability_ruled(opts.policy(), &opts.rules, &url, &as_get, &rparts, now);
    let Storability::Store {
        policy,
        fresh_until,
        ..
    } = decision
    else {
        return pass(rparts, body);
    };
    // A GET filling the URL now is left alone: this response goes to the poster only.
    let Join::Leader(leader) = cache.join_fill(&key) else {
        return pass(rparts, body);
    };
    let vary = vary_names(&rparts.headers).unwrap_or_default();
    let head = Head {
        policy: Some(policy.clone()),
        status: rparts.status,
        headers: rparts.headers.clone(),
        len,
        variant: variant_key(&vary, &as_get.headers),
        vary,
        shareable: false,
    };
    let pending = Pending {
        policy: *policy,
        shareable: false,
        fresh_until,
        fetched_at: now,
        from_peer: None,
        certified: Vec::new(),
    };
    let fill = cache.start_fill(leader, head, pending, body);
    let res = respond::respond(
        &post,
        rparts.status,
        rparts.headers,
        len,
        Source::Fill(fill),
    );
    let phase = Phase::Miss {
        vary_miss: false,
        stored: true,
        detail: Some("post"),
    };
    Outcome::new(res, phase, fwd)
}
