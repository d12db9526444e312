//! meshcache: an on-device HTTP caching proxy that shares what it has cached with nearby
//! devices.
//!
//! This crate is the HTTP front and the glue. Embedding it takes an [`App`] (mini-redis
//! style): give it [`Settings`] (from a `config::Config` with [`Settings::from_config`], or
//! [`Settings::new`] for every default), optionally bound listeners and a [`Clock`], then
//! [`App::start`] returns the running [`Proxy`] (its addresses, [`Proxy::shutdown`]) or
//! [`App::run`] serves until a shutdown future completes.
//!
//! Modules, in the order a request meets them:
//! - `listen/`: the front door — accept, `listen.allow`, connection permits (all and per
//!   client), the one server stack (HTTP/1.1 and h2 with their limits), the forward and
//!   transparent listeners, `CONNECT` tunnels, interception with the local CA, passthrough;
//!   the edge (routing, rescue, `Cache-Status`, `Via`, access log).
//! - `admin/`: requests for the proxy itself — CA pages, install steps, PAC, the public
//!   summary for everyone; the full status, group tickets and `/share` for admin clients.
//! - `flow/`: the cache flow, a [`Decision`](flow) then its execution: lookup, miss, lead,
//!   peers, revalidation, invalidation; `Phase` says how a response was produced.
//! - `http/`: stateless helpers — the body type, headers, ranges, building responses.
//! - `origin/`: the origin client and the destination policy it dials through.
//! - `state`, `client`: what handlers share; who sent a request.
//! - `qr`: QR codes of tickets, as inline SVG for the pages and as text for a terminal.
//! - [`settings`]: `config::Config` → the options of each part. `main.rs` and `cli/` are the
//!   command line (bin only).

mod admin;
mod client;
mod flow;
mod http;
mod listen;
mod origin;
#[doc(hidden)]
pub mod qr;
pub mod settings;
mod state;
mod sync;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use admin::LOCAL_HOST;
pub use cache::{Cache, Clock, ManualClock, SystemClock};
pub use origin::destination::DestinationOptions;
pub use origin::upstream::{NoProxyEntry, Upstream, UpstreamOptions};
pub use origin::OriginOptions;
pub use settings::ServerOptions;
pub use settings::{Settings, TlsSettings};

#[doc(hidden)]
pub use crate::http::range::{first_byte, if_range_matches, parse as parse_range, Ranges};
#[doc(hidden)]
pub use crate::sync::feed::{parse as parse_feed, Item as FeedItem};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("cannot open the cache in {0}: {1}")]
    Cache(std::path::PathBuf, #[source] cache::StoreError),
    #[error("TLS setup: {0}")]
    Tls(#[from] certs::CertError),
    #[error("{0}")]
    Upstream(String),
}

/// How long [`Proxy::shutdown`] waits for open connections (tunnels included).
const DRAIN: Duration = Duration::from_secs(10);

/// Builds and starts a proxy.
pub struct App {
    settings: Settings,
    clock: Arc<dyn Clock>,
    forward: Option<TcpListener>,
    transparent: Option<TcpListener>,
}

impl App {
    /// A proxy on `settings`, with the system clock; listeners are bound at start from
    /// `settings.listen` and `settings.transparent` unless given.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            clock: Arc::new(SystemClock),
            forward: None,
            transparent: None,
        }
    }

    /// The clock the cache reads (tests move a [`ManualClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Serves forward-proxy clients on this already bound listener (tests bind port 0).
    pub fn forward_listener(mut self, listener: TcpListener) -> Self {
        self.forward = Some(listener);
        self
    }

    /// Serves redirected connections on this already bound listener.
    pub fn transparent_listener(mut self, listener: TcpListener) -> Self {
        self.transparent = Some(listener);
        self
    }

    /// Starts serving; the returned [`Proxy`] runs until [`Proxy::shutdown`].
    pub async fn start(self) -> Result<Proxy, StartError> {
        let App {
            settings,
            clock,
            forward,
            transparent,
        } = self;
        let forward = match forward {
            Some(l) => l,
            None => bind(settings.listen).await?,
        };
        let transparent = match (transparent, settings.transparent) {
            (Some(l), _) => Some(l),
            (None, Some(at)) => Some(bind(at).await?),
            (None, None) => None,
        };
        let addr = forward
            .local_addr()
            .map_err(|e| StartError::Bind(settings.listen, e))?;
        let transparent_addr = transparent.as_ref().and_then(|l| l.local_addr().ok());
        let own = own_addresses(addr, transparent_addr);
        // An upstream proxy that is this proxy itself would loop (checked now that the
        // listeners are bound: a port 0 is known only now).
        let mut origin_opts = settings.origin.clone();
        let listeners: Vec<SocketAddr> = std::iter::once(addr).chain(transparent_addr).collect();
        origin_opts
            .upstream
            .drop_loops(&listeners, &own)
            .await
            .map_err(StartError::Upstream)?;
        for (kind, up) in [
            ("http://", &origin_opts.upstream.http),
            ("https://", &origin_opts.upstream.https),
        ] {
            if let Some(up) = up {
                tracing::info!(
                    "{kind} origins through the upstream proxy {} ({})",
                    up.authority(),
                    up.from
                );
            }
        }
        let destinations = origin::destination::Destinations::new(
            settings.destinations.clone(),
            settings.cache.shared,
            own,
        );
        let origin = origin::Origin::new(origin_opts, &destinations)?;
        let ca = Arc::new(certs::Ca::load_or_create(&settings::ca_dir(
            &settings.data_dir,
        ))?);
        let t = &settings.tls;
        let tls = tls::Tls::new(
            t.intercept,
            ca,
            t.passthrough.clone(),
            settings.data_dir.join("learned-passthrough.txt"),
            t.learned_ttl,
        );
        let cache = Cache::open(settings.cache.clone(), clock)
            .await
            .map_err(|e| StartError::Cache(settings.cache.dir.clone(), e))?;
        // The mesh is an extra: if it cannot start, the proxy serves without it (and the
        // status page says why). A taken port is not such a failure: `Mesh::start` binds
        // another one.
        let (mesh, mesh_error) = match settings.mesh.clone() {
            None => (None, None),
            Some(opts) => match mesh::Mesh::start(opts, cache.clone()).await {
                Ok(m) => (Some(m), None),
                Err(e) => {
                    tracing::error!("the mesh could not start, serving without it: {e}");
                    (None, Some(e.to_string()))
                }
            },
        };
        let (tx, rx) = watch::channel(false);
        let opts = settings.server.clone();
        let permits = client::Permits::new(opts.max_connections, opts.max_connections_per_client);
        let engine = (!settings.sync.feed.is_empty())
            .then(|| Arc::new(sync::engine::Engine::new(settings.sync.clone())));
        let state = Arc::new(state::State {
            mesh,
            mesh_error,
            cache,
            origin,
            tls: Some(tls),
            via: http::headers::Via::new(http::random_u64() as u32),
            counters: Default::default(),
            latency: Default::default(),
            started: Instant::now(),
            listen: addr,
            access_log: settings.access_log,
            destinations,
            server: opts.clone(),
            shutdown: rx.clone(),
            permits: permits.clone(),
            digest_hosts: Default::default(),
            sync: engine.as_ref().map(|e| e.figures.clone()),
        });
        if let Some(engine) = engine {
            sync::engine::spawn(state.clone(), engine);
        }
        let front = listen::Front {
            opts,
            permits: permits.clone(),
            shutdown: rx,
        };
        let transparent_task = transparent.map(|l| {
            tracing::info!(addr = ?transparent_addr, "transparent listener");
            tokio::spawn(listen::transparent::serve(l, state.clone(), front.clone()))
        });
        let task = tokio::spawn(listen::forward::serve(forward, state.clone(), front));
        tracing::info!(%addr, dir = %settings.cache.dir.display(), "meshcache listening");
        Ok(Proxy {
            addr,
            transparent_addr,
            transparent_task,
            state,
            shutdown: tx,
            permits,
            task,
        })
    }

    /// Serves until `shutdown` completes, then shuts down cleanly.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
        let proxy = self.start().await?;
        shutdown.await;
        proxy.shutdown().await;
        Ok(())
    }
}

