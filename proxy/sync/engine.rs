//! The sync engine: keeps the subscribed feeds up to date from the devices nearby.
//!
//! It wakes when a peer's catalog changes (a neighbour connected, committed something, or
//! holds a newer feed document: `mesh::Mesh::heads`), and every minute. A round:
//!
//! 1. For each feed, if a connected peer holds a copy of the document fetched from the
//!    origin after the one here, fetch it from that peer (only a newer copy is taken).
//!    With `sync.from_origin`, a document that is missing or stale here is also fetched
//!    (or revalidated) from the origin.
//! 2. Parse the document held here (a document that does not parse is reported in the
//!    status and skipped) and queue its media (`plan::queue`: thumbnails first, newest
//!    first, fair across feeds, `media` and `max_item` applied).
//! 3. Fetch what is not here yet and a peer's catalog says it may hold (or, with
//!    `from_origin`, anything), [`PARALLEL`] at a time, each within the day's budget:
//!    the bytes are reserved before the request and a peer's offer larger than the
//!    reservation is refused before a byte moves (`mesh::Nearby`); the origin's answer
//!    must state a length within it.
//!
//! Every request goes through the proxy's own flow (`flow::prefetch`), so what arrives
//! is an ordinary cache entry, checked and stored like any other, and later requests by
//! the owner's apps are local hits — offline too (the stale feed rather than an error).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{StatusCode, Uri};
use http_body_util::BodyExt;

use cache::key::primary_key;

use super::feed::{self, Item};
use super::plan::{self, Budget, FeedPlan, Wanted};
use crate::flow::prefetch::{prefetch, Want};
use crate::flow::Phase;
use crate::state::{FeedStatus, State, SyncFigures};

/// Fetches under way at once.
pub const PARALLEL: usize = 4;
/// A round runs at least this often.
const ROUND_EVERY: Duration = Duration::from_secs(60);
/// A burst of catalog changes is one round.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// A transfer that broke is tried again after this (another peer may hold it).
const RETRY_BROKEN: Duration = Duration::from_secs(5);
/// A URL that answered an error is tried again after this.
const RETRY_ERROR: Duration = Duration::from_secs(600);
/// How long a fetch waits for what it brought to be stored.
const COMMIT_WAIT: Duration = Duration::from_secs(5);
/// Peers named per feed in the status.
const MAX_PEERS_SHOWN: usize = 16;

/// The engine's figures and per-feed state.
pub struct Engine {
    cfg: config::Sync,
    budget: Budget,
    /// What the status page shows (shared with `State`).
    pub figures: Arc<SyncFigures>,
    /// URLs that failed, and when they may be tried again.
    retry: Mutex<HashMap<String, Instant>>,
    /// Parsed documents by feed, with the body hash they were parsed from (a document is
    /// parsed once per version; a failure is reported once per version).
    parsed: Mutex<HashMap<usize, Parsed>>,
}

/// A document's body hash and what parsing it gave.
type Parsed = ([u8; 32], Result<Arc<Vec<Item>>, String>);

/// What one fetch brought.
enum Got {
    /// The body (kept only when asked for), its length, where it came from.
    Body {
        bytes: Option<Bytes>,
        len: u64,
        from: From,
    },
    /// Nobody nearby has it (and the origin may not be asked).
    NotNearby,
}

enum From {
    Here,
    Peer(String),
    Origin,
}

fn unix_ms(t: std::time::SystemTime) -> u64 {
    cache::clock::unix_ms(t)
}

