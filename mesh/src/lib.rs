//! meshcache's mesh: nearby devices serve each other's cache, verified, private, offline.
//!
//! - [`Mesh`]: the running mesh of one device — an iroh endpoint (persistent key, no
//!   relays unless configured, LAN only), the lookup protocol, the blobs protocol behind
//!   an access check, peers found by ticket, gossip and mDNS. The proxy calls
//!   [`Mesh::find`] on a miss and [`Mesh::seek`] around its own origin fetches.
//! - [`proto`]: the versioned, size-bounded lookup protocol and its handshake, in which
//!   peers prove group membership without revealing the secret.
//! - [`group`]: groups (a secret handed over as a ticket) and the MACs built on them.
//! - [`attest`]: attestations, the signed binding of a URL to a body hash, and origin
//!   digests (RFC 9530).
//! - [`share`]: tickets for handing a file to a friend.
//! - [`catalog`]: compact, lossy summaries of what a device can share; `exchange.rs`
//!   gives them to the members nearby (whole on connect, deltas after) so a miss asks
//!   only the peers that may hold the key, and carries the feed heads feed sync needs.
//! - [`open`]: the open mesh — strangers, who share no group, asked and answered by tag
//!   only for what they cannot forge, under a separate identity made at every start.
//!
//! Trust (DESIGN.md, "The mesh: trust and privacy"): a body from a peer is accepted only
//! if its attestation verifies and the signer is trusted (a member of a shared group, a
//! listed friend, or this device); a stranger's signature, and any digest among the headers
//! it signed, count for nothing. Bytes are
//! verified against the hash while streaming (BLAKE3, iroh-blobs). Only shareable entries
//! are ever offered, and only members of a shared group may query this device or fetch
//! the bodies it offered them. A peer that breaks any of this is banned for a while.

mod access;
pub mod attest;
pub mod catalog;
mod discovery;
mod exchange;
mod find;
pub mod group;
mod identity;
pub mod open;
mod peers;
pub mod proto;
mod server;
pub mod share;
mod stream;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use iroh::endpoint::presets;
use iroh::protocol::Router;
use iroh::{Endpoint, EndpointAddr, EndpointId, RelayMode};

use cache::Cache;

pub use find::{Found, Nearby, PartialBody};
pub use group::{Group, Groups};
pub use server::SeekGuard;

/// Options of the mesh. Every field documents its default.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the key and the groups live (`<data>/mesh`). No default.
    pub dir: PathBuf,
    /// UDP address of the endpoint. Default `0.0.0.0:4919` (the LAN; a fixed port so
    /// tickets stay valid across restarts).
    pub bind: SocketAddr,
    /// A relay server, for peers that cannot reach each other directly. Default none.
    pub relay: Option<String>,
    /// Peers added by hand (endpoint tickets). Default none.
    pub peers: Vec<String>,
    /// Endpoint ids whose attestations are trusted without a shared group. Default none.
    pub friends: Vec<String>,
    /// Talk to strangers (the open mesh, [`open`]). Default true.
    pub open: bool,
    /// UDP address of the open mesh's endpoint. Default `0.0.0.0:0` (any free port).
    pub open_bind: SocketAddr,
    /// Strangers added by hand (open-mesh tickets). Default none.
    pub open_peers: Vec<String>,
    /// Endpoint ids of carriage operators: their attestations are trusted whoever relays
    /// them. Default none.
    pub operators: Vec<String>,
    /// Answer strangers with this device's own attestations (a carriage operator, whose
    /// id is public anyway). Default false.
    pub operator: bool,
    /// How often the open mesh's identity is made anew. Default 24 h.
    pub open_rotate: Duration,
    /// Find peers on the LAN by mDNS. Default true.
    pub mdns: bool,
    /// Exchange catalogs with members (`exchange.rs`). Default true.
    pub catalogs: bool,
    /// Feed documents (cache keys) whose fetch time peers' catalogs should carry: the
    /// feeds subscribed to (feed sync). At most [`proto::MAX_WATCH`]. Default none.
    pub watch: Vec<String>,
    /// How long a lookup waits for peers' answers. Default 50 ms.
    pub lookup_timeout: Duration,
    /// How long to wait for a peer that is fetching the same object. Default 30 s.
    pub peer_fill_wait: Duration,
    /// A transfer from a peer that makes no progress for this long is abandoned.
    /// Default 10 s.
    pub fetch_idle_timeout: Duration,
    /// How long a misbehaving peer is banned. Default 10 min.
    pub ban_duration: Duration,
    /// Heuristic freshness fraction used to judge peers' entries. Default 0.1.
    pub heuristic_fraction: f32,
    /// Largest file shared or fetched by share ticket. Default 512 MiB.
    pub share_max_file: u64,
    /// Most bytes all shared files together may hold (apart from the cache's limit).
    /// Default 2 GiB.
    pub share_max_size: u64,
}

