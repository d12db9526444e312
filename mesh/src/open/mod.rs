//! The open mesh: strangers nearby, who share no group with this device (docs/mesh.md,
//! "Strangers"). A stranger can make up anything — headers, digests, signatures under
//! keys of its own, any number of identities — so a stranger's body is taken only when
//! the binding of the URL to the bytes comes from somewhere the stranger does not control:
//!
//! 1. the URL names its hash (`cache::certify`), 2. the client stated it
//!    (`Meshcache-Integrity`), 3. the origin stated it to this device directly (a
//!    `Content-Digest` on its own connection): asked by a **content tag** derived from
//!    the digest ([`proto::content_tag`]); the body is checked against the digest before
//!    its last byte is released ([`ask`]);
//! 4. a signer this device chose (itself, a friend, a group member, a carriage operator):
//!    asked by a **key tag** ([`proto::key_tag`]); the stranger relays the signer's
//!    attestation, judged exactly as a member's offer is.
//!
//! Goals: no URL and no catalogue on the wire (tags only, one stranger at a time); a
//! separate identity for the open mesh, made anew at every start, never linked to the
//! group identity (a device relays only others' signatures to strangers, unless it is an
//! operator); answers only for shareable `200`s of those kinds, at most
//! [`POSITIVE_ANSWERS`] per [`ANSWER_WINDOW`] per stranger and per address; bans by id
//! *and* address (identities cost nothing). Non-goals: hiding from the stranger that
//! serves you what you fetched (it learns the tag, and a dictionary maps tags of public
//! objects back to URLs); a stranger's 404s, redirects or headers (never taken).
//!
//! Types: [`Open`] (the endpoint, the strangers, address bans, the answer budget, the tag
//! index), the protocol in [`proto`], the answering side in [`serve`], the asking side in
//! [`ask`].

pub mod proto;

pub(crate) mod ask;
mod serve;
mod tags;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use iroh::endpoint::{presets, Connection};
use iroh::protocol::Router;
use iroh::{Endpoint, EndpointAddr, EndpointId, RelayMode, SecretKey};
use lru::LruCache;

use crate::{Inner, MeshError};

pub use ask::StrangerBody;

/// Strangers remembered at once.
pub const MAX_STRANGERS: usize = 256;
/// Banned addresses remembered at once.
pub const MAX_ADDR_BANS: usize = 4096;
/// Positive answers one stranger (and one address) gets per [`ANSWER_WINDOW`]: enough to
/// sync a channel's media, too few to probe a dictionary of what this device holds.
pub const POSITIVE_ANSWERS: u32 = 256;
pub const ANSWER_WINDOW: Duration = Duration::from_secs(600);
/// A stranger whose dial failed is not dialed again for this long.
pub const REDIAL_AFTER: Duration = Duration::from_secs(5);
/// A stranger not connected for this long is forgotten (unless added by ticket).
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

/// A stranger this device can ask.
#[derive(Debug)]
pub(crate) struct Stranger {
    pub addr: EndpointAddr,
    pub source: &'static str,
    /// Since when it is connected, or was added, or was last tried.
    pub since: Instant,
    pub conn: Option<Connection>,
    pub blobs: Option<Connection>,
    pub dialing: bool,
    /// Lookups it answered with something this device could use: asked first next time.
    pub useful: u32,
    /// Until then its "fetching" is not waited for (it said so before, and had nothing).
    pub no_wait_until: Option<Instant>,
}

/// The open mesh of one device.
pub(crate) struct Open {
    pub endpoint: Endpoint,
    /// `mesh.open_listen`'s port was taken: another one is bound.
    port_taken: bool,
    router: Mutex<Option<Router>>,
    pub strangers: Mutex<HashMap<EndpointId, Stranger>>,
    /// Banned addresses (an IP; on loopback, IP and port: devices on one machine are told
    /// apart by port) and until when.
    addr_bans: Mutex<HashMap<SocketAddr, Instant>>,
    /// Positive answers given per stranger id and per address in the current window.
    answered: Mutex<LruCache<Who, (Instant, u32)>>,
    pub tags: Mutex<tags::Tags>,
    /// Ends this identity's tasks (mDNS, redialing) when it is replaced or shut down.
    stop: tokio::sync::watch::Sender<bool>,
    /// Where the next lookup starts among strangers equally useful so far.
    turn: std::sync::atomic::AtomicUsize,
    /// Who fetches what among strangers seeking the same content (see [`Elections`]).
    elections: Mutex<Elections>,
}