impl Engine {
    pub fn new(cfg: config::Sync) -> Engine {
        let figures = Arc::new(SyncFigures {
            budget: cfg.budget.bytes(),
            feeds: cfg
                .feed
                .iter()
                .map(|f| {
                    Mutex::new(FeedStatus {
                        url: f.url.clone(),
                        ..Default::default()
                    })
                })
                .collect(),
            ..Default::default()
        });
        Engine {
            budget: Budget::new(cfg.budget.bytes()),
            cfg,
            figures,
            retry: Mutex::new(HashMap::new()),
            parsed: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes today's use of the budget.
    fn publish_budget(&self, now: std::time::SystemTime) {
        let (used, _) = self.budget.used(now);
        self.figures.used_today.store(used, Ordering::Relaxed);
    }

    fn feed(&self, i: usize) -> std::sync::MutexGuard<'_, FeedStatus> {
        lock(&self.figures.feeds[i])
    }

    fn may_try(&self, url: &str) -> bool {
        lock(&self.retry)
            .get(url)
            .is_none_or(|at| Instant::now() >= *at)
    }

    fn failure(&self, i: usize, url: &str, why: String, again_in: Duration) {
        tracing::warn!(feed = %self.cfg.feed[i].url, %url, "sync: {why}");
        self.figures.failed.fetch_add(1, Ordering::Relaxed);
        lock(&self.retry).insert(url.to_string(), Instant::now() + again_in);
        self.feed(i).last_error = Some(format!("{url}: {why}"));
    }

    fn arrived(&self, i: usize, from: &From, now_ms: u64) {
        self.figures.fetched.fetch_add(1, Ordering::Relaxed);
        let mut f = self.feed(i);
        f.synced_at_unix_ms = Some(now_ms);
        if let From::Peer(p) = from {
            if !f.peers.contains(p) && f.peers.len() < MAX_PEERS_SHOWN {
                f.peers.push(p.clone());
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the engine (when feeds are subscribed to); it ends with the proxy.
pub fn spawn(state: Arc<State>, engine: Arc<Engine>) {
    if engine.cfg.feed.is_empty() {
        return;
    }
    match &state.mesh {
        Some(_) => {}
        None if !engine.cfg.from_origin => {
            tracing::warn!("sync: feeds are subscribed to, but the mesh is off and sync.from_origin is false: nothing will be prefetched");
        }
        None => {}
    }
    tokio::spawn(async move {
        let mut changed = state.mesh.as_ref().map(|m| m.catalogs_changed());
        let mut stop = state.shutdown.clone();
        loop {
            let before = engine.figures.fetched.load(Ordering::Relaxed);
            let retry_soon = round(&state, &engine).await;
            if engine.figures.fetched.load(Ordering::Relaxed) > before && !*stop.borrow() {
                // What arrived may bring more (a new document, new media): go on at once.
                continue;
            }
            let every = if retry_soon {
                RETRY_BROKEN
            } else {
                ROUND_EVERY
            };
            let catalog = async {
                let moved = match changed.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => false,
                };
                if moved {
                    tokio::time::sleep(DEBOUNCE).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = catalog => {}
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}

/// One round (see the module docs). True when something is to be tried again soon.
async fn round(state: &Arc<State>, engine: &Arc<Engine>) -> bool {
    let feeds = &engine.cfg.feed;
    let mut docs: Vec<Option<Arc<Vec<Item>>>> = Vec::with_capacity(feeds.len());
    let mut current = Vec::with_capacity(feeds.len());
    for i in 0..feeds.len() {
        let (items, is_current) = document(state, engine, i).await;
        docs.push(items);
        current.push(is_current);
    }
    let plans: Vec<FeedPlan<'_>> = feeds
        .iter()
        .zip(&docs)
        .map(|(f, d)| FeedPlan {
            items: d.as_ref().map(|v| v.as_slice()).unwrap_or(&[]),
            wanted: match f.media {
                config::Media::None => Wanted::None,
                config::Media::Thumbnails => Wanted::Thumbnails,
                config::Media::All => Wanted::All,
            },
            max_item: f.max_item.bytes(),
        })
        .collect();
    let mut queue = plan::queue(&plans);
    let mut seen = HashSet::new();
    queue.retain(|f| seen.insert(f.media.url.clone()));
    let mut wanted = vec![0u64; feeds.len()];
    for f in &queue {
        wanted[f.feed] += 1;
    }
    // Shown at once, so the status page follows the sync as it goes (held media are
    // counted in as they arrive, and recounted at the end of the round).
    for (i, d) in docs.iter().enumerate() {
        let mut s = engine.feed(i);
        s.items_newest = d.as_ref().map_or(0, |d| d.len() as u64);
        s.media_wanted = wanted[i];
    }
    // Only what is not here and someone may send: a member whose catalog lists it, a
    // stranger (only for a URL that names its content's hash: what a stranger cannot
    // forge, docs/mesh.md), or, with `from_origin`, the origin.
    let strangers = state.mesh.as_ref().is_some_and(|m| m.has_strangers());
    let todo: Vec<plan::Fetch> = queue
        .iter()
        .filter(|f| !held(state, &f.media.url) && engine.may_try(&f.media.url))
        .filter(|f| {
            engine.cfg.from_origin
                || !holders(state, &f.media.url).is_empty()
                || (strangers && self_certifying(&f.media.url))
        })
        .cloned()
        .collect();
    let results: Vec<bool> = futures_util::stream::iter(todo)
        .map(|f| media(state, engine, f))
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let retry_soon = results.iter().any(|broken| *broken);
    // The figures, from what is here now.
    let mut missing_nearby = vec![false; feeds.len()];
    let mut held_n = vec![0u64; feeds.len()];
    let mut bytes = vec![0u64; feeds.len()];
    for f in &queue {
        match held_len(state, &f.media.url) {
            Some(len) => {
                held_n[f.feed] += 1;
                bytes[f.feed] += len;
            }
            None if !holders(state, &f.media.url).is_empty() => missing_nearby[f.feed] = true,
            None => {}
        }
    }
    for i in 0..feeds.len() {
        let doc_len = feeds[i]
            .url
            .parse::<Uri>()
            .ok()
            .and_then(|u| held_len(state, &u.to_string()))
            .unwrap_or(0);
        let mut s = engine.feed(i);
        s.items_newest = docs[i].as_ref().map_or(0, |d| d.len() as u64);
        s.media_wanted = wanted[i];
        s.media_held = held_n[i];
        s.bytes = doc_len + bytes[i];
        s.up_to_date = current[i] && docs[i].is_some() && !missing_nearby[i];
    }
    retry_soon
}

/// Brings feed `i`'s document up to date and parses it: its items (if one is here and
/// parses), and whether no connected peer holds a newer one.
async fn document(
    state: &Arc<State>,
    engine: &Arc<Engine>,
    i: usize,
) -> (Option<Arc<Vec<Item>>>, bool) {
    let f = &engine.cfg.feed[i];
    let Ok(uri) = f.url.parse::<Uri>() else {
        return (None, false);
    };
    let Some(key) = primary_key(&uri) else {
        return (None, false);
    };
    let max_item = f.max_item.bytes();
    let mut current = true;
    if let Some(m) = &state.mesh {
        let own = m.own_head(&key);
        let newest = m.heads(&key).into_iter().map(|(_, t)| t).max();
        if let Some(n) = newest.filter(|n| own.is_none_or(|o| *n > o)) {
            current = false;
            let now = state.cache.now();
            let (used, limit) = engine.budget.used(now);
            let reservation = engine
                .budget
                .reserve(max_item.min(limit.saturating_sub(used)), now);
            if let Some(r) = reservation.filter(|_| engine.may_try(&f.url)) {
                let want = Want {
                    newer_than_ms: Some(own.unwrap_or(0)),
                    max_len: r.limit(),
                    from_origin: false,
                    admin: true,
                };
                let res = fetch(state, &uri, want, false).await;
                let took = match &res {
                    Ok(Got::Body { len, .. }) => *len,
                    _ => 0,
                };
                engine.budget.settle(r, took, state.cache.now());
                engine.publish_budget(state.cache.now());
                match res {
                    Ok(Got::Body { len, from, .. }) => {
                        tracing::info!(feed = %f.url, bytes = len, fetched_at_ms = n, "sync: a newer feed document from nearby");
                        engine.arrived(i, &from, unix_ms(state.cache.now()));
                        current = m.own_head(&key).is_some_and(|o| o >= n);
                    }
                    Ok(Got::NotNearby) => {}
                    Err((why, again)) => engine.failure(i, &f.url, why, again),
                }
            }
        }
    }
    // The document here (or, with `from_origin`, from the origin when missing or stale).
    let here = held(state, &f.url);
    if !here && !engine.cfg.from_origin {
        return (None, current);
    }
    if !here && !engine.may_try(&f.url) {
        return (None, current);
    }
    let want = Want {
        newer_than_ms: None,
        max_len: max_item,
        from_origin: engine.cfg.from_origin,
        admin: true,
    };
    let body = match fetch(state, &uri, want, true).await {
        Ok(Got::Body {
            bytes: Some(b),
            from,
            ..
        }) => {
            if !matches!(from, From::Here) {
                engine.arrived(i, &from, unix_ms(state.cache.now()));
            }
            b
        }
        Ok(_) => return (None, current),
        Err((why, again)) => {
            engine.failure(i, &f.url, why, again);
            return (None, current);
        }
    };
    let hash = *blake3::hash(&body).as_bytes();
    let mut parsed = lock(&engine.parsed);
    if let Some((h, r)) = parsed.get(&i) {
        if *h == hash {
            return (r.as_ref().ok().cloned(), current);
        }
    }
    let r = feed::parse(&f.url, &body)
        .map(Arc::new)
        .map_err(|e| e.to_string());
    match &r {
        Ok(items) => {
            tracing::info!(feed = %f.url, items = items.len(), "sync: feed document parsed");
            engine.feed(i).last_error = None;
        }
        Err(why) => {
            tracing::warn!(feed = %f.url, "sync: skipped: {why}");
            engine.figures.failed.fetch_add(1, Ordering::Relaxed);
            engine.feed(i).last_error = Some(why.clone());
        }
    }
    parsed.insert(i, (hash, r.clone()));
    (r.ok(), current)
}

/// Fetches one media object within the budget. True when its transfer broke (worth
/// trying again soon).
async fn media(state: &Arc<State>, engine: &Arc<Engine>, f: plan::Fetch) -> bool {
    let Ok(uri) = f.media.url.parse::<Uri>() else {
        return false;
    };
    let max_item = engine.cfg.feed[f.feed].max_item.bytes();
    let now = state.cache.now();
    let (used, limit) = engine.budget.used(now);
    let left = limit.saturating_sub(used);
    let want_bytes = f.media.declared.unwrap_or(max_item).min(max_item);
    let Some(r) = engine
        .budget
        .reserve(want_bytes, now)
        .or_else(|| engine.budget.reserve(left.min(max_item), now))
    else {
        tracing::debug!(url = %f.media.url, "sync: the day's budget is used up");
        return false;
    };
    let feed_host = engine.cfg.feed[f.feed]
        .url
        .parse::<Uri>()
        .ok()
        .and_then(|u| u.authority().cloned());
    let want = Want {
        newer_than_ms: None,
        max_len: r.limit(),
        from_origin: engine.cfg.from_origin,
        admin: feed_host.is_some() && uri.authority() == feed_host.as_ref(),
    };
    let res = fetch(state, &uri, want, false).await;
    let took = match &res {
        Ok(Got::Body { len, from, .. }) if !matches!(from, From::Here) => *len,
        _ => 0,
    };
    engine.budget.settle(r, took, state.cache.now());
    engine.publish_budget(state.cache.now());
    match res {
        Ok(Got::Body { from, len, .. }) => {
            if !matches!(from, From::Here) {
                tracing::debug!(url = %f.media.url, bytes = len, "sync: media prefetched");
                engine.arrived(f.feed, &from, unix_ms(state.cache.now()));
                let mut s = engine.feed(f.feed);
                s.media_held += 1;
                s.bytes += len;
            }
            false
        }
        Ok(Got::NotNearby) => false,
        Err((why, again)) => {
            engine.failure(f.feed, &f.media.url, why, again);
            again == RETRY_BROKEN
        }
    }
}

/// One request through the proxy's flow, its body read to the end (kept if `keep`).
/// An error says why and when to try again.
async fn fetch(
    state: &Arc<State>,
    uri: &Uri,
    want: Want,
    keep: bool,
) -> Result<Got, (String, Duration)> {
    let out = prefetch(state, uri, want).await;
    let status = out.response.status();
    if status == StatusCode::GATEWAY_TIMEOUT && out.phase == Phase::Local("not-nearby") {
        return Ok(Got::NotNearby);
    }
    if status != StatusCode::OK {
        return Err((format!("answered {status}"), RETRY_ERROR));
    }
    let from = match &out.phase {
        Phase::Hit => From::Here,
        Phase::Peer { peer, .. } | Phase::Stranger { peer, .. } => From::Peer(peer.clone()),
        _ => From::Origin,
    };
    let fill = match &from {
        From::Here => None,
        _ => primary_key(uri).and_then(|k| state.cache.fill_in_progress(&k)),
    };
    let mut body = out.response.into_body();
    let mut kept = Vec::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| (format!("transfer broke: {e}"), RETRY_BROKEN))?;
        if let Ok(data) = frame.into_data() {
            len += data.len() as u64;
            if len > want.max_len && !matches!(from, From::Here) {
                return Err((
                    format!(
                        "larger than its share of the budget ({} bytes)",
                        want.max_len
                    ),
                    RETRY_ERROR,
                ));
            }
            if keep {
                kept.extend_from_slice(&data);
            }
        }
    }
    // Stored once its fill commits (just after the body's end): what the round reads
    // next must find it.
    if let Some(f) = fill {
        let _ = tokio::time::timeout(COMMIT_WAIT, f.finished()).await;
    }
    Ok(Got::Body {
        bytes: keep.then(|| Bytes::from(kept)),
        len,
        from,
    })
}

/// Is `url` stored here (any variant)?
fn held(state: &State, url: &str) -> bool {
    held_len(state, url).is_some()
}

fn held_len(state: &State, url: &str) -> Option<u64> {
    let key = primary_key(&url.parse::<Uri>().ok()?)?;
    let e = state.cache.variants(&key).ok()?;
    e.iter().map(|e| e.len).max()
}

/// Does `url` name its content's hash (so a stranger may send it)?
fn self_certifying(url: &str) -> bool {
    url.parse::<Uri>()
        .ok()
        .is_some_and(|u| cache::certify::certify(&u, None).is_some())
}

/// Connected peers whose catalog may hold `url`.
fn holders(state: &State, url: &str) -> Vec<String> {
    let (Some(m), Some(key)) = (
        &state.mesh,
        url.parse::<Uri>().ok().and_then(|u| primary_key(&u)),
    ) else {
        return Vec::new();
    };
    m.holders(&key)
}
