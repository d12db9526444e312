//! The peer table: who this device knows, its connection to each, bans, and what each
//! peer gave and took.
//!
//! Every known peer has one dial task: connect, run the handshake as the dialer, keep the
//! connection (lookups open a stream on it) until it closes, then reconnect with backoff.
//! A peer learns of others from tickets (`mesh.peers`, `--peer`), from the peers listed in
//! a [`proto::Welcome`] (members of a common group), from a peer that dialed us, and from
//! mDNS.
//!
//! Everything here is keyed by what the network says, so everything is bounded: the table
//! holds at most [`MAX_PEERS`] peers (a full table makes room by dropping a never-connected
//! peer first, then the one gone longest; connected peers and peers added by ticket stay),
//! a peer not connected for [`FORGET_AFTER`] is dropped (unless added by ticket), and its
//! dial task ends with its entry. At most [`MAX_BANS`] bans are remembered (expired ones
//! go first, then the one ending soonest).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use iroh::endpoint::Connection;
use iroh::{EndpointAddr, EndpointId};

use crate::group::{mac_eq, GroupId};
use crate::proto::{self, close, Hello, HelloAck, Proof, Proofs, ProtoError, Welcome};
use crate::{hex, Inner};

/// How a peer is doing, for the status page.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub id: String,
    pub addrs: Vec<SocketAddr>,
    pub source: &'static str,
    pub state: String,
    pub groups: Vec<String>,
    pub given: u64,
    pub taken: u64,
    pub banned_for: Option<Duration>,
    pub ban_reason: Option<String>,
    pub bans: u32,
}

/// Most peers in the table.
pub const MAX_PEERS: usize = 256;
/// A peer (not added by ticket) that has not been connected for this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(10 * 60);
/// Most bans remembered.
pub const MAX_BANS: usize = 4096;
/// Lookup connections one peer may have open to this device at once (a device dials
/// once; a few more cover reconnects that overlap the old connection's end).
pub const MAX_INCOMING_PER_PEER: usize = 4;
/// Lookup connections all peers together may have open to this device.
pub const MAX_INCOMING: usize = 512;

/// Counts incoming lookup connections, per peer and in all.
#[derive(Debug, Default)]
pub(crate) struct Incoming(Arc<Mutex<HashMap<EndpointId, usize>>>);

/// One counted incoming connection; dropping it uncounts it.
pub(crate) struct IncomingSlot(Arc<Mutex<HashMap<EndpointId, usize>>>, EndpointId);

impl Incoming {
    /// A slot for a new connection from `id`, or `None` when it or everyone has too many.
    pub fn admit(&self, id: EndpointId) -> Option<IncomingSlot> {
        let mut m = lock(&self.0);
        let all: usize = m.values().sum();
        let theirs = m.get(&id).copied().unwrap_or(0);
        if theirs >= MAX_INCOMING_PER_PEER || all >= MAX_INCOMING {
            tracing::debug!(peer = %id, theirs, all, "refused a lookup connection: too many");
            return None;
        }
        *m.entry(id).or_insert(0) += 1;
        Some(IncomingSlot(self.0.clone(), id))
    }
}

