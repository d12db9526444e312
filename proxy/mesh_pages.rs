//! The mesh's pages on the proxy's own address: shared files (`GET /share/<ticket>`,
//! `POST /share?name=…` as `meshcache share` uses it) and the status page's mesh section.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::StreamExt;
use http::header::{self, HeaderValue};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;

use crate::flow::{local_error, Outcome};
use crate::headers::Phase;
use crate::respond::build;
use crate::state::State;

/// Largest file accepted by `POST /share`.
const MAX_SHARE: u64 = 4 << 30;

/// `GET /share/<ticket>`: fetches the file from the sharer (unless it is here already)
/// and serves it.
pub async fn get(state: &Arc<State>, ticket: &str) -> Outcome {
    let Some(mesh) = state.mesh.as_ref() else {
        return local_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "mesh-off",
            "meshcache: the mesh is off\n".into(),
        );
    };
    let t = match mesh::share::ShareTicket::decode(ticket) {
        Ok(t) => t,
        Err(e) => {
            return local_error(
                StatusCode::BAD_REQUEST,
                "bad-ticket",
                format!("meshcache: {e}\n"),
            )
        }
    };
    if let Err(e) = mesh.fetch_shared(&t).await {
        return local_error(
            StatusCode::BAD_GATEWAY,
            "share-unavailable",
            format!("meshcache: {}: {e}\n", t.name),
        );
    }
    let mut h = http::HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&t.name)),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(t.size));
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{}\"", t.name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    // Content-addressed: the bytes behind a ticket never change.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    let body = state.cache.body_by_hash(&t.hash, 0..t.size);
    Outcome {
        response: build(StatusCode::OK, h, crate::stream_body(body)),
        phase: Phase::Local("share"),
        fwd_status: None,
    }
}

