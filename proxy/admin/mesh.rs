//! The mesh section of the status page, for admin clients: this device's id and ticket,
//! where it listens (and whether `mesh.listen`'s port was taken), why it is off when it
//! could not start, counters, group tickets as text and QR code (they are the groups' secrets), the peer
//! table with bans and their reasons.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::html_escape;
use crate::state::State;

/// The mesh section of the status page.
pub(super) fn status_html(state: &State, s: &mut String) {
    let Some(mesh) = state.mesh.as_ref() else {
        match state.mesh_error.as_deref() {
            Some(why) => {
                let _ = write!(
                    s,
                    "<h2>Mesh</h2><p><b>The mesh is off: it could not start.</b> {}</p>\
                     <p>The proxy serves without it: nothing is shared with or fetched from nearby devices \
                     until it is restarted with the cause fixed (an address that is not this machine's in \
                     <code>mesh.listen</code>, for one).</p>",
                    html_escape(why)
                );
            }
            None => s.push_str(
                "<h2>Mesh</h2><p>The mesh is off (<code>mesh.enabled = false</code> or <code>--no-mesh</code>).</p>",
            ),
        }
        return;
    };
    let m = mesh.counters();
    let _ = write!(
        s,
        "<h2>Mesh</h2><p>This device: <code>{}</code><br>Ticket (<code>--peer</code>): <code>{}</code><br>{}</p>\
         <p>lookups {} · bodies from peers {} · bytes from peers {} · bytes to peers {} · answers {} · refused {} · bans {}</p>",
        mesh.id(),
        mesh.ticket(),
        listening_html("mesh.listen", &mesh.listening()),
        m.lookups.load(Ordering::Relaxed),
        m.peer_hits.load(Ordering::Relaxed),
        m.bytes_from_peers.load(Ordering::Relaxed),
        m.bytes_to_peers.load(Ordering::Relaxed),
        m.answers.load(Ordering::Relaxed),
        m.refused.load(Ordering::Relaxed),
        m.bans.load(Ordering::Relaxed),
    );
    match mesh.open_status() {
        Some(o) => {
            let _ = write!(
                s,
                "<p>Open mesh (strangers; only what they cannot forge): <code>{}</code>, a new identity every start<br>\
                 Ticket (<code>--open-peer</code>): <code>{}</code><br>{}<br>strangers known {} · connected {} · banned addresses {} · tags {}</p>",
                o.id,
                o.ticket,
                listening_html("mesh.open_listen", &o.listening),
                o.strangers_known,
                o.strangers_connected,
                o.addr_bans,
                o.tags
            );
        }
        None => match mesh.open_error() {
            Some(why) => {
                let _ = write!(
                    s,
                    "<p><b>Open mesh: off, it could not start.</b> {}</p>",
                    html_escape(&why)
                );
            }
            None => s.push_str("<p>Open mesh: off (<code>mesh.open</code>).</p>"),
        },
    }
    // The dashboard's script rewrites the list inside `#bans` from `/status.json`.
    let bans = mesh.bans();
    s.push_str("<div id=bans>");
    if !bans.is_empty() {
        s.push_str("<p>Banned (peers and strangers):</p><ul>");
        for (id, why, left) in bans.iter().take(50) {
            let _ = write!(
                s,
                "<li><code>{}</code> for {}s more: {}</li>",
                html_escape(id),
                left.as_secs(),
                html_escape(why)
            );
        }
        s.push_str("</ul>");
    }
    s.push_str("</div>");
    let groups = mesh.groups();
    if groups.is_empty() {
        s.push_str("<p>In no group: nothing is shared. <code>meshcache group create</code>, or <code>meshcache group join TICKET</code>.</p>");
    } else {
        s.push_str("<p>Groups (hand the ticket, or show the code, to someone next to you to let them join):</p><ul>");
        for g in groups {
            let t = g.ticket();
            let _ = write!(
                s,
                "<li><code>{t}</code><br>{}</li>",
                crate::qr::svg(&t, 160)
            );
        }
        s.push_str("</ul>");
    }
    s.push_str("<table id=peers><tr><th>peer</th><th>addresses</th><th>found by</th><th>state</th><th>groups</th><th>bytes given</th><th>bytes taken</th><th>bans</th></tr>");
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
            super::size(p.given),
            super::size(p.taken),
            html_escape(&ban)
        );
    }
    s.push_str("</table>");
}

/// Where an endpoint listens, and — when the port asked for was taken — that another one
/// is in use.
fn listening_html(setting: &str, l: &mesh::Listening) -> String {
    let bound: Vec<String> = l.bound.iter().map(|a| a.to_string()).collect();
    let mut out = format!("Listening on UDP <code>{}</code>", bound.join(", "));
    if l.port_taken {
        let _ = write!(
            out,
            " — <b><code>{setting}</code> asks for <code>{}</code>, whose port is taken</b> \
             (another meshcache on this machine?): this port is the one in use, and the tickets \
             here carry it",
            l.configured
        );
    }
    out
}