impl Options {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            bind: SocketAddr::from(([0, 0, 0, 0], 4919)),
            relay: None,
            peers: Vec::new(),
            friends: Vec::new(),
            open: true,
            open_bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            open_peers: Vec::new(),
            operators: Vec::new(),
            operator: false,
            open_rotate: Duration::from_secs(24 * 3600),
            mdns: true,
            catalogs: true,
            watch: Vec::new(),
            lookup_timeout: Duration::from_millis(50),
            peer_fill_wait: Duration::from_secs(30),
            fetch_idle_timeout: Duration::from_secs(10),
            ban_duration: Duration::from_secs(600),
            heuristic_fraction: 0.1,
            share_max_file: 512 << 20,
            share_max_size: 2 << 30,
        }
    }
}

/// Errors of the mesh.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    BadTicket(String),
    #[error("mesh endpoint: {0}")]
    Endpoint(String),
    #[error("{0}")]
    Transfer(String),
    #[error("mesh storage: {0}")]
    Store(#[from] cache::StoreError),
    /// A share beyond `share_max_file` or `share_max_size`.
    #[error("{0}")]
    ShareLimit(String),
}

/// A body from peers that failed mid-way — every peer that offered it stopped, or sent
/// bytes that do not verify: the peers' fault, never a partial body served as whole.
#[derive(Debug, Clone, thiserror::Error)]
#[error("body from peers: {0}")]
pub struct PeerBodyError(pub String);

impl From<String> for PeerBodyError {
    fn from(s: String) -> Self {
        PeerBodyError(s)
    }
}

/// Counters for the status page.
#[derive(Debug, Default)]
pub struct Counters {
    pub lookups: AtomicU64,
    pub peer_hits: AtomicU64,
    pub bytes_from_peers: AtomicU64,
    pub bytes_to_peers: AtomicU64,
    pub answers: AtomicU64,
    /// Lookup messages sent to peers, and answered for peers.
    pub lookups_sent: AtomicU64,
    pub lookups_answered: AtomicU64,
    /// Misses on which no peer's catalog matched, so no peer was asked.
    pub lookups_skipped: AtomicU64,
    pub refused: AtomicU64,
    pub bans: AtomicU64,
}