/// The election among strangers seeking the same content at once (`serve.rs::fetching`,
/// `ask.rs::find_by_digest`): the tags this device defers to a stranger with a smaller
/// open-mesh id for, and the tags it has decided to fetch from the origin itself. One lock
/// for both orders a stranger's ask against this device's decision: either the ask comes
/// first (this device defers and waits for the asker) or the decision does (the asker
/// hears "fetching" and waits for this device) — never both going to the origin because
/// the ask fell between this device's last look at its deferrals and its download.
pub(crate) struct Elections {
    deferred: LruCache<[u8; 32], EndpointId>,
    decided: LruCache<[u8; 32], Instant>,
}

/// A decision to fetch is believed this long (the download it announces is under way).
const DECIDED_FOR: Duration = Duration::from_secs(60);

impl Elections {
    fn new() -> Self {
        let n = NonZeroUsize::new(256).expect("non-zero");
        Self {
            deferred: LruCache::new(n),
            decided: LruCache::new(n),
        }
    }

    /// A stranger `id` (with a smaller open-mesh id) seeks `tag`, which this device seeks
    /// too: `true` when this device has already decided to fetch it (the stranger is told
    /// so), else this device will wait for the stranger.
    pub(crate) fn defer_unless_decided(&mut self, tag: [u8; 32], id: EndpointId) -> bool {
        if self
            .decided
            .peek(&tag)
            .is_some_and(|t| t.elapsed() < DECIDED_FOR)
        {
            return true;
        }
        if self
            .deferred
            .peek(&tag)
            .is_none_or(|cur| id.as_bytes() < cur.as_bytes())
        {
            self.deferred.put(tag, id);
        }
        false
    }