/// `POST /share?name=NAME`: stores the request body and shares it; answers the ticket.
pub async fn post(state: &Arc<State>, req: Request<Incoming>) -> Outcome {
    let Some(mesh) = state.mesh.as_ref() else {
        return local_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "mesh-off",
            "meshcache: the mesh is off\n".into(),
        );
    };
    let name = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("name=")))
        .map(percent_decode)
        .unwrap_or_else(|| "shared-file".into());
    let path = mesh
        .dir()
        .join(format!("incoming-{:016x}", crate::random_u64()));
    let result = async {
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| e.to_string())?;
        let mut body = req.into_body().into_data_stream();
        let mut n = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("upload: {e}"))?;
            n += chunk.len() as u64;
            if n > MAX_SHARE {
                return Err(format!("larger than {MAX_SHARE} bytes"));
            }
            file.write_all(&chunk).await.map_err(|e| e.to_string())?;
        }
        file.flush().await.map_err(|e| e.to_string())?;
        drop(file);
        mesh.share_path(&path, &name)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    let _ = tokio::fs::remove_file(&path).await;
    match result {
        Ok(t) => {
            let mut h = http::HeaderMap::new();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            Outcome {
                response: build(
                    StatusCode::OK,
                    h,
                    crate::flow::full(format!("{}\n", t.encode())),
                ),
                phase: Phase::Local("share"),
                fwd_status: None,
            }
        }
        Err(e) => local_error(
            StatusCode::BAD_REQUEST,
            "share-failed",
            format!("meshcache: cannot share {name}: {e}\n"),
        ),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "txt" | "md" => "text/plain; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "ogg" | "opus" => "audio/ogg",
        "zip" => "application/zip",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

/// The mesh section of the status page.
pub fn status_html(state: &State, s: &mut String) {
    let c = &state.counters;
    let (cache, peers, origin) = (
        c.bytes_from_cache.load(Ordering::Relaxed),
        c.bytes_from_peers.load(Ordering::Relaxed),
        c.bytes_from_origin.load(Ordering::Relaxed),
    );
    let total = (cache + peers + origin).max(1) as f64;
    let _ = write!(
        s,
        "<h2>Where the bytes came from</h2><p>cache {cache} ({:.0}%) · peers {peers} ({:.0}%) · origin {origin} ({:.0}%)</p>",
        100.0 * cache as f64 / total,
        100.0 * peers as f64 / total,
        100.0 * origin as f64 / total
    );
    let Some(mesh) = state.mesh.as_ref() else {
        s.push_str("<h2>Mesh</h2><p>The mesh is off.</p>");
        return;
    };
    let m = mesh.counters();
    let _ = write!(
        s,
        "<h2>Mesh</h2><p>This device: <code>{}</code><br>Ticket (<code>--peer</code>): <code>{}</code></p>\
         <p>lookups {} · bodies from peers {} · bytes from peers {} · bytes to peers {} · answers {} · refused {} · bans {}</p>",
        mesh.id(),
        mesh.ticket(),
        m.lookups.load(Ordering::Relaxed),
        m.peer_hits.load(Ordering::Relaxed),
        m.bytes_from_peers.load(Ordering::Relaxed),
        m.bytes_to_peers.load(Ordering::Relaxed),
        m.answers.load(Ordering::Relaxed),
        m.refused.load(Ordering::Relaxed),
        m.bans.load(Ordering::Relaxed),
    );
    let groups = mesh.groups();
    if groups.is_empty() {
        s.push_str("<p>In no group: nothing is shared. <code>meshcache group create</code>, or <code>meshcache group join TICKET</code>.</p>");
    } else {
        s.push_str("<p>Groups (hand the ticket, or show the code, to someone next to you to let them join):</p><ul>");
        for g in groups {
            let t = g.ticket();
            let _ = write!(s, "<li><code>{t}</code><br>{}</li>", qr_svg(&t));
        }
        s.push_str("</ul>");
    }
    s.push_str("<table><tr><th>peer</th><th>addresses</th><th>found by</th><th>state</th><th>groups</th><th>bytes given</th><th>bytes taken</th><th>bans</th></tr>");
    for p in mesh.peer_status() {
        let ban = match (p.banned_for, &p.ban_reason) {
            (Some(d), Some(r)) => format!("{} (banned {}s more: {r})", p.bans, d.as_secs()),
            _ => p.bans.to_string(),
        };
        let _ = write!(
            s,
            "<tr><td><code>{}</code></td><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            p.id,
            p.addrs,
            p.source,
            html_escape(&p.state),
            p.groups.join(", "),
            p.given,
            p.taken,
            html_escape(&ban)
        );
    }
    s.push_str("</table>");
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A QR code of `text` as inline SVG.
fn qr_svg(text: &str) -> String {
    match qrcode::QrCode::new(text.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(160, 160)
            .build(),
        Err(_) => String::new(),
    }
}

/// Mesh figures for `/status.json` (without the braces).
pub fn status_json(state: &State) -> String {
    let c = &state.counters;
    let mut s = format!(
        "\"bytes_from_cache\":{},\"bytes_from_peers\":{},\"bytes_from_origin\":{},\"peer_hits\":{}",
        c.bytes_from_cache.load(Ordering::Relaxed),
        c.bytes_from_peers.load(Ordering::Relaxed),
        c.bytes_from_origin.load(Ordering::Relaxed),
        c.peer_hits.load(Ordering::Relaxed)
    );
    if let Some(mesh) = state.mesh.as_ref() {
        let m = mesh.counters();
        let _ = write!(
            s,
            ",\"mesh_id\":\"{}\",\"mesh_peers_connected\":{},\"mesh_bans\":{},\"mesh_refused\":{},\"mesh_bytes_to_peers\":{}",
            mesh.id(),
            mesh.connected_peers(),
            m.bans.load(Ordering::Relaxed),
            m.refused.load(Ordering::Relaxed),
            m.bytes_to_peers.load(Ordering::Relaxed)
        );
    }
    s
}
