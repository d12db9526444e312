//! The status page — a live dashboard — and `/status.json`. Admin clients get everything
//! (the mesh section with group tickets and QR codes, peer details and bans, learned
//! passthrough hosts, open connections); every other client gets a public summary: what the
//! cache holds and how it serves, with no secret, no peer identity and no other client's
//! address.
//!
//! The page is complete as the server renders it (it reads well without JavaScript); its
//! inline script (`dashboard.js`, styled by `dashboard.css`, both compiled in: the page
//! loads nothing else and works offline) then polls `/status.json` every 2 s, writes the new
//! figures into the elements it finds by id, and draws the bytes served per second from the
//! samples it collected (nothing is kept on the server for it). The script is the same for
//! everyone; it updates an admin section only when the answer has its figures, so a
//! passenger's page runs it on the public summary alone.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::{html_escape, size};
use crate::state::State;

/// The figures anyone may see.
#[derive(Serialize)]
struct Summary {
    requests: u64,
    hits: u64,
    misses: u64,
    errors: u64,
    bytes_to_clients: u64,
    uptime_secs: u64,
    stored_urls: u64,
    stored_variants: u64,
    stored_bytes: u64,
    max_bytes: u64,
    fills_in_progress: usize,
    evictions: u64,
    pass_through: bool,
    partial_objects: u64,
    partial_bytes: u64,
    bytes_from_cache: u64,
    bytes_from_peers: u64,
    bytes_from_origin: u64,
    peer_hits: u64,
    mesh: bool,
    mesh_peers_connected: usize,
    /// Requests answered, by where their body came from (see [`Source::of`]); the proxy's
    /// own pages (this one, polled by the dashboard, included) are none of them.
    answered_from_cache: u64,
    answered_from_peers: u64,
    answered_from_origin: u64,
    /// What did not cross the internet: `bytes_from_cache + bytes_from_peers`.
    bytes_saved: u64,
}

/// Where a response's body came from, by the access log's phase name (the same split as
/// the byte counters of `listen/edge.rs`, with strangers counted among the peers).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Source {
    Cache,
    Peers,
    Origin,
}

impl Source {
    fn of(phase: &str) -> Option<Source> {
        match phase {
            "hit" | "collapsed" | "stale-swr" | "stale-error" | "revalidated" => {
                Some(Source::Cache)
            }
            "peer" | "stranger" => Some(Source::Peers),
            "miss" | "stale-miss" | "bypass" => Some(Source::Origin),
            _ => None,
        }
    }
}

impl Summary {
    /// Requests answered without the internet (from the cache or nearby devices), as a
    /// share of those answered with a body from anywhere; `None` before the first.
    fn ratio(&self) -> Option<f64> {
        let without = self.answered_from_cache + self.answered_from_peers;
        let all = without + self.answered_from_origin;
        (all > 0).then(|| without as f64 / all as f64)
    }
}

/// What admin clients see on top of the [`Summary`].
#[derive(Serialize)]
struct Full {
    #[serde(flatten)]
    summary: Summary,
    connections_open: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_id: Option<String>,
    /// This device's ticket as the running mesh gives it (the ports actually bound).
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_ticket: Option<String>,
    /// `mesh.listen`, the sockets bound, and whether its port was taken (then the bound
    /// port is another one).
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_bound: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_port_taken: Option<bool>,
    /// Why the mesh is off although it is configured on (it could not start).
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_peers_known: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_bans: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_refused: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_bytes_to_peers: Option<u64>,
    /// The open mesh (strangers): its id and ticket (new at every start), strangers
    /// known and connected, banned addresses, tags strangers may ask for.
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_open_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_open_ticket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_open_bound: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_open_port_taken: Option<bool>,
    /// Why the open mesh is off although `mesh.open` asks for it (it could not bind).
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_open_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_strangers_known: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_strangers_connected: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_address_bans: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_open_tags: Option<usize>,
    /// Lookups sent to and answered for peers; misses no peer's catalog matched (so no
    /// peer was asked); peers whose catalog is here and the keys they list.
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_lookups_sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_lookups_answered: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_lookups_skipped: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_catalogs: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_catalog_keys: Option<usize>,
    /// Feed sync: the budget, and per feed what is here and from whom.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    sync: Option<SyncStatus>,
    shared_files_bytes: u64,
    learned_passthrough: Vec<Learned>,
    /// The peer table and the bans in force, as the status page lists them (last, so that
    /// a figure's first occurrence in the text is the top-level one).
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_peer_table: Option<Vec<PeerRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_ban_list: Option<Vec<BanRow>>,
}