async fn bind(at: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(at)
        .await
        .map_err(|e| StartError::Bind(at, e))
}

/// The proxy's own addresses, which clients that are not admins may not make it connect
/// to: its listeners' and every interface's (a gateway's LAN address and its services).
fn own_addresses(forward: SocketAddr, transparent: Option<SocketAddr>) -> Vec<std::net::IpAddr> {
    let mut own = mesh::interface_addrs();
    for a in std::iter::once(forward).chain(transparent) {
        if !a.ip().is_unspecified() {
            own.push(a.ip());
        }
    }
    own.sort();
    own.dedup();
    own
}

/// A running proxy.
pub struct Proxy {
    addr: SocketAddr,
    transparent_addr: Option<SocketAddr>,
    transparent_task: Option<tokio::task::JoinHandle<()>>,
    state: Arc<state::State>,
    shutdown: watch::Sender<bool>,
    permits: Arc<client::Permits>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Binds `settings.listen` and starts serving (`App::new(settings).start()`).
    pub async fn start(settings: Settings) -> Result<Proxy, StartError> {
        App::new(settings).start().await
    }

    /// Starts serving on an already bound listener, with a clock.
    pub async fn start_on(
        settings: Settings,
        listener: TcpListener,
        clock: Arc<dyn Clock>,
    ) -> Result<Proxy, StartError> {
        App::new(settings)
            .forward_listener(listener)
            .clock(clock)
            .start()
            .await
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The transparent listener's address, if one is configured.
    pub fn transparent_addr(&self) -> Option<SocketAddr> {
        self.transparent_addr
    }

    /// The cache (for stats, and for tests).
    pub fn cache(&self) -> &Cache {
        &self.state.cache
    }

    /// The mesh, when it runs.
    pub fn mesh(&self) -> Option<&mesh::Mesh> {
        self.state.mesh.as_ref()
    }

    /// Why the mesh is off although the settings ask for it (it could not start).
    pub fn mesh_error(&self) -> Option<&str> {
        self.state.mesh_error.as_deref()
    }

    /// Client connections open now, tunnels and interceptions included.
    pub fn connections(&self) -> usize {
        self.permits.in_use()
    }

    /// Stops accepting, lets open connections finish — keep-alive connections end after
    /// their request in flight, tunnels are closed after a short grace — waiting up to 10 s
    /// in all, then closes the mesh and the cache.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        if let Some(t) = self.transparent_task {
            let _ = t.await;
        }
        if !self.permits.drain(DRAIN).await {
            tracing::warn!(
                open = self.permits.in_use(),
                "connections still open after {DRAIN:?}; closing anyway"
            );
        }
        if let Some(m) = &self.state.mesh {
            m.shutdown().await;
        }
        self.state.cache.shutdown().await;
    }
}
