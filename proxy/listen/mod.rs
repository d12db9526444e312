//! The front door: every client connection, whatever listener it came in on, goes through
//! the same checks and the same server stack.
//!
//! - [`accept_loop`]: refuses addresses outside `listen.allow`, then takes a connection
//!   permit ([`Permits`]: `max_connections` in all, `max_connections_per_client` per
//!   address) that the connection holds for its whole life — through a `CONNECT` upgrade, a
//!   blind tunnel or an interception included — so one client cannot take every permit and
//!   shutdown waits for every kind of connection.
//! - [`stack`]: the one configured hyper builder (HTTP/1.1 and h2): header size, the head
//!   deadline counted from accept ([`deadline`]), the idle timeout, h2 limits, graceful
//!   shutdown.
//! - [`forward`] (absolute-form and `CONNECT`), [`transparent`] (redirected connections):
//!   the two listeners; [`connect`] (tunnels), [`intercept`] (TLS with the local CA) and
//!   `crate::tls` (which hosts are tunnelled) serve `CONNECT` and redirected TLS.
//! - [`edge`]: routing, rescue, `Cache-Status`, `Via`, the access log.

pub(crate) mod connect;
pub(crate) mod deadline;
pub(crate) mod edge;
pub(crate) mod forward;
pub(crate) mod intercept;
pub(crate) mod stack;
pub(crate) mod transparent;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::client::{Client, Permits, Refusal};
use crate::settings::ServerOptions;

/// True when `ip` (IPv4-mapped IPv6 read as IPv4) lies in one of the networks.
pub fn allowed(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    nets.iter().any(|n| n.contains(&ip))
}

/// What the accept loop needs besides the listener.
#[derive(Clone)]
pub(crate) struct Front {
    pub opts: ServerOptions,
    pub permits: Arc<Permits>,
    pub shutdown: watch::Receiver<bool>,
}

/// The accept loop both listeners share: refuses peers outside `listen.allow` and
/// connections beyond the limits (answering 403 / 503 when `answer_refusals`, else just
/// closing), and runs `handle` for the rest, each with a [`Client`] holding its permits.
pub(crate) async fn accept_loop<H, F>(
    listener: TcpListener,
    front: Front,
    answer_refusals: bool,
    handle: H,
) where
    H: Fn(TcpStream, Client) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let mut shutdown = front.shutdown.clone();
    let mut refusals = RefusalLog::default();
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
        let ip = peer.ip().to_canonical();
        if !allowed(&front.opts.allow, ip) {
            refusals.log(peer, "not in listen.allow");
            if answer_refusals {
                tokio::spawn(answer(stream, FORBIDDEN));
            }
            continue;
        }
        let held = match front.permits.admit(ip) {
            Ok(h) => h,
            Err(why) => {
                let (msg, text) = match why {
                    Refusal::Full => (FULL, "connection limit (listen.max_connections) reached"),
                    Refusal::ClientFull => (
                        CLIENT_FULL,
                        "this client holds listen.max_connections_per_client connections",
                    ),
                };
                refusals.log(peer, text);
                if answer_refusals {
                    tokio::spawn(answer(stream, msg));
                }
                continue;
            }
        };
        let client = Client::new(peer, allowed(&front.opts.admin, ip), Arc::new(held));
        tokio::spawn(handle(stream, client));
    }
}

/// Refusals are logged at most once a second, with a count of those left out: a flood of
/// connections must not become a flood of log lines.
#[derive(Default)]
struct RefusalLog {
    last: Option<std::time::Instant>,
    left_out: u64,
}

impl RefusalLog {
    fn log(&mut self, peer: std::net::SocketAddr, why: &str) {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.left_out += 1;
            return;
        }
        if self.left_out > 0 {
            tracing::warn!(%peer, left_out = self.left_out, "refused: {why} (and {} more refusals in the last second, not logged)", self.left_out);
        } else {
            tracing::warn!(%peer, "refused: {why}");
        }
        self.last = Some(now);
        self.left_out = 0;
    }
}

const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 40\r\nConnection: close\r\nRetry-After: 1\r\n\r\nmeshcache: too many connections, retry\n\n";
const CLIENT_FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 69\r\nConnection: close\r\nRetry-After: 1\r\n\r\nmeshcache: too many connections from your address (per-client limit)\n";
const FORBIDDEN: &[u8] = b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 49\r\nConnection: close\r\n\r\nmeshcache: your network is not in listen.allow\n\n\n";

async fn answer(mut stream: TcpStream, msg: &'static [u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(msg)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_networks() {
        let allow: Vec<IpNet> = vec!["10.1.0.0/16".parse().unwrap(), "::1/128".parse().unwrap()];
        assert!(allowed(&allow, IpAddr::from([10, 1, 200, 3])));
        assert!(!allowed(&allow, IpAddr::from([10, 2, 0, 1])));
        assert!(allowed(&allow, IpAddr::from(std::net::Ipv6Addr::LOCALHOST)));
        assert!(!allowed(&allow, IpAddr::from([127, 0, 0, 1])));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert!(allowed(&allow, mapped));
        assert!(allowed(
            &["0.0.0.0/0".parse().unwrap()],
            IpAddr::from([8, 8, 8, 8])
        ));
    }
}