/// A row of the peer table.
#[derive(Serialize)]
struct PeerRow {
    peer: String,
    addrs: Vec<String>,
    found_by: &'static str,
    state: String,
    groups: Vec<String>,
    given: u64,
    taken: u64,
    bans: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    banned_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ban_reason: Option<String>,
}

/// A ban in force (a peer or a stranger), with its reason.
#[derive(Serialize)]
struct BanRow {
    peer: String,
    reason: String,
    secs_left: u64,
}

/// Feed sync's section of `/status.json`.
#[derive(Serialize)]
struct SyncStatus {
    sync_budget: u64,
    sync_used_today: u64,
    sync_fetched: u64,
    sync_failed: u64,
    sync_feeds: Vec<crate::state::FeedStatus>,
}

impl SyncStatus {
    fn of(f: &crate::state::SyncFigures) -> SyncStatus {
        SyncStatus {
            sync_budget: f.budget,
            sync_used_today: f.used_today.load(Ordering::Relaxed),
            sync_fetched: f.fetched.load(Ordering::Relaxed),
            sync_failed: f.failed.load(Ordering::Relaxed),
            sync_feeds: f
                .feeds
                .iter()
                .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).clone())
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct Learned {
    client: String,
    host: String,
    until_unix: u64,
}

async fn summary(state: &State) -> Summary {
    let c = &state.counters;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let stats = state.cache.stats().await.unwrap_or_default();
    let mut answered = [0u64; 3];
    for (phase, count) in c.outcomes.snapshot() {
        if let Some(source) = Source::of(phase) {
            answered[source as usize] += count;
        }
    }
    let (from_cache, from_peers) = (n(&c.bytes_from_cache), n(&c.bytes_from_peers));
    Summary {
        requests: n(&c.requests),
        hits: n(&c.hits),
        misses: n(&c.misses),
        errors: n(&c.errors),
        bytes_to_clients: n(&c.bytes_to_clients),
        uptime_secs: state.started.elapsed().as_secs(),
        stored_urls: stats.urls,
        stored_variants: stats.variants,
        stored_bytes: stats.bytes,
        max_bytes: stats.max_bytes,
        fills_in_progress: stats.fills_in_progress,
        evictions: stats.evictions,
        pass_through: stats.pass_through,
        partial_objects: stats.partial_objects,
        partial_bytes: stats.partial_bytes,
        bytes_from_cache: from_cache,
        bytes_from_peers: from_peers,
        bytes_from_origin: n(&c.bytes_from_origin),
        peer_hits: n(&c.peer_hits),
        mesh: state.mesh.is_some(),
        mesh_peers_connected: state.mesh.as_ref().map_or(0, |m| m.connected_peers()),
        answered_from_cache: answered[Source::Cache as usize],
        answered_from_peers: answered[Source::Peers as usize],
        answered_from_origin: answered[Source::Origin as usize],
        bytes_saved: from_cache + from_peers,
    }
}

async fn full(state: &State) -> Full {
    let mesh = state.mesh.as_ref();
    let m = mesh.map(|m| m.counters());
    let open = mesh.and_then(|m| m.open_status());
    let listening = mesh.map(|m| m.listening());
    let strings = |v: &[std::net::SocketAddr]| v.iter().map(|a| a.to_string()).collect();
    Full {
        summary: summary(state).await,
        connections_open: state.connections(),
        mesh_id: mesh.map(|m| m.id()),
        mesh_ticket: mesh.map(|m| m.ticket()),
        mesh_listen: listening.as_ref().map(|l| l.configured.to_string()),
        mesh_bound: listening.as_ref().map(|l| strings(&l.bound)),
        mesh_port_taken: listening.as_ref().map(|l| l.port_taken),
        mesh_error: state.mesh_error.clone(),
        mesh_peers_known: mesh.map(|m| m.known_peers()),
        mesh_bans: m.map(|m| m.bans.load(Ordering::Relaxed)),
        mesh_refused: m.map(|m| m.refused.load(Ordering::Relaxed)),
        mesh_bytes_to_peers: m.map(|m| m.bytes_to_peers.load(Ordering::Relaxed)),
        mesh_open_id: open.as_ref().map(|o| o.id.clone()),
        mesh_open_ticket: open.as_ref().map(|o| o.ticket.clone()),
        mesh_open_bound: open.as_ref().map(|o| strings(&o.listening.bound)),
        mesh_open_port_taken: open.as_ref().map(|o| o.listening.port_taken),
        mesh_open_error: mesh.and_then(|m| m.open_error()),
        mesh_strangers_known: open.as_ref().map(|o| o.strangers_known),
        mesh_strangers_connected: open.as_ref().map(|o| o.strangers_connected),
        mesh_address_bans: open.as_ref().map(|o| o.addr_bans),
        mesh_open_tags: open.as_ref().map(|o| o.tags),
        mesh_lookups_sent: m.map(|m| m.lookups_sent.load(Ordering::Relaxed)),
        mesh_lookups_answered: m.map(|m| m.lookups_answered.load(Ordering::Relaxed)),
        mesh_lookups_skipped: m.map(|m| m.lookups_skipped.load(Ordering::Relaxed)),
        mesh_catalogs: mesh.map(|m| m.catalog_figures().0),
        mesh_catalog_keys: mesh.map(|m| m.catalog_figures().1),
        sync: state.sync.as_deref().map(SyncStatus::of),
        shared_files_bytes: match mesh {
            Some(m) => m.shared_bytes().await,
            None => 0,
        },
        learned_passthrough: state
            .tls
            .as_ref()
            .map(|t| t.learned())
            .unwrap_or_default()
            .into_iter()
            .map(|(client, host, until_unix)| Learned {
                client: client.to_string(),
                host,
                until_unix,
            })
            .collect(),
        mesh_peer_table: mesh.map(|m| {
            m.peer_status()
                .into_iter()
                .map(|p| PeerRow {
                    peer: p.id,
                    addrs: p.addrs.iter().map(|a| a.to_string()).collect(),
                    found_by: p.source,
                    state: p.state,
                    groups: p.groups,
                    given: p.given,
                    taken: p.taken,
                    bans: p.bans,
                    // As the table says it: a ban in force, with its reason.
                    banned_secs: p.ban_reason.as_ref().and(p.banned_for.map(|d| d.as_secs())),
                    ban_reason: p.banned_for.and(p.ban_reason),
                })
                .collect()
        }),
        mesh_ban_list: mesh.map(|m| {
            m.bans()
                .into_iter()
                .take(MAX_BANS_SHOWN)
                .map(|(peer, reason, left)| BanRow {
                    peer,
                    reason,
                    secs_left: left.as_secs(),
                })
                .collect()
        }),
    }
}

/// Bans listed (the longest first); the mesh remembers up to 4096.
const MAX_BANS_SHOWN: usize = 50;

/// `/status.json`.
pub(super) async fn json(state: &State, admin: bool) -> String {
    let text = if admin {
        serde_json::to_string(&full(state).await)
    } else {
        serde_json::to_string(&summary(state).await)
    };
    text.unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string())) + "\n"
}

