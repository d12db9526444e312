//! Asking strangers, one at a time (never a broadcast): by content tag for a body whose
//! digest this device already knows (rungs 1–3), by key tag for attestations of a signer
//! it trusts (rung 4, judged by `find.rs` exactly as a member's offer).
//!
//! A body by digest is verified twice over: leaf by leaf against the BLAKE3 hash the
//! stranger named (iroh-blobs), and as a whole against the digest this device knows.
//! Bodies up to [`WHOLE_MAX`] are fetched and checked here before anything is handed on,
//! so a forgery costs the client nothing (the stranger is banned, the next one or the
//! origin is asked); larger ones are handed on streaming, and the caller checks the digest
//! with the last 64 KiB held back (after any resume from the origin, which the check must
//! cover too), banning the stranger on a mismatch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use http::request;
use iroh::endpoint::Connection;
use iroh::EndpointId;

use cache::certify::{Certified, Check};

use super::proto::{content_tag, key_tag, OpenAnswer, OpenRequest};
use crate::find::{judge_all, Candidate};
use crate::proto::{self as mproto, ProtoError};
use crate::{peers, Inner, Mesh, PeerBodyError};

/// Bodies up to this size are fetched whole and checked before the response starts.
pub const WHOLE_MAX: u64 = 2 << 20;
/// Strangers asked per miss, at most (one at a time, within 4 × `lookup_timeout`; those
/// that answered usefully before are asked first).
pub const MAX_ASKED: usize = 16;

/// A body from a stranger, verified against the digest this device knows.
pub struct StrangerBody {
    /// The stranger's (open-mesh) endpoint id.
    pub peer: String,
    pub hash: [u8; 32],
    pub size: u64,
    /// Bytes verified against `hash` (BLAKE3, leaf by leaf).
    pub body: BoxStream<'static, Result<Bytes, PeerBodyError>>,
    /// The whole body is in memory and was checked against the expected digests (a small
    /// body); otherwise the caller must check them before releasing its last bytes.
    pub checked: bool,
}

impl Mesh {
    /// Bans a stranger (id and address) whose body did not match the digest it was
    /// asked for (found out by the caller, for a streamed body).
    pub fn ban_stranger(&self, id: &str, why: &str) {
        if let Ok(id) = id.parse::<iroh::EndpointId>() {
            peers::ban(&self.inner, id, why);
        }
    }

    /// A body that must have the digests in `expected` (every statement; see
    /// `cache::certify::Check::all`), from a stranger nearby. `None` when no stranger has
    /// it, or those who said so lied (they are banned).
    pub async fn find_by_digest(&self, expected: &[Certified]) -> Option<StrangerBody> {
        let inner = &self.inner;
        let open = inner.open()?;
        let first = expected.first()?;
        let tag = content_tag(first);
        let strangers = open.connected(inner);
        if strangers.is_empty() {
            return None;
        }
        inner.bump(&inner.counters.lookups, 1);
        let deadline = Instant::now() + 4 * inner.opts.lookup_timeout;
        let mut fetching: Option<(EndpointId, Connection)> = None;
        for (id, conn) in strangers.into_iter().take(MAX_ASKED) {
            if Instant::now() >= deadline {
                break;
            }
            let req = OpenRequest::Content { tag, wait_ms: 0 };
            match ask(&conn, req, inner.opts.lookup_timeout).await {
                Ok(OpenAnswer::Fetching) => {
                    if fetching.is_none() && open.may_wait_for(&id) {
                        fetching = Some((id, conn));
                    }
                }
                answer => {
                    if let Some(b) = take(inner, &open, id, answer, expected).await {
                        return Some(b);
                    }
                }
            }
        }
        // One download per carriage: a stranger downloading it right now will have it soon,
        // and one seeking it too with a smaller id will download it. A stranger's word is
        // worth a bounded wait only, once: if it had nothing to show for it, its
        // "fetching" is not believed for a while.
        let alone = fetching.is_none();
        let deferred = open
            .elections()
            .conclude(tag, alone, |d| open.may_wait_for(d));
        if let Some(d) = deferred {
            if fetching.is_none() {
                fetching = open.connected(inner).into_iter().find(|(id, _)| *id == d);
            }
        }
        let (id, conn) = fetching?;
        let wait = inner.opts.peer_fill_wait.min(STRANGER_WAIT);
        let wait_ms = wait.as_millis() as u32;
        let req = OpenRequest::Content { tag, wait_ms };
        let answer = ask(&conn, req, wait + Duration::from_secs(2)).await;
        let got = take(inner, &open, id, answer, expected).await;
        if got.is_none() {
            open.broke_promise(&id);
        }
        got
    }
}

/// How long a stranger that says it is fetching the object is waited for, at most.
pub const STRANGER_WAIT: Duration = Duration::from_secs(5);

