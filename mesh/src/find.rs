//! The asking side: on a local miss, ask connected peers in parallel (bounded by
//! `lookup_timeout`), judge their offers (attestation, trust, variant, freshness), fetch
//! the body from the fastest peer that has it with verified streaming (another peer
//! offering the same hash resumes a failed transfer), store it, and hand the entry back.
//! A peer that answers "fetching" is waited for (bounded by `peer_fill_wait`).

use std::time::{Duration, UNIX_EPOCH};

use futures_util::stream::{BoxStream, FuturesUnordered};
use futures_util::StreamExt;
use http::request;
use iroh::endpoint::Connection;
use iroh::EndpointId;
use iroh_blobs::api::remote::GetProgressItem;
use iroh_blobs::Hash;

use cache::key::variant_key;
use cache::policy::{self, PolicyOptions, Storability, Verdict};
use cache::Entry;

use crate::attest::Attestation;
use crate::peers;
use crate::proto::{self, Answer, ProtoError, Request};
use crate::PeerBodyError;
use crate::{Inner, Mesh};

/// An entry a peer has: already stored here (`body` is `None`), or streaming in.
pub struct Found {
    /// With `body`, the entry as attested (not stored yet: `id` 0, store it through a
    /// fill with its attestation); without, the stored entry.
    pub entry: Entry,
    /// Endpoint id of the peer the body (first) came from.
    pub peer: String,
    /// The entry is stale by this device's judgment (served only when the origin is
    /// unreachable).
    pub stale: bool,
    /// The body, verified as it arrives (see `stream.rs`).
    pub body: Option<BoxStream<'static, Result<bytes::Bytes, PeerBodyError>>>,
}

/// Marks a request as a prefetch (feed sync): only offers fetched from the origin after
/// `newer_than_ms` and no larger than `max_len` are taken.
#[derive(Debug, Clone, Copy)]
pub struct Nearby {
    pub newer_than_ms: u64,
    pub max_len: u64,
}

pub(crate) struct Candidate {
    pub peer: EndpointId,
    pub entry: Entry,
    pub stale: bool,
    /// The body, when the peer sent it with its offer (already checked against the
    /// attested hash).
    pub inline: Option<bytes::Bytes>,
}

impl Mesh {
    /// Looks for `key` on peers for this request (GET, no credentials). `allow_stale`:
    /// the origin is unreachable, so an entry this device would consider stale will do.
    pub async fn find(&self, key: &str, req: &request::Parts, allow_stale: bool) -> Option<Found> {
        let inner = &self.inner;
        let mut candidates = candidates(inner, key, req, allow_stale, true).await;
        // Fresh before stale; among equals, the order of arrival.
        candidates.sort_by_key(|c| c.stale);
        let mut tried: Vec<[u8; 32]> = Vec::new();
        for c in &candidates {
            if tried.contains(&c.entry.hash) || inner.peers.banned(&c.peer) {
                continue;
            }
            tried.push(c.entry.hash);
            // A small body that came with the offer (checked): no second round trip.
            if let Some(body) = &c.inline {
                let n = body.len() as u64;
                inner.bump(&inner.counters.bytes_from_peers, n);
                inner.peers.add_taken(&c.peer, n);
                inner.bump(&inner.counters.peer_hits, 1);
                let body = body.clone();
                return Some(Found {
                    entry: c.entry.clone(),
                    peer: c.peer.to_string(),
                    stale: c.stale,
                    body: Some(futures_util::stream::once(async move { Ok(body) }).boxed()),
                });
            }
            // Trusted signer and not here yet: stream it from every peer that offered
            // this hash, fastest first, into the caller's fill.
            if !inner.cache.has_body(&c.entry.hash, c.entry.len).await {
                let sources: Vec<EndpointId> = candidates
                    .iter()
                    .filter(|o| o.entry.hash == c.entry.hash)
                    .map(|o| o.peer)
                    .fold(Vec::new(), |mut v, p| {
                        if !v.contains(&p) {
                            v.push(p);
                        }
                        v
                    });
                match crate::stream::start(self.inner.clone(), c.entry.hash, c.entry.len, sources)
                    .await
                {
                    Some((peer, body)) => {
                        inner.bump(&inner.counters.peer_hits, 1);
                        return Some(Found {
                            entry: c.entry.clone(),
                            peer: peer.to_string(),
                            stale: c.stale,
                            body: Some(body.map(|r| r.map_err(PeerBodyError)).boxed()),
                        });
                    }
                    None => continue,
                }
            }
            // The body is already here (another URL, or a shared file): just store the entry.
            match fetch(inner, key, c).await {
                Ok(entry) => {
                    inner.bump(&inner.counters.peer_hits, 1);
                    return Some(Found {
                        entry,
                        peer: c.peer.to_string(),
                        stale: c.stale,
                        body: None,
                    });
                }
                Err(e) => tracing::info!(peer = %c.peer, %key, "body from peer failed: {e}"),
            }
        }
        None
    }
}

