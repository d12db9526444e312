//! Who sent a request: the client's address, whether it is an admin client
//! (`admin.allow`), and the hold on its connection's permits. The listeners put a
//! [`Client`] into every request's extensions; the flow and the admin pages read it, and a
//! `CONNECT` moves it into the tunnel it opens, so the permits last as long as the tunnel.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The client of one connection. Cheap to clone; every clone keeps the connection's
/// permits (see `listen::Permits`) until the last one is dropped.
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
