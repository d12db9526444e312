//! What the mesh benches share: an in-process origin of generated bodies that counts what
//! it serves (in all and per body id), in-process devices (a proxy, optionally with the
//! mesh on loopback: in a group, or only the open mesh of strangers) and a small HTTP/1.1
//! client that streams bodies and counts their bytes, or compares them byte for byte with
//! the origin's ([`Pattern`], [`Conn::get_verified`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// Extra response headers the origin sends at a path; each replaces the default header of
/// the same name (e.g. `cache-control`).
pub type Extra = Arc<dyn Fn(&str) -> Vec<(&'static str, String)> + Send + Sync>;

/// What the origin served for one body id.
#[derive(Debug, Default, Clone, Copy)]
pub struct Served {
    pub gets: u64,
    pub heads: u64,
    /// Body bytes sent.
    pub bytes: u64,
}

/// An in-process origin on 127.0.0.1:0 serving generated bodies with
/// `cache-control: max-age=3600`, counting GET requests and body bytes sent.
pub struct Origin {
    pub addr: SocketAddr,
    requests: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    by_id: Arc<Mutex<HashMap<u64, Served>>>,
}

/// What a connection of the origin needs.
#[derive(Clone)]
struct Serving {
    route: Route,
    extra: Extra,
    base: Arc<[u8]>,
    requests: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    by_id: Arc<Mutex<HashMap<u64, Served>>>,
}

/// The first 64 KiB pattern every generated body is made of.
fn base() -> Arc<[u8]> {
    (0..CHUNK as u64)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8)
        .collect()
}

/// `n` bytes of body `id` from `pos` (a multiple of [`CHUNK`]).
fn chunk(base: &[u8], id: u64, pos: u64, n: usize) -> Vec<u8> {
    let mut v = base[..n].to_vec();
    // Stamp the id and the chunk number, so bodies and chunks differ.
    let stamp = ((id << 32) | (pos / CHUNK as u64)).to_le_bytes();
    for (b, s) in v.iter_mut().zip(stamp) {
        *b ^= s;
    }
    v
}

/// The SHA-256 of the body the origin generates for `(size, id)`.
pub fn body_sha256(size: u64, id: u64) -> [u8; 32] {
    let base = base();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut pos = 0;
    while pos < size {
        let n = (size - pos).min(CHUNK as u64) as usize;
        ctx.update(&chunk(&base, id, pos, n));
        pos += n as u64;
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// What the origin's bodies are made of, to check received bodies byte for byte without
/// hashing them (a comparison per 64 KiB chunk costs the client far less than a digest).
#[derive(Clone)]
pub struct Pattern {
    base: Arc<[u8]>,
}

impl Default for Pattern {
    fn default() -> Self {
        Pattern { base: base() }
    }
}

impl Pattern {
    /// A checker of body `id` from its first byte.
    pub fn check(&self, id: u64) -> BodyCheck<'_> {
        BodyCheck {
            base: &self.base,
            id,
            pos: 0,
            first_mismatch: None,
        }
    }
}

/// Compares a body, as its bytes arrive, with the one the origin generates for its id.
pub struct BodyCheck<'a> {
    base: &'a [u8],
    id: u64,
    /// Bytes fed so far.
    pub pos: u64,
    /// Offset of the first byte that differs, if any.
    pub first_mismatch: Option<u64>,
}

impl BodyCheck<'_> {
    pub fn feed(&mut self, mut d: &[u8]) {
        while !d.is_empty() {
            let (c, off) = (self.pos / CHUNK as u64, (self.pos % CHUNK as u64) as usize);
            let n = d.len().min(CHUNK - off);
            let (seg, rest) = d.split_at(n);
            if self.first_mismatch.is_none() {
                // As in `chunk`: the base with its first 8 bytes xored with the stamp.
                let stamp = ((self.id << 32) | c).to_le_bytes();
                let want = |i: usize| self.base[i] ^ stamp.get(i).copied().unwrap_or(0);
                let head = 8usize.saturating_sub(off).min(n);
                let bad = (0..head).find(|&j| seg[j] != want(off + j)).or_else(|| {
                    (seg[head..] != self.base[off + head..off + n]).then(|| {
                        let tail = seg[head..].iter().zip(&self.base[off + head..off + n]);
                        head + tail.take_while(|(a, b)| a == b).count()
                    })
                });
                self.first_mismatch = bad.map(|j| self.pos + j as u64);
            }
            self.pos += n as u64;
            d = rest;
        }
    }
}