/// Asks every connected peer about `key` and judges the offers; with `wait`, a peer that
/// is fetching it is waited for when nobody has it yet.
async fn candidates(
    inner: &Inner,
    key: &str,
    req: &request::Parts,
    allow_stale: bool,
    wait: bool,
) -> Vec<Candidate> {
    let conns = inner.peers.connected();
    if conns.is_empty() {
        // No member nearby: strangers may relay a trusted signer's attestation.
        return crate::open::ask::signed(inner, key, req, allow_stale).await;
    }
    // Only the peers whose catalog may hold the key (or that have sent none yet).
    let t = crate::exchange::targets(inner, key, conns);
    let mut conns = t.holders;
    if conns.is_empty() && t.with_catalog > 0 && wait {
        // Nobody holds it. One download per carriage: neighbours missing the same key
        // at this moment announce it within the election window (exchange.rs); all of
        // them are asked, and the lookup protocol's election picks the one that fetches.
        let window = (inner.opts.lookup_timeout / 10)
            .clamp(Duration::from_millis(1), Duration::from_millis(100));
        let busy = crate::exchange::busy_nearby(inner, key, window).await;
        conns = inner
            .peers
            .connected()
            .into_iter()
            .filter(|(id, _)| busy.contains(id))
            .collect();
    }
    conns.extend(t.unknown);
    if conns.is_empty() {
        inner.bump(&inner.counters.lookups_skipped, 1);
        return crate::open::ask::signed(inner, key, req, allow_stale).await;
    }
    inner.bump(&inner.counters.lookups, 1);
    let timeout = inner.opts.lookup_timeout;
    let mut asks: FuturesUnordered<_> = conns
        .into_iter()
        .map(|(id, conn)| async move {
            (
                id,
                conn.clone(),
                proto::within(timeout, ask(inner, id, &conn, key, 0)).await,
            )
        })
        .collect();
    let mut candidates = Vec::new();
    let mut fetching: Vec<(EndpointId, Connection)> = Vec::new();
    // Answers arrive fastest first: the first offer comes from the fastest peer.
    while let Some((id, conn, res)) = asks.next().await {
        match res {
            Ok(Answer::Offers(offers)) => {
                candidates.extend(judge_all(inner, id, key, req, &offers, allow_stale))
            }
            Ok(Answer::OffersInline(offers)) => {
                candidates.extend(judge_inline(inner, id, key, req, offers, allow_stale))
            }
            Ok(Answer::Fetching) => fetching.push((id, conn)),
            Ok(Answer::NotFound) => {}
            Ok(Answer::Peers(_)) | Ok(Answer::Catalog(_)) => {
                peers::ban(inner, id, "answered a lookup with something else")
            }
            Err(e) if e.is_violation() => peers::ban(inner, id, &e.to_string()),
            Err(e) => tracing::debug!(peer = %id, %key, "lookup: {e}"),
        }
    }
    if candidates.is_empty() && wait {
        // One download per carriage: a peer fetching it right now will have it soon.
        // Else, a device that asked us while we were both seeking, and goes first.
        let deferred = inner
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .and_then(|i| i.defer_to);
        let target = fetching
            .into_iter()
            .min_by_key(|(id, _)| *id.as_bytes())
            .or_else(|| {
                let d = deferred?;
                inner.peers.connected().into_iter().find(|(id, _)| *id == d)
            });
        if let Some((id, conn)) = target {
            let wait = inner.opts.peer_fill_wait;
            tracing::debug!(peer = %id, %key, "a peer is fetching it: waiting");
            let wait_ms = wait.as_millis().min(u32::MAX as u128) as u32;
            match proto::within(
                wait + Duration::from_secs(2),
                ask(inner, id, &conn, key, wait_ms),
            )
            .await
            {
                Ok(Answer::Offers(offers)) => {
                    candidates.extend(judge_all(inner, id, key, req, &offers, allow_stale))
                }
                Ok(Answer::OffersInline(offers)) => {
                    candidates.extend(judge_inline(inner, id, key, req, offers, allow_stale))
                }
                Ok(_) => {}
                Err(e) if e.is_violation() => peers::ban(inner, id, &e.to_string()),
                Err(e) => tracing::debug!(peer = %id, %key, "waiting for a peer: {e}"),
            }
        }
    }
    if candidates.is_empty() {
        // Strangers may relay a trusted signer's attestation (rung 4 of the open mesh).
        candidates = crate::open::ask::signed(inner, key, req, allow_stale).await;
    }
    candidates
}

