//! What the mesh benches share: an in-process origin of generated bodies that counts what
//! it serves, in-process devices (a proxy, optionally with the mesh on loopback) and a
//! small HTTP/1.1 client that streams bodies and counts their bytes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use meshcache::{Proxy, Settings, SystemClock};
use tokio::net::{TcpListener, TcpStream};

/// Bodies are generated this much at a time.
const CHUNK: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------
// Origin

/// What the origin serves at a path: `(size, id)`; bodies of different ids differ (so
/// they have different hashes in the body store), `None` is a 404.
pub type Route = Arc<dyn Fn(&str) -> Option<(u64, u64)> + Send + Sync>;

/// An in-process origin on 127.0.0.1:0 serving generated bodies with
/// `cache-control: max-age=3600`, counting GET requests and body bytes sent.
pub struct Origin {
    pub addr: SocketAddr,
    requests: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Origin {
    pub async fn start(route: Route) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let base: Arc<[u8]> = (0..CHUNK as u64)
            .map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8)
            .collect();
        let (rq, by) = (requests.clone(), bytes.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (route, base, rq, by) = (route.clone(), base.clone(), rq.clone(), by.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let r = answer(&req, &route, &base, &rq, &by);
                        async move { Ok::<_, Infallible>(r) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Origin {
            addr,
            requests,
            bytes,
        }
    }

    /// `http://<origin><path>`, for absolute-form requests through a proxy.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// (GET requests, body bytes sent) so far.
    pub fn served(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

type OriginBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn answer(
    req: &Request<Incoming>,
    route: &Route,
    base: &Arc<[u8]>,
    requests: &Arc<AtomicU64>,
    bytes: &Arc<AtomicU64>,
) -> Response<OriginBody> {
    let Some((size, id)) = route(req.uri().path()) else {
        return Response::builder()
            .status(404)
            .body(Empty::new().boxed_unsync())
            .unwrap();
    };
    let head = Response::builder()
        .header("content-type", "application/octet-stream")
        .header("cache-control", "max-age=3600")
        .header("content-length", size);
    if req.method() != hyper::Method::GET {
        return head.body(Empty::new().boxed_unsync()).unwrap();
    }
    requests.fetch_add(1, Ordering::Relaxed);
    let (base, bytes) = (base.clone(), bytes.clone());
    let chunks = futures_util::stream::unfold(0u64, move |pos| {
        let (base, bytes) = (base.clone(), bytes.clone());
        async move {
            if pos >= size {
                return None;
            }
            let n = (size - pos).min(CHUNK as u64) as usize;
            let mut v = base[..n].to_vec();
            // Stamp the id and the chunk number, so bodies and chunks differ.
            let stamp = ((id << 32) | (pos / CHUNK as u64)).to_le_bytes();
            for (b, s) in v.iter_mut().zip(stamp) {
                *b ^= s;
            }
            bytes.fetch_add(n as u64, Ordering::Relaxed);
            Some((
                Ok::<_, Infallible>(Frame::data(Bytes::from(v))),
                pos + n as u64,
            ))
        }
    });
    head.body(StreamBody::new(chunks.boxed()).boxed_unsync())
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Devices

/// One device: an in-process proxy with its own temporary data directory.
pub struct Device {
    pub proxy: Proxy,
    pub dir: tempfile::TempDir,
}

impl Device {
    /// Starts a proxy on 127.0.0.1:0. With `group`, the mesh runs on a loopback UDP port,
    /// without mDNS, in that group, knowing `peers` (tickets); without, there is no mesh.
    pub async fn start(group: Option<&mesh::Group>, peers: &[String]) -> Device {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Settings::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        s.access_log = false;
        if let Some(g) = group {
            let mesh_dir = dir.path().join("mesh");
            std::fs::create_dir_all(&mesh_dir).expect("mesh dir");
            mesh::Groups::open(&mesh_dir)
                .and_then(|gs| gs.add(g))
                .expect("write the group");
            let mut m = mesh::Options::new(mesh_dir);
            m.bind = "127.0.0.1:0".parse().unwrap();
            m.mdns = false;
            m.peers = peers.to_vec();
            s.mesh = Some(m);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let proxy = Proxy::start_on(s, listener, Arc::new(SystemClock))
            .await
            .expect("start proxy");
        if group.is_some() && proxy.mesh().is_none() {
            panic!("the mesh did not start (the proxy logs why with RUST_LOG=error)");
        }
        Device { proxy, dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr()
    }

    pub fn mesh(&self) -> &mesh::Mesh {
        self.proxy.mesh().expect("this device runs the mesh")
    }

    /// Shuts the proxy down, then removes its data directory.
    pub async fn stop(self) {
        self.proxy.shutdown().await;
        drop(self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// Client

/// A response whose body was read to the end.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub cache_status: String,
    /// Body bytes received.
    pub bytes: u64,
    /// From sending the request to the first body byte.
    pub ttfb: Duration,
}

/// One HTTP/1.1 connection to a proxy (keep-alive).
pub struct Conn {
    send: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Conn, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Conn { send })
    }

    /// Absolute-form GET of `url`; reads the body to the end, counting its bytes.
    pub async fn get(&mut self, url: &str) -> Result<Got, String> {
        self.request(hyper::Method::GET, url).await
    }

    /// Absolute-form HEAD of `url`.
    pub async fn head(&mut self, url: &str) -> Result<Got, String> {
        self.request(hyper::Method::HEAD, url).await
    }

    async fn request(&mut self, method: hyper::Method, url: &str) -> Result<Got, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        self.send
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", host)
            .body(Empty::new())
            .unwrap();
        let start = Instant::now();
        let res = self
            .send
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let mut got = Got {
            status: res.status().as_u16(),
            cache_status: res
                .headers()
                .get("cache-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned(),
            bytes: 0,
            ttfb: Duration::ZERO,
        };
        let mut body = res.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("body after {} bytes: {e}", got.bytes))?;
            if let Some(d) = frame.data_ref() {
                if got.bytes == 0 {
                    got.ttfb = start.elapsed();
                }
                got.bytes += d.len() as u64;
            }
        }
        Ok(got)
    }
}

/// GET on a new connection.
pub async fn get_once(addr: SocketAddr, url: &str) -> Result<Got, String> {
    Conn::open(addr).await?.get(url).await
}

/// Polls with HEAD until `url` is a plain hit on the proxy at `addr` (its body committed
/// to the body store, not a collapsed hit on a fill still being imported).
pub async fn wait_hit(addr: SocketAddr, url: &str, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        match Conn::open(addr).await?.head(url).await {
            Ok(g) if g.cache_status.contains("hit") && !g.cache_status.contains("collapsed") => {
                return Ok(())
            }
            Ok(g) => last = g.cache_status,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!(
        "{url} not a plain hit within {within:?} (last: {last:?})"
    ))
}

/// The class of a response by its `Cache-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// `hit` (collapsed hits included): served by this device.
    Local,
    /// `peer=`: the body came from another device.
    Peer,
    /// Anything else: the origin.
    Origin,
}

impl Source {
    pub fn of(cache_status: &str) -> Source {
        if cache_status.contains("peer=") {
            Source::Peer
        } else if cache_status.contains("; hit") {
            Source::Local
        } else {
            Source::Origin
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Source::Local => "local hit",
            Source::Peer => "peer",
            Source::Origin => "origin",
        }
    }
}
