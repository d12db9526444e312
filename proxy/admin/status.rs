//! The status page and `/status.json`. Admin clients get everything (the mesh section with
//! group tickets and QR codes, peer details and bans, learned passthrough hosts, open
//! connections); every other client gets a public summary: what the cache holds and how it
//! serves, with no secret, no peer identity and no other client's address.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::html_escape;
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
    bytes_from_cache: u64,
    bytes_from_peers: u64,
    bytes_from_origin: u64,
    peer_hits: u64,
    mesh: bool,
    mesh_peers_connected: usize,
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
        bytes_from_cache: n(&c.bytes_from_cache),
        bytes_from_peers: n(&c.bytes_from_peers),
        bytes_from_origin: n(&c.bytes_from_origin),
        peer_hits: n(&c.peer_hits),
        mesh: state.mesh.is_some(),
        mesh_peers_connected: state.mesh.as_ref().map_or(0, |m| m.connected_peers()),
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
    }
}

/// `/status.json`.
pub(super) async fn json(state: &State, admin: bool) -> String {
    let text = if admin {
        serde_json::to_string(&full(state).await)
    } else {
        serde_json::to_string(&summary(state).await)
    };
    text.unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string())) + "\n"
}

/// Bytes in binary units, for people.
pub(super) fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The status page.
pub(super) async fn html(state: &State, admin: bool) -> String {
    let f = summary(state).await;
    let mut s = String::from(
        "<!doctype html><meta charset=utf-8><title>meshcache</title><h1>meshcache</h1>",
    );
    let _ = write!(
        s,
        "<p>Caching HTTP proxy on <code>{}</code>. Set it as your HTTP proxy, or try <code>curl -x http://{} http://example.com/</code>.</p><table>",
        state.listen, state.listen
    );
    let ratio = if f.requests == 0 {
        "–".to_string()
    } else {
        format!(
            "{:.0}%",
            100.0 * (f.hits + f.peer_hits) as f64 / f.requests as f64
        )
    };
    let rows: [(&str, String); 11] = [
        ("requests", f.requests.to_string()),
        ("hits", f.hits.to_string()),
        ("misses", f.misses.to_string()),
        ("answered without the internet", ratio),
        ("errors (5xx)", f.errors.to_string()),
        ("sent to clients", size(f.bytes_to_clients)),
        (
            "stored URLs / variants",
            format!("{} / {}", f.stored_urls, f.stored_variants),
        ),
        (
            "stored / limit",
            format!("{} / {}", size(f.stored_bytes), size(f.max_bytes)),
        ),
        ("fills in progress", f.fills_in_progress.to_string()),
        ("evictions", f.evictions.to_string()),
        ("uptime (s)", f.uptime_secs.to_string()),
    ];
    for (k, v) in rows {
        let _ = write!(s, "<tr><th align=left>{k}</th><td>{v}</td></tr>");
    }
    s.push_str("</table>");
    let total = (f.bytes_from_cache + f.bytes_from_peers + f.bytes_from_origin).max(1) as f64;
    let _ = write!(
        s,
        "<h2>Where the bytes came from</h2><p>cache {} ({:.0}%) · nearby devices {} ({:.0}%) · origin {} ({:.0}%)</p>",
        size(f.bytes_from_cache),
        100.0 * f.bytes_from_cache as f64 / total,
        size(f.bytes_from_peers),
        100.0 * f.bytes_from_peers as f64 / total,
        size(f.bytes_from_origin),
        100.0 * f.bytes_from_origin as f64 / total
    );
    if f.pass_through {
        s.push_str("<p><b>The disk is full: caching is suspended, requests pass through.</b></p>");
    }
    if admin {
        let _ = write!(s, "<p>connections open: {}</p>", state.connections());
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
    s.push_str(
        "<p><a href=\"/status.json\">status.json</a> · <a href=\"/proxy.pac\">proxy.pac</a></p>\n",
    );
    s
}

/// The feed sync section: per feed, what is here, from whom, and whether it is all here.
fn sync_html(state: &State, s: &mut String) {
    let Some(figures) = state.sync.as_deref() else {
        return;
    };
    let st = SyncStatus::of(figures);
    let _ = write!(
        s,
        "<h2>Feeds synced from nearby</h2><p>budget today: {} of {} used · {} objects prefetched · {} failed</p><table><tr><th>feed</th><th>items</th><th>media here</th><th>bytes</th><th>from</th><th>last</th><th>state</th></tr>",
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
}