/// The status page: the dashboard (cards, the chart, where the bytes came from), every
/// figure in a table, then the admin sections or the public mesh line, and the script.
pub(super) async fn html(state: &State, admin: bool) -> String {
    let f = summary(state).await;
    let mut s = String::with_capacity(32 << 10);
    let _ = write!(
        s,
        "<!doctype html><html lang=en><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <title>meshcache</title><style>{CSS}</style>\
         <header><h1>meshcache</h1><span id=live>figures as of loading this page</span></header>\
         <p>Caching HTTP proxy on <code>{l}</code>. Set it as your HTTP proxy, or try <code>curl -x http://{l} http://example.com/</code>.</p>",
        l = state.listen
    );
    dashboard_html(&f, &mut s);
    figures_html(&f, &mut s);
    if admin {
        let _ = write!(
            s,
            "<p>connections open: <span id=connections>{}</span></p>",
            state.connections()
        );
        super::mesh::status_html(state, &mut s);
        sync_html(state, &mut s);
        if let Some(tls) = state.tls.as_ref() {
            let learned = tls.learned();
            if !learned.is_empty() {
                s.push_str(
                    "<h2>Tunnelled blindly for a client that refused our certificate</h2><ul>",
                );
                for (client, host, until) in learned {
                    let _ = write!(
                        s,
                        "<li><code>{}</code> for <code>{client}</code> until {}</li>",
                        html_escape(&host),
                        httpdate::fmt_http_date(
                            std::time::UNIX_EPOCH + std::time::Duration::from_secs(until)
                        )
                    );
                }
                s.push_str("</ul>");
            }
        }
    } else {
        let _ = write!(
            s,
            "<h2>Mesh</h2><p>{}</p>",
            match state.mesh.as_ref() {
                Some(_) => format!("On: {} nearby devices connected.", f.mesh_peers_connected),
                None if state.mesh_error.is_some() => "Off: it could not start.".into(),
                None => "Off.".into(),
            }
        );
    }
    if state.tls.is_some() {
        s.push_str(super::onboarding::INSTALL);
    }
    let _ = writeln!(
        s,
        "<p><a href=\"/status.json\">status.json</a> · <a href=\"/proxy.pac\">proxy.pac</a></p>\
         <script>{SCRIPT}</script>"
    );
    s
}

