//! The answering side: the acceptor's handshake, lookups, "I am fetching it", and the
//! signer of this device's attestations.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::{EndpointAddr, EndpointId, SecretKey};

use crate::attest::{Attestation, Claim};
use crate::group::mac_eq;
use crate::peers;
use crate::proto::{
    self, close, Answer, Hello, HelloAck, Proof, Proofs, ProtoError, Request, Welcome,
};
use crate::{Inner, Mesh};

/// Most requests one connection may have under way at once.
const STREAMS_PER_CONNECTION: usize = 64;
/// A request must arrive this soon after its stream opened.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What this device is doing about a key it does not have yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Asking peers. Another device seeking the same key at the same moment waits for
    /// the one with the smaller endpoint id, so simultaneous misses elect one fetcher.
    Seeking,
    /// Fetching from the origin (or a peer): everyone else should wait for it.
    Fetching,
}

pub(crate) struct Inflight {
    phase: tokio::sync::watch::Sender<Phase>,
    /// The smallest endpoint id seen seeking the same key while this device was seeking
    /// it: if nobody has it, this device waits for that one instead of downloading too
    /// (closes the race where each asked the other before the other had started).
    pub(crate) defer_to: Option<EndpointId>,
}

impl Inflight {
    pub(crate) fn is_fetching(&self) -> bool {
        *self.phase.borrow() == Phase::Fetching
    }
}

/// Registration of a key this device is seeking, then fetching. Dropping it tells the
/// peers waiting for this device to look again.
pub struct SeekGuard {
    inner: Weak<Inner>,
    key: String,
    phase: tokio::sync::watch::Sender<Phase>,
}

impl SeekGuard {
    /// This device goes to the origin for the key now.
    pub fn fetching(&self) {
        self.phase.send_replace(Phase::Fetching);
        if let Some(inner) = self.inner.upgrade() {
            inner.catalog.busy_changed();
        }
    }
}

impl Drop for SeekGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            let mut map = inner.inflight.lock().unwrap_or_else(|e| e.into_inner());
            if map
                .get(&self.key)
                .is_some_and(|i| i.phase.same_channel(&self.phase))
            {
                map.remove(&self.key);
            }
            drop(map);
            inner.catalog.busy_changed();
        }
    }
}

impl Mesh {
    /// Registers that this device is looking for `key` (and, after
    /// [`SeekGuard::fetching`], fetching it), so that peers asking for it meanwhile wait
    /// instead of downloading it too. Call under the key's single-flight lock.
    pub fn seek(&self, key: &str) -> SeekGuard {
        let (tx, _) = tokio::sync::watch::channel(Phase::Seeking);
        self.inner
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                key.to_string(),
                Inflight {
                    phase: tx.clone(),
                    defer_to: None,
                },
            );
        self.inner.catalog.busy_changed();
        SeekGuard {
            inner: Arc::downgrade(&self.inner),
            key: key.to_string(),
            phase: tx,
        }
    }
}

/// The attester the cache calls for each shareable entry it commits.
pub(crate) struct Signer {
    pub secret: SecretKey,
    pub inner: Weak<Inner>,
}

impl cache::Attester for Signer {
    fn attest(&self, key: &str, entry: &cache::Entry, fetched_at: SystemTime) -> Option<Vec<u8>> {
        let groups = self
            .inner
            .upgrade()
            .and_then(|i| i.groups.current().ok())
            .unwrap_or_default();
        let claim = Claim::new_v1(
            *self.secret.public().as_bytes(),
            key,
            entry,
            crate::unix_ms(fetched_at),
        );
        Some(Attestation::sign(&self.secret, &claim, &groups))
    }

    fn committed(&self, key: &str, entry: &cache::Entry) {
        if let Some(inner) = self.inner.upgrade() {
            if entry.shareable && entry.attestation.is_some() {
                inner.catalog.added(key);
            }
            if let Some(o) = inner.open() {
                o.tags
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, entry);
            }
        }
    }
}