/// A running mesh. Cheap to clone.
#[derive(Clone)]
pub struct Mesh {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    opts: Options,
    cache: Cache,
    endpoint: Endpoint,
    /// `opts.bind`'s port was taken: the endpoint is bound to another one.
    port_taken: bool,
    router: Mutex<Option<Router>>,
    groups: Groups,
    friends: HashSet<EndpointId>,
    /// Carriage operators: trusted signers whoever relays their attestations.
    operators: HashSet<EndpointId>,
    /// The open mesh (strangers), when `opts.open`: its current identity (replaced every
    /// `open_rotate`).
    open: std::sync::RwLock<Option<Arc<open::Open>>>,
    /// Why the open mesh is off although `opts.open` asks for it (it could not bind).
    open_error: Mutex<Option<String>>,
    peers: peers::Peers,
    /// Keys this device is seeking or fetching right now (see [`Mesh::seek`]).
    inflight: Mutex<HashMap<String, server::Inflight>>,
    /// Body hashes offered to each peer: the only ones it may fetch (plus shared files).
    offered: Mutex<access::Offered>,
    /// Hashes of files shared with a ticket: anyone holding the ticket may fetch them.
    shared: Mutex<HashSet<[u8; 32]>>,
    /// This device's catalog, as its peers see it.
    catalog: exchange::Source,
    /// The peers' catalogs.
    summaries: exchange::Summaries,
    /// Feed documents whose fetch time peers are asked to tell (feed sync).
    watch: Mutex<Vec<String>>,
    counters: Counters,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Mesh {
    /// Binds the endpoint, serves the lookup and blobs protocols, and starts finding peers.
    pub async fn start(opts: Options, cache: Cache) -> Result<Mesh, MeshError> {
        std::fs::create_dir_all(&opts.dir)
            .map_err(|e| MeshError::Io(format!("{}: {e}", opts.dir.display())))?;
        let secret = identity::load_or_create(&opts.dir)?;
        let groups = Groups::open(&opts.dir)?;
        let friends = open::parse_ids(&opts.friends, "friend")?;
        let operators = open::parse_ids(&opts.operators, "operator")?;
        let relay: Option<iroh::RelayUrl> = match &opts.relay {
            Some(url) => Some(
                url.parse()
                    .map_err(|e| MeshError::Endpoint(format!("relay {url}: {e}")))?,
            ),
            None => None,
        };
        let (endpoint, taken) = bind_endpoint("mesh.listen", opts.bind, |at| {
            let b = Endpoint::builder(presets::Minimal)
                .secret_key(secret.clone())
                .clear_ip_transports()
                .bind_addr(at)
                .map_err(|e| MeshError::Endpoint(format!("bind {at}: {e}")))?;
            Ok(match &relay {
                Some(url) => b.relay_mode(RelayMode::custom([url.clone()])),
                None => b.relay_mode(RelayMode::Disabled),
            })
        })
        .await?;
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let inner = Arc::new(Inner {
            cache: cache.clone(),
            endpoint: endpoint.clone(),
            port_taken: taken,
            router: Mutex::new(None),
            groups,
            friends,
            operators,
            open: std::sync::RwLock::new(None),
            open_error: Mutex::new(None),
            peers: peers::Peers::default(),
            inflight: Mutex::new(HashMap::new()),
            offered: Mutex::new(access::Offered::default()),
            shared: Mutex::new(HashSet::new()),
            catalog: exchange::Source::new(),
            summaries: exchange::Summaries::default(),
            watch: Mutex::new(opts.watch.iter().take(proto::MAX_WATCH).cloned().collect()),
            counters: Counters::default(),
            shutdown,
            opts: opts.clone(),
        });
        let mesh = Mesh { inner };
        share::load_shared(&mesh).await;
        cache.set_attester(Arc::new(server::Signer {
            secret,
            inner: Arc::downgrade(&mesh.inner),
        }));
        let blobs = iroh_blobs::BlobsProtocol::new(
            &cache.blobs(),
            Some(access::events(Arc::downgrade(&mesh.inner))),
        );
        let router = Router::builder(endpoint.clone())
            .accept(proto::ALPN, server::Lookup(Arc::downgrade(&mesh.inner)))
            .accept(iroh_blobs::ALPN, access::Blobs(blobs.clone()))
            .spawn();
        *mesh.inner.router.lock().unwrap_or_else(|e| e.into_inner()) = Some(router);
        tracing::info!(
            id = %endpoint.id(),
            addrs = ?endpoint.bound_sockets(),
            groups = mesh.inner.groups.current().map(|g| g.len()).unwrap_or(0),
            "mesh endpoint up"
        );
        if mesh
            .inner
            .groups
            .current()
            .map(|g| g.is_empty())
            .unwrap_or(true)
        {
            tracing::info!(
                "this device is in no mesh group: it shares nothing and asks no one \
                 (meshcache group create / group join TICKET)"
            );
        }
        for t in &opts.peers {
            match parse_peer(t) {
                Ok(addr) => peers::add(&mesh.inner, addr, "ticket"),
                Err(e) => tracing::warn!("mesh.peers: {e}"),
            }
        }
        if opts.mdns {
            discovery::start(&mesh.inner).await;
        }
        if opts.open {
            // Strangers are an extra too: without them, the members still meet.
            if let Err(e) = open::start(&mesh.inner, blobs).await {
                tracing::error!("the open mesh could not start, going on without it: {e}");
                mesh.inner.set_open_error(e.to_string());
            }
        }
        Ok(mesh)
    }

    /// This device's endpoint id (64 hex digits).
    pub fn id(&self) -> String {
        self.inner.endpoint.id().to_string()
    }

    /// This device's address as a ticket others can pass to `--peer`.
    pub fn ticket(&self) -> String {
        use iroh_tickets::Ticket;
        iroh_tickets::endpoint::EndpointTicket::new(self.addr()).encode_string()
    }

    /// This device's address: its id and the sockets it is bound to (wildcards replaced
    /// by loopback, which is all that is known without asking the network).
    pub fn addr(&self) -> EndpointAddr {
        addr_of(&self.inner.endpoint)
    }

    /// Where the endpoint listens: the address asked for (`mesh.listen`), the sockets
    /// bound, and whether the port asked for was taken (then another one is bound).
    pub fn listening(&self) -> Listening {
        Listening {
            configured: self.inner.opts.bind,
            bound: self.inner.endpoint.bound_sockets(),
            port_taken: self.inner.port_taken,
        }
    }

    /// Why the open mesh is off although it was asked for (its endpoint could not bind).
    pub fn open_error(&self) -> Option<String> {
        self.inner
            .open_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Adds a peer by ticket.
    pub fn add_peer(&self, ticket: &str) -> Result<(), MeshError> {
        peers::add(&self.inner, parse_peer(ticket)?, "ticket");
        Ok(())
    }

    /// Number of peers this device is connected to (handshake done).
    /// Peers in the table, connected or not (at most `peers::MAX_PEERS`).
    pub fn known_peers(&self) -> usize {
        self.inner
            .peers
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn connected_peers(&self) -> usize {
        self.inner.peers.connected().len()
    }

    /// Waits until at least `n` peers are connected (tests and benches; bounded by `d`).
    pub async fn wait_for_peers(&self, n: usize, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut rx = self.inner.peers.changed.subscribe();
        loop {
            if self.connected_peers() >= n {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
                return self.connected_peers() >= n;
            }
        }
    }

    /// The peers holding `key` (a watched document) and when their copy was fetched from
    /// the origin (ms since the epoch), as their catalogs say.
    pub fn heads(&self, key: &str) -> Vec<(String, u64)> {
        self.inner
            .summaries
            .heads(key)
            .into_iter()
            .map(|(id, t)| (id.to_string(), t))
            .collect()
    }

    /// When this device's own shareable copy of `key` was fetched from the origin.
    pub fn own_head(&self, key: &str) -> Option<u64> {
        exchange::head(&self.inner, key)
    }

    /// Connected peers whose catalog may hold `key`.
    pub fn holders(&self, key: &str) -> Vec<String> {
        let connected: HashSet<EndpointId> = self
            .inner
            .peers
            .connected()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        self.inner
            .summaries
            .holders(key)
            .into_iter()
            .filter(|id| connected.contains(id))
            .map(|id| id.to_string())
            .collect()
    }

    /// Moves whenever a peer's catalog (or the set of them) changes.
    pub fn catalogs_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.summaries.changed.subscribe()
    }

    /// Peers whose catalog this device holds, and the keys they list in all.
    pub fn catalog_figures(&self) -> (usize, usize) {
        (self.inner.summaries.held(), self.inner.summaries.keys())
    }

    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// The open mesh (strangers), for the status page; `None` when it is off.
    pub fn open_status(&self) -> Option<open::OpenStatus> {
        open::status(&self.inner)
    }

    /// Whether any stranger is connected now (cheap: the miss path asks it).
    pub fn has_strangers(&self) -> bool {
        self.inner
            .open()
            .is_some_and(|o| o.has_connected(&self.inner))
    }

    /// This device's open-mesh ticket (a new identity at every start), if it is on.
    pub fn open_ticket(&self) -> Option<String> {
        self.inner.open().map(|o| o.ticket())
    }

    /// Bans in force (peers and strangers): id, reason, time left, for the status page.
    pub fn bans(&self) -> Vec<(String, String, Duration)> {
        let now = Instant::now();
        let mut out: Vec<(String, String, Duration)> = self
            .inner
            .peers
            .bans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, b)| b.until > now)
            .map(|(id, b)| (id.to_string(), b.reason.clone(), b.until - now))
            .collect();
        out.sort_by_key(|b| std::cmp::Reverse(b.2));
        out
    }