/// The dashboard's style and script (see the module's documentation).
const CSS: &str = include_str!("dashboard.css");
const SCRIPT: &str = include_str!("dashboard.js");

/// The top of the page: four cards (answered without the internet, bytes saved, stored,
/// nearby devices), the chart (empty until the script has samples; the figures it starts
/// from are its data attributes) and where the bytes came from as a stacked bar. Every
/// element the script writes to has an id.
fn dashboard_html(f: &Summary, s: &mut String) {
    let answered = f.answered_from_cache + f.answered_from_peers;
    let nearby = match f.mesh {
        true => f.mesh_peers_connected.to_string(),
        false => "off".into(),
    };
    let _ = write!(
        s,
        "<section class=cards>\
         <div class=card><h3>answered without the internet</h3><b id=ratio>{}</b>\
         <small><span id=answered>{answered}</span> of <span id=proxied>{}</span> requests, from the cache or nearby devices</small></div>\
         <div class=card><h3>bytes saved</h3><b id=saved>{}</b>\
         <small>did not cross the internet; <span id=internet>{}</span> did</small></div>\
         <div class=card><h3>stored</h3><b id=stored>{}</b>\
         <small>of <span id=limit>{}</span> · <span id=urls>{}</span> URLs</small>\
         <div class=meter><span id=meter style=\"width:{:.1}%\"></span></div></div>\
         <div class=card><h3>nearby devices</h3><b id=nearby>{}</b><small id=nearby-note>{}</small></div>\
         </section>",
        percent(f.ratio()),
        answered + f.answered_from_origin,
        size(f.bytes_saved),
        size(f.bytes_from_origin),
        size(f.stored_bytes),
        size(f.max_bytes),
        f.stored_urls,
        100.0 * share(f.stored_bytes, f.max_bytes),
        nearby,
        nearby_note(f),
    );
    let _ = write!(
        s,
        "<section class=panel><h2>Bytes served per second</h2>\
         <svg id=chart viewBox=\"0 0 600 150\" preserveAspectRatio=none role=img \
         aria-label=\"bytes served per second, by where they came from\" \
         data-cache={} data-peers={} data-origin={}>\
         <line class=grid x1=0 y1=75 x2=600 y2=75 /><line class=grid x1=0 y1=149.5 x2=600 y2=149.5 />\
         <path id=area-cache class=cache /><path id=area-peers class=peers /><path id=area-origin class=origin /></svg>\
         <div class=axis><span id=chart-from>the chart fills in while this page is open</span>\
         <span id=chart-peak></span><span>now</span></div>\
         <ul class=legend><li><i class=cache></i>cache</li><li><i class=peers></i>nearby devices</li>\
         <li><i class=origin></i>internet (origin)</li></ul></section>",
        f.bytes_from_cache, f.bytes_from_peers, f.bytes_from_origin
    );
    let total = f.bytes_from_cache + f.bytes_from_peers + f.bytes_from_origin;
    s.push_str("<section><h2>Where the bytes came from</h2><div class=bar>");
    for (id, n) in [
        ("cache", f.bytes_from_cache),
        ("peers", f.bytes_from_peers),
        ("origin", f.bytes_from_origin),
    ] {
        let _ = write!(
            s,
            "<span id=bar-{id} class={id} style=\"width:{:.1}%\"></span>",
            100.0 * share(n, total)
        );
    }
    let pct = |n| percent((total > 0).then(|| share(n, total)));
    let _ = write!(
        s,
        "</div><p>cache <b id=from-cache>{}</b> (<span id=pct-cache>{}</span>) · \
         nearby devices <b id=from-peers>{}</b> (<span id=pct-peers>{}</span>) · \
         origin <b id=from-origin>{}</b> (<span id=pct-origin>{}</span>)</p></section>",
        size(f.bytes_from_cache),
        pct(f.bytes_from_cache),
        size(f.bytes_from_peers),
        pct(f.bytes_from_peers),
        size(f.bytes_from_origin),
        pct(f.bytes_from_origin),
    );
    // Empty unless the disk is full (the script fills it in when that happens).
    s.push_str("<p id=pass-through class=warn");
    if f.pass_through {
        s.push_str(">The disk is full: caching is suspended, requests pass through.</p>");
    } else {
        s.push_str(" hidden></p>");
    }
}

