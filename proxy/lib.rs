//! meshcache: an on-device HTTP caching proxy (and, later, its mesh of nearby devices).
//!
//! This crate is the HTTP front and the glue. [`Proxy`] is the running server: start it
//! with [`Proxy::start`] on [`Settings`] (or on a bound listener with
//! [`Proxy::start_on`]), read its [`Proxy::addr`], stop it with [`Proxy::shutdown`].
//!
//! Modules, in the order a request meets them: [`server`] (accept, `listen.allow`,
//! limits, keep-alive) or [`transparent`] (redirected connections on a gateway),
//! [`deadline`] (request-head deadline), [`edge`] (rescue, `Cache-Status`, `Via`, access
//! log), [`connect`] (CONNECT) and [`tls`] (interception with the local CA, passthrough),
//! [`local`] (status page, CA download, PAC), [`flow`] (the cache flow), [`respond`]
//! (conditionals, HEAD, ranges), [`origin`] (the origin client, http and https).
//! [`settings`] resolves a `config::Config`; `main.rs` is the command line.

pub mod connect;
pub mod deadline;
pub mod edge;
pub mod flow;
pub mod headers;
pub mod local;
pub mod mesh_pages;
pub mod origin;
pub mod peer_body;
pub mod range;
pub mod respond;
pub mod server;
pub mod settings;
pub mod state;
pub mod tls;
pub mod transparent;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

pub use cache::{Cache, Clock, ManualClock, SystemClock};
pub use settings::Settings;

/// Errors crossing the body boundary.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every response and origin request.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body streamed from chunks.
pub fn stream_body<S, E>(s: S) -> Body
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<BoxError>,
{
    BodyExt::boxed_unsync(http_body_util::StreamBody::new(
        s.map(|r| r.map(hyper::body::Frame::data).map_err(Into::into)),
    ))
}

/// A plain-text response.
pub fn text(status: StatusCode, msg: String) -> Response<Body> {
    let mut res = Response::new(flow::full(msg));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("cannot open the cache in {0}: {1}")]
    Cache(std::path::PathBuf, #[source] cache::StoreError),
    #[error("TLS setup: {0}")]
    Tls(#[from] certs::CertError),
}

/// A running proxy.
pub struct Proxy {
    addr: SocketAddr,
    transparent_addr: Option<SocketAddr>,
    transparent_task: Option<tokio::task::JoinHandle<()>>,
    state: Arc<state::State>,
    shutdown: watch::Sender<bool>,
    limit: Arc<Semaphore>,
    max_connections: usize,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Binds `settings.listen` and starts serving.
    pub async fn start(settings: Settings) -> Result<Proxy, StartError> {
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|e| StartError::Bind(settings.listen, e))?;
        Self::start_on(settings, listener, Arc::new(SystemClock)).await
    }

    /// Starts serving on an already bound listener (tests bind port 0), with a clock.
    pub async fn start_on(
        settings: Settings,
        listener: TcpListener,
        clock: Arc<dyn Clock>,
    ) -> Result<Proxy, StartError> {
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Bind(settings.listen, e))?;
        let origin = origin::Origin::new(settings.origin.clone())?;
        let ca = Arc::new(certs::Ca::load_or_create(&settings::ca_dir(
            &settings.data_dir,
        ))?);
        let learned = settings.data_dir.join("learned-passthrough.txt");
        let t = &settings.tls;
        let tls = tls::Tls::new(
            t.intercept,
            ca,
            t.passthrough.clone(),
            learned,
            t.learned_ttl,
        );
        let cache = Cache::open(settings.cache.clone(), clock)
            .await
            .map_err(|e| StartError::Cache(settings.cache.dir.clone(), e))?;
        // The mesh is an extra: if it cannot start, the proxy serves without it.
        let mesh = match settings.mesh.clone() {
            None => None,
            Some(opts) => match mesh::Mesh::start(opts, cache.clone()).await {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::error!("the mesh could not start, serving without it: {e}");
                    None
                }
            },
        };
        let state = Arc::new(state::State {
            mesh,
            cache,
            origin,
            tls: Some(tls),
            via: headers::Via::new(instance_id()),
            counters: Default::default(),
            started: Instant::now(),
            listen: addr,
            access_log: settings.access_log,
        });
        let (tx, rx) = watch::channel(false);
        let max_connections = settings.server.max_connections;
        let limit = Arc::new(Semaphore::new(max_connections));
        let (transparent_addr, transparent_task) = match settings.transparent {
            None => (None, None),
            Some(at) => {
                let l = TcpListener::bind(at)
                    .await
                    .map_err(|e| StartError::Bind(at, e))?;
                let a = l.local_addr().map_err(|e| StartError::Bind(at, e))?;
                let t = tokio::spawn(transparent::serve(
                    l,
                    state.clone(),
                    settings.server.clone(),
                    limit.clone(),
                    rx.clone(),
                ));
                tracing::info!(addr = %a, "transparent listener");
                (Some(a), Some(t))
            }
        };
        let task = tokio::spawn(server::serve(
            listener,
            state.clone(),
            settings.server.clone(),
            limit.clone(),
            rx,
        ));
        tracing::info!(%addr, dir = %settings.cache.dir.display(), "meshcache listening");
        Ok(Proxy {
            addr,
            transparent_addr,
            transparent_task,
            state,
            shutdown: tx,
            limit,
            max_connections,
            task,
        })
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

    /// Stops accepting, lets open connections finish (up to 10 s), then closes the mesh
    /// and the cache.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        if let Some(t) = self.transparent_task {
            let _ = t.await;
        }
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            self.limit.acquire_many(self.max_connections as u32),
        )
        .await;
        if let Some(m) = &self.state.mesh {
            m.shutdown().await;
        }
        self.state.cache.shutdown().await;
    }
}

/// A random number, good enough for identifiers (multipart boundaries, the `Via`
/// pseudonym), not for secrets: std's per-process random hash keys, mixed with the time.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

fn instance_id() -> u32 {
    random_u64() as u32
}