async fn ask(
    inner: &Inner,
    peer: EndpointId,
    conn: &Connection,
    key: &str,
    wait_ms: u32,
) -> Result<Answer, ProtoError> {
    inner.bump(&inner.counters.lookups_sent, 1);
    // Small bodies come with the offer from a peer that speaks version 3.
    let req = if inner.peers.version(&peer) >= proto::INLINE_VERSION {
        Request::LookupInline {
            key: key.to_string(),
            wait_ms,
            inline_max: proto::MAX_INLINE,
        }
    } else {
        Request::Lookup {
            key: key.to_string(),
            wait_ms,
        }
    };
    let answer = proto::call(conn, &req, proto::MAX_MESSAGE).await?;
    let offers = match &answer {
        Answer::Offers(o) => o.len(),
        Answer::OffersInline(o) => o.len(),
        _ => 0,
    };
    if offers > proto::MAX_OFFERS {
        return Err(ProtoError::Violation(format!("{offers} offers")));
    }
    if matches!(&answer, Answer::OffersInline(_)) && !matches!(req, Request::LookupInline { .. }) {
        return Err(ProtoError::Violation(
            "answered a lookup with inline bodies".into(),
        ));
    }
    Ok(answer)
}

/// [`judge_all`] for offers that may carry their body: a body that is not the attested
/// one (length or BLAKE3 hash) is a lie, and bans the peer.
fn judge_inline(
    inner: &Inner,
    peer: EndpointId,
    key: &str,
    req: &request::Parts,
    offers: Vec<proto::Offer>,
    allow_stale: bool,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    for offer in offers {
        match judge(inner, peer, key, req, &offer.attestation, allow_stale) {
            Ok(Some(mut c)) => {
                if let Some(body) = offer.body {
                    let right = body.len() as u64 == c.entry.len
                        && body.len() as u64 <= u64::from(proto::MAX_INLINE)
                        && *blake3::hash(&body).as_bytes() == c.entry.hash;
                    if !right {
                        peers::ban(
                            inner,
                            peer,
                            "sent an inline body that is not the attested one",
                        );
                        return Vec::new();
                    }
                    c.inline = Some(bytes::Bytes::from(body));
                }
                out.push(c);
            }
            Ok(None) => {}
            Err(reason) => {
                peers::ban(inner, peer, &reason);
                return Vec::new();
            }
        }
    }
    out
}

pub(crate) fn judge_all(
    inner: &Inner,
    peer: EndpointId,
    key: &str,
    req: &request::Parts,
    offers: &[Vec<u8>],
    allow_stale: bool,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    for bytes in offers {
        match judge(inner, peer, key, req, bytes, allow_stale) {
            Ok(Some(c)) => out.push(c),
            Ok(None) => {}
            Err(reason) => {
                peers::ban(inner, peer, &reason);
                return Vec::new();
            }
        }
    }
    out
}

