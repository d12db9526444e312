//! The mesh's UDP port, as a second instance on one host meets it: two `meshcache run`
//! processes given the same `mesh.listen` (and `mesh.open_listen`) both have a mesh, the
//! second on a port of its own that it says and advertises, and each is reached by the
//! ticket the running instance reports. A mesh address that cannot be bound at all leaves
//! the proxy serving without its mesh, and the status page says why.

use std::path::Path;

use crate::support::binary::{run, Running};
use crate::support::get;
use crate::support::mesh::{grouped, Device};

/// A UDP port on loopback that was free a moment ago.
fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// The ports a ticket gives.
fn ports(ticket: &str) -> Vec<u16> {
    let addr = mesh::parse_peer(ticket).unwrap();
    addr.ip_addrs().map(|a| a.port()).collect()
}

/// `/status.json` (the admin view: the test runs on loopback).
async fn status(addr: std::net::SocketAddr) -> serde_json::Value {
    let r = get(addr, "http://meshcache.local/status.json", &[]).await;
    assert_eq!(r.status, 200);
    serde_json::from_slice(&r.body).unwrap()
}

/// `meshcache mesh addr` for the data directory `dir`, asking the proxy at `proxy`:
/// the ticket (stdout) and the notes (stderr).
fn mesh_addr(dir: &Path, proxy: std::net::SocketAddr) -> (String, String) {
    let out = run(&[
        "mesh",
        "addr",
        "--data-dir",
        dir.to_str().unwrap(),
        "--proxy",
        &proxy.to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
        stderr,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_with_the_same_mesh_listen_both_have_a_mesh_and_reach_each_other() {
    let (dirs, _) = grouped(3);
    let (p, q) = (free_udp_port(), free_udp_port());
    let listen = format!("127.0.0.1:{p}");
    let open_listen = format!("127.0.0.1:{q}");
    let same = ["--mesh-listen", &listen, "--open-listen", &open_listen];

    let a = Device::start_with_args(dirs[0].path(), "", &same);
    let (a_ticket, a_notes) = mesh_addr(dirs[0].path(), a.addr());
    assert_eq!(a_ticket, a.ticket, "mesh addr asks the running instance");
    assert_eq!(ports(&a_ticket), [p], "{a_notes}");
    let sa = status(a.addr()).await;
    assert_eq!(sa["mesh_port_taken"], false, "{sa}");

    // The second instance, same ports, A's reported ticket as its peer.
    let mut args = same.to_vec();
    args.extend(["--peer", &a_ticket]);
    let b = Device::start_with_args(dirs[1].path(), "", &args);
    let (b_ticket, b_notes) = mesh_addr(dirs[1].path(), b.addr());
    assert_eq!(b_ticket, b.ticket);
    let b_ports = ports(&b_ticket);
    assert_eq!(b_ports.len(), 1, "{b_ticket}");
    assert_ne!(
        b_ports[0], p,
        "B advertises the port it bound, not the taken one"
    );
    assert!(
        b_notes.contains(&format!("mesh.listen ({listen}) was taken")),
        "{b_notes}"
    );
    let sb = status(b.addr()).await;
    assert_eq!(sb["mesh"], true, "{sb}");
    assert_eq!(sb["mesh_port_taken"], true, "{sb}");
    assert_eq!(sb["mesh_listen"], listen.as_str(), "{sb}");
    assert_eq!(
        sb["mesh_bound"],
        serde_json::json!([format!("127.0.0.1:{}", b_ports[0])]),
        "{sb}"
    );
    assert_eq!(sb["mesh_ticket"], b_ticket.as_str(), "{sb}");
    // The open mesh's fixed port too.
    assert_eq!(sb["mesh_open_port_taken"], true, "{sb}");
    let b_open = b.open_ticket();
    assert_ne!(ports(&b_open), [q], "{b_open}");
    assert_eq!(sb["mesh_open_ticket"], b_open.as_str(), "{sb}");
    // It said so, naming both ports.
    let log = b.run.log.lock().unwrap().join("\n");
    assert!(
        log.contains(&format!(
            "mesh.listen = {listen}: UDP port {p} is taken (another meshcache on this host?); listening on 127.0.0.1:{} instead",
            b_ports[0]
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "mesh.open_listen = {open_listen}: UDP port {q} is taken"
        )),
        "{log}"
    );
    // The status page says it to a person.
    let page = get(b.addr(), "http://meshcache.local/", &[]).await.text();
    assert!(
        page.contains(&format!("<code>127.0.0.1:{}</code>", b_ports[0]))
            && page.contains("whose port is taken"),
        "{page}"
    );

    // B reached A by A's reported ticket.
    a.wait_peers(1).await;
    b.wait_peers(1).await;
    // A third device given only B's reported tickets (members' and strangers') reaches B:
    // it knows no one else until it has.
    let c = Device::start_with_args(
        dirs[2].path(),
        "",
        &["--peer", &b_ticket, "--open-peer", &b_open],
    );
    c.wait_peers(1).await;
    b.wait_peers(2).await;
    c.wait_strangers(1).await;

    c.stop();
    b.stop();
    a.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_address_that_cannot_be_bound_leaves_the_proxy_serving_and_the_status_page_says_why()
{
    let dir = tempfile::tempdir().unwrap();
    // 192.0.2.1 (TEST-NET-1) is no address of this machine: binding it fails locally, and
    // nothing is ever sent.
    let p = Running::start(dir.path(), &["--mesh-listen", "192.0.2.1:4919"]);
    assert!(p.mesh.is_none(), "no mesh endpoint line");
    let s = status(p.addr).await;
    assert_eq!(s["mesh"], false, "{s}");
    let why = s["mesh_error"].as_str().unwrap_or_else(|| panic!("{s}"));
    assert!(
        why.contains("mesh.listen = 192.0.2.1:4919: cannot bind"),
        "{why}"
    );
    assert!(s.get("mesh_ticket").is_none(), "{s}");
    let page = get(p.addr, "http://meshcache.local/", &[]).await.text();
    assert!(
        page.contains("The mesh is off: it could not start.")
            && page.contains("192.0.2.1:4919: cannot bind"),
        "{page}"
    );
    let log = p.log.lock().unwrap().join("\n");
    assert!(
        log.contains("the mesh could not start, serving without it"),
        "{log}"
    );
    // `mesh addr` says the running proxy has no mesh, and why.
    let (_, notes) = mesh_addr(dir.path(), p.addr);
    assert!(
        notes.contains("runs without its mesh, which could not start"),
        "{notes}"
    );
    // The proxy itself serves.
    let r = get(p.addr, "http://meshcache.local/proxy.pac", &[]).await;
    assert_eq!(r.status, 200);
    p.stop();
}
