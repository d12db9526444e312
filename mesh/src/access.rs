//! Who may fetch which body over the blobs protocol. iroh-blobs serves any hash to anyone
//! who asks; here every connection and every request is checked: a peer may fetch a body
//! only if this device offered it that body in a lookup answer (so only shareable
//! entries, only to group members and to strangers who asked by tag), or if the body is
//! a file shared with a ticket.
//! Requests for several blobs at once, pushes and observation are refused.
//!
//! Bounded, like everything keyed by the network: [`Offered`] remembers the last
//! [`MAX_OFFERED_PER_PEER`] hashes offered to each of the last [`MAX_OFFERED_PEERS`] peers
//! (an older offer is simply asked for again), and a peer may hold at most
//! [`MAX_BLOBS_CONNECTIONS_PER_PEER`] blobs connections, all peers together
//! [`MAX_BLOBS_CONNECTIONS`].

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, Weak};

use lru::LruCache;

use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::EndpointId;
use iroh_blobs::provider::events::{
    AbortReason, ConnectMode, EventMask, EventSender, ObserveMode, ProviderMessage, RequestMode,
    RequestUpdate, ThrottleMode,
};

use crate::Inner;

/// Peers whose offers are remembered.
pub const MAX_OFFERED_PEERS: usize = 256;
/// Offers remembered per peer.
pub const MAX_OFFERED_PER_PEER: usize = 1024;
/// Blobs connections one peer may hold at once.
pub const MAX_BLOBS_CONNECTIONS_PER_PEER: usize = 4;
/// Blobs connections all peers together may hold.
pub const MAX_BLOBS_CONNECTIONS: usize = 512;

/// The body hashes offered to each peer: the only ones it may fetch (plus shared files).
pub(crate) struct Offered(LruCache<EndpointId, LruCache<[u8; 32], ()>>);

impl Default for Offered {
    fn default() -> Self {
        Self(LruCache::new(NonZeroUsize::new(MAX_OFFERED_PEERS).unwrap()))
    }
}

impl Offered {
    pub fn offer(&mut self, peer: EndpointId, hashes: impl IntoIterator<Item = [u8; 32]>) {
        let set = self.0.get_or_insert_mut(peer, || {
            LruCache::new(NonZeroUsize::new(MAX_OFFERED_PER_PEER).unwrap())
        });
        for h in hashes {
            set.put(h, ());
        }
    }

    pub fn was_offered(&self, peer: &EndpointId, hash: &[u8; 32]) -> bool {
        self.0.peek(peer).is_some_and(|s| s.contains(hash))
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        (
            self.0.len(),
            self.0.iter().map(|(_, s)| s.len()).max().unwrap_or(0),
        )
    }
}

/// The blobs protocol, without its habit of shutting the store down with the router
/// (the store is the cache's, which closes it itself).
#[derive(Debug, Clone)]
pub(crate) struct Blobs(pub iroh_blobs::BlobsProtocol);

impl ProtocolHandler for Blobs {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        ProtocolHandler::accept(&self.0, conn).await
    }

    async fn shutdown(&self) {}
}

