//! Who sent a request: the client's address, whether it is an admin client
//! (`admin.allow`), and the hold on its connection's permits. The listeners put a
//! [`Client`] into every request's extensions; the flow and the admin pages read it, and a
//! `CONNECT` moves it into the tunnel it opens, so the permits last as long as the tunnel.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The client of one connection. Cheap to clone; every clone keeps the connection's
/// permits (see [`Permits`]) until the last one is dropped.
#[derive(Clone)]
pub struct Client {
    /// The client's address (for transparent connections, the passenger's own).
    pub addr: SocketAddr,
    /// True for clients in `admin.allow`: they see the pages that reveal secrets or change
    /// state, and may reach local destinations.
    pub admin: bool,
    hold: Arc<dyn Send + Sync>,
    head_deadline: Arc<AtomicBool>,
}

impl Client {
    /// A client holding `hold` (the connection's permits) for its lifetime.
    pub(crate) fn new(addr: SocketAddr, admin: bool, hold: Arc<dyn Send + Sync>) -> Self {
        Self {
            addr,
            admin,
            hold,
            head_deadline: Arc::new(AtomicBool::new(true)),
        }
    }

    /// The same client on a connection inside this one (an intercepted tunnel): the same
    /// permits, its own head deadline.
    pub(crate) fn inner(&self) -> Self {
        Self {
            head_deadline: Arc::new(AtomicBool::new(true)),
            ..self.clone()
        }
    }

    /// The client's IP address (an IPv4-mapped IPv6 address as IPv4).
    pub fn ip(&self) -> IpAddr {
        self.addr.ip().to_canonical()
    }

    /// Turns the request-head deadline of this connection off: its bytes are no longer
    /// HTTP heads (a `CONNECT` tunnel).
    pub(crate) fn end_head_deadline(&self) {
        self.head_deadline.store(false, Ordering::Relaxed);
    }

    /// The switch the connection's head deadline reads.
    pub(crate) fn head_deadline_switch(&self) -> Arc<AtomicBool> {
        self.head_deadline.clone()
    }

    /// Keeps the connection's permits alive as long as the returned value lives.
    pub(crate) fn hold(&self) -> Arc<dyn Send + Sync> {
        self.hold.clone()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("admin", &self.admin)
            .finish()
    }
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
pub(crate) struct Held {
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
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Held, Refusal> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