    /// The peers, for the status page.
    pub fn peer_status(&self) -> Vec<peers::PeerStatus> {
        peers::status(&self.inner)
    }

    /// Groups this device is in.
    pub fn groups(&self) -> Vec<Group> {
        self.inner.groups.current().unwrap_or_default()
    }

    /// The mesh's directory (key, groups, uploads being shared).
    pub fn dir(&self) -> &std::path::Path {
        &self.inner.opts.dir
    }

    /// Closes every connection and the endpoint. The body store stays open (it is the
    /// cache's).
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        let router = self
            .inner
            .router
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(r) = router {
            if let Err(e) = r.shutdown().await {
                tracing::warn!("mesh shutdown: {e}");
            }
        }
        if let Some(o) = self.inner.open() {
            o.shutdown().await;
        }
        self.inner.endpoint.close().await;
    }
}

/// Where an endpoint listens (see [`Mesh::listening`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    /// The address asked for (`mesh.listen`, `mesh.open_listen`).
    pub configured: SocketAddr,
    /// The sockets actually bound: their ports are the ones tickets and mDNS give.
    pub bound: Vec<SocketAddr>,
    /// The port asked for was taken (another meshcache on this host, most likely), so a
    /// port the OS picked on the same address is bound instead.
    pub port_taken: bool,
}