/// Under the number of nearby devices.
fn nearby_note(f: &Summary) -> String {
    if f.mesh {
        format!("connected · {} bodies from them", f.peer_hits)
    } else {
        "the mesh is off".into()
    }
}

/// Every figure of the summary, in a table.
fn figures_html(f: &Summary, s: &mut String) {
    let rows: [(&str, &str, String); 13] = [
        (
            "requests, this page's included",
            "f-requests",
            f.requests.to_string(),
        ),
        (
            "answered from the cache / nearby devices / the internet",
            "f-by-source",
            format!(
                "{} / {} / {}",
                f.answered_from_cache, f.answered_from_peers, f.answered_from_origin
            ),
        ),
        (
            "answered without the internet",
            "f-ratio",
            percent(f.ratio()),
        ),
        ("hits", "f-hits", f.hits.to_string()),
        ("misses", "f-misses", f.misses.to_string()),
        ("errors (5xx)", "f-errors", f.errors.to_string()),
        ("sent to clients", "f-sent", size(f.bytes_to_clients)),
        (
            "stored URLs / variants",
            "f-variants",
            format!("{} / {}", f.stored_urls, f.stored_variants),
        ),
        (
            "stored / limit",
            "f-stored",
            format!("{} / {}", size(f.stored_bytes), size(f.max_bytes)),
        ),
        (
            "fills in progress",
            "f-fills",
            f.fills_in_progress.to_string(),
        ),
        (
            "partial objects (seeks kept)",
            "f-partial",
            format!("{} / {}", f.partial_objects, size(f.partial_bytes)),
        ),
        ("evictions", "f-evictions", f.evictions.to_string()),
        ("uptime", "f-uptime", duration(f.uptime_secs)),
    ];
    s.push_str("<h2>Figures</h2><table class=figures>");
    for (label, id, v) in rows {
        let _ = write!(s, "<tr><th>{label}</th><td id={id}>{v}</td></tr>");
    }
    s.push_str("</table>");
}

