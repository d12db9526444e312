//! Catalog exchange between group members (feed sync): each device tells the members it
//! is connected to what it can share, so that a miss asks only the peers that may hold
//! the key, and a subscriber learns which neighbour holds a newer copy of a feed.
//!
//! The giving side is [`Source`]: a generation counter moved by every shareable commit
//! (remembered, with the key's 64-bit hash, in a bounded log) and by every change in what
//! this device is seeking or fetching. The taking side is [`pull`], one task per outgoing
//! connection to a member that speaks version 2: it asks for the whole catalog once (a
//! Golomb-coded set of every shareable key, `catalog.rs`), then keeps one
//! [`Request::Catalog`] outstanding — a long poll the giver answers as soon as its
//! generation moves, with only what changed. So a key committed or sought on one device
//! is known to its neighbours about one network trip later, and a quiet mesh costs one
//! message per peer every [`LONG_POLL`].
//!
//! Why "seeking" is in the catalog: one download per carriage. Two devices that miss the
//! same key at the same moment used to find each other by asking everyone; now a miss
//! that no catalog matches waits a short election window (a tenth of the lookup deadline)
//! for a neighbour's "seeking" notice, and asks only the neighbours that sent one — the
//! lookup protocol's election (the smaller endpoint id fetches) does the rest. A peer
//! whose catalog is not here yet (just connected, or an older version) is always asked.
//!
//! Summaries are lossy and late by design: a false hit costs one lookup, a key committed
//! a moment ago and not yet announced costs one origin fetch. Evicted keys stay in a
//! summary until the whole catalog is asked for again ([`FULL_EVERY`]). Strangers get no
//! catalog (a filter answers "do you hold URL X?" for anyone who can guess X).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use iroh::endpoint::Connection;
use iroh::EndpointId;

use crate::attest::Attestation;
use crate::catalog::{key_hash, Filter};
use crate::peers;
use crate::proto::{self, Answer, CatalogUpdate, ProtoError, Request};
use crate::Inner;

/// A catalog request waits this long for a change before it is answered anyway.
pub const LONG_POLL: Duration = Duration::from_secs(25);
/// The whole catalog is asked for again this often (evicted keys leave the summary).
pub const FULL_EVERY: Duration = Duration::from_secs(600);
/// Commits remembered for deltas; a peer further behind gets the whole catalog.
const LOG_MAX: usize = 8192;
/// Most holders a miss asks: a popular object is held by most of a carriage, and asking
/// them all would be the fan-out catalogs are for avoiding (a false hit is 1 in 256, so
/// three holders that all miss are as good as never).
pub const MAX_HOLDERS_ASKED: usize = 3;
/// Keys added by deltas that one summary holds before the whole catalog is asked again.
const ADDED_MAX: usize = 1 << 18;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// This device's catalog, as its peers see it.
pub(crate) struct Source {
    epoch: u64,
    log: Mutex<Log>,
    changed: tokio::sync::watch::Sender<u64>,
}

struct Log {
    gen: u64,
    /// `(generation, key hash)` of recent commits, oldest first.
    added: VecDeque<(u64, u64)>,
    /// Deltas can be given since this generation or any later one.
    floor: u64,
    /// Generation of the last commit.
    last_add: u64,
    /// The last whole catalog built, and the generation read before building it.
    full: Option<(u64, Arc<Vec<u8>>)>,
}

impl Source {
    pub fn new() -> Source {
        let mut e = [0u8; 8];
        let _ = getrandom::fill(&mut e);
        Source {
            epoch: u64::from_le_bytes(e),
            log: Mutex::new(Log {
                gen: 1,
                added: VecDeque::new(),
                floor: 1,
                last_add: 0,
                full: None,
            }),
            changed: tokio::sync::watch::channel(1).0,
        }
    }

    /// A shareable entry was committed under `key`.
    pub fn added(&self, key: &str) {
        let gen = {
            let mut l = lock(&self.log);
            l.gen += 1;
            let gen = l.gen;
            l.added.push_back((gen, key_hash(key)));
            l.last_add = gen;
            if l.added.len() > LOG_MAX {
                if let Some((g, _)) = l.added.pop_front() {
                    l.floor = g;
                }
            }
            gen
        };
        self.changed.send_replace(gen);
    }