impl Drop for IncomingSlot {
    fn drop(&mut self) {
        let mut m = lock(&self.0);
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct Peer {
    /// Which dial task owns this entry: a task whose entry was dropped (and perhaps
    /// added again, with a new task) ends.
    pub task: u64,
    /// Since when it is connected, or was last connected, or was added.
    pub since: Instant,
    pub ever_connected: bool,
    pub addr: EndpointAddr,
    pub source: &'static str,
    pub state: String,
    /// Our connection to it, handshake done.
    pub conn: Option<Connection>,
    /// Our blobs connection to it (opened on first transfer).
    pub blobs: Option<Connection>,
    /// The protocol minor version its `HelloAck` stated on our connection.
    pub version: u16,
    pub groups: Vec<GroupId>,
    /// Bytes it sent us (bodies) and bytes we sent it.
    pub taken: u64,
    pub given: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Ban {
    pub until: Instant,
    pub reason: String,
    pub count: u32,
}

#[derive(Debug)]
pub(crate) struct Peers {
    pub map: Mutex<HashMap<EndpointId, Peer>>,
    pub bans: Mutex<HashMap<EndpointId, Ban>>,
    /// Peers that proved membership on a connection they opened to us, and in which
    /// groups (counted per live connection).
    pub members: Mutex<HashMap<EndpointId, (Vec<GroupId>, usize)>>,
    /// Bumped whenever a connection comes or goes.
    pub changed: tokio::sync::watch::Sender<u64>,
    pub incoming: Incoming,
    next_task: std::sync::atomic::AtomicU64,
}

impl Default for Peers {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            bans: Mutex::new(HashMap::new()),
            members: Mutex::new(HashMap::new()),
            changed: tokio::sync::watch::channel(0).0,
            incoming: Incoming::default(),
            next_task: std::sync::atomic::AtomicU64::new(1),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Peers {
    /// Connected peers and their connections.
    pub fn connected(&self) -> Vec<(EndpointId, Connection)> {
        let bans = lock(&self.bans);
        let now = Instant::now();
        lock(&self.map)
            .iter()
            .filter(|(id, _)| bans.get(*id).is_none_or(|b| b.until <= now))
            .filter_map(|(id, p)| p.conn.clone().map(|c| (*id, c)))
            .collect()
    }

    pub fn banned(&self, id: &EndpointId) -> bool {
        lock(&self.bans)
            .get(id)
            .is_some_and(|b| b.until > Instant::now())
    }

    /// True when `id` proved membership of a group this device is in (on either
    /// connection direction).
    pub fn is_member(&self, id: &EndpointId) -> bool {
        if self.banned(id) {
            return false;
        }
        lock(&self.members)
            .get(id)
            .is_some_and(|(g, n)| *n > 0 && !g.is_empty())
            || lock(&self.map)
                .get(id)
                .is_some_and(|p| p.conn.is_some() && !p.groups.is_empty())
    }

    /// The minor version of the protocol `id` speaks on our connection (0: not connected).
    pub fn version(&self, id: &EndpointId) -> u16 {
        lock(&self.map).get(id).map_or(0, |p| p.version)
    }

    pub fn add_taken(&self, id: &EndpointId, n: u64) {
        if let Some(p) = lock(&self.map).get_mut(id) {
            p.taken += n;
        }
    }

    pub fn add_given(&self, id: &EndpointId, n: u64) {
        if let Some(p) = lock(&self.map).get_mut(id) {
            p.given += n;
        }
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }
}

/// Admits an incoming connection: refused (and closed, saying why) when its peer is banned
/// or holds too many connections already; else the slot it holds while it lasts.
pub(crate) fn admit_incoming(inner: &Inner, conn: &Connection) -> Option<IncomingSlot> {
    let remote = conn.remote_id();
    if inner.peers.banned(&remote) {
        conn.close(close::BANNED.into(), b"banned");
        return None;
    }
    let slot = inner.peers.incoming.admit(remote);
    if slot.is_none() {
        inner.bump(&inner.counters.refused, 1);
        conn.close(close::PROTOCOL.into(), b"too many connections");
    }
    slot
}

/// Bans a peer: closes its connections and refuses it until the ban ends.
pub(crate) fn ban(inner: &Inner, id: EndpointId, reason: &str) {
    let until = Instant::now() + inner.opts.ban_duration;
    let count = {
        let mut bans = lock(&inner.peers.bans);
        if !bans.contains_key(&id) && bans.len() >= MAX_BANS {
            make_room_for_ban(&mut bans);
        }
        let b = bans.entry(id).or_insert(Ban {
            until,
            reason: String::new(),
            count: 0,
        });
        b.until = until;
        b.reason = reason.to_string();
        b.count += 1;
        b.count
    };
    inner.bump(&inner.counters.bans, 1);
    tracing::warn!(peer = %id, count, "banned for {:?}: {reason}", inner.opts.ban_duration);
    let conns: Vec<Connection> = {
        let mut map = lock(&inner.peers.map);
        match map.get_mut(&id) {
            Some(p) => {
                p.state = format!("banned: {reason}");
                [p.conn.take(), p.blobs.take()]
                    .into_iter()
                    .flatten()
                    .collect()
            }
            None => Vec::new(),
        }
    };
    for c in conns {
        c.close(close::BANNED.into(), b"banned");
    }
    // A stranger's address is banned too: identities cost it nothing.
    crate::open::ban(inner, id);
    inner.peers.notify();
}

/// Drops expired bans, or else the one that ends soonest.
fn make_room_for_ban(bans: &mut HashMap<EndpointId, Ban>) {
    let now = Instant::now();
    bans.retain(|_, b| b.until > now);
    if bans.len() >= MAX_BANS {
        if let Some(id) = bans.iter().min_by_key(|(_, b)| b.until).map(|(id, _)| *id) {
            bans.remove(&id);
        }
    }
}

/// Which peer a full table drops for a new one: one never connected (the oldest), else
/// the one disconnected longest. Connected peers and peers added by ticket are kept.
fn evictable(map: &HashMap<EndpointId, Peer>) -> Option<EndpointId> {
    let candidates = map
        .iter()
        .filter(|(_, p)| p.conn.is_none() && p.source != "ticket");
    candidates
        .min_by_key(|(_, p)| (p.ever_connected, p.since))
        .map(|(id, _)| *id)
}

/// Adds a peer (if new) and starts its dial task. A full table makes room (see the
/// module docs) or, when every peer in it is connected or configured, ignores the new one.
pub(crate) fn add(inner: &Arc<Inner>, addr: EndpointAddr, source: &'static str) {
    if addr.id == inner.endpoint.id() {
        return;
    }
    let task = inner
        .peers
        .next_task
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    {
        let mut map = lock(&inner.peers.map);
        if let Some(p) = map.get_mut(&addr.id) {
            // Learn new addresses, keep the task that is already running.
            p.addr = p.addr.clone().with_addrs(addr.addrs);
            return;
        }
        if map.len() >= MAX_PEERS {
            match evictable(&map) {
                Some(old) => {
                    map.remove(&old);
                    tracing::debug!(peer = %old, "peer table full: forgot a peer not connected");
                }
                None => {
                    tracing::debug!(peer = %addr.id, source, "peer table full of connected peers: ignored");
                    return;
                }
            }
        }
        map.insert(
            addr.id,
            Peer {
                task,
                since: Instant::now(),
                ever_connected: false,
                addr: addr.clone(),
                source,
                state: "connecting".into(),
                conn: None,
                blobs: None,
                version: 0,
                groups: Vec::new(),
                taken: 0,
                given: 0,
            },
        );
    }
    tracing::info!(peer = %addr.id, source, "new mesh peer");
    let weak = Arc::downgrade(inner);
    tokio::spawn(dial_loop(weak, addr.id, task));
}

/// True while `task` owns `id`'s entry; drops the entry (and says false) when the peer,
/// not added by ticket, has not been connected for [`FORGET_AFTER`].
fn still_mine(inner: &Inner, id: &EndpointId, task: u64) -> bool {
    let mut map = lock(&inner.peers.map);
    let Some(p) = map.get(id).filter(|p| p.task == task) else {
        return false;
    };
    if p.conn.is_none() && p.source != "ticket" && p.since.elapsed() >= FORGET_AFTER {
        tracing::info!(peer = %id, "forgot a mesh peer not seen for {FORGET_AFTER:?}");
        map.remove(id);
        return false;
    }
    true
}

/// Keeps a connection to one peer, reconnecting with backoff, while the peer is in the
/// table.
async fn dial_loop(weak: Weak<Inner>, id: EndpointId, task: u64) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.is_shutting_down() || !still_mine(&inner, &id, task) {
            return;
        }
        let mut stop = inner.shutdown.subscribe();
        let wait = if inner.peers.banned(&id) {
            Duration::from_secs(5)
        } else {
            match dial(&inner, id).await {
                Ok(conn) => {
                    backoff = Duration::from_millis(500);
                    drop(inner);
                    // Connected: ask now and then which members it knows (new ones
                    // join the carriage after our handshake), until it closes.
                    loop {
                        let tick = tokio::select! {
                            _ = conn.closed() => false,
                            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
                            _ = tokio::time::sleep(proto::GOSSIP_INTERVAL) => true,
                        };
                        if !tick {
                            break;
                        }
                        let Some(inner) = weak.upgrade() else { return };
                        refresh(&inner, id, &conn).await;
                    }
                    let Some(inner) = weak.upgrade() else { return };
                    if let Some(p) = lock(&inner.peers.map).get_mut(&id) {
                        if p.conn
                            .as_ref()
                            .is_some_and(|c| c.stable_id() == conn.stable_id())
                        {
                            p.conn = None;
                            p.blobs = None;
                            p.since = Instant::now();
                            p.state = "disconnected".into();
                        }
                    }
                    inner.peers.notify();
                    tracing::info!(peer = %id, "mesh peer disconnected");
                    Duration::from_millis(200)
                }
                Err((e, not_member)) => {
                    if let Some(p) = lock(&inner.peers.map).get_mut(&id) {
                        p.state = e.clone();
                    }
                    tracing::debug!(peer = %id, "mesh dial: {e}");
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    if not_member {
                        Duration::from_secs(60)
                    } else {
                        backoff
                    }
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Connects and runs the handshake as the dialer. The error says why, and whether the
/// peer simply shares no group with us.
async fn dial(inner: &Arc<Inner>, id: EndpointId) -> Result<Connection, (String, bool)> {
    let addr = match lock(&inner.peers.map).get(&id) {
        Some(p) => p.addr.clone(),
        None => return Err(("forgotten".into(), false)),
    };
    let conn = tokio::time::timeout(
        proto::HANDSHAKE_TIMEOUT,
        inner.endpoint.connect(addr, proto::ALPN),
    )
    .await
    .map_err(|_| ("unreachable: connect timed out".to_string(), false))?
    .map_err(|e| (format!("unreachable: {e}"), false))?;
    let result = tokio::time::timeout(proto::HANDSHAKE_TIMEOUT, handshake(inner, &conn))
        .await
        .unwrap_or(Err(HandshakeError::Proto(ProtoError::Timeout)));
    match result {
        Ok((welcome, version)) => {
            let groups = welcome.groups.clone();
            {
                let mut map = lock(&inner.peers.map);
                if let Some(p) = map.get_mut(&id) {
                    p.conn = Some(conn.clone());
                    p.blobs = None;
                    p.version = version;
                    p.groups = groups.clone();
                    p.since = Instant::now();
                    p.ever_connected = true;
                    p.state = "connected".into();
                }
            }
            inner.peers.notify();
            tracing::info!(peer = %id, groups = groups.len(), "mesh peer connected");
            learn(inner, welcome.peers);
            if version >= proto::CATALOG_VERSION && inner.opts.catalogs {
                tokio::spawn(crate::exchange::pull(
                    Arc::downgrade(inner),
                    id,
                    conn.clone(),
                ));
            }
            Ok(conn)
        }
        Err(e) => {
            let not_member = matches!(&e, HandshakeError::NotMember);
            if let HandshakeError::Proto(p) = &e {
                if p.is_violation() {
                    ban(inner, id, &p.to_string());
                }
            }
            conn.close(close::PROTOCOL.into(), b"handshake failed");
            Err((e.to_string(), not_member))
        }
    }
}

/// Adds the peers another member listed.
fn learn(inner: &Arc<Inner>, list: Vec<proto::PeerInfo>) {
    for info in list.into_iter().take(proto::MAX_GOSSIP) {
        if let Ok(pid) = EndpointId::from_bytes(&info.id) {
            let addr = EndpointAddr::new(pid)
                .with_addrs(info.addrs.into_iter().map(iroh::TransportAddr::Ip));
            add(inner, addr, "gossip");
        }
    }
}

/// Asks a connected peer which members it knows.
async fn refresh(inner: &Arc<Inner>, id: EndpointId, conn: &Connection) {
    let ask = proto::call(conn, &proto::Request::Peers, proto::MAX_MESSAGE);
    match proto::within(proto::HANDSHAKE_TIMEOUT, ask).await {
        Ok(proto::Answer::Peers(list)) if list.len() <= proto::MAX_GOSSIP => learn(inner, list),
        Ok(_) => ban(inner, id, "answered a peer list with something else"),
        Err(e) if e.is_violation() => ban(inner, id, &e.to_string()),
        Err(e) => tracing::debug!(peer = %id, "peer list: {e}"),
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("not in any of our groups")]
    NotMember,
    #[error("handshake: {0}")]
    Proto(#[from] ProtoError),
}

/// The dialer's side of the handshake: the acceptor's welcome and its minor version.
async fn handshake(
    inner: &Arc<Inner>,
    conn: &Connection,
) -> Result<(Welcome, u16), HandshakeError> {
    let me = *inner.endpoint.id().as_bytes();
    let them = *conn.remote_id().as_bytes();
    let groups = inner.groups.current().unwrap_or_default();
    if groups.is_empty() {
        return Err(HandshakeError::NotMember);
    }
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| ProtoError::Io(e.to_string()))?;
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|e| ProtoError::Io(e.to_string()))?;
    let addrs: Vec<SocketAddr> = crate::addr_of(&inner.endpoint)
        .ip_addrs()
        .copied()
        .collect();
    proto::write_msg(
        &mut send,
        &Hello {
            version: proto::VERSION,
            nonce,
            groups: groups.iter().map(|g| g.id()).collect(),
            addrs,
        },
    )
    .await?;
    let ack: HelloAck = match proto::read_msg(&mut recv).await {
        Ok(a) => a,
        // An acceptor that shares no group closes the connection.
        Err(ProtoError::Io(_)) if conn.close_reason().is_some() => {
            return Err(HandshakeError::NotMember)
        }
        Err(e) => return Err(e.into()),
    };
    // Every proof the acceptor sends must check: a wrong one is a lie, not a mistake.
    let mut common = Vec::new();
    for p in &ack.proofs {
        let g = groups
            .iter()
            .find(|g| g.id() == p.group)
            .ok_or_else(|| ProtoError::Violation("proof for a group we did not name".into()))?;
        if !mac_eq(&g.membership_mac(b"acceptor", &them, &me, &nonce), &p.mac) {
            return Err(ProtoError::Violation("wrong membership proof".into()).into());
        }
        common.push(g.clone());
    }
    if common.is_empty() {
        return Err(HandshakeError::NotMember);
    }
    let proofs = common
        .iter()
        .map(|g| Proof {
            group: g.id(),
            mac: g.membership_mac(b"dialer", &me, &them, &ack.nonce),
        })
        .collect();
    proto::write_msg(&mut send, &Proofs { proofs }).await?;
    let welcome: Welcome = proto::read_msg(&mut recv).await?;
    let _ = send.finish();
    if welcome.groups.is_empty() {
        return Err(HandshakeError::NotMember);
    }
    Ok((welcome, ack.version))
}

/// Peers (other than `except`) that are connected and share one of `groups`: what a
/// [`Welcome`] lists.
pub(crate) fn gossip(
    inner: &Inner,
    except: &EndpointId,
    groups: &[GroupId],
) -> Vec<proto::PeerInfo> {
    lock(&inner.peers.map)
        .iter()
        .filter(|(id, p)| {
            *id != except && p.conn.is_some() && p.groups.iter().any(|g| groups.contains(g))
        })
        .take(proto::MAX_GOSSIP)
        .map(|(id, p)| proto::PeerInfo {
            id: *id.as_bytes(),
            addrs: p.addr.ip_addrs().copied().collect(),
        })
        .collect()
}

/// The blobs connection to a peer, opened on first use.
pub(crate) async fn blobs_conn(inner: &Inner, id: EndpointId) -> Result<Connection, String> {
    // A stranger is reached over the open mesh's endpoint.
    if let Some(r) = crate::open::blobs_conn(inner, id).await {
        return r;
    }
    let addr = {
        let map = lock(&inner.peers.map);
        let p = map.get(&id).ok_or("unknown peer")?;
        if let Some(c) = p.blobs.as_ref().filter(|c| c.close_reason().is_none()) {
            return Ok(c.clone());
        }
        p.addr.clone()
    };
    let conn = tokio::time::timeout(
        proto::HANDSHAKE_TIMEOUT,
        inner.endpoint.connect(addr, iroh_blobs::ALPN),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())?;
    if let Some(p) = lock(&inner.peers.map).get_mut(&id) {
        p.blobs = Some(conn.clone());
    }
    Ok(conn)
}

pub(crate) fn status(inner: &Inner) -> Vec<PeerStatus> {
    let now = Instant::now();
    let bans = lock(&inner.peers.bans).clone();
    let mut out: Vec<PeerStatus> = lock(&inner.peers.map)
        .iter()
        .map(|(id, p)| {
            let ban = bans.get(id);
            PeerStatus {
                id: id.to_string(),
                addrs: p.addr.ip_addrs().copied().collect(),
                source: p.source,
                state: p.state.clone(),
                groups: p.groups.iter().map(|g| hex(&g[..4])).collect(),
                given: p.given,
                taken: p.taken,
                banned_for: ban.filter(|b| b.until > now).map(|b| b.until - now),
                ban_reason: ban.map(|b| b.reason.clone()),
                bans: ban.map(|b| b.count).unwrap_or(0),
            }
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u32) -> EndpointId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&i.to_le_bytes());
        iroh::SecretKey::from_bytes(&b).public()
    }

    fn peer(i: u32, source: &'static str, ever_connected: bool, age: Duration) -> Peer {
        Peer {
            task: i as u64,
            since: Instant::now() - age,
            ever_connected,
            addr: EndpointAddr::new(id(i)),
            source,
            state: String::new(),
            conn: None,
            blobs: None,
            version: 0,
            groups: Vec::new(),
            taken: 0,
            given: 0,
        }
    }

    #[test]
    fn a_full_table_drops_a_never_connected_peer_first_then_the_longest_gone() {
        let mut map = HashMap::new();
        let s = Duration::from_secs;
        map.insert(id(1), peer(1, "gossip", true, s(500)));
        map.insert(id(2), peer(2, "mdns", false, s(10)));
        map.insert(id(3), peer(3, "gossip", false, s(20)));
        map.insert(id(4), peer(4, "ticket", false, s(900)));
        assert_eq!(evictable(&map), Some(id(3)), "never connected, oldest");
        map.remove(&id(3));
        assert_eq!(evictable(&map), Some(id(2)));
        map.remove(&id(2));
        assert_eq!(evictable(&map), Some(id(1)), "then the one gone longest");
        map.remove(&id(1));
        assert_eq!(evictable(&map), None, "a peer added by ticket stays");
    }

    #[test]
    fn bans_are_bounded_expired_first_then_the_soonest_to_end() {
        let now = Instant::now();
        let ban = |secs: u64, expired: bool| Ban {
            until: if expired {
                now - Duration::from_secs(secs)
            } else {
                now + Duration::from_secs(secs)
            },
            reason: String::new(),
            count: 1,
        };
        let mut bans = HashMap::new();
        for i in 0..MAX_BANS as u32 {
            bans.insert(id(i), ban(100 + i as u64, false));
        }
        make_room_for_ban(&mut bans);
        assert_eq!(bans.len(), MAX_BANS - 1);
        assert!(!bans.contains_key(&id(0)), "the ban ending soonest went");
        bans.insert(id(0), ban(1, true));
        bans.insert(id(MAX_BANS as u32), ban(5, true));
        make_room_for_ban(&mut bans);
        assert_eq!(bans.len(), MAX_BANS - 1, "expired bans went, nothing else");
    }

    #[test]
    fn incoming_connections_are_bounded_per_peer_and_in_all() {
        let incoming = Incoming::default();
        let mut held: Vec<_> = (0..MAX_INCOMING_PER_PEER)
            .map(|_| incoming.admit(id(1)).expect("within the limit"))
            .collect();
        assert!(incoming.admit(id(1)).is_none(), "one peer's limit");
        held.pop();
        assert!(
            incoming.admit(id(1)).is_some(),
            "a slot comes back when dropped"
        );
        let mut others = Vec::new();
        for i in 2.. {
            match incoming.admit(id(i / MAX_INCOMING_PER_PEER as u32 + 2)) {
                Some(s) => others.push(s),
                None => break,
            }
        }
        let all: usize = lock(&incoming.0).values().sum();
        assert_eq!(all, MAX_INCOMING);
        drop(others);
        drop(held);
        assert!(lock(&incoming.0).is_empty(), "every slot uncounted");
    }
}
