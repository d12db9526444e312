//! The lookup protocol (`meshcache/1` over iroh QUIC).
//!
//! Goals: ask the devices nearby "do you have this URL?" within tens of milliseconds;
//! answer only members of a shared group; never let a peer make us read or hold an
//! unbounded amount. Non-goals: moving bodies (iroh-blobs does that, verified) and
//! discovering peers (tickets, gossip in [`Welcome`], mDNS).
//!
//! A connection starts with a handshake on its first bidirectional stream:
//!
//! ```text
//! dialer   -> Hello    { version, nonce_d, groups it is in, its addresses }
//! acceptor -> HelloAck { version, nonce_a, proofs for the common groups over nonce_d }
//! dialer   -> Proofs   { proofs for the common groups over nonce_a }
//! acceptor -> Welcome  { groups both proved, peers it knows in them }
//! ```
//!
//! Each proof is a MAC keyed by the group secret over the prover's role, both endpoint ids
//! (which QUIC's TLS already authenticates) and the other side's fresh nonce. After the
//! handshake the dialer opens one stream per [`Request`] and reads one [`Answer`]: lookups,
//! and every [`GOSSIP_INTERVAL`] a [`Request::Peers`], so members that joined later are
//! learned (a `Welcome` only lists those connected at handshake time).
//!
//! Since minor version 2 the dialer also keeps a [`Request::Catalog`] outstanding on its
//! connection (a long poll): the acceptor answers at once with its whole catalog, then
//! each time something changes with a delta — keys committed since, keys it is seeking or
//! fetching right now, the fetch times of the feed documents the dialer watches. A miss
//! asks only the peers whose catalog may hold the key (see `exchange.rs`). A dialer sends
//! catalog requests only to an acceptor whose `HelloAck` says version 2 or later.
//!
//! Since minor version 3 a lookup may carry small bodies ([`Request::LookupInline`],
//! answered with [`Answer::OffersInline`]): a body of at most `inline_max` bytes
//! ([`MAX_INLINE`]) comes with its attestation, so a small object takes one round trip
//! instead of two (the lookup, then a blobs transfer). The asker checks it against the
//! attested BLAKE3 hash — the same hash the blobs transfer verifies — before using a byte.
//! A dialer sends it only to an acceptor whose `HelloAck` says version 3 or later.
//!
//! Every message is a 4-byte big-endian length and a postcard body, at most
//! [`MAX_MESSAGE`] bytes; anything larger or malformed is a protocol violation.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::group::GroupId;

/// The ALPN: the protocol's name and major version.
pub const ALPN: &[u8] = b"meshcache/1";
/// The minor version inside the handshake.
pub const VERSION: u16 = 3;
/// The first minor version that answers [`Request::Catalog`].
pub const CATALOG_VERSION: u16 = 2;
/// The first minor version that answers [`Request::LookupInline`].
pub const INLINE_VERSION: u16 = 3;
/// Largest body sent inline with its offer (one iroh-blobs chunk group).
pub const MAX_INLINE: u32 = 16 * 1024;
/// Largest message either side accepts.
pub const MAX_MESSAGE: usize = 256 * 1024;
/// Largest catalog answer (a whole catalog of [`crate::catalog::MAX_KEYS`] keys fits).
pub const MAX_CATALOG_MESSAGE: usize = 2 << 20;
/// Most feed documents one catalog request may watch.
pub const MAX_WATCH: usize = 64;
/// Most keys a peer may say it is seeking or fetching at once.
pub const MAX_BUSY: usize = 4096;
/// Most added keys in one delta (more: the whole catalog is sent instead).
pub const MAX_ADDED: usize = 16384;
/// Most offers in one answer.
pub const MAX_OFFERS: usize = 8;
/// Most peers listed in a [`Welcome`].
pub const MAX_GOSSIP: usize = 64;
/// How often a connected peer is asked which other members it knows.
pub const GOSSIP_INTERVAL: Duration = Duration::from_secs(3);
/// The whole handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// QUIC close codes.
pub mod close {
    pub const NOT_MEMBER: u32 = 1;
    pub const BANNED: u32 = 2;
    pub const PROTOCOL: u32 = 3;
    pub const SHUTDOWN: u32 = 4;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u16,
    pub nonce: [u8; 32],
    pub groups: Vec<GroupId>,
    /// Where the dialer accepts connections (so the acceptor can dial back).
    pub addrs: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    pub group: GroupId,
    pub mac: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloAck {
    pub version: u16,
    pub nonce: [u8; 32],
    pub proofs: Vec<Proof>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proofs {
    pub proofs: Vec<Proof>,
}

/// A peer the acceptor knows, shared with members of a common group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub id: [u8; 32],
    pub addrs: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub groups: Vec<GroupId>,
    pub peers: Vec<PeerInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Do you have `key`? With `wait_ms > 0`: if you are fetching it right now, answer
    /// when that is done (at most `wait_ms`).
    Lookup { key: String, wait_ms: u32 },
    /// Which members of our common groups are you connected to? (Asked every
    /// [`GOSSIP_INTERVAL`]: a member that joined after our handshake is learned this way.)
    Peers,
    /// Your catalog: whole (`since` is `None`, or names another epoch or a generation
    /// the acceptor no longer has the changes since), or what changed after `since`;
    /// when nothing has, wait up to `wait_ms` for a change. `watch`: feed documents whose
    /// fetch time the answer should carry (at most [`MAX_WATCH`]).
    Catalog {
        since: Option<(u64, u64)>,
        watch: Vec<String>,
        wait_ms: u32,
    },
    /// [`Request::Lookup`], and bodies of at most `inline_max` bytes (capped at
    /// [`MAX_INLINE`]) with their offers (minor version 3).
    LookupInline {
        key: String,
        wait_ms: u32,
        inline_max: u32,
    },
}

/// An offer with, for a small body, the body itself (the answer to
/// [`Request::LookupInline`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The attestation, as in [`Answer::Offers`].
    pub attestation: Vec<u8>,
    /// The body, when it is no larger than the request's `inline_max`.
    pub body: Option<Vec<u8>>,
}