/// Decides whether an offer can answer this request. `Err` means the peer misbehaved.
fn judge(
    inner: &Inner,
    peer: EndpointId,
    key: &str,
    req: &request::Parts,
    bytes: &[u8],
    allow_stale: bool,
) -> Result<Option<Candidate>, String> {
    let (att, claim) = Attestation::verify(bytes)
        .map_err(|e| format!("sent an attestation that does not check: {e}"))?;
    if claim.key != key {
        return Err(format!(
            "answered {key} with an attestation for {}",
            claim.key
        ));
    }
    if variant_key(&claim.vary, &req.headers) != claim.variant {
        return Ok(None);
    }
    // A prefetch asks for a newer copy than the one here, and no larger than its share
    // of the budget.
    if let Some(n) = req.extensions.get::<Nearby>() {
        if claim.fetched_at_ms <= n.newer_than_ms || claim.size > n.max_len {
            return Ok(None);
        }
    }
    let signer =
        iroh::PublicKey::from_bytes(&claim.signer).map_err(|_| "bad signer".to_string())?;
    let groups = inner.groups.current().unwrap_or_default();
    let trusted = signer == inner.endpoint.id()
        || inner.friends.contains(&signer)
        || inner.operators.contains(&signer)
        || att.signed_by_member(&claim, &groups)
        || inner.peers.is_member(&signer);
    // A stranger's signature binds nothing, and neither does a `Content-Digest` /
    // `Repr-Digest` among the headers it attests: whoever signs the claim wrote those
    // headers too. (A digest counts only when this device got it from the origin itself:
    // `Mesh::find_by_digest`.) Who relays a trusted signature does not matter.
    if !trusted {
        tracing::debug!(%peer, signer = %signer, %key, "offer signed by a stranger: ignored");
        return Ok(None);
    }
    if claim.size > inner.cache.options().max_object_size {
        return Ok(None);
    }
    // Freshness and storability are decided here, from the attested headers and fetch
    // time, never taken from the peer: with the shared-cache rules, so a response that
    // should never have been shared is refused.
    let fetched_at = UNIX_EPOCH + Duration::from_millis(claim.fetched_at_ms);
    let now = inner.cache.now();
    if fetched_at > now + Duration::from_secs(300) {
        return Err("attestation fetched in the future".into());
    }
    let mut res = http::Response::builder().status(claim.status);
    for (n, v) in &claim.headers {
        res = res.header(n.as_str(), v.as_slice());
    }
    let Ok(res) = res.body(()) else {
        return Err("attested headers do not parse".into());
    };
    let (rparts, _) = res.into_parts();
    let opts = PolicyOptions {
        shared: true,
        heuristic_fraction: inner.opts.heuristic_fraction,
    };
    let mut as_get = req.clone();
    as_get.method = http::Method::GET;
    let Storability::Store {
        policy,
        shareable: true,
        fresh_until,
    } = policy::storability(opts, &as_get, &rparts, fetched_at)
    else {
        tracing::info!(%peer, %key, "offer of a response that may not be shared: ignored");
        return Ok(None);
    };
    let now_ms = crate::unix_ms(now);
    let entry = Entry {
        id: 0,
        variant: claim.variant.clone(),
        vary: claim.vary.clone(),
        policy: *policy,
        status: claim.status,
        headers: claim.headers.clone(),
        hash: claim.hash,
        len: claim.size,
        stored_at_ms: now_ms,
        fresh_until_ms: crate::unix_ms(fresh_until),
        last_used_ms: now_ms,
        shareable: true,
        attestation: Some(bytes.to_vec()),
        head_map: Default::default(),
    };
    let stale = !matches!(
        policy::evaluate(&entry, req, now, inner.cache.options().shared),
        Verdict::Fresh
    );
    if stale && !allow_stale {
        return Ok(None);
    }
    Ok(Some(Candidate {
        peer,
        entry,
        stale,
        inline: None,
    }))
}

/// Fetches the body (verified against its hash as it streams), checks it, stores the
/// entry.
async fn fetch(inner: &Inner, key: &str, c: &Candidate) -> Result<Entry, String> {
    let hash = c.entry.hash;
    let cache = &inner.cache;
    if !cache.has_body(&hash, c.entry.len).await {
        cache.hold(&hash).await.map_err(|e| e.to_string())?;
        let result = transfer(inner, c).await;
        if let Err(e) = result {
            cache.unhold(&hash).await;
            return Err(e);
        }
    }
    let result = check_and_store(inner, key, c).await;
    cache.unhold(&hash).await;
    result
}

async fn transfer(inner: &Inner, c: &Candidate) -> Result<(), String> {
    let conn = peers::blobs_conn(inner, c.peer).await?;
    let store = inner.cache.blobs();
    let progress = store
        .remote()
        .fetch(conn, Hash::from_bytes(c.entry.hash))
        .stream();
    run(inner, c, progress).await
}

/// Drives a transfer from a peer: bounded by `fetch_idle_timeout` between progress
/// reports; bytes that do not match the hash ban the peer.
async fn run(
    inner: &Inner,
    c: &Candidate,
    progress: impl futures_util::Stream<Item = GetProgressItem>,
) -> Result<(), String> {
    let mut progress = std::pin::pin!(progress);
    let mut got = 0u64;
    let idle = inner.opts.fetch_idle_timeout;
    let started = std::time::Instant::now();
    loop {
        match tokio::time::timeout(idle, progress.next()).await {
            Err(_) => return Err(format!("no progress for {idle:?}")),
            Ok(None) => return Err("transfer ended without a result".into()),
            Ok(Some(GetProgressItem::Progress(n))) => got = n,
            Ok(Some(GetProgressItem::Done(_))) => break,
            Ok(Some(GetProgressItem::Error(e))) => {
                if matches!(&e, iroh_blobs::get::GetError::Decode { source, .. } if crate::stream::is_lie(source))
                {
                    peers::ban(
                        inner,
                        c.peer,
                        &format!("sent bytes that do not match the hash ({e})"),
                    );
                }
                inner.peers.add_taken(&c.peer, got);
                return Err(e.to_string());
            }
        }
    }
    inner.bump(&inner.counters.bytes_from_peers, got);
    inner.peers.add_taken(&c.peer, got);
    tracing::debug!(peer = %c.peer, bytes = got, elapsed = ?started.elapsed(), "body from peer");
    Ok(())
}