/// The `meshcache/1` protocol handler.
#[derive(Debug, Clone)]
pub(crate) struct Lookup(pub Weak<Inner>);

impl ProtocolHandler for Lookup {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let Some(inner) = self.0.upgrade() else {
            return Ok(());
        };
        let remote = conn.remote_id();
        let Some(_slot) = crate::peers::admit_incoming(&inner, &conn) else {
            return Ok(());
        };
        let groups =
            match proto::within(proto::HANDSHAKE_TIMEOUT, accept_handshake(&inner, &conn)).await {
                Ok(Some(g)) => g,
                Ok(None) => {
                    inner.bump(&inner.counters.refused, 1);
                    tracing::debug!(peer = %remote, "refused: shares no group with us");
                    conn.close(close::NOT_MEMBER.into(), b"not a member");
                    return Ok(());
                }
                Err(e) => {
                    inner.bump(&inner.counters.refused, 1);
                    if e.is_violation() {
                        peers::ban(&inner, remote, &e.to_string());
                    }
                    conn.close(close::PROTOCOL.into(), b"handshake failed");
                    return Ok(());
                }
            };
        {
            let mut m = inner
                .peers
                .members
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let e = m.entry(remote).or_insert((Vec::new(), 0));
            e.0 = groups;
            e.1 += 1;
        }
        inner.peers.changed.send_modify(|n| *n += 1);
        let limit = Arc::new(tokio::sync::Semaphore::new(STREAMS_PER_CONNECTION));
        drop(inner);
        loop {
            let (send, recv) = match conn.accept_bi().await {
                Ok(s) => s,
                Err(_) => break,
            };
            // A peer banned meanwhile (for what it sent on another connection) is done.
            if self.0.upgrade().is_none_or(|i| i.peers.banned(&remote)) {
                conn.close(close::BANNED.into(), b"banned");
                break;
            }
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                // Too many requests at once from one peer: refuse this one.
                drop((send, recv));
                continue;
            };
            let weak = self.0.clone();
            let conn2 = conn.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Some(inner) = weak.upgrade() {
                    if let Err(e) = serve_request(&inner, remote, send, recv).await {
                        if e.is_violation() {
                            peers::ban(&inner, remote, &e.to_string());
                            conn2.close(close::PROTOCOL.into(), b"protocol violation");
                        } else {
                            tracing::debug!(peer = %remote, "mesh request: {e}");
                        }
                    }
                }
            });
        }
        if let Some(inner) = self.0.upgrade() {
            let mut m = inner
                .peers
                .members
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(e) = m.get_mut(&remote) {
                e.1 = e.1.saturating_sub(1);
                if e.1 == 0 {
                    m.remove(&remote);
                }
            }
        }
        Ok(())
    }
}