/// Binds an endpoint built by `build` for an address: at `at`, or — when `at`'s port is
/// taken (a second meshcache on this host) or not allowed — at a port the OS picks on the
/// same address, with a warning naming both. Only a failure to bind the address at all is
/// an error. Returns the endpoint and whether the port asked for was taken.
pub(crate) async fn bind_endpoint(
    what: &str,
    at: SocketAddr,
    build: impl Fn(SocketAddr) -> Result<iroh::endpoint::Builder, MeshError>,
) -> Result<(Endpoint, bool), MeshError> {
    let failed = |at: SocketAddr, e: &iroh::endpoint::BindError| {
        MeshError::Endpoint(format!("{what} = {at}: cannot bind: {}", error_chain(e)))
    };
    let first = match build(at)?.bind().await {
        Ok(ep) => return Ok((ep, false)),
        Err(e) => e,
    };
    let why = match bind_io_kind(&first) {
        Some(std::io::ErrorKind::AddrInUse) if at.port() != 0 => {
            "is taken (another meshcache on this host?)"
        }
        Some(std::io::ErrorKind::PermissionDenied) if at.port() != 0 => "is not allowed here",
        _ => return Err(failed(at, &first)),
    };
    let any = SocketAddr::new(at.ip(), 0);
    let ep = build(any)?.bind().await.map_err(|e| failed(any, &e))?;
    let bound: Vec<String> = ep.bound_sockets().iter().map(|s| s.to_string()).collect();
    tracing::warn!(
        "{what} = {at}: UDP port {} {why}; listening on {} instead. Tickets, mDNS and the \
         status page give this port; a ticket made for port {} does not reach this device",
        at.port(),
        bound.join(", "),
        at.port(),
    );
    Ok((ep, true))
}

/// The socket error behind a failed bind, if that is what it was.
fn bind_io_kind(e: &iroh::endpoint::BindError) -> Option<std::io::ErrorKind> {
    if let iroh::endpoint::BindError::Sockets { source, .. } = e {
        return Some(source.kind());
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = err.source();
    }
    None
}

/// An error and its causes, on one line (iroh's own message alone says only "Failed to
/// bind sockets").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = err.source();
    }
    out
}

/// This device's ticket without starting the mesh (for `meshcache mesh addr`): its key
/// from `dir` and the addresses `bind` stands for (a wildcard: every non-loopback address
/// of the machine's interfaces).
pub fn offline_ticket(dir: &std::path::Path, bind: SocketAddr) -> Result<String, MeshError> {
    use iroh_tickets::Ticket;
    let key = identity::load_or_create(dir)?;
    let mut addr = EndpointAddr::new(key.public());
    for a in concrete(bind) {
        addr = addr.with_ip_addr(a);
    }
    Ok(iroh_tickets::endpoint::EndpointTicket::new(addr).encode_string())
}

/// The IP addresses of this machine's interfaces that are up (IPv6 link-local left out).
pub fn interface_addrs() -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    #[cfg(unix)]
    // SAFETY: getifaddrs fills a linked list we only read, then free with freeifaddrs.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut cur = list;
        while !cur.is_null() {
            let ifa = &*cur;
            if !ifa.ifa_addr.is_null() && ifa.ifa_flags & libc::IFF_UP as u32 != 0 {
                match (*ifa.ifa_addr).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        out.push(
                            std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).into(),
                        );
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                        // Link-local addresses need a scope to be dialed; leave them out.
                        if ip.segments()[0] & 0xffc0 != 0xfe80 {
                            out.push(ip.into());
                        }
                    }
                    _ => {}
                }
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out
}

/// Parses an endpoint ticket (`endpoint…`), as printed by `meshcache mesh addr`.
pub fn parse_peer(ticket: &str) -> Result<EndpointAddr, MeshError> {
    let t: iroh_tickets::endpoint::EndpointTicket = ticket
        .trim()
        .parse()
        .map_err(|e| MeshError::BadTicket(format!("not a peer ticket ({e}): {ticket}")))?;
    Ok(t.endpoint_addr().clone())
}

