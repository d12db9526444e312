//! TLS-hits benchmark: what HTTPS interception costs on the hit path, compared with plain
//! HTTP hits through the same proxy, and what minting a leaf certificate for a new host
//! name adds to a CONNECT + TLS handshake.
//!
//! Everything runs in one process on loopback: an in-process origin serving 1 KiB bodies
//! with `cache-control: max-age=3600` for `/o/0` .. `/o/99`, over HTTPS (a leaf for
//! `localhost` / 127.0.0.1 signed by a fresh rcgen CA, given to the proxy as an extra root)
//! and over plain HTTP; an in-process proxy (tempdir data directory); and the load
//! generator, which tunnels with `CONNECT`, handshakes with tokio-rustls against the
//! proxy's CA only, and speaks HTTP/1.1 with hyper inside the tunnel. Figures are ratios
//! against a reference measured in the same run; there are no pass/fail thresholds.
//!
//! `cargo bench --bench tls_hits`; `MESHCACHE_BENCH_QUICK=1` shrinks durations and counts.

mod common;
use common::pct;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshcache::{Proxy, Settings, SystemClock};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const BODY_LEN: usize = 1024;
const PATHS: usize = 100;
/// Any single step (CONNECT, handshake, request) taking longer than this is an error,
/// so a misbehaving proxy shows up as errors rather than a hung benchmark.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// The exact `Cache-Status` of a fresh hit.
const HIT: &str = "meshcache; hit";
/// How long warm-up waits for every warmed URL to be a plain hit.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// Non-hit `Cache-Status` values with counts: (http, https).
type Tallies = (BTreeMap<String, u64>, BTreeMap<String, u64>);

struct Config {
    quick: bool,
    cores: usize,
    conns: usize,
    duration: Duration,
    mint_count: usize,
}

impl Config {
    fn from_env() -> Self {
        let (quick, cores) = (common::quick(), common::cores());
        Self {
            quick,
            cores,
            conns: common::load_connections(cores),
            duration: common::load_duration(quick),
            mint_count: if quick { 50 } else { 200 },
        }
    }
}

fn main() {
    let cfg = Config::from_env();
    common::block_on(cfg.cores, run(cfg));
}