/// The event hook that enforces the rules above.
pub(crate) fn events(inner: Weak<Inner>) -> EventSender {
    let mask = EventMask {
        connected: ConnectMode::Intercept,
        get: RequestMode::InterceptLog,
        get_many: RequestMode::Disabled,
        push: RequestMode::Disabled,
        observe: ObserveMode::Intercept,
        throttle: ThrottleMode::None,
    };
    let (tx, mut rx) = EventSender::channel(64, mask);
    let conns: Arc<Mutex<HashMap<u64, EndpointId>>> = Arc::default();
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let Some(inner) = inner.upgrade() else { break };
            match msg {
                ProviderMessage::ClientConnected(msg) => {
                    let ok = match msg.endpoint_id {
                        Some(id) if !inner.peers.banned(&id) => {
                            let mut conns = conns.lock().unwrap_or_else(|e| e.into_inner());
                            let theirs = conns.values().filter(|c| **c == id).count();
                            if theirs >= MAX_BLOBS_CONNECTIONS_PER_PEER
                                || conns.len() >= MAX_BLOBS_CONNECTIONS
                            {
                                tracing::debug!(peer = %id, theirs, all = conns.len(), "refused a blobs connection: too many");
                                Err(AbortReason::RateLimited)
                            } else {
                                conns.insert(msg.connection_id, id);
                                Ok(())
                            }
                        }
                        _ => Err(AbortReason::Permission),
                    };
                    msg.tx.send(ok).await.ok();
                }
                ProviderMessage::ConnectionClosed(msg) => {
                    conns
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&msg.connection_id);
                }
                ProviderMessage::GetRequestReceived(msg) => {
                    let who = conns
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&msg.connection_id)
                        .copied();
                    let hash: [u8; 32] = msg.request.hash.into();
                    let allowed = msg.request.ranges.is_blob()
                        && who.is_some_and(|id| may_fetch(&inner, &id, &hash));
                    if allowed {
                        msg.tx.send(Ok(())).await.ok();
                        // Count what goes out, per peer.
                        let mut updates = msg.rx;
                        let weak = Arc::downgrade(&inner);
                        tokio::spawn(async move {
                            while let Ok(Some(u)) = updates.recv().await {
                                if let RequestUpdate::Completed(c) = u {
                                    if let (Some(inner), Some(id)) = (weak.upgrade(), who) {
                                        let n = c.stats.payload_bytes_sent;
                                        inner.bump(&inner.counters.bytes_to_peers, n);
                                        inner.peers.add_given(&id, n);
                                    }
                                }
                            }
                        });
                    } else {
                        inner.bump(&inner.counters.refused, 1);
                        tracing::info!(peer = ?who, hash = %msg.request.hash, "refused a body request: not offered to this peer");
                        msg.tx.send(Err(AbortReason::Permission)).await.ok();
                    }
                }
                ProviderMessage::ObserveRequestReceived(msg) => {
                    // Whether this device holds a body is not for strangers to watch.
                    msg.tx.send(Err(AbortReason::Permission)).await.ok();
                }
                _ => {}
            }
        }
    });
    tx
}

fn may_fetch(inner: &Inner, id: &EndpointId, hash: &[u8; 32]) -> bool {
    if inner.peers.banned(id) {
        return false;
    }
    if inner
        .shared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(hash)
    {
        return true;
    }
    // An offer is the capability: only members (after the handshake) and strangers who
    // asked by tag (within their answer budget) are ever offered anything.
    inner
        .offered
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .was_offered(id, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(i: u32) -> EndpointId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&i.to_le_bytes());
        iroh::SecretKey::from_bytes(&b).public()
    }

    #[test]
    fn offers_are_bounded_per_peer_and_in_peers() {
        let mut o = Offered::default();
        let many = (0..MAX_OFFERED_PER_PEER as u32 + 500).map(|i| {
            let mut h = [0u8; 32];
            h[..4].copy_from_slice(&i.to_le_bytes());
            h
        });
        o.offer(peer(0), many);
        assert_eq!(o.counts(), (1, MAX_OFFERED_PER_PEER));
        let mut newest = [0u8; 32];
        newest[..4].copy_from_slice(&(MAX_OFFERED_PER_PEER as u32 + 499).to_le_bytes());
        assert!(
            o.was_offered(&peer(0), &newest),
            "the newest offers are kept"
        );
        assert!(
            !o.was_offered(&peer(0), &[0u8; 32]),
            "the oldest went first"
        );
        for i in 1..=MAX_OFFERED_PEERS as u32 + 10 {
            o.offer(peer(i), [[1u8; 32]]);
        }
        assert_eq!(o.counts().0, MAX_OFFERED_PEERS);
        assert!(o.was_offered(&peer(MAX_OFFERED_PEERS as u32 + 10), &[1u8; 32]));
        assert!(
            !o.was_offered(&peer(0), &newest),
            "the peer asked longest ago went first"
        );
    }
}
