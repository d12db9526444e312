//! A body streamed from peers as it arrives, verified leaf by leaf against its BLAKE3 hash
//! (iroh-blobs' get state machine decodes and checks the bao stream; nothing unverified is
//! ever yielded). The proxy feeds it into a cache fill, so the client gets its first bytes
//! at once and the body is stored when complete.
//!
//! When a peer fails mid-way (gone, stalled, or sending bytes that do not verify — then it
//! is banned), the next peer that offered the same hash continues from the current offset.
//! When none is left, the stream ends with an error: the client's response is cut off
//! (never a clean short body) and nothing is stored.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use iroh::EndpointId;
use iroh_blobs::get::fsm::{self, AtBlobContent, BlobContentNext, ConnectedNext};
use iroh_blobs::protocol::{ChunkRanges, ChunkRangesExt, GetRequest};
use iroh_blobs::Hash;

use crate::{peers, Inner};

type Content = AtBlobContent;

struct State {
    inner: Arc<Inner>,
    hash: [u8; 32],
    size: u64,
    pos: u64,
    sources: VecDeque<EndpointId>,
    current: Option<(EndpointId, Content)>,
    failed: bool,
}

/// Opens the transfer of `hash` from `peer`, starting at byte `pos`.
async fn open(
    inner: &Inner,
    peer: EndpointId,
    hash: [u8; 32],
    size: u64,
    pos: u64,
) -> Result<Content, String> {
    let conn = peers::blobs_conn(inner, peer).await?;
    let req = GetRequest::blob_ranges(Hash::from_bytes(hash), ChunkRanges::bytes(pos..));
    let idle = inner.opts.fetch_idle_timeout;
    let step = async {
        let connected = fsm::start(conn, req, Default::default())
            .next()
            .await
            .map_err(|e| e.to_string())?;
        let ConnectedNext::StartRoot(root) = connected.next().await.map_err(|e| e.to_string())?
        else {
            return Err("unexpected response".to_string());
        };
        let (content, header_size) = root.next().next().await.map_err(|e| e.to_string())?;
        Ok((content, header_size))
    };
    let (content, header_size) = tokio::time::timeout(idle, step)
        .await
        .map_err(|_| format!("no answer for {idle:?}"))??;
    if header_size != size {
        peers::ban(
            inner,
            peer,
            "sent a body whose size is not the attested size",
        );
        return Err("size mismatch".into());
    }
    Ok(content)
}

/// Starts streaming: opens the first source that answers (so a failure here costs the
/// caller nothing: it can go to the origin); `None` when none does.
pub(crate) async fn start(
    inner: Arc<Inner>,
    hash: [u8; 32],
    size: u64,
    sources: Vec<EndpointId>,
) -> Option<(EndpointId, BoxStream<'static, Result<Bytes, String>>)> {
    let mut sources: VecDeque<EndpointId> = sources.into();
    while let Some(peer) = sources.pop_front() {
        if inner.peers.banned(&peer) {
            continue;
        }
        match open(&inner, peer, hash, size, 0).await {
            Ok(content) => {
                let state = State {
                    inner,
                    hash,
                    size,
                    pos: 0,
                    sources,
                    current: Some((peer, content)),
                    failed: false,
                };
                return Some((peer, futures_util::stream::unfold(state, step).boxed()));
            }
            Err(e) => tracing::info!(%peer, "body from peer: {e}"),
        }
    }
    None
}

/// True when the bytes themselves were wrong (as opposed to the transfer failing).
pub(crate) fn is_lie(e: &fsm::DecodeError) -> bool {
    matches!(
        e,
        fsm::DecodeError::LeafHashMismatch { .. } | fsm::DecodeError::ParentHashMismatch { .. }
    )
}

async fn step(mut st: State) -> Option<(Result<Bytes, String>, State)> {
    loop {
        if st.failed || st.pos >= st.size {
            return None;
        }
        let (peer, content) = match st.current.take() {
            Some(c) => c,
            None => {
                let Some(peer) = st.sources.pop_front() else {
                    st.failed = true;
                    let msg = format!(
                        "no peer could finish the body (at {} of {})",
                        st.pos, st.size
                    );
                    return Some((Err(msg), st));
                };
                if st.inner.peers.banned(&peer) {
                    continue;
                }
                match open(&st.inner, peer, st.hash, st.size, st.pos).await {
                    Ok(c) => {
                        tracing::info!(%peer, at = st.pos, "resuming the body from another peer");
                        (peer, c)
                    }
                    Err(e) => {
                        tracing::info!(%peer, "body from peer: {e}");
                        continue;
                    }
                }
            }
        };
        let idle = st.inner.opts.fetch_idle_timeout;
        match tokio::time::timeout(idle, content.next()).await {
            Err(_) => tracing::info!(%peer, at = st.pos, "peer stalled for {idle:?}"),
            Ok(BlobContentNext::More((content, Ok(item)))) => {
                let bao_tree::io::BaoContentItem::Leaf(leaf) = item else {
                    st.current = Some((peer, content));
                    continue;
                };
                st.current = Some((peer, content));
                let end = leaf.offset + leaf.data.len() as u64;
                if end <= st.pos {
                    continue;
                }
                let skip = st.pos.saturating_sub(leaf.offset) as usize;
                let data = leaf.data.slice(skip..);
                st.pos = end;
                let n = data.len() as u64;
                st.inner.bump(&st.inner.counters.bytes_from_peers, n);
                st.inner.peers.add_taken(&peer, n);
                return Some((Ok(data), st));
            }
            Ok(BlobContentNext::More((_, Err(e)))) => {
                if is_lie(&e) {
                    peers::ban(
                        &st.inner,
                        peer,
                        &format!("sent bytes that do not match the hash ({e})"),
                    );
                } else {
                    // Gone, reset, out of data: not a lie, just not a source any more.
                    tracing::info!(%peer, at = st.pos, "peer stopped sending: {e}");
                }
            }
            Ok(BlobContentNext::Done(_)) => {
                if st.pos < st.size {
                    tracing::info!(%peer, at = st.pos, "peer ended the body early");
                } else {
                    return None;
                }
            }
        }
    }
}
