//! Who may fetch which body over the blobs protocol. iroh-blobs serves any hash to anyone
//! who asks; here every connection and every request is checked: a peer may fetch a body
//! only if this device offered it that body in a lookup answer (so only shareable
//! entries, only to group members), or if the body is a file shared with a ticket.
//! Requests for several blobs at once, pushes and observation are refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::EndpointId;
use iroh_blobs::provider::events::{
    AbortReason, ConnectMode, EventMask, EventSender, ObserveMode, ProviderMessage, RequestMode,
    RequestUpdate, ThrottleMode,
};

use crate::Inner;

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
                            conns
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(msg.connection_id, id);
                            Ok(())
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
    inner.peers.is_member(id)
        && inner
            .offered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .is_some_and(|s| s.contains(hash))
}
