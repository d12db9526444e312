//! Answering strangers: a lookup by tag gets a body's hash and size (content tags) or the
//! attestations this device holds (key tags) — only for shareable `200`s, only within the
//! answer budget, and never this device's own signature unless it is an operator (that
//! would link its group identity to its open one). A stranger may then fetch exactly the
//! bodies it was offered (`access.rs`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use iroh::endpoint::{Accepting, Connection, IncomingAddr};
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::{EndpointAddr, EndpointId};

use super::proto::{content_tag, OpenAnswer, OpenRequest};
use super::{lock, tags, Open};
use crate::attest::Attestation;
use crate::proto::{self as mproto, close, ProtoError};
use crate::Inner;

/// Most lookups one stranger's connection may have under way at once.
const STREAMS_PER_CONNECTION: usize = 16;
/// A request must arrive this soon after its stream opened.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The `meshcache-open/1` protocol handler.
#[derive(Debug, Clone)]
pub(crate) struct Handler(pub Weak<Inner>, pub Arc<Mutex<HashMap<usize, SocketAddr>>>);

impl Handler {
    pub fn new(inner: Weak<Inner>) -> Self {
        Self(inner, Arc::default())
    }
}

impl ProtocolHandler for Handler {
    async fn on_accepting(&self, accepting: Accepting) -> Result<Connection, AcceptError> {
        let addr = match accepting.remote_addr() {
            IncomingAddr::Ip(a) => Some(a),
            _ => None,
        };
        if let (Some(inner), Some(a)) = (self.0.upgrade(), addr) {
            if inner.open().is_some_and(|o| o.addr_banned(a)) {
                inner.bump(&inner.counters.refused, 1);
                return Err(AcceptError::from_err(std::io::Error::other(
                    "a banned address",
                )));
            }
        }
        let conn = accepting.await?;
        if let Some(a) = addr {
            let mut m = lock(&self.1);
            if m.len() < 4 * super::MAX_STRANGERS {
                m.insert(conn.stable_id(), a);
            }
        }
        Ok(conn)
    }

    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let addr = lock(&self.1).remove(&conn.stable_id());
        let Some(inner) = self.0.upgrade() else {
            return Ok(());
        };
        let remote = conn.remote_id();
        let Some(_slot) = crate::peers::admit_incoming(&inner, &conn) else {
            return Ok(());
        };
        // Dial back: a stranger who asks us can be asked too.
        if let Some(a) = addr {
            super::add(
                &inner,
                EndpointAddr::new(remote).with_ip_addr(a),
                "incoming",
            );
        }
        let limit = Arc::new(tokio::sync::Semaphore::new(STREAMS_PER_CONNECTION));
        drop(inner);
        while let Ok((send, recv)) = conn.accept_bi().await {
            let Some(inner) = self.0.upgrade() else { break };
            if inner.peers.banned(&remote) {
                conn.close(close::BANNED.into(), b"banned");
                break;
            }
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                continue;
            };
            let conn2 = conn.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = serve(&inner, remote, addr, send, recv).await {
                    if e.is_violation() {
                        crate::peers::ban(&inner, remote, &e.to_string());
                        conn2.close(close::PROTOCOL.into(), b"protocol violation");
                    } else {
                        tracing::debug!(stranger = %remote, "open mesh request: {e}");
                    }
                }
            });
        }
        Ok(())
    }
}

async fn serve(
    inner: &Arc<Inner>,
    remote: EndpointId,
    addr: Option<SocketAddr>,
    mut send: iroh::endpoint::SendStream,
    mut recv: iroh::endpoint::RecvStream,
) -> Result<(), ProtoError> {
    let req: OpenRequest =
        mproto::within(REQUEST_READ_TIMEOUT, mproto::read_msg(&mut recv)).await?;
    let Some(open) = inner.open() else {
        return Ok(());
    };
    let mut answer = answer(inner, &open, remote, addr, &req);
    if let (OpenAnswer::NotFound, OpenRequest::Content { tag, wait_ms }) = (&answer, &req) {
        // Not here yet, but this device is downloading it from the origin now: say so, or
        // (asked again with a wait) answer once the download is stored.
        if let Some(key) = fetching(inner, &open, remote, tag) {
            if *wait_ms == 0 {
                answer = OpenAnswer::Fetching;
            } else {
                let wait = Duration::from_millis(*wait_ms as u64)
                    .min(super::ask::STRANGER_WAIT)
                    .min(inner.opts.peer_fill_wait);
                crate::server::settle(inner, &key, std::time::Instant::now() + wait).await;
                answer = self::answer(inner, &open, remote, addr, &req);
            }
        }
    }
    inner.bump(&inner.counters.answers, 1);
    mproto::write_msg(&mut send, &answer).await?;
    let _ = send.finish();
    Ok(())
}