async fn run(cfg: Config) {
    println!(
        "tls_hits: {} mode, {} cores, {} connections/workers, {} s per load run, {} B bodies",
        if cfg.quick { "quick" } else { "full" },
        cfg.cores,
        cfg.conns,
        cfg.duration.as_secs(),
        BODY_LEN
    );
    println!(
        "note: load generator (incl. its TLS client), origin and proxy run in ONE process and share the same {} cores;",
        cfg.cores
    );
    println!("      compare the ratios, not the absolute figures.");

    let dir = tempfile::tempdir().expect("tempdir");
    let origin_ca = dir.path().join("origin-ca.pem");
    // Requests that reached either origin: none should during the measured rows.
    let origin_seen = Arc::new(AtomicU64::new(0));
    let https_origin = start_origin(Some(origin_tls(&origin_ca)), origin_seen.clone()).await;
    let http_origin = start_origin(None, origin_seen.clone()).await;

    let data_dir = dir.path().join("data");
    let mut settings = Settings::new("127.0.0.1:0".parse().unwrap(), data_dir.clone());
    settings.origin.extra_roots = vec![origin_ca.clone()];
    settings.access_log = false;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let proxy = Proxy::start_on(settings, listener, Arc::new(SystemClock))
        .await
        .expect("start proxy");
    let paddr = proxy.addr();

    let ca_path = meshcache::settings::ca_dir(&data_dir).join("ca.pem");
    let clients = Clients::new(&ca_path);
    let authority = format!("localhost:{}", https_origin.port());
    let target = Target {
        proxy: paddr,
        http_origin,
        authority: authority.clone(),
    };

    // Warm the cache over both schemes: one fetch of each URL (a miss, stored), then
    // re-fetch until every URL is a plain hit. A re-fetch that comes before the entry is
    // committed to the index is served from the finished fill (`hit; detail=collapsed`).
    let mut plain = PlainConn::open(paddr).await.expect("open plain connection");
    let mut https = TlsConn::open(&target, &clients.full)
        .await
        .expect("open intercepted connection");
    let mut not_stored = (0usize, 0usize);
    for i in 0..PATHS {
        let path = format!("/o/{i}");
        let p = plain
            .get(&target.http_url(&path))
            .await
            .expect("plain warm-up request");
        let s = https
            .get(&path, &authority)
            .await
            .expect("https warm-up request");
        not_stored.0 += usize::from(!p.contains("stored"));
        not_stored.1 += usize::from(!s.contains("stored"));
    }
    let warmed = Instant::now();
    let mut passes = 0;
    let mut immediate: Option<Tallies> = None;
    let (settled, last) = loop {
        let pass = recheck(&mut plain, &mut https, &target).await;
        passes += 1;
        let clean = pass.0.is_empty() && pass.1.is_empty();
        if immediate.is_none() {
            immediate = Some(pass.clone());
        }
        if clean {
            break (Some(warmed.elapsed()), pass);
        }
        if warmed.elapsed() > SETTLE_LIMIT {
            break (None, pass);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let immediate = immediate.unwrap_or_default();
    let negotiated = https.negotiated.clone();
    drop(plain);
    drop(https);
    println!(
        "warm-up: {PATHS} URLs each over http://127.0.0.1:{}/o/N and https://{authority}/o/N through the proxy",
        http_origin.port()
    );
    println!(
        "         first fetch not reported `stored`: http {}, https {}; requests that reached the origins: {} (expected {})",
        not_stored.0,
        not_stored.1,
        origin_seen.load(Ordering::Relaxed),
        2 * PATHS
    );
    for (scheme, v) in [("http", &immediate.0), ("https", &immediate.1)] {
        if !v.is_empty() {
            println!(
                "         immediate re-fetch, {scheme}: {} of {PATHS} not `{HIT}`: {}",
                v.values().sum::<u64>(),
                tally(v)
            );
        }
    }
    println!("         intercepted connections negotiate: {negotiated}");
    match settled {
        Some(t) => println!(
            "         every warmed URL answered `{HIT}` {} ms after the first fetches ({passes} re-fetch passes)",
            t.as_millis()
        ),
        None => println!(
            "WARNING: warmed URLs still not `{HIT}` after {} s: http {}; https {}",
            SETTLE_LIMIT.as_secs(),
            tally(&last.0),
            tally(&last.1)
        ),
    }

    // Throughput.
    let seen = &*origin_seen;
    let r_plain = load(&cfg, &target, &clients, seen, Mode::Plain).await;
    let r_keep = load(&cfg, &target, &clients, seen, Mode::TlsKeepAlive).await;
    let r_new = load(
        &cfg,
        &target,
        &clients,
        seen,
        Mode::TlsPerRequest { resume: false },
    )
    .await;
    let r_resume = load(
        &cfg,
        &target,
        &clients,
        seen,
        Mode::TlsPerRequest { resume: true },
    )
    .await;

    println!();
    println!(
        "throughput: {} connections (rows 1-2) / workers (rows 3) x {} s, GET of {} B bodies, each response checked for `{HIT}`",
        cfg.conns,
        cfg.duration.as_secs(),
        BODY_LEN
    );
    println!(
        "  {:<4} {:<46} {:>9} {:>9} {:>7} {:>17} {:>9}",
        "row", "target", "requests", "req/s", "errors", "TLS hs (resumed)", "vs row 1"
    );
    let reference = r_plain.rate();
    print_load(
        "1",
        "plain HTTP hits, keep-alive (reference)",
        &r_plain,
        reference,
    );
    print_load(
        "2",
        "HTTPS hits, intercepted, keep-alive",
        &r_keep,
        reference,
    );
    print_load(
        "3",
        "HTTPS hits, new conn per request, full TLS",
        &r_new,
        reference,
    );
    print_load(
        "3b",
        "HTTPS hits, new conn per request, resumption",
        &r_resume,
        reference,
    );
    println!("  rows 2-3: CONNECT + TLS handshake to the proxy (leaf for `localhost` already minted), then");
    println!("  origin-form GETs inside the tunnel; row 3 disables client session resumption (every handshake");
    println!(
        "  is a full one), row 3b keeps rustls' default client session cache (as browsers do)."
    );
    for (row, r) in [
        ("1", &r_plain),
        ("2", &r_keep),
        ("3", &r_new),
        ("3b", &r_resume),
    ] {
        if !r.other.is_empty() || r.origin_requests > 0 {
            println!(
                "  WARNING: row {row}: {} responses were not `{HIT}` ({}); {} requests reached the origin",
                r.other.values().sum::<u64>(),
                tally(&r.other),
                r.origin_requests
            );
        }
    }
    println!(
        "  ratios vs plain HTTP hits: keep-alive HTTPS {:.2}, new TLS conn per request {:.2} (resumed {:.2})",
        r_keep.rate() / reference,
        r_new.rate() / reference,
        r_resume.rate() / reference
    );

    // Leaf minting: CONNECT + handshake to never-seen names, interleaved with the same to
    // a name seen before. Full handshakes on both sides, so the difference is the minting.
    let n = cfg.mint_count;
    let first = handshake_only(paddr, "h0.test", &clients.full).await;
    if let Err(e) = &first {
        println!("WARNING: first handshake for h0.test failed: {e}");
    }
    let (mut lat_new, mut lat_seen) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut err_new, mut err_seen) = ((0usize, None::<String>), (0usize, None::<String>));
    for i in 1..=n {
        let name = format!("h{i}.test");
        match handshake_only(paddr, &name, &clients.full).await {
            Ok(d) => lat_new.push(d),
            Err(e) => {
                err_new.0 += 1;
                err_new.1.get_or_insert(e);
            }
        }
        match handshake_only(paddr, "h0.test", &clients.full).await {
            Ok(d) => lat_seen.push(d),
            Err(e) => {
                err_seen.0 += 1;
                err_seen.1.get_or_insert(e);
            }
        }
    }

    println!();
    println!(
        "leaf minting: CONNECT hN.test:443 + full TLS handshake (no request, no upstream connection),"
    );
    println!(
        "  one at a time, alternating a never-seen name (h1.test .. h{n}.test) with h0.test (seen before)"
    );
    println!(
        "  {:<4} {:<30} {:>8} {:>7} {:>10} {:>10}",
        "row", "name", "samples", "errors", "p50 us", "p99 us"
    );
    let row = |r: &str, name: &str, l: &[Duration], errors: usize| {
        if l.is_empty() {
            println!(
                "  {r:<4} {name:<30} {:>8} {errors:>7} {:>10} {:>10}",
                0, "-", "-"
            );
        } else {
            println!(
                "  {:<4} {:<30} {:>8} {:>7} {:>10.0} {:>10.0}",
                r,
                name,
                l.len(),
                errors,
                pct(l, 50.0),
                pct(l, 99.0)
            );
        }
    };
    row("4", "new name (leaf minted)", &lat_new, err_new.0);
    row("4", "seen name (leaf cached)", &lat_seen, err_seen.0);
    if !lat_new.is_empty() && !lat_seen.is_empty() {
        let (n50, n99) = (pct(&lat_new, 50.0), pct(&lat_new, 99.0));
        let (s50, s99) = (pct(&lat_seen, 50.0), pct(&lat_seen, 99.0));
        println!(
            "  ratio new / seen: p50 {:.2}, p99 {:.2}; added by minting: p50 {:.0} us, p99 {:.0} us",
            n50 / s50,
            n99 / s99,
            n50 - s50,
            n99 - s99
        );
    }
    for (what, (count, first)) in [("new-name", err_new), ("seen-name", err_seen)] {
        if let Some(e) = first {
            println!("  WARNING: {count} {what} handshakes failed (first: {e})");
        }
    }

    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Origin

/// A TLS acceptor for `localhost` / 127.0.0.1 with a leaf from a fresh CA written to `ca_file`.
fn origin_tls(ca_file: &Path) -> TlsAcceptor {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tls_hits bench origin CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(ca_file, ca.pem()).expect("write origin CA");
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// Serves `/o/0` .. `/o/99` (1 KiB, `max-age=3600`), 404 otherwise; HTTPS with `tls`.
async fn start_origin(tls: Option<TlsAcceptor>, seen: Arc<AtomicU64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().unwrap();
    let body = Bytes::from(vec![b'x'; BODY_LEN]);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            let tls = tls.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let body = body.clone();
                    seen.fetch_add(1, Ordering::Relaxed);
                    async move { Ok::<_, Infallible>(answer(&req, body)) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match tls {
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                    }
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn answer(req: &Request<Incoming>, body: Bytes) -> Response<Full<Bytes>> {
    let known = req
        .uri()
        .path()
        .strip_prefix("/o/")
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|n| n < PATHS);
    if !known {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"no such path\n")))
            .unwrap();
    }
    Response::builder()
        .header("content-type", "application/octet-stream")
        .header("cache-control", "max-age=3600")
        .header("content-length", BODY_LEN)
        .body(Full::new(body))
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Client

/// Where the load goes.
#[derive(Clone)]
struct Target {
    proxy: SocketAddr,
    http_origin: SocketAddr,
    /// `localhost:PORT` of the HTTPS origin: the CONNECT target and the `Host` inside.
    authority: String,
}

impl Target {
    fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_origin)
    }
}

