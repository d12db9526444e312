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
    if let Some(ticket) = path.strip_prefix("/share/") {
        let ticket = ticket.to_string();
        return crate::mesh_pages::get(state, &ticket).await;
    }
    if path == "/share" && req.method() == http::Method::POST {
        return crate::mesh_pages::post(state, req).await;
    }
    if let (Some(tls), "/ca.pem" | "/ca.der") = (state.tls.as_ref(), path) {
        let (ctype, body): (&'static str, bytes::Bytes) = if path == "/ca.pem" {
            (
                "application/x-pem-file",
                bytes::Bytes::copy_from_slice(tls.ca.cert_pem().as_bytes()),
            )
        } else {
            (
                "application/x-x509-ca-cert",
                bytes::Bytes::copy_from_slice(tls.ca.cert_der()),
            )
        };
        let mut h = http::HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Outcome {
            response: build(StatusCode::OK, h, full(body)),
            phase: Phase::Local("ca"),
            fwd_status: None,
        };
    }
    let (status, ctype, body) = match path {
        "/" | "/status" => (
            StatusCode::OK,
            "text/html; charset=utf-8",
            status_html(state).await,
        ),
        "/proxy.pac" => (
            StatusCode::OK,
            "application/x-ns-proxy-autoconfig",
            format!(
                "function FindProxyForURL(url, host) {{\n  if (isPlainHostName(host) || host == \"localhost\" || shExpMatch(host, \"127.*\")) return \"DIRECT\";\n  return \"PROXY {}; DIRECT\";\n}}\n",
                state.listen
            ),
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
        "{{\"requests\":{},\"hits\":{},\"misses\":{},\"errors\":{},\"bytes_to_clients\":{},\"uptime_secs\":{},\"stored_urls\":{},\"stored_variants\":{},\"stored_bytes\":{},\"max_bytes\":{},\"fills_in_progress\":{},\"evictions\":{},\"pass_through\":{},{}}}\n",
        f.requests, f.hits, f.misses, f.errors, f.bytes, f.uptime, f.stats.urls, f.stats.variants, f.stats.bytes, f.stats.max_bytes, f.stats.fills_in_progress, f.stats.evictions, f.stats.pass_through, crate::mesh_pages::status_json(state)
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
    crate::mesh_pages::status_html(state, &mut s);
    if f.stats.pass_through {
        s.push_str("<p><b>The disk is full: caching is suspended, requests pass through.</b></p>");
    }
    if let Some(tls) = state.tls.as_ref() {
        s.push_str(INSTALL);
        let learned = tls.learned();
        if !learned.is_empty() {
            s.push_str("<h2>Tunnelled blindly (a client refused our certificate)</h2><ul>");
            for (host, until) in learned {
                let _ = write!(
                    s,
                    "<li><code>{host}</code> until {}</li>",
                    httpdate::fmt_http_date(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(until)
                    )
                );
            }
            s.push_str("</ul>");
        }
    }
    s.push_str(
        "<p><a href=\"/status.json\">status.json</a> · <a href=\"/proxy.pac\">proxy.pac</a></p>\n",
    );
    s
}

/// Install steps for the CA, per platform (as mitmproxy's mitm.it offers them).
const INSTALL: &str = r#"<h2>Cache HTTPS too: install the meshcache certificate</h2>
<p>meshcache decrypts HTTPS on this device only, with a certificate authority created on
this device. Download it: <a href="/ca.pem">ca.pem</a> (most systems) or
<a href="/ca.der">ca.der</a> (Android, Windows). Or run <code>meshcache ca export</code>.</p>
<dl>
<dt>Android</dt><dd>Settings → Security → Encryption &amp; credentials → Install a certificate → CA certificate → pick <code>ca.der</code>. Apps trust user CAs only if they opt in (network security config).</dd>
<dt>iOS / iPadOS</dt><dd>Open <code>/ca.pem</code> in Safari → Allow → Settings → General → VPN &amp; Device Management → install the profile; then Settings → General → About → Certificate Trust Settings → enable full trust for "meshcache local CA".</dd>
<dt>macOS</dt><dd><code>sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain ca.pem</code></dd>
<dt>Windows</dt><dd><code>certutil -addstore root ca.der</code> (as administrator), or double-click → Install Certificate → Local Machine → Trusted Root Certification Authorities.</dd>
<dt>Linux (Debian/Ubuntu)</dt><dd><code>sudo cp ca.pem /usr/local/share/ca-certificates/meshcache.crt &amp;&amp; sudo update-ca-certificates</code>; curl: <code>curl --cacert ca.pem</code>.</dd>
<dt>Firefox</dt><dd>Settings → Privacy &amp; Security → Certificates → View Certificates → Authorities → Import → <code>ca.pem</code> → trust for websites.</dd>
</dl>
<p>Automatic proxy configuration: point the system or browser at <a href="/proxy.pac">/proxy.pac</a>.</p>
"#;
