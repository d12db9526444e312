//! Requests for the proxy itself (origin-form, or `http://meshcache.local/`): a small
//! status page instead of an error.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, StatusCode};
use hyper::body::Incoming;

use crate::flow::{full, Outcome};
use crate::headers::Phase;
use crate::respond::build;
use crate::state::State;

/// The name under which the proxy answers for itself.
pub const LOCAL_HOST: &str = "meshcache.local";

/// True for origin-form requests (sent to the proxy as if it were a server) and for the
/// proxy's own name.
pub fn is_for_us<B>(_state: &State, req: &Request<B>) -> bool {
    if req.method() == http::Method::CONNECT {
        return false;
    }
    match req.uri().host() {
        None => true,
        Some(h) => h.eq_ignore_ascii_case(LOCAL_HOST),
    }
}

pub async fn handle(state: &Arc<State>, req: Request<Incoming>) -> Outcome {
    let path = req.uri().path();
    let (status, ctype, body) = match path {
        "/" | "/status" => (
            StatusCode::OK,
            "text/html; charset=utf-8",
            status_html(state).await,
        ),
        "/status.json" => (StatusCode::OK, "application/json", status_json(state).await),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            format!(
                "meshcache is an HTTP proxy: set it as your proxy ({}), or see / for its status\n",
                state.listen
            ),
        ),
    };
    let mut h = http::HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Outcome {
        response: build(status, h, full(body)),
        phase: Phase::Local("status-page"),
        fwd_status: None,
    }
}

struct Figures {
    stats: cache::Stats,
    requests: u64,
    hits: u64,
    misses: u64,
    bytes: u64,
    errors: u64,
    uptime: u64,
}

async fn figures(state: &State) -> Figures {
    let c = &state.counters;
    Figures {
        stats: state.cache.stats().await.unwrap_or_default(),
        requests: c.requests.load(Ordering::Relaxed),
        hits: c.hits.load(Ordering::Relaxed),
        misses: c.misses.load(Ordering::Relaxed),
        bytes: c.bytes_to_clients.load(Ordering::Relaxed),
        errors: c.errors.load(Ordering::Relaxed),
        uptime: state.started.elapsed().as_secs(),
    }
}

async fn status_json(state: &State) -> String {
    let f = figures(state).await;
    format!(
        "{{\"requests\":{},\"hits\":{},\"misses\":{},\"errors\":{},\"bytes_to_clients\":{},\"uptime_secs\":{},\"stored_urls\":{},\"stored_variants\":{},\"stored_bytes\":{},\"max_bytes\":{},\"fills_in_progress\":{},\"evictions\":{},\"pass_through\":{}}}\n",
        f.requests, f.hits, f.misses, f.errors, f.bytes, f.uptime, f.stats.urls, f.stats.variants, f.stats.bytes, f.stats.max_bytes, f.stats.fills_in_progress, f.stats.evictions, f.stats.pass_through
    )
}

async fn status_html(state: &State) -> String {
    let f = figures(state).await;
    let mut s = String::from(
        "<!doctype html><meta charset=utf-8><title>meshcache</title><h1>meshcache</h1>",
    );
    let _ = write!(
        s,
        "<p>Caching HTTP proxy on <code>{}</code>. Set it as your HTTP proxy, or try <code>curl -x http://{} http://example.com/</code>.</p><table>",
        state.listen, state.listen
    );
    let rows: [(&str, String); 10] = [
        ("requests", f.requests.to_string()),
        ("hits", f.hits.to_string()),
        ("misses", f.misses.to_string()),
        ("errors (5xx)", f.errors.to_string()),
        ("bytes sent to clients", f.bytes.to_string()),
        (
            "stored URLs / variants",
            format!("{} / {}", f.stats.urls, f.stats.variants),
        ),
        (
            "stored bytes / limit",
            format!("{} / {}", f.stats.bytes, f.stats.max_bytes),
        ),
        ("fills in progress", f.stats.fills_in_progress.to_string()),
        ("evictions", f.stats.evictions.to_string()),
        ("uptime (s)", f.uptime.to_string()),
    ];
    for (k, v) in rows {
        let _ = write!(s, "<tr><th align=left>{k}</th><td>{v}</td></tr>");
    }
    s.push_str("</table>");
    if f.stats.pass_through {
        s.push_str("<p><b>The disk is full: caching is suspended, requests pass through.</b></p>");
    }
    s.push_str("<p><a href=\"/status.json\">status.json</a></p>\n");
    s
}