/// `part / whole`, 0 for nothing.
fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// A share as a whole percentage, "–" when there is none yet.
fn percent(share: Option<f64>) -> String {
    match share {
        Some(r) => format!("{:.0}%", 100.0 * r),
        None => "–".into(),
    }
}

/// A duration as people say it: `45 s`, `12 min 5 s`, `3 h 12 min`, `2 d 4 h`.
fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, _) => format!("{m} min {s} s"),
        (0, _, _) => format!("{h} h {m} min"),
        _ => format!("{d} d {h} h"),
    }
}

/// The feed sync section: per feed, what is here, from whom, and whether it is all here.
fn sync_html(state: &State, s: &mut String) {
    let Some(figures) = state.sync.as_deref() else {
        return;
    };
    let st = SyncStatus::of(figures);
    let _ = write!(
        s,
        "<h2>Feeds synced from nearby</h2><p id=sync-budget>budget today: {} of {} used · {} objects prefetched · {} failed</p><table id=feeds><tr><th>feed</th><th>items</th><th>media here</th><th>bytes</th><th>from</th><th>last</th><th>state</th></tr>",
        size(st.sync_used_today),
        size(st.sync_budget),
        st.sync_fetched,
        st.sync_failed
    );
    for f in &st.sync_feeds {
        let when = f
            .synced_at_unix_ms
            .map(|ms| {
                httpdate::fmt_http_date(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
                )
            })
            .unwrap_or_else(|| "never".into());
        let peers: Vec<String> = f
            .peers
            .iter()
            .map(|p| p.chars().take(10).collect())
            .collect();
        let state = match (&f.last_error, f.up_to_date) {
            (_, true) => "up to date from nearby".to_string(),
            (Some(e), false) => format!("error: {}", html_escape(e)),
            (None, false) => "waiting for a neighbour that has it".to_string(),
        };
        let _ = write!(
            s,
            "<tr><td><code>{}</code></td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td><td>{when}</td><td>{state}</td></tr>",
            html_escape(&f.url),
            f.items_newest,
            f.media_held,
            f.media_wanted,
            size(f.bytes),
            html_escape(&peers.join(", ")),
        );
    }
    s.push_str("</table>");
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_as_people_read_them() {
        assert_eq!(super::size(512), "512 B");
        assert_eq!(super::size(1536), "1.5 KiB");
        assert_eq!(super::size(10 << 30), "10.0 GiB");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(super::duration(45), "45 s");
        assert_eq!(super::duration(12 * 60 + 5), "12 min 5 s");
        assert_eq!(super::duration(3 * 3600 + 12 * 60 + 9), "3 h 12 min");
        assert_eq!(super::duration(2 * 86400 + 4 * 3600 + 1), "2 d 4 h");
    }

    #[test]
    fn every_phase_that_serves_a_body_has_one_source() {
        use super::Source;
        for p in [
            "hit",
            "collapsed",
            "stale-swr",
            "stale-error",
            "revalidated",
        ] {
            assert_eq!(Source::of(p), Some(Source::Cache), "{p}");
        }
        for p in ["peer", "stranger"] {
            assert_eq!(Source::of(p), Some(Source::Peers), "{p}");
        }
        for p in ["miss", "stale-miss", "bypass"] {
            assert_eq!(Source::of(p), Some(Source::Origin), "{p}");
        }
        assert_eq!(Source::of("local"), None, "the proxy's own pages");
    }
}