/// The acceptor's side of the handshake: the groups both sides proved, or `None` when
/// they share none.
async fn accept_handshake(
    inner: &Arc<Inner>,
    conn: &Connection,
) -> Result<Option<Vec<crate::group::GroupId>>, ProtoError> {
    let me = *inner.endpoint.id().as_bytes();
    let them = *conn.remote_id().as_bytes();
    let (mut send, mut recv) = conn
        .accept_bi()
        .await
        .map_err(|e| ProtoError::Io(e.to_string()))?;
    let hello: Hello = proto::read_msg(&mut recv).await?;
    if hello.version != proto::VERSION {
        tracing::debug!(
            version = hello.version,
            "peer speaks another protocol version"
        );
    }
    if hello.groups.len() > 256 || hello.addrs.len() > 64 {
        return Err(ProtoError::Violation("oversized hello".into()));
    }
    let ours = inner.groups.current().unwrap_or_default();
    let common: Vec<_> = ours
        .into_iter()
        .filter(|g| hello.groups.contains(&g.id()))
        .collect();
    if common.is_empty() {
        return Ok(None);
    }
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|e| ProtoError::Io(e.to_string()))?;
    let proofs = common
        .iter()
        .map(|g| Proof {
            group: g.id(),
            mac: g.membership_mac(b"acceptor", &me, &them, &hello.nonce),
        })
        .collect();
    proto::write_msg(
        &mut send,
        &HelloAck {
            version: proto::VERSION,
            nonce,
            proofs,
        },
    )
    .await?;
    let theirs: Proofs = proto::read_msg(&mut recv).await?;
    let mut proved = Vec::new();
    for p in &theirs.proofs {
        let Some(g) = common.iter().find(|g| g.id() == p.group) else {
            return Err(ProtoError::Violation(
                "proof for a group we did not offer".into(),
            ));
        };
        if !mac_eq(&g.membership_mac(b"dialer", &them, &me, &nonce), &p.mac) {
            return Err(ProtoError::Violation("wrong membership proof".into()));
        }
        proved.push(g.id());
    }
    if proved.is_empty() {
        proto::write_msg(
            &mut send,
            &Welcome {
                groups: vec![],
                peers: vec![],
            },
        )
        .await?;
        return Ok(None);
    }
    let remote = conn.remote_id();
    let gossip = peers::gossip(inner, &remote, &proved);
    proto::write_msg(
        &mut send,
        &Welcome {
            groups: proved.clone(),
            peers: gossip,
        },
    )
    .await?;
    let _ = send.finish();
    // Dial back, so this device can ask the new member too.
    let addr =
        EndpointAddr::new(remote).with_addrs(hello.addrs.into_iter().map(iroh::TransportAddr::Ip));
    peers::add(inner, addr, "incoming");
    Ok(Some(proved))
}

async fn serve_request(
    inner: &Arc<Inner>,
    remote: EndpointId,
    mut send: iroh::endpoint::SendStream,
    mut recv: iroh::endpoint::RecvStream,
) -> Result<(), ProtoError> {
    let req: Request = proto::within(REQUEST_READ_TIMEOUT, proto::read_msg(&mut recv)).await?;
    let answer = match req {
        Request::Lookup { key, wait_ms } => lookup(inner, remote, key, wait_ms, 0).await?,
        Request::LookupInline {
            key,
            wait_ms,
            inline_max,
        } => lookup(inner, remote, key, wait_ms, inline_max).await?,
        Request::Catalog {
            since,
            watch,
            wait_ms,
        } => {
            let update = crate::exchange::answer(inner, since, watch, wait_ms).await?;
            inner.bump(&inner.counters.answers, 1);
            proto::write_msg_max(
                &mut send,
                &Answer::Catalog(update),
                proto::MAX_CATALOG_MESSAGE,
            )
            .await?;
            let _ = send.finish();
            return Ok(());
        }
        Request::Peers => {
            let groups = inner
                .peers
                .members
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&remote)
                .map(|(g, _)| g.clone())
                .unwrap_or_default();
            Answer::Peers(peers::gossip(inner, &remote, &groups))
        }
    };
    inner.bump(&inner.counters.answers, 1);
    proto::write_msg(&mut send, &answer).await?;
    let _ = send.finish();
    Ok(())
}