    /// What this device is seeking or fetching changed.
    pub fn busy_changed(&self) {
        let gen = {
            let mut l = lock(&self.log);
            l.gen += 1;
            l.gen
        };
        self.changed.send_replace(gen);
    }
}

/// Answers a [`Request::Catalog`] from a member.
pub(crate) async fn answer(
    inner: &Arc<Inner>,
    since: Option<(u64, u64)>,
    watch: Vec<String>,
    wait_ms: u32,
) -> Result<CatalogUpdate, ProtoError> {
    if watch.len() > proto::MAX_WATCH || watch.iter().any(|k| k.len() > 16 * 1024) {
        return Err(ProtoError::Violation("oversized catalog request".into()));
    }
    let src = &inner.catalog;
    if let Some((_, g)) = since.filter(|(e, _)| *e == src.epoch) {
        // Nothing new since the asker's generation: wait for a change (a long poll).
        let wait = Duration::from_millis(wait_ms as u64).min(LONG_POLL);
        let mut rx = src.changed.subscribe();
        let mut stop = inner.shutdown.subscribe();
        tokio::select! {
            _ = tokio::time::timeout(wait, rx.wait_for(|now| *now > g)) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }
    let (gen, delta) = {
        let l = lock(&src.log);
        let delta = match since {
            Some((e, g)) if e == src.epoch && g >= l.floor && g <= l.gen => {
                let d: Vec<u64> = l
                    .added
                    .iter()
                    .filter(|(ag, _)| *ag > g)
                    .map(|(_, h)| *h)
                    .collect();
                (d.len() <= proto::MAX_ADDED).then_some(d)
            }
            _ => None,
        };
        (l.gen, delta)
    };
    let (full, added) = match delta {
        Some(d) => (None, d),
        None => (Some(whole(inner, gen).await?.to_vec()), Vec::new()),
    };
    // Seeking, fetching, and downloads under way whose result will be shareable (a fill
    // outlives the seek; its commit comes as `added`, in the same generation order).
    let mut busy: Vec<(u64, bool)> = inner
        .inflight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .take(proto::MAX_BUSY)
        .map(|(k, i)| (key_hash(k), i.is_fetching()))
        .collect();
    for k in inner.cache.shareable_fills() {
        if busy.len() >= proto::MAX_BUSY {
            break;
        }
        busy.push((key_hash(&k), true));
    }
    let heads = watch
        .into_iter()
        .filter_map(|k| head(inner, &k).map(|t| (k, t)))
        .collect();
    Ok(CatalogUpdate {
        epoch: src.epoch,
        gen,
        full,
        added,
        busy,
        heads,
    })
}

/// The whole catalog: every shareable key. Built again only after a commit; `gen` was
/// read before listing, so a commit during the listing also comes in a later delta.
async fn whole(inner: &Inner, gen: u64) -> Result<Arc<Vec<u8>>, ProtoError> {
    {
        let l = lock(&inner.catalog.log);
        if let Some((built, bytes)) = &l.full {
            if *built >= l.last_add {
                return Ok(bytes.clone());
            }
        }
    }
    let list = inner
        .cache
        .list()
        .await
        .map_err(|e| ProtoError::Io(format!("catalog: {e}")))?;
    let keys: HashSet<&str> = list
        .iter()
        .filter(|(_, e)| e.shareable && e.attestation.is_some())
        .map(|(k, _)| k.as_str())
        .collect();
    let bytes = Arc::new(Filter::build(keys).encode());
    let mut l = lock(&inner.catalog.log);
    if l.full.as_ref().is_none_or(|(b, _)| *b < gen) {
        l.full = Some((gen, bytes.clone()));
    }
    Ok(bytes)
}

/// When this device's newest shareable copy of `key` was fetched from the origin.
pub(crate) fn head(inner: &Inner, key: &str) -> Option<u64> {
    inner
        .cache
        .variants(key)
        .ok()?
        .iter()
        .filter(|e| e.shareable)
        .filter_map(|e| Attestation::stored_fetched_at_ms(e.attestation.as_deref()?))
        .max()
}

/// What this device knows of one peer's catalog.
struct Summary {
    /// The connection it came over (a reconnect starts a new summary).
    conn: usize,
    epoch: u64,
    filter: Filter,
    added: HashSet<u64>,
    busy: HashMap<u64, bool>,
    heads: HashMap<String, u64>,
}

impl Summary {
    fn may_hold(&self, h: u64) -> bool {
        self.added.contains(&h) || self.filter.may_hold_hash(h)
    }
}

/// The peers' catalogs.
#[derive(Default)]
pub(crate) struct Summaries {
    map: Mutex<HashMap<EndpointId, Summary>>,
    /// Moves whenever a summary does.
    pub changed: tokio::sync::watch::Sender<u64>,
}

impl Summaries {
    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Connected peers whose catalog is here.
    pub fn held(&self) -> usize {
        lock(&self.map).len()
    }

    /// Keys known from all catalogs (whole catalogs and deltas).
    pub fn keys(&self) -> usize {
        lock(&self.map)
            .values()
            .map(|s| s.filter.len() + s.added.len())
            .sum()
    }

    /// Peers whose catalog may hold `key`.
    pub fn holders(&self, key: &str) -> Vec<EndpointId> {
        let h = key_hash(key);
        lock(&self.map)
            .iter()
            .filter(|(_, s)| s.may_hold(h))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Fetch times of `key` (a watched feed document) at the peers that hold it.
    pub fn heads(&self, key: &str) -> Vec<(EndpointId, u64)> {
        lock(&self.map)
            .iter()
            .filter_map(|(id, s)| s.heads.get(key).map(|t| (*id, *t)))
            .collect()
    }
}

/// Which of `conns` a miss for `key` asks.
pub(crate) struct Targets {
    /// Peers whose catalog may hold it.
    pub holders: Vec<(EndpointId, Connection)>,
    /// Peers whose catalog is not here (just connected, or an older version): asked.
    pub unknown: Vec<(EndpointId, Connection)>,
    /// How many of `conns` have a catalog here.
    pub with_catalog: usize,
}

pub(crate) fn targets(inner: &Inner, key: &str, conns: Vec<(EndpointId, Connection)>) -> Targets {
    let h = key_hash(key);
    let map = lock(&inner.summaries.map);
    let mut t = Targets {
        holders: Vec::new(),
        unknown: Vec::new(),
        with_catalog: 0,
    };
    for (id, conn) in conns {
        match map.get(&id) {
            None => t.unknown.push((id, conn)),
            Some(s) => {
                t.with_catalog += 1;
                if s.may_hold(h) {
                    t.holders.push((id, conn));
                }
            }
        }
    }
    if t.holders.len() > MAX_HOLDERS_ASKED {
        // A random few, so the load spreads over the holders.
        let mut r = [0u8; 4];
        let _ = getrandom::fill(&mut r);
        let n = t.holders.len();
        t.holders.rotate_left(u32::from_le_bytes(r) as usize % n);
        t.holders.truncate(MAX_HOLDERS_ASKED);
    }
    t
}

/// Waits up to `window` for neighbours to announce that they are seeking or fetching
/// `key` too; those that did. Ends early when one that wins the election has (one
/// fetching, or seeking with a smaller endpoint id): the lookup then waits for it. Else
/// the whole window is waited, so that every contender is asked (asking only a loser
/// would let two devices download).
pub(crate) async fn busy_nearby(inner: &Inner, key: &str, window: Duration) -> Vec<EndpointId> {
    let h = key_hash(key);
    let me = inner.endpoint.id();
    let deadline = tokio::time::Instant::now() + window;
    let mut rx = inner.summaries.changed.subscribe();
    loop {
        let busy: Vec<(EndpointId, bool)> = lock(&inner.summaries.map)
            .iter()
            .filter_map(|(id, s)| s.busy.get(&h).map(|f| (*id, *f)))
            .collect();
        let winner = busy
            .iter()
            .any(|(id, fetching)| *fetching || id.as_bytes() < me.as_bytes());
        let over = winner
            || tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err();
        if over {
            return busy.into_iter().map(|(id, _)| id).collect();
        }
    }
}

/// Keeps `id`'s catalog current over `conn` until the connection ends.
pub(crate) async fn pull(weak: Weak<Inner>, id: EndpointId, conn: Connection) {
    let tag = conn.stable_id();
    let mut since: Option<(u64, u64)> = None;
    let mut full_at = Instant::now();
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if conn.close_reason().is_some() || inner.is_shutting_down() {
            break;
        }
        if full_at.elapsed() >= FULL_EVERY {
            since = None;
        }
        let watch = inner.watched();
        let wait = if since.is_some() {
            LONG_POLL
        } else {
            Duration::ZERO
        };
        drop(inner);
        let res = proto::within(
            wait + proto::HANDSHAKE_TIMEOUT,
            ask(&conn, since, watch.clone(), wait),
        )
        .await;
        let Some(inner) = weak.upgrade() else { return };
        match res {
            Ok(Answer::Catalog(u)) => {
                let whole = u.full.is_some();
                match apply(&inner, id, tag, since, &watch, u) {
                    Ok(next) => {
                        since = Some(next);
                        if whole {
                            full_at = Instant::now();
                        }
                    }
                    Err(why) => {
                        peers::ban(&inner, id, &why);
                        break;
                    }
                }
            }
            Ok(_) => {
                peers::ban(&inner, id, "answered a catalog request with something else");
                break;
            }
            Err(e) if e.is_violation() => {
                peers::ban(&inner, id, &e.to_string());
                break;
            }
            Err(e) => {
                if conn.close_reason().is_some() {
                    break;
                }
                tracing::debug!(peer = %id, "catalog: {e}");
                drop(inner);
                tokio::select! {
                    _ = conn.closed() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    if let Some(inner) = weak.upgrade() {
        let mut map = lock(&inner.summaries.map);
        if map.get(&id).is_some_and(|s| s.conn == tag) {
            map.remove(&id);
            drop(map);
            inner.summaries.notify();
        }
    }
}

async fn ask(
    conn: &Connection,
    since: Option<(u64, u64)>,
    watch: Vec<String>,
    wait: Duration,
) -> Result<Answer, ProtoError> {
    let req = Request::Catalog {
        since,
        watch,
        wait_ms: wait.as_millis() as u32,
    };
    proto::call(conn, &req, proto::MAX_CATALOG_MESSAGE).await
}

/// Takes a catalog answer into `id`'s summary; `Err` says how the peer broke the
/// protocol. Returns the `since` of the next request.
fn apply(
    inner: &Inner,
    id: EndpointId,
    tag: usize,
    since: Option<(u64, u64)>,
    watch: &[String],
    u: CatalogUpdate,
) -> Result<(u64, u64), String> {
    if u.busy.len() > proto::MAX_BUSY
        || u.added.len() > proto::MAX_ADDED
        || u.heads.len() > watch.len()
    {
        return Err("oversized catalog".into());
    }
    if u.heads.iter().any(|(k, _)| !watch.contains(k)) {
        return Err("catalog heads for documents not asked about".into());
    }
    let mut map = lock(&inner.summaries.map);
    match u.full {
        Some(bytes) => {
            let filter = Filter::decode(&bytes).map_err(|e| format!("sent a bad catalog: {e}"))?;
            map.insert(
                id,
                Summary {
                    conn: tag,
                    epoch: u.epoch,
                    filter,
                    added: u.added.into_iter().collect(),
                    busy: HashMap::new(),
                    heads: HashMap::new(),
                },
            );
        }
        None => {
            let Some(s) = map
                .get_mut(&id)
                .filter(|s| s.conn == tag && since.is_some_and(|(e, _)| e == u.epoch))
            else {
                return Err("sent a catalog delta with no catalog before it".into());
            };
            s.added.extend(u.added);
        }
    }
    let Some(s) = map.get_mut(&id) else {
        return Err("catalog vanished".into());
    };
    s.busy = u.busy.into_iter().collect();
    s.heads = u.heads.into_iter().collect();
    // Too many keys by delta: ask for the whole catalog again (it also drops evictions).
    let next = if s.added.len() > ADDED_MAX {
        (s.epoch, 0)
    } else {
        (s.epoch, u.gen)
    };
    drop(map);
    inner.summaries.notify();
    Ok(next)
}