async fn check_and_store(inner: &Inner, key: &str, c: &Candidate) -> Result<Entry, String> {
    let cache = &inner.cache;
    if !cache.has_body(&c.entry.hash, c.entry.len).await {
        peers::ban(inner, c.peer, "the body's size is not the attested size");
        return Err("size mismatch".into());
    }
    cache
        .insert_entry(key, c.entry.clone())
        .await
        .map_err(|e| e.to_string())
}

/// Byte ranges of a peer's body, fetched (verified) into the local store without storing
/// an entry: a seek far into a video someone nearby holds moves only what is watched.
pub struct PartialBody {
    /// The entry as the peer attested it (not stored here; `id` is 0).
    pub entry: Entry,
    pub peer: String,
    /// The byte ranges fetched (rounded out to BLAKE3's 1 KiB chunks); only these may be
    /// read.
    pub ranges: Vec<std::ops::Range<u64>>,
    held: Held,
}

/// Keeps a partly fetched body from garbage collection while it is being served.
struct Held {
    cache: cache::Cache,
    hash: [u8; 32],
}

impl Drop for Held {
    fn drop(&mut self) {
        let (cache, hash) = (self.cache.clone(), self.hash);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { cache.unhold(&hash).await });
        }
    }
}

impl PartialBody {
    /// Streams `r` (which must lie within the fetched ranges), clipped exactly.
    pub fn read(
        &self,
        r: std::ops::Range<u64>,
    ) -> futures_util::stream::BoxStream<'static, Result<bytes::Bytes, PeerBodyError>> {
        if !self
            .ranges
            .iter()
            .any(|f| f.start <= r.start && r.end <= f.end)
        {
            let msg = format!("bytes {}..{} were not fetched", r.start, r.end);
            return futures_util::stream::once(async move { Err(PeerBodyError(msg)) }).boxed();
        }
        self.held
            .cache
            .partial_body(&self.held.hash, r)
            .map(|item| item.map_err(|e| PeerBodyError(e.to_string())))
            .boxed()
    }
}

impl Mesh {
    /// Like [`Mesh::find`], but fetches only the byte ranges `want(len)` picks for the
    /// body's length, and stores no entry. `None` when no peer has it or `want` picks
    /// nothing.
    pub async fn find_ranges(
        &self,
        key: &str,
        req: &request::Parts,
        want: impl Fn(u64) -> Vec<std::ops::Range<u64>>,
    ) -> Option<PartialBody> {
        use iroh_blobs::protocol::{ChunkRanges, ChunkRangesExt, GetRequest};
        let inner = &self.inner;
        let mut candidates = candidates(inner, key, req, false, false).await;
        candidates.sort_by_key(|c| c.stale);
        for c in candidates {
            if inner.peers.banned(&c.peer) {
                continue;
            }
            let ranges = want(c.entry.len);
            if ranges.is_empty() {
                return None;
            }
            let mut chunks = ChunkRanges::empty();
            for r in &ranges {
                chunks |= ChunkRanges::bytes(r.clone());
            }
            let hash = c.entry.hash;
            if inner.cache.hold(&hash).await.is_err() {
                return None;
            }
            let held = Held {
                cache: inner.cache.clone(),
                hash,
            };
            let store = inner.cache.blobs();
            let result = async {
                let conn = peers::blobs_conn(inner, c.peer).await?;
                let progress = store
                    .remote()
                    .execute_get(
                        conn,
                        GetRequest::blob_ranges(Hash::from_bytes(hash), chunks),
                    )
                    .stream();
                run(inner, &c, progress).await
            }
            .await;
            match result {
                Ok(()) => {
                    inner.bump(&inner.counters.peer_hits, 1);
                    return Some(PartialBody {
                        peer: c.peer.to_string(),
                        entry: c.entry,
                        ranges,
                        held,
                    });
                }
                Err(e) => tracing::info!(peer = %c.peer, %key, "ranges from peer failed: {e}"),
            }
        }
        None
    }
}