/// A lookup (`inline_max` 0) or a lookup that may carry small bodies.
async fn lookup(
    inner: &Inner,
    remote: EndpointId,
    key: String,
    wait_ms: u32,
    inline_max: u32,
) -> Result<Answer, ProtoError> {
    if key.len() > 16 * 1024 {
        return Err(ProtoError::Violation("oversized key".into()));
    }
    if wait_ms > 0 {
        let wait = Duration::from_millis(wait_ms as u64).min(inner.opts.peer_fill_wait);
        settle(inner, &key, Instant::now() + wait).await;
    }
    inner.bump(&inner.counters.lookups_answered, 1);
    let inline_max = inline_max.min(proto::MAX_INLINE);
    let entries = inner.cache.variants(&key).unwrap_or_default();
    let answer = answer(inner, remote, &key, &entries, inline_max > 0);
    let Answer::OffersInline(mut offers) = answer else {
        return Ok(answer);
    };
    // The small bodies themselves (a body evicted meanwhile is simply not inlined: the
    // asker fetches it over blobs, or the offer fails there).
    for offer in &mut offers {
        let Some(e) = entries
            .iter()
            .find(|e| e.attestation.as_deref() == Some(offer.attestation.as_slice()))
        else {
            continue;
        };
        if e.len > u64::from(inline_max) {
            continue;
        }
        let mut body = Vec::with_capacity(e.len as usize);
        let mut s = inner.cache.body(e, 0..e.len);
        let mut ok = true;
        while let Some(chunk) = s.next().await {
            match chunk {
                Ok(c) => body.extend_from_slice(&c),
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if ok && body.len() as u64 == e.len {
            inner.bump(&inner.counters.bytes_to_peers, e.len);
            inner.peers.add_given(&remote, e.len);
            offer.body = Some(body);
        }
    }
    Ok(Answer::OffersInline(offers))
}

/// What to answer about `key` (stored as `entries`) to `remote` (`OffersInline` without
/// bodies yet, when `inline`).
fn answer(
    inner: &Inner,
    remote: EndpointId,
    key: &str,
    entries: &[cache::Entry],
    inline: bool,
) -> Answer {
    let mut offers = Vec::new();
    let mut size = 0;
    let mut hashes = Vec::new();
    // Only shareable entries, which are the only ones with an attestation: private
    // responses are never offered (DESIGN.md, "Never shared").
    for e in entries.iter().filter(|e| e.shareable) {
        let Some(a) = e.attestation.clone() else {
            continue;
        };
        size += a.len() + 8;
        if inline && e.len <= u64::from(proto::MAX_INLINE) {
            size += e.len as usize + 8;
        }
        if offers.len() >= proto::MAX_OFFERS || size > proto::MAX_MESSAGE - 1024 {
            break;
        }
        hashes.push(e.hash);
        offers.push(a);
    }
    if !offers.is_empty() {
        inner
            .offered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .offer(remote, hashes);
        if inline {
            let offers = offers
                .into_iter()
                .map(|attestation| proto::Offer {
                    attestation,
                    body: None,
                })
                .collect();
            return Answer::OffersInline(offers);
        }
        return Answer::Offers(offers);
    }
    let me_first = inner.endpoint.id().as_bytes() < remote.as_bytes();
    let phase = {
        let mut map = inner.inflight.lock().unwrap_or_else(|e| e.into_inner());
        map.get_mut(key).map(|i| {
            let phase = *i.phase.borrow();
            if phase == Phase::Seeking && !me_first {
                // The asker is seeking too (it asks only while it seeks), and goes first.
                let smaller = i.defer_to.is_none_or(|d| remote.as_bytes() < d.as_bytes());
                if smaller {
                    i.defer_to = Some(remote);
                }
            }
            phase
        })
    };
    // A download under way whose result will be shareable (its client may already have
    // the whole body while it is being committed).
    let filling = inner
        .cache
        .fill_in_progress(key)
        .and_then(|f| f.head_now())
        .is_some_and(|h| h.shareable);
    match phase {
        _ if filling => Answer::Fetching,
        Some(Phase::Fetching) => Answer::Fetching,
        // Both are seeking: the smaller endpoint id fetches, the other waits for it.
        Some(Phase::Seeking) if me_first => Answer::Fetching,
        _ => Answer::NotFound,
    }
}

/// Waits until this device is no longer seeking or fetching `key` (and any fill of it
/// has been stored), or until `deadline`.
pub(crate) async fn settle(inner: &Inner, key: &str, deadline: Instant) {
    let deadline = tokio::time::Instant::from_std(deadline);
    loop {
        let rx = inner
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .map(|i| i.phase.subscribe());
        if let Some(mut rx) = rx {
            // Changes of phase are not interesting; the guard's end is.
            loop {
                match tokio::time::timeout_at(deadline, rx.changed()).await {
                    Err(_) => return,
                    Ok(Err(_)) => break,
                    Ok(Ok(())) => {}
                }
            }
            continue;
        }
        if let Some(fill) = inner.cache.fill_in_progress(key) {
            if tokio::time::timeout_at(deadline, fill.finished())
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        return;
    }
}