/// TLS client configurations trusting only the proxy's CA, ALPN `http/1.1`.
struct Clients {
    /// Client session resumption disabled: every handshake is a full one.
    full: TlsConnector,
    /// rustls' default in-memory client session cache.
    resuming: TlsConnector,
}

impl Clients {
    fn new(ca_path: &Path) -> Clients {
        let pem = std::fs::read(ca_path)
            .unwrap_or_else(|e| panic!("read the proxy CA {}: {e}", ca_path.display()));
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots
                .add(cert.expect("proxy CA PEM"))
                .expect("proxy CA usable as a root");
        }
        assert!(!roots.is_empty(), "no certificate in {}", ca_path.display());
        let make = |resume: bool| {
            let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            if !resume {
                c.resumption = rustls::client::Resumption::disabled();
            }
            TlsConnector::from(Arc::new(c))
        };
        Clients {
            full: make(false),
            resuming: make(true),
        }
    }
}

async fn step<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    match tokio::time::timeout(STEP_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(format!("{what}: no answer within {STEP_TIMEOUT:?}")),
    }
}

/// Opens a TCP connection to the proxy and tunnels it to `authority` with CONNECT.
async fn tunnel(proxy: SocketAddr, authority: &str) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(proxy)
        .await
        .map_err(|e| format!("connect {proxy}: {e}"))?;
    let _ = s.set_nodelay(true);
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("send CONNECT: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read CONNECT response: {e}"))?;
        if n == 0 {
            return Err(format!(
                "proxy closed the connection during CONNECT (read so far: {:?})",
                String::from_utf8_lossy(&head)
            ));
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            if end + 4 != head.len() {
                return Err("bytes after the CONNECT response head".into());
            }
            break;
        }
        if head.len() > 16 * 1024 {
            return Err("CONNECT response head over 16 KiB".into());
        }
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        let text = String::from_utf8_lossy(&head);
        return Err(format!(
            "CONNECT answered {:?}",
            text.lines().next().unwrap_or("")
        ));
    }
    Ok(s)
}