    /// This device has asked every stranger about `tag`: whom it defers to (taken), if
    /// anyone it `may_wait_for`; with nobody, and `alone` (no stranger said it is fetching
    /// it), this device decides to fetch it itself.
    pub(crate) fn conclude(
        &mut self,
        tag: [u8; 32],
        alone: bool,
        may_wait_for: impl Fn(&EndpointId) -> bool,
    ) -> Option<EndpointId> {
        let d = self.deferred.pop(&tag).filter(|d| may_wait_for(d));
        if d.is_none() && alone {
            self.decided.put(tag, Instant::now());
        }
        d
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    Id(EndpointId),
    Addr(SocketAddr),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The address a ban applies to.
pub(crate) fn ban_key(a: SocketAddr) -> SocketAddr {
    if a.ip().is_loopback() {
        a
    } else {
        SocketAddr::new(a.ip(), 0)
    }
}

/// Starts the open mesh: a fresh identity on its own endpoint, the open lookup protocol
/// and the (gated) blobs protocol, strangers by ticket and mDNS, the tag index; and the
/// task that makes a new identity every `open_rotate`.
pub(crate) async fn start(
    inner: &Arc<Inner>,
    blobs: iroh_blobs::BlobsProtocol,
) -> Result<(), MeshError> {
    let open = bind(inner, &blobs).await?;
    *inner.open.write().unwrap_or_else(|e| e.into_inner()) = Some(open.clone());
    tags::build(inner);
    begin(inner, &open).await;
    tokio::spawn(rotate(Arc::downgrade(inner), blobs));
    Ok(())
}

/// A new identity on a new endpoint, serving the open protocols.
async fn bind(
    inner: &Arc<Inner>,
    blobs: &iroh_blobs::BlobsProtocol,
) -> Result<Arc<Open>, MeshError> {
    let secret = SecretKey::generate();
    let (endpoint, port_taken) =
        crate::bind_endpoint("mesh.open_listen", inner.opts.open_bind, |at| {
            Ok(Endpoint::builder(presets::Minimal)
                .secret_key(secret.clone())
                .clear_ip_transports()
                .bind_addr(at)
                .map_err(|e| MeshError::Endpoint(format!("open mesh bind {at}: {e}")))?
                .relay_mode(RelayMode::Disabled))
        })
        .await?;
    let router = Router::builder(endpoint.clone())
        .accept(proto::ALPN, serve::Handler::new(Arc::downgrade(inner)))
        .accept(iroh_blobs::ALPN, crate::access::Blobs(blobs.clone()))
        .spawn();
    Ok(Arc::new(Open {
        endpoint,
        port_taken,
        router: Mutex::new(Some(router)),
        strangers: Mutex::new(HashMap::new()),
        addr_bans: Mutex::new(HashMap::new()),
        answered: Mutex::new(LruCache::new(NonZeroUsize::new(4 * MAX_STRANGERS).unwrap())),
        tags: Mutex::new(tags::Tags::default()),
        stop: tokio::sync::watch::channel(false).0,
        turn: std::sync::atomic::AtomicUsize::new(0),
        elections: Mutex::new(Elections::new()),
    }))
}

/// Puts a new identity to work: strangers by ticket, mDNS, redialing.
async fn begin(inner: &Arc<Inner>, open: &Arc<Open>) {
    let endpoint = &open.endpoint;
    tracing::info!(id = %endpoint.id(), addrs = ?endpoint.bound_sockets(), "open mesh up (strangers: only what they cannot forge)");
    for t in &inner.opts.open_peers {
        match crate::parse_peer(t) {
            Ok(addr) => add(inner, addr, "ticket"),
            Err(e) => tracing::warn!("mesh.open_peers: {e}"),
        }
    }
    if inner.opts.mdns {
        let weak = Arc::downgrade(inner);
        crate::discovery::watch(
            endpoint,
            "meshcache-open",
            open.stop.subscribe(),
            Box::new(move |addr| {
                if let Some(inner) = weak.upgrade() {
                    add(&inner, addr, "mdns");
                }
            }),
        )
        .await;
    }
    tokio::spawn(maintain(Arc::downgrade(inner), Arc::downgrade(open)));
}

/// Every `open_rotate`, a new identity: a stranger who saw this device yesterday cannot
/// tell it is the same one today (on the same network its address may still say so). The
/// bans, answer budgets and tag index carry over; strangers are found again (tickets at
/// once, mDNS as it announces, askers by dialing back).
async fn rotate(weak: Weak<Inner>, blobs: iroh_blobs::BlobsProtocol) {
    let Some(every) = weak.upgrade().map(|i| i.opts.open_rotate) else {
        return;
    };
    let mut stop = match weak.upgrade() {
        Some(i) => i.shutdown.subscribe(),
        None => return,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(inner) = weak.upgrade() else { return };
        let Some(old) = inner.open() else { return };
        // A fixed port must be free before the new endpoint binds it.
        let fixed = inner.opts.open_bind.port() != 0;
        if fixed {
            old.shutdown().await;
        }
        let new = match bind(&inner, &blobs).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!("open mesh: a new identity failed ({e}); the open mesh is off");
                inner.set_open_error(format!("a new identity failed: {e}"));
                *inner.open.write().unwrap_or_else(|e| e.into_inner()) = None;
                if !fixed {
                    old.shutdown().await;
                }
                return;
            }
        };
        *lock(&new.tags) = std::mem::take(&mut *lock(&old.tags));
        *lock(&new.addr_bans) = lock(&old.addr_bans).clone();
        *lock(&new.answered) = std::mem::replace(
            &mut *lock(&old.answered),
            LruCache::new(NonZeroUsize::new(1).unwrap()),
        );
        *inner.open.write().unwrap_or_else(|e| e.into_inner()) = Some(new.clone());
        if !fixed {
            old.shutdown().await;
        }
        tracing::info!(old = %old.endpoint.id(), new = %new.endpoint.id(), "open mesh: a new identity");
        begin(&inner, &new).await;
    }
}

impl Open {
    /// This device's open-mesh ticket.
    pub fn ticket(&self) -> String {
        use iroh_tickets::Ticket;
        iroh_tickets::endpoint::EndpointTicket::new(crate::addr_of(&self.endpoint)).encode_string()
    }

    pub fn addr_banned(&self, a: SocketAddr) -> bool {
        lock(&self.addr_bans)
            .get(&ban_key(a))
            .is_some_and(|until| *until > Instant::now())
    }

