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
//!   [`passthrough`] (which hosts are tunnelled) serve `CONNECT` and redirected TLS.
//! - [`edge`]: routing, rescue, `Cache-Status`, `Via`, the access log.

pub(crate) mod connect;
pub(crate) mod deadline;
pub(crate) mod edge;
pub(crate) mod forward;
pub(crate) mod intercept;
pub(crate) mod passthrough;
pub(crate) mod stack;
pub(crate) mod transparent;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::client::Client;

/// Limits of the client side. The defaults are those of `config::Listen`.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Connections served at once, all clients together; more are answered 503 and closed.
    pub max_connections: usize,
    /// Connections one client address may hold at once; more are answered 503.
    pub max_connections_per_client: usize,
    /// Largest request head; larger gets 431. Also h2's header list limit.
    pub max_header_bytes: usize,
    /// A connection must deliver a whole request head within this of being accepted (and
    /// each later head within this of its first byte); else it is closed.
    pub header_read_timeout: Duration,
    /// How long an idle keep-alive connection is kept.
    pub idle_timeout: Duration,
    /// Concurrent streams on one h2 connection.
    pub h2_max_concurrent_streams: u32,
    /// Client networks served; others are refused with 403.
    pub allow: Vec<IpNet>,
    /// Admin clients: the pages that reveal secrets or change state, and local
    /// destinations, are theirs only.
    pub admin: Vec<IpNet>,
}

/// True when `ip` (IPv4-mapped IPv6 read as IPv4) lies in one of the networks.
pub fn allowed(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    nets.iter().any(|n| n.contains(&ip))
}

/// Connection permits: one semaphore for all, a count per client address.
pub(crate) struct Permits {
    all: Arc<Semaphore>,
    max: usize,
    per_client_max: usize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every permit is taken.
    Full,
    /// This client address holds `max_connections_per_client` already.
    ClientFull,
}

/// The permits one connection holds; released when the last [`Client`] clone is dropped.
struct Held {
    permits: Arc<Permits>,
    ip: IpAddr,
    _all: OwnedSemaphorePermit,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut map = self
            .permits
            .per_client
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Permits {
    pub(crate) fn new(max: usize, per_client_max: usize) -> Arc<Self> {
        Arc::new(Self {
            all: Arc::new(Semaphore::new(max)),
            max,
            per_client_max: per_client_max.max(1),
            per_client: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a permit for a connection from `ip`.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Held, Refusal> {
        // The map's lock is std's: nothing awaits while it is held.
        let mut map = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= self.per_client_max {
            return Err(Refusal::ClientFull);
        }
        let Ok(all) = self.all.clone().try_acquire_owned() else {
            if *n == 0 {
                map.remove(&ip);
            }
            return Err(Refusal::Full);
        };
        *n += 1;
        Ok(Held {
            permits: self.clone(),
            ip,
            _all: all,
        })
    }

    /// Connections open now.
    pub(crate) fn in_use(&self) -> usize {
        self.max - self.all.available_permits()
    }

    /// Waits until every connection has ended (or `within` has passed).
    pub(crate) async fn drain(&self, within: Duration) -> bool {
        tokio::time::timeout(within, self.all.acquire_many(self.max as u32))
            .await
            .is_ok()
    }
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
            tracing::warn!(%peer, "refused: not in listen.allow");
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
                tracing::warn!(%peer, "refused: {text}");
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

    #[test]
    fn one_client_cannot_take_every_permit() {
        let p = Permits::new(4, 2);
        let a = IpAddr::from([127, 0, 0, 2]);
        let b = IpAddr::from([127, 0, 0, 3]);
        let a1 = p.admit(a).unwrap();
        let _a2 = p.admit(a).unwrap();
        assert_eq!(p.admit(a).err(), Some(Refusal::ClientFull));
        let _b1 = p.admit(b).unwrap();
        let _b2 = p.admit(b).unwrap();
        assert_eq!(p.in_use(), 4);
        drop(a1);
        assert_eq!(p.in_use(), 3);
        let _a3 = p.admit(a).unwrap();
        assert_eq!(
            p.admit(IpAddr::from([127, 0, 0, 4])).err(),
            Some(Refusal::Full)
        );
    }
}
