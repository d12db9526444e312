//! The one server stack. Forward, intercepted (HTTP/1.1 and h2) and transparent connections
//! are all served here, with the same limits: the largest request head, the head deadline
//! from accept, the keep-alive idle timeout, h2's stream and header-list limits, and a
//! graceful shutdown that lets requests in flight finish (up to [`GRACE`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::deadline::{HeadDeadline, IdleTimeout};
use super::ServerOptions;
use crate::client::Client;
use crate::http::Body;

/// How long a shutdown waits for a connection's requests in flight.
pub(crate) const GRACE: Duration = Duration::from_secs(5);

/// Where the requests of a connection go.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// Forward-proxy requests: absolute-form (or origin-form, for the proxy itself).
    AsSent,
    /// Decrypted requests of an intercepted tunnel to this authority, under `https://`.
    Https(http::uri::Authority),
    /// Redirected plain requests: their `Host`, else the address the client meant.
    Redirected(SocketAddr),
}

/// What serves each request of a connection (the edge, with the connection's target).
pub(crate) type Handler =
    Arc<dyn Fn(Request<Incoming>) -> BoxFuture<'static, Response<Body>> + Send + Sync>;

/// The per-connection context every served connection gets.
#[derive(Clone)]
pub(crate) struct Conn {
    pub client: Client,
    pub opts: ServerOptions,
    pub shutdown: watch::Receiver<bool>,
    /// When the connection was accepted (or, inside a tunnel, decrypted): the first
    /// request head is due `header_read_timeout` after it.
    pub accepted: tokio::time::Instant,
}

fn service(
    client: Client,
    handler: Handler,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = BoxFuture<'static, Result<Response<Body>, Infallible>>,
> + Clone {
    service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(client.clone());
        let fut = handler(req);
        Box::pin(async move { Ok::<_, Infallible>(fut.await) })
            as BoxFuture<'static, Result<Response<Body>, Infallible>>
    })
}

/// Serves HTTP/1.1 (with upgrades, for `CONNECT`) on a just-accepted or just-decrypted
/// connection.
pub(crate) async fn http1<IO>(io: IO, conn: Conn, handler: Handler)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        client,
        opts,
        mut shutdown,
        accepted,
    } = conn;
    let peer = client.addr;
    let io = TokioIo::new(HeadDeadline::new(
        io,
        opts.header_read_timeout,
        client.head_deadline_switch(),
        accepted,
    ));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // hyper's head timer also covers the idle time between keep-alive requests; the
        // short head deadline is HeadDeadline's.
        .header_read_timeout(opts.idle_timeout)
        .keep_alive(true)
        .max_buf_size(opts.max_header_bytes.max(8192));
    let conn = builder
        .serve_connection(io, service(client, handler))
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, "connection: {e}");
            }
        }
        _ = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GRACE, conn).await;
        }
    }
}

/// Serves h2 on a decrypted connection (ALPN `h2`).
pub(crate) async fn http2<IO>(io: IO, conn: Conn, handler: Handler)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        client,
        opts,
        mut shutdown,
        ..
    } = conn;
    let peer = client.addr;
    let io = TokioIo::new(IdleTimeout::new(io, opts.idle_timeout));
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(opts.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(opts.max_header_bytes).unwrap_or(u32::MAX));
    let conn = builder.serve_connection(io, service(client, handler));
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, "h2 connection: {e}");
            }
        }
        _ = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GRACE, conn).await;
        }
    }
}

/// Copies a tunnel both ways until either side closes, nothing moves for `idle`, or the
/// proxy shuts down (after [`GRACE`]).
pub(crate) async fn tunnel<A, B>(
    client: A,
    mut upstream: B,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut client = IdleTimeout::new(client, idle);
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::select! {
        r = copy => r,
        _ = async {
            stopped(&mut shutdown).await;
            tokio::time::sleep(GRACE).await;
        } => Err(std::io::Error::other("shutting down")),
    }
}

/// Completes when the proxy shuts down (or its handle is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: drop it here.
    let _ = shutdown.wait_for(|stop| *stop).await;
}