/// CONNECT to `authority`, then a TLS handshake for `server_name`.
async fn tls_open(
    proxy: SocketAddr,
    authority: &str,
    server_name: &str,
    connector: &TlsConnector,
) -> Result<TlsStream<TcpStream>, String> {
    let tcp = step("CONNECT", tunnel(proxy, authority)).await?;
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| format!("server name {server_name}: {e}"))?;
    let tls = step("TLS handshake", async {
        connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake for {server_name}: {e}"))
    })
    .await?;
    Ok(tls)
}

/// One CONNECT + handshake to `name`:443, then close: how long it took.
async fn handshake_only(
    proxy: SocketAddr,
    name: &str,
    connector: &TlsConnector,
) -> Result<Duration, String> {
    let t = Instant::now();
    let tls = tls_open(proxy, &format!("{name}:443"), name, connector).await?;
    let d = t.elapsed();
    drop(tls);
    Ok(d)
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn h1<IO>(io: IO) -> Result<Sender, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(send)
}

/// GET `uri` with `host`; the `Cache-Status` of a 200 with a 1 KiB body.
async fn send(sender: &mut Sender, uri: &str, host: &str) -> Result<String, String> {
    step("request", async {
        let uri: hyper::Uri = uri.parse().map_err(|e| format!("{uri}: {e}"))?;
        sender
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let req = Request::builder()
            .uri(uri)
            .header("host", host)
            .body(Empty::new())
            .unwrap();
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = res.status();
        let cache_status = res
            .headers()
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        if body.len() != BODY_LEN {
            return Err(format!("body of {} bytes, expected {BODY_LEN}", body.len()));
        }
        Ok(cache_status)
    })
    .await
}

