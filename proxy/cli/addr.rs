//! `meshcache mesh addr`: this device's ticket. A running proxy is asked first (its
//! `/status.json`): when `mesh.listen`'s port was taken it listens on another one, and only
//! it knows which. Without one, the ticket `mesh.listen` stands for is made from the key in
//! the data directory.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use http_body_util::BodyExt;

/// What the proxy at `proxy` says about its mesh, as far as it concerns this device.
enum Running {
    /// This device's mesh runs there: its ticket, and whether its port was taken.
    Ticket {
        ticket: String,
        note: Option<String>,
    },
    /// Nothing to ask, or not this device: why (said on stderr), and the offline ticket
    /// is printed.
    Offline(String),
}

/// The ticket to print for the device whose data directory holds `dir` (its `mesh`
/// folder), whose configured `mesh.listen` is `listen`, and whose proxy should be at
/// `proxy`. Notes for the user go to stderr.
pub(crate) async fn addr(dir: &Path, listen: SocketAddr, proxy: SocketAddr) -> Result<String> {
    let offline = mesh::offline_ticket(dir, listen)?;
    let id = mesh::parse_peer(&offline)?.id.to_string();
    match ask(proxy, &id).await {
        Running::Ticket { ticket, note } => {
            if let Some(note) = note {
                eprintln!("meshcache: {note}");
            }
            Ok(ticket)
        }
        Running::Offline(why) => {
            eprintln!(
                "meshcache: {why}: this ticket is the one mesh.listen ({listen}) stands for \
                 (when its port is taken, a running proxy binds another one: ask it with --proxy)"
            );
            Ok(offline)
        }
    }
}

async fn ask(proxy: SocketAddr, id: &str) -> Running {
    let status = match tokio::time::timeout(Duration::from_secs(5), status_json(proxy)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Running::Offline(format!("no meshcache proxy answers at {proxy} ({e:#})"))
        }
        Err(_) => return Running::Offline(format!("the proxy at {proxy} did not answer in time")),
    };
    let text = |k: &str| status.get(k).and_then(|v| v.as_str()).map(str::to_string);
    match (text("mesh_id"), text("mesh_ticket")) {
        (Some(running), Some(ticket)) if running == id => {
            let taken = status.get("mesh_port_taken").and_then(|v| v.as_bool()) == Some(true);
            let note = taken.then(|| {
                let bound = status
                    .get("mesh_bound")
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                format!(
                    "mesh.listen ({}) was taken when the proxy at {proxy} started: it listens on \
                     {bound}, which this ticket carries",
                    text("mesh_listen").unwrap_or_default()
                )
            });
            Running::Ticket { ticket, note }
        }
        (Some(other), _) => Running::Offline(format!(
            "the proxy at {proxy} is another device ({other}), not this data directory's"
        )),
        (None, _) => match text("mesh_error") {
            Some(why) => Running::Offline(format!(
                "the proxy at {proxy} runs without its mesh, which could not start: {why}"
            )),
            None if status.get("connections_open").is_none() => Running::Offline(format!(
                "the proxy at {proxy} shows its mesh to admin clients only (admin.allow)"
            )),
            None => Running::Offline(format!("the proxy at {proxy} runs without a mesh")),
        },
    }
}

/// `GET /status.json` from the proxy at `proxy`.
async fn status_json(proxy: SocketAddr) -> Result<serde_json::Value> {
    let stream = tokio::net::TcpStream::connect(proxy).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::get("/status.json")
        .header(http::header::HOST, proxy.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let res = sender.send_request(req).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(anyhow!("status {status}"));
    }
    serde_json::from_slice(&body).context("its /status.json is not JSON")
}
