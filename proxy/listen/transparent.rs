//! Transparent mode, for gateways: connections the firewall redirected to this listener
//! (iptables/nftables `REDIRECT`). The original destination comes from `SO_ORIGINAL_DST`;
//! TLS is recognised by its first byte and its server name read from the ClientHello
//! (peeked, not consumed), then intercepted or tunnelled blindly as for CONNECT; plain
//! HTTP is served by its `Host`. Clients outside `listen.allow` are refused, and the
//! original destination is checked against the destination policy as a `CONNECT` would be.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::edge;
use super::stack::{self, Conn, Target};
use super::{accept_loop, Front};
use crate::client::Client;
use crate::state::State;

/// Accepts redirected connections until the proxy shuts down.
pub(crate) async fn serve(listener: TcpListener, state: Arc<State>, front: Front) {
    let (opts, shutdown) = (front.opts.clone(), front.shutdown.clone());
    accept_loop(listener, front, false, move |stream, client| {
        let conn = Conn {
            client,
            opts: opts.clone(),
            shutdown: shutdown.clone(),
            accepted: tokio::time::Instant::now(),
        };
        handle(stream, state.clone(), conn)
    })
    .await
}

async fn handle(stream: TcpStream, state: Arc<State>, conn: Conn) {
    let peer = conn.client.addr;
    let Some(dst) = original_dst(&stream) else {
        tracing::warn!(%peer, "transparent: no original destination (was the connection redirected?)");
        return;
    };
    if stream.local_addr().ok() == Some(dst) {
        tracing::warn!(%peer, "transparent: connection made to the listener itself, not redirected; closing");
        return;
    }
    // The client meant to reach `dst`: the destination policy applies as for CONNECT.
    if let Err(r) = state
        .destinations
        .for_client(conn.client.admin)
        .check_ip(dst.ip())
    {
        tracing::warn!(%peer, %dst, rule = r.rule_name(), "transparent: destination refused: {r}");
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 1];
    match tokio::time::timeout(conn.opts.header_read_timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return,
    }
    if first[0] == 0x16 {
        tls(stream, dst, state, conn).await
    } else {
        let handler = edge::handler(state, Target::Redirected(dst));
        stack::http1(stream, conn, handler).await
    }
}

async fn tls(stream: TcpStream, dst: SocketAddr, state: Arc<State>, conn: Conn) {
    let name = peek_server_name(&stream, conn.opts.header_read_timeout).await;
    let host = name.unwrap_or_else(|| dst.ip().to_string());
    let Some(tls) = state.tls.as_ref() else {
        return;
    };
    if tls.is_passthrough(&host, conn.client.ip()) {
        tunnel(stream, dst, &state, &conn.client).await;
        return;
    }
    let Some(authority) = authority_for(&host, dst.port()) else {
        return;
    };
    let handler = edge::handler(state.clone(), Target::Https(authority.clone()));
    super::intercept::intercept(&state, stream, authority, conn, handler).await;
}

fn authority_for(host: &str, port: u16) -> Option<http::uri::Authority> {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    format!("{host}:{port}").parse().ok()
}

async fn tunnel(client: TcpStream, dst: SocketAddr, state: &State, who: &Client) {
    // Directly to the address the client meant (checked above), or through the upstream
    // proxy's CONNECT to that address.
    let policy = state.destinations.for_client(who.admin);
    let host = dst.ip().to_string();
    match state.origin.tunnel(policy, &host, dst.port()).await {
        Ok(upstream) => {
            let (idle, shutdown) = (state.server.idle_timeout, state.shutdown.clone());
            if let Err(e) = stack::tunnel(client, upstream, idle, shutdown).await {
                tracing::debug!(%dst, client = %who.addr, "transparent tunnel: {e}");
            }
        }
        Err(e) => tracing::info!(%dst, "transparent tunnel: origin unreachable: {e}"),
    }
}

/// Reads the ClientHello's server name without consuming it from the socket.
async fn peek_server_name(stream: &TcpStream, limit: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = vec![0u8; 16 * 1024];
    let mut last = 0;
    loop {
        let n = stream.peek(&mut buf).await.ok()?;
        if n > last {
            last = n;
            let mut acceptor = rustls::server::Acceptor::default();
            let _ = acceptor.read_tls(&mut &buf[..n]);
            match acceptor.accept() {
                Ok(Some(accepted)) => {
                    return accepted.client_hello().server_name().map(str::to_owned)
                }
                Ok(None) => {}
                Err(_) => return None,
            }
        }
        if n == buf.len() || tokio::time::Instant::now() >= deadline {
            return None;
        }
        // The rest of the ClientHello is still in flight; peek has no "wait for more".
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The destination the client connected to before the firewall redirected it.
#[cfg(target_os = "linux")]
fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    use std::os::fd::AsRawFd;
    const SO_ORIGINAL_DST: libc::c_int = 80; // linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST is also 80
    let fd = stream.as_raw_fd();
    let local = stream.local_addr().ok()?;
    if local.is_ipv4() {
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: fd is a live socket owned by `stream`; addr/len point to a properly sized
        // sockaddr_in that getsockopt fills on success.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_IP,
                SO_ORIGINAL_DST,
                (&mut addr as *mut libc::sockaddr_in).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return None;
        }
        let ip = std::net::Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
        Some(SocketAddr::from((ip, u16::from_be(addr.sin_port))))
    } else {
        let mut addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        // SAFETY: as above, with a sockaddr_in6.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_IPV6,
                SO_ORIGINAL_DST,
                (&mut addr as *mut libc::sockaddr_in6).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return None;
        }
        let ip = std::net::Ipv6Addr::from(addr.sin6_addr.s6_addr);
        Some(SocketAddr::from((ip, u16::from_be(addr.sin6_port))))
    }
}

#[cfg(not(target_os = "linux"))]
fn original_dst(_stream: &TcpStream) -> Option<SocketAddr> {
    None
}