    fn ban_addrs(&self, addrs: &[SocketAddr], d: Duration) {
        let mut bans = lock(&self.addr_bans);
        let now = Instant::now();
        for a in addrs {
            if bans.len() >= MAX_ADDR_BANS {
                bans.retain(|_, u| *u > now);
                if bans.len() >= MAX_ADDR_BANS {
                    if let Some(k) = bans.iter().min_by_key(|(_, u)| **u).map(|(k, _)| *k) {
                        bans.remove(&k);
                    }
                }
            }
            bans.insert(ban_key(*a), now + d);
        }
    }

    /// Counts a positive answer to `id` at `addr`; false when either is over its budget.
    fn may_answer(&self, id: EndpointId, addr: Option<SocketAddr>) -> bool {
        let mut answered = lock(&self.answered);
        let now = Instant::now();
        let whos: Vec<Who> = std::iter::once(Who::Id(id))
            .chain(addr.map(|a| Who::Addr(ban_key(a))))
            .collect();
        for w in &whos {
            if let Some((start, n)) = answered.get(w) {
                if now.duration_since(*start) < ANSWER_WINDOW && *n >= POSITIVE_ANSWERS {
                    return false;
                }
            }
        }
        for w in whos {
            let e = answered.get_or_insert_mut(w, || (now, 0));
            if now.duration_since(e.0) >= ANSWER_WINDOW {
                *e = (now, 0);
            }
            e.1 += 1;
        }
        true
    }

    /// Strangers with a live connection, and their connections.
    /// Strangers with a live connection, in the order to ask them: those that were
    /// useful before first, the others in turn (each call starts one further along, so a
    /// long list is not always cut at the same place).
    pub fn connected(&self, inner: &Inner) -> Vec<(EndpointId, Connection)> {
        let mut list: Vec<(EndpointId, Connection, u32)> = lock(&self.strangers)
            .iter()
            .filter(|(id, s)| {
                !inner.peers.banned(id) && !s.addr.ip_addrs().any(|a| self.addr_banned(*a))
            })
            .filter_map(|(id, s)| {
                s.conn
                    .clone()
                    .filter(|c| c.close_reason().is_none())
                    .map(|c| (*id, c, s.useful))
            })
            .collect();
        list.sort_by_key(|(id, _, _)| *id.as_bytes());
        if !list.is_empty() {
            let turn = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let n = list.len();
            list.rotate_left(turn % n);
        }
        // Stable: the rotation stays among equals.
        list.sort_by_key(|(_, _, useful)| std::cmp::Reverse(*useful));
        list.into_iter().map(|(id, c, _)| (id, c)).collect()
    }

    /// The election among strangers for the same content (one lock: see [`Elections`]).
    pub(crate) fn elections(&self) -> std::sync::MutexGuard<'_, Elections> {
        lock(&self.elections)
    }

    /// May this device wait for `id`, which says it is fetching what was asked?
    pub fn may_wait_for(&self, id: &EndpointId) -> bool {
        lock(&self.strangers)
            .get(id)
            .is_some_and(|s| s.no_wait_until.is_none_or(|t| t <= Instant::now()))
    }

    /// `id` said it was fetching, was waited for, and had nothing: not believed again
    /// for [`FORGET_AFTER`].
    pub fn broke_promise(&self, id: &EndpointId) {
        if let Some(s) = lock(&self.strangers).get_mut(id) {
            s.no_wait_until = Some(Instant::now() + FORGET_AFTER);
        }
    }

    /// Is any stranger connected (and not banned)?
    pub fn has_connected(&self, inner: &Inner) -> bool {
        lock(&self.strangers).iter().any(|(id, s)| {
            s.conn.as_ref().is_some_and(|c| c.close_reason().is_none()) && !inner.peers.banned(id)
        })
    }

    /// `id` answered a lookup usefully.
    pub fn was_useful(&self, id: &EndpointId) {
        if let Some(s) = lock(&self.strangers).get_mut(id) {
            s.useful = s.useful.saturating_add(1);
        }
    }

    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let router = lock(&self.router).take();
        if let Some(r) = router {
            if let Err(e) = r.shutdown().await {
                tracing::warn!("open mesh shutdown: {e}");
            }
        }
        self.endpoint.close().await;
    }
}

