//! A body streaming in from peers, made whole: if every peer that offered it fails mid-way,
//! the rest comes from the origin (`Range: bytes=N-`, with `If-Range` on the attested
//! validator), and the bytes are checked against the attested BLAKE3 hash before the last
//! one is released. A body that does not check ends with an error, never cleanly: the
//! client never takes a spliced or wrong body for a good one.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use http::header::{self, HeaderValue};
use http::{request, Method, StatusCode};

use cache::Entry;

use crate::http::{empty, BoxError};
use crate::state::State;

enum Source {
    Peers(BoxStream<'static, Result<Bytes, mesh::PeerBodyError>>),
    Origin(BoxStream<'static, Result<Bytes, String>>, u64),
    Done,
}

struct St {
    state: Arc<State>,
    parts: request::Parts,
    validator: Option<HeaderValue>,
    expected: [u8; 32],
    total: u64,
    pos: u64,
    hasher: blake3::Hasher,
    source: Source,
}

/// Wraps `body` (from peers) for `entry`; `parts` is the client's request.
pub fn whole(
    state: Arc<State>,
    parts: &request::Parts,
    entry: &Entry,
    body: BoxStream<'static, Result<Bytes, mesh::PeerBodyError>>,
) -> BoxStream<'static, Result<Bytes, BoxError>> {
    let stored = entry.header_map();
    // If-Range needs a strong validator: an ETag not marked weak, else Last-Modified.
    let validator = stored
        .get(header::ETAG)
        .filter(|v| !v.as_bytes().starts_with(b"W/"))
        .or_else(|| stored.get(header::LAST_MODIFIED))
        .cloned();
    let mut parts = parts.clone();
    parts.method = Method::GET;
    for h in crate::http::headers::CLIENT_CONDITIONALS {
        parts.headers.remove(h);
    }
    let st = St {
        state,
        parts,
        validator,
        expected: entry.hash,
        total: entry.len,
        pos: 0,
        hasher: blake3::Hasher::new(),
        source: Source::Peers(body),
    };
    futures_util::stream::unfold(st, step).boxed()
}

async fn step(mut st: St) -> Option<(Result<Bytes, BoxError>, St)> {
    loop {
        let next = match &mut st.source {
            Source::Done => return None,
            Source::Peers(s) => match s.next().await {
                Some(Ok(b)) => Ok(b),
                Some(Err(e)) => {
                    tracing::info!(url = %st.parts.uri, at = st.pos, "peers failed ({e}); the rest from the origin");
                    let (state, parts, validator) =
                        (st.state.clone(), st.parts.clone(), st.validator.clone());
                    match continue_from_origin(state, parts, validator, st.pos).await {
                        Ok(s) => {
                            st.source = s;
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
                None => Err(format!(
                    "peers ended the body at {} of {}",
                    st.pos, st.total
                )),
            },
            Source::Origin(s, skip) => match s.next().await {
                Some(Ok(mut b)) => {
                    if *skip > 0 {
                        let n = (*skip).min(b.len() as u64);
                        *skip -= n;
                        b = b.slice(n as usize..);
                        if b.is_empty() {
                            continue;
                        }
                    }
                    Ok(b)
                }
                Some(Err(e)) => Err(format!("origin, finishing a peer's body: {e}")),
                None => Err(format!(
                    "origin ended the body at {} of {}",
                    st.pos, st.total
                )),
            },
        };
        let chunk = match next {
            Ok(c) => c,
            Err(e) => {
                st.source = Source::Done;
                return Some((Err(e.into()), st));
            }
        };
        let end = st.pos + chunk.len() as u64;
        if end > st.total {
            st.source = Source::Done;
            return Some((Err("more bytes than the attested size".into()), st));
        }
        st.hasher.update(&chunk);
        st.pos = end;
        if end == st.total {
            // The last bytes go out only if the whole body is the attested one.
            let ok = *st.hasher.finalize().as_bytes() == st.expected;
            st.source = Source::Done;
            if !ok {
                tracing::warn!(url = %st.parts.uri, "a body finished from the origin does not match the attested hash: not served whole");
                return Some((Err("the body does not match its attested hash".into()), st));
            }
        }
        return Some((Ok(chunk), st));
    }
}

/// Asks the origin for the bytes from `pos` on.
async fn continue_from_origin(
    state: Arc<State>,
    mut parts: request::Parts,
    validator: Option<HeaderValue>,
    pos: u64,
) -> Result<Source, String> {
    if pos > 0 {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes={pos}-")) {
            parts.headers.insert(header::RANGE, v);
        }
        if let Some(v) = validator {
            parts.headers.insert(header::IF_RANGE, v);
        }
    }
    let res = state
        .send(parts, empty())
        .await
        .map_err(|e| format!("origin: {e}"))?;
    let (mut rparts, body) = res.into_parts();
    crate::http::headers::strip_hop_by_hop(&mut rparts.headers);
    let skip = match rparts.status {
        StatusCode::PARTIAL_CONTENT => {
            let starts_here = rparts
                .headers
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.trim().parse::<u64>().ok())
                == Some(pos);
            if !starts_here {
                return Err("the origin answered another range".into());
            }
            0
        }
        // The whole body: skip what the client has (the hash check decides at the end).
        StatusCode::OK => pos,
        other => return Err(format!("origin answered {other}")),
    };
    let body = state
        .origin
        .body_stream(body)
        .map(|r| r.map_err(|e| e.to_string()))
        .boxed();
    Ok(Source::Origin(body, skip))
}