impl Origin {
    pub async fn start(route: Route) -> Origin {
        Origin::start_with(route, Arc::new(|_: &str| Vec::new())).await
    }

    /// An origin that also sends `extra(path)` headers.
    pub async fn start_with(route: Route, extra: Extra) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().unwrap();
        let serving = Serving {
            route,
            extra,
            base: base(),
            requests: Arc::new(AtomicU64::new(0)),
            bytes: Arc::new(AtomicU64::new(0)),
            by_id: Arc::new(Mutex::new(HashMap::new())),
        };
        let (requests, bytes, by_id) = (
            serving.requests.clone(),
            serving.bytes.clone(),
            serving.by_id.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let serving = serving.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let r = answer(&req, &serving);
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
            by_id,
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

    /// What was served for body `id` so far.
    pub fn served_id(&self, id: u64) -> Served {
        self.by_id
            .lock()
            .unwrap()
            .get(&id)
            .copied()
            .unwrap_or_default()
    }
}

type OriginBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn answer(req: &Request<Incoming>, sv: &Serving) -> Response<OriginBody> {
    let path = req.uri().path();
    let Some((size, id)) = (sv.route)(path) else {
        return Response::builder()
            .status(404)
            .body(Empty::new().boxed_unsync())
            .unwrap();
    };
    let mut head = Response::builder()
        .header("content-type", "application/octet-stream")
        .header("cache-control", "max-age=3600")
        .header("content-length", size);
    if let Some(h) = head.headers_mut() {
        for (name, value) in (sv.extra)(path) {
            h.insert(name, value.parse().expect("an extra header value"));
        }
    }
    if req.method() != hyper::Method::GET {
        if req.method() == hyper::Method::HEAD {
            sv.by_id.lock().unwrap().entry(id).or_default().heads += 1;
        }
        return head.body(Empty::new().boxed_unsync()).unwrap();
    }
    sv.requests.fetch_add(1, Ordering::Relaxed);
    sv.by_id.lock().unwrap().entry(id).or_default().gets += 1;
    let sv = sv.clone();
    let chunks = futures_util::stream::unfold(0u64, move |pos| {
        let sv = sv.clone();
        async move {
            if pos >= size {
                return None;
            }
            let n = (size - pos).min(CHUNK as u64) as usize;
            let v = chunk(&sv.base, id, pos, n);
            sv.bytes.fetch_add(n as u64, Ordering::Relaxed);
            sv.by_id.lock().unwrap().entry(id).or_default().bytes += n as u64;
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
        match group {
            Some(g) => Device::start_mesh(Some(g), |m| m.peers = peers.to_vec()).await,
            None => {
                let dir = tempfile::tempdir().expect("tempdir");
                let s = settings(&dir);
                Device::launch(dir, s).await
            }
        }
    }

    /// Starts a proxy on 127.0.0.1:0 with the mesh on loopback UDP ports (the group
    /// endpoint and the open mesh's), without mDNS, in `group` if any, then as `configure`
    /// says (open-mesh tickets, operators, ...).
    pub async fn start_mesh(
        group: Option<&mesh::Group>,
        configure: impl FnOnce(&mut mesh::Options),
    ) -> Device {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = settings(&dir);
        let mesh_dir = dir.path().join("mesh");
        std::fs::create_dir_all(&mesh_dir).expect("mesh dir");
        if let Some(g) = group {
            mesh::Groups::open(&mesh_dir)
                .and_then(|gs| gs.add(g))
                .expect("write the group");
        }
        let mut m = mesh::Options::new(mesh_dir);
        m.bind = "127.0.0.1:0".parse().unwrap();
        m.open_bind = "127.0.0.1:0".parse().unwrap();
        m.mdns = false;
        configure(&mut m);
        s.mesh = Some(m);
        let d = Device::launch(dir, s).await;
        if d.proxy.mesh().is_none() {
            panic!("the mesh did not start (the proxy logs why with RUST_LOG=error)");
        }
        d
    }

    async fn launch(dir: tempfile::TempDir, s: Settings) -> Device {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let proxy = Proxy::start_on(s, listener, Arc::new(SystemClock))
            .await
            .expect("start proxy");
        Device { proxy, dir }
    }

    /// Strangers this device has a live connection to (0 without the open mesh).
    pub fn strangers(&self) -> usize {
        self.mesh()
            .open_status()
            .map_or(0, |s| s.strangers_connected)
    }

    /// Polls until this device has at least `n` strangers connected; false after `within`.
    pub async fn wait_strangers(&self, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.strangers() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

/// A proxy's settings: every default, listening on loopback, storing in `dir`, no
/// access log.
fn settings(dir: &tempfile::TempDir) -> Settings {
    let mut s = Settings::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    s.access_log = false;
    s
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
        self.request(hyper::Method::GET, url, &[]).await
    }

    /// [`Conn::get`] with extra request headers.
    pub async fn get_with(&mut self, url: &str, headers: &[(&str, &str)]) -> Result<Got, String> {
        self.request(hyper::Method::GET, url, headers).await
    }

    /// Absolute-form HEAD of `url`.
    pub async fn head(&mut self, url: &str) -> Result<Got, String> {
        self.request(hyper::Method::HEAD, url, &[]).await
    }

    async fn request(
        &mut self,
        method: hyper::Method,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Got, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        self.send
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", host);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Empty::new()).map_err(|e| format!("{url}: {e}"))?;
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

/// A GET whose body was compared byte for byte with the origin's ([`Conn::get_verified`]).
#[derive(Debug, Default)]
pub struct Verified {
    /// From the `start` given to the last byte.
    pub elapsed: Duration,
    /// From the `start` given to the first body byte.
    pub ttfb: Duration,
    pub bytes: u64,
    pub cache_status: String,
    /// Why this is not the origin's whole body: an error, a status other than 200, a short
    /// body, the first byte that differs.
    pub problem: Option<String>,
}

impl Verified {
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    pub fn ttfb_ms(&self) -> f64 {
        self.ttfb.as_secs_f64() * 1e3
    }
}

impl Conn {
    /// Absolute-form GET of `url`, whose body should be the origin's `(size, id)`: every
    /// byte is compared with it as it arrives. Times from `start` (taken before
    /// [`Conn::open`] to include connecting).
    pub async fn get_verified(
        &mut self,
        url: &str,
        (size, id): (u64, u64),
        pattern: &Pattern,
        start: Instant,
    ) -> Verified {
        let mut v = Verified::default();
        let r = async {
            let res = self.send_get(url).await?;
            let cs = res
                .headers()
                .get("cache-status")
                .and_then(|v| v.to_str().ok());
            v.cache_status = cs.unwrap_or("-").to_owned();
            if res.status() != hyper::StatusCode::OK {
                return Err(format!("status {}", res.status()));
            }
            let mut check = pattern.check(id);
            let mut body = res.into_body();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("body after {} bytes: {e}", check.pos))?;
                if let Some(d) = frame.data_ref().filter(|d| !d.is_empty()) {
                    if check.pos == 0 {
                        v.ttfb = start.elapsed();
                    }
                    check.feed(d);
                }
            }
            v.bytes = check.pos;
            match check.first_mismatch {
                Some(at) => Err(format!("body differs from the origin's at byte {at}")),
                None if check.pos != size => Err(format!("{} bytes, {size} expected", check.pos)),
                None => Ok(()),
            }
        };
        let r = r.await;
        v.elapsed = start.elapsed();
        v.problem = r.err();
        v
    }

    /// Absolute-form GET of `url` (e.g. `http://meshcache.local/status.json`); the body.
    pub async fn get_body(&mut self, url: &str) -> Result<Bytes, String> {
        let res = self.send_get(url).await?;
        let body = res.into_body().collect().await;
        Ok(body.map_err(|e| format!("body: {e}"))?.to_bytes())
    }

    async fn send_get(&mut self, url: &str) -> Result<Response<Incoming>, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let req = Request::get(uri).header("host", host).body(Empty::new());
        let req = req.map_err(|e| format!("{url}: {e}"))?;
        self.send
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        self.send
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))
    }
}

/// GET on a new connection.
pub async fn get_once(addr: SocketAddr, url: &str) -> Result<Got, String> {
    Conn::open(addr).await?.get(url).await
}

/// GET with extra request headers on a new connection.
pub async fn get_once_with(
    addr: SocketAddr,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Got, String> {
    Conn::open(addr).await?.get_with(url, headers).await
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
