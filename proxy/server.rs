//! The accept loop: a bounded number of connections, each served by hyper's HTTP/1.1
//! server with keep-alive, a request-head deadline and upgrades (for CONNECT).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::deadline::HeadDeadline;
use crate::state::State;

/// Limits of the client side. Every field documents its default.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Connections served at once; more are answered 503 and closed. Default 1024.
    pub max_connections: usize,
    /// Largest request head; larger gets 431. Default 64 KiB.
    pub max_header_bytes: usize,
    /// Time to receive a whole request head once it has started. Default 10 s.
    pub header_read_timeout: Duration,
    /// How long an idle keep-alive connection is kept. Default 75 s.
    pub idle_timeout: Duration,
    /// Client networks served (address, prefix length); others are refused with 403.
    /// Default loopback only.
    pub allow: Vec<(IpAddr, u8)>,
}

/// True when `ip` lies in one of the networks.
pub fn allowed(allow: &[(IpAddr, u8)], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    allow.iter().any(|(net, prefix)| match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = if *prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(*prefix))
            };
            u32::from(*n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = if *prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(*prefix))
            };
            u128::from(*n) & mask == u128::from(a) & mask
        }
        _ => false,
    })
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_header_bytes: 64 << 10,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            allow: vec![
                (IpAddr::from([127, 0, 0, 0]), 8),
                (IpAddr::from(std::net::Ipv6Addr::LOCALHOST), 128),
            ],
        }
    }
}

/// Accepts forward-proxy connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    opts: ServerOptions,
    limit: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
) {
    let o = opts.clone();
    let stop = shutdown.clone();
    accept_loop(
        listener,
        &opts,
        limit,
        shutdown,
        true,
        move |stream, peer| serve_conn(stream, peer, state.clone(), o.clone(), stop.clone()),
    )
    .await
}

/// The accept loop both listeners share: refuses peers outside `listen.allow` and
/// connections beyond the limit (answering 403 / 503 when `answer_refusals`, else just
/// closing), and runs `handle` for the rest, each holding a permit while it lasts.
pub async fn accept_loop<H, F>(
    listener: TcpListener,
    opts: &ServerOptions,
    limit: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
    answer_refusals: bool,
    handle: H,
) where
    H: Fn(TcpStream, SocketAddr) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !allowed(&opts.allow, peer.ip()) {
            tracing::warn!(%peer, "refused: not in listen.allow");
            if answer_refusals {
                tokio::spawn(forbid(stream));
            }
            continue;
        }
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; refusing");
            if answer_refusals {
                tokio::spawn(refuse(stream));
            }
            continue;
        };
        let conn = handle(stream, peer);
        tokio::spawn(async move {
            conn.await;
            drop(permit);
        });
    }
}

async fn refuse(mut stream: TcpStream) {
    let msg = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 40\r\nConnection: close\r\nRetry-After: 1\r\n\r\nmeshcache: too many connections, retry\n\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(msg)).await;
}

async fn forbid(mut stream: TcpStream) {
    let msg = b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 49\r\nConnection: close\r\n\r\nmeshcache: your network is not in listen.allow\n\n\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(msg)).await;
}

async fn serve_conn(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    opts: ServerOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(HeadDeadline::new(stream, opts.header_read_timeout));
    let svc = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(crate::edge::handle(state, peer, req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // hyper's head timer also covers the idle time between keep-alive requests.
        .header_read_timeout(opts.idle_timeout)
        .keep_alive(true)
        .max_buf_size(opts.max_header_bytes.max(8192));
    let conn = builder.serve_connection(io, svc).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, "connection: {e}");
            }
        }
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_networks() {
        let allow = vec![
            (IpAddr::from([10, 1, 0, 0]), 16),
            (IpAddr::from(std::net::Ipv6Addr::LOCALHOST), 128),
        ];
        assert!(allowed(&allow, IpAddr::from([10, 1, 200, 3])));
        assert!(!allowed(&allow, IpAddr::from([10, 2, 0, 1])));
        assert!(allowed(&allow, IpAddr::from(std::net::Ipv6Addr::LOCALHOST)));
        assert!(!allowed(&allow, IpAddr::from([127, 0, 0, 1])));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert!(allowed(&allow, mapped));
        assert!(allowed(
            &[(IpAddr::from([0, 0, 0, 0]), 0)],
            IpAddr::from([8, 8, 8, 8])
        ));
    }
}