/// A keep-alive connection to the proxy, absolute-form requests.
struct PlainConn(Sender);

impl PlainConn {
    async fn open(proxy: SocketAddr) -> Result<PlainConn, String> {
        step("open", async {
            let s = TcpStream::connect(proxy)
                .await
                .map_err(|e| format!("connect {proxy}: {e}"))?;
            let _ = s.set_nodelay(true);
            Ok(PlainConn(h1(s).await?))
        })
        .await
    }

    async fn get(&mut self, url: &str) -> Result<String, String> {
        let host = url
            .parse::<hyper::Uri>()
            .ok()
            .and_then(|u| u.authority().map(|a| a.to_string()))
            .unwrap_or_default();
        send(&mut self.0, url, &host).await
    }
}

/// An intercepted connection: CONNECT + TLS, origin-form requests inside.
struct TlsConn {
    send: Sender,
    resumed: bool,
    /// Negotiated protocol version and ALPN, for the report.
    negotiated: String,
}

impl TlsConn {
    async fn open(target: &Target, connector: &TlsConnector) -> Result<TlsConn, String> {
        let tls = tls_open(target.proxy, &target.authority, "localhost", connector).await?;
        let conn = tls.get_ref().1;
        let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let negotiated = format!(
            "{:?}, {:?}, ALPN {}",
            conn.protocol_version(),
            conn.negotiated_cipher_suite().map(|c| c.suite()),
            conn.alpn_protocol()
                .map_or("none".into(), |p| String::from_utf8_lossy(p).into_owned())
        );
        let send = step("HTTP/1.1 handshake", h1(tls)).await?;
        Ok(TlsConn {
            send,
            resumed,
            negotiated,
        })
    }

    async fn get(&mut self, path: &str, host: &str) -> Result<String, String> {
        send(&mut self.send, path, host).await
    }
}

// ---------------------------------------------------------------------------------------
// Load

#[derive(Clone, Copy)]
enum Mode {
    /// Absolute-form `http://` requests over keep-alive connections.
    Plain,
    /// Intercepted `https://` requests over keep-alive tunnels.
    TlsKeepAlive,
    /// CONNECT + TLS + one request + close, repeatedly.
    TlsPerRequest { resume: bool },
}

#[derive(Default)]
struct LoadResult {
    requests: u64,
    errors: u64,
    /// The `Cache-Status` of responses that were not exactly [`HIT`], with counts.
    other: BTreeMap<String, u64>,
    first_error: Option<String>,
    handshakes: u64,
    resumed: u64,
    /// Requests that reached the origins while this row ran (0 when all are hits).
    origin_requests: u64,
    elapsed: Duration,
}