/// A catalog, or what changed in it (the answer to [`Request::Catalog`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CatalogUpdate {
    /// The acceptor's catalog epoch (new at every start) and generation.
    pub epoch: u64,
    pub gen: u64,
    /// The whole catalog ([`crate::catalog::Filter`], encoded): replaces what the dialer
    /// held. `None`: `added` is a delta on top of it.
    pub full: Option<Vec<u8>>,
    /// Keys committed since `since` ([`crate::catalog::key_hash`]), at most [`MAX_ADDED`].
    pub added: Vec<u64>,
    /// Keys the acceptor is seeking (`false`) or fetching (`true`) now: the whole set.
    pub busy: Vec<(u64, bool)>,
    /// Watched feed documents it holds, with the time its newest copy was fetched from
    /// the origin (ms since the epoch, as attested).
    pub heads: Vec<(String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// Attestations of the stored variants (the asker picks the one its request selects).
    Offers(Vec<Vec<u8>>),
    /// Not stored, but this device is fetching it now: ask again with `wait_ms`.
    Fetching,
    NotFound,
    /// The answer to [`Request::Peers`], at most [`MAX_GOSSIP`].
    Peers(Vec<PeerInfo>),
    /// The answer to [`Request::Catalog`].
    Catalog(CatalogUpdate),
    /// The answer to [`Request::LookupInline`] when something is stored (else `Fetching`
    /// or `NotFound`, as for a lookup).
    OffersInline(Vec<Offer>),
}

/// A protocol failure, and whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("peer broke the protocol: {0}")]
    Violation(String),
    #[error("connection: {0}")]
    Io(String),
    #[error("timed out")]
    Timeout,
}

impl ProtoError {
    /// True when the peer (not the network) is at fault.
    pub fn is_violation(&self) -> bool {
        matches!(self, ProtoError::Violation(_))
    }
}

pub async fn write_msg<T: Serialize>(
    send: &mut iroh::endpoint::SendStream,
    msg: &T,
) -> Result<(), ProtoError> {
    write_msg_max(send, msg, MAX_MESSAGE).await
}

/// [`write_msg`] with another size limit (catalog answers).
pub async fn write_msg_max<T: Serialize>(
    send: &mut iroh::endpoint::SendStream,
    msg: &T,
    max: usize,
) -> Result<(), ProtoError> {
    let body = postcard::to_stdvec(msg).map_err(|e| ProtoError::Io(format!("encode: {e}")))?;
    if body.len() > max {
        return Err(ProtoError::Io(format!(
            "message of {} bytes is over the limit",
            body.len()
        )));
    }
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    send.write_all(&frame)
        .await
        .map_err(|e| ProtoError::Io(e.to_string()))
}

pub async fn read_msg<T: DeserializeOwned>(
    recv: &mut iroh::endpoint::RecvStream,
) -> Result<T, ProtoError> {
    read_msg_max(recv, MAX_MESSAGE).await
}

/// [`read_msg`] with another size limit (catalog answers).
pub async fn read_msg_max<T: DeserializeOwned>(
    recv: &mut iroh::endpoint::RecvStream,
    max: usize,
) -> Result<T, ProtoError> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len)
        .await
        .map_err(|e| ProtoError::Io(e.to_string()))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(ProtoError::Violation(format!(
            "message of {len} bytes (limit {max})"
        )));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| ProtoError::Io(e.to_string()))?;
    postcard::from_bytes(&body)
        .map_err(|e| ProtoError::Violation(format!("malformed message: {e}")))
}

/// One request on a new stream of `conn` and its answer (at most `max` bytes).
pub async fn call(
    conn: &iroh::endpoint::Connection,
    req: &Request,
    max: usize,
) -> Result<Answer, ProtoError> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| ProtoError::Io(e.to_string()))?;
    write_msg(&mut send, req).await?;
    let _ = send.finish();
    read_msg_max(&mut recv, max).await
}

/// Runs `f` with a deadline.
pub async fn within<T>(
    d: Duration,
    f: impl std::future::Future<Output = Result<T, ProtoError>>,
) -> Result<T, ProtoError> {
    tokio::time::timeout(d, f)
        .await
        .unwrap_or(Err(ProtoError::Timeout))
}