/// Takes what a stranger answered to a content lookup: the body, verified.
async fn take(
    inner: &Arc<Inner>,
    open: &super::Open,
    id: EndpointId,
    answer: Result<OpenAnswer, ProtoError>,
    expected: &[Certified],
) -> Option<StrangerBody> {
    let (hash, size) = match answer {
        Ok(OpenAnswer::Content { hash, size }) => {
            open.was_useful(&id);
            (hash, size)
        }
        Ok(OpenAnswer::NotFound) | Ok(OpenAnswer::Fetching) => return None,
        Ok(OpenAnswer::Signed(_)) => {
            peers::ban(inner, id, "answered a content lookup with attestations");
            return None;
        }
        Err(e) if e.is_violation() => {
            peers::ban(inner, id, &e.to_string());
            return None;
        }
        Err(e) => {
            tracing::debug!(stranger = %id, "content lookup: {e}");
            return None;
        }
    };
    if size > inner.cache.options().max_object_size {
        return None;
    }
    let (_, body) = crate::stream::start(inner.clone(), hash, size, vec![id]).await?;
    let body = body.map(|r| r.map_err(PeerBodyError)).boxed();
    let check = Check::all(expected);
    if size <= WHOLE_MAX {
        return match whole(body, check, size).await {
            Ok(bytes) => {
                inner.bump(&inner.counters.peer_hits, 1);
                Some(StrangerBody {
                    peer: id.to_string(),
                    hash,
                    size,
                    body: futures_util::stream::once(async move { Ok(bytes) }).boxed(),
                    checked: true,
                })
            }
            Err(e) => {
                if e.lie {
                    peers::ban(inner, id, &format!("sent a body that {}", e.why));
                } else {
                    tracing::info!(stranger = %id, "body from a stranger: {}", e.why);
                }
                None
            }
        };
    }
    // Larger: streamed, verified leaf by leaf against the hash the stranger named; the
    // caller checks the digest before the last bytes go out (and bans through
    // `ban_stranger` on a mismatch).
    inner.bump(&inner.counters.peer_hits, 1);
    Some(StrangerBody {
        peer: id.to_string(),
        hash,
        size,
        body,
        checked: false,
    })
}

struct Failed {
    why: String,
    /// The bytes were wrong (as opposed to the transfer failing).
    lie: bool,
}

/// Collects a small body and checks it.
async fn whole(
    mut body: BoxStream<'static, Result<Bytes, PeerBodyError>>,
    mut check: Check,
    size: u64,
) -> Result<Bytes, Failed> {
    let mut all = Vec::with_capacity(size as usize);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Failed {
            why: e.to_string(),
            lie: false,
        })?;
        check.update(&chunk);
        all.extend_from_slice(&chunk);
    }
    if all.len() as u64 != size {
        return Err(Failed {
            why: format!("ended at {} of {size} bytes", all.len()),
            lie: false,
        });
    }
    check.finish().map_err(|why| Failed {
        why: why.replace("the body does not", "does not"),
        lie: true,
    })?;
    Ok(Bytes::from(all))
}

async fn ask(
    conn: &Connection,
    req: OpenRequest,
    within: Duration,
) -> Result<OpenAnswer, ProtoError> {
    mproto::within(within, async {
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| ProtoError::Io(e.to_string()))?;
        mproto::write_msg(&mut send, &req).await?;
        let _ = send.finish();
        let answer: OpenAnswer = mproto::read_msg(&mut recv).await?;
        if let OpenAnswer::Signed(list) = &answer {
            if list.len() > mproto::MAX_OFFERS {
                return Err(ProtoError::Violation(format!(
                    "{} attestations",
                    list.len()
                )));
            }
        }
        Ok(answer)
    })
    .await
}

/// Rung 4: attestations for `key` relayed by strangers, judged as members' offers are
/// (only a signer this device trusts counts). Asked only when this device trusts someone
/// whose signature a stranger could relay.
pub(crate) async fn signed(
    inner: &Inner,
    key: &str,
    req: &request::Parts,
    allow_stale: bool,
) -> Vec<Candidate> {
    let Some(open) = inner.open() else {
        return Vec::new();
    };
    let trusts_others = !inner.operators.is_empty()
        || !inner.friends.is_empty()
        || inner.groups.current().is_ok_and(|g| !g.is_empty());
    if !trusts_others {
        return Vec::new();
    }
    let strangers = open.connected(inner);
    if strangers.is_empty() {
        return Vec::new();
    }
    let tag = key_tag(key);
    let deadline = Instant::now() + 4 * inner.opts.lookup_timeout;
    for (id, conn) in strangers.into_iter().take(MAX_ASKED) {
        if Instant::now() >= deadline {
            break;
        }
        match ask(
            &conn,
            OpenRequest::Signed { tag },
            inner.opts.lookup_timeout,
        )
        .await
        {
            Ok(OpenAnswer::Signed(list)) => {
                let found = judge_all(inner, id, key, req, &list, allow_stale);
                if !found.is_empty() {
                    open.was_useful(&id);
                    return found;
                }
            }
            Ok(OpenAnswer::NotFound) => {}
            Ok(OpenAnswer::Content { .. }) | Ok(OpenAnswer::Fetching) => {
                peers::ban(inner, id, "answered a signed lookup with a body")
            }
            Err(e) if e.is_violation() => peers::ban(inner, id, &e.to_string()),
            Err(e) => tracing::debug!(stranger = %id, "signed lookup: {e}"),
        }
    }
    Vec::new()
}