impl LoadResult {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

fn print_load(row: &str, name: &str, r: &LoadResult, reference: f64) {
    let hs = if r.handshakes == 0 {
        "-".to_string()
    } else {
        format!("{} ({})", r.handshakes, r.resumed)
    };
    println!(
        "  {:<4} {:<46} {:>9} {:>9.0} {:>7} {:>17} {:>9.2}",
        row,
        name,
        r.requests,
        r.rate(),
        r.errors,
        hs,
        r.rate() / reference
    );
    if let Some(e) = &r.first_error {
        println!("       first error: {e}");
    }
}

/// `cfg.conns` workers sending requests back to back for `cfg.duration`, in `mode`.
async fn load(
    cfg: &Config,
    target: &Target,
    clients: &Clients,
    origin_seen: &AtomicU64,
    mode: Mode,
) -> LoadResult {
    let origin_before = origin_seen.load(Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let target = Arc::new(target.clone());
    let connector = match mode {
        Mode::TlsPerRequest { resume: true } => clients.resuming.clone(),
        _ => clients.full.clone(),
    };
    let mut tasks = Vec::new();
    for t in 0..cfg.conns {
        let stop = stop.clone();
        let requests = requests.clone();
        let target = target.clone();
        let connector = connector.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = LoadResult::default();
            let mut plain: Option<PlainConn> = None;
            let mut tls: Option<TlsConn> = None;
            let mut i = t;
            while !stop.load(Ordering::Relaxed) {
                let path = format!("/o/{}", i % PATHS);
                i += 1;
                let res = match mode {
                    Mode::Plain => {
                        if plain.is_none() {
                            match PlainConn::open(target.proxy).await {
                                Ok(c) => plain = Some(c),
                                Err(e) => {
                                    r.fail(e);
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                    continue;
                                }
                            }
                        }
                        let res = plain.as_mut().unwrap().get(&target.http_url(&path)).await;
                        if res.is_err() {
                            plain = None;
                        }
                        res
                    }
                    Mode::TlsKeepAlive | Mode::TlsPerRequest { .. } => {
                        if tls.is_none() {
                            match TlsConn::open(&target, &connector).await {
                                Ok(c) => {
                                    r.handshakes += 1;
                                    r.resumed += u64::from(c.resumed);
                                    tls = Some(c);
                                }
                                Err(e) => {
                                    r.fail(e);
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                    continue;
                                }
                            }
                        }
                        let res = tls.as_mut().unwrap().get(&path, &target.authority).await;
                        if res.is_err() || matches!(mode, Mode::TlsPerRequest { .. }) {
                            tls = None;
                        }
                        res
                    }
                };
                match res {
                    Ok(status) => {
                        requests.fetch_add(1, Ordering::Relaxed);
                        if status != HIT {
                            *r.other.entry(status).or_default() += 1;
                        }
                    }
                    Err(e) => r.fail(e),
                }
            }
            r
        }));
    }
    let start = Instant::now();
    let before = requests.load(Ordering::Relaxed);
    tokio::time::sleep(cfg.duration).await;
    let done = requests.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut total = LoadResult {
        requests: done - before,
        elapsed,
        ..LoadResult::default()
    };
    for t in tasks {
        let r = t.await.expect("load task");
        total.errors += r.errors;
        total.handshakes += r.handshakes;
        total.resumed += r.resumed;
        for (status, n) in r.other {
            *total.other.entry(status).or_default() += n;
        }
        if total.first_error.is_none() {
            total.first_error = r.first_error;
        }
    }
    total.origin_requests = origin_seen.load(Ordering::Relaxed) - origin_before;
    total
}

impl LoadResult {
    fn fail(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }
}

/// Re-fetches every warmed URL over both schemes; the responses that were not [`HIT`].
async fn recheck(plain: &mut PlainConn, https: &mut TlsConn, target: &Target) -> Tallies {
    let mut t = Tallies::default();
    for i in 0..PATHS {
        let path = format!("/o/{i}");
        let p = plain
            .get(&target.http_url(&path))
            .await
            .expect("plain warm-up request");
        let s = https
            .get(&path, &target.authority)
            .await
            .expect("https warm-up request");
        if p != HIT {
            *t.0.entry(p).or_default() += 1;
        }
        if s != HIT {
            *t.1.entry(s).or_default() += 1;
        }
    }
    t
}

/// `"status" x count, ...`
fn tally(statuses: &BTreeMap<String, u64>) -> String {
    let v: Vec<String> = statuses
        .iter()
        .map(|(s, n)| format!("{s:?} x {n}"))
        .collect();
    v.join(", ")
}
