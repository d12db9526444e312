//! Requests for the proxy itself (origin-form, or `http://meshcache.local/`).
//!
//! Two sides. Every allowed client gets what a passenger needs ([`onboarding`]: the CA as
//! PEM and DER, install steps, `/proxy.pac`) and a public summary ([`status`]). Pages that
//! reveal secrets or change state — the full status with group tickets, QR codes and peer
//! details ([`mesh`]), `/share` ([`shares`]), `/metrics` ([`metrics`]) — are for admin
//! clients only (`admin.allow`, this machine by default); others get a 403 that says so.

mod mesh;
mod metrics;
mod onboarding;
mod shares;
mod status;

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use crate::client::Client;
use crate::flow::{local_error, Outcome, Phase};
use crate::http::full;
use crate::http::respond::build;
use crate::state::State;

/// The name under which the proxy answers for itself.
pub const LOCAL_HOST: &str = "meshcache.local";

/// True for origin-form requests (sent to the proxy as if it were a server) and for the
/// proxy's own name.
pub(crate) fn is_for_us<B>(req: &Request<B>) -> bool {
    if req.method() == Method::CONNECT {
        return false;
    }
    match req.uri().host() {
        None => true,
        Some(h) => h.eq_ignore_ascii_case(LOCAL_HOST),
    }
}

/// Serves a request for the proxy itself.
pub(crate) async fn handle(state: &Arc<State>, client: &Client, req: Request<Incoming>) -> Outcome {
    let path = req.uri().path().to_string();
    let admin_only = path.starts_with("/share") || path == "/metrics";
    if admin_only && !client.admin {
        tracing::warn!(client = %client.addr, %path, "refused: an admin page, and the client is not in admin.allow");
        return local_error(
            StatusCode::FORBIDDEN,
            "admin-only",
            format!(
                "meshcache: {path} is for admin clients only (admin.allow); {} is not one\n",
                client.ip()
            ),
        );
    }
    if let Some(ticket) = path.strip_prefix("/share/") {
        if shares::wants_page(&req) {
            return shares::page(ticket);
        }
        return shares::get(state, ticket).await;
    }
    if path == "/share" && req.method() == Method::POST {
        return shares::post(state, req).await;
    }
    if path == "/ca.pem" || path == "/ca.der" {
        if let Some(o) = onboarding::ca(state, path == "/ca.der") {
            return o;
        }
    }
    let (status, ctype, body) = match path.as_str() {
        "/" | "/status" => (
            StatusCode::OK,
            "text/html; charset=utf-8",
            status::html(state, client.admin).await,
        ),
        "/proxy.pac" => (
            StatusCode::OK,
            "application/x-ns-proxy-autoconfig",
            onboarding::pac(state),
        ),
        "/status.json" => (
            StatusCode::OK,
            "application/json",
            status::json(state, client.admin).await,
        ),
        "/metrics" => match metrics::text(state).await {
            Ok(text) => (StatusCode::OK, metrics::CONTENT_TYPE, text),
            Err(e) => {
                tracing::error!("metrics: encoding failed: {e}");
                return local_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal-error",
                    "meshcache: the metrics could not be encoded\n".into(),
                );
            }
        },
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

/// Bytes in binary units, for people.
fn size(n: u64) -> String {
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

/// Text made safe inside HTML.
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
