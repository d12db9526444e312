//! The front door, tried as a hostile passenger on a gateway would: silent connections,
//! held tunnels, secrets on the status page, reaching the gateway's own services through
//! the proxy, one client's certificate refusal. Clients on `127.0.0.2`, `127.0.0.3`, … are
//! distinct clients to the proxy, and not admins (`admin.allow` is `127.0.0.1` and `::1`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::https::proxy_ca;
use crate::support::binary::Running;
use crate::support::client::{get_from, request_from, tcp_from};
use crate::support::mesh::create_group;
use crate::support::{get, Origin, Reply, TestProxy};

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

/// Polls `f` until it holds; panics with `what` after `within`.
async fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads until the peer closes; `None` if it is still open after `within`.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok()?;
    Some(got)
}

/// Opens a `CONNECT` tunnel by hand and reads the proxy's answer head.
async fn connect_tunnel(proxy: SocketAddr, target: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "proxy closed mid-answer");
        head.push(b[0]);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

fn cacheable(body: &'static str) -> impl Fn(&crate::support::origin::Seen) -> Reply {
    move |_| Reply::ok(body).header("cache-control", "max-age=600")
}

#[tokio::test]
async fn silent_connections_from_one_address_neither_lock_out_another_nor_stay_open() {
    let origin = Origin::builder()
        .route("/a", cacheable("hello"))
        .run()
        .await;
    let p = TestProxy::start_with(|s| {
        s.server.max_connections = 40;
        s.server.max_connections_per_client = 10;
        s.server.header_read_timeout = Duration::from_millis(800);
        // The test origin is on loopback: open it to the clients that are not admins.
        s.destinations.allow = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let proxy = p.proxy.as_ref().unwrap();
    let mut silent = Vec::new();
    for _ in 0..30 {
        silent.push(tcp_from(p.addr(), ip("127.0.0.2")).await);
    }
    until(
        "the per-client cap to fill",
        Duration::from_secs(10),
        || proxy.connections() == 10,
    )
    .await;
    // Another client is served while the first holds everything it may.
    let r = get_from(p.addr(), "127.0.0.3", &origin.url("/a")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "hello");
    // The connections beyond the cap were answered 503 and closed; the admitted ones are
    // closed after header_read_timeout (from accept), having sent nothing.
    let start = Instant::now();
    let mut refused = 0;
    for s in &mut silent {
        let got = read_until_closed(s, Duration::from_secs(10))
            .await
            .expect("a silent connection is still open 10 s later");
        let text = String::from_utf8_lossy(&got);
        if text.starts_with("HTTP/1.1 503") {
            assert!(text.contains("per-client"), "{text}");
            refused += 1;
        } else {
            assert!(got.is_empty(), "{text}");
        }
    }
    assert_eq!(refused, 20);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    until("the permits to come back", Duration::from_secs(5), || {
        proxy.connections() == 0
    })
    .await;
    p.stop().await;
}

#[tokio::test]
async fn held_connect_tunnels_count_against_the_limit_and_shutdown_closes_them() {
    let origin = Origin::builder()
        .route("/a", cacheable("through"))
        .run()
        .await;
    let port = origin.addr.port();
    let p = TestProxy::start_with(|s| {
        s.server.max_connections = 2;
        s.tls.passthrough = vec!["127.0.0.1".into()];
    })
    .await;
    let proxy = p.proxy.as_ref().unwrap();
    // A blind tunnel (passthrough) that works, then one blind and one intercepted, held.
    let (mut t1, head) = connect_tunnel(p.addr(), &format!("127.0.0.1:{port}")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    t1.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let through = read_until_closed(&mut t1, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&through).ends_with("through"));
    drop(t1);
    until("the first tunnel to end", Duration::from_secs(5), || {
        proxy.connections() == 0
    })
    .await;
    let (mut t2, head) = connect_tunnel(p.addr(), &format!("127.0.0.1:{port}")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (mut t3, head) = connect_tunnel(p.addr(), &format!("localhost:{port}")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    until(
        "two tunnels to hold their permits",
        Duration::from_secs(5),
        || proxy.connections() == 2,
    )
    .await;
    // The tunnels hold every permit: a new client is refused.
    let r = get(p.addr(), &origin.url("/a"), &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    // A shutdown waits for them, and closes them.
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(15), p.stop())
        .await
        .expect("shutdown completes");
    assert!(started.elapsed() < Duration::from_secs(12));
    for t in [&mut t2, &mut t3] {
        read_until_closed(t, Duration::from_secs(2))
            .await
            .expect("the tunnel is closed by the shutdown");
    }
}

#[tokio::test]
async fn an_intercepted_connection_outlives_the_head_deadline() {
    // Regression: the connection's head deadline kept running inside the tunnel, so an
    // HTTPS connection died `header_read_timeout` after its ClientHello.
    let dir = tempfile::tempdir().unwrap();
    let origin_ca = dir.path().join("origin-ca.pem");
    let origin = Origin::builder()
        .route("/slow", |_| {
            Reply::ok("slow but fine").delay(Duration::from_millis(1200))
        })
        .run_tls(&origin_ca)
        .await;
    let p = TestProxy::start_with(|s| {
        s.origin.extra_roots = vec![origin_ca.clone()];
        s.server.header_read_timeout = Duration::from_millis(400);
    })
    .await;
    let ca = proxy_ca(&p, dir.path()).await;
    let out = curl_from(p.addr(), None, &ca, &origin.https_url("/slow")).await;
    assert!(out.ends_with("slow but fine"), "{out}");
}

/// `curl -x PROXY --cacert CA [--interface SOURCE] URL` (in a blocking task: the proxy
/// runs on this test's runtime): stdout, or the error text.
async fn curl_from(proxy: SocketAddr, source: Option<&str>, ca: &Path, url: &str) -> String {
    curl_args(proxy, source, ca, &[], url).await
}

/// [`curl_from`] with more arguments.
async fn curl_args(
    proxy: SocketAddr,
    source: Option<&str>,
    ca: &Path,
    args: &[&str],
    url: &str,
) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S", "--max-time", "30", "-x"])
        .arg(format!("http://{proxy}"))
        .arg("--cacert")
        .arg(ca)
        .args(args);
    if let Some(s) = source {
        cmd.args(["--interface", s]);
    }
    cmd.arg(url);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("curl is installed"))
        .await
        .unwrap();
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        format!("curl failed: {}", String::from_utf8_lossy(&out.stderr))
    }
}

#[tokio::test]
async fn the_status_page_shows_group_tickets_to_admins_only() {
    let dir = tempfile::tempdir().unwrap();
    let ticket = create_group(dir.path());
    let run = Running::start(dir.path(), &[]);
    let admin = get(run.addr, "http://meshcache.local/", &[]).await;
    assert!(admin.text().contains(&ticket), "an admin sees the ticket");
    for path in ["/", "/status", "/status.json"] {
        let r = get_from(
            run.addr,
            "127.0.0.2",
            &format!("http://meshcache.local{path}"),
        )
        .await;
        assert_eq!(r.status, 200);
        let text = r.text();
        assert!(!text.contains("meshgroup"), "{path}: {text}");
        assert!(!text.contains(&ticket), "{path}: {text}");
        assert!(!text.contains("mesh_id"), "{path}: {text}");
    }
    // What a passenger needs is still there.
    let pac = get_from(run.addr, "127.0.0.2", "http://meshcache.local/proxy.pac").await;
    assert!(pac.text().contains("FindProxyForURL"));
    let ca = get_from(run.addr, "127.0.0.2", "http://meshcache.local/ca.pem").await;
    assert!(ca.text().starts_with("-----BEGIN CERTIFICATE-----"));
    // Shares store files on the device: admin only.
    let post = request_from(
        run.addr,
        Some(ip("127.0.0.2")),
        Method::POST,
        "http://meshcache.local/share?name=x.txt",
        &[],
        Some(bytes::Bytes::from_static(b"not yours to store")),
    )
    .await;
    assert_eq!(post.status, 403, "{}", post.text());
    assert!(post.text().contains("admin.allow"), "{}", post.text());
    let fetch = get_from(
        run.addr,
        "127.0.0.2",
        "http://meshcache.local/share/meshshareabc",
    )
    .await;
    assert_eq!(fetch.status, 403);
    run.stop();
}

#[tokio::test]
async fn a_passenger_cannot_reach_the_proxys_own_side() {
    let origin = Origin::builder()
        .route("/a", cacheable("inside"))
        .run()
        .await;
    let port = origin.addr.port();
    let p = TestProxy::start().await;
    for url in [
        origin.url("/a"),
        format!("http://localhost:{port}/a"),
        format!("http://[::ffff:127.0.0.1]:{port}/a"),
    ] {
        let r = get_from(p.addr(), "127.0.0.2", &url).await;
        assert_eq!(r.status, 403, "{url}: {}", r.text());
        let text = r.text();
        assert!(text.contains("loopback"), "{text}");
        assert!(
            text.contains("origin.allow"),
            "the body names the setting: {text}"
        );
    }
    // CONNECT: a port outside origin.connect_ports, then loopback on an allowed port.
    for (target, rule) in [
        (format!("127.0.0.1:{port}"), "origin.connect_ports"),
        ("127.0.0.1:443".to_string(), "loopback"),
        ("localhost:443".to_string(), "loopback"),
    ] {
        let r = request_from(
            p.addr(),
            Some(ip("127.0.0.2")),
            Method::CONNECT,
            &target,
            &[],
            None,
        )
        .await;
        assert_eq!(r.status, 403, "{target}: {}", r.text());
        assert!(r.text().contains(rule), "{target}: {}", r.text());
    }
    assert_eq!(origin.hits("/a"), 0, "nothing reached the origin");
    // An admin client (this machine) may, and origin.allow opens it to everyone.
    assert_eq!(get(p.addr(), &origin.url("/a"), &[]).await.status, 200);
    p.stop().await;
    let open = TestProxy::start_with(|s| {
        s.destinations.allow = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let r = get_from(open.addr(), "127.0.0.2", &origin.url("/a")).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn one_clients_certificate_refusal_does_not_tunnel_the_host_for_another() {
    let dir = tempfile::tempdir().unwrap();
    let origin_ca = dir.path().join("origin-ca.pem");
    let origin = Origin::builder()
        .route("/x", |_| Reply::ok("pinned"))
        .run_tls(&origin_ca)
        .await;
    let port = origin.addr.port();
    let p = TestProxy::start_with(|s| {
        s.origin.extra_roots = vec![origin_ca.clone()];
        s.destinations.allow = vec!["127.0.0.1/32".parse().unwrap()];
        s.destinations.connect_ports = vec![port];
    })
    .await;
    let proxy_ca = proxy_ca(&p, dir.path()).await;
    let url = origin.https_url("/x");
    // Client A (127.0.0.2) is "pinned": it trusts only the origin's CA and refuses ours.
    let first = curl_from(p.addr(), Some("127.0.0.2"), &origin_ca, &url).await;
    assert!(first.starts_with("curl failed"), "{first}");
    let mut learned = false;
    for _ in 0..500 {
        let page = get(p.addr(), "http://meshcache.local/status.json", &[])
            .await
            .text();
        if page.contains("\"client\":\"127.0.0.2\"") {
            learned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(learned, "the refusal is learned for client A");
    // Client B is still intercepted (it trusts our CA, and only our CA)…
    let b = curl_from(p.addr(), Some("127.0.0.3"), &proxy_ca, &url).await;
    assert_eq!(b, "pinned");
    // …while A is now tunnelled blindly to the origin.
    let a = curl_from(p.addr(), Some("127.0.0.2"), &origin_ca, &url).await;
    assert_eq!(a, "pinned");
    p.stop().await;
}

#[tokio::test]
async fn an_origin_whose_ca_is_only_in_ssl_cert_file_is_trusted() {
    // The OS trust store (on Linux: the system store, or what SSL_CERT_FILE names, as for
    // curl and OpenSSL), not only the bundled roots; no tls.extra_roots here.
    let dir = tempfile::tempdir().unwrap();
    let origin_ca = dir.path().join("origin-ca.pem");
    let origin = Origin::builder()
        .route("/x", |_| Reply::ok("trusted by the system store"))
        .run_tls(&origin_ca)
        .await;
    let url = origin.https_url("/x");
    let with = dir.path().join("with");
    let run = Running::start_with_env(&with, &["--no-mesh"], &[("SSL_CERT_FILE", &origin_ca)]);
    let ca = with.join("ca").join("ca.pem");
    let out = curl_from(run.addr, None, &ca, &url).await;
    assert_eq!(out, "trusted by the system store");
    run.stop();
    // The same proxy without it does not know the origin's CA: a 502 that says why.
    let without = dir.path().join("without");
    let run = Running::start(&without, &["--no-mesh"]);
    let ca = without.join("ca").join("ca.pem");
    let out = curl_from(run.addr, None, &ca, &url).await;
    assert!(out.contains("certificate"), "{out}");
    run.stop();
    assert_eq!(origin.hits("/x"), 1);
}

#[tokio::test]
async fn intercepted_requests_have_the_same_header_limit_in_h1_and_h2() {
    let dir = tempfile::tempdir().unwrap();
    let origin_ca = dir.path().join("origin-ca.pem");
    let origin = Origin::builder()
        .route("/x", |_| Reply::ok("small heads only"))
        .run_tls(&origin_ca)
        .await;
    let p = TestProxy::start_with(|s| {
        s.origin.extra_roots = vec![origin_ca.clone()];
        s.server.max_header_bytes = 16 << 10;
    })
    .await;
    let ca = proxy_ca(&p, dir.path()).await;
    let url = origin.https_url("/x");
    let big = format!("X-Big: {}", "a".repeat(32 << 10));
    let h1 = curl_args(
        p.addr(),
        None,
        &ca,
        &["--http1.1", "-D", "-", "-H", &big],
        &url,
    )
    .await;
    // The first head in curl's output is the proxy's answer to CONNECT. hyper answers 431
    // and closes, which curl, still sending the head, may see as a broken pipe instead.
    assert!(
        h1.contains("\r\n\r\nHTTP/1.1 431") || h1.starts_with("curl failed"),
        "h1 refuses the head: {h1}"
    );
    assert!(!h1.contains("small heads only"), "{h1}");
    let h2 = curl_args(
        p.addr(),
        None,
        &ca,
        &["--http2", "-D", "-", "-H", &big],
        &url,
    )
    .await;
    assert!(
        h2.contains("\r\n\r\nHTTP/2 431") || h2.starts_with("curl failed"),
        "h2 refuses the header list: {h2}"
    );
    assert!(!h2.contains("small heads only"), "{h2}");
    assert_eq!(origin.hits("/x"), 0);
    // A normal head still passes, in both.
    for v in ["--http1.1", "--http2"] {
        assert_eq!(
            curl_args(p.addr(), None, &ca, &[v], &url).await,
            "small heads only"
        );
    }
    p.stop().await;
}

#[tokio::test]
async fn shares_are_bounded_per_file_and_in_all() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shares.toml");
    std::fs::write(
        &config,
        "[mesh]\nshare_max_file = \"1KiB\"\nshare_max_size = \"1500B\"\n",
    )
    .unwrap();
    let run = Running::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let share = |n: usize, name: &'static str| {
        let addr = run.addr;
        async move {
            request_from(
                addr,
                None,
                Method::POST,
                &format!("http://meshcache.local/share?name={name}"),
                &[],
                Some(bytes::Bytes::from(vec![b'x'; n])),
            )
            .await
        }
    };
    let too_big = share(2048, "big.bin").await;
    assert_eq!(too_big.status, 413, "{}", too_big.text());
    assert!(
        too_big.text().contains("mesh.share_max_file"),
        "{}",
        too_big.text()
    );
    let first = share(1000, "a.bin").await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(first.text().starts_with("meshshare"), "{}", first.text());
    let second = share(1000, "b.bin").await;
    assert_eq!(second.status, 507, "{}", second.text());
    assert!(
        second.text().contains("mesh.share_max_size"),
        "{}",
        second.text()
    );
    run.stop();
}

#[tokio::test]
async fn an_intercepted_h2_connection_gets_no_more_streams_than_the_limit() {
    use rustls::pki_types::pem::PemObject;
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let origin_ca = dir.path().join("origin-ca.pem");
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let mut builder = Origin::builder();
    for i in 0..10 {
        let seen = arrivals.clone();
        builder = builder.route(&format!("/slow{i}"), move |_| {
            seen.lock().unwrap().push(Instant::now());
            Reply::ok("one stream").delay(Duration::from_millis(600))
        });
    }
    let origin = builder.run_tls(&origin_ca).await;
    let p = TestProxy::start_with(|s| {
        s.origin.extra_roots = vec![origin_ca.clone()];
        s.server.h2_max_concurrent_streams = 3;
    })
    .await;
    let ca = proxy_ca(&p, dir.path()).await;
    // One h2 connection through an intercepted CONNECT, as a browser would open it.
    let port = origin.addr.port();
    let (tunnel, head) = connect_tunnel(p.addr(), &format!("localhost:{port}")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tunnel)
        .await
        .expect("TLS with the proxy's leaf");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // One request first: by its answer the client has the server's SETTINGS, so it queues
    // streams beyond the limit instead of opening them and getting REFUSED_STREAM.
    let warm = http::Request::get(format!("https://localhost:{port}/slow9"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(send.clone().send_request(warm).await.unwrap().status(), 200);
    arrivals.lock().unwrap().clear();
    let started = Instant::now();
    let requests = (0..9).map(|i| {
        let mut send = send.clone();
        async move {
            let req = http::Request::get(format!("https://localhost:{port}/slow{i}"))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let res = send.send_request(req).await.expect("a response");
            assert_eq!(res.status(), 200);
        }
    });
    futures_util::future::join_all(requests).await;
    // The server allowed 3 streams at a time: the origin saw the requests in three waves,
    // each after the last one's 600 ms reply.
    let mut at: Vec<Duration> = arrivals
        .lock()
        .unwrap()
        .iter()
        .map(|t| t.duration_since(started))
        .collect();
    at.sort();
    assert_eq!(at.len(), 9, "{at:?}");
    for w in at.windows(4) {
        assert!(
            w[3] - w[0] >= Duration::from_millis(500),
            "more than 3 streams at once: {at:?}"
        );
    }
    p.stop().await;
}