/// Adds a stranger (if new and not banned) and dials it.
pub(crate) fn add(inner: &Arc<Inner>, addr: EndpointAddr, source: &'static str) {
    let Some(open) = inner.open() else { return };
    if addr.id == open.endpoint.id()
        || inner.peers.banned(&addr.id)
        || addr.ip_addrs().any(|a| open.addr_banned(*a))
    {
        return;
    }
    {
        let mut map = lock(&open.strangers);
        if let Some(s) = map.get_mut(&addr.id) {
            for a in addr.ip_addrs() {
                s.addr = s.addr.clone().with_ip_addr(*a);
            }
            return;
        }
        if map.len() >= MAX_STRANGERS {
            // The one not connected for longest goes; a full table of live ones keeps them.
            let victim = map
                .iter()
                .filter(|(_, s)| s.conn.is_none() && s.source != "ticket")
                .min_by_key(|(_, s)| s.since)
                .map(|(id, _)| *id);
            match victim {
                Some(v) => {
                    map.remove(&v);
                }
                None => return,
            }
        }
        map.insert(
            addr.id,
            Stranger {
                addr: addr.clone(),
                source,
                since: Instant::now(),
                conn: None,
                blobs: None,
                dialing: false,
                useful: 0,
                no_wait_until: None,
            },
        );
    }
    tracing::info!(stranger = %addr.id, source, "stranger added");
    dial(inner, addr.id);
}

/// Dials a stranger in the background (once at a time; not again within
/// [`REDIAL_AFTER`] of a failure).
fn dial(inner: &Arc<Inner>, id: EndpointId) {
    let Some(open) = inner.open() else { return };
    let addr = {
        let mut map = lock(&open.strangers);
        let Some(s) = map.get_mut(&id) else { return };
        if s.dialing || s.conn.as_ref().is_some_and(|c| c.close_reason().is_none()) {
            return;
        }
        s.dialing = true;
        s.addr.clone()
    };
    let weak = Arc::downgrade(&open);
    let ep = open.endpoint.clone();
    tokio::spawn(async move {
        let res = tokio::time::timeout(
            crate::proto::HANDSHAKE_TIMEOUT,
            ep.connect(addr, proto::ALPN),
        )
        .await;
        // The identity that dialed (it may have been replaced meanwhile).
        let Some(open) = weak.upgrade() else { return };
        let mut map = lock(&open.strangers);
        let Some(s) = map.get_mut(&id) else { return };
        s.dialing = false;
        s.since = Instant::now();
        match res {
            Ok(Ok(conn)) => {
                tracing::info!(stranger = %id, "connected to a stranger");
                s.conn = Some(conn);
            }
            Ok(Err(e)) => tracing::debug!(stranger = %id, "dial: {e}"),
            Err(_) => tracing::debug!(stranger = %id, "dial timed out"),
        }
    });
}

/// Redials strangers whose connection went, forgets those gone for long (for one
/// identity, until it is replaced).
async fn maintain(weak: Weak<Inner>, this: Weak<Open>) {
    let mut tick = tokio::time::interval(REDIAL_AFTER);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        if inner.is_shutting_down() {
            return;
        }
        let Some(open) = this.upgrade() else { return };
        if *open.stop.borrow() {
            return;
        }
        let redial: Vec<EndpointId> = {
            let mut map = lock(&open.strangers);
            let now = Instant::now();
            map.retain(|_, s| {
                let live = s.conn.as_ref().is_some_and(|c| c.close_reason().is_none());
                live || s.source == "ticket" || now.duration_since(s.since) < FORGET_AFTER
            });
            map.iter()
                .filter(|(_, s)| s.conn.as_ref().is_none_or(|c| c.close_reason().is_some()))
                .map(|(id, _)| *id)
                .collect()
        };
        for id in redial {
            dial(&inner, id);
        }
    }
}

