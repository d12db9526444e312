//! Shared files on the proxy's own address, for admin clients only (both store files on
//! this device): `GET /share/<ticket>` fetches a file from its sharer and serves it (a
//! browser gets the ticket's page first: name, size, a download link, the ticket as a QR
//! code to hand it on), `POST /share?name=…` (as `meshcache share` uses it) stores and shares one. Both are
//! bounded by `mesh.share_max_file` per file and `mesh.share_max_size` in all, apart from
//! the cache's own limit.

use std::sync::Arc;

use futures_util::StreamExt;
use http::header::{self, HeaderValue};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;

use crate::flow::{local_error, Outcome, Phase};
use crate::http::respond::build;
use crate::http::{full, stream_body};
use crate::state::State;

use super::html_escape;

/// `GET /share/<ticket>`: fetches the file from the sharer (unless it is here already)
/// and serves it.
pub(super) async fn get(state: &Arc<State>, ticket: &str) -> Outcome {
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
        let (status, why) = match e {
            mesh::MeshError::ShareLimit(_) => (StatusCode::INSUFFICIENT_STORAGE, "share-limit"),
            _ => (StatusCode::BAD_GATEWAY, "share-unavailable"),
        };
        tracing::info!(name = %t.name, "shared file not served: {e}");
        return local_error(status, why, format!("meshcache: {}: {e}\n", t.name));
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
        response: build(StatusCode::OK, h, stream_body(body)),
        phase: Phase::Local("share"),
        fwd_status: None,
    }
}

/// Whether a `GET /share/<ticket>` asks for the page rather than the file: a browser's
/// (its `Accept` names `text/html`) without `?download`. `curl`, `meshcache get` and
/// media elements get the file as before.
pub(super) fn wants_page<B>(req: &Request<B>) -> bool {
    let download = req
        .uri()
        .query()
        .is_some_and(|q| url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "download"));
    let html = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/html"));
    req.method() == http::Method::GET && html && !download
}

/// The page of a share ticket: what it is, a link that fetches it (`?download`), and the
/// ticket as text and as a QR code (inline SVG: the page loads nothing else), to hand it
/// on to someone next to you.
pub(super) fn page(ticket: &str) -> Outcome {
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
    let raw = ticket.trim();
    let ticket = html_escape(raw);
    let name = html_escape(&t.name);
    let body = format!(
        "<!doctype html><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width, initial-scale=1\">\
         <title>{name} — meshcache</title><h1>{name}</h1>\
         <p>{} shared by <code>{}</code></p>\
         <p><a href=\"?download\">Download</a> (from the sharer, verified as it arrives)</p>\
         <h2>Hand it on</h2><p>Someone next to you scans this code, or runs \
         <code>meshcache get TICKET</code>, or opens \
         <code>http://meshcache.local/share/TICKET</code> through their own meshcache:</p>\
         {}<p><code style=\"word-break: break-all\">{ticket}</code></p>\n",
        super::size(t.size),
        t.addr.id,
        crate::qr::svg(raw, 256),
    );
    let mut h = http::HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Outcome {
        response: build(StatusCode::OK, h, full(body)),
        phase: Phase::Local("share-page"),
        fwd_status: None,
    }
}

/// `POST /share?name=NAME`: stores the request body and shares it; answers the ticket.
pub(super) async fn post(state: &Arc<State>, req: Request<Incoming>) -> Outcome {
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
        .and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "name")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_else(|| "shared-file".into());
    let max = mesh.share_limits().0;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > max) {
        return local_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "share-too-large",
            format!("meshcache: cannot share {name}: {n} bytes is more than mesh.share_max_file ({max})\n"),
        );
    }
    let path = mesh
        .dir()
        .join(format!("incoming-{:016x}", crate::http::random_u64()));
    let result = async {
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let mut body = req.into_body().into_data_stream();
        let mut n = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| (StatusCode::BAD_REQUEST, format!("upload: {e}")))?;
            n += chunk.len() as u64;
            if n > max {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("larger than mesh.share_max_file ({max} bytes)"),
                ));
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| (StatusCode::INSUFFICIENT_STORAGE, e.to_string()))?;
        }
        file.flush()
            .await
            .map_err(|e| (StatusCode::INSUFFICIENT_STORAGE, e.to_string()))?;
        drop(file);
        mesh.share_path(&path, &name).await.map_err(|e| match e {
            mesh::MeshError::ShareLimit(m) => (StatusCode::INSUFFICIENT_STORAGE, m),
            other => (StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        })
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
                response: build(StatusCode::OK, h, full(format!("{}\n", t.encode()))),
                phase: Phase::Local("share"),
                fwd_status: None,
            }
        }
        Err((status, e)) => {
            tracing::info!(%name, "share refused: {e}");
            local_error(
                status,
                "share-failed",
                format!("meshcache: cannot share {name}: {e}\n"),
            )
        }
    }
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