/// An endpoint's address with wildcard binds made concrete.
pub(crate) fn addr_of(ep: &Endpoint) -> EndpointAddr {
    let mut addr = EndpointAddr::new(ep.id());
    for s in ep.bound_sockets() {
        for a in concrete(s) {
            addr = addr.with_ip_addr(a);
        }
    }
    for a in ep.addr().ip_addrs() {
        addr = addr.with_ip_addr(*a);
    }
    addr
}

/// A bound socket as addresses to dial: a wildcard stands for every address of the
/// machine's interfaces in its family (loopback included).
fn concrete(s: SocketAddr) -> Vec<SocketAddr> {
    if !s.ip().is_unspecified() {
        return vec![s];
    }
    let mut out: Vec<SocketAddr> = interface_addrs()
        .into_iter()
        .filter(|ip| ip.is_ipv4() == s.is_ipv4() && !ip.is_loopback())
        .map(|ip| SocketAddr::new(ip, s.port()))
        .collect();
    out.push(if s.is_ipv4() {
        SocketAddr::from(([127, 0, 0, 1], s.port()))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, s.port()))
    });
    out
}

pub(crate) fn hex(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Inner {
    pub(crate) fn bump(&self, c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Keys this device is downloading from the origin right now; with `seeking_too`,
    /// also those it is still asking nearby devices about.
    pub(crate) fn fetching_keys(&self, seeking_too: bool) -> Vec<String> {
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, i)| seeking_too || i.is_fetching())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Feed documents peers are asked about.
    pub(crate) fn watched(&self) -> Vec<String> {
        self.watch.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set_open_error(&self, why: String) {
        *self.open_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    /// The open mesh's current identity, if it runs.
    pub(crate) fn open(&self) -> Option<Arc<open::Open>> {
        self.open.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_is_replaced_by_one_the_os_picks_and_only_an_address_that_cannot_be_bound_fails(
    ) {
        let build = |at: SocketAddr| {
            Endpoint::builder(presets::Minimal)
                .relay_mode(RelayMode::Disabled)
                .clear_ip_transports()
                .bind_addr(at)
                .map_err(|e| MeshError::Endpoint(e.to_string()))
        };
        let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let at = held.local_addr().unwrap();
        let (ep, taken) = bind_endpoint("mesh.listen", at, build).await.unwrap();
        assert!(taken);
        let bound = ep.bound_sockets();
        assert_eq!(bound.len(), 1, "{bound:?}");
        assert_eq!(bound[0].ip(), at.ip());
        assert_ne!(bound[0].port(), at.port());
        // The ticket gives the port bound.
        assert!(addr_of(&ep).ip_addrs().all(|a| a.port() == bound[0].port()));
        ep.close().await;
        drop(held);
        let (ep, taken) = bind_endpoint("mesh.listen", at, build).await.unwrap();
        assert!(!taken);
        assert_eq!(ep.bound_sockets(), vec![at]);
        ep.close().await;
        // TEST-NET-1 is no address of this machine: binding fails here, nothing is sent.
        let err = match bind_endpoint("mesh.listen", "192.0.2.1:4919".parse().unwrap(), build).await
        {
            Ok(_) => panic!("192.0.2.1 is bound"),
            Err(e) => e,
        };
        assert!(
            err.to_string()
                .contains("mesh.listen = 192.0.2.1:4919: cannot bind"),
            "{err}"
        );
    }

    #[test]
    fn a_wildcard_bind_stands_for_the_interface_addresses() {
        let got = concrete("0.0.0.0:4919".parse().unwrap());
        assert!(got.contains(&"127.0.0.1:4919".parse().unwrap()), "{got:?}");
        let ifs = interface_addrs();
        for ip in ifs.iter().filter(|ip| ip.is_ipv4() && !ip.is_loopback()) {
            assert!(
                got.contains(&SocketAddr::new(*ip, 4919)),
                "{got:?} lacks {ip}"
            );
        }
        assert_eq!(
            concrete("10.1.2.3:5".parse().unwrap()),
            vec!["10.1.2.3:5".parse().unwrap()]
        );
        let dir = tempfile::tempdir().unwrap();
        let t = offline_ticket(dir.path(), "0.0.0.0:4919".parse().unwrap()).unwrap();
        let addr = parse_peer(&t).unwrap();
        assert_eq!(addr.ip_addrs().count(), got.len(), "{t} {got:?} {ifs:?}");
    }
}