/// The key this device is fetching from the origin now whose body has content tag `tag`
/// (its URL's rule or the digest its client stated; a digest the origin states is known
/// only once the response arrives). Two strangers that miss the same object at the same
/// moment both ask before either fetches: the one whose open-mesh id is smaller says
/// "fetching" while still asking, so the other waits for it (the same election as among
/// members, by open-mesh ids).
fn fetching(inner: &Inner, open: &Open, remote: EndpointId, tag: &[u8; 32]) -> Option<String> {
    let me_first = open.endpoint.id().as_bytes() < remote.as_bytes();
    let matches = |k: &String| tags::key_digests(k).iter().any(|c| content_tag(c) == *tag);
    if let Some(k) = inner.fetching_keys(me_first).into_iter().find(matches) {
        return Some(k);
    }
    if !me_first {
        if let Some(k) = inner.fetching_keys(true).into_iter().find(matches) {
            // Both seeking, and the asker goes first: if nobody has it, wait for the asker
            // rather than download it too (`Mesh::find_by_digest`) — unless this device
            // has decided to download it already, which the asker then hears.
            if open.elections().defer_unless_decided(*tag, remote) {
                return Some(k);
            }
        }
    }
    None
}

/// What to answer a stranger.
pub(crate) fn answer(
    inner: &Inner,
    open: &Open,
    remote: EndpointId,
    addr: Option<SocketAddr>,
    req: &OpenRequest,
) -> OpenAnswer {
    let tag = match req {
        OpenRequest::Content { tag, .. } | OpenRequest::Signed { tag } => tag,
    };
    let Some(key) = lock(&open.tags).get(tag) else {
        return OpenAnswer::NotFound;
    };
    let entries = inner.cache.variants(&key).unwrap_or_default();
    let answer = match req {
        OpenRequest::Content { .. } => entries
            .iter()
            .find(|e| {
                tags::digests(&key, e)
                    .iter()
                    .any(|c| content_tag(c) == *tag)
            })
            .map(|e| {
                (
                    vec![e.hash],
                    OpenAnswer::Content {
                        hash: e.hash,
                        size: e.len,
                    },
                )
            }),
        OpenRequest::Signed { .. } => {
            let own = *inner.endpoint.id().as_bytes();
            let mut hashes = Vec::new();
            let mut list = Vec::new();
            for e in entries.iter().filter(|e| e.shareable) {
                let Some(a) = &e.attestation else { continue };
                let Ok((_, claim)) = Attestation::verify(a) else {
                    continue;
                };
                // This device's own signature names its group identity: to strangers
                // only when it is an operator, whose id is public by design.
                if claim.key != key || (claim.signer == own && !inner.opts.operator) {
                    continue;
                }
                if list.len() >= mproto::MAX_OFFERS {
                    break;
                }
                hashes.push(e.hash);
                list.push(a.clone());
            }
            (!list.is_empty()).then_some((hashes, OpenAnswer::Signed(list)))
        }
    };
    let Some((hashes, answer)) = answer else {
        return OpenAnswer::NotFound;
    };
    if !open.may_answer(remote, addr) {
        inner.bump(&inner.counters.refused, 1);
        tracing::info!(stranger = %remote, "a stranger is over its answer budget: answered not found");
        return OpenAnswer::NotFound;
    }
    lock(&inner.offered).offer(remote, hashes);
    answer
}
