//! Transparent mode, for gateways: connections the firewall redirected to this listener
//! (iptables/nftables `REDIRECT`). The original destination comes from `SO_ORIGINAL_DST`;
//! TLS is recognised by its first byte and its server name read from the ClientHello
//! (peeked, not consumed), then intercepted or tunnelled blindly as for CONNECT; plain
//! HTTP is served by its `Host`. Clients outside `listen.allow` are refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::server::{accept_loop, ServerOptions};
use crate::state::State;

/// Accepts redirected connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    opts: ServerOptions,
    limit: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
) {
    let o = opts.clone();
    accept_loop(
        listener,
        &opts,
        limit,
        shutdown,
        false,
        move |stream, peer| handle(stream, peer, state.clone(), o.clone()),
    )
    .await
}

async fn handle(stream: TcpStream, peer: SocketAddr, state: Arc<State>, opts: ServerOptions) {
    let Some(dst) = original_dst(&stream) else {
        tracing::warn!(%peer, "transparent: no original destination (was the connection redirected?)");
        return;
    };
    if stream.local_addr().ok() == Some(dst) {
        tracing::warn!(%peer, "transparent: connection made to the listener itself, not redirected; closing");
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 1];
    match tokio::time::timeout(opts.header_read_timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return,
    }
    if first[0] == 0x16 {
        tls(stream, peer, dst, state, opts).await
    } else {
        plain(stream, peer, dst, state, opts).await
    }
}

async fn tls(
    stream: TcpStream,
    peer: SocketAddr,
    dst: SocketAddr,
    state: Arc<State>,
    opts: ServerOptions,
) {
    let name = peek_server_name(&stream, opts.header_read_timeout).await;
    let host = name.unwrap_or_else(|| dst.ip().to_string());
    let Some(tls) = state.tls.as_ref() else {
        return;
    };
    if tls.is_passthrough(&host) {
        tunnel(stream, dst).await;
        return;
    }
    let authority = match authority_for(&host, dst.port()) {
        Some(a) => a,
        None => return,
    };
    crate::tls::intercept(state, peer, stream, authority).await;
}

fn authority_for(host: &str, port: u16) -> Option<http::uri::Authority> {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    format!("{host}:{port}").parse().ok()
}

async fn tunnel(mut client: TcpStream, dst: SocketAddr) {
    match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(dst)).await {
        Ok(Ok(mut upstream)) => {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
        _ => tracing::info!(%dst, "transparent tunnel: origin unreachable"),
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

async fn plain(
    stream: TcpStream,
    peer: SocketAddr,
    dst: SocketAddr,
    state: Arc<State>,
    opts: ServerOptions,
) {
    let io = TokioIo::new(crate::deadline::HeadDeadline::new(
        stream,
        opts.header_read_timeout,
    ));
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let state = state.clone();
        async move {
            // Redirected requests are origin-form: the target is their Host, else the
            // address the client meant to reach.
            let host = req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_else(|| dst.to_string());
            let pq = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            if let Ok(uri) = format!("http://{host}{pq}").parse() {
                *req.uri_mut() = uri;
            }
            Ok::<_, std::convert::Infallible>(crate::edge::handle_boxed(state, peer, req).await)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.idle_timeout)
        .keep_alive(true);
    if let Err(e) = builder.serve_connection(io, svc).await {
        tracing::debug!(%peer, "transparent connection: {e}");
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
