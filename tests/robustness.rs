use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{get, Origin, Reply, TestProxy};

/// Writes raw bytes to the proxy and reads until it closes (or 10 s pass).
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_malformed_request_gets_400() {
    let p = TestProxy::start().await;
    let r = raw(
        p.addr(),
        b"GET http://x/ HTTP/1.1\r\nBad Header Line\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let r = raw(p.addr(), b"\x16\x03\x01garbage\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    // …and the proxy keeps serving.
    let r = get(p.addr(), "http://meshcache.local/", &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let p = TestProxy::start_with(|s| s.server.max_header_bytes = 16 << 10).await;
    let big = "a".repeat(40 << 10);
    let req =
        format!("GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\nX-Big: {big}\r\n\r\n");
    let r = raw(p.addr(), req.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{}", &r[..r.len().min(80)]);
}

#[tokio::test]
async fn a_slow_request_head_is_cut_off_but_idle_keep_alive_is_not() {
    let origin = Origin::builder()
        .route("/k", |_| {
            Reply::ok("k").header("cache-control", "max-age=60")
        })
        .run()
        .await;
    let p =
        TestProxy::start_with(|s| s.server.header_read_timeout = Duration::from_millis(300)).await;
    // Slowloris: half a request head, then nothing.
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    s.write_all(b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(
        closed.is_ok(),
        "the proxy must close a connection whose head never completes"
    );

    // Keep-alive: a connection idle for longer than the head deadline still works.
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
        origin.url("/k"),
        origin.addr
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let first = read_response(&mut s).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    tokio::time::sleep(Duration::from_millis(900)).await; // idle, three times the head deadline
    s.write_all(req.as_bytes()).await.unwrap();
    let second = read_response(&mut s).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
}

/// Reads one response with a Content-Length body from a keep-alive connection.
async fn read_response(s: &mut TcpStream) -> String {
    read_message(s).await.0
}

#[tokio::test]
async fn an_unreachable_origin_is_a_502_that_says_why() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let p = TestProxy::start().await;
    let r = get(p.addr(), &format!("http://{addr}/x"), &[]).await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains("could not connect"), "{}", r.text());
}

#[tokio::test]
async fn a_slow_origin_is_a_504() {
    let origin = Origin::builder()
        .route("/slow", |_| {
            Reply::ok("late").delay(Duration::from_secs(30))
        })
        .run()
        .await;
    let p =
        TestProxy::start_with(|s| s.origin.response_header_timeout = Duration::from_millis(300))
            .await;
    let r = get(p.addr(), &origin.url("/slow"), &[]).await;
    assert_eq!(r.status, 504);
    assert!(r.text().contains("did not answer"), "{}", r.text());
}

#[tokio::test]
async fn a_malformed_origin_response_is_a_502() {
    let bad = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = bad.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = bad.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"NOT HTTP AT ALL\r\n\r\n").await;
        }
    });
    let p = TestProxy::start().await;
    let r = get(p.addr(), &format!("http://{addr}/x"), &[]).await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains("invalid response"), "{}", r.text());
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_with_503() {
    let p = TestProxy::start_with(|s| s.server.max_connections = 2).await;
    let _a = TcpStream::connect(p.addr()).await.unwrap();
    let _b = TcpStream::connect(p.addr()).await.unwrap();
    let r = raw(
        p.addr(),
        b"GET http://meshcache.local/ HTTP/1.1\r\nHost: meshcache.local\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    drop((_a, _b));
}

#[tokio::test]
async fn connect_tunnels_to_the_origin_and_reports_failures() {
    let origin = Origin::builder()
        .route("/t", |_| Reply::ok("through the tunnel"))
        .run()
        .await;
    let p = TestProxy::start_with(|s| s.tls.passthrough = vec!["127.0.0.1".into()]).await;
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    s.write_all(format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", origin.addr).as_bytes())
        .await
        .unwrap();
    let head = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(
        format!(
            "GET /t HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            origin.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.ends_with("through the tunnel"), "{out:?}");

    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let r = raw(
        p.addr(),
        format!("CONNECT {addr} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 502"), "{r}");
}

/// A small tmpfs the test mounts itself (root only), unmounted on drop.
struct Tmpfs(std::path::PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(dir.path().to_path_buf(), dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_turns_the_proxy_into_a_pass_through() {
    let fs = match Tmpfs::mount("12m") {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("skipped: cannot mount a small tmpfs to fill (needs root): {e}");
            return;
        }
    };
    use crate::support::origin::ReplyBody;
    use crate::support::{check_pattern, open};
    let origin = Origin::builder()
        .route("/small", |_| {
            Reply::generated(1 << 20).header("cache-control", "max-age=600")
        })
        .route("/big", |_| {
            Reply::generated(8 << 20).header("cache-control", "max-age=600")
        })
        .route("/chunked", |_| {
            Reply::generated(0)
                .header("cache-control", "max-age=600")
                .body(ReplyBody::Generated {
                    len: 14 << 20,
                    chunk: 64 << 10,
                    delay: None,
                    declared: false,
                })
        })
        .run()
        .await;
    let p = TestProxy::start_in(fs.0.join("data"), |s| s.cache.min_free_space = 512 << 10).await;
    let (head, body) = open(p.addr(), &origin.url("/small")).await;
    assert!(head.headers["cache-status"]
        .to_str()
        .unwrap()
        .contains("stored"));
    assert_eq!(check_pattern(body, 0).await, Ok(1 << 20));
    crate::caching::wait_for_hit(&p, &origin.url("/small")).await;

    // Known to be too big for what is left: streamed through, whole, not stored.
    let (head, body) = open(p.addr(), &origin.url("/big")).await;
    assert!(
        head.headers["cache-status"]
            .to_str()
            .unwrap()
            .contains("detail=disk-full"),
        "{:?}",
        head.headers
    );
    assert_eq!(check_pattern(body, 0).await, Ok(8 << 20));

    // Unknown length: the disk fills mid-way. That response fails (never a clean short
    // body); the proxy keeps running and passes the next requests through.
    let (_, body) = open(p.addr(), &origin.url("/chunked")).await;
    assert!(check_pattern(body, 0).await.is_err());
    let (head, body) = open(p.addr(), &origin.url("/chunked")).await;
    assert!(
        head.headers["cache-status"]
            .to_str()
            .unwrap()
            .contains("disk-full"),
        "{:?}",
        head.headers
    );
    assert_eq!(check_pattern(body, 0).await, Ok(14 << 20));
    // What was stored before is still served.
    let r = get(p.addr(), &origin.url("/small"), &[]).await;
    assert_eq!(
        (r.cache_status(), r.body.len()),
        ("meshcache; hit", 1 << 20)
    );
    drop(p);
}

#[tokio::test]
async fn clients_outside_listen_allow_are_refused() {
    let p = TestProxy::start_with(|s| s.server.allow = vec!["10.0.0.0/8".parse().unwrap()]).await;
    let r = raw(
        p.addr(),
        b"GET http://meshcache.local/ HTTP/1.1\r\nHost: meshcache.local\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
}

/// Memory with slow clients: the chunk a connection cannot send yet stays in memory, so
/// a stored body is read in small chunks for a reader that pauses, and in large ones only
/// for a reader that keeps up (benches/load.rs measures what this saves).
#[tokio::test]
async fn a_slow_reader_of_a_stored_body_gets_small_chunks_and_a_fast_one_large() {
    use futures_util::StreamExt;
    let len: u64 = 48 << 20;
    let origin = Origin::builder()
        .route("/big", move |_| {
            Reply::generated(len).header("cache-control", "max-age=600")
        })
        .run()
        .await;
    let p = TestProxy::start().await;
    let url = origin.url("/big");
    let r = get(p.addr(), &url, &[]).await;
    assert_eq!(r.body.len() as u64, len);
    let hit = crate::caching::wait_for_hit(&p, &url).await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    let key = cache::key::primary_key(&url.parse().unwrap()).unwrap();
    let entry = p
        .cache()
        .lookup(&key, &http::HeaderMap::new())
        .unwrap()
        .expect("stored");
    // A reader that pauses 60 ms between chunks never gets more than 16 KiB at once.
    let mut slow = p.cache().body(&entry, 0..(256 << 10));
    let mut pos = 0u64;
    while let Some(chunk) = slow.next().await {
        let chunk = chunk.unwrap();
        assert!(chunk.len() <= 16 << 10, "{} bytes at {pos}", chunk.len());
        assert!(chunk
            .iter()
            .enumerate()
            .all(|(i, b)| *b == crate::support::pattern(pos + i as u64)));
        pos += chunk.len() as u64;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_eq!(pos, 256 << 10);
    // A reader that keeps up gets larger chunks, and the whole body right.
    let mut fast = p.cache().body(&entry, 0..len);
    let (mut pos, mut largest) = (0u64, 0usize);
    while let Some(chunk) = fast.next().await {
        let chunk = chunk.unwrap();
        assert_eq!(chunk[0], crate::support::pattern(pos));
        largest = largest.max(chunk.len());
        pos += chunk.len() as u64;
    }
    assert_eq!(pos, len);
    assert!(
        largest > 16 << 10,
        "a reader that keeps up still got {largest}-byte chunks"
    );
    p.stop().await;
}

/// Regression (issue 9): a client whose chunked request body is malformed got a 502 (an
/// "origin error"); the fault is the client's.
#[tokio::test]
async fn a_malformed_chunked_request_body_is_a_400_not_a_502() {
    let origin = Origin::builder()
        .route("/upload", |_| Reply::ok("got it"))
        .run()
        .await;
    let p = TestProxy::start().await;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
        origin.url("/upload"),
        origin.addr
    );
    let answer = raw(
        p.addr(),
        format!("{head}5\r\nhello\r\nZZZ\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("request body"), "{answer}");
    // A well-formed one goes through.
    let answer = raw(
        p.addr(),
        format!("{head}5\r\nhello\r\n0\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    p.stop().await;
}

/// The access log says who is at fault (issue 9): an origin that breaks off mid-body
/// (`origin`; its client sees an abort, not a short clean body), a malformed request body
/// (`client`, a 400), a client that leaves mid-body (`client-aborted`), none for a
/// complete answer. Through the built binary, reading its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_names_who_is_at_fault() {
    use crate::support::binary::Running;
    use crate::support::origin::ReplyBody;
    use http_body_util::BodyExt;
    // The origin breaks off: the client's body ends with an error.
    let origin = Origin::builder()
        .route("/whole", |_| Reply::ok("all of it"))
        .route("/long", |_| {
            Reply::generated(0).body(ReplyBody::Generated {
                len: 64 << 20,
                chunk: 64 << 10,
                delay: Some(Duration::from_millis(5)),
                declared: true,
            })
        })
        .route("/upload", |_| Reply::ok("got it"))
        .run()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let level = std::path::Path::new("warn,meshcache::access=info");
    let p = Running::start_with_env(dir.path(), &["--no-mesh"], &[("RUST_LOG", level)]);

    // An origin that breaks off: it declares 400,000 bytes, sends 100,000 and closes.
    let cutter = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cut_url = format!("http://{}/cut", cutter.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = cutter.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let body: Vec<u8> = (0..100_000).map(crate::support::pattern).collect();
            let head =
                "HTTP/1.1 200 OK\r\nContent-Length: 400000\r\nCache-Control: max-age=600\r\n\r\n";
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(&body).await;
            let _ = s.shutdown().await;
        }
    });
    let (head, body) = crate::support::open(p.addr, &cut_url).await;
    assert_eq!(head.status, 200);
    assert!(
        crate::support::check_pattern(body, 0).await.is_err(),
        "an abort, not a short clean body"
    );
    // A malformed request body.
    let answer = raw(
        p.addr,
        format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZZ\r\n\r\n",
            origin.url("/upload"),
            origin.addr
        )
        .as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // Complete.
    assert_eq!(
        get(p.addr, &origin.url("/whole"), &[]).await.text(),
        "all of it"
    );
    // The client leaves after the first bytes.
    let (head, mut body) = crate::support::open(p.addr, &origin.url("/long")).await;
    assert_eq!(head.status, 200);
    let _ = body.frame().await;
    drop(body);

    let fault_of = |path: &str, lines: &[String]| -> Option<String> {
        let url = if path == "/cut" {
            cut_url.clone()
        } else {
            origin.url(path)
        };
        let line = lines
            .iter()
            .find(|l| l.contains("meshcache::access") && l.contains(&url))?;
        let rest = line.split("fault=").nth(1)?;
        Some(rest.trim_matches('"').split(['"', ' ']).next()?.to_string())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let paths = ["/cut", "/upload", "/whole", "/long"];
    loop {
        let lines = p.log.lock().unwrap().clone();
        let faults: Vec<Option<String>> = paths.iter().map(|u| fault_of(u, &lines)).collect();
        if faults.iter().all(Option::is_some) {
            let faults: Vec<String> = faults.into_iter().map(Option::unwrap).collect();
            assert_eq!(
                faults,
                ["origin", "client", "-", "client-aborted"],
                "{lines:#?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "access log lines missing: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.stop();
}

/// Reads one HTTP message (its head, and a body of its Content-Length) from a raw
/// connection; at the end of the stream, what there was.
async fn read_message(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    (head, body)
}

/// Reads one request as text (head and body).
async fn read_one_request(s: &mut TcpStream) -> String {
    let (head, body) = read_message(s).await;
    head + &String::from_utf8_lossy(&body)
}

/// Regression (the conformance suite's origin, node, closes idle keep-alive connections
/// after 5 s, and one of its PUTs now and then got a 502): a PUT sent on a pooled
/// connection that the origin closed just then failed. An idempotent request with a small
/// body is now sent once more, on a new connection (RFC 9110 9.2.2); a POST still is not.
#[tokio::test]
async fn an_idempotent_request_on_a_connection_the_origin_closed_is_sent_again() {
    let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = origin.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        // The first connection answers a GET, keeps the connection, then closes it on the
        // next request without answering (its idle timeout fired as the request came).
        let (mut c1, _) = origin.accept().await.unwrap();
        read_one_request(&mut c1).await;
        c1.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: no-store\r\n\r\nok")
            .await
            .unwrap();
        let put = read_one_request(&mut c1).await;
        assert!(put.starts_with("PUT "), "{put}");
        drop(c1);
        // The request again, on a new connection: answered.
        let (mut c2, _) = origin.accept().await.unwrap();
        let again = read_one_request(&mut c2).await;
        c2.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        let _ = tx.send(again);
        // A POST on this pooled connection, closed the same way: not sent again.
        let post = read_one_request(&mut c2).await;
        assert!(post.starts_with("POST "), "{post}");
        drop(c2);
        let _ = origin.accept().await;
    });
    let p = TestProxy::start().await;
    let url = format!("http://{addr}/doc");
    assert_eq!(get(p.addr(), &url, &[]).await.status, 200);
    let r = crate::support::request(
        p.addr(),
        http::Method::PUT,
        &url,
        &[("content-type", "text/plain")],
        Some(bytes::Bytes::from_static(b"the new text")),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let again = rx.await.unwrap();
    assert!(
        again.starts_with("PUT /doc") && again.ends_with("the new text"),
        "{again}"
    );
    let r = crate::support::request(
        p.addr(),
        http::Method::POST,
        &url,
        &[],
        Some(bytes::Bytes::from_static(b"once")),
    )
    .await;
    assert_eq!(r.status, 502, "a POST is never sent twice");
}