/// Bans a stranger's addresses too (called by `peers::ban` for strangers), and closes
/// its connections.
pub(crate) fn ban(inner: &Inner, id: EndpointId) {
    let Some(open) = inner.open() else { return };
    let (addrs, conns) = {
        let mut map = lock(&open.strangers);
        match map.get_mut(&id) {
            Some(s) => (
                s.addr.ip_addrs().copied().collect::<Vec<_>>(),
                [s.conn.take(), s.blobs.take()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>(),
            ),
            None => (Vec::new(), Vec::new()),
        }
    };
    open.ban_addrs(&addrs, inner.opts.ban_duration);
    for c in conns {
        c.close(crate::proto::close::BANNED.into(), b"banned");
    }
}

/// The blobs connection to a stranger over the open endpoint, opened on first use.
pub(crate) async fn blobs_conn(
    inner: &Inner,
    id: EndpointId,
) -> Option<Result<Connection, String>> {
    let open = inner.open()?;
    let addr = {
        let map = lock(&open.strangers);
        let s = map.get(&id)?;
        if let Some(c) = s.blobs.as_ref().filter(|c| c.close_reason().is_none()) {
            return Some(Ok(c.clone()));
        }
        s.addr.clone()
    };
    let res = tokio::time::timeout(
        crate::proto::HANDSHAKE_TIMEOUT,
        open.endpoint.connect(addr, iroh_blobs::ALPN),
    )
    .await;
    let conn = match res {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Some(Err(e.to_string())),
        Err(_) => return Some(Err("connect timed out".into())),
    };
    if let Some(s) = lock(&open.strangers).get_mut(&id) {
        s.blobs = Some(conn.clone());
    }
    Some(Ok(conn))
}

/// The trusted signers of attestations beyond groups: friends and operators.
pub(crate) fn parse_ids(list: &[String], what: &str) -> Result<HashSet<EndpointId>, MeshError> {
    list.iter()
        .map(|f| {
            f.parse::<EndpointId>()
                .map_err(|_| MeshError::BadTicket(format!("{what} {f:?} is not an endpoint id")))
        })
        .collect()
}

/// Status of the open mesh, for the status page.
#[derive(Debug, Clone)]
pub struct OpenStatus {
    pub id: String,
    pub ticket: String,
    /// Where its endpoint listens (`mesh.open_listen`, and the port actually bound).
    pub listening: crate::Listening,
    pub strangers_known: usize,
    pub strangers_connected: usize,
    pub addr_bans: usize,
    pub tags: usize,
}

pub(crate) fn status(inner: &Inner) -> Option<OpenStatus> {
    let open = inner.open()?;
    let now = Instant::now();
    // One lock at a time: a guard made inside the struct literal would live to its end.
    let strangers_known = lock(&open.strangers).len();
    let strangers_connected = open.connected(inner).len();
    let addr_bans = lock(&open.addr_bans).values().filter(|u| **u > now).count();
    let tags = lock(&open.tags).len();
    Some(OpenStatus {
        id: open.endpoint.id().to_string(),
        ticket: open.ticket(),
        listening: crate::Listening {
            configured: inner.opts.open_bind,
            bound: open.endpoint.bound_sockets(),
            port_taken: open.port_taken,
        },
        strangers_known,
        strangers_connected,
        addr_bans,
        tags,
    })
}

#[cfg(test)]
mod election_tests {
    use super::*;

    fn id(n: u8) -> EndpointId {
        SecretKey::from_bytes(&[n; 32]).public()
    }

    #[test]
    fn an_ask_after_the_decision_hears_fetching_and_one_before_it_is_waited_for() {
        let tag = [7u8; 32];
        // The stranger asks first: this device defers, and concludes to wait for it.
        let mut e = Elections::new();
        assert!(!e.defer_unless_decided(tag, id(1)));
        assert_eq!(e.conclude(tag, true, |_| true), Some(id(1)));
        // This device concludes first: a stranger asking after it hears "fetching".
        let mut e = Elections::new();
        assert_eq!(e.conclude(tag, true, |_| true), None);
        assert!(e.defer_unless_decided(tag, id(1)));
        // One that may not be waited for is not: this device fetches, and says so.
        let mut e = Elections::new();
        e.defer_unless_decided(tag, id(1));
        assert_eq!(e.conclude(tag, true, |_| false), None);
        assert!(e.defer_unless_decided(tag, id(2)));
        // Waiting for another stranger that said it is fetching: nothing decided here.
        let mut e = Elections::new();
        assert_eq!(e.conclude(tag, false, |_| true), None);
        assert!(!e.defer_unless_decided(tag, id(1)));
    }
}
