//! `/metrics`, for admin clients: the Prometheus text format (version 0.0.4), encoded by
//! `prometheus-client` from a registry built at each scrape. Figures are read where the
//! status page reads them — the counters in `state.rs`, the cache's `Stats`, the mesh's
//! counters and peer table, feed sync's figures — so nothing is counted twice; only the
//! requests by outcome (`state::Outcomes`) and the latency histograms (`state::Latency`)
//! are counted for this page. Mesh metrics appear when the mesh runs, feed sync's when
//! feeds are subscribed to.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{prometheus_text, EncodeGaugeValue, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::state::{State, SyncFigures};

/// The `Content-Type` of the Prometheus text format.
pub(super) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The page: every metric, named `meshcache_…`.
pub(super) async fn text(state: &State) -> Result<String, std::fmt::Error> {
    let mut r = Registry::with_prefix("meshcache");
    clients(state, &mut r);
    store(state, &mut r).await;
    if let Some(mesh) = state.mesh.as_ref() {
        nearby(mesh, &mut r);
    }
    if let Some(figures) = state.sync.as_deref() {
        sync(figures, &mut r);
    }
    let mut out = String::new();
    prometheus_text::encode(&mut out, &r)?;
    Ok(out)
}

fn n(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// A counter: the registry adds `_total` to its name.
fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    r.register(name, help, ConstCounter::new(v));
}

fn gauge<N: EncodeGaugeValue + Debug + Send + Sync + 'static>(
    r: &mut Registry,
    name: &str,
    help: &str,
    v: N,
) {
    r.register(name, help, ConstGauge::new(v));
}

/// One metric per value of a label, in the order given (none: the metric is left out).
#[derive(Debug)]
struct ByLabel<M> {
    label: &'static str,
    series: Vec<(String, M)>,
}

impl<M> ByLabel<M> {
    fn new<V: Into<String>>(label: &'static str, series: impl IntoIterator<Item = (V, M)>) -> Self {
        ByLabel {
            label,
            series: series.into_iter().map(|(v, m)| (v.into(), m)).collect(),
        }
    }
}

impl<M: EncodeMetric + TypedMetric> EncodeMetric for ByLabel<M> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (value, metric) in &self.series {
            let labels = [(self.label, value.as_str())];
            metric.encode(encoder.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }

    fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

/// What clients asked and got, and how long the origin and the peers took.
fn clients(state: &State, r: &mut Registry) {
    let c = &state.counters;
    r.register(
        "requests",
        "Requests by how they were answered: the access log's cache phase (hit, collapsed, miss, stale-miss, revalidated, stale-swr, stale-error, peer, stranger, bypass, local)",
        ByLabel::new(
            "outcome",
            c.outcomes
                .snapshot()
                .into_iter()
                .map(|(phase, v)| (phase, ConstCounter::new(v))),
        ),
    );
    r.register(
        "served_bytes",
        "Response body bytes sent to clients, by where the body came from (cache: hits and revalidations; peers: nearby devices; origin: misses and pass-through)",
        ByLabel::new(
            "source",
            [
                ("cache", ConstCounter::new(n(&c.bytes_from_cache))),
                ("peers", ConstCounter::new(n(&c.bytes_from_peers))),
                ("origin", ConstCounter::new(n(&c.bytes_from_origin))),
            ],
        ),
    );
    counter(
        r,
        "server_errors",
        "Responses to clients with a 5xx status",
        n(&c.errors),
    );
    gauge(
        r,
        "connections_open",
        "Client connections open now, tunnels included",
        state.connections() as u64,
    );
    let l = &state.latency;
    r.register(
        "origin_response_seconds",
        "Time from sending a fill's request (a miss or a revalidation) to the origin to its response head",
        l.origin.clone(),
    );
    r.register(
        "peer_lookup_seconds",
        "Time a miss spent asking nearby devices: until a peer's body was on its way (result=found) or no peer had it (result=none)",
        ByLabel::new(
            "result",
            [
                ("found", l.peer_found.clone()),
                ("none", l.peer_none.clone()),
            ],
        ),
    );
}

/// What the store holds (the figures `/status.json` shows).
async fn store(state: &State, r: &mut Registry) {
    let s = match state.cache.stats().await {
        Ok(s) => s,
        Err(e) => {
            // The store's figures are left out; the rest of the page still helps.
            tracing::warn!("metrics: the store's figures: {e}");
            return;
        }
    };
    gauge(
        r,
        "fills_in_progress",
        "Downloads into the cache under way (from the origin or from peers)",
        s.fills_in_progress as u64,
    );
    gauge(r, "store_bytes", "Bytes of bodies stored", s.bytes);
    gauge(
        r,
        "store_max_bytes",
        "The store's limit (cache.max_size): beyond it the least recently used entries are evicted",
        s.max_bytes,
    );
    gauge(
        r,
        "store_entries",
        "Entries stored (one per URL and variant)",
        s.variants,
    );
    gauge(r, "store_urls", "URLs stored", s.urls);
    gauge(
        r,
        "partial_objects",
        "Partial objects: byte ranges of a URL held without the whole (seeks into media)",
        s.partial_objects,
    );
    gauge(
        r,
        "partial_bytes",
        "Bytes held by partial objects",
        s.partial_bytes,
    );
    counter(
        r,
        "evictions",
        "Entries evicted to keep the store under its limit",
        s.evictions,
    );
    gauge(
        r,
        "pass_through",
        "1 while the disk is too full to store anything (requests pass through), else 0",
        u64::from(s.pass_through),
    );
}

/// Nearby devices (the figures of the status page's mesh section).
fn nearby(mesh: &mesh::Mesh, r: &mut Registry) {
    let c = mesh.counters();
    gauge(
        r,
        "mesh_peers_connected",
        "Trusted peers (group members, friends) connected now",
        mesh.connected_peers() as u64,
    );
    gauge(
        r,
        "mesh_peers_known",
        "Trusted peers in the peer table, connected or not",
        mesh.known_peers() as u64,
    );
    counter(
        r,
        "mesh_bans",
        "Peers and strangers banned (a lie, bytes that did not verify), since start",
        n(&c.bans),
    );
    gauge(
        r,
        "mesh_bans_active",
        "Bans in force now, peers and strangers",
        mesh.bans().len() as u64,
    );
    counter(
        r,
        "mesh_sent_bytes",
        "Body bytes given to peers",
        n(&c.bytes_to_peers),
    );
    counter(
        r,
        "mesh_received_bytes",
        "Body bytes taken from peers (client misses and feed sync)",
        n(&c.bytes_from_peers),
    );
    counter(
        r,
        "mesh_lookups_sent",
        "Lookup messages sent to peers",
        n(&c.lookups_sent),
    );
    counter(
        r,
        "mesh_lookups_answered",
        "Lookups answered for peers",
        n(&c.lookups_answered),
    );
    if let Some(open) = mesh.open_status() {
        gauge(
            r,
            "mesh_strangers_connected",
            "Strangers (the open mesh) connected now",
            open.strangers_connected as u64,
        );
    }
}

/// Feed sync's progress (the figures of the status page's feed section).
fn sync(f: &SyncFigures, r: &mut Registry) {
    gauge(
        r,
        "sync_budget_bytes",
        "Feed sync's daily budget (sync.budget)",
        f.budget,
    );
    gauge(
        r,
        "sync_used_today_bytes",
        "Bytes of the budget used today",
        n(&f.used_today),
    );
    counter(
        r,
        "sync_fetched",
        "Objects prefetched for subscribed feeds",
        n(&f.fetched),
    );
    counter(r, "sync_failed", "Prefetches that failed", n(&f.failed));
    let feeds: Vec<crate::state::FeedStatus> = f
        .feeds
        .iter()
        .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .collect();
    let per_feed = |value: fn(&crate::state::FeedStatus) -> u64| {
        ByLabel::new(
            "feed",
            feeds
                .iter()
                .map(|s| (s.url.clone(), ConstGauge::new(value(s)))),
        )
    };
    r.register(
        "sync_feed_media_wanted",
        "Media of the newest items of a feed that its settings admit",
        per_feed(|s| s.media_wanted),
    );
    r.register(
        "sync_feed_media_held",
        "Of those, media held here",
        per_feed(|s| s.media_held),
    );
    r.register(
        "sync_feed_bytes",
        "Bytes of a feed's document and media held here",
        per_feed(|s| s.bytes),
    );
    r.register(
        "sync_feed_up_to_date",
        "1 when a feed is up to date with what connected peers hold, else 0",
        per_feed(|s| u64::from(s.up_to_date)),
    );
}
